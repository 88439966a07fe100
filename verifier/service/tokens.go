package service

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"database/sql"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/proofline/proofline/evidence"
	"github.com/proofline/proofline/evidence/index"
)

// API tokens managed at runtime (issue 10, SOC 2 CC6.2/CC6.3).
//
// Tokens from the configuration file (http.tokens) are bootstrap tokens: the API lists them but
// never changes them. Tokens created through the API (POST /v1/tokens, admin) live in the state
// database next to the policies — SQLite (TokensFileName in the data directory) or the
// MySQL/MariaDB database replicas share — as their SHA-256 only, with who created them, when,
// their expiry, their revocation and their last use. Every creation and revocation is an
// access_change evidence record. A token passing its expiry needs no record: its expiry is in its
// creation record.
//
// The order of record and commit is chosen so that the log never shows less access than there
// is: a token never works without its creation record, and a revocation record never precedes
// the revocation.
//   - Creation: the record is durable in the log before the token is inserted, and no database
//     lock is held while the log appends it (a slow log never holds revocations up). A failed
//     insert leaves a creation record for a token that never existed (its secret was never
//     answered); create explains why no other record is written then.
//   - Revocation: the revocation is committed first (revoked_unix set, revoked_record NULL): the
//     token is refused from that moment. Then the record is appended and its index filled in. A
//     failed commit leaves neither; a failed append leaves a revoked token without its record
//     (the answer is 503), which the service writes later: on the next revocation (DELETE of
//     the same token again, or of any other), and at start-up (RecordPendingRevocations). Writing
//     a pending record first claims the row with a conditional UPDATE (revoke_claim_unix), so two
//     replicas never both write it; a claim older than revokeClaimLease is taken over, and a
//     takeover first looks for the record in the log (a writer that crashed after its append).
//
// Refusal is immediate on every replica: AuthenticateToken reads the token's row on every request
// (one lookup by the primary-key-like unique SHA-256 index), with no cache, and compares the
// expiry with the request time. A revoked or expired token is refused on the very next request
// any replica sharing the database serves.
//
// Last use is kept at a granularity of LastUsedGranularity: a token's row is written at most once
// per minute (a conditional UPDATE, so also at most about once per minute across replicas),
// queued and written with the others within a second in one transaction (flushUses), so no
// request waits for it; a failed write is logged and never fails a request. Lists flush first. Configuration tokens and client-certificate agents have their last use
// kept the same way (NotePrincipalUse), so that the access review shows every principal seen.

// TokensFileName is the SQLite file of the API tokens in the data directory.
const TokensFileName = "tokens.db"

// TokenPrefix starts every API token the service creates, so that secret scanners can find one
// that leaked. A bearer token without it is never looked up in the database.
const TokenPrefix = "pl_"

// MaxTokenLifetime bounds how far in the future a created token may expire. Every created token
// expires: a longer-lived credential belongs in the configuration file, where it is reviewed.
const MaxTokenLifetime = 366 * 24 * time.Hour

// LastUsedGranularity is the precision of the last use kept for each principal: a use within this
// long of the last one kept is not written.
const LastUsedGranularity = time.Minute

// revokeClaimLease is how long a claim to write a pending revocation record holds: a claim older
// than this is taken over (its holder crashed or hung).
const revokeClaimLease = 2 * time.Minute

// storeTimeout bounds the insert of a token whose creation record is in the log; it outlasts
// SQLite's busy timeout (10 s).
const storeTimeout = 30 * time.Second

// lastUsedTimeout bounds a write of the queued last uses (flushUses).
const lastUsedTimeout = 2 * time.Second

// maxAccessChanges bounds the access_change records one access review returns.
const maxAccessChanges = 10000

// ErrTokenRefused: the bearer token is unknown, revoked or expired. verifier/api answers 401
// without saying which (the reason is in the verifier's log with the token id).
var ErrTokenRefused = errors.New("service: unknown, revoked or expired API token")

// Token sources, as the access list shows them.
const (
	SourceConfig      = "config"      // http.tokens in the configuration file
	SourceDatabase    = "database"    // created through the API
	SourceCertificate = "certificate" // a TLS client certificate (agents)
)

// APIToken is one API token created through the API (never the token itself, nor its hash).
type APIToken struct {
	ID   string
	Name string
	Role Role
	// CreatedRecord and RevokedRecord are the log indices of the access_change records.
	CreatedAt     time.Time
	CreatedBy     string
	CreatedRecord uint64
	ExpiresAt     time.Time
	// RevokedAt is zero while the token is not revoked.
	RevokedAt     time.Time
	RevokedBy     string
	RevokedRecord uint64
	// RevocationUnrecorded: the token is revoked (and refused) but the revocation's
	// access_change record is not in the log yet; RevokedRecord is then meaningless. The service
	// writes the record when the log recovers.
	RevocationUnrecorded bool
	// LastUsedAt is zero if the token was never used; LastUsedFrom is the client IP address.
	LastUsedAt   time.Time
	LastUsedFrom string
}

// Status is "revoked", "expired" or "active" at now.
func (t APIToken) Status(now time.Time) string {
	switch {
	case !t.RevokedAt.IsZero():
		return "revoked"
	case !now.Before(t.ExpiresAt):
		return "expired"
	}
	return "active"
}

// Principal is the principal the token authenticates.
func (t APIToken) Principal() Principal { return Principal{Name: t.Name, Role: t.Role} }

// CreatedToken is a token just created: Secret is the bearer token, shown once and never stored.
type CreatedToken struct {
	APIToken
	Secret string
}

// TokenRequest is what POST /v1/tokens asks for.
type TokenRequest struct {
	// Name and Role are the principal the token authenticates (ValidName; one of Roles).
	Name string
	Role Role
	// ExpiresAt is when the token stops working: after now, at most MaxTokenLifetime ahead.
	ExpiresAt time.Time
}

