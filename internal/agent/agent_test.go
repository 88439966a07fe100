package agent

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/proofline/proofline/attest"
)

// fakeVerifier answers from a script: each Attest pops the next answer (nil: a result).
type fakeVerifier struct {
	mu         sync.Mutex
	challenges int
	envelopes  [][]byte
	answers    []error
	tokenLife  time.Duration
}

func (f *fakeVerifier) Challenge(context.Context) (*Challenge, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.challenges++
	n := make([]byte, attest.NonceSize)
	n[0] = byte(f.challenges)
	return &Challenge{Nonce: n, Expires: time.Now().Add(5 * time.Minute), Lifetime: 5 * time.Minute}, nil
}

func (f *fakeVerifier) Attest(_ context.Context, env []byte) (*Result, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.envelopes = append(f.envelopes, env)
	if len(f.answers) > 0 {
		err := f.answers[0]
		f.answers = f.answers[1:]
		if err != nil {
			return nil, err
		}
	}
	return &Result{ID: fmt.Sprint(len(f.envelopes)), LogIndex: uint64(len(f.envelopes)), Status: "affirming", Token: fakeJWT(f.tokenLife),
		ResultJSON: json.RawMessage(`{"status":"affirming"}`)}, nil
}

// fakeJWT is a token whose claims say it lives life (0: no times).
func fakeJWT(life time.Duration) string {
	claims := "{}"
	if life > 0 {
		now := time.Now().Unix()
		claims = fmt.Sprintf(`{"iat":%d,"exp":%d}`, now, now+int64(life/time.Second))
	}
	return "e30." + base64.RawURLEncoding.EncodeToString([]byte(claims)) + ".c2ln"
}

// fakeCollector binds nothing: it records what it was asked to bind.
type fakeCollector struct{}

func (fakeCollector) Collect(_ context.Context, nonce, rt []byte) (*attest.Evidence, error) {
	return &attest.Evidence{Version: attest.Version, Platform: attest.PlatformTDX, Report: []byte{1}, Nonce: nonce, RuntimeData: rt}, nil
}

func overloaded(after time.Duration) error {
	return &StatusError{Op: "POST /v1/attest", Status: http.StatusServiceUnavailable, Code: "overloaded", RetryAfter: after}
}

// The loop's decisions, one failure sequence each: which waits it asks for, and whether it
// re-sends the same evidence (only after "overloaded", which leaves the nonce unspent) or
// starts over with a new challenge (after anything else, since the nonce may be spent).
func TestRunRetries(t *testing.T) {
	for _, c := range []struct {
		name       string
		answers    []error
		waits      []time.Duration // up to and including the wait after the result
		challenges int
	}{
		{
			name:       "overloaded twice: the same evidence, Retry-After plus jitter",
			answers:    []error{overloaded(time.Second), overloaded(3 * time.Second), nil},
			waits:      []time.Duration{time.Second + 250*time.Millisecond, 3*time.Second + 500*time.Millisecond, 4*time.Minute + 45*time.Second},
			challenges: 1,
		},
		{
			name:       "unavailable after the nonce was spent: a new challenge",
			answers:    []error{&StatusError{Status: http.StatusServiceUnavailable, Code: "unavailable", RetryAfter: time.Second}, nil},
			waits:      []time.Duration{time.Second + 250*time.Millisecond, 4*time.Minute + 45*time.Second},
			challenges: 2,
		},
		{
			name:       "a transport error: a new challenge, backoff without Retry-After",
			answers:    []error{errors.New("connection reset"), errors.New("connection reset"), nil},
			waits:      []time.Duration{250 * time.Millisecond, 500 * time.Millisecond, 4*time.Minute + 45*time.Second},
			challenges: 3,
		},
		{
			name:       "unauthorized: a configuration error, retried at the backoff pace",
			answers:    []error{&StatusError{Status: http.StatusUnauthorized, Code: "unauthenticated"}, nil},
			waits:      []time.Duration{250 * time.Millisecond, 4*time.Minute + 45*time.Second},
			challenges: 2,
		},
	} {
		t.Run(c.name, func(t *testing.T) {
			fv := &fakeVerifier{answers: c.answers}
			clock := newStepClock()
			a, err := New(Options{Verifier: fv, Collector: fakeCollector{}, Key: newKey(t), Interval: 5 * time.Minute, Jitter: 0.1,
				Backoff: Backoff{Initial: 500 * time.Millisecond, Max: time.Minute}, Clock: clock, Rand: func() float64 { return 0.5 }})
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan error, 1)
			go func() { done <- a.Run(ctx) }()
			for i, want := range c.waits {
				if i > 0 {
					clock.wake(t)
				}
				if d := clock.next(t); d != want {
					t.Fatalf("wait %d: %v, want %v", i+1, d, want)
				}
			}
			cancel()
			if err := <-done; err != nil {
				t.Fatal(err)
			}
			fv.mu.Lock()
			defer fv.mu.Unlock()
			if fv.challenges != c.challenges {
				t.Errorf("%d challenges, want %d", fv.challenges, c.challenges)
			}
			if c.challenges == 1 {
				for _, e := range fv.envelopes[1:] {
					if !bytes.Equal(e, fv.envelopes[0]) {
						t.Error("the evidence re-sent after overloaded differs")
					}
				}
			}
			if a.Latest() == nil || int(a.Stats.Failures.Load()) != len(c.answers)-1 {
				t.Errorf("latest %v, failures %d", a.Latest(), a.Stats.Failures.Load())
			}
		})
	}
}

