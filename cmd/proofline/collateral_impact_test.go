package main

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-tdx-guest/pcs"

	"github.com/proofline/proofline/attest/attesttest/fakeintel"
	"github.com/proofline/proofline/evidence/audit/audittest"
	"github.com/proofline/proofline/verifier/collateral"
	"github.com/proofline/proofline/verifier/service"
)

// dirDigest hashes every file of dir (names and contents), to show that a command wrote nothing.
func dirDigest(t *testing.T, dir string) [32]byte {
	t.Helper()
	h := sha256.New()
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		data, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		h.Write([]byte(p + "\x00"))
		h.Write(data)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return [32]byte(h.Sum(nil))
}

// `proofline collateral impact` on a log made by the service in test mode (two VMs, one TDX and
// one SEV-SNP): under the collateral the verdicts used nothing would change; under a TCB info
// from a TCB recovery that moves the fake TDX platform's level to OutOfDate, exactly the TDX
// verdicts would (each gains tdx_tcb_status; the affirming ones turn contraindicated), none of
// the SEV-SNP ones, and refused nonces are not re-performed. Nothing in the data dir changes.
func TestCollateralImpact(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	l, err := audittest.Generate(ctx, audittest.Options{Dir: filepath.Join(dir, "data"), Records: 40, VMs: 2})
	if err != nil {
		t.Fatal(err)
	}
	since := l.Start.Format(time.RFC3339)
	plat := l.Platforms
	tcbURL := pcs.TcbInfoURL(strings.ToLower(plat.Intel.FMSPCHex()))
	if _, ok := plat.Collateral[tcbURL]; !ok {
		t.Fatalf("no TCB info at %s in the platforms' collateral", tcbURL)
	}

	// The collateral the verdicts used: nothing changes.
	same := filepath.Join(dir, "same")
	os.Mkdir(same, 0o755)
	if err := collateral.WriteFile(filepath.Join(same, "tcb.json"), []*collateral.Response{plat.Collateral[tcbURL]}); err != nil {
		t.Fatal(err)
	}
	code, out, errOut := runCLI(t, "collateral", "impact", "--data-dir", l.Dir, "--roots", l.RootsDir, "--since", since, "--collateral", same, "--json")
	var base impactReport
	if err := json.Unmarshal([]byte(out), &base); err != nil || code != exitOK {
		t.Fatalf("baseline: exit %d, %v\n%s\n%s", code, err, out, errOut)
	}
	tdxChecked, snpChecked := 0, 0
	for _, g := range base.ByLevel {
		switch g.Platform {
		case "tdx":
			tdxChecked += g.Checked
		case "sev-snp":
			snpChecked += g.Checked
		}
	}
	if base.Changed != 0 || tdxChecked == 0 || snpChecked == 0 || base.Checked != tdxChecked+snpChecked {
		t.Fatalf("baseline: %d changed, %d checked (tdx %d, sev-snp %d)\n%s", base.Changed, base.Checked, tdxChecked, snpChecked, out)
	}
	for _, s := range base.Skipped {
		if !strings.Contains(s.Reason, "refused nonce") {
			t.Fatalf("baseline: record %d not re-performed: %s", s.Index, s.Reason)
		}
	}

	// --since as a duration before --at, every verdict re-performed at --at: a shorter window,
	// and the same verdicts (the collateral is still valid then).
	at := l.RoundTime(3)
	code, out, _ = runCLI(t, "collateral", "impact", "--data-dir", l.Dir, "--roots", l.RootsDir, "--at", at.Format(time.RFC3339), "--since", "15m", "--collateral", same, "--json", "--quiet")
	var short impactReport
	if err := json.Unmarshal([]byte(out), &short); err != nil || code != exitOK || short.At == nil || !short.At.Equal(at) ||
		!short.Since.Equal(at.Add(-15*time.Minute)) || short.Checked == 0 || short.Checked >= base.Checked || short.Changed != 0 {
		t.Fatalf("--at with a duration: exit %d, %v\n%s", code, err, out)
	}

	// A TCB recovery: a new top level dated the day before; the platform's level is OutOfDate.
	o := fakeintel.DefaultCollateralOptions(plat.Now)
	o.TCBInfo.EvaluationDataNumber = 19
	top := o.TCBInfo.TCBLevels[0]
	top.TDXComponents[0]++
	top.Date = plat.Now.Add(-24 * time.Hour)
	o.TCBInfo.TCBLevels[0].Status = pcs.TcbComponentStatusOutOfDate
	o.TCBInfo.TCBLevels = append([]fakeintel.TCBLevel{top}, o.TCBInfo.TCBLevels...)
	rs, err := plat.Intel.Collateral(o)
	if err != nil {
		t.Fatal(err)
	}
	// As the verifier's collateral cache holds it: the default source of the new collateral.
	store, err := collateral.OpenDirStore(filepath.Join(l.Dir, service.DefaultCollateralCacheDir))
	if err != nil {
		t.Fatal(err)
	}
	if err := store.Put(ctx, rs[0].URL, rs[0].Canonical()); err != nil {
		t.Fatal(err)
	}
	before := dirDigest(t, l.Dir)
	code, out, errOut = runCLI(t, "collateral", "impact", "--data-dir", l.Dir, "--roots", l.RootsDir, "--since", since, "--json", "--quiet")
	var rep impactReport
	if err := json.Unmarshal([]byte(out), &rep); err != nil || code != exitContraindicated {
		t.Fatalf("recovery: exit %d, %v\n%s\n%s", code, err, out, errOut)
	}
	if rep.Checked != base.Checked || rep.Changed != tdxChecked || len(rep.Changes) != tdxChecked || errOut != "" {
		t.Fatalf("recovery: %d checked, %d changed; want %d checked and exactly the %d TDX verdicts\n%s%s", rep.Checked, rep.Changed, base.Checked, tdxChecked, out, errOut)
	}
	affirmingToContra := 0
	for _, c := range rep.Changes {
		if c.Platform != "tdx" || !slices.Contains(c.Added, "tdx_tcb_status") || len(c.Removed) != 0 || c.NewTCB != "OutOfDate" || c.OldTCB != "UpToDate" ||
			c.NewStatus != "contraindicated" || !strings.HasPrefix(c.Subject, "agent:vm-") {
			t.Errorf("change %+v", c)
		}
		if c.OldStatus == "affirming" {
			affirmingToContra++
		}
	}
	if affirmingToContra == 0 {
		t.Error("no affirming verdict turned contraindicated")
	}
	for _, g := range rep.ByLevel {
		if (g.Platform == "tdx") != (g.Changed == g.Checked) || (g.Platform == "tdx" && g.TCB != "OutOfDate") {
			t.Errorf("group %+v", g)
		}
	}
	if dirDigest(t, l.Dir) != before {
		t.Fatal("collateral impact wrote to the data dir")
	}

	// The table, with progress on stderr.
	code, out, errOut = runCLI(t, "collateral", "impact", "--data-dir", l.Dir, "--roots", l.RootsDir, "--since", since)
	if code != exitContraindicated || !strings.Contains(out, "SUBJECT") || !strings.Contains(out, "affirming → contraindicated") ||
		!strings.Contains(out, "UpToDate → OutOfDate") || !strings.Contains(out, "+tdx_tcb_status") ||
		!strings.Contains(out, "would change") || !strings.Contains(errOut, "impact:") {
		t.Fatalf("table: exit %d\n%s\n%s", code, out, errOut)
	}

	// A window after the log: nothing to check.
	after := l.RoundTime(l.Rounds + 10).Format(time.RFC3339)
	code, out, _ = runCLI(t, "collateral", "impact", "--data-dir", l.Dir, "--roots", l.RootsDir, "--since", after, "--json")
	if err := json.Unmarshal([]byte(out), &rep); err != nil || code != exitOK || rep.Checked != 0 {
		t.Fatalf("empty window: exit %d %v\n%s", code, err, out)
	}
	// Verdicts made with test roots need them.
	code, out, _ = runCLI(t, "collateral", "impact", "--data-dir", l.Dir, "--since", since, "--json", "--quiet")
	if err := json.Unmarshal([]byte(out), &rep); err != nil || code != exitOK || rep.Checked != 0 || len(rep.Skipped) == 0 ||
		!strings.Contains(rep.Skipped[len(rep.Skipped)-1].Reason, "--roots") {
		t.Fatalf("without --roots: exit %d %v\n%s", code, err, out)
	}
}

