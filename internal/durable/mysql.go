package durable

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
)

// ErrNotDurable: the database server may lose a transaction after its COMMIT returned.
var ErrNotDurable = errors.New("commits are not durable")

// ServerSettings are the MySQL/MariaDB server variables that decide whether an InnoDB
// transaction whose COMMIT returned survives a crash of the server or of its machine
// (https://mariadb.com/kb/en/binary-log-group-commit-and-innodb-flushing-performance/).
type ServerSettings struct {
	// FlushLogAtTrxCommit is @@innodb_flush_log_at_trx_commit; only 1 syncs the redo log at
	// every commit.
	FlushLogAtTrxCommit int
	// LogBin is @@log_bin. With the binary log on, a commit is a two-phase commit between InnoDB
	// and the binary log, and crash recovery rolls back every prepared transaction that is not
	// in the binary log: the binary log decides what survives.
	LogBin bool
	// SyncBinlog is @@sync_binlog; only 1 syncs the binary log at every commit.
	SyncBinlog int
}

// ReadServerSettings reads the server variables of ServerSettings.
func ReadServerSettings(ctx context.Context, db *sql.DB) (ServerSettings, error) {
	var s ServerSettings
	var logBin int
	if err := db.QueryRowContext(ctx, "SELECT @@innodb_flush_log_at_trx_commit, @@log_bin, @@sync_binlog").
		Scan(&s.FlushLogAtTrxCommit, &logBin, &s.SyncBinlog); err != nil {
		return s, fmt.Errorf("reading server settings: %w", err)
	}
	s.LogBin = logBin != 0
	return s, nil
}

// Check returns an error wrapping ErrNotDurable, saying which setting to change, unless every
// commit is synced before COMMIT returns: innodb_flush_log_at_trx_commit=1 and, when the binary
// log is on, sync_binlog=1.
func (s ServerSettings) Check() error {
	if s.FlushLogAtTrxCommit != 1 {
		return fmt.Errorf("%w: the server has innodb_flush_log_at_trx_commit=%d; set it to 1", ErrNotDurable, s.FlushLogAtTrxCommit)
	}
	if s.LogBin && s.SyncBinlog != 1 {
		return fmt.Errorf("%w: the server has the binary log on (log_bin) with sync_binlog=%d; set sync_binlog=1 (or turn the binary log off), since crash recovery rolls back committed transactions that an unsynced binary log lost", ErrNotDurable, s.SyncBinlog)
	}
	return nil
}

// CheckInnoDB returns an error naming the first of tables, in the database db is connected to,
// that is missing or not InnoDB: another engine (MyISAM, MEMORY, …) may have no transactions and
// no durable commits, whatever ServerSettings says. CREATE TABLE IF NOT EXISTS … ENGINE=InnoDB
// leaves an existing table's engine as it was, so check after creating.
func CheckInnoDB(ctx context.Context, db *sql.DB, tables ...string) error {
	rows, err := db.QueryContext(ctx, "SELECT TABLE_NAME, ENGINE FROM information_schema.TABLES WHERE TABLE_SCHEMA = DATABASE()")
	if err != nil {
		return fmt.Errorf("reading table engines: %w", err)
	}
	defer rows.Close()
	engines := map[string]string{}
	for rows.Next() {
		var name, engine sql.NullString
		if err := rows.Scan(&name, &engine); err != nil {
			return fmt.Errorf("reading table engines: %w", err)
		}
		engines[name.String] = engine.String
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("reading table engines: %w", err)
	}
	for _, t := range tables {
		if e := engines[t]; !strings.EqualFold(e, "InnoDB") {
			return fmt.Errorf("%w: table %s uses engine %q; it needs InnoDB (transactions, durable commits)", ErrNotDurable, t, e)
		}
	}
	return nil
}