// PrincipalUse is the last use of a principal that has no database token row: a configuration
// token's, or a client certificate's.
type PrincipalUse struct {
	// Principal is Principal.String(), "role:name".
	Principal    string
	LastUsedAt   time.Time
	LastUsedFrom string
}

// TokenStore keeps API tokens and principals' last use in SQLite or MySQL/MariaDB: tables
// proofline_api_tokens (one row per created token, keyed by id, unique by SHA-256) and
// proofline_principal_use (last use of configuration and certificate principals). Safe for
// concurrent use, also by replicas sharing the database.
type TokenStore struct {
	db      *sql.DB
	mysql   bool
	closeDB bool

	mu   sync.Mutex
	used map[string]int64 // principal → the last use this process kept (Unix seconds)

	// Last uses are written together, off the request path (flushUses): usesMu guards pending
	// and flush, the timer that writes them useFlushDelay after the first one queued.
	usesMu  sync.Mutex
	pending map[useKey]pendingUse
	flush   *time.Timer
	closed  bool       // Close has run: nothing more is queued
	flushMu sync.Mutex // one flushUses at a time, so that Close waits for a timer's
	// onFlushError, when set, is told when queued last uses could not be written.
	onFlushError atomic.Pointer[func(error)]
}

// useKey names whose last use a pendingUse is: an API token's id or a principal.
type useKey struct {
	token bool
	id    string
}

type pendingUse struct {
	at   int64
	from string
}

// useFlushDelay is how long a last use waits to be written with the others queued meanwhile.
const useFlushDelay = time.Second

var tokenSchemaSQLite = []string{
	`CREATE TABLE IF NOT EXISTS proofline_api_tokens (
		id TEXT NOT NULL PRIMARY KEY,
		name TEXT NOT NULL,
		role TEXT NOT NULL,
		sha256 BLOB NOT NULL UNIQUE,
		created_unix INTEGER NOT NULL,
		created_by TEXT NOT NULL,
		created_record INTEGER NOT NULL,
		expires_unix INTEGER NOT NULL,
		revoked_unix INTEGER,
		revoked_by TEXT,
		revoked_record INTEGER,
		last_used_unix INTEGER,
		last_used_from TEXT,
		revoke_claim_unix INTEGER
	)`,
	`CREATE TABLE IF NOT EXISTS proofline_principal_use (
		principal TEXT NOT NULL PRIMARY KEY,
		last_used_unix INTEGER NOT NULL,
		last_used_from TEXT NOT NULL
	)`,
}

var tokenSchemaMySQL = []string{
	`CREATE TABLE IF NOT EXISTS proofline_api_tokens (
		id VARBINARY(64) NOT NULL,
		name VARBINARY(255) NOT NULL,
		role VARBINARY(32) NOT NULL,
		sha256 BINARY(32) NOT NULL,
		created_unix BIGINT NOT NULL,
		created_by VARBINARY(255) NOT NULL,
		created_record BIGINT UNSIGNED NOT NULL,
		expires_unix BIGINT NOT NULL,
		revoked_unix BIGINT NULL,
		revoked_by VARBINARY(255) NULL,
		revoked_record BIGINT UNSIGNED NULL,
		last_used_unix BIGINT NULL,
		last_used_from VARBINARY(64) NULL,
		revoke_claim_unix BIGINT NULL,
		PRIMARY KEY (id),
		UNIQUE KEY proofline_api_tokens_by_sha256 (sha256)
	) ENGINE=InnoDB`,
	`CREATE TABLE IF NOT EXISTS proofline_principal_use (
		principal VARBINARY(255) NOT NULL,
		last_used_unix BIGINT NOT NULL,
		last_used_from VARBINARY(64) NOT NULL,
		PRIMARY KEY (principal)
	) ENGINE=InnoDB`,
}

// OpenTokenSQLite opens the token store in the SQLite file at path, creating it as needed.
// Several processes may open the same file.
func OpenTokenSQLite(ctx context.Context, path string) (*TokenStore, error) {
	if strings.ContainsRune(path, '?') {
		return nil, fmt.Errorf("tokens: SQLite path %q contains '?'", path)
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, fmt.Errorf("tokens: %w", err)
	}
	// synchronous=FULL: an acknowledged revocation survives a power loss.
	db, err := sql.Open("sqlite", abs+"?_busy_timeout=10000&_journal_mode=WAL&_synchronous=FULL&_txlock=immediate")
	if err != nil {
		return nil, fmt.Errorf("tokens: opening %s: %w", path, err)
	}
	s, err := openTokens(ctx, db, false, tokenSchemaSQLite)
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("tokens: %s: %w", path, err)
	}
	s.closeDB = true
	return s, nil
}

// OpenTokenMySQL opens the token store in the database db is connected to, creating its tables as
// needed. Closing the store does not close db.
func OpenTokenMySQL(ctx context.Context, db *sql.DB) (*TokenStore, error) {
	s, err := openTokens(ctx, db, true, tokenSchemaMySQL)
	if err != nil {
		return nil, fmt.Errorf("tokens: %w", err)
	}
	return s, nil
}

func openTokens(ctx context.Context, db *sql.DB, mysql bool, schema []string) (*TokenStore, error) {
	for _, stmt := range schema {
		if _, err := db.ExecContext(ctx, stmt); err != nil {
			return nil, fmt.Errorf("creating tables: %w", err)
		}
	}
	if err := addClaimColumn(ctx, db, mysql); err != nil {
		return nil, err
	}
	return &TokenStore{db: db, mysql: mysql, used: map[string]int64{}}, nil
}

