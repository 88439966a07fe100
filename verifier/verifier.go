// Package verifier appraises attestation evidence: Verify(ctx, evidence, options) → Result.
//
// It runs the authenticity checks of the evidence's platform (verifier/tdx, verifier/snp), the
// appraisal of the policy (verifier/policy) and the nonce binding (attest), and returns an EAR
// result (verifier/ear) that lists every failed check it could evaluate. It never returns an
// error for anything about the evidence: a malformed report or missing collateral is a verdict.
// README.md documents the security model and the failure codes.
package verifier

import (
	"bytes"
	"context"
	"fmt"
	"time"

	"github.com/proofline/proofline/attest"
	"github.com/proofline/proofline/internal/buildinfo"
	"github.com/proofline/proofline/verifier/collateral"
	"github.com/proofline/proofline/verifier/ear"
	"github.com/proofline/proofline/verifier/policy"
	"github.com/proofline/proofline/verifier/roots"
	"github.com/proofline/proofline/verifier/snp"
	"github.com/proofline/proofline/verifier/tdx"
)

// Options are the inputs of one verification besides the evidence.
type Options struct {
	// Policy is the appraisal policy. Required: use policy.Default() for the defaults.
	Policy *policy.Policy
	// Roots are the vendor trust anchors. Required: use roots.Builtin() in production.
	Roots *roots.Set
	// Collateral answers vendor collateral requests by URL; nil means none is available.
	Collateral collateral.Source
	// Now is the verification time of every check. Required.
	Now time.Time
	// Nonce, when set, overrides the envelope's nonce.
	Nonce []byte
	// ReportData, when set, is compared with REPORT_DATA instead of the nonce binding.
	ReportData []byte
}

// Verify appraises evidence. It panics only on a programming error (missing Policy, Roots or Now).
func Verify(ctx context.Context, ev *attest.Evidence, opts Options) *ear.Result {
	if opts.Policy == nil || opts.Roots == nil || opts.Now.IsZero() {
		panic("verifier.Verify: Options.Policy, Options.Roots and Options.Now are required")
	}
	res := &ear.Result{
		Platform:   string(ev.Platform),
		VerifiedAt: opts.Now.UTC(),
		TestRoots:  opts.Roots.Test,
		Policy:     opts.Policy.Ref(),
		Verifier:   ear.VerifierID{Name: "proofline", Version: buildinfo.Version()},
	}
	var reportData []byte
	var rtmrs *[4][]byte
	switch ev.Platform {
	case attest.PlatformTDX:
		q, claims := tdx.Verify(ctx, ev.Report, tdx.Options{
			Now:                    opts.Now,
			Roots:                  opts.Roots.Intel,
			Collateral:             opts.Collateral,
			SkipCollateralUnsafe:   opts.Policy.TDX != nil && opts.Policy.TDX.SkipCollateralUnsafe,
			StaleGraceUnsafe:       opts.Policy.TDX.StaleGrace(),
			TCBRecoveryGraceUnsafe: opts.Policy.TDX.TCBRecoveryGrace(),
		}, res)
		if q != nil {
			res.Claims = claims
			opts.Policy.AppraiseTDX(q, claims, res)
			reportData = q.Body.ReportData
			rtmrs = &[4][]byte{claims.RTMRs[0], claims.RTMRs[1], claims.RTMRs[2], claims.RTMRs[3]}
		}
	case attest.PlatformSNP:
		r, claims := snp.Verify(ctx, ev.Report, ev.Certificates, snp.Options{
			Now:                  opts.Now,
			Roots:                opts.Roots.AMD,
			Collateral:           opts.Collateral,
			SkipCollateralUnsafe: opts.Policy.SNP != nil && opts.Policy.SNP.SkipCollateralUnsafe,
			StaleGraceUnsafe:     opts.Policy.SNP.StaleGrace(),
		}, res)
		if r != nil {
			res.Claims = claims
			opts.Policy.AppraiseSNP(r, claims, res)
			reportData = r.ReportData
		}
	default:
		res.Fail(ear.CodeEvidenceMalformed, "envelope", fmt.Sprintf("platform %q is not supported", ev.Platform))
	}
	var bound bool
	if reportData != nil {
		bound = checkFreshness(ev, opts, reportData, res)
	}
	var unbound string // why REPORT_DATA cannot vouch for runtime_data
	switch {
	case reportData == nil || hardwareFailed(res):
		unbound = "the hardware report was rejected, so nothing it carries vouches for the attestation key"
	case !bound:
		unbound = "REPORT_DATA was not verified as the binding of a nonce and this runtime_data (give the verifier nonce; --report-data cannot bind a vTPM quote)"
	}
	tpmClaims, logs := measuredBoot(ev, opts, unbound, rtmrs, res)
	switch c := res.Claims.(type) {
	case *ear.TDXClaims:
		c.TPM, c.EventLogs = tpmClaims, logs
	case *ear.SNPClaims:
		c.TPM, c.EventLogs = tpmClaims, logs
	}
	res.TrustVector = trustVector(res)
	res.Finalize()
	return res
}

