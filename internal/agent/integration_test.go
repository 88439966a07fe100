package agent

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/proofline/proofline/attest"
	"github.com/proofline/proofline/internal/agent/agenttest"
)

// Acceptance 2: the agent against a live verifier (verifier/service + verifier/api over real
// HTTP on localhost, test mode, a temp data dir) signing as the simulated TDX platform the
// verifier trusts. It attests and waits its interval; the verifier is stopped and the agent
// backs off exponentially (full jitter pinned at 0.5 by the injected random source, the waits
// observed through the injected clock, never slept) without crashing; the verifier restarts
// on the same data dir and address, and the agent recovers at its next try. Then the log,
// read as `proofline log fsck` reads it, holds exactly the agent's records, all affirming.
func TestAgentSurvivesVerifierRestart(t *testing.T) {
	plat := simulated(t)
	dir := t.TempDir()
	v, err := agenttest.Start(agenttest.Options{DataDir: dir, Platforms: plat, Agents: []string{"vm-1"}})
	if err != nil {
		t.Fatal(err)
	}
	defer v.Stop()
	clock := newStepClock()
	var logs syncBuffer
	a, err := New(Options{
		Verifier:  &Client{URL: v.URL(), Token: agenttest.Token("vm-1"), HTTP: &http.Client{Timeout: 10 * time.Second}},
		Collector: &Simulated{Platform: attest.PlatformTDX, Platforms: PlatformsFunc(plat)},
		Key:       newKey(t),
		Interval:  5 * time.Minute, Jitter: 0.1,
		Backoff: Backoff{Initial: time.Second, Max: 8 * time.Second},
		Clock:   clock, Rand: func() float64 { return 0.5 },
		Logger: textLogger(&logs),
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Run(ctx) }()

	interval := 5*time.Minute - time.Duration(0.5*0.1*float64(5*time.Minute))
	if d := clock.next(t); d != interval {
		t.Fatalf("after the first attestation the agent waits %v, want the interval less half the jitter, %v", d, interval)
	}
	first := a.Latest()
	if first == nil || first.Status != "affirming" || first.Platform != attest.PlatformTDX || first.Token == "" || first.ExpiresAt.IsZero() {
		t.Fatalf("first result %+v", first)
	}

	// The verifier goes away: every round fails, and the waits double up to Max.
	if err := v.Stop(); err != nil {
		t.Fatalf("stopping the verifier: %v", err)
	}
	for n, want := range []time.Duration{500 * time.Millisecond, time.Second, 2 * time.Second, 4 * time.Second, 4 * time.Second} {
		clock.wake(t)
		if d := clock.next(t); d != want {
			t.Fatalf("backoff %d: the agent waits %v, want %v (half the ceiling min(8s, 1s·2^%d))", n+1, d, want, n)
		}
		if got := a.Stats.Failures.Load(); got != int64(n+1) {
			t.Fatalf("failures %d after %d failed rounds", got, n+1)
		}
	}
	if a.Latest() != first {
		t.Fatal("a failed round replaced the latest result")
	}

	// The verifier is back on the same data dir: the next round attests.
	if err := v.Restart(); err != nil {
		t.Fatal(err)
	}
	clock.wake(t)
	if d := clock.next(t); d != interval {
		t.Fatalf("after recovering the agent waits %v, want the interval %v", d, interval)
	}
	second := a.Latest()
	if second == first || second.Status != "affirming" || second.LogIndex <= first.LogIndex {
		t.Fatalf("after the restart: %+v (first at log index %d)", second, first.LogIndex)
	}
	clock.wake(t) // one more round on the restarted verifier
	clock.next(t)
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Run: %v", err)
		}
	case <-time.After(hangGuard):
		t.Fatal("Run did not return after its context ended")
	}
	if err := v.Stop(); err != nil {
		t.Fatal(err)
	}

	recs, err := agenttest.Fsck(context.Background(), dir)
	if err != nil {
		t.Fatalf("fsck: %v", err)
	}
	if int64(len(recs)) != a.Stats.Attested.Load() || len(recs) != 3 {
		t.Fatalf("the log holds %d attestation records, the agent got %d results, want 3", len(recs), a.Stats.Attested.Load())
	}
	for _, r := range recs {
		if r.Subject != "agent:vm-1" || r.Status != "affirming" {
			t.Errorf("record %d: subject %q status %q", r.Index, r.Subject, r.Status)
		}
	}

	text := logs.String()
	for _, want := range []string{"attestation failed; retrying", "connection refused", "the verifier answers again", "msg=attested"} {
		if !strings.Contains(text, want) {
			t.Errorf("the log lacks %q", want)
		}
	}
	if strings.Contains(text, first.Token) || strings.Contains(text, agenttest.Token("vm-1")) {
		t.Error("the log holds a token")
	}
}
