package rp_test

import (
	"bytes"
	"context"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"math/big"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/fxamacker/cbor/v2"
	"github.com/go-jose/go-jose/v4"
	"github.com/proofline/proofline/verifier/ear"
	"github.com/proofline/proofline/verifier/rp"
	"github.com/proofline/proofline/verifier/token"
	"github.com/veraison/go-cose"
)

// format runs a test against both token forms.
type format struct {
	name   string
	issue  func(t testing.TB, f *fixture, c *token.Claims) any
	verify func(v *rp.Verifier, tok any) (*rp.Claims, error)
}

var formats = []format{
	{
		name:   "JWT",
		issue:  func(t testing.TB, f *fixture, c *token.Claims) any { return f.jwt(t, c) },
		verify: func(v *rp.Verifier, tok any) (*rp.Claims, error) { return v.VerifyJWT(tok.(string)) },
	},
	{
		name:   "CWT",
		issue:  func(t testing.TB, f *fixture, c *token.Claims) any { return f.cwt(t, c) },
		verify: func(v *rp.Verifier, tok any) (*rp.Claims, error) { return v.VerifyCWT(tok.([]byte)) },
	},
}

// TestRoundTrip: a token issued for a result verifies and exposes exactly the result's claims,
// for both forms, both platforms, affirming results by default and warning results when the
// relying party accepts warning.
func TestRoundTrip(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	for _, platform := range []string{"tdx", "sev-snp"} {
		for _, status := range []ear.Status{ear.StatusAffirming, ear.StatusWarning} {
			res := testResult(platform, status)
			jwt, err := f.issuer.IssueJWT(ctx, res, testRef(), []string{"other", testAudience}, time.Hour, testNow)
			if err != nil {
				t.Fatal(err)
			}
			cwt, err := f.issuer.IssueCWT(ctx, res, testRef(), []string{testAudience}, time.Hour, testNow)
			if err != nil {
				t.Fatal(err)
			}
			v := f.verifier(t, testNow.Add(30*time.Minute), rp.Options{Issuer: testIssuer, RequireStatus: status, MaxAge: time.Hour})
			for _, fm := range formats {
				t.Run(fm.name+"/"+platform+"/"+string(status), func(t *testing.T) {
					tok := any(jwt)
					if fm.name == "CWT" {
						tok = cwt
					}
					c, err := fm.verify(v, tok)
					if err != nil {
						t.Fatal(err)
					}
					ref := testRef()
					if c.Status != status || c.Platform != platform || c.TrustVector != res.TrustVector ||
						c.PolicyID != "default" || c.PolicyDigest != res.Policy.Digest ||
						c.LogIndex != 42 || c.RecordSHA256 != ref.SHA256 || !bytes.Equal(c.Nonce, testNonce) ||
						c.Subject != "vm-7f3a" || c.Issuer != testIssuer || !c.Expiry.Equal(testNow.Add(time.Hour)) ||
						!c.IssuedAt.Equal(testNow) || c.TestRoots || c.KeyID != f.key.kid(t) ||
						c.Verifier != (token.VerifierID{Build: "v0.1.0", Developer: "proofline"}) {
						t.Errorf("claims %+v", c)
					}
					if status == ear.StatusWarning && (len(c.Warnings) != 1 || c.Warnings[0] != ear.CodeNoReferenceValues || len(c.Failures) != 0) {
						t.Errorf("findings %v %v", c.Failures, c.Warnings)
					}
					if err := c.RequireNonce(testNonce); err != nil {
						t.Error(err)
					}
					if err := c.RequireNonce(bytes.Repeat([]byte{1}, 32)); !errors.Is(err, rp.ErrNonce) {
						t.Errorf("another nonce: %v", err)
					}
				})
			}
		}
	}
}

// TestStatus: contraindicated is never accepted; warning only when the relying party says so.
func TestStatus(t *testing.T) {
	f := newFixture(t)
	for _, fm := range formats {
		for _, c := range []struct {
			token, require ear.Status
			want           error
		}{
			{ear.StatusAffirming, "", nil},
			{ear.StatusAffirming, ear.StatusWarning, nil},
			{ear.StatusWarning, "", rp.ErrStatus},
			{ear.StatusWarning, ear.StatusAffirming, rp.ErrStatus},
			{ear.StatusWarning, ear.StatusWarning, nil},
			{ear.StatusContraindicated, "", rp.ErrStatus},
			{ear.StatusContraindicated, ear.StatusWarning, rp.ErrStatus},
		} {
			t.Run(fm.name+"/"+string(c.token)+"/require "+string(c.require), func(t *testing.T) {
				tok := fm.issue(t, f, f.claims(t, c.token))
				_, err := fm.verify(f.verifier(t, testNow, rp.Options{RequireStatus: c.require}), tok)
				if !errors.Is(err, c.want) || (c.want == nil && err != nil) {
					t.Fatalf("got %v, want %v", err, c.want)
				}
			})
		}
	}
	if _, err := rp.New(f.jwks, rp.Options{Audience: testAudience, RequireStatus: ear.StatusContraindicated}); err == nil {
		t.Error("New accepted RequireStatus contraindicated")
	}
}

