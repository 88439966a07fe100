package audit

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/proofline/proofline/evidence"
	"github.com/proofline/proofline/evidence/blob"
	evlog "github.com/proofline/proofline/evidence/log"
)

// Format is the bundle format this package writes and reads (manifest.json "format").
const Format = "proofline-audit-bundle/v1"

// Entry names in a bundle (README.md, "Archive").
const (
	nameManifest    = "manifest.json"
	nameReadme      = "README.txt"
	nameLogKey      = "note.pub"
	nameKeys        = "keys/history.json"
	nameCheckpoint  = "checkpoint"
	namePrevious    = "previous-checkpoint"
	nameConsistency = "proofs/consistency.json"
	prefixRoots     = "roots/"
	prefixBlobs     = "blobs/"
	prefixRecords   = "records/"
	prefixProofs    = "proofs/"
	suffixRecord    = ".cose"
	suffixProof     = ".json"
)

// Size limits of a bundle's entries: the reader refuses larger ones before reading them.
const (
	maxManifest   = 1 << 20
	maxReadme     = 64 << 10
	maxNote       = 16 << 10
	maxKeys       = 1 << 20
	maxProof      = 16 << 10
	maxRootsFile  = 1 << 20
	maxRootsFiles = 16
	// DefaultMaxBlobBytes bounds the blobs a bundle may hold in all (they are kept in memory while
	// the records are verified).
	DefaultMaxBlobBytes = 1 << 30
)

// Manifest is manifest.json: what the bundle holds and what it was exported for.
type Manifest struct {
	// Format is Format.
	Format string `json:"format"`
	// Created is when the bundle was exported; Generator the software that exported it.
	Created   time.Time `json:"created"`
	Generator string    `json:"generator"`
	// Origin is the log's origin (its checkpoints' first line and note key name).
	Origin string `json:"origin"`
	// From and To are the time window asked for (inclusive), Subject the subject asked for; absent
	// when not asked.
	From    *time.Time `json:"from,omitempty"`
	To      *time.Time `json:"to,omitempty"`
	Subject string     `json:"subject,omitempty"`
	// First and End delimit the records the bundle accounts for, [First, End): each has an
	// inclusion proof, and a record file unless it is redacted. With From, record First is the
	// last record before the window (when the window does not start the log); with To, record
	// End-1 is the first record after it (when the window does not end at the checkpoint).
	First uint64 `json:"first"`
	End   uint64 `json:"end"`
	// CheckpointSize is the size of the checkpoint every inclusion proof is for.
	CheckpointSize uint64 `json:"checkpoint_size"`
	// PreviousSize is the size of the previous checkpoint, when the bundle proves consistency
	// with one.
	PreviousSize *uint64 `json:"previous_checkpoint_size,omitempty"`
	// Records is the number of record files, Redacted the number of records present only by
	// their leaf hash (other subjects, with Subject), Blobs and Roots the number of blob and
	// roots files.
	Records  uint64 `json:"records"`
	Redacted uint64 `json:"redacted"`
	Blobs    int    `json:"blobs"`
	Roots    int    `json:"roots"`
}

// inclusionProof is proofs/<index>.json: the RFC 6962 inclusion proof of one record in the tree
// of the bundle's checkpoint.
type inclusionProof struct {
	Index    uint64 `json:"index"`
	TreeSize uint64 `json:"tree_size"`
	// LeafHash is the RFC 6962 leaf hash, SHA-256(0x00 ‖ record), of a redacted record; absent
	// when the bundle holds the record.
	LeafHash []byte   `json:"leaf_hash,omitempty"`
	Hashes   [][]byte `json:"hashes"`
}

// consistencyProof is proofs/consistency.json: the RFC 6962 consistency proof from the previous
// checkpoint to the bundle's.
type consistencyProof struct {
	OldSize uint64   `json:"old_size"`
	NewSize uint64   `json:"new_size"`
	Hashes  [][]byte `json:"hashes"`
}

// decodeStrict decodes exactly one JSON value with no unknown fields.
func decodeStrict(data []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return err
	}
	if _, err := dec.Token(); err != io.EOF {
		return errors.New("data after the JSON value")
	}
	return nil
}

