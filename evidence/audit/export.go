package audit

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"slices"
	"strings"
	"time"

	f_log "github.com/transparency-dev/formats/log"
	"github.com/transparency-dev/merkle/proof"
	"github.com/transparency-dev/merkle/rfc6962"
	"github.com/transparency-dev/tessera/client"
	"github.com/veraison/go-cose"
	"golang.org/x/mod/sumdb/note"

	"github.com/proofline/proofline/evidence"
	evlog "github.com/proofline/proofline/evidence/log"
	"github.com/proofline/proofline/internal/buildinfo"
)

// Errors of Export that are part of the contract (use errors.Is).
var (
	// ErrEmpty: no record of the log falls in the window.
	ErrEmpty = errors.New("audit: no record in the window")
	// ErrWindowOpen: the window has an end time, but the log holds no record after it yet, which
	// a bundle needs to prove where the window ends.
	ErrWindowOpen = errors.New("audit: the window has not closed")
	// ErrInconsistent: the log is not consistent with the previous checkpoint (it was forked or
	// rewritten), or the previous checkpoint, or one the log has served, is larger than the
	// log's (it was rolled back).
	ErrInconsistent = errors.New("audit: the log is not consistent with an earlier checkpoint")
)

// BlobSource is what Export needs of the blob store (evidence/blob): the bytes stored under a
// digest, verified against it.
type BlobSource interface {
	Get(ctx context.Context, d evidence.Digest) ([]byte, error)
}

// Source is the log Export reads: its storage, its checkpoint verifier key, the record key
// history and the blob store of the records' collateral, policies and large evidence.
type Source struct {
	// Log reads the log's checkpoint, entry bundles and tiles (evlog.POSIXReader, MySQLReader).
	Log evlog.Reader
	// LogKey is the note verifier key of the log's checkpoints (note.pub).
	LogKey string
	// KeyHistory is the record key history in its published JSON (keys/history.json).
	KeyHistory []byte
	Blobs      BlobSource
}

// ExportOptions select what to export.
type ExportOptions struct {
	// From and To bound the records' times (inclusive); zero means unbounded.
	From, To time.Time
	// Subject, if set, exports only the records about that subject (and those about no subject:
	// policy changes); the other records of the window are present only by their leaf hash.
	Subject string
	// Previous is the checkpoint of the previous export (a signed note), if any: the bundle then
	// proves that the log is consistent with it.
	Previous []byte
	// Roots are the test vendor roots the verdicts used, as PEM files by name (roots.ReadDir's
	// format), for records with test_roots: true. Leave nil for production logs.
	Roots map[string][]byte
	// Now is the bundle's creation time (default: time.Now).
	Now time.Time
	// Progress, if set, is called as the export goes: stage "scan" while it looks for the window
	// (done of total log records), then "write" (done of total bundle records).
	Progress func(stage string, done, total uint64)
}

