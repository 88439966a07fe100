// Package durable writes files so that a crash leaves either the old state or the new one, never
// a torn file: keys, secrets, blobs and the log's served-checkpoint floor all depend on it.
//
// Create and Replace write a temporary file beside the target with the final mode, fsync it, put
// it in place, and fsync the directory, so that when they return nil the new file survives a
// power loss. MkdirAll creates directories the same way: each is durable in its parent when it
// returns.
//
// [ServerSettings] and [CheckInnoDB] are the same promise for MySQL/MariaDB: the SQL backends that
// acknowledge a write once COMMIT returns check with them that the server syncs every commit and
// that their tables are InnoDB, and refuse to open otherwise.
package durable

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
)

// Create writes data to path, which must not exist: it fails with an error wrapping
// fs.ErrExist if it does, even when several processes race to create it (the temporary file is
// hard-linked into place, which never replaces). Use it for keys and secrets generated on first
// start, which must never be overwritten.
func Create(path string, data []byte, perm os.FileMode) error {
	return write(path, data, perm, os.Link)
}

// Replace durably replaces path's content with data (or creates it).
func Replace(path string, data []byte, perm os.FileMode) error {
	return write(path, data, perm, os.Rename)
}

func write(path string, data []byte, perm os.FileMode, place func(tmp, path string) error) error {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".*.tmp")
	if err != nil {
		return err
	}
	tmp := f.Name()
	defer os.Remove(tmp) // after a link both names exist; after a rename this is a no-op
	if err := f.Chmod(perm); err != nil {
		f.Close()
		return err
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := place(tmp, path); err != nil {
		return err
	}
	return SyncDir(dir)
}

// MkdirAll creates directory dir with mode perm, and any missing parents, like os.MkdirAll,
// and makes each directory it creates durable by syncing the directory that holds it: without
// that, files written durably into a new directory can vanish with it after a power loss.
// Existing directories are left as they are.
func MkdirAll(dir string, perm os.FileMode) error {
	dir = filepath.Clean(dir)
	fi, err := os.Stat(dir)
	switch {
	case err == nil && fi.IsDir():
		return nil
	case err == nil:
		return &fs.PathError{Op: "mkdir", Path: dir, Err: syscall.ENOTDIR}
	case !errors.Is(err, fs.ErrNotExist):
		return err
	}
	parent := filepath.Dir(dir)
	if parent != dir {
		if err := MkdirAll(parent, perm); err != nil {
			return err
		}
	}
	if err := os.Mkdir(dir, perm); err != nil && !errors.Is(err, fs.ErrExist) {
		return err
	}
	// Also after losing a race to create dir: its creator may not have synced parent yet.
	if fi, err := os.Stat(dir); err != nil {
		return err
	} else if !fi.IsDir() {
		return &fs.PathError{Op: "mkdir", Path: dir, Err: syscall.ENOTDIR}
	}
	return SyncDir(parent)
}

// SyncDir makes the entries of directory dir durable.
func SyncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// ReadPrivate reads a file that must be private to its owner (a key or a secret): it refuses a
// file that is not regular or that group or others may access — with an error wrapping
// fs.ErrPermission that says how to fix it — and one larger than max bytes.
func ReadPrivate(path string, max int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("%s is not a regular file", path)
	}
	if perm := fi.Mode().Perm(); perm&0o077 != 0 {
		return nil, fmt.Errorf("%s has mode %#o, so group or others may access it; make it private with `chmod 600 %s`: %w", path, perm, path, fs.ErrPermission)
	}
	data, err := io.ReadAll(io.LimitReader(f, max+1))
	if err != nil {
		return nil, err
	}
	if int64(len(data)) > max {
		return nil, fmt.Errorf("%s is larger than %d bytes", path, max)
	}
	return data, nil
}

// ReadLimited reads a whole file of at most limit bytes; a larger file is an error rather than
// a truncated read. It reads to EOF, so it also works for files whose size stat reports as 0
// (securityfs, sysfs).
func ReadLimited(path string, limit int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err != nil {
		return nil, err
	}
	if int64(len(data)) > limit {
		return nil, fmt.Errorf("%s is larger than %d bytes", path, limit)
	}
	return data, nil
}
