package alert

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"time"

	_ "modernc.org/sqlite" // the "sqlite" database/sql driver
)

// DBFileName is the outbox's SQLite file in the data directory.
const DBFileName = "alerts.db"

// Outbox holds every alert once per destination until it is delivered, in one table,
// proofline_alert_outbox, of SQLite or MySQL/MariaDB; named state beside it is in
// proofline_alert_state. Keys (alert id, destination, state name) compare byte for byte. The
// schema is versioned (proofline_alert_schema) and migrated when the outbox is opened. Put MUST NOT return before the rows are
// durable (SQLite synchronous=FULL; InnoDB with innodb_flush_log_at_trx_commit=1, which the
// evidence log already requires of a shared database).
//
// Replicas sharing the database claim rows with a lease (Claim): a row is sent by the replica
// holding an unexpired lease on it, so two replicas do not deliver the same alert at once; a
// replica that dies mid-delivery leaves a lease that expires, and another sends the row again
// (at least once).
type Outbox struct {
	db      *sql.DB
	mysql   bool
	closeDB bool
}

// The schema's migrations: migrations[v] brings it from version v to v+1 (the version is kept
// in proofline_alert_schema; a database made before it existed is at 0 and its tables are
// there, hence IF NOT EXISTS). Statements are idempotent, since MySQL commits DDL implicitly
// and a crash can stop a migration half-way.
var (
	sqliteMigrations = [][]string{
		{
			`CREATE TABLE IF NOT EXISTS proofline_alert_outbox (
				id TEXT NOT NULL,
				destination TEXT NOT NULL,
				body BLOB NOT NULL,
				created_unix INTEGER NOT NULL,
				attempts INTEGER NOT NULL DEFAULT 0,
				next_unix INTEGER NOT NULL,
				lease_owner TEXT NOT NULL DEFAULT '',
				lease_until_unix INTEGER NOT NULL DEFAULT 0,
				delivered_unix INTEGER,
				last_error TEXT NOT NULL DEFAULT '',
				PRIMARY KEY (id, destination)
			) WITHOUT ROWID`,
			"CREATE INDEX IF NOT EXISTS proofline_alert_outbox_due ON proofline_alert_outbox (delivered_unix, next_unix)",
			`CREATE TABLE IF NOT EXISTS proofline_alert_state (name TEXT NOT NULL PRIMARY KEY, value BLOB NOT NULL) WITHOUT ROWID`,
		},
		{}, // SQLite compares TEXT byte for byte already
	}
	mysqlMigrations = [][]string{
		{
			`CREATE TABLE IF NOT EXISTS proofline_alert_outbox (
				id VARCHAR(64) NOT NULL,
				destination VARCHAR(255) NOT NULL,
				body MEDIUMBLOB NOT NULL,
				created_unix BIGINT NOT NULL,
				attempts INT NOT NULL DEFAULT 0,
				next_unix BIGINT NOT NULL,
				lease_owner VARCHAR(64) NOT NULL DEFAULT '',
				lease_until_unix BIGINT NOT NULL DEFAULT 0,
				delivered_unix BIGINT NULL,
				last_error TEXT NOT NULL,
				PRIMARY KEY (id, destination),
				INDEX proofline_alert_outbox_due (delivered_unix, next_unix)
			) ENGINE=InnoDB`,
			`CREATE TABLE IF NOT EXISTS proofline_alert_state (name VARCHAR(128) NOT NULL PRIMARY KEY, value MEDIUMBLOB NOT NULL) ENGINE=InnoDB`,
		},
		// Keys compared byte for byte: VARCHAR took the server's collation, usually
		// case-insensitive, so that two subjects or destinations differing in case shared a row;
		// and state names get room for the longest subjects (MaxStateName).
		{
			"ALTER TABLE proofline_alert_outbox MODIFY id VARBINARY(64) NOT NULL, MODIFY destination VARBINARY(255) NOT NULL",
			"ALTER TABLE proofline_alert_state MODIFY name VARBINARY(512) NOT NULL",
		},
	}
)

