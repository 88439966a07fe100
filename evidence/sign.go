package evidence

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/sha256"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"math/big"

	"github.com/veraison/go-cose"
)

// ContentType is the content type (protected header label 3) of a signed record.
const ContentType = "application/vnd.proofline.record+cbor; v=1"

// Decisions of Open, usable with errors.Is. Details are in the wrapping error's message.
var (
	// ErrMalformed: the bytes are not a well-formed, canonical Proofline record or envelope.
	ErrMalformed = errors.New("evidence: malformed record")
	// ErrSignature: the signature does not verify under the named key, or its algorithm is not
	// the key's.
	ErrSignature = errors.New("evidence: invalid signature")
	// ErrUnknownKey: the key id is not in the key history.
	ErrUnknownKey = errors.New("evidence: unknown signing key")
	// ErrKeyNotValidAt: the record's time is outside the signing key's validity period.
	ErrKeyNotValidAt = errors.New("evidence: signing key not valid at the record's time")
)

// Signer is a record signing key. Key is the in-process implementation; a KMS or PKCS #11 key
// implements it the same way.
type Signer interface {
	// Algorithm is the COSE algorithm (RFC 9053): ES256, ES384, ES512 or EdDSA, matching Public.
	Algorithm() cose.Algorithm
	// Public is the public key: *ecdsa.PublicKey on the algorithm's curve, or ed25519.PublicKey.
	Public() crypto.PublicKey
	// Sign signs toBeSigned (the COSE Sig_structure, RFC 9052 §4.4; the signer hashes it as the
	// algorithm says) and returns the signature in COSE form: for ECDSA the fixed-size r ‖ s of
	// RFC 9053 §2.1, not ASN.1. It must be safe for concurrent use.
	Sign(ctx context.Context, toBeSigned []byte) ([]byte, error)
}

// KeyID returns the key id of a public key: the SHA-256 of its DER SubjectPublicKeyInfo
// (RFC 5280 §4.1.2.7), 32 bytes.
func KeyID(pub crypto.PublicKey) ([]byte, error) {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return nil, fmt.Errorf("evidence: key id: %w", err)
	}
	sum := sha256.Sum256(der)
	return sum[:], nil
}

// Sign validates and encodes the record and signs it with s, returning a tagged COSE_Sign1
// (RFC 9052 §4.2) whose protected header holds exactly the algorithm, the content type and the
// key id, and whose unprotected header is empty. An ECDSA signature is normalised to the lower
// of its two valid S values, which Open requires, so a signed record has one encoding.
//
// Sign does not consult the key history: a record to be appended MUST be held to invariant I5
// first (SignFor, or Open against the current history), which also catches a record timed
// outside its key's validity period.
func Sign(ctx context.Context, r *Record, s Signer) ([]byte, error) {
	return sign(ctx, r, s, nil)
}

// SignFor signs r with s like Sign and holds the result to invariant I5 as Open would, for a
// record about to be appended: s's key must be in keys with s's algorithm (ErrUnknownKey,
// ErrSignature), the signature must verify under the key the history lists — not merely the
// key s reports, so a signer that signs with another key is caught (ErrSignature) — and r's time
// must be inside the key's validity period (ErrKeyNotValidAt). It costs one signature
// verification more than Sign, and none of Open's decoding: the record was just encoded by the
// rules Open checks.
func SignFor(ctx context.Context, r *Record, s Signer, keys *KeyHistory) ([]byte, error) {
	if keys == nil {
		return nil, fmt.Errorf("%w: no key history", ErrUnknownKey)
	}
	return sign(ctx, r, s, keys)
}

// sign is Sign, and SignFor when keys is not nil.
func sign(ctx context.Context, r *Record, s Signer, keys *KeyHistory) ([]byte, error) {
	payload, err := r.Marshal()
	if err != nil {
		return nil, err
	}
	alg, pub := s.Algorithm(), s.Public()
	if err := CheckCOSEKey(alg, pub); err != nil {
		return nil, fmt.Errorf("evidence: signer: %w", err)
	}
	kid, err := KeyID(pub)
	if err != nil {
		return nil, err
	}
	var key historyKey
	if keys != nil {
		var ok bool
		if key, ok = keys.lookup(kid); !ok {
			return nil, fmt.Errorf("%w: kid %x", ErrUnknownKey, kid)
		}
		if alg != key.info.Algorithm {
			return nil, fmt.Errorf("%w: the signer's algorithm is %v, but key %x is %v", ErrSignature, alg, kid, key.info.Algorithm)
		}
		if !key.info.ValidAt(r.Time) {
			return nil, fmt.Errorf("%w: record time %s, key %x %s", ErrKeyNotValidAt, r.Time.Format(timeFormat), kid, key.info.period())
		}
	}
	msg := envelope(alg, kid, payload, nil)
	if err := msg.Sign(nil, nil, COSESigner(ctx, s)); err != nil {
		return nil, fmt.Errorf("evidence: signing: %w", err)
	}
	if k, ok := pub.(*ecdsa.PublicKey); ok {
		LowS(k, msg.Signature)
	}
	if keys != nil {
		if err := msg.Verify(nil, key.verifier); err != nil {
			return nil, fmt.Errorf("%w: key %x: %w", ErrSignature, kid, err)
		}
	}
	return msg.MarshalCBOR()
}

