// Package attest holds the wire types that travel from a confidential VM to the verifier: the
// evidence envelope and the nonce binding carried in the hardware REPORT_DATA. It contains no
// device code; collectors live in its sub-packages.
//
// The envelope is a public contract, documented with a JSON Schema in README.md.
package attest

import (
	"bytes"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
)

// Platform names the kind of hardware report an envelope carries.
type Platform string

// Platforms that the verifier understands.
const (
	PlatformTDX Platform = "tdx"
	PlatformSNP Platform = "sev-snp"
)

// Version is the only envelope version this package reads and writes.
const Version = 1

// Size bounds. They are far above any real report and exist so that a hostile envelope cannot
// make the verifier allocate or hash without limit.
const (
	// MaxEnvelopeSize bounds the JSON envelope read by DecodeEvidence.
	MaxEnvelopeSize = 16 << 20
	// MaxReportSize bounds the decoded hardware report (a TDX quote is ~5 KiB, an SNP report 1184 bytes).
	MaxReportSize = 64 << 10
	// MaxCertificates bounds the number of certificates in the envelope.
	MaxCertificates = 8
	// MaxRuntimeDataSize bounds runtime_data.
	MaxRuntimeDataSize = 64 << 10
	// NonceSize is the size of a verifier-issued nonce.
	NonceSize = 32
	// MaxTPMStructSize bounds each vTPM structure (a quote is a few hundred bytes).
	MaxTPMStructSize = 64 << 10
	// MaxPCRs bounds the PCR values carried with a vTPM quote (24 PCRs in two banks is 48).
	MaxPCRs = 64
	// MaxEventLogSize bounds each event log. Real logs are 20–60 KiB (TCG) and a 256 KiB
	// padded area (CCEL).
	MaxEventLogSize = 2 << 20
)

// ErrMalformed is wrapped by every error DecodeEvidence returns for an envelope that is valid
// JSON but does not follow the schema.
var ErrMalformed = errors.New("malformed evidence envelope")

// ErrNotJSON is wrapped by DecodeEvidence when the input is not a JSON object at all.
var ErrNotJSON = errors.New("evidence envelope is not valid JSON")

// Evidence is the envelope an agent submits. Byte fields are standard base64 with padding on the
// wire. Fields for later platforms and the vTPM are carried through untouched.
type Evidence struct {
	Version  int      `json:"version"`
	Platform Platform `json:"platform"`
	// Report is the raw hardware report: a TDX quote (v4 or v5) or an SEV-SNP ATTESTATION_REPORT.
	Report []byte `json:"report"`
	// Certificates are DER certificates the platform provided. For SEV-SNP: the VCEK or VLEK and
	// optionally ASK/ASVK/ARK in any order; the verifier identifies them by content.
	Certificates [][]byte `json:"certificates,omitempty"`
	// Nonce is the verifier nonce the agent bound into REPORT_DATA.
	Nonce []byte `json:"nonce,omitempty"`
	// RuntimeData is the exact byte string whose SHA-256 is bound into REPORT_DATA.
	RuntimeData []byte `json:"runtime_data,omitempty"`
	// TPM is a vTPM quote, present when the VM has a vTPM.
	TPM *TPM `json:"tpm,omitempty"`
	// EventLogs are the measured-boot event logs behind the quoted registers.
	EventLogs *EventLogs `json:"event_logs,omitempty"`
}

// TPM is a vTPM quote with what the verifier needs to check it. Each TPM structure is carried
// exactly as the TPM marshals it (big-endian, TPM 2.0 Library Part 2), without its TPM2B size.
type TPM struct {
	// AKPublic is the attestation key's TPMT_PUBLIC. Its SHA-256 is bound to the hardware report
	// through runtime_data (RuntimeData.TPMAKDigest).
	AKPublic []byte `json:"ak_public"`
	// Quote is the TPMS_ATTEST the TPM produced for TPM2_Quote.
	Quote []byte `json:"quote"`
	// Signature is the TPMT_SIGNATURE over Quote by the attestation key.
	Signature []byte `json:"signature"`
	// PCRs are the values of the quoted PCRs, one entry per (bank, index), in any order.
	PCRs []PCR `json:"pcrs"`
}

// PCR is the value of one PCR in one bank.
type PCR struct {
	// Bank is the PCR bank's hash algorithm: "sha1", "sha256", "sha384" or "sha512".
	Bank string `json:"bank"`
	// Index is the PCR index, 0–23.
	Index int `json:"index"`
	// Digest is the PCR value, the size of the bank's hash.
	Digest []byte `json:"digest"`
}

