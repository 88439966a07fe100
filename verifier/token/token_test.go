package token

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/sha512"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/fxamacker/cbor/v2"
	"github.com/go-jose/go-jose/v4"
	"github.com/proofline/proofline/evidence"
	"github.com/proofline/proofline/verifier/ear"
	"github.com/veraison/go-cose"
)

// The evidence record signing key has the Signer method set, so a verifier may reuse it (or a
// KMS wrapper written for records) for tokens.
var _ Signer = (*evidence.Key)(nil)

var testNow = time.Date(2026, 11, 2, 10, 0, 0, 0, time.UTC)

// ecSigner is an in-test Signer over an ECDSA key of any curve.
type ecSigner struct {
	priv *ecdsa.PrivateKey
	alg  cose.Algorithm
}

func newECSigner(t testing.TB, curve elliptic.Curve) *ecSigner {
	t.Helper()
	priv, err := ecdsa.GenerateKey(curve, rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	alg := cose.AlgorithmES256
	if curve == elliptic.P384() {
		alg = cose.AlgorithmES384
	}
	return &ecSigner{priv: priv, alg: alg}
}

func (s *ecSigner) Algorithm() cose.Algorithm { return s.alg }
func (s *ecSigner) Public() crypto.PublicKey  { return &s.priv.PublicKey }
func (s *ecSigner) Sign(_ context.Context, tbs []byte) ([]byte, error) {
	var digest []byte
	if s.alg == cose.AlgorithmES384 {
		d := sha512.Sum384(tbs)
		digest = d[:]
	} else {
		d := sha256.Sum256(tbs)
		digest = d[:]
	}
	r, ss, err := ecdsa.Sign(rand.Reader, s.priv, digest)
	if err != nil {
		return nil, err
	}
	size := (s.priv.Curve.Params().BitSize + 7) / 8
	sig := make([]byte, 2*size)
	r.FillBytes(sig[:size])
	ss.FillBytes(sig[size:])
	return sig, nil
}

// repeatReader makes token ids deterministic.
type repeatReader byte

func (r repeatReader) Read(p []byte) (int, error) {
	for i := range p {
		p[i] = byte(r)
	}
	return len(p), nil
}

// testResult returns a finalized result with the given status and a consistent trust vector.
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
		res.Warn(ear.CodeNoReferenceValues, "tdx.7", "no MRTD pinned")
		res.Fail(ear.CodeTDXDebug, "tdx.7", "DEBUG is set")
		res.TrustVector.RuntimeOpaque = ear.VisibleMemoryRuntime
		res.TrustVector.Configuration = ear.UnsupportableConfig
	}
	res.Finalize()
	return res
}

func testRef() RecordRef {
	var sum [32]byte
	copy(sum[:], bytes.Repeat([]byte{0xab}, 32))
	return RecordRef{LogIndex: 42, SHA256: sum, Subject: "vm-7f3a", Nonce: bytes.Repeat([]byte{0x4e}, 32)}
}

func newIssuer(t testing.TB, s Signer, previous ...crypto.PublicKey) *Issuer {
	t.Helper()
	i, err := NewIssuer("https://verifier.example", s, previous...)
	if err != nil {
		t.Fatal(err)
	}
	i.rand = repeatReader(0x11)
	return i
}

// verifyJWT checks a JWT's header and signature with go-jose alone and decodes its claims.
func verifyJWT(t *testing.T, tok string, pub *ecdsa.PublicKey, alg jose.SignatureAlgorithm) (map[string]any, *Claims) {
	t.Helper()
	jws, err := jose.ParseSignedCompact(tok, []jose.SignatureAlgorithm{alg})
	if err != nil {
		t.Fatal(err)
	}
	payload, err := jws.Verify(pub)
	if err != nil {
		t.Fatal(err)
	}
	hdr, err := base64.RawURLEncoding.DecodeString(strings.Split(tok, ".")[0])
	if err != nil {
		t.Fatal(err)
	}
	var h map[string]any
	if err := json.Unmarshal(hdr, &h); err != nil {
		t.Fatal(err)
	}
	c, err := ParseJWTPayload(payload)
	if err != nil {
		t.Fatal(err)
	}
	return h, c
}

