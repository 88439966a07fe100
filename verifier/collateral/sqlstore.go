package collateral

import (
	"bytes"
	"context"
	"crypto/sha256"
	"database/sql"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/proofline/proofline/internal/durable"
)

// SQLStore is a Store in two SQL tables of the state database, content-addressed like DirStore,
// so that verifier replicas sharing a MySQL/MariaDB database share one collateral cache (a
// document one replica fetched is a store hit for the others), and a single verifier can keep
// it in SQLite:
//
//	proofline_collateral_blobs (digest PRIMARY KEY, data)   the canonical bytes, by SHA-256
//	proofline_collateral_urls  (url_hash PRIMARY KEY, url, digest)
//	                           url_hash is the SHA-256 of the URL; digest names its current blob
//	proofline_collateral_marks (url_hash PRIMARY KEY, url, eval_number, issued_unix)
//	                           the URL's Mark (MarkStore): eval_number -1 when none, issued_unix
//	                           in Unix seconds; raised in one upsert that keeps the greater value
//
// Put writes the blob and points the URL at it in one transaction (committed durably: InnoDB
// with innodb_flush_log_at_trx_commit=1, SQLite WAL with synchronous=FULL), so a reader sees the
// old document or the new one, never a pointer to a missing blob. Get re-hashes the blob it
// reads and returns an error, never altered bytes, when it does not match. Superseded blobs are
// kept. It is safe for concurrent use, also by several processes or replicas.
//
// The caller opens the database (and so links its driver: this package imports none, which keeps
// it light for proofline-agent): go-sql-driver/mysql for OpenSQLStoreMySQL, modernc.org/sqlite
// with SQLiteDSNParams for OpenSQLStoreSQLite.
type SQLStore struct {
	db    *sql.DB
	mysql bool
	// maxData is the largest document Put accepts (the server's max_allowed_packet allows it).
	maxData int
}

var (
	collMySQLSchema = []string{
		"CREATE TABLE IF NOT EXISTS proofline_collateral_blobs (digest BINARY(32) NOT NULL, data LONGBLOB NOT NULL, PRIMARY KEY (digest)) ENGINE=InnoDB",
		"CREATE TABLE IF NOT EXISTS proofline_collateral_urls (url_hash BINARY(32) NOT NULL, url TEXT NOT NULL, digest BINARY(32) NOT NULL, PRIMARY KEY (url_hash)) ENGINE=InnoDB",
		"CREATE TABLE IF NOT EXISTS proofline_collateral_marks (url_hash BINARY(32) NOT NULL, url TEXT NOT NULL, eval_number BIGINT NOT NULL, issued_unix BIGINT NOT NULL, PRIMARY KEY (url_hash)) ENGINE=InnoDB",
	}
	collSQLiteSchema = []string{
		"CREATE TABLE IF NOT EXISTS proofline_collateral_blobs (digest BLOB NOT NULL PRIMARY KEY, data BLOB NOT NULL) WITHOUT ROWID",
		"CREATE TABLE IF NOT EXISTS proofline_collateral_urls (url_hash BLOB NOT NULL PRIMARY KEY, url TEXT NOT NULL, digest BLOB NOT NULL) WITHOUT ROWID",
		"CREATE TABLE IF NOT EXISTS proofline_collateral_marks (url_hash BLOB NOT NULL PRIMARY KEY, url TEXT NOT NULL, eval_number INTEGER NOT NULL, issued_unix INTEGER NOT NULL) WITHOUT ROWID",
	}
)

// OpenSQLStoreMySQL opens the collateral store in the database db is connected to (MySQL or
// MariaDB, InnoDB), creating its tables if needed. It refuses a server whose commits are not
// durable (durable.ServerSettings: innodb_flush_log_at_trx_commit other than 1, or the binary
// log on with sync_binlog other than 1) or tables that are not InnoDB. The caller closes db.
func OpenSQLStoreMySQL(ctx context.Context, db *sql.DB) (*SQLStore, error) {
	settings, err := durable.ReadServerSettings(ctx, db)
	if err != nil {
		return nil, fmt.Errorf("collateral store: %w", err)
	}
	if err := settings.Check(); err != nil {
		return nil, fmt.Errorf("collateral store: %w, or a crash of the server can lose stored collateral", err)
	}
	var packet int64
	if err := db.QueryRowContext(ctx, "SELECT @@max_allowed_packet").Scan(&packet); err != nil {
		return nil, fmt.Errorf("collateral store: reading server settings: %w", err)
	}
	for _, s := range collMySQLSchema {
		if _, err := db.ExecContext(ctx, s); err != nil {
			return nil, fmt.Errorf("collateral store: creating tables: %w", err)
		}
	}
	if err := durable.CheckInnoDB(ctx, db, "proofline_collateral_blobs", "proofline_collateral_urls", "proofline_collateral_marks"); err != nil {
		return nil, fmt.Errorf("collateral store: %w", err)
	}
	// A row's packet carries the document and a few hundred bytes of statement and URL.
	return &SQLStore{db: db, mysql: true, maxData: int(min(int64(maxStored), packet-64<<10))}, nil
}

