package main

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/proofline/proofline/attest"
)

// moduleDir returns the module cache directory of a module the project requires.
func moduleDir(mod string) (string, error) {
	out, err := exec.Command("go", "list", "-m", "-f", "{{.Dir}}", mod).Output()
	if err != nil {
		return "", fmt.Errorf("go list -m %s: %w", mod, err)
	}
	return strings.TrimSpace(string(out)), nil
}

// writeReal copies the real recorded reports that go-tdx-guest and go-sev-guest ship into
// envelopes under testdata/real. The bytes of every report are kept as recorded, except where
// testdata/README.md says otherwise.
func writeReal(out string) error {
	tdxDir, err := moduleDir("github.com/google/go-tdx-guest")
	if err != nil {
		return err
	}
	sevDir, err := moduleDir("github.com/google/go-sev-guest")
	if err != nil {
		return err
	}
	read := func(dir, rel string) ([]byte, error) { return os.ReadFile(filepath.Join(dir, rel)) }

	v4, err := read(tdxDir, "testing/testdata/tdx_prod_quote_SPR_E4.dat")
	if err != nil {
		return err
	}
	// Upstream appended a line of text to this quote to exercise its own parser; a quote from
	// hardware never carries it, and Proofline's strict parser rejects it. The signed bytes and
	// the signature data are untouched.
	const suffix = "\nextra bytes(only for testing purpose)\n"
	v4 = bytes.TrimSuffix(v4, []byte(suffix))
	v5, err := read(tdxDir, "testing/testdata/quote_v5_sample.dat")
	if err != nil {
		return err
	}
	cos, err := read(tdxDir, "testing/testdata/ccel/cos-113-tdx-quote.dat")
	if err != nil {
		return err
	}
	// The CCEL that GCP's firmware wrote for the same boot: it replays to the quote's RTMRs.
	ccel, err := read(tdxDir, "testing/testdata/ccel/ccel_data.dat")
	if err != nil {
		return err
	}
	snpReport, err := read(sevDir, "verify/testdata/attestation.bin")
	if err != nil {
		return err
	}
	vcek, err := read(sevDir, "verify/testdata/vcek.testcer")
	if err != nil {
		return err
	}
	for name, ev := range map[string]*attest.Evidence{
		"tdx-v4-spr":   {Version: 1, Platform: attest.PlatformTDX, Report: v4},
		"tdx-v5":       {Version: 1, Platform: attest.PlatformTDX, Report: v5},
		"tdx-v4-gcp":   {Version: 1, Platform: attest.PlatformTDX, Report: cos, EventLogs: &attest.EventLogs{CCEL: ccel}},
		"snp-milan-v2": {Version: 1, Platform: attest.PlatformSNP, Report: snpReport, Certificates: [][]byte{vcek}},
	} {
		if err := writeEvidence(filepath.Join(out, name), ev); err != nil {
			return err
		}
	}
	return nil
}

func writeEvidence(dir string, ev *attest.Evidence) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	b, err := ev.Encode()
	if err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, "evidence.json"), append(b, '\n'), 0o644)
}