// EventLogs are measured-boot event logs, each exactly as the firmware wrote it.
type EventLogs struct {
	// TCG is the TCG PC Client Platform Firmware Profile event log of the vTPM's PCRs
	// (Linux: /sys/kernel/security/tpm0/binary_bios_measurements), SHA-1 or crypto-agile format.
	TCG []byte `json:"tcg,omitempty"`
	// CCEL is the TDX confidential-computing event log of RTMR0–3, the log area the ACPI CCEL
	// table points to (Linux: /sys/firmware/acpi/tables/data/CCEL), trailing padding included.
	CCEL []byte `json:"ccel,omitempty"`
}

// DecodeEvidence parses and validates an envelope. Unknown fields are rejected so that a typo
// in a producer never silently drops evidence.
//
// It reads the envelope in one pass: the top-level keys are matched exactly as they stream by
// and each value is decoded straight into its field (an envelope is scanned twice, not five
// times as by validating, checking the keys and decoding separately; it is on the path of every
// attestation). Only an envelope that fails is looked at again, to tell ErrNotJSON from
// ErrMalformed.
func DecodeEvidence(data []byte) (*Evidence, error) {
	if len(data) > MaxEnvelopeSize {
		return nil, fmt.Errorf("%w: %d bytes exceeds the %d-byte limit", ErrMalformed, len(data), MaxEnvelopeSize)
	}
	trimmed := bytes.TrimSpace(data)
	if len(trimmed) == 0 || trimmed[0] != '{' {
		return nil, ErrNotJSON
	}
	ev, err := decodeEnvelope(trimmed)
	if err != nil {
		if !json.Valid(trimmed) {
			return nil, ErrNotJSON
		}
		return nil, err
	}
	if err := ev.Validate(); err != nil {
		return nil, err
	}
	return ev, nil
}

// decodeEnvelope decodes the JSON object data, requiring every top-level key to be spelled
// exactly as in the schema and to appear once, nothing after the object, and tpm and
// event_logs to be JSON objects with exactly spelled keys (checkObject). Its errors wrap
// ErrMalformed; data that is not valid JSON also fails here, and DecodeEvidence tells which.
func decodeEnvelope(data []byte) (*Evidence, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	if _, err := dec.Token(); err != nil { // the opening brace; DecodeEvidence checked it is one
		return nil, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	var (
		ev   Evidence
		seen [len(fieldNames)]bool
	)
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil, fmt.Errorf("%w: %v", ErrMalformed, err)
		}
		key, _ := tok.(string)
		i := slices.Index(fieldNames[:], key)
		switch {
		case i < 0:
			return nil, fmt.Errorf("%w: unknown field %q (field names are lower case, as in the schema)", ErrMalformed, key)
		case seen[i]:
			return nil, fmt.Errorf("%w: field %q appears twice", ErrMalformed, key)
		}
		seen[i] = true
		switch key {
		case "version":
			err = dec.Decode(&ev.Version)
		case "platform":
			err = dec.Decode(&ev.Platform)
		case "report":
			err = dec.Decode(&ev.Report)
		case "certificates":
			err = dec.Decode(&ev.Certificates)
		case "nonce":
			err = dec.Decode(&ev.Nonce)
		case "runtime_data":
			err = dec.Decode(&ev.RuntimeData)
		case "tpm":
			err = decodeChecked(dec, &ev.TPM, func(raw json.RawMessage) error {
				if err := checkObject(raw, "tpm", tpmFields); err != nil {
					return err
				}
				return checkPCRList(raw)
			})
		case "event_logs":
			err = decodeChecked(dec, &ev.EventLogs, func(raw json.RawMessage) error {
				return checkObject(raw, "event_logs", eventLogFields)
			})
		}
		if err != nil {
			if errors.Is(err, ErrMalformed) {
				return nil, err
			}
			return nil, fmt.Errorf("%w: %s: %v", ErrMalformed, key, err)
		}
	}
	if _, err := dec.Token(); err != nil { // the closing brace
		return nil, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, fmt.Errorf("%w: data after the envelope", ErrMalformed)
	}
	return &ev, nil
}

