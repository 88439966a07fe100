// Package ear holds the attestation result: EAR-style claims (draft-ietf-rats-ear) with an
// AR4SI trust vector (draft-ietf-rats-ar4si §2.3), the platform claims an appraisal established,
// and every failed check with a stable code.
//
// The JSON encoding of Result is a public contract (see verifier/README.md): field names and the
// meaning of every code in codes.go never change. Encoding is deterministic: the same Result
// always encodes to the same bytes.
package ear

import (
	"encoding/json"
	"time"
)

// Status is the overall appraisal status (EAR "ear.status").
type Status string

// Statuses in increasing order of severity.
const (
	StatusAffirming       Status = "affirming"
	StatusWarning         Status = "warning"
	StatusContraindicated Status = "contraindicated"
)

// Profile is the EAR profile this result follows.
const Profile = "tag:github.com,2023:veraison/ear"

// Finding is one failed check (in Failures) or one reason for a warning (in Warnings).
type Finding struct {
	// Code is a stable identifier from the table in codes.go and verifier/README.md.
	Code Code `json:"code"`
	// Check names the item of VERIFIER-CHECKS this finding belongs to, e.g. "tdx.6".
	Check string `json:"check"`
	// Message is a human sentence: what was found and, where it helps, what to do.
	Message string `json:"message"`
}

// PolicyRef names the policy an appraisal used.
type PolicyRef struct {
	ID     string `json:"id"`
	Digest string `json:"digest"`
}

// Result is the outcome of one verification.
type Result struct {
	Profile  string `json:"eat_profile"`
	Status   Status `json:"status"`
	Platform string `json:"platform,omitempty"`
	// VerifiedAt is the verification time every check used.
	VerifiedAt time.Time `json:"verified_at"`
	// TestRoots is true when the vendor roots were replaced (test mode or --roots).
	TestRoots   bool        `json:"test_roots"`
	Policy      PolicyRef   `json:"policy"`
	TrustVector TrustVector `json:"trust_vector"`
	// Claims are the platform claims the verifier established (TDXClaims or SNPClaims).
	Claims   any        `json:"claims,omitempty"`
	Failures []Finding  `json:"failures"`
	Warnings []Finding  `json:"warnings"`
	Verifier VerifierID `json:"verifier"`
}

// VerifierID identifies the software that produced a result.
type VerifierID struct {
	Name    string `json:"name"`
	Version string `json:"version"`
}

// Finalize derives Status from the findings: any failure is contraindicated, otherwise any
// warning caps the result at warning. It also makes empty lists encode as [] rather than null.
func (r *Result) Finalize() {
	if r.Failures == nil {
		r.Failures = []Finding{}
	}
	if r.Warnings == nil {
		r.Warnings = []Finding{}
	}
	r.Profile = Profile
	switch {
	case len(r.Failures) > 0:
		r.Status = StatusContraindicated
	case len(r.Warnings) > 0:
		r.Status = StatusWarning
	default:
		r.Status = StatusAffirming
	}
}

// Fail records a failed check.
func (r *Result) Fail(code Code, check, msg string) {
	r.Failures = append(r.Failures, Finding{Code: code, Check: check, Message: msg})
}

// Warn records a reason that caps the result at warning.
func (r *Result) Warn(code Code, check, msg string) {
	r.Warnings = append(r.Warnings, Finding{Code: code, Check: check, Message: msg})
}

// HasFailure reports whether a failure with the code was recorded.
func (r *Result) HasFailure(code Code) bool {
	for _, f := range r.Failures {
		if f.Code == code {
			return true
		}
	}
	return false
}

// HasWarning reports whether a warning with the code was recorded.
func (r *Result) HasWarning(code Code) bool {
	for _, f := range r.Warnings {
		if f.Code == code {
			return true
		}
	}
	return false
}

// MarshalIndent encodes the result deterministically with two-space indentation.
func (r *Result) MarshalIndent() ([]byte, error) {
	return json.MarshalIndent(r, "", "  ")
}

// TrustVector is the AR4SI trustworthiness vector. Each value is an AR4SI trustworthiness claim:
// 0 no claim, 2..31 affirming, 32..95 warning, 96..127 contraindicated, negative = verifier
// malfunction.
type TrustVector struct {
	InstanceIdentity int8 `json:"instance-identity"`
	Configuration    int8 `json:"configuration"`
	Executables      int8 `json:"executables"`
	FileSystem       int8 `json:"file-system"`
	Hardware         int8 `json:"hardware"`
	RuntimeOpaque    int8 `json:"runtime-opaque"`
	StorageOpaque    int8 `json:"storage-opaque"`
	SourcedData      int8 `json:"sourced-data"`
}

// AR4SI claim values used by Proofline (draft-ietf-rats-ar4si §2.3).
const (
	NoClaim                    int8 = 0
	UnexpectedEvidence         int8 = 1
	CryptoValidationFailed     int8 = 99
	TrustworthyInstance        int8 = 2
	UntrustworthyInstance      int8 = 96
	UnrecognizedInstance       int8 = 97
	ApprovedConfig             int8 = 2
	UnsafeConfig               int8 = 32
	UnsupportableConfig        int8 = 96
	ApprovedRuntime            int8 = 2
	UnrecognizedRuntime        int8 = 33
	ContraindicatedRuntime     int8 = 96
	GenuineHardware            int8 = 2
	UnsafeHardware             int8 = 32
	ContraindicatedHardware    int8 = 96
	UnrecognizedHardware       int8 = 97
	EncryptedMemoryRuntime     int8 = 2
	VisibleMemoryRuntime       int8 = 96
	HwKeysEncryptedSecrets     int8 = 2
	TrustworthySources         int8 = 2
	UntrustworthySources       int8 = 32
	ContraindicatedSourcedData int8 = 96
)
