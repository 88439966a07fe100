package blob

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"errors"
	"fmt"
	"path/filepath"
	"strings"

	"github.com/go-sql-driver/mysql"
	"github.com/proofline/proofline/evidence"
	"github.com/proofline/proofline/internal/durable"
	"modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"
)

// chunkSize is the largest chunk row. With MaxSize 64 MiB a blob has at most 64 chunks, and a
// chunk fits any max_allowed_packet of 2 MiB or more.
const chunkSize = 1 << 20

// maxAttempts bounds the retries of a Put that raced with another Put of the same blob.
const maxAttempts = 5

var (
	mysqlSchema = []string{
		"CREATE TABLE IF NOT EXISTS proofline_blobs (digest BINARY(32) NOT NULL, size BIGINT NOT NULL, PRIMARY KEY (digest)) ENGINE=InnoDB",
		"CREATE TABLE IF NOT EXISTS proofline_blob_chunks (digest BINARY(32) NOT NULL, seq INT NOT NULL, data MEDIUMBLOB NOT NULL, PRIMARY KEY (digest, seq)) ENGINE=InnoDB",
	}
	sqliteSchema = []string{
		"CREATE TABLE IF NOT EXISTS proofline_blobs (digest BLOB NOT NULL PRIMARY KEY, size INTEGER NOT NULL) WITHOUT ROWID",
		"CREATE TABLE IF NOT EXISTS proofline_blob_chunks (digest BLOB NOT NULL, seq INTEGER NOT NULL, data BLOB NOT NULL, PRIMARY KEY (digest, seq)) WITHOUT ROWID",
	}
)

// Table is a blob store in two SQL tables (see the package documentation). It is safe for
// concurrent use, also by several processes or replicas sharing the database.
type Table struct {
	db *sql.DB
	// raced reports an error that means another transaction stored the same blob first (or
	// deadlocked with this one): the Put is retried.
	raced func(error) bool
	// closeDB is set when the Table opened db and must close it.
	closeDB bool
}

// OpenMySQL opens the blob store in the database db is connected to (MySQL or MariaDB, InnoDB),
// creating its tables if needed. It refuses a server whose commits are not durable
// (innodb_flush_log_at_trx_commit other than 1, or the binary log on with sync_binlog other than
// 1) or whose max_allowed_packet cannot carry a chunk, and blob tables that are not InnoDB.
// Closing the Table does not close db.
func OpenMySQL(ctx context.Context, db *sql.DB) (*Table, error) {
	settings, err := durable.ReadServerSettings(ctx, db)
	if err != nil {
		return nil, fmt.Errorf("blob: %w", err)
	}
	if err := settings.Check(); err != nil {
		return nil, fmt.Errorf("blob: %w; otherwise a crash can lose stored blobs", err)
	}
	var packet int64
	if err := db.QueryRowContext(ctx, "SELECT @@max_allowed_packet").Scan(&packet); err != nil {
		return nil, fmt.Errorf("blob: reading server settings: %w", err)
	}
	if packet < 2*chunkSize {
		return nil, fmt.Errorf("blob: the server has max_allowed_packet=%d; set it to at least %d", packet, 2*chunkSize)
	}
	for _, s := range mysqlSchema {
		if _, err := db.ExecContext(ctx, s); err != nil {
			return nil, fmt.Errorf("blob: creating tables: %w", err)
		}
	}
	if err := durable.CheckInnoDB(ctx, db, "proofline_blobs", "proofline_blob_chunks"); err != nil {
		return nil, fmt.Errorf("blob: %w", err)
	}
	return &Table{db: db, raced: mysqlRaced}, nil
}

// OpenSQLite opens (creating if needed) the SQLite database at path and the blob tables in it.
// Close closes the database.
func OpenSQLite(ctx context.Context, path string) (*Table, error) {
	if strings.ContainsRune(path, '?') {
		return nil, fmt.Errorf("blob: SQLite path %q contains '?'", path)
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, fmt.Errorf("blob: %w", err)
	}
	// WAL with synchronous=FULL syncs the log at every commit: a committed Put survives a power
	// loss. _txlock=immediate takes the write lock at BEGIN, so that concurrent writers wait
	// (busy_timeout) instead of failing when they upgrade a read lock.
	dsn := abs + "?_busy_timeout=10000&_journal_mode=WAL&_synchronous=FULL&_txlock=immediate"
	db, err := sql.Open("sqlite", dsn)
	if err != nil {
		return nil, fmt.Errorf("blob: opening %s: %w", path, err)
	}
	for _, s := range sqliteSchema {
		if _, err := db.ExecContext(ctx, s); err != nil {
			db.Close()
			return nil, fmt.Errorf("blob: creating tables in %s: %w", path, err)
		}
	}
	return &Table{db: db, raced: sqliteRaced, closeDB: true}, nil
}

// Close closes the database if OpenSQLite opened it.
func (s *Table) Close() error {
	if s.closeDB {
		return s.db.Close()
	}
	return nil
}

// Put stores data durably and returns its SHA-256 (see the package documentation).
func (s *Table) Put(ctx context.Context, data []byte) (evidence.Digest, error) {
	if len(data) > MaxSize {
		return evidence.Digest{}, tooLarge(len(data))
	}
	d := evidence.Digest(sha256.Sum256(data))
	var err error
	for range maxAttempts {
		if err = s.put(ctx, d, data); err == nil || !s.raced(err) {
			break
		}
	}
	if err != nil {
		return evidence.Digest{}, fmt.Errorf("blob: putting %s: %w", d, err)
	}
	return d, nil
}