// Export writes a bundle of the records in the window to w (format: README.md). It reads the
// latest checkpoint of the log and exports the contiguous range of records whose first record is
// the first one timed at or after From and whose last is the last one timed at or before To,
// plus the record just before and just after the range (so that a verifier sees the window's
// edges), each with its inclusion proof in that checkpoint, the blobs they name, the key history,
// the log's note key, and the consistency proof from Previous. It does not verify the records'
// signatures (Verify does); a record that does not decode, a blob missing from the store or a
// log inconsistent with Previous (ErrInconsistent) fails the export.
func Export(ctx context.Context, w io.Writer, src Source, opts ExportOptions) (*Manifest, error) {
	if opts.Now.IsZero() {
		opts.Now = time.Now()
	}
	if !opts.From.IsZero() && !opts.To.IsZero() && opts.To.Before(opts.From) {
		return nil, fmt.Errorf("audit: the window ends (%s) before it starts (%s)", opts.To.Format(time.RFC3339), opts.From.Format(time.RFC3339))
	}
	v, err := note.NewVerifier(strings.TrimSpace(src.LogKey))
	if err != nil {
		return nil, fmt.Errorf("audit: the log's note key: %w", err)
	}
	var hist evidence.KeyHistory
	if err := hist.UnmarshalJSON(src.KeyHistory); err != nil {
		return nil, fmt.Errorf("audit: %w", err)
	}
	// The largest checkpoint the log has served (its I6 floor), read before the latest one: the
	// floor only ever holds published checkpoints, so on a log that was not rolled back it is
	// never larger.
	var floor *f_log.Checkpoint
	switch rawFloor, err := src.Log.ReadServedCheckpoint(ctx); {
	case errors.Is(err, fs.ErrNotExist):
	case err != nil:
		return nil, fmt.Errorf("audit: reading the log's served checkpoint: %w", err)
	default:
		if floor, _, _, err = f_log.ParseCheckpoint(rawFloor, v.Name(), v); err != nil {
			return nil, fmt.Errorf("audit: the log's served checkpoint does not verify with its note key (run proofline log fsck): %w", err)
		}
	}
	rawCP, err := src.Log.ReadCheckpoint(ctx)
	if err != nil {
		return nil, fmt.Errorf("audit: reading the log's checkpoint: %w", err)
	}
	cp, _, _, err := f_log.ParseCheckpoint(rawCP, v.Name(), v)
	if err != nil {
		return nil, fmt.Errorf("audit: the log's checkpoint does not verify with its note key: %w", err)
	}
	if floor != nil && floor.Size > cp.Size {
		return nil, fmt.Errorf("%w: the log has served a checkpoint of %d records, but its storage now holds one of %d: it was rolled back, and records %d to %d are missing (run proofline log fsck)",
			ErrInconsistent, floor.Size, cp.Size, cp.Size, floor.Size-1)
	}
	pb, err := client.NewProofBuilder(ctx, cp.Size, src.Log.ReadTile)
	if err != nil {
		return nil, fmt.Errorf("audit: %w", err)
	}
	var cons *consistencyProof
	if opts.Previous != nil {
		if cons, err = consistency(ctx, pb, opts.Previous, v, cp); err != nil {
			return nil, err
		}
	}
	lr := evlog.NewLeafReader(src.Log, v)
	if n, err := lr.Size(ctx); err != nil {
		return nil, fmt.Errorf("audit: %w", err)
	} else if n < cp.Size {
		return nil, fmt.Errorf("audit: the log's checkpoint went from size %d back to %d while exporting", cp.Size, n)
	}
	progress := func(stage string, done, total uint64) {
		if opts.Progress != nil && (done%1000 == 0 || done == total) {
			opts.Progress(stage, done, total)
		}
	}

	// Scan: find the window [start, stop).
	start, stop := cp.Size, uint64(0)
	for i := range cp.Size {
		leaf, err := lr.Entry(ctx, i)
		if err != nil {
			return nil, fmt.Errorf("audit: record %d: %w", i, err)
		}
		rec, err := peek(leaf)
		if err != nil {
			return nil, fmt.Errorf("audit: record %d: %w (run proofline log fsck)", i, err)
		}
		if start == cp.Size && (opts.From.IsZero() || !rec.Time.Before(opts.From)) {
			start = i
		}
		if opts.To.IsZero() || !rec.Time.After(opts.To) {
			stop = i + 1
		}
		progress("scan", i+1, cp.Size)
	}
	if start >= stop {
		return nil, fmt.Errorf("%w [%s, %s] (the log has %d records)", ErrEmpty, timeOrDash(opts.From), timeOrDash(opts.To), cp.Size)
	}
	m := &Manifest{
		Format: Format, Created: opts.Now.UTC().Truncate(time.Second), Generator: "proofline " + buildinfo.Version(),
		Origin: cp.Origin, Subject: opts.Subject, First: start, End: stop, CheckpointSize: cp.Size, Roots: len(opts.Roots),
	}
	if !opts.From.IsZero() {
		f := opts.From.UTC()
		m.From = &f
		if start > 0 {
			m.First = start - 1
		}
	}
	if !opts.To.IsZero() {
		if stop == cp.Size {
			return nil, fmt.Errorf("%w: no record after %s is in the log yet (it has %d records), so a bundle could not prove where the window ends; export again once the log holds a later record (a running verifier records every attestation), or leave the end time out to export up to the latest record",
				ErrWindowOpen, opts.To.UTC().Format(time.RFC3339), cp.Size)
		}
		t := opts.To.UTC()
		m.To = &t
		m.End = stop + 1
	}
	if cons != nil {
		m.PreviousSize = &cons.OldSize
	}

	// Select the records and collect the blobs they name.
	full := func(i uint64, rec *evidence.Record) bool {
		return i < start || i >= stop || opts.Subject == "" || rec.Subject == nil || rec.Subject.ID == opts.Subject
	}
	blobs := map[evidence.Digest]bool{} // digest → required
	for i := m.First; i < m.End; i++ {
		leaf, err := lr.Entry(ctx, i)
		if err != nil {
			return nil, fmt.Errorf("audit: record %d: %w", i, err)
		}
		rec, err := peek(leaf)
		if err != nil {
			return nil, fmt.Errorf("audit: record %d: %w", i, err)
		}
		if !full(i, rec) {
			m.Redacted++
			continue
		}
		m.Records++
		if i < start || i >= stop {
			continue // the window's edges: their times matter, not their blobs
		}
		for d, required := range references(rec) {
			blobs[d] = blobs[d] || required
		}
	}
	digests := make([]evidence.Digest, 0, len(blobs))
	for d := range blobs {
		digests = append(digests, d)
	}
	slices.SortFunc(digests, func(a, b evidence.Digest) int { return bytes.Compare(a[:], b[:]) })
	blobData := make([][]byte, 0, len(digests))
	var kept []evidence.Digest
	for _, d := range digests {
		b, err := src.Blobs.Get(ctx, d)
		if err != nil {
			if !blobs[d] {
				continue // an optional blob (a relying party's release policy) the store never had
			}
			return nil, fmt.Errorf("audit: blob %s, named by a record in the window: %w", d, err)
		}
		if sha256.Sum256(b) != d {
			return nil, fmt.Errorf("audit: the blob store returned bytes for %s that hash to something else", d)
		}
		kept = append(kept, d)
		blobData = append(blobData, b)
	}
	m.Blobs = len(kept)

	// Write.
	bw := newWriter(w, m.Created)
	if err := bw.addJSON(nameManifest, m); err != nil {
		return nil, fmt.Errorf("audit: writing: %w", err)
	}
	meta := []struct {
		name string
		data []byte
	}{
		{nameReadme, readme(m)},
		{nameLogKey, []byte(strings.TrimSpace(src.LogKey) + "\n")},
		{nameKeys, src.KeyHistory},
		{nameCheckpoint, rawCP},
	}
	if cons != nil {
		meta = append(meta, struct {
			name string
			data []byte
		}{namePrevious, opts.Previous})
	}
	for _, e := range meta {
		if err := bw.add(e.name, e.data); err != nil {
			return nil, fmt.Errorf("audit: writing %s: %w", e.name, err)
		}
	}
	if cons != nil {
		if err := bw.addJSON(nameConsistency, cons); err != nil {
			return nil, fmt.Errorf("audit: writing: %w", err)
		}
	}
	names := make([]string, 0, len(opts.Roots))
	for name := range opts.Roots {
		if !rootsNameRE.MatchString(prefixRoots + name) {
			return nil, fmt.Errorf("audit: roots file name %q: want letters, digits, '.', '_' or '-', ending in .pem", name)
		}
		names = append(names, name)
	}
	slices.Sort(names)
	for _, name := range names {
		if err := bw.add(prefixRoots+name, opts.Roots[name]); err != nil {
			return nil, fmt.Errorf("audit: writing: %w", err)
		}
	}
	for k, d := range kept {
		if err := bw.add(blobName(d), blobData[k]); err != nil {
			return nil, fmt.Errorf("audit: writing: %w", err)
		}
	}
	for i := m.First; i < m.End; i++ {
		leaf, err := lr.Entry(ctx, i)
		if err != nil {
			return nil, fmt.Errorf("audit: record %d: %w", i, err)
		}
		rec, err := peek(leaf)
		if err != nil {
			return nil, fmt.Errorf("audit: record %d: %w", i, err)
		}
		hashes, err := pb.InclusionProof(ctx, i)
		if err != nil {
			return nil, fmt.Errorf("audit: record %d: inclusion proof: %w", i, err)
		}
		if err := proof.VerifyInclusion(rfc6962.DefaultHasher, i, cp.Size, rfc6962.DefaultHasher.HashLeaf(leaf), hashes, cp.Hash); err != nil {
			return nil, fmt.Errorf("audit: record %d: the log's tiles give an inclusion proof that does not verify (run proofline log fsck): %w", i, err)
		}
		p := inclusionProof{Index: i, TreeSize: cp.Size, Hashes: hashes}
		if full(i, rec) {
			if err := bw.add(recordName(i), leaf); err != nil {
				return nil, fmt.Errorf("audit: writing: %w", err)
			}
		} else {
			p.LeafHash = rfc6962.DefaultHasher.HashLeaf(leaf)
		}
		if err := bw.addJSON(proofName(i), p); err != nil {
			return nil, fmt.Errorf("audit: writing: %w", err)
		}
		progress("write", i+1-m.First, m.End-m.First)
		if err := ctx.Err(); err != nil {
			return nil, err
		}
	}
	if err := bw.close(); err != nil {
		return nil, fmt.Errorf("audit: writing: %w", err)
	}
	return m, nil
}

