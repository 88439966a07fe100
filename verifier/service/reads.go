package service

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/proofline/proofline/evidence"
	"github.com/proofline/proofline/evidence/blob"
	"github.com/proofline/proofline/evidence/index"
	"github.com/proofline/proofline/evidence/log"
)

// StoredResult is an attestation result read back from the log (GET /v1/results/{id}).
type StoredResult struct {
	LogIndex     uint64
	RecordSHA256 [32]byte
	Subject      string
	Platform     string
	Time         time.Time
	// ResultJSON is the result exactly as recorded and first returned.
	ResultJSON []byte
}

// ParseID parses a result id or log index: a decimal number.
func ParseID(id string) (uint64, error) {
	n, err := strconv.ParseUint(id, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("%w: %q is not a result id (a log index, in decimal)", ErrNotFound, id)
	}
	return n, nil
}

// Result returns the attestation result with the given id, read from the log and verified
// against the key history. Agents see only their own results; to them another's is ErrNotFound.
func (s *Service) Result(ctx context.Context, p Principal, id string) (*StoredResult, error) {
	idx, err := ParseID(id)
	if err != nil {
		return nil, err
	}
	leaf, rec, err := s.record(ctx, idx)
	if err != nil {
		return nil, err
	}
	if rec.Kind != evidence.KindAttestation || (p.Role == RoleAgent && rec.Subject.ID != p.subject()) {
		return nil, fmt.Errorf("%w: no attestation result %d", ErrNotFound, idx)
	}
	return &StoredResult{
		LogIndex: idx, RecordSHA256: sha256.Sum256(leaf), Subject: rec.Subject.ID, Platform: rec.Subject.Platform,
		Time: rec.Time, ResultJSON: rec.Result,
	}, nil
}

// record reads and opens the leaf at idx.
func (s *Service) record(ctx context.Context, idx uint64) ([]byte, *evidence.Record, error) {
	leaf, err := s.d.Log.Entry(ctx, idx)
	if errors.Is(err, log.ErrNotFound) {
		return nil, nil, fmt.Errorf("%w: no record %d", ErrNotFound, idx)
	}
	if err != nil {
		return nil, nil, fmt.Errorf("%w: reading record %d: %w", ErrUnavailable, idx, err)
	}
	rec, _, err := evidence.Open(leaf, s.d.KeyHistory)
	if err != nil {
		return nil, nil, fmt.Errorf("service: record %d does not verify against the key history: %w", idx, err)
	}
	return leaf, rec, nil
}

// Record returns the signed record (the log leaf) at idx and its decoded form.
func (s *Service) Record(ctx context.Context, idx uint64) ([]byte, *evidence.Record, error) {
	return s.record(ctx, idx)
}

// eachRecord calls fn, in log order, with every record the index matches for q — paging through
// all of them whatever q.Limit — and the error of reading it back from the log (s.record), if
// any. It stops at fn's first error and returns it.
func (s *Service) eachRecord(ctx context.Context, q index.Query, fn func(logIndex uint64, leaf []byte, rec *evidence.Record, err error) error) error {
	q.Limit = index.MaxLimit
	for {
		es, err := s.Records(ctx, q)
		if err != nil {
			return err
		}
		for _, e := range es {
			leaf, rec, err := s.record(ctx, e.LogIndex)
			if err := fn(e.LogIndex, leaf, rec, err); err != nil {
				return err
			}
		}
		if len(es) < q.Limit {
			return nil
		}
		q.Start = es[len(es)-1].LogIndex + 1
	}
}

// Records queries the index.
func (s *Service) Records(ctx context.Context, q index.Query) ([]index.Entry, error) {
	es, err := s.d.Index.Query(ctx, q)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	return es, nil
}

// Blob returns a blob named by a record (collateral, a large evidence envelope, a policy). A blob
// the store does not hold is ErrNotFound; any other failure of the store is ErrUnavailable (its
// details are for the operator's log, not the caller).
func (s *Service) Blob(ctx context.Context, d evidence.Digest) ([]byte, error) {
	b, err := s.d.Blobs.Get(ctx, d)
	switch {
	case errors.Is(err, blob.ErrNotFound):
		return nil, fmt.Errorf("%w: no blob %s", ErrNotFound, d)
	case err != nil:
		return nil, fmt.Errorf("%w: blob store: reading %s: %w", ErrUnavailable, d, err)
	}
	return b, nil
}

