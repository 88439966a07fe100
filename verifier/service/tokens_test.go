package service

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/proofline/proofline/evidence"
	"github.com/proofline/proofline/evidence/log"
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
			a, b := replicaStores(t, backend)
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
				step.st.notePrincipalUse(p, t0.Add(step.at), step.from)
				if err := step.st.flushUses(ctx); err != nil { // that replica's write
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

// replicaStores opens two token stores on one database of backend ("sqlite" or "mariadb"), as
// two replicas sharing it would; both are closed when the test ends.
func replicaStores(t *testing.T, backend string) (a, b *TokenStore) {
	t.Helper()
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), TokensFileName)
	var dsn string
	if backend != "sqlite" {
		dsn = mysqltest.NewDatabase(t)
	}
	open := func() *TokenStore {
		var st *TokenStore
		var err error
		if backend == "sqlite" {
			st, err = OpenTokenSQLite(ctx, path)
		} else {
			st, err = OpenTokenMySQL(ctx, mysqltest.Open(t, dsn))
		}
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { st.Close() })
		return st
	}
	return open(), open()
}

// mysqlDB returns a fresh MariaDB database for the test.
func mysqlDB(t *testing.T) *sql.DB { return mysqltest.Open(t, mysqltest.NewDatabase(t)) }

// tokenFaultLog fails appends while failing is set ("failed and not saved"), refuses them as
// overloaded while overloaded is set, and holds the next append while hang is set (a slow log).
type tokenFaultLog struct {
	Log
	failing, overloaded atomic.Bool
	hang                atomic.Pointer[hungAppend]
}

// hungAppend holds one append: started is closed when it arrives, and it goes on to the log when
// release is closed.
type hungAppend struct{ started, release chan struct{} }

var errTokenLogInjected = errors.New("injected: the evidence log did not append")

func (l *tokenFaultLog) Append(ctx context.Context, leaf []byte) (uint64, error) {
	if l.failing.Load() {
		return 0, errTokenLogInjected
	}
	if l.overloaded.Load() {
		return 0, log.ErrOverloaded
	}
	if h := l.hang.Swap(nil); h != nil {
		close(h.started)
		select {
		case <-h.release:
		case <-ctx.Done():
			return 0, ctx.Err()
		}
	}
	return l.Log.Append(ctx, leaf)
}