// addClaimColumn adds revoke_claim_unix to a proofline_api_tokens table created before it existed.
// A replica that loses the race to add it finds it added.
func addClaimColumn(ctx context.Context, db *sql.DB, mysql bool) error {
	has := func() (bool, error) {
		q := "SELECT COUNT(*) FROM pragma_table_info('proofline_api_tokens') WHERE name = 'revoke_claim_unix'"
		if mysql {
			q = "SELECT COUNT(*) FROM information_schema.columns WHERE table_schema = DATABASE() " +
				"AND table_name = 'proofline_api_tokens' AND column_name = 'revoke_claim_unix'"
		}
		var n int
		err := db.QueryRowContext(ctx, q).Scan(&n)
		return n > 0, err
	}
	ok, err := has()
	if err != nil || ok {
		return err
	}
	typ := "INTEGER"
	if mysql {
		typ = "BIGINT NULL"
	}
	if _, err := db.ExecContext(ctx, "ALTER TABLE proofline_api_tokens ADD COLUMN revoke_claim_unix "+typ); err != nil {
		if ok, _ := has(); ok {
			return nil
		}
		return fmt.Errorf("adding column revoke_claim_unix to proofline_api_tokens: %w", err)
	}
	return nil
}

// Close writes the queued last uses and closes the database if OpenTokenSQLite opened it.
func (s *TokenStore) Close() error {
	s.usesMu.Lock()
	if s.flush != nil {
		s.flush.Stop()
		s.flush = nil
	}
	s.closed = true
	s.usesMu.Unlock()
	err := s.flushUses(context.Background()) // after any flush under way
	if s.closeDB {
		err = errors.Join(err, s.db.Close())
	}
	return err
}

// queueUse queues a last use for the next flushUses (at most useFlushDelay away), keeping the
// latest per key.
func (s *TokenStore) queueUse(k useKey, at time.Time, from string) {
	s.usesMu.Lock()
	defer s.usesMu.Unlock()
	if s.closed {
		return
	}
	if s.pending == nil {
		s.pending = map[useKey]pendingUse{}
	}
	if p, ok := s.pending[k]; ok && at.Unix()-p.at < int64(LastUsedGranularity/time.Second) {
		return // a use within the granularity of the queued one does not move it
	}
	s.pending[k] = pendingUse{at: at.Unix(), from: from}
	if s.flush == nil {
		s.flush = time.AfterFunc(useFlushDelay, func() { s.flushBeforeRead(context.Background()) })
	}
}

// flushUses writes the queued last uses in one transaction. A principal's use is kept once a
// minute (LastUsedGranularity), so a fleet of agents would otherwise write one synchronous
// transaction per agent in the same second of every minute, each waited for by a request; here
// they share one commit and no request waits for it. Lists read after flushing, so this
// process's own uses are always in them. Uses that could not be written are dropped (a last use
// is informational; the next one is kept again).
func (s *TokenStore) flushUses(ctx context.Context) (err error) {
	s.flushMu.Lock()
	defer s.flushMu.Unlock()
	s.usesMu.Lock()
	batch := s.pending
	s.pending = nil
	if s.flush != nil {
		s.flush.Stop()
		s.flush = nil
	}
	s.usesMu.Unlock()
	if len(batch) == 0 {
		return nil
	}
	defer func() {
		if err != nil {
			s.forgetKept(batch) // not written: the next use of each is kept again
		}
	}()
	ctx, cancel := context.WithTimeout(ctx, lastUsedTimeout)
	defer cancel()
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("tokens: writing %d last uses: %w", len(batch), err)
	}
	defer tx.Rollback()
	for k, u := range batch {
		if k.token {
			_, err = tx.ExecContext(ctx, "UPDATE proofline_api_tokens SET last_used_unix = ?, last_used_from = ? WHERE id = ? AND (last_used_unix IS NULL OR last_used_unix <= ?)",
				u.at, u.from, k.id, u.at-int64(LastUsedGranularity/time.Second))
		} else {
			_, err = tx.ExecContext(ctx, s.principalUseSQL(), k.id, u.at, u.from)
		}
		if err != nil {
			return fmt.Errorf("tokens: writing the last use of %s: %w", k.id, err)
		}
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("tokens: writing %d last uses: %w", len(batch), err)
	}
	return nil
}

const tokenColumns = "id, name, role, created_unix, created_by, created_record, expires_unix, " +
	"revoked_unix, revoked_by, revoked_record, last_used_unix, last_used_from"

func scanToken(r rowScanner, extra ...any) (APIToken, error) {
	var (
		t                            APIToken
		id, name, role, by           string
		created, expires             int64
		createdRecord                uint64
		revoked, revokedRec, lastUse sql.NullInt64
		revokedBy, lastFrom          sql.NullString
	)
	dst := append([]any{&id, &name, &role, &created, &by, &createdRecord, &expires, &revoked, &revokedBy, &revokedRec, &lastUse, &lastFrom}, extra...)
	if err := r.Scan(dst...); err != nil {
		return t, err
	}
	t = APIToken{
		ID: id, Name: name, Role: Role(role), CreatedAt: time.Unix(created, 0).UTC(), CreatedBy: by,
		CreatedRecord: createdRecord, ExpiresAt: time.Unix(expires, 0).UTC(),
	}
	if revoked.Valid {
		t.RevokedAt, t.RevokedBy, t.RevokedRecord = time.Unix(revoked.Int64, 0).UTC(), revokedBy.String, uint64(revokedRec.Int64)
		t.RevocationUnrecorded = !revokedRec.Valid
	}
	if lastUse.Valid {
		t.LastUsedAt, t.LastUsedFrom = time.Unix(lastUse.Int64, 0).UTC(), lastFrom.String
	}
	return t, nil
}