func TestCollateralImpactUsage(t *testing.T) {
	dir := t.TempDir()
	for _, c := range []struct {
		args []string
		want string
	}{
		{nil, "--data-dir DIR is required"},
		{[]string{"--data-dir", dir, "--since", "last week"}, "neither a duration"},
		{[]string{"--data-dir", dir, "--since", "-1h"}, "negative"},
		{[]string{"--data-dir", dir, "--at", "tomorrow"}, "RFC 3339"},
		{[]string{"--data-dir", dir}, "no collateral cache"},
		{[]string{"--data-dir", dir, "--collateral", dir}, "no recorded responses"},
		{[]string{"--data-dir", dir, "--collateral", filepath.Join(dir, "missing")}, "--collateral"},
	} {
		code, out, errOut := runCLI(t, append([]string{"collateral", "impact"}, c.args...)...)
		if code != exitUsage || out != "" || !strings.Contains(errOut, c.want) {
			t.Errorf("%v: exit %d, stdout %q, stderr %q; want %q", c.args, code, out, errOut, c.want)
		}
	}
	// A collateral dir but no log.
	coll := filepath.Join(dir, "coll")
	os.Mkdir(coll, 0o755)
	r := &collateral.Response{URL: "https://api.trustedservices.intel.com/x", Status: 200, Body: []byte("{}")}
	if err := collateral.WriteFile(filepath.Join(coll, "x.json"), []*collateral.Response{r}); err != nil {
		t.Fatal(err)
	}
	if code, _, errOut := runCLI(t, "collateral", "impact", "--data-dir", dir, "--collateral", coll); code != exitUsage || !strings.Contains(errOut, "holds no evidence log") {
		t.Errorf("no log: exit %d, %s", code, errOut)
	}
}
