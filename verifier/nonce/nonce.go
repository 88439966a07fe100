package nonce

import (
	"context"
	"crypto/hkdf"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/proofline/proofline/attest"
)

// Errors that are part of the contract (use errors.Is). Each is a rejection of the nonce.
var (
	// ErrUnknown: not a nonce this service issued (wrong size, unknown version, a bad MAC, or
	// minted under another secret).
	ErrUnknown = errors.New("nonce: unknown nonce")
	// ErrWrongBinding: issued by this service, but to another binding (another agent identity,
	// request or session).
	ErrWrongBinding = errors.New("nonce: issued to another binding")
	// ErrExpired: the nonce's TTL has passed.
	ErrExpired = errors.New("nonce: expired")
	// ErrReplayed: the nonce was already consumed.
	ErrReplayed = errors.New("nonce: already used")
)

// Limits.
const (
	// SecretSize is the minimum size of the secret, and the size LoadOrCreateSecret creates.
	SecretSize = 32
	// MinTTL and MaxTTL bound the TTL given to New. Nonces are for a challenge–response round
	// trip, which takes seconds to minutes; a longer TTL only widens the replay window that
	// single use has to cover and the store has to hold.
	MinTTL = time.Second
	MaxTTL = time.Hour
	// SweepMargin is how long after its expiry a used nonce stays recorded. It MUST exceed the
	// largest clock difference between replicas sharing a store (see the package doc).
	SweepMargin = 5 * time.Minute
)

// Layout of a version-1 nonce; see the package documentation.
const (
	version   = 1
	offExpiry = 1
	offRandom = 5
	offTag    = 12
	offCheck  = 28
	checkSize = 4
)

// The layout fills exactly the nonce REPORT_DATA binds (a compile error otherwise).
var _ [attest.NonceSize - offCheck - checkSize]struct{} = [0]struct{}{}

// Store records used nonces. Implementations are safe for concurrent use, also by several
// processes or replicas sharing the storage.
type Store interface {
	// MarkUsed records nonce as used. It MUST be atomic across every Issuer sharing the
	// storage: for one nonce, exactly one call succeeds, and every other returns an error
	// wrapping ErrReplayed. When it returns nil the record is durable. The record MUST be kept
	// until Sweep is called with a time after expires.
	MarkUsed(ctx context.Context, nonce []byte, expires time.Time) error
	// Sweep deletes the records whose expiry is before the given time and returns how many it
	// deleted.
	Sweep(ctx context.Context, before time.Time) (int64, error)
}

// Issuer issues and consumes nonces. It is safe for concurrent use. Issuers with the same
// secret and store accept each other's nonces, each at most once.
type Issuer struct {
	tagKey, checkKey []byte
	store            Store
	ttl              time.Duration
	now              func() time.Time
}

// New returns an Issuer. secret is at least SecretSize bytes and the same on every replica;
// store records used nonces; ttl is how long an issued nonce is valid, between MinTTL and
// MaxTTL; now is the clock (time.Now if nil).
func New(secret []byte, store Store, ttl time.Duration, now func() time.Time) (*Issuer, error) {
	if len(secret) < SecretSize {
		return nil, fmt.Errorf("nonce: the secret is %d bytes, want at least %d random bytes", len(secret), SecretSize)
	}
	if store == nil {
		return nil, errors.New("nonce: no store for used nonces")
	}
	if ttl < MinTTL || ttl > MaxTTL {
		return nil, fmt.Errorf("nonce: TTL %v is outside [%v, %v]", ttl, MinTTL, MaxTTL)
	}
	if now == nil {
		now = time.Now
	}
	tagKey, err := hkdf.Key(sha256.New, secret, nil, "proofline/nonce/v1/tag", sha256.Size)
	if err != nil {
		return nil, fmt.Errorf("nonce: deriving keys: %w", err)
	}
	checkKey, err := hkdf.Key(sha256.New, secret, nil, "proofline/nonce/v1/check", sha256.Size)
	if err != nil {
		return nil, fmt.Errorf("nonce: deriving keys: %w", err)
	}
	return &Issuer{tagKey: tagKey, checkKey: checkKey, store: store, ttl: ttl, now: now}, nil
}

