package service

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/proofline/proofline/attest"
	"github.com/proofline/proofline/evidence"
	"github.com/proofline/proofline/evidence/index"
	"github.com/proofline/proofline/evidence/log"
	"github.com/proofline/proofline/internal/buildinfo"
	"github.com/proofline/proofline/verifier"
	"github.com/proofline/proofline/verifier/collateral"
	"github.com/proofline/proofline/verifier/ear"
	"github.com/proofline/proofline/verifier/internal/vcache"
	"github.com/proofline/proofline/verifier/nonce"
	"github.com/proofline/proofline/verifier/roots"
	"github.com/proofline/proofline/verifier/token"
)

// Log is what the service needs of the evidence log; *log.Log implements it. Append MUST NOT
// return an index before the leaf is durable (see evidence/log).
type Log interface {
	Append(ctx context.Context, leaf []byte) (uint64, error)
	Entry(ctx context.Context, index uint64) ([]byte, error)
	Checkpoint(ctx context.Context) (log.Checkpoint, error)
	InclusionProof(ctx context.Context, index, treeSize uint64) ([][]byte, error)
	ConsistencyProof(ctx context.Context, oldSize, newSize uint64) ([][]byte, error)
}

// Blobs is the content-addressed store of what records name by digest (evidence/blob). Put
// MUST NOT return before the bytes are durable.
type Blobs interface {
	Put(ctx context.Context, data []byte) (evidence.Digest, error)
	Get(ctx context.Context, d evidence.Digest) ([]byte, error)
}

// Settings are the service's tunables; Config documents each (zero values take the defaults).
type Settings struct {
	// TestMode permits test vendor roots (Roots.Test).
	TestMode bool
	// Audience is the aud of every result token.
	Audience []string
	// TokenTTL is how long a result token is valid.
	TokenTTL time.Duration
	// Workers and Queue size the admission queue in front of verification.
	Workers, Queue int
	// RetryAfter is what an overloaded service tells callers to wait.
	RetryAfter time.Duration
	// CheckpointInterval is the log's; callers asking for a proof too early are told to wait it.
	CheckpointInterval time.Duration
	// LogBatchMaxWait bounds how long the log's group commit waits for the records of
	// attestations still on their way (log.Log.Expecting; default DefaultLogBatchMaxWait).
	LogBatchMaxWait time.Duration
	// MaxInlineEvidence is the largest evidence envelope embedded in its record; larger ones go to
	// the blob store and the record holds their digest.
	MaxInlineEvidence int
	// IndexCatchupInterval is how often the index is caught up with the log in the background.
	IndexCatchupInterval time.Duration
	// NonceSweepInterval is how often records of expired used nonces are deleted.
	NonceSweepInterval time.Duration
	// CollateralRefreshInterval, CollateralRefreshHorizon and CollateralRefetchEvery drive the
	// background refresh of live collateral (collateral.RefresherConfig; zero takes its defaults).
	CollateralRefreshInterval, CollateralRefreshHorizon, CollateralRefetchEvery time.Duration
	// CollateralExpiryWarning is how close to its nextUpdate a collateral document makes /readyz
	// report collateral_expiring when it could not be refreshed (default 6h).
	CollateralExpiryWarning time.Duration
	// CollateralReloadInterval is how often an offline verifier (collateral.offline) looks in its
	// collateral store for documents an import wrote (collateral.Cache.Reload; default
	// DefaultCollateralReloadInterval).
	CollateralReloadInterval time.Duration
}

func (s Settings) withDefaults() Settings {
	if len(s.Audience) == 0 {
		s.Audience = []string{DefaultAudience}
	}
	if s.TokenTTL == 0 {
		s.TokenTTL = 10 * time.Minute
	}
	if s.Workers == 0 {
		s.Workers = 8
	}
	if s.Queue == 0 {
		s.Queue = 64
	}
	if s.RetryAfter == 0 {
		s.RetryAfter = time.Second
	}
	if s.CheckpointInterval == 0 {
		s.CheckpointInterval = log.DefaultCheckpointInterval
	}
	if s.LogBatchMaxWait == 0 {
		s.LogBatchMaxWait = DefaultLogBatchMaxWait
	}
	if s.MaxInlineEvidence == 0 {
		s.MaxInlineEvidence = 32 << 10
	}
	if s.IndexCatchupInterval == 0 {
		s.IndexCatchupInterval = 30 * time.Second
	}
	if s.NonceSweepInterval == 0 {
		s.NonceSweepInterval = 5 * time.Minute
	}
	if s.CollateralExpiryWarning == 0 {
		s.CollateralExpiryWarning = DefaultCollateralExpiryWarning
	}
	if s.CollateralReloadInterval == 0 {
		s.CollateralReloadInterval = DefaultCollateralReloadInterval
	}
	return s
}

// appendTimeout bounds a log append once its record is signed (the log's own failures come
// sooner); past it the answer is 503 and the append's outcome unknown.
const appendTimeout = time.Minute

// DefaultLogBatchMaxWait is Settings.LogBatchMaxWait's default: long enough for a batch to
// gather the attestations verified meanwhile (measured in hack/bench/README.md), short against
// an attestation's latency under load.
const DefaultLogBatchMaxWait = 20 * time.Millisecond