// verifyCWT checks a CWT's headers and signature with go-cose alone and decodes its claims.
func verifyCWT(t *testing.T, b []byte, pub *ecdsa.PublicKey, alg cose.Algorithm) (cose.ProtectedHeader, *Claims) {
	t.Helper()
	var msg cose.Sign1Message
	if err := msg.UnmarshalCBOR(b); err != nil {
		t.Fatal(err)
	}
	v, err := cose.NewVerifier(alg, pub)
	if err != nil {
		t.Fatal(err)
	}
	if err := msg.Verify(nil, v); err != nil {
		t.Fatal(err)
	}
	if len(msg.Headers.Unprotected) != 0 {
		t.Errorf("unprotected header %v, want empty", msg.Headers.Unprotected)
	}
	c, err := ParseCWTPayload(msg.Payload)
	if err != nil {
		t.Fatal(err)
	}
	return msg.Headers.Protected, c
}

// TestRoundTrip: for every status and platform, the JWT and the CWT carry exactly the claims
// Issuer.Claims derives from the result, under exactly the documented headers, and verify with
// the stock libraries and the published key.
func TestRoundTrip(t *testing.T) {
	for _, curve := range []elliptic.Curve{elliptic.P256(), elliptic.P384()} {
		s := newECSigner(t, curve)
		i := newIssuer(t, s)
		jalg := joseAlgorithm(s.alg)
		for _, platform := range []string{"tdx", "sev-snp"} {
			for _, status := range []ear.Status{ear.StatusAffirming, ear.StatusWarning, ear.StatusContraindicated} {
				t.Run(curve.Params().Name+"/"+platform+"/"+string(status), func(t *testing.T) {
					res := testResult(platform, status)
					want, err := i.Claims(res, testRef(), []string{"kms"}, time.Hour, testNow)
					if err != nil {
						t.Fatal(err)
					}
					if want.Status != status || want.Expiry != testNow.Add(time.Hour) || want.NotBefore != testNow || len(want.ID) != 16 {
						t.Fatalf("claims %+v", want)
					}

					tok, err := i.IssueJWT(context.Background(), res, testRef(), []string{"kms"}, time.Hour, testNow)
					if err != nil {
						t.Fatal(err)
					}
					hdr, got := verifyJWT(t, tok, &s.priv.PublicKey, jalg)
					if !got.Equal(want) {
						t.Errorf("JWT claims\n got %+v\nwant %+v", got, want)
					}
					wantHdr := map[string]any{"alg": string(jalg), "kid": i.KeyID(), "typ": JWTType}
					if len(hdr) != 3 || hdr["alg"] != wantHdr["alg"] || hdr["kid"] != wantHdr["kid"] || hdr["typ"] != wantHdr["typ"] {
						t.Errorf("JWT header %v, want %v", hdr, wantHdr)
					}

					cwt, err := i.IssueCWT(context.Background(), res, testRef(), []string{"kms"}, time.Hour, testNow)
					if err != nil {
						t.Fatal(err)
					}
					if cwt[0] != 0xd2 {
						t.Errorf("CWT starts with %#x, want tag 18 (0xd2)", cwt[0])
					}
					prot, got := verifyCWT(t, cwt, &s.priv.PublicKey, s.alg)
					if !got.Equal(want) {
						t.Errorf("CWT claims\n got %+v\nwant %+v", got, want)
					}
					kid, _ := hex.DecodeString(i.KeyID())
					if len(prot) != 3 || prot[cose.HeaderLabelAlgorithm] != s.alg || !bytes.Equal(prot[cose.HeaderLabelKeyID].([]byte), kid) || prot[cose.HeaderLabelType] != CWTType {
						t.Errorf("CWT protected header %v", prot)
					}
				})
			}
		}
	}
}

// TestKeyID: the key id is the evidence key history's (SHA-256 of the SPKI), in lower-case hex.
func TestKeyID(t *testing.T) {
	k, err := evidence.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	i := newIssuer(t, k)
	if i.KeyID() != hex.EncodeToString(k.KeyID()) {
		t.Fatalf("kid %s, evidence key id %x", i.KeyID(), k.KeyID())
	}
	// And the evidence key signs tokens that verify.
	tok, err := i.IssueJWT(context.Background(), testResult("tdx", ear.StatusAffirming), testRef(), []string{"kms"}, time.Minute, testNow)
	if err != nil {
		t.Fatal(err)
	}
	verifyJWT(t, tok, k.Public().(*ecdsa.PublicKey), jose.ES256)
}