// TestClaimChecks: each token is valid but for one claim (re-signed with the issuer's own key, so
// only the claim check can refuse it), or is checked under one changed option.
func TestClaimChecks(t *testing.T) {
	f := newFixture(t)
	cases := []struct {
		name string
		edit func(c *token.Claims)
		now  time.Time
		opts rp.Options
		want error
	}{
		{name: "valid"},
		{name: "wrong audience", edit: func(c *token.Claims) { c.Audience = []string{"other.example"} }, want: rp.ErrAudience},
		{name: "audience among several", edit: func(c *token.Claims) { c.Audience = []string{"a", testAudience, "b"} }},
		{name: "audience prefix", edit: func(c *token.Claims) { c.Audience = []string{testAudience + ".evil"} }, want: rp.ErrAudience},
		{name: "wrong issuer", edit: func(c *token.Claims) { c.Issuer = "https://evil.example" }, opts: rp.Options{Issuer: testIssuer}, want: rp.ErrIssuer},
		{name: "any issuer when none is required", edit: func(c *token.Claims) { c.Issuer = "https://other.example" }},
		{name: "expired", now: testNow.Add(time.Hour), want: rp.ErrExpired},
		{name: "expired long ago", now: testNow.Add(48 * time.Hour), want: rp.ErrExpired},
		{name: "last second", now: testNow.Add(time.Hour - time.Second)},
		{name: "expired within leeway", now: testNow.Add(time.Hour + 10*time.Second), opts: rp.Options{Leeway: 30 * time.Second}},
		{name: "not yet valid (nbf)", now: testNow.Add(-time.Minute), want: rp.ErrNotYetValid},
		{name: "nbf within leeway", now: testNow.Add(-time.Minute), opts: rp.Options{Leeway: 2 * time.Minute}},
		{name: "iat in the future", edit: func(c *token.Claims) {
			c.NotBefore, c.IssuedAt = time.Time{}, testNow.Add(10*time.Minute)
		}, want: rp.ErrNotYetValid},
		{name: "iat in the future within leeway", edit: func(c *token.Claims) {
			c.NotBefore, c.IssuedAt = time.Time{}, testNow.Add(10*time.Second)
		}, opts: rp.Options{Leeway: 30 * time.Second}},
		{name: "older than MaxAge", now: testNow.Add(10 * time.Minute), opts: rp.Options{MaxAge: 5 * time.Minute}, want: rp.ErrExpired},
		{name: "younger than MaxAge", now: testNow.Add(4 * time.Minute), opts: rp.Options{MaxAge: 5 * time.Minute}},
		{name: "test roots", edit: func(c *token.Claims) { c.TestRoots = true }, want: rp.ErrTestRoots},
		{name: "test roots allowed", edit: func(c *token.Claims) { c.TestRoots = true }, opts: rp.Options{AllowTestRootsUnsafe: true}},
	}
	for _, fm := range formats {
		for _, c := range cases {
			t.Run(fm.name+"/"+c.name, func(t *testing.T) {
				claims := f.claims(t, ear.StatusAffirming)
				if c.edit != nil {
					c.edit(claims)
				}
				now := c.now
				if now.IsZero() {
					now = testNow
				}
				_, err := fm.verify(f.verifier(t, now, c.opts), fm.issue(t, f, claims))
				t.Log(err)
				if !errors.Is(err, c.want) || (c.want == nil && err != nil) {
					t.Fatalf("got %v, want %v", err, c.want)
				}
			})
		}
	}
}

// TestRequireNonce: a token without eat_nonce never satisfies RequireNonce.
func TestRequireNonce(t *testing.T) {
	f := newFixture(t)
	c := f.claims(t, ear.StatusAffirming)
	c.Nonce = nil
	got, err := f.verifier(t, testNow, rp.Options{}).VerifyJWT(f.jwt(t, c))
	if err != nil {
		t.Fatal(err)
	}
	if err := got.RequireNonce(testNonce); !errors.Is(err, rp.ErrNonce) {
		t.Fatalf("no eat_nonce: %v", err)
	}
	if err := got.RequireNonce(nil); !errors.Is(err, rp.ErrNonce) {
		t.Fatalf("nil nonce: %v", err)
	}
}

