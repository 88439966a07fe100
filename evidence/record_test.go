package evidence

import (
	"bytes"
	"encoding/hex"
	"errors"
	"maps"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/fxamacker/cbor/v2"
)

// TestRoundTrip: every kind encodes, decodes to an equal record, and encodes again to the same
// bytes.
func TestRoundTrip(t *testing.T) {
	for _, kind := range kinds {
		t.Run(string(kind), func(t *testing.T) {
			r := testRecords()[kind]
			b1, err := r.Marshal()
			if err != nil {
				t.Fatal(err)
			}
			got, err := ParseRecord(b1)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, r) {
				t.Errorf("round trip changed the record:\n got %+v\nwant %+v", got, r)
			}
			if got.Time.Location() != time.UTC {
				t.Errorf("decoded time in %v, want UTC", got.Time.Location())
			}
			b2, err := got.Marshal()
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(b1, b2) {
				t.Errorf("re-encoding differs:\n%x\n%x", b1, b2)
			}
		})
	}
}

// TestEncodingIgnoresOrder: the encoding depends on the content only. Decoding a record into
// generic Go maps (whose iteration order is random) and encoding those again yields the same
// bytes, every time; the time in another zone encodes the same too.
func TestEncodingIgnoresOrder(t *testing.T) {
	for _, kind := range kinds {
		r := testRecords()[kind]
		want, err := r.Marshal()
		if err != nil {
			t.Fatal(err)
		}
		var generic any
		if err := cbor.Unmarshal(want, &generic); err != nil {
			t.Fatal(err)
		}
		for range 20 {
			got, err := encMode.Marshal(generic)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, want) {
				t.Fatalf("%s: generic re-encoding differs:\n got %x\nwant %x", kind, got, want)
			}
		}
		r.Time = r.Time.In(time.FixedZone("CET", 3600))
		if got, _ := r.Marshal(); !bytes.Equal(got, want) {
			t.Errorf("%s: the time zone changed the encoding", kind)
		}
	}
}

