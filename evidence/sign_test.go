package evidence

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"errors"
	"math/big"
	"reflect"
	"slices"
	"testing"
	"time"

	"github.com/fxamacker/cbor/v2"
	"github.com/veraison/go-cose"
)

func testSigners(t *testing.T) map[string]Signer {
	t.Helper()
	p384, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	p521, err := ecdsa.GenerateKey(elliptic.P521(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	_, ed, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return map[string]Signer{
		"ES256 in process":    testKey(t, "test-key-a.pem"),
		"ES384 crypto.Signer": cryptoSigner{cose.AlgorithmES384, p384},
		"ES512 crypto.Signer": cryptoSigner{cose.AlgorithmES512, p521},
		"EdDSA crypto.Signer": cryptoSigner{cose.AlgorithmEdDSA, ed},
	}
}

// TestSignOpen: every kind, signed by every supported kind of key, opens to the same record,
// and the envelope has exactly the documented shape.
func TestSignOpen(t *testing.T) {
	for name, s := range testSigners(t) {
		hist := historyOf(t, s)
		kid, _ := KeyID(s.Public())
		for _, kind := range kinds {
			t.Run(name+"/"+string(kind), func(t *testing.T) {
				want := testRecords()[kind]
				data := mustSign(t, want, s)
				got, info, err := Open(data, hist)
				if err != nil {
					t.Fatal(err)
				}
				if !reflect.DeepEqual(got, want) {
					t.Errorf("got %+v, want %+v", got, want)
				}
				if !bytes.Equal(info.ID, kid) || info.Algorithm != s.Algorithm() {
					t.Errorf("key info %x %v, want %x %v", info.ID, info.Algorithm, kid, s.Algorithm())
				}

				// COSE_Sign1_Tagged = #6.18([protected bstr, unprotected {}, payload bstr, signature bstr])
				var tag cbor.RawTag
				if err := cbor.Unmarshal(data, &tag); err != nil || tag.Number != 18 {
					t.Fatalf("not a tag 18: %v", err)
				}
				var parts []cbor.RawMessage
				if err := cbor.Unmarshal(tag.Content, &parts); err != nil || len(parts) != 4 {
					t.Fatalf("not a 4-element array: %v", err)
				}
				if !bytes.Equal(parts[1], []byte{0xa0}) {
					t.Errorf("unprotected header %x, want a0", parts[1])
				}
				var protected []byte
				if err := cbor.Unmarshal(parts[0], &protected); err != nil {
					t.Fatal(err)
				}
				var h map[int64]any
				if err := cbor.Unmarshal(protected, &h); err != nil {
					t.Fatal(err)
				}
				wantH := map[int64]any{1: int64(s.Algorithm()), 3: ContentType, 4: kid}
				if !reflect.DeepEqual(h, wantH) {
					t.Errorf("protected header %v, want %v", h, wantH)
				}
			})
		}
	}
}

// TestSignRejects: Sign refuses invalid records, keys that do not match their algorithm,
// algorithms outside the allow-list and a cancelled context.
func TestSignRejects(t *testing.T) {
	p384, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	good := testRecords()[KindAttestation]
	bad := testRecords()[KindAttestation]
	bad.Version = 2
	if _, err := Sign(context.Background(), bad, testKey(t, "test-key-a.pem")); !errors.Is(err, ErrMalformed) {
		t.Errorf("invalid record: got %v, want ErrMalformed", err)
	}
	for name, s := range map[string]Signer{
		"ES256 with a P-384 key": cryptoSigner{cose.AlgorithmES256, p384},
		"PS256":                  cryptoSigner{cose.AlgorithmPS256, p384},
	} {
		if _, err := Sign(context.Background(), good, s); err == nil {
			t.Errorf("%s: signed", name)
		} else {
			t.Logf("%s: %v", name, err)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := Sign(ctx, good, testKey(t, "test-key-a.pem")); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled context: got %v", err)
	}
}

// sign1 builds a tagged COSE_Sign1 by hand from the exact protected header bytes, so tests can
// produce validly signed envelopes that Sign would never write.
func sign1(t *testing.T, protected []byte, unprotected map[any]any, payload []byte, s Signer) []byte {
	t.Helper()
	tbs, err := encMode.Marshal([]any{"Signature1", protected, []byte{}, payload})
	if err != nil {
		t.Fatal(err)
	}
	sig, err := s.Sign(context.Background(), tbs)
	if err != nil {
		t.Fatal(err)
	}
	if k, ok := s.Public().(*ecdsa.PublicKey); ok {
		LowS(k, sig)
	}
	var p any = payload
	if payload == nil {
		p = nil
	}
	b, err := encMode.Marshal(cbor.Tag{Number: 18, Content: []any{protected, unprotected, p, sig}})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func enc(t *testing.T, v any) []byte {
	t.Helper()
	b, err := encMode.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestOpenRejects builds each bad case from a valid signed record and checks the decision.
func TestOpenRejects(t *testing.T) {
	keyA, keyB := testKey(t, "test-key-a.pem"), testKey(t, "test-key-b.pem")
	hist := historyOf(t, keyA)
	rec := testRecords()[KindAttestation]
	payload, err := rec.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	good := mustSign(t, rec, keyA)
	kid := keyA.KeyID()
	es256 := int64(cose.AlgorithmES256)
	header := func(extra map[any]any, drop ...int64) []byte {
		h := map[any]any{int64(1): es256, int64(3): ContentType, int64(4): kid}
		for _, l := range drop {
			delete(h, l)
		}
		for k, v := range extra {
			h[k] = v
		}
		return enc(t, h)
	}
	none := map[any]any{}

	// The hand-built envelope with the standard header is exactly what Sign writes, so each
	// rejection below comes from the one thing the case changes.
	if _, _, err := Open(sign1(t, header(nil), none, payload, keyA), hist); err != nil {
		t.Fatalf("hand-built envelope: %v", err)
	}

	swapped := func() []byte {
		var msg cose.Sign1Message
		if err := msg.UnmarshalCBOR(good); err != nil {
			t.Fatal(err)
		}
		other, err := testRecords()[KindPolicyChange].Marshal()
		if err != nil {
			t.Fatal(err)
		}
		msg.Payload = other
		b, err := msg.MarshalCBOR()
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	flip := func(b []byte, i int) []byte {
		c := slices.Clone(b)
		c[i] ^= 0x01
		return c
	}
	inPayload := bytes.Index(good, payload) + len(payload)/2
	early := testRecords()[KindAttestation]
	early.Time = t0.Add(-48 * time.Hour)
	nonCanonicalPayload := append([]byte{payload[0], 0x00, 0x18, 0x01}, payload[3:]...)
	// The protected header's bstr length written in two bytes instead of one.
	if good[2] != 0x58 {
		t.Fatalf("protected header bstr head %x, want 58 xx", good[2:4])
	}
	longLength := append([]byte{0xd2, 0x84, 0x59, 0x00}, good[3:]...)
	unsortedHeader := slices.Concat([]byte{0xa3, 0x04, 0x58, 0x20}, kid, enc(t, 3), enc(t, ContentType), []byte{0x01, 0x26})
	both := historyOfAll(t, keyA, keyB)

	tests := []struct {
		name string
		data []byte
		keys *KeyHistory
		want error
	}{
		{"payload swapped under the same signature", swapped(), hist, ErrSignature},
		{"byte flipped in the payload", flip(good, inPayload), hist, ErrSignature},
		{"byte flipped in the signature", flip(good, len(good)-5), hist, ErrSignature},
		{"signature of another key under this kid", sign1(t, header(nil), none, payload, keyB), hist, ErrSignature},
		{"kid of another key", sign1(t, header(map[any]any{int64(4): keyB.KeyID()}), none, payload, keyA), both, ErrSignature},
		{"algorithm ES384 on an ES256 key", sign1(t, header(map[any]any{int64(1): int64(cose.AlgorithmES384)}), none, payload, keyA), hist, ErrSignature},
		{"algorithm EdDSA on an ES256 key", sign1(t, header(map[any]any{int64(1): int64(cose.AlgorithmEdDSA)}), none, payload, keyA), hist, ErrSignature},
		{"algorithm only in the unprotected header", sign1(t, header(nil, 1), map[any]any{int64(1): es256}, payload, keyA), hist, ErrMalformed},
		{"algorithm in both headers", sign1(t, header(nil), map[any]any{int64(1): es256}, payload, keyA), hist, ErrMalformed},
		{"kid in the unprotected header", sign1(t, header(nil, 4), map[any]any{int64(4): kid}, payload, keyA), hist, ErrMalformed},
		{"unknown critical header", sign1(t, header(map[any]any{int64(2): []any{int64(99)}, int64(99): "must understand"}), none, payload, keyA), hist, ErrMalformed},
		{"crit naming the algorithm", sign1(t, header(map[any]any{int64(2): []any{int64(1)}}), none, payload, keyA), hist, ErrMalformed},
		{"unknown non-critical header", sign1(t, header(map[any]any{int64(16): "application/cose"}), none, payload, keyA), hist, ErrMalformed},
		{"no algorithm", sign1(t, header(nil, 1), none, payload, keyA), hist, ErrMalformed},
		{"algorithm as text", sign1(t, header(map[any]any{int64(1): "ES256"}), none, payload, keyA), hist, ErrMalformed},
		{"no content type", sign1(t, header(nil, 3), none, payload, keyA), hist, ErrMalformed},
		{"other content type", sign1(t, header(map[any]any{int64(3): "application/cbor"}), none, payload, keyA), hist, ErrMalformed},
		{"no kid", sign1(t, header(nil, 4), none, payload, keyA), hist, ErrMalformed},
		{"empty protected header", sign1(t, []byte{}, map[any]any{int64(1): es256, int64(4): kid}, payload, keyA), hist, ErrMalformed},
		{"unsorted protected header", sign1(t, unsortedHeader, none, payload, keyA), hist, ErrMalformed},
		{"non-minimal protected header length", longLength, hist, ErrMalformed},
		{"detached payload", sign1(t, header(nil), none, nil, keyA), hist, ErrMalformed},
		{"validly signed non-canonical payload", sign1(t, header(nil), none, nonCanonicalPayload, keyA), hist, ErrMalformed},
		{"validly signed non-record payload", sign1(t, header(nil), none, []byte{0xa0}, keyA), hist, ErrMalformed},
		{"unknown kid", good, historyOf(t, keyB), ErrUnknownKey},
		{"no history", good, nil, ErrUnknownKey},
		{"record time before the key's period", mustSign(t, early, keyA), hist, ErrKeyNotValidAt},
		{"trailing bytes", append(slices.Clone(good), 0x00), hist, ErrMalformed},
		{"untagged", good[1:], hist, ErrMalformed},
		{"COSE_Sign tag 98", append([]byte{0xd8, 0x62}, good[1:]...), hist, ErrMalformed},
		{"truncated", good[:len(good)-1], hist, ErrMalformed},
		{"empty", nil, hist, ErrMalformed},
		{"oversized", append(slices.Clone(good), make([]byte, MaxRecordSize)...), hist, ErrMalformed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, _, err := Open(tt.data, tt.keys)
			if !errors.Is(err, tt.want) {
				t.Fatalf("got %+v, %v; want %v", r, err, tt.want)
			}
			t.Log(err)
		})
	}

	// go-cose alone accepts the non-canonical envelopes above: Open's byte-exact comparison is
	// what makes a signed record non-malleable.
	for _, data := range [][]byte{longLength, sign1(t, unsortedHeader, none, payload, keyA)} {
		var msg cose.Sign1Message
		if err := msg.UnmarshalCBOR(data); err != nil {
			t.Fatal(err)
		}
		if err := msg.Verify(nil, hist.keys[0].verifier); err != nil {
			t.Errorf("go-cose rejects a non-canonical envelope (%v); update the comment", err)
		}
	}
}

// historyOfAll returns a history in which every key is valid from a day before t0.
func historyOfAll(t *testing.T, keys ...Signer) *KeyHistory {
	t.Helper()
	var h KeyHistory
	for _, k := range keys {
		if err := h.Add(k, t0.Add(-24*time.Hour)); err != nil {
			t.Fatal(err)
		}
	}
	return &h
}

// TestOpenEveryByte: changing any single byte of a signed record, or cutting it short at any
// length, makes Open fail.
func TestOpenEveryByte(t *testing.T) {
	key := testKey(t, "test-key-a.pem")
	hist := historyOf(t, key)
	good := mustSign(t, testRecords()[KindKeyRelease], key)
	for i := range good {
		c := slices.Clone(good)
		c[i] ^= 0x20
		if _, _, err := Open(c, hist); err == nil {
			t.Errorf("byte %d changed: opened", i)
		}
		if _, _, err := Open(good[:i], hist); err == nil {
			t.Errorf("cut at %d: opened", i)
		}
	}
}

// TestLowS: Sign always writes the low-S form of an ECDSA signature, and the high-S twin, a
// mathematically valid signature over the same bytes, is refused.
func TestLowS(t *testing.T) {
	key := testKey(t, "test-key-a.pem")
	hist := historyOf(t, key)
	rec := testRecords()[KindPolicyChange]
	pub := key.Public().(*ecdsa.PublicKey)
	n := pub.Curve.Params().N
	for range 16 {
		data := mustSign(t, rec, key)
		var msg cose.Sign1Message
		if err := msg.UnmarshalCBOR(data); err != nil {
			t.Fatal(err)
		}
		if !IsLowS(pub, msg.Signature) {
			t.Fatal("Sign wrote a high-S signature")
		}
		s := new(big.Int).SetBytes(msg.Signature[32:])
		s.Sub(n, s).FillBytes(msg.Signature[32:])
		if err := msg.Verify(nil, hist.keys[0].verifier); err != nil {
			t.Fatalf("the high-S twin should verify mathematically: %v", err)
		}
		twin, err := msg.MarshalCBOR()
		if err != nil {
			t.Fatal(err)
		}
		if _, _, err := Open(twin, hist); !errors.Is(err, ErrSignature) {
			t.Fatalf("high-S twin: got %v, want ErrSignature", err)
		}
	}
}

// lyingSigner reports one key and signs with another (a misconfigured KMS key).
type lyingSigner struct {
	Signer
	other Signer
}

func (l lyingSigner) Sign(ctx context.Context, tbs []byte) ([]byte, error) {
	return l.other.Sign(ctx, tbs)
}

// wrongAlg reports another algorithm than the history lists for its key.
type wrongAlg struct{ Signer }

func (w wrongAlg) Algorithm() cose.Algorithm { return cose.AlgorithmES384 }

// TestSignFor: what SignFor signs opens, for every kind of key; a key not in the history, an
// algorithm other than the history's, a signature made with another key and a record timed
// outside the key's period are refused, each from a valid case.
func TestSignFor(t *testing.T) {
	ctx := context.Background()
	for name, s := range testSigners(t) {
		h := historyOf(t, s)
		for kind, r := range testRecords() {
			leaf, err := SignFor(ctx, r, s, h)
			if err != nil {
				t.Fatalf("%s, %s: %v", name, kind, err)
			}
			if _, _, err := Open(leaf, h); err != nil {
				t.Fatalf("%s, %s: what SignFor signed does not open: %v", name, kind, err)
			}
		}
	}
	key := testKey(t, "test-key-a.pem")
	other := testKey(t, "test-key-b.pem")
	r := testRecords()[KindAttestation]
	h := historyOf(t, key)
	if _, err := SignFor(ctx, r, key, h); err != nil {
		t.Fatal(err)
	}
	if _, err := SignFor(ctx, r, other, h); !errors.Is(err, ErrUnknownKey) {
		t.Errorf("a key not in the history: %v", err)
	}
	if _, err := SignFor(ctx, r, lyingSigner{Signer: key, other: other}, h); !errors.Is(err, ErrSignature) {
		t.Errorf("a signer signing with another key: %v", err)
	}
	if _, err := SignFor(ctx, r, wrongAlg{key}, h); err == nil {
		t.Errorf("a signer reporting another algorithm: accepted")
	}
	early := *r
	early.Time = t0.Add(-48 * time.Hour)
	if _, err := SignFor(ctx, &early, key, h); !errors.Is(err, ErrKeyNotValidAt) {
		t.Errorf("a record timed before the key's period: %v", err)
	}
}