// attackKeys are the keys an attacker holds: an EC key of each curve, an RSA key.
type attackKeys struct {
	ec256, ec384, ec521 *ecKey
	rsa                 *rsa.PrivateKey
}

func newAttackKeys(t *testing.T) attackKeys {
	r, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	return attackKeys{newKey(t, elliptic.P256()), newKey(t, elliptic.P384()), newKey(t, elliptic.P521()), r}
}

func selfSigned(t *testing.T, k *ecKey) []byte {
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "attacker"},
		NotBefore: testNow.Add(-time.Hour), NotAfter: testNow.Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, k.Public(), k.priv)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

// TestRefuseJWT: every attack is built from a valid token of the issuer (its header and payload)
// and must be refused with the named decision — not merely with some error.
func TestRefuseJWT(t *testing.T) {
	f := newFixture(t)
	atk := newAttackKeys(t)
	valid := f.jwt(t, f.claims(t, ear.StatusAffirming))
	hdr, payload, sig := splitJWT(t, valid)
	kid := hdr["kid"].(string)
	with := func(edit map[string]any) string {
		h := map[string]any{}
		for k, v := range hdr {
			h[k] = v
		}
		for k, v := range edit {
			if v == nil {
				delete(h, k)
			} else {
				h[k] = v
			}
		}
		return headerJSON(t, h)
	}
	pubDER, err := x509.MarshalPKIXPublicKey(f.key.Public())
	if err != nil {
		t.Fatal(err)
	}
	pubPEM := pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pubDER})
	pubJWK, err := json.Marshal(jose.JSONWebKey{Key: f.key.Public(), KeyID: kid, Algorithm: "ES256", Use: "sig"})
	if err != nil {
		t.Fatal(err)
	}
	attackerJWK := func(k *ecKey) map[string]any {
		b, err := json.Marshal(jose.JSONWebKey{Key: k.Public()})
		if err != nil {
			t.Fatal(err)
		}
		var m map[string]any
		json.Unmarshal(b, &m)
		return m
	}
	x5c := []string{base64.StdEncoding.EncodeToString(selfSigned(t, atk.ec256))}
	flipped := func(b []byte, i int) []byte {
		b = bytes.Clone(b)
		b[i] ^= 0x01
		return b
	}
	parts := strings.Split(valid, ".")

	cases := []struct {
		name string
		tok  string
		want error
	}{
		{"valid", valid, nil},
		{"alg none", craftJWT(with(map[string]any{"alg": "none"}), payload, nil), rp.ErrAlgorithm},
		{"alg None", craftJWT(with(map[string]any{"alg": "None"}), payload, nil), rp.ErrAlgorithm},
		{"alg none with the original signature", craftJWT(with(map[string]any{"alg": "none"}), payload, nil) + b64(sig), rp.ErrAlgorithm},
		{"no alg", craftJWT(with(map[string]any{"alg": nil}), payload, f.key.sign), rp.ErrAlgorithm},
		{"alg not a string", craftJWT(with(map[string]any{"alg": 1}), payload, f.key.sign), rp.ErrAlgorithm},
		{"HS256 keyed with the SPKI DER", craftJWT(with(map[string]any{"alg": "HS256"}), payload, hs256(pubDER)), rp.ErrAlgorithm},
		{"HS256 keyed with the PEM", craftJWT(with(map[string]any{"alg": "HS256"}), payload, hs256(pubPEM)), rp.ErrAlgorithm},
		{"HS256 keyed with the JWK", craftJWT(with(map[string]any{"alg": "HS256"}), payload, hs256(pubJWK)), rp.ErrAlgorithm},
		{"HS256 keyed with the JWKS", craftJWT(with(map[string]any{"alg": "HS256"}), payload, hs256(f.jwks)), rp.ErrAlgorithm},
		{"HS512 keyed with the SPKI DER", craftJWT(with(map[string]any{"alg": "HS512"}), payload, hs256(pubDER)), rp.ErrAlgorithm},
		{"RS256 by the attacker under the issuer's kid", craftJWT(with(map[string]any{"alg": "RS256"}), payload, rs256(atk.rsa)), rp.ErrAlgorithm},
		{"PS256 by the attacker under the issuer's kid", craftJWT(with(map[string]any{"alg": "PS256"}), payload, ps256(atk.rsa)), rp.ErrAlgorithm},
		{"ES512 by the attacker", craftJWT(with(map[string]any{"alg": "ES512"}), payload, atk.ec521.sign), rp.ErrAlgorithm},
		{"ES384 under the issuer's P-256 kid", craftJWT(with(map[string]any{"alg": "ES384"}), payload, atk.ec384.sign), rp.ErrAlgorithm},
		{"EdDSA", craftJWT(with(map[string]any{"alg": "EdDSA"}), payload, atk.ec256.sign), rp.ErrAlgorithm},
		{"embedded jwk, attacker's key, no kid", craftJWT(with(map[string]any{"jwk": attackerJWK(atk.ec256), "kid": nil}), payload, atk.ec256.sign), rp.ErrHeader},
		{"embedded jwk, attacker's key, issuer's kid", craftJWT(with(map[string]any{"jwk": attackerJWK(atk.ec256)}), payload, atk.ec256.sign), rp.ErrHeader},
		{"embedded jwk of the issuer's own key, issuer's signature", craftJWT(with(map[string]any{"jwk": attackerJWK(f.key)}), payload, f.key.sign), rp.ErrHeader},
		{"jku", craftJWT(with(map[string]any{"jku": "https://attacker.example/jwks.json", "kid": atk.ec256.kid(t)}), payload, atk.ec256.sign), rp.ErrHeader},
		{"jku, issuer's signature", craftJWT(with(map[string]any{"jku": "https://verifier.example/.well-known/jwks.json"}), payload, f.key.sign), rp.ErrHeader},
		{"x5c", craftJWT(with(map[string]any{"x5c": x5c, "kid": nil}), payload, atk.ec256.sign), rp.ErrHeader},
		{"x5u", craftJWT(with(map[string]any{"x5u": "https://attacker.example/cert.pem"}), payload, atk.ec256.sign), rp.ErrHeader},
		{"x5t#S256", craftJWT(with(map[string]any{"x5t#S256": "AAAA"}), payload, f.key.sign), rp.ErrHeader},
		{"crit naming an unknown parameter", craftJWT(with(map[string]any{"crit": []string{"exp"}, "exp": 1}), payload, f.key.sign), rp.ErrHeader},
		{"crit b64 (RFC 7797), which go-jose would honour", craftJWT(with(map[string]any{"crit": []string{"b64"}, "b64": false}), payload, f.key.sign), rp.ErrHeader},
		{"unknown parameter", craftJWT(with(map[string]any{"zip": "DEF"}), payload, f.key.sign), rp.ErrHeader},
		{"typ JWT", craftJWT(with(map[string]any{"typ": "JWT"}), payload, f.key.sign), rp.ErrHeader},
		{"no typ", craftJWT(with(map[string]any{"typ": nil}), payload, f.key.sign), rp.ErrHeader},
		{"unknown kid", craftJWT(with(map[string]any{"kid": atk.ec256.kid(t)}), payload, atk.ec256.sign), rp.ErrUnknownKey},
		{"no kid", craftJWT(with(map[string]any{"kid": nil}), payload, f.key.sign), rp.ErrUnknownKey},
		{"empty kid", craftJWT(with(map[string]any{"kid": ""}), payload, f.key.sign), rp.ErrUnknownKey},
		{"duplicate alg", craftJWT(`{"alg":"ES256","alg":"none","kid":"`+kid+`","typ":"eat+jwt"}`, payload, f.key.sign), rp.ErrMalformed},
		{"duplicate alg, escaped", craftJWT(`{"alg":"ES256","al\u0067":"HS256","kid":"`+kid+`","typ":"eat+jwt"}`, payload, f.key.sign), rp.ErrMalformed},
		{"payload tampered (one byte)", parts[0] + "." + b64(flipped(payload, len(payload)/2)) + "." + parts[2], rp.ErrSignature},
		{"signature tampered (one byte)", parts[0] + "." + parts[1] + "." + b64(flipped(sig, 10)), rp.ErrSignature},
		{"signature truncated", parts[0] + "." + parts[1] + "." + b64(sig[:63]), rp.ErrSignature},
		{"signature by the attacker", craftJWT(with(nil), payload, atk.ec256.sign), rp.ErrSignature},
		{"two parts", parts[0] + "." + parts[1], rp.ErrMalformed},
		{"four parts", valid + ".x", rp.ErrMalformed},
		{"JWE-shaped", parts[0] + ".." + parts[1] + ".." + parts[2], rp.ErrMalformed},
		{"header not base64url", "!" + valid, rp.ErrMalformed},
		{"header padded", parts[0] + "=." + parts[1] + "." + parts[2], rp.ErrMalformed},
		{"header not an object", craftJWT(`["ES256"]`, payload, f.key.sign), rp.ErrMalformed},
		{"too large", valid + strings.Repeat("A", 40<<10), rp.ErrMalformed},
	}
	v := f.verifier(t, testNow, rp.Options{})
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := v.VerifyJWT(c.tok)
			t.Log(err)
			if !errors.Is(err, c.want) || (c.want == nil && err != nil) {
				t.Fatalf("got %v, want %v", err, c.want)
			}
		})
	}
}