// DefaultCollateralReloadInterval is Settings.CollateralReloadInterval's default: an imported
// document (a TCB recovery) takes effect on an offline verifier within a minute.
const DefaultCollateralReloadInterval = time.Minute

// DefaultCollateralExpiryWarning is Settings.CollateralExpiryWarning's default.
const DefaultCollateralExpiryWarning = 6 * time.Hour

// DefaultAudience is the aud of result tokens when none is configured.
const DefaultAudience = "proofline-relying-party"

// Deps are the opened parts the service composes. OpenDeps builds them from a Config; tests
// build them by hand to inject faults.
type Deps struct {
	Log Log
	// LogReader reads the log's storage directly, for audit exports (GET /v1/audit/export);
	// nil: exports are unavailable.
	LogReader log.Reader
	// LogVerifierKey is the note verifier key of the log's checkpoints, published to auditors.
	LogVerifierKey string
	Index          *index.Index
	Blobs          Blobs
	Nonces         *nonce.Issuer
	Policies       *PolicyStore
	// AccessTokens keeps the API tokens created through the API and principals' last use
	// (tokens.go); nil means none can be created and only configuration tokens authenticate.
	AccessTokens *TokenStore
	// RecordKey signs evidence records; KeyHistory must hold it (and every key of the replicas
	// sharing the log), valid now.
	RecordKey  evidence.Signer
	KeyHistory *evidence.KeyHistory
	Tokens     *token.Issuer
	Roots      *roots.Set
	// Collateral answers the verifier's collateral requests; nil means none is available (every
	// verdict that needs collateral is then contraindicated, collateral_unavailable), unless
	// LiveCollateral is set.
	Collateral collateral.Source
	// LiveCollateral, when set (and Collateral is nil), fetches collateral live: the service
	// puts a collateral.Cache over it, refreshes it in the background (Start), records every
	// replaced document as a collateral_update record, and reports its health in metrics and
	// /readyz.
	LiveCollateral *LiveCollateral
	// InitialPolicy is the policy YAML activated when the policy store has no active policy; nil
	// means the built-in default policy.
	InitialPolicy []byte
	// Build is the SHA-256 of the running executable, written in every record.
	Build evidence.Digest
	// Now is the clock; nil means time.Now.
	Now    func() time.Time
	Logger *slog.Logger
	// Registerer receives the service's metrics; nil registers none.
	Registerer prometheus.Registerer
	// Ping checks the shared database, if any, for /readyz.
	Ping     func(context.Context) error
	Settings Settings
	// Alerting, when set, raises alerts (verifier/alert) and runs the log self-check (alerts.go).
	Alerting *Alerting
	// Closers release what OpenDeps opened, in order, when the service closes.
	Closers []func() error
}

// Service is the verifier service without its HTTP layer: challenges, attestations, results,
// proofs, policies and relying-party events. It is safe for concurrent use.
type Service struct {
	d        Deps
	set      Settings
	now      func() time.Time
	logger   *slog.Logger
	queue    *admission
	m        *metrics
	verifier evidence.Verifier
	stored   sync.Map // evidence.Digest → struct{}: blobs already stored by this process

	// ixw group-commits the index entries of the records this service appends (indexer.go).
	ixw *indexWriter
	// signerChecked is set once a record RecordKey signed has opened in full (signRecord).
	signerChecked atomic.Bool
	// coming counts the attestations admitted whose record is not yet handed to the log: the
	// log's group commit waits for them (log.Log.Expecting).
	coming   atomic.Int64
	stop     context.CancelFunc
	loops    sync.WaitGroup
	closeMu  sync.Mutex
	closed   bool
	draining chan struct{}

	// coll answers collateral requests: Deps.Collateral, or the live cache.
	coll collateral.Source
	// cache, refresher and collClock are set with Deps.LiveCollateral.
	cache     *collateral.Cache
	refresher *collateral.Refresher
	// collOffline: the live collateral never fetches (collateral.offline); imports reach it
	// through the store (reloadCollateral).
	collOffline bool
	collClock   collateral.Clock

	// al raises alerts and runs the log self-check; nil without Deps.Alerting (alerts.go).
	al *alerting

	// configPrincipals are the principals of the configuration tokens (SetConfigPrincipals):
	// CreateToken refuses them (tokens.go).
	configPrincipals atomic.Pointer[[]Principal]
}

