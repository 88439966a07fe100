package audit

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"time"

	f_log "github.com/transparency-dev/formats/log"
	"github.com/transparency-dev/merkle/proof"
	"github.com/transparency-dev/merkle/rfc6962"
	"golang.org/x/mod/sumdb/note"

	"github.com/proofline/proofline/evidence"
	"github.com/proofline/proofline/verifier/ear"
	"github.com/proofline/proofline/verifier/roots"
)

// VerifyOptions say what Verify trusts besides the bundle.
type VerifyOptions struct {
	// Keys is the record key history the auditor obtained independently; nil trusts the
	// bundle's keys/history.json (the report says so).
	Keys *evidence.KeyHistory
	// LogKey is the log's checkpoint verifier the auditor obtained independently; nil trusts the
	// bundle's note.pub (the report says so).
	LogKey note.Verifier
	// Previous is the checkpoint of the previous export the auditor holds: the bundle must prove
	// consistency from exactly that checkpoint. Nil accepts the bundle's previous-checkpoint, if any.
	Previous []byte
	// TestRoots re-perform the verdicts that used test vendor roots (test_roots: true); nil uses
	// the bundle's roots/, if any. Verdicts on the real vendor roots always use the built-in ones.
	TestRoots *roots.Set
	// Workers verify records in parallel (default GOMAXPROCS).
	Workers int
	// MaxBlobBytes bounds the bundle's blobs in all (default DefaultMaxBlobBytes).
	MaxBlobBytes int64
	// Progress, if set, is called every 1000 records verified and at the end.
	Progress func(done, total uint64)
}

// Finding is one failed check. Record names the record (log index) it concerns, if one.
type Finding struct {
	Record *uint64 `json:"record,omitempty"`
	// Check is a stable name: bundle, manifest, log_key, keys, checkpoint, consistency, roots,
	// blob, gap, order, inclusion, signature, window, subject, reference, reperform.
	Check   string `json:"check"`
	Message string `json:"message"`
}

func (f Finding) String() string {
	if f.Record != nil {
		return fmt.Sprintf("record %d: %s: %s", *f.Record, f.Check, f.Message)
	}
	return f.Check + ": " + f.Message
}

// CheckpointInfo describes a checkpoint Verify read.
type CheckpointInfo struct {
	Size uint64 `json:"size"`
	Root []byte `json:"root"`
	// Verified: the signature verified with the log key (for the previous checkpoint: and the
	// consistency proof to the bundle's checkpoint verified).
	Verified bool `json:"verified"`
}

// Verdict is one attestation verdict of the window, as recorded.
type Verdict struct {
	Index   uint64     `json:"index"`
	Time    time.Time  `json:"time"`
	Subject string     `json:"subject"`
	Status  ear.Status `json:"status"`
}

// Report is what Verify found. The bundle passed when OK.
type Report struct {
	Manifest *Manifest `json:"manifest,omitempty"`
	// LogKey is the checkpoint verifier key's name and hash (name+hex), LogKeyPinned whether it
	// came from VerifyOptions rather than the bundle; likewise the record key ids.
	LogKey       string   `json:"log_key,omitempty"`
	LogKeyPinned bool     `json:"log_key_pinned"`
	RecordKeys   []string `json:"record_keys,omitempty"`
	KeysPinned   bool     `json:"record_keys_pinned"`
	// TestRoots says where the test roots came from: "bundle", "given" or "" (none).
	TestRoots  string          `json:"test_roots,omitempty"`
	Checkpoint *CheckpointInfo `json:"checkpoint,omitempty"`
	Previous   *CheckpointInfo `json:"previous,omitempty"`
	// Records is the number of record files, Redacted the records present by their leaf hash only.
	Records  uint64 `json:"records"`
	Redacted uint64 `json:"redacted"`
	// Included and Signed count the inclusion proofs and record signatures that verified.
	Included uint64            `json:"included"`
	Signed   uint64            `json:"signed"`
	Kinds    map[string]uint64 `json:"kinds"`
	// OutsideWindow counts records between the window's edges timed outside it (concurrent
	// appends are not strictly in time order).
	OutsideWindow uint64 `json:"outside_window"`
	Blobs         int    `json:"blobs"`
	BlobBytes     int64  `json:"blob_bytes"`
	// Attestation verdicts of the window: Reproduced re-performed to the same result, of which
	// Normalised only once the verifier's identity and the messages of collateral_unavailable
	// findings are set aside (README.md, "Re-performance"); NotReproduced did not; NonceRefused are
	// refusals of a nonce the service had not issued or had seen (not re-performable: the nonce
	// store is not evidence; they are contraindicated); NotReperformed could not be re-performed
	// (an input is missing or corrupt).
	Attestations   uint64 `json:"attestations"`
	Reproduced     uint64 `json:"reproduced"`
	Normalised     uint64 `json:"normalised"`
	NotReproduced  uint64 `json:"not_reproduced"`
	NonceRefused   uint64 `json:"nonce_refused"`
	NotReperformed uint64 `json:"not_reperformed"`
	// Failures are the failed checks, by record; FailuresOmitted counts those past the first 1000.
	Failures        []Finding `json:"failures"`
	FailuresOmitted int       `json:"failures_omitted,omitempty"`
	// Verdicts are the window's attestation verdicts, for Reconcile.
	Verdicts []Verdict `json:"-"`
}

