package ear

import (
	"encoding/hex"
	"encoding/json"
	"fmt"
	"time"
)

// Hex is a byte string that encodes as lower-case hex in JSON.
type Hex []byte

// MarshalText implements encoding.TextMarshaler, so encoding/json writes the hex as a JSON
// string. (A MarshalJSON would be slower for the same bytes: encoding/json re-validates and
// copies whatever MarshalJSON returns, for each of a result's many Hex claims.)
func (h Hex) MarshalText() ([]byte, error) {
	out := make([]byte, hex.EncodedLen(len(h)))
	hex.Encode(out, h)
	return out, nil
}

// UnmarshalJSON implements json.Unmarshaler.
func (h *Hex) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return err
	}
	v, err := hex.DecodeString(s)
	if err != nil {
		return fmt.Errorf("not hex: %w", err)
	}
	*h = v
	return nil
}

// CollateralInfo describes one piece of vendor collateral an appraisal used.
type CollateralInfo struct {
	Kind string `json:"kind"`
	URL  string `json:"url"`
	// Digest is "sha256:<hex>" of the recorded response (collateral.Response.Digest).
	Digest     string     `json:"digest"`
	IssuedAt   *time.Time `json:"issued_at,omitempty"`
	NextUpdate *time.Time `json:"next_update,omitempty"`
}

// TDXClaims are the claims established from a TDX quote.
type TDXClaims struct {
	QuoteVersion   int    `json:"quote_version"`
	TeeTCBSVN      Hex    `json:"tee_tcb_svn"`
	MRSeam         Hex    `json:"mr_seam"`
	MRSignerSeam   Hex    `json:"mr_signer_seam"`
	SeamAttributes Hex    `json:"seam_attributes"`
	TDAttributes   Hex    `json:"td_attributes"`
	XFAM           Hex    `json:"xfam"`
	MRTD           Hex    `json:"mr_td"`
	MRConfigID     Hex    `json:"mr_config_id"`
	MROwner        Hex    `json:"mr_owner"`
	MROwnerConfig  Hex    `json:"mr_owner_config"`
	RTMRs          [4]Hex `json:"rtmrs"`
	ReportData     Hex    `json:"report_data"`
	TeeTCBSVN2     Hex    `json:"tee_tcb_svn2,omitempty"`
	MRServiceTD    Hex    `json:"mr_service_td,omitempty"`
	// Decoded TD_ATTRIBUTES flags.
	Debug         bool `json:"debug"`
	SeptVEDisable bool `json:"sept_ve_disable"`
	Migratable    bool `json:"migratable"`

	FMSPC string  `json:"fmspc,omitempty"`
	PCEID string  `json:"pceid,omitempty"`
	TCB   *TDXTCB `json:"tcb,omitempty"`
	QE    *TDXQE  `json:"qe"`
	// Collateral lists every collateral item the appraisal used, in a fixed order.
	Collateral []CollateralInfo `json:"collateral"`
	// TPM holds what a verified vTPM quote established; absent without one.
	TPM *TPMClaims `json:"tpm,omitempty"`
	// EventLogs holds what each replayed event log established, in a fixed order (ccel, tcg).
	EventLogs []EventLogClaims `json:"event_logs,omitempty"`
}

// TDXQE describes the quoting enclave that signed the quote.
type TDXQE struct {
	MRSigner  Hex    `json:"mr_signer"`
	ISVProdID uint16 `json:"isv_prod_id"`
	ISVSVN    uint16 `json:"isv_svn"`
	// TCBStatus is the QE identity's status for ISVSVN; empty when not evaluated.
	TCBStatus   string   `json:"tcb_status,omitempty"`
	AdvisoryIDs []string `json:"advisory_ids,omitempty"`
}

// TDXTCB is the platform TCB level the verifier's own evaluation selected from the TCB info.
type TDXTCB struct {
	Status               string    `json:"status"`
	Date                 string    `json:"date,omitempty"`
	AdvisoryIDs          []string  `json:"advisory_ids,omitempty"`
	EvaluationDataNumber int       `json:"tcb_evaluation_data_number"`
	TCBInfoIssueDate     time.Time `json:"tcb_info_issue_date"`
	TCBInfoNextUpdate    time.Time `json:"tcb_info_next_update"`
	QEIdentityIssueDate  time.Time `json:"qe_identity_issue_date"`
	QEIdentityNextUpdate time.Time `json:"qe_identity_next_update"`
	TDXModuleIdentity    string    `json:"tdx_module_identity,omitempty"`
	TDXModuleStatus      string    `json:"tdx_module_status,omitempty"`
}

