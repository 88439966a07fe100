package log

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io/fs"
	"time"

	"github.com/proofline/proofline/internal/durable"
	"github.com/transparency-dev/tessera/api/layout"
	"github.com/transparency-dev/tessera/storage/mysql"
)

// mysqlSchema is tessera v1.0.4's storage/mysql/schema.sql (Apache-2.0, The Tessera authors) with
// ENGINE=InnoDB made explicit, plus Proofline's served-checkpoint floor. Tessera's driver expects
// the schema to exist; OpenMySQL creates it.
var mysqlSchema = []string{
	"CREATE TABLE IF NOT EXISTS `Tessera` (`id` TINYINT UNSIGNED NOT NULL, `compatibilityVersion` BIGINT UNSIGNED NOT NULL, PRIMARY KEY (`id`)) ENGINE=InnoDB",
	"INSERT IGNORE INTO `Tessera` (`id`, `compatibilityVersion`) VALUES (0, 1)",
	"CREATE TABLE IF NOT EXISTS `Checkpoint` (`id` TINYINT UNSIGNED NOT NULL, `note` MEDIUMBLOB NOT NULL, `published_at` BIGINT NOT NULL, PRIMARY KEY(`id`)) ENGINE=InnoDB",
	"CREATE TABLE IF NOT EXISTS `TreeState` (`id` TINYINT UNSIGNED NOT NULL, `size` BIGINT UNSIGNED NOT NULL, `root` TINYBLOB NOT NULL, PRIMARY KEY(`id`)) ENGINE=InnoDB",
	"CREATE TABLE IF NOT EXISTS `Subtree` (`level` TINYINT UNSIGNED NOT NULL, `index` BIGINT UNSIGNED NOT NULL, `nodes` MEDIUMBLOB NOT NULL, PRIMARY KEY(`level`, `index`)) ENGINE=InnoDB",
	"CREATE TABLE IF NOT EXISTS `TiledLeaves` (`tile_index` BIGINT UNSIGNED NOT NULL, `size` SMALLINT UNSIGNED NOT NULL, `data` LONGBLOB NOT NULL, PRIMARY KEY(`tile_index`)) ENGINE=InnoDB",
	"CREATE TABLE IF NOT EXISTS `ProoflineServedCheckpoint` (`id` TINYINT UNSIGNED NOT NULL, `size` BIGINT UNSIGNED NOT NULL, `note` MEDIUMBLOB NOT NULL, PRIMARY KEY(`id`)) ENGINE=InnoDB",
}

var mysqlTables = []string{"Tessera", "Checkpoint", "TreeState", "Subtree", "TiledLeaves", "ProoflineServedCheckpoint"}

const mysqlMinCPEvery = time.Second

// OpenMySQL opens (creating the schema if needed) the log in the database db is connected to
// (MySQL or MariaDB, InnoDB). opts.Signer and opts.Verifier are required: keep the note key out
// of the database (LoadOrGenerateKey reads one from a file). Several replicas may open the same
// database concurrently.
//
// OpenMySQL refuses a server whose commits are not durable (innodb_flush_log_at_trx_commit other
// than 1, or the binary log on with sync_binlog other than 1) and log tables that are not InnoDB:
// an acknowledged append MUST survive a crash of the server or its machine.
// Closing the Log does not close db.
func OpenMySQL(ctx context.Context, db *sql.DB, opts Options) (*Log, error) {
	if opts.Signer == nil {
		return nil, errors.New("log: OpenMySQL needs Options.Signer and Options.Verifier (see LoadOrGenerateKey)")
	}
	settings, err := durable.ReadServerSettings(ctx, db)
	if err != nil {
		return nil, fmt.Errorf("log: %w", err)
	}
	if err := settings.Check(); err != nil {
		return nil, fmt.Errorf("log: %w; otherwise a crash can lose acknowledged records", err)
	}
	var packet int64
	if err := db.QueryRowContext(ctx, "SELECT @@max_allowed_packet").Scan(&packet); err != nil {
		return nil, fmt.Errorf("log: reading server settings: %w", err)
	}
	// A full entry bundle (256 leaves, each with a 2-byte length) travels in one statement.
	fit := int((packet-64<<10)/layout.EntryBundleWidth - 2)
	switch {
	case opts.MaxLeafSize == 0:
		opts.MaxLeafSize = min(MaxLeafSize, fit)
	case opts.MaxLeafSize > fit:
		return nil, fmt.Errorf("log: Options.MaxLeafSize %d does not fit the server's max_allowed_packet %d; raise it to at least %d", opts.MaxLeafSize, packet, 256*(opts.MaxLeafSize+2)+64<<10)
	}
	opts, err = opts.withDefaults(mysqlMinCPEvery)
	if err != nil {
		return nil, err
	}
	for _, s := range mysqlSchema {
		if _, err := db.ExecContext(ctx, s); err != nil {
			return nil, fmt.Errorf("log: creating schema: %w", err)
		}
	}
	if err := durable.CheckInnoDB(ctx, db, mysqlTables...); err != nil {
		return nil, fmt.Errorf("log: %w", err)
	}
	driver, err := mysql.New(ctx, db)
	if err != nil {
		return nil, fmt.Errorf("log: %w", err)
	}
	return start(ctx, driver, NewMySQLReader(db), opts)
}

