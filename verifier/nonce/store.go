package nonce

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/go-sql-driver/mysql"
	"github.com/proofline/proofline/attest"
	"modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"
)

// DBFileName is the SQLite file's name in the data directory.
const DBFileName = "nonces.db"

// maxAttempts bounds the retries of an insert that InnoDB chose as a deadlock victim.
const maxAttempts = 5

// SQLStore is a Store in SQLite or MySQL/MariaDB: one table, proofline_nonce_used, whose
// primary key is the nonce. Its methods are safe for concurrent use, also by several processes
// (SQLite) or replicas (MySQL) sharing the storage.
type SQLStore struct {
	db      *sql.DB
	d       dialect
	closeDB bool
	// insert is insertNonce prepared once, so that it is not parsed again for every
	// attestation.
	insert *sql.Stmt

	mu      sync.Mutex
	queue   []*markReq // waiting for a group commit; the first leads it (MarkUsed)
	leading bool       // a group commit is under way or handed over
}

type dialect struct {
	// schema creates the table; idempotent, so that replicas starting together may all run it.
	schema []string
	// duplicate reports a primary-key violation: the nonce is already recorded.
	duplicate func(error) bool
	// retry reports an error after which the same insert may simply be tried again.
	retry func(error) bool
}

var sqliteDialect = dialect{
	schema: []string{
		`CREATE TABLE IF NOT EXISTS proofline_nonce_used (
			nonce BLOB NOT NULL PRIMARY KEY,
			expires_unix INTEGER NOT NULL
		) WITHOUT ROWID`,
		"CREATE INDEX IF NOT EXISTS proofline_nonce_used_by_expiry ON proofline_nonce_used (expires_unix)",
	},
	duplicate: func(err error) bool {
		var se *sqlite.Error
		return errors.As(err, &se) && se.Code() == sqlite3.SQLITE_CONSTRAINT_PRIMARYKEY
	},
	retry: func(error) bool { return false }, // writers wait on the busy timeout instead
}

var mysqlDialect = dialect{
	schema: []string{
		`CREATE TABLE IF NOT EXISTS proofline_nonce_used (
			nonce BINARY(32) NOT NULL,
			expires_unix BIGINT NOT NULL,
			PRIMARY KEY (nonce),
			INDEX proofline_nonce_used_by_expiry (expires_unix)
		) ENGINE=InnoDB`,
	},
	duplicate: func(err error) bool {
		var me *mysql.MySQLError
		return errors.As(err, &me) && me.Number == 1062 // ER_DUP_ENTRY
	},
	retry: func(err error) bool {
		var me *mysql.MySQLError
		return errors.As(err, &me) && me.Number == 1213 // ER_LOCK_DEADLOCK: nothing was written
	},
}

// OpenSQLite opens the store in the SQLite file at path (by convention DBFileName in the data
// dir), creating the file and the table as needed. Close closes the file.
func OpenSQLite(ctx context.Context, path string) (*SQLStore, error) {
	if strings.ContainsRune(path, '?') {
		return nil, fmt.Errorf("nonce: SQLite path %q contains '?'", path)
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, fmt.Errorf("nonce: %w", err)
	}
	// synchronous=FULL: a used nonce must survive a power loss (see "Storage and durability").
	// WAL lets writers from several handles or processes queue on the busy timeout.
	// _txlock=immediate takes the write lock at BEGIN: a transaction that reads and then writes
	// would otherwise fail with SQLITE_BUSY, without waiting, when another writer got there first.
	db, err := sql.Open("sqlite", abs+"?_busy_timeout=10000&_journal_mode=WAL&_synchronous=FULL&_txlock=immediate")
	if err != nil {
		return nil, fmt.Errorf("nonce: opening %s: %w", path, err)
	}
	s, err := open(ctx, db, sqliteDialect)
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("nonce: %s: %w", path, err)
	}
	s.closeDB = true
	return s, nil
}

// OpenMySQL opens the store in the database db is connected to (MySQL or MariaDB, InnoDB),
// creating the table as needed. Replicas may open the same database concurrently. Closing the
// store does not close db.
func OpenMySQL(ctx context.Context, db *sql.DB) (*SQLStore, error) {
	s, err := open(ctx, db, mysqlDialect)
	if err != nil {
		return nil, fmt.Errorf("nonce: %w", err)
	}
	return s, nil
}

func open(ctx context.Context, db *sql.DB, d dialect) (*SQLStore, error) {
	for _, stmt := range d.schema {
		if _, err := db.ExecContext(ctx, stmt); err != nil {
			return nil, fmt.Errorf("creating the table of used nonces: %w", err)
		}
	}
	insert, err := db.PrepareContext(ctx, insertNonce)
	if err != nil {
		return nil, fmt.Errorf("preparing the insert of used nonces: %w", err)
	}
	return &SQLStore{db: db, d: d, insert: insert}, nil
}