// decodeChecked reads the next value of dec, holds it to check and decodes it into v. The
// optional parts of an envelope (vTPM quote, event logs) take this slower path.
func decodeChecked(dec *json.Decoder, v any, check func(json.RawMessage) error) error {
	var raw json.RawMessage
	if err := dec.Decode(&raw); err != nil {
		return err
	}
	if err := check(raw); err != nil {
		return err
	}
	return json.Unmarshal(raw, v)
}

// fieldNames are the envelope's keys, matched exactly: encoding/json alone would match them
// case-insensitively and let a later duplicate win, so two readers of one envelope could see two
// different runtime_data values.
var fieldNames = [...]string{"version", "platform", "report", "certificates", "nonce", "runtime_data", "tpm", "event_logs"}

var (
	tpmFields      = map[string]bool{"ak_public": true, "quote": true, "signature": true, "pcrs": true}
	eventLogFields = map[string]bool{"tcg": true, "ccel": true}
	pcrFields      = map[string]bool{"bank": true, "index": true, "digest": true}
)

// checkObject requires raw to be a JSON object whose keys are spelled exactly as in the schema
// and appear once.
func checkObject(raw json.RawMessage, name string, allowed map[string]bool) error {
	if len(raw) == 0 || raw[0] != '{' {
		return fmt.Errorf("%w: %s must be a JSON object", ErrMalformed, name)
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	if _, err := dec.Token(); err != nil {
		return fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	seen := map[string]bool{}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return fmt.Errorf("%w: %v", ErrMalformed, err)
		}
		key, _ := tok.(string)
		switch {
		case !allowed[key]:
			return fmt.Errorf("%w: unknown field %q in %s (field names are lower case, as in the schema)", ErrMalformed, key, name)
		case seen[key]:
			return fmt.Errorf("%w: field %q appears twice in %s", ErrMalformed, key, name)
		}
		seen[key] = true
		var v json.RawMessage
		if err := dec.Decode(&v); err != nil {
			return fmt.Errorf("%w: %v", ErrMalformed, err)
		}
	}
	return nil
}

// checkPCRList applies checkObject to every entry of tpm.pcrs, after bounding their number so
// that a hostile list costs no more than MaxPCRs objects.
func checkPCRList(rawTPM json.RawMessage) error {
	var t struct {
		PCRs []json.RawMessage `json:"pcrs"`
	}
	if err := json.Unmarshal(rawTPM, &t); err != nil {
		return fmt.Errorf("%w: tpm: %v", ErrMalformed, err)
	}
	if len(t.PCRs) > MaxPCRs {
		return fmt.Errorf("%w: tpm.pcrs has %d entries, over the limit of %d", ErrMalformed, len(t.PCRs), MaxPCRs)
	}
	for i, p := range t.PCRs {
		if err := checkObject(p, fmt.Sprintf("tpm.pcrs[%d]", i), pcrFields); err != nil {
			return err
		}
	}
	return nil
}

// Validate checks the envelope's fields against the schema and the size bounds.
func (ev *Evidence) Validate() error {
	switch {
	case ev.Version != Version:
		return fmt.Errorf("%w: version %d is not supported (want %d)", ErrMalformed, ev.Version, Version)
	case ev.Platform != PlatformTDX && ev.Platform != PlatformSNP:
		return fmt.Errorf("%w: platform %q is not one of %q, %q", ErrMalformed, ev.Platform, PlatformTDX, PlatformSNP)
	case len(ev.Report) == 0:
		return fmt.Errorf("%w: report is empty", ErrMalformed)
	case len(ev.Report) > MaxReportSize:
		return fmt.Errorf("%w: report is %d bytes, over the %d-byte limit", ErrMalformed, len(ev.Report), MaxReportSize)
	case len(ev.Certificates) > MaxCertificates:
		return fmt.Errorf("%w: %d certificates, over the limit of %d", ErrMalformed, len(ev.Certificates), MaxCertificates)
	case ev.Nonce != nil && len(ev.Nonce) != NonceSize:
		return fmt.Errorf("%w: nonce is %d bytes, want %d", ErrMalformed, len(ev.Nonce), NonceSize)
	case len(ev.RuntimeData) > MaxRuntimeDataSize:
		return fmt.Errorf("%w: runtime_data is %d bytes, over the %d-byte limit", ErrMalformed, len(ev.RuntimeData), MaxRuntimeDataSize)
	}
	for i, c := range ev.Certificates {
		if len(c) == 0 {
			return fmt.Errorf("%w: certificate %d is empty", ErrMalformed, i)
		}
	}
	if err := ev.TPM.validate(); err != nil {
		return err
	}
	return ev.EventLogs.validate()
}