// TestJWKS: the JWKS publishes the current key first and then the previous ones, public parts
// only, each with kid, alg and use; go-jose reads it back to the same keys.
func TestJWKS(t *testing.T) {
	cur, old1, old2 := newECSigner(t, elliptic.P256()), newECSigner(t, elliptic.P256()), newECSigner(t, elliptic.P384())
	i := newIssuer(t, cur, old1.Public(), old2.Public())
	b, err := i.JWKS()
	if err != nil {
		t.Fatal(err)
	}
	var raw struct {
		Keys []map[string]any `json:"keys"`
	}
	if err := json.Unmarshal(b, &raw); err != nil {
		t.Fatal(err)
	}
	if len(raw.Keys) != 3 {
		t.Fatalf("%d keys", len(raw.Keys))
	}
	for n, k := range raw.Keys {
		if _, ok := k["d"]; ok {
			t.Fatalf("key %d has private material: %s", n, b)
		}
		for _, m := range []string{"kty", "crv", "x", "y", "kid", "alg", "use"} {
			if _, ok := k[m]; !ok {
				t.Errorf("key %d lacks %q", n, m)
			}
		}
		if len(k) != 7 || k["use"] != "sig" || k["kty"] != "EC" {
			t.Errorf("key %d: %v", n, k)
		}
	}
	var set jose.JSONWebKeySet
	if err := json.Unmarshal(b, &set); err != nil {
		t.Fatal(err)
	}
	for n, s := range []*ecSigner{cur, old1, old2} {
		kid, _ := KeyID(s.Public())
		k := set.Key(kid)
		if len(k) != 1 || !k[0].Key.(*ecdsa.PublicKey).Equal(s.Public()) || k[0].Algorithm != string(joseAlgorithm(s.alg)) {
			t.Errorf("key %d (%s) not published as itself", n, kid)
		}
	}
	if raw.Keys[0]["kid"] != i.KeyID() {
		t.Error("the current key is not first")
	}
}

// badSigner returns an ASN.1 signature, or signs with another key than Public says.
type badSigner struct {
	*ecSigner
	other *ecSigner
	asn1  bool
}

func (b badSigner) Sign(ctx context.Context, tbs []byte) ([]byte, error) {
	if b.asn1 {
		d := sha256.Sum256(tbs)
		return ecdsa.SignASN1(rand.Reader, b.priv, d[:])
	}
	return b.other.Sign(ctx, tbs)
}

