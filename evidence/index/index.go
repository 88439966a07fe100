package index

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"path/filepath"
	"strings"
	"time"

	"github.com/proofline/proofline/evidence"
)

// Query limits.
const (
	// DefaultLimit is the number of entries a Query with Limit 0 returns at most.
	DefaultLimit = 100
	// MaxLimit caps Query.Limit.
	MaxLimit = 1000
)

// maxAttempts bounds the retries of an Add that raced with another writer.
const maxAttempts = 5

// maxInsertRows bounds the rows of one INSERT statement (11 bound parameters each): SQLite
// refuses more than 32766 parameters in a statement, and the MySQL protocol 65535. A larger
// batch is inserted by several statements in its one transaction.
const maxInsertRows = 256

// Errors that are part of the contract (use errors.Is).
var (
	// ErrGap: the entry would leave a gap, since the one before it is not indexed yet.
	ErrGap = errors.New("index: gap")
	// ErrConflict: the index holds a different leaf at that log index. It was built from another
	// log, or the log changed; rebuild it (and run the log's fsck).
	ErrConflict = errors.New("index: conflicting leaf")
)

// Index is an open query index. Its methods are safe for concurrent use, also by several
// processes (SQLite) or replicas (MySQL) sharing the storage.
type Index struct {
	db      *sql.DB
	d       dialect
	closeDB bool
}

// OpenSQLite opens the index in the SQLite file at path, creating the file and the schema, or
// migrating an older schema, as needed. Close closes the file.
func OpenSQLite(ctx context.Context, path string) (*Index, error) {
	if strings.ContainsRune(path, '?') {
		return nil, fmt.Errorf("index: SQLite path %q contains '?'", path)
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, fmt.Errorf("index: %w", err)
	}
	// WAL lets queries run while a writer commits. synchronous=NORMAL: see "Durability".
	// _txlock=immediate takes the write lock at BEGIN, so concurrent writers queue on the busy
	// timeout instead of failing with SQLITE_BUSY when they upgrade a read lock mid-transaction.
	dsn := abs + "?_busy_timeout=10000&_journal_mode=WAL&_synchronous=NORMAL&_txlock=immediate"
	db, err := sql.Open("sqlite", dsn)
	if err != nil {
		return nil, fmt.Errorf("index: opening %s: %w", path, err)
	}
	if err := migrate(ctx, db, sqliteDialect); err != nil {
		db.Close()
		return nil, fmt.Errorf("index: %s: %w", path, err)
	}
	return &Index{db: db, d: sqliteDialect, closeDB: true}, nil
}

// OpenMySQL opens the index in the database db is connected to (MySQL or MariaDB, InnoDB),
// creating the schema, or migrating an older schema, as needed. Replicas may open the same
// database concurrently. Closing the Index does not close db.
func OpenMySQL(ctx context.Context, db *sql.DB) (*Index, error) {
	if err := migrate(ctx, db, mysqlDialect); err != nil {
		return nil, fmt.Errorf("index: %w", err)
	}
	return &Index{db: db, d: mysqlDialect}, nil
}

// Close closes the database if OpenSQLite opened it.
func (ix *Index) Close() error {
	if ix.closeDB {
		return ix.db.Close()
	}
	return nil
}

// Entry is one indexed log leaf.
type Entry struct {
	// LogIndex is the leaf's index in the evidence log.
	LogIndex uint64
	// LeafHash is the SHA-256 of the leaf: the signed record's COSE_Sign1 bytes.
	LeafHash evidence.Digest
	Kind     evidence.Kind
	// Time is the record's time (whole seconds, UTC).
	Time time.Time
	// Subject and Platform are the record's subject id and platform, or empty.
	Subject, Platform string
	// Status is an attestation's result status, a key release's decision, or empty.
	Status string
	// Policy is the record's policy id, or empty.
	Policy string
}

// NewEntry derives the entry of the leaf at logIndex, whose record is rec (the record leaf opens
// to; NewEntry does not check that), for [Index.AddEntries].
func NewEntry(logIndex uint64, leaf []byte, rec *evidence.Record) (Entry, error) {
	return newEntry(logIndex, leaf, rec)
}

// NewSignedEntry is [NewEntry] for the writer of the record: rec has just been validated and
// signed (evidence.SignFor validates a record before it signs it) and, for an attestation,
// status is the status of the result it holds, which the writer decided. The record is not
// validated again and an attestation's status is not read back out of its result JSON: on a
// verifier's attestation path those two passes over the result cost about as much as the
// rest of the index entry. The entry is the one [Catchup] derives from the log for the same
// record (the verifier's tests compare them).
func NewSignedEntry(logIndex uint64, leaf []byte, rec *evidence.Record, status string) (Entry, error) {
	if rec == nil {
		return Entry{}, errors.New("index: nil record")
	}
	return entryOf(logIndex, leaf, rec, status)
}