func (t *TPM) validate() error {
	if t == nil {
		return nil
	}
	for name, b := range map[string][]byte{"ak_public": t.AKPublic, "quote": t.Quote, "signature": t.Signature} {
		switch {
		case len(b) == 0:
			return fmt.Errorf("%w: tpm.%s is missing or empty", ErrMalformed, name)
		case len(b) > MaxTPMStructSize:
			return fmt.Errorf("%w: tpm.%s is %d bytes, over the %d-byte limit", ErrMalformed, name, len(b), MaxTPMStructSize)
		}
	}
	switch {
	case len(t.PCRs) == 0:
		return fmt.Errorf("%w: tpm.pcrs is missing or empty", ErrMalformed)
	case len(t.PCRs) > MaxPCRs:
		return fmt.Errorf("%w: tpm.pcrs has %d entries, over the limit of %d", ErrMalformed, len(t.PCRs), MaxPCRs)
	}
	for i, p := range t.PCRs {
		if p.Index < 0 || p.Index > 23 {
			return fmt.Errorf("%w: tpm.pcrs[%d].index %d is not a PCR index (0–23)", ErrMalformed, i, p.Index)
		}
		if n, ok := pcrBankSizes[p.Bank]; !ok {
			return fmt.Errorf("%w: tpm.pcrs[%d].bank %q is not one of sha1, sha256, sha384, sha512", ErrMalformed, i, p.Bank)
		} else if len(p.Digest) != n {
			return fmt.Errorf("%w: tpm.pcrs[%d].digest is %d bytes, want %d for %s", ErrMalformed, i, len(p.Digest), n, p.Bank)
		}
	}
	return nil
}

// pcrBankSizes maps the PCR bank names of the envelope to their digest sizes.
var pcrBankSizes = map[string]int{"sha1": 20, "sha256": 32, "sha384": 48, "sha512": 64}

func (l *EventLogs) validate() error {
	if l == nil {
		return nil
	}
	switch {
	case l.TCG == nil && l.CCEL == nil:
		return fmt.Errorf("%w: event_logs holds no log (tcg or ccel)", ErrMalformed)
	case len(l.TCG) > MaxEventLogSize:
		return fmt.Errorf("%w: event_logs.tcg is %d bytes, over the %d-byte limit", ErrMalformed, len(l.TCG), MaxEventLogSize)
	case len(l.CCEL) > MaxEventLogSize:
		return fmt.Errorf("%w: event_logs.ccel is %d bytes, over the %d-byte limit", ErrMalformed, len(l.CCEL), MaxEventLogSize)
	}
	return nil
}

// Encode returns the canonical JSON form of the envelope.
func (ev *Evidence) Encode() ([]byte, error) {
	if err := ev.Validate(); err != nil {
		return nil, err
	}
	return json.MarshalIndent(ev, "", "  ")
}

// bindingLabel versions the REPORT_DATA binding; a new binding gets a new label.
const bindingLabel = "proofline/v1"

// tpmBindingLabel versions the vTPM extraData binding.
const tpmBindingLabel = "proofline/v1/tpm"

// ReportData returns the 64-byte REPORT_DATA that binds a verifier nonce and the runtime data:
//
//	REPORT_DATA = SHA-512("proofline/v1" ‖ nonce ‖ SHA-256(runtime_data))
//
// runtimeData is the exact byte string carried in the envelope (nil when absent).
func ReportData(nonce, runtimeData []byte) [64]byte {
	rd := sha256.Sum256(runtimeData)
	h := sha512.New()
	h.Write([]byte(bindingLabel))
	h.Write(nonce)
	h.Write(rd[:])
	var out [64]byte
	h.Sum(out[:0])
	return out
}

// TPMExtraData returns the vTPM quote's extraData for the same nonce and runtime data:
//
//	extraData = SHA-256("proofline/v1/tpm" ‖ nonce ‖ SHA-256(runtime_data))
func TPMExtraData(nonce, runtimeData []byte) [32]byte {
	rd := sha256.Sum256(runtimeData)
	h := sha256.New()
	h.Write([]byte(tpmBindingLabel))
	h.Write(nonce)
	h.Write(rd[:])
	var out [32]byte
	h.Sum(out[:0])
	return out
}
