package api

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
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
	"github.com/proofline/proofline/evidence"
	"github.com/proofline/proofline/evidence/log"
	"github.com/proofline/proofline/verifier/collateral"
	"github.com/proofline/proofline/verifier/ear"
	"github.com/proofline/proofline/verifier/service"
	"github.com/proofline/proofline/verifier/service/servicetest"
)

// faultyLog fails appends while failing is set: "failed and not saved" (the append never reaches
// the log) or, with saved, "failed but saved" (the record is appended, the acknowledgement lost).
type faultyLog struct {
	service.Log
	failing, saved atomic.Bool
	appended       atomic.Int64
}

var errInjected = errors.New("injected: storage failed")

func (l *faultyLog) Append(ctx context.Context, leaf []byte) (uint64, error) {
	if l.failing.Load() {
		if l.saved.Load() {
			if _, err := l.Log.Append(ctx, leaf); err != nil {
				return 0, err
			}
		}
		return 0, errInjected
	}
	l.appended.Add(1)
	return l.Log.Append(ctx, leaf)
}

// Acceptance 4: when the log cannot append, POST /v1/attest answers 503 with Retry-After and no
// result and no token — whether the record was lost or saved without acknowledgement — and the
// service recovers when the log does.
func TestLogFailure(t *testing.T) {
	var fl *faultyLog
	f := newFixture(t, options{wrapLog: func(l service.Log) service.Log { fl = &faultyLog{Log: l}; return fl }})
	const agent = "vm-tdx"
	for _, saved := range []bool{false, true} {
		fl.failing.Store(true)
		fl.saved.Store(saved)
		ev := f.evidence(attest.PlatformTDX, agent, f.challenge(agent), servicetest.FaultNone)
		code, hdr, body := f.do(http.MethodPost, "/v1/attest", agent, ev)
		if code != http.StatusServiceUnavailable || hdr.Get("Retry-After") == "" {
			t.Fatalf("saved=%v: %d %s", saved, code, body)
		}
		var e apiError
		if err := json.Unmarshal(body, &e); err != nil || e.Code != "unavailable" || strings.Contains(string(body), "eyJ") || strings.Contains(string(body), "affirming") {
			t.Fatalf("saved=%v: the 503 body carries more than an error: %s", saved, body)
		}
	}
	fl.failing.Store(false)
	a := f.attest(agent, f.evidence(attest.PlatformTDX, agent, f.challenge(agent), servicetest.FaultNone))
	if a.Status != ear.StatusAffirming || a.Token == "" {
		t.Fatalf("after recovery: %+v", a)
	}
	// The record saved without acknowledgement left a gap in the index; the index catches up
	// from the log (it is derived) without waiting for its periodic run.
	p := waitProof(t, f, a.LogIndex)
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for deadline := time.Now().Add(10 * time.Second); ; <-tick.C {
		var recs recordsResponse
		f.getJSON("/v1/records", "audrey", &recs)
		if n := len(recs.Records); uint64(n) >= p.TreeSize {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the index holds %d records, the log %d", len(recs.Records), p.TreeSize)
		}
	}
}

// blockingLog holds appends while armed, until released, and says when one is waiting.
type blockingLog struct {
	service.Log
	armed   atomic.Bool
	waiting chan struct{} // buffered
	release chan struct{} // closed to release
}

func (l *blockingLog) Append(ctx context.Context, leaf []byte) (uint64, error) {
	if l.armed.Load() {
		select {
		case l.waiting <- struct{}{}:
		default:
		}
		<-l.release
	}
	return l.Log.Append(ctx, leaf)
}

