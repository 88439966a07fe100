package api

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	"golang.org/x/mod/sumdb/note"

	"github.com/proofline/proofline/attest"
	"github.com/proofline/proofline/evidence"
	"github.com/proofline/proofline/evidence/audit"
	"github.com/proofline/proofline/verifier/service/servicetest"
)

// GET /v1/audit/export is the bundle `proofline audit export` writes: it verifies offline against
// the keys GET /v1/keys publishes, re-performing every verdict. Auditors and admins only; a
// window that does not parse or ends before it starts is 400.
func TestAuditExport(t *testing.T) {
	f := newFixture(t, options{})
	ok := f.attest("vm-tdx", f.evidence(attest.PlatformTDX, "vm-tdx", f.challenge("vm-tdx"), servicetest.FaultNone))
	bad := f.attest("vm-snp", f.evidence(attest.PlatformSNP, "vm-snp", f.challenge("vm-snp"), servicetest.FaultDebug))
	waitProof(t, f, bad.LogIndex)
	waitProof(t, f, ok.LogIndex)

	code, h, body := f.do(http.MethodGet, "/v1/audit/export", "audrey", nil)
	if code != http.StatusOK || h.Get("Content-Type") != "application/gzip" || !strings.HasPrefix(h.Get("Content-Disposition"), `attachment; filename="proofline-audit-`) {
		t.Fatalf("export: %d %v\n%.300s", code, h, body)
	}
	var keys struct {
		RecordKeys json.RawMessage `json:"record_keys"`
		LogKey     string          `json:"log_key"`
	}
	f.getJSON("/v1/keys", "audrey", &keys)
	var hist evidence.KeyHistory
	if err := hist.UnmarshalJSON(keys.RecordKeys); err != nil {
		t.Fatal(err)
	}
	logKey, err := note.NewVerifier(keys.LogKey)
	if err != nil {
		t.Fatal(err)
	}
	rep, err := audit.Verify(context.Background(), bytes.NewReader(body), audit.VerifyOptions{Keys: &hist, LogKey: logKey, TestRoots: f.plat.Roots})
	if err != nil || !rep.OK() {
		t.Fatalf("the exported bundle does not verify: %v %+v", err, rep)
	}
	if rep.Kinds["attestation"] != 2 {
		t.Errorf("the bundle holds %d attestations, want 2: %+v", rep.Kinds["attestation"], rep.Kinds)
	}

	// The bundle proves the log's bytes: one flipped byte and it no longer verifies.
	tampered := bytes.Clone(body)
	tampered[len(tampered)/2] ^= 1
	if rep, err := audit.Verify(context.Background(), bytes.NewReader(tampered), audit.VerifyOptions{Keys: &hist, LogKey: logKey, TestRoots: f.plat.Roots}); err == nil && rep.OK() {
		t.Fatal("a tampered download verifies")
	}

	for _, c := range []struct {
		query, as string
		want      int
	}{
		{"", "vm-tdx", http.StatusForbidden},
		{"", "", http.StatusUnauthorized},
		{"?from=yesterday", "audrey", http.StatusBadRequest},
		{"?from=2026-02-01T00:00:00Z&to=2026-01-01T00:00:00Z", "audrey", http.StatusBadRequest},
		{"?subject=" + strings.Repeat("x", 300), "audrey", http.StatusBadRequest},
		{"?from=2099-01-01T00:00:00Z", "audrey", http.StatusBadRequest},                         // no record in the window
		{"?from=2000-01-01T00:00:00Z&to=2099-01-01T00:00:00Z", "audrey", http.StatusBadRequest}, // the window has not closed
	} {
		if code, _, body := f.do(http.MethodGet, "/v1/audit/export"+c.query, c.as, nil); code != c.want {
			t.Errorf("GET /v1/audit/export%.60s as %q: %d, want %d: %.200s", c.query, c.as, code, c.want, body)
		}
	}
}
