package collateral

import (
	"context"
	"time"
)

// Clock is the time of a Fetcher and a Cache: expiry (nextUpdate), rate budgets and Retry-After
// are all judged on it. Tests inject a fake one (collateraltest.Clock) and advance it; nothing in
// this package sleeps in real time except through SystemClock.
type Clock interface {
	Now() time.Time
	// Sleep waits d on this clock, or until ctx is done and then returns ctx.Err().
	Sleep(ctx context.Context, d time.Duration) error
}

// SystemClock is the real clock.
type SystemClock struct{}

// Now returns time.Now().
func (SystemClock) Now() time.Time { return time.Now() }

// Sleep waits d, or until ctx is done.
func (SystemClock) Sleep(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
