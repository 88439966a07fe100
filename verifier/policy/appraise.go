package policy

import (
	"bytes"
	"fmt"
	"slices"
	"strings"

	"github.com/google/go-sev-guest/abi"
	"github.com/proofline/proofline/verifier/ear"
	"github.com/proofline/proofline/verifier/snp"
	"github.com/proofline/proofline/verifier/tdx"
)

// Check references into VERIFIER-CHECKS.md.
const (
	checkTDXQEIdentity = "tdx.5"
	checkTDXTCBInfo    = "tdx.6"
	checkTDXBody       = "tdx.7"
	checkSNPPolicy     = "snp.5"
	checkSNPVMPL       = "snp.6"
	checkSNPTCB        = "snp.7"
	checkSNPValues     = "snp.8"
	checkSNPPlatform   = "snp.10"
	checkTPMPCRs       = "tpm.4"
	checkTPMEvents     = "tpm.5"
	checkCCELEvents    = "tdx.9"
)

func unsafeWarning(res *ear.Result, check, option, what string) {
	res.Warn(ear.CodeUnsafeOption, check, fmt.Sprintf("policy option %s is set: %s; the result is capped at warning", option, what))
}

// oneOf records a failure when allowed is non-empty and v is not in it.
func oneOf(res *ear.Result, code ear.Code, check, field string, v []byte, allowed []Hex) {
	if len(allowed) == 0 {
		return
	}
	for _, a := range allowed {
		if bytes.Equal(v, a) {
			return
		}
	}
	res.Fail(code, check, fmt.Sprintf("%s %x is not one of the policy's %d reference value(s)", field, v, len(allowed)))
}