// TestRefuseJWTClaims: a payload signed by the issuer's key that is not a Proofline EAR claim
// set is refused.
func TestRefuseJWTClaims(t *testing.T) {
	f := newFixture(t)
	hdr, payload, _ := splitJWT(t, f.jwt(t, f.claims(t, ear.StatusAffirming)))
	edit := func(e func(m map[string]any)) []byte {
		var m map[string]any
		if err := json.Unmarshal(payload, &m); err != nil {
			t.Fatal(err)
		}
		e(m)
		b, _ := json.Marshal(m)
		return b
	}
	v := f.verifier(t, testNow, rp.Options{})
	for name, p := range map[string][]byte{
		"no Proofline claim":    edit(func(m map[string]any) { delete(m, "proofline") }),
		"no record log index":   edit(func(m map[string]any) { delete(m["proofline"].(map[string]any), "log_index") }),
		"no record digest":      edit(func(m map[string]any) { delete(m["proofline"].(map[string]any), "record_sha256") }),
		"no policy":             edit(func(m map[string]any) { delete(m["proofline"].(map[string]any), "policy_id") }),
		"wrong profile":         edit(func(m map[string]any) { m["eat_profile"] = "tag:example.com,2020:other" }),
		"no exp":                edit(func(m map[string]any) { delete(m, "exp") }),
		"status lifted":         edit(func(m map[string]any) { m["proofline"].(map[string]any)["failures"] = []string{"tdx_debug"} }),
		"not JSON":              []byte("not json"),
		"an evidence record":    {0xa1, 0x00, 0x01},
		"no submods":            edit(func(m map[string]any) { delete(m, "submods") }),
		"status as CBOR number": edit(func(m map[string]any) { m["submods"].(map[string]any)["tdx"].(map[string]any)["ear.status"] = 2 }),
	} {
		t.Run(name, func(t *testing.T) {
			_, err := v.VerifyJWT(craftJWT(headerJSON(t, hdr), p, f.key.sign))
			t.Log(err)
			if !errors.Is(err, rp.ErrMalformed) {
				t.Fatalf("got %v, want ErrMalformed", err)
			}
		})
	}
}

