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
	// TPM and EventLogs are reserved for the vTPM and event-log evidence; kept verbatim.
	TPM       json.RawMessage `json:"tpm,omitempty"`
	EventLogs json.RawMessage `json:"event_logs,omitempty"`
}

// DecodeEvidence parses and validates an envelope. Unknown fields are rejected so that a typo
// in a producer never silently drops evidence.
func DecodeEvidence(data []byte) (*Evidence, error) {
	if len(data) > MaxEnvelopeSize {
		return nil, fmt.Errorf("%w: %d bytes exceeds the %d-byte limit", ErrMalformed, len(data), MaxEnvelopeSize)
	}
	trimmed := bytes.TrimSpace(data)
	if !json.Valid(trimmed) || len(trimmed) == 0 || trimmed[0] != '{' {
		return nil, ErrNotJSON
	}
	if err := checkKeys(trimmed); err != nil {
		return nil, err
	}
	dec := json.NewDecoder(bytes.NewReader(trimmed))
	dec.DisallowUnknownFields()
	var ev Evidence
	if err := dec.Decode(&ev); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	if err := ev.Validate(); err != nil {
		return nil, err
	}
	return &ev, nil
}

// fields are the envelope's keys, matched exactly: encoding/json alone would match them
// case-insensitively and let a later duplicate win, so two readers of one envelope could see two
// different runtime_data values.
var fields = map[string]bool{
	"version": true, "platform": true, "report": true, "certificates": true,
	"nonce": true, "runtime_data": true, "tpm": true, "event_logs": true,
}

// checkKeys requires every top-level key to be spelled exactly as in the schema and to appear
// once, and tpm and event_logs to be JSON objects.
func checkKeys(data []byte) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	if _, err := dec.Token(); err != nil { // the opening brace; DecodeEvidence checked it is one
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
		case !fields[key]:
			return fmt.Errorf("%w: unknown field %q (field names are lower case, as in the schema)", ErrMalformed, key)
		case seen[key]:
			return fmt.Errorf("%w: field %q appears twice", ErrMalformed, key)
		}
		seen[key] = true
		var raw json.RawMessage
		if err := dec.Decode(&raw); err != nil {
			return fmt.Errorf("%w: %v", ErrMalformed, err)
		}
		if (key == "tpm" || key == "event_logs") && (len(raw) == 0 || raw[0] != '{') {
			return fmt.Errorf("%w: %s must be a JSON object", ErrMalformed, key)
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
