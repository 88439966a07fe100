package nonce

import (
	"bytes"
	"encoding/binary"
	"errors"
	"testing"
	"time"
)

// FuzzConsume: Consume accepts a byte string only if it is exactly the nonce the layout gives
// for its first 12 bytes and the binding, unexpired and unused; anything else is rejected with
// a sentinel error, and only genuine nonces reach the store.
func FuzzConsume(f *testing.F) {
	secret := bytes.Repeat([]byte{7}, SecretSize)
	mint := func(random byte, expires time.Time, binding string) []byte {
		n := make([]byte, 32)
		n[0] = version
		binary.BigEndian.PutUint32(n[1:], uint32(expires.Unix()))
		n[5] = random
		is, err := New(secret, newSpyStore(), ttl, newClock().Now)
		if err != nil {
			f.Fatal(err)
		}
		is.seal(n, binding)
		return n
	}
	f.Add(mint(1, t0.Add(time.Minute), "agent"), "agent")
	f.Add(mint(2, t0.Add(time.Minute), ""), "")
	f.Add(mint(3, t0.Add(-time.Minute), "agent"), "agent")
	f.Add(mint(4, t0.Add(time.Minute), "agent"), "agent2")
	f.Add(make([]byte, 32), "")
	f.Add([]byte{1}, "agent")
	f.Fuzz(func(t *testing.T, nonce []byte, binding string) {
		spy := newSpyStore()
		is := newIssuer(t, secret, spy, newClock())
		genuine := len(nonce) == 32 && nonce[0] == version
		if genuine {
			want := bytes.Clone(nonce)
			is.seal(want, binding)
			genuine = bytes.Equal(want, nonce)
		}
		err := is.Consume(ctx, nonce, binding)
		switch {
		case err == nil && !genuine:
			t.Fatalf("accepted %x for %q, which was never issued", nonce, binding)
		case err != nil && !errors.Is(err, ErrUnknown) && !errors.Is(err, ErrWrongBinding) && !errors.Is(err, ErrExpired):
			t.Fatalf("%x for %q: %v, not a decision", nonce, binding, err)
		case spy.Calls() > 0 && !genuine:
			t.Fatalf("%x for %q reached the store", nonce, binding)
		}
		if err == nil {
			if err := is.Consume(ctx, nonce, binding); !errors.Is(err, ErrReplayed) {
				t.Fatalf("second Consume: %v", err)
			}
		}
	})
}
