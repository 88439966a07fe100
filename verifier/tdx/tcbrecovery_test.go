package tdx_test

import (
	"context"
	"crypto/rand"
	"crypto/x509"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/google/go-tdx-guest/pcs"

	"github.com/proofline/proofline/attest"
	"github.com/proofline/proofline/attest/attesttest/fakeintel"
	"github.com/proofline/proofline/verifier"
	"github.com/proofline/proofline/verifier/collateral"
	"github.com/proofline/proofline/verifier/ear"
	"github.com/proofline/proofline/verifier/policy"
	"github.com/proofline/proofline/verifier/roots"
	"github.com/proofline/proofline/verifier/tdx"
)

// now is the pinned verification time of these tests; every fixture is made relative to it.
var now = time.Date(2026, 11, 20, 12, 0, 0, 0, time.UTC)

const day = 24 * time.Hour

// recoveryCase is a valid TDX attestation under collateral that went through a TCB recovery
// 10 days before now: a new UpToDate level (TEE_TCB_SVN[0] 8) dated then ranks above the level
// the quote matches (TEE_TCB_SVN[0] 7, dated 100 days before now), which the recovery made
// OutOfDate; likewise the QE identity has a new level (ISVSVN 5) above the QE's (4).
type recoveryCase struct {
	pki    *fakeintel.PKI
	quote  fakeintel.QuoteOptions
	coll   fakeintel.CollateralOptions
	policy string // extra lines of the tdx section
}

func newRecoveryCase(t *testing.T) *recoveryCase {
	t.Helper()
	pki, err := fakeintel.New(now)
	if err != nil {
		t.Fatal(err)
	}
	c := &recoveryCase{pki: pki, quote: fakeintel.DefaultQuoteOptions(), coll: fakeintel.DefaultCollateralOptions(now)}
	ti := &c.coll.TCBInfo
	ti.EvaluationDataNumber = 19
	top := ti.TCBLevels[0]
	top.TDXComponents[0]++
	top.Date = now.Add(-10 * day)
	ti.TCBLevels[0].Status = pcs.TcbComponentStatusOutOfDate
	ti.TCBLevels[0].AdvisoryIDs = []string{"INTEL-SA-09999"}
	ti.TCBLevels[0].Date = now.Add(-100 * day)
	ti.TCBLevels = append([]fakeintel.TCBLevel{top}, ti.TCBLevels...)
	return c
}

// recoverQE makes the QE identity go through the same recovery.
func (c *recoveryCase) recoverQE() {
	qi := &c.coll.QEIdentity
	qi.EvaluationDataNumber = 19
	qi.TCBLevels[0].Status = pcs.TcbComponentStatusOutOfDate
	qi.TCBLevels[0].Date = now.Add(-100 * day)
	qi.TCBLevels = append([]fakeintel.ISVSVNLevel{{ISVSVN: fakeintel.DefaultQEIsvSvn + 1, Date: now.Add(-10 * day), Status: pcs.TcbComponentStatusUpToDate}}, qi.TCBLevels...)
}

func (c *recoveryCase) run(t *testing.T) *ear.Result {
	t.Helper()
	nonce := make([]byte, attest.NonceSize)
	rand.Read(nonce)
	runtime := []byte(`{"pub":"k"}`)
	c.quote.ReportData = attest.ReportData(nonce, runtime)
	raw, err := c.pki.Quote(c.quote)
	if err != nil {
		t.Fatal(err)
	}
	rs, err := c.pki.Collateral(c.coll)
	if err != nil {
		t.Fatal(err)
	}
	set := collateral.Set{}
	if err := set.Add(rs...); err != nil {
		t.Fatal(err)
	}
	yaml := fmt.Sprintf("id: recovery\ntdx:\n  mrtd: [%x]\n%s", c.quote.MrTd, c.policy)
	pol, err := policy.Parse([]byte(yaml))
	if err != nil {
		t.Fatalf("policy: %v\n%s", err, yaml)
	}
	ev := &attest.Evidence{Version: 1, Platform: attest.PlatformTDX, Report: raw, Nonce: nonce, RuntimeData: runtime}
	return verifier.Verify(context.Background(), ev, verifier.Options{
		Policy: pol, Roots: &roots.Set{Intel: []*x509.Certificate{c.pki.Root}, Test: true}, Collateral: set, Now: now, Nonce: nonce,
	})
}

func describe(r *ear.Result) string {
	var b strings.Builder
	fmt.Fprintf(&b, "status %s", r.Status)
	for _, f := range r.Failures {
		fmt.Fprintf(&b, "\n  failure %s (%s): %s", f.Code, f.Check, f.Message)
	}
	for _, f := range r.Warnings {
		fmt.Fprintf(&b, "\n  warning %s (%s): %s", f.Code, f.Check, f.Message)
	}
	return b.String()
}

func warning(r *ear.Result, code ear.Code, check string) *ear.Finding {
	for i := range r.Warnings {
		if r.Warnings[i].Code == code && r.Warnings[i].Check == check {
			return &r.Warnings[i]
		}
	}
	return nil
}

