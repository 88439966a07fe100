package verifier

import "github.com/proofline/proofline/verifier/ear"

// Each failure code lowers one AR4SI trustworthiness claim (draft-ietf-rats-ar4si §2.3).
type category int

const (
	catHardware category = iota
	catInstance
	catConfiguration
	catExecutables
	catSourcedData
	catRuntime
)

var codeCategory = map[ear.Code]category{
	ear.CodeNonceMismatch:      catInstance,
	ear.CodeReportDataMismatch: catInstance,
	ear.CodeTPMNonceMismatch:   catInstance,
	ear.CodeTPMAKNotBound:      catInstance,

	// vTPM and event-log findings say what booted; the quote's own authenticity failures
	// (malformed, magic, type, duplicated selection, signature, key, digest) stay hardware
	// failures.
	ear.CodeTPMMissing:         catExecutables,
	ear.CodeTPMPCRSelection:    catExecutables,
	ear.CodeTPMPCRBank:         catExecutables,
	ear.CodeTPMPCRValue:        catExecutables,
	ear.CodeEventLogMissing:    catExecutables,
	ear.CodeEventLogMalformed:  catExecutables,
	ear.CodeEventLogReplay:     catExecutables,
	ear.CodeEventLogEvent:      catExecutables,
	ear.CodeEventLogCmdline:    catExecutables,
	ear.CodeEventLogUnexpected: catExecutables,

	ear.CodeCollateralUnavailable:  catSourcedData,
	ear.CodeCollateralMalformed:    catSourcedData,
	ear.CodeTDXCRLInvalid:          catSourcedData,
	ear.CodeTDXCRLStale:            catSourcedData,
	ear.CodeTDXQEIdentityInvalid:   catSourcedData,
	ear.CodeTDXQEIdentityExpired:   catSourcedData,
	ear.CodeTDXTCBInfoInvalid:      catSourcedData,
	ear.CodeTDXTCBInfoExpired:      catSourcedData,
	ear.CodeTDXTCBEvaluationNumber: catSourcedData,
	ear.CodeSNPCRLInvalid:          catSourcedData,
	ear.CodeSNPCRLStale:            catSourcedData,

	ear.CodeTDXDebug:             catRuntime,
	ear.CodeSNPDebug:             catRuntime,
	ear.CodeTDXSeptVEDisable:     catConfiguration,
	ear.CodeTDXAttributesUnknown: catConfiguration,
	ear.CodeTDXMigratable:        catConfiguration,
	ear.CodeTDXXFAM:              catConfiguration,
	ear.CodeTDXMRServiceTD:       catConfiguration,
	ear.CodeTDXMRConfigID:        catConfiguration,
	ear.CodeTDXMROwner:           catConfiguration,
	ear.CodeTDXMROwnerConfig:     catConfiguration,
	ear.CodeSNPMigrateMA:         catConfiguration,
	ear.CodeSNPSMT:               catConfiguration,
	ear.CodeSNPABI:               catConfiguration,
	ear.CodeSNPGuestPolicy:       catConfiguration,
	ear.CodeSNPVMPL:              catConfiguration,
	ear.CodeSNPPlatformInfo:      catConfiguration,
	ear.CodeSNPHostData:          catConfiguration,
	ear.CodePlatformNotInPolicy:  catConfiguration,

	ear.CodeTDXMRTD:            catExecutables,
	ear.CodeTDXRTMR:            catExecutables,
	ear.CodeTDXMRSeam:          catExecutables,
	ear.CodeSNPMeasurement:     catExecutables,
	ear.CodeSNPIDKeyDigest:     catExecutables,
	ear.CodeSNPAuthorKeyDigest: catExecutables,
	ear.CodeSNPFamilyID:        catExecutables,
	ear.CodeSNPImageID:         catExecutables,
	ear.CodeSNPGuestSVN:        catExecutables,
}

// trustVector summarises the findings as an AR4SI trust vector. Any code not listed above is an
// authenticity failure of the hardware evidence itself.
func trustVector(res *ear.Result) ear.TrustVector {
	tv := ear.TrustVector{
		InstanceIdentity: ear.TrustworthyInstance,
		Configuration:    ear.ApprovedConfig,
		Executables:      ear.ApprovedRuntime,
		Hardware:         ear.GenuineHardware,
		RuntimeOpaque:    ear.EncryptedMemoryRuntime,
		StorageOpaque:    ear.NoClaim,
		FileSystem:       ear.NoClaim,
		SourcedData:      ear.TrustworthySources,
	}
	if res.Claims == nil {
		// Nothing could be parsed: the evidence was not what was expected.
		return ear.TrustVector{Hardware: ear.UnexpectedEvidence, InstanceIdentity: ear.UnexpectedEvidence}
	}
	for _, w := range res.Warnings {
		switch w.Code {
		case ear.CodeNoReferenceValues:
			tv.Executables = ear.UnrecognizedRuntime
		case ear.CodeFreshnessNotEvaluated:
			tv.InstanceIdentity = ear.NoClaim
		case ear.CodeUnsafeOption:
			tv.Configuration = ear.UnsafeConfig
		case ear.CodeTPMGuestAttested:
			tv.Executables = ear.UnrecognizedRuntime
		case ear.CodeCollateralStaleAccepted:
			tv.SourcedData = ear.UntrustworthySources
		}
	}
	for _, f := range res.Failures {
		cat, ok := codeCategory[f.Code]
		if !ok {
			cat = catHardware
		}
		switch cat {
		case catHardware:
			switch f.Code {
			case ear.CodeTDXTCBStatus, ear.CodeTDXQETCBStatus, ear.CodeTDXCertRevoked, ear.CodeSNPCertRevoked,
				ear.CodeSNPTCBBelowFloor, ear.CodeSNPCommittedTCB, ear.CodeTDXTCBLevelUnmatched:
				tv.Hardware = max(tv.Hardware, ear.ContraindicatedHardware)
			default:
				tv.Hardware = ear.CryptoValidationFailed
				tv.InstanceIdentity = ear.UnrecognizedInstance
			}
		case catInstance:
			tv.InstanceIdentity = max(tv.InstanceIdentity, ear.UntrustworthyInstance)
		case catConfiguration:
			tv.Configuration = ear.UnsupportableConfig
		case catExecutables:
			tv.Executables = ear.ContraindicatedRuntime
		case catSourcedData:
			tv.SourcedData = ear.ContraindicatedSourcedData
		case catRuntime:
			tv.RuntimeOpaque = ear.VisibleMemoryRuntime
			tv.Configuration = ear.UnsupportableConfig
		}
	}
	return tv
}