// list returns every token, oldest first.
func (s *TokenStore) list(ctx context.Context) ([]APIToken, error) {
	s.flushBeforeRead(ctx)
	return s.query(ctx, "SELECT "+tokenColumns+" FROM proofline_api_tokens ORDER BY created_unix, id")
}

// query returns the tokens a SELECT of tokenColumns finds.
func (s *TokenStore) query(ctx context.Context, q string) ([]APIToken, error) {
	rows, err := s.db.QueryContext(ctx, q)
	if err != nil {
		return nil, fmt.Errorf("%w: tokens: %w", ErrUnavailable, err)
	}
	defer rows.Close()
	var out []APIToken
	for rows.Next() {
		t, err := scanToken(rows)
		if err != nil {
			return nil, fmt.Errorf("%w: tokens: %w", ErrUnavailable, err)
		}
		out = append(out, t)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("%w: tokens: %w", ErrUnavailable, err)
	}
	return out, nil
}

// byHash returns the token whose SHA-256 is sum, with the stored hash; ErrTokenRefused if none.
func (s *TokenStore) byHash(ctx context.Context, sum [32]byte) (APIToken, []byte, error) {
	var stored []byte
	t, err := scanToken(s.db.QueryRowContext(ctx, "SELECT "+tokenColumns+", sha256 FROM proofline_api_tokens WHERE sha256 = ?", sum[:]), &stored)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		return t, nil, ErrTokenRefused
	case err != nil:
		return t, nil, fmt.Errorf("%w: tokens: %w", ErrUnavailable, err)
	}
	return t, stored, nil
}

// create appends rec, the access_change record of t's creation, and once the log has made it
// durable inserts t with the token hash sum. No database lock is held during the append: on
// SQLite the file's write lock would otherwise be held for as long as a slow log takes (up to
// appendTimeout), and a revocation waiting for it would fail after the busy timeout with the
// token still working. Nothing the record says is read from the database, so appending before the
// insert loses nothing.
//
// If the insert fails after the append, the log holds the record of a creation that did not
// take effect. That record stays as it is, and no compensating record is written: it records a
// creation an admin made, and the token's secret is answered only after the insert, so nobody
// ever held a secret that the record's token id stands for, and the log never shows less
// access than there was. A compensating revocation record would say that someone revoked a
// token, which nobody did, and if the insert was saved although it reported failing, it would
// name as revoked a token that works. The error names the token id and the record, so that an
// auditor can match the record with the missing token. The insert runs to its end when the
// client goes away, so that an abandoned request does not leave such a record either.
func (s *TokenStore) create(ctx context.Context, t *APIToken, sum [32]byte, record RecordFunc, rec *evidence.Record) error {
	var err error
	if t.CreatedRecord, err = record(ctx, rec); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), storeTimeout)
	defer cancel()
	if _, err := s.db.ExecContext(ctx, "INSERT INTO proofline_api_tokens (id, name, role, sha256, created_unix, created_by, created_record, expires_unix) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
		t.ID, t.Name, string(t.Role), sum[:], t.CreatedAt.Unix(), t.CreatedBy, t.CreatedRecord, t.ExpiresAt.Unix()); err != nil {
		return fmt.Errorf("%w: tokens: storing API token %s after its creation was recorded (log index %d): the token does not exist and its secret was never given out; create another: %w", ErrUnavailable, t.ID, t.CreatedRecord, err)
	}
	return nil
}

// revoke commits the revocation of token id, by by at at, with revoked_record NULL: from the
// commit on, every replica refuses the token (fresh true). A token already revoked is ErrConflict
// once its record is written; without its record it is returned unchanged (fresh false). Either
// way the caller then claims the row and writes the record. The row is not claimed in the
// revocation's transaction, so that a commit that failed but was saved leaves no claim that would
// hold the record back for revokeClaimLease.
func (s *TokenStore) revoke(ctx context.Context, id, by string, at time.Time) (t APIToken, fresh bool, err error) {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return APIToken{}, false, fmt.Errorf("%w: tokens: %w", ErrUnavailable, err)
	}
	defer tx.Rollback()
	q := "SELECT " + tokenColumns + " FROM proofline_api_tokens WHERE id = ?"
	if s.mysql {
		q += " FOR UPDATE"
	}
	t, err = scanToken(tx.QueryRowContext(ctx, q, id))
	switch {
	case errors.Is(err, sql.ErrNoRows):
		return APIToken{}, false, fmt.Errorf("%w: no API token %q created through the API (GET /v1/tokens lists them; configuration tokens are removed from http.tokens)", ErrNotFound, id)
	case err != nil:
		return APIToken{}, false, fmt.Errorf("%w: tokens: %w", ErrUnavailable, err)
	case t.RevocationUnrecorded:
		return t, false, nil
	case !t.RevokedAt.IsZero():
		return APIToken{}, false, fmt.Errorf("%w: API token %s was already revoked at %s by %s", ErrConflict, id, t.RevokedAt.Format(time.RFC3339), t.RevokedBy)
	}
	if _, err := tx.ExecContext(ctx, "UPDATE proofline_api_tokens SET revoked_unix = ?, revoked_by = ?, revoked_record = NULL, revoke_claim_unix = NULL WHERE id = ?",
		at.Unix(), by, id); err != nil {
		return APIToken{}, false, fmt.Errorf("%w: tokens: revoking %s (the token is not revoked and nothing was recorded; revoke it again): %w", ErrUnavailable, id, err)
	}
	if err := tx.Commit(); err != nil {
		return APIToken{}, false, fmt.Errorf("%w: tokens: committing the revocation of %s (nothing was recorded, and the revocation may not be in force; revoke it again): %w", ErrUnavailable, id, err)
	}
	t.RevokedAt, t.RevokedBy, t.RevocationUnrecorded = at, by, true
	return t, true, nil
}

