package agent

import (
	"context"
	"crypto/ecdsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/proofline/proofline/attest"
)

// Verifier is what the agent needs of the verifier; *Client implements it.
type Verifier interface {
	Challenge(ctx context.Context) (*Challenge, error)
	Attest(ctx context.Context, envelope []byte) (*Result, error)
}

// Options configure an Agent.
type Options struct {
	// Verifier and Collector are required.
	Verifier  Verifier
	Collector Collector
	// Key is the agent's key; its public half goes in runtime_data. Required.
	Key *ecdsa.PrivateKey
	// TPMAKDigest names the vTPM attestation key in runtime_data (VTPM.AKDigest) when the
	// Collector adds vTPM quotes; empty without a vTPM.
	TPMAKDigest string
	// Interval, Jitter and Backoff pace attestations (Config documents them). A zero Interval or
	// Backoff takes Config's default; a zero Jitter means none.
	Interval time.Duration
	Jitter   float64
	Backoff  Backoff
	// Clock is the agent's time; nil means SystemClock.
	Clock Clock
	// Rand returns uniform random numbers in [0, 1) for the jitter; nil means math/rand/v2.
	Rand func() float64
	// Logger receives the agent's log; nil discards. It never gets tokens, nonces, keys or
	// evidence, only their SHA-256.
	Logger *slog.Logger
	// OnAttested, if set, is called after each attestation the verifier answered.
	OnAttested func(*Token)
}

// Token is the agent's latest attestation result.
type Token struct {
	Result
	// Platform is the evidence's platform.
	Platform attest.Platform
	// AttestedAt is when the verifier's answer arrived (the agent's clock).
	AttestedAt time.Time
	// IssuedAt and ExpiresAt are the token's iat and exp claims (the verifier's clock), read
	// without verifying the token: for scheduling and for callers' information only. Zero when
	// the token does not carry them.
	IssuedAt, ExpiresAt time.Time
	// Failures are the codes of the result's failed checks (verifier/README.md).
	Failures []string
}

// Stats count what the agent did, for tests and load generators.
type Stats struct {
	// Attempts counts POST /v1/attest requests; Attested those answered with a result.
	Attempts, Attested atomic.Int64
	// Failures counts failed rounds (each followed by a backoff); Overloaded those that were a
	// 503 "overloaded".
	Failures, Overloaded atomic.Int64
}

// Agent attests this VM to the verifier on an interval and keeps the latest result token.
type Agent struct {
	o          Options
	clock      Clock
	rand       func() float64
	log        *slog.Logger
	pubDigest  string
	runtime    []byte
	collecting chan struct{} // one collection at a time: the guest interfaces serialise anyway

	mu     sync.Mutex
	latest *Token

	Stats Stats
}

// New returns an agent; Run starts it.
func New(o Options) (*Agent, error) {
	if o.Verifier == nil || o.Collector == nil || o.Key == nil {
		return nil, errors.New("agent: Options.Verifier, Collector and Key are required")
	}
	if o.Interval <= 0 {
		o.Interval = DefaultInterval
	}
	if o.Backoff.Initial <= 0 {
		o.Backoff.Initial = time.Second
	}
	if o.Backoff.Max < o.Backoff.Initial {
		o.Backoff.Max = max(5*time.Minute, o.Backoff.Initial)
	}
	a := &Agent{o: o, clock: o.Clock, rand: o.Rand, log: o.Logger, collecting: make(chan struct{}, 1)}
	if a.clock == nil {
		a.clock = SystemClock{}
	}
	if a.rand == nil {
		a.rand = rand.Float64
	}
	if a.log == nil {
		a.log = slog.New(slog.DiscardHandler)
	}
	pub, err := x509.MarshalPKIXPublicKey(&o.Key.PublicKey)
	if err != nil {
		return nil, fmt.Errorf("agent: %w", err)
	}
	a.pubDigest = digest(pub)
	a.runtime = a.runtimeData(pub)
	return a, nil
}

