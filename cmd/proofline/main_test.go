package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/proofline/proofline/internal/fixture"
	"github.com/proofline/proofline/verifier/ear"
)

// verifyCLI runs `proofline verify` in-process and returns exit code, stdout and stderr.
func verifyCLI(t *testing.T, args ...string) (int, []byte, string) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	code := run(context.Background(), append([]string{"verify"}, args...), &stdout, &stderr)
	return code, stdout.Bytes(), stderr.String()
}

type result struct {
	Status    ear.Status      `json:"status"`
	TestRoots bool            `json:"test_roots"`
	Failures  []ear.Finding   `json:"failures"`
	Warnings  []ear.Finding   `json:"warnings"`
	Claims    json.RawMessage `json:"claims"`
	Policy    ear.PolicyRef   `json:"policy"`
}

func decode(t *testing.T, out []byte) result {
	t.Helper()
	var r result
	if err := json.Unmarshal(out, &r); err != nil {
		t.Fatalf("stdout is not one JSON result: %v\n%s", err, out)
	}
	return r
}

func codes(fs []ear.Finding) []ear.Code {
	var out []ear.Code
	for _, f := range fs {
		out = append(out, f.Code)
	}
	return out
}

// The pinned time at which the recorded real reports' certificates are valid.
const realAt = "2026-06-01T00:00:00Z"

// Acceptance: each real recorded report, with the policy written for it, is affirming or warning,
// shows the right measurements, and exits 0.
func TestVerifyRealFixtures(t *testing.T) {
	want := map[string]string{
		"tdx-v4-spr":   `"mr_td": "6363b8043668a3ad953278e10389574d326c6749fb78aa810ecd9336923db86f22fc00b8dcd404bc10d5e119d7215cbb"`,
		"tdx-v5":       `"mr_td": "7348651a34b2d2d3462822e3a750ec6110125f36757c78480bbfc69cc0d21fb001a1ced3ee19747dda8f750c3bc8f876"`,
		"tdx-v4-gcp":   `"mr_td": "dae67181d3d65e073ad8f95b7907d5e927bfe9761c9ff3e9b89734a45d8954dba41394c7717cb2735396c1d04231f94a"`,
		"snp-milan-v2": `"measurement": "b07af9620f3b839b47996422ddec6058338951d984e312115131ea82705eaf5b6bdf8a9ece31a5a608eb0cf2e4872b01"`,
	}
	for _, name := range fixture.Real {
		t.Run(name, func(t *testing.T) {
			dir := fixture.Path("real", name)
			code, out, stderr := verifyCLI(t, "--evidence", filepath.Join(dir, "evidence.json"), "--policy", filepath.Join(dir, "policy.yaml"), "--at", realAt)
			r := decode(t, out)
			if code != 0 || r.Status != ear.StatusWarning || len(r.Failures) != 0 {
				t.Fatalf("exit %d status %s failures %v warnings %v stderr %q", code, r.Status, codes(r.Failures), codes(r.Warnings), stderr)
			}
			if !bytes.Contains(out, []byte(want[name])) {
				t.Fatalf("claims lack %s:\n%s", want[name], r.Claims)
			}
			if r.TestRoots {
				t.Fatal("real reports verified against the built-in roots are marked test_roots")
			}
			hasUnsafe := false
			for _, w := range r.Warnings {
				hasUnsafe = hasUnsafe || w.Code == ear.CodeUnsafeOption
			}
			if !hasUnsafe {
				t.Fatalf("the fixture policy waives checks but no unsafe_option warning: %v", codes(r.Warnings))
			}
		})
	}
}

// Acceptance: with the default policy the real SEV-SNP report is contraindicated and its failures
// include the DEBUG code.
func TestVerifyRealSNPDefaultPolicy(t *testing.T) {
	code, out, _ := verifyCLI(t, "--evidence", fixture.Path("real", "snp-milan-v2", "evidence.json"), "--at", realAt)
	r := decode(t, out)
	if code != 1 || r.Status != ear.StatusContraindicated {
		t.Fatalf("exit %d status %s", code, r.Status)
	}
	found := false
	for _, f := range r.Failures {
		found = found || f.Code == ear.CodeSNPDebug
	}
	if !found || r.Policy.ID != "proofline-default" {
		t.Fatalf("failures %v policy %v", codes(r.Failures), r.Policy)
	}
}

