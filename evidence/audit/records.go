package audit

import (
	"crypto/sha256"
	"fmt"
	"sync"
	"time"

	"github.com/transparency-dev/merkle/proof"
	"github.com/transparency-dev/merkle/rfc6962"

	"github.com/proofline/proofline/evidence"
	"github.com/proofline/proofline/verifier/policy"
)

// job is one record index to check: its record file (nil when the bundle has none) and proof.
type job struct {
	index uint64
	leaf  []byte
	proof []byte
}

// outcome is what became of an attestation verdict.
type outcome int

const (
	notAttestation outcome = iota
	reproduced
	normalised
	notReproduced
	nonceRefused
	notReperformed
)

// checked is the outcome of one job.
type checked struct {
	index    uint64
	findings []Finding
	present  bool // a record file
	redacted bool
	included bool
	signed   bool
	kind     evidence.Kind
	outside  bool
	outcome  outcome
	verdict  *Verdict
	nonce    []byte // the nonce a re-performed verdict rests on
}

// pipeline checks jobs on a pool of workers and folds their outcomes into the report.
type pipeline struct {
	jobs    chan job
	results chan checked
	workers sync.WaitGroup
	done    chan struct{}
}

func (b *bundleVerifier) start() *pipeline {
	p := &pipeline{jobs: make(chan job, 4*b.opts.Workers), results: make(chan checked, 4*b.opts.Workers), done: make(chan struct{})}
	for range b.opts.Workers {
		p.workers.Go(func() {
			for j := range p.jobs {
				p.results <- b.check(j)
			}
		})
	}
	go func() {
		defer close(p.done)
		total := b.m.End - b.m.First
		var n uint64
		for c := range p.results {
			b.fold(c)
			n++
			if b.opts.Progress != nil && (n%1000 == 0 || n == total) {
				b.opts.Progress(n, total)
			}
		}
	}()
	return p
}

func (p *pipeline) submit(j job) { p.jobs <- j }

// finish waits until every submitted job is folded into the report.
func (p *pipeline) finish() {
	close(p.jobs)
	p.workers.Wait()
	close(p.results)
	<-p.done
}

func (b *bundleVerifier) fold(c checked) {
	b.repMu.Lock()
	defer b.repMu.Unlock()
	rep := b.rep
	for _, f := range c.findings {
		rep.add(f)
	}
	if c.present {
		rep.Records++
	}
	if c.redacted {
		rep.Redacted++
	}
	if c.included {
		rep.Included++
	}
	if c.signed {
		rep.Signed++
		rep.Kinds[string(c.kind)]++
	}
	if c.outside {
		rep.OutsideWindow++
	}
	switch c.outcome {
	case reproduced:
		rep.Reproduced++
	case normalised:
		rep.Reproduced++
		rep.Normalised++
	case notReproduced:
		rep.NotReproduced++
	case nonceRefused:
		rep.NonceRefused++
	case notReperformed:
		rep.NotReperformed++
	}
	if c.outcome != notAttestation {
		rep.Attestations++
	}
	if len(c.nonce) > 0 {
		b.checkNonceOnce(c.index, c.nonce)
	}
	if c.verdict != nil {
		rep.Verdicts = append(rep.Verdicts, *c.verdict)
	}
}

