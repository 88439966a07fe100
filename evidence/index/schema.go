package index

import (
	"context"
	"database/sql"
	"errors"
	"fmt"

	"github.com/go-sql-driver/mysql"
	"modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"
)

// dialect is what differs between the engines.
type dialect struct {
	name string
	// migrations[v] brings the schema from version v to v+1. Statements are idempotent (IF NOT
	// EXISTS), since MySQL commits DDL implicitly and a crash can stop a migration half-way.
	migrations [][]string
	// lockPredecessor is appended to the read of entry n-1 in Add: on InnoDB a shared lock, so
	// that a concurrent Rebuild's emptying of the table waits for the Add to commit (or the Add
	// for it) and never leaves entry n without n-1. SQLite serialises writers at BEGIN IMMEDIATE.
	lockPredecessor string
	// empty removes every entry.
	empty string
	// raced reports an error that a retry of the transaction can resolve: a duplicate key (a
	// concurrent Add of the same entry committed first) or a deadlock victim.
	raced func(error) bool
	// serialize runs f with no other process migrating the same schema.
	serialize func(ctx context.Context, db *sql.DB, f func(ctx context.Context, q querier) error) error
}

// querier is what *sql.Conn and *sql.Tx both offer.
type querier interface {
	ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error)
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

// schemaVersion is the version this binary writes: len(migrations).
const schemaVersion = 1

var mysqlDialect = dialect{
	name: "mysql",
	migrations: [][]string{{
		`CREATE TABLE IF NOT EXISTS proofline_index_entries (
			log_index BIGINT UNSIGNED NOT NULL,
			leaf_sha256 BINARY(32) NOT NULL,
			kind VARBINARY(64) NOT NULL,
			time_unix BIGINT NOT NULL,
			subject MEDIUMBLOB NOT NULL,
			subject_key BIGINT NOT NULL,
			platform VARBINARY(64) NOT NULL,
			status MEDIUMBLOB NOT NULL,
			status_key BIGINT NOT NULL,
			policy MEDIUMBLOB NOT NULL,
			policy_key BIGINT NOT NULL,
			PRIMARY KEY (log_index),
			INDEX proofline_index_by_subject (subject_key, log_index),
			INDEX proofline_index_by_platform (platform, log_index),
			INDEX proofline_index_by_status (status_key, log_index),
			INDEX proofline_index_by_kind (kind, log_index),
			INDEX proofline_index_by_policy (policy_key, log_index),
			INDEX proofline_index_by_time (time_unix, log_index)
		) ENGINE=InnoDB`,
	}},
	lockPredecessor: " LOCK IN SHARE MODE",
	// TRUNCATE drops and recreates the table (fast at any size) and waits on the metadata lock
	// for transactions that touched it; DELETE would write undo for every row.
	empty: "TRUNCATE TABLE proofline_index_entries",
	raced: func(err error) bool {
		var me *mysql.MySQLError
		return errors.As(err, &me) && (me.Number == 1062 || me.Number == 1213)
	},
	serialize: func(ctx context.Context, db *sql.DB, f func(context.Context, querier) error) error {
		// DDL is not transactional on MySQL: replicas starting together take a named lock instead.
		// GET_LOCK belongs to the connection, so hold one connection throughout.
		conn, err := db.Conn(ctx)
		if err != nil {
			return err
		}
		defer conn.Close()
		var got sql.NullInt64
		if err := conn.QueryRowContext(ctx, "SELECT GET_LOCK('proofline_index_schema', 30)").Scan(&got); err != nil {
			return err
		}
		if got.Int64 != 1 {
			return errors.New("timed out waiting for another process migrating the index schema (named lock proofline_index_schema)")
		}
		defer conn.ExecContext(context.WithoutCancel(ctx), "DO RELEASE_LOCK('proofline_index_schema')")
		return f(ctx, conn)
	},
}