// Open verifies a signed record against the key history and returns the record and the key
// that signed it. It requires, in this order (README.md, "Verification"):
//   - at most MaxRecordSize bytes, a tagged COSE_Sign1 with an embedded payload;
//   - an empty unprotected header, and a protected header of exactly alg, content type
//     (ContentType) and kid; a crit parameter is rejected, since no extension is understood
//     (RFC 9052 §3.1);
//   - the whole message byte-identical to its deterministic encoding;
//   - the kid in the history (ErrUnknownKey), alg equal to the key's (ErrSignature), a valid
//     signature, for ECDSA with the low S value (ErrSignature);
//   - a payload that ParseRecord accepts (ErrMalformed), with a time inside the key's validity
//     period (ErrKeyNotValidAt).
//
// Any other failure wraps ErrMalformed. Open is safe for concurrent use with one history.
func Open(data []byte, keys *KeyHistory) (*Record, *KeyInfo, error) {
	if len(data) > MaxRecordSize {
		return nil, nil, fmt.Errorf("%w: %d bytes, more than %d", ErrMalformed, len(data), MaxRecordSize)
	}
	var msg cose.Sign1Message
	if err := msg.UnmarshalCBOR(data); err != nil {
		return nil, nil, fmt.Errorf("%w: COSE_Sign1: %w", ErrMalformed, err)
	}
	if len(msg.Headers.Unprotected) != 0 {
		return nil, nil, fmt.Errorf("%w: the unprotected header must be empty, has labels %v", ErrMalformed, labels(msg.Headers.Unprotected))
	}
	alg, kid, err := protectedHeader(msg.Headers.Protected)
	if err != nil {
		return nil, nil, fmt.Errorf("%w: protected header: %w", ErrMalformed, err)
	}
	if msg.Payload == nil {
		return nil, nil, fmt.Errorf("%w: detached payload", ErrMalformed)
	}
	// The library keeps the protected header's raw bytes and would re-encode them as they came,
	// so compare with a message built from the parsed values instead.
	canon, err := envelope(alg, kid, msg.Payload, msg.Signature).MarshalCBOR()
	if err != nil || !bytes.Equal(canon, data) {
		return nil, nil, fmt.Errorf("%w: COSE_Sign1 not in deterministic encoding", ErrMalformed)
	}
	key, ok := keys.lookup(kid)
	if !ok {
		return nil, nil, fmt.Errorf("%w: kid %x", ErrUnknownKey, kid)
	}
	if alg != key.info.Algorithm {
		return nil, nil, fmt.Errorf("%w: algorithm %v in the protected header, but key %x is %v", ErrSignature, alg, kid, key.info.Algorithm)
	}
	if k, ok := key.info.Public.(*ecdsa.PublicKey); ok && !IsLowS(k, msg.Signature) {
		return nil, nil, fmt.Errorf("%w: ECDSA signature with high S", ErrSignature)
	}
	if err := msg.Verify(nil, key.verifier); err != nil {
		return nil, nil, fmt.Errorf("%w: key %x: %w", ErrSignature, kid, err)
	}
	r, err := ParseRecord(msg.Payload)
	if err != nil {
		return nil, nil, err
	}
	info := key.clone()
	if !info.ValidAt(r.Time) {
		return nil, nil, fmt.Errorf("%w: record time %s, key %x %s", ErrKeyNotValidAt, r.Time.Format(timeFormat), kid, info.period())
	}
	return r, &info, nil
}

// envelope builds the one COSE_Sign1 form this package writes.
func envelope(alg cose.Algorithm, kid, payload, sig []byte) *cose.Sign1Message {
	return &cose.Sign1Message{
		Headers: cose.Headers{
			Protected: cose.ProtectedHeader{
				cose.HeaderLabelAlgorithm:   alg,
				cose.HeaderLabelContentType: ContentType,
				cose.HeaderLabelKeyID:       kid,
			},
			Unprotected: cose.UnprotectedHeader{},
		},
		Payload:   payload,
		Signature: sig,
	}
}

