package collateral

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/proofline/proofline/internal/durable"
)

// ErrNotStored is wrapped by Store.Get when no response is stored for a URL.
var ErrNotStored = errors.New("collateral store: nothing stored for this URL")

// Store keeps a Cache's responses across restarts and, with a shared backend, across verifier
// replicas. It holds, per canonical URL, the canonical bytes (Response.Canonical) of the latest
// response the cache fetched.
//
//   - Put(ctx, url, canonical) replaces what is stored for url. It MUST NOT return nil before the
//     bytes are durably stored (for a persistent backend), and MUST leave either the old bytes or
//     the new ones, never a mixture. It is safe for concurrent use, also by several processes;
//     the last Put wins.
//   - Get(ctx, url) returns exactly the bytes of one Put for url, or an error: ErrNotStored when
//     there are none, another error when they cannot be read intact. Wrong bytes MUST NOT be
//     returned; the cache parses them, checks their URL and falls back to fetching on any error.
type Store interface {
	Get(ctx context.Context, url string) ([]byte, error)
	Put(ctx context.Context, url string, canonical []byte) error
}

// Mark is the high-water mark of the documents kept for one URL: the highest Intel
// tcbEvaluationDataNumber and the latest issue date (Validity.IssuedAt) of any of them. A
// document below it is an older one — a rollback (VERIFIER-CHECKS TDX 6: the
// tcbEvaluationDataNumber never goes backwards) — and is never kept, whatever the Store holds
// now. The zero Mark is "nothing kept yet".
type Mark struct {
	// EvaluationDataNumber is the highest tcbEvaluationDataNumber; meaningful when HasNumber.
	EvaluationDataNumber uint64
	HasNumber            bool
	// IssuedAt is the latest issue date, in whole seconds (rounded down); zero when none.
	IssuedAt time.Time
}

// MarkOf returns the mark of one document whose validity is v.
func MarkOf(r *Response, v Validity) Mark {
	m := Mark{IssuedAt: v.IssuedAt.UTC().Truncate(time.Second)}
	m.EvaluationDataNumber, m.HasNumber = TCBEvaluationDataNumber(r)
	return m
}

// Max returns the mark that is at least m and o in each field.
func (m Mark) Max(o Mark) Mark {
	if o.HasNumber && (!m.HasNumber || o.EvaluationDataNumber > m.EvaluationDataNumber) {
		m.EvaluationDataNumber, m.HasNumber = o.EvaluationDataNumber, true
	}
	if o.IssuedAt.After(m.IssuedAt) {
		m.IssuedAt = o.IssuedAt
	}
	return m
}

// IsZero reports whether m is the mark of nothing.
func (m Mark) IsZero() bool { return !m.HasNumber && m.IssuedAt.IsZero() }

// MarkStore is a Store that also keeps, per URL, the Mark of every document kept for it, so that
// a rollback is refused even when the document itself was lost (a store emptied or restored from
// a backup, a corrupt entry, a URL the cache no longer holds). MemoryStore, DirStore and SQLStore
// implement it; the Cache and ImportBundle use it when the Store does (a Store without it gets
// only the Cache's own in-memory mark, which a restart loses).
//
//   - RaiseMark(ctx, url, m) raises url's mark to Max(stored, m), atomically, also against
//     concurrent raises by other processes: it MUST NOT lower any field, and MUST NOT return nil
//     before the raised mark is durable (persistent backends).
//   - StoredMark(ctx, url) returns url's mark; the zero Mark and ErrNotStored when none was
//     raised; another error when it cannot be read (the caller then fails closed).
type MarkStore interface {
	StoredMark(ctx context.Context, url string) (Mark, error)
	RaiseMark(ctx context.Context, url string, m Mark) error
}

// MemoryStore is a Store in memory, for tests and for a verifier without a data directory.
type MemoryStore struct {
	mu    sync.Mutex
	m     map[string][]byte
	marks map[string]Mark
}

// NewMemoryStore returns an empty MemoryStore.
func NewMemoryStore() *MemoryStore {
	return &MemoryStore{m: map[string][]byte{}, marks: map[string]Mark{}}
}

// StoredMark implements MarkStore.
func (s *MemoryStore) StoredMark(ctx context.Context, url string) (Mark, error) {
	if err := ctx.Err(); err != nil {
		return Mark{}, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	m, ok := s.marks[url]
	if !ok {
		return Mark{}, fmt.Errorf("%w: no mark for %s", ErrNotStored, url)
	}
	return m, nil
}

// RaiseMark implements MarkStore.
func (s *MemoryStore) RaiseMark(ctx context.Context, url string, m Mark) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.marks[url] = s.marks[url].Max(m)
	return nil
}