// New composes a service from its parts. It refuses test roots unless Settings.TestMode, checks
// that the record key is in the key history, and activates the initial policy if the policy store
// has none.
func New(ctx context.Context, d Deps) (*Service, error) {
	switch {
	case d.Log == nil || d.Index == nil || d.Blobs == nil || d.Nonces == nil || d.Policies == nil:
		return nil, errors.New("service: Deps.Log, Index, Blobs, Nonces and Policies are required")
	case d.RecordKey == nil || d.KeyHistory == nil || d.Tokens == nil || d.Roots == nil:
		return nil, errors.New("service: Deps.RecordKey, KeyHistory, Tokens and Roots are required")
	case d.Roots.Test && !d.Settings.TestMode:
		return nil, errors.New("service: the vendor roots are test roots (a roots directory or the simulated platforms); the service accepts them only in test mode (proofline serve --test-mode)")
	}
	s := &Service{d: d, set: d.Settings.withDefaults(), now: d.Now, logger: d.Logger, draining: make(chan struct{})}
	if s.now == nil {
		s.now = time.Now
	}
	if s.logger == nil {
		s.logger = slog.New(slog.DiscardHandler)
	}
	kid, err := evidence.KeyID(d.RecordKey.Public())
	if err != nil {
		return nil, fmt.Errorf("service: record key: %w", err)
	}
	info, ok := d.KeyHistory.Lookup(kid)
	if !ok {
		return nil, fmt.Errorf("service: the record signing key %x is not in the key history: add it (records it signs would not verify)", kid)
	}
	if !info.ValidAt(s.now().Truncate(time.Second)) {
		return nil, fmt.Errorf("service: the record signing key %x is not valid now in the key history", kid)
	}
	s.ixw = newIndexWriter(s)
	if d.AccessTokens != nil {
		warn := func(err error) {
			s.logger.Warn("could not keep the last use of API tokens and principals", slog.Any("error", err))
		}
		d.AccessTokens.onFlushError.Store(&warn)
	}
	if l, ok := d.Log.(interface {
		Expecting(func() int64, time.Duration)
	}); ok {
		l.Expecting(s.coming.Load, s.set.LogBatchMaxWait)
	}
	s.verifier = evidence.Verifier{Name: "proofline", Version: buildinfo.Version(), Build: d.Build}
	s.queue = newAdmission(s.set.Workers, s.set.Queue, s.set.RetryAfter)
	s.m = newMetrics(d.Registerer, func() float64 { return float64(s.queue.depth()) })
	if err := s.openAlerting(ctx); err != nil {
		return nil, err
	}
	if err := s.openCollateral(ctx); err != nil {
		return nil, err
	}
	if d.Registerer != nil {
		d.Registerer.MustRegister(newCollateralCollector(s))
	}
	if err := s.bootstrapPolicy(ctx); err != nil {
		s.closeCollateral()
		return nil, err
	}
	if n, err := s.catchupIndex(ctx); err != nil {
		// The index is derived: a verifier with a stale index still gives verdicts.
		s.logger.WarnContext(ctx, "index catch-up failed at start-up; retrying in the background", slog.Any("error", err))
	} else if n > 0 {
		s.logger.InfoContext(ctx, "index caught up with the log", slog.Uint64("entries", n))
	}
	// Revocations in force whose record a failed append left unwritten (tokens.go).
	if n, err := s.RecordPendingRevocations(ctx); err != nil {
		s.logger.WarnContext(ctx, "writing pending revocation records failed at start-up; retried on the next revocation", slog.Any("error", err))
	} else if n > 0 {
		s.logger.InfoContext(ctx, "wrote pending revocation records", slog.Int("records", n))
	}
	// Collateral imported while the verifier was stopped (collateral.go), compared with the
	// latest verdicts in the log.
	if n, err := s.recordCollateralChangedAtRest(ctx); err != nil {
		s.logger.WarnContext(ctx, "recording the collateral replaced while the verifier was stopped failed; verdicts use it without a collateral_update record", slog.Any("error", err))
	} else if n > 0 {
		s.logger.InfoContext(ctx, "recorded the collateral replaced while the verifier was stopped", slog.Int("records", n))
	}
	return s, nil
}

// Start runs the background loops until Close: the index catch-up (every
// Settings.IndexCatchupInterval, and soon after an index write failed), the sweeping of expired
// used nonces (every Settings.NonceSweepInterval) and, with live collateral, its refresh (a pass
// at once, then every Settings.CollateralRefreshInterval on the collateral clock), with offline
// collateral the reload of imported documents (every Settings.CollateralReloadInterval on the
// collateral clock) and, with Deps.Alerting, alert delivery, the log self-check and the periodic
// alert checks (alerts.go).
func (s *Service) Start() {
	ctx, cancel := context.WithCancel(context.Background())
	s.stop = cancel
	if s.refresher != nil {
		s.loops.Go(func() { s.refresher.Run(ctx) })
	}
	if s.collOffline {
		s.loops.Go(func() { s.reloadCollateral(ctx) })
	}
	s.startAlerting(ctx)
	s.loops.Add(2)
	go func() {
		defer s.loops.Done()
		t := time.NewTicker(s.set.IndexCatchupInterval)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
			if _, err := s.catchupIndex(ctx); err != nil && ctx.Err() == nil {
				s.logger.WarnContext(ctx, "index catch-up failed", slog.Any("error", err))
			}
		}
	}()
	s.ixw.running.Store(true)
	s.loops.Go(func() {
		s.ixw.run(ctx)
		s.ixw.running.Store(false)
	})
	go func() {
		defer s.loops.Done()
		t := time.NewTicker(s.set.NonceSweepInterval)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
			if n, err := s.d.Nonces.Sweep(ctx); err != nil && ctx.Err() == nil {
				s.logger.WarnContext(ctx, "sweeping used nonces failed", slog.Any("error", err))
			} else if n > 0 {
				s.logger.DebugContext(ctx, "swept used nonces", slog.Int64("deleted", n))
			}
		}
	}()
}

// Drain marks the service as shutting down: /readyz answers 503 from now on.
func (s *Service) Drain() {
	s.closeMu.Lock()
	defer s.closeMu.Unlock()
	select {
	case <-s.draining:
	default:
		close(s.draining)
	}
}