// byID returns token id.
func (s *TokenStore) byID(ctx context.Context, id string) (APIToken, error) {
	t, err := scanToken(s.db.QueryRowContext(ctx, "SELECT "+tokenColumns+" FROM proofline_api_tokens WHERE id = ?", id))
	switch {
	case errors.Is(err, sql.ErrNoRows):
		return t, fmt.Errorf("%w: no API token %q", ErrNotFound, id)
	case err != nil:
		return t, fmt.Errorf("%w: tokens: %w", ErrUnavailable, err)
	}
	return t, nil
}

// unrecordedRevocations returns the tokens revoked without their record yet.
func (s *TokenStore) unrecordedRevocations(ctx context.Context) ([]APIToken, error) {
	return s.query(ctx, "SELECT "+tokenColumns+" FROM proofline_api_tokens WHERE revoked_unix IS NOT NULL AND revoked_record IS NULL ORDER BY revoked_unix, id")
}

// claimRevocation claims the writing of token id's pending revocation record at now: false if
// the record is written, or another claim younger than revokeClaimLease holds.
func (s *TokenStore) claimRevocation(ctx context.Context, id string, now time.Time) (bool, error) {
	res, err := s.db.ExecContext(ctx, "UPDATE proofline_api_tokens SET revoke_claim_unix = ? WHERE id = ? AND revoked_unix IS NOT NULL AND revoked_record IS NULL "+
		"AND (revoke_claim_unix IS NULL OR revoke_claim_unix <= ?)", now.Unix(), id, now.Add(-revokeClaimLease).Unix())
	if err != nil {
		return false, fmt.Errorf("%w: tokens: %w", ErrUnavailable, err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return false, fmt.Errorf("%w: tokens: %w", ErrUnavailable, err)
	}
	return n == 1, nil
}

// releaseRevocation gives up a claim whose record could not be written, so that the next
// attempt need not wait for the lease.
func (s *TokenStore) releaseRevocation(ctx context.Context, id string) error {
	_, err := s.db.ExecContext(ctx, "UPDATE proofline_api_tokens SET revoke_claim_unix = NULL WHERE id = ? AND revoked_record IS NULL", id)
	return err
}

// recordRevocation keeps idx as the log index of token id's revocation record.
func (s *TokenStore) recordRevocation(ctx context.Context, id string, idx uint64) error {
	_, err := s.db.ExecContext(ctx, "UPDATE proofline_api_tokens SET revoked_record = ?, revoke_claim_unix = NULL WHERE id = ? AND revoked_record IS NULL", idx, id)
	return err
}

// noteTokenUse queues a token's last use (flushUses), unless one within LastUsedGranularity is
// kept; the UPDATE checks that again against the row.
func (s *TokenStore) noteTokenUse(id string, at time.Time, from string) {
	s.queueUse(useKey{token: true, id: id}, at, from)
}

// notePrincipalUse queues a principal's last use unless this process kept one within
// LastUsedGranularity; the write never moves a last use backwards.
func (s *TokenStore) notePrincipalUse(principal string, at time.Time, from string) {
	s.mu.Lock()
	last, ok := s.used[principal]
	if ok && at.Unix()-last < int64(LastUsedGranularity/time.Second) {
		s.mu.Unlock()
		return
	}
	if s.used == nil {
		s.used = map[string]int64{}
	}
	s.used[principal] = at.Unix()
	s.mu.Unlock()
	s.queueUse(useKey{id: principal}, at, from)
}

// principalUseSQL is the upsert of a principal's last use, never moving it backwards.
func (s *TokenStore) principalUseSQL() string {
	if s.mysql {
		// Assignments run left to right: last_used_from is compared with the old time.
		return "INSERT INTO proofline_principal_use (principal, last_used_unix, last_used_from) VALUES (?, ?, ?) " +
			"ON DUPLICATE KEY UPDATE last_used_from = IF(VALUES(last_used_unix) > last_used_unix, VALUES(last_used_from), last_used_from), " +
			"last_used_unix = GREATEST(last_used_unix, VALUES(last_used_unix))"
	}
	return "INSERT INTO proofline_principal_use (principal, last_used_unix, last_used_from) VALUES (?, ?, ?) " +
		"ON CONFLICT (principal) DO UPDATE SET last_used_unix = excluded.last_used_unix, last_used_from = excluded.last_used_from " +
		"WHERE excluded.last_used_unix > proofline_principal_use.last_used_unix"
}

// flushBeforeRead writes the queued last uses (before a list reads them, or on the timer); a
// failure is reported and the list served without them.
func (s *TokenStore) flushBeforeRead(ctx context.Context) {
	if err := s.flushUses(ctx); err != nil {
		if f := s.onFlushError.Load(); f != nil {
			(*f)(err)
		}
	}
}

// forgetKept forgets the principals' uses of a batch that could not be written, so that their
// next use is queued again rather than skipped for a minute.
func (s *TokenStore) forgetKept(batch map[useKey]pendingUse) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for k, u := range batch {
		if !k.token && s.used[k.id] == u.at {
			delete(s.used, k.id)
		}
	}
}

func (s *TokenStore) principalUses(ctx context.Context) ([]PrincipalUse, error) {
	s.flushBeforeRead(ctx)
	rows, err := s.db.QueryContext(ctx, "SELECT principal, last_used_unix, last_used_from FROM proofline_principal_use ORDER BY principal")
	if err != nil {
		return nil, fmt.Errorf("%w: tokens: %w", ErrUnavailable, err)
	}
	defer rows.Close()
	var out []PrincipalUse
	for rows.Next() {
		var (
			u  PrincipalUse
			at int64
		)
		if err := rows.Scan(&u.Principal, &at, &u.LastUsedFrom); err != nil {
			return nil, fmt.Errorf("%w: tokens: %w", ErrUnavailable, err)
		}
		u.LastUsedAt = time.Unix(at, 0).UTC()
		out = append(out, u)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("%w: tokens: %w", ErrUnavailable, err)
	}
	return out, nil
}

