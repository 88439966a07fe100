package token

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	_ "crypto/sha512" // ES384 hashes through crypto.SHA384, which must be linked in.
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/big"
	"sync/atomic"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/proofline/proofline/verifier/ear"
	"github.com/veraison/go-cose"
)

// Token types, declared in the header of every token (explicit typing, RFC 8725 §3.11 and
// RFC 9596) so that neither form can be mistaken for another object signed by the same key, such
// as an evidence record.
const (
	// JWTType is the JWS "typ" header: the media type application/eat+jwt (RFC 9782), with the
	// "application/" prefix omitted as RFC 7515 §4.1.9 recommends.
	JWTType = "eat+jwt"
	// CWTType is the COSE "typ" header parameter (label 16, RFC 9596): application/eat+cwt.
	CWTType = "application/eat+cwt"
)

// Signer is a token signing key: an ECDSA P-256 (ES256) or P-384 (ES384) key. It has the method
// set of evidence.Signer, so evidence.Key and a KMS or PKCS #11 key wrapper implement both.
type Signer interface {
	// Algorithm is the COSE algorithm (RFC 9053): cose.AlgorithmES256 or cose.AlgorithmES384.
	Algorithm() cose.Algorithm
	// Public is the *ecdsa.PublicKey on the algorithm's curve.
	Public() crypto.PublicKey
	// Sign signs toBeSigned, hashing it as the algorithm says (SHA-256 for ES256, SHA-384 for
	// ES384), and returns the fixed-size r ‖ s form of RFC 9053 §2.1 — which is also the JWS
	// form of RFC 7518 §3.4 — not ASN.1. It must be safe for concurrent use.
	Sign(ctx context.Context, toBeSigned []byte) ([]byte, error)
}

// KeyID returns the key id of a public key: the lower-case hex of the SHA-256 of its DER
// SubjectPublicKeyInfo (RFC 5280 §4.1.2.7). JWTs and the JWKS carry this string; a CWT carries the
// 32 bytes it encodes. It is the key id the evidence key history uses for the same key.
func KeyID(pub crypto.PublicKey) (string, error) {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return "", fmt.Errorf("token: key id: %w", err)
	}
	sum := sha256.Sum256(der)
	return hex.EncodeToString(sum[:]), nil
}

// verificationKey is one key of the JWKS.
type verificationKey struct {
	pub *ecdsa.PublicKey
	alg cose.Algorithm
	kid string
}

// algorithmOf returns the one algorithm this package uses with a public key.
func algorithmOf(pub crypto.PublicKey) (cose.Algorithm, *ecdsa.PublicKey, error) {
	k, ok := pub.(*ecdsa.PublicKey)
	if !ok {
		return 0, nil, fmt.Errorf("%T is not an ECDSA public key", pub)
	}
	switch k.Curve {
	case elliptic.P256():
		return cose.AlgorithmES256, k, nil
	case elliptic.P384():
		return cose.AlgorithmES384, k, nil
	}
	return 0, nil, fmt.Errorf("ECDSA curve %s is not P-256 or P-384", k.Curve.Params().Name)
}

func newVerificationKey(pub crypto.PublicKey) (verificationKey, error) {
	alg, k, err := algorithmOf(pub)
	if err != nil {
		return verificationKey{}, err
	}
	kid, err := KeyID(k)
	if err != nil {
		return verificationKey{}, err
	}
	return verificationKey{pub: k, alg: alg, kid: kid}, nil
}

func joseAlgorithm(alg cose.Algorithm) jose.SignatureAlgorithm {
	if alg == cose.AlgorithmES384 {
		return jose.ES384
	}
	return jose.ES256
}

// Issuer signs result tokens with one current key and publishes, in its JWKS, that key and the
// previous keys whose tokens may not have expired yet. It is safe for concurrent use.
//
// To rotate keys, build a new Issuer with the new signer and the old public key in previous;
// drop the old key once every token it signed has expired (the longest ttl given to IssueJWT or
// IssueCWT after the rotation started).
type Issuer struct {
	iss    string
	signer Signer
	key    verificationKey   // the signer's
	keys   []verificationKey // key, then previous
	rand   io.Reader         // token ids
	// checked is set once a signature of signer verified with key (sign).
	checked atomic.Bool
}

// NewIssuer returns an Issuer whose tokens name iss (for example the verifier's URL) as their
// issuer, signed by signer. The public keys in previous are published in the JWKS only.
func NewIssuer(iss string, signer Signer, previous ...crypto.PublicKey) (*Issuer, error) {
	if iss == "" {
		return nil, errors.New("token: the issuer name is empty")
	}
	key, err := newVerificationKey(signer.Public())
	if err != nil {
		return nil, fmt.Errorf("token: signer: %w", err)
	}
	if signer.Algorithm() != key.alg {
		return nil, fmt.Errorf("token: signer algorithm %v does not match its %s key (want %v)", signer.Algorithm(), key.pub.Curve.Params().Name, key.alg)
	}
	i := &Issuer{iss: iss, signer: signer, key: key, keys: []verificationKey{key}, rand: rand.Reader}
	for _, p := range previous {
		k, err := newVerificationKey(p)
		if err != nil {
			return nil, fmt.Errorf("token: previous key: %w", err)
		}
		for _, have := range i.keys {
			if have.kid == k.kid {
				return nil, fmt.Errorf("token: key %s given twice", k.kid)
			}
		}
		i.keys = append(i.keys, k)
	}
	return i, nil
}