// checkFreshness compares REPORT_DATA with --report-data, or with the binding of the nonce and
// runtime data (TDX check 8, SEV-SNP check 9). A mismatch is a rejection, never a warning. It
// reports whether REPORT_DATA was verified to bind a nonce and this runtime_data, which is what
// lets runtime_data vouch for a vTPM attestation key.
//
// Only a nonce the caller issued (Options.Nonce) proves freshness. A nonce carried in the evidence
// is checked too — a mismatch is still a rejection — but it was chosen by whoever produced the
// evidence, so on its own it leaves freshness not evaluated.
func checkFreshness(ev *attest.Evidence, opts Options, got []byte, res *ear.Result) (bound bool) {
	check := "tdx.8"
	if ev.Platform == attest.PlatformSNP {
		check = "snp.9"
	}
	bindingFails := func(nonce []byte, whose string) bool {
		if len(nonce) != attest.NonceSize {
			res.Fail(ear.CodeNonceMismatch, check, fmt.Sprintf("the %s nonce is %d bytes, want %d", whose, len(nonce), attest.NonceSize))
			return true
		}
		want := attest.ReportData(nonce, ev.RuntimeData)
		if !bytes.Equal(got, want[:]) {
			res.Fail(ear.CodeNonceMismatch, check, fmt.Sprintf("REPORT_DATA is not SHA-512(\"proofline/v1\" ‖ nonce ‖ SHA-256(runtime_data)) for the %s nonce: the evidence is not bound to it and this runtime data (replayed, or produced for another challenge)", whose))
			return true
		}
		return false
	}
	switch {
	case opts.ReportData != nil:
		if !bytes.Equal(got, opts.ReportData) {
			res.Fail(ear.CodeReportDataMismatch, check, fmt.Sprintf("REPORT_DATA %x does not equal the expected %x", got, opts.ReportData))
		}
	case opts.Nonce != nil:
		return !bindingFails(opts.Nonce, "verifier")
	case ev.Nonce != nil:
		if !bindingFails(ev.Nonce, "evidence's") {
			res.Warn(ear.CodeFreshnessNotEvaluated, check, "REPORT_DATA binds the nonce carried in the evidence, but no verifier nonce was given: the evidence may be a replay; give the nonce you issued (--nonce)")
			return true
		}
	default:
		res.Warn(ear.CodeFreshnessNotEvaluated, check, "no nonce or expected REPORT_DATA was given: the evidence may be a replay")
	}
	return false
}

// hardwareFailed reports whether the hardware report's authenticity was not established: a
// failed signature or chain, or collateral (a certificate, CRL, TCB info) that could not be
// obtained or trusted. Then nothing the report carries, REPORT_DATA included, vouches for
// anything. Only appraisal findings (configuration, executables, runtime) leave it standing; the
// list is an allow-list so that a new authenticity code can never be mistaken for one.
func hardwareFailed(res *ear.Result) bool {
	for _, f := range res.Failures {
		switch cat, ok := codeCategory[f.Code]; {
		case !ok, cat == catHardware, cat == catSourcedData, cat == catInstance:
			return true
		}
	}
	return false
}

// MalformedEvidence is the verdict for an envelope that is JSON but breaks the schema
// (attest.ErrMalformed): contraindicated, with the evidence_malformed code.
func MalformedEvidence(err error, opts Options) *ear.Result {
	res := &ear.Result{
		VerifiedAt: opts.Now.UTC(),
		Verifier:   ear.VerifierID{Name: "proofline", Version: buildinfo.Version()},
		TrustVector: ear.TrustVector{
			Hardware: ear.UnexpectedEvidence, InstanceIdentity: ear.UnexpectedEvidence,
		},
	}
	if opts.Roots != nil {
		res.TestRoots = opts.Roots.Test
	}
	if opts.Policy != nil {
		res.Policy = opts.Policy.Ref()
	}
	res.Fail(ear.CodeEvidenceMalformed, "envelope", err.Error())
	res.Finalize()
	return res
}
