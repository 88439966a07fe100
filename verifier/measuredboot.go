package verifier

import (
	"encoding/hex"
	"errors"
	"fmt"

	"github.com/proofline/proofline/attest"
	"github.com/proofline/proofline/verifier/ear"
	"github.com/proofline/proofline/verifier/eventlog"
	"github.com/proofline/proofline/verifier/policy"
	"github.com/proofline/proofline/verifier/tpm"
)

// measuredBoot appraises what the evidence carries beyond the hardware report: the vTPM quote
// (VERIFIER-CHECKS "vTPM quote") and the event logs (TDX 9, vTPM 5). unbound is empty when the
// hardware report verified and its REPORT_DATA is the binding of a nonce and this runtime_data —
// only then can runtime_data tie a vTPM attestation key to the hardware — and otherwise says why
// not. rtmrs are the TD quote's RTMRs
// when the evidence is TDX and the quote parsed.
//
// Nothing here is taken as checked when it was not: a quote or log the policy does not appraise
// adds tpm_not_evaluated or event_log_not_evaluated, and one the policy requires but the evidence
// lacks is a failure.
func measuredBoot(ev *attest.Evidence, opts Options, unbound string, rtmrs *[4][]byte, res *ear.Result) (*ear.TPMClaims, []ear.EventLogClaims) {
	pol := opts.Policy
	var tpmClaims *ear.TPMClaims
	var pcrs map[int][]byte // set only when the quote verified and its key is bound
	switch {
	case ev.TPM == nil && pol.TPM != nil:
		res.Fail(ear.CodeTPMMissing, "tpm.3", fmt.Sprintf("policy %q requires a vTPM quote over %s PCRs %v and the evidence carries none", pol.ID, pol.TPM.PCRBank, pol.TPM.PCRs))
	case ev.TPM != nil && pol.TPM == nil:
		res.Warn(ear.CodeTPMNotEvaluated, "tpm", fmt.Sprintf("the evidence carries a vTPM quote and policy %q has no tpm section: nothing in the quote was checked", pol.ID))
	case ev.TPM != nil:
		tpmClaims, pcrs = verifyTPM(ev, opts, unbound, res)
	}

	var logs []ear.EventLogClaims
	var tcgLog, ccelLog []byte
	if ev.EventLogs != nil {
		tcgLog, ccelLog = ev.EventLogs.TCG, ev.EventLogs.CCEL
	}

	// The CCEL replays against the TD quote's RTMRs (TDX 9).
	switch {
	case ccelLog == nil:
		if pol.RequiresLog("ccel") {
			res.Fail(ear.CodeEventLogMissing, "tdx.9", fmt.Sprintf("policy %q appraises the CCEL and the evidence carries none (event_logs.ccel)", pol.ID))
		}
	case ev.Platform != attest.PlatformTDX:
		res.Warn(ear.CodeEventLogNotEvaluated, "tdx.9", "the evidence carries a CCEL, which only replays against Intel TDX RTMRs: nothing in it was checked")
	case rtmrs == nil:
		// The quote did not parse: the result is already contraindicated.
	default:
		if l, ok := replay(pol, res, "ccel", "tdx.9", func() (*eventlog.Log, error) { return eventlog.ReplayCCEL(ccelLog, *rtmrs, nil) }); ok {
			logs = append(logs, l)
		}
	}

	// The TCG log replays against the PCRs of a verified, bound vTPM quote (vTPM 5).
	switch {
	case tcgLog == nil:
		if pol.RequiresLog("tcg") {
			res.Fail(ear.CodeEventLogMissing, "tpm.5", fmt.Sprintf("policy %q appraises the TCG event log and the evidence carries none (event_logs.tcg)", pol.ID))
		}
	case pol.TPM == nil:
		res.Warn(ear.CodeEventLogNotEvaluated, "tpm.5", fmt.Sprintf("the evidence carries a TCG event log and policy %q has no tpm section to quote the PCRs it replays to: nothing in it was checked", pol.ID))
	case pcrs == nil:
		// No verified and bound quote: its failure is already recorded.
	default:
		if l, ok := replay(pol, res, "tcg", "tpm.5", func() (*eventlog.Log, error) { return eventlog.ReplayTCG(tcgLog, pol.TPM.PCRBank, pcrs, nil) }); ok {
			logs = append(logs, l)
		}
	}
	return tpmClaims, logs
}