// A token that lives shorter than the interval is renewed at 80% of its lifetime; evidence
// collected for a challenge binds the agent's public key in runtime_data.
func TestRunSchedule(t *testing.T) {
	fv := &fakeVerifier{tokenLife: 10 * time.Minute}
	clock := newStepClock()
	key := newKey(t)
	a, err := New(Options{Verifier: fv, Collector: fakeCollector{}, Key: key, Interval: time.Hour, Clock: clock, Rand: func() float64 { return 0 }})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go a.Run(ctx)
	if d := clock.next(t); d != 8*time.Minute {
		t.Fatalf("wait %v, want 8m (80%% of a 10m token)", d)
	}
	tok := a.Latest()
	if tok.ExpiresAt.Sub(tok.IssuedAt) != 10*time.Minute {
		t.Fatalf("token times %v %v", tok.IssuedAt, tok.ExpiresAt)
	}
	fv.mu.Lock()
	ev, err := attest.DecodeEvidence(fv.envelopes[0])
	fv.mu.Unlock()
	if err != nil {
		t.Fatal(err)
	}
	rd, err := attest.ParseRuntimeData(ev.RuntimeData)
	if err != nil || PublicKeyDigest(&key.PublicKey) != digest(rd.PublicKey) {
		t.Fatalf("runtime_data %s does not carry the agent's key: %v", ev.RuntimeData, err)
	}
}

func TestBackoffDelay(t *testing.T) {
	b := Backoff{Initial: time.Second, Max: 10 * time.Second}
	for _, c := range []struct {
		n          int
		retryAfter time.Duration
		r          float64
		want       time.Duration
	}{
		{1, 0, 0, 0},
		{1, 0, 0.5, 500 * time.Millisecond},
		{2, 0, 0.5, time.Second},
		{4, 0, 0.5, 4 * time.Second},
		{5, 0, 0.5, 5 * time.Second}, // ceiling 10s, not 16s
		{1000, 0, 0.5, 5 * time.Second},
		{1, 2 * time.Second, 0, 2 * time.Second}, // Retry-After in full, never less
		{3, 2 * time.Second, 0.25, 3 * time.Second},
	} {
		if got := b.Delay(c.n, c.retryAfter, c.r); got != c.want {
			t.Errorf("Delay(%d, %v, %v) = %v, want %v", c.n, c.retryAfter, c.r, got, c.want)
		}
	}
}

