package agent

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/proofline/proofline/attest"
	"github.com/proofline/proofline/internal/agent/agenttest"
	"github.com/proofline/proofline/verifier/service"
)

// scaledClock records every wait and sleeps it divided by scale: the agents' retries at their
// real proportions, compressed so a burst test takes a fraction of the real time. A wait of
// park or more (the interval after a result) lasts until the test ends, so attested agents do
// not come back while others are still in the burst.
type scaledClock struct {
	scale int64
	mu    sync.Mutex
	waits []time.Duration
}

func (c *scaledClock) Now() time.Time { return time.Now() }

func (c *scaledClock) Sleep(ctx context.Context, d time.Duration) error {
	c.mu.Lock()
	c.waits = append(c.waits, d)
	c.mu.Unlock()
	if d >= park {
		<-ctx.Done()
		return ctx.Err()
	}
	return SystemClock{}.Sleep(ctx, d/time.Duration(c.scale))
}

// park is the shortest wait scaledClock treats as the interval after a result: longer than any
// backoff of TestBurst (at most 30 s + Retry-After).
const park = 5 * time.Minute

// Acceptance 3, at go-test size (hack/agentburst runs 1,000): 100 agents start at once against
// one verifier whose queue holds 2 running + 8 waiting attestations. Every agent is attested;
// the verifier sheds the excess with 503 "overloaded" + Retry-After and fails nothing else; every
// retry waits at least the Retry-After, and the full jitter spreads the retries (almost no two
// agents wait the same time). The log then holds one affirming record per agent.
func TestBurst(t *testing.T) {
	const agents = 100
	plat := simulated(t)
	dir := t.TempDir()
	names := make([]string, agents)
	for i := range names {
		names[i] = fmt.Sprintf("burst-%03d", i)
	}
	v, err := agenttest.Start(agenttest.Options{DataDir: dir, Platforms: plat, Agents: names, Queue: service.QueueConfig{Workers: 2, Size: 8}})
	if err != nil {
		t.Fatal(err)
	}
	defer v.Stop()
	clock := &scaledClock{scale: 100}
	tr := &http.Transport{MaxIdleConnsPerHost: agents}
	defer tr.CloseIdleConnections()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var attested sync.WaitGroup
	attested.Add(agents)
	var wg sync.WaitGroup
	all := make([]*Agent, agents)
	for i, name := range names {
		platform := attest.PlatformTDX
		if i%2 == 1 {
			platform = attest.PlatformSNP
		}
		var once sync.Once
		a, err := New(Options{
			Verifier:   &Client{URL: v.URL(), Token: agenttest.Token(name), HTTP: &http.Client{Transport: tr, Timeout: hangGuard}},
			Collector:  &Simulated{Platform: platform, Platforms: PlatformsFunc(plat)},
			Key:        newKey(t),
			Interval:   time.Hour,
			Backoff:    Backoff{Initial: time.Second, Max: 30 * time.Second},
			Clock:      clock,
			OnAttested: func(*Token) { once.Do(attested.Done) },
		})
		if err != nil {
			t.Fatal(err)
		}
		all[i] = a
		wg.Go(func() { a.Run(ctx) })
	}
	allDone := make(chan struct{})
	go func() { attested.Wait(); close(allDone) }()
	select {
	case <-allDone:
	case <-time.After(hangGuard):
		var attested, attempts, failures, overloaded int64
		for _, a := range all {
			if a.Latest() != nil {
				attested++
			}
			attempts += a.Stats.Attempts.Load()
			failures += a.Stats.Failures.Load()
			overloaded += a.Stats.Overloaded.Load()
		}
		t.Fatalf("not every agent was attested: %d of %d, after %d attempts, %d failed rounds (%d overloaded)", attested, agents, attempts, failures, overloaded)
	}
	cancel()
	wg.Wait()

	var failures, overloaded int64
	for _, a := range all {
		failures += a.Stats.Failures.Load()
		overloaded += a.Stats.Overloaded.Load()
		if tok := a.Latest(); tok == nil || tok.Status != "affirming" {
			t.Fatalf("result %+v", tok)
		}
	}
	if overloaded == 0 || failures != overloaded {
		t.Fatalf("%d failed rounds, %d of them 503 overloaded; want some, all overloaded", failures, overloaded)
	}
	var retries []time.Duration
	clock.mu.Lock()
	for _, d := range clock.waits {
		if d < park { // the others (8m: 80% of the token lifetime) follow a result
			retries = append(retries, d)
		}
	}
	clock.mu.Unlock()
	if int64(len(retries)) != failures {
		t.Fatalf("%d backoff waits for %d failures", len(retries), failures)
	}
	slices.Sort(retries)
	if retries[0] < time.Second {
		t.Fatalf("a retry waited %v, less than the verifier's Retry-After of 1s", retries[0])
	}
	distinct := len(slices.Compact(slices.Clone(retries)))
	if distinct < len(retries)*9/10 || retries[len(retries)-1]-retries[0] < 500*time.Millisecond {
		t.Fatalf("the retries are not spread: %d distinct waits of %d, from %v to %v", distinct, len(retries), retries[0], retries[len(retries)-1])
	}
	t.Logf("%d agents: %d rounds refused with 503 overloaded, retry waits %v to %v", agents, overloaded, retries[0], retries[len(retries)-1])

	// A connection the agents' transport dialled for a request cancelled meanwhile is idle on
	// the client and new on the server, where a graceful shutdown waits for its first request
	// (http.Server.Shutdown closes new connections only after 5 s): close it first.
	tr.CloseIdleConnections()
	if err := v.Stop(); err != nil {
		t.Fatal(err)
	}
	recs, err := agenttest.Fsck(context.Background(), dir)
	if err != nil {
		t.Fatalf("fsck: %v", err)
	}
	var results int64
	for _, a := range all {
		results += a.Stats.Attested.Load()
	}
	subjects := map[string]bool{}
	for _, r := range recs {
		if r.Status != "affirming" {
			t.Fatalf("record %+v", r)
		}
		subjects[r.Subject] = true
	}
	if len(subjects) != agents || int64(len(recs)) != results {
		t.Fatalf("%d records of %d agents; want %d (one per result) of %d agents", len(recs), len(subjects), results, agents)
	}
}