// Close stops the background loops and releases what OpenDeps opened (the log waits until a
// checkpoint covers every acknowledged record). Call it after the HTTP server has stopped.
func (s *Service) Close() error {
	s.Drain()
	s.closeMu.Lock()
	defer s.closeMu.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	if s.stop != nil {
		s.stop()
	}
	s.loops.Wait()
	s.closeCollateral()
	var errs []error
	for _, c := range s.d.Closers {
		errs = append(errs, c())
	}
	return errors.Join(errs...)
}

// TestRoots reports whether the service appraises with test vendor roots.
func (s *Service) TestRoots() bool { return s.d.Roots.Test }

// logLeaves adapts the log to index.LeafSource for Catchup. The service indexes each record
// right after its append, before a checkpoint covers it, so the index may legitimately run ahead
// of the latest checkpoint: Size is then the index's own size, provided the log holds a leaf at
// its last entry (Catchup compares that leaf with the index's). Otherwise it is the checkpoint's
// size, and an index larger than the log is reported as the conflict it is.
type logLeaves struct {
	l  Log
	ix *index.Index
}

func (l logLeaves) Size(ctx context.Context) (uint64, error) {
	cp, err := l.l.Checkpoint(ctx)
	if err != nil {
		return 0, err
	}
	n, err := l.ix.Next(ctx)
	if err != nil {
		return 0, err
	}
	if n > cp.Size {
		if _, err := l.l.Entry(ctx, n-1); err == nil {
			return n, nil
		}
	}
	return cp.Size, nil
}

// logEnd is the number of leaves in the log: the published checkpoint's size, or more when the
// index already holds leaves appended since (logLeaves.Size). Unlike logLeaves.Size it does not
// need the index: when the index cannot be read it is the checkpoint's size.
func (s *Service) logEnd(ctx context.Context) (uint64, error) {
	size, err := logLeaves{s.d.Log, s.d.Index}.Size(ctx)
	if err == nil {
		return size, nil
	}
	cp, cerr := s.d.Log.Checkpoint(ctx)
	if cerr != nil {
		return 0, errors.Join(err, cerr)
	}
	return cp.Size, nil
}

func (l logLeaves) Entry(ctx context.Context, i uint64) ([]byte, error) { return l.l.Entry(ctx, i) }

func (s *Service) catchupIndex(ctx context.Context) (uint64, error) {
	return index.Catchup(ctx, s.d.Index, logLeaves{s.d.Log, s.d.Index}, s.open, nil)
}

// open verifies a leaf against the key history (I5).
func (s *Service) open(leaf []byte) (*evidence.Record, error) {
	r, _, err := evidence.Open(leaf, s.d.KeyHistory)
	return r, err
}

// Challenge is a verifier nonce and its expiry.
type Challenge struct {
	Nonce   []byte
	Expires time.Time
}

// Challenge issues a nonce for p (GET /v1/challenge). Challenges need no authentication: an
// anonymous caller gets a nonce bound to no one, which any authenticated caller may use once; an
// authenticated caller gets one that only it can use.
func (s *Service) Challenge(ctx context.Context, p Principal) (Challenge, error) {
	if err := p.Check(); err != nil {
		return Challenge{}, fmt.Errorf("%w: %w", ErrForbidden, err)
	}
	n, exp, err := s.d.Nonces.Issue(ctx, p.binding())
	if err != nil {
		return Challenge{}, err
	}
	return Challenge{Nonce: n, Expires: exp}, nil
}

// Attestation is the answer to one evidence submission: the result, the record it was logged as,
// and the signed result tokens naming that record.
type Attestation struct {
	// LogIndex is the record's index in the evidence log; its decimal form is the result id.
	LogIndex uint64
	// RecordSHA256 is the SHA-256 of the signed record (the log leaf).
	RecordSHA256 [32]byte
	Result       *ear.Result
	// ResultJSON is the result exactly as the record holds it.
	ResultJSON []byte
	// JWT and CWT are the result token in its two forms (each only if asked for).
	JWT string
	CWT []byte
}

// ID is the result id: the log index in decimal.
func (a *Attestation) ID() string { return strconv.FormatUint(a.LogIndex, 10) }

// Attest appraises one evidence envelope submitted by p (POST /v1/attest, background-check
// model) and answers only once its signed record is durably in the log:
//
//  1. admission: a place in the bounded queue, or ErrOverloaded (a verification slot, one of
//     Workers, is held only while step 4 runs);
//  2. the envelope is decoded strictly; a body that is not one is ErrMalformed (no result);
//  3. the envelope's nonce is consumed for p: it must be one this service issued, to p or to no
//     one, unexpired and unused. A refused nonce is a verdict — contraindicated, nonce_mismatch,
//     with the reason — that rests on no appraisal (a replay is found only once step 4 has run;
//     its verification is discarded), recorded like any other. A nonce store that cannot be
//     reached is ErrUnavailable;
//  4. verifier.Verify with the consumed nonce as Options.Nonce (only that proves freshness). It
//     runs while step 3 records the nonce's use (a disk write), once the nonce has passed the
//     checks that need no store; its verdict counts only if the use is recorded (no replay);
//  5. the record: subject, raw evidence (or its digest, the bytes in the blob store), the
//     collateral used (canonical responses in the blob store), the policy, the result JSON, the
//     verifier's version and build; signed, opened against the key history (I5), appended;
//  6. the index (best effort: it catches up from the log), then the tokens naming the record.
//
// Any failure to make the record durable is ErrUnavailable and no result or token is returned.
func (s *Service) Attest(ctx context.Context, p Principal, body []byte) (*Attestation, error) {
	return s.AttestFrom(ctx, p, func() ([]byte, error) { return body, nil })
}