// errNoTokenStore is the answer of the token operations of a service composed without one.
var errNoTokenStore = fmt.Errorf("%w: this verifier has no token store (Deps.AccessTokens)", ErrUnavailable)

// IsTokenCandidate reports whether a bearer token may be one the service created (TokenPrefix):
// only those are looked up in the database.
func IsTokenCandidate(token string) bool { return strings.HasPrefix(token, TokenPrefix) }

// AuthenticateToken returns the principal of the API token whose SHA-256 is sum, created through
// the API, at the service's clock: ErrTokenRefused (wrapped, with the reason) if no such token
// exists, it was revoked or it has expired; ErrUnavailable if the database could not be read (the
// request is then refused too: fail closed). It reads the database on every call, so a
// revocation on any replica is seen on the next request. from is the client address, kept as
// the token's last use (at most once per LastUsedGranularity; a failed write is only logged).
func (s *Service) AuthenticateToken(ctx context.Context, sum [32]byte, from string) (Principal, error) {
	st := s.d.AccessTokens
	if st == nil {
		return Principal{}, ErrTokenRefused
	}
	t, stored, err := st.byHash(ctx, sum)
	if err != nil {
		return Principal{}, err
	}
	// The lookup was by hash; compare again in constant time so that no database collation or
	// truncation can make another hash match.
	if subtle.ConstantTimeCompare(stored, sum[:]) != 1 {
		return Principal{}, ErrTokenRefused
	}
	now := s.now().UTC()
	if st := t.Status(now); st != "active" {
		s.logger.InfoContext(ctx, "API token refused", slog.String("token_id", t.ID), slog.String("status", st), slog.String("for", t.Principal().String()))
	}
	switch t.Status(now) {
	case "revoked":
		return Principal{}, fmt.Errorf("%w: token %s was revoked at %s", ErrTokenRefused, t.ID, t.RevokedAt.Format(time.RFC3339))
	case "expired":
		return Principal{}, fmt.Errorf("%w: token %s expired at %s", ErrTokenRefused, t.ID, t.ExpiresAt.Format(time.RFC3339))
	}
	if t.LastUsedAt.IsZero() || now.Sub(t.LastUsedAt) >= LastUsedGranularity {
		st.noteTokenUse(t.ID, now.Truncate(time.Second), from)
	}
	return t.Principal(), nil
}

// NotePrincipalUse keeps the last use of a principal authenticated otherwise than by a database
// token (a configuration token, a client certificate), for the access list and review: at most
// once per LastUsedGranularity per principal and process; a failed write is only logged.
func (s *Service) NotePrincipalUse(ctx context.Context, p Principal, from string) {
	st := s.d.AccessTokens
	if st == nil || p.Anonymous() {
		return
	}
	st.notePrincipalUse(p.String(), s.now().UTC().Truncate(time.Second), from)
}

// Tokens returns every token created through the API, oldest first (admin, auditor).
func (s *Service) Tokens(ctx context.Context) ([]APIToken, error) {
	if s.d.AccessTokens == nil {
		return nil, errNoTokenStore
	}
	return s.d.AccessTokens.list(ctx)
}

// PrincipalUses returns the last use of every configuration-token and client-certificate
// principal seen (admin, auditor).
func (s *Service) PrincipalUses(ctx context.Context) ([]PrincipalUse, error) {
	if s.d.AccessTokens == nil {
		return nil, errNoTokenStore
	}
	return s.d.AccessTokens.principalUses(ctx)
}

// SetConfigPrincipals tells the service the principals of the configuration tokens (http.tokens),
// which CreateToken refuses: a database token with a configuration token's principal could be
// revoked while the principal keeps its access. It logs a warning for each configuration
// principal that an active database token has too (the configuration token was added after it),
// and returns those principals; a token store that cannot be read is only logged.
func (s *Service) SetConfigPrincipals(ctx context.Context, ps []Principal) []Principal {
	ps = append([]Principal(nil), ps...)
	s.configPrincipals.Store(&ps)
	if s.d.AccessTokens == nil || len(ps) == 0 {
		return nil
	}
	ts, err := s.d.AccessTokens.list(ctx)
	if err != nil {
		s.logger.WarnContext(ctx, "could not check the configuration tokens against the database tokens", slog.Any("error", err))
		return nil
	}
	now := s.now().UTC()
	var clash []Principal
	for _, t := range ts {
		if t.Status(now) == "active" && slices.Contains(ps, t.Principal()) && !slices.Contains(clash, t.Principal()) {
			clash = append(clash, t.Principal())
			s.logger.WarnContext(ctx, "a configuration token (http.tokens) has the principal of an active API token: revoking the API token does not cut this principal off; rename or remove one of them",
				slog.String("for", t.Principal().String()), slog.String("token_id", t.ID))
		}
	}
	return clash
}

func (s *Service) isConfigPrincipal(p Principal) bool {
	ps := s.configPrincipals.Load()
	return ps != nil && slices.Contains(*ps, p)
}

