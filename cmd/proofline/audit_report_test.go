package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/proofline/proofline/evidence/audit/audittest"
)

// reportFixture is a log generated through the service in test mode (4 VMs, one offline for
// rounds 3–6, a policy change halfway), its bundle and an inventory of its VMs.
type reportFixture struct {
	log       *audittest.Log
	bundle    string
	inventory string
}

// pins are the flags that pin the fixture's log key, record keys and test roots, as an auditor
// who obtained them from the operator gives them.
func (f *reportFixture) pins() []string {
	return []string{"--log-key", filepath.Join(f.log.Dir, "log", "note.pub"), "--keys", filepath.Join(f.log.Dir, "keys", "history.json"), "--roots", f.log.RootsDir}
}

func newReportFixture(t *testing.T) *reportFixture {
	t.Helper()
	dir := t.TempDir()
	l, err := audittest.Generate(context.Background(), audittest.Options{
		Dir: filepath.Join(dir, "data"), Records: 60, VMs: 4, Offline: map[string][2]int{"vm-03": {3, 7}},
	})
	if err != nil {
		t.Fatal(err)
	}
	f := &reportFixture{log: l, bundle: filepath.Join(dir, "bundle.tar.gz"), inventory: filepath.Join(dir, "inventory.yaml")}
	if code, out, errOut := runCLI(t, "audit", "export", "--data", l.Dir, "--roots", l.RootsDir, "--quiet", "--out", f.bundle); code != exitOK {
		t.Fatalf("export: %d\n%s%s", code, out, errOut)
	}
	body := fmt.Sprintf("interval: %s\nstatuses: [affirming, warning, contraindicated]\nsubjects:\n", l.Step)
	for _, vm := range l.VMs {
		body += "  - id: " + audittest.Subject(vm) + "\n"
	}
	if err := os.WriteFile(f.inventory, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	return f
}

// `proofline audit report` verifies the bundle and writes a self-contained HTML report with the
// charts, the gap table and the criteria; a tampered bundle still gets a report, marked
// unverified, and exit 1.
func TestAuditReportCLI(t *testing.T) {
	f := newReportFixture(t)
	dir := t.TempDir()
	out := filepath.Join(dir, "report.html")
	code, stdout, errOut := runCLI(t, append([]string{"audit", "report", f.bundle, "--out", out, "--quiet"}, f.pins()...)...)
	if code != exitOK || !strings.Contains(stdout, "RESULT: PASS — the bundle verified against the keys you pinned") {
		t.Fatalf("report: %d\n%s\n%s", code, stdout, errOut)
	}
	html, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"VERIFICATION PASSED", `id="chart-verdicts"`, `class="bar"`, `id="chart-changes"`, `class="point"`,
		`id="criteria-table"`, "CC6.1", "CC7.2", "CC8.1", "PI1.x", "A1.x", `id="no-inventory"`, "Content-Security-Policy",
		"test vendor roots",
	} {
		if !strings.Contains(string(html), want) {
			t.Errorf("the report lacks %q", want)
		}
	}
	for _, bad := range []string{"<script", " src=", " href=", "url(", "@import", "(unverified)", "INTERNALLY CONSISTENT"} {
		if strings.Contains(string(html), bad) {
			t.Errorf("the report holds %q", bad)
		}
	}

	// With the inventory: the offline VM's gap is tabled, and the exit status says so.
	code, stdout, _ = runCLI(t, append([]string{"audit", "report", "--inventory", f.inventory, f.bundle, "--out", out, "--quiet"}, f.pins()...)...)
	html, _ = os.ReadFile(out)
	wantGap := fmt.Sprintf("<td>%s</td><td>%s</td>", f.log.RoundTime(2).Format(time.RFC3339), f.log.RoundTime(7).Format(time.RFC3339))
	if code != exitContraindicated || !strings.Contains(stdout, "1 attestation gap(s)") || !strings.Contains(string(html), `id="gap-table"`) || !strings.Contains(string(html), wantGap) {
		t.Fatalf("inventory: %d, want the gap %q\n%s", code, wantGap, stdout)
	}

	// A flipped byte: the report is written, says the bundle failed, and marks every figure.
	tampered := filepath.Join(dir, "tampered.tar.gz")
	done := false
	rewriteBundle(t, f.bundle, tampered, func(name string, data []byte) []byte {
		if !done && strings.HasPrefix(name, "records/000000000010") {
			done = true
			data[len(data)/2] ^= 1
		}
		return data
	})
	code, stdout, _ = runCLI(t, "audit", "report", tampered, "--out", out, "--quiet")
	html, _ = os.ReadFile(out)
	if code != exitContraindicated || !strings.Contains(stdout, "failed check") || !strings.Contains(string(html), "VERIFICATION FAILED") ||
		!strings.Contains(string(html), "(unverified)") || strings.Contains(string(html), "VERIFICATION PASSED") || !strings.Contains(string(html), "Nothing yet") {
		t.Fatalf("tampered: %d\n%s", code, stdout)
	}
}