// KeyID returns the key id of the current signing key.
func (i *Issuer) KeyID() string { return i.key.kid }

// RecordRef names the evidence record a result was logged as, and carries what the token states
// about the request that ear.Result does not hold.
type RecordRef struct {
	// LogIndex is the record's index in the evidence log.
	LogIndex uint64
	// SHA256 is the SHA-256 of the signed record (its COSE_Sign1 bytes, the log leaf). Required.
	SHA256 [32]byte
	// Subject is the record's subject id (the VM or workload), the token's sub; optional.
	Subject string
	// Nonce is the verifier nonce the appraisal checked (verifier.Options.Nonce), the token's
	// eat_nonce; nil when there was none.
	Nonce []byte
}

// Claims returns the claim set a token for res would carry: issued at now (truncated to the
// second), expiring ttl later, for the audience aud. It fails if res is not a finalized result
// (ear.Result.Finalize) with a platform and a policy, if aud is empty, or if ttl is not positive.
func (i *Issuer) Claims(res *ear.Result, ref RecordRef, aud []string, ttl time.Duration, now time.Time) (*Claims, error) {
	if res == nil {
		return nil, errors.New("token: no result")
	}
	if ttl < time.Second {
		return nil, fmt.Errorf("token: ttl %v is less than a second", ttl)
	}
	if now.IsZero() {
		return nil, errors.New("token: no time given")
	}
	if res.Profile != ear.Profile {
		return nil, fmt.Errorf("token: the result's eat_profile is %q, not %q: finalize it first", res.Profile, ear.Profile)
	}
	id := make([]byte, 16)
	if _, err := io.ReadFull(i.rand, id); err != nil {
		return nil, fmt.Errorf("token: token id: %w", err)
	}
	iat := time.Unix(now.Unix(), 0).UTC()
	c := &Claims{
		Issuer:       i.iss,
		Subject:      ref.Subject,
		Audience:     append([]string(nil), aud...),
		IssuedAt:     iat,
		NotBefore:    iat,
		Expiry:       iat.Add(ttl.Truncate(time.Second)),
		ID:           id,
		Nonce:        append([]byte(nil), ref.Nonce...),
		Verifier:     VerifierID{Build: res.Verifier.Version, Developer: Developer},
		Platform:     res.Platform,
		Status:       res.Status,
		TrustVector:  res.TrustVector,
		PolicyID:     res.Policy.ID,
		PolicyDigest: res.Policy.Digest,
		LogIndex:     ref.LogIndex,
		RecordSHA256: ref.SHA256,
		TestRoots:    res.TestRoots,
	}
	for _, f := range res.Failures {
		c.Failures = append(c.Failures, f.Code)
	}
	for _, w := range res.Warnings {
		c.Warnings = append(c.Warnings, w.Code)
	}
	if err := c.validate(); err != nil {
		return nil, fmt.Errorf("token: %w", err)
	}
	return c, nil
}

// IssueJWT returns a JWT (JWS compact serialization) for the result: protected header exactly
// {"alg", "kid", "typ": JWTType}, payload as README.md describes.
func (i *Issuer) IssueJWT(ctx context.Context, res *ear.Result, ref RecordRef, aud []string, ttl time.Duration, now time.Time) (string, error) {
	c, err := i.Claims(res, ref, aud, ttl, now)
	if err != nil {
		return "", err
	}
	return i.SignJWT(ctx, c)
}

// SignJWT signs a claim set as a JWT.
func (i *Issuer) SignJWT(ctx context.Context, c *Claims) (string, error) {
	payload, err := c.marshalJWT()
	if err != nil {
		return "", fmt.Errorf("token: %w", err)
	}
	alg := joseAlgorithm(i.key.alg)
	s, err := jose.NewSigner(jose.SigningKey{Algorithm: alg, Key: &joseSigner{ctx: ctx, i: i, alg: alg}},
		(&jose.SignerOptions{}).WithType(JWTType))
	if err != nil {
		return "", fmt.Errorf("token: %w", err)
	}
	jws, err := s.Sign(payload)
	if err != nil {
		return "", fmt.Errorf("token: signing: %w", err)
	}
	return jws.CompactSerialize()
}

