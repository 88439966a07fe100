package evidence

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/sha256"
	"os"
	"testing"
	"time"

	"github.com/veraison/go-cose"
)

// t0 is the pinned clock of these tests.
var t0 = time.Date(2026, 11, 2, 10, 0, 0, 0, time.UTC)

func digestOf(s string) Digest { return sha256.Sum256([]byte(s)) }

func ptr[T any](v T) *T { return &v }

// testRecords returns one valid record of each kind, timed at t0.
func testRecords() map[Kind]*Record {
	verifier := Verifier{Name: "proofline", Version: "v0.1.0", Build: digestOf("binary")}
	return map[Kind]*Record{
		KindAttestation: {
			Version:  Version,
			Kind:     KindAttestation,
			Time:     t0,
			Subject:  &Subject{ID: "vm-7f3a", Platform: "tdx"},
			Evidence: &Evidence{Raw: []byte(`{"version":1,"platform":"tdx","report":"AAAA","certificates":[]}`)},
			Collateral: []CollateralRef{
				{Kind: "crl", URL: "https://api.trustedservices.intel.com/sgx/certification/v4/pckcrl?ca=platform&encoding=der", Digest: digestOf("pckcrl")},
				{Kind: "tcb_info", URL: "https://api.trustedservices.intel.com/tdx/certification/v4/tcb?fmspc=00806f050000", Digest: digestOf("tcb")},
			},
			Policy:   &PolicyRef{ID: "default", Digest: digestOf("policy")},
			Result:   []byte(`{"eat_profile":"tag:github.com,2023:veraison/ear","status":"warning"}`),
			Verifier: verifier,
		},
		KindPolicyChange: {
			Version:      Version,
			Kind:         KindPolicyChange,
			Time:         t0,
			Policy:       &PolicyRef{ID: "prod", Digest: digestOf("policy v2")},
			Verifier:     verifier,
			PolicyChange: &PolicyChange{Actor: "alice@example.com", Previous: &PolicyRef{ID: "prod", Digest: digestOf("policy v1")}},
		},
		KindKeyRelease: {
			Version:  Version,
			Kind:     KindKeyRelease,
			Time:     t0,
			Subject:  &Subject{ID: "vm-7f3a"},
			Verifier: verifier,
			KeyRelease: &KeyRelease{
				RelyingParty: "kbs.example.com",
				Resource:     "disk-key/db-1",
				Decision:     DecisionDeny,
				Reason:       "status warning; the release policy requires affirming",
				Attestation:  ptr(digestOf("signed attestation record")),
			},
		},
		KindCollateralUpdate: {
			Version: Version,
			Kind:    KindCollateralUpdate,
			Time:    t0,
			Collateral: []CollateralRef{
				{Kind: "tcb_info", URL: "https://api.trustedservices.intel.com/tdx/certification/v4/tcb?fmspc=00806f050000", Digest: digestOf("tcb info 19")},
				{Kind: "crl", URL: "https://kdsintf.amd.com/vcek/v1/Milan/crl", Digest: digestOf("crl")},
			},
			CollateralUpdate: []CollateralChange{
				{Previous: ptr(digestOf("tcb info 18")), IssuedAt: t0.Add(-time.Hour), NextUpdate: t0.AddDate(0, 0, 30), TCBEvaluationDataNumber: ptr(uint64(19))},
				{IssuedAt: t0.Add(-time.Hour), NextUpdate: t0.AddDate(0, 0, 7)},
			},
			Verifier: verifier,
		},
		KindAccessChange: accessChangeRecord(),
	}
}

var kinds = []Kind{KindAttestation, KindPolicyChange, KindKeyRelease, KindCollateralUpdate, KindAccessChange}

// testKey loads a fixed test key from testdata (not through LoadKey: git does not keep 0600).
func testKey(t testing.TB, name string) *Key {
	t.Helper()
	data, err := os.ReadFile("testdata/" + name)
	if err != nil {
		t.Fatal(err)
	}
	k, err := parseKeyPEM(data)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// historyOf returns a history holding k, valid from a day before t0 on.
func historyOf(t testing.TB, k Signer) *KeyHistory {
	t.Helper()
	var h KeyHistory
	if err := h.Add(k, t0.Add(-24*time.Hour)); err != nil {
		t.Fatal(err)
	}
	return &h
}

func mustSign(t testing.TB, r *Record, s Signer) []byte {
	t.Helper()
	b, err := Sign(context.Background(), r, s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// cryptoSigner is a Signer over any crypto.Signer, the shape a KMS or PKCS #11 key takes: the
// private key never leaves it, and go-cose converts its ASN.1 ECDSA signature to r ‖ s.
type cryptoSigner struct {
	alg cose.Algorithm
	key crypto.Signer
}

func (c cryptoSigner) Algorithm() cose.Algorithm { return c.alg }
func (c cryptoSigner) Public() crypto.PublicKey  { return c.key.Public() }
func (c cryptoSigner) Sign(_ context.Context, tbs []byte) ([]byte, error) {
	s, err := cose.NewSigner(c.alg, opaque{c.key})
	if err != nil {
		return nil, err
	}
	return s.Sign(rand.Reader, tbs)
}

// opaque hides the concrete key type, so go-cose signs through crypto.Signer as with a KMS.
type opaque struct{ crypto.Signer }
