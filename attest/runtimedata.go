package attest

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
)

// RuntimeData is the JSON object the Proofline agent puts in runtime_data. REPORT_DATA binds its
// exact bytes, so every field here is vouched for by the hardware report once the nonce binding
// holds. Other producers may put anything in runtime_data; the verifier reads it only to bind a
// vTPM attestation key, and then requires this form.
type RuntimeData struct {
	// PublicKey is the agent's own public key (PKIX DER) that relying parties wrap secrets to.
	PublicKey []byte `json:"public_key,omitempty"`
	// TPMAKDigest is the lower-case hex SHA-256 of the vTPM attestation key's TPMT_PUBLIC, exactly
	// the bytes of the envelope's tpm.ak_public.
	TPMAKDigest string `json:"tpm_ak_sha256,omitempty"`
}

// ErrRuntimeData is wrapped by ParseRuntimeData's errors.
var ErrRuntimeData = errors.New("runtime_data is not the agent's JSON object")

// ParseRuntimeData reads runtime_data as the agent's JSON object. Keys the agent does not define
// are allowed (and ignored) so that producers can carry their own data, but every key must be
// unique, and a key that differs from a defined one only in case is refused: encoding/json would
// match it, so two readers could disagree on which value was bound.
func ParseRuntimeData(b []byte) (*RuntimeData, error) {
	trimmed := bytes.TrimSpace(b)
	if len(trimmed) == 0 || trimmed[0] != '{' || !json.Valid(trimmed) {
		return nil, fmt.Errorf("%w: not a JSON object", ErrRuntimeData)
	}
	dec := json.NewDecoder(bytes.NewReader(trimmed))
	dec.Token() // the opening brace, checked above
	seen := map[string]bool{}
	var rd RuntimeData
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil, fmt.Errorf("%w: %v", ErrRuntimeData, err)
		}
		key, _ := tok.(string)
		if seen[key] {
			return nil, fmt.Errorf("%w: key %q appears twice", ErrRuntimeData, key)
		}
		seen[key] = true
		var raw json.RawMessage
		if err := dec.Decode(&raw); err != nil {
			return nil, fmt.Errorf("%w: %v", ErrRuntimeData, err)
		}
		switch {
		case key == "public_key":
			if err := json.Unmarshal(raw, &rd.PublicKey); err != nil {
				return nil, fmt.Errorf("%w: public_key is not base64: %v", ErrRuntimeData, err)
			}
		case key == "tpm_ak_sha256":
			if err := json.Unmarshal(raw, &rd.TPMAKDigest); err != nil {
				return nil, fmt.Errorf("%w: tpm_ak_sha256 is not a string", ErrRuntimeData)
			}
			if d, err := hex.DecodeString(rd.TPMAKDigest); err != nil || len(d) != 32 || strings.ToLower(rd.TPMAKDigest) != rd.TPMAKDigest {
				return nil, fmt.Errorf("%w: tpm_ak_sha256 is not 64 lower-case hex digits", ErrRuntimeData)
			}
		case strings.EqualFold(key, "public_key") || strings.EqualFold(key, "tpm_ak_sha256"):
			return nil, fmt.Errorf("%w: key %q differs from a defined key only in case", ErrRuntimeData, key)
		}
	}
	return &rd, nil
}

// Encode returns the compact JSON form the agent puts in runtime_data.
func (rd *RuntimeData) Encode() []byte {
	b, _ := json.Marshal(rd) // a struct of a byte slice and a string always marshals
	return b
}
