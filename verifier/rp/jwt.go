package rp

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"

	"github.com/go-jose/go-jose/v4"
	"github.com/proofline/proofline/verifier/token"
)

// jwsAlgorithms is the JWS allow-list (RFC 7518 §3.1 names).
var jwsAlgorithms = []jose.SignatureAlgorithm{jose.ES256, jose.ES384}

// keyHeaders are the JWS header parameters that carry or point to a key or certificate
// (RFC 7515 §4.1.2–4.1.8). Honouring any of them lets the token choose its own verification key.
var keyHeaders = []string{"jwk", "jku", "x5c", "x5u", "x5t", "x5t#S256"}

// VerifyJWT verifies a JWT in JWS compact serialization (RFC 7515 §7.1) and returns its claims.
// The header is checked by this package before go-jose sees the token: go-jose has no "none"
// algorithm, but it parses and keeps an embedded "jwk", ignores x5c/jku/x5u unless asked, and
// accepts a "crit" naming "b64" (RFC 7797).
func (v *Verifier) VerifyJWT(tok string) (*Claims, error) {
	if len(tok) > maxTokenSize {
		return nil, fmt.Errorf("%w: %d bytes, more than %d", ErrMalformed, len(tok), maxTokenSize)
	}
	parts := strings.Split(tok, ".")
	if len(parts) != 3 {
		return nil, fmt.Errorf("%w: %d dot-separated parts, want 3 (JWS compact serialization)", ErrMalformed, len(parts))
	}
	raw, err := base64.RawURLEncoding.Strict().DecodeString(parts[0])
	if err != nil {
		return nil, fmt.Errorf("%w: header is not base64url: %w", ErrMalformed, err)
	}
	hdr, err := jsonObject(raw)
	if err != nil {
		return nil, fmt.Errorf("%w: header: %w", ErrMalformed, err)
	}
	alg, err := stringParam(hdr, "alg")
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrAlgorithm, err)
	}
	if !slices.Contains(jwsAlgorithms, jose.SignatureAlgorithm(alg)) {
		return nil, fmt.Errorf("%w: %q; only ES256 and ES384 are accepted", ErrAlgorithm, alg)
	}
	if _, ok := hdr["crit"]; ok {
		return nil, fmt.Errorf("%w: crit (no extension is understood, RFC 7515 §4.1.11)", ErrHeader)
	}
	names := make([]string, 0, len(hdr))
	for name := range hdr {
		names = append(names, name)
	}
	slices.Sort(names)
	for _, name := range names {
		switch {
		case name == "alg" || name == "kid" || name == "typ":
		case slices.Contains(keyHeaders, name):
			return nil, fmt.Errorf("%w: %q (the verification key comes from the JWKS only)", ErrHeader, name)
		default:
			return nil, fmt.Errorf("%w: unknown parameter %q", ErrHeader, name)
		}
	}
	if typ, err := stringParam(hdr, "typ"); err != nil || typ != token.JWTType {
		return nil, fmt.Errorf("%w: typ must be %q", ErrHeader, token.JWTType)
	}
	kid, err := stringParam(hdr, "kid")
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrUnknownKey, err)
	}
	k, ok := v.keys[kid]
	if !ok {
		return nil, fmt.Errorf("%w: kid %q is not an ES256/ES384 key of the JWKS", ErrUnknownKey, kid)
	}
	if jose.SignatureAlgorithm(alg) != k.alg {
		return nil, fmt.Errorf("%w: %s, but key %s is %s", ErrAlgorithm, alg, kid, k.alg)
	}
	jws, err := jose.ParseSignedCompact(tok, []jose.SignatureAlgorithm{k.alg})
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrMalformed, err)
	}
	payload, err := jws.Verify(k.pub)
	if err != nil {
		return nil, fmt.Errorf("%w: key %s: %w", ErrSignature, kid, err)
	}
	c, err := token.ParseJWTPayload(payload)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrMalformed, err)
	}
	return v.check(c, kid)
}

// jsonObject decodes one JSON object into its members, refusing duplicate names (RFC 7515 §4:
// "MUST either reject … or use a JSON parser that returns only the lexically last duplicate"),
// so that this package and go-jose cannot read different values for one parameter.
func jsonObject(b []byte) (map[string]json.RawMessage, error) {
	dec := json.NewDecoder(bytes.NewReader(b))
	if t, err := dec.Token(); err != nil || t != json.Delim('{') {
		return nil, errors.New("not a JSON object")
	}
	m := map[string]json.RawMessage{}
	for dec.More() {
		t, err := dec.Token()
		if err != nil {
			return nil, err
		}
		name, ok := t.(string)
		if !ok {
			return nil, errors.New("not a JSON object")
		}
		if _, dup := m[name]; dup {
			return nil, fmt.Errorf("duplicate parameter %q", name)
		}
		var v json.RawMessage
		if err := dec.Decode(&v); err != nil {
			return nil, err
		}
		m[name] = v
	}
	if _, err := dec.Token(); err != nil {
		return nil, err
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, errors.New("data after the JSON object")
	}
	return m, nil
}

func stringParam(hdr map[string]json.RawMessage, name string) (string, error) {
	raw, ok := hdr[name]
	if !ok {
		return "", fmt.Errorf("no %q header parameter", name)
	}
	var s string
	if err := json.Unmarshal(raw, &s); err != nil || s == "" {
		return "", fmt.Errorf("header parameter %q is not a non-empty string", name)
	}
	return s, nil
}