// SQLiteDSNParams are the parameters a modernc.org/sqlite DSN (the file's path) needs for
// OpenSQLStoreSQLite, as evidence/blob uses them: WAL with synchronous=FULL makes a commit
// durable; _txlock=immediate takes the write lock at BEGIN, so that concurrent writers wait
// (busy_timeout) instead of failing.
const SQLiteDSNParams = "?_busy_timeout=10000&_journal_mode=WAL&_synchronous=FULL&_txlock=immediate"

// OpenSQLStoreSQLite opens the collateral store in a SQLite database (normally
// a file in the data directory, opened as sql.Open("sqlite", path+SQLiteDSNParams)), creating its
// tables if needed. It refuses a database whose commits are not durable (journal_mode other than
// WAL or synchronous other than FULL). The caller closes db.
func OpenSQLStoreSQLite(ctx context.Context, db *sql.DB) (*SQLStore, error) {
	var mode string
	var sync int
	if err := db.QueryRowContext(ctx, "PRAGMA journal_mode").Scan(&mode); err != nil {
		return nil, fmt.Errorf("collateral store: reading the journal mode: %w", err)
	}
	if err := db.QueryRowContext(ctx, "PRAGMA synchronous").Scan(&sync); err != nil {
		return nil, fmt.Errorf("collateral store: reading the synchronous setting: %w", err)
	}
	if !strings.EqualFold(mode, "wal") || sync != 2 {
		return nil, fmt.Errorf("collateral store: the SQLite database has journal_mode=%s, synchronous=%d; open it with collateral.SQLiteDSNParams (WAL, synchronous=FULL) so that a stored document survives a crash", mode, sync)
	}
	for _, s := range collSQLiteSchema {
		if _, err := db.ExecContext(ctx, s); err != nil {
			return nil, fmt.Errorf("collateral store: creating tables: %w", err)
		}
	}
	return &SQLStore{db: db, maxData: maxStored}, nil
}

// Get implements Store.
func (s *SQLStore) Get(ctx context.Context, url string) ([]byte, error) {
	h := sha256.Sum256([]byte(url))
	var stored string
	var digest, data []byte
	err := s.db.QueryRowContext(ctx,
		"SELECT u.url, u.digest, b.data FROM proofline_collateral_urls u LEFT JOIN proofline_collateral_blobs b ON b.digest = u.digest WHERE u.url_hash = ?",
		h[:]).Scan(&stored, &digest, &data)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("%w: %s", ErrNotStored, url)
	}
	if err != nil {
		return nil, fmt.Errorf("collateral store: reading %s: %w", url, err)
	}
	if stored != url {
		return nil, fmt.Errorf("collateral store: the row for %s names %s; it will be refetched", url, stored)
	}
	if data == nil {
		return nil, fmt.Errorf("collateral store: the blob %x for %s is missing; it will be refetched", digest, url)
	}
	if sum := sha256.Sum256(data); !bytes.Equal(sum[:], digest) {
		return nil, fmt.Errorf("collateral store: the blob %x (for %s) does not hash to its name: it is corrupt and will be refetched", digest, url)
	}
	return data, nil
}

// maxPutAttempts bounds the retries of a Put that deadlocked with another one (InnoDB).
const maxPutAttempts = 5

// Put implements Store.
func (s *SQLStore) Put(ctx context.Context, url string, canonical []byte) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if len(canonical) > s.maxData {
		return fmt.Errorf("collateral store: response for %s is %d bytes, over the limit of %d (max_allowed_packet of the database server, or the store's own)", url, len(canonical), s.maxData)
	}
	var err error
	for range maxPutAttempts {
		if err = s.put(ctx, url, canonical); err == nil || !s.retry(err) {
			break
		}
	}
	if err != nil {
		return fmt.Errorf("collateral store: writing the response for %s: %w", url, err)
	}
	return nil
}