// Overload: past the bounded queue, POST /v1/attest answers 503 with Retry-After at once —
// never a default verdict — and the nonce of the refused request is not spent.
func TestOverload(t *testing.T) {
	bl := &blockingLog{waiting: make(chan struct{}, 1), release: make(chan struct{})}
	f := newFixture(t, options{
		wrapLog:  func(l service.Log) service.Log { bl.Log = l; return bl },
		settings: func(d *service.Deps) { d.Settings.Workers, d.Settings.Queue = 1, 1 },
	})
	const agent = "vm-snp"
	snp := attest.PlatformSNP
	type answer struct {
		code int
		body []byte
	}
	submit := func(ev []byte) chan answer {
		ch := make(chan answer, 1)
		go func() {
			code, _, body := f.do(http.MethodPost, "/v1/attest", agent, ev)
			ch <- answer{code, body}
		}()
		return ch
	}
	first, second := f.evidence(snp, agent, f.challenge(agent), servicetest.FaultNone), f.evidence(snp, agent, f.challenge(agent), servicetest.FaultNone)
	nonce := f.challenge(agent)
	third := f.evidence(snp, agent, nonce, servicetest.FaultNone)

	bl.armed.Store(true)
	firstDone := submit(first)
	<-bl.waiting // the only worker is busy appending
	secondDone := submit(second)
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	for f.queueDepth(t) < 2 { // the second request waits in the queue's one place
		<-tick.C
	}
	code, hdr, body := f.do(http.MethodPost, "/v1/attest", agent, third)
	if code != http.StatusServiceUnavailable || hdr.Get("Retry-After") == "" || !strings.Contains(string(body), "overloaded") {
		t.Fatalf("request past the queue: %d %s", code, body)
	}
	bl.armed.Store(false)
	close(bl.release)
	for _, ch := range []chan answer{firstDone, secondDone} {
		if a := <-ch; a.code != http.StatusOK {
			t.Fatalf("queued request: %d %s", a.code, a.body)
		}
	}
	// The refused request spent nothing: the same evidence is accepted now.
	if a := f.attest(agent, third); a.Status != ear.StatusAffirming {
		t.Fatalf("retry after overload: %s", a.Result)
	}
}

// queueDepth reads the queue gauge from /metrics.
func (f *fixture) queueDepth(t *testing.T) int {
	t.Helper()
	mfs, err := f.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == "proofline_attest_queue_depth" {
			return int(mf.GetMetric()[0].GetGauge().GetValue())
		}
	}
	t.Fatal("no queue depth gauge")
	return 0
}

// overloadedLog answers every append with log.ErrOverloaded while overloaded is set.
type overloadedLog struct {
	service.Log
	overloaded atomic.Bool
}

func (l *overloadedLog) Append(ctx context.Context, leaf []byte) (uint64, error) {
	if l.overloaded.Load() {
		return 0, log.ErrOverloaded
	}
	return l.Log.Append(ctx, leaf)
}

// An overloaded log after the nonce was spent is not "overloaded, nothing was spent": the answer
// is 503 unavailable, saying that the challenge was used and to ask for a new one — which is true:
// the same evidence is a replay afterwards.
func TestLogOverloadAfterNonceSpent(t *testing.T) {
	var ol *overloadedLog
	f := newFixture(t, options{wrapLog: func(l service.Log) service.Log { ol = &overloadedLog{Log: l}; return ol }})
	const agent = "vm-tdx"
	ev := f.evidence(attest.PlatformTDX, agent, f.challenge(agent), servicetest.FaultNone)
	ol.overloaded.Store(true)
	code, hdr, body := f.do(http.MethodPost, "/v1/attest", agent, ev)
	var e apiError
	if code != http.StatusServiceUnavailable || hdr.Get("Retry-After") == "" || json.Unmarshal(body, &e) != nil ||
		e.Code != "unavailable" || !strings.Contains(e.Message, "challenge") || !strings.Contains(e.Message, "new nonce") {
		t.Fatalf("log overloaded after the nonce was spent: %d %s", code, body)
	}
	ol.overloaded.Store(false)
	a := f.attest(agent, ev)
	if a.Status != ear.StatusContraindicated || !strings.Contains(string(a.Result), "already used") {
		t.Fatalf("the nonce was spent, the same evidence must be a replay: %s", a.Result)
	}
	if a := f.attest(agent, f.evidence(attest.PlatformTDX, agent, f.challenge(agent), servicetest.FaultNone)); a.Status != ear.StatusAffirming {
		t.Fatalf("with a new challenge: %s", a.Result)
	}
}

// stallingBody is a request body whose reads wait until released; started is closed at the first.
type stallingBody struct {
	started, release chan struct{}
	once             sync.Once
}

func (b *stallingBody) Read(p []byte) (int, error) {
	b.once.Do(func() { close(b.started) })
	<-b.release
	return 0, io.EOF
}

// flagBody records whether it was read.
type flagBody struct{ read atomic.Bool }

func (b *flagBody) Read(p []byte) (int, error) {
	b.read.Store(true)
	return 0, io.EOF
}

