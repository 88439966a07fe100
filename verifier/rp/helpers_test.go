package rp_test

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/hmac"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/fxamacker/cbor/v2"
	"github.com/proofline/proofline/verifier/ear"
	"github.com/proofline/proofline/verifier/rp"
	"github.com/proofline/proofline/verifier/token"
	"github.com/veraison/go-cose"
)

// testNow is the issuing time of every test token; verifiers run at testNow unless a test says
// otherwise.
var testNow = time.Date(2026, 11, 2, 10, 0, 0, 0, time.UTC)

const (
	testIssuer   = "https://verifier.example"
	testAudience = "kms.example"
)

// ecKey is an ECDSA key that implements token.Signer and also signs hand-made tokens.
type ecKey struct{ priv *ecdsa.PrivateKey }

func newKey(t testing.TB, curve elliptic.Curve) *ecKey {
	t.Helper()
	priv, err := ecdsa.GenerateKey(curve, rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return &ecKey{priv}
}

func (k *ecKey) Algorithm() cose.Algorithm {
	if k.priv.Curve == elliptic.P384() {
		return cose.AlgorithmES384
	}
	return cose.AlgorithmES256
}

func (k *ecKey) Public() crypto.PublicKey { return &k.priv.PublicKey }

func (k *ecKey) Sign(_ context.Context, tbs []byte) ([]byte, error) { return k.sign(tbs), nil }

// sign returns the r ‖ s signature over the hash of tbs that the key's curve calls for.
func (k *ecKey) sign(tbs []byte) []byte {
	var digest []byte
	switch k.priv.Curve {
	case elliptic.P384():
		d := sha512.Sum384(tbs)
		digest = d[:]
	case elliptic.P521():
		d := sha512.Sum512(tbs)
		digest = d[:]
	default:
		d := sha256.Sum256(tbs)
		digest = d[:]
	}
	r, s, err := ecdsa.Sign(rand.Reader, k.priv, digest)
	if err != nil {
		panic(err)
	}
	size := (k.priv.Curve.Params().BitSize + 7) / 8
	sig := make([]byte, 2*size)
	r.FillBytes(sig[:size])
	s.FillBytes(sig[size:])
	return sig
}

func (k *ecKey) kid(t testing.TB) string {
	t.Helper()
	kid, err := token.KeyID(k.Public())
	if err != nil {
		t.Fatal(err)
	}
	return kid
}

// fixture is an issuer with its key, and the relying party's view of its JWKS.
type fixture struct {
	key    *ecKey
	issuer *token.Issuer
	jwks   []byte
}

func newFixture(t testing.TB) *fixture {
	t.Helper()
	key := newKey(t, elliptic.P256())
	iss, err := token.NewIssuer(testIssuer, key)
	if err != nil {
		t.Fatal(err)
	}
	jwks, err := iss.JWKS()
	if err != nil {
		t.Fatal(err)
	}
	return &fixture{key: key, issuer: iss, jwks: jwks}
}

// verifier returns a relying party over f's JWKS at time now, with testAudience and opts' other
// fields.
func (f *fixture) verifier(t testing.TB, now time.Time, opts rp.Options) *rp.Verifier {
	t.Helper()
	if opts.Audience == "" {
		opts.Audience = testAudience
	}
	opts.Now = func() time.Time { return now }
	v, err := rp.New(f.jwks, opts)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// testResult returns a finalized result with the given status and a trust vector that agrees.
func testResult(platform string, status ear.Status) *ear.Result {
	res := &ear.Result{
		Platform:   platform,
		VerifiedAt: testNow,
		Policy:     ear.PolicyRef{ID: "default", Digest: "sha256:" + strings.Repeat("33", 32)},
		Verifier:   ear.VerifierID{Name: "proofline", Version: "v0.1.0"},
		TrustVector: ear.TrustVector{
			InstanceIdentity: ear.TrustworthyInstance, Configuration: ear.ApprovedConfig,
			Executables: ear.ApprovedRuntime, Hardware: ear.GenuineHardware,
			RuntimeOpaque: ear.EncryptedMemoryRuntime, SourcedData: ear.TrustworthySources,
		},
	}
	switch status {
	case ear.StatusWarning:
		res.Warn(ear.CodeNoReferenceValues, "tdx.7", "no MRTD pinned")
		res.TrustVector.Executables = ear.UnrecognizedRuntime
	case ear.StatusContraindicated:
		res.Fail(ear.CodeTDXDebug, "tdx.7", "DEBUG is set")
		res.TrustVector.RuntimeOpaque = ear.VisibleMemoryRuntime
		res.TrustVector.Configuration = ear.UnsupportableConfig
	}
	res.Finalize()
	return res
}

var testNonce = bytes.Repeat([]byte{0x4e}, 32)

func testRef() token.RecordRef {
	var sum [32]byte
	copy(sum[:], bytes.Repeat([]byte{0xab}, 32))
	return token.RecordRef{LogIndex: 42, SHA256: sum, Subject: "vm-7f3a", Nonce: testNonce}
}

// claims returns the claim set of an hour-long token for an affirming TDX result.
func (f *fixture) claims(t testing.TB, status ear.Status) *token.Claims {
	t.Helper()
	c, err := f.issuer.Claims(testResult("tdx", status), testRef(), []string{testAudience}, time.Hour, testNow)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func (f *fixture) jwt(t testing.TB, c *token.Claims) string {
	t.Helper()
	tok, err := f.issuer.SignJWT(context.Background(), c)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func (f *fixture) cwt(t testing.TB, c *token.Claims) []byte {
	t.Helper()
	b, err := f.issuer.SignCWT(context.Background(), c)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// splitJWT returns the decoded header object, the payload bytes and the signature of a JWT.
func splitJWT(t testing.TB, tok string) (map[string]any, []byte, []byte) {
	t.Helper()
	parts := strings.Split(tok, ".")
	if len(parts) != 3 {
		t.Fatalf("%d parts", len(parts))
	}
	var dec [3][]byte
	for i, p := range parts {
		b, err := base64.RawURLEncoding.DecodeString(p)
		if err != nil {
			t.Fatal(err)
		}
		dec[i] = b
	}
	var hdr map[string]any
	if err := json.Unmarshal(dec[0], &hdr); err != nil {
		t.Fatal(err)
	}
	return hdr, dec[1], dec[2]
}

func b64(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }

// craftJWT assembles a JWS compact serialization from a header (encoded as given, so that
// duplicates and odd members survive), a payload and a signing function over the signing input.
func craftJWT(rawHeader string, payload []byte, sign func(signingInput []byte) []byte) string {
	input := b64([]byte(rawHeader)) + "." + b64(payload)
	var sig []byte
	if sign != nil {
		sig = sign([]byte(input))
	}
	return input + "." + b64(sig)
}

func headerJSON(t testing.TB, h map[string]any) string {
	t.Helper()
	b, err := json.Marshal(h)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func hs256(secret []byte) func([]byte) []byte {
	return func(in []byte) []byte {
		m := hmac.New(sha256.New, secret)
		m.Write(in)
		return m.Sum(nil)
	}
}

func rs256(priv *rsa.PrivateKey) func([]byte) []byte {
	return func(in []byte) []byte {
		d := sha256.Sum256(in)
		sig, err := rsa.SignPKCS1v15(rand.Reader, priv, crypto.SHA256, d[:])
		if err != nil {
			panic(err)
		}
		return sig
	}
}

func ps256(priv *rsa.PrivateKey) func([]byte) []byte {
	return func(in []byte) []byte {
		d := sha256.Sum256(in)
		sig, err := rsa.SignPSS(rand.Reader, priv, crypto.SHA256, d[:], nil)
		if err != nil {
			panic(err)
		}
		return sig
	}
}

// craftCWT assembles a tagged COSE_Sign1 by hand (RFC 9052 §4.2, §4.4), so that tests can put
// any parameter in either header; sign signs the Sig_structure.
func craftCWT(t testing.TB, protected, unprotected map[int64]any, payload []byte, sign func([]byte) []byte) []byte {
	t.Helper()
	enc, err := cbor.CoreDetEncOptions().EncMode()
	if err != nil {
		t.Fatal(err)
	}
	prot := []byte{}
	if len(protected) > 0 {
		if prot, err = enc.Marshal(protected); err != nil {
			t.Fatal(err)
		}
	}
	tbs, err := enc.Marshal([]any{"Signature1", prot, []byte{}, payload})
	if err != nil {
		t.Fatal(err)
	}
	if unprotected == nil {
		unprotected = map[int64]any{}
	}
	msg, err := enc.Marshal(cbor.Tag{Number: 18, Content: []any{prot, unprotected, payload, sign(tbs)}})
	if err != nil {
		t.Fatal(err)
	}
	return msg
}

// cwtPayload returns the claims map and the headers of a CWT.
func cwtParts(t testing.TB, b []byte) (cose.ProtectedHeader, []byte) {
	t.Helper()
	var msg cose.Sign1Message
	if err := msg.UnmarshalCBOR(b); err != nil {
		t.Fatal(err)
	}
	return msg.Headers.Protected, msg.Payload
}

func kidBytes(t testing.TB, kid string) []byte {
	t.Helper()
	b, err := hex.DecodeString(kid)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