// AppraiseTDX applies the TDX rules to a parsed quote and the claims the authenticity checks
// established (TCB and QE statuses, when collateral was evaluated). It records every failed rule.
func (p *Policy) AppraiseTDX(q *tdx.Quote, c *ear.TDXClaims, res *ear.Result) {
	t := p.TDX
	if t == nil {
		res.Fail(ear.CodePlatformNotInPolicy, "policy", fmt.Sprintf("policy %q has no tdx section: TDX evidence is not accepted", p.ID))
		return
	}
	b := q.Body
	// Whether the authenticity checks (verifier/tdx) passed: they must then have rated the
	// platform and the QE. After one of their failures an unrated TCB is expected, is reported
	// there and the result is already contraindicated.
	authentic := len(res.Failures) == 0

	// Check 7: attributes.
	attrs := tdx.TDAttributes(tdx.Uint64LE(b.TDAttributes))
	if attrs&tdx.AttrDebug != 0 {
		if t.AllowDebugUnsafe {
			unsafeWarning(res, checkTDXBody, "tdx.allow_debug_unsafe", "a debug TD's memory and state are readable by the host")
		} else {
			res.Fail(ear.CodeTDXDebug, checkTDXBody, "the TD has the DEBUG attribute: its memory and CPU state are visible to the host")
		}
	}
	if attrs&tdx.AttrSeptVEDisable == 0 {
		if t.AllowSeptVEUnsafe {
			unsafeWarning(res, checkTDXBody, "tdx.allow_sept_ve_unsafe", "the TD accepts #VE on EPT violations")
		} else {
			res.Fail(ear.CodeTDXSeptVEDisable, checkTDXBody, "SEPT_VE_DISABLE is clear: the host can inject #VE on EPT violations")
		}
	}
	if attrs&tdx.AttrMigratable != 0 && !t.AllowMigratable {
		res.Fail(ear.CodeTDXMigratable, checkTDXBody, "the TD is MIGRATABLE and the policy does not set allow_migratable")
	}
	if unknown := attrs &^ tdx.AttrKnown; unknown != 0 {
		res.Fail(ear.CodeTDXAttributesUnknown, checkTDXBody, fmt.Sprintf("TD_ATTRIBUTES has bits 0x%x set that have no defined meaning", uint64(unknown)))
	}
	features := attrs & (tdx.AttrLASS | tdx.AttrPKS | tdx.AttrKL | tdx.AttrPerfmon)
	if extra := features &^ t.allowAttrs; extra != 0 {
		res.Fail(ear.CodeTDXAttributesUnknown, checkTDXBody, fmt.Sprintf("TD_ATTRIBUTES feature bits 0x%x are not in the policy's allowed_attributes", uint64(extra)))
	}
	xfam := tdx.Uint64LE(b.XFAM)
	if xfam&tdx.XFAMFixed1 != tdx.XFAMFixed1 || xfam&^t.xfamMask != 0 {
		res.Fail(ear.CodeTDXXFAM, checkTDXBody, fmt.Sprintf("XFAM 0x%x enables features outside the allowed mask 0x%x (or lacks x87/SSE)", xfam, t.xfamMask))
	}

	// Check 7: reference values.
	oneOf(res, ear.CodeTDXMRTD, checkTDXBody, "MRTD", b.MRTD, t.MRTD)
	for i, allowed := range [][]Hex{t.RTMR0, t.RTMR1, t.RTMR2, t.RTMR3} {
		oneOf(res, ear.CodeTDXRTMR, checkTDXBody, fmt.Sprintf("RTMR%d", i), b.RTMRs[i], allowed)
	}
	oneOf(res, ear.CodeTDXMRConfigID, checkTDXBody, "MRCONFIGID", b.MRConfigID, t.MRConfigID)
	oneOf(res, ear.CodeTDXMROwner, checkTDXBody, "MROWNER", b.MROwner, t.MROwner)
	oneOf(res, ear.CodeTDXMROwnerConfig, checkTDXBody, "MROWNERCONFIG", b.MROwnerConfig, t.MROwnerConfig)
	oneOf(res, ear.CodeTDXMRSeam, checkTDXBody, "MRSEAM", b.MRSeam, t.MRSeam)
	if b.MRServiceTD != nil {
		if len(t.MRServiceTD) > 0 {
			oneOf(res, ear.CodeTDXMRServiceTD, checkTDXBody, "MRSERVICETD", b.MRServiceTD, t.MRServiceTD)
		} else if !allZero(b.MRServiceTD) {
			res.Fail(ear.CodeTDXMRServiceTD, checkTDXBody, fmt.Sprintf("MRSERVICETD %x is not zero: a service TD is bound and the policy allows none", b.MRServiceTD))
		}
	}
	// MRCONFIGID, MROWNER and MROWNERCONFIG are chosen by whoever launches the TD; only MRTD
	// measures the TD's initial contents.
	if len(t.MRTD) == 0 {
		res.Warn(ear.CodeNoReferenceValues, checkTDXBody, "the policy pins no MRTD: any TD firmware and initial image is accepted")
	}

	// Checks 5 and 6: TCB statuses and collateral age, as evaluated by the authenticity checks.
	if t.SkipCollateralUnsafe {
		unsafeWarning(res, checkTDXTCBInfo, "tdx.skip_collateral_unsafe", "TCB status, QE identity and revocation were not checked")
		return
	}
	staleAccepted(res, "tdx.stale_grace_unsafe")
	// An empty status (no TCB level rated) is in no accepted list.
	if tcb := c.TCB; tcb == nil {
		if authentic {
			res.Fail(ear.CodeTDXTCBStatus, checkTDXTCBInfo, "no TCB info was evaluated: a platform without a TCB status is never accepted")
		}
	} else {
		switch {
		case tcb.Status == "":
			if authentic {
				res.Fail(ear.CodeTDXTCBStatus, checkTDXTCBInfo, "no platform TCB level was rated: a platform without a TCB status is never accepted")
			}
		case !slices.Contains(t.AcceptedTCBStatuses, tcb.Status) && t.recoveryGraced(res, checkTDXTCBInfo, tcb.Status, t.AcceptedTCBStatuses):
			// Accepted within tcb_recovery_grace_unsafe; recoveryGraced added unsafe_option.
		case !slices.Contains(t.AcceptedTCBStatuses, tcb.Status):
			res.Fail(ear.CodeTDXTCBStatus, checkTDXTCBInfo, fmt.Sprintf("the platform TCB status is %s; the policy accepts %s%s%s", tcb.Status, strings.Join(t.AcceptedTCBStatuses, ", "), advisories(tcb.AdvisoryIDs), t.graceNotApplied(tcb.Status)))
		case strings.HasPrefix(tcb.Status, tdx.StatusOutOfDate):
			res.Warn(ear.CodeTCBOutOfDateAccepted, checkTDXTCBInfo, fmt.Sprintf("the platform TCB status is %s, which the policy accepts: the platform lacks published security fixes%s", tcb.Status, advisories(tcb.AdvisoryIDs)))
		}
		if tcb.EvaluationDataNumber < t.MinTCBEvaluationDataNumber {
			res.Fail(ear.CodeTDXTCBEvaluationNumber, checkTDXTCBInfo, fmt.Sprintf("the TCB info's tcbEvaluationDataNumber %d is below the policy's minimum %d", tcb.EvaluationDataNumber, t.MinTCBEvaluationDataNumber))
		}
		if t.maxAge > 0 && res.VerifiedAt.Sub(tcb.TCBInfoIssueDate) > t.maxAge {
			res.Fail(ear.CodeTDXTCBInfoExpired, checkTDXTCBInfo, fmt.Sprintf("the TCB info was issued %s, more than max_collateral_age %s before the verification time", tcb.TCBInfoIssueDate.Format("2006-01-02T15:04:05Z"), t.MaxCollateralAge))
		}
		if t.maxAge > 0 && !tcb.QEIdentityIssueDate.IsZero() && res.VerifiedAt.Sub(tcb.QEIdentityIssueDate) > t.maxAge {
			res.Fail(ear.CodeTDXQEIdentityExpired, checkTDXQEIdentity, fmt.Sprintf("the QE identity was issued %s, more than max_collateral_age %s before the verification time", tcb.QEIdentityIssueDate.Format("2006-01-02T15:04:05Z"), t.MaxCollateralAge))
		}
	}
	switch qe := c.QE; {
	case qe == nil || qe.TCBStatus == "":
		if authentic {
			res.Fail(ear.CodeTDXQETCBStatus, checkTDXQEIdentity, "no QE TCB level was rated: a QE without a TCB status is never accepted")
		}
	case !slices.Contains(t.AcceptedQETCBStatuses, qe.TCBStatus) && t.recoveryGraced(res, checkTDXQEIdentity, qe.TCBStatus, t.AcceptedQETCBStatuses):
		// Accepted within tcb_recovery_grace_unsafe; recoveryGraced added unsafe_option.
	case !slices.Contains(t.AcceptedQETCBStatuses, qe.TCBStatus):
		res.Fail(ear.CodeTDXQETCBStatus, checkTDXQEIdentity, fmt.Sprintf("the QE TCB status is %s; the policy accepts %s%s%s", qe.TCBStatus, strings.Join(t.AcceptedQETCBStatuses, ", "), advisories(qe.AdvisoryIDs), t.graceNotApplied(qe.TCBStatus)))
	case strings.HasPrefix(qe.TCBStatus, tdx.StatusOutOfDate):
		// As for the platform: accepted, but the result says the QE lacks published fixes.
		res.Warn(ear.CodeTCBOutOfDateAccepted, checkTDXQEIdentity, fmt.Sprintf("the QE TCB status is %s, which the policy accepts: the quoting enclave lacks published security fixes%s", qe.TCBStatus, advisories(qe.AdvisoryIDs)))
	}
}

