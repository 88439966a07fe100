package evidence

import (
	"bytes"
	"errors"
	"testing"
	"time"

	"github.com/fxamacker/cbor/v2"
)

// accessChangeRecord is a valid access_change record: alice creates a token for the agent vm-1.
func accessChangeRecord() *Record {
	return &Record{
		Version:  Version,
		Kind:     KindAccessChange,
		Time:     t0,
		Verifier: Verifier{Name: "proofline", Version: "v0.1.0", Build: digestOf("binary")},
		AccessChange: &AccessChange{
			Actor: "admin:alice", Action: AccessCreate, TokenID: "0123456789abcdef", Name: "vm-1", Role: "agent",
			ExpiresAt: t0.Add(30 * 24 * time.Hour),
		},
	}
}

// An access_change record encodes under key 12, round-trips byte for byte, signs and opens.
func TestAccessChangeRoundTrip(t *testing.T) {
	for _, action := range []AccessAction{AccessCreate, AccessRevoke} {
		r := accessChangeRecord()
		r.AccessChange.Action = action
		b, err := r.Marshal()
		if err != nil {
			t.Fatal(err)
		}
		if _, ok := rawFields(t, b)[12]; !ok {
			t.Fatalf("%s: no key 12 in %x", action, b)
		}
		got, err := ParseRecord(b)
		if err != nil {
			t.Fatal(err)
		}
		if *got.AccessChange != *r.AccessChange || got.Kind != KindAccessChange {
			t.Fatalf("%s: got %+v, want %+v", action, got.AccessChange, r.AccessChange)
		}
		again, _ := got.Marshal()
		if !bytes.Equal(again, b) {
			t.Fatalf("%s: re-encoding differs", action)
		}
		key := testKey(t, "test-key-a.pem")
		leaf := mustSign(t, r, key)
		opened, _, err := Open(leaf, historyOf(t, key))
		if err != nil || opened.AccessChange == nil || opened.AccessChange.TokenID != r.AccessChange.TokenID {
			t.Fatalf("%s: Open: %v %+v", action, err, opened)
		}
	}
}

// Every rule of an access_change record, each broken from the valid record.
func TestAccessChangeValidate(t *testing.T) {
	if err := accessChangeRecord().Validate(); err != nil {
		t.Fatalf("the valid record: %v", err)
	}
	for _, tt := range []struct {
		name   string
		mutate func(r *Record)
	}{
		{"without the change", func(r *Record) { r.AccessChange = nil }},
		{"without actor", func(r *Record) { r.AccessChange.Actor = "" }},
		{"without action", func(r *Record) { r.AccessChange.Action = "" }},
		{"unknown action", func(r *Record) { r.AccessChange.Action = "expire" }},
		{"without token id", func(r *Record) { r.AccessChange.TokenID = "" }},
		{"without name", func(r *Record) { r.AccessChange.Name = "" }},
		{"without role", func(r *Record) { r.AccessChange.Role = "" }},
		{"without expiry", func(r *Record) { r.AccessChange.ExpiresAt = time.Time{} }},
		{"sub-second expiry", func(r *Record) { r.AccessChange.ExpiresAt = r.AccessChange.ExpiresAt.Add(time.Millisecond) }},
		{"with a subject", func(r *Record) { r.Subject = &Subject{ID: "vm-1"} }},
		{"with a policy", func(r *Record) { r.Policy = &PolicyRef{ID: "p", Digest: digestOf("p")} }},
		{"with a policy change", func(r *Record) { r.PolicyChange = &PolicyChange{Actor: "admin:alice"} }},
		{"in a policy change record", func(r *Record) {
			pc := testRecords()[KindPolicyChange]
			pc.AccessChange = r.AccessChange
			*r = *pc
		}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			r := accessChangeRecord()
			tt.mutate(r)
			if _, err := r.Marshal(); !errors.Is(err, ErrMalformed) {
				t.Fatalf("Marshal: got %v, want ErrMalformed", err)
			}
		})
	}
}

// ParseRecord refuses an access_change record whose change is missing or malformed on the wire,
// not only when built in Go.
func TestAccessChangeParseStrict(t *testing.T) {
	b, err := accessChangeRecord().Marshal()
	if err != nil {
		t.Fatal(err)
	}
	fields := rawFields(t, b)
	var change map[uint64]cbor.RawMessage
	if err := cbor.Unmarshal(fields[12], &change); err != nil {
		t.Fatal(err)
	}
	for name, mutate := range map[string]func(){
		"unchanged (control)": func() {},
		"change dropped":      func() { delete(fields, 12) },
		"unknown action":      func() { change[1] = mustCBOR(t, "delete") },
		"unknown change key":  func() { change[6] = mustCBOR(t, "x") },
		"empty token id":      func() { change[2] = mustCBOR(t, "") },
	} {
		t.Run(name, func(t *testing.T) {
			fields, change = rawFields(t, b), nil
			if err := cbor.Unmarshal(fields[12], &change); err != nil {
				t.Fatal(err)
			}
			mutate()
			if _, ok := fields[12]; ok {
				fields[12] = mustCBOR(t, change)
			}
			_, err := ParseRecord(mustCBOR(t, fields))
			if name == "unchanged (control)" {
				if err != nil {
					t.Fatalf("the re-assembled valid record: %v", err)
				}
				return
			}
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("ParseRecord: got %v, want ErrMalformed", err)
			}
		})
	}
}

func mustCBOR(t *testing.T, v any) cbor.RawMessage {
	t.Helper()
	em, err := cbor.CoreDetEncOptions().EncMode()
	if err != nil {
		t.Fatal(err)
	}
	b, err := em.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
