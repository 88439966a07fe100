// Command loadgen is an open-loop load generator for a running `proofline serve --test-mode`:
// simulated TDX and SEV-SNP VMs (servicetest's fake vendor PKIs, read from the verifier's
// DATA_DIR/simulated-platforms.json) submit evidence at a fixed arrival rate, whatever the
// verifier's answers, and it reports the achieved rate, latency percentiles and failures.
//
//	loadgen -write-config cfg.yaml -data-dir DIR -listen 127.0.0.1:8089 -vms 256
//	proofline serve --test-mode --config cfg.yaml &
//	loadgen -url http://127.0.0.1:8089 -data-dir DIR -rate 200 -duration 60s -vms 256
//	proofline log fsck --log DIR/log --keys DIR/keys/history.json
//
// hack/bench/run.sh does all of it. Method (hack/bench/README.md, "Load"):
//   - VMs: -vms distinct agents, each with its own API token (written into the verifier's
//     configuration by -write-config), nonce and runtime data; platforms alternate TDX, SEV-SNP.
//     The fake PKIs have one chip per platform, so all VMs of a platform share its PCK/VCEK chain.
//   - Before the clock starts, each request's challenge is fetched (GET /v1/challenge) and its
//     evidence signed for that nonce (-presign, default): the VMs' own signing would otherwise
//     share the verifier's cores. The nonce TTL must cover the run (default 5 min).
//   - Open loop: request i is sent at start + i/rate by its own goroutine, whether or not earlier
//     ones were answered; its latency runs from that scheduled time to the answer (so a stalled
//     verifier shows as latency, not as a lower offered rate).
//   - A request fails on a transport error, a non-200 answer, or a verdict other than affirming.
//
// The last line is machine-readable for run.sh: "RESULT key=value …".
package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/proofline/proofline/attest"
	"github.com/proofline/proofline/internal/agent"
	"github.com/proofline/proofline/verifier/service/servicetest"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "loadgen:", err)
		os.Exit(1)
	}
}

// token is VM name's API token: derived, so -write-config and the load agree without a file.
func token(name string) string {
	sum := sha256.Sum256([]byte("proofline loadgen token " + name))
	return hex.EncodeToString(sum[:])
}

func vmName(i int) string { return fmt.Sprintf("loadgen-vm-%05d", i) }

