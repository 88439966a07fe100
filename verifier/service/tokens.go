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
	"strings"
	"sync"
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
// access_change evidence record, durably in the log before the change is committed and answered
// (the policy store's order: record, then commit). A token passing its expiry needs no record: its
// expiry is in its creation record.
//
// Refusal is immediate on every replica: AuthenticateToken reads the token's row on every request
// (one lookup by the primary-key-like unique SHA-256 index), with no cache, and compares the
// expiry with the request time. A revoked or expired token is refused on the very next request
// any replica sharing the database serves.
//
// Last use is kept at a granularity of LastUsedGranularity: a token's row is written at most once
// per minute (a conditional UPDATE, so also at most about once per minute across replicas),
// synchronously but bounded by lastUsedTimeout; a failed or slow write is logged and never fails
// the request it describes. Configuration tokens and client-certificate agents have their last use
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

// lastUsedTimeout bounds the write of a last use, so that a slow database delays the request it
// describes by at most this long, once per LastUsedGranularity.
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
	used map[string]int64 // principal → the last use this process wrote (Unix seconds)
}

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
		last_used_from TEXT
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
	return &TokenStore{db: db, mysql: mysql, used: map[string]int64{}}, nil
}

// Close closes the database if OpenTokenSQLite opened it.
func (s *TokenStore) Close() error {
	if s.closeDB {
		return s.db.Close()
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
	}
	if lastUse.Valid {
		t.LastUsedAt, t.LastUsedFrom = time.Unix(lastUse.Int64, 0).UTC(), lastFrom.String
	}
	return t, nil
}

// list returns every token, oldest first.
func (s *TokenStore) list(ctx context.Context) ([]APIToken, error) {
	rows, err := s.db.QueryContext(ctx, "SELECT "+tokenColumns+" FROM proofline_api_tokens ORDER BY created_unix, id")
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

// create inserts t with the token hash sum, after record made its access_change record durable.
func (s *TokenStore) create(ctx context.Context, t *APIToken, sum [32]byte, record RecordFunc, rec *evidence.Record) error {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("%w: tokens: %w", ErrUnavailable, err)
	}
	defer tx.Rollback()
	if t.CreatedRecord, err = record(ctx, rec); err != nil {
		return err
	}
	if _, err := tx.ExecContext(ctx, "INSERT INTO proofline_api_tokens (id, name, role, sha256, created_unix, created_by, created_record, expires_unix) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
		t.ID, t.Name, string(t.Role), sum[:], t.CreatedAt.Unix(), t.CreatedBy, t.CreatedRecord, t.ExpiresAt.Unix()); err != nil {
		return fmt.Errorf("%w: tokens: %w", ErrUnavailable, err)
	}
	if err := tx.Commit(); err != nil {
		return fmt.Errorf("%w: tokens: committing after the creation was recorded (record %d; the token does not work, create another): %w", ErrUnavailable, t.CreatedRecord, err)
	}
	return nil
}

// revoke revokes token id: the change's record (built by mk from the token) is made durable
// before the revocation is committed.
func (s *TokenStore) revoke(ctx context.Context, id, by string, at time.Time, record RecordFunc, mk func(APIToken) *evidence.Record) (APIToken, error) {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return APIToken{}, fmt.Errorf("%w: tokens: %w", ErrUnavailable, err)
	}
	defer tx.Rollback()
	q := "SELECT " + tokenColumns + " FROM proofline_api_tokens WHERE id = ?"
	if s.mysql {
		q += " FOR UPDATE"
	}
	t, err := scanToken(tx.QueryRowContext(ctx, q, id))
	switch {
	case errors.Is(err, sql.ErrNoRows):
		return APIToken{}, fmt.Errorf("%w: no API token %q created through the API (GET /v1/tokens lists them; configuration tokens are removed from http.tokens)", ErrNotFound, id)
	case err != nil:
		return APIToken{}, fmt.Errorf("%w: tokens: %w", ErrUnavailable, err)
	case !t.RevokedAt.IsZero():
		return APIToken{}, fmt.Errorf("%w: API token %s was already revoked at %s by %s", ErrConflict, id, t.RevokedAt.Format(time.RFC3339), t.RevokedBy)
	}
	if t.RevokedRecord, err = record(ctx, mk(t)); err != nil {
		return APIToken{}, err
	}
	t.RevokedAt, t.RevokedBy = at, by
	if _, err := tx.ExecContext(ctx, "UPDATE proofline_api_tokens SET revoked_unix = ?, revoked_by = ?, revoked_record = ? WHERE id = ?",
		at.Unix(), by, t.RevokedRecord, id); err != nil {
		return APIToken{}, fmt.Errorf("%w: tokens: %w", ErrUnavailable, err)
	}
	if err := tx.Commit(); err != nil {
		return APIToken{}, fmt.Errorf("%w: tokens: committing the revocation after it was recorded (record %d): %w; revoke again", ErrUnavailable, t.RevokedRecord, err)
	}
	return t, nil
}

// noteTokenUse writes a token's last use unless one within LastUsedGranularity is kept.
func (s *TokenStore) noteTokenUse(ctx context.Context, id string, at time.Time, from string) error {
	_, err := s.db.ExecContext(ctx, "UPDATE proofline_api_tokens SET last_used_unix = ?, last_used_from = ? WHERE id = ? AND (last_used_unix IS NULL OR last_used_unix <= ?)",
		at.Unix(), from, id, at.Add(-LastUsedGranularity).Unix())
	return err
}