// MySQLReader reads a MySQL log for Fsck, with read-only queries; it never creates the schema.
type MySQLReader struct {
	db *sql.DB
}

// NewMySQLReader returns a reader of the log in the database db is connected to.
func NewMySQLReader(db *sql.DB) *MySQLReader { return &MySQLReader{db: db} }

func (r *MySQLReader) blob(ctx context.Context, query string, args ...any) ([]byte, error) {
	var b []byte
	err := r.db.QueryRowContext(ctx, query, args...).Scan(&b)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fs.ErrNotExist
	}
	return b, err
}

// ReadCheckpoint returns the published checkpoint note.
func (r *MySQLReader) ReadCheckpoint(ctx context.Context) ([]byte, error) {
	return r.blob(ctx, "SELECT `note` FROM `Checkpoint` WHERE `id` = 0")
}

// ReadEntryBundle returns entry bundle index. Like tessera's driver it returns the stored bundle,
// which may hold more than p entries (p = 0 asks for a full bundle).
func (r *MySQLReader) ReadEntryBundle(ctx context.Context, index uint64, p uint8) ([]byte, error) {
	var n int
	var b []byte
	err := r.db.QueryRowContext(ctx, "SELECT `size`, `data` FROM `TiledLeaves` WHERE `tile_index` = ?", index).Scan(&n, &b)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		return nil, fs.ErrNotExist
	case err != nil:
		return nil, err
	case p == 0 && n < layout.EntryBundleWidth || n < int(p):
		return nil, fmt.Errorf("entry bundle %d holds %d entries, want %d: %w", index, n, p, fs.ErrNotExist)
	}
	return b, nil
}

// ReadTile returns the stored hash tile at level, index, which may hold more than p hashes.
func (r *MySQLReader) ReadTile(ctx context.Context, level, index uint64, p uint8) ([]byte, error) {
	return r.blob(ctx, "SELECT `nodes` FROM `Subtree` WHERE `level` = ? AND `index` = ?", level, index)
}

// ReadServedCheckpoint returns the largest checkpoint any replica has served, or an error
// wrapping fs.ErrNotExist if none has.
func (r *MySQLReader) ReadServedCheckpoint(ctx context.Context) ([]byte, error) {
	return r.blob(ctx, "SELECT `note` FROM `ProoflineServedCheckpoint` WHERE `id` = 0")
}

// raiseFloor stores cp unless another replica stored a larger one; autocommit on a server that
// passed durable.ServerSettings.Check makes it durable when ExecContext returns.
func (r *MySQLReader) raiseFloor(ctx context.Context, cp Checkpoint) error {
	// MariaDB and MySQL evaluate ON DUPLICATE KEY UPDATE assignments left to right: note is
	// compared against the old size before size is raised.
	_, err := r.db.ExecContext(ctx, "INSERT INTO `ProoflineServedCheckpoint` (`id`, `size`, `note`) VALUES (0, ?, ?) "+
		"ON DUPLICATE KEY UPDATE `note` = IF(VALUES(`size`) > `size`, VALUES(`note`), `note`), `size` = GREATEST(`size`, VALUES(`size`))",
		cp.Size, cp.Note)
	return err
}