// Admission comes before the body: requests whose bodies are still arriving hold their places in
// the queue, and past it a request is refused 503 without its body being read, so attest bodies
// in memory are bounded by (workers + queue) × max_attest_body.
func TestAttestBodyReadAfterAdmission(t *testing.T) {
	f := newFixture(t, options{settings: func(d *service.Deps) { d.Settings.Workers, d.Settings.Queue = 1, 1 }})
	post := func(body io.Reader) *httptest.ResponseRecorder {
		req := httptest.NewRequest(http.MethodPost, "/v1/attest", body)
		req.Header.Set("Authorization", "Bearer "+tokenFor("vm-tdx"))
		rec := httptest.NewRecorder()
		f.api.Handler().ServeHTTP(rec, req)
		return rec
	}
	release := make(chan struct{})
	var done sync.WaitGroup
	for range 2 {
		b := &stallingBody{started: make(chan struct{}), release: release}
		done.Add(1)
		go func() { defer done.Done(); post(b) }()
		<-b.started
	}
	defer func() { close(release); done.Wait() }()
	if d := f.queueDepth(t); d != 2 {
		t.Fatalf("two requests reading their bodies hold %d places in the queue, want 2", d)
	}
	fb := &flagBody{}
	rec := post(fb)
	if rec.Code != http.StatusServiceUnavailable || !strings.Contains(rec.Body.String(), "overloaded") || rec.Header().Get("Retry-After") == "" {
		t.Fatalf("past the queue: %d %s", rec.Code, rec.Body)
	}
	if fb.read.Load() {
		t.Fatal("the body of a request refused for overload was read")
	}
}

// failingBlobs fails every Get with an error that names a file path.
type failingBlobs struct{ service.Blobs }

func (failingBlobs) Get(context.Context, evidence.Digest) ([]byte, error) {
	return nil, errors.New("open /srv/proofline/secret-data/blobs/ab/cd: input/output error")
}

// A blob store that fails is 503 without internals; only a blob it does not hold is 404.
func TestBlobStoreFailure(t *testing.T) {
	var broken atomic.Bool
	f := newFixture(t, options{settings: func(d *service.Deps) {
		real := d.Blobs
		d.Blobs = switchBlobs{real: real, broken: failingBlobs{real}, use: &broken}
	}})
	path := "/v1/blobs/" + strings.Repeat("00", 32)
	if code, _, body := f.do(http.MethodGet, path, "audrey", nil); code != http.StatusNotFound {
		t.Fatalf("missing blob: %d %s", code, body)
	}
	broken.Store(true)
	code, hdr, body := f.do(http.MethodGet, path, "audrey", nil)
	var e apiError
	if code != http.StatusServiceUnavailable || hdr.Get("Retry-After") == "" || json.Unmarshal(body, &e) != nil || e.Code != "unavailable" || strings.Contains(string(body), "secret-data") {
		t.Fatalf("failing blob store: %d %s", code, body)
	}
}

// switchBlobs uses broken while use is set.
type switchBlobs struct {
	real, broken service.Blobs
	use          *atomic.Bool
}

func (s switchBlobs) Put(ctx context.Context, data []byte) (evidence.Digest, error) {
	return s.real.Put(ctx, data)
}

func (s switchBlobs) Get(ctx context.Context, d evidence.Digest) ([]byte, error) {
	if s.use.Load() {
		return s.broken.Get(ctx, d)
	}
	return s.real.Get(ctx, d)
}

// blockingCollateral holds collateral requests while armed, until released, and says when one
// is waiting: a verification in progress, holding its slot.
type blockingCollateral struct {
	collateral.Source
	armed   atomic.Bool
	waiting chan struct{} // buffered
	release chan struct{} // closed to release
}

func (c *blockingCollateral) Get(ctx context.Context, url string) (*collateral.Response, error) {
	if c.armed.Load() {
		select {
		case c.waiting <- struct{}{}:
		default:
		}
		<-c.release
	}
	return c.Source.Get(ctx, url)
}