func recordName(i uint64) string { return fmt.Sprintf("%s%012d%s", prefixRecords, i, suffixRecord) }
func proofName(i uint64) string  { return fmt.Sprintf("%s%012d%s", prefixProofs, i, suffixProof) }
func blobName(d evidence.Digest) string {
	return prefixBlobs + d.String()
}

var rootsNameRE = regexp.MustCompile(`^roots/[A-Za-z0-9][A-Za-z0-9._-]{0,63}\.pem$`)

// entryKind classifies an entry name.
type entryKind int

const (
	kindUnknown entryKind = iota
	kindManifest
	kindReadme
	kindLogKey
	kindKeys
	kindCheckpoint
	kindPrevious
	kindConsistency
	kindRoots
	kindBlob
	kindRecord
	kindProof
)

// classify returns what an entry name is and, for blobs, records and proofs, its digest or
// index. A name is accepted only in the one form the writer produces (non-malleable: one bundle
// content has one set of names).
func classify(name string) (entryKind, evidence.Digest, uint64) {
	switch name {
	case nameManifest:
		return kindManifest, evidence.Digest{}, 0
	case nameReadme:
		return kindReadme, evidence.Digest{}, 0
	case nameLogKey:
		return kindLogKey, evidence.Digest{}, 0
	case nameKeys:
		return kindKeys, evidence.Digest{}, 0
	case nameCheckpoint:
		return kindCheckpoint, evidence.Digest{}, 0
	case namePrevious:
		return kindPrevious, evidence.Digest{}, 0
	case nameConsistency:
		return kindConsistency, evidence.Digest{}, 0
	}
	switch {
	case rootsNameRE.MatchString(name):
		return kindRoots, evidence.Digest{}, 0
	case strings.HasPrefix(name, prefixBlobs):
		var d evidence.Digest
		h := strings.TrimPrefix(name, prefixBlobs)
		if b, err := hex.DecodeString(h); err == nil && len(b) == len(d) && hex.EncodeToString(b) == h {
			copy(d[:], b)
			return kindBlob, d, 0
		}
	case strings.HasPrefix(name, prefixRecords) && strings.HasSuffix(name, suffixRecord):
		if i, ok := parseIndex(strings.TrimSuffix(strings.TrimPrefix(name, prefixRecords), suffixRecord)); ok && recordName(i) == name {
			return kindRecord, evidence.Digest{}, i
		}
	case strings.HasPrefix(name, prefixProofs) && strings.HasSuffix(name, suffixProof):
		if i, ok := parseIndex(strings.TrimSuffix(strings.TrimPrefix(name, prefixProofs), suffixProof)); ok && proofName(i) == name {
			return kindProof, evidence.Digest{}, i
		}
	}
	return kindUnknown, evidence.Digest{}, 0
}

func parseIndex(s string) (uint64, bool) {
	if s == "" || strings.TrimLeft(s, "0123456789") != "" {
		return 0, false
	}
	i, err := strconv.ParseUint(s, 10, 64)
	return i, err == nil
}

// limit returns the largest entry of a kind the reader accepts.
func limit(k entryKind) int64 {
	switch k {
	case kindManifest:
		return maxManifest
	case kindReadme:
		return maxReadme
	case kindLogKey, kindCheckpoint, kindPrevious:
		return maxNote
	case kindKeys:
		return maxKeys
	case kindConsistency, kindProof:
		return maxProof
	case kindRoots:
		return maxRootsFile
	case kindBlob:
		return blob.MaxSize
	case kindRecord:
		return evlog.MaxLeafSize
	}
	return 0
}

// writer writes a bundle: a gzip-compressed tar of regular files, in the order the reader
// requires.
type writer struct {
	gz   *gzip.Writer
	tw   *tar.Writer
	time time.Time
}

func newWriter(w io.Writer, modTime time.Time) *writer {
	gz := gzip.NewWriter(w)
	return &writer{gz: gz, tw: tar.NewWriter(gz), time: modTime}
}

