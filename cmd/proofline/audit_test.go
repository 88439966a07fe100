package main

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/proofline/proofline/evidence/audit/audittest"
)

// rewriteBundle applies edit to every entry of a bundle file.
func rewriteBundle(t *testing.T, src, dst string, edit func(name string, data []byte) []byte) {
	t.Helper()
	raw, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	gz, err := gzip.NewReader(bytes.NewReader(raw))
	if err != nil {
		t.Fatal(err)
	}
	tr := tar.NewReader(gz)
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	tw := tar.NewWriter(zw)
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		data, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		data = edit(hdr.Name, data)
		hdr.Size = int64(len(data))
		if err := tw.WriteHeader(hdr); err != nil {
			t.Fatal(err)
		}
		tw.Write(data)
	}
	tw.Close()
	zw.Close()
	if err := os.WriteFile(dst, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
}

// `proofline audit export` and `audit verify` on a log generated through the service: the round
// trip passes, a window and a consistency proof from the previous bundle pass, a flipped byte is
// named by record with exit 1, and an inventory's gaps are tabled with exit 1.
func TestAuditCLI(t *testing.T) {
	dir := t.TempDir()
	l, err := audittest.Generate(context.Background(), audittest.Options{
		Dir: filepath.Join(dir, "data"), Records: 60, VMs: 4, Offline: map[string][2]int{"vm-03": {3, 7}},
	})
	if err != nil {
		t.Fatal(err)
	}
	first := filepath.Join(dir, "first.tar.gz")
	code, out, errOut := runCLI(t, "audit", "export", "--data", l.Dir, "--roots", l.RootsDir, "--to", l.RoundTime(5).Format(time.RFC3339), "--out", first)
	if code != exitOK || !strings.Contains(out, "wrote "+first) || !strings.Contains(errOut, "export: writing:") {
		t.Fatalf("export: %d\n%s\n%s", code, out, errOut)
	}
	code, out, _ = runCLI(t, "audit", "verify", first)
	if code != exitOK || !strings.Contains(out, "RESULT: PASS, KEYS NOT PINNED") || !strings.Contains(out, "--log-key FILE --keys FILE") || !strings.Contains(out, "reproduced") {
		t.Fatalf("verify without pinned keys: %d\n%s", code, out)
	}

	// The next export proves consistency with the first; the auditor insists on it.
	second := filepath.Join(dir, "second.tar.gz")
	from := l.RoundTime(5).Add(time.Second).Format(time.RFC3339)
	if code, out, errOut := runCLI(t, "audit", "export", "--data", l.Dir, "--roots", l.RootsDir, "--from", from, "--previous", first, "--quiet", "--out", second); code != exitOK {
		t.Fatalf("second export: %d\n%s\n%s", code, out, errOut)
	}
	code, out, _ = runCLI(t, "audit", "verify", second, "--previous", first, "--json", "--quiet")
	var j struct {
		Pass   bool `json:"pass"`
		Report struct {
			Previous struct {
				Verified bool `json:"verified"`
			} `json:"previous"`
			Attestations uint64 `json:"attestations"`
		} `json:"report"`
	}
	if err := json.Unmarshal([]byte(out), &j); err != nil || code != exitOK || !j.Pass || !j.Report.Previous.Verified || j.Report.Attestations == 0 {
		t.Fatalf("verify --json: %d %v\n%s", code, err, out)
	}

	// A flipped byte in one record.
	tampered := filepath.Join(dir, "tampered.tar.gz")
	var victim string
	rewriteBundle(t, first, tampered, func(name string, data []byte) []byte {
		if victim == "" && strings.HasPrefix(name, "records/000000000010") {
			victim = name
			data[len(data)/2] ^= 1
		}
		return data
	})
	code, out, _ = runCLI(t, "audit", "verify", tampered, "--quiet")
	if code != exitContraindicated || !strings.Contains(out, "record 10: inclusion:") || !strings.Contains(out, "RESULT: FAIL") {
		t.Fatalf("tampered bundle: %d\n%s", code, out)
	}

	// An inventory whose VM was offline.
	inv := filepath.Join(dir, "inventory.yaml")
	body := fmt.Sprintf("interval: %s\nstatuses: [affirming, warning, contraindicated]\nsubjects:\n", l.Step)
	for _, vm := range l.VMs {
		body += "  - id: " + audittest.Subject(vm) + "\n"
	}
	if err := os.WriteFile(inv, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	code, out, _ = runCLI(t, "audit", "verify", "--inventory", inv, second, "--quiet")
	wantGap := fmt.Sprintf("agent:vm-03  %s to %s", l.RoundTime(5).Add(time.Second).Format(time.RFC3339), l.RoundTime(7).Format(time.RFC3339))
	if code != exitContraindicated || !strings.Contains(out, wantGap) || !strings.Contains(out, "1 attestation gap(s)") {
		t.Fatalf("inventory: %d, want the gap %q in\n%s", code, wantGap, out)
	}
}

func TestAuditUsage(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "inv.yaml")
	os.WriteFile(bad, []byte("subjects: []\n"), 0o644)
	notBundle := filepath.Join(dir, "x.tar.gz")
	os.WriteFile(notBundle, []byte("not a bundle"), 0o644)
	for _, c := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"audit"}, exitUsage, "Usage: proofline audit"},
		{[]string{"audit", "frobnicate"}, exitUsage, "unknown command"},
		{[]string{"audit", "export", "--out", "x"}, exitUsage, "--data DIR and --out FILE are required"},
		{[]string{"audit", "export", "--data", dir, "--out", "x", "--from", "yesterday"}, exitUsage, "RFC 3339"},
		{[]string{"audit", "export", "--data", dir, "--out", filepath.Join(dir, "o")}, exitUsage, "holds no evidence log"},
		{[]string{"audit", "verify"}, exitUsage, "exactly one bundle"},
		{[]string{"audit", "verify", "a", "b"}, exitUsage, "exactly one bundle"},
		{[]string{"audit", "verify", filepath.Join(dir, "missing")}, exitUsage, "no such file"},
		{[]string{"audit", "verify", notBundle, "--inventory", bad}, exitUsage, "no subjects"},
		{[]string{"audit", "verify", notBundle, "--quiet"}, exitContraindicated, "bundle: not a readable audit bundle"},
	} {
		t.Run(strings.Join(c.args, " "), func(t *testing.T) {
			code, out, errOut := runCLI(t, c.args...)
			if code != c.code || !strings.Contains(out+errOut, c.want) {
				t.Fatalf("exit %d, want %d with %q:\n%s%s", code, c.code, c.want, out, errOut)
			}
		})
	}
}