// The valid case: without the option the recovered platform is OutOfDate and refused; with a
// grace of 30 days it is accepted as warning with tcb_recovery_grace saying which level, since
// when and until when, and unsafe_option naming the option; never affirming.
func TestTCBRecoveryGrace(t *testing.T) {
	c := newRecoveryCase(t)
	if r := c.run(t); r.Status != ear.StatusContraindicated || !r.HasFailure(ear.CodeTDXTCBStatus) || r.HasWarning(ear.CodeTCBRecoveryGrace) {
		t.Fatalf("without the option: want tdx_tcb_status, got %s", describe(r))
	}
	c.policy = "  tcb_recovery_grace_unsafe: 720h\n"
	r := c.run(t)
	if r.Status != ear.StatusWarning || len(r.Failures) != 0 {
		t.Fatalf("within the grace: want warning, got %s", describe(r))
	}
	w := warning(r, ear.CodeTCBRecoveryGrace, "tdx.6")
	since, until := now.Add(-10*day).Format(time.RFC3339), now.Add(20*day).Format(time.RFC3339)
	if w == nil || !strings.Contains(w.Message, "the platform TCB level dated "+now.Add(-100*day).Format(time.RFC3339)+" (OutOfDate)") ||
		!strings.Contains(w.Message, "since "+since+", until "+until) || !strings.Contains(w.Message, "tcbEvaluationDataNumber 19") ||
		!strings.Contains(w.Message, "accepted as UpToDate") {
		t.Fatalf("the warning does not say which level, since and until when: %s", describe(r))
	}
	if u := warning(r, ear.CodeUnsafeOption, "tdx.6"); u == nil || !strings.Contains(u.Message, "tdx.tcb_recovery_grace_unsafe") {
		t.Fatalf("no unsafe_option naming the option: %s", describe(r))
	}
	if cl := r.Claims.(*ear.TDXClaims); cl.TCB.Status != tdx.StatusOutOfDate {
		t.Fatalf("the claims must keep the real status, got %s", cl.TCB.Status)
	}
}

// Negative cases, each built from the valid case.
func TestTCBRecoveryGraceRefused(t *testing.T) {
	for _, tc := range []struct {
		name string
		edit func(c *recoveryCase)
		want ear.Code
	}{
		{"grace expired", func(c *recoveryCase) { c.policy = "  tcb_recovery_grace_unsafe: 239h\n" }, ear.CodeTDXTCBStatus},
		{"grace exactly run out", func(c *recoveryCase) { c.policy = "  tcb_recovery_grace_unsafe: 240h\n" }, ear.CodeTDXTCBStatus},
		{"out of date for an older reason", func(c *recoveryCase) {
			// The platform matches a level that was OutOfDate long before the recovery: levels
			// dated months ago rank above it.
			c.quote.TeeTcbSvn = fakeintel.TeeTcbSvnFor(pcs.TcbComponentStatusOutOfDate)
		}, ear.CodeTDXTCBStatus},
		{"an older level between", func(c *recoveryCase) {
			// The level above the matched one is old: the platform was behind before the recovery.
			c.coll.TCBInfo.TCBLevels[0].Date = now.Add(-200 * day)
		}, ear.CodeTDXTCBStatus},
		{"revoked", func(c *recoveryCase) {
			c.quote.TeeTcbSvn = fakeintel.TeeTcbSvnFor(pcs.TcbComponentStatusRevoked)
			for i := range c.coll.TCBInfo.TCBLevels[1:] {
				c.coll.TCBInfo.TCBLevels[i+1].Date = now.Add(-100*day - time.Duration(i)*day)
			}
		}, ear.CodeTDXTCBStatus},
		{"missing date above", func(c *recoveryCase) { c.coll.TCBInfo.TCBLevels[0].Date = time.Time{} }, ear.CodeTDXTCBStatus},
		{"recovery dated after the verification time", func(c *recoveryCase) { c.coll.TCBInfo.TCBLevels[0].Date = now.Add(day) }, ear.CodeTDXTCBStatus},
		{"prior status not accepted", func(c *recoveryCase) {
			// OutOfDateConfigurationNeeded was ConfigurationNeeded before: not accepted either.
			c.quote.TeeTcbSvn = fakeintel.TeeTcbSvnFor(pcs.TcbComponentStatusOutOfDateConfigurationNeeded)
			for i := range c.coll.TCBInfo.TCBLevels[1:] {
				c.coll.TCBInfo.TCBLevels[i+1].Date = now.Add(-5 * day)
			}
			c.coll.TCBInfo.TCBLevels[0].Date = now.Add(-2 * day)
			c.coll.TCBInfo.TCBLevels[6].Date = now.Add(-100 * day)
		}, ear.CodeTDXTCBStatus},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := newRecoveryCase(t)
			c.policy = "  tcb_recovery_grace_unsafe: 720h\n"
			tc.edit(c)
			r := c.run(t)
			if r.Status != ear.StatusContraindicated || !r.HasFailure(tc.want) || r.HasWarning(ear.CodeUnsafeOption) {
				t.Fatalf("want %s, got %s", tc.want, describe(r))
			}
		})
	}
}