func (w *writer) add(name string, data []byte) error {
	hdr := &tar.Header{
		Typeflag: tar.TypeReg, Name: name, Mode: 0o644, Size: int64(len(data)),
		ModTime: w.time, Format: tar.FormatPAX,
	}
	if err := w.tw.WriteHeader(hdr); err != nil {
		return err
	}
	_, err := w.tw.Write(data)
	return err
}

func (w *writer) addJSON(name string, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	return w.add(name, append(b, '\n'))
}

func (w *writer) close() error {
	if err := w.tw.Close(); err != nil {
		return err
	}
	return w.gz.Close()
}

// entry is one entry read from a bundle.
type entry struct {
	name   string
	kind   entryKind
	digest evidence.Digest // kindBlob
	index  uint64          // kindRecord, kindProof
	data   []byte
}

// reader reads a bundle's entries one at a time, refusing anything but regular files with
// known names within their size limits.
type reader struct {
	tr   *tar.Reader
	seen map[string]bool
}

// errBundle marks errors about the archive itself (as opposed to its contents).
var errBundle = errors.New("not a readable audit bundle")

func newReader(r io.Reader) (*reader, error) {
	gz, err := gzip.NewReader(r)
	if err != nil {
		return nil, fmt.Errorf("%w: gzip: %v", errBundle, err)
	}
	gz.Multistream(false)
	return newTarReader(gz), nil
}

func newTarReader(r io.Reader) *reader {
	return &reader{tr: tar.NewReader(r), seen: map[string]bool{}}
}

// next returns the next entry, or io.EOF at the end of the archive.
func (r *reader) next() (*entry, error) {
	hdr, err := r.tr.Next()
	if err == io.EOF {
		return nil, io.EOF
	}
	if err != nil {
		return nil, fmt.Errorf("%w: tar: %v", errBundle, err)
	}
	name := hdr.Name
	if hdr.Typeflag != tar.TypeReg {
		return nil, fmt.Errorf("%w: entry %q is not a regular file (type %q)", errBundle, name, hdr.Typeflag)
	}
	kind, d, i := classify(name)
	if kind == kindUnknown {
		return nil, fmt.Errorf("%w: unexpected entry %q", errBundle, name)
	}
	if r.seen[name] {
		return nil, fmt.Errorf("%w: entry %q appears twice", errBundle, name)
	}
	r.seen[name] = true
	if hdr.Size < 0 || hdr.Size > limit(kind) {
		return nil, fmt.Errorf("%w: entry %q has %d bytes, more than %d", errBundle, name, hdr.Size, limit(kind))
	}
	// Read what is there rather than allocate what the header claims: a truncated archive must
	// not cost the memory of the sizes it names.
	data, err := io.ReadAll(io.LimitReader(r.tr, hdr.Size))
	if err != nil {
		return nil, fmt.Errorf("%w: entry %q: %v", errBundle, name, err)
	}
	if int64(len(data)) != hdr.Size {
		return nil, fmt.Errorf("%w: entry %q is truncated", errBundle, name)
	}
	return &entry{name: name, kind: kind, digest: d, index: i, data: data}, nil
}

// BundleCheckpoint returns the checkpoint (signed note) of a bundle, e.g. the previous export's,
// to give to ExportOptions.Previous or VerifyOptions.Previous. It does not verify anything.
func BundleCheckpoint(r io.Reader) ([]byte, error) {
	br, err := newReader(r)
	if err != nil {
		return nil, err
	}
	for {
		e, err := br.next()
		if err == io.EOF {
			return nil, fmt.Errorf("%w: no %s entry", errBundle, nameCheckpoint)
		}
		if err != nil {
			return nil, err
		}
		if e.kind == kindCheckpoint {
			return e.data, nil
		}
		if e.kind == kindBlob || e.kind == kindRecord || e.kind == kindProof {
			return nil, fmt.Errorf("%w: no %s entry before the blobs and records", errBundle, nameCheckpoint)
		}
	}
}

// IsBundle reports whether data starts like a bundle (a gzip stream) rather than a checkpoint
// note, which is text.
func IsBundle(prefix []byte) bool {
	return len(prefix) >= 2 && prefix[0] == 0x1f && prefix[1] == 0x8b
}
