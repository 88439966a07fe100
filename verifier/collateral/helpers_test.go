package collateral_test

import (
	"context"
	"io"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/proofline/proofline/verifier/collateral"
	"github.com/proofline/proofline/verifier/collateral/collateraltest"
)

// start is the fake clock's start: every fixture is generated relative to it.
var start = time.Date(2026, 3, 2, 12, 0, 0, 0, time.UTC)

// activity counts the HTTP requests in flight (from sending to closing the body) and signals
// every change, so that a test can tell when everything that runs is asleep on the fake clock.
type activity struct {
	active  atomic.Int64
	changed chan struct{}
}

func newActivity() *activity { return &activity{changed: make(chan struct{}, 1)} }

func (a *activity) signal() {
	select {
	case a.changed <- struct{}{}:
	default:
	}
}

// transport wraps base to count requests in a.
func (a *activity) transport(base http.RoundTripper) http.RoundTripper {
	return roundTripper(func(r *http.Request) (*http.Response, error) {
		a.active.Add(1)
		a.signal()
		resp, err := base.RoundTrip(r)
		if err != nil {
			a.active.Add(-1)
			a.signal()
			return nil, err
		}
		var once sync.Once
		resp.Body = &closeHook{ReadCloser: resp.Body, hook: func() {
			once.Do(func() { a.active.Add(-1); a.signal() })
		}}
		return resp, nil
	})
}

type roundTripper func(*http.Request) (*http.Response, error)

func (f roundTripper) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

type closeHook struct {
	io.ReadCloser
	hook func()
}

func (c *closeHook) Close() error {
	err := c.ReadCloser.Close()
	c.hook()
	return err
}

// env is a Cache in front of a Fetcher in front of a fake server, on one fake clock.
type env struct {
	clock   *collateraltest.Clock
	srv     *collateraltest.Server
	act     *activity
	fetcher *collateral.Fetcher
	cache   *collateral.Cache
}

// newEnv starts the fake server srv (made by newServer on the env's clock) and a Fetcher and Cache
// in front of it; edit adjusts the fetcher's configuration (routes come from the server).
func newEnv(t *testing.T, newServer func(*collateraltest.Clock) (*collateraltest.Server, error),
	store collateral.Store, edit func(*collateral.FetcherConfig)) *env {
	t.Helper()
	e := &env{clock: collateraltest.NewClock(start), act: newActivity()}
	srv, err := newServer(e.clock)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Close)
	e.srv = srv
	client := srv.Client()
	client.Transport = e.act.transport(client.Transport)
	cfg := collateral.FetcherConfig{Client: client, Clock: e.clock, Routes: srv.Routes(), MaxWait: time.Hour}
	if edit != nil {
		edit(&cfg)
	}
	if e.fetcher, err = collateral.NewFetcher(cfg); err != nil {
		t.Fatal(err)
	}
	if e.cache, err = collateral.NewCache(collateral.CacheConfig{Upstream: e.fetcher, Store: store, Clock: e.clock}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.cache.Close() })
	return e
}

// withBudget sets every route's budget.
func withBudget(every time.Duration, burst int) func(*collateral.FetcherConfig) {
	return func(c *collateral.FetcherConfig) {
		for i := range c.Routes {
			c.Routes[i].Every, c.Routes[i].Burst = every, burst
		}
	}
}

// drive runs n jobs at once and, until all are done, advances the fake clock to the next
// sleeper's deadline whenever the system is quiescent: every running fetch of the cache asleep
// on the clock and no request in flight. It never waits in real time: it blocks on the clock's
// and the transport's change signals. It returns the jobs' errors and the number of advances.
func (e *env) drive(n int, job func(i int) error) ([]error, int) {
	errs := make([]error, n)
	var left atomic.Int64
	left.Store(int64(n))
	for i := range n {
		go func() {
			errs[i] = job(i)
			left.Add(-1)
			e.act.signal()
		}()
	}
	advances := 0
	for left.Load() > 0 {
		in := e.cache.Stats().InFlight
		quiet := in > 0 && e.act.active.Load() == 0 && e.clock.Sleeping() == in && e.cache.Stats().InFlight == in
		if quiet {
			if _, ok := e.clock.AdvanceToNext(); ok {
				advances++
				continue
			}
		}
		select {
		case <-e.clock.Changed():
		case <-e.act.changed:
		}
	}
	return errs, advances
}

// get is a job that fetches one URL through the cache.
func (e *env) get(url string) error {
	_, err := e.cache.Get(context.Background(), url)
	return err
}