// fakeArgs are the flags that verify a committed fake-PKI fixture at its pinned time.
func fakeArgs(name string, extra ...string) []string {
	dir := fixture.Path("fake", name)
	return append([]string{
		"--evidence", filepath.Join(dir, "evidence.json"),
		"--policy", filepath.Join(dir, "policy.yaml"),
		"--collateral", filepath.Join(dir, "collateral"),
		"--roots", filepath.Join(dir, "roots"),
		"--at", "2026-11-24T00:00:00Z",
	}, extra...)
}

// fixtureNonce is the nonce the fake fixtures were generated for: base64(SHA-256("proofline fixture nonce")).
const fixtureNonce = "a78oMKgPAXCJ8vrp9KibBA07KJ9ykpLewyGkAei13Js="

var fakeFixtures = []string{"tdx-v4", "tdx-v5", "snp-milan-vcek", "snp-genoa-vlek"}

func TestVerifyFakeFixtures(t *testing.T) {
	for _, name := range fakeFixtures {
		t.Run(name, func(t *testing.T) {
			code, out, stderr := verifyCLI(t, fakeArgs(name, "--nonce", fixtureNonce)...)
			r := decode(t, out)
			if code != 0 || r.Status != ear.StatusAffirming || !r.TestRoots {
				t.Fatalf("exit %d status %s test_roots %v failures %v warnings %v stderr %q", code, r.Status, r.TestRoots, codes(r.Failures), codes(r.Warnings), stderr)
			}
			// The nonce in the envelope alone is checked but does not prove freshness.
			code, out, _ = verifyCLI(t, fakeArgs(name)...)
			if r := decode(t, out); code != 0 || r.Status != ear.StatusWarning || len(r.Warnings) != 1 || r.Warnings[0].Code != ear.CodeFreshnessNotEvaluated {
				t.Fatalf("envelope nonce only: exit %d status %s warnings %v", code, r.Status, codes(r.Warnings))
			}
			// After the collateral expires the same evidence is contraindicated.
			args := fakeArgs(name)
			args[len(args)-1] = "2027-06-01T00:00:00Z"
			if code, out, _ := verifyCLI(t, args...); code != 1 || decode(t, out).Status != ear.StatusContraindicated {
				t.Fatalf("expired collateral: exit %d\n%s", code, out)
			}
			// Another nonce is a rejection.
			other := base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{7}, 32))
			code, out, _ = verifyCLI(t, fakeArgs(name, "--nonce", other)...)
			if r := decode(t, out); code != 1 || len(r.Failures) != 1 || r.Failures[0].Code != ear.CodeNonceMismatch {
				t.Fatalf("wrong nonce: exit %d failures %v", code, codes(r.Failures))
			}
			// Without the fake roots, the fake chain does not verify against the vendor roots.
			noRoots := fakeArgs(name)
			for i := range noRoots {
				if noRoots[i] == "--roots" {
					noRoots = append(noRoots[:i], noRoots[i+2:]...)
					break
				}
			}
			if code, out, _ := verifyCLI(t, noRoots...); code != 1 || decode(t, out).TestRoots {
				t.Fatalf("fake evidence against the built-in roots: exit %d\n%s", code, out)
			}
		})
	}
}

// Acceptance: with --at, verifying the same evidence twice prints byte-identical JSON.
func TestVerifyDeterministic(t *testing.T) {
	for _, args := range [][]string{
		fakeArgs("tdx-v5"),
		fakeArgs("snp-genoa-vlek"),
		{"--evidence", fixture.Path("real", "snp-milan-v2", "evidence.json"), "--at", realAt},
	} {
		_, a, _ := verifyCLI(t, args...)
		_, b, _ := verifyCLI(t, args...)
		if len(a) == 0 || !bytes.Equal(a, b) {
			t.Fatalf("two runs differ:\n%s\n%s", a, b)
		}
	}
}

