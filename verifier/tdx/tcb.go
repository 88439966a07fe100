package tdx

import (
	"crypto/x509"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/google/go-tdx-guest/pcs"
	"github.com/proofline/proofline/verifier/ear"
)

// TCB-level evaluation is the project's own: go-tdx-guest accepts only UpToDate with no knob, and
// production platforms are often SWHardeningNeeded, so which statuses are acceptable must be a
// policy choice. This file selects the level exactly as Intel's Quote Verification Library does
// (Intel PCS API "TDX TCB Info" and the TDX DCAP verification flow) and reports its status; the
// policy package decides.

// TCB statuses Intel publishes. Any other string is unknown and is never accepted.
const (
	StatusUpToDate                          = "UpToDate"
	StatusSWHardeningNeeded                 = "SWHardeningNeeded"
	StatusConfigurationNeeded               = "ConfigurationNeeded"
	StatusConfigurationAndSWHardeningNeeded = "ConfigurationAndSWHardeningNeeded"
	StatusOutOfDate                         = "OutOfDate"
	StatusOutOfDateConfigurationNeeded      = "OutOfDateConfigurationNeeded"
	StatusRevoked                           = "Revoked"
)

// KnownStatuses lists the TCB statuses Intel defines.
var KnownStatuses = []string{
	StatusUpToDate, StatusSWHardeningNeeded, StatusConfigurationNeeded, StatusConfigurationAndSWHardeningNeeded,
	StatusOutOfDate, StatusOutOfDateConfigurationNeeded, StatusRevoked,
}

// The fields of a signed TCB info or QE identity that Intel's schema requires and go-tdx-guest
// does not enforce: an absent issueDate or nextUpdate decodes as the zero time (a validity window
// without a bound), and an absent tcbStatus as "" (go-tdx-guest rejects only an unknown string).
// Every TCB level must carry a status Intel defines, so that no level is selected without one.

// undated reports whether issueDate or nextUpdate is absent.
func undated(issued, next time.Time) bool { return issued.IsZero() || next.IsZero() }

// unrated describes the first TCB level whose tcbStatus is not one Intel defines, or returns "".
func unrated(levels []pcs.TcbLevel) string {
	for i := range levels {
		if !slices.Contains(KnownStatuses, string(levels[i].TcbStatus)) {
			return fmt.Sprintf("TCB level %d has tcbStatus %q, not a status Intel defines", i, levels[i].TcbStatus)
		}
	}
	return ""
}

