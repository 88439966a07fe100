// Package rp verifies Proofline attestation result tokens for relying parties, such as a
// key-release service: offline, against the verifier's published JWKS, with a fixed algorithm
// allow-list and the audience, time and status checks a relying party must not forget.
//
// A token is accepted only if every one of these holds (the error names the first that fails;
// every error wraps one of the sentinel errors below, for errors.Is):
//   - its algorithm is ES256 or ES384 and is the algorithm of the key it names (ErrAlgorithm):
//     "none", HMAC (HS*), RSA (RS*, PS*) and anything else are refused, whatever the key set
//     holds; in a CWT the algorithm must be in the protected header;
//   - its header holds only alg, kid and typ (ErrHeader): no embedded or remote keys (jwk,
//     jku, x5c, x5u, x5t; COSE x5chain, x5bag, x5t, x5u, kcwt, kccs), no crit, nothing else; its
//     typ is token.JWTType or token.CWTType; a CWT has an empty unprotected header;
//   - its kid names a key of the JWKS (ErrUnknownKey) and the signature verifies (ErrSignature);
//   - its claims are a well-formed Proofline EAR claim set, including the evidence record
//     reference and the policy (ErrMalformed; see verifier/token/README.md);
//   - iss is Options.Issuer if set (ErrIssuer); aud contains Options.Audience (ErrAudience);
//   - it has not expired, and is no older than Options.MaxAge if set (ErrExpired); its nbf and
//     iat are not in the future (ErrNotYetValid), all within Options.Leeway;
//   - it does not come from a verifier running on test vendor roots (ErrTestRoots), unless
//     Options.AllowTestRootsUnsafe;
//   - its ear.status is at least Options.RequireStatus, by default affirming (ErrStatus).
//
// The package does no network I/O: New takes the JWKS bytes; FetchJWKS is a small helper that
// fetches them with the caller's *http.Client. A Verifier is immutable and safe for concurrent
// use; to follow a key rotation, fetch the JWKS again and build a new one.
package rp

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	_ "crypto/sha256" // ES256 hashes through crypto.SHA256, which must be linked in.
	_ "crypto/sha512" // ES384: crypto.SHA384.
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/proofline/proofline/verifier/ear"
	"github.com/proofline/proofline/verifier/token"
	"github.com/veraison/go-cose"
)

// Decisions of VerifyJWT, VerifyCWT and Claims.RequireNonce, usable with errors.Is. The wrapping
// error's message says what exactly was wrong; it never contains key material.
var (
	// ErrMalformed: the token cannot be decoded, or its claims are not a valid Proofline EAR
	// claim set (for example no evidence record reference).
	ErrMalformed = errors.New("rp: malformed token")
	// ErrAlgorithm: the algorithm is missing, not in the allow-list (ES256, ES384), not the
	// named key's, or (CWT) not in the protected header.
	ErrAlgorithm = errors.New("rp: algorithm not allowed")
	// ErrHeader: the header holds a parameter that is not allowed: an embedded or remote key, a
	// critical parameter, a wrong typ, or anything unknown.
	ErrHeader = errors.New("rp: header parameter not allowed")
	// ErrUnknownKey: the token names no key, or a key that is not in the JWKS.
	ErrUnknownKey = errors.New("rp: unknown key")
	// ErrSignature: the signature does not verify with the named key.
	ErrSignature = errors.New("rp: invalid signature")
	// ErrIssuer: iss is not Options.Issuer.
	ErrIssuer = errors.New("rp: wrong issuer")
	// ErrAudience: aud does not contain Options.Audience.
	ErrAudience = errors.New("rp: wrong audience")
	// ErrExpired: exp has passed, or iat is older than Options.MaxAge.
	ErrExpired = errors.New("rp: token expired")
	// ErrNotYetValid: nbf or iat is in the future.
	ErrNotYetValid = errors.New("rp: token not yet valid")
	// ErrTestRoots: the verifier appraised the evidence with test vendor roots.
	ErrTestRoots = errors.New("rp: result produced with test vendor roots")
	// ErrStatus: ear.status is below Options.RequireStatus.
	ErrStatus = errors.New("rp: attestation status not accepted")
	// ErrNonce: the token does not carry the nonce the relying party issued.
	ErrNonce = errors.New("rp: nonce mismatch")
)

// Bounds on what is read.
const (
	maxTokenSize = 32 << 10
	maxJWKSSize  = 64 << 10
	maxJWKSKeys  = 32
)

// Options are a relying party's requirements.
type Options struct {
	// Audience is this relying party's name; a token's aud must contain it. Required.
	Audience string
	// Issuer, when set, must equal the token's iss.
	Issuer string
	// RequireStatus is the least trustworthy ear.status accepted: ear.StatusAffirming (the
	// default when empty) or ear.StatusWarning (accepts warning and affirming).
	// Contraindicated is never accepted.
	RequireStatus ear.Status
	// MaxAge, when positive, refuses tokens issued more than MaxAge ago even if they have not
	// expired.
	MaxAge time.Duration
	// Leeway is the clock skew tolerated on exp, nbf, iat and MaxAge; zero tolerates none. A
	// minute is typical.
	Leeway time.Duration
	// Now returns the current time; nil means time.Now.
	Now func() time.Time
	// AllowTestRootsUnsafe accepts tokens for results produced with test vendor roots (a
	// verifier in test mode). Never set it in production.
	AllowTestRootsUnsafe bool
}