// TestRefuseCWT: the COSE form of the same rules, each case built from a valid token's headers
// and payload.
func TestRefuseCWT(t *testing.T) {
	f := newFixture(t)
	atk := newAttackKeys(t)
	valid := f.cwt(t, f.claims(t, ear.StatusAffirming))
	prot, payload := cwtParts(t, valid)
	kid := prot[cose.HeaderLabelKeyID].([]byte)
	base := func(edit map[int64]any) map[int64]any {
		h := map[int64]any{1: int64(cose.AlgorithmES256), 4: kid, 16: token.CWTType}
		for k, v := range edit {
			if v == nil {
				delete(h, k)
			} else {
				h[k] = v
			}
		}
		return h
	}
	pubDER, _ := x509.MarshalPKIXPublicKey(f.key.Public())
	editPayload := func(e func(m map[any]any)) []byte {
		var m map[any]any
		if err := cbor.Unmarshal(payload, &m); err != nil {
			t.Fatal(err)
		}
		e(m)
		b, err := cbor.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	flipAt := func(b []byte, i int) []byte {
		b = bytes.Clone(b)
		b[i] ^= 0x01
		return b
	}
	payloadAt := bytes.Index(valid, payload)
	if payloadAt < 0 {
		t.Fatal("payload not found in the message")
	}
	untagged := valid[1:]

	cases := []struct {
		name string
		msg  []byte
		want error
	}{
		{"valid", valid, nil},
		{"re-made by hand", craftCWT(t, base(nil), nil, payload, f.key.sign), nil},
		{"alg in the unprotected header", craftCWT(t, base(map[int64]any{1: nil}), map[int64]any{1: int64(cose.AlgorithmES256)}, payload, f.key.sign), rp.ErrAlgorithm},
		{"alg in both headers", craftCWT(t, base(nil), map[int64]any{1: int64(cose.AlgorithmES256)}, payload, f.key.sign), rp.ErrAlgorithm},
		{"no alg", craftCWT(t, base(map[int64]any{1: nil}), nil, payload, f.key.sign), rp.ErrAlgorithm},
		{"HMAC 256/256 keyed with the SPKI DER", craftCWT(t, base(map[int64]any{1: int64(5)}), nil, payload, hs256(pubDER)), rp.ErrAlgorithm},
		{"RS256 by the attacker", craftCWT(t, base(map[int64]any{1: int64(cose.AlgorithmRS256)}), nil, payload, rs256(atk.rsa)), rp.ErrAlgorithm},
		{"PS256 by the attacker", craftCWT(t, base(map[int64]any{1: int64(cose.AlgorithmPS256)}), nil, payload, ps256(atk.rsa)), rp.ErrAlgorithm},
		{"ES384 under the issuer's P-256 kid", craftCWT(t, base(map[int64]any{1: int64(cose.AlgorithmES384)}), nil, payload, atk.ec384.sign), rp.ErrAlgorithm},
		{"ES512", craftCWT(t, base(map[int64]any{1: int64(cose.AlgorithmES512)}), nil, payload, atk.ec521.sign), rp.ErrAlgorithm},
		{"crit", craftCWT(t, base(map[int64]any{2: []any{int64(16)}}), nil, payload, f.key.sign), rp.ErrHeader},
		{"x5chain (33) by the attacker", craftCWT(t, base(map[int64]any{33: selfSigned(t, atk.ec256), 4: nil}), nil, payload, atk.ec256.sign), rp.ErrHeader},
		{"x5chain, issuer's signature", craftCWT(t, base(map[int64]any{33: selfSigned(t, atk.ec256)}), nil, payload, f.key.sign), rp.ErrHeader},
		{"x5u (35)", craftCWT(t, base(map[int64]any{35: "https://attacker.example/c"}), nil, payload, f.key.sign), rp.ErrHeader},
		{"content type", craftCWT(t, base(map[int64]any{3: "application/cwt"}), nil, payload, f.key.sign), rp.ErrHeader},
		{"private-use parameter", craftCWT(t, base(map[int64]any{-70000: "x"}), nil, payload, f.key.sign), rp.ErrHeader},
		{"kid in the unprotected header", craftCWT(t, base(map[int64]any{4: nil}), map[int64]any{4: kid}, payload, f.key.sign), rp.ErrHeader},
		{"typ of an evidence record", craftCWT(t, base(map[int64]any{16: "application/vnd.proofline.record+cbor"}), nil, payload, f.key.sign), rp.ErrHeader},
		{"no typ", craftCWT(t, base(map[int64]any{16: nil}), nil, payload, f.key.sign), rp.ErrHeader},
		{"unknown kid", craftCWT(t, base(map[int64]any{4: kidBytes(t, atk.ec256.kid(t))}), nil, payload, atk.ec256.sign), rp.ErrUnknownKey},
		{"no kid", craftCWT(t, base(map[int64]any{4: nil}), nil, payload, f.key.sign), rp.ErrUnknownKey},
		{"payload tampered (one byte)", flipAt(valid, payloadAt+len(payload)/2), rp.ErrSignature},
		{"signature tampered (one byte)", flipAt(valid, len(valid)-5), rp.ErrSignature},
		{"signature by the attacker", craftCWT(t, base(nil), nil, payload, atk.ec256.sign), rp.ErrSignature},
		{"no Proofline claim", craftCWT(t, base(nil), nil, editPayload(func(m map[any]any) { delete(m, int64(-65537)) }), f.key.sign), rp.ErrMalformed},
		{"wrong profile", craftCWT(t, base(nil), nil, editPayload(func(m map[any]any) { m[uint64(265)] = "x" }), f.key.sign), rp.ErrMalformed},
		{"untagged", untagged, rp.ErrMalformed},
		{"truncated", valid[:len(valid)-1], rp.ErrMalformed},
		{"not CBOR", []byte("eyJhbGciOiJFUzI1NiJ9"), rp.ErrMalformed},
		{"too large", append(bytes.Clone(valid), make([]byte, 40<<10)...), rp.ErrMalformed},
	}
	v := f.verifier(t, testNow, rp.Options{})
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := v.VerifyCWT(c.msg)
			t.Log(err)
			if !errors.Is(err, c.want) || (c.want == nil && err != nil) {
				t.Fatalf("got %v, want %v", err, c.want)
			}
		})
	}
}

