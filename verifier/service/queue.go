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

// enter waits for a turn and returns the function that gives it back.
func (a *admission) enter(ctx context.Context) (func(), error) {
	select {
	case a.admitted <- struct{}{}:
	default:
		return nil, retryAfter(a.retry, ErrOverloaded, "%d attestations are running or queued", cap(a.admitted))
	}
	select {
	case a.running <- struct{}{}:
	case <-ctx.Done():
		<-a.admitted
		return nil, ctx.Err()
	}
	return func() {
		<-a.running
		<-a.admitted
	}, nil
}

// depth returns the number of attestations running or waiting.
func (a *admission) depth() int { return len(a.admitted) }
