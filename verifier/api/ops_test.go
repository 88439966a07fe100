package api

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"slices"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/proofline/proofline/attest"
	"github.com/proofline/proofline/evidence/log"
	"github.com/proofline/proofline/verifier/ear"
	"github.com/proofline/proofline/verifier/service"
	"github.com/proofline/proofline/verifier/service/servicetest"
)

// Policy management over HTTP: create (YAML), list, get, activate; each change is a record, and
// the active policy decides the next verdict.
func TestPolicyAPI(t *testing.T) {
	f := newFixture(t, options{})
	var list struct {
		Policies []policyResponse `json:"policies"`
	}
	f.getJSON("/v1/policies", "audrey", &list)
	if len(list.Policies) != 1 || !list.Policies[0].Active || list.Policies[0].ID != "simulated-fleet" {
		t.Fatalf("initial: %+v", list)
	}
	// A policy without the SEV-SNP section rejects SEV-SNP evidence.
	code, _, body := f.do(http.MethodPost, "/v1/policies", "alice", []byte("id: tdx-only\ntdx: {}\n"))
	if code != http.StatusCreated {
		t.Fatalf("create: %d %s", code, body)
	}
	var v policyResponse
	if err := json.Unmarshal(body, &v); err != nil || v.Version != 2 || v.Active || v.CreatedBy != "admin:alice" {
		t.Fatalf("created: %s", body)
	}
	if code, _, body := f.do(http.MethodPost, "/v1/policies", "alice", []byte("id: [\n")); code != http.StatusBadRequest {
		t.Fatalf("bad YAML: %d %s", code, body)
	}
	var got policyResponse
	f.getJSON("/v1/policies/2", "audrey", &got)
	if got.YAML != "id: tdx-only\ntdx: {}\n" || got.Digest != v.Digest {
		t.Fatalf("get: %+v", got)
	}
	code, _, body = f.do(http.MethodPost, "/v1/policies/2/activate", "alice", nil)
	if code != http.StatusOK {
		t.Fatalf("activate: %d %s", code, body)
	}
	if code, _, body := f.do(http.MethodPost, "/v1/policies/2/activate", "alice", nil); code != http.StatusConflict {
		t.Fatalf("activate again: %d %s", code, body)
	}
	a := f.attest("vm-snp", f.evidence(attest.PlatformSNP, "vm-snp", f.challenge("vm-snp"), servicetest.FaultNone))
	if res := a.decoded(t); !res.HasFailure(ear.CodePlatformNotInPolicy) || res.Policy.ID != "tdx-only" {
		t.Fatalf("after activation: %s", a.Result)
	}
	// Both changes are in the log, as policy_change records by alice.
	var recs recordsResponse
	f.getJSON("/v1/records?kind=policy_change", "audrey", &recs)
	if len(recs.Records) != 4 { // bootstrap create + activate, then create + activate
		t.Fatalf("policy_change records: %+v", recs)
	}
}

// A relying party records its key-release decision; the record names it, the subject and the
// attestation record it relied on.
func TestEventsAPI(t *testing.T) {
	f := newFixture(t, options{})
	a := f.attest("vm-tdx", f.evidence(attest.PlatformTDX, "vm-tdx", f.challenge("vm-tdx"), servicetest.FaultNone))
	ev := fmt.Sprintf(`{"subject":"vm-tdx","platform":"tdx","resource":"db-key","decision":"release","attestation_record_sha256":%q}`, a.RecordSHA256)
	code, _, body := f.do(http.MethodPost, "/v1/events", "key-release", []byte(ev))
	if code != http.StatusCreated {
		t.Fatalf("event: %d %s", code, body)
	}
	var r recordedResponse
	if err := json.Unmarshal(body, &r); err != nil {
		t.Fatal(err)
	}
	_, rec, err := f.svc.Record(t.Context(), r.LogIndex)
	if err != nil {
		t.Fatal(err)
	}
	kr := rec.KeyRelease
	if kr == nil || kr.RelyingParty != "key-release" || kr.Resource != "db-key" || kr.Decision != "release" || kr.Attestation.String() != a.RecordSHA256 || rec.Subject.ID != "vm-tdx" {
		t.Fatalf("record: %+v %+v", rec, kr)
	}
	for _, bad := range []string{
		`{"subject":"vm-tdx","resource":"db-key","decision":"maybe"}`,
		`{"subject":"","resource":"db-key","decision":"deny"}`,
		`{"subject":"vm-tdx","resource":"db-key","decision":"deny","extra":1}`,
		`{"subject":"vm-tdx","resource":"db-key","decision":"deny","attestation_record_sha256":"abc"}`,
	} {
		if code, _, body := f.do(http.MethodPost, "/v1/events", "key-release", []byte(bad)); code != http.StatusBadRequest {
			t.Errorf("%s: %d %s", bad, code, body)
		}
	}
}

// smallLeafLog refuses leaves above limit (when set) with log.ErrLeafSize, as a log configured
// with smaller leaves does.
type smallLeafLog struct {
	service.Log
	limit atomic.Int64
}

