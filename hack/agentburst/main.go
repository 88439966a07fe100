// Command agentburst starts many simulated Proofline agents at once against one verifier on this
// machine and reports how the verifier sheds the load and how the agents' backoff spreads it.
//
//	go run ./hack/agentburst [-agents 1000] [-workers 8] [-queue 64] [-deadline 60s]
//
// The verifier is the real service and HTTP API (verifier/service, verifier/api) on a temporary
// data directory, in test mode, on a localhost listener (internal/agent/agenttest), with the
// queue of `proofline serve`'s defaults unless -workers/-queue say otherwise. Each agent is the
// real agent loop (internal/agent) with its own API token and key, signing as a simulated TDX or
// SEV-SNP VM (alternately) through the fake guest devices, with the real clock and the default
// backoff (1s initial, 5m max, full jitter on top of Retry-After). All start at the same instant.
//
// It prints: the time until every agent was attested, the 503 answers (and their Retry-After),
// the retries, the latency of successful POST /v1/attest requests and of each agent's time to
// its first result (p50, p99, max), and checks the evidence log with fsck at the end. It exits 1
// if an agent was not attested within -deadline or the log does not hold every result.
package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"flag"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/proofline/proofline/attest"
	"github.com/proofline/proofline/internal/agent"
	"github.com/proofline/proofline/internal/agent/agenttest"
	"github.com/proofline/proofline/verifier/service"
	"github.com/proofline/proofline/verifier/service/servicetest"
)

func main() {
	n := flag.Int("agents", 1000, "simulated agents, all started at once")
	workers := flag.Int("workers", 0, "verifier queue.workers (0: the default, 8)")
	queue := flag.Int("queue", 0, "verifier queue.size (0: the default, 64)")
	deadline := flag.Duration("deadline", 60*time.Second, "every agent must be attested within this")
	verbose := flag.Bool("verbose", false, "print the verifier's warnings and errors")
	flag.Parse()
	if err := burst(*n, *workers, *queue, *deadline, *verbose); err != nil {
		fmt.Fprintln(os.Stderr, "agentburst:", err)
		os.Exit(1)
	}
}

// countingTransport counts answers by request and status and times POST /v1/attest.
type countingTransport struct {
	base http.RoundTripper

	challengeOK, challenge503, attest503, attestOK, other atomic.Int64
	start                                                 time.Time
	mu                                                    sync.Mutex
	attestLatency                                         []time.Duration
	retryAfter                                            map[string]int
	// perSecond counts POST /v1/attest requests and their 503s by second since start.
	perSecond [][2]int
}

func (c *countingTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	start := time.Now()
	resp, err := c.base.RoundTrip(r)
	if err != nil {
		c.other.Add(1)
		return nil, err
	}
	isAttest := r.URL.Path == "/v1/attest"
	if isAttest {
		sec := int(start.Sub(c.start) / time.Second)
		c.mu.Lock()
		for len(c.perSecond) <= sec {
			c.perSecond = append(c.perSecond, [2]int{})
		}
		c.perSecond[sec][0]++
		if resp.StatusCode == http.StatusServiceUnavailable {
			c.perSecond[sec][1]++
		}
		c.mu.Unlock()
	}
	switch {
	case resp.StatusCode == http.StatusServiceUnavailable:
		if isAttest {
			c.attest503.Add(1)
		} else {
			c.challenge503.Add(1)
		}
		c.mu.Lock()
		c.retryAfter[resp.Header.Get("Retry-After")]++
		c.mu.Unlock()
	case resp.StatusCode == http.StatusOK && r.URL.Path == "/v1/challenge":
		c.challengeOK.Add(1)
	case resp.StatusCode == http.StatusOK && isAttest:
		c.attestOK.Add(1)
		d := time.Since(start)
		c.mu.Lock()
		c.attestLatency = append(c.attestLatency, d)
		c.mu.Unlock()
	case resp.StatusCode != http.StatusOK:
		c.other.Add(1)
	}
	return resp, nil
}

