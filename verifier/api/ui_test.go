package api

import (
	"encoding/json"
	"net/http"
	"strconv"
	"strings"
	"testing"

	"github.com/proofline/proofline/attest"
	"github.com/proofline/proofline/verifier/service/servicetest"
)

func init() {
	// TestAuthorization: what an allowed role gets for an empty request to the UI's route.
	allowedStatus["GET /v1/audit/summary"] = http.StatusOK
	allowedStatus["GET /v1/audit/export"] = http.StatusOK
}

// The UI's static files are public, carry a strict CSP, and nothing but the embedded files is
// served under /ui/.
func TestUIStatic(t *testing.T) {
	f := newFixture(t, options{})
	for _, c := range []struct {
		path, ctype, want string
	}{
		{"/ui/", "text/html", `<script src="app.js" defer></script>`},
		{"/ui/index.html", "text/html", `id="login-form"`},
		{"/ui/app.js", "text/javascript", "sessionStorage"},
		{"/ui/app.css", "text/css", "font-family"},
	} {
		code, hdr, body := f.do(http.MethodGet, c.path, "", nil)
		if code != http.StatusOK || !strings.HasPrefix(hdr.Get("Content-Type"), c.ctype) || !strings.Contains(string(body), c.want) {
			t.Errorf("%s: %d %s", c.path, code, hdr.Get("Content-Type"))
		}
		if csp := hdr.Get("Content-Security-Policy"); csp != uiCSP || strings.Contains(csp, "unsafe") || hdr.Get("X-Content-Type-Options") != "nosniff" {
			t.Errorf("%s: CSP %q", c.path, csp)
		}
	}
	// The page holds no inline script or style and no data.
	_, _, page := f.do(http.MethodGet, "/ui/", "", nil)
	if strings.Contains(string(page), "<script>") || strings.Contains(string(page), "style=") || strings.Contains(string(page), "<style") {
		t.Error("the page holds inline script or style, which its CSP refuses")
	}
	for _, p := range []string{"/ui/nope.js", "/ui/..%2fserver.go", "/ui/%2e%2e%2fopenapi.yaml", "/ui/ui.go", "/ui/ui", "/ui/../v1/keys"} {
		code, _, body := f.do(http.MethodGet, p, "", nil)
		if code == http.StatusOK && !strings.Contains(p, "/v1/keys") {
			t.Errorf("%s: %d %s", p, code, body)
		}
		if strings.Contains(string(body), "package api") || strings.Contains(string(body), "record_keys") {
			t.Errorf("%s served something outside the UI: %s", p, body)
		}
	}
	// A bad credential is refused on the UI's routes too: the API never falls back to anonymous.
	req, _ := http.NewRequest(http.MethodGet, f.srv.URL+"/ui/", nil)
	req.Header.Set("Authorization", "Bearer not-a-token")
	resp, err := f.srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("/ui/ with an unknown token: %d", resp.StatusCode)
	}
}

