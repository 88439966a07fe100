package ear

// Code is a stable failure or warning code. A code never changes meaning; new checks get new
// codes. The table below is mirrored in verifier/README.md (a test keeps the two in step).
type Code string

// Codes shared by both platforms.
const (
	CodeEvidenceMalformed       Code = "evidence_malformed"
	CodeCollateralUnavailable   Code = "collateral_unavailable"
	CodeCollateralMalformed     Code = "collateral_malformed"
	CodeNonceMismatch           Code = "nonce_mismatch"
	CodeReportDataMismatch      Code = "report_data_mismatch"
	CodeFreshnessNotEvaluated   Code = "freshness_not_evaluated"
	CodeNoReferenceValues       Code = "no_reference_values"
	CodeUnsafeOption            Code = "unsafe_option"
	CodePlatformNotInPolicy     Code = "platform_not_in_policy"
	CodeTPMNotEvaluated         Code = "tpm_not_evaluated"
	CodeEventLogNotEvaluated    Code = "event_log_not_evaluated"
	CodeTCBOutOfDateAccepted    Code = "tcb_out_of_date_accepted"
	CodeCollateralStaleAccepted Code = "collateral_stale_accepted"
	CodeTCBRecoveryGrace        Code = "tcb_recovery_grace"
)

// Intel TDX codes (VERIFIER-CHECKS "Intel TDX quote").
const (
	CodeTDXQuoteMalformed      Code = "tdx_quote_malformed"
	CodeTDXPCKChainInvalid     Code = "tdx_pck_chain_invalid"
	CodeTDXCertExpired         Code = "tdx_cert_expired"
	CodeTDXCertRevoked         Code = "tdx_cert_revoked"
	CodeTDXCRLInvalid          Code = "tdx_crl_invalid"
	CodeTDXCRLStale            Code = "tdx_crl_stale"
	CodeTDXQEReportSignature   Code = "tdx_qe_report_signature_invalid"
	CodeTDXQEReportData        Code = "tdx_qe_report_data_mismatch"
	CodeTDXQuoteSignature      Code = "tdx_quote_signature_invalid"
	CodeTDXQEIdentityInvalid   Code = "tdx_qe_identity_invalid"
	CodeTDXQEIdentityExpired   Code = "tdx_qe_identity_expired"
	CodeTDXQEIdentityMismatch  Code = "tdx_qe_identity_mismatch"
	CodeTDXQETCBStatus         Code = "tdx_qe_tcb_status"
	CodeTDXTCBInfoInvalid      Code = "tdx_tcb_info_invalid"
	CodeTDXTCBInfoExpired      Code = "tdx_tcb_info_expired"
	CodeTDXTCBInfoMismatch     Code = "tdx_tcb_info_mismatch"
	CodeTDXTCBLevelUnmatched   Code = "tdx_tcb_level_unmatched"
	CodeTDXTCBStatus           Code = "tdx_tcb_status"
	CodeTDXModuleMismatch      Code = "tdx_module_mismatch"
	CodeTDXTCBEvaluationNumber Code = "tdx_tcb_evaluation_number"
	CodeTDXDebug               Code = "tdx_debug"
	CodeTDXSeptVEDisable       Code = "tdx_sept_ve_disable"
	CodeTDXAttributesUnknown   Code = "tdx_attributes_unknown"
	CodeTDXMigratable          Code = "tdx_migratable"
	CodeTDXXFAM                Code = "tdx_xfam"
	CodeTDXMRTD                Code = "tdx_mrtd"
	CodeTDXRTMR                Code = "tdx_rtmr"
	CodeTDXMRConfigID          Code = "tdx_mrconfigid"
	CodeTDXMROwner             Code = "tdx_mrowner"
	CodeTDXMROwnerConfig       Code = "tdx_mrownerconfig"
	CodeTDXMRServiceTD         Code = "tdx_mrservicetd"
	CodeTDXMRSeam              Code = "tdx_mrseam"
)