// recoveryGraced reports whether status, which the policy does not accept, is accepted under
// tcb_recovery_grace_unsafe: verifier/tdx found the level (check tdx.6 platform, tdx.5 QE)
// OutOfDate only because of a TCB recovery within the grace (a tcb_recovery_grace warning), and
// the status it had before the recovery is accepted. It then adds unsafe_option.
func (t *TDX) recoveryGraced(res *ear.Result, check, status string, accepted []string) bool {
	prior, ok := tdx.GracedStatus(status)
	if t.recoveryGrace <= 0 || !ok || !slices.Contains(accepted, prior) {
		return false
	}
	for _, w := range res.Warnings {
		if w.Code == ear.CodeTCBRecoveryGrace && w.Check == check {
			unsafeWarning(res, check, "tdx.tcb_recovery_grace_unsafe", fmt.Sprintf("a %s TCB level made OutOfDate by a recent TCB recovery was accepted as %s", status, prior))
			return true
		}
	}
	return false
}

// graceNotApplied explains, in a TCB status failure, why tcb_recovery_grace_unsafe did not
// accept an OutOfDate status.
func (t *TDX) graceNotApplied(status string) string {
	if _, ok := tdx.GracedStatus(status); !ok || t.recoveryGrace <= 0 {
		return ""
	}
	return fmt.Sprintf("; tcb_recovery_grace_unsafe (%s) does not apply: the level is not OutOfDate only because of a TCB recovery dated within the grace, or its status before the recovery is not accepted either", t.recoveryGrace)
}