// AttestFrom is Attest with the evidence envelope read by read, which it calls only once the
// request holds a place in the admission queue: past the queue it fails at once with
// ErrOverloaded without calling read, so the bodies in memory are at most (Workers + Queue) ×
// their size limit. An error from read is returned as is.
func (s *Service) AttestFrom(ctx context.Context, p Principal, read func() ([]byte, error)) (*Attestation, error) {
	return s.AttestWith(ctx, p, TokenJWT|TokenCWT, read)
}

// TokenForms are the result token forms an attestation is answered with (a set).
type TokenForms uint8

const (
	// TokenJWT is the EAR JWT (Attestation.JWT).
	TokenJWT TokenForms = 1 << iota
	// TokenCWT is the same claims as a CWT (Attestation.CWT).
	TokenCWT
)

// AttestWith is AttestFrom issuing only the token forms in forms: each costs a signature, and a
// caller that uses one form (the agent, a key-release service) need not pay for the other.
func (s *Service) AttestWith(ctx context.Context, p Principal, forms TokenForms, read func() ([]byte, error)) (*Attestation, error) {
	if p.Role != RoleAgent && p.Role != RoleRelyingParty {
		return nil, fmt.Errorf("%w: %s may not submit evidence", ErrForbidden, p.Role)
	}
	if err := p.Check(); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrForbidden, err)
	}
	leave, err := s.queue.admit()
	if err != nil {
		s.m.overloaded.Inc()
		return nil, err
	}
	defer leave()
	body, err := read()
	if err != nil {
		return nil, err
	}
	return s.attest(ctx, p, forms, body)
}

// attest appraises and records body for p, holding an admission place. It holds a verification
// slot only while verifier.Verify runs: consuming the nonce and recording the verdict wait on the
// disk (group commits), not the CPU, and a slot held through those waits would cap the batches
// they commit at the number of workers.
func (s *Service) attest(ctx context.Context, p Principal, forms TokenForms, body []byte) (*Attestation, error) {
	ev, err := attest.DecodeEvidence(body)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrMalformed, err)
	}
	s.coming.Add(1)
	arriving := sync.OnceFunc(func() { s.coming.Add(-1) })
	defer arriving()
	pol, err := s.d.Policies.Active(ctx)
	if err != nil {
		return nil, fmt.Errorf("%w: reading the active policy: %w", ErrUnavailable, err)
	}
	now := s.now().UTC().Truncate(time.Second)

	var (
		res       *ear.Result
		nonceUsed []byte
		seen      = &recordingSource{src: s.collateralFor(pol.Policy, ev.Platform), seen: map[string]*collateral.Response{}}
	)
	// The nonce is checked (MACs, binding, expiry: no disk) before anything else; a nonce that
	// passes has its use made durable (a group commit: a disk write) while the evidence is
	// verified, so that the CPU verifies other evidence instead of waiting for the disk. The
	// verdict counts only once the use is recorded; a replay found then discards it (a replay
	// costs a verification, as fresh evidence does).
	expires, reason, err := s.checkNonce(ev.Nonce, p)
	switch {
	case err != nil:
		res = nonceRefused(ev, pol.Policy.Ref(), s.d.Roots.Test, now, reason)
	default:
		recorded := make(chan nonceOutcome, 1)
		go s.recordNonce(ctx, ev.Nonce, expires, recorded)
		opts := verifier.Options{Policy: pol.Policy, Roots: s.d.Roots, Now: now, Nonce: ev.Nonce}
		if s.coll != nil {
			opts.Collateral = seen
		}
		verified, verifyErr := s.verify(ctx, ev, opts)
		switch out := <-recorded; {
		case out.err != nil && out.reason == "":
			return nil, fmt.Errorf("%w: nonce store: %w", ErrUnavailable, out.err)
		case out.err != nil:
			res = nonceRefused(ev, pol.Policy.Ref(), s.d.Roots.Test, now, out.reason)
		case verifyErr != nil:
			return nil, s.afterNonce(verifyErr, ev.Nonce)
		default:
			res, nonceUsed = verified, ev.Nonce
		}
	}
	resultJSON, err := json.Marshal(res)
	if err != nil {
		return nil, fmt.Errorf("service: encoding the result: %w", err)
	}
	rec := &evidence.Record{
		Version:  evidence.Version,
		Kind:     evidence.KindAttestation,
		Time:     now,
		Subject:  &evidence.Subject{ID: p.subject(), Platform: string(ev.Platform)},
		Evidence: &evidence.Evidence{Raw: body},
		Result:   resultJSON,
		Verifier: s.verifier,
	}
	if rec.Policy, err = policyRef(pol.Policy.Ref()); err != nil {
		return nil, err
	}
	if rec.Collateral, err = s.collateralRefs(ctx, res, seen); err != nil {
		return nil, s.afterNonce(err, nonceUsed)
	}
	if len(body) > s.set.MaxInlineEvidence {
		if rec.Evidence, err = s.evidenceByDigest(ctx, body); err != nil {
			return nil, s.afterNonce(err, nonceUsed)
		}
	}
	leaf, idx, err := s.appendRecordArriving(ctx, rec, string(res.Status), arriving)
	if errors.Is(err, log.ErrLeafSize) && rec.Evidence.Raw != nil {
		// The record is too large for a log leaf with the evidence inside: keep the evidence in
		// the blob store and name it by digest.
		if rec.Evidence, err = s.evidenceByDigest(ctx, body); err != nil {
			return nil, s.afterNonce(err, nonceUsed)
		}
		leaf, idx, err = s.appendRecordArriving(ctx, rec, string(res.Status), arriving)
	}
	if err != nil {
		return nil, s.afterNonce(err, nonceUsed)
	}
	s.m.verdict(res, now)
	s.alertVerdict(ctx, rec, idx, res)
	a := &Attestation{LogIndex: idx, RecordSHA256: sha256.Sum256(leaf), Result: res, ResultJSON: resultJSON}
	s.logger.InfoContext(ctx, "attestation recorded",
		slog.String("principal", p.String()), slog.String("platform", res.Platform), slog.String("status", string(res.Status)),
		slog.Uint64("log_index", idx), slog.String("record_sha256", hex.EncodeToString(a.RecordSHA256[:])))
	ref := token.RecordRef{LogIndex: idx, SHA256: a.RecordSHA256, Subject: rec.Subject.ID, Nonce: nonceUsed}
	if forms&TokenJWT != 0 {
		if a.JWT, err = s.d.Tokens.IssueJWT(ctx, res, ref, s.set.Audience, s.set.TokenTTL, now); err != nil {
			return nil, fmt.Errorf("service: issuing the JWT for record %d: %w", idx, err)
		}
	}
	if forms&TokenCWT != 0 {
		if a.CWT, err = s.d.Tokens.IssueCWT(ctx, res, ref, s.set.Audience, s.set.TokenTTL, now); err != nil {
			return nil, fmt.Errorf("service: issuing the CWT for record %d: %w", idx, err)
		}
	}
	return a, nil
}