// OK reports whether every check passed.
func (r *Report) OK() bool { return len(r.Failures) == 0 && r.FailuresOmitted == 0 }

const maxFindings = 1000

func (r *Report) add(f Finding) {
	if len(r.Failures) >= maxFindings {
		r.FailuresOmitted++
		return
	}
	r.Failures = append(r.Failures, f)
}

func (r *Report) fail(check, format string, args ...any) {
	r.add(Finding{Check: check, Message: fmt.Sprintf(format, args...)})
}

func at(i uint64, check, format string, args ...any) Finding {
	return Finding{Record: &i, Check: check, Message: fmt.Sprintf(format, args...)}
}

// Verify checks a bundle offline (README.md, "Verification"): the checkpoint's signature with
// the log key, the consistency proof from the previous checkpoint, that the records form the
// gap-free index range the manifest names with the window's edges outside the window, every
// inclusion proof and record signature (against the key history), every blob against its
// digest, and it re-performs every attestation verdict of the window with the embedded evidence,
// policy and collateral at the record's time, reporting any that does not reproduce. Everything
// about the bundle is a Finding in the report, never an error; the error is only ctx's.
func Verify(ctx context.Context, r io.Reader, opts VerifyOptions) (*Report, error) {
	br, err := newReader(r)
	if err != nil {
		rep := newReport()
		rep.fail("bundle", "%v", err)
		return rep, nil
	}
	return verifyBundle(ctx, br, opts)
}

func newReport() *Report { return &Report{Kinds: map[string]uint64{}, Failures: []Finding{}} }

// phase is where the single-pass reader is: metadata, then blobs, then records and proofs.
type phase int

const (
	phaseMeta phase = iota
	phaseBlobs
	phaseRecords
)

// meta is the bundle's metadata entries.
type meta struct {
	manifest, logKey, keys, checkpoint, previous, consistency []byte
	roots                                                     map[string][]byte
}

