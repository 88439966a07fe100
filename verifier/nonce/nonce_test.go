package nonce

import (
	"bytes"
	"context"
	"crypto/hkdf"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/proofline/proofline/attest"
)

var ctx = context.Background()

// TestLayout recomputes an issued nonce from the layout in the package documentation, with the
// standard library only: version, expiry, HKDF-derived keys, tag and check.
func TestLayout(t *testing.T) {
	secret := newSecret(t)
	is := newIssuer(t, secret, newSpyStore(), newClock())
	n, expires, err := is.Issue(ctx, "agent-7")
	if err != nil {
		t.Fatal(err)
	}
	if len(n) != 32 || attest.NonceSize != 32 {
		t.Fatalf("nonce is %d bytes, want 32", len(n))
	}
	if want := t0.Add(ttl).Truncate(time.Second); !expires.Equal(want) || expires.Location() != time.UTC {
		t.Errorf("expires %v, want %v (whole seconds, UTC, at most the TTL from now)", expires, want)
	}
	if n[0] != 1 {
		t.Errorf("version byte %d, want 1", n[0])
	}
	if got := int64(binary.BigEndian.Uint32(n[1:5])); got != expires.Unix() {
		t.Errorf("expiry field %d, want %d", got, expires.Unix())
	}
	mac := func(info string, parts ...[]byte) []byte {
		k, err := hkdf.Key(sha256.New, secret, nil, info, 32)
		if err != nil {
			t.Fatal(err)
		}
		m := hmac.New(sha256.New, k)
		for _, p := range parts {
			m.Write(p)
		}
		return m.Sum(nil)
	}
	if want := mac("proofline/nonce/v1/tag", n[:12], []byte("agent-7"))[:16]; !bytes.Equal(n[12:28], want) {
		t.Errorf("tag %x, want %x", n[12:28], want)
	}
	if want := mac("proofline/nonce/v1/check", n[:28])[:4]; !bytes.Equal(n[28:], want) {
		t.Errorf("check %x, want %x", n[28:], want)
	}
}

// TestIssueConsume: a nonce is accepted once, by the replica that issued it or another one
// sharing the store, and then is ErrReplayed everywhere, also after a restart.
func TestIssueConsume(t *testing.T) {
	forEach(t, func(t *testing.T, open func(t *testing.T) *SQLStore) {
		secret, c := newSecret(t), newClock()
		sa, sb := open(t), open(t)
		a, b := newIssuer(t, secret, sa, c), newIssuer(t, secret, sb, c)

		n, _, err := a.Issue(ctx, "agent-1")
		if err != nil {
			t.Fatal(err)
		}
		if err := a.Consume(ctx, n, "agent-1"); err != nil {
			t.Fatalf("first Consume: %v", err)
		}
		for name, is := range map[string]*Issuer{"same replica": a, "other replica": b} {
			if err := is.Consume(ctx, n, "agent-1"); !errors.Is(err, ErrReplayed) {
				t.Errorf("second Consume on the %s: %v, want ErrReplayed", name, err)
			}
		}

		m, _, err := a.Issue(ctx, "agent-1")
		if err != nil {
			t.Fatal(err)
		}
		if err := b.Consume(ctx, m, "agent-1"); err != nil {
			t.Fatalf("Consume on the other replica: %v", err)
		}
		if err := a.Consume(ctx, m, "agent-1"); !errors.Is(err, ErrReplayed) {
			t.Errorf("Consume back on the issuing replica: %v, want ErrReplayed", err)
		}

		sa.Close()
		restarted := newIssuer(t, secret, open(t), c)
		for _, x := range [][]byte{n, m} {
			if err := restarted.Consume(ctx, x, "agent-1"); !errors.Is(err, ErrReplayed) {
				t.Errorf("Consume after a restart: %v, want ErrReplayed", err)
			}
		}
	})
}