// TestIssueRefuses: the Issuer refuses what would produce a wrong or unverifiable token.
func TestIssueRefuses(t *testing.T) {
	s := newECSigner(t, elliptic.P256())
	ctx := context.Background()

	if _, err := NewIssuer("", s); err == nil {
		t.Error("accepted an empty issuer name")
	}
	if _, err := NewIssuer("iss", &ecSigner{priv: s.priv, alg: cose.AlgorithmES384}); err == nil {
		t.Error("accepted ES384 with a P-256 key")
	}
	p521 := newECSigner(t, elliptic.P521())
	p521.alg = cose.AlgorithmES512
	if _, err := NewIssuer("iss", p521); err == nil {
		t.Error("accepted a P-521 key")
	}
	if _, err := NewIssuer("iss", s, s.Public()); err == nil {
		t.Error("accepted the current key again as a previous key")
	}

	for _, bad := range []badSigner{{ecSigner: s, asn1: true}, {ecSigner: s, other: newECSigner(t, elliptic.P256())}} {
		i := newIssuer(t, bad)
		if _, err := i.IssueJWT(ctx, testResult("tdx", ear.StatusAffirming), testRef(), []string{"kms"}, time.Hour, testNow); err == nil {
			t.Errorf("JWT: accepted a bad signature (asn1=%v)", bad.asn1)
		}
		if _, err := i.IssueCWT(ctx, testResult("tdx", ear.StatusAffirming), testRef(), []string{"kms"}, time.Hour, testNow); err == nil {
			t.Errorf("CWT: accepted a bad signature (asn1=%v)", bad.asn1)
		}
	}

	i := newIssuer(t, s)
	cases := map[string]struct {
		res *ear.Result
		ref func(*RecordRef)
		aud []string
		ttl time.Duration
		now time.Time
	}{
		"no audience":       {aud: []string{}},
		"empty audience":    {aud: []string{""}},
		"no ttl":            {ttl: -1},
		"no time":           {now: time.Time{}},
		"no record digest":  {ref: func(r *RecordRef) { r.SHA256 = [32]byte{} }},
		"short nonce":       {ref: func(r *RecordRef) { r.Nonce = []byte{1, 2, 3} }},
		"not finalized":     {res: &ear.Result{Platform: "tdx", Status: ear.StatusAffirming, Policy: ear.PolicyRef{ID: "p", Digest: "d"}, Verifier: ear.VerifierID{Version: "v"}}},
		"no platform":       {res: func() *ear.Result { r := testResult("", ear.StatusAffirming); return r }()},
		"no policy":         {res: func() *ear.Result { r := testResult("tdx", ear.StatusAffirming); r.Policy = ear.PolicyRef{}; return r }()},
		"no verifier build": {res: func() *ear.Result { r := testResult("tdx", ear.StatusAffirming); r.Verifier.Version = ""; return r }()},
		"status vs findings": {res: func() *ear.Result {
			r := testResult("tdx", ear.StatusWarning)
			r.Status = ear.StatusAffirming
			return r
		}()},
		"status vs vector": {res: func() *ear.Result {
			r := testResult("tdx", ear.StatusAffirming)
			r.TrustVector.Hardware = ear.ContraindicatedHardware
			return r
		}()},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			res, ref, aud, ttl, now := c.res, testRef(), c.aud, c.ttl, testNow
			if res == nil {
				res = testResult("tdx", ear.StatusAffirming)
			}
			if c.ref != nil {
				c.ref(&ref)
			}
			if aud == nil {
				aud = []string{"kms"}
			}
			if ttl == 0 {
				ttl = time.Hour
			}
			if name == "no time" {
				now = time.Time{}
			}
			if _, err := i.IssueJWT(ctx, res, ref, aud, ttl, now); err == nil {
				t.Error("JWT issued")
			}
			if _, err := i.IssueCWT(ctx, res, ref, aud, ttl, now); err == nil {
				t.Error("CWT issued")
			}
		})
	}
}