func verifyBundle(ctx context.Context, br *reader, opts VerifyOptions) (*Report, error) {
	if opts.Workers <= 0 {
		opts.Workers = runtime.GOMAXPROCS(0)
	}
	if opts.MaxBlobBytes <= 0 {
		opts.MaxBlobBytes = DefaultMaxBlobBytes
	}
	b := &bundleVerifier{ctx: ctx, opts: opts, rep: newReport(), blobs: map[evidence.Digest][]byte{}, badBlobs: map[evidence.Digest]evidence.Digest{},
		policies: map[evidence.Digest]*parsedPolicy{}, responses: map[evidence.Digest]*parsedResponse{}}
	defer b.cleanup()
	var (
		md      = meta{roots: map[string][]byte{}}
		ph      = phaseMeta
		first   = true
		pending *entry // a record file waiting for its proof
		next    uint64 // the next index expected
		pl      *pipeline
	)
	fatal := func(check, format string, args ...any) (*Report, error) {
		if pl != nil {
			pl.finish()
		}
		b.rep.fail(check, format, args...)
		return b.rep, nil
	}
	gap := func(from, to uint64) {
		switch {
		case to == from+1:
			b.add(at(from, "gap", "missing: the bundle accounts for records [%d, %d) but holds neither the record nor its inclusion proof", b.m.First, b.m.End))
		case to > from+1:
			b.add(at(from, "gap", "records %d to %d (%d records) are missing: the bundle accounts for records [%d, %d) but holds neither them nor their inclusion proofs", from, to-1, to-from, b.m.First, b.m.End))
		}
	}
	proofless := func(e *entry) {
		b.add(at(e.index, "inclusion", "the bundle holds the record but no inclusion proof for it"))
		next = e.index + 1
	}
	for {
		if err := ctx.Err(); err != nil {
			if pl != nil {
				pl.finish()
			}
			return nil, err
		}
		e, err := br.next()
		if err == io.EOF {
			break
		}
		if err != nil {
			return fatal("bundle", "%v", err)
		}
		if first && e.kind != kindManifest {
			return fatal("bundle", "%v: the first entry is %q, not %s", errBundle, e.name, nameManifest)
		}
		first = false
		switch e.kind {
		case kindBlob:
			if ph > phaseBlobs {
				return fatal("bundle", "%v: blob %s after the records (export writes every blob before the records)", errBundle, e.name)
			}
			if ph == phaseMeta {
				if ok := b.prepare(md); !ok {
					return b.rep, nil
				}
				ph = phaseBlobs
			}
			b.rep.BlobBytes += int64(len(e.data))
			if b.rep.BlobBytes > opts.MaxBlobBytes {
				return fatal("bundle", "the blobs take more than %d bytes", opts.MaxBlobBytes)
			}
			b.rep.Blobs++
			if got := evidence.Digest(sha256.Sum256(e.data)); got != e.digest {
				b.badBlobs[e.digest] = got
				b.rep.fail("blob", "%s: its bytes hash to %s (altered or swapped)", e.name, got)
			} else {
				b.blobs[e.digest] = e.data
			}
		case kindRecord, kindProof:
			if ph == phaseMeta {
				if ok := b.prepare(md); !ok {
					return b.rep, nil
				}
			}
			if ph != phaseRecords {
				ph = phaseRecords
				next = b.m.First
				pl = b.start()
			}
			if e.index < b.m.First || e.index >= b.m.End {
				b.add(at(e.index, "order", "%s is outside the bundle's range [%d, %d)", e.name, b.m.First, b.m.End))
				continue
			}
			if pending != nil && (e.kind == kindRecord || e.index != pending.index) {
				proofless(pending)
				pending = nil
			}
			if e.index < next {
				b.add(at(e.index, "order", "%s comes after the entries of record %d (export writes them in index order)", e.name, next-1))
				continue
			}
			gap(next, e.index)
			if e.kind == kindRecord {
				pending, next = e, e.index
				continue
			}
			var leaf []byte
			if pending != nil {
				leaf = pending.data
			}
			pending = nil
			pl.submit(job{index: e.index, leaf: leaf, proof: e.data})
			next = e.index + 1
		default:
			if ph != phaseMeta {
				return fatal("bundle", "%v: %s after the blobs or records (export writes the metadata first)", errBundle, e.name)
			}
			md.set(e)
		}
	}
	if ph == phaseMeta {
		if ok := b.prepare(md); !ok {
			return b.rep, nil
		}
	}
	if pl == nil {
		next = b.m.First
		pl = b.start()
	}
	if pending != nil {
		proofless(pending)
	}
	gap(next, b.m.End)
	pl.finish()
	if m := b.m; m.Records != b.rep.Records || m.Redacted != b.rep.Redacted || m.Blobs != b.rep.Blobs {
		b.rep.fail("manifest", "the manifest lists %d records, %d redacted and %d blobs; the bundle holds %d, %d and %d",
			m.Records, m.Redacted, m.Blobs, b.rep.Records, b.rep.Redacted, b.rep.Blobs)
	}
	slices.SortStableFunc(b.rep.Failures, func(x, y Finding) int {
		switch {
		case x.Record == nil && y.Record == nil:
			return 0
		case x.Record == nil:
			return -1
		case y.Record == nil:
			return 1
		case *x.Record < *y.Record:
			return -1
		case *x.Record > *y.Record:
			return 1
		}
		return 0
	})
	return b.rep, nil
}