func advisories(ids []string) string {
	if len(ids) == 0 {
		return ""
	}
	return " (Intel advisories: " + strings.Join(ids, ", ") + ")"
}

func allZero(b []byte) bool {
	for _, x := range b {
		if x != 0 {
			return false
		}
	}
	return true
}

// PLATFORM_INFO bits (SEV-SNP Firmware ABI, Table "PLATFORM_INFO Field").
const (
	platformSMTEnabled  = 1 << 0
	platformTSMEEnabled = 1 << 1
)

// AppraiseSNP applies the SEV-SNP rules to a report. It records every failed rule.
func (p *Policy) AppraiseSNP(r *snp.Report, c *ear.SNPClaims, res *ear.Result) {
	s := p.SNP
	if s == nil {
		res.Fail(ear.CodePlatformNotInPolicy, "policy", fmt.Sprintf("policy %q has no sev_snp section: SEV-SNP evidence is not accepted", p.ID))
		return
	}
	// Check 5: guest policy. ParseReport already rejected reserved-bit violations.
	gp, _ := abi.ParseSnpPolicy(r.Policy)
	if gp.Debug {
		if s.AllowDebugUnsafe {
			unsafeWarning(res, checkSNPPolicy, "sev_snp.allow_debug_unsafe", "the guest policy lets the host debug (decrypt) the VM")
		} else {
			res.Fail(ear.CodeSNPDebug, checkSNPPolicy, "the guest policy allows DEBUG: the host can decrypt the VM's memory")
		}
	}
	if gp.MigrateMA && !s.AllowMigrateMA {
		res.Fail(ear.CodeSNPMigrateMA, checkSNPPolicy, "the guest policy allows a migration agent and the policy does not set allow_migrate_ma")
	}
	if gp.SMT && !*s.AllowSMT {
		res.Fail(ear.CodeSNPSMT, checkSNPPolicy, "the guest policy allows SMT and the policy sets allow_smt: false")
	}
	if gp.ABIMajor < s.minABI[0] || (gp.ABIMajor == s.minABI[0] && gp.ABIMinor < s.minABI[1]) {
		res.Fail(ear.CodeSNPABI, checkSNPPolicy, fmt.Sprintf("the guest policy's minimum ABI %d.%d is below the policy's min_abi %s", gp.ABIMajor, gp.ABIMinor, s.MinABI))
	}

	// Check 6.
	if r.VMPL != *s.VMPL {
		res.Fail(ear.CodeSNPVMPL, checkSNPVMPL, fmt.Sprintf("the report comes from VMPL %d; the policy expects VMPL %d", r.VMPL, *s.VMPL))
	}

	// Check 7: TCB.
	if floor, ok := s.TCBFloors[c.ProductLine]; ok {
		got := snp.DecomposeTCB(r.ReportedTCB, c.ProductLine)
		want := snp.TCB{FMC: floor.FMC, Bootloader: floor.Bootloader, TEE: floor.TEE, SNP: floor.SNP, Microcode: floor.Microcode}
		if !got.AtLeast(want) {
			res.Fail(ear.CodeSNPTCBBelowFloor, checkSNPTCB, fmt.Sprintf("REPORTED_TCB %+v is below the %s floor %+v", got, c.ProductLine, want))
		}
	}
	if s.RequireCommittedTCB && r.CommittedTCB != r.CurrentTCB {
		res.Fail(ear.CodeSNPCommittedTCB, checkSNPTCB, fmt.Sprintf("COMMITTED_TCB 0x%x differs from CURRENT_TCB 0x%x: the firmware can still be rolled back", r.CommittedTCB, r.CurrentTCB))
	}

	// Check 8: reference values.
	oneOf(res, ear.CodeSNPMeasurement, checkSNPValues, "MEASUREMENT", r.Measurement, s.Measurement)
	oneOf(res, ear.CodeSNPHostData, checkSNPValues, "HOST_DATA", r.HostData, s.HostData)
	oneOf(res, ear.CodeSNPIDKeyDigest, checkSNPValues, "ID_KEY_DIGEST", r.IDKeyDigest, s.IDKeyDigest)
	oneOf(res, ear.CodeSNPAuthorKeyDigest, checkSNPValues, "AUTHOR_KEY_DIGEST", r.AuthorKeyDigest, s.AuthorKeyDigest)
	oneOf(res, ear.CodeSNPFamilyID, checkSNPValues, "FAMILY_ID", r.FamilyID, s.FamilyID)
	oneOf(res, ear.CodeSNPImageID, checkSNPValues, "IMAGE_ID", r.ImageID, s.ImageID)
	if r.GuestSVN < s.MinGuestSVN {
		res.Fail(ear.CodeSNPGuestSVN, checkSNPValues, fmt.Sprintf("GUEST_SVN %d is below the policy's min_guest_svn %d", r.GuestSVN, s.MinGuestSVN))
	}
	// HOST_DATA is chosen by the host, and FAMILY_ID / IMAGE_ID mean something only under a
	// pinned ID key; only MEASUREMENT measures the guest's initial contents.
	if len(s.Measurement) == 0 {
		res.Warn(ear.CodeNoReferenceValues, checkSNPValues, "the policy pins no MEASUREMENT: any guest firmware and initial image is accepted")
	}

	// Check 10: platform info.
	if _, err := abi.ParseSnpPlatformInfo(r.PlatformInfo); err != nil {
		res.Fail(ear.CodeSNPPlatformInfo, checkSNPPlatform, fmt.Sprintf("PLATFORM_INFO 0x%x: %v", r.PlatformInfo, err))
	}
	if r.PlatformInfo&platformSMTEnabled != 0 && !*s.AllowSMT {
		res.Fail(ear.CodeSNPSMT, checkSNPPlatform, "the platform has SMT enabled and the policy sets allow_smt: false")
	}
	if s.RequireTSME && r.PlatformInfo&platformTSMEEnabled == 0 {
		res.Fail(ear.CodeSNPPlatformInfo, checkSNPPlatform, "the platform does not have TSME enabled and the policy sets require_tsme")
	}

	if s.SkipCollateralUnsafe {
		unsafeWarning(res, "snp.4", "sev_snp.skip_collateral_unsafe", "the AMD CRL was not checked: a revoked VCEK, VLEK, ASK or ASVK would be accepted")
	}
	staleAccepted(res, "sev_snp.stale_grace_unsafe")
}