// protectedHeader enforces the protected header's exact contents.
func protectedHeader(h cose.ProtectedHeader) (cose.Algorithm, []byte, error) {
	if crit, ok := h[cose.HeaderLabelCritical]; ok {
		return 0, nil, fmt.Errorf("critical header parameters %v are not understood (RFC 9052 §3.1)", crit)
	}
	for l := range h {
		switch l {
		case cose.HeaderLabelAlgorithm, cose.HeaderLabelContentType, cose.HeaderLabelKeyID:
		default:
			return 0, nil, fmt.Errorf("unexpected parameter %v", l)
		}
	}
	alg, err := h.Algorithm()
	if err != nil {
		return 0, nil, fmt.Errorf("algorithm: %w", err)
	}
	ct, ok := h[cose.HeaderLabelContentType]
	if !ok {
		return 0, nil, fmt.Errorf("no content type")
	}
	if ct != ContentType {
		return 0, nil, fmt.Errorf("content type %#v, want %q", ct, ContentType)
	}
	kid, ok := h[cose.HeaderLabelKeyID].([]byte)
	if !ok || len(kid) == 0 {
		return 0, nil, fmt.Errorf("no key id")
	}
	return alg, kid, nil
}

func labels(h map[any]any) []any {
	var ls []any
	for l := range h {
		ls = append(ls, l)
	}
	return ls
}

// CheckCOSEKey accepts the algorithms of the allow-list (ES256, ES384, ES512, EdDSA) with their
// own key types only: *ecdsa.PublicKey on the algorithm's curve (P-256, P-384, P-521), or a
// 32-byte ed25519.PublicKey. go-cose alone would accept ES256 with a P-384 key. Records and
// collateral bundles (verifier/collateral) use it for their signers and trusted keys.
func CheckCOSEKey(alg cose.Algorithm, pub crypto.PublicKey) error {
	var curve elliptic.Curve
	switch alg {
	case cose.AlgorithmES256:
		curve = elliptic.P256()
	case cose.AlgorithmES384:
		curve = elliptic.P384()
	case cose.AlgorithmES512:
		curve = elliptic.P521()
	case cose.AlgorithmEdDSA:
		if k, ok := pub.(ed25519.PublicKey); !ok || len(k) != ed25519.PublicKeySize {
			return fmt.Errorf("%v needs an Ed25519 public key, got %T", alg, pub)
		}
		return nil
	default:
		return fmt.Errorf("algorithm %v is not one of ES256, ES384, ES512, EdDSA", alg)
	}
	if k, ok := pub.(*ecdsa.PublicKey); !ok || k.Curve != curve {
		return fmt.Errorf("%v needs an ECDSA %s public key", alg, curve.Params().Name)
	}
	return nil
}

// LowS replaces, in place, S by N−S in a COSE ECDSA signature of k (r ‖ s, RFC 9053 §2.1) when
// S > N/2; a signature of another size is left alone. Both values verify; keeping only the low
// one makes a signed message non-malleable (one valid encoding), which IsLowS then requires.
func LowS(k *ecdsa.PublicKey, sig []byte) {
	n := k.Curve.Params().N
	size := (n.BitLen() + 7) / 8
	if len(sig) != 2*size || IsLowS(k, sig) {
		return
	}
	s := new(big.Int).SetBytes(sig[size:])
	s.Sub(n, s).FillBytes(sig[size:])
}

// IsLowS reports whether sig is a COSE ECDSA signature of k's size (r ‖ s) with S ≤ N/2, the
// only encoding LowS leaves. It does not verify the signature.
func IsLowS(k *ecdsa.PublicKey, sig []byte) bool {
	n := k.Curve.Params().N
	size := (n.BitLen() + 7) / 8
	if len(sig) != 2*size {
		return false
	}
	s := new(big.Int).SetBytes(sig[size:])
	return s.Cmp(new(big.Int).Rsh(n, 1)) <= 0
}

// COSESigner adapts s to go-cose's cose.Signer for one signing operation with ctx (go-cose's
// Sign takes no context, and ignores the io.Reader for a Signer that brings its own randomness).
// The signature is as s returns it: apply LowS for ECDSA.
func COSESigner(ctx context.Context, s Signer) cose.Signer { return coseSigner{ctx, s} }

// coseSigner adapts a Signer, with its context, to go-cose.
type coseSigner struct {
	ctx context.Context
	s   Signer
}

func (c coseSigner) Algorithm() cose.Algorithm { return c.s.Algorithm() }

func (c coseSigner) Sign(_ io.Reader, toBeSigned []byte) ([]byte, error) {
	return c.s.Sign(c.ctx, toBeSigned)
}
