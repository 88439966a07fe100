package agent

import (
	"context"
	"time"
)

// Backoff is exponential backoff with full jitter: retry n (from 1) waits a random time in
// [0, min(Max, Initial·2^(n-1))), on top of the verifier's Retry-After when it sent one. The
// Retry-After is honoured in full (the agent never comes back earlier) and the jitter keeps
// agents that were all told the same delay from returning together.
type Backoff struct {
	Initial, Max time.Duration
}

// Delay returns the wait before retry n, given the verifier's Retry-After (0 if none) and r,
// a uniform random number in [0, 1).
func (b Backoff) Delay(n int, retryAfter time.Duration, r float64) time.Duration {
	ceiling := b.Initial
	for i := 1; i < n && ceiling < b.Max; i++ {
		ceiling *= 2
	}
	ceiling = min(ceiling, b.Max)
	return retryAfter + time.Duration(r*float64(ceiling))
}

// Clock is the agent's time. Tests inject one that records the waits instead of waiting.
type Clock interface {
	Now() time.Time
	// Sleep waits d, or until ctx is done and then returns ctx.Err().
	Sleep(ctx context.Context, d time.Duration) error
}

// SystemClock is the real clock.
type SystemClock struct{}

// Now returns time.Now().
func (SystemClock) Now() time.Time { return time.Now() }

// Sleep waits d or until ctx is done.
func (SystemClock) Sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