// checkTCBInfo verifies the TCB info and selects the platform's TCB level (check 6).
func (v *verification) checkTCBInfo(ext *pcs.PckExtensions, rootCRL *x509.RevocationList) {
	u := pcs.TcbInfoURL(strings.ToLower(ext.FMSPC))
	r := v.fetch("tcb_info", u, checkTCBInfo)
	if r == nil {
		return
	}
	sc := v.openSigned(r, "TCB-Info-Issuer-Chain", "tcbInfo", ear.CodeTDXTCBInfoInvalid, checkTCBInfo, rootCRL)
	if sc == nil {
		return
	}
	// Parsed once per signed document and shared: read-only from here on.
	info, err := parseTCBInfo(sc.raw)
	if err != nil {
		v.fail(ear.CodeCollateralMalformed, checkTCBInfo, "TCB info: %v", err)
		return
	}
	v.noteTimes(info.IssueDate, info.NextUpdate)
	if info.ID != "TDX" || info.Version != tcbInfoVersion || len(info.TcbLevels) == 0 {
		v.fail(ear.CodeTDXTCBInfoInvalid, checkTCBInfo, "TCB info is not a TDX TCB info of version %d with TCB levels (id %q, version %d)", tcbInfoVersion, info.ID, info.Version)
		return
	}
	if undated(info.IssueDate, info.NextUpdate) {
		v.fail(ear.CodeTDXTCBInfoInvalid, checkTCBInfo, "TCB info lacks issueDate or nextUpdate")
		return
	}
	if why := unrated(info.TcbLevels); why != "" {
		v.fail(ear.CodeTDXTCBInfoInvalid, checkTCBInfo, "TCB info: %s", why)
		return
	}
	for _, mod := range info.TdxModuleIdentities {
		if why := unrated(mod.TcbLevels); why != "" {
			v.fail(ear.CodeTDXTCBInfoInvalid, checkTCBInfo, "TCB info, TDX module identity %s: %s", mod.ID, why)
			return
		}
	}
	tcb := &ear.TDXTCB{
		EvaluationDataNumber: info.TcbEvaluationDataNumber,
		TCBInfoIssueDate:     info.IssueDate.UTC(),
		TCBInfoNextUpdate:    info.NextUpdate.UTC(),
	}
	if id := v.qeIdentity; id != nil {
		tcb.QEIdentityIssueDate, tcb.QEIdentityNextUpdate = id.IssueDate.UTC(), id.NextUpdate.UTC()
	}
	v.claims.TCB = tcb
	if ok, why := v.window("TCB info", checkTCBInfo, info.IssueDate, info.NextUpdate); !ok {
		v.fail(ear.CodeTDXTCBInfoExpired, checkTCBInfo, "%s; fetch fresh collateral", why)
	}
	if !strings.EqualFold(info.Fmspc, ext.FMSPC) || !strings.EqualFold(info.PceID, ext.PCEID) {
		v.fail(ear.CodeTDXTCBInfoMismatch, checkTCBInfo, "TCB info is for FMSPC %s / PCEID %s but the PCK certificate has FMSPC %s / PCEID %s",
			info.Fmspc, info.PceID, ext.FMSPC, ext.PCEID)
		return
	}
	body := v.q.Body
	if !moduleMatches(info.TdxModule.Mrsigner.Bytes, info.TdxModule.Attributes.Bytes, info.TdxModule.AttributesMask.Bytes, body) {
		v.fail(ear.CodeTDXModuleMismatch, checkTCBInfo, "MRSIGNERSEAM %x / SEAMATTRIBUTES %x do not match the TDX module in the TCB info", body.MRSignerSeam, body.SeamAttributes)
	}
	levelIdx := matchTCBLevel(info.TcbLevels, ext, body.TeeTCBSVN)
	if levelIdx < 0 {
		v.fail(ear.CodeTDXTCBLevelUnmatched, checkTCBInfo, "no TCB level in the TCB info matches this platform (CPUSVN %x, PCESVN %d, TEE_TCB_SVN %x): treat as unsupported", ext.TCB.CPUSvnComponents, ext.TCB.PCESvn, body.TeeTCBSVN)
		return
	}
	level := &info.TcbLevels[levelIdx]
	tcb.Status, tcb.Date, tcb.AdvisoryIDs = string(level.TcbStatus), level.TcbDate, level.AdvisoryIDs
	platform := recoveryPart{what: "platform TCB level", levels: info.TcbLevels, index: levelIdx}
	// A TEE_TCB_SVN[1] (TDX module major version) above zero selects a TDX module identity whose
	// own TCB levels rate the module's SVN (TEE_TCB_SVN[0]); the module's status converges with the
	// platform's.
	if body.TeeTCBSVN[1] > 0 {
		id := fmt.Sprintf("TDX_%02X", body.TeeTCBSVN[1])
		tcb.TDXModuleIdentity = id
		mod := findModule(info.TdxModuleIdentities, id)
		if mod == nil {
			v.fail(ear.CodeTDXModuleMismatch, checkTCBInfo, "the TCB info has no TDX module identity %s for this TDX module version", id)
			tcb.Status = "" // the platform's alone is not the TCB's: the module is not rated
			return
		}
		if !moduleMatches(mod.Mrsigner.Bytes, mod.Attributes.Bytes, mod.AttributesMask.Bytes, body) {
			v.fail(ear.CodeTDXModuleMismatch, checkTCBInfo, "MRSIGNERSEAM / SEAMATTRIBUTES do not match TDX module identity %s", id)
		}
		modIdx := -1
		for i := range mod.TcbLevels {
			if uint32(body.TeeTCBSVN[0]) >= mod.TcbLevels[i].Tcb.Isvsvn {
				modIdx = i
				break
			}
		}
		if modIdx < 0 {
			v.fail(ear.CodeTDXTCBLevelUnmatched, checkTCBInfo, "TDX module SVN %d matches no TCB level of module identity %s", body.TeeTCBSVN[0], id)
			tcb.Status = "" // as above
			return
		}
		tcb.TDXModuleStatus = string(mod.TcbLevels[modIdx].TcbStatus)
		tcb.Status = convergeModuleStatus(tcb.Status, tcb.TDXModuleStatus)
		module := recoveryPart{what: "TDX module " + id + " TCB level", levels: mod.TcbLevels, index: modIdx}
		v.recoveryGrace(checkTCBInfo, "the platform", tcb.Status, info.TcbEvaluationDataNumber, platform, module)
		return
	}
	v.recoveryGrace(checkTCBInfo, "the platform", tcb.Status, info.TcbEvaluationDataNumber, platform)
}