// AMD SEV-SNP codes (VERIFIER-CHECKS "AMD SEV-SNP report").
const (
	CodeSNPReportMalformed    Code = "snp_report_malformed"
	CodeSNPCertMissing        Code = "snp_cert_missing"
	CodeSNPChainInvalid       Code = "snp_chain_invalid"
	CodeSNPCertExpired        Code = "snp_cert_expired"
	CodeSNPSigningKeyMismatch Code = "snp_signing_key_mismatch"
	CodeSNPChipIDMismatch     Code = "snp_chip_id_mismatch"
	CodeSNPTCBMismatch        Code = "snp_vcek_tcb_mismatch"
	CodeSNPReportSignature    Code = "snp_report_signature_invalid"
	CodeSNPCRLInvalid         Code = "snp_crl_invalid"
	CodeSNPCRLStale           Code = "snp_crl_stale"
	CodeSNPCertRevoked        Code = "snp_cert_revoked"
	CodeSNPDebug              Code = "snp_debug"
	CodeSNPMigrateMA          Code = "snp_migrate_ma"
	CodeSNPSMT                Code = "snp_smt"
	CodeSNPABI                Code = "snp_abi_too_old"
	CodeSNPGuestPolicy        Code = "snp_guest_policy"
	CodeSNPVMPL               Code = "snp_vmpl"
	CodeSNPTCBBelowFloor      Code = "snp_tcb_below_floor"
	CodeSNPCommittedTCB       Code = "snp_committed_tcb"
	CodeSNPMeasurement        Code = "snp_measurement"
	CodeSNPHostData           Code = "snp_host_data"
	CodeSNPIDKeyDigest        Code = "snp_id_key_digest"
	CodeSNPAuthorKeyDigest    Code = "snp_author_key_digest"
	CodeSNPFamilyID           Code = "snp_family_id"
	CodeSNPImageID            Code = "snp_image_id"
	CodeSNPGuestSVN           Code = "snp_guest_svn"
	CodeSNPPlatformInfo       Code = "snp_platform_info"
)

// vTPM quote codes (VERIFIER-CHECKS "vTPM quote").
const (
	CodeTPMMissing         Code = "tpm_missing"
	CodeTPMQuoteMalformed  Code = "tpm_quote_malformed"
	CodeTPMMagic           Code = "tpm_magic"
	CodeTPMAttestType      Code = "tpm_attest_type"
	CodeTPMNonceMismatch   Code = "tpm_nonce_mismatch"
	CodeTPMPCRSelection    Code = "tpm_pcr_selection"
	CodeTPMPCRBank         Code = "tpm_pcr_bank"
	CodeTPMPCRDuplicate    Code = "tpm_pcr_duplicate"
	CodeTPMPCRDigest       Code = "tpm_pcr_digest"
	CodeTPMSignature       Code = "tpm_signature_invalid"
	CodeTPMAKInvalid       Code = "tpm_ak_invalid"
	CodeTPMAKNotBound      Code = "tpm_ak_not_bound"
	CodeTPMPCRValue        Code = "tpm_pcr_value"
	CodeEventLogMissing    Code = "event_log_missing"
	CodeEventLogMalformed  Code = "event_log_malformed"
	CodeEventLogReplay     Code = "event_log_replay"
	CodeEventLogEvent      Code = "event_log_event_missing"
	CodeEventLogCmdline    Code = "event_log_kernel_cmdline"
	CodeEventLogUnexpected Code = "event_log_unexpected_event"
	CodeTPMGuestAttested   Code = "tpm_ak_guest_attested"
)

