package blob

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/proofline/proofline/evidence"
)

// store is what the tests need of a backend.
type store interface {
	Put(ctx context.Context, data []byte) (evidence.Digest, error)
	Get(ctx context.Context, d evidence.Digest) ([]byte, error)
	Has(ctx context.Context, d evidence.Digest) (bool, error)
}

// backend is a store under test plus a way to alter what it stored behind its back.
type backend struct {
	store
	// flip flips one bit of the stored copy of d at offset off.
	flip func(t *testing.T, d evidence.Digest, off int)
	// truncate drops the stored copy's last part (the last byte of a file, the last chunk row).
	truncate func(t *testing.T, d evidence.Digest)
	// count returns how many copies of blobs are stored (files, header rows).
	count func(t *testing.T) int
}

var backends = []struct {
	name string
	open func(t *testing.T) backend
}{
	{"dir", openDirBackend},
	{"sqlite", func(t *testing.T) backend {
		s, err := OpenSQLite(context.Background(), filepath.Join(t.TempDir(), "blobs.db"))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		return tableBackend(s)
	}},
	{"mariadb", func(t *testing.T) backend {
		s, err := OpenMySQL(context.Background(), newTestDatabase(t))
		if err != nil {
			t.Fatal(err)
		}
		return tableBackend(s)
	}},
}

func openDirBackend(t *testing.T) backend {
	root := t.TempDir()
	s, err := OpenDir(root)
	if err != nil {
		t.Fatal(err)
	}
	file := func(d evidence.Digest) string { _, f := s.path(d); return f }
	return backend{
		store: s,
		flip: func(t *testing.T, d evidence.Digest, off int) {
			b, err := os.ReadFile(file(d))
			if err != nil {
				t.Fatal(err)
			}
			b[off] ^= 1
			if err := os.WriteFile(file(d), b, 0o640); err != nil {
				t.Fatal(err)
			}
		},
		truncate: func(t *testing.T, d evidence.Digest) {
			fi, err := os.Stat(file(d))
			if err != nil {
				t.Fatal(err)
			}
			if err := os.Truncate(file(d), fi.Size()-1); err != nil {
				t.Fatal(err)
			}
		},
		count: func(t *testing.T) int {
			n := 0
			err := filepath.WalkDir(root, func(p string, e os.DirEntry, err error) error {
				if err == nil && e.Type().IsRegular() {
					n++
				}
				return err
			})
			if err != nil {
				t.Fatal(err)
			}
			return n
		},
	}
}

func tableBackend(s *Table) backend {
	exec := func(t *testing.T, q string, args ...any) {
		t.Helper()
		if _, err := s.db.Exec(q, args...); err != nil {
			t.Fatal(err)
		}
	}
	return backend{
		store: s,
		flip: func(t *testing.T, d evidence.Digest, off int) {
			seq, off := off/chunkSize, off%chunkSize
			var data []byte
			if err := s.db.QueryRow("SELECT data FROM proofline_blob_chunks WHERE digest = ? AND seq = ?", d[:], seq).Scan(&data); err != nil {
				t.Fatal(err)
			}
			data[off] ^= 1
			exec(t, "UPDATE proofline_blob_chunks SET data = ? WHERE digest = ? AND seq = ?", data, d[:], seq)
		},
		truncate: func(t *testing.T, d evidence.Digest) {
			exec(t, "DELETE FROM proofline_blob_chunks WHERE digest = ? AND seq = (SELECT m FROM (SELECT MAX(seq) AS m FROM proofline_blob_chunks WHERE digest = ?) AS last)", d[:], d[:])
		},
		count: func(t *testing.T) int {
			var n int
			if err := s.db.QueryRow("SELECT COUNT(*) FROM proofline_blobs").Scan(&n); err != nil {
				t.Fatal(err)
			}
			return n
		},
	}
}

// forEach runs f against every backend.
func forEach(t *testing.T, f func(t *testing.T, b backend)) {
	for _, be := range backends {
		t.Run(be.name, func(t *testing.T) {
			t.Parallel()
			f(t, be.open(t))
		})
	}
}

func randomBytes(n int) []byte {
	b := make([]byte, n)
	rand.Read(b)
	return b
}

// TestPutGet: Put returns the SHA-256 of the data, Get returns the same bytes, Has tells stored
// from missing, and a missing blob is ErrNotFound naming the digest. Sizes cover the empty blob,
// one chunk, exactly one chunk, and several chunks with a partial last one.
func TestPutGet(t *testing.T) {
	t.Parallel()
	forEach(t, func(t *testing.T, b backend) {
		ctx := context.Background()
		for _, n := range []int{0, 1, 1000, chunkSize, 3*chunkSize + 17} {
			data := randomBytes(n)
			d, err := b.Put(ctx, data)
			if err != nil {
				t.Fatalf("Put(%d bytes): %v", n, err)
			}
			if d != sha256.Sum256(data) {
				t.Fatalf("Put(%d bytes) = %s, want the data's SHA-256", n, d)
			}
			got, err := b.Get(ctx, d)
			if err != nil {
				t.Fatalf("Get(%d bytes): %v", n, err)
			}
			if !bytes.Equal(got, data) {
				t.Fatalf("Get(%d bytes) returned %d other bytes", n, len(got))
			}
			if ok, err := b.Has(ctx, d); err != nil || !ok {
				t.Fatalf("Has(%d bytes) = %v, %v; want true", n, ok, err)
			}
		}
		missing := evidence.Digest(sha256.Sum256([]byte("never stored")))
		if ok, err := b.Has(ctx, missing); err != nil || ok {
			t.Fatalf("Has(missing) = %v, %v; want false", ok, err)
		}
		_, err := b.Get(ctx, missing)
		if !errors.Is(err, ErrNotFound) || !strings.Contains(err.Error(), missing.String()) {
			t.Fatalf("Get(missing) = %v, want ErrNotFound naming %s", err, missing)
		}
	})
}