// CreateToken creates an API token (admin), recorded as an access_change record before it is
// stored and answered. The secret, TokenPrefix and 32 random bytes in unpadded base64url, is
// returned once; only its SHA-256 is stored.
func (s *Service) CreateToken(ctx context.Context, p Principal, req TokenRequest) (*CreatedToken, error) {
	if p.Role != RoleAdmin {
		return nil, fmt.Errorf("%w: only admins create API tokens", ErrForbidden)
	}
	if s.d.AccessTokens == nil {
		return nil, errNoTokenStore
	}
	if err := ValidName(req.Name); err != nil {
		return nil, fmt.Errorf("%w: token name: %w", ErrInvalid, err)
	}
	if !req.Role.Valid() {
		return nil, fmt.Errorf("%w: role %q is not one of agent, relying-party, admin, auditor", ErrInvalid, req.Role)
	}
	if want := (Principal{Name: req.Name, Role: req.Role}); s.isConfigPrincipal(want) {
		return nil, fmt.Errorf("%w: %s is a configuration token's principal (http.tokens): revoking the new token would not cut it off; give the new token another name", ErrConflict, want)
	}
	now := s.now().UTC().Truncate(time.Second)
	exp := req.ExpiresAt.UTC().Truncate(time.Second)
	switch {
	case req.ExpiresAt.IsZero():
		return nil, fmt.Errorf("%w: every API token expires: give expires_in (e.g. 720h) or expires_at", ErrInvalid)
	case !exp.After(now):
		return nil, fmt.Errorf("%w: expires_at %s is not in the future", ErrInvalid, exp.Format(time.RFC3339))
	case exp.Sub(now) > MaxTokenLifetime:
		return nil, fmt.Errorf("%w: expires_at %s is more than %v ahead; API tokens live at most %v (put a longer-lived credential in http.tokens)", ErrInvalid, exp.Format(time.RFC3339), MaxTokenLifetime, MaxTokenLifetime)
	}
	var secret [32]byte
	var id [8]byte
	if _, err := rand.Read(secret[:]); err != nil {
		return nil, err
	}
	if _, err := rand.Read(id[:]); err != nil {
		return nil, err
	}
	ct := &CreatedToken{
		APIToken: APIToken{ID: hex.EncodeToString(id[:]), Name: req.Name, Role: req.Role, CreatedAt: now, CreatedBy: p.String(), ExpiresAt: exp},
		Secret:   TokenPrefix + base64.RawURLEncoding.EncodeToString(secret[:]),
	}
	rec := accessChangeRecord(now, evidence.AccessCreate, p.String(), ct.APIToken)
	if err := s.d.AccessTokens.create(ctx, &ct.APIToken, sha256.Sum256([]byte(ct.Secret)), s.recordFunc, rec); err != nil {
		return nil, err
	}
	s.logger.InfoContext(ctx, "API token created", slog.String("principal", p.String()), slog.String("token_id", ct.ID),
		slog.String("for", ct.Principal().String()), slog.Time("expires_at", exp), slog.Uint64("log_index", ct.CreatedRecord))
	return ct, nil
}

// RevokeToken revokes a token created through the API (admin). The revocation is committed
// first: from then on every replica refuses the token. Then its access_change record is
// appended; if that fails the answer is ErrUnavailable (503) with the token revoked all the same,
// and the record is written later (RecordPendingRevocations): revoking the token again writes
// it and answers the token. Configuration tokens cannot be revoked here: remove them from
// http.tokens.
func (s *Service) RevokeToken(ctx context.Context, p Principal, id string) (APIToken, error) {
	if p.Role != RoleAdmin {
		return APIToken{}, fmt.Errorf("%w: only admins revoke API tokens", ErrForbidden)
	}
	st := s.d.AccessTokens
	if st == nil {
		return APIToken{}, errNoTokenStore
	}
	now := s.now().UTC().Truncate(time.Second)
	t, fresh, err := st.revoke(ctx, id, p.String(), now)
	if err != nil {
		return APIToken{}, err
	}
	if fresh {
		s.logger.InfoContext(ctx, "API token revoked", slog.String("principal", p.String()), slog.String("token_id", t.ID),
			slog.String("for", t.Principal().String()))
	}
	t, err = s.writeRevocationRecord(ctx, t, fresh)
	if err != nil {
		return APIToken{}, err
	}
	// Records a failed append left behind (other tokens'), now that the log takes one.
	if _, err := s.RecordPendingRevocations(ctx); err != nil {
		s.logger.WarnContext(ctx, "writing pending revocation records failed", slog.Any("error", err))
	}
	return t, nil
}

// RecordPendingRevocations writes the access_change record of every token revoked without one
// (a revocation whose append failed), and returns how many it wrote. Each is claimed first, so
// replicas running it at once write each record once; a token another replica is writing is
// skipped. The service runs it at start-up and after every revocation.
func (s *Service) RecordPendingRevocations(ctx context.Context) (int, error) {
	st := s.d.AccessTokens
	if st == nil {
		return 0, nil
	}
	ts, err := st.unrecordedRevocations(ctx)
	if err != nil {
		return 0, err
	}
	var n int
	var errs []error
	for _, t := range ts {
		switch _, err := s.writeRevocationRecord(ctx, t, false); {
		case err == nil:
			n++
		case !errors.Is(err, errClaimed):
			errs = append(errs, err)
		}
	}
	return n, errors.Join(errs...)
}

// errClaimed: another writer holds the claim on a pending revocation record.
var errClaimed = errors.New("another replica is writing the revocation record")

