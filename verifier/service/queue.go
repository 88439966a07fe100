package service

import (
	"context"
	"time"
)

// admission is the bounded queue in front of verification: at most `workers` attestations run at
// once and at most `queue` more wait for a turn. Past that, enter fails at once with
// ErrOverloaded: the caller's own goroutine is the only one involved, so an overload never piles
// up goroutines, and it never turns into a default verdict.
type admission struct {
	admitted chan struct{} // running + waiting
	running  chan struct{}
	retry    time.Duration
}

func newAdmission(workers, queue int, retry time.Duration) *admission {
	return &admission{
		admitted: make(chan struct{}, workers+queue),
		running:  make(chan struct{}, workers),
		retry:    retry,
	}
}

// admit takes a place in the queue without waiting, or fails at once with ErrOverloaded. It
// returns the function that gives the place back.
func (a *admission) admit() (func(), error) {
	select {
	case a.admitted <- struct{}{}:
		return func() { <-a.admitted }, nil
	default:
		return nil, retryAfter(a.retry, ErrOverloaded, "%d attestations are running or queued", cap(a.admitted))
	}
}

// run waits, holding a place from admit, for a verification slot, and returns the function that
// gives the slot back. A ctx done while waiting is its error (the caller went away).
func (a *admission) run(ctx context.Context) (func(), error) {
	select {
	case a.running <- struct{}{}:
		return func() { <-a.running }, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// depth returns the number of attestations running or waiting.
func (a *admission) depth() int { return len(a.admitted) }