// GET /v1/audit/summary counts the log's records with their charts, for auditors and admins
// only, and refuses a window that does not parse or ends before it starts.
func TestAuditSummary(t *testing.T) {
	f := newFixture(t, options{})
	ok := f.attest("vm-tdx", f.evidence(attest.PlatformTDX, "vm-tdx", f.challenge("vm-tdx"), servicetest.FaultNone))
	bad := f.attest("vm-snp", f.evidence(attest.PlatformSNP, "vm-snp", f.challenge("vm-snp"), servicetest.FaultDebug))
	waitProof(t, f, bad.LogIndex)
	waitProof(t, f, ok.LogIndex)
	var s struct {
		Records      int            `json:"records"`
		Attestations int            `json:"attestations"`
		Statuses     map[string]int `json:"statuses"`
		TestRoots    int            `json:"test_roots"`
		Periods      []struct {
			TestRoots int `json:"test_roots"`
		} `json:"periods"`
		Failures []struct{ Code string }
		Charts   map[string]string `json:"charts"`
	}
	var sum map[string]json.RawMessage
	f.getJSON("/v1/audit/summary", "audrey", &sum)
	raw, _ := json.Marshal(sum)
	if err := json.Unmarshal(raw, &s); err != nil {
		t.Fatal(err)
	}
	if s.Attestations != 2 || s.Statuses[string(ok.Status)] < 1 || s.Statuses["contraindicated"] != 1 || len(s.Failures) == 0 || s.Failures[0].Code != "snp_debug" {
		t.Fatalf("summary: %s", raw)
	}
	if !strings.Contains(s.Charts["verdicts"], `class="bar"`) || !strings.Contains(s.Charts["failures"], "snp_debug") || !strings.HasPrefix(s.Charts["tcb"], "<svg") {
		t.Fatalf("charts: %v", s.Charts)
	}
	// The fixture's platforms sign with test vendor roots: the figures and the charts say so.
	if s.TestRoots != 2 || len(s.Periods) != 1 || s.Periods[0].TestRoots != 2 ||
		!strings.Contains(s.Charts["verdicts"], "TEST VENDOR ROOTS: 2 of 2 verdicts") || !strings.Contains(s.Charts["tcb"], `class="test-roots"`) {
		t.Fatalf("test roots not marked: %d, %+v\n%s", s.TestRoots, s.Periods, s.Charts["verdicts"])
	}
	// A window after the records counts none.
	f.getJSON("/v1/audit/summary?from=2999-01-01T00:00:00Z", "alice", &sum)
	if string(sum["records"]) != "0" {
		t.Fatalf("empty window: %s", sum["records"])
	}
	for _, c := range []struct {
		query, as string
		want      int
	}{
		{"", "", http.StatusUnauthorized},
		{"", "vm-tdx", http.StatusForbidden},
		{"", "key-release", http.StatusForbidden},
		{"?from=yesterday", "audrey", http.StatusBadRequest},
		{"?from=2026-02-01T00:00:00Z&to=2026-01-01T00:00:00Z", "audrey", http.StatusBadRequest},
	} {
		if code, _, body := f.do(http.MethodGet, "/v1/audit/summary"+c.query, c.as, nil); code != c.want {
			t.Errorf("%q as %q: %d %s, want %d", c.query, c.as, code, body, c.want)
		}
	}
}

// Every answer under /v1/ — data, errors, unknown routes — is not to be stored
// (Cache-Control: no-store) and has its content type as sent (X-Content-Type-Options: nosniff);
// routes outside /v1/ keep their own caching.
func TestV1Headers(t *testing.T) {
	f := newFixture(t, options{})
	a := f.attest("vm-tdx", f.evidence(attest.PlatformTDX, "vm-tdx", f.challenge("vm-tdx"), servicetest.FaultNone))
	waitProof(t, f, a.LogIndex)
	idx := strconv.FormatUint(a.LogIndex, 10)
	for _, c := range []struct {
		path, as string
		want     int
	}{
		{"/v1/records", "audrey", http.StatusOK},
		{"/v1/records/" + idx, "audrey", http.StatusOK},
		{"/v1/results/" + idx, "audrey", http.StatusOK},
		{"/v1/log/checkpoint", "audrey", http.StatusOK},
		{"/v1/log/proofs/inclusion/" + idx, "audrey", http.StatusOK},
		{"/v1/audit/summary", "audrey", http.StatusOK},
		{"/v1/keys", "audrey", http.StatusOK},
		{"/v1/tokens", "alice", http.StatusOK},
		{"/v1/openapi.yaml", "audrey", http.StatusOK},
		{"/v1/challenge", "", http.StatusOK},
		{"/v1/records", "", http.StatusUnauthorized},
		{"/v1/records", "vm-tdx", http.StatusForbidden},
		{"/v1/records/99999", "audrey", http.StatusNotFound},
		{"/v1/no-such-route", "audrey", http.StatusNotFound},
		{"POST /v1/policies", "audrey", http.StatusForbidden},
	} {
		method, path, ok := strings.Cut(c.path, " ")
		if !ok {
			method, path = http.MethodGet, c.path
		}
		code, hdr, body := f.do(method, path, c.as, nil)
		if code != c.want {
			t.Errorf("%s as %q: %d %s, want %d", c.path, c.as, code, body, c.want)
		}
		if cc, ns := hdr.Get("Cache-Control"), hdr.Get("X-Content-Type-Options"); cc != "no-store" || ns != "nosniff" {
			t.Errorf("%s as %q: Cache-Control %q, X-Content-Type-Options %q", c.path, c.as, cc, ns)
		}
	}
	if _, hdr, _ := f.do(http.MethodGet, "/.well-known/jwks.json", "", nil); hdr.Get("Cache-Control") == "no-store" {
		t.Error("the JWKS, public and cacheable, is marked no-store")
	}
	if _, hdr, _ := f.do(http.MethodGet, "/ui/app.js", "", nil); hdr.Get("Cache-Control") != "no-cache" {
		t.Errorf("the UI's files: Cache-Control %q, want their own no-cache", hdr.Get("Cache-Control"))
	}
}