func TestVerifyUsageErrors(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	ev := fixture.Path("real", "tdx-v5", "evidence.json")
	for _, tc := range []struct {
		name string
		args []string
	}{
		{"no flags", nil},
		{"missing evidence file", []string{"--evidence", filepath.Join(dir, "nope.json")}},
		{"not JSON", []string{"--evidence", write("bad.json", "not json at all")}},
		{"bad --at", []string{"--evidence", ev, "--at", "yesterday"}},
		{"bad --nonce", []string{"--evidence", ev, "--nonce", "AAEC"}},
		{"bad --report-data", []string{"--evidence", ev, "--report-data", "zz"}},
		{"missing policy", []string{"--evidence", ev, "--policy", filepath.Join(dir, "nope.yaml")}},
		{"policy with unknown key", []string{"--evidence", ev, "--policy", write("p.yaml", "id: x\ntdx:\n  mrdt: []\n")}},
		{"policy accepting Revoked", []string{"--evidence", ev, "--policy", write("r.yaml", "id: x\ntdx:\n  accepted_tcb_statuses: [Revoked]\n")}},
		{"empty roots dir", []string{"--evidence", ev, "--roots", dir}},
		{"missing collateral dir", []string{"--evidence", ev, "--collateral", filepath.Join(dir, "none")}},
		{"unknown flag", []string{"--evidence", ev, "--frobnicate"}},
		{"stray argument", []string{"--evidence", ev, "extra"}},
		{"--nonce with --report-data", []string{"--evidence", ev, "--nonce", fixtureNonce, "--report-data", strings.Repeat("00", 64)}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, out, stderr := verifyCLI(t, tc.args...)
			if code != 2 || len(out) != 0 || stderr == "" {
				t.Fatalf("exit %d, stdout %q, stderr %q", code, out, stderr)
			}
			if !strings.Contains(tc.name, "flag") && strings.Count(strings.TrimSpace(stderr), "\n") != 0 {
				t.Fatalf("stderr is not one line: %q", stderr)
			}
		})
	}
}

// Anything about the evidence itself is a verdict: exit 1 with the JSON result.
func TestVerifyMalformedEvidenceIsAVerdict(t *testing.T) {
	dir := t.TempDir()
	for name, content := range map[string]string{
		"schema":              `{"version":2,"platform":"tdx","report":"AAEC"}`,
		"short quote":         `{"version":1,"platform":"tdx","report":"AAEC"}`,
		"short report":        `{"version":1,"platform":"sev-snp","report":"AAEC"}`,
		"garbage certificate": `{"version":1,"platform":"sev-snp","report":"` + base64.StdEncoding.EncodeToString(make([]byte, 1184)) + `","certificates":["AQI="]}`,
	} {
		t.Run(name, func(t *testing.T) {
			p := filepath.Join(dir, "ev.json")
			if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
				t.Fatal(err)
			}
			code, out, stderr := verifyCLI(t, "--evidence", p, "--at", realAt)
			r := decode(t, out)
			if code != 1 || r.Status != ear.StatusContraindicated || len(r.Failures) == 0 || stderr != "" {
				t.Fatalf("exit %d status %s failures %v stderr %q", code, r.Status, codes(r.Failures), stderr)
			}
		})
	}
}

func TestCommands(t *testing.T) {
	var out, errb bytes.Buffer
	if code := run(context.Background(), []string{"version"}, &out, &errb); code != 0 || !strings.HasPrefix(out.String(), "proofline ") {
		t.Fatalf("version: %d %q", code, out.String())
	}
	if code := run(context.Background(), []string{"nonsense"}, &out, &errb); code != 2 {
		t.Fatalf("unknown command: %d", code)
	}
	if code := run(context.Background(), nil, &out, &errb); code != 2 {
		t.Fatalf("no command: %d", code)
	}
}
