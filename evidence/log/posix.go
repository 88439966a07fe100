package log

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"github.com/proofline/proofline/internal/durable"
	"github.com/transparency-dev/tessera/api/layout"
	"github.com/transparency-dev/tessera/storage/posix"
)

// Names inside a POSIX log directory; see the package documentation.
const (
	posixTreeDir    = "tlog"
	posixKeyFile    = "note.key"
	posixFloorFile  = "served-checkpoint"
	posixLockFile   = "lock"
	posixMinCPEvery = 100 * time.Millisecond
)

// OpenPOSIX opens (creating if needed, durably) the log in directory dir.
//
// Only one Log may have dir open at a time, in any process: OpenPOSIX takes an exclusive flock
// on dir/lock and fails if it is held. Without opts.Signer the note key is dir/note.key,
// generated on first open; an existing log whose key is missing is an error, never a new key.
func OpenPOSIX(ctx context.Context, dir string, opts Options) (*Log, error) {
	opts, err := opts.withDefaults(posixMinCPEvery)
	if err != nil {
		return nil, err
	}
	if err := durable.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("log: %w", err)
	}
	release, err := lockDir(dir)
	if err != nil {
		return nil, err
	}
	l, err := openPOSIXLocked(ctx, dir, opts, release)
	if err != nil {
		release()
		return nil, err
	}
	return l, nil
}

func openPOSIXLocked(ctx context.Context, dir string, opts Options, release func() error) (*Log, error) {
	if opts.Signer == nil {
		keyPath := filepath.Join(dir, posixKeyFile)
		if _, err := os.Stat(keyPath); errors.Is(err, fs.ErrNotExist) {
			if _, err := os.Stat(filepath.Join(dir, posixTreeDir, layout.CheckpointPath)); err == nil {
				return nil, fmt.Errorf("log: %s holds a log but its note key %s is missing: restore the key or pass Options.Signer", dir, keyPath)
			}
		}
		var err error
		if opts.Signer, opts.Verifier, err = LoadOrGenerateKey(keyPath, opts.Origin); err != nil {
			return nil, err
		}
	}
	driver, err := posix.New(ctx, posix.Config{Path: filepath.Join(dir, posixTreeDir)})
	if err != nil {
		return nil, fmt.Errorf("log: %w", err)
	}
	l, err := start(ctx, driver, NewPOSIXReader(dir), opts)
	if err != nil {
		return nil, err
	}
	l.release = release
	return l, nil
}

// lockDir takes an exclusive, non-blocking flock on dir/lock. flock (unlike the fcntl locks
// tessera takes) also excludes a second open in the same process.
func lockDir(dir string) (func() error, error) {
	f, err := os.OpenFile(filepath.Join(dir, posixLockFile), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, fmt.Errorf("log: %w", err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		return nil, fmt.Errorf("log: %s is open elsewhere: %w", dir, err)
	}
	return f.Close, nil
}

// POSIXReader reads a POSIX log directory for Fsck. It only reads, so it may run beside the Log
// that writes the directory.
type POSIXReader struct {
	dir string
}

// NewPOSIXReader returns a reader of the log in dir (the directory given to OpenPOSIX).
func NewPOSIXReader(dir string) *POSIXReader { return &POSIXReader{dir: dir} }

// The largest resources tessera stores (C2SP tlog-tiles): an entry bundle of 256 leaves of
// MaxLeafSize bytes, each after its 2-byte length, and a hash tile of 256 SHA-256 hashes.
const (
	maxBundleSize = layout.EntryBundleWidth * (2 + MaxLeafSize)
	maxTileSize   = layout.TileWidth * 32
)

// errTooLarge: a stored file is larger than any resource of its kind.
var errTooLarge = errors.New("larger than any resource of its kind")

func (r *POSIXReader) read(p string) ([]byte, error) {
	return os.ReadFile(filepath.Join(r.dir, posixTreeDir, p))
}

// readLimited reads p, or fails with errTooLarge if it holds more than limit bytes, without
// reading further: a corrupt or hostile store must not make a reader allocate without bound.
func (r *POSIXReader) readLimited(p string, limit int) ([]byte, error) {
	f, err := os.Open(filepath.Join(r.dir, posixTreeDir, p))
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, int64(limit)+1))
	if err != nil {
		return nil, err
	}
	if len(b) > limit {
		return nil, errTooLarge
	}
	return b, nil
}

// readPartialOrFull reads the resource for a partial size p, falling back to the full one: the
// partial file is garbage-collected once the full one is published (C2SP tlog-tiles).
func (r *POSIXReader) readPartialOrFull(path func(uint8) string, p uint8, limit int) ([]byte, error) {
	b, err := r.readLimited(path(p), limit)
	if p > 0 && errors.Is(err, fs.ErrNotExist) {
		b, err = r.readLimited(path(0), limit)
	}
	return b, err
}

// ReadCheckpoint returns the published checkpoint note.
func (r *POSIXReader) ReadCheckpoint(_ context.Context) ([]byte, error) {
	return r.read(layout.CheckpointPath)
}

// ReadEntryBundle returns entry bundle index for partial size p (0 = full). A file larger than
// 256 leaves of the largest size is corruption (I3), reported without reading it whole.
func (r *POSIXReader) ReadEntryBundle(_ context.Context, index uint64, p uint8) ([]byte, error) {
	b, err := r.readPartialOrFull(func(p uint8) string { return layout.EntriesPath(index, p) }, p, maxBundleSize)
	if errors.Is(err, errTooLarge) {
		return nil, corruptAt("I3", index*layout.EntryBundleWidth, "entry bundle %d holds more than %d bytes, the most 256 leaves take", index, maxBundleSize)
	}
	return b, err
}

// ReadTile returns the hash tile at level, index for partial size p (0 = full). A file larger
// than 256 hashes is corruption (I1, as any malformed tile), reported without reading it whole.
func (r *POSIXReader) ReadTile(_ context.Context, level, index uint64, p uint8) ([]byte, error) {
	b, err := r.readPartialOrFull(func(p uint8) string { return layout.TilePath(level, index, p) }, p, maxTileSize)
	if errors.Is(err, errTooLarge) {
		return nil, corruptAt("I1", (index*layout.TileWidth)<<(level*layout.TileHeight), "tile %d/%d holds more than %d bytes (256 hashes)", level, index, maxTileSize)
	}
	return b, err
}

// ReadServedCheckpoint returns the largest checkpoint the log has served, or an error wrapping
// fs.ErrNotExist if it has served none.
func (r *POSIXReader) ReadServedCheckpoint(_ context.Context) ([]byte, error) {
	return os.ReadFile(filepath.Join(r.dir, posixFloorFile))
}

// raiseFloor is only called by the Log holding the directory lock, under Log.mu, with a
// checkpoint larger than the one it loaded or stored last: no read-compare needed.
func (r *POSIXReader) raiseFloor(_ context.Context, cp Checkpoint) error {
	if err := durable.Replace(filepath.Join(r.dir, posixFloorFile), cp.Note, 0o644); err != nil {
		return fmt.Errorf("log: recording the served checkpoint: %w", err)
	}
	return nil
}