// TestKeyRotation: after a rotation the JWKS holds the new and the old key, and tokens of both
// verify; once the old key is dropped from the JWKS its tokens are refused.
func TestKeyRotation(t *testing.T) {
	oldKey, newKey := newKey(t, elliptic.P256()), newKey(t, elliptic.P384())
	before, err := token.NewIssuer(testIssuer, oldKey)
	if err != nil {
		t.Fatal(err)
	}
	during, err := token.NewIssuer(testIssuer, newKey, oldKey.Public())
	if err != nil {
		t.Fatal(err)
	}
	after, err := token.NewIssuer(testIssuer, newKey)
	if err != nil {
		t.Fatal(err)
	}
	ctx, res, aud := context.Background(), testResult("sev-snp", ear.StatusAffirming), []string{testAudience}
	for _, fm := range formats {
		t.Run(fm.name, func(t *testing.T) {
			issue := func(i *token.Issuer) any {
				if fm.name == "JWT" {
					tok, err := i.IssueJWT(ctx, res, testRef(), aud, time.Hour, testNow)
					if err != nil {
						t.Fatal(err)
					}
					return tok
				}
				tok, err := i.IssueCWT(ctx, res, testRef(), aud, time.Hour, testNow)
				if err != nil {
					t.Fatal(err)
				}
				return tok
			}
			oldTok, newTok := issue(before), issue(during)
			verifier := func(i *token.Issuer) *rp.Verifier {
				jwks, err := i.JWKS()
				if err != nil {
					t.Fatal(err)
				}
				v, err := rp.New(jwks, rp.Options{Audience: testAudience, Now: func() time.Time { return testNow }})
				if err != nil {
					t.Fatal(err)
				}
				return v
			}
			vDuring, vAfter := verifier(during), verifier(after)
			if c, err := fm.verify(vDuring, oldTok); err != nil || c.KeyID != oldKey.kid(t) {
				t.Errorf("old-key token during the rotation: %v", err)
			}
			if c, err := fm.verify(vDuring, newTok); err != nil || c.KeyID != newKey.kid(t) {
				t.Errorf("new-key (ES384) token during the rotation: %v", err)
			}
			if _, err := fm.verify(vAfter, oldTok); !errors.Is(err, rp.ErrUnknownKey) {
				t.Errorf("old-key token after the old key left the JWKS: %v", err)
			}
			if _, err := fm.verify(vAfter, newTok); err != nil {
				t.Errorf("new-key token after the rotation: %v", err)
			}
		})
	}
}