// runtimeData is the agent's runtime_data: its public key, and with a vTPM the attestation
// key's digest (RuntimeData.TPMAKDigest), so that REPORT_DATA binds the AK.
func (a *Agent) runtimeData(pub []byte) []byte {
	return (&attest.RuntimeData{PublicKey: pub, TPMAKDigest: a.o.TPMAKDigest}).Encode()
}

// Latest returns the latest result, or nil before the first.
func (a *Agent) Latest() *Token {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.latest
}

// pending is collected evidence not yet answered: kept only while the verifier says it is
// overloaded (it then did not spend the nonce), and for at most maxReuse.
type pending struct {
	envelope []byte
	platform attest.Platform
	until    time.Time
}

// maxReuse bounds how long evidence is re-sent after "overloaded" answers; within it the agent
// uses at most half of the nonce's lifetime (Challenge.Lifetime, on the verifier's clock),
// counted from the challenge's arrival on the agent's monotonic clock, so a skew between the
// two clocks cannot make it send an expired nonce (which the verifier would record as a
// nonce_mismatch verdict). A challenge of unknown lifetime is not re-sent at all.
const maxReuse = time.Minute

// Run attests until ctx is done, then returns nil. Each round asks for a challenge, collects
// evidence bound to its nonce and the agent's runtime data, and submits it; after a result it
// waits the interval (less jitter, and no later than 80% into the token's lifetime), after a
// failure it backs off. A round that the verifier refused as overloaded re-sends the same
// evidence (the nonce was not spent) while the nonce is fresh; any other failure starts over
// with a new challenge.
func (a *Agent) Run(ctx context.Context) error {
	a.log.Info("agent started", "interval", a.o.Interval, "jitter", a.o.Jitter, "backoff_initial", a.o.Backoff.Initial, "backoff_max", a.o.Backoff.Max, "public_key_sha256", a.pubDigest)
	failures := 0
	var p *pending
	for {
		tok, err := a.round(ctx, &p)
		if ctx.Err() != nil {
			a.log.Info("agent stopped")
			return nil
		}
		var wait time.Duration
		if err != nil {
			failures++
			a.Stats.Failures.Add(1)
			var retryAfter time.Duration
			var se *StatusError
			if errors.As(err, &se) {
				retryAfter = se.RetryAfter
			}
			if errors.Is(err, ErrOverloaded) {
				a.Stats.Overloaded.Add(1)
			}
			wait = a.o.Backoff.Delay(failures, retryAfter, a.rand())
			level := slog.LevelWarn
			if se != nil && se.Status >= 300 && se.Status < 500 {
				level = slog.LevelError // a redirect or a 4xx is a configuration problem: it will not fix itself
			}
			a.log.Log(ctx, level, "attestation failed; retrying", "error", err, "consecutive_failures", failures, "retry_after", retryAfter, "retry_in", wait, "same_evidence", p != nil)
		} else {
			if failures > 0 {
				a.log.Info("the verifier answers again", "after_failures", failures)
			}
			failures = 0
			wait = a.next(tok)
			attrs := []any{"status", tok.Status, "platform", tok.Platform, "log_index", tok.LogIndex, "record_sha256", tok.RecordSHA256, "token_sha256", digest([]byte(tok.Token)), "next_in", wait}
			if !tok.ExpiresAt.IsZero() {
				attrs = append(attrs, "token_expires", tok.ExpiresAt)
			}
			if tok.Status == "affirming" {
				a.log.Info("attested", attrs...)
			} else {
				a.log.Warn("attested, but the verifier does not affirm this VM", append(attrs, "failures", strings.Join(tok.Failures, ","))...)
			}
		}
		if err := a.clock.Sleep(ctx, wait); err != nil {
			a.log.Info("agent stopped")
			return nil
		}
	}
}

