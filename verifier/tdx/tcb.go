package tdx

import (
	"crypto/x509"
	"encoding/json"
	"fmt"
	"strings"

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
	var info pcs.TcbInfo
	if err := json.Unmarshal(sc.raw, &info); err != nil {
		v.fail(ear.CodeCollateralMalformed, checkTCBInfo, "TCB info: %v", err)
		return
	}
	v.noteTimes(info.IssueDate, info.NextUpdate)
	if info.ID != "TDX" || info.Version != tcbInfoVersion || len(info.TcbLevels) == 0 {
		v.fail(ear.CodeTDXTCBInfoInvalid, checkTCBInfo, "TCB info is not a TDX TCB info of version %d with TCB levels (id %q, version %d)", tcbInfoVersion, info.ID, info.Version)
		return
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
	level := matchTCBLevel(info.TcbLevels, ext, body.TeeTCBSVN)
	if level == nil {
		v.fail(ear.CodeTDXTCBLevelUnmatched, checkTCBInfo, "no TCB level in the TCB info matches this platform (CPUSVN %x, PCESVN %d, TEE_TCB_SVN %x): treat as unsupported", ext.TCB.CPUSvnComponents, ext.TCB.PCESvn, body.TeeTCBSVN)
		return
	}
	tcb.Status, tcb.Date, tcb.AdvisoryIDs = string(level.TcbStatus), level.TcbDate, level.AdvisoryIDs
	// A TEE_TCB_SVN[1] (TDX module major version) above zero selects a TDX module identity whose
	// own TCB levels rate the module's SVN (TEE_TCB_SVN[0]); the module's status converges with the
	// platform's.
	if body.TeeTCBSVN[1] > 0 {
		id := fmt.Sprintf("TDX_%02X", body.TeeTCBSVN[1])
		tcb.TDXModuleIdentity = id
		mod := findModule(info.TdxModuleIdentities, id)
		if mod == nil {
			v.fail(ear.CodeTDXModuleMismatch, checkTCBInfo, "the TCB info has no TDX module identity %s for this TDX module version", id)
			return
		}
		if !moduleMatches(mod.Mrsigner.Bytes, mod.Attributes.Bytes, mod.AttributesMask.Bytes, body) {
			v.fail(ear.CodeTDXModuleMismatch, checkTCBInfo, "MRSIGNERSEAM / SEAMATTRIBUTES do not match TDX module identity %s", id)
		}
		var modLevel *pcs.TcbLevel
		for i := range mod.TcbLevels {
			if uint32(body.TeeTCBSVN[0]) >= mod.TcbLevels[i].Tcb.Isvsvn {
				modLevel = &mod.TcbLevels[i]
				break
			}
		}
		if modLevel == nil {
			v.fail(ear.CodeTDXTCBLevelUnmatched, checkTCBInfo, "TDX module SVN %d matches no TCB level of module identity %s", body.TeeTCBSVN[0], id)
			return
		}
		tcb.TDXModuleStatus = string(modLevel.TcbStatus)
		tcb.Status = convergeModuleStatus(tcb.Status, tcb.TDXModuleStatus)
	}
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

// matchTCBLevel returns the first TCB level (levels are sorted from newest) whose SGX components
// and PCESVN are at or below the PCK certificate's and whose TDX components are at or below
// TEE_TCB_SVN. When TEE_TCB_SVN[1] > 0 the first two TDX components are rated by the module
// identity instead and are skipped here.
func matchTCBLevel(levels []pcs.TcbLevel, ext *pcs.PckExtensions, teeTCBSVN []byte) *pcs.TcbLevel {
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
			return l
		}
	}
	return nil
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