// key is one usable key of the JWKS.
type key struct {
	pub      *ecdsa.PublicKey
	alg      jose.SignatureAlgorithm
	coseAlg  cose.Algorithm
	verifier cose.Verifier
}

// Verifier verifies result tokens against one JWKS and one set of Options.
type Verifier struct {
	opts Options
	keys map[string]key // by kid
}

// New returns a Verifier for the JSON Web Key Set jwks (RFC 7517 §5), as the verifier publishes
// at /.well-known/jwks.json. It uses the EC keys on P-256 (ES256) and P-384 (ES384) whose use, if
// given, is "sig"; each needs a kid, unique in the set, and an alg, if given, that matches its
// curve. Keys of other types and curves are ignored (a token naming one is refused). A set that
// holds private or symmetric key material is refused as a whole, as is one without a usable key.
func New(jwks []byte, opts Options) (*Verifier, error) {
	if opts.Audience == "" {
		return nil, errors.New("rp: Options.Audience is required")
	}
	switch opts.RequireStatus {
	case "":
		opts.RequireStatus = ear.StatusAffirming
	case ear.StatusAffirming, ear.StatusWarning:
	default:
		return nil, fmt.Errorf("rp: Options.RequireStatus %q: want %q or %q", opts.RequireStatus, ear.StatusAffirming, ear.StatusWarning)
	}
	if opts.MaxAge < 0 || opts.Leeway < 0 {
		return nil, errors.New("rp: Options.MaxAge and Options.Leeway must not be negative")
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	keys, err := parseJWKS(jwks)
	if err != nil {
		return nil, fmt.Errorf("rp: JWKS: %w", err)
	}
	return &Verifier{opts: opts, keys: keys}, nil
}

// KeyIDs returns the kids of the usable keys, sorted.
func (v *Verifier) KeyIDs() []string {
	ids := make([]string, 0, len(v.keys))
	for kid := range v.keys {
		ids = append(ids, kid)
	}
	slices.Sort(ids)
	return ids
}

func parseJWKS(data []byte) (map[string]key, error) {
	if len(data) > maxJWKSSize {
		return nil, fmt.Errorf("%d bytes, more than %d", len(data), maxJWKSSize)
	}
	var set struct {
		Keys []json.RawMessage `json:"keys"`
	}
	if err := json.Unmarshal(data, &set); err != nil {
		return nil, err
	}
	if len(set.Keys) > maxJWKSKeys {
		return nil, fmt.Errorf("%d keys, more than %d", len(set.Keys), maxJWKSKeys)
	}
	keys := map[string]key{}
	for i, raw := range set.Keys {
		var meta map[string]json.RawMessage
		if err := json.Unmarshal(raw, &meta); err != nil {
			return nil, fmt.Errorf("key %d: %w", i, err)
		}
		// RFC 7518 §6.2.2, §6.3.2, §6.4.1: private and symmetric key members.
		for _, m := range []string{"d", "p", "q", "dp", "dq", "qi", "oth", "k"} {
			if _, ok := meta[m]; ok {
				return nil, fmt.Errorf("key %d holds private or symmetric key material (%q): publish public keys only", i, m)
			}
		}
		var hdr struct {
			Kty string `json:"kty"`
			Kid string `json:"kid"`
			Alg string `json:"alg"`
			Use string `json:"use"`
		}
		if err := json.Unmarshal(raw, &hdr); err != nil {
			return nil, fmt.Errorf("key %d: %w", i, err)
		}
		if hdr.Kty != "EC" || (hdr.Use != "" && hdr.Use != "sig") {
			continue
		}
		var jwk jose.JSONWebKey
		if err := jwk.UnmarshalJSON(raw); err != nil {
			return nil, fmt.Errorf("key %d: %w", i, err)
		}
		pub, ok := jwk.Key.(*ecdsa.PublicKey)
		if !ok {
			return nil, fmt.Errorf("key %d: %T is not an EC public key", i, jwk.Key)
		}
		var k key
		switch pub.Curve {
		case elliptic.P256():
			k = key{pub: pub, alg: jose.ES256, coseAlg: cose.AlgorithmES256}
		case elliptic.P384():
			k = key{pub: pub, alg: jose.ES384, coseAlg: cose.AlgorithmES384}
		default:
			continue
		}
		if hdr.Alg != "" && hdr.Alg != string(k.alg) {
			return nil, fmt.Errorf("key %d (%s): alg %q on a %s key, want %s", i, hdr.Kid, hdr.Alg, pub.Curve.Params().Name, k.alg)
		}
		if hdr.Kid == "" {
			return nil, fmt.Errorf("key %d: no kid", i)
		}
		if _, dup := keys[hdr.Kid]; dup {
			return nil, fmt.Errorf("kid %s appears twice", hdr.Kid)
		}
		var err error
		if k.verifier, err = cose.NewVerifier(k.coseAlg, pub); err != nil {
			return nil, fmt.Errorf("key %d: %w", i, err)
		}
		keys[hdr.Kid] = k
	}
	if len(keys) == 0 {
		return nil, errors.New("no ES256 or ES384 signing key")
	}
	return keys, nil
}

// FetchJWKS fetches a JWKS over HTTPS with client, for New. It sends no credentials of its own,
// follows the client's redirect policy, and refuses a non-200 answer or more than 64 KiB.
func FetchJWKS(ctx context.Context, client *http.Client, jwksURL string) ([]byte, error) {
	if client == nil {
		return nil, errors.New("rp: FetchJWKS needs an *http.Client")
	}
	u, err := url.Parse(jwksURL)
	if err != nil {
		return nil, fmt.Errorf("rp: JWKS URL: %w", err)
	}
	if u.Scheme != "https" {
		return nil, fmt.Errorf("rp: JWKS URL %q is not https", jwksURL)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return nil, fmt.Errorf("rp: JWKS: %w", err)
	}
	req.Header.Set("Accept", "application/jwk-set+json, application/json")
	resp, err := client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("rp: fetching JWKS: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("rp: fetching JWKS from %s: %s", u.Redacted(), resp.Status)
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxJWKSSize+1))
	if err != nil {
		return nil, fmt.Errorf("rp: fetching JWKS: %w", err)
	}
	if len(b) > maxJWKSSize {
		return nil, fmt.Errorf("rp: JWKS from %s is larger than %d bytes", u.Redacted(), maxJWKSSize)
	}
	return b, nil
}

