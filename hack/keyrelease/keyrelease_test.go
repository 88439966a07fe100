package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/proofline/proofline/attest"
	"github.com/proofline/proofline/attest/attesttest/fakeintel"
	"github.com/proofline/proofline/evidence"
	"github.com/proofline/proofline/verifier/api"
	"github.com/proofline/proofline/verifier/rp"
	"github.com/proofline/proofline/verifier/service"
	"github.com/proofline/proofline/verifier/service/servicetest"
)

type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.now }

func (c *clock) Advance(d time.Duration) { c.mu.Lock(); defer c.mu.Unlock(); c.now = c.now.Add(d) }

// setup runs a verifier in test mode (simulated platforms) and the key-release service in front
// of it, over real HTTP.
type setup struct {
	t          *testing.T
	plat       *servicetest.Platforms
	clock      *clock
	svc        *service.Service
	verifier   *httptest.Server
	kr         *httptest.Server
	failEvents atomic.Bool
	events     atomic.Int64  // POST /v1/events: key_release records asked for
	jwksGets   atomic.Int64  // GET /.well-known/jwks.json
	jwksGate   chan struct{} // when set, JWKS requests wait until it is closed
	agentToken string
	krSecret   string
}

func newSetup(t *testing.T) *setup {
	plat, err := servicetest.New(time.Now())
	if err != nil {
		t.Fatal(err)
	}
	s := &setup{t: t, plat: plat, clock: &clock{now: plat.Now.Add(time.Minute).Truncate(time.Second)}, agentToken: "agent-token", krSecret: "s3cret"}
	svc, err := service.Open(context.Background(), service.Config{DataDir: t.TempDir(), Log: service.LogConfig{CheckpointInterval: 100 * time.Millisecond}},
		service.Env{TestMode: true, Now: s.clock.Now, Roots: plat.Roots, Collateral: plat.Collateral, InitialPolicy: plat.PolicyYAML})
	if err != nil {
		t.Fatal(err)
	}
	s.svc = svc
	hash := func(tok string) string { h := sha256.Sum256([]byte(tok)); return hex.EncodeToString(h[:]) }
	srv, err := api.New(svc, api.Config{Tokens: []api.TokenConfig{
		{Name: "vm-1", Role: service.RoleAgent, SHA256: hash(s.agentToken)},
		{Name: "key-release", Role: service.RoleRelyingParty, SHA256: hash("kr-token")},
	}}, api.Options{})
	if err != nil {
		t.Fatal(err)
	}
	mrtd := fakeintel.DefaultQuoteOptions().MrTd
	h := srv.Handler()
	s.verifier = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/v1/events":
			s.events.Add(1)
		case "/.well-known/jwks.json":
			s.jwksGets.Add(1)
			if s.jwksGate != nil {
				<-s.jwksGate
			}
		}
		if r.URL.Path == "/v1/events" && s.failEvents.Load() {
			http.Error(w, `{"code":"unavailable"}`, http.StatusServiceUnavailable)
			return
		}
		h.ServeHTTP(w, r)
	}))
	k := newKeyRelease(s.verifier.URL, "kr-token", s.verifier.Client(), rp.Options{
		Audience: service.DefaultAudience, MaxAge: 2 * time.Minute, Now: s.clock.Now, AllowTestRootsUnsafe: true,
	}, map[string]resource{
		"db-password": {Secret: s.krSecret, Subjects: []string{"agent:vm-1", "runtime:vm-1"}},
		"vm-2-key":    {Secret: "vm-2 only", Subjects: []string{"agent:vm-2", "runtime:vm-2"}},
		"pinned":      {Secret: "pinned", Subjects: []string{"agent:vm-1", "runtime:vm-1"}, Measurements: []string{hex.EncodeToString(mrtd[:])}},
		"other-image": {Secret: "other image", Subjects: []string{"agent:vm-1", "runtime:vm-1"}, Measurements: []string{strings.Repeat("ab", 48)}},
		"rp-subject":  {Secret: "rp", Subjects: []string{"relying-party:key-release"}},
	}, slog.New(slog.DiscardHandler))
	s.kr = httptest.NewServer(k.routes())
	t.Cleanup(func() {
		s.kr.Close()
		s.verifier.Close()
		svc.Close()
	})
	return s
}

