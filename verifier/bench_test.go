package verifier_test

import (
	"context"
	"testing"
	"time"

	"github.com/proofline/proofline/attest"
	"github.com/proofline/proofline/internal/benchfloor"
	"github.com/proofline/proofline/verifier"
	"github.com/proofline/proofline/verifier/ear"
	"github.com/proofline/proofline/verifier/policy"
	"github.com/proofline/proofline/verifier/service/servicetest"
)

// The benchmarks of the verification path against its cryptographic floor (hack/bench/README.md,
// "Verification and end to end against the cryptographic floor"; hack/bench/run.sh runs them
// with the end-to-end BenchmarkAttestHTTP of verifier/api and prints medians and ratios):
//
//	go test -run '^$' -bench 'Floor|Verify' -benchtime 2s -count 5 -benchmem ./verifier/
//
// The floor of one attestation is the work the product cannot avoid (internal/benchfloor): the
// evidence's signature checks plus one record signature and one result-token signature.
// Everything else — chains, CRLs, TCB info, QE identity — is verified per distinct artefact and
// should be cached (DESIGN.md, performance model).

func BenchmarkFloor(b *testing.B) {
	for _, p := range []struct {
		name     string
		platform attest.Platform
	}{{"tdx", attest.PlatformTDX}, {"snp", attest.PlatformSNP}} {
		b.Run(p.name, func(b *testing.B) {
			op := benchfloor.Op(p.platform)
			for b.Loop() {
				if !op() {
					b.Fatal("a signature failed")
				}
			}
		})
	}
}

// BenchmarkVerify measures verifier.Verify on affirming fake-PKI evidence with its collateral in
// memory (no network, no log): the verification part of one attestation, without the record and
// the token. The caches are warm (the check before the timer fills them): what remains is the
// evidence's own signature checks, parsing the evidence, and per-call checks of validity windows,
// revocation and the appraisal.
func BenchmarkVerify(b *testing.B) {
	now := time.Now().UTC().Truncate(time.Second)
	plat, err := servicetest.New(now)
	if err != nil {
		b.Fatal(err)
	}
	pol, err := policy.Parse(plat.PolicyYAML)
	if err != nil {
		b.Fatal(err)
	}
	for _, platform := range []attest.Platform{attest.PlatformTDX, attest.PlatformSNP} {
		b.Run(string(platform), func(b *testing.B) {
			nonce := make([]byte, attest.NonceSize)
			raw, err := plat.Evidence(platform, nonce, servicetest.RuntimeData("bench"), servicetest.FaultNone)
			if err != nil {
				b.Fatal(err)
			}
			ev, err := attest.DecodeEvidence(raw)
			if err != nil {
				b.Fatal(err)
			}
			opts := verifier.Options{Policy: pol, Roots: plat.Roots, Collateral: plat.Collateral, Now: now.Add(time.Minute), Nonce: nonce}
			if r := verifier.Verify(context.Background(), ev, opts); r.Status != ear.StatusAffirming {
				b.Fatalf("benchmark evidence is %s: %+v", r.Status, r.Failures)
			}
			b.ReportAllocs()
			before := benchfloor.Ns(b, platform, 1, 300) // one goroutine, as Verify runs
			b.ResetTimer()
			start := time.Now()
			for b.Loop() {
				verifier.Verify(context.Background(), ev, opts)
			}
			perOp := float64(time.Since(start).Nanoseconds()) / float64(b.N)
			b.StopTimer()
			// The floor measured right before and after, so that a machine shared with other
			// work loads both sides of the ratio alike.
			floor := (before + benchfloor.Ns(b, platform, 1, 300)) / 2
			b.ReportMetric(floor/perOp, "floor-ratio")
		})
	}
}
