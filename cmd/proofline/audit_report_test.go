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
	code, stdout, errOut := runCLI(t, "audit", "report", f.bundle, "--out", out, "--quiet")
	if code != exitOK || !strings.Contains(stdout, "RESULT: PASS") {
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
	for _, bad := range []string{"<script", " src=", " href=", "url(", "@import", "(unverified)"} {
		if strings.Contains(string(html), bad) {
			t.Errorf("the report holds %q", bad)
		}
	}

	// With the inventory: the offline VM's gap is tabled, and the exit status says so.
	code, stdout, _ = runCLI(t, "audit", "report", "--inventory", f.inventory, f.bundle, "--out", out, "--quiet")
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