// fakeClock is a pinned clock: Now moves only when the agent sleeps. A wait of at least park
// (the interval after a result) lasts until the test ends.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Sleep(ctx context.Context, d time.Duration) error {
	if d >= park {
		<-ctx.Done()
		return ctx.Err()
	}
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
	return ctx.Err()
}

// The agent judges a nonce's freshness by its lifetime on the verifier's clock (expires_at less
// the challenge answer's Date), counted on its own clock from the answer's arrival. Here the
// agent's clock is 10 minutes behind the verifier's and nonces live 30 s. After an "overloaded"
// with Retry-After 5 s the agent re-sends the same evidence; after one with Retry-After 40 s the
// nonce has expired, so the agent asks for a new challenge instead of re-sending evidence the
// verifier would record as a nonce_mismatch verdict.
func TestRunNonceLifetimeOnVerifierClock(t *testing.T) {
	const (
		skew     = 10 * time.Minute // the verifier's clock is ahead by this much
		nonceTTL = 30 * time.Second
	)
	for _, c := range []struct {
		retryAfter string
		challenges int
	}{
		{retryAfter: "5", challenges: 1},
		{retryAfter: "40", challenges: 2},
	} {
		t.Run("Retry-After "+c.retryAfter, func(t *testing.T) {
			clock := &fakeClock{now: time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)}
			verifierNow := func() time.Time { return clock.Now().Add(skew) }
			var (
				mu         sync.Mutex
				expires    = map[string]time.Time{}
				challenges int
				attests    int
				stale      []string
			)
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				mu.Lock()
				defer mu.Unlock()
				now := verifierNow()
				w.Header().Set("Date", now.Format(http.TimeFormat))
				switch r.URL.Path {
				case "/v1/challenge":
					challenges++
					n := bytes.Repeat([]byte{byte(challenges)}, attest.NonceSize)
					expires[string(n)] = now.Add(nonceTTL)
					json.NewEncoder(w).Encode(Challenge{Nonce: n, Expires: now.Add(nonceTTL)})
				case "/v1/attest":
					attests++
					body, _ := io.ReadAll(r.Body)
					ev, err := attest.DecodeEvidence(body)
					if err != nil {
						t.Errorf("attest: %v", err)
						return
					}
					if exp, ok := expires[string(ev.Nonce)]; !ok || !now.Before(exp) {
						stale = append(stale, fmt.Sprintf("attempt %d sent nonce %d, which expired at %v, at %v (verifier clock)", attests, ev.Nonce[0], exp, now))
					}
					if attests == 1 {
						w.Header().Set("Retry-After", c.retryAfter)
						w.WriteHeader(http.StatusServiceUnavailable)
						w.Write([]byte(`{"code":"overloaded","message":"the verifier is overloaded"}`))
						return
					}
					json.NewEncoder(w).Encode(Result{ID: "1", Status: "affirming", Token: fakeJWT(0), ResultJSON: json.RawMessage(`{"status":"affirming"}`)})
				}
			}))
			defer srv.Close()
			attested := make(chan struct{}, 1)
			a, err := New(Options{Verifier: &Client{URL: srv.URL}, Collector: fakeCollector{}, Key: newKey(t), Interval: park, Jitter: 0,
				Backoff: Backoff{Initial: time.Second, Max: time.Minute}, Clock: clock, Rand: func() float64 { return 0 },
				OnAttested: func(*Token) { attested <- struct{}{} }})
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan error, 1)
			go func() { done <- a.Run(ctx) }()
			select {
			case <-attested:
			case <-time.After(hangGuard):
				t.Fatal("the agent did not attest")
			}
			cancel()
			if err := <-done; err != nil {
				t.Fatal(err)
			}
			mu.Lock()
			defer mu.Unlock()
			if len(stale) > 0 || challenges != c.challenges || attests != 2 {
				t.Fatalf("%d challenges, %d attempts; want %d and 2, with no expired nonce sent: %v", challenges, attests, c.challenges, stale)
			}
		})
	}
}