// openTokenService opens a service on dir whose log appends can be made to fail; logs go to logs
// if not nil.
func openTokenService(t *testing.T, dir string, clk *tokenClock, logs *syncBuffer) (*Service, *tokenFaultLog) {
	t.Helper()
	ctx := context.Background()
	d, err := OpenDeps(ctx, Config{DataDir: dir, Log: LogConfig{CheckpointInterval: 100 * time.Millisecond}}, Env{Now: clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	fl := &tokenFaultLog{Log: d.Log}
	d.Log = fl
	if logs != nil {
		d.Logger = slog.New(slog.NewTextHandler(logs, nil))
	}
	s, err := New(ctx, *d)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s, fl
}

// revocationRecords returns the revocation records of token id in the log.
func revocationRecords(t *testing.T, s *Service, id string) []AccessChangeRecord {
	t.Helper()
	chs, err := s.AccessChanges(context.Background(), time.Time{}, time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	var out []AccessChangeRecord
	for _, ch := range chs {
		if ch.Change.Action == evidence.AccessRevoke && ch.Change.TokenID == id {
			out = append(out, ch)
		}
	}
	return out
}

// creationRecordAt checks that the log holds the creation record of token id at idx.
func creationRecordAt(t *testing.T, s *Service, idx uint64, id string) {
	t.Helper()
	_, rec, err := s.record(context.Background(), idx)
	if err != nil {
		t.Fatal(err)
	}
	if a := rec.AccessChange; a == nil || a.Action != evidence.AccessCreate || a.TokenID != id {
		t.Fatalf("record %d is %+v, want the creation of token %s", idx, a, id)
	}
}

func tokenByID(t *testing.T, s *Service, id string) APIToken {
	t.Helper()
	ts, err := s.Tokens(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	for _, tok := range ts {
		if tok.ID == id {
			return tok
		}
	}
	t.Fatalf("no token %s", id)
	return APIToken{}
}

// The log never says "revoked" of a token that works: the revocation is committed before its
// record is appended. With the log failing, the revocation is answered ErrUnavailable (503) and
// the token is refused at once; once the log recovers, the record is written exactly once — by
// revoking the token again, by the revocation of another token, or by a restarted verifier.
func TestTokenRevocationRecordedAfterCommit(t *testing.T) {
	ctx := context.Background()
	clk := &tokenClock{now: time.Date(2026, 11, 2, 10, 0, 0, 0, time.UTC)}
	dir := t.TempDir()
	s, fl := openTokenService(t, dir, clk, nil)
	admin := Principal{Name: "alice", Role: RoleAdmin}
	create := func(name string) (*CreatedToken, [32]byte) {
		ct, err := s.CreateToken(ctx, admin, TokenRequest{Name: name, Role: RoleAgent, ExpiresAt: clk.Now().Add(time.Hour)})
		if err != nil {
			t.Fatal(err)
		}
		return ct, sha256.Sum256([]byte(ct.Secret))
	}
	a, sumA := create("vm-a")
	b, _ := create("vm-b")

	fl.failing.Store(true)
	_, err := s.RevokeToken(ctx, admin, a.ID)
	var re *RetryError
	if !errors.Is(err, ErrUnavailable) || !errors.As(err, &re) || !strings.Contains(err.Error(), "is revoked and refused") {
		t.Fatalf("revoking with the log failing: %v, want ErrUnavailable saying the token is revoked", err)
	}
	if _, err := s.AuthenticateToken(ctx, sumA, "192.0.2.1"); !errors.Is(err, ErrTokenRefused) {
		t.Fatalf("the token after a revocation whose record failed: %v, want ErrTokenRefused", err)
	}
	if got := tokenByID(t, s, a.ID); got.Status(clk.Now()) != "revoked" || !got.RevocationUnrecorded || got.RevokedBy != "admin:alice" {
		t.Fatalf("listed: %+v", got)
	}
	clk.Advance(time.Second)
	if _, err := s.RevokeToken(ctx, admin, a.ID); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("revoking again with the log still failing: %v", err)
	}
	if _, err := s.RevokeToken(ctx, admin, b.ID); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("revoking another with the log failing: %v", err)
	}
	if n := len(revocationRecords(t, s, a.ID)) + len(revocationRecords(t, s, b.ID)); n != 0 {
		t.Fatalf("%d revocation records while the log failed", n)
	}

	// The log recovers: revoking a again writes its record (timed at the revocation, not at the
	// retry), and b's too.
	fl.failing.Store(false)
	clk.Advance(time.Second)
	got, err := s.RevokeToken(ctx, admin, a.ID)
	if err != nil || got.RevocationUnrecorded {
		t.Fatalf("revoking again once the log recovered: %v %+v", err, got)
	}
	recs := revocationRecords(t, s, a.ID)
	if len(recs) != 1 || recs[0].LogIndex != got.RevokedRecord || !recs[0].Time.Equal(got.RevokedAt) ||
		!got.RevokedAt.Equal(time.Date(2026, 11, 2, 10, 0, 0, 0, time.UTC)) || recs[0].Change.Actor != "admin:alice" {
		t.Fatalf("a's revocation records: %+v, token %+v", recs, got)
	}
	if recs := revocationRecords(t, s, b.ID); len(recs) != 1 || tokenByID(t, s, b.ID).RevokedRecord != recs[0].LogIndex {
		t.Fatalf("b's revocation records: %+v", recs)
	}
	if _, err := s.RevokeToken(ctx, admin, a.ID); !errors.Is(err, ErrConflict) {
		t.Fatalf("revoking a recorded revocation again: %v, want ErrConflict", err)
	}
	if n, err := s.RecordPendingRevocations(ctx); n != 0 || err != nil {
		t.Fatalf("pending after recovery: %d %v", n, err)
	}
	if n := len(revocationRecords(t, s, a.ID)) + len(revocationRecords(t, s, b.ID)); n != 2 {
		t.Fatalf("%d revocation records, want one each", n)
	}

	// A verifier restarted after a failed record writes it at start-up.
	c, sumC := create("vm-c")
	fl.failing.Store(true)
	if _, err := s.RevokeToken(ctx, admin, c.ID); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("revoking c with the log failing: %v", err)
	}
	s.Close()
	r, _ := openTokenService(t, dir, clk, nil)
	if recs := revocationRecords(t, r, c.ID); len(recs) != 1 || tokenByID(t, r, c.ID).RevocationUnrecorded {
		t.Fatalf("c's revocation records after a restart: %+v", recs)
	}
	if _, err := r.AuthenticateToken(ctx, sumC, "192.0.2.1"); !errors.Is(err, ErrTokenRefused) {
		t.Fatalf("c after the restart: %v", err)
	}
}

// A revocation whose record meets an overloaded log is ErrUnavailable with
// ErrRevocationUnrecorded and a Retry-After, never ErrOverloaded (which says that nothing was
// done): the revocation is in force.
func TestTokenRevocationLogOverloaded(t *testing.T) {
	ctx := context.Background()
	clk := &tokenClock{now: time.Date(2026, 11, 2, 10, 0, 0, 0, time.UTC)}
	s, fl := openTokenService(t, t.TempDir(), clk, nil)
	admin := Principal{Name: "alice", Role: RoleAdmin}
	ct, err := s.CreateToken(ctx, admin, TokenRequest{Name: "vm-a", Role: RoleAgent, ExpiresAt: clk.Now().Add(time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	fl.overloaded.Store(true)
	_, err = s.RevokeToken(ctx, admin, ct.ID)
	var re *RetryError
	if !errors.Is(err, ErrUnavailable) || !errors.Is(err, ErrRevocationUnrecorded) || errors.Is(err, ErrOverloaded) || !errors.As(err, &re) || re.After <= 0 {
		t.Fatalf("revoking with the log overloaded: %v, want ErrUnavailable and ErrRevocationUnrecorded with a Retry-After, not ErrOverloaded", err)
	}
	if _, err := s.AuthenticateToken(ctx, sha256.Sum256([]byte(ct.Secret)), "192.0.2.1"); !errors.Is(err, ErrTokenRefused) {
		t.Fatalf("the token after the revocation: %v, want ErrTokenRefused", err)
	}
}

// A token creation waiting for a slow log holds no lock on the token database: a revocation of
// another token made meanwhile takes effect at once (the token is refused) and is recorded, and
// the creation completes, with its record, once the log answers.
func TestTokenRevocationDuringSlowCreation(t *testing.T) {
	ctx := context.Background()
	clk := &tokenClock{now: time.Date(2026, 11, 2, 10, 0, 0, 0, time.UTC)}
	s, fl := openTokenService(t, t.TempDir(), clk, nil)
	admin := Principal{Name: "alice", Role: RoleAdmin}
	old, err := s.CreateToken(ctx, admin, TokenRequest{Name: "vm-old", Role: RoleAgent, ExpiresAt: clk.Now().Add(time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	sumOld := sha256.Sum256([]byte(old.Secret))

	h := &hungAppend{started: make(chan struct{}), release: make(chan struct{})}
	fl.hang.Store(h)
	var releaseOnce sync.Once
	release := func() { releaseOnce.Do(func() { close(h.release) }) }
	defer release()
	type created struct {
		ct  *CreatedToken
		err error
	}
	done := make(chan created, 1)
	go func() {
		ct, err := s.CreateToken(ctx, admin, TokenRequest{Name: "vm-new", Role: RoleAgent, ExpiresAt: clk.Now().Add(time.Hour)})
		done <- created{ct, err}
	}()
	<-h.started // the creation's record is waiting for the log

	got, err := s.RevokeToken(ctx, admin, old.ID)
	if err != nil || got.RevocationUnrecorded {
		t.Fatalf("revoking during a creation waiting for the log: %v %+v, want the revocation committed and recorded", err, got)
	}
	if _, err := s.AuthenticateToken(ctx, sumOld, "192.0.2.1"); !errors.Is(err, ErrTokenRefused) {
		t.Fatalf("the revoked token during the creation: %v, want ErrTokenRefused", err)
	}

	release()
	c := <-done
	if c.err != nil {
		t.Fatalf("the creation once the log answered: %v", c.err)
	}
	if p, err := s.AuthenticateToken(ctx, sha256.Sum256([]byte(c.ct.Secret)), "192.0.2.1"); err != nil || p.Name != "vm-new" {
		t.Fatalf("the created token: %v %+v", err, p)
	}
	creationRecordAt(t, s, c.ct.CreatedRecord, c.ct.ID)
	if recs := revocationRecords(t, s, old.ID); len(recs) != 1 {
		t.Fatalf("revocation records of the revoked token: %+v", recs)
	}
}

// Once a creation's record is in the log, the token is stored even if the client went away
// meanwhile (the record and the token list agree); an insert that fails leaves the record of a
// token that does not exist, and the answer names the token and the record and says to create
// another.
func TestTokenCreationAfterItsRecord(t *testing.T) {
	ctx := context.Background()
	clk := &tokenClock{now: time.Date(2026, 11, 2, 10, 0, 0, 0, time.UTC)}
	s, fl := openTokenService(t, t.TempDir(), clk, nil)
	admin := Principal{Name: "alice", Role: RoleAdmin}
	h := &hungAppend{started: make(chan struct{}), release: make(chan struct{})}
	fl.hang.Store(h)
	cctx, cancel := context.WithCancel(ctx)
	type created struct {
		ct  *CreatedToken
		err error
	}
	done := make(chan created, 1)
	go func() {
		ct, err := s.CreateToken(cctx, admin, TokenRequest{Name: "vm-gone", Role: RoleAgent, ExpiresAt: clk.Now().Add(time.Hour)})
		done <- created{ct, err}
	}()
	<-h.started
	cancel() // the client goes away while the record is being appended
	close(h.release)
	c := <-done
	if c.err != nil {
		t.Fatalf("a creation whose client went away during the append: %v, want the token stored", c.err)
	}
	if got := tokenByID(t, s, c.ct.ID); got.CreatedRecord != c.ct.CreatedRecord {
		t.Fatalf("the token of a creation whose client went away: %+v", got)
	}
	creationRecordAt(t, s, c.ct.CreatedRecord, c.ct.ID)

	if _, err := s.d.AccessTokens.db.ExecContext(ctx, `CREATE TRIGGER inject_insert_failure BEFORE INSERT ON proofline_api_tokens
		BEGIN SELECT RAISE(ABORT, 'injected: the token is not stored'); END`); err != nil {
		t.Fatal(err)
	}
	_, err := s.CreateToken(ctx, admin, TokenRequest{Name: "vm-lost", Role: RoleAgent, ExpiresAt: clk.Now().Add(time.Hour)})
	if !errors.Is(err, ErrUnavailable) || !strings.Contains(err.Error(), "create another") {
		t.Fatalf("a creation whose insert failed: %v, want ErrUnavailable saying to create another", err)
	}
	ts, lerr := s.Tokens(ctx)
	if lerr != nil || len(ts) != 1 {
		t.Fatalf("tokens after a failed insert: %v %+v, want only the first", lerr, ts)
	}
	var (
		lost string
		idx  uint64
	)
	msg := err.Error()
	i := strings.Index(msg, "storing API token ")
	if i < 0 {
		t.Fatalf("%q does not name the token", msg)
	}
	if _, err := fmt.Sscanf(msg[i:], "storing API token %s after its creation was recorded (log index %d)", &lost, &idx); err != nil {
		t.Fatalf("%q does not name the token and its record: %v", msg, err)
	}
	creationRecordAt(t, s, idx, lost)
}

// A revocation that the database does not commit is not recorded, and the token keeps working
// (the answer says to revoke it again): the log never names a revocation that did not happen.
func TestTokenRevocationNotCommittedNotRecorded(t *testing.T) {
	ctx := context.Background()
	clk := &tokenClock{now: time.Date(2026, 11, 2, 10, 0, 0, 0, time.UTC)}
	s, _ := openTokenService(t, t.TempDir(), clk, nil)
	admin := Principal{Name: "alice", Role: RoleAdmin}
	ct, err := s.CreateToken(ctx, admin, TokenRequest{Name: "vm-a", Role: RoleAgent, ExpiresAt: clk.Now().Add(time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256([]byte(ct.Secret))
	db := s.d.AccessTokens.db
	if _, err := db.ExecContext(ctx, `CREATE TRIGGER inject_revoke_failure BEFORE UPDATE OF revoked_unix ON proofline_api_tokens
		BEGIN SELECT RAISE(ABORT, 'injected: the revocation is not committed'); END`); err != nil {
		t.Fatal(err)
	}
	if _, err := s.RevokeToken(ctx, admin, ct.ID); !errors.Is(err, ErrUnavailable) || !strings.Contains(err.Error(), "revoke it again") {
		t.Fatalf("revoking with the database failing: %v", err)
	}
	if recs := revocationRecords(t, s, ct.ID); len(recs) != 0 {
		t.Fatalf("a revocation the database did not commit was recorded: %+v", recs)
	}
	if p, err := s.AuthenticateToken(ctx, sum, "192.0.2.1"); err != nil || p.Name != "vm-a" {
		t.Fatalf("the token after an uncommitted revocation: %v", err)
	}
	// The valid case: the database commits.
	if _, err := db.ExecContext(ctx, "DROP TRIGGER inject_revoke_failure"); err != nil {
		t.Fatal(err)
	}
	got, err := s.RevokeToken(ctx, admin, ct.ID)
	if err != nil {
		t.Fatal(err)
	}
	if recs := revocationRecords(t, s, ct.ID); len(recs) != 1 || recs[0].LogIndex != got.RevokedRecord {
		t.Fatalf("revocation records: %+v", recs)
	}
	if _, err := s.AuthenticateToken(ctx, sum, "192.0.2.1"); !errors.Is(err, ErrTokenRefused) {
		t.Fatalf("after the revocation: %v", err)
	}
}

// A writer that appended a revocation record and crashed before keeping its index: once its
// claim's lease has passed, another writer finds the record in the log and writes none.
func TestTokenRevocationRecordTakeover(t *testing.T) {
	ctx := context.Background()
	clk := &tokenClock{now: time.Date(2026, 11, 2, 10, 0, 0, 0, time.UTC)}
	s, _ := openTokenService(t, t.TempDir(), clk, nil)
	admin := Principal{Name: "alice", Role: RoleAdmin}
	st := s.d.AccessTokens
	revoked := func(name string) APIToken {
		ct, err := s.CreateToken(ctx, admin, TokenRequest{Name: name, Role: RoleAgent, ExpiresAt: clk.Now().Add(time.Hour)})
		if err != nil {
			t.Fatal(err)
		}
		tok, fresh, err := st.revoke(ctx, ct.ID, admin.String(), clk.Now())
		if err != nil || !fresh {
			t.Fatal(fresh, err)
		}
		if ok, err := st.claimRevocation(ctx, ct.ID, clk.Now()); !ok || err != nil {
			t.Fatal(ok, err)
		}
		return tok
	}
	crashed := revoked("vm-crashed") // appended, then crashed
	if _, err := s.recordFunc(ctx, accessChangeRecord(crashed.RevokedAt, evidence.AccessRevoke, crashed.RevokedBy, crashed)); err != nil {
		t.Fatal(err)
	}
	lost := revoked("vm-lost") // crashed before its append

	if n, err := s.RecordPendingRevocations(ctx); n != 0 || err != nil {
		t.Fatalf("within the lease: %d %v, want nothing written", n, err)
	}
	clk.Advance(revokeClaimLease)
	if n, err := s.RecordPendingRevocations(ctx); n != 2 || err != nil {
		t.Fatalf("after the lease: %d %v", n, err)
	}
	for _, tok := range []APIToken{crashed, lost} {
		recs := revocationRecords(t, s, tok.ID)
		if len(recs) != 1 || tokenByID(t, s, tok.ID).RevokedRecord != recs[0].LogIndex {
			t.Fatalf("%s: revocation records %+v", tok.Name, recs)
		}
	}
}

// The claim on a pending revocation record, on SQLite and MariaDB, by two stores (replicas): one
// claim at a time, a stale one taken over, none once the record is kept.
func TestTokenRevocationClaim(t *testing.T) {
	for _, backend := range []string{"sqlite", "mariadb"} {
		t.Run(backend, func(t *testing.T) {
			ctx := context.Background()
			a, b := replicaStores(t, backend)
			t0 := time.Date(2026, 11, 2, 10, 0, 0, 0, time.UTC)
			tok := &APIToken{ID: "0123456789abcdef", Name: "vm-1", Role: RoleAgent, CreatedAt: t0, CreatedBy: "admin:alice", ExpiresAt: t0.Add(time.Hour)}
			if err := a.create(ctx, tok, sha256.Sum256([]byte("secret")), func(context.Context, *evidence.Record) (uint64, error) { return 7, nil }, nil); err != nil {
				t.Fatal(err)
			}
			if ok, err := a.claimRevocation(ctx, tok.ID, t0); ok || err != nil {
				t.Fatalf("claiming a token not revoked: %v %v", ok, err)
			}
			if _, fresh, err := a.revoke(ctx, tok.ID, "admin:alice", t0); !fresh || err != nil {
				t.Fatal(fresh, err)
			}
			if _, fresh, err := b.revoke(ctx, tok.ID, "admin:bob", t0); fresh || err != nil {
				t.Fatalf("revoking a pending revocation again: fresh %v, %v", fresh, err)
			}
			for _, step := range []struct {
				st   *TokenStore
				at   time.Duration
				want bool
			}{
				{a, 0, true},
				{b, 0, false},
				{b, revokeClaimLease - time.Second, false},
				{b, revokeClaimLease, true}, // a's claim is stale
				{a, revokeClaimLease, false},
			} {
				if ok, err := step.st.claimRevocation(ctx, tok.ID, t0.Add(step.at)); ok != step.want || err != nil {
					t.Fatalf("claim at +%v: %v %v, want %v", step.at, ok, err, step.want)
				}
			}
			if err := b.releaseRevocation(ctx, tok.ID); err != nil {
				t.Fatal(err)
			}
			if ok, err := a.claimRevocation(ctx, tok.ID, t0.Add(revokeClaimLease)); !ok || err != nil {
				t.Fatalf("claim after a release: %v %v", ok, err)
			}
			if err := a.recordRevocation(ctx, tok.ID, 9); err != nil {
				t.Fatal(err)
			}
			if ok, err := b.claimRevocation(ctx, tok.ID, t0.Add(time.Hour)); ok || err != nil {
				t.Fatalf("claim of a recorded revocation: %v %v", ok, err)
			}
			if got, err := b.byID(ctx, tok.ID); err != nil || got.RevocationUnrecorded || got.RevokedRecord != 9 || got.RevokedBy != "admin:alice" {
				t.Fatalf("recorded: %v %+v", err, got)
			}
			if _, _, err := b.revoke(ctx, tok.ID, "admin:bob", t0); !errors.Is(err, ErrConflict) {
				t.Fatalf("revoking a recorded revocation: %v", err)
			}
		})
	}
}

// CreateToken refuses a configuration token's principal (for every caller, not only the HTTP
// API), and SetConfigPrincipals warns of a configuration token added with the principal of an
// active database token.
func TestTokenConfigPrincipals(t *testing.T) {
	ctx := context.Background()
	clk := &tokenClock{now: time.Date(2026, 11, 2, 10, 0, 0, 0, time.UTC)}
	logs := &syncBuffer{}
	s, _ := openTokenService(t, t.TempDir(), clk, logs)
	admin := Principal{Name: "alice", Role: RoleAdmin}
	ops := Principal{Name: "ops", Role: RoleAdmin}
	req := TokenRequest{Name: ops.Name, Role: ops.Role, ExpiresAt: clk.Now().Add(time.Hour)}
	ct, err := s.CreateToken(ctx, admin, req) // the valid case: no configuration token has it yet
	if err != nil {
		t.Fatal(err)
	}
	expired, err := s.CreateToken(ctx, admin, TokenRequest{Name: "old", Role: RoleAuditor, ExpiresAt: clk.Now().Add(time.Minute)})
	if err != nil {
		t.Fatal(err)
	}
	clk.Advance(time.Minute)

	cfg := []Principal{admin, ops, {Name: "old", Role: RoleAuditor}}
	if clash := s.SetConfigPrincipals(ctx, cfg); len(clash) != 1 || clash[0] != ops {
		t.Fatalf("clashes: %v, want only %s (an expired token is no clash)", clash, ops)
	}
	var warnings []string
	for _, l := range strings.Split(logs.String(), "\n") {
		if strings.Contains(l, "level=WARN") {
			warnings = append(warnings, l)
		}
	}
	if len(warnings) != 1 || !strings.Contains(warnings[0], "for=admin:ops") || !strings.Contains(warnings[0], "token_id="+ct.ID) || strings.Contains(warnings[0], expired.ID) {
		t.Fatalf("warnings: %q", warnings)
	}
	for _, p := range []Principal{ops, admin} {
		if _, err := s.CreateToken(ctx, admin, TokenRequest{Name: p.Name, Role: p.Role, ExpiresAt: clk.Now().Add(time.Hour)}); !errors.Is(err, ErrConflict) {
			t.Fatalf("creating a token for the configuration principal %s: %v, want ErrConflict", p, err)
		}
	}
	// The same name in another role is another principal.
	if _, err := s.CreateToken(ctx, admin, TokenRequest{Name: "ops", Role: RoleAuditor, ExpiresAt: clk.Now().Add(time.Hour)}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.RevokeToken(ctx, admin, ct.ID); err != nil {
		t.Fatal(err)
	}
	if clash := s.SetConfigPrincipals(ctx, cfg); len(clash) != 0 {
		t.Fatalf("clashes after the revocation: %v", clash)
	}
}

// A proofline_api_tokens table made before revoke_claim_unix existed gets the column; opening it
// again (another replica) leaves it.
func TestTokenStoreAddsClaimColumn(t *testing.T) {
	for _, backend := range []string{"sqlite", "mariadb"} {
		t.Run(backend, func(t *testing.T) {
			ctx := context.Background()
			var db *sql.DB
			schema := tokenSchemaSQLite[0]
			if backend == "sqlite" {
				var err error
				if db, err = sql.Open("sqlite", filepath.Join(t.TempDir(), TokensFileName)); err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { db.Close() })
			} else {
				db, schema = mysqlDB(t), tokenSchemaMySQL[0]
			}
			old := strings.NewReplacer(",\n\t\trevoke_claim_unix INTEGER", "", "\t\trevoke_claim_unix BIGINT NULL,\n", "").Replace(schema)
			if old == schema {
				t.Fatal("the test did not remove the column from the schema")
			}
			if _, err := db.ExecContext(ctx, old); err != nil {
				t.Fatal(err)
			}
			for range 2 {
				if _, err := openTokens(ctx, db, backend == "mariadb", nil); err != nil {
					t.Fatal(err)
				}
			}
			st, err := openTokens(ctx, db, backend == "mariadb", nil)
			if err != nil {
				t.Fatal(err)
			}
			t0 := time.Date(2026, 11, 2, 10, 0, 0, 0, time.UTC)
			tok := &APIToken{ID: "0123456789abcdef", Name: "vm-1", Role: RoleAgent, CreatedAt: t0, CreatedBy: "admin:alice", ExpiresAt: t0.Add(time.Hour)}
			if err := st.create(ctx, tok, sha256.Sum256([]byte("secret")), func(context.Context, *evidence.Record) (uint64, error) { return 7, nil }, nil); err != nil {
				t.Fatal(err)
			}
			if _, _, err := st.revoke(ctx, tok.ID, "admin:alice", t0); err != nil {
				t.Fatal(err)
			}
			if ok, err := st.claimRevocation(ctx, tok.ID, t0); !ok || err != nil {
				t.Fatalf("claim on a migrated table: %v %v", ok, err)
			}
		})
	}
}

// Last uses are queued and written together within useFlushDelay, by themselves (no request
// waits for them, no list needed), in one transaction for a whole fleet; Close writes what is
// still queued.
func TestLastUsesBatched(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), TokensFileName)
	st, err := OpenTokenSQLite(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() }) // the store open at the end
	count := func() int {
		var n int
		if err := st.db.QueryRowContext(ctx, "SELECT COUNT(*) FROM proofline_principal_use").Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	at := time.Date(2026, 11, 2, 10, 0, 0, 0, time.UTC)
	const fleet = 500
	for i := range fleet {
		st.notePrincipalUse(fmt.Sprintf("agent:config:vm-%03d", i), at, "10.0.0.1")
	}
	deadline := time.Now().Add(10 * time.Second)
	for count() < fleet {
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d queued last uses written after 10s", count(), fleet)
		}
		time.Sleep(10 * time.Millisecond)
	}
	st.notePrincipalUse("agent:config:late", at, "10.0.0.2")
	if err := st.Close(); err != nil {
		t.Fatal(err)
	}
	st, err = OpenTokenSQLite(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	if n := count(); n != fleet+1 {
		t.Fatalf("after Close: %d last uses, want %d", n, fleet+1)
	}
}