// TestValidate: records that break a schema rule are refused by Marshal with ErrMalformed.
func TestValidate(t *testing.T) {
	tests := []struct {
		name   string
		kind   Kind
		mutate func(r *Record)
	}{
		{"version 0", KindAttestation, func(r *Record) { r.Version = 0 }},
		{"version 2", KindAttestation, func(r *Record) { r.Version = 2 }},
		{"unknown kind", KindAttestation, func(r *Record) { r.Kind = "audit" }},
		{"zero time", KindAttestation, func(r *Record) { r.Time = time.Time{} }},
		{"sub-second time", KindAttestation, func(r *Record) { r.Time = r.Time.Add(time.Millisecond) }},
		{"time before 1970", KindAttestation, func(r *Record) { r.Time = time.Unix(-5, 0) }},
		{"time after 9999", KindAttestation, func(r *Record) { r.Time = time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC) }},
		{"attestation without evidence", KindAttestation, func(r *Record) { r.Evidence = nil }},
		{"attestation without result", KindAttestation, func(r *Record) { r.Result = nil }},
		{"attestation without policy", KindAttestation, func(r *Record) { r.Policy = nil }},
		{"attestation without subject", KindAttestation, func(r *Record) { r.Subject = nil }},
		{"attestation without platform", KindAttestation, func(r *Record) { r.Subject.Platform = "" }},
		{"unknown platform", KindAttestation, func(r *Record) { r.Subject.Platform = "sgx" }},
		{"empty subject id", KindAttestation, func(r *Record) { r.Subject.ID = "" }},
		{"attestation with key release", KindAttestation, func(r *Record) { r.KeyRelease = testRecords()[KindKeyRelease].KeyRelease }},
		{"evidence with raw and digest", KindAttestation, func(r *Record) { r.Evidence.Digest = ptr(digestOf("x")) }},
		{"evidence with neither", KindAttestation, func(r *Record) { r.Evidence.Raw = nil }},
		{"result not JSON", KindAttestation, func(r *Record) { r.Result = []byte("{") }},
		{"collateral unsorted", KindAttestation, func(r *Record) { slices.Reverse(r.Collateral) }},
		{"collateral URL twice", KindAttestation, func(r *Record) { r.Collateral[1].URL = r.Collateral[0].URL }},
		{"collateral relative URL", KindAttestation, func(r *Record) { r.Collateral[0].URL = "/sgx/pckcrl" }},
		{"collateral file URL", KindAttestation, func(r *Record) { r.Collateral[0].URL = "file:///etc/passwd" }},
		{"collateral without kind", KindAttestation, func(r *Record) { r.Collateral[0].Kind = "" }},
		{"too much collateral", KindCollateralUpdate, func(r *Record) {
			r.Collateral = nil
			for i := range MaxCollateral + 1 {
				r.Collateral = append(r.Collateral, CollateralRef{Kind: "crl", URL: "https://example.com/" + strings.Repeat("a", i), Digest: digestOf("c")})
			}
		}},
		{"policy without id", KindAttestation, func(r *Record) { r.Policy.ID = "" }},
		{"verifier without version", KindAttestation, func(r *Record) { r.Verifier.Version = "" }},
		{"policy change without actor", KindPolicyChange, func(r *Record) { r.PolicyChange.Actor = "" }},
		{"policy change without details", KindPolicyChange, func(r *Record) { r.PolicyChange = nil }},
		{"policy change with evidence", KindPolicyChange, func(r *Record) { r.Evidence = &Evidence{Raw: []byte("x")} }},
		{"key release without details", KindKeyRelease, func(r *Record) { r.KeyRelease = nil }},
		{"key release unknown decision", KindKeyRelease, func(r *Record) { r.KeyRelease.Decision = "maybe" }},
		{"key release without resource", KindKeyRelease, func(r *Record) { r.KeyRelease.Resource = "" }},
		{"key release with result", KindKeyRelease, func(r *Record) { r.Result = []byte("{}") }},
		{"collateral update without collateral", KindCollateralUpdate, func(r *Record) { r.Collateral = nil }},
		{"collateral update with subject", KindCollateralUpdate, func(r *Record) { r.Subject = &Subject{ID: "vm"} }},
		{"collateral update with a change too few", KindCollateralUpdate, func(r *Record) { r.CollateralUpdate = r.CollateralUpdate[:1] }},
		{"collateral update without issue time", KindCollateralUpdate, func(r *Record) { r.CollateralUpdate[0].IssuedAt = time.Time{} }},
		{"collateral update sub-second next update", KindCollateralUpdate, func(r *Record) {
			r.CollateralUpdate[1].NextUpdate = r.CollateralUpdate[1].NextUpdate.Add(time.Millisecond)
		}},
		{"collateral update expiring before issue", KindCollateralUpdate, func(r *Record) { r.CollateralUpdate[0].NextUpdate = r.CollateralUpdate[0].IssuedAt.Add(-time.Second) }},
		{"collateral update that changes nothing", KindCollateralUpdate, func(r *Record) { r.CollateralUpdate[0].Previous = ptr(r.Collateral[0].Digest) }},
		{"attestation with collateral changes", KindAttestation, func(r *Record) {
			r.CollateralUpdate = []CollateralChange{{IssuedAt: r.Time, NextUpdate: r.Time}}
			r.Collateral = r.Collateral[:1]
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := testRecords()[tt.kind]
			tt.mutate(r)
			_, err := r.Marshal()
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("Marshal: got %v, want ErrMalformed", err)
			}
			t.Log(err)
		})
	}
}

// rawFields splits an encoded record into its top-level fields.
func rawFields(t *testing.T, b []byte) map[uint64]cbor.RawMessage {
	t.Helper()
	var m map[uint64]cbor.RawMessage
	if err := cbor.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	return m
}

// assemble writes a map with the given raw pairs in the given order, with a minimal header.
func assemble(keys []uint64, fields map[uint64]cbor.RawMessage) []byte {
	b := []byte{0xa0 | byte(len(keys))}
	for _, k := range keys {
		kb, _ := cbor.Marshal(k)
		b = append(b, kb...)
		b = append(b, fields[k]...)
	}
	return b
}

func hexBytes(s string) []byte {
	b, err := hex.DecodeString(strings.ReplaceAll(s, " ", ""))
	if err != nil {
		panic(err)
	}
	return b
}