func (md *meta) set(e *entry) {
	switch e.kind {
	case kindManifest:
		md.manifest = e.data
	case kindLogKey:
		md.logKey = e.data
	case kindKeys:
		md.keys = e.data
	case kindCheckpoint:
		md.checkpoint = e.data
	case kindPrevious:
		md.previous = e.data
	case kindConsistency:
		md.consistency = e.data
	case kindRoots:
		md.roots[strings.TrimPrefix(e.name, prefixRoots)] = e.data
	}
}

// bundleVerifier holds what the checks of the records share. After prepare and the blobs it is
// read-only, except for the parse caches (under mu).
type bundleVerifier struct {
	ctx  context.Context
	opts VerifyOptions
	rep  *Report
	m    *Manifest
	keys *evidence.KeyHistory
	// cpSize and cpRoot are the bundle checkpoint's; cpUsable when its body parsed (its
	// signature may still have failed: that is a finding of its own).
	cpSize   uint64
	cpRoot   []byte
	cpUsable bool
	blobs    map[evidence.Digest][]byte
	badBlobs map[evidence.Digest]evidence.Digest // name → what the bytes hash to
	builtin  *roots.Set
	test     *roots.Set
	rootsDir string

	// repMu serialises the report's writers once the records are being checked: the reader
	// (gaps, order) and the pipeline's collector, and guards nonces.
	repMu sync.Mutex
	// nonces maps the nonce of each verdict that rests on one (not a nonce refusal) to the
	// lowest index of the verdicts seen with it: the service consumes a nonce once.
	nonces map[string]uint64

	mu        sync.Mutex
	policies  map[evidence.Digest]*parsedPolicy
	responses map[evidence.Digest]*parsedResponse
}

// add records a finding of the reader.
func (b *bundleVerifier) add(f Finding) {
	b.repMu.Lock()
	defer b.repMu.Unlock()
	b.rep.add(f)
}

func (b *bundleVerifier) cleanup() {
	if b.rootsDir != "" {
		os.RemoveAll(b.rootsDir)
	}
}