// put stores data in one transaction. When the blob is already there it verifies the stored
// copy and rewrites it only if it is corrupt.
func (s *Table) put(ctx context.Context, d evidence.Digest, data []byte) error {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	// Inserting the header first makes a concurrent Put of the same blob wait on its key (InnoDB)
	// or on the write lock (SQLite), and then fail as raced, and retry.
	_, err = tx.ExecContext(ctx, "INSERT INTO proofline_blobs (digest, size) VALUES (?, ?)", d[:], len(data))
	if s.raced(err) {
		tx.Rollback()
		switch _, err := s.Get(ctx, d); {
		case err == nil:
			return nil // verified: the bytes hash to d, so they are data
		case errors.Is(err, ErrCorrupt), errors.Is(err, ErrNotFound):
			return s.repair(ctx, d, data)
		default:
			return err
		}
	}
	if err != nil {
		return err
	}
	if err := insertChunks(ctx, tx, d, data); err != nil {
		return err
	}
	return tx.Commit()
}

// repair replaces a corrupt stored copy with data.
func (s *Table) repair(ctx context.Context, d evidence.Digest, data []byte) error {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	if _, err := tx.ExecContext(ctx, "DELETE FROM proofline_blob_chunks WHERE digest = ?", d[:]); err != nil {
		return err
	}
	if _, err := tx.ExecContext(ctx, "DELETE FROM proofline_blobs WHERE digest = ?", d[:]); err != nil {
		return err
	}
	if _, err := tx.ExecContext(ctx, "INSERT INTO proofline_blobs (digest, size) VALUES (?, ?)", d[:], len(data)); err != nil {
		return err
	}
	if err := insertChunks(ctx, tx, d, data); err != nil {
		return err
	}
	return tx.Commit()
}

func insertChunks(ctx context.Context, tx *sql.Tx, d evidence.Digest, data []byte) error {
	for seq := 0; seq*chunkSize < len(data); seq++ {
		chunk := data[seq*chunkSize : min((seq+1)*chunkSize, len(data))]
		if _, err := tx.ExecContext(ctx, "INSERT INTO proofline_blob_chunks (digest, seq, data) VALUES (?, ?, ?)", d[:], seq, chunk); err != nil {
			return err
		}
	}
	return nil
}

// Get returns the blob named d after verifying that it hashes to d.
func (s *Table) Get(ctx context.Context, d evidence.Digest) ([]byte, error) {
	// One statement, so one consistent snapshot of the header and its chunks.
	rows, err := s.db.QueryContext(ctx, `SELECT b.size, c.seq, c.data FROM proofline_blobs b
		LEFT JOIN proofline_blob_chunks c ON c.digest = b.digest WHERE b.digest = ? ORDER BY c.seq`, d[:])
	if err != nil {
		return nil, fmt.Errorf("blob: getting %s: %w", d, err)
	}
	defer rows.Close()
	var (
		found bool
		size  int64
		data  []byte
		next  int64
	)
	for rows.Next() {
		found = true
		var seq sql.NullInt64
		var chunk []byte
		if err := rows.Scan(&size, &seq, &chunk); err != nil {
			return nil, fmt.Errorf("blob: getting %s: %w", d, err)
		}
		if !seq.Valid {
			continue // no chunks: an empty blob, or a corrupt one (caught below)
		}
		if seq.Int64 != next {
			return nil, &CorruptError{Digest: d, Reason: fmt.Sprintf("chunk %d where chunk %d was expected", seq.Int64, next)}
		}
		next++
		if len(data)+len(chunk) > MaxSize {
			return nil, &CorruptError{Digest: d, Reason: fmt.Sprintf("the stored chunks hold more than %d bytes", MaxSize)}
		}
		data = append(data, chunk...)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("blob: getting %s: %w", d, err)
	}
	if !found {
		return nil, notFound(d)
	}
	if int64(len(data)) != size {
		return nil, &CorruptError{Digest: d, Reason: fmt.Sprintf("the stored chunks hold %d bytes, the header says %d", len(data), size)}
	}
	if data == nil {
		data = []byte{}
	}
	return verify(d, data)
}

// Has reports whether a blob named d is stored. It does not verify it.
func (s *Table) Has(ctx context.Context, d evidence.Digest) (bool, error) {
	var one int
	err := s.db.QueryRowContext(ctx, "SELECT 1 FROM proofline_blobs WHERE digest = ?", d[:]).Scan(&one)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		return false, nil
	case err != nil:
		return false, fmt.Errorf("blob: %s: %w", d, err)
	}
	return true, nil
}

// mysqlRaced: a duplicate key (another Put committed the blob first) or a deadlock victim.
func mysqlRaced(err error) bool {
	var me *mysql.MySQLError
	return errors.As(err, &me) && (me.Number == 1062 || me.Number == 1213)
}

// sqliteRaced: a primary key conflict. (Writers are serialised by the write lock taken at
// BEGIN IMMEDIATE, so a conflict means the other Put committed first.)
func sqliteRaced(err error) bool {
	var se *sqlite.Error
	return errors.As(err, &se) && se.Code() == sqlite3.SQLITE_CONSTRAINT_PRIMARYKEY
}
