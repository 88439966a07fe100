package nonce

import (
	"context"
	"crypto/rand"
	"database/sql"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/proofline/proofline/internal/mysqltest"
)

// t0 is the pinned start of the clock in these tests; deliberately not a whole second.
var t0 = time.Date(2026, 11, 2, 10, 0, 0, 250_000_000, time.UTC)

const ttl = 5 * time.Minute

// clock is the injected clock: it moves only when a test moves it.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *clock { return &clock{t: t0} }

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) Set(t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = t
}

func newSecret(t testing.TB) []byte {
	t.Helper()
	s := make([]byte, SecretSize)
	rand.Read(s)
	return s
}

func newIssuer(t testing.TB, secret []byte, s Store, c *clock) *Issuer {
	t.Helper()
	is, err := New(secret, s, ttl, c.Now)
	if err != nil {
		t.Fatal(err)
	}
	return is
}

// backends create empty storage for one test on each engine and return an opener: every call
// of open returns a new handle on that same storage, with its own connection pool, as a replica
// or a restarted process has.
var backends = []struct {
	name    string
	storage func(t *testing.T) (open func(t *testing.T) *SQLStore)
}{
	{"sqlite", func(t *testing.T) func(t *testing.T) *SQLStore {
		path := filepath.Join(t.TempDir(), DBFileName)
		return func(t *testing.T) *SQLStore {
			s, err := OpenSQLite(context.Background(), path)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { s.Close() })
			return s
		}
	}},
	{"mariadb", func(t *testing.T) func(t *testing.T) *SQLStore {
		dsn := newTestDatabase(t)
		return func(t *testing.T) *SQLStore {
			s, err := OpenMySQL(context.Background(), openDB(t, dsn))
			if err != nil {
				t.Fatal(err)
			}
			return s
		}
	}},
}

// forEach runs f as a parallel subtest on each engine.
func forEach(t *testing.T, f func(t *testing.T, open func(t *testing.T) *SQLStore)) {
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			t.Parallel()
			f(t, b.storage(t))
		})
	}
}

func newTestDatabase(t testing.TB) string { return mysqltest.NewDatabase(t) }

func openDB(t testing.TB, dsn string) *sql.DB { return mysqltest.Open(t, dsn) }

// spyStore is a Store in memory that counts its calls: for the checks that must never reach
// the store, and for fault injection (err, before).
type spyStore struct {
	mu     sync.Mutex
	used   map[string]time.Time
	calls  int
	err    error  // returned by MarkUsed instead of recording, when set
	before func() // called at the start of MarkUsed, when set
}

func newSpyStore() *spyStore { return &spyStore{used: map[string]time.Time{}} }

func (s *spyStore) MarkUsed(_ context.Context, nonce []byte, expires time.Time) error {
	if s.before != nil {
		s.before()
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.calls++
	if s.err != nil {
		return s.err
	}
	if _, ok := s.used[string(nonce)]; ok {
		return ErrReplayed
	}
	s.used[string(nonce)] = expires
	return nil
}

func (s *spyStore) Sweep(_ context.Context, before time.Time) (int64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var n int64
	for k, e := range s.used {
		if e.Before(before) {
			delete(s.used, k)
			n++
		}
	}
	return n, nil
}

func (s *spyStore) Calls() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.calls
}
