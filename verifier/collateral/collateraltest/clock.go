package collateraltest

import (
	"context"
	"sync"
	"time"
)

// Clock is a fake collateral.Clock that moves only when a test advances it. Sleep blocks until
// the clock reaches its deadline or the context is done; nothing waits in real time. It counts
// the sleeps, so a test can show that a path never waited.
type Clock struct {
	mu       sync.Mutex
	now      time.Time
	sleepers []*sleeper
	sleeps   int
	changed  chan struct{}
}

type sleeper struct {
	until time.Time
	wake  chan struct{}
}

// NewClock returns a Clock set to now.
func NewClock(now time.Time) *Clock {
	return &Clock{now: now, changed: make(chan struct{}, 1)}
}

// Now returns the clock's time.
func (c *Clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

// Sleep blocks until the clock has advanced by d, or until ctx is done (and returns ctx.Err()).
// A d ≤ 0 returns at once and is not counted.
func (c *Clock) Sleep(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	c.mu.Lock()
	s := &sleeper{until: c.now.Add(d), wake: make(chan struct{})}
	c.sleepers = append(c.sleepers, s)
	c.sleeps++
	c.mu.Unlock()
	c.signal()
	select {
	case <-s.wake:
		return nil
	case <-ctx.Done():
		c.mu.Lock()
		for i, o := range c.sleepers {
			if o == s {
				c.sleepers = append(c.sleepers[:i], c.sleepers[i+1:]...)
				break
			}
		}
		c.mu.Unlock()
		c.signal()
		return ctx.Err()
	}
}

func (c *Clock) signal() {
	select {
	case c.changed <- struct{}{}:
	default:
	}
}

// Changed receives (at most one pending value) after a Sleep starts or is abandoned: a test that
// drives the clock waits on it instead of polling.
func (c *Clock) Changed() <-chan struct{} { return c.changed }

// Advance moves the clock forward by d and wakes the sleepers whose deadline it reached.
func (c *Clock) Advance(d time.Duration) {
	c.mu.Lock()
	c.set(c.now.Add(d))
	c.mu.Unlock()
}

// AdvanceToNext moves the clock to the earliest sleeper's deadline and wakes it (and any other
// sleeper due by then). It reports false, and does nothing, when no one sleeps.
func (c *Clock) AdvanceToNext() (time.Time, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.sleepers) == 0 {
		return c.now, false
	}
	next := c.sleepers[0].until
	for _, s := range c.sleepers[1:] {
		if s.until.Before(next) {
			next = s.until
		}
	}
	if next.After(c.now) {
		c.set(next)
	} else {
		c.set(c.now)
	}
	return c.now, true
}

// set moves the clock to t (never backwards) and wakes due sleepers; c.mu is held.
func (c *Clock) set(t time.Time) {
	if t.After(c.now) {
		c.now = t
	}
	kept := c.sleepers[:0]
	for _, s := range c.sleepers {
		if s.until.After(c.now) {
			kept = append(kept, s)
		} else {
			close(s.wake)
		}
	}
	clear(c.sleepers[len(kept):])
	c.sleepers = kept
}

// Sleeping returns the number of Sleeps blocked now.
func (c *Clock) Sleeping() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.sleepers)
}

// Sleeps returns the number of Sleeps with a positive duration since the clock was made.
func (c *Clock) Sleeps() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.sleeps
}