func (s *setup) do(base, method, path, bearer string, body []byte) (int, []byte) {
	s.t.Helper()
	req, _ := http.NewRequest(method, base+path, bytes.NewReader(body))
	if bearer != "" {
		req.Header.Set("Authorization", "Bearer "+bearer)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		s.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

// krNonce asks the key-release service for a challenge (a verifier nonce bound to it).
func (s *setup) krNonce() []byte {
	code, b := s.do(s.kr.URL, http.MethodGet, "/challenge", "", nil)
	var ch struct {
		Nonce []byte `json:"nonce"`
	}
	if code != http.StatusOK || json.Unmarshal(b, &ch) != nil {
		s.t.Fatalf("challenge: %d %s", code, b)
	}
	return ch.Nonce
}

func (s *setup) evidence(nonce []byte, fault servicetest.Fault) json.RawMessage {
	ev, err := s.plat.Evidence(attest.PlatformTDX, nonce, servicetest.RuntimeData("vm-1"), fault)
	if err != nil {
		s.t.Fatal(err)
	}
	return ev
}

func (s *setup) release(req map[string]any) (int, releaseResponse) {
	s.t.Helper()
	body, _ := json.Marshal(req)
	code, b := s.do(s.kr.URL, http.MethodPost, "/release", "", body)
	var r releaseResponse
	json.Unmarshal(b, &r)
	return code, r
}

// record opens the key_release record of a decision.
func (s *setup) record(idx uint64) *evidence.KeyRelease {
	s.t.Helper()
	_, rec, err := s.svc.Record(context.Background(), idx)
	if err != nil {
		s.t.Fatal(err)
	}
	if rec.Kind != evidence.KindKeyRelease || rec.KeyRelease.RelyingParty != "key-release" {
		s.t.Fatalf("record %d: %+v", idx, rec)
	}
	return rec.KeyRelease
}

// recordSubject opens the key_release record of a decision and returns its subject.
func (s *setup) recordSubject(idx uint64) (*evidence.KeyRelease, string) {
	s.t.Helper()
	kr := s.record(idx)
	_, rec, err := s.svc.Record(context.Background(), idx)
	if err != nil || rec.Subject == nil {
		s.t.Fatalf("record %d: %v %+v", idx, err, rec)
	}
	return kr, rec.Subject.ID
}

// attestSelf is the passport model: the VM attests itself and returns its result token.
func (s *setup) attestSelf() string {
	s.t.Helper()
	code, b := s.do(s.verifier.URL, http.MethodGet, "/v1/challenge", s.agentToken, nil)
	var ch struct {
		Nonce []byte `json:"nonce"`
	}
	if code != http.StatusOK || json.Unmarshal(b, &ch) != nil {
		s.t.Fatal(code)
	}
	code, b = s.do(s.verifier.URL, http.MethodPost, "/v1/attest", s.agentToken, s.evidence(ch.Nonce, servicetest.FaultNone))
	var a struct {
		Token string `json:"token"`
	}
	if code != http.StatusOK || json.Unmarshal(b, &a) != nil {
		s.t.Fatalf("attest: %d %s", code, b)
	}
	return a.Token
}

// junkJWT is a well-formed JWS header naming key kid, with a payload and signature that are not
// the verifier's.
func junkJWT(kid string) string {
	enc := base64.RawURLEncoding.EncodeToString
	return enc([]byte(`{"alg":"ES256","kid":"`+kid+`","typ":"eat+jwt"}`)) + "." + enc([]byte(`{"sub":"agent:vm-1"}`)) + "." + enc(make([]byte, 64))
}

// Requests that carry no result the verifier signed or judged are refused without a decision:
// nothing is written to the verifier's append-only log. Denials that rest on a verified result
// are still recorded.
func TestUnverifiedRequestsAreNotRecorded(t *testing.T) {
	s := newSetup(t)
	tok := s.attestSelf()
	parts := strings.Split(tok, ".")
	sig := []byte(parts[2])
	sig[3] = map[bool]byte{true: 'B', false: 'A'}[sig[3] == 'A'] // still base64url
	tampered := parts[0] + "." + parts[1] + "." + string(sig)
	evNoNonce := s.evidence(nil, servicetest.FaultNone)
	before := s.events.Load()
	for _, c := range []struct {
		name string
		req  map[string]any
		want int
	}{
		{"not a token", map[string]any{"resource": "db-password", "token": "x"}, http.StatusUnauthorized},
		{"unknown key", map[string]any{"resource": "db-password", "token": junkJWT("junk")}, http.StatusUnauthorized},
		{"bad signature", map[string]any{"resource": "db-password", "token": tampered}, http.StatusUnauthorized},
		{"not an envelope", map[string]any{"resource": "db-password", "evidence": map[string]any{"version": 7}}, http.StatusBadRequest},
		{"evidence without nonce", map[string]any{"resource": "db-password", "evidence": evNoNonce}, http.StatusBadRequest},
		{"both", map[string]any{"resource": "db-password", "token": tok, "evidence": evNoNonce}, http.StatusBadRequest},
	} {
		for range 3 {
			code, r := s.release(c.req)
			if code != c.want || r.Secret != nil || r.Decision != "" {
				t.Errorf("%s: %d %+v, want %d and no decision", c.name, code, r, c.want)
			}
		}
	}
	if n := s.events.Load() - before; n != 0 {
		t.Fatalf("%d key_release records for requests that carry no verified result", n)
	}
	// A verified token for a secret its workload is not allowed: a recorded denial.
	code, r := s.release(map[string]any{"resource": "vm-2-key", "token": tok})
	if code != http.StatusForbidden || r.Decision != "deny" {
		t.Fatalf("%d %+v", code, r)
	}
	if kr, subj := s.recordSubject(r.Record); kr.Decision != evidence.DecisionDeny || subj != "agent:vm-1" {
		t.Fatalf("record %+v subject %q", kr, subj)
	}
	// So is an expired one: its signature verified.
	s.clock.Advance(3 * time.Minute)
	code, r = s.release(map[string]any{"resource": "db-password", "token": tok})
	if code != http.StatusForbidden || !strings.Contains(r.Reason, "expired") {
		t.Fatalf("%d %+v", code, r)
	}
	if kr := s.record(r.Record); kr.Decision != evidence.DecisionDeny {
		t.Fatalf("record %+v", kr)
	}
}

// Tokens naming unknown keys cost at most one JWKS fetch per interval, and a fetch in flight
// blocks no other request.
func TestJWKSRefetch(t *testing.T) {
	s := newSetup(t)
	if code, r := s.release(map[string]any{"resource": "db-password", "token": s.attestSelf()}); code != http.StatusOK {
		t.Fatalf("%d %+v", code, r)
	}
	s.clock.Advance(jwksRefreshInterval)
	before := s.jwksGets.Load()
	var wg sync.WaitGroup
	for i := range 20 {
		wg.Go(func() {
			if code, r := s.release(map[string]any{"resource": "db-password", "token": junkJWT(fmt.Sprint("junk-", i))}); code != http.StatusUnauthorized {
				t.Errorf("%d %+v", code, r)
			}
		})
	}
	wg.Wait()
	if n := s.jwksGets.Load() - before; n != 1 {
		t.Fatalf("20 tokens naming unknown keys caused %d JWKS fetches, want 1", n)
	}

	// A fetch that hangs holds up only the requests that need it.
	s.clock.Advance(jwksRefreshInterval)
	tok := s.attestSelf()
	gate := make(chan struct{})
	s.jwksGate = gate
	defer close(gate)
	before = s.jwksGets.Load()
	go s.release(map[string]any{"resource": "db-password", "token": junkJWT("junk")})
	for s.jwksGets.Load() == before {
		time.Sleep(time.Millisecond)
	}
	done := make(chan int)
	go func() {
		code, _ := s.release(map[string]any{"resource": "db-password", "token": tok})
		done <- code
	}()
	select {
	case code := <-done:
		if code != http.StatusOK {
			t.Fatalf("%d during a JWKS fetch", code)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("a request with a known key waited for a JWKS fetch")
	}
}

func TestParseSecrets(t *testing.T) {
	for _, bad := range []string{`{"db": "s3cret"}`, `{"db": {"secret": "s3cret"}}`, `{"db": {"secret": "x", "subjects": ["agent:a"], "measurements": ["zz"]}}`, `{"db": {"secret": "x", "subjects": ["agent:a"], "other": 1}}`} {
		if _, err := parseSecrets([]byte(bad)); err == nil {
			t.Errorf("accepted %s", bad)
		}
	}
	rs, err := parseSecrets([]byte(`{"db": {"secret": "x", "subjects": ["agent:a"], "measurements": ["ABCD"]}}`))
	if err != nil || rs["db"].Measurements[0] != "abcd" {
		t.Fatalf("%v %+v", err, rs)
	}
}

func TestKeyRelease(t *testing.T) {
	s := newSetup(t)
	var released *releaseResponse

	t.Run("background check, genuine VM", func(t *testing.T) {
		code, r := s.release(map[string]any{"resource": "db-password", "evidence": s.evidence(s.krNonce(), servicetest.FaultNone)})
		if code != http.StatusOK || string(r.Secret) != s.krSecret || r.Decision != "release" {
			t.Fatalf("%d %+v", code, r)
		}
		if kr, subj := s.recordSubject(r.Record); kr.Decision != evidence.DecisionRelease || kr.Resource != "db-password" || kr.Attestation == nil || subj != "runtime:vm-1" {
			t.Fatalf("record: %+v, subject %q (want the attester's, runtime:vm-1)", kr, subj)
		}
		released = &r
	})
	t.Run("background check, DEBUG enabled", func(t *testing.T) {
		code, r := s.release(map[string]any{"resource": "db-password", "evidence": s.evidence(s.krNonce(), servicetest.FaultDebug)})
		if code != http.StatusForbidden || r.Secret != nil || !strings.Contains(r.Reason, "tdx_debug") {
			t.Fatalf("%d %+v", code, r)
		}
		if kr := s.record(r.Record); kr.Decision != evidence.DecisionDeny || kr.Attestation == nil || kr.Reason == "" {
			t.Fatalf("record: %+v", kr)
		}
	})
	t.Run("background check, replayed evidence", func(t *testing.T) {
		ev := s.evidence(s.krNonce(), servicetest.FaultNone)
		if code, _ := s.release(map[string]any{"resource": "db-password", "evidence": ev}); code != http.StatusOK {
			t.Fatalf("first: %d", code)
		}
		code, r := s.release(map[string]any{"resource": "db-password", "evidence": ev})
		if code != http.StatusForbidden || r.Secret != nil || !strings.Contains(r.Reason, "nonce_mismatch") {
			t.Fatalf("replay: %d %+v", code, r)
		}
	})
	t.Run("background check, nonce the service did not ask for", func(t *testing.T) {
		// A nonce issued to the VM itself cannot be spent by the key-release service.
		code, b := s.do(s.verifier.URL, http.MethodGet, "/v1/challenge", s.agentToken, nil)
		var ch struct {
			Nonce []byte `json:"nonce"`
		}
		if code != http.StatusOK || json.Unmarshal(b, &ch) != nil {
			t.Fatal(code)
		}
		code, r := s.release(map[string]any{"resource": "db-password", "evidence": s.evidence(ch.Nonce, servicetest.FaultNone)})
		if code != http.StatusForbidden || r.Secret != nil {
			t.Fatalf("%d %+v", code, r)
		}
	})

	// Passport: the VM attests itself and presents its token.
	attestSelf := s.attestSelf
	t.Run("passport, fresh token", func(t *testing.T) {
		code, r := s.release(map[string]any{"resource": "db-password", "token": attestSelf()})
		if code != http.StatusOK || string(r.Secret) != s.krSecret {
			t.Fatalf("%d %+v", code, r)
		}
		if _, subj := s.recordSubject(r.Record); subj != "agent:vm-1" {
			t.Fatalf("record subject %q, want agent:vm-1", subj)
		}
	})
	// Each secret goes only to the workloads (and images) named for it.
	t.Run("allow-list", func(t *testing.T) {
		for _, c := range []struct {
			resource string
			passport bool
			want     int
		}{
			{"vm-2-key", false, http.StatusForbidden},
			{"vm-2-key", true, http.StatusForbidden},
			{"pinned", false, http.StatusOK},
			{"pinned", true, http.StatusOK},
			{"other-image", false, http.StatusForbidden},
			{"other-image", true, http.StatusForbidden},
			// A background check's token names this service, never the attester: allowing the
			// relying party's own subject releases nothing.
			{"rp-subject", false, http.StatusForbidden},
		} {
			req := map[string]any{"resource": c.resource}
			if c.passport {
				req["token"] = attestSelf()
			} else {
				req["evidence"] = s.evidence(s.krNonce(), servicetest.FaultNone)
			}
			code, r := s.release(req)
			if code != c.want || (code == http.StatusOK) != (r.Secret != nil) {
				t.Errorf("%s (passport %v): want %d, got %d %+v", c.resource, c.passport, c.want, code, r)
				continue
			}
			kr, subj := s.recordSubject(r.Record)
			if want := map[bool]string{true: "agent:vm-1", false: "runtime:vm-1"}[c.passport]; subj != want || kr.Resource != c.resource {
				t.Errorf("%s (passport %v): record %+v subject %q, want %q", c.resource, c.passport, kr, subj, want)
			}
		}
	})
	t.Run("passport, stale token", func(t *testing.T) {
		tok := attestSelf()
		s.clock.Advance(3 * time.Minute)
		code, r := s.release(map[string]any{"resource": "db-password", "token": tok})
		if code != http.StatusForbidden || r.Secret != nil || !strings.Contains(r.Reason, "expired") {
			t.Fatalf("%d %+v", code, r)
		}
		if kr := s.record(r.Record); kr.Decision != evidence.DecisionDeny {
			t.Fatalf("record: %+v", kr)
		}
	})
	t.Run("unknown resource", func(t *testing.T) {
		if code, r := s.release(map[string]any{"resource": "nope", "token": "x"}); code != http.StatusNotFound || r.Secret != nil {
			t.Fatalf("%d %+v", code, r)
		}
	})
	t.Run("decision cannot be recorded", func(t *testing.T) {
		s.failEvents.Store(true)
		defer s.failEvents.Store(false)
		code, r := s.release(map[string]any{"resource": "db-password", "evidence": s.evidence(s.krNonce(), servicetest.FaultNone)})
		if code != http.StatusServiceUnavailable || r.Secret != nil {
			t.Fatalf("%d %+v", code, r)
		}
	})
	if released == nil {
		t.Fatal("nothing was released")
	}
}