func TestAuditReportUsage(t *testing.T) {
	dir := t.TempDir()
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"audit", "report"}, "exactly one bundle"},
		{[]string{"audit", "report", "b.tar.gz"}, "--out FILE is required"},
		{[]string{"audit", "report", filepath.Join(dir, "missing"), "--out", filepath.Join(dir, "r.html")}, "no such file"},
		{[]string{"audit", "report", "b.tar.gz", "--out", "r.html", "--inventory", filepath.Join(dir, "none.yaml")}, "--inventory"},
	} {
		t.Run(strings.Join(c.args, " "), func(t *testing.T) {
			code, out, errOut := runCLI(t, c.args...)
			if code != exitUsage || !strings.Contains(out+errOut, c.want) {
				t.Fatalf("exit %d, want %d with %q:\n%s%s", code, exitUsage, c.want, out, errOut)
			}
		})
	}
	if _, err := os.Stat(filepath.Join(dir, "r.html")); err == nil {
		t.Fatal("a usage error wrote a report")
	}
}

// Without pinned keys a bundle vouches for itself: another log's bundle — every record, the
// checkpoint and the key history signed with keys of its own, as an attacker who re-signs a
// bundle throughout would make it — gets the amber "internally consistent" banner (never the
// green one) with the flags that pin the keys; with the genuine log's keys pinned it fails.
func TestAuditReportKeysNotPinned(t *testing.T) {
	f := newReportFixture(t)
	dir := t.TempDir()
	other, err := audittest.Generate(context.Background(), audittest.Options{Dir: filepath.Join(dir, "other"), Records: 4, VMs: 2})
	if err != nil {
		t.Fatal(err)
	}
	forged := filepath.Join(dir, "forged.tar.gz")
	if code, out, errOut := runCLI(t, "audit", "export", "--data", other.Dir, "--roots", other.RootsDir, "--quiet", "--out", forged); code != exitOK {
		t.Fatalf("export: %d\n%s%s", code, out, errOut)
	}
	out := filepath.Join(dir, "report.html")
	for _, c := range []struct {
		name, bundle string
		pins         []string
		flags        string
	}{
		{"genuine, nothing pinned", f.bundle, nil, "--log-key FILE --keys FILE --roots DIR"},
		{"genuine, roots not pinned", f.bundle, f.pins()[:4], "--roots DIR"},
		{"forged, nothing pinned", forged, nil, "--log-key FILE --keys FILE --roots DIR"},
	} {
		t.Run(c.name, func(t *testing.T) {
			code, stdout, errOut := runCLI(t, append([]string{"audit", "report", c.bundle, "--out", out, "--quiet"}, c.pins...)...)
			html, _ := os.ReadFile(out)
			wantCmd := "proofline audit report " + filepath.Base(c.bundle) + " --out report.html " + c.flags + "</code>"
			if code != exitOK || !strings.Contains(stdout, "RESULT: PASS, KEYS NOT PINNED") || !strings.Contains(stdout, c.flags) ||
				!strings.Contains(string(html), `class="banner selfvouched"`) || !strings.Contains(string(html), wantCmd) ||
				strings.Contains(string(html), "VERIFICATION PASSED") || !strings.Contains(string(html), "Only as far as the bundle vouches for itself") {
				t.Fatalf("exit %d, want %d, the amber banner and %q\n%s%s", code, exitOK, wantCmd, stdout, errOut)
			}
		})
	}
	code, stdout, _ := runCLI(t, append([]string{"audit", "report", forged, "--out", out, "--quiet"}, f.pins()...)...)
	html, _ := os.ReadFile(out)
	if code != exitContraindicated || !strings.Contains(string(html), "VERIFICATION FAILED") || strings.Contains(string(html), `class="banner selfvouched"`) {
		t.Fatalf("the forged bundle under the genuine keys: exit %d\n%s", code, stdout)
	}
}
