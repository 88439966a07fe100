package api

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/proofline/proofline/attest"
	"github.com/proofline/proofline/verifier/ear"
	"github.com/proofline/proofline/verifier/service"
	"github.com/proofline/proofline/verifier/service/servicetest"
)

// faultyLog fails appends while failing is set: "failed and not saved" (the append never reaches
// the log) or, with saved, "failed but saved" (the record is appended, the acknowledgement lost).
type faultyLog struct {
	service.Log
	failing, saved atomic.Bool
	appended       atomic.Int64
}

var errInjected = errors.New("injected: storage failed")

func (l *faultyLog) Append(ctx context.Context, leaf []byte) (uint64, error) {
	if l.failing.Load() {
		if l.saved.Load() {
			if _, err := l.Log.Append(ctx, leaf); err != nil {
				return 0, err
			}
		}
		return 0, errInjected
	}
	l.appended.Add(1)
	return l.Log.Append(ctx, leaf)
}

// Acceptance 4: when the log cannot append, POST /v1/attest answers 503 with Retry-After and no
// result and no token — whether the record was lost or saved without acknowledgement — and the
// service recovers when the log does.
func TestLogFailure(t *testing.T) {
	var fl *faultyLog
	f := newFixture(t, options{wrapLog: func(l service.Log) service.Log { fl = &faultyLog{Log: l}; return fl }})
	const agent = "vm-tdx"
	for _, saved := range []bool{false, true} {
		fl.failing.Store(true)
		fl.saved.Store(saved)
		ev := f.evidence(attest.PlatformTDX, agent, f.challenge(agent), servicetest.FaultNone)
		code, hdr, body := f.do(http.MethodPost, "/v1/attest", agent, ev)
		if code != http.StatusServiceUnavailable || hdr.Get("Retry-After") == "" {
			t.Fatalf("saved=%v: %d %s", saved, code, body)
		}
		var e apiError
		if err := json.Unmarshal(body, &e); err != nil || e.Code != "unavailable" || strings.Contains(string(body), "eyJ") || strings.Contains(string(body), "affirming") {
			t.Fatalf("saved=%v: the 503 body carries more than an error: %s", saved, body)
		}
	}
	fl.failing.Store(false)
	a := f.attest(agent, f.evidence(attest.PlatformTDX, agent, f.challenge(agent), servicetest.FaultNone))
	if a.Status != ear.StatusAffirming || a.Token == "" {
		t.Fatalf("after recovery: %+v", a)
	}
	// The record saved without acknowledgement left a gap in the index; the index catches up
	// from the log (it is derived) without waiting for its periodic run.
	p := waitProof(t, f, a.LogIndex)
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for deadline := time.Now().Add(10 * time.Second); ; <-tick.C {
		var recs recordsResponse
		f.getJSON("/v1/records", "audrey", &recs)
		if n := len(recs.Records); uint64(n) >= p.TreeSize {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the index holds %d records, the log %d", len(recs.Records), p.TreeSize)
		}
	}
}

// blockingLog holds appends while armed, until released, and says when one is waiting.
type blockingLog struct {
	service.Log
	armed   atomic.Bool
	waiting chan struct{} // buffered
	release chan struct{} // closed to release
}

func (l *blockingLog) Append(ctx context.Context, leaf []byte) (uint64, error) {
	if l.armed.Load() {
		select {
		case l.waiting <- struct{}{}:
		default:
		}
		<-l.release
	}
	return l.Log.Append(ctx, leaf)
}

// Overload: past the bounded queue, POST /v1/attest answers 503 with Retry-After at once —
// never a default verdict — and the nonce of the refused request is not spent.
func TestOverload(t *testing.T) {
	bl := &blockingLog{waiting: make(chan struct{}, 1), release: make(chan struct{})}
	f := newFixture(t, options{
		wrapLog:  func(l service.Log) service.Log { bl.Log = l; return bl },
		settings: func(d *service.Deps) { d.Settings.Workers, d.Settings.Queue = 1, 1 },
	})
	const agent = "vm-snp"
	snp := attest.PlatformSNP
	type answer struct {
		code int
		body []byte
	}
	submit := func(ev []byte) chan answer {
		ch := make(chan answer, 1)
		go func() {
			code, _, body := f.do(http.MethodPost, "/v1/attest", agent, ev)
			ch <- answer{code, body}
		}()
		return ch
	}
	first, second := f.evidence(snp, agent, f.challenge(agent), servicetest.FaultNone), f.evidence(snp, agent, f.challenge(agent), servicetest.FaultNone)
	nonce := f.challenge(agent)
	third := f.evidence(snp, agent, nonce, servicetest.FaultNone)

	bl.armed.Store(true)
	firstDone := submit(first)
	<-bl.waiting // the only worker is busy appending
	secondDone := submit(second)
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	for f.queueDepth(t) < 2 { // the second request waits in the queue's one place
		<-tick.C
	}
	code, hdr, body := f.do(http.MethodPost, "/v1/attest", agent, third)
	if code != http.StatusServiceUnavailable || hdr.Get("Retry-After") == "" || !strings.Contains(string(body), "overloaded") {
		t.Fatalf("request past the queue: %d %s", code, body)
	}
	bl.armed.Store(false)
	close(bl.release)
	for _, ch := range []chan answer{firstDone, secondDone} {
		if a := <-ch; a.code != http.StatusOK {
			t.Fatalf("queued request: %d %s", a.code, a.body)
		}
	}
	// The refused request spent nothing: the same evidence is accepted now.
	if a := f.attest(agent, third); a.Status != ear.StatusAffirming {
		t.Fatalf("retry after overload: %s", a.Result)
	}
}

// queueDepth reads the queue gauge from /metrics.
func (f *fixture) queueDepth(t *testing.T) int {
	t.Helper()
	mfs, err := f.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() == "proofline_attest_queue_depth" {
			return int(mf.GetMetric()[0].GetGauge().GetValue())
		}
	}
	t.Fatal("no queue depth gauge")
	return 0
}