// TestParseRecordStrict: every departure from the one deterministic encoding of a valid record
// is ErrMalformed, whether or not the CBOR library would have accepted it.
func TestParseRecordStrict(t *testing.T) {
	canon, err := testRecords()[KindAttestation].Marshal()
	if err != nil {
		t.Fatal(err)
	}
	fields := rawFields(t, canon)
	keys := slices.Sorted(maps.Keys(fields))
	if got := assemble(keys, fields); !bytes.Equal(got, canon) {
		t.Fatalf("test helper: reassembled record differs from the encoding")
	}
	with := func(key uint64, raw []byte) []byte {
		f := maps.Clone(fields)
		f[key] = raw
		return assemble(keys, f)
	}
	indefinite := append([]byte{0xbf}, canon[1:]...)
	indefinite = append(indefinite, 0xff)

	tests := []struct {
		name string
		data []byte
	}{
		{"empty", nil},
		{"not CBOR", []byte("hello")},
		{"trailing byte", append(slices.Clone(canon), 0x00)},
		{"two records", append(slices.Clone(canon), canon...)},
		{"unsorted map", assemble(reversed(keys), fields)},
		{"duplicate key", assemble(append(slices.Clone(keys[:len(keys)-1]), keys[len(keys)-1], keys[len(keys)-1]), fields)},
		{"unknown field 11", func() []byte {
			f := maps.Clone(fields)
			f[11] = cbor.RawMessage{0x00}
			return assemble(append(slices.Clone(keys), 11), f)
		}()},
		{"indefinite-length map", indefinite},
		{"non-minimal map header", append([]byte{0xb8, byte(len(keys))}, canon[1:]...)},
		{"non-minimal integer", with(0, hexBytes("1801"))},
		{"version as negative", with(0, hexBytes("20"))},
		{"version 2", with(0, hexBytes("02"))},
		{"kind invalid UTF-8", with(1, hexBytes("62 fffe"))},
		{"time untagged", with(2, append([]byte{0x1a}, fields[2][2:]...))},
		{"time as float", with(2, func() []byte {
			b, _ := cbor.Marshal(float64(t0.Unix()))
			return append([]byte{0xc1}, b...)
		}())},
		{"time as RFC 3339 string", with(2, append([]byte{0xc0, 0x74}, "2026-11-02T10:00:00Z"...))},
		{"time tag 1 null", with(2, hexBytes("c1 f6"))},
		{"time tag 100", with(2, append([]byte{0xd8, 0x64}, fields[2][1:]...))},
		{"result empty but present", with(7, hexBytes("40"))},
		{"result as text", with(7, append([]byte{0x62}, "{}"...))},
		{"result in a tag", with(7, append([]byte{0xd8, 0x18}, fields[7]...))},
		{"collateral empty but present", with(5, hexBytes("80"))},
		{"verifier build digest of 31 bytes", with(8, func() []byte {
			b, _ := encMode.Marshal(map[int]any{0: "proofline", 1: "v0.1.0", 2: make([]byte, 31)})
			return b
		}())},
		{"verifier build digest as array", with(8, func() []byte {
			b, _ := encMode.Marshal(map[int]any{0: "proofline", 1: "v0.1.0", 2: make([]uint8arr, 32)})
			return b
		}())},
		{"deep nesting", append(bytes.Repeat([]byte{0x81}, 100), 0x00)},
		{"oversized", make([]byte, MaxRecordSize+1)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, err := ParseRecord(tt.data)
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("got %+v, %v; want ErrMalformed", r, err)
			}
			t.Log(err)
		})
	}
}

// uint8arr encodes as a CBOR unsigned integer, so a []uint8arr is an array, not a byte string.
type uint8arr uint16

func reversed[T any](s []T) []T {
	c := slices.Clone(s)
	slices.Reverse(c)
	return c
}

// A collateral_update record without key 11 (as written before it existed) is still valid, and
// key 11 round-trips with its optional fields absent.
func TestCollateralUpdateOptional(t *testing.T) {
	r := testRecords()[KindCollateralUpdate]
	r.CollateralUpdate = nil
	b, err := r.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := rawFields(t, b)[11]; ok {
		t.Fatal("an absent collateral_update was encoded")
	}
	if _, err := ParseRecord(b); err != nil {
		t.Fatal(err)
	}
}