// A request cancelled by its client while it waits in the queue is no server failure: not a
// 500, and nothing is logged at error level.
func TestCancelledWhileQueued(t *testing.T) {
	// The first request holds the only verification slot (its collateral is held back), so the
	// second waits for it in the queue: a request holds a slot only while it is being verified.
	bl := &blockingCollateral{waiting: make(chan struct{}, 1), release: make(chan struct{})}
	f := newFixture(t, options{
		settings: func(d *service.Deps) {
			d.Settings.Workers, d.Settings.Queue = 1, 1
			bl.Source, d.Collateral = d.Collateral, bl
		},
	})
	var logs bytes.Buffer
	var mu sync.Mutex
	api, err := New(f.svc, Config{Tokens: tokenConfig()}, Options{Logger: slog.New(slog.NewJSONHandler(lockedWriter{&mu, &logs}, nil))})
	if err != nil {
		t.Fatal(err)
	}
	const agent = "vm-tdx"
	first := f.evidence(attest.PlatformTDX, agent, f.challenge(agent), servicetest.FaultNone)
	second := f.evidence(attest.PlatformTDX, agent, f.challenge(agent), servicetest.FaultNone)
	bl.armed.Store(true)
	firstDone := make(chan int, 1)
	go func() { code, _, _ := f.do(http.MethodPost, "/v1/attest", agent, first); firstDone <- code }()
	<-bl.waiting
	ctx, cancel := context.WithCancel(context.Background())
	req := httptest.NewRequestWithContext(ctx, http.MethodPost, "/v1/attest", bytes.NewReader(second))
	req.Header.Set("Authorization", "Bearer "+tokenFor(agent))
	rec := httptest.NewRecorder()
	secondDone := make(chan struct{})
	go func() { api.Handler().ServeHTTP(rec, req); close(secondDone) }()
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	for f.queueDepth(t) < 2 {
		<-tick.C
	}
	cancel()
	<-secondDone
	bl.armed.Store(false)
	close(bl.release)
	if code := <-firstDone; code != http.StatusOK {
		t.Fatalf("first request: %d", code)
	}
	if rec.Code == http.StatusInternalServerError || rec.Code < 400 {
		t.Fatalf("cancelled while queued: %d %s", rec.Code, rec.Body)
	}
	mu.Lock()
	defer mu.Unlock()
	if strings.Contains(logs.String(), `"level":"ERROR"`) {
		t.Fatalf("a cancelled request was logged at error level:\n%s", logs.String())
	}
}

type lockedWriter struct {
	mu *sync.Mutex
	w  io.Writer
}

func (l lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// POST /v1/attest?tokens= issues only the token forms asked for (each costs a signature); the
// default is both; an unknown form is 400 before the body is read, so the nonce stays unspent.
func TestAttestTokenForms(t *testing.T) {
	f := newFixture(t, options{})
	v := f.rpVerifier()
	post := func(query string) (int, *attestResult, []byte) {
		t.Helper()
		nonce := f.challenge("vm-tdx")
		code, _, body := f.do(http.MethodPost, "/v1/attest"+query, "vm-tdx", f.evidence(attest.PlatformTDX, "vm-tdx", nonce, servicetest.FaultNone))
		var r attestResult
		if code == http.StatusOK {
			if err := json.Unmarshal(body, &r); err != nil {
				t.Fatal(err)
			}
		}
		return code, &r, body
	}
	for _, tc := range []struct {
		query    string
		jwt, cwt bool
	}{
		{"", true, true},
		{"?tokens=jwt,cwt", true, true},
		{"?tokens=jwt", true, false},
		{"?tokens=cwt", false, true},
	} {
		code, r, body := post(tc.query)
		if code != http.StatusOK || r.Status != "affirming" {
			t.Fatalf("%q: %d %s", tc.query, code, body)
		}
		if (r.Token != "") != tc.jwt || (len(r.CWT) > 0) != tc.cwt {
			t.Fatalf("%q: token %v, cwt %v; want %v, %v", tc.query, r.Token != "", len(r.CWT) > 0, tc.jwt, tc.cwt)
		}
		if tc.jwt {
			if _, err := v.VerifyJWT(r.Token); err != nil {
				t.Fatalf("%q: JWT: %v", tc.query, err)
			}
		}
		if tc.cwt {
			if _, err := v.VerifyCWT(r.CWT); err != nil {
				t.Fatalf("%q: CWT: %v", tc.query, err)
			}
		}
	}
	nonce := f.challenge("vm-tdx")
	ev := f.evidence(attest.PlatformTDX, "vm-tdx", nonce, servicetest.FaultNone)
	for _, q := range []string{"?tokens=pem", "?tokens=jwt,", "?tokens=JWT", "?tokens=jwt,jwt", "?tokens=%20jwt"} {
		code, _, body := f.do(http.MethodPost, "/v1/attest"+q, "vm-tdx", ev)
		if code != http.StatusBadRequest || !strings.Contains(string(body), "jwt, cwt or jwt,cwt") {
			t.Fatalf("%q: %d %s, want 400 naming the forms", q, code, body)
		}
	}
	// The nonce was not spent by the refused requests.
	if r := f.attest("vm-tdx", ev); r.Status != "affirming" {
		t.Fatalf("after the refusals: %s", r.Status)
	}
}