func (l *smallLeafLog) Append(ctx context.Context, leaf []byte) (uint64, error) {
	if n := l.limit.Load(); n > 0 && int64(len(leaf)) > n {
		return 0, fmt.Errorf("%w: %d bytes, want 1 to %d", log.ErrLeafSize, len(leaf), n)
	}
	return l.Log.Append(ctx, leaf)
}

// A key-release event's subject, resource, reason and policy id are bounded, and a record that
// still does not fit the log is the caller's error (400 naming what to shorten), never a 500.
func TestEventsAPIBounds(t *testing.T) {
	var sl *smallLeafLog
	f := newFixture(t, options{wrapLog: func(l service.Log) service.Log { sl = &smallLeafLog{Log: l}; return sl }})
	event := func(subject, resource, reason, policyID string) []byte {
		b, err := json.Marshal(map[string]any{
			"subject": subject, "resource": resource, "decision": "deny", "reason": reason,
			"policy": map[string]string{"id": policyID, "digest": "sha256:" + strings.Repeat("ab", 32)},
		})
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	for _, tc := range []struct {
		name  string
		body  []byte
		field string // "" for the valid case
	}{
		{"at every bound", event(strings.Repeat("s", 256), strings.Repeat("r", 4096), strings.Repeat("w", 4096), strings.Repeat("p", 255)), ""},
		{"subject", event(strings.Repeat("s", 257), "db-key", "", "p"), "subject is 257 bytes, longer than 256"},
		{"resource", event("vm-tdx", strings.Repeat("r", 4097), "", "p"), "resource is 4097 bytes, longer than 4096"},
		{"reason", event("vm-tdx", "db-key", strings.Repeat("w", 70000), "p"), "reason is 70000 bytes, longer than 4096"},
		{"policy id", event("vm-tdx", "db-key", "", strings.Repeat("p", 256)), "policy.id is 256 bytes, longer than 255"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, _, body := f.do(http.MethodPost, "/v1/events", "key-release", tc.body)
			var e apiError
			switch {
			case tc.field == "" && code != http.StatusCreated:
				t.Fatalf("%d %s, want 201", code, body)
			case tc.field != "" && (code != http.StatusBadRequest || json.Unmarshal(body, &e) != nil || e.Code != "bad_request" || !strings.Contains(e.Message, tc.field)):
				t.Fatalf("%d %s, want 400 saying %q", code, body, tc.field)
			}
		})
	}
	t.Run("record larger than a leaf", func(t *testing.T) {
		sl.limit.Store(2048)
		defer sl.limit.Store(0)
		code, _, body := f.do(http.MethodPost, "/v1/events", "key-release", event("vm-tdx", "db-key", strings.Repeat("w", 3000), "p"))
		var e apiError
		if code != http.StatusBadRequest || json.Unmarshal(body, &e) != nil || !strings.Contains(e.Message, "shorten resource or reason") {
			t.Fatalf("%d %s, want 400 saying to shorten resource or reason", code, body)
		}
	})
}

// A JSON body past the limit is 413 whether or not the client gave its length: one sent in
// chunks is cut off while it is decoded, and that too is 413, not 400.
func TestJSONBodyTooLargeChunked(t *testing.T) {
	f := newFixture(t, options{http: func(c *Config) { c.MaxBody = 1 << 10 }})
	for _, tc := range []struct{ path, as, body string }{
		{"/v1/events", "key-release", `{"subject":"vm-tdx","resource":"db-key","decision":"deny","reason":"` + strings.Repeat("w", 4<<10) + `"}`},
		{"/v1/tokens", "alice", `{"name":"` + strings.Repeat("n", 4<<10) + `","role":"agent","expires_in":"1h"}`},
	} {
		for _, chunked := range []bool{false, true} {
			var body io.Reader = strings.NewReader(tc.body)
			if chunked {
				body = io.MultiReader(body) // no length known: sent chunked
			}
			req, err := http.NewRequest(http.MethodPost, f.srv.URL+tc.path, body)
			if err != nil {
				t.Fatal(err)
			}
			req.Header.Set("Authorization", "Bearer "+tokenFor(tc.as))
			req.Header.Set("Content-Type", "application/json")
			resp, err := f.srv.Client().Do(req)
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			var e apiError
			if resp.StatusCode != http.StatusRequestEntityTooLarge || json.Unmarshal(b, &e) != nil || e.Code != "payload_too_large" {
				t.Errorf("POST %s, chunked %v: %d %s, want 413 payload_too_large", tc.path, chunked, resp.StatusCode, b)
			}
		}
	}
	// The valid case: a small body under the same limit is decoded.
	if code, _, body := f.do(http.MethodPost, "/v1/events", "key-release", []byte(`{"subject":"vm-tdx","resource":"db-key","decision":"deny"}`)); code != http.StatusCreated {
		t.Fatalf("a small event: %d %s", code, body)
	}
}