// TestPutIdempotent: storing the same bytes again, also from many goroutines at once, returns
// the same digest and keeps one copy.
func TestPutIdempotent(t *testing.T) {
	t.Parallel()
	forEach(t, func(t *testing.T, b backend) {
		ctx := context.Background()
		data := randomBytes(2*chunkSize + 5)
		want := evidence.Digest(sha256.Sum256(data))
		var wg sync.WaitGroup
		errs := make(chan error, 8)
		for range 8 {
			wg.Go(func() {
				d, err := b.Put(ctx, data)
				if err == nil && d != want {
					err = errors.New("wrong digest " + d.String())
				}
				errs <- err
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			if err != nil {
				t.Fatalf("concurrent Put: %v", err)
			}
		}
		if _, err := b.Put(ctx, data); err != nil {
			t.Fatal(err)
		}
		if n := b.count(t); n != 1 {
			t.Fatalf("%d copies stored, want 1", n)
		}
		if got, err := b.Get(ctx, want); err != nil || !bytes.Equal(got, data) {
			t.Fatalf("Get after concurrent Puts: %v", err)
		}
	})
}

// TestTooLarge: one byte more than MaxSize is refused with ErrTooLarge before anything is
// written. (Storing exactly MaxSize bytes works on every backend, 64 chunk rows in SQL, but takes
// seconds under -race, so it is not part of this suite.)
func TestTooLarge(t *testing.T) {
	t.Parallel()
	forEach(t, func(t *testing.T, b backend) {
		if _, err := b.Put(context.Background(), make([]byte, MaxSize+1)); !errors.Is(err, ErrTooLarge) {
			t.Fatalf("Put(MaxSize+1) = %v, want ErrTooLarge", err)
		}
		if n := b.count(t); n != 0 {
			t.Fatalf("%d blobs stored after a refused Put", n)
		}
	})
}

// TestTampering: a flipped bit anywhere in the stored copy, or a missing tail, makes Get fail
// with a *CorruptError naming the digest — never wrong bytes — and a later Put of the right bytes
// repairs the copy.
func TestTampering(t *testing.T) {
	t.Parallel()
	forEach(t, func(t *testing.T, b backend) {
		ctx := context.Background()
		data := randomBytes(2*chunkSize + 100)
		d, err := b.Put(ctx, data)
		if err != nil {
			t.Fatal(err)
		}
		for _, tc := range []struct {
			name   string
			tamper func(t *testing.T)
		}{
			{"first byte", func(t *testing.T) { b.flip(t, d, 0) }},
			{"second chunk", func(t *testing.T) { b.flip(t, d, chunkSize+7) }},
			{"last byte", func(t *testing.T) { b.flip(t, d, len(data)-1) }},
			{"tail missing", func(t *testing.T) { b.truncate(t, d) }},
		} {
			t.Run(tc.name, func(t *testing.T) {
				tc.tamper(t)
				got, err := b.Get(ctx, d)
				var ce *CorruptError
				if !errors.As(err, &ce) || ce.Digest != d || !errors.Is(err, ErrCorrupt) {
					t.Fatalf("Get after tampering = %d bytes, %v; want a *CorruptError for %s", len(got), err, d)
				}
				if got != nil {
					t.Fatalf("Get after tampering returned %d bytes along with the error", len(got))
				}
				if !strings.Contains(err.Error(), d.String()) {
					t.Fatalf("error %q does not name the digest %s", err, d)
				}
				if ok, err := b.Has(ctx, d); err != nil || !ok {
					t.Fatalf("Has(tampered) = %v, %v; want true", ok, err)
				}
				if _, err := b.Put(ctx, data); err != nil {
					t.Fatalf("Put to repair: %v", err)
				}
				if got, err := b.Get(ctx, d); err != nil || !bytes.Equal(got, data) {
					t.Fatalf("Get after repair: %v", err)
				}
			})
		}
	})
}

// TestCanceled: a canceled context stores nothing.
func TestCanceled(t *testing.T) {
	t.Parallel()
	forEach(t, func(t *testing.T, b backend) {
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		if _, err := b.Put(ctx, []byte("x")); !errors.Is(err, context.Canceled) {
			t.Fatalf("Put with a canceled context = %v, want context.Canceled", err)
		}
		if n := b.count(t); n != 0 {
			t.Fatalf("%d blobs stored with a canceled context", n)
		}
	})
}

// TestDirLayout: a blob lives at DIR/ab/cdef… (its hex digest split after two characters) as
// plain bytes, with no temporary file left behind.
func TestDirLayout(t *testing.T) {
	t.Parallel()
	root := t.TempDir()
	s, err := OpenDir(root)
	if err != nil {
		t.Fatal(err)
	}
	data := []byte(`{"url":"https://pcs.example/tcb","status":200}`)
	d, err := s.Put(context.Background(), data)
	if err != nil {
		t.Fatal(err)
	}
	h := d.String()
	got, err := os.ReadFile(filepath.Join(root, h[:2], h[2:]))
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("reading %s/%s: %v", h[:2], h[2:], err)
	}
	entries, err := os.ReadDir(filepath.Join(root, h[:2]))
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 1 {
		t.Fatalf("fan-out directory holds %d entries, want only the blob", len(entries))
	}
}