// Claims are the claims of a verified token (token.Claims: status, trust vector, platform, policy
// id and digest, evidence record log index and SHA-256, nonce, expiry, test_roots…) and the key
// that signed it.
type Claims struct {
	token.Claims
	// KeyID is the kid of the JWKS key that verified the signature.
	KeyID string
}

// RequireNonce returns nil if the token carries nonce as its eat_nonce, and an error wrapping
// ErrNonce otherwise. A relying party that hands the attester its own nonce (through the
// verifier's challenge) calls it to know the result is fresh for this request.
func (c *Claims) RequireNonce(nonce []byte) error {
	if len(nonce) == 0 {
		return fmt.Errorf("%w: no nonce to compare with", ErrNonce)
	}
	if c.Nonce == nil {
		return fmt.Errorf("%w: the token carries no eat_nonce", ErrNonce)
	}
	if subtle.ConstantTimeCompare(c.Nonce, nonce) != 1 {
		return fmt.Errorf("%w: the token's eat_nonce is not the nonce given", ErrNonce)
	}
	return nil
}

// rank orders statuses from the most trustworthy.
func rank(s ear.Status) int {
	switch s {
	case ear.StatusAffirming:
		return 0
	case ear.StatusWarning:
		return 1
	}
	return 2
}

// check applies the claim rules common to both token forms.
func (v *Verifier) check(c *token.Claims, kid string) (*Claims, error) {
	now, leeway := v.opts.Now(), v.opts.Leeway
	if v.opts.Issuer != "" && c.Issuer != v.opts.Issuer {
		return nil, fmt.Errorf("%w: iss %q, want %q", ErrIssuer, c.Issuer, v.opts.Issuer)
	}
	if !slices.Contains(c.Audience, v.opts.Audience) {
		return nil, fmt.Errorf("%w: aud %q does not contain %q", ErrAudience, c.Audience, v.opts.Audience)
	}
	if !now.Before(c.Expiry.Add(leeway)) {
		return nil, fmt.Errorf("%w: exp %s, now %s", ErrExpired, stamp(c.Expiry), stamp(now))
	}
	if !c.NotBefore.IsZero() && now.Add(leeway).Before(c.NotBefore) {
		return nil, fmt.Errorf("%w: nbf %s, now %s", ErrNotYetValid, stamp(c.NotBefore), stamp(now))
	}
	if now.Add(leeway).Before(c.IssuedAt) {
		return nil, fmt.Errorf("%w: iat %s is in the future, now %s", ErrNotYetValid, stamp(c.IssuedAt), stamp(now))
	}
	if v.opts.MaxAge > 0 && now.Sub(c.IssuedAt) > v.opts.MaxAge+leeway {
		return nil, fmt.Errorf("%w: issued at %s, more than the maximum age %v before %s", ErrExpired, stamp(c.IssuedAt), v.opts.MaxAge, stamp(now))
	}
	if c.TestRoots && !v.opts.AllowTestRootsUnsafe {
		return nil, fmt.Errorf("%w: the verifier ran with test vendor roots (record %d)", ErrTestRoots, c.LogIndex)
	}
	if rank(c.Status) > rank(v.opts.RequireStatus) {
		return nil, fmt.Errorf("%w: %s (failures %q, warnings %q; record %d), %s required", ErrStatus, c.Status, c.Failures, c.Warnings, c.LogIndex, v.opts.RequireStatus)
	}
	return &Claims{Claims: *c, KeyID: kid}, nil
}

func stamp(t time.Time) string { return t.UTC().Format(time.RFC3339) }