// schemaVersion is the outbox schema this binary writes: len of the migrations.
const schemaVersion = 2

// MaxStateName is the longest name SetState takes, in bytes.
const MaxStateName = 512

// OpenSQLite opens the outbox in the SQLite file at path (DBFileName in the data directory),
// creating it as needed.
func OpenSQLite(ctx context.Context, path string) (*Outbox, error) {
	if strings.ContainsRune(path, '?') {
		return nil, fmt.Errorf("alert: SQLite path %q contains '?'", path)
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, fmt.Errorf("alert: %w", err)
	}
	// _txlock=immediate: a claim reads then writes in one transaction; taking the write lock at
	// BEGIN makes a concurrent writer wait on the busy timeout instead of failing with SQLITE_BUSY.
	db, err := sql.Open("sqlite", abs+"?_busy_timeout=10000&_journal_mode=WAL&_synchronous=FULL&_txlock=immediate")
	if err != nil {
		return nil, fmt.Errorf("alert: opening %s: %w", path, err)
	}
	o, err := open(ctx, db, false)
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("alert: %s: %w", path, err)
	}
	o.closeDB = true
	return o, nil
}

// OpenMySQL opens the outbox in the database db is connected to (MySQL or MariaDB, InnoDB);
// replicas may share it. Closing the Outbox does not close db.
func OpenMySQL(ctx context.Context, db *sql.DB) (*Outbox, error) {
	o, err := open(ctx, db, true)
	if err != nil {
		return nil, fmt.Errorf("alert: %w", err)
	}
	return o, nil
}