// round is one attestation: challenge (unless *p holds evidence still worth re-sending),
// collect, submit.
func (a *Agent) round(ctx context.Context, p **pending) (*Token, error) {
	if *p != nil && !a.clock.Now().Before((*p).until) {
		*p = nil
	}
	if *p == nil {
		ch, err := a.o.Verifier.Challenge(ctx)
		if err != nil {
			return nil, err
		}
		arrived := a.clock.Now()
		ev, err := a.collect(ctx, ch.Nonce, a.runtime)
		if err != nil {
			return nil, fmt.Errorf("collecting evidence: %w", err)
		}
		env, err := ev.Encode()
		if err != nil {
			return nil, fmt.Errorf("the collected evidence does not fit the envelope: %w", err)
		}
		a.log.Debug("collected evidence", "platform", ev.Platform, "bytes", len(env), "evidence_sha256", digest(env), "nonce_sha256", digest(ch.Nonce))
		reuse := min(maxReuse, ch.Lifetime/2)
		*p = &pending{envelope: env, platform: ev.Platform, until: arrived.Add(reuse)}
	}
	a.Stats.Attempts.Add(1)
	res, err := a.o.Verifier.Attest(ctx, (*p).envelope)
	if err != nil {
		if !errors.Is(err, ErrOverloaded) {
			*p = nil // the nonce may be spent: never send this evidence again
		}
		return nil, err
	}
	tok := &Token{Result: *res, Platform: (*p).platform, AttestedAt: a.clock.Now()}
	*p = nil
	tok.IssuedAt, tok.ExpiresAt = tokenTimes(res.Token)
	tok.Failures = failureCodes(res.ResultJSON)
	a.Stats.Attested.Add(1)
	a.mu.Lock()
	a.latest = tok
	a.mu.Unlock()
	if a.o.OnAttested != nil {
		a.o.OnAttested(tok)
	}
	return tok, nil
}

// next is the wait after a result: the interval less up to Jitter of it, and no later than 80%
// into the token's lifetime (measured from its arrival, so clock skew does not matter).
func (a *Agent) next(tok *Token) time.Duration {
	d := a.o.Interval - time.Duration(a.rand()*a.o.Jitter*float64(a.o.Interval))
	if !tok.IssuedAt.IsZero() && tok.ExpiresAt.After(tok.IssuedAt) {
		refresh := tok.ExpiresAt.Sub(tok.IssuedAt) * 4 / 5
		d = min(d, max(refresh, time.Second))
	}
	return d
}

// collect takes the collection turn and collects.
func (a *Agent) collect(ctx context.Context, nonce, runtimeData []byte) (*attest.Evidence, error) {
	select {
	case a.collecting <- struct{}{}:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	defer func() { <-a.collecting }()
	return a.o.Collector.Collect(ctx, nonce, runtimeData)
}

// Evidence collects fresh evidence for a workload: bound to the workload's own nonce and its
// public key (PKIX DER), which become the envelope's nonce and runtime_data
// (attest.RuntimeData{PublicKey: publicKey}).
func (a *Agent) Evidence(ctx context.Context, nonce, publicKey []byte) (*attest.Evidence, error) {
	return a.collect(ctx, nonce, a.runtimeData(publicKey))
}

// tokenTimes reads the iat and exp claims of a JWT without verifying it.
func tokenTimes(jwt string) (iat, exp time.Time) {
	parts := strings.Split(jwt, ".")
	if len(parts) != 3 {
		return
	}
	payload, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return
	}
	var c struct {
		IAT int64 `json:"iat"`
		EXP int64 `json:"exp"`
	}
	if json.Unmarshal(payload, &c) != nil {
		return
	}
	if c.IAT > 0 {
		iat = time.Unix(c.IAT, 0).UTC()
	}
	if c.EXP > 0 {
		exp = time.Unix(c.EXP, 0).UTC()
	}
	return
}

// failureCodes returns the codes of a result's failures (verifier/README.md).
func failureCodes(result json.RawMessage) []string {
	var r struct {
		Failures []struct {
			Code string `json:"code"`
		} `json:"failures"`
	}
	if json.Unmarshal(result, &r) != nil {
		return nil
	}
	var out []string
	for _, f := range r.Failures {
		out = append(out, f.Code)
	}
	return out
}
