package api

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/proofline/proofline/attest"
	"github.com/proofline/proofline/verifier/ear"
	"github.com/proofline/proofline/verifier/rp"
	"github.com/proofline/proofline/verifier/service"
	"github.com/proofline/proofline/verifier/service/servicetest"
)

// clock is the injected clock of a test: it moves only when the test says so.
type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *clock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// The principals of every fixture, by name: each has the role its name says.
var principals = []service.Principal{
	{Name: "vm-tdx", Role: service.RoleAgent},
	{Name: "vm-snp", Role: service.RoleAgent},
	{Name: "key-release", Role: service.RoleRelyingParty},
	{Name: "alice", Role: service.RoleAdmin},
	{Name: "audrey", Role: service.RoleAuditor},
}

// tokenFor is the API token of a principal: fixed, so that replicas share the configuration.
func tokenFor(name string) string {
	sum := sha256.Sum256([]byte("proofline test token " + name))
	return base64.RawURLEncoding.EncodeToString(sum[:])
}

func tokenConfig() []TokenConfig {
	var out []TokenConfig
	for _, p := range principals {
		h := sha256.Sum256([]byte(tokenFor(p.Name)))
		out = append(out, TokenConfig{Name: p.Name, Role: p.Role, SHA256: hex.EncodeToString(h[:])})
	}
	return out
}

// testPlatforms are created once: fake PKIs cost a few RSA signatures.
var (
	platformsOnce sync.Once
	platforms     *servicetest.Platforms
	platformsErr  error
)

func simulated(t testing.TB) *servicetest.Platforms {
	t.Helper()
	platformsOnce.Do(func() { platforms, platformsErr = servicetest.New(time.Now()) })
	if platformsErr != nil {
		t.Fatal(platformsErr)
	}
	return platforms
}

// options shape a fixture.
type options struct {
	dataDir  string // default: a temp dir
	database string // MariaDB DSN; default: files in dataDir
	clock    *clock
	wrapLog  func(service.Log) service.Log
	settings func(*service.Deps)
	http     func(*Config)
	noStart  bool
}

// fixture is one verifier (service + HTTP API) over real HTTP.
type fixture struct {
	t     testing.TB
	plat  *servicetest.Platforms
	clock *clock
	svc   *service.Service
	srv   *httptest.Server
	reg   *prometheus.Registry
	api   *Server
}

func (f *fixture) echo() *echo.Echo { return f.api.e }

func newFixture(t testing.TB, o options) *fixture {
	t.Helper()
	ctx := context.Background()
	plat := simulated(t)
	if o.clock == nil {
		o.clock = &clock{now: plat.Now.Add(time.Minute).Truncate(time.Second)}
	}
	if o.dataDir == "" {
		o.dataDir = t.TempDir()
	}
	cfg := service.Config{DataDir: o.dataDir, Database: o.database, Log: service.LogConfig{CheckpointInterval: 100 * time.Millisecond}}
	if o.database != "" {
		cfg.Log.CheckpointInterval = time.Second
	}
	reg := prometheus.NewRegistry()
	d, err := service.OpenDeps(ctx, cfg, service.Env{
		TestMode: true, Now: o.clock.Now, Registerer: reg,
		Roots: plat.Roots, Collateral: plat.Collateral, InitialPolicy: plat.PolicyYAML,
	})
	if err != nil {
		t.Fatal(err)
	}
	if o.wrapLog != nil {
		d.Log = o.wrapLog(d.Log)
	}
	if o.settings != nil {
		o.settings(d)
	}
	svc, err := service.New(ctx, *d)
	if err != nil {
		for _, c := range d.Closers {
			c()
		}
		t.Fatal(err)
	}
	if !o.noStart {
		svc.Start()
	}
	hc := Config{Tokens: tokenConfig()}
	if o.http != nil {
		o.http(&hc)
	}
	api, err := New(svc, hc, Options{Registry: reg})
	if err != nil {
		svc.Close()
		t.Fatal(err)
	}
	f := &fixture{t: t, plat: plat, clock: o.clock, svc: svc, srv: httptest.NewServer(api.Handler()), reg: reg, api: api}
	t.Cleanup(func() {
		f.srv.Close()
		if err := svc.Close(); err != nil {
			t.Errorf("closing the service: %v", err)
		}
	})
	return f
}