// IssueCWT returns a CWT for the result: a tagged COSE_Sign1 (RFC 9052 §4.2) whose protected
// header holds exactly alg (1), kid (4, the 32 bytes of the key id) and typ (16, CWTType), whose
// unprotected header is empty, and whose payload is the CBOR claims map README.md describes.
func (i *Issuer) IssueCWT(ctx context.Context, res *ear.Result, ref RecordRef, aud []string, ttl time.Duration, now time.Time) ([]byte, error) {
	c, err := i.Claims(res, ref, aud, ttl, now)
	if err != nil {
		return nil, err
	}
	return i.SignCWT(ctx, c)
}

// SignCWT signs a claim set as a CWT.
func (i *Issuer) SignCWT(ctx context.Context, c *Claims) ([]byte, error) {
	payload, err := c.marshalCWT()
	if err != nil {
		return nil, fmt.Errorf("token: %w", err)
	}
	kid, _ := hex.DecodeString(i.key.kid)
	msg := &cose.Sign1Message{
		Headers: cose.Headers{
			Protected: cose.ProtectedHeader{
				cose.HeaderLabelAlgorithm: i.key.alg,
				cose.HeaderLabelKeyID:     kid,
				cose.HeaderLabelType:      CWTType,
			},
			Unprotected: cose.UnprotectedHeader{},
		},
		Payload: payload,
	}
	if err := msg.Sign(nil, nil, coseSigner{ctx: ctx, i: i}); err != nil {
		return nil, fmt.Errorf("token: signing: %w", err)
	}
	return msg.MarshalCBOR()
}

// sign signs with the Signer and checks the signature against the public key before it leaves:
// a KMS answering with another key or with an ASN.1 signature is caught here, not by every
// relying party.
func (i *Issuer) sign(ctx context.Context, toBeSigned []byte) ([]byte, error) {
	sig, err := i.signer.Sign(ctx, toBeSigned)
	if err != nil {
		return nil, err
	}
	size := (i.key.pub.Curve.Params().BitSize + 7) / 8
	if len(sig) != 2*size {
		return nil, fmt.Errorf("the signer's %d-byte signature is not %v r ‖ s (%d bytes)", len(sig), i.key.alg, 2*size)
	}
	// The first signature is verified with the published key, which catches a signer that signs
	// with another key than it reports (a misconfigured KMS key) before any token leaves. Later
	// ones are not: verifying costs as much as signing, and relying parties verify every token.
	if i.checked.Load() {
		return sig, nil
	}
	h := crypto.SHA256
	if i.key.alg == cose.AlgorithmES384 {
		h = crypto.SHA384
	}
	hh := h.New()
	hh.Write(toBeSigned)
	if !ecdsa.Verify(i.key.pub, hh.Sum(nil), new(big.Int).SetBytes(sig[:size]), new(big.Int).SetBytes(sig[size:])) {
		return nil, fmt.Errorf("the signer's %d-byte signature does not verify with its public key %s as %v r ‖ s", len(sig), i.key.kid, i.key.alg)
	}
	i.checked.Store(true)
	return sig, nil
}

// joseSigner adapts the Issuer's Signer to go-jose, which hands it the JWS signing input.
type joseSigner struct {
	ctx context.Context
	i   *Issuer
	alg jose.SignatureAlgorithm
}

func (j *joseSigner) Public() *jose.JSONWebKey {
	return &jose.JSONWebKey{Key: j.i.key.pub, KeyID: j.i.key.kid, Algorithm: string(j.alg), Use: "sig"}
}

func (j *joseSigner) Algs() []jose.SignatureAlgorithm { return []jose.SignatureAlgorithm{j.alg} }

func (j *joseSigner) SignPayload(signingInput []byte, alg jose.SignatureAlgorithm) ([]byte, error) {
	if alg != j.alg {
		return nil, fmt.Errorf("algorithm %s, want %s", alg, j.alg)
	}
	return j.i.sign(j.ctx, signingInput)
}

// coseSigner adapts the Issuer's Signer to go-cose, which hands it the Sig_structure.
type coseSigner struct {
	ctx context.Context
	i   *Issuer
}

func (c coseSigner) Algorithm() cose.Algorithm { return c.i.key.alg }

func (c coseSigner) Sign(_ io.Reader, toBeSigned []byte) ([]byte, error) {
	return c.i.sign(c.ctx, toBeSigned)
}

// JWKS returns the JSON Web Key Set (RFC 7517 §5) to publish at /.well-known/jwks.json: the
// current key first, then the previous ones, each with kty, crv, x, y, kid, alg and use "sig".
// It holds public keys only.
func (i *Issuer) JWKS() ([]byte, error) {
	set := jose.JSONWebKeySet{}
	for _, k := range i.keys {
		set.Keys = append(set.Keys, jose.JSONWebKey{Key: k.pub, KeyID: k.kid, Algorithm: string(joseAlgorithm(k.alg)), Use: "sig"})
	}
	b, err := json.Marshal(set)
	if err != nil {
		return nil, fmt.Errorf("token: JWKS: %w", err)
	}
	return b, nil
}
