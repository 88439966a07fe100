package rp_test

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/proofline/proofline/attest"
	"github.com/proofline/proofline/attest/attesttest/fakeintel"
	"github.com/proofline/proofline/verifier"
	"github.com/proofline/proofline/verifier/collateral"
	"github.com/proofline/proofline/verifier/ear"
	"github.com/proofline/proofline/verifier/policy"
	"github.com/proofline/proofline/verifier/roots"
	"github.com/proofline/proofline/verifier/rp"
)

// A result that accepted stale collateral under stale_grace_unsafe is a real verifier verdict of
// warning; the token issued for it is refused by a relying party with the default options
// (affirming only), and accepted only by one that opts into warning, which then sees why.
func TestStaleGraceResultRefusedByDefault(t *testing.T) {
	pki, err := fakeintel.New(testNow)
	if err != nil {
		t.Fatal(err)
	}
	nonce := testNonce
	q := fakeintel.DefaultQuoteOptions()
	q.ReportData = attest.ReportData(nonce, nil)
	quote, err := pki.Quote(q)
	if err != nil {
		t.Fatal(err)
	}
	co := fakeintel.DefaultCollateralOptions(testNow)
	co.TCBInfo.NextUpdate = testNow.Add(-2 * time.Hour) // stale
	rs, err := pki.Collateral(co)
	if err != nil {
		t.Fatal(err)
	}
	set := collateral.Set{}
	if err := set.Add(rs...); err != nil {
		t.Fatal(err)
	}
	verify := func(grace string) *ear.Result {
		pol, err := policy.Parse(fmt.Appendf(nil, "id: fleet\ntdx:\n  mrtd: [%x]\n  stale_grace_unsafe: %s\n", q.MrTd, grace))
		if err != nil {
			t.Fatal(err)
		}
		ev := &attest.Evidence{Version: 1, Platform: attest.PlatformTDX, Report: quote, Nonce: nonce}
		return verifier.Verify(context.Background(), ev, verifier.Options{
			Policy: pol, Roots: &roots.Set{Intel: []*x509.Certificate{pki.Root}}, Collateral: set, Now: testNow, Nonce: nonce,
		})
	}
	if res := verify("0"); res.Status != ear.StatusContraindicated || !res.HasFailure(ear.CodeTDXTCBInfoExpired) {
		t.Fatalf("stale TCB info without a grace: %s %+v", res.Status, res.Failures)
	}
	res := verify("6h")
	if res.Status != ear.StatusWarning || !res.HasWarning(ear.CodeCollateralStaleAccepted) {
		t.Fatalf("stale TCB info within the grace: %s %+v %+v", res.Status, res.Failures, res.Warnings)
	}

	f := newFixture(t)
	tok, err := f.issuer.IssueJWT(context.Background(), res, testRef(), []string{testAudience}, time.Hour, testNow)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.verifier(t, testNow, rp.Options{}).VerifyJWT(tok); !errors.Is(err, rp.ErrStatus) {
		t.Fatalf("default relying party on a stale-collateral warning: %v, want %v", err, rp.ErrStatus)
	}
	c, err := f.verifier(t, testNow, rp.Options{RequireStatus: ear.StatusWarning}).VerifyJWT(tok)
	if err != nil {
		t.Fatal(err)
	}
	if c.Status != ear.StatusWarning || !slices.Contains(c.Warnings, ear.CodeCollateralStaleAccepted) || !slices.Contains(c.Warnings, ear.CodeUnsafeOption) {
		t.Fatalf("a relying party that accepts warning does not see why: %s %v", c.Status, c.Warnings)
	}
}
