// Package durable writes files so that a crash leaves either the old state or the new one, never
// a torn file: keys, secrets, blobs and the log's served-checkpoint floor all depend on it.
//
// Both functions write a temporary file beside the target with the final mode, fsync it, put it
// in place, and fsync the directory, so that when they return nil the new file survives a power
// loss.
package durable

import (
	"os"
	"path/filepath"
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

// SyncDir makes the entries of directory dir durable.
func SyncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