func (s *SQLStore) put(ctx context.Context, url string, canonical []byte) error {
	d := sha256.Sum256(canonical)
	h := sha256.Sum256([]byte(url))
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	// The blob is rewritten when present: same digest, same bytes, and a corrupt copy is repaired.
	blob, ptr := "INSERT INTO proofline_collateral_blobs (digest, data) VALUES (?, ?) ON CONFLICT(digest) DO UPDATE SET data = excluded.data",
		"INSERT INTO proofline_collateral_urls (url_hash, url, digest) VALUES (?, ?, ?) ON CONFLICT(url_hash) DO UPDATE SET url = excluded.url, digest = excluded.digest"
	if s.mysql {
		blob, ptr = "INSERT INTO proofline_collateral_blobs (digest, data) VALUES (?, ?) ON DUPLICATE KEY UPDATE data = VALUES(data)",
			"INSERT INTO proofline_collateral_urls (url_hash, url, digest) VALUES (?, ?, ?) ON DUPLICATE KEY UPDATE url = VALUES(url), digest = VALUES(digest)"
	}
	if _, err := tx.ExecContext(ctx, blob, d[:], canonical); err != nil {
		return err
	}
	if _, err := tx.ExecContext(ctx, ptr, h[:], url, d[:]); err != nil {
		return err
	}
	return tx.Commit()
}

// StoredMark implements MarkStore.
func (s *SQLStore) StoredMark(ctx context.Context, url string) (Mark, error) {
	h := sha256.Sum256([]byte(url))
	var stored string
	var n, t int64
	err := s.db.QueryRowContext(ctx, "SELECT url, eval_number, issued_unix FROM proofline_collateral_marks WHERE url_hash = ?", h[:]).Scan(&stored, &n, &t)
	if errors.Is(err, sql.ErrNoRows) {
		return Mark{}, fmt.Errorf("%w: no mark for %s", ErrNotStored, url)
	}
	if err != nil {
		return Mark{}, fmt.Errorf("collateral store: reading the mark of %s: %w", url, err)
	}
	if stored != url || n < -1 {
		return Mark{}, fmt.Errorf("collateral store: the mark row for %s is not intact (url %s, number %d)", url, stored, n)
	}
	m := Mark{IssuedAt: time.Unix(t, 0).UTC()}
	if n >= 0 {
		m.EvaluationDataNumber, m.HasNumber = uint64(n), true
	}
	return m, nil
}

// RaiseMark implements MarkStore: one upsert keeping the greater of each field, atomic against
// concurrent raises by other replicas.
func (s *SQLStore) RaiseMark(ctx context.Context, url string, m Mark) error {
	if m.HasNumber && m.EvaluationDataNumber > 1<<62 {
		return fmt.Errorf("collateral store: tcbEvaluationDataNumber %d for %s is out of range", m.EvaluationDataNumber, url)
	}
	n := int64(-1)
	if m.HasNumber {
		n = int64(m.EvaluationDataNumber)
	}
	h := sha256.Sum256([]byte(url))
	q := "INSERT INTO proofline_collateral_marks (url_hash, url, eval_number, issued_unix) VALUES (?, ?, ?, ?) ON CONFLICT(url_hash) DO UPDATE SET eval_number = max(eval_number, excluded.eval_number), issued_unix = max(issued_unix, excluded.issued_unix)"
	if s.mysql {
		q = "INSERT INTO proofline_collateral_marks (url_hash, url, eval_number, issued_unix) VALUES (?, ?, ?, ?) ON DUPLICATE KEY UPDATE eval_number = GREATEST(eval_number, VALUES(eval_number)), issued_unix = GREATEST(issued_unix, VALUES(issued_unix))"
	}
	var err error
	for range maxPutAttempts {
		if _, err = s.db.ExecContext(ctx, q, h[:], url, n, m.IssuedAt.Unix()); err == nil || !s.retry(err) {
			break
		}
	}
	if err != nil {
		return fmt.Errorf("collateral store: raising the mark of %s: %w", url, err)
	}
	return nil
}

// retry reports an InnoDB deadlock (1213) or lock wait timeout (1205) between concurrent Puts.
// It reads go-sql-driver/mysql's message ("Error 1213 (40001): …"), not its error type, so that
// this package does not link the driver.
func (s *SQLStore) retry(err error) bool {
	if !s.mysql || err == nil {
		return false
	}
	m := err.Error()
	return strings.HasPrefix(m, "Error 1213") || strings.HasPrefix(m, "Error 1205")
}

// URLs implements URLLister: the URLs stored, sorted.
func (s *SQLStore) URLs(ctx context.Context) ([]string, error) {
	rows, err := s.db.QueryContext(ctx, "SELECT url FROM proofline_collateral_urls")
	if err != nil {
		return nil, fmt.Errorf("collateral store: listing: %w", err)
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var u string
		if err := rows.Scan(&u); err != nil {
			return nil, fmt.Errorf("collateral store: listing: %w", err)
		}
		out = append(out, u)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("collateral store: listing: %w", err)
	}
	sort.Strings(out)
	return out, nil
}
