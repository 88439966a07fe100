package log

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/transparency-dev/tessera/api/layout"
	"golang.org/x/mod/sumdb/note"

	"github.com/proofline/proofline/internal/mysqltest"
)

const testOrigin = "proofline.example/log-test"

// Helper processes: the test binary re-executes itself with envHelper set to a mode, and
// TestMain runs that mode instead of the tests. envBackend, envDir, envDSN and envKey say which
// log to open.
const (
	envHelper  = "PROOFLINE_LOG_TEST_HELPER"
	envBackend = "PROOFLINE_LOG_TEST_BACKEND"
	envDir     = "PROOFLINE_LOG_TEST_DIR"
	envDSN     = "PROOFLINE_LOG_TEST_DSN"
	envKey     = "PROOFLINE_LOG_TEST_KEY"
)

func TestMain(m *testing.M) {
	if mode := os.Getenv(envHelper); mode != "" {
		os.Exit(runHelper(mode))
	}
	os.Exit(m.Run())
}

// fixture is one log's storage, which a test can open, reopen, read behind the Log's back and
// tamper with.
type fixture struct {
	backend  string
	signer   note.Signer
	verifier note.Verifier
	reader   Reader
	open     func(ctx context.Context, opts Options) (*Log, error)
	// env opens the same log in a helper process.
	env []string
	// cpInterval is the shortest checkpoint interval the backend allows.
	cpInterval time.Duration
	store      storageEditor
}

// storageEditor edits stored resources directly, the way an attacker with access to the storage
// would.
type storageEditor interface {
	bundle(t testing.TB, index uint64, p uint8) []byte
	setBundle(t testing.TB, index uint64, p uint8, data []byte)
	tile(t testing.TB, level, index uint64, p uint8) []byte
	setTile(t testing.TB, level, index uint64, p uint8, data []byte)
	// rollback makes cp the log's latest checkpoint and tree state, as restoring an old backup
	// of everything but the served floor would.
	rollback(t testing.TB, cp Checkpoint)
}

var backends = []struct {
	name string
	new  func(t testing.TB) *fixture
}{
	{"posix", newPOSIXFixture},
	{"mysql", newMySQLFixture},
}

func newPOSIXFixture(t testing.TB) *fixture {
	dir := t.TempDir()
	s, v, err := LoadOrGenerateKey(filepath.Join(dir, posixKeyFile), testOrigin)
	if err != nil {
		t.Fatal(err)
	}
	return &fixture{
		backend:  "posix",
		signer:   s,
		verifier: v,
		reader:   NewPOSIXReader(dir),
		open: func(ctx context.Context, opts Options) (*Log, error) {
			return OpenPOSIX(ctx, dir, opts)
		},
		env:        []string{envBackend + "=posix", envDir + "=" + dir},
		cpInterval: posixMinCPEvery,
		store:      posixEditor{dir},
	}
}

func newMySQLFixture(t testing.TB) *fixture {
	dsn := mysqltest.NewDatabase(t)
	db := mysqltest.Open(t, dsn)
	keyPath := filepath.Join(t.TempDir(), "note.key")
	s, v, err := LoadOrGenerateKey(keyPath, testOrigin)
	if err != nil {
		t.Fatal(err)
	}
	return &fixture{
		backend:  "mysql",
		signer:   s,
		verifier: v,
		reader:   NewMySQLReader(db),
		open: func(ctx context.Context, opts Options) (*Log, error) {
			opts.Signer, opts.Verifier = s, v
			return OpenMySQL(ctx, db, opts)
		},
		env:        []string{envBackend + "=mysql", envDSN + "=" + dsn, envKey + "=" + keyPath},
		cpInterval: mysqlMinCPEvery,
		store:      mysqlEditor{db},
	}
}