// newEntry derives the entry of leaf, whose record is rec.
func newEntry(logIndex uint64, leaf []byte, rec *evidence.Record) (Entry, error) {
	if rec == nil {
		return Entry{}, errors.New("index: nil record")
	}
	if err := rec.Validate(); err != nil {
		return Entry{}, fmt.Errorf("index: %w", err)
	}
	var status string
	if rec.Kind == evidence.KindAttestation {
		var r struct {
			Status json.RawMessage `json:"status"`
		}
		if json.Unmarshal(rec.Result, &r) == nil && json.Unmarshal(r.Status, &status) != nil {
			status = ""
		}
	}
	return entryOf(logIndex, leaf, rec, status)
}

// entryOf derives the entry of leaf at logIndex, whose valid record is rec; status is an
// attestation's result status (unused for other kinds).
func entryOf(logIndex uint64, leaf []byte, rec *evidence.Record, status string) (Entry, error) {
	if logIndex > math.MaxInt64 {
		return Entry{}, fmt.Errorf("index: log index %d out of range", logIndex)
	}
	e := Entry{
		LogIndex: logIndex,
		LeafHash: sha256.Sum256(leaf),
		Kind:     rec.Kind,
		Time:     rec.Time.UTC(),
	}
	if rec.Subject != nil {
		e.Subject, e.Platform = rec.Subject.ID, rec.Subject.Platform
	}
	if rec.Policy != nil {
		e.Policy = rec.Policy.ID
	}
	switch rec.Kind {
	case evidence.KindAttestation:
		e.Status = status
	case evidence.KindKeyRelease:
		if rec.KeyRelease != nil { // Validate requires it; NewSignedEntry does not validate
			e.Status = string(rec.KeyRelease.Decision)
		}
	}
	return e, nil
}

// key is the 64-bit lookup key of a free-form string: the first eight bytes of its SHA-256.
func key(s string) int64 {
	h := sha256.Sum256([]byte(s))
	return int64(binary.BigEndian.Uint64(h[:8]))
}

// Add indexes the leaf at logIndex, whose record is rec (the record leaf opens to; Add does not
// check that). See the package documentation for the rules: a no-op if the same leaf is already
// there, ErrConflict for a different leaf, ErrGap unless logIndex is 0 or logIndex-1 is indexed.
func (ix *Index) Add(ctx context.Context, logIndex uint64, leaf []byte, rec *evidence.Record) error {
	e, err := newEntry(logIndex, leaf, rec)
	if err != nil {
		return err
	}
	return ix.add(ctx, []Entry{e})
}

// AddEntries indexes consecutive entries (made by [NewEntry]) in one transaction, under the
// rules of [Index.Add] for each: a verifier group-commits the entries of its concurrent appends
// this way. Any number of entries may be added at once (they are inserted a few hundred to a
// statement). Entries that are not consecutive are refused; nothing is added then.
func (ix *Index) AddEntries(ctx context.Context, es []Entry) error {
	if len(es) == 0 {
		return nil
	}
	for i := 1; i < len(es); i++ {
		if es[i].LogIndex != es[i-1].LogIndex+1 {
			return fmt.Errorf("index: entries to add are not consecutive: %d follows %d", es[i].LogIndex, es[i-1].LogIndex)
		}
	}
	if es[len(es)-1].LogIndex > math.MaxInt64 {
		return fmt.Errorf("index: log index %d out of range", es[len(es)-1].LogIndex)
	}
	return ix.add(ctx, es)
}

// add indexes consecutive entries in one transaction, retrying when it raced another writer.
func (ix *Index) add(ctx context.Context, es []Entry) error {
	var err error
	for range maxAttempts {
		if err = ix.addTx(ctx, es); err == nil || !ix.d.raced(err) {
			break
		}
	}
	if err != nil && !errors.Is(err, ErrGap) && !errors.Is(err, ErrConflict) {
		err = fmt.Errorf("index: adding entries %d..%d: %w", es[0].LogIndex, es[len(es)-1].LogIndex, err)
	}
	return err
}