// notePrincipalUse writes a principal's last use unless this process wrote one within
// LastUsedGranularity; it never moves a last use backwards.
func (s *TokenStore) notePrincipalUse(ctx context.Context, principal string, at time.Time, from string) error {
	s.mu.Lock()
	last, ok := s.used[principal]
	s.mu.Unlock()
	if ok && at.Unix()-last < int64(LastUsedGranularity/time.Second) {
		return nil
	}
	q := "INSERT INTO proofline_principal_use (principal, last_used_unix, last_used_from) VALUES (?, ?, ?) " +
		"ON CONFLICT (principal) DO UPDATE SET last_used_unix = excluded.last_used_unix, last_used_from = excluded.last_used_from " +
		"WHERE excluded.last_used_unix > proofline_principal_use.last_used_unix"
	if s.mysql {
		// Assignments run left to right: last_used_from is compared with the old time.
		q = "INSERT INTO proofline_principal_use (principal, last_used_unix, last_used_from) VALUES (?, ?, ?) " +
			"ON DUPLICATE KEY UPDATE last_used_from = IF(VALUES(last_used_unix) > last_used_unix, VALUES(last_used_from), last_used_from), " +
			"last_used_unix = GREATEST(last_used_unix, VALUES(last_used_unix))"
	}
	if _, err := s.db.ExecContext(ctx, q, principal, at.Unix(), from); err != nil {
		return err
	}
	s.mu.Lock()
	if at.Unix() > s.used[principal] {
		s.used[principal] = at.Unix()
	}
	s.mu.Unlock()
	return nil
}

func (s *TokenStore) principalUses(ctx context.Context) ([]PrincipalUse, error) {
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
		wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), lastUsedTimeout)
		if err := st.noteTokenUse(wctx, t.ID, now.Truncate(time.Second), from); err != nil {
			s.logger.WarnContext(ctx, "could not keep an API token's last use", slog.String("token_id", t.ID), slog.Any("error", err))
		}
		cancel()
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
	wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), lastUsedTimeout)
	defer cancel()
	if err := st.notePrincipalUse(wctx, p.String(), s.now().UTC().Truncate(time.Second), from); err != nil {
		s.logger.WarnContext(ctx, "could not keep a principal's last use", slog.String("principal", p.String()), slog.Any("error", err))
	}
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

// RevokeToken revokes a token created through the API (admin), recorded as an access_change
// record before the revocation is committed and answered. From then on every replica refuses
// it. Configuration tokens cannot be revoked here: remove them from http.tokens.
func (s *Service) RevokeToken(ctx context.Context, p Principal, id string) (APIToken, error) {
	if p.Role != RoleAdmin {
		return APIToken{}, fmt.Errorf("%w: only admins revoke API tokens", ErrForbidden)
	}
	if s.d.AccessTokens == nil {
		return APIToken{}, errNoTokenStore
	}
	now := s.now().UTC().Truncate(time.Second)
	t, err := s.d.AccessTokens.revoke(ctx, id, p.String(), now, s.recordFunc, func(t APIToken) *evidence.Record {
		return accessChangeRecord(now, evidence.AccessRevoke, p.String(), t)
	})
	if err != nil {
		return APIToken{}, err
	}
	s.logger.InfoContext(ctx, "API token revoked", slog.String("principal", p.String()), slog.String("token_id", t.ID),
		slog.String("for", t.Principal().String()), slog.Uint64("log_index", t.RevokedRecord))
	return t, nil
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

// AccessChanges returns the access_change records timed within [from, to] (a zero bound is
// open), in log order: found through the index, each read back from the log and opened against
// the key history. More than maxAccessChanges is ErrInvalid: ask for a shorter period.
func (s *Service) AccessChanges(ctx context.Context, from, to time.Time) ([]AccessChangeRecord, error) {
	var out []AccessChangeRecord
	q := index.Query{Kind: evidence.KindAccessChange, From: from, To: to, Limit: index.MaxLimit}
	for {
		es, err := s.Records(ctx, q)
		if err != nil {
			return nil, err
		}
		for _, e := range es {
			if len(out) == maxAccessChanges {
				return nil, fmt.Errorf("%w: more than %d access changes in the period; ask for a shorter one", ErrInvalid, maxAccessChanges)
			}
			leaf, rec, err := s.record(ctx, e.LogIndex)
			if err != nil {
				return nil, err
			}
			if rec.Kind != evidence.KindAccessChange || rec.AccessChange == nil {
				return nil, fmt.Errorf("service: the index names record %d as an access change, but the log holds a %s record", e.LogIndex, rec.Kind)
			}
			out = append(out, AccessChangeRecord{LogIndex: e.LogIndex, RecordSHA256: sha256.Sum256(leaf), Time: rec.Time, Change: *rec.AccessChange})
		}
		if len(es) < index.MaxLimit {
			return out, nil
		}
		q.Start = es[len(es)-1].LogIndex + 1
	}
}

// Now is the service's clock (token expiry and last use are evaluated against it).
func (s *Service) Now() time.Time { return s.now() }