// Close closes the database if OpenSQLite opened it.
func (s *SQLStore) Close() error {
	err := s.insert.Close()
	if s.closeDB {
		err = errors.Join(err, s.db.Close())
	}
	return err
}

// maxBatch bounds how many nonces one group commit records.
const maxBatch = 512

// markReq is one MarkUsed call waiting for, or leading, a group commit.
type markReq struct {
	nonce   []byte
	expires int64
	err     error
	// wake is closed when the request is done (lead false, err set) or when it is handed the
	// lead of the next group commit (lead true).
	wake chan struct{}
	lead bool
}

const insertNonce = "INSERT INTO proofline_nonce_used (nonce, expires_unix) VALUES (?, ?)"

// MarkUsed records nonce as used until expires. It returns an error wrapping ErrReplayed if the
// nonce is already recorded, and returns nil only once the nonce is durably recorded.
//
// Concurrent calls share one transaction (group commit): with synchronous=FULL every commit is
// an fsync, and one commit per nonce made that fsync the bottleneck of every attestation. The
// first caller leads: it commits everything queued at that moment (at most maxBatch), wakes the
// others, and hands the lead to the first request queued behind them. Each nonce is still its own
// INSERT, which the primary key makes atomic, so of two calls with the same nonce, in one batch
// or not, exactly one succeeds. If the batch fails, every call in it fails and no nonce in it is
// recorded.
func (s *SQLStore) MarkUsed(ctx context.Context, nonce []byte, expires time.Time) error {
	if len(nonce) != attest.NonceSize {
		return fmt.Errorf("recording a %d-byte nonce, want %d", len(nonce), attest.NonceSize)
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	r := &markReq{nonce: nonce, expires: expires.Unix(), wake: make(chan struct{})}
	s.mu.Lock()
	s.queue = append(s.queue, r)
	lead := !s.leading
	s.leading = true
	s.mu.Unlock()
	if !lead {
		// Not abandoned on ctx: the nonce may be in a commit under way, and the caller must
		// learn whether it was spent. The wait is bounded by the database's own timeouts.
		<-r.wake
		if !r.lead {
			return r.err
		}
	}
	// r leads and is first in the queue.
	s.mu.Lock()
	n := min(len(s.queue), maxBatch)
	batch := slices.Clone(s.queue[:n])
	s.queue = slices.Delete(s.queue, 0, n)
	s.mu.Unlock()

	// The batch carries other callers' nonces: the leader's cancellation must not fail theirs.
	s.commit(context.WithoutCancel(ctx), batch)

	s.mu.Lock()
	for _, b := range batch[1:] {
		close(b.wake)
	}
	if len(s.queue) > 0 {
		next := s.queue[0]
		next.lead = true
		close(next.wake)
	} else {
		s.leading = false
	}
	s.mu.Unlock()
	return r.err
}

// commit records batch in one transaction, retrying it whole after a deadlock, and sets each
// request's err.
func (s *SQLStore) commit(ctx context.Context, batch []*markReq) {
	var err error
	for range maxAttempts {
		if err = s.tryCommit(ctx, batch); err == nil || !s.d.retry(err) {
			break
		}
	}
	if err != nil {
		for _, b := range batch {
			b.err = fmt.Errorf("inserting into proofline_nonce_used: %w", err)
		}
	}
}

func (s *SQLStore) tryCommit(ctx context.Context, batch []*markReq) error {
	for _, b := range batch {
		b.err = nil
	}
	if len(batch) == 1 {
		// One INSERT in autocommit: no BEGIN and COMMIT round trips.
		b := batch[0]
		_, err := s.insert.ExecContext(ctx, b.nonce, b.expires)
		if err != nil && s.d.duplicate(err) {
			b.err = ErrReplayed
			return nil
		}
		return err
	}
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	insert := tx.StmtContext(ctx, s.insert)
	for _, b := range batch {
		// A primary-key violation fails only its statement (SQLite's ABORT, InnoDB's
		// statement rollback): the transaction goes on with the other nonces.
		if _, err := insert.ExecContext(ctx, b.nonce, b.expires); err != nil {
			if !s.d.duplicate(err) {
				tx.Rollback()
				return err
			}
			b.err = ErrReplayed
		}
	}
	return tx.Commit()
}

// Sweep deletes the records whose expiry is before the given time.
func (s *SQLStore) Sweep(ctx context.Context, before time.Time) (int64, error) {
	// Expiries are whole seconds e: e < before ⇔ e < ⌈before⌉.
	cutoff := before.Unix()
	if before.Nanosecond() > 0 {
		cutoff++
	}
	res, err := s.db.ExecContext(ctx, "DELETE FROM proofline_nonce_used WHERE expires_unix < ?", cutoff)
	if err != nil {
		return 0, fmt.Errorf("deleting from proofline_nonce_used: %w", err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return 0, fmt.Errorf("deleting from proofline_nonce_used: %w", err)
	}
	return n, nil
}