func open(ctx context.Context, db *sql.DB, mysql bool) (*Outbox, error) {
	migrations, serialize := sqliteMigrations, serializeSQLite
	if mysql {
		migrations, serialize = mysqlMigrations, serializeMySQL
	}
	if len(migrations) != schemaVersion {
		return nil, fmt.Errorf("this binary's %d outbox migrations disagree with its schema version %d (a build error)", len(migrations), schemaVersion)
	}
	err := serialize(ctx, db, func(q querier) error {
		if _, err := q.ExecContext(ctx, "CREATE TABLE IF NOT EXISTS proofline_alert_schema (id INTEGER NOT NULL PRIMARY KEY, version INTEGER NOT NULL)"); err != nil {
			return fmt.Errorf("creating the alert schema table: %w", err)
		}
		var v int
		switch err := q.QueryRowContext(ctx, "SELECT version FROM proofline_alert_schema WHERE id = 0").Scan(&v); {
		case errors.Is(err, sql.ErrNoRows):
			if _, err := q.ExecContext(ctx, "INSERT INTO proofline_alert_schema (id, version) VALUES (0, 0)"); err != nil {
				return fmt.Errorf("initialising the alert schema version: %w", err)
			}
		case err != nil:
			return fmt.Errorf("reading the alert schema version: %w", err)
		}
		if v > schemaVersion {
			return fmt.Errorf("the alert outbox has schema version %d, newer than this binary's %d: upgrade the binary", v, schemaVersion)
		}
		for ; v < schemaVersion; v++ {
			for _, stmt := range migrations[v] {
				if _, err := q.ExecContext(ctx, stmt); err != nil {
					return fmt.Errorf("migrating the alert outbox to version %d: %w", v+1, err)
				}
			}
			if _, err := q.ExecContext(ctx, "UPDATE proofline_alert_schema SET version = ? WHERE id = 0", v+1); err != nil {
				return fmt.Errorf("recording alert schema version %d: %w", v+1, err)
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return &Outbox{db: db, mysql: mysql}, nil
}

// querier is what *sql.Conn and *sql.Tx both offer.
type querier interface {
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

// serializeSQLite runs f in one transaction: SQLite DDL is transactional, and BEGIN IMMEDIATE
// (the DSN's _txlock) excludes other writers, other processes included.
func serializeSQLite(ctx context.Context, db *sql.DB, f func(querier) error) error {
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	if err := f(tx); err != nil {
		return err
	}
	return tx.Commit()
}

// serializeMySQL runs f holding a named lock, so that replicas starting together migrate once
// (DDL is not transactional on MySQL). GET_LOCK belongs to the connection: f runs on it.
func serializeMySQL(ctx context.Context, db *sql.DB, f func(querier) error) error {
	conn, err := db.Conn(ctx)
	if err != nil {
		return err
	}
	defer conn.Close()
	var got sql.NullInt64
	if err := conn.QueryRowContext(ctx, "SELECT GET_LOCK('proofline_alert_schema', 30)").Scan(&got); err != nil {
		return err
	}
	if got.Int64 != 1 {
		return errors.New("timed out waiting for another process migrating the alert outbox schema (named lock proofline_alert_schema)")
	}
	defer conn.ExecContext(context.WithoutCancel(ctx), "DO RELEASE_LOCK('proofline_alert_schema')")
	return f(conn)
}

// Close closes the database if OpenSQLite opened it.
func (o *Outbox) Close() error {
	if o.closeDB {
		return o.db.Close()
	}
	return nil
}

// Put stores a for each destination, due at now, in one transaction. A row that is already
// there (the same alert id for the same destination, delivered or not) is left as it is: a
// re-emit is not a new alert. It reports how many rows were new.
func (o *Outbox) Put(ctx context.Context, a *Alert, destinations []string, now time.Time) (int, error) {
	if a.ID == "" {
		return 0, errors.New("alert: Put of an alert without an id (Finalize it)")
	}
	body, err := a.Marshal()
	if err != nil {
		return 0, err
	}
	tx, err := o.db.BeginTx(ctx, nil)
	if err != nil {
		return 0, fmt.Errorf("alert: outbox: %w", err)
	}
	defer tx.Rollback()
	insert := "INSERT OR IGNORE INTO"
	if o.mysql {
		insert = "INSERT IGNORE INTO"
	}
	n := 0
	for _, d := range destinations {
		res, err := tx.ExecContext(ctx, insert+" proofline_alert_outbox (id, destination, body, created_unix, attempts, next_unix, lease_owner, lease_until_unix, last_error) VALUES (?, ?, ?, ?, 0, ?, '', 0, '')",
			a.ID, d, body, now.Unix(), now.Unix())
		if err != nil {
			return 0, fmt.Errorf("alert: outbox: %w", err)
		}
		if k, err := res.RowsAffected(); err == nil {
			n += int(k)
		}
	}
	if err := tx.Commit(); err != nil {
		return 0, fmt.Errorf("alert: outbox: %w", err)
	}
	return n, nil
}

// Entry is one undelivered alert for one destination.
type Entry struct {
	Alert       Alert
	Body        []byte // the alert's JSON exactly as stored: what is sent and signed
	Destination string
	Attempts    int
}

// Claim leases up to limit rows for destination that are due at now and not leased by anyone
// else, to owner until now+lease, and returns them oldest first. A row is claimed only if the
// conditional UPDATE that takes the lease changes it: replicas racing for a row get it once.
func (o *Outbox) Claim(ctx context.Context, destination, owner string, now time.Time, lease time.Duration, limit int) ([]Entry, error) {
	rows, err := o.db.QueryContext(ctx, `SELECT id, body, attempts FROM proofline_alert_outbox
		WHERE destination = ? AND delivered_unix IS NULL AND next_unix <= ? AND lease_until_unix <= ?
		ORDER BY created_unix, id LIMIT ?`, destination, now.Unix(), now.Unix(), limit)
	if err != nil {
		return nil, fmt.Errorf("alert: outbox: %w", err)
	}
	var cands []Entry
	for rows.Next() {
		var e Entry
		var id string
		if err := rows.Scan(&id, &e.Body, &e.Attempts); err != nil {
			rows.Close()
			return nil, fmt.Errorf("alert: outbox: %w", err)
		}
		e.Destination = destination
		e.Alert.ID = id
		cands = append(cands, e)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("alert: outbox: %w", err)
	}
	var out []Entry
	for _, e := range cands {
		res, err := o.db.ExecContext(ctx, `UPDATE proofline_alert_outbox SET lease_owner = ?, lease_until_unix = ?
			WHERE id = ? AND destination = ? AND delivered_unix IS NULL AND lease_until_unix <= ?`,
			owner, now.Add(lease).Unix(), e.Alert.ID, destination, now.Unix())
		if err != nil {
			return out, fmt.Errorf("alert: outbox: %w", err)
		}
		if k, err := res.RowsAffected(); err != nil || k != 1 {
			continue // another replica took it
		}
		id := e.Alert.ID
		if err := json.Unmarshal(e.Body, &e.Alert); err != nil || e.Alert.ID != id {
			// Not ours to fix: mark it so that it is not retried forever, and say why.
			o.db.ExecContext(ctx, "UPDATE proofline_alert_outbox SET delivered_unix = ?, last_error = ? WHERE id = ? AND destination = ?",
				now.Unix(), "undecodable body", id, destination)
			continue
		}
		out = append(out, e)
	}
	return out, nil
}

// Delivered marks e delivered (if owner still holds its lease).
func (o *Outbox) Delivered(ctx context.Context, e Entry, owner string, now time.Time) error {
	_, err := o.db.ExecContext(ctx, `UPDATE proofline_alert_outbox SET delivered_unix = ?, attempts = attempts + 1, lease_owner = '', lease_until_unix = 0, last_error = ''
		WHERE id = ? AND destination = ? AND lease_owner = ?`, now.Unix(), e.Alert.ID, e.Destination, owner)
	if err != nil {
		return fmt.Errorf("alert: outbox: %w", err)
	}
	return nil
}

// Failed records a failed attempt and makes e due again at next.
func (o *Outbox) Failed(ctx context.Context, e Entry, owner string, next time.Time, cause error) error {
	msg := cause.Error()
	if len(msg) > 1000 {
		msg = msg[:1000]
	}
	_, err := o.db.ExecContext(ctx, `UPDATE proofline_alert_outbox SET attempts = attempts + 1, next_unix = ?, lease_owner = '', lease_until_unix = 0, last_error = ?
		WHERE id = ? AND destination = ? AND lease_owner = ?`, next.Unix(), msg, e.Alert.ID, e.Destination, owner)
	if err != nil {
		return fmt.Errorf("alert: outbox: %w", err)
	}
	return nil
}

// Release gives up owner's lease on rows it claimed but did not try to send: they are due again
// at once, their attempts unchanged.
func (o *Outbox) Release(ctx context.Context, es []Entry, owner string) error {
	for _, e := range es {
		if _, err := o.db.ExecContext(ctx, `UPDATE proofline_alert_outbox SET lease_owner = '', lease_until_unix = 0
			WHERE id = ? AND destination = ? AND lease_owner = ? AND delivered_unix IS NULL`, e.Alert.ID, e.Destination, owner); err != nil {
			return fmt.Errorf("alert: outbox: %w", err)
		}
	}
	return nil
}

// Pending counts the undelivered rows for the given destinations.
func (o *Outbox) Pending(ctx context.Context, destinations []string) (int, error) {
	total := 0
	for _, d := range destinations {
		var n int
		if err := o.db.QueryRowContext(ctx, "SELECT COUNT(*) FROM proofline_alert_outbox WHERE destination = ? AND delivered_unix IS NULL", d).Scan(&n); err != nil {
			return 0, fmt.Errorf("alert: outbox: %w", err)
		}
		total += n
	}
	return total, nil
}

// NextDue returns the earliest time a row for one of destinations is due (next attempt or lease
// expiry), and false when none is pending.
func (o *Outbox) NextDue(ctx context.Context, destinations []string) (time.Time, bool, error) {
	var best int64
	found := false
	for _, d := range destinations {
		var v sql.NullInt64
		if err := o.db.QueryRowContext(ctx, `SELECT MIN(CASE WHEN lease_until_unix > next_unix THEN lease_until_unix ELSE next_unix END)
			FROM proofline_alert_outbox WHERE destination = ? AND delivered_unix IS NULL`, d).Scan(&v); err != nil {
			return time.Time{}, false, fmt.Errorf("alert: outbox: %w", err)
		}
		if v.Valid && (!found || v.Int64 < best) {
			best, found = v.Int64, true
		}
	}
	return time.Unix(best, 0), found, nil
}

// Sweep deletes rows delivered before cutoff.
func (o *Outbox) Sweep(ctx context.Context, cutoff time.Time) (int64, error) {
	res, err := o.db.ExecContext(ctx, "DELETE FROM proofline_alert_outbox WHERE delivered_unix IS NOT NULL AND delivered_unix < ?", cutoff.Unix())
	if err != nil {
		return 0, fmt.Errorf("alert: outbox: %w", err)
	}
	return res.RowsAffected()
}

// State reads a named value kept beside the outbox (the self-check's verified size, the last
// successful attestation of each subject…); ok is false when it is not set.
func (o *Outbox) State(ctx context.Context, name string) (value []byte, ok bool, err error) {
	err = o.db.QueryRowContext(ctx, "SELECT value FROM proofline_alert_state WHERE name = ?", name).Scan(&value)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		return nil, false, nil
	case err != nil:
		return nil, false, fmt.Errorf("alert: state %s: %w", name, err)
	}
	return value, true, nil
}

// SetState stores a named value, replacing the previous one. Names are compared byte for byte
// and hold at most MaxStateName bytes.
func (o *Outbox) SetState(ctx context.Context, name string, value []byte) error {
	if len(name) > MaxStateName {
		return fmt.Errorf("alert: state %.40q…: the name is longer than %d bytes", name, MaxStateName)
	}
	q := "INSERT INTO proofline_alert_state (name, value) VALUES (?, ?) ON CONFLICT(name) DO UPDATE SET value = excluded.value"
	if o.mysql {
		q = "INSERT INTO proofline_alert_state (name, value) VALUES (?, ?) ON DUPLICATE KEY UPDATE value = VALUES(value)"
	}
	if _, err := o.db.ExecContext(ctx, q, name, value); err != nil {
		return fmt.Errorf("alert: state %s: %w", name, err)
	}
	return nil
}

// DeleteState deletes a named value if it still holds value (so that a value set meanwhile is
// kept), and reports whether it did.
func (o *Outbox) DeleteState(ctx context.Context, name string, value []byte) (bool, error) {
	res, err := o.db.ExecContext(ctx, "DELETE FROM proofline_alert_state WHERE name = ? AND value = ?", name, value)
	if err != nil {
		return false, fmt.Errorf("alert: state %s: %w", name, err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return false, fmt.Errorf("alert: state %s: %w", name, err)
	}
	return n == 1, nil
}

// States lists the values whose names start with prefix (which must hold no '%' or '_').
func (o *Outbox) States(ctx context.Context, prefix string) (map[string][]byte, error) {
	rows, err := o.db.QueryContext(ctx, "SELECT name, value FROM proofline_alert_state WHERE name LIKE ?", prefix+"%")
	if err != nil {
		return nil, fmt.Errorf("alert: state: %w", err)
	}
	defer rows.Close()
	out := map[string][]byte{}
	for rows.Next() {
		var name string
		var v []byte
		if err := rows.Scan(&name, &v); err != nil {
			return nil, fmt.Errorf("alert: state: %w", err)
		}
		out[name] = v
	}
	return out, rows.Err()
}