// afterNonce is the error Attest returns for err once it has spent the nonce n (nil: it spent
// none). An overload is then no longer "nothing was done": it becomes ErrUnavailable, and every
// ErrUnavailable carries ErrChallengeUsed, so the caller is told to ask for a new challenge.
func (s *Service) afterNonce(err error, n []byte) error {
	if n == nil {
		return err
	}
	var after time.Duration
	var retry *RetryError
	if errors.As(err, &retry) {
		after = retry.After
	}
	switch {
	case errors.Is(err, ErrOverloaded):
		return &RetryError{Err: fmt.Errorf("%w: %w: %v", ErrUnavailable, ErrChallengeUsed, err), After: max(after, s.set.RetryAfter)}
	case errors.Is(err, ErrUnavailable):
		return &RetryError{Err: fmt.Errorf("%w: %w", ErrChallengeUsed, err), After: max(after, s.set.RetryAfter)}
	}
	return err
}

// verify runs verifier.Verify in a verification slot (a queue error when none is given).
func (s *Service) verify(ctx context.Context, ev *attest.Evidence, opts verifier.Options) (*ear.Result, error) {
	release, err := s.queue.run(ctx)
	if err != nil {
		return nil, err
	}
	defer release() // also when Verify panics: a slot lost for good would stall the queue
	start := time.Now()
	res := verifier.Verify(ctx, ev, opts)
	s.m.verifyLatency.WithLabelValues(string(ev.Platform)).Observe(time.Since(start).Seconds())
	return res, nil
}

// checkNonce makes the checks of n for p that need no store (nonce.Issuer.Check): it returns
// the nonce's expiry when they pass, and a reason and the error when n is refused.
func (s *Service) checkNonce(n []byte, p Principal) (time.Time, string, error) {
	if n == nil {
		s.m.nonceRejected.WithLabelValues("missing").Inc()
		return time.Time{}, "the evidence carries no nonce; ask GET /v1/challenge for one and bind it into REPORT_DATA", errors.New("no nonce")
	}
	expires, err := s.d.Nonces.Check(n, p.binding())
	if errors.Is(err, nonce.ErrWrongBinding) && p.binding() != "" {
		// A challenge handed out anonymously is bound to no one: any authenticated caller may
		// spend it, once.
		if exp, err2 := s.d.Nonces.Check(n, ""); !errors.Is(err2, nonce.ErrWrongBinding) {
			expires, err = exp, err2
		}
	}
	if err != nil {
		reason, err := s.nonceRefusal(err)
		return time.Time{}, reason, err
	}
	return expires, "", nil
}

// nonceOutcome is what recording a nonce's use decided: accepted (zero), refused (a reason and
// the error) or not known (the store's error, no reason).
type nonceOutcome struct {
	reason string
	err    error
}