// Issue returns a new nonce for binding and the time it expires (whole seconds, at most the
// TTL from now). It writes nothing: only Consume touches the store.
func (is *Issuer) Issue(ctx context.Context, binding string) (nonce []byte, expires time.Time, err error) {
	if err := ctx.Err(); err != nil {
		return nil, time.Time{}, err
	}
	exp := is.now().Add(is.ttl).Unix()
	if exp < 0 || exp > math.MaxUint32 {
		return nil, time.Time{}, fmt.Errorf("nonce: expiry %d is outside the version-1 range", exp)
	}
	n := make([]byte, attest.NonceSize)
	n[0] = version
	binary.BigEndian.PutUint32(n[offExpiry:], uint32(exp))
	rand.Read(n[offRandom:offTag]) // never fails (crypto/rand crashes the program instead)
	is.seal(n, binding)
	return n, time.Unix(exp, 0).UTC(), nil
}

// seal fills in the tag and the check of n, whose first offTag bytes are set.
func (is *Issuer) seal(n []byte, binding string) {
	copy(n[offTag:offCheck], is.tag(n, binding))
	copy(n[offCheck:], is.check(n))
}

func (is *Issuer) tag(n []byte, binding string) []byte {
	m := hmac.New(sha256.New, is.tagKey)
	m.Write(n[:offTag])
	m.Write([]byte(binding))
	return m.Sum(nil)[:offCheck-offTag]
}

func (is *Issuer) check(n []byte) []byte {
	m := hmac.New(sha256.New, is.checkKey)
	m.Write(n[:offCheck])
	return m.Sum(nil)[:checkSize]
}

// Consume accepts nonce for binding at most once across every Issuer sharing the store. It
// returns nil if the nonce was issued for binding, has not expired and was not consumed before;
// otherwise an error wrapping ErrUnknown, ErrWrongBinding, ErrExpired or ErrReplayed, or a
// store error (also a rejection). The checks run in the order the package documentation gives;
// only a nonce that passes the MACs and the expiry check reaches the store. Consume is Check
// then Record.
func (is *Issuer) Consume(ctx context.Context, nonce []byte, binding string) error {
	expires, err := is.Check(nonce, binding)
	if err != nil {
		return err
	}
	return is.Record(ctx, nonce, expires)
}

// Check makes the checks of Consume that need no store: nonce was issued (by an Issuer with this
// secret) for binding and has not expired. It fails with an error wrapping ErrUnknown,
// ErrWrongBinding or ErrExpired, and otherwise returns the nonce's expiry, for Record. A nonce
// that passed Check is not accepted until Record has recorded its use.
func (is *Issuer) Check(nonce []byte, binding string) (time.Time, error) {
	if len(nonce) != attest.NonceSize {
		return time.Time{}, fmt.Errorf("%w: %d bytes, want %d", ErrUnknown, len(nonce), attest.NonceSize)
	}
	if nonce[0] != version {
		return time.Time{}, fmt.Errorf("%w: version %d", ErrUnknown, nonce[0])
	}
	if !hmac.Equal(nonce[offCheck:], is.check(nonce)) {
		return time.Time{}, ErrUnknown
	}
	if !hmac.Equal(nonce[offTag:offCheck], is.tag(nonce, binding)) {
		return time.Time{}, ErrWrongBinding
	}
	expires := time.Unix(int64(binary.BigEndian.Uint32(nonce[offExpiry:])), 0).UTC()
	if now := is.now(); !now.Before(expires) {
		return time.Time{}, fmt.Errorf("%w at %s (now %s)", ErrExpired, expires.Format(time.RFC3339), now.UTC().Format(time.RFC3339))
	}
	return expires, nil
}

// Record records the use of nonce, which passed Check with expiry expires, in the store: nil
// once the use is durable and no other use was recorded before, an error wrapping ErrReplayed
// or ErrExpired (the nonce expired while it was being recorded), or a store error.
func (is *Issuer) Record(ctx context.Context, nonce []byte, expires time.Time) error {
	if err := is.store.MarkUsed(ctx, nonce, expires); err != nil {
		if errors.Is(err, ErrReplayed) {
			return err
		}
		return fmt.Errorf("nonce: recording use: %w", err)
	}
	// A sweep may have deleted an earlier record of this nonce while this call was between its
	// expiry check and its insert; the nonce has then expired (see "Sweeping").
	if now := is.now(); !now.Before(expires) {
		return fmt.Errorf("%w at %s, while it was being recorded (now %s)", ErrExpired, expires.Format(time.RFC3339), now.UTC().Format(time.RFC3339))
	}
	return nil
}

// Sweep deletes the records of used nonces that expired more than SweepMargin ago and returns
// how many it deleted.
func (is *Issuer) Sweep(ctx context.Context) (int64, error) {
	n, err := is.store.Sweep(ctx, is.now().Add(-SweepMargin))
	if err != nil {
		return n, fmt.Errorf("nonce: sweeping used nonces: %w", err)
	}
	return n, nil
}