// TestNew: the JWKS and the options are checked when the Verifier is built.
func TestNew(t *testing.T) {
	f := newFixture(t)
	priv, err := json.Marshal(jose.JSONWebKey{Key: f.key.priv, KeyID: "k", Algorithm: "ES256", Use: "sig"})
	if err != nil {
		t.Fatal(err)
	}
	atk := newAttackKeys(t)
	rsaPub, _ := json.Marshal(jose.JSONWebKey{Key: &atk.rsa.PublicKey, KeyID: "rsa", Algorithm: "RS256", Use: "sig"})
	p521, _ := json.Marshal(jose.JSONWebKey{Key: atk.ec521.Public(), KeyID: "p521", Use: "sig"})
	ec := func(k *ecKey, kid, alg, use string) string {
		b, err := json.Marshal(jose.JSONWebKey{Key: k.Public(), KeyID: kid, Algorithm: alg, Use: use})
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	set := func(keys ...string) []byte { return []byte(`{"keys":[` + strings.Join(keys, ",") + `]}`) }
	good := ec(f.key, f.key.kid(t), "ES256", "sig")

	for name, c := range map[string]struct {
		jwks []byte
		opts rp.Options
		ok   bool
	}{
		"issuer's JWKS":                 {jwks: f.jwks, ok: true},
		"no alg, no use":                {jwks: set(ec(f.key, "k", "", "")), ok: true},
		"RSA and P-521 ignored":         {jwks: set(string(rsaPub), string(p521), good), ok: true},
		"encryption key ignored":        {jwks: set(ec(atk.ec256, "enc", "", "enc"), good), ok: true},
		"no audience":                   {jwks: f.jwks, opts: rp.Options{Audience: "-"}},
		"negative leeway":               {jwks: f.jwks, opts: rp.Options{Leeway: -time.Second}},
		"private key":                   {jwks: set(string(priv))},
		"private key among public ones": {jwks: set(good, string(priv))},
		"symmetric key":                 {jwks: set(`{"kty":"oct","kid":"h","k":"c2VjcmV0"}`, good)},
		"alg does not match the curve":  {jwks: set(ec(atk.ec384, "x", "ES256", "sig"))},
		"HS256 on an EC key":            {jwks: set(ec(f.key, "x", "HS256", "sig"))},
		"no kid":                        {jwks: set(ec(f.key, "", "ES256", "sig"))},
		"duplicate kid":                 {jwks: set(good, good)},
		"only unusable keys":            {jwks: set(string(rsaPub))},
		"empty":                         {jwks: []byte(`{"keys":[]}`)},
		"not JSON":                      {jwks: []byte(`keys`)},
		"point not on the curve":        {jwks: set(`{"kty":"EC","crv":"P-256","kid":"k","x":"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA","y":"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"}`)},
	} {
		t.Run(name, func(t *testing.T) {
			opts := c.opts
			switch opts.Audience {
			case "":
				opts.Audience = testAudience
			case "-":
				opts.Audience = ""
			}
			_, err := rp.New(c.jwks, opts)
			if (err == nil) != c.ok {
				t.Fatalf("New: %v, want ok=%v", err, c.ok)
			}
		})
	}

	// A token naming a key the set holds but this package does not use is refused.
	v, err := rp.New(set(string(rsaPub), good), rp.Options{Audience: testAudience, Now: func() time.Time { return testNow }})
	if err != nil {
		t.Fatal(err)
	}
	hdr, payload, _ := splitJWT(t, f.jwt(t, f.claims(t, ear.StatusAffirming)))
	hdr["alg"], hdr["kid"] = "RS256", "rsa"
	if _, err := v.VerifyJWT(craftJWT(headerJSON(t, hdr), payload, rs256(atk.rsa))); !errors.Is(err, rp.ErrAlgorithm) {
		t.Errorf("RS256 under an RSA key of the JWKS: %v", err)
	}
	hdr["alg"] = "ES256"
	if _, err := v.VerifyJWT(craftJWT(headerJSON(t, hdr), payload, f.key.sign)); !errors.Is(err, rp.ErrUnknownKey) {
		t.Errorf("ES256 under an RSA key's kid: %v", err)
	}
	if ids := v.KeyIDs(); len(ids) != 1 || ids[0] != f.key.kid(t) {
		t.Errorf("KeyIDs %v", ids)
	}
}

// TestFetchJWKS: the helper fetches over HTTPS with the caller's client, and refuses plain HTTP,
// error statuses and oversized answers.
func TestFetchJWKS(t *testing.T) {
	f := newFixture(t)
	mux := http.NewServeMux()
	mux.HandleFunc("/.well-known/jwks.json", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/jwk-set+json")
		w.Write(f.jwks)
	})
	mux.HandleFunc("/big", func(w http.ResponseWriter, _ *http.Request) { w.Write(make([]byte, 65<<10)) })
	srv := httptest.NewTLSServer(mux)
	defer srv.Close()
	ctx := context.Background()

	b, err := rp.FetchJWKS(ctx, srv.Client(), srv.URL+"/.well-known/jwks.json")
	if err != nil {
		t.Fatal(err)
	}
	v, err := rp.New(b, rp.Options{Audience: testAudience, Now: func() time.Time { return testNow }})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := v.VerifyJWT(f.jwt(t, f.claims(t, ear.StatusAffirming))); err != nil {
		t.Fatal(err)
	}
	for name, u := range map[string]string{
		"plain http": strings.Replace(srv.URL, "https://", "http://", 1) + "/.well-known/jwks.json",
		"404":        srv.URL + "/nope",
		"too large":  srv.URL + "/big",
	} {
		if _, err := rp.FetchJWKS(ctx, srv.Client(), u); err == nil {
			t.Errorf("%s: fetched", name)
		}
	}
	if _, err := rp.FetchJWKS(ctx, http.DefaultClient, srv.URL+"/.well-known/jwks.json"); err == nil {
		t.Error("trusted the test server's certificate with the default client")
	}
	if _, err := rp.FetchJWKS(ctx, nil, srv.URL); err == nil {
		t.Error("fetched without a client")
	}
}

