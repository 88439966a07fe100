package api_test

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"sync/atomic"
	"testing"
	"time"

	"github.com/proofline/proofline/attest"
	"github.com/proofline/proofline/internal/agent"
	"github.com/proofline/proofline/internal/agent/agenttest"
	"github.com/proofline/proofline/internal/benchfloor"
	"github.com/proofline/proofline/verifier/service"
	"github.com/proofline/proofline/verifier/service/servicetest"
)

// BenchmarkAttestHTTP measures the whole background-check attestation over HTTP against its
// cryptographic floor, in the same run (hack/bench/README.md, "End to end"):
//
//	go test -run '^$' -bench AttestHTTP -benchtime 3s -count 5 ./verifier/api/
//
// The verifier is the real one (verifier/service + verifier/api, the agenttest harness) on a
// loopback listener with a fresh data directory: the POSIX tessera log in a temp dir (durable
// append with group commit), SQLite state, an admission queue of 64 verification slots and 256
// waiting places (a slot is held only while verifier.Verify runs). Fake-PKI evidence of 64
// distinct VMs (agents, each with its own token, nonce and runtime data) alternates round-robin.
// One op is what a VM's attestation costs the verifier: GET /v1/challenge (a fresh nonce) and
// POST /v1/attest (nonce check, verification, record signing, durable log append, result
// token). The VMs' own report signing is not the verifier's work and would share its 2 cores, so
// each op's envelope is signed before the timer starts, for a nonce issued then; the op's own
// challenge exercises nonce issuance. 128 client goroutines, as at a fleet reboot, keep the
// queue full and the log's group commits large. Warm caches: one attestation per platform
// precedes the timer.
//
// Reported: attest/s, and floor-ratio = the op rate divided by the floor's rate measured just
// before and just after, in the same process, on 2 goroutines (both cores): the evidence's signature checks plus one
// record and one token signature (ECDSA; internal/benchfloor).
func BenchmarkAttestHTTP(b *testing.B) {
	plat, err := servicetest.New(time.Now())
	if err != nil {
		b.Fatal(err)
	}
	const vms, parallel = 64, 128
	names := make([]string, vms)
	for i := range names {
		names[i] = fmt.Sprintf("vm-%03d", i)
	}
	v, err := agenttest.Start(agenttest.Options{DataDir: b.TempDir(), Platforms: plat, Agents: names, Queue: service.QueueConfig{Workers: 64, Size: 256}})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		if err := v.Stop(); err != nil {
			b.Error(err)
		}
	})
	hc := &http.Client{Timeout: time.Minute, Transport: &http.Transport{MaxIdleConnsPerHost: 256}}
	// Runs before v.Stop (cleanups run last first): the server's shutdown waits up to 5 s for a
	// connection that never carried a request (one dialled while another freed up), which the
	// client holds idle; closing them lets the verifier stop at once.
	b.Cleanup(hc.CloseIdleConnections)
	clients := make([]*agent.Client, vms)
	for i, n := range names {
		clients[i] = &agent.Client{URL: v.URL(), HTTP: hc, Token: agenttest.Token(n)}
	}
	ctx := context.Background()
	// envelope gets a nonce for VM i and returns its signed evidence.
	envelope := func(b *testing.B, platform attest.Platform, i int) []byte {
		ch, err := clients[i].Challenge(ctx)
		if err != nil {
			b.Fatal(err)
		}
		ev, err := plat.Evidence(platform, ch.Nonce, servicetest.RuntimeData(names[i]), servicetest.FaultNone)
		if err != nil {
			b.Fatal(err)
		}
		return ev
	}
	for _, platform := range []attest.Platform{attest.PlatformTDX, attest.PlatformSNP} {
		b.Run(string(platform), func(b *testing.B) {
			b.StopTimer()      // only the attestations count towards ns/op, and so towards b.N
			for i := range 2 { // warm the verification caches
				if r, err := clients[i].Attest(ctx, envelope(b, platform, i)); err != nil || r.Status != "affirming" {
					b.Fatalf("warm-up attestation: %v %+v", err, r)
				}
			}
			floor := benchfloor.Ns(b, platform, 2, 2000) // both cores, as the benchmark
			evs := make([][]byte, b.N)
			for i := range evs {
				evs[i] = envelope(b, platform, i%vms)
			}
			var next atomic.Int64
			// 128 concurrent agents, as at a fleet reboot, whatever GOMAXPROCS (RunParallel runs
			// parallelism × GOMAXPROCS goroutines).
			b.SetParallelism(max(1, parallel/runtime.GOMAXPROCS(0)))
			stopProfile := profileTimed(b, string(platform))
			b.ResetTimer()
			b.StartTimer()
			start := time.Now()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					i := int(next.Add(1) - 1)
					c := clients[i%vms]
					if _, err := c.Challenge(ctx); err != nil {
						b.Error(err)
						return
					}
					r, err := c.Attest(ctx, evs[i])
					if err != nil {
						b.Error(err)
						return
					}
					if r.Status != "affirming" {
						b.Errorf("attestation %d: %s", i, r.Status)
						return
					}
				}
			})
			elapsed := time.Since(start)
			b.StopTimer()
			stopProfile()
			// The floor measured right before and after, so that a machine shared with other
			// work loads both sides of the ratio alike.
			floor = (floor + benchfloor.Ns(b, platform, 2, 2000)) / 2
			perOp := float64(elapsed.Nanoseconds()) / float64(b.N)
			b.ReportMetric(1e9/perOp, "attest/s")
			b.ReportMetric(floor/perOp, "floor-ratio")
		})
	}
}

// profileTimed writes a CPU profile of the timed part alone (the evidence signing before it
// would drown the verifier's own work) to $PROOFLINE_BENCH_PROFILE_DIR/cpu-NAME.out when that
// variable is set, and returns the function that stops it.
func profileTimed(b *testing.B, name string) (stop func()) {
	dir := os.Getenv("PROOFLINE_BENCH_PROFILE_DIR")
	if dir == "" {
		return func() {}
	}
	f, err := os.Create(filepath.Join(dir, "cpu-"+name+".out"))
	if err != nil {
		b.Fatal(err)
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		b.Fatal(err)
	}
	return func() {
		pprof.StopCPUProfile()
		if err := f.Close(); err != nil {
			b.Error(err)
		}
	}
}