// moduleMatches compares MRSIGNERSEAM and the masked SEAMATTRIBUTES with a TDX module entry.
func moduleMatches(mrsigner, attrs, mask []byte, body Body) bool {
	if !equalBytes(mrsigner, body.MRSignerSeam) || len(mask) != len(body.SeamAttributes) || len(attrs) != len(mask) {
		return false
	}
	for i := range mask {
		if body.SeamAttributes[i]&mask[i] != attrs[i] {
			return false
		}
	}
	return true
}

func findModule(ids []pcs.TdxModuleIdentity, id string) *pcs.TdxModuleIdentity {
	for i := range ids {
		if strings.EqualFold(ids[i].ID, id) {
			return &ids[i]
		}
	}
	return nil
}

// matchTCBLevel returns the index of the first TCB level (levels are sorted from newest) whose SGX
// components and PCESVN are at or below the PCK certificate's and whose TDX components are at or
// below TEE_TCB_SVN, or -1. When TEE_TCB_SVN[1] > 0 the first two TDX components are rated by the
// module identity instead and are skipped here.
func matchTCBLevel(levels []pcs.TcbLevel, ext *pcs.PckExtensions, teeTCBSVN []byte) int {
	cpusvn := ext.TCB.CPUSvnComponents
	for i := range levels {
		l := &levels[i]
		if len(l.Tcb.SgxTcbcomponents) != len(cpusvn) || len(l.Tcb.TdxTcbcomponents) != len(teeTCBSVN) {
			continue
		}
		ok := ext.TCB.PCESvn >= l.Tcb.Pcesvn
		for j := 0; ok && j < len(cpusvn); j++ {
			ok = cpusvn[j] >= l.Tcb.SgxTcbcomponents[j].Svn
		}
		start := 0
		if teeTCBSVN[1] > 0 {
			start = 2
		}
		for j := start; ok && j < len(teeTCBSVN); j++ {
			ok = teeTCBSVN[j] >= l.Tcb.TdxTcbcomponents[j].Svn
		}
		if ok {
			return i
		}
	}
	return -1
}

// convergeModuleStatus combines the platform TCB status with the TDX module identity's status as
// Intel's QVL does: an OutOfDate module makes the platform OutOfDate (keeping a configuration
// need), a Revoked module revokes it, and otherwise the platform status stands.
func convergeModuleStatus(platform, module string) string {
	switch module {
	case StatusUpToDate:
		return platform
	case StatusOutOfDate:
		if strings.Contains(platform, "Configuration") {
			return StatusOutOfDateConfigurationNeeded
		}
		return StatusOutOfDate
	case StatusRevoked:
		return StatusRevoked
	}
	// An unknown module status makes the whole status unknown, which no policy accepts.
	return "Unknown(" + module + ")"
}

// TCB recovery grace (the policy option tcb_recovery_grace_unsafe, Options.TCBRecoveryGraceUnsafe).
//
// At a TCB recovery Intel publishes a TCB info and QE identity with a higher
// tcbEvaluationDataNumber whose new top TCB level(s) carry the recovery's tcbDate, and marks the
// levels that were current until then OutOfDate: a fleet that has not been updated yet is
// OutOfDate from one day to the next. The grace accepts such a level, with a warning, for a
// bounded time. Precisely: in a list of TCB levels sorted from newest (a TCB info's tcbLevels, a
// TDX module identity's, a QE identity's), the level at position i is graced at the verification
// time Now, for a grace g > 0, when
//
//   - its status is OutOfDate or OutOfDateConfigurationNeeded (never Revoked or anything else);
//   - at least one level ranks above it (i > 0);
//   - its own tcbDate and the tcbDate of every level above it are RFC 3339 times, and every level
//     above is dated strictly after it;
//   - the recovery date R, the earliest tcbDate of the levels above it, is after Now − g: every
//     level that makes it OutOfDate is younger than the grace.
//
// It is then accepted as GracedStatus(status) until R + g. A platform status converged from the
// platform level and a TDX module level (TEE_TCB_SVN[1] > 0) is graced only when each of the two
// that is OutOfDate is graced and converging the graced statuses gives GracedStatus of the
// converged status; R is then the earlier of theirs. Everything else — a missing or unparsable
// date, a level OutOfDate for an older reason, a grace that ran out — gets no warning, and the
// policy reports the status as it does without the option.