// TestExpired: a nonce is valid up to, not including, its expiry; an expired nonce is rejected
// before the store is consulted, and a store never makes it valid again.
func TestExpired(t *testing.T) {
	forEach(t, func(t *testing.T, open func(t *testing.T) *SQLStore) {
		c := newClock()
		is := newIssuer(t, newSecret(t), open(t), c)
		var ns [][]byte
		var expires time.Time
		for range 3 {
			n, e, err := is.Issue(ctx, "")
			if err != nil {
				t.Fatal(err)
			}
			ns, expires = append(ns, n), e
		}
		c.Set(expires.Add(-time.Nanosecond))
		if err := is.Consume(ctx, ns[0], ""); err != nil {
			t.Fatalf("1 ns before expiry: %v", err)
		}
		c.Set(expires)
		if err := is.Consume(ctx, ns[1], ""); !errors.Is(err, ErrExpired) {
			t.Errorf("at expiry: %v, want ErrExpired", err)
		}
		c.Set(expires.Add(time.Hour))
		for i, n := range ns {
			if err := is.Consume(ctx, n, ""); !errors.Is(err, ErrExpired) {
				t.Errorf("nonce %d an hour after expiry: %v, want ErrExpired", i, err)
			}
		}
	})

	// The same with a store that would accept anything: it is never asked.
	c, spy := newClock(), newSpyStore()
	is := newIssuer(t, newSecret(t), spy, c)
	n, expires, err := is.Issue(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	c.Set(expires)
	if err := is.Consume(ctx, n, ""); !errors.Is(err, ErrExpired) {
		t.Errorf("at expiry: %v, want ErrExpired", err)
	}
	if spy.Calls() != 0 {
		t.Errorf("an expired nonce reached the store (%d calls)", spy.Calls())
	}
}

// TestRejects: anything but the issued bytes with the issued binding is rejected with the right
// error, before the store is consulted; a rejected attempt does not spend the nonce.
func TestRejects(t *testing.T) {
	secret, c, spy := newSecret(t), newClock(), newSpyStore()
	is := newIssuer(t, secret, spy, c)
	n, _, err := is.Issue(ctx, "agent-a")
	if err != nil {
		t.Fatal(err)
	}
	other, _, err := newIssuer(t, newSecret(t), newSpyStore(), c).Issue(ctx, "agent-a")
	if err != nil {
		t.Fatal(err)
	}
	random := make([]byte, 32)
	rand.Read(random)
	random1 := bytes.Clone(random)
	random1[0] = 1 // the right version, so the MAC is what rejects it
	unbound, _, err := is.Issue(ctx, "")
	if err != nil {
		t.Fatal(err)
	}

	type tc struct {
		name    string
		nonce   []byte
		binding string
		want    error
	}
	tests := []tc{
		{"nil", nil, "agent-a", ErrUnknown},
		{"31 bytes", n[:31], "agent-a", ErrUnknown},
		{"33 bytes", append(bytes.Clone(n), 0), "agent-a", ErrUnknown},
		{"zeros", make([]byte, 32), "agent-a", ErrUnknown},
		{"random", random, "agent-a", ErrUnknown},
		{"random with version 1", random1, "agent-a", ErrUnknown},
		{"issued under another secret", other, "agent-a", ErrUnknown},
		{"other binding", n, "agent-b", ErrWrongBinding},
		{"binding differs in case", n, "Agent-a", ErrWrongBinding},
		{"binding with a suffix", n, "agent-a\x00", ErrWrongBinding},
		{"binding is a prefix", n, "agent-", ErrWrongBinding},
		{"no binding", n, "", ErrWrongBinding},
		{"unbound nonce, with a binding", unbound, "agent-a", ErrWrongBinding},
	}
	for i := range 8 * len(n) {
		f := bytes.Clone(n)
		f[i/8] ^= 1 << (i % 8)
		tests = append(tests, tc{fmt.Sprintf("bit %d flipped", i), f, "agent-a", ErrUnknown})
	}
	for _, tc := range tests {
		err := is.Consume(ctx, tc.nonce, tc.binding)
		if !errors.Is(err, tc.want) {
			t.Errorf("%s: %v, want %v", tc.name, err, tc.want)
		}
		// Check makes the same decision, without the store.
		if _, err := is.Check(tc.nonce, tc.binding); !errors.Is(err, tc.want) {
			t.Errorf("%s: Check = %v, want %v", tc.name, err, tc.want)
		}
	}
	if spy.Calls() != 0 {
		t.Errorf("rejected nonces reached the store (%d calls)", spy.Calls())
	}
	if err := is.Consume(ctx, n, "agent-a"); err != nil {
		t.Errorf("the genuine nonce after the rejected attempts: %v", err)
	}
	if err := is.Consume(ctx, unbound, ""); err != nil {
		t.Errorf("the unbound nonce, unbound: %v", err)
	}
}

// TestCheckRecord: Consume in two steps. Check accepts a genuine nonce without recording it (so
// it can pass Check again) and returns its expiry; Record then accepts it once, and a second
// Record, here or on a replica, is ErrReplayed. A nonce that expires before Record is refused.
func TestCheckRecord(t *testing.T) {
	forEach(t, func(t *testing.T, open func(t *testing.T) *SQLStore) {
		secret, c := newSecret(t), newClock()
		a, b := newIssuer(t, secret, open(t), c), newIssuer(t, secret, open(t), c)
		n, exp, err := a.Issue(ctx, "agent-1")
		if err != nil {
			t.Fatal(err)
		}
		for range 2 {
			got, err := a.Check(n, "agent-1")
			if err != nil || !got.Equal(exp.Truncate(time.Second)) {
				t.Fatalf("Check = %v, %v, want %v", got, err, exp)
			}
		}
		if err := a.Record(ctx, n, exp); err != nil {
			t.Fatalf("Record: %v", err)
		}
		if err := b.Record(ctx, n, exp); !errors.Is(err, ErrReplayed) {
			t.Fatalf("Record on a replica after the first = %v, want ErrReplayed", err)
		}
		if err := a.Consume(ctx, n, "agent-1"); !errors.Is(err, ErrReplayed) {
			t.Fatalf("Consume after Record = %v, want ErrReplayed", err)
		}
		m, mexp, err := a.Issue(ctx, "agent-1")
		if err != nil {
			t.Fatal(err)
		}
		if _, err := a.Check(m, "agent-1"); err != nil {
			t.Fatal(err)
		}
		c.Set(mexp.Add(time.Second))
		if err := a.Record(ctx, m, mexp); !errors.Is(err, ErrExpired) {
			t.Fatalf("Record of a nonce that expired after Check = %v, want ErrExpired", err)
		}
	})
}

// TestStoreError: a store that fails is a rejection that is none of the decisions (the API
// answers 503), never an acceptance.
func TestStoreError(t *testing.T) {
	c, spy := newClock(), newSpyStore()
	is := newIssuer(t, newSecret(t), spy, c)
	n, _, err := is.Issue(ctx, "")
	if err != nil {
		t.Fatal(err)
	}
	down := errors.New("database unreachable")
	spy.err = down
	err = is.Consume(ctx, n, "")
	if !errors.Is(err, down) {
		t.Fatalf("Consume with a failing store: %v, want the store's error", err)
	}
	for _, s := range []error{ErrUnknown, ErrWrongBinding, ErrExpired, ErrReplayed} {
		if errors.Is(err, s) {
			t.Errorf("a store failure reads as %v", s)
		}
	}
}

// TestDistinct: nonces issued at one instant for one binding all differ.
func TestDistinct(t *testing.T) {
	is := newIssuer(t, newSecret(t), newSpyStore(), newClock())
	seen := map[string]bool{}
	for range 10000 {
		n, _, err := is.Issue(ctx, "agent")
		if err != nil {
			t.Fatal(err)
		}
		if seen[string(n)] {
			t.Fatal("the same nonce was issued twice")
		}
		seen[string(n)] = true
	}
}

// TestReplicasRace: two replicas with the same secret on one database, 16 goroutines each,
// consume the same nonce at once: exactly one succeeds and all others get ErrReplayed.
func TestReplicasRace(t *testing.T) {
	forEach(t, func(t *testing.T, open func(t *testing.T) *SQLStore) {
		secret, c := newSecret(t), newClock()
		replicas := []*Issuer{newIssuer(t, secret, open(t), c), newIssuer(t, secret, open(t), c)}
		for round := range 4 {
			n, _, err := replicas[round%2].Issue(ctx, "agent")
			if err != nil {
				t.Fatal(err)
			}
			start := make(chan struct{})
			errs := make(chan error, 32)
			var wg sync.WaitGroup
			for i := range 32 {
				wg.Go(func() {
					<-start
					errs <- replicas[i%2].Consume(ctx, n, "agent")
				})
			}
			close(start)
			wg.Wait()
			close(errs)
			ok := 0
			for err := range errs {
				switch {
				case err == nil:
					ok++
				case !errors.Is(err, ErrReplayed):
					t.Errorf("round %d: %v, want nil or ErrReplayed", round, err)
				}
			}
			if ok != 1 {
				t.Errorf("round %d: %d of 32 racing Consume calls succeeded, want exactly 1", round, ok)
			}
		}
	})
}

// TestSweep: Sweep keeps a used nonce recorded until SweepMargin after its expiry (so it is
// ErrReplayed until it is ErrExpired, at every step), then deletes it, and only it.
func TestSweep(t *testing.T) {
	forEach(t, func(t *testing.T, open func(t *testing.T) *SQLStore) {
		c, store := newClock(), open(t)
		is := newIssuer(t, newSecret(t), store, c)
		a, expA, err := is.Issue(ctx, "")
		if err != nil {
			t.Fatal(err)
		}
		if err := is.Consume(ctx, a, ""); err != nil {
			t.Fatal(err)
		}
		c.Set(t0.Add(2 * time.Minute))
		b, expB, err := is.Issue(ctx, "")
		if err != nil {
			t.Fatal(err)
		}
		if err := is.Consume(ctx, b, ""); err != nil {
			t.Fatal(err)
		}

		deletedAt := time.Time{}
		for now := t0; now.Before(expA.Add(SweepMargin + time.Minute)); now = now.Add(10 * time.Second) {
			c.Set(now)
			n, err := is.Sweep(ctx)
			if err != nil {
				t.Fatal(err)
			}
			switch {
			case n == 0:
			case n == 1 && deletedAt.IsZero():
				deletedAt = now
			default:
				t.Fatalf("at %v: Sweep deleted %d records", now, n)
			}
			if now.Before(expA) {
				if err := is.Consume(ctx, a, ""); !errors.Is(err, ErrReplayed) {
					t.Fatalf("at %v, before expiry: %v, want ErrReplayed", now, err)
				}
			} else if err := is.Consume(ctx, a, ""); !errors.Is(err, ErrExpired) {
				t.Fatalf("at %v, after expiry: %v, want ErrExpired", now, err)
			}
		}
		if deletedAt.IsZero() || !deletedAt.After(expA.Add(SweepMargin)) || deletedAt.After(expA.Add(SweepMargin+10*time.Second)) {
			t.Errorf("the record expiring at %v was deleted at %v, want the first sweep after %v", expA, deletedAt, expA.Add(SweepMargin))
		}
		// Only a's record is gone: recording a again succeeds, b is still there.
		if err := store.MarkUsed(ctx, a, expA); err != nil {
			t.Errorf("a was not deleted: %v", err)
		}
		if err := store.MarkUsed(ctx, b, expB); !errors.Is(err, ErrReplayed) {
			t.Errorf("b was deleted with a: %v", err)
		}
	})
}

// TestStoreSweepBoundary: the store deletes exactly the records whose expiry is before the
// given time, sub-second times included.
func TestStoreSweepBoundary(t *testing.T) {
	forEach(t, func(t *testing.T, open func(t *testing.T) *SQLStore) {
		s := open(t)
		e := time.Unix(1_800_000_000, 0)
		n := make([]byte, 32)
		if err := s.MarkUsed(ctx, n, e); err != nil {
			t.Fatal(err)
		}
		for _, before := range []time.Time{e.Add(-time.Second), e.Add(-time.Nanosecond), e} {
			if got, err := s.Sweep(ctx, before); err != nil || got != 0 {
				t.Errorf("Sweep(%v) of a record expiring at %v: %d, %v; want 0", before, e, got, err)
			}
		}
		if got, err := s.Sweep(ctx, e.Add(time.Nanosecond)); err != nil || got != 1 {
			t.Errorf("Sweep(expiry + 1ns): %d, %v; want 1", got, err)
		}
	})
}

// TestStalledConsume: a Consume that checked expiry, then stalled until another replica's
// record of the same nonce was swept, still does not accept the nonce: it finds it expired
// once its insert returns.
func TestStalledConsume(t *testing.T) {
	forEach(t, func(t *testing.T, open func(t *testing.T) *SQLStore) {
		secret, c := newSecret(t), newClock()
		fast := newIssuer(t, secret, open(t), c)
		n, expires, err := fast.Issue(ctx, "")
		if err != nil {
			t.Fatal(err)
		}
		stall := &stallingStore{Store: open(t)}
		slow := newIssuer(t, secret, stall, c)
		stall.before = func() {
			if err := fast.Consume(ctx, n, ""); err != nil {
				t.Errorf("the other replica's Consume: %v", err)
			}
			c.Set(expires.Add(SweepMargin + time.Second))
			if got, err := fast.Sweep(ctx); err != nil || got != 1 {
				t.Errorf("Sweep: %d, %v; want 1 record deleted", got, err)
			}
		}
		if err := slow.Consume(ctx, n, ""); !errors.Is(err, ErrExpired) {
			t.Errorf("the stalled Consume: %v, want ErrExpired", err)
		}
	})
}

// stallingStore runs before ahead of MarkUsed.
type stallingStore struct {
	Store
	before func()
}

func (s *stallingStore) MarkUsed(ctx context.Context, nonce []byte, expires time.Time) error {
	s.before()
	return s.Store.MarkUsed(ctx, nonce, expires)
}

func TestNewRejects(t *testing.T) {
	secret := newSecret(t)
	tests := []struct {
		name   string
		secret []byte
		store  Store
		ttl    time.Duration
	}{
		{"no secret", nil, newSpyStore(), ttl},
		{"31-byte secret", secret[:31], newSpyStore(), ttl},
		{"no store", secret, nil, ttl},
		{"zero TTL", secret, newSpyStore(), 0},
		{"negative TTL", secret, newSpyStore(), -time.Minute},
		{"sub-second TTL", secret, newSpyStore(), time.Second - 1},
		{"TTL over an hour", secret, newSpyStore(), time.Hour + 1},
	}
	for _, tc := range tests {
		if _, err := New(tc.secret, tc.store, tc.ttl, newClock().Now); err == nil {
			t.Errorf("%s: New succeeded", tc.name)
		}
	}
	if _, err := New(append(bytes.Clone(secret), 1), newSpyStore(), time.Second, nil); err != nil {
		t.Errorf("33-byte secret, 1s TTL, nil clock: %v", err)
	}
}

// TestIssueRange: a clock whose expiry does not fit the 32-bit field is an error, not a wrap.
func TestIssueRange(t *testing.T) {
	c := newClock()
	is := newIssuer(t, newSecret(t), newSpyStore(), c)
	c.Set(time.Unix(1<<32, 0).Add(-ttl))
	if _, _, err := is.Issue(ctx, ""); err == nil {
		t.Error("Issue in 2106 succeeded")
	}
}
