package service

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/proofline/proofline/attest"
	"github.com/proofline/proofline/attest/attesttest/fakeintel"
	"github.com/proofline/proofline/evidence"
	"github.com/proofline/proofline/verifier/collateral"
	"github.com/proofline/proofline/verifier/ear"
)

// A TCB recovery reaching the service: with a pinned clock, the fake PCS serves a TCB info with
// a higher tcbEvaluationDataNumber and a new top level; the background refresh records it with
// the previous number and the new levels' date, counts it in
// proofline_collateral_tcb_recoveries_total and reports it once to SubscribeTCBRecovery.
func TestLiveCollateralTCBRecovery(t *testing.T) {
	e := newLiveEnv(t, 30*time.Hour, nil)
	var mu sync.Mutex
	var got []collateral.TCBRecovery
	if !e.svc.SubscribeTCBRecovery(func(_ context.Context, r collateral.TCBRecovery) { mu.Lock(); got = append(got, r); mu.Unlock() }) {
		t.Fatal("no TCB recovery hook with live collateral")
	}
	e.svc.Start()
	if a := e.attest(attest.PlatformTDX); a.Result.Status != ear.StatusAffirming {
		t.Fatalf("first verdict %s: %+v", a.Result.Status, a.Result.Failures)
	}
	recoveryDate := liveStart.Add(-24 * time.Hour)
	o := fakeintel.DefaultCollateralOptions(liveStart.Add(time.Hour))
	o.TCBInfo.EvaluationDataNumber = 19
	top := o.TCBInfo.TCBLevels[0]
	top.TDXComponents[0]++
	top.Date = recoveryDate
	o.TCBInfo.TCBLevels[0].Status = "OutOfDate"
	o.TCBInfo.TCBLevels = append([]fakeintel.TCBLevel{top}, o.TCBInfo.TCBLevels...)
	fresh, err := e.plat.Intel.Collateral(o)
	if err != nil {
		t.Fatal(err)
	}
	if err := e.srv.Replace(fresh[0]); err != nil {
		t.Fatal(err)
	}
	var recs []*evidence.Record
	e.runUntil(func() bool { recs = e.updates(); return len(recs) > 0 })
	if len(recs) != 1 {
		t.Fatalf("%d collateral_update records", len(recs))
	}
	ch := recs[0].CollateralUpdate[0]
	if ch.TCBEvaluationDataNumber == nil || *ch.TCBEvaluationDataNumber != 19 || ch.PreviousTCBEvaluationDataNumber == nil ||
		*ch.PreviousTCBEvaluationDataNumber != 18 || ch.TCBDate == nil || !ch.TCBDate.Equal(recoveryDate) {
		t.Fatalf("record change %+v", ch)
	}
	if v, ok := metricValue(t, e.reg, "proofline_collateral_tcb_recoveries_total", map[string]string{"kind": "tcb_info"}); !ok || v != 1 {
		t.Fatalf("proofline_collateral_tcb_recoveries_total %v %v", v, ok)
	}
	mu.Lock()
	if len(got) != 1 || got[0].Previous != 18 || got[0].New != 19 || got[0].URL != e.tcb || !got[0].TCBDate.Equal(recoveryDate) {
		t.Fatalf("the hook saw %+v, want the one recovery", got)
	}
	mu.Unlock()
}

// A rollback reaching the service: the fake PCS starts serving a TCB info with a lower
// tcbEvaluationDataNumber (a lagging mirror, or a replayed answer). The background refresh refuses
// it, records nothing, counts it in proofline_collateral_fetch_errors_total{status="older"}, and
// verdicts keep using the newer document.
func TestLiveCollateralRollbackRefused(t *testing.T) {
	e := newLiveEnv(t, 30*time.Hour, nil)
	e.svc.Start()
	if a := e.attest(attest.PlatformTDX); a.Result.Status != ear.StatusAffirming {
		t.Fatalf("first verdict %s: %+v", a.Result.Status, a.Result.Failures)
	}
	o := fakeintel.DefaultCollateralOptions(liveStart.Add(time.Hour))
	o.TCBInfo.EvaluationDataNumber = 17 // the served one is 18
	old, err := e.plat.Intel.Collateral(o)
	if err != nil {
		t.Fatal(err)
	}
	if err := e.srv.Replace(old[0]); err != nil {
		t.Fatal(err)
	}
	older := func() float64 {
		v, _ := metricValue(t, e.reg, "proofline_collateral_fetch_errors_total", map[string]string{"vendor": "intel", "status": "older"})
		return v
	}
	e.runUntil(func() bool { return older() > 0 })
	if recs := e.updates(); len(recs) != 0 {
		t.Fatalf("%d collateral_update records for a refused document", len(recs))
	}
	a := e.attest(attest.PlatformTDX)
	if cl, ok := a.Result.Claims.(*ear.TDXClaims); a.Result.Status != ear.StatusAffirming || !ok || cl.TCB.EvaluationDataNumber != 18 {
		t.Fatalf("verdict after the refused rollback: %s %+v", a.Result.Status, a.Result.Claims)
	}
}