// consistency checks the previous checkpoint against the log and returns the proof.
func consistency(ctx context.Context, pb *client.ProofBuilder, previous []byte, v note.Verifier, cp *f_log.Checkpoint) (*consistencyProof, error) {
	prev, _, _, err := f_log.ParseCheckpoint(previous, v.Name(), v)
	if err != nil {
		return nil, fmt.Errorf("audit: the previous checkpoint does not verify with the log's note key: %w", err)
	}
	if prev.Size > cp.Size {
		return nil, fmt.Errorf("%w: the previous checkpoint has %d records, the log's latest only %d", ErrInconsistent, prev.Size, cp.Size)
	}
	p := &consistencyProof{OldSize: prev.Size, NewSize: cp.Size, Hashes: [][]byte{}}
	if prev.Size > 0 && prev.Size < cp.Size {
		if p.Hashes, err = pb.ConsistencyProof(ctx, prev.Size, cp.Size); err != nil {
			return nil, fmt.Errorf("audit: consistency proof: %w", err)
		}
	}
	if err := proof.VerifyConsistency(rfc6962.DefaultHasher, prev.Size, cp.Size, p.Hashes, prev.Hash, cp.Hash); err != nil {
		return nil, fmt.Errorf("%w: records [0, %d) differ from those the previous checkpoint committed to (forked or rewritten): %v", ErrInconsistent, prev.Size, err)
	}
	return p, nil
}

// peek decodes a signed record without verifying its signature.
func peek(leaf []byte) (*evidence.Record, error) {
	var msg cose.Sign1Message
	if err := msg.UnmarshalCBOR(leaf); err != nil {
		return nil, fmt.Errorf("not a COSE_Sign1 record: %w", err)
	}
	return evidence.ParseRecord(msg.Payload)
}

// references returns the blobs a record names, each with whether a verifier needs it: the
// evidence by digest, the collateral and the policy of an attestation, the policy of a policy
// change, the collateral of a collateral update; a key-release decision's release policy is
// optional (a relying party's policy need not be in the verifier's blob store).
func references(rec *evidence.Record) map[evidence.Digest]bool {
	refs := map[evidence.Digest]bool{}
	if rec.Evidence != nil && rec.Evidence.Digest != nil {
		refs[*rec.Evidence.Digest] = true
	}
	for _, c := range rec.Collateral {
		refs[c.Digest] = true
	}
	if rec.Policy != nil {
		refs[rec.Policy.Digest] = rec.Kind != evidence.KindKeyRelease
	}
	return refs
}

func timeOrDash(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.UTC().Format(time.RFC3339)
}