var sqliteDialect = dialect{
	name: "sqlite",
	migrations: [][]string{{
		// log_index is the rowid: entries are stored in log order.
		`CREATE TABLE IF NOT EXISTS proofline_index_entries (
			log_index INTEGER PRIMARY KEY,
			leaf_sha256 BLOB NOT NULL,
			kind TEXT NOT NULL,
			time_unix INTEGER NOT NULL,
			subject TEXT NOT NULL,
			subject_key INTEGER NOT NULL,
			platform TEXT NOT NULL,
			status TEXT NOT NULL,
			status_key INTEGER NOT NULL,
			policy TEXT NOT NULL,
			policy_key INTEGER NOT NULL
		)`,
		"CREATE INDEX IF NOT EXISTS proofline_index_by_subject ON proofline_index_entries (subject_key, log_index)",
		"CREATE INDEX IF NOT EXISTS proofline_index_by_platform ON proofline_index_entries (platform, log_index)",
		"CREATE INDEX IF NOT EXISTS proofline_index_by_status ON proofline_index_entries (status_key, log_index)",
		"CREATE INDEX IF NOT EXISTS proofline_index_by_kind ON proofline_index_entries (kind, log_index)",
		"CREATE INDEX IF NOT EXISTS proofline_index_by_policy ON proofline_index_entries (policy_key, log_index)",
		"CREATE INDEX IF NOT EXISTS proofline_index_by_time ON proofline_index_entries (time_unix, log_index)",
	}},
	empty: "DELETE FROM proofline_index_entries", // SQLite's truncate optimisation applies
	raced: func(err error) bool {
		var se *sqlite.Error
		return errors.As(err, &se) && se.Code() == sqlite3.SQLITE_CONSTRAINT_PRIMARYKEY
	},
	serialize: func(ctx context.Context, db *sql.DB, f func(context.Context, querier) error) error {
		// SQLite DDL is transactional, and BEGIN IMMEDIATE (the DSN's _txlock) excludes other
		// writers, other processes included.
		tx, err := db.BeginTx(ctx, nil)
		if err != nil {
			return err
		}
		defer tx.Rollback()
		if err := f(ctx, tx); err != nil {
			return err
		}
		return tx.Commit()
	},
}

// migrate creates or upgrades the schema to schemaVersion.
func migrate(ctx context.Context, db *sql.DB, d dialect) error {
	if len(d.migrations) != schemaVersion {
		return fmt.Errorf("this binary's %d index migrations disagree with its schema version %d (a build error)", len(d.migrations), schemaVersion)
	}
	return d.serialize(ctx, db, func(ctx context.Context, q querier) error {
		if _, err := q.ExecContext(ctx, "CREATE TABLE IF NOT EXISTS proofline_index_schema (id INTEGER NOT NULL PRIMARY KEY, version INTEGER NOT NULL)"); err != nil {
			return fmt.Errorf("creating the schema table: %w", err)
		}
		var v int
		switch err := q.QueryRowContext(ctx, "SELECT version FROM proofline_index_schema WHERE id = 0").Scan(&v); {
		case errors.Is(err, sql.ErrNoRows):
			if _, err := q.ExecContext(ctx, "INSERT INTO proofline_index_schema (id, version) VALUES (0, 0)"); err != nil {
				return fmt.Errorf("initialising the schema version: %w", err)
			}
		case err != nil:
			return fmt.Errorf("reading the schema version: %w", err)
		}
		if v > schemaVersion {
			return fmt.Errorf("the index has schema version %d, newer than this binary's %d: upgrade the binary, or rebuild the index into an empty database", v, schemaVersion)
		}
		for ; v < schemaVersion; v++ {
			for _, s := range d.migrations[v] {
				if _, err := q.ExecContext(ctx, s); err != nil {
					return fmt.Errorf("migrating the schema to version %d: %w", v+1, err)
				}
			}
			if _, err := q.ExecContext(ctx, "UPDATE proofline_index_schema SET version = ? WHERE id = 0", v+1); err != nil {
				return fmt.Errorf("recording schema version %d: %w", v+1, err)
			}
		}
		return nil
	})
}