// Get implements Store.
func (s *MemoryStore) Get(ctx context.Context, url string) ([]byte, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	b, ok := s.m[url]
	if !ok {
		return nil, fmt.Errorf("%w: %s", ErrNotStored, url)
	}
	return bytes.Clone(b), nil
}

// Put implements Store.
func (s *MemoryStore) Put(ctx context.Context, url string, canonical []byte) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.m[url] = bytes.Clone(canonical)
	return nil
}

// DirStore is a Store in a directory:
//
//	DIR/blobs/<sha256 of the canonical bytes, hex>   the canonical bytes, written once
//	DIR/urls/<sha256 of the URL, hex>                the hex digest of the URL's current blob
//	DIR/marks/<sha256 of the URL, hex>.<n>.<t>       the URL's Mark (MarkStore): n the highest
//	                                                 tcbEvaluationDataNumber (-1: none), t the
//	                                                 latest issue date in Unix seconds; empty file
//
// Both are written with internal/durable (temporary file, fsync, rename or link, fsync of the
// directory), so a crash leaves the old pointer or the new one, and a pointer never names a blob
// that is not durable. Get re-hashes the blob it reads. Blobs that no pointer names any more
// (superseded CRLs and TCB info) are kept; nothing deletes them yet.
type DirStore struct {
	dir string
}

// OpenDirStore opens (creating it if needed) a DirStore in dir.
func OpenDirStore(dir string) (*DirStore, error) {
	for _, sub := range []string{"blobs", "urls", "marks"} {
		if err := os.MkdirAll(filepath.Join(dir, sub), 0o755); err != nil {
			return nil, fmt.Errorf("collateral store: %w", err)
		}
	}
	return &DirStore{dir: dir}, nil
}

// maxStored bounds a stored canonical response: a body of MaxResponseSize in base64 plus headers.
const maxStored = MaxResponseSize/3*4 + 1<<20

func (s *DirStore) pointer(url string) string {
	h := sha256.Sum256([]byte(url))
	return filepath.Join(s.dir, "urls", hex.EncodeToString(h[:]))
}

func (s *DirStore) blob(digest string) string { return filepath.Join(s.dir, "blobs", digest) }

// Get implements Store.
func (s *DirStore) Get(ctx context.Context, url string) ([]byte, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	p, err := readBounded(s.pointer(url), 2*sha256.Size+1)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%w: %s", ErrNotStored, url)
	}
	if err != nil {
		return nil, fmt.Errorf("collateral store: pointer for %s: %w", url, err)
	}
	digest := string(bytes.TrimSpace(p))
	if d, err := hex.DecodeString(digest); err != nil || len(d) != sha256.Size {
		return nil, fmt.Errorf("collateral store: the pointer for %s (%s) is not a SHA-256; it will be refetched", url, s.pointer(url))
	}
	data, err := readBounded(s.blob(digest), maxStored)
	if err != nil {
		return nil, fmt.Errorf("collateral store: blob for %s: %w", url, err)
	}
	if h := sha256.Sum256(data); hex.EncodeToString(h[:]) != digest {
		return nil, fmt.Errorf("collateral store: blob %s (for %s) does not hash to its name: it is corrupt and will be refetched", s.blob(digest), url)
	}
	return data, nil
}

// Put implements Store.
func (s *DirStore) Put(ctx context.Context, url string, canonical []byte) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	if len(canonical) > maxStored {
		return fmt.Errorf("collateral store: response for %s is over %d bytes", url, maxStored)
	}
	h := sha256.Sum256(canonical)
	digest := hex.EncodeToString(h[:])
	path := s.blob(digest)
	err := durable.Create(path, canonical, 0o644)
	if errors.Is(err, fs.ErrExist) {
		// Stored before; repair it if it is no longer intact.
		if old, rerr := readBounded(path, maxStored); rerr != nil || !bytes.Equal(old, canonical) {
			err = durable.Replace(path, canonical, 0o644)
		} else {
			err = nil
		}
	}
	if err != nil {
		return fmt.Errorf("collateral store: writing the response for %s: %w", url, err)
	}
	if err := durable.Replace(s.pointer(url), []byte(digest+"\n"), 0o644); err != nil {
		return fmt.Errorf("collateral store: pointing %s at its response: %w", url, err)
	}
	return nil
}

// StoredMark implements MarkStore.
func (s *DirStore) StoredMark(ctx context.Context, url string) (Mark, error) {
	if err := ctx.Err(); err != nil {
		return Mark{}, err
	}
	m, files, err := s.marks(url)
	if err != nil {
		return Mark{}, err
	}
	if len(files) == 0 {
		return Mark{}, fmt.Errorf("%w: no mark for %s", ErrNotStored, url)
	}
	return m, nil
}