// openLog opens f's log with test options and closes it when the test ends.
func (f *fixture) openLog(t testing.TB, opts Options) *Log {
	t.Helper()
	if opts.CheckpointInterval == 0 {
		opts.CheckpointInterval = f.cpInterval
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	l, err := f.open(ctx, opts)
	if err != nil {
		t.Fatalf("open %s log: %v", f.backend, err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}

type posixEditor struct{ dir string }

// path resolves a resource the way POSIXReader does: the partial file, else the full one.
func (e posixEditor) path(t testing.TB, p func(uint8) string, partial uint8) string {
	full := filepath.Join(e.dir, posixTreeDir, p(partial))
	if _, err := os.Stat(full); err != nil && partial > 0 {
		full = filepath.Join(e.dir, posixTreeDir, p(0))
	}
	return full
}

func (e posixEditor) read(t testing.TB, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func (e posixEditor) write(t testing.TB, path string, b []byte) {
	t.Helper()
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

func (e posixEditor) bundlePath(t testing.TB, index uint64, p uint8) string {
	return e.path(t, func(p uint8) string { return layout.EntriesPath(index, p) }, p)
}

func (e posixEditor) tilePath(t testing.TB, level, index uint64, p uint8) string {
	return e.path(t, func(p uint8) string { return layout.TilePath(level, index, p) }, p)
}

func (e posixEditor) bundle(t testing.TB, index uint64, p uint8) []byte {
	return e.read(t, e.bundlePath(t, index, p))
}

func (e posixEditor) setBundle(t testing.TB, index uint64, p uint8, data []byte) {
	e.write(t, e.bundlePath(t, index, p), data)
}

func (e posixEditor) tile(t testing.TB, level, index uint64, p uint8) []byte {
	return e.read(t, e.tilePath(t, level, index, p))
}

func (e posixEditor) setTile(t testing.TB, level, index uint64, p uint8, data []byte) {
	e.write(t, e.tilePath(t, level, index, p), data)
}

func (e posixEditor) rollback(t testing.TB, cp Checkpoint) {
	e.write(t, filepath.Join(e.dir, posixTreeDir, layout.CheckpointPath), cp.Note)
	state, err := json.Marshal(map[string]any{"size": cp.Size, "root": cp.Hash})
	if err != nil {
		t.Fatal(err)
	}
	e.write(t, filepath.Join(e.dir, posixTreeDir, ".state", "treeState"), state)
}

type mysqlEditor struct{ db *sql.DB }

func (e mysqlEditor) get(t testing.TB, q string, args ...any) []byte {
	t.Helper()
	var b []byte
	if err := e.db.QueryRow(q, args...).Scan(&b); err != nil {
		t.Fatal(err)
	}
	return b
}

func (e mysqlEditor) set(t testing.TB, q string, args ...any) {
	t.Helper()
	if _, err := e.db.Exec(q, args...); err != nil {
		t.Fatal(err)
	}
}

func (e mysqlEditor) bundle(t testing.TB, index uint64, _ uint8) []byte {
	return e.get(t, "SELECT `data` FROM `TiledLeaves` WHERE `tile_index` = ?", index)
}

func (e mysqlEditor) setBundle(t testing.TB, index uint64, _ uint8, data []byte) {
	e.set(t, "UPDATE `TiledLeaves` SET `data` = ? WHERE `tile_index` = ?", data, index)
}

func (e mysqlEditor) tile(t testing.TB, level, index uint64, _ uint8) []byte {
	return e.get(t, "SELECT `nodes` FROM `Subtree` WHERE `level` = ? AND `index` = ?", level, index)
}

func (e mysqlEditor) setTile(t testing.TB, level, index uint64, _ uint8, data []byte) {
	e.set(t, "UPDATE `Subtree` SET `nodes` = ? WHERE `level` = ? AND `index` = ?", data, level, index)
}

func (e mysqlEditor) rollback(t testing.TB, cp Checkpoint) {
	// A fresh published_at keeps tessera from republishing over it at once.
	e.set(t, "UPDATE `Checkpoint` SET `note` = ?, `published_at` = ? WHERE `id` = 0", cp.Note, time.Now().UnixMilli())
	e.set(t, "UPDATE `TreeState` SET `size` = ?, `root` = ? WHERE `id` = 0", cp.Size, cp.Hash)
}

// openFromEnv opens the log a helper process was pointed at.
func openFromEnv(ctx context.Context, opts Options) (*Log, error) {
	switch b := os.Getenv(envBackend); b {
	case "posix":
		if opts.CheckpointInterval == 0 {
			opts.CheckpointInterval = posixMinCPEvery
		}
		return OpenPOSIX(ctx, os.Getenv(envDir), opts)
	case "mysql":
		s, v, err := LoadOrGenerateKey(os.Getenv(envKey), "")
		if err != nil {
			return nil, err
		}
		db, err := sql.Open("mysql", os.Getenv(envDSN))
		if err != nil {
			return nil, err
		}
		opts.Signer, opts.Verifier = s, v
		if opts.CheckpointInterval == 0 {
			opts.CheckpointInterval = mysqlMinCPEvery
		}
		return OpenMySQL(ctx, db, opts)
	default:
		return nil, fmt.Errorf("unknown backend %q", b)
	}
}