// do sends a request as the named principal ("" for none) and returns the status, headers and body.
func (f *fixture) do(method, path, as string, body []byte) (int, http.Header, []byte) {
	f.t.Helper()
	req, err := http.NewRequest(method, f.srv.URL+path, bytes.NewReader(body))
	if err != nil {
		f.t.Fatal(err)
	}
	if as != "" {
		req.Header.Set("Authorization", "Bearer "+tokenFor(as))
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := f.srv.Client().Do(req)
	if err != nil {
		f.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		f.t.Fatal(err)
	}
	return resp.StatusCode, resp.Header, b
}

// getJSON requests path as the principal, wants 200 and decodes the body into v.
func (f *fixture) getJSON(path, as string, v any) {
	f.t.Helper()
	code, _, body := f.do(http.MethodGet, path, as, nil)
	if code != http.StatusOK {
		f.t.Fatalf("GET %s as %q: %d %s", path, as, code, body)
	}
	if err := json.Unmarshal(body, v); err != nil {
		f.t.Fatalf("GET %s: %v\n%s", path, err, body)
	}
}

// challenge asks for a nonce as the principal.
func (f *fixture) challenge(as string) []byte {
	f.t.Helper()
	var ch challengeResponse
	f.getJSON("/v1/challenge", as, &ch)
	if len(ch.Nonce) != attest.NonceSize || ch.Bound != (as != "") {
		f.t.Fatalf("challenge: %+v", ch)
	}
	return ch.Nonce
}

// evidence builds the envelope a simulated VM of platform sends for nonce.
func (f *fixture) evidence(platform attest.Platform, agent string, nonce []byte, fault servicetest.Fault) []byte {
	f.t.Helper()
	ev, err := f.plat.Evidence(platform, nonce, servicetest.RuntimeData(agent), fault)
	if err != nil {
		f.t.Fatal(err)
	}
	return ev
}

// attestResult is the decoded answer of POST /v1/attest.
type attestResult struct {
	ID           string          `json:"id"`
	LogIndex     uint64          `json:"log_index"`
	RecordSHA256 string          `json:"record_sha256"`
	Status       ear.Status      `json:"status"`
	Result       json.RawMessage `json:"result"`
	Token        string          `json:"token"`
	CWT          []byte          `json:"cwt"`
}

func (r *attestResult) decoded(t testing.TB) *ear.Result {
	t.Helper()
	var res ear.Result
	if err := json.Unmarshal(r.Result, &res); err != nil {
		t.Fatal(err)
	}
	return &res
}

// attest submits evidence as the principal and wants 200.
func (f *fixture) attest(as string, ev []byte) *attestResult {
	f.t.Helper()
	code, _, body := f.do(http.MethodPost, "/v1/attest", as, ev)
	if code != http.StatusOK {
		f.t.Fatalf("POST /v1/attest as %s: %d %s", as, code, body)
	}
	var r attestResult
	if err := json.Unmarshal(body, &r); err != nil {
		f.t.Fatalf("attest answer: %v\n%s", err, body)
	}
	return &r
}

// rpVerifier is a relying party trusting this verifier's JWKS, in test mode.
func (f *fixture) rpVerifier() *rp.Verifier {
	f.t.Helper()
	code, _, jwks := f.do(http.MethodGet, "/.well-known/jwks.json", "", nil)
	if code != http.StatusOK {
		f.t.Fatalf("JWKS: %d %s", code, jwks)
	}
	v, err := rp.New(jwks, rp.Options{Audience: service.DefaultAudience, Issuer: service.DefaultIssuer, Now: f.clock.Now, AllowTestRootsUnsafe: true})
	if err != nil {
		f.t.Fatal(err)
	}
	return v
}

func failureCodes(r *ear.Result) []ear.Code {
	var out []ear.Code
	for _, f := range r.Failures {
		out = append(out, f.Code)
	}
	return out
}

func randomBytes(n int) []byte {
	b := make([]byte, n)
	rand.Read(b)
	return b
}