// RaiseMark implements MarkStore. It creates a new, empty file named by the merged mark and then
// removes the ones that mark dominates: files are only ever created whole (internal/durable), and
// the mark is the maximum over the URL's files, so concurrent raises by several processes never
// lower it.
func (s *DirStore) RaiseMark(ctx context.Context, url string, m Mark) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	old, files, err := s.marks(url)
	if err != nil {
		return err
	}
	m = old.Max(m)
	if m.HasNumber && m.EvaluationDataNumber > 1<<62 {
		return fmt.Errorf("collateral store: tcbEvaluationDataNumber %d for %s is out of range", m.EvaluationDataNumber, url)
	}
	n := int64(-1)
	if m.HasNumber {
		n = int64(m.EvaluationDataNumber)
	}
	h := sha256.Sum256([]byte(url))
	name := fmt.Sprintf("%s.%d.%d", hex.EncodeToString(h[:]), n, m.IssuedAt.Unix())
	if !slices.Contains(files, name) {
		if err := durable.Create(filepath.Join(s.dir, "marks", name), nil, 0o644); err != nil && !errors.Is(err, fs.ErrExist) {
			return fmt.Errorf("collateral store: raising the mark of %s: %w", url, err)
		}
	}
	// The new file dominates every file read above; removing them is only housekeeping.
	for _, f := range files {
		if f != name {
			os.Remove(filepath.Join(s.dir, "marks", f))
		}
	}
	return nil
}

// marks reads url's mark files: the mark (their maximum) and their names. A file whose name does
// not parse is an error: the mark cannot be trusted to be complete.
func (s *DirStore) marks(url string) (Mark, []string, error) {
	h := sha256.Sum256([]byte(url))
	prefix := hex.EncodeToString(h[:]) + "."
	entries, err := os.ReadDir(filepath.Join(s.dir, "marks"))
	if err != nil {
		return Mark{}, nil, fmt.Errorf("collateral store: reading the marks: %w", err)
	}
	var m Mark
	var files []string
	for _, e := range entries {
		rest, ok := strings.CutPrefix(e.Name(), prefix)
		if !ok {
			continue
		}
		ns, ts, ok := strings.Cut(rest, ".")
		n, err1 := strconv.ParseInt(ns, 10, 64)
		t, err2 := strconv.ParseInt(ts, 10, 64)
		if !ok || err1 != nil || err2 != nil || n < -1 {
			return Mark{}, nil, fmt.Errorf("collateral store: the mark file %s of %s is not <hash>.<number>.<time>; remove it only if you know the URL's latest document", e.Name(), url)
		}
		f := Mark{IssuedAt: time.Unix(t, 0).UTC()}
		if n >= 0 {
			f.EvaluationDataNumber, f.HasNumber = uint64(n), true
		}
		m = m.Max(f)
		files = append(files, e.Name())
	}
	return m, files, nil
}

func readBounded(path string, limit int64) ([]byte, error) {
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
		return nil, fmt.Errorf("%s is over %d bytes", path, limit)
	}
	return data, nil
}

// URLs implements URLLister: the URLs stored, sorted.
func (s *MemoryStore) URLs(ctx context.Context) ([]string, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]string, 0, len(s.m))
	for u := range s.m {
		out = append(out, u)
	}
	sort.Strings(out)
	return out, nil
}

// URLs implements URLLister: the URL of every pointer whose blob reads intact (Get's checks), in
// sorted order. A pointer names its URL only by hash, so each blob is read and parsed; unusable
// entries are skipped (Get reports them when the URL is asked for).
func (s *DirStore) URLs(ctx context.Context) ([]string, error) {
	entries, err := os.ReadDir(filepath.Join(s.dir, "urls"))
	if err != nil {
		return nil, fmt.Errorf("collateral store: %w", err)
	}
	var out []string
	for _, e := range entries {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		if !e.Type().IsRegular() {
			continue
		}
		p, err := readBounded(filepath.Join(s.dir, "urls", e.Name()), 2*sha256.Size+1)
		if err != nil {
			continue
		}
		digest := string(bytes.TrimSpace(p))
		if d, err := hex.DecodeString(digest); err != nil || len(d) != sha256.Size {
			continue
		}
		data, err := readBounded(s.blob(digest), maxStored)
		if err != nil {
			continue
		}
		rs, err := Parse(data)
		if err != nil || len(rs) != 1 {
			continue
		}
		// The pointer's name is the hash of the URL it serves: a blob under another URL's
		// pointer is not this one's.
		if h := sha256.Sum256([]byte(rs[0].URL)); hex.EncodeToString(h[:]) != e.Name() {
			continue
		}
		out = append(out, rs[0].URL)
	}
	sort.Strings(out)
	return out, nil
}