// recordNonce records the use of n, which passed checkNonce with expiry expires, and sends the
// outcome on out. It runs beside the verification; a panic in the store is a store error.
func (s *Service) recordNonce(ctx context.Context, n []byte, expires time.Time, out chan<- nonceOutcome) {
	defer func() {
		if r := recover(); r != nil {
			s.logger.ErrorContext(ctx, "nonce store panicked", slog.Any("panic", r), slog.String("stack", string(debug.Stack())))
			out <- nonceOutcome{err: fmt.Errorf("nonce store: internal error: %v", r)}
		}
	}()
	err := s.d.Nonces.Record(ctx, n, expires)
	if err == nil {
		out <- nonceOutcome{}
		return
	}
	reason, err := s.nonceRefusal(err)
	out <- nonceOutcome{reason, err}
}

// nonceRefusal returns the reason for a refused nonce and counts it, or ("", err) when err is
// not a refusal (the store failed: nothing decided).
func (s *Service) nonceRefusal(err error) (string, error) {
	var label, reason string
	switch {
	case errors.Is(err, nonce.ErrUnknown):
		label, reason = "unknown", "the nonce was not issued by this verifier"
	case errors.Is(err, nonce.ErrWrongBinding):
		label, reason = "wrong_binding", "the nonce was issued to another caller"
	case errors.Is(err, nonce.ErrExpired):
		label, reason = "expired", "the nonce has expired; ask GET /v1/challenge for a new one"
	case errors.Is(err, nonce.ErrReplayed):
		label, reason = "replayed", "the nonce was already used: the evidence is a replay or was submitted twice"
	default:
		return "", err
	}
	s.m.nonceRejected.WithLabelValues(label).Inc()
	return reason, err
}

// nonceRefused is the verdict on evidence whose nonce the service refused: contraindicated with
// nonce_mismatch (the evidence is not bound to a nonce this verifier accepts), without any
// further appraisal. The trust vector claims only what is known: the instance is untrustworthy.
func nonceRefused(ev *attest.Evidence, pol ear.PolicyRef, testRoots bool, now time.Time, reason string) *ear.Result {
	res := &ear.Result{
		Platform:    string(ev.Platform),
		VerifiedAt:  now,
		TestRoots:   testRoots,
		Policy:      pol,
		TrustVector: ear.TrustVector{InstanceIdentity: ear.UntrustworthyInstance},
		Verifier:    ear.VerifierID{Name: "proofline", Version: buildinfo.Version()},
	}
	check := "tdx.8"
	if ev.Platform == attest.PlatformSNP {
		check = "snp.9"
	}
	res.Fail(ear.CodeNonceMismatch, check, "nonce refused: "+reason+"; the verdict is this refusal, whatever the evidence's appraisal")
	res.Finalize()
	return res
}

// recordingSource remembers every collateral response a verification obtained, so that the record
// names, and the blob store keeps, exactly those bytes.
type recordingSource struct {
	src  collateral.Source
	mu   sync.Mutex
	seen map[string]*collateral.Response
}

func (r *recordingSource) Get(ctx context.Context, url string) (*collateral.Response, error) {
	resp, err := r.src.Get(ctx, url)
	if err == nil {
		r.mu.Lock()
		r.seen[url] = resp
		r.mu.Unlock()
	}
	return resp, err
}

// collateralRefs lists the collateral the result's claims name, sorted by URL, after storing each
// response's canonical bytes in the blob store.
func (s *Service) collateralRefs(ctx context.Context, res *ear.Result, seen *recordingSource) ([]evidence.CollateralRef, error) {
	var infos []ear.CollateralInfo
	switch c := res.Claims.(type) {
	case *ear.TDXClaims:
		infos = c.Collateral
	case *ear.SNPClaims:
		infos = c.Collateral
	}
	byURL := map[string]evidence.CollateralRef{}
	for _, ci := range infos {
		d, err := parseDigest(ci.Digest)
		if err != nil {
			return nil, fmt.Errorf("service: collateral %s: %w", ci.URL, err)
		}
		if prev, dup := byURL[ci.URL]; dup {
			if prev.Digest != d {
				return nil, fmt.Errorf("service: the result names two responses for %s", ci.URL)
			}
			continue
		}
		seen.mu.Lock()
		resp := seen.seen[ci.URL]
		seen.mu.Unlock()
		// The digest of a collateral response is computed once per distinct response (vcache),
		// and its canonical bytes only when this process has not stored them yet.
		if resp == nil || evidence.Digest(vcache.ResponseDigest(resp)) != d {
			return nil, fmt.Errorf("service: the result names collateral %s (%s) that the verification did not obtain", ci.URL, ci.Digest)
		}
		if _, stored := s.stored.Load(d); !stored {
			if err := s.storeBlob(ctx, d, resp.Canonical()); err != nil {
				return nil, err
			}
		}
		byURL[ci.URL] = evidence.CollateralRef{Kind: ci.Kind, URL: ci.URL, Digest: d}
	}
	refs := make([]evidence.CollateralRef, 0, len(byURL))
	for _, r := range byURL {
		refs = append(refs, r)
	}
	slices.SortFunc(refs, func(a, b evidence.CollateralRef) int { return strings.Compare(a.URL, b.URL) })
	if len(refs) == 0 {
		return nil, nil
	}
	return refs, nil
}