// staleAccepted adds the unsafe_option warning of stale_grace_unsafe once the authenticity checks
// (verifier/tdx, verifier/snp) accepted collateral past its nextUpdate within that grace: they
// report each such document as collateral_stale_accepted.
func staleAccepted(res *ear.Result, option string) {
	for _, w := range res.Warnings {
		if w.Code == ear.CodeCollateralStaleAccepted {
			unsafeWarning(res, w.Check, option, "collateral past its nextUpdate was accepted, so revocations and TCB changes published since may be missed")
			return
		}
	}
}

// AppraiseTPM applies the tpm rules to the PCR values of a verified quote (bank as the policy's).
func (p *Policy) AppraiseTPM(pcrs map[int][]byte, res *ear.Result) {
	if p.TPM == nil {
		return
	}
	idx := make([]int, 0, len(p.TPM.PCRValues))
	for i := range p.TPM.PCRValues {
		idx = append(idx, i)
	}
	slices.Sort(idx) // findings in a fixed order
	for _, i := range idx {
		oneOf(res, ear.CodeTPMPCRValue, checkTPMPCRs, fmt.Sprintf("PCR %d (%s)", i, p.TPM.PCRBank), pcrs[i], p.TPM.PCRValues[i])
	}
}

// MeasuredEvent is one event of a replayed log: the register it was extended into and its
// digest, both proven by the replay.
type MeasuredEvent struct {
	Register string
	Digest   []byte
}