// Descriptions holds the one-line meaning of every code; verifier/README.md shows the same table.
var Descriptions = map[Code]string{
	CodeEvidenceMalformed:       "The evidence envelope is valid JSON but breaks the schema (version, platform, base64, sizes).",
	CodeCollateralUnavailable:   "Collateral needed for a check (TCB info, QE identity, a CRL, a certificate) could not be obtained.",
	CodeCollateralMalformed:     "Collateral was obtained but could not be parsed.",
	CodeNonceMismatch:           "REPORT_DATA does not equal the documented binding of the verifier nonce and runtime data.",
	CodeReportDataMismatch:      "REPORT_DATA does not equal the value given with --report-data.",
	CodeFreshnessNotEvaluated:   "Warning: no verifier nonce or expected REPORT_DATA was given, so freshness was not evaluated.",
	CodeNoReferenceValues:       "Warning: the policy pins no launch measurement (MRTD for TDX, MEASUREMENT for SEV-SNP) for this platform.",
	CodeUnsafeOption:            "Warning: the policy weakens a check with an option ending in _unsafe.",
	CodePlatformNotInPolicy:     "The policy has no section for the evidence's platform.",
	CodeTPMNotEvaluated:         "Warning: the evidence carries a vTPM quote that was not appraised.",
	CodeEventLogNotEvaluated:    "Warning: the evidence carries event logs that were not replayed.",
	CodeTCBOutOfDateAccepted:    "Warning: the platform's TCB is OutOfDate (known vulnerable, not patched) and the policy accepts it.",
	CodeCollateralStaleAccepted: "Warning: a CRL, TCB info or QE identity past its nextUpdate was accepted within the policy's stale_grace_unsafe.",
	CodeTCBRecoveryGrace:        "Warning: an Intel TCB level (platform or QE) that is OutOfDate only because of a recent TCB recovery was accepted within the policy's tcb_recovery_grace_unsafe.",

	CodeTDXQuoteMalformed:      "The TDX quote failed strict parsing (version, TEE type, sizes, certification data type, trailing bytes).",
	CodeTDXPCKChainInvalid:     "The PCK certificate chain is malformed or does not chain to the pinned Intel SGX Root CA.",
	CodeTDXCertExpired:         "A certificate in the PCK chain or a collateral issuer chain is outside its validity period.",
	CodeTDXCertRevoked:         "The PCK certificate, its CA or a collateral signing certificate is listed in a CRL.",
	CodeTDXCRLInvalid:          "A PCK or Root CA CRL is not signed by the right issuer or cannot be parsed.",
	CodeTDXCRLStale:            "A PCK or Root CA CRL is outside its thisUpdate/nextUpdate window.",
	CodeTDXQEReportSignature:   "The QE report is not signed by the PCK certificate.",
	CodeTDXQEReportData:        "QE report_data is not SHA-256(attestation key ‖ QE auth data) ‖ 32 zero bytes.",
	CodeTDXQuoteSignature:      "The quote signature over header ‖ body does not verify with the attestation key.",
	CodeTDXQEIdentityInvalid:   "The QE identity is not signed by the Intel TCB signing chain or breaks its schema.",
	CodeTDXQEIdentityExpired:   "The QE identity is outside its issueDate/nextUpdate window or older than the allowed age.",
	CodeTDXQEIdentityMismatch:  "The QE's MRSIGNER, ISVPRODID, MISCSELECT or ATTRIBUTES do not match the QE identity.",
	CodeTDXQETCBStatus:         "The QE's ISVSVN maps to no QE TCB level, or to a status the policy does not accept.",
	CodeTDXTCBInfoInvalid:      "The TCB info is not signed by the Intel TCB signing chain or breaks its schema.",
	CodeTDXTCBInfoExpired:      "The TCB info is outside its issueDate/nextUpdate window or older than the allowed age.",
	CodeTDXTCBInfoMismatch:     "The TCB info's FMSPC or PCEID differs from the PCK certificate's.",
	CodeTDXTCBLevelUnmatched:   "No TCB level in the TCB info matches the platform's SVNs.",
	CodeTDXTCBStatus:           "The platform's TCB status is not in the policy's accepted list (Revoked is never accepted).",
	CodeTDXModuleMismatch:      "MRSIGNERSEAM or SEAMATTRIBUTES do not match the TDX module identity in the TCB info.",
	CodeTDXTCBEvaluationNumber: "The TCB info's tcbEvaluationDataNumber is below the policy's minimum.",
	CodeTDXDebug:               "The TD's DEBUG attribute is set.",
	CodeTDXSeptVEDisable:       "SEPT_VE_DISABLE is clear and the policy requires it.",
	CodeTDXAttributesUnknown:   "TD_ATTRIBUTES has bits set that are reserved or not allowed by the policy.",
	CodeTDXMigratable:          "The TD is MIGRATABLE and the policy does not allow it.",
	CodeTDXXFAM:                "XFAM enables features outside the policy's allowed mask.",
	CodeTDXMRTD:                "MRTD is not one of the policy's reference values.",
	CodeTDXRTMR:                "An RTMR is not one of the policy's reference values.",
	CodeTDXMRConfigID:          "MRCONFIGID is not one of the policy's reference values.",
	CodeTDXMROwner:             "MROWNER is not one of the policy's reference values.",
	CodeTDXMROwnerConfig:       "MROWNERCONFIG is not one of the policy's reference values.",
	CodeTDXMRServiceTD:         "MRSERVICETD is not zero (or not an allowed value).",
	CodeTDXMRSeam:              "MRSEAM is not one of the policy's reference values.",

	CodeSNPReportMalformed:    "The SEV-SNP report failed strict parsing (version, size, reserved fields, signature algorithm).",
	CodeSNPCertMissing:        "No VCEK/VLEK certificate was found in the evidence or the collateral.",
	CodeSNPChainInvalid:       "The VCEK/VLEK does not chain to the pinned ARK of its product line through the ASK/ASVK.",
	CodeSNPCertExpired:        "A certificate in the AMD chain is outside its validity period.",
	CodeSNPSigningKeyMismatch: "The report's SIGNING_KEY field and the endorsement certificate kind (VCEK/VLEK) disagree.",
	CodeSNPChipIDMismatch:     "The VCEK's hwID extension differs from the report's CHIP_ID.",
	CodeSNPTCBMismatch:        "The endorsement key certificate's TCB extensions differ from REPORTED_TCB.",
	CodeSNPReportSignature:    "The ECDSA P-384 signature over report bytes 0x000–0x29F does not verify.",
	CodeSNPCRLInvalid:         "The AMD CRL is not signed by the ARK or cannot be parsed.",
	CodeSNPCRLStale:           "The AMD CRL is outside its thisUpdate/nextUpdate window.",
	CodeSNPCertRevoked:        "The ASK/ASVK or the VCEK/VLEK is listed in the AMD CRL.",
	CodeSNPDebug:              "Guest policy allows DEBUG.",
	CodeSNPMigrateMA:          "Guest policy allows a migration agent and the policy does not.",
	CodeSNPSMT:                "Guest policy or platform allows SMT and the policy does not.",
	CodeSNPABI:                "Guest policy's minimum ABI is below the policy's minimum.",
	CodeSNPGuestPolicy:        "Guest policy has unknown or forbidden bits set.",
	CodeSNPVMPL:               "The report's VMPL is not the expected level.",
	CodeSNPTCBBelowFloor:      "REPORTED_TCB is below the policy's floor for the product line.",
	CodeSNPCommittedTCB:       "COMMITTED_TCB differs from CURRENT_TCB and the policy requires them equal.",
	CodeSNPMeasurement:        "MEASUREMENT is not one of the policy's reference values.",
	CodeSNPHostData:           "HOST_DATA is not one of the policy's reference values.",
	CodeSNPIDKeyDigest:        "ID_KEY_DIGEST is not one of the policy's reference values.",
	CodeSNPAuthorKeyDigest:    "AUTHOR_KEY_DIGEST is not one of the policy's reference values.",
	CodeSNPFamilyID:           "FAMILY_ID is not one of the policy's reference values.",
	CodeSNPImageID:            "IMAGE_ID is not one of the policy's reference values.",
	CodeSNPGuestSVN:           "GUEST_SVN is below the policy's minimum.",
	CodeSNPPlatformInfo:       "PLATFORM_INFO does not meet the policy (SMT, TSME, …).",

	CodeTPMMissing:         "The policy requires a vTPM quote and the evidence carries none.",
	CodeTPMQuoteMalformed:  "The vTPM quote, signature or attestation key failed strict parsing (sizes, counts, trailing bytes).",
	CodeTPMMagic:           "TPMS_ATTEST.magic is not TPM_GENERATED_VALUE: the TPM did not produce this structure.",
	CodeTPMAttestType:      "TPMS_ATTEST.type is not TPM_ST_ATTEST_QUOTE.",
	CodeTPMNonceMismatch:   "The quote's extraData is not SHA-256(\"proofline/v1/tpm\" ‖ nonce ‖ SHA-256(runtime_data)).",
	CodeTPMPCRSelection:    "The quoted PCR selection is not exactly the policy's (a PCR missing or extra).",
	CodeTPMPCRBank:         "The quote or the supplied PCR values use a bank other than the policy's.",
	CodeTPMPCRDuplicate:    "A PCR bank or index appears twice in the quote's selection or in the supplied PCR values.",
	CodeTPMPCRDigest:       "The quote's pcrDigest is not the hash of the supplied PCR values in selection order.",
	CodeTPMSignature:       "The quote signature does not verify with the attestation key.",
	CodeTPMAKInvalid:       "The attestation key is not a restricted, fixedTPM signing key of a supported algorithm.",
	CodeTPMAKNotBound:      "The attestation key's digest is not bound to the hardware report through runtime_data and REPORT_DATA.",
	CodeTPMPCRValue:        "A quoted PCR is not one of the policy's reference values.",
	CodeEventLogMissing:    "The policy appraises measured boot and the evidence carries no event log for it.",
	CodeEventLogMalformed:  "An event log failed to parse.",
	CodeEventLogReplay:     "An event log does not replay to the quoted PCRs or the TDX RTMRs.",
	CodeEventLogEvent:      "An event the policy pins (register and digest) is not in the replayed event log.",
	CodeEventLogCmdline:    "The kernel command line measured in the event log is not one the policy accepts.",
	CodeEventLogUnexpected: "A closed register of the event log has an event that is not one of the policy's events for it.",
	CodeTPMGuestAttested:   "Warning: the vTPM attestation key is vouched for by the guest OS that wrote REPORT_DATA, and the policy pins no hardware measurement of that OS.",
}