// SNPClaims are the claims established from an SEV-SNP report.
type SNPClaims struct {
	Version         uint32 `json:"version"`
	ProductLine     string `json:"product_line,omitempty"`
	SigningKey      string `json:"signing_key"`
	GuestSVN        uint32 `json:"guest_svn"`
	Policy          string `json:"policy"`
	Debug           bool   `json:"debug"`
	MigrateMA       bool   `json:"migrate_ma"`
	SMT             bool   `json:"smt"`
	ABIMajor        uint8  `json:"abi_major"`
	ABIMinor        uint8  `json:"abi_minor"`
	FamilyID        Hex    `json:"family_id"`
	ImageID         Hex    `json:"image_id"`
	VMPL            uint32 `json:"vmpl"`
	CurrentTCB      SNPTCB `json:"current_tcb"`
	ReportedTCB     SNPTCB `json:"reported_tcb"`
	CommittedTCB    SNPTCB `json:"committed_tcb"`
	LaunchTCB       SNPTCB `json:"launch_tcb"`
	PlatformInfo    string `json:"platform_info"`
	ReportData      Hex    `json:"report_data"`
	Measurement     Hex    `json:"measurement"`
	HostData        Hex    `json:"host_data"`
	IDKeyDigest     Hex    `json:"id_key_digest"`
	AuthorKeyDigest Hex    `json:"author_key_digest"`
	ReportID        Hex    `json:"report_id"`
	ChipID          Hex    `json:"chip_id"`
	// Collateral lists every collateral item the appraisal used, in a fixed order.
	Collateral []CollateralInfo `json:"collateral"`
	// TPM holds what a verified vTPM quote established; absent without one.
	TPM *TPMClaims `json:"tpm,omitempty"`
	// EventLogs holds what each replayed event log established, in a fixed order (ccel, tcg).
	EventLogs []EventLogClaims `json:"event_logs,omitempty"`
}

// SNPTCB is a decomposed SEV-SNP TCB_VERSION.
type SNPTCB struct {
	Raw        string `json:"raw"`
	Bootloader uint8  `json:"bootloader"`
	TEE        uint8  `json:"tee"`
	SNP        uint8  `json:"snp"`
	Microcode  uint8  `json:"microcode"`
	FMC        uint8  `json:"fmc,omitempty"`
}

// TPMClaims are the facts a verified vTPM quote established. They are present only when the
// quote's signature and PCR digest verified; AKBound says whether the attestation key is bound to
// the hardware report (without that, the quote proves nothing about this VM and the result is
// contraindicated).
type TPMClaims struct {
	// AKDigest is the SHA-256 of the attestation key's TPMT_PUBLIC.
	AKDigest    Hex    `json:"ak_sha256"`
	AKAlgorithm string `json:"ak_algorithm"`
	AKBound     bool   `json:"ak_bound"`
	PCRBank     string `json:"pcr_bank"`
	// PCRs are the quoted PCR values keyed by decimal index.
	PCRs map[string]Hex `json:"pcrs"`
	// FirmwareVersion is the TPM's TPMS_ATTEST.firmwareVersion, as hex.
	FirmwareVersion string `json:"firmware_version"`
	// ResetCount and RestartCount come from TPMS_ATTEST.clockInfo: a change between two quotes
	// of one VM means a reboot or a TPM restart in between.
	ResetCount   uint32 `json:"reset_count"`
	RestartCount uint32 `json:"restart_count"`
}

// EventLogClaims are the facts a replayed event log established.
type EventLogClaims struct {
	// Kind is "ccel" (TDX RTMR0–3) or "tcg" (the vTPM PCRs).
	Kind string `json:"kind"`
	Bank string `json:"bank"`
	// Events is the number of events that replayed into the quoted registers.
	Events int `json:"events"`
	// KernelCmdlines are the kernel command lines measured in the log whose event data the
	// event digest covers.
	KernelCmdlines []string `json:"kernel_cmdlines,omitempty"`
}