// AppraiseMeasuredBoot applies the rules for one replayed log (kind "tcg" or "ccel") to its events
// and to the kernel command lines whose event data its digests cover.
func (p *Policy) AppraiseMeasuredBoot(kind string, events []MeasuredEvent, cmdlines []string, res *ear.Result) {
	rules, check := p.logRules(kind)
	if rules == nil {
		return
	}
	for _, pin := range rules.Events {
		found := slices.ContainsFunc(events, func(e MeasuredEvent) bool {
			return e.Register == pin.Register && bytes.Equal(e.Digest, pin.Digest)
		})
		if !found {
			res.Fail(ear.CodeEventLogEvent, check, fmt.Sprintf("the %s log has no event %q extended into %s with digest %x", kind, pin.Name, pin.Register, []byte(pin.Digest)))
		}
	}
	for _, e := range events {
		if !slices.Contains(rules.ClosedRegisters, e.Register) {
			continue
		}
		listed := slices.ContainsFunc(rules.Events, func(pin PinnedEvent) bool {
			return e.Register == pin.Register && bytes.Equal(e.Digest, pin.Digest)
		})
		if !listed {
			res.Fail(ear.CodeEventLogUnexpected, check, fmt.Sprintf("the %s log extends %s with digest %x, which is not one of the policy's events for that closed register", kind, e.Register, e.Digest))
		}
	}
	if len(rules.KernelCmdlines) == 0 {
		return
	}
	if len(cmdlines) == 0 {
		res.Fail(ear.CodeEventLogCmdline, check, fmt.Sprintf("the %s log measures no kernel command line the policy could check", kind))
	}
	for _, c := range cmdlines {
		if !slices.Contains(rules.KernelCmdlines, c) {
			res.Fail(ear.CodeEventLogCmdline, check, fmt.Sprintf("the %s log measures kernel command line %q, which is not one of the policy's %d", kind, c, len(rules.KernelCmdlines)))
		}
	}
}

// RequiresLog reports whether the policy appraises the log of the kind ("tcg" or "ccel").
func (p *Policy) RequiresLog(kind string) bool {
	r, _ := p.logRules(kind)
	return r != nil
}

func (p *Policy) logRules(kind string) (*LogRules, string) {
	if p.MeasuredBoot == nil {
		return nil, ""
	}
	switch kind {
	case "tcg":
		return p.MeasuredBoot.TCG, checkTPMEvents
	case "ccel":
		return p.MeasuredBoot.CCEL, checkCCELEvents
	}
	return nil, ""
}