// prepare checks the metadata. It returns false when the records cannot be checked at all (no
// usable manifest or key history); every problem is a finding.
func (b *bundleVerifier) prepare(md meta) bool {
	rep := b.rep
	m := &Manifest{}
	if err := decodeStrict(md.manifest, m); err != nil {
		rep.fail("manifest", "%s does not parse: %v", nameManifest, err)
		return false
	}
	switch {
	case m.Format != Format:
		rep.fail("manifest", "format %q, want %q", m.Format, Format)
		return false
	case m.First >= m.End:
		rep.fail("manifest", "the record range [%d, %d) is empty", m.First, m.End)
		return false
	case m.From != nil && m.To != nil && m.To.Before(*m.From):
		rep.fail("manifest", "the window ends (%s) before it starts (%s)", m.To.Format(time.RFC3339), m.From.Format(time.RFC3339))
		return false
	}
	b.m, rep.Manifest = m, m

	// Keys: the auditor's, or the bundle's.
	b.keys = b.opts.Keys
	rep.KeysPinned = b.keys != nil
	if b.keys == nil {
		var h evidence.KeyHistory
		if md.keys == nil {
			rep.fail("keys", "the bundle has no %s, and no key history was given", nameKeys)
			return false
		}
		if err := h.UnmarshalJSON(md.keys); err != nil {
			rep.fail("keys", "%s: %v", nameKeys, err)
			return false
		}
		b.keys = &h
	}
	for _, k := range b.keys.Keys() {
		rep.RecordKeys = append(rep.RecordKeys, hex.EncodeToString(k.ID))
	}

	// The log key and the checkpoint.
	v := b.opts.LogKey
	rep.LogKeyPinned = v != nil
	if v == nil {
		var err error
		if v, err = note.NewVerifier(strings.TrimSpace(string(md.logKey))); err != nil {
			rep.fail("log_key", "%s: %v", nameLogKey, err)
		}
	}
	if v != nil {
		rep.LogKey = fmt.Sprintf("%s+%08x", v.Name(), v.KeyHash())
	}
	cp, cpErr := b.openCheckpoint(md.checkpoint, v)
	if cp != nil {
		b.cpSize, b.cpRoot, b.cpUsable = cp.Size, cp.Hash, true
		rep.Checkpoint = &CheckpointInfo{Size: cp.Size, Root: cp.Hash, Verified: cpErr == nil}
	}
	switch {
	case md.checkpoint == nil:
		rep.fail("checkpoint", "the bundle has no %s", nameCheckpoint)
	case cpErr != nil:
		rep.fail("checkpoint", "the checkpoint (records [0, %d)) does not verify: %v", b.cpSize, cpErr)
	}
	if b.cpUsable {
		switch {
		case m.CheckpointSize != b.cpSize:
			rep.fail("manifest", "the manifest names a checkpoint of %d records, the bundle's has %d", m.CheckpointSize, b.cpSize)
		case m.Origin != cp.Origin:
			rep.fail("manifest", "the manifest names the log %q, the checkpoint is of %q", m.Origin, cp.Origin)
		case m.End > b.cpSize:
			rep.fail("checkpoint", "the checkpoint covers records [0, %d), not the bundle's [%d, %d): records %d to %d are not proven in the log", b.cpSize, m.First, m.End, b.cpSize, m.End-1)
		}
		if m.To == nil && m.End < b.cpSize {
			rep.fail("window", "the bundle asks for no end time but stops at record %d of %d: records %d to %d are missing", m.End, b.cpSize, m.End, b.cpSize-1)
		}
		// The first record after the window proves its end; without one, records appended after
		// the checkpoint and timed within the window (an old checkpoint's bundle) would be left out.
		if m.To != nil && m.End >= b.cpSize {
			rep.fail("window", "the bundle ends at the last record of its checkpoint (%d records), not at a record timed after the window's end (%s): it does not prove that the log holds nothing more in the window; export it again from the log as it is now",
				b.cpSize, m.To.Format(time.RFC3339))
		}
	}
	if m.From == nil && m.First > 0 {
		rep.fail("window", "the bundle asks for no start time but starts at record %d: records 0 to %d are missing", m.First, m.First-1)
	}
	b.checkConsistency(md, v, cp, cpErr == nil)

	// Roots for verdicts on test roots.
	b.test = b.opts.TestRoots
	if b.test != nil {
		rep.TestRoots = "given"
	} else if len(md.roots) > 0 {
		if err := b.loadRoots(md.roots); err != nil {
			rep.fail("roots", "the bundle's roots: %v", err)
		} else {
			rep.TestRoots = "bundle"
		}
	}
	var err error
	if b.builtin, err = roots.Builtin(); err != nil {
		rep.fail("roots", "the built-in vendor roots: %v", err)
	}
	if m.Roots != len(md.roots) {
		rep.fail("manifest", "the manifest names %d roots files, the bundle holds %d", m.Roots, len(md.roots))
	}
	return true
}

// openCheckpoint verifies a checkpoint note with v. When the signature does not verify it still
// returns the unverified body, if it parses, so that the records can be checked against it.
func (b *bundleVerifier) openCheckpoint(raw []byte, v note.Verifier) (*f_log.Checkpoint, error) {
	if raw == nil {
		return nil, errors.New("missing")
	}
	if v != nil {
		cp, _, _, err := f_log.ParseCheckpoint(raw, v.Name(), v)
		if err == nil {
			return cp, nil
		}
		err = fmt.Errorf("not signed by the log key %s+%08x: %v", v.Name(), v.KeyHash(), err)
		return unverifiedCheckpoint(raw), err
	}
	return unverifiedCheckpoint(raw), errors.New("no log key to verify it with")
}

// unverifiedCheckpoint parses a checkpoint note's body without its signatures, or returns nil.
func unverifiedCheckpoint(raw []byte) *f_log.Checkpoint {
	body, _, ok := bytes.Cut(raw, []byte("\n\n"))
	if !ok {
		return nil
	}
	var cp f_log.Checkpoint
	if _, err := cp.Unmarshal(append(body, '\n')); err != nil || len(cp.Hash) != sha256.Size {
		return nil
	}
	return &cp
}