// TestConcurrent: one Verifier serves concurrent requests (run with -race).
func TestConcurrent(t *testing.T) {
	f := newFixture(t)
	v := f.verifier(t, testNow, rp.Options{})
	jwt, cwt := f.jwt(t, f.claims(t, ear.StatusAffirming)), f.cwt(t, f.claims(t, ear.StatusAffirming))
	done := make(chan error, 16)
	for range 8 {
		go func() { _, err := v.VerifyJWT(jwt); done <- err }()
		go func() { _, err := v.VerifyCWT(cwt); done <- err }()
	}
	for range 16 {
		if err := <-done; err != nil {
			t.Error(err)
		}
	}
}

func FuzzVerifyJWT(f *testing.F) {
	fx := newFixture(f)
	f.Add(fx.jwt(f, fx.claims(f, ear.StatusAffirming)))
	f.Add(fx.jwt(f, fx.claims(f, ear.StatusContraindicated)))
	v := fx.verifier(f, testNow, rp.Options{RequireStatus: ear.StatusWarning})
	f.Fuzz(func(t *testing.T, tok string) {
		c, err := v.VerifyJWT(tok)
		if err == nil && (c.Status == ear.StatusContraindicated || c.KeyID != fx.key.kid(t)) {
			t.Fatalf("accepted %+v", c)
		}
	})
}

func FuzzVerifyCWT(f *testing.F) {
	fx := newFixture(f)
	f.Add(fx.cwt(f, fx.claims(f, ear.StatusAffirming)))
	f.Add(fx.cwt(f, fx.claims(f, ear.StatusContraindicated)))
	v := fx.verifier(f, testNow, rp.Options{RequireStatus: ear.StatusWarning})
	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := v.VerifyCWT(b)
		if err == nil && (c.Status == ear.StatusContraindicated || c.KeyID != fx.key.kid(t)) {
			t.Fatalf("accepted %+v", c)
		}
	})
}