// TestParseRefuses: the payload parsers refuse claim sets that break the documented rules.
func TestParseRefuses(t *testing.T) {
	i := newIssuer(t, newECSigner(t, elliptic.P256()))
	c, err := i.Claims(testResult("tdx", ear.StatusWarning), testRef(), []string{"kms"}, time.Hour, testNow)
	if err != nil {
		t.Fatal(err)
	}
	jwtPayload, err := c.marshalJWT()
	if err != nil {
		t.Fatal(err)
	}
	edit := func(f func(m map[string]any)) []byte {
		var m map[string]any
		if err := json.Unmarshal(jwtPayload, &m); err != nil {
			t.Fatal(err)
		}
		f(m)
		b, err := json.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	if _, err := ParseJWTPayload(edit(func(map[string]any) {})); err != nil {
		t.Fatalf("the unedited payload: %v", err)
	}
	pl := func(m map[string]any) map[string]any { return m["proofline"].(map[string]any) }
	sub := func(m map[string]any) map[string]any { return m["submods"].(map[string]any)["tdx"].(map[string]any) }
	for name, b := range map[string][]byte{
		"wrong profile":       edit(func(m map[string]any) { m["eat_profile"] = "tag:example.com,2020:other" }),
		"no iat":              edit(func(m map[string]any) { delete(m, "iat") }),
		"float iat":           edit(func(m map[string]any) { m["iat"] = 1.5 }),
		"no exp":              edit(func(m map[string]any) { delete(m, "exp") }),
		"no proofline":        edit(func(m map[string]any) { delete(m, "proofline") }),
		"no log index":        edit(func(m map[string]any) { delete(pl(m), "log_index") }),
		"no record digest":    edit(func(m map[string]any) { delete(pl(m), "record_sha256") }),
		"upper-case digest":   edit(func(m map[string]any) { pl(m)["record_sha256"] = strings.Repeat("AB", 32) }),
		"short digest":        edit(func(m map[string]any) { pl(m)["record_sha256"] = "abab" }),
		"policy mismatch":     edit(func(m map[string]any) { sub(m)["ear.appraisal-policy-id"] = "other@sha256:00" }),
		"unknown status":      edit(func(m map[string]any) { sub(m)["ear.status"] = "none" }),
		"status vs warnings":  edit(func(m map[string]any) { sub(m)["ear.status"] = "affirming" }),
		"two submods":         edit(func(m map[string]any) { m["submods"].(map[string]any)["sev-snp"] = sub(m) }),
		"no verifier-id":      edit(func(m map[string]any) { delete(m, "ear.verifier-id") }),
		"padded nonce":        edit(func(m map[string]any) { m["eat_nonce"] = m["eat_nonce"].(string) + "=" }),
		"trust vector > int8": edit(func(m map[string]any) { sub(m)["ear.trustworthiness-vector"].(map[string]any)["hardware"] = 300 }),
		"no audience":         edit(func(m map[string]any) { delete(m, "aud") }),
		"not an object":       []byte(`[]`),
	} {
		if _, err := ParseJWTPayload(b); err == nil {
			t.Errorf("JWT %s: accepted %s", name, b)
		}
	}

	cwtPayload, err := c.marshalCWT()
	if err != nil {
		t.Fatal(err)
	}
	cedit := func(f func(m map[any]any)) []byte {
		var m map[any]any
		if err := cbor.Unmarshal(cwtPayload, &m); err != nil {
			t.Fatal(err)
		}
		f(m)
		b, err := cbor.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	if _, err := ParseCWTPayload(cedit(func(map[any]any) {})); err != nil {
		t.Fatalf("the unedited payload: %v", err)
	}
	for name, b := range map[string][]byte{
		"wrong profile":   cedit(func(m map[any]any) { m[uint64(265)] = "x" }),
		"no proofline":    cedit(func(m map[any]any) { delete(m, int64(-65537)) }),
		"no iat":          cedit(func(m map[any]any) { delete(m, uint64(6)) }),
		"float exp":       cedit(func(m map[any]any) { m[uint64(4)] = 1.5e9 }),
		"tagged iat":      cedit(func(m map[any]any) { m[uint64(6)] = cbor.Tag{Number: 1, Content: testNow.Unix()} }),
		"text status":     cedit(func(m map[any]any) { m[uint64(266)].(map[any]any)["tdx"].(map[any]any)[uint64(1000)] = "warning" }),
		"trailing bytes":  append(append([]byte(nil), cwtPayload...), 0x00),
		"duplicate claim": {0xa2, 0x01, 0x61, 'a', 0x01, 0x61, 'b'},
	} {
		if _, err := ParseCWTPayload(b); err == nil {
			t.Errorf("CWT %s: accepted", name)
		}
	}
}

// TestNoClock: the package reads no clock; every time is given.
func TestNoClock(t *testing.T) {
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if bytes.Contains(b, []byte("time.Now")) || bytes.Contains(b, []byte("time.Since")) {
			t.Errorf("%s reads the clock", f)
		}
	}
}

func FuzzParseJWTPayload(f *testing.F) {
	i := newIssuer(f, newECSigner(f, elliptic.P256()))
	for _, st := range []ear.Status{ear.StatusAffirming, ear.StatusContraindicated} {
		c, _ := i.Claims(testResult("tdx", st), testRef(), []string{"a", "b"}, time.Hour, testNow)
		b, _ := c.marshalJWT()
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := ParseJWTPayload(b)
		if err != nil {
			return
		}
		again, err := c.marshalJWT()
		if err != nil {
			t.Fatalf("accepted claims do not re-encode: %v", err)
		}
		c2, err := ParseJWTPayload(again)
		if err != nil || !c2.Equal(c) {
			t.Fatalf("re-encoded claims differ: %v", err)
		}
	})
}

func FuzzParseCWTPayload(f *testing.F) {
	i := newIssuer(f, newECSigner(f, elliptic.P256()))
	for _, st := range []ear.Status{ear.StatusAffirming, ear.StatusContraindicated} {
		c, _ := i.Claims(testResult("sev-snp", st), testRef(), []string{"a"}, time.Hour, testNow)
		b, _ := c.marshalCWT()
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := ParseCWTPayload(b)
		if err != nil {
			return
		}
		again, err := c.marshalCWT()
		if err != nil {
			t.Fatalf("accepted claims do not re-encode: %v", err)
		}
		c2, err := ParseCWTPayload(again)
		if err != nil || !c2.Equal(c) {
			t.Fatalf("re-encoded claims differ: %v", err)
		}
	})
}
