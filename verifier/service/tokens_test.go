package service

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"errors"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/proofline/proofline/internal/mysqltest"
)

// tokenClock is a test clock.
type tokenClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *tokenClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *tokenClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// Two verifier processes on one SQLite token file (two database handles, as two processes on one
// data directory would have): a token created by one authenticates on the other, and once
// revoked by one it is refused by the other on the next call — there is no cache to go stale.
func TestTokensSharedSQLite(t *testing.T) {
	ctx := context.Background()
	clk := &tokenClock{now: time.Date(2026, 11, 2, 10, 0, 0, 0, time.UTC)}
	dirA := t.TempDir()
	a, err := Open(ctx, Config{DataDir: dirA, Log: LogConfig{CheckpointInterval: 100 * time.Millisecond}}, Env{Now: clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close() })
	d, err := OpenDeps(ctx, Config{DataDir: t.TempDir(), Log: LogConfig{CheckpointInterval: 100 * time.Millisecond}}, Env{Now: clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	d.AccessTokens.Close()
	if d.AccessTokens, err = OpenTokenSQLite(ctx, filepath.Join(dirA, TokensFileName)); err != nil {
		t.Fatal(err)
	}
	d.Closers = append(d.Closers, d.AccessTokens.Close)
	b, err := New(ctx, *d)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })

	admin := Principal{Name: "alice", Role: RoleAdmin}
	ct, err := a.CreateToken(ctx, admin, TokenRequest{Name: "vm-1", Role: RoleAgent, ExpiresAt: clk.Now().Add(time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256([]byte(ct.Secret))
	if p, err := b.AuthenticateToken(ctx, sum, "192.0.2.1"); err != nil || p != (Principal{Name: "vm-1", Role: RoleAgent}) {
		t.Fatalf("B authenticating A's token: %v %+v", err, p)
	}
	if _, err := a.RevokeToken(ctx, admin, ct.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := b.AuthenticateToken(ctx, sum, "192.0.2.1"); !errors.Is(err, ErrTokenRefused) {
		t.Fatalf("B after A revoked: %v, want ErrTokenRefused", err)
	}
	ts, err := b.Tokens(ctx)
	if err != nil || len(ts) != 1 || ts[0].Status(clk.Now()) != "revoked" || ts[0].LastUsedFrom != "192.0.2.1" {
		t.Fatalf("B's list: %v %+v", err, ts)
	}
}

// A token store that cannot be read refuses: ErrUnavailable (503), never a principal and never
// "unknown" (which a caller could mistake for a configuration problem).
func TestTokenStoreDownFailsClosed(t *testing.T) {
	ctx := context.Background()
	s, err := Open(ctx, Config{DataDir: t.TempDir(), Log: LogConfig{CheckpointInterval: 100 * time.Millisecond}}, Env{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	admin := Principal{Name: "alice", Role: RoleAdmin}
	ct, err := s.CreateToken(ctx, admin, TokenRequest{Name: "vm-1", Role: RoleAgent, ExpiresAt: time.Now().Add(time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256([]byte(ct.Secret))
	if _, err := s.AuthenticateToken(ctx, sum, "127.0.0.1"); err != nil {
		t.Fatalf("the valid case: %v", err)
	}
	down, err := OpenTokenSQLite(ctx, filepath.Join(t.TempDir(), TokensFileName))
	if err != nil {
		t.Fatal(err)
	}
	down.Close()
	kept := s.d.AccessTokens
	s.d.AccessTokens = down
	defer func() { s.d.AccessTokens = kept }()
	p, err := s.AuthenticateToken(ctx, sum, "127.0.0.1")
	if !errors.Is(err, ErrUnavailable) || errors.Is(err, ErrTokenRefused) || !p.Anonymous() {
		t.Fatalf("with the store down: %v %+v, want ErrUnavailable", err, p)
	}
	if _, err := s.CreateToken(ctx, admin, TokenRequest{Name: "vm-2", Role: RoleAgent, ExpiresAt: time.Now().Add(time.Hour)}); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("create with the store down: %v", err)
	}
	if _, err := s.RevokeToken(ctx, admin, ct.ID); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("revoke with the store down: %v", err)
	}
}

// Last use of configuration and certificate principals, on SQLite and MariaDB: written at most
// once per minute per process, and never moved backwards by a replica with an older use.
func TestPrincipalUse(t *testing.T) {
	for _, backend := range []string{"sqlite", "mariadb"} {
		t.Run(backend, func(t *testing.T) {
			ctx := context.Background()
			open := func() *TokenStore {
				var st *TokenStore
				var err error
				if backend == "sqlite" {
					st, err = OpenTokenSQLite(ctx, filepath.Join(testDir(t), TokensFileName))
				} else {
					st, err = OpenTokenMySQL(ctx, mysqlDB(t))
				}
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { st.Close() })
				return st
			}
			a, b := open(), open()
			t0 := time.Date(2026, 11, 2, 10, 0, 0, 0, time.UTC)
			const p = "agent:mtls:0123456789abcdef/vm-1"
			for _, step := range []struct {
				st   *TokenStore
				at   time.Duration
				from string
				want time.Duration
			}{
				{a, 0, "10.0.0.1", 0},
				{a, 30 * time.Second, "10.0.0.2", 0},  // within the minute: not written
				{a, 61 * time.Second, "10.0.0.3", 61}, // past it
				{b, 45 * time.Second, "10.0.0.4", 61}, // an older use from another replica
				{b, 200 * time.Second, "10.0.0.5", 200},
			} {
				if err := step.st.notePrincipalUse(ctx, p, t0.Add(step.at), step.from); err != nil {
					t.Fatal(err)
				}
				us, err := a.principalUses(ctx)
				want := t0.Add(step.want * time.Second)
				if err != nil || len(us) != 1 || !us[0].LastUsedAt.Equal(want) {
					t.Fatalf("after a use at +%v: %v %+v, want %v", step.at, err, us, want)
				}
			}
			if us, _ := a.principalUses(ctx); us[0].LastUsedFrom != "10.0.0.5" {
				t.Fatalf("last used from %q", us[0].LastUsedFrom)
			}
		})
	}
}

// dir returns one temporary directory per test, shared by its callers.
var dirs sync.Map

func testDir(t *testing.T) string {
	v, _ := dirs.LoadOrStore(t.Name(), t.TempDir())
	return v.(string)
}

// mysqlDB returns one MariaDB database per test, shared by its callers.
var dbs sync.Map

func mysqlDB(t *testing.T) *sql.DB {
	if v, ok := dbs.Load(t.Name()); ok {
		return mysqltest.Open(t, v.(string))
	}
	dsn := mysqltest.NewDatabase(t)
	dbs.Store(t.Name(), dsn)
	return mysqltest.Open(t, dsn)
}
