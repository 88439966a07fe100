package evidence

import (
	"bytes"
	"errors"
	"testing"
)

// FuzzDecodeRecord: ParseRecord never panics, fails only with ErrMalformed, and whatever it
// accepts re-encodes to the identical bytes (non-malleability).
func FuzzDecodeRecord(f *testing.F) {
	for _, kind := range kinds {
		b, err := testRecords()[kind].Marshal()
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte{0xa0})
	f.Fuzz(func(t *testing.T, data []byte) {
		r, err := ParseRecord(data)
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("error %v does not wrap ErrMalformed", err)
			}
			return
		}
		b, err := r.Marshal()
		if err != nil {
			t.Fatalf("accepted record does not re-encode: %v", err)
		}
		if !bytes.Equal(b, data) {
			t.Fatalf("accepted %x, re-encodes to %x", data, b)
		}
	})
}

// FuzzOpen: Open never panics, fails only with one of its decisions, and whatever it accepts
// is a valid record timed inside the signing key's period.
func FuzzOpen(f *testing.F) {
	a, b := testKey(f, "test-key-a.pem"), testKey(f, "test-key-b.pem")
	hist := historyOf(f, a)
	for _, kind := range kinds {
		f.Add(mustSign(f, testRecords()[kind], a))
		f.Add(mustSign(f, testRecords()[kind], b))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		r, info, err := Open(data, hist)
		if err != nil {
			if !errors.Is(err, ErrMalformed) && !errors.Is(err, ErrSignature) &&
				!errors.Is(err, ErrUnknownKey) && !errors.Is(err, ErrKeyNotValidAt) {
				t.Fatalf("error %v is none of Open's decisions", err)
			}
			return
		}
		if err := r.Validate(); err != nil {
			t.Fatalf("opened an invalid record: %v", err)
		}
		if !info.ValidAt(r.Time) {
			t.Fatal("opened a record outside its key's period")
		}
	})
}