func (ix *Index) addTx(ctx context.Context, es []Entry) error {
	first, last := es[0].LogIndex, es[len(es)-1].LogIndex
	tx, err := ix.db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	if first > 0 {
		var one int
		err := tx.QueryRowContext(ctx, "SELECT 1 FROM proofline_index_entries WHERE log_index = ?"+ix.d.lockPredecessor, first-1).Scan(&one)
		if errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("%w: log index %d is not indexed, so %d cannot be", ErrGap, first-1, first)
		}
		if err != nil {
			return err
		}
	}
	rows, err := tx.QueryContext(ctx, "SELECT log_index, leaf_sha256 FROM proofline_index_entries WHERE log_index BETWEEN ? AND ? ORDER BY log_index", first, last)
	if err != nil {
		return err
	}
	present := map[uint64][]byte{}
	for rows.Next() {
		var i uint64
		var h []byte
		if err := rows.Scan(&i, &h); err != nil {
			rows.Close()
			return err
		}
		present[i] = h
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return err
	}
	var (
		b    strings.Builder
		args []any
		n    int // rows in b
	)
	insert := func() error {
		if n == 0 {
			return nil
		}
		_, err := tx.ExecContext(ctx, b.String(), args...)
		b.Reset()
		args, n = args[:0], 0
		return err
	}
	for _, e := range es {
		if h, ok := present[e.LogIndex]; ok {
			if string(h) != string(e.LeafHash[:]) {
				return fmt.Errorf("%w: log index %d holds leaf %x, not %s", ErrConflict, e.LogIndex, h, e.LeafHash)
			}
			continue
		}
		if n == 0 {
			b.WriteString("INSERT INTO proofline_index_entries (log_index, leaf_sha256, kind, time_unix, subject, subject_key, platform, status, status_key, policy, policy_key) VALUES ")
		} else {
			b.WriteString(", ")
		}
		b.WriteString("(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)")
		args = append(args, e.LogIndex, e.LeafHash[:], string(e.Kind), e.Time.Unix(),
			e.Subject, key(e.Subject), e.Platform, e.Status, key(e.Status), e.Policy, key(e.Policy))
		if n++; n == maxInsertRows {
			if err := insert(); err != nil {
				return err
			}
		}
	}
	if err := insert(); err != nil {
		return err
	}
	return tx.Commit()
}

// Next returns the lowest log index not yet indexed: the number of entries, since they are
// contiguous from 0.
func (ix *Index) Next(ctx context.Context) (uint64, error) {
	var max sql.Null[uint64]
	if err := ix.db.QueryRowContext(ctx, "SELECT MAX(log_index) FROM proofline_index_entries").Scan(&max); err != nil {
		return 0, fmt.Errorf("index: %w", err)
	}
	if !max.Valid {
		return 0, nil
	}
	return max.V + 1, nil
}

// Query selects entries. Every non-empty filter must match; the time range is From ≤ time < To,
// either bound zero for none. Results are in log order from Start.
type Query struct {
	Subject  string
	Platform string
	// Status matches an attestation's result status or a key release's decision.
	Status string
	Kind   evidence.Kind
	Policy string
	From   time.Time
	To     time.Time
	// Start is the cursor: the lowest log index to return. To page, set it to the last returned
	// entry's LogIndex + 1.
	Start uint64
	// Limit is the most entries to return: DefaultLimit when 0, at most MaxLimit.
	Limit int
}

// Query returns the entries that match q, in log order.
func (ix *Index) Query(ctx context.Context, q Query) ([]Entry, error) {
	limit := q.Limit
	switch {
	case limit < 0:
		return nil, fmt.Errorf("index: negative limit %d", limit)
	case limit == 0:
		limit = DefaultLimit
	case limit > MaxLimit:
		limit = MaxLimit
	}
	if q.Start > math.MaxInt64 {
		return nil, nil
	}
	where := []string{"log_index >= ?"}
	args := []any{q.Start}
	for _, f := range []struct {
		col, val string
		hashed   bool
	}{
		{"subject", q.Subject, true},
		{"platform", q.Platform, false},
		{"status", q.Status, true},
		{"kind", string(q.Kind), false},
		{"policy", q.Policy, true},
	} {
		if f.val == "" {
			continue
		}
		if f.hashed {
			where = append(where, f.col+"_key = ?")
			args = append(args, key(f.val))
		}
		where = append(where, f.col+" = ?")
		args = append(args, f.val)
	}
	// Record times are whole seconds t: From ≤ t ⇔ ⌈From⌉ ≤ t, and t < To ⇔ t < ⌈To⌉.
	if !q.From.IsZero() {
		where = append(where, "time_unix >= ?")
		args = append(args, ceilUnix(q.From))
	}
	if !q.To.IsZero() {
		where = append(where, "time_unix < ?")
		args = append(args, ceilUnix(q.To))
	}
	args = append(args, limit)
	rows, err := ix.db.QueryContext(ctx, "SELECT log_index, leaf_sha256, kind, time_unix, subject, platform, status, policy FROM proofline_index_entries WHERE "+
		strings.Join(where, " AND ")+" ORDER BY log_index LIMIT ?", args...)
	if err != nil {
		return nil, fmt.Errorf("index: query: %w", err)
	}
	defer rows.Close()
	var es []Entry
	for rows.Next() {
		var (
			e    Entry
			h    []byte
			kind string
			t    int64
		)
		if err := rows.Scan(&e.LogIndex, &h, &kind, &t, &e.Subject, &e.Platform, &e.Status, &e.Policy); err != nil {
			return nil, fmt.Errorf("index: query: %w", err)
		}
		if len(h) != len(e.LeafHash) {
			return nil, fmt.Errorf("index: entry %d has a %d-byte leaf hash", e.LogIndex, len(h))
		}
		copy(e.LeafHash[:], h)
		e.Kind = evidence.Kind(kind)
		e.Time = time.Unix(t, 0).UTC()
		es = append(es, e)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("index: query: %w", err)
	}
	return es, nil
}

func ceilUnix(t time.Time) int64 {
	s := t.Unix()
	if t.Nanosecond() > 0 {
		s++
	}
	return s
}