// storeBlob stores data, whose digest is d, unless this process stored it before.
func (s *Service) storeBlob(ctx context.Context, d evidence.Digest, data []byte) error {
	if _, ok := s.stored.Load(d); ok {
		return nil
	}
	got, err := s.d.Blobs.Put(ctx, data)
	if err != nil {
		return fmt.Errorf("%w: blob store: %w", ErrUnavailable, err)
	}
	if got != d {
		return fmt.Errorf("service: the blob store named %s bytes whose digest is %s", got, d)
	}
	s.stored.Store(d, struct{}{})
	return nil
}

func (s *Service) evidenceByDigest(ctx context.Context, body []byte) (*evidence.Evidence, error) {
	d := evidence.Digest(sha256.Sum256(body))
	if err := s.storeBlob(ctx, d, body); err != nil {
		return nil, err
	}
	return &evidence.Evidence{Digest: &d}, nil
}

// appendRecord signs rec, checks that it opens against the key history (I5) and appends it. It
// returns the leaf and its index once the log has made it durable.
func (s *Service) appendRecord(ctx context.Context, rec *evidence.Record) ([]byte, uint64, error) {
	return s.appendRecordArriving(ctx, rec, "", nil)
}

// appendRecordArriving is appendRecord for an attestation counted in s.coming: arriving, when
// not nil, stops counting it right before the append, so that the log's group commit does not
// wait for a record already queued. status is an attestation's result status, for its index
// entry (rec.Result holds it).
func (s *Service) appendRecordArriving(ctx context.Context, rec *evidence.Record, status string, arriving func()) ([]byte, uint64, error) {
	leaf, err := s.signRecord(ctx, rec)
	if err != nil {
		return nil, 0, err
	}
	if arriving != nil {
		arriving()
	}
	// The append is not abandoned when the client goes away: its outcome would be unknown (the
	// record may be durable without its index, or its alerts), so it runs to its end, bounded
	// by appendTimeout.
	actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), appendTimeout)
	defer cancel()
	start := time.Now()
	// The index writer counts the appends under way until their entries are handed over (it
	// lingers for them); one that fails, or finds the writer stopped, stops counting here.
	writer, handed := s.ixw.running.Load(), false
	if writer {
		s.ixw.appending.Add(1)
		defer func() {
			if !handed {
				s.ixw.appending.Add(-1)
				s.ixw.nudge()
			}
		}()
	}
	idx, err := s.d.Log.Append(actx, leaf)
	s.m.appendLatency.Observe(time.Since(start).Seconds())
	switch {
	case errors.Is(err, log.ErrLeafSize):
		return nil, 0, err
	case errors.Is(err, log.ErrOverloaded):
		s.m.appendErrors.Inc()
		return nil, 0, retryAfter(s.set.RetryAfter, ErrOverloaded, "the evidence log is overloaded")
	case err != nil:
		s.m.appendErrors.Inc()
		s.logger.ErrorContext(ctx, "evidence log append failed; no answer given", slog.String("kind", string(rec.Kind)), slog.Any("error", err))
		return nil, 0, retryAfter(s.set.RetryAfter, ErrUnavailable, "the evidence log did not acknowledge the record: %v", err)
	}
	if writer && s.ixw.running.Load() {
		handed = true // add stops counting the append
		s.ixw.add(ctx, idx, leaf, rec, status)
	} else if err := s.d.Index.Add(ctx, idx, leaf, rec); err != nil {
		// No index writer (a service not started, or stopping): Catchup at the next start-up fills
		// what this misses.
		s.m.indexErrors.Inc()
		s.logger.WarnContext(ctx, "index write failed; the index catches up later", slog.Uint64("log_index", idx), slog.Any("error", err))
	}
	return leaf, idx, nil
}

// signRecord signs rec and holds it to invariant I5 before it is appended: it must open
// against the key history. evidence.SignFor checks the key, its algorithm and validity period
// at the record's time, and verifies the signature under the key the history lists; the first
// record this service signs is also opened in full (evidence.Open: every rule of a stored
// record), which would catch an encoding the history's readers refuse before anything else is
// appended.
func (s *Service) signRecord(ctx context.Context, rec *evidence.Record) ([]byte, error) {
	leaf, err := evidence.SignFor(ctx, rec, s.d.RecordKey, s.d.KeyHistory)
	if err != nil {
		return nil, fmt.Errorf("service: the record does not hold to the key history (I5): %w", err)
	}
	if !s.signerChecked.Load() {
		if _, _, err := evidence.Open(leaf, s.d.KeyHistory); err != nil {
			return nil, fmt.Errorf("service: the signed record does not open against the key history (I5): %w", err)
		}
		s.signerChecked.Store(true)
	}
	return leaf, nil
}

func parseDigest(s string) (evidence.Digest, error) {
	var d evidence.Digest
	h, ok := strings.CutPrefix(s, "sha256:")
	if !ok {
		return d, fmt.Errorf("digest %q is not sha256:<hex>", s)
	}
	b, err := hex.DecodeString(h)
	if err != nil || len(b) != len(d) {
		return d, fmt.Errorf("digest %q is not sha256:<64 hex digits>", s)
	}
	copy(d[:], b)
	return d, nil
}

func policyRef(r ear.PolicyRef) (*evidence.PolicyRef, error) {
	d, err := parseDigest(r.Digest)
	if err != nil {
		return nil, fmt.Errorf("service: policy %q: %w", r.ID, err)
	}
	return &evidence.PolicyRef{ID: r.ID, Digest: d}, nil
}