// The same prior status, when the policy accepts it, is graced: the previous case's negative is
// about the policy, not the rule.
func TestTCBRecoveryGraceConfigurationNeeded(t *testing.T) {
	c := newRecoveryCase(t)
	c.policy = "  tcb_recovery_grace_unsafe: 720h\n  accepted_tcb_statuses: [UpToDate, ConfigurationNeeded]\n"
	c.quote.TeeTcbSvn = fakeintel.TeeTcbSvnFor(pcs.TcbComponentStatusOutOfDateConfigurationNeeded)
	// Every level above the matched one (index 6) is newer than 10 days.
	for i := 1; i < 6; i++ {
		c.coll.TCBInfo.TCBLevels[i].Date = now.Add(-time.Duration(10-i) * day)
	}
	c.coll.TCBInfo.TCBLevels[0].Date = now.Add(-day)
	c.coll.TCBInfo.TCBLevels[6].Date = now.Add(-100 * day)
	r := c.run(t)
	if r.Status != ear.StatusWarning || len(r.Failures) != 0 || warning(r, ear.CodeTCBRecoveryGrace, "tdx.6") == nil {
		t.Fatalf("want warning with tcb_recovery_grace, got %s", describe(r))
	}
	if w := warning(r, ear.CodeTCBRecoveryGrace, "tdx.6"); !strings.Contains(w.Message, "accepted as ConfigurationNeeded") ||
		!strings.Contains(w.Message, "since "+now.Add(-9*day).Format(time.RFC3339)) {
		t.Fatalf("want the earliest level above as the recovery date: %s", w.Message)
	}
}

// The QE: refused without the option, graced within it, refused once the grace ran out.
func TestTCBRecoveryGraceQE(t *testing.T) {
	c := newRecoveryCase(t)
	c.coll.TCBInfo = fakeintel.DefaultCollateralOptions(now).TCBInfo // the platform is UpToDate
	c.recoverQE()
	if r := c.run(t); !r.HasFailure(ear.CodeTDXQETCBStatus) {
		t.Fatalf("without the option: want tdx_qe_tcb_status, got %s", describe(r))
	}
	c.policy = "  tcb_recovery_grace_unsafe: 720h\n"
	r := c.run(t)
	if r.Status != ear.StatusWarning || len(r.Failures) != 0 {
		t.Fatalf("want warning, got %s", describe(r))
	}
	if w := warning(r, ear.CodeTCBRecoveryGrace, "tdx.5"); w == nil || !strings.Contains(w.Message, "the QE is OutOfDate") || !strings.Contains(w.Message, "QE TCB level dated") {
		t.Fatalf("no QE grace warning: %s", describe(r))
	}
	if warning(r, ear.CodeTCBRecoveryGrace, "tdx.6") != nil {
		t.Fatalf("an UpToDate platform got a grace: %s", describe(r))
	}
	c.policy = "  tcb_recovery_grace_unsafe: 216h\n"
	if r := c.run(t); !r.HasFailure(ear.CodeTDXQETCBStatus) || r.HasWarning(ear.CodeTCBRecoveryGrace) {
		t.Fatalf("grace run out: want tdx_qe_tcb_status, got %s", describe(r))
	}
}

// The option is bounded and parsed at load time.
func TestTCBRecoveryGracePolicy(t *testing.T) {
	for _, v := range []string{"-1h", "soon", "2161h"} {
		if _, err := policy.Parse([]byte("id: p\ntdx:\n  tcb_recovery_grace_unsafe: " + v + "\n")); err == nil || !strings.Contains(err.Error(), "tcb_recovery_grace_unsafe") {
			t.Errorf("%s: err = %v", v, err)
		}
	}
	p, err := policy.Parse([]byte("id: p\ntdx:\n  tcb_recovery_grace_unsafe: 720h\n"))
	if err != nil || p.TDX.TCBRecoveryGrace() != 720*time.Hour {
		t.Fatalf("%v %v", p, err)
	}
	if d := policy.Default(); d.TDX.TCBRecoveryGrace() != 0 {
		t.Fatalf("default grace %v", d.TDX.TCBRecoveryGrace())
	}
}

func TestGracedStatus(t *testing.T) {
	for status, want := range map[string]string{
		tdx.StatusOutOfDate: tdx.StatusUpToDate, tdx.StatusOutOfDateConfigurationNeeded: tdx.StatusConfigurationNeeded,
		tdx.StatusRevoked: "", tdx.StatusUpToDate: "", tdx.StatusSWHardeningNeeded: "", "Unknown(x)": "",
	} {
		if got, ok := tdx.GracedStatus(status); got != want || ok != (want != "") {
			t.Errorf("GracedStatus(%s) = %q, %v", status, got, ok)
		}
	}
}