// replay runs one replay and records its failure; on success it applies the policy's
// measured_boot rules to the replayed events.
func replay(pol *policy.Policy, res *ear.Result, kind, check string, run func() (*eventlog.Log, error)) (ear.EventLogClaims, bool) {
	l, err := run()
	switch {
	case errors.Is(err, eventlog.ErrMalformed):
		res.Fail(ear.CodeEventLogMalformed, check, fmt.Sprintf("the %s event log does not parse: %v", kind, err))
		return ear.EventLogClaims{}, false
	case err != nil:
		res.Fail(ear.CodeEventLogReplay, check, fmt.Sprintf("the %s event log does not replay to the quoted registers (an event was altered, added or removed): %v", kind, err))
		return ear.EventLogClaims{}, false
	}
	events := make([]policy.MeasuredEvent, len(l.Events))
	for i, e := range l.Events {
		events[i] = policy.MeasuredEvent{Register: e.Register, Digest: e.Digest}
	}
	pol.AppraiseMeasuredBoot(kind, events, l.KernelCmdlines, res)
	return ear.EventLogClaims{Kind: kind, Bank: l.Bank, Events: len(l.Events), KernelCmdlines: l.KernelCmdlines}, true
}

// verifyTPM checks the vTPM quote (vTPM 2–4) and binds its attestation key to the hardware
// report (vTPM 1). It returns the quoted PCRs only when both hold.
func verifyTPM(ev *attest.Evidence, opts Options, unbound string, res *ear.Result) (*ear.TPMClaims, map[int][]byte) {
	pol := opts.Policy.TPM
	nonce := opts.Nonce
	if nonce == nil && opts.ReportData == nil {
		nonce = ev.Nonce
	}
	var extra []byte
	if len(nonce) == attest.NonceSize {
		x := attest.TPMExtraData(nonce, ev.RuntimeData)
		extra = x[:]
	}
	q := tpm.Verify(ev.TPM, tpm.Options{ExtraData: extra, Bank: pol.PCRBank, PCRs: pol.PCRs}, res)
	if q == nil {
		return nil, nil
	}
	c := q.Claims()
	akHex := hex.EncodeToString(q.AKDigest[:])
	if unbound != "" {
		res.Fail(ear.CodeTPMAKNotBound, "tpm.1", "the attestation key cannot be tied to the hardware report: "+unbound)
		return c, nil
	}
	rd, err := attest.ParseRuntimeData(ev.RuntimeData)
	switch {
	case err != nil:
		res.Fail(ear.CodeTPMAKNotBound, "tpm.1", fmt.Sprintf("the attestation key is not bound to the hardware report: %v", err))
	case rd.TPMAKDigest == "":
		res.Fail(ear.CodeTPMAKNotBound, "tpm.1", "the attestation key is not bound to the hardware report: runtime_data names no key (tpm_ak_sha256)")
	case rd.TPMAKDigest != akHex:
		res.Fail(ear.CodeTPMAKNotBound, "tpm.1", fmt.Sprintf("the attestation key is not bound to the hardware report: runtime_data names key %s, the quote was signed by key %s", rd.TPMAKDigest, akHex))
	default:
		c.AKBound = true
	}
	if !c.AKBound {
		return c, nil
	}
	// REPORT_DATA is written by the guest OS: it vouches for the key only as far as that OS is
	// known. A compromised OS could name a software key that claims to be a TPM's and sign any
	// PCR values with it, so unless the hardware measurement pins the OS, the quote cannot raise
	// the result above warning.
	if !opts.Policy.GuestOSPinned(string(ev.Platform)) {
		hint := "pin tdx.rtmr1 and tdx.rtmr2, or close rtmr1 and rtmr2 in measured_boot.ccel"
		if ev.Platform == attest.PlatformSNP {
			hint = "pin sev_snp.measurement and set sev_snp.measurement_covers_kernel when the launch measurement includes the kernel (measured direct boot)"
		}
		res.Warn(ear.CodeTPMGuestAttested, "tpm.1", "the attestation key is vouched for only by the guest OS that wrote REPORT_DATA, and the policy pins no hardware measurement of that OS: a compromised OS could substitute a software key; "+hint)
	}
	opts.Policy.AppraiseTPM(q.PCRs, res)
	return c, q.PCRs
}
