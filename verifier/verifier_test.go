package verifier_test

import (
	"bytes"
	"context"
	"testing"

	"github.com/proofline/proofline/attest"
	"github.com/proofline/proofline/internal/fixture"
	"github.com/proofline/proofline/verifier"
	"github.com/proofline/proofline/verifier/ear"
	"github.com/proofline/proofline/verifier/policy"
	"github.com/proofline/proofline/verifier/roots"
)

func builtinRoots(t testing.TB) *roots.Set {
	r, err := roots.Builtin()
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// The verifier never panics and never affirms under the default policy (which pins nothing),
// whatever the report and certificates.
func FuzzVerify(f *testing.F) {
	for _, name := range fixture.Real {
		ev := fixture.Evidence(f, "real/"+name+"/evidence.json")
		var cert []byte
		if len(ev.Certificates) > 0 {
			cert = ev.Certificates[0]
		}
		f.Add(ev.Platform == attest.PlatformSNP, ev.Report, cert)
	}
	rs := builtinRoots(f)
	pol := policy.Default()
	f.Fuzz(func(t *testing.T, snp bool, report, cert []byte) {
		ev := &attest.Evidence{Version: 1, Platform: attest.PlatformTDX, Report: report}
		if snp {
			ev.Platform = attest.PlatformSNP
			if len(cert) > 0 {
				ev.Certificates = [][]byte{cert}
			}
		}
		r := verifier.Verify(context.Background(), ev, verifier.Options{Policy: pol, Roots: rs, Now: testNow})
		if r.Status == ear.StatusAffirming {
			t.Fatal("affirming under the default policy")
		}
		if r.Status == ear.StatusContraindicated && len(r.Failures) == 0 {
			t.Fatal("contraindicated without a failure")
		}
	})
}

// A verification that is missing its policy, roots or clock is a programming error, reported
// loudly rather than run with weaker settings.
func TestVerifyRequiresOptions(t *testing.T) {
	defer func() {
		if recover() == nil {
			t.Fatal("Verify without a clock did not panic")
		}
	}()
	ev := fixture.Evidence(t, "real/tdx-v5/evidence.json")
	verifier.Verify(context.Background(), ev, verifier.Options{Policy: policy.Default(), Roots: builtinRoots(t)})
}

// A policy without a section for the evidence's platform rejects it.
func TestPlatformNotInPolicy(t *testing.T) {
	pol, err := policy.Parse([]byte("id: snp-only\nsev_snp: {}\n"))
	if err != nil {
		t.Fatal(err)
	}
	ev := fixture.Evidence(t, "real/tdx-v5/evidence.json")
	r := verifier.Verify(context.Background(), ev, verifier.Options{Policy: pol, Roots: builtinRoots(t), Now: testNow})
	if !r.HasFailure(ear.CodePlatformNotInPolicy) {
		t.Fatalf("got %s", describe(r))
	}
}

// Results are deterministic for the same inputs: auditors re-perform verdicts.
func TestVerifyDeterministic(t *testing.T) {
	ev := fixture.Evidence(t, "real/snp-milan-v2/evidence.json")
	opts := verifier.Options{Policy: policy.Default(), Roots: builtinRoots(t), Now: testNow}
	a, _ := verifier.Verify(context.Background(), ev, opts).MarshalIndent()
	b, _ := verifier.Verify(context.Background(), ev, opts).MarshalIndent()
	if !bytes.Equal(a, b) {
		t.Fatalf("results differ:\n%s\n%s", a, b)
	}
}