func run() error {
	url := flag.String("url", "http://127.0.0.1:8089", "the verifier's base URL")
	dataDir := flag.String("data-dir", "", "the verifier's data directory (for "+servicetest.FileName+"; with -write-config, its data_dir)")
	rate := flag.Float64("rate", 100, "arrivals per second")
	duration := flag.Duration("duration", 60*time.Second, "how long to send")
	vms := flag.Int("vms", 256, "distinct simulated VMs (API tokens)")
	timeline := flag.Bool("timeline", false, "also print each second's requests (by scheduled send time): sent, failed, latency p50, p99 and max")
	presign := flag.Bool("presign", true, "fetch every challenge and sign every evidence before the clock starts")
	writeConfig := flag.String("write-config", "", "write a `proofline serve` configuration with the VMs' tokens to this file and exit")
	listen := flag.String("listen", "127.0.0.1:8089", "with -write-config: the verifier's listen address")
	workers := flag.Int("workers", 64, "with -write-config: queue.workers (verifications and appends in flight)")
	queue := flag.Int("queue", 512, "with -write-config: queue.size (waiting requests)")
	flag.Parse()
	if *dataDir == "" || *vms < 1 || *rate <= 0 {
		return errors.New("give -data-dir, -vms ≥ 1 and -rate > 0")
	}
	if *writeConfig != "" {
		return writeServeConfig(*writeConfig, *dataDir, *listen, *vms, *workers, *queue)
	}
	raw, err := os.ReadFile(filepath.Join(*dataDir, servicetest.FileName))
	if err != nil {
		return fmt.Errorf("reading the simulated platforms (is `proofline serve --test-mode` running on this data directory?): %w", err)
	}
	plat, err := servicetest.Unmarshal(raw)
	if err != nil {
		return err
	}
	hc := &http.Client{Timeout: 60 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 1024, MaxConnsPerHost: 0}}
	clients := make([]*agent.Client, *vms)
	for i := range clients {
		clients[i] = &agent.Client{URL: *url, HTTP: hc, Token: token(vmName(i))}
	}
	ctx := context.Background()
	n := int(*rate * duration.Seconds())
	envelope := func(i int) ([]byte, error) {
		vm := i % *vms
		platform := attest.PlatformTDX
		if vm%2 == 1 {
			platform = attest.PlatformSNP
		}
		ch, err := clients[vm].Challenge(ctx)
		if err != nil {
			return nil, err
		}
		return plat.Evidence(platform, ch.Nonce, servicetest.RuntimeData(vmName(vm)), servicetest.FaultNone)
	}
	var evs [][]byte
	if *presign {
		prep := time.Now()
		evs = make([][]byte, n)
		var wg sync.WaitGroup
		var next atomic.Int64
		var prepErr atomic.Value
		for range 4 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := int(next.Add(1) - 1); i < n; i = int(next.Add(1) - 1) {
					ev, err := envelope(i)
					if err != nil {
						prepErr.Store(err)
						return
					}
					evs[i] = ev
				}
			}()
		}
		wg.Wait()
		if err, ok := prepErr.Load().(error); ok {
			return fmt.Errorf("preparing the evidence: %w", err)
		}
		fmt.Printf("prepared %d challenges and envelopes for %d VMs in %s\n", n, *vms, time.Since(prep).Round(time.Millisecond))
	}

	lat := make([]time.Duration, n)
	failed := make([]string, n)
	var wg sync.WaitGroup
	var maxIdx atomic.Uint64
	start := time.Now()
	for i := range n {
		at := start.Add(time.Duration(float64(i) / *rate * float64(time.Second)))
		if d := time.Until(at); d > 0 {
			time.Sleep(d)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := clients[i%*vms]
			var ev []byte
			if evs != nil {
				ev = evs[i]
				evs[i] = nil
			} else {
				var err error
				if ev, err = envelope(i); err != nil {
					failed[i] = "challenge: " + err.Error()
					lat[i] = time.Since(at)
					return
				}
			}
			r, err := c.Attest(ctx, ev)
			lat[i] = time.Since(at)
			switch {
			case err != nil:
				failed[i] = err.Error()
			case r.Status != "affirming":
				failed[i] = "verdict " + r.Status
			default:
				for {
					cur := maxIdx.Load()
					if r.LogIndex <= cur || maxIdx.CompareAndSwap(cur, r.LogIndex) {
						break
					}
				}
			}
		}()
	}
	sent := time.Since(start)
	wg.Wait()
	total := time.Since(start)

	if *timeline {
		printTimeline(lat, failed, *rate)
	}
	var ok []time.Duration
	kinds := map[string]int{}
	for i := range n {
		if failed[i] != "" {
			k := failed[i]
			if len(k) > 80 {
				k = k[:80]
			}
			kinds[k]++
			continue
		}
		ok = append(ok, lat[i])
	}
	slices.Sort(ok)
	pct := func(p float64) time.Duration {
		if len(ok) == 0 {
			return 0
		}
		return ok[min(len(ok)-1, int(p*float64(len(ok))))]
	}
	fmt.Printf("offered %.1f/s for %s: %d requests sent in %s, all answered after %s\n", *rate, *duration, n, sent.Round(time.Millisecond), total.Round(time.Millisecond))
	fmt.Printf("succeeded %d (%.1f/s over the answering time), failed %d\n", len(ok), float64(len(ok))/total.Seconds(), n-len(ok))
	fmt.Printf("latency p50 %s  p90 %s  p99 %s  max %s\n", pct(0.50).Round(time.Microsecond), pct(0.90).Round(time.Microsecond), pct(0.99).Round(time.Microsecond), pct(1).Round(time.Microsecond))
	keys := make([]string, 0, len(kinds))
	for k := range kinds {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		fmt.Printf("  failure ×%d: %s\n", kinds[k], k)
	}
	fmt.Printf("RESULT sent=%d ok=%d failed=%d achieved=%.1f p50_ms=%.2f p90_ms=%.2f p99_ms=%.2f max_ms=%.2f max_log_index=%d\n",
		n, len(ok), n-len(ok), float64(len(ok))/total.Seconds(), ms(pct(0.5)), ms(pct(0.9)), ms(pct(0.99)), ms(pct(1)), maxIdx.Load())
	if n != len(ok) {
		return fmt.Errorf("%d of %d requests failed", n-len(ok), n)
	}
	return nil
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// printTimeline prints, for each second of scheduled send time, how many requests were sent and
// failed and the latency percentiles of those answered: where a stall starts and how long the
// backlog it leaves takes to drain.
func printTimeline(lat []time.Duration, failed []string, rate float64) {
	fmt.Println("second   sent  failed      p50      p99      max")
	per := int(rate)
	if per < 1 {
		per = 1
	}
	for from := 0; from < len(lat); from += per {
		to := min(len(lat), from+per)
		var ok []time.Duration
		for i := from; i < to; i++ {
			if failed[i] == "" {
				ok = append(ok, lat[i])
			}
		}
		slices.Sort(ok)
		p := func(q float64) float64 {
			if len(ok) == 0 {
				return 0
			}
			return ms(ok[min(len(ok)-1, int(q*float64(len(ok))))])
		}
		fmt.Printf("%6d %6d %7d %6.0fms %6.0fms %6.0fms\n", from/per, to-from, to-from-len(ok), p(0.5), p(0.99), p(1))
	}
}

// writeServeConfig writes a `proofline serve` configuration: the data directory, the listen
// address, the queue, and an agent token per VM.
func writeServeConfig(path, dataDir, listen string, vms, workers, queue int) error {
	var b strings.Builder
	fmt.Fprintf(&b, "# Written by hack/loadgen -write-config.\ndata_dir: %s\nqueue: {workers: %d, size: %d}\nlog_level: warn\nhttp:\n  listen: %q\n  tokens:\n", dataDir, workers, queue, listen)
	for i := range vms {
		sum := sha256.Sum256([]byte(token(vmName(i))))
		fmt.Fprintf(&b, "    - {name: %s, role: agent, sha256: %x}\n", vmName(i), sum)
	}
	return os.WriteFile(path, []byte(b.String()), 0o600)
}