// check verifies one record: its inclusion proof, its signature, the window's edges, the blobs
// it names, and re-performs an attestation verdict.
func (b *bundleVerifier) check(j job) (c checked) {
	c.index = j.index
	fail := func(check, format string, args ...any) {
		c.findings = append(c.findings, at(j.index, check, format, args...))
	}
	c.present = j.leaf != nil

	var p inclusionProof
	if err := decodeStrict(j.proof, &p); err != nil {
		fail("inclusion", "%s does not parse: %v", proofName(j.index), err)
		return c
	}
	var leafHash []byte
	switch {
	case j.leaf != nil && p.LeafHash != nil:
		fail("inclusion", "the proof carries a leaf hash although the bundle holds the record")
		return c
	case j.leaf != nil:
		leafHash = rfc6962.DefaultHasher.HashLeaf(j.leaf)
	case len(p.LeafHash) == sha256.Size:
		leafHash, c.redacted = p.LeafHash, true
	default:
		fail("gap", "missing: the bundle holds its inclusion proof but not the record")
		return c
	}
	switch {
	case !b.cpUsable: // a checkpoint finding says why; nothing to check the proof against
	case p.Index != j.index:
		fail("inclusion", "%s is the proof of record %d", proofName(j.index), p.Index)
	case p.TreeSize != b.cpSize:
		fail("inclusion", "the proof is for a tree of %d records, not the checkpoint's %d", p.TreeSize, b.cpSize)
	case len(p.Hashes) > 64 || hasBadHash(p.Hashes):
		fail("inclusion", "the proof's hashes are malformed")
	default:
		if err := proof.VerifyInclusion(rfc6962.DefaultHasher, j.index, b.cpSize, leafHash, p.Hashes, b.cpRoot); err != nil {
			fail("inclusion", "the record is not in the log the checkpoint commits to (size %d, root %x): altered, or not from this log: %v", b.cpSize, b.cpRoot, err)
		} else {
			c.included = true
		}
	}
	m := b.m
	lower := m.From != nil && j.index == m.First && m.First > 0
	upper := m.To != nil && j.index == m.End-1 && m.End < m.CheckpointSize
	if c.redacted {
		if m.Subject == "" {
			fail("subject", "the record is present only by its leaf hash, but the bundle is not for one subject")
		}
		if lower || upper {
			fail("window", "the record at the window's edge is present only by its leaf hash: its time cannot be checked")
		}
		return c
	}

	rec, _, err := evidence.Open(j.leaf, b.keys)
	if err != nil {
		fail("signature", "the record does not verify against the key history: %v", err)
		return c
	}
	c.signed, c.kind = true, rec.Kind
	// A record can be both edges (a bundle of one record): each edge is checked on its own.
	if lower && !rec.Time.Before(*m.From) {
		fail("window", "it should be the last record before the window (%s), but it is timed %s: the bundle leaves out the start of the window", m.From.Format(time.RFC3339), rec.Time.Format(time.RFC3339))
	}
	if upper && !rec.Time.After(*m.To) {
		fail("window", "it should be the first record after the window (%s), but it is timed %s: the bundle leaves out the end of the window", m.To.Format(time.RFC3339), rec.Time.Format(time.RFC3339))
	}
	if lower || upper {
		return c
	}
	c.outside = m.From != nil && rec.Time.Before(*m.From) || m.To != nil && rec.Time.After(*m.To)
	if m.Subject != "" && rec.Subject != nil && rec.Subject.ID != m.Subject {
		fail("subject", "the record is about %q, but the bundle is for %q", rec.Subject.ID, m.Subject)
	}
	switch rec.Kind {
	case evidence.KindAttestation:
		c.outcome, c.nonce, c.findings = b.reperform(j.index, rec, c.findings)
		c.verdict = verdictOf(j.index, rec)
	case evidence.KindPolicyChange:
		if _, msg := b.policy(rec.Policy); msg != "" {
			fail("reference", "the new policy: %s", msg)
		}
	case evidence.KindCollateralUpdate:
		for _, ref := range rec.Collateral {
			if _, msg := b.response(ref); msg != "" {
				fail("reference", "collateral %s %s: %s", ref.Kind, ref.URL, msg)
			}
		}
	case evidence.KindKeyRelease:
		// The release policy is the relying party's and may not be in the bundle; when it is,
		// it must be the one named.
		if rec.Policy != nil {
			if _, bad := b.badBlobs[rec.Policy.Digest]; bad {
				_, msg := b.blob(rec.Policy.Digest)
				fail("reference", "the release policy: %s", msg)
			}
		}
	}
	return c
}

func hasBadHash(hs [][]byte) bool {
	for _, h := range hs {
		if len(h) != sha256.Size {
			return true
		}
	}
	return false
}

// parsedPolicy is a policy blob parsed once.
type parsedPolicy struct {
	p   *policy.Policy
	err error
}

// policy returns the policy a record names, parsed, or why it cannot.
func (b *bundleVerifier) policy(ref *evidence.PolicyRef) (*policy.Policy, string) {
	data, msg := b.blob(ref.Digest)
	if msg != "" {
		return nil, fmt.Sprintf("policy %q: %s", ref.ID, msg)
	}
	b.mu.Lock()
	pp := b.policies[ref.Digest]
	if pp == nil {
		pp = &parsedPolicy{}
		pp.p, pp.err = policy.Parse(data)
		b.policies[ref.Digest] = pp
	}
	b.mu.Unlock()
	switch {
	case pp.err != nil:
		return nil, fmt.Sprintf("policy %q (%s) does not parse: %v", ref.ID, ref.Digest, pp.err)
	case pp.p.ID != ref.ID:
		return nil, fmt.Sprintf("the policy with digest %s has id %q, but the record names %q", ref.Digest, pp.p.ID, ref.ID)
	}
	return pp.p, ""
}

// checkNonceOnce fails each verdict that rests on the nonce of a verdict at a lower index of the
// bundle. The service consumes a nonce once and records a second use as a nonce refusal, so two
// verdicts on one nonce mean that one is a copy of the other's evidence (a replay recorded as an
// attestation, which re-performs like the original and would hide a missed attestation). Only
// the bundle's records are compared: a copy of a verdict outside it is not found. The caller
// holds repMu.
func (b *bundleVerifier) checkNonceOnce(i uint64, nonce []byte) {
	if b.nonces == nil {
		b.nonces = map[string]uint64{}
	}
	k := string(nonce)
	first, seen := b.nonces[k]
	if !seen {
		b.nonces[k] = i
		return
	}
	lo, hi := min(first, i), max(first, i)
	b.rep.add(at(hi, "replay", "its evidence carries the nonce of record %d's verdict: the service consumes a nonce once and records a second use as a nonce refusal, so this verdict is a copy of evidence already appraised, not a new attestation", lo))
	b.nonces[k] = lo
}
