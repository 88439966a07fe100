package main

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/proofline/proofline/attest"
	"github.com/proofline/proofline/internal/agent"
	"github.com/proofline/proofline/internal/durable"
	"github.com/proofline/proofline/verifier/collateral"
	"github.com/proofline/proofline/verifier/service/servicetest"
)

// simulate collects through the fake guest interfaces (attest/attesttest/fakedevice) of a
// simulated platform whose fake vendor PKIs are made for this run (servicetest), and writes,
// beside the evidence, what `proofline verify` needs to check it: the fake roots (roots/), the
// recorded collateral (collateral/) and a policy pinning the simulated measurements
// (policy.yaml). The PKIs' certificates are valid from the run's time minus an hour and their
// collateral for a week (SEV-SNP CRLs) or 30 days (Intel), so the printed command pins --at to
// the run's time and stays reproducible after that.
func simulate(ctx context.Context, f *collectFlags, runtimeData []byte, stderr io.Writer, log *slog.Logger, e *env) error {
	at := e.now().UTC().Truncate(time.Second)
	plat, err := servicetest.New(at)
	if err != nil {
		return fmt.Errorf("simulated platform: %w", err)
	}
	platform, vendor := attest.PlatformTDX, "Intel"
	if f.tee == teeSimSNP {
		platform, vendor = attest.PlatformSNP, "AMD"
	}
	sim := &agent.Simulated{Platform: platform, Platforms: func() (*servicetest.Platforms, error) { return plat, nil }}
	ev, err := sim.Collect(ctx, f.nonce, runtimeData)
	if err != nil {
		return err
	}
	dir := filepath.Dir(f.out)
	roots, coll, pol := filepath.Join(dir, "roots"), filepath.Join(dir, "collateral"), filepath.Join(dir, "policy.yaml")
	if err := writeVerifierInputs(plat, roots, coll, pol); err != nil {
		return fmt.Errorf("writing what proofline verify needs: %w", err)
	}
	if err := writeEvidence(f.out, ev, log); err != nil {
		return err
	}
	cmd := shellJoin([]string{"proofline", "verify", "--evidence", f.out, "--policy", pol, "--roots", roots, "--collateral", coll,
		"--nonce", base64.StdEncoding.EncodeToString(f.nonce), "--at", at.Format(time.RFC3339)})
	fmt.Fprintf(stderr, "proofline-agent: TEST MODE: %s is signed by fake %s keys made for this run; it says nothing about this machine. Verify it with:\n%s\n", f.out, vendor, cmd)
	return nil
}

// writeVerifierInputs writes the simulated platforms' roots (one PEM file per vendor, read by
// --roots), their recorded collateral (one JSON array of recorded responses, read by
// --collateral) and their policy, each replaced atomically.
func writeVerifierInputs(plat *servicetest.Platforms, rootsDir, collDir, policyPath string) error {
	for _, d := range []string{rootsDir, collDir} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return err
		}
	}
	amdPEM := fmt.Sprintf("amd-%s.pem", strings.ToLower(servicetest.AMDProductLine))
	files := []struct {
		path string
		data []byte
	}{
		{filepath.Join(rootsDir, "intel.pem"), plat.Intel.RootsPEM()},
		{filepath.Join(rootsDir, amdPEM), plat.AMD.RootsPEM()},
		{policyPath, plat.PolicyYAML},
	}
	rs := make([]*collateral.Response, 0, len(plat.Collateral))
	for _, url := range plat.Collateral.URLs() {
		rs = append(rs, plat.Collateral[url])
	}
	sort.Slice(rs, func(i, j int) bool { return rs[i].URL < rs[j].URL })
	coll, err := json.MarshalIndent(rs, "", "  ")
	if err != nil {
		return err
	}
	files = append(files, struct {
		path string
		data []byte
	}{filepath.Join(collDir, "simulated.json"), append(coll, '\n')})
	for _, f := range files {
		if err := durable.Replace(f.path, f.data, 0o644); err != nil {
			return err
		}
	}
	return nil
}