// checkConsistency verifies the previous checkpoint and the consistency proof.
func (b *bundleVerifier) checkConsistency(md meta, v note.Verifier, cp *f_log.Checkpoint, cpVerified bool) {
	rep := b.rep
	if (md.previous == nil) != (md.consistency == nil) {
		rep.fail("consistency", "the bundle holds one of %s and %s without the other", namePrevious, nameConsistency)
		return
	}
	if md.previous == nil {
		if b.opts.Previous != nil {
			rep.fail("consistency", "you gave a previous checkpoint, but the bundle holds no consistency proof: it does not show that the log still holds what that checkpoint committed to")
		}
		if b.m.PreviousSize != nil {
			rep.fail("manifest", "the manifest names a previous checkpoint the bundle does not hold")
		}
		return
	}
	prevRaw := md.previous
	if b.opts.Previous != nil && !bytes.Equal(b.opts.Previous, md.previous) {
		mine := unverifiedCheckpoint(b.opts.Previous)
		theirs := unverifiedCheckpoint(md.previous)
		if mine == nil || theirs == nil || mine.Size != theirs.Size || !bytes.Equal(mine.Hash, theirs.Hash) {
			rep.fail("consistency", "the bundle proves consistency from another checkpoint than the one you gave")
			return
		}
		prevRaw = b.opts.Previous
	}
	prev, prevErr := b.openCheckpoint(prevRaw, v)
	if prev == nil {
		rep.fail("consistency", "the previous checkpoint does not parse: %v", prevErr)
		return
	}
	rep.Previous = &CheckpointInfo{Size: prev.Size, Root: prev.Hash}
	if prevErr != nil {
		rep.fail("consistency", "the previous checkpoint (records [0, %d)) does not verify: %v", prev.Size, prevErr)
	}
	if b.m.PreviousSize == nil || *b.m.PreviousSize != prev.Size {
		rep.fail("manifest", "the manifest does not name the previous checkpoint's size %d", prev.Size)
	}
	var cons consistencyProof
	if err := decodeStrict(md.consistency, &cons); err != nil {
		rep.fail("consistency", "%s does not parse: %v", nameConsistency, err)
		return
	}
	if cp == nil {
		rep.fail("consistency", "no usable checkpoint to prove consistency with")
		return
	}
	if cons.OldSize != prev.Size || cons.NewSize != cp.Size {
		rep.fail("consistency", "the proof is from size %d to %d, but the checkpoints have %d and %d records", cons.OldSize, cons.NewSize, prev.Size, cp.Size)
		return
	}
	if len(cons.Hashes) > 128 || slices.ContainsFunc(cons.Hashes, func(h []byte) bool { return len(h) != sha256.Size }) {
		rep.fail("consistency", "the proof's hashes are malformed")
		return
	}
	if err := proof.VerifyConsistency(rfc6962.DefaultHasher, prev.Size, cp.Size, cons.Hashes, prev.Hash, cp.Hash); err != nil {
		rep.fail("consistency", "records [0, %d) are not the ones the previous checkpoint (size %d, root %x) committed to: the log was forked or rewritten since (%v)", prev.Size, prev.Size, prev.Hash, err)
		return
	}
	rep.Previous.Verified = prevErr == nil && cpVerified
}

// loadRoots reads the bundle's roots files with roots.ReadDir, the reader of `--roots DIR`.
func (b *bundleVerifier) loadRoots(files map[string][]byte) error {
	if len(files) > maxRootsFiles {
		return fmt.Errorf("%d files, more than %d", len(files), maxRootsFiles)
	}
	dir, err := os.MkdirTemp("", "proofline-audit-roots-")
	if err != nil {
		return err
	}
	b.rootsDir = dir
	for name, data := range files {
		// Names were checked by classify: a plain file name ending in .pem.
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o600); err != nil {
			return err
		}
	}
	b.test, err = roots.ReadDir(dir)
	return err
}

// blob returns a blob of the bundle, or why it cannot.
func (b *bundleVerifier) blob(d evidence.Digest) ([]byte, string) {
	if data, ok := b.blobs[d]; ok {
		return data, ""
	}
	if got, ok := b.badBlobs[d]; ok {
		return nil, fmt.Sprintf("the bundle's blob %s does not match its digest: its bytes hash to %s (altered or swapped)", d, got)
	}
	return nil, fmt.Sprintf("blob %s is missing from the bundle", d)
}
