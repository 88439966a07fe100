package collateral

import (
	"context"
	"sync"
	"time"
)

// budget is the request budget of one upstream host, shared by every fetch that goes there:
//
//   - a token bucket of burst requests refilled at one per every, kept as the generic cell rate
//     algorithm (GCRA, https://en.wikipedia.org/wiki/Generic_cell_rate_algorithm): each request
//     reserves the next slot, so waiting requests are spaced out in arrival order instead of all
//     waking together;
//   - a hold: the host answered 429 or 503 with Retry-After (RFC 9110 §10.2.3,
//     https://www.rfc-editor.org/rfc/rfc9110#section-10.2.3) and is not asked again before it.
//
// A budget never sends anything itself: wait returns when the caller may send one request.
type budget struct {
	every time.Duration // 0: no token bucket, only holds
	burst int

	mu   sync.Mutex
	tat  time.Time // GCRA theoretical arrival time
	hold time.Time // no request before this time
}

func newBudget(every time.Duration, burst int) *budget {
	return &budget{every: every, burst: max(burst, 1)}
}

// reserve returns the time at which a request may be sent. When the host is held it returns the
// end of the hold and takes no slot (held): the caller waits and reserves again. When that time is
// after deadline it takes nothing and returns ok false.
func (b *budget) reserve(now, deadline time.Time) (at time.Time, held, ok bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if now.Before(b.hold) {
		return b.hold, true, !b.hold.After(deadline)
	}
	if b.every <= 0 {
		return now, false, true
	}
	at = now
	if earliest := b.tat.Add(-time.Duration(b.burst-1) * b.every); earliest.After(at) {
		at = earliest
	}
	if at.After(deadline) {
		return at, false, false
	}
	b.tat = later(b.tat, at).Add(b.every)
	return at, false, true
}

// holdUntil records that the host must not be asked again before t.
func (b *budget) holdUntil(t time.Time) {
	b.mu.Lock()
	b.hold = later(b.hold, t)
	b.mu.Unlock()
}

func (b *budget) heldUntil() time.Time {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.hold
}

// waitTooLong is returned by wait when the next slot or the end of a hold is after the deadline.
type waitTooLong struct {
	at   time.Time
	held bool
}

func (e *waitTooLong) Error() string { return "budget exhausted" }

// wait returns when one request may be sent: after its slot in the bucket and after any hold,
// including a hold that began while it waited for its slot. It fails with *waitTooLong rather than
// wait past deadline, and with ctx's error when ctx is done first.
func (b *budget) wait(ctx context.Context, clock Clock, deadline time.Time) error {
	for {
		now := clock.Now()
		at, held, ok := b.reserve(now, deadline)
		if !ok {
			return &waitTooLong{at: at, held: held}
		}
		if at.After(now) {
			if err := clock.Sleep(ctx, at.Sub(now)); err != nil {
				return err
			}
		}
		if held || clock.Now().Before(b.heldUntil()) {
			continue
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		return nil
	}
}

func later(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}