func burst(n, workers, queue int, deadline time.Duration, verbose bool) error {
	dir, err := os.MkdirTemp("", "agentburst")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	plat, err := servicetest.New(time.Now())
	if err != nil {
		return err
	}
	names := make([]string, n)
	for i := range names {
		names[i] = fmt.Sprintf("burst-%04d", i)
	}
	level := slog.LevelError + 1
	if verbose {
		level = slog.LevelWarn
	}
	vlog := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	v, err := agenttest.Start(agenttest.Options{DataDir: dir, Platforms: plat, Agents: names, Queue: service.QueueConfig{Workers: workers, Size: queue}, Logger: vlog})
	if err != nil {
		return err
	}
	defer v.Stop()
	keys := make([]*ecdsa.PrivateKey, n)
	for i := range keys {
		if keys[i], err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader); err != nil {
			return err
		}
	}
	tr := &countingTransport{base: &http.Transport{MaxIdleConnsPerHost: n, MaxConnsPerHost: 0}, retryAfter: map[string]int{}}
	hc := &http.Client{Transport: tr, Timeout: 2 * time.Minute}

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var (
		mu         sync.Mutex
		firstAt    = make([]time.Duration, 0, n)
		allDone    = make(chan struct{})
		remaining  atomic.Int64
		agents     = make([]*agent.Agent, n)
		wg         sync.WaitGroup
		start      time.Time
		startGate  = make(chan struct{})
		lastResult atomic.Int64
	)
	remaining.Store(int64(n))
	for i, name := range names {
		platform := attest.PlatformTDX
		if i%2 == 1 {
			platform = attest.PlatformSNP
		}
		var once sync.Once
		a, err := agent.New(agent.Options{
			Verifier:  &agent.Client{URL: v.URL(), Token: agenttest.Token(name), HTTP: hc},
			Collector: &agent.Simulated{Platform: platform, Platforms: agent.PlatformsFunc(plat)},
			Key:       keys[i],
			Interval:  time.Hour,
			Backoff:   agent.Backoff{Initial: time.Second, Max: 5 * time.Minute},
			OnAttested: func(*agent.Token) {
				once.Do(func() {
					d := time.Since(start)
					mu.Lock()
					firstAt = append(firstAt, d)
					mu.Unlock()
					lastResult.Store(int64(d))
					if remaining.Add(-1) == 0 {
						close(allDone)
					}
				})
			},
		})
		if err != nil {
			return err
		}
		agents[i] = a
		wg.Go(func() {
			<-startGate
			a.Run(ctx)
		})
	}
	fmt.Printf("agentburst: %d agents (TDX and SEV-SNP alternately) against one verifier (queue: %s), GOMAXPROCS=%d, %s\n",
		n, queueText(workers, queue), runtime.GOMAXPROCS(0), runtime.Version())
	start = time.Now()
	tr.start = start
	close(startGate)
	var timedOut bool
	select {
	case <-allDone:
	case <-time.After(deadline):
		timedOut = true
	}
	elapsed := time.Since(start)
	cancel()
	wg.Wait()

	var failures, overloaded, attempts, worst int64
	for _, a := range agents {
		failures += a.Stats.Failures.Load()
		overloaded += a.Stats.Overloaded.Load()
		attempts += a.Stats.Attempts.Load()
		worst = max(worst, a.Stats.Failures.Load())
	}
	mu.Lock()
	got := len(firstAt)
	slices.Sort(firstAt)
	mu.Unlock()
	tr.mu.Lock()
	lat := slices.Clone(tr.attestLatency)
	ra := tr.retryAfter
	perSecond := slices.Clone(tr.perSecond)
	tr.mu.Unlock()
	slices.Sort(lat)

	if timedOut {
		fmt.Printf("  NOT all attested within %v: %d of %d\n", deadline, got, n)
	} else {
		fmt.Printf("  all %d attested after     %v\n", n, elapsed.Round(time.Millisecond))
	}
	fmt.Printf("  503 answers               %d to POST /v1/attest, %d to GET /v1/challenge; Retry-After values %v\n", tr.attest503.Load(), tr.challenge503.Load(), ra)
	fmt.Printf("  challenges                %d (evidence collected %d times: re-sent unchanged after 503 overloaded)\n", tr.challengeOK.Load(), tr.challengeOK.Load())
	fmt.Printf("  other failures            %d (transport errors and statuses other than 200/503)\n", tr.other.Load())
	fmt.Printf("  retries                   %d backoff waits (%d after 503 overloaded); %d POST /v1/attest for %d results (%.2f per agent)\n",
		failures, overloaded, attempts, tr.attestOK.Load(), float64(attempts)/float64(n))
	fmt.Printf("  worst agent               %d failed rounds before its first result\n", worst)
	fmt.Printf("  POST /v1/attest per second (sent: 503s), by second since the start:\n   ")
	for i, c := range perSecond {
		fmt.Printf(" %d:%d/%d", i, c[0], c[1])
	}
	fmt.Println()
	fmt.Printf("  POST /v1/attest latency   p50 %v  p99 %v  max %v  (successful requests, client side)\n", pct(lat, 50), pct(lat, 99), pct(lat, 100))
	fmt.Printf("  time to first result      p50 %v  p99 %v  max %v  (per agent, from the common start)\n", pct(firstAt, 50), pct(firstAt, 99), pct(firstAt, 100))

	if err := v.Stop(); err != nil {
		return fmt.Errorf("stopping the verifier: %w", err)
	}
	recs, err := agenttest.Fsck(context.Background(), dir)
	if err != nil {
		return fmt.Errorf("fsck: %w", err)
	}
	affirming := 0
	for _, r := range recs {
		if r.Status == "affirming" {
			affirming++
		}
	}
	fmt.Printf("  evidence log              fsck OK: %d attestation records, %d affirming\n", len(recs), affirming)
	switch {
	case timedOut:
		return fmt.Errorf("%d of %d agents attested within %v", got, n, deadline)
	case int64(len(recs)) != tr.attestOK.Load() || affirming != len(recs):
		return fmt.Errorf("the log holds %d records (%d affirming) for %d results", len(recs), affirming, tr.attestOK.Load())
	}
	return nil
}

func queueText(workers, queue int) string {
	if workers == 0 {
		workers = 8
	}
	if queue == 0 {
		queue = 64
	}
	return fmt.Sprintf("%d workers + %d waiting", workers, queue)
}

// pct is the p-th percentile of sorted ds (nearest rank), rounded for printing.
func pct(ds []time.Duration, p int) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	i := (len(ds)*p + 99) / 100
	i = min(max(i, 1), len(ds))
	return ds[i-1].Round(100 * time.Microsecond)
}