// writeRevocationRecord writes the access_change record of revoked token t and keeps its index.
// It claims the row first (errClaimed, wrapped, if another writer holds it). Unless the
// revocation is fresh (committed by this call, and claimed by no one since, so without a record),
// it first looks in the log for a record a crashed writer appended, so that no revocation gets
// two records.
func (s *Service) writeRevocationRecord(ctx context.Context, t APIToken, fresh bool) (APIToken, error) {
	st := s.d.AccessTokens
	ok, err := st.claimRevocation(ctx, t.ID, s.now().UTC())
	if err != nil {
		return APIToken{}, s.revocationUnrecorded(err, "API token %s is revoked and refused, but the writing of its revocation record could not be claimed (revoke it again to write it; a restarted verifier writes it too)", t.ID)
	}
	if !ok {
		cur, err := st.byID(ctx, t.ID)
		if err == nil && !cur.RevocationUnrecorded {
			return cur, nil // written meanwhile
		}
		return APIToken{}, &RetryError{After: time.Minute, Err: fmt.Errorf("%w: %w: API token %s is revoked and refused; ask again in a minute to see its record", ErrUnavailable, errClaimed, t.ID)}
	}
	var (
		idx   uint64
		found bool
	)
	if !fresh {
		idx, found, err = s.findRevocationRecord(ctx, t)
	}
	if err == nil && !found {
		idx, err = s.recordFunc(ctx, accessChangeRecord(t.RevokedAt, evidence.AccessRevoke, t.RevokedBy, t))
	}
	if err != nil {
		if rerr := st.releaseRevocation(context.WithoutCancel(ctx), t.ID); rerr != nil {
			s.logger.WarnContext(ctx, "could not release the claim on a revocation record", slog.String("token_id", t.ID), slog.Any("error", rerr))
		}
		s.logger.ErrorContext(ctx, "API token revoked without its access_change record; written when the log recovers",
			slog.String("token_id", t.ID), slog.Any("error", err))
		return APIToken{}, s.revocationUnrecorded(err, "API token %s is revoked and refused from now on, but the access_change record of its revocation could not be written (revoke it again to write it once the log recovers; a restarted verifier writes it too)", t.ID)
	}
	if err := st.recordRevocation(ctx, t.ID, idx); err != nil {
		// The record is in the log; the next writer finds it there instead of writing another.
		s.logger.WarnContext(ctx, "could not keep the index of a revocation record", slog.String("token_id", t.ID),
			slog.Uint64("log_index", idx), slog.Any("error", err))
	}
	s.logger.InfoContext(ctx, "API token revocation recorded", slog.String("token_id", t.ID), slog.Uint64("log_index", idx))
	t.RevokedRecord, t.RevocationUnrecorded = idx, false
	return t, nil
}

// revocationUnrecorded is the error of a revocation in force whose record could not be written
// because of cause: ErrUnavailable with ErrRevocationUnrecorded whatever the cause, with the
// cause's Retry-After if it has one. An overloaded log in particular is not ErrOverloaded here,
// which would say that nothing was done: the revocation was committed. The cause is kept as text
// only, so that no sentinel of its own changes what the answer says.
func (s *Service) revocationUnrecorded(cause error, format string, args ...any) error {
	after := s.set.RetryAfter
	var retry *RetryError
	if errors.As(cause, &retry) {
		after = max(after, retry.After)
	}
	return &RetryError{After: after, Err: fmt.Errorf("%w: %w: %s: %v", ErrUnavailable, ErrRevocationUnrecorded, fmt.Sprintf(format, args...), cause)}
}

// findRevocationRecord looks in the log, through the index brought up to date first, for the
// revocation record of t (timed at its revocation, as writeRevocationRecord writes it).
func (s *Service) findRevocationRecord(ctx context.Context, t APIToken) (uint64, bool, error) {
	if _, err := s.catchupIndex(ctx); err != nil {
		return 0, false, fmt.Errorf("%w: bringing the index up to date before looking for a revocation record: %w", ErrUnavailable, err)
	}
	chs, err := s.AccessChanges(ctx, t.RevokedAt, t.RevokedAt.Add(time.Second)) // whole seconds
	if err != nil {
		return 0, false, err
	}
	for _, ch := range chs {
		if ch.Change.Action == evidence.AccessRevoke && ch.Change.TokenID == t.ID {
			return ch.LogIndex, true, nil
		}
	}
	return 0, false, nil
}

func accessChangeRecord(at time.Time, action evidence.AccessAction, actor string, t APIToken) *evidence.Record {
	return &evidence.Record{
		Version: evidence.Version,
		Kind:    evidence.KindAccessChange,
		Time:    at,
		AccessChange: &evidence.AccessChange{
			Actor: actor, Action: action, TokenID: t.ID, Name: t.Name, Role: string(t.Role), ExpiresAt: t.ExpiresAt,
		},
	}
}

// AccessChangeRecord is one access_change record, read back from the log and verified.
type AccessChangeRecord struct {
	LogIndex     uint64
	RecordSHA256 [32]byte
	Time         time.Time
	Change       evidence.AccessChange
}

// AccessChanges returns the access_change records timed within [from, to) (index.Query's range; a
// zero bound is open), in log order: found through the index, each read back from the log and opened against
// the key history. More than maxAccessChanges is ErrInvalid: ask for a shorter period.
func (s *Service) AccessChanges(ctx context.Context, from, to time.Time) ([]AccessChangeRecord, error) {
	var out []AccessChangeRecord
	q := index.Query{Kind: evidence.KindAccessChange, From: from, To: to}
	err := s.eachRecord(ctx, q, func(idx uint64, leaf []byte, rec *evidence.Record, err error) error {
		switch {
		case len(out) == maxAccessChanges:
			return fmt.Errorf("%w: more than %d access changes in the period; ask for a shorter one", ErrInvalid, maxAccessChanges)
		case err != nil:
			return err
		case rec.Kind != evidence.KindAccessChange || rec.AccessChange == nil:
			return fmt.Errorf("service: the index names record %d as an access change, but the log holds a %s record", idx, rec.Kind)
		}
		out = append(out, AccessChangeRecord{LogIndex: idx, RecordSHA256: sha256.Sum256(leaf), Time: rec.Time, Change: *rec.AccessChange})
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// Now is the service's clock (token expiry and last use are evaluated against it).
func (s *Service) Now() time.Time { return s.now() }