// GracedStatus returns the status a TCB level had before the TCB recovery that made it OutOfDate:
// UpToDate for OutOfDate and ConfigurationNeeded for OutOfDateConfigurationNeeded. It reports
// false for every other status: Revoked is never graced.
func GracedStatus(status string) (string, bool) {
	switch status {
	case StatusOutOfDate:
		return StatusUpToDate, true
	case StatusOutOfDateConfigurationNeeded:
		return StatusConfigurationNeeded, true
	}
	return "", false
}

// recoveryPart is the matched level of one list of TCB levels.
type recoveryPart struct {
	what   string // "platform TCB level", …
	levels []pcs.TcbLevel
	index  int
}

// since returns the recovery date of the part's level: the earliest tcbDate of the levels ranked
// above it, each dated strictly after it.
func (p recoveryPart) since() (time.Time, error) {
	if p.index <= 0 || p.index >= len(p.levels) {
		return time.Time{}, errors.New("no TCB level ranks above it")
	}
	own, err := time.Parse(time.RFC3339, p.levels[p.index].TcbDate)
	if err != nil {
		return time.Time{}, fmt.Errorf("its tcbDate %q is not an RFC 3339 time", p.levels[p.index].TcbDate)
	}
	var r time.Time
	for j := range p.index {
		d, err := time.Parse(time.RFC3339, p.levels[j].TcbDate)
		if err != nil {
			return time.Time{}, fmt.Errorf("the tcbDate %q of a level above it is not an RFC 3339 time", p.levels[j].TcbDate)
		}
		if !d.After(own) {
			return time.Time{}, fmt.Errorf("a level above it is dated %s, not after it", p.levels[j].TcbDate)
		}
		if r.IsZero() || d.Before(r) {
			r = d
		}
	}
	return r.UTC(), nil
}

// recoveryGrace adds the tcb_recovery_grace warning (check, for who: "the platform", "the QE")
// when status, converged from parts (one, or the platform and the TDX module level), is graced
// under Options.TCBRecoveryGraceUnsafe (see the rules above).
func (v *verification) recoveryGrace(check, who, status string, evalNumber int, parts ...recoveryPart) {
	g := v.opts.TCBRecoveryGraceUnsafe
	want, ok := GracedStatus(status)
	if g <= 0 || !ok || len(parts) == 0 || len(parts) > 2 {
		return
	}
	var since time.Time
	var levels []string
	graced := make([]string, len(parts))
	for i, p := range parts {
		l := &p.levels[p.index]
		graced[i] = string(l.TcbStatus)
		gs, ok := GracedStatus(graced[i])
		if !ok {
			continue
		}
		// A recovery dated after the verification time is not one the platform could have
		// been given time for: no grace (fail closed on odd dates, e.g. at a past --at).
		r, err := p.since()
		if err != nil || !r.After(v.opts.Now.Add(-g)) || r.After(v.opts.Now) {
			return
		}
		graced[i] = gs
		if since.IsZero() || r.Before(since) {
			since = r
		}
		levels = append(levels, fmt.Sprintf("the %s dated %s (%s)", p.what, l.TcbDate, l.TcbStatus))
	}
	got := graced[0]
	if len(parts) == 2 {
		got = convergeModuleStatus(graced[0], graced[1])
	}
	if got != want || since.IsZero() {
		return
	}
	until := since.Add(g)
	v.res.Warn(ear.CodeTCBRecoveryGrace, check, fmt.Sprintf("%s is %s only because of the TCB recovery of %s (tcbEvaluationDataNumber %d): %s ranks below TCB level(s) dated since then; accepted as %s within tcb_recovery_grace_unsafe (%s) since %s, until %s: update its TCB before then",
		who, status, rfc3339(since), evalNumber, strings.Join(levels, " and "), want, g, rfc3339(since), rfc3339(until)))
}
