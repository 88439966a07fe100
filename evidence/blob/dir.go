package blob

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/proofline/proofline/evidence"
	"github.com/proofline/proofline/internal/durable"
)

// Dir is a blob store in a directory (see the package documentation for the layout). It is safe
// for concurrent use, also by several processes sharing the directory.
type Dir struct {
	root string
}

// OpenDir opens the blob store in dir, creating dir (mode 0750) and its parents durably if needed.
func OpenDir(dir string) (*Dir, error) {
	if err := durable.MkdirAll(dir, 0o750); err != nil {
		return nil, fmt.Errorf("blob: %w", err)
	}
	fi, err := os.Stat(dir)
	if err != nil {
		return nil, fmt.Errorf("blob: %w", err)
	}
	if !fi.IsDir() {
		return nil, fmt.Errorf("blob: %s is not a directory", dir)
	}
	return &Dir{root: dir}, nil
}

// path returns the blob's fan-out directory and file name.
func (s *Dir) path(d evidence.Digest) (dir, file string) {
	h := d.String()
	dir = filepath.Join(s.root, h[:2])
	return dir, filepath.Join(dir, h[2:])
}

// Put stores data durably and returns its SHA-256 (see the package documentation).
func (s *Dir) Put(ctx context.Context, data []byte) (evidence.Digest, error) {
	if len(data) > MaxSize {
		return evidence.Digest{}, tooLarge(len(data))
	}
	if err := ctx.Err(); err != nil {
		return evidence.Digest{}, err
	}
	d := evidence.Digest(sha256.Sum256(data))
	dir, file := s.path(d)
	switch err := s.syncExisting(file, data); {
	case err == nil:
		// Another Put stored it, and may have crashed before syncing the directories.
		if err := s.syncDirs(dir); err != nil {
			return evidence.Digest{}, fmt.Errorf("blob: putting %s: %w", d, err)
		}
		return d, nil
	case !errors.Is(err, fs.ErrNotExist) && !errors.Is(err, ErrCorrupt):
		return evidence.Digest{}, fmt.Errorf("blob: putting %s: %w", d, err)
	}
	if err := s.write(dir, file, data); err != nil {
		return evidence.Digest{}, fmt.Errorf("blob: putting %s: %w", d, err)
	}
	return d, nil
}

// syncExisting returns nil when file holds exactly data, after syncing it (its writer may have
// been another process that crashed before its own sync). It returns an error wrapping
// fs.ErrNotExist or ErrCorrupt when file must be (re)written.
func (s *Dir) syncExisting(file string, data []byte) error {
	f, err := os.Open(file)
	if err != nil {
		return err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return err
	}
	if fi.Size() != int64(len(data)) {
		return fmt.Errorf("%w: %d bytes stored, want %d", ErrCorrupt, fi.Size(), len(data))
	}
	stored, err := io.ReadAll(io.LimitReader(f, MaxSize+1))
	if err != nil {
		return err
	}
	if !bytes.Equal(stored, data) {
		return fmt.Errorf("%w: stored bytes differ", ErrCorrupt)
	}
	return f.Sync()
}

// write stores data at file through a synced temporary file, then syncs the directories.
func (s *Dir) write(dir, file string, data []byte) error {
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return err
	}
	if err := durable.Replace(file, data, 0o640); err != nil {
		return err
	}
	// The fan-out directory's own entry in the root: whoever created it may have crashed before
	// syncing the root.
	return durable.SyncDir(s.root)
}

// syncDirs makes the blob's directory entry durable, and the fan-out directory's own entry in
// the root (whoever created it may have crashed before syncing the root).
func (s *Dir) syncDirs(dir string) error {
	if err := durable.SyncDir(dir); err != nil {
		return err
	}
	return durable.SyncDir(s.root)
}

// Get returns the blob named d after verifying that it hashes to d.
func (s *Dir) Get(ctx context.Context, d evidence.Digest) ([]byte, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	_, file := s.path(d)
	f, err := os.Open(file)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, notFound(d)
	}
	if err != nil {
		return nil, fmt.Errorf("blob: getting %s: %w", d, err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, MaxSize+1))
	if err != nil {
		return nil, fmt.Errorf("blob: getting %s: %w", d, err)
	}
	if len(data) > MaxSize {
		return nil, &CorruptError{Digest: d, Reason: fmt.Sprintf("the stored file is larger than %d bytes", MaxSize)}
	}
	return verify(d, data)
}

// Has reports whether a blob named d is stored. It does not verify it.
func (s *Dir) Has(ctx context.Context, d evidence.Digest) (bool, error) {
	if err := ctx.Err(); err != nil {
		return false, err
	}
	_, file := s.path(d)
	fi, err := os.Stat(file)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return false, nil
	case err != nil:
		return false, fmt.Errorf("blob: %s: %w", d, err)
	case !fi.Mode().IsRegular():
		return false, &CorruptError{Digest: d, Reason: fmt.Sprintf("%s is not a regular file", file)}
	}
	return true, nil
}