// /metrics carries verdicts by status and failure code, latencies, the queue and collateral age;
// /readyz is 503 while shutting down; oversized bodies are 413.
func TestOperations(t *testing.T) {
	f := newFixture(t, options{http: func(c *Config) { c.MaxAttestBody = 64 << 10 }})
	f.attest("vm-tdx", f.evidence(attest.PlatformTDX, "vm-tdx", f.challenge("vm-tdx"), servicetest.FaultDebug))
	code, _, body := f.do(http.MethodGet, "/metrics", "audrey", nil)
	if code != http.StatusOK {
		t.Fatalf("metrics: %d", code)
	}
	for _, want := range []string{
		`proofline_verdicts_total{platform="tdx",status="contraindicated"} 1`,
		`proofline_verdict_failures_total{code="tdx_debug"} 1`,
		`proofline_verification_duration_seconds_count{platform="tdx"} 1`,
		`proofline_log_append_duration_seconds_count`,
		`proofline_collateral_age_seconds{kind=`,
		`proofline_attest_queue_depth 0`,
		`proofline_http_requests_total{code="200",method="POST",route="/v1/attest"} 1`,
	} {
		if !bytes.Contains(body, []byte(want)) {
			t.Errorf("metrics lack %s", want)
		}
	}
	code, hdr, body := f.do(http.MethodPost, "/v1/attest", "vm-tdx", bytes.Repeat([]byte(" "), 65<<10))
	if code != http.StatusRequestEntityTooLarge || hdr.Get("X-Request-ID") == "" || !strings.Contains(string(body), "payload_too_large") {
		t.Fatalf("oversized body: %d %s", code, body)
	}
	var ready readyResponse
	f.getJSON("/readyz", "", &ready)
	if ready.Status != "degraded" || !slices.Equal(ready.Warnings, []string{service.WarnTestRoots}) {
		t.Fatalf("readyz: %+v", ready)
	}
	f.svc.Drain()
	if code, _, body := f.do(http.MethodGet, "/readyz", "", nil); code != http.StatusServiceUnavailable {
		t.Fatalf("readyz while draining: %d %s", code, body)
	}
}

// Methods a client makes up are counted under one "other" label: 300 of them, on a route and
// off one, add no more series than the fixed set of methods.
func TestMetricsMethodLabelsBounded(t *testing.T) {
	f := newFixture(t, options{})
	for i := range 300 {
		path := "/v1/attest"
		if i%2 == 1 {
			path = fmt.Sprintf("/made-up/%d", i)
		}
		req, err := http.NewRequest(fmt.Sprintf("M%d", i), f.srv.URL+path, nil)
		if err != nil {
			t.Fatal(err)
		}
		resp, err := f.srv.Client().Do(req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	f.do(http.MethodGet, "/healthz", "", nil) // the valid case: a real method keeps its name
	mfs, err := f.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	methods := map[string]bool{}
	series := 0
	for _, mf := range mfs {
		if !strings.HasPrefix(mf.GetName(), "proofline_http_") {
			continue
		}
		for _, m := range mf.GetMetric() {
			series++
			for _, l := range m.GetLabel() {
				if l.GetName() == "method" {
					methods[l.GetValue()] = true
				}
			}
		}
	}
	if !methods["other"] || !methods[http.MethodGet] || len(methods) != 2 || series > 10 {
		t.Fatalf("after 300 made-up methods: %d HTTP series, methods %v; want \"other\" and GET only", series, slices.Sorted(maps.Keys(methods)))
	}
}

// checkpointFailingLog fails Checkpoint, with an error naming a path, while failing is set.
type checkpointFailingLog struct {
	service.Log
	failing atomic.Bool
}

func (l *checkpointFailingLog) Checkpoint(ctx context.Context) (log.Checkpoint, error) {
	if l.failing.Load() {
		return log.Checkpoint{}, errors.New("open /srv/proofline/secret-data/log/checkpoint: permission denied")
	}
	return l.Log.Checkpoint(ctx)
}

// /readyz is public: it says only the status and generic codes, never errors, paths, the policy
// or queue depths.
func TestReadyzRedacted(t *testing.T) {
	var cl *checkpointFailingLog
	f := newFixture(t, options{wrapLog: func(l service.Log) service.Log { cl = &checkpointFailingLog{Log: l}; return cl }})
	code, _, body := f.do(http.MethodGet, "/readyz", "", nil)
	var ready map[string]any
	if code != http.StatusOK || json.Unmarshal(body, &ready) != nil {
		t.Fatalf("readyz: %d %s", code, body)
	}
	if ready["status"] != "degraded" || fmt.Sprint(ready["warnings"]) != "["+service.WarnTestRoots+"]" || len(ready) != 2 {
		t.Fatalf("degraded readyz says more than status and codes: %s", body)
	}
	cl.failing.Store(true)
	code, _, body = f.do(http.MethodGet, "/readyz", "", nil)
	if code != http.StatusServiceUnavailable || string(body) != `{"status":"not_ready","error":"unavailable"}` {
		t.Fatalf("not ready: %d %s", code, body)
	}
	cl.failing.Store(false)
	f.svc.Drain()
	code, _, body = f.do(http.MethodGet, "/readyz", "", nil)
	if code != http.StatusServiceUnavailable || string(body) != `{"status":"not_ready","error":"shutting_down"}` {
		t.Fatalf("draining: %d %s", code, body)
	}
}