// Checkpoint returns the latest published checkpoint of the evidence log.
func (s *Service) Checkpoint(ctx context.Context) (log.Checkpoint, error) {
	cp, err := s.d.Log.Checkpoint(ctx)
	if err != nil {
		return log.Checkpoint{}, fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	return cp, nil
}

// Proof is an RFC 6962 inclusion proof of one record in a published checkpoint.
type Proof struct {
	LogIndex uint64
	TreeSize uint64
	Hashes   [][]byte
	// Checkpoint is the signed note of the tree the proof is for, when the proof is for the
	// latest checkpoint.
	Checkpoint []byte
}

// InclusionProof proves the record at idx in the tree of treeSize leaves, or, with treeSize 0,
// in the latest checkpoint. A record no published checkpoint covers yet is ErrNotCovered.
func (s *Service) InclusionProof(ctx context.Context, idx, treeSize uint64) (*Proof, error) {
	p := &Proof{LogIndex: idx, TreeSize: treeSize}
	if treeSize == 0 {
		cp, err := s.Checkpoint(ctx)
		if err != nil {
			return nil, err
		}
		p.TreeSize, p.Checkpoint = cp.Size, cp.Note
	}
	if idx >= p.TreeSize {
		if treeSize != 0 {
			return nil, fmt.Errorf("%w: index %d is not in a tree of %d records", ErrInvalid, idx, treeSize)
		}
		if _, err := s.d.Log.Entry(ctx, idx); errors.Is(err, log.ErrNotFound) {
			return nil, fmt.Errorf("%w: no record %d", ErrNotFound, idx)
		}
		return nil, retryAfter(s.set.CheckpointInterval, ErrNotCovered, "record %d is not covered by the latest checkpoint (size %d) yet", idx, p.TreeSize)
	}
	h, err := s.d.Log.InclusionProof(ctx, idx, p.TreeSize)
	if errors.Is(err, log.ErrNotFound) {
		return nil, fmt.Errorf("%w: %w", ErrNotFound, err)
	}
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	p.Hashes = h
	return p, nil
}

// ConsistencyProof proves that the tree of oldSize leaves is a prefix of the tree of newSize.
func (s *Service) ConsistencyProof(ctx context.Context, oldSize, newSize uint64) ([][]byte, error) {
	if oldSize == 0 || oldSize > newSize {
		return nil, fmt.Errorf("%w: consistency from size %d to %d (want 0 < from ≤ to)", ErrInvalid, oldSize, newSize)
	}
	h, err := s.d.Log.ConsistencyProof(ctx, oldSize, newSize)
	if errors.Is(err, log.ErrNotFound) {
		return nil, fmt.Errorf("%w: %w", ErrNotFound, err)
	}
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	return h, nil
}

// Keys are what an auditor needs to verify records and checkpoints.
type Keys struct {
	// RecordKeys is the key history (evidence/README.md, "Key history") in its published JSON.
	RecordKeys json.RawMessage `json:"record_keys"`
	// LogKey is the note verifier key of the log's checkpoints.
	LogKey string `json:"log_key"`
}

// Keys returns the record key history and the log's checkpoint verifier key.
func (s *Service) Keys() (*Keys, error) {
	h, err := s.d.KeyHistory.MarshalJSON()
	if err != nil {
		return nil, err
	}
	return &Keys{RecordKeys: h, LogKey: s.d.LogVerifierKey}, nil
}

// JWKS returns the token verification keys (/.well-known/jwks.json).
func (s *Service) JWKS() ([]byte, error) { return s.d.Tokens.JWKS() }

// Readiness warning codes: the public part of a Warning (GET /readyz shows only these).
const (
	WarnTestRoots          = "test_roots"
	WarnNoCollateral       = "no_collateral_source"
	WarnPolicyUnpinned     = "policy_pins_no_measurement"
	WarnIndexUnreadable    = "index_unreadable"
	WarnIndexBehind        = "index_behind"
	WarnVerificationQueued = "verification_backlog"
	WarnCollateralExpiring = "collateral_expiring"
)

// Warning is one way the service is degraded: a stable Code, safe to show to anyone, and a
// Detail for operators (it may name the policy, paths, errors and queue depths: log it, do not
// serve it to unauthenticated callers).
type Warning struct {
	Code   string
	Detail string
}

// ErrShuttingDown is Ready's error once the service is draining.
var ErrShuttingDown = errors.New("service: shutting down")

// Ready reports whether the service can answer (nil) and, if so, what is degraded. It fails when
// the service is shutting down (ErrShuttingDown), or the log, the database or the policy store
// cannot be read (ErrUnavailable; the error names which and why, for the operator's log).
func (s *Service) Ready(ctx context.Context) (warnings []Warning, err error) {
	select {
	case <-s.draining:
		return nil, ErrShuttingDown
	default:
	}
	cp, err := s.d.Log.Checkpoint(ctx)
	if err != nil {
		return nil, fmt.Errorf("%w: evidence log: %w", ErrUnavailable, err)
	}
	if s.d.Ping != nil {
		if err := s.d.Ping(ctx); err != nil {
			return nil, fmt.Errorf("%w: database: %w", ErrUnavailable, err)
		}
	}
	pol, err := s.d.Policies.Active(ctx)
	if err != nil {
		return nil, fmt.Errorf("%w: policy store: %w", ErrUnavailable, err)
	}
	warn := func(code, format string, args ...any) {
		warnings = append(warnings, Warning{Code: code, Detail: fmt.Sprintf(format, args...)})
	}
	if s.d.Roots.Test {
		warn(WarnTestRoots, "test mode: appraising with test vendor roots; every result says test_roots: true and relying parties refuse it")
	}
	if s.coll == nil {
		warn(WarnNoCollateral, "no collateral source: every verdict that needs vendor collateral is contraindicated (collateral_unavailable)")
	}
	if detail := s.collateralExpiring(); detail != "" {
		warn(WarnCollateralExpiring, "%s", detail)
	}
	if code, detail := s.selfCheckWarning(); detail != "" {
		warn(code, "%s", detail)
	}
	if (pol.Policy.TDX != nil && len(pol.Policy.TDX.MRTD) == 0) || (pol.Policy.SNP != nil && len(pol.Policy.SNP.Measurement) == 0) {
		warn(WarnPolicyUnpinned, "the active policy %q (version %d) pins no launch measurement for a platform it accepts: that platform's results are at best warning", pol.Policy.ID, pol.Version)
	}
	if next, err := s.d.Index.Next(ctx); err != nil {
		warn(WarnIndexUnreadable, "index unreadable: %v", err)
	} else if next+uint64(indexLagWarning) < cp.Size {
		warn(WarnIndexBehind, "the index is %d records behind the log; it catches up in the background", cp.Size-next)
	}
	if d := s.queue.depth(); d > s.set.Workers {
		warn(WarnVerificationQueued, "%d attestations waiting for a verification slot", d-s.set.Workers)
	}
	return warnings, nil
}

// indexLagWarning is how far the index may trail the log's checkpoint before /readyz warns.
const indexLagWarning = 100
