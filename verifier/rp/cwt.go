package rp

import (
	"encoding/hex"
	"fmt"

	"github.com/proofline/proofline/verifier/token"
	"github.com/veraison/go-cose"
)

// COSE header labels that carry or point to a key or certificate: x5bag, x5chain, x5t, x5u
// (RFC 9360 §2), kcwt, kccs (RFC 9528).
var coseKeyHeaders = map[int64]string{32: "x5bag", 33: "x5chain", 34: "x5t", 35: "x5u", 13: "kcwt", 14: "kccs"}

// VerifyCWT verifies a CWT — a tagged COSE_Sign1 (RFC 9052 §4.2) whose payload is a CWT claims
// map (RFC 8392) — and returns its claims. The rules are VerifyJWT's: the protected header holds
// exactly alg, kid and typ, and the unprotected header is empty (an algorithm there is refused
// with ErrAlgorithm, anything else with ErrHeader).
func (v *Verifier) VerifyCWT(b []byte) (*Claims, error) {
	if len(b) > maxTokenSize {
		return nil, fmt.Errorf("%w: %d bytes, more than %d", ErrMalformed, len(b), maxTokenSize)
	}
	var msg cose.Sign1Message
	if err := msg.UnmarshalCBOR(b); err != nil {
		return nil, fmt.Errorf("%w: COSE_Sign1: %w", ErrMalformed, err)
	}
	if u := msg.Headers.Unprotected; len(u) != 0 {
		if _, ok := u[cose.HeaderLabelAlgorithm]; ok {
			return nil, fmt.Errorf("%w: alg in the unprotected header (it must be protected)", ErrAlgorithm)
		}
		return nil, fmt.Errorf("%w: the unprotected header must be empty", ErrHeader)
	}
	p := msg.Headers.Protected
	if _, ok := p[cose.HeaderLabelCritical]; ok {
		return nil, fmt.Errorf("%w: crit (no extension is understood, RFC 9052 §3.1)", ErrHeader)
	}
	alg, err := p.Algorithm()
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrAlgorithm, err)
	}
	if alg != cose.AlgorithmES256 && alg != cose.AlgorithmES384 {
		return nil, fmt.Errorf("%w: %v; only ES256 and ES384 are accepted", ErrAlgorithm, alg)
	}
	for label := range p {
		switch label {
		case cose.HeaderLabelAlgorithm, cose.HeaderLabelKeyID, cose.HeaderLabelType:
			continue
		}
		if l, ok := label.(int64); ok && coseKeyHeaders[l] != "" {
			return nil, fmt.Errorf("%w: %s (%d) (the verification key comes from the JWKS only)", ErrHeader, coseKeyHeaders[l], l)
		}
		return nil, fmt.Errorf("%w: unknown parameter %v", ErrHeader, label)
	}
	if typ, ok := p[cose.HeaderLabelType].(string); !ok || typ != token.CWTType {
		return nil, fmt.Errorf("%w: typ (16) must be %q", ErrHeader, token.CWTType)
	}
	rawKid, ok := p[cose.HeaderLabelKeyID].([]byte)
	if !ok || len(rawKid) == 0 {
		return nil, fmt.Errorf("%w: no kid", ErrUnknownKey)
	}
	kid := hex.EncodeToString(rawKid)
	k, ok := v.keys[kid]
	if !ok {
		return nil, fmt.Errorf("%w: kid %s is not an ES256/ES384 key of the JWKS", ErrUnknownKey, kid)
	}
	if alg != k.coseAlg {
		return nil, fmt.Errorf("%w: %v, but key %s is %v", ErrAlgorithm, alg, kid, k.coseAlg)
	}
	if msg.Payload == nil {
		return nil, fmt.Errorf("%w: detached payload", ErrMalformed)
	}
	if err := msg.Verify(nil, k.verifier); err != nil {
		return nil, fmt.Errorf("%w: key %s: %w", ErrSignature, kid, err)
	}
	c, err := token.ParseCWTPayload(msg.Payload)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrMalformed, err)
	}
	return v.check(c, kid)
}
