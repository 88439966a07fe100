package log

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/transparency-dev/merkle/proof"
	"github.com/transparency-dev/merkle/rfc6962"
	"github.com/transparency-dev/tessera"
	"github.com/transparency-dev/tessera/api"
	"github.com/transparency-dev/tessera/api/layout"
	"github.com/transparency-dev/tessera/client"
	"golang.org/x/mod/sumdb/note"
)

// Defaults for [Options].
const (
	// DefaultBatchMaxSize is one entry bundle: a full batch fills a bundle.
	DefaultBatchMaxSize = 256
	// DefaultBatchMaxAge is the group-commit linger. Appends that arrive while a batch is being
	// written always share the next write; the linger also gathers those that arrive just after
	// the first of a batch, at the cost of that much latency. (Go timers below 1 ms take about
	// 1 ms on this kernel; measured in hack/bench/README.md.)
	DefaultBatchMaxAge = time.Millisecond
	// DefaultCheckpointInterval is how often a new checkpoint is published while the log grows.
	DefaultCheckpointInterval = time.Second
	// DefaultMaxPending bounds the appends waiting for their batch; more get ErrOverloaded.
	DefaultMaxPending = 4096
	// DefaultGCInterval is how often superseded partial bundles and tiles are deleted.
	DefaultGCInterval = 5 * time.Second
	// tesseraLinger is the linger of tessera's own queue; commit hands it whole batches, so it
	// only covers the time to add a batch's entries one by one.
	tesseraLinger = 250 * time.Microsecond
	// MaxLeafSize is the largest leaf C2SP tlog-tiles can store (a 16-bit length prefix).
	MaxLeafSize = 1<<16 - 1
)

// Errors that are part of the contract. An Append error that is none of ErrLeafSize,
// ErrOverloaded and ErrClosed means the outcome is unknown: the leaf may or may not be in the log.
var (
	// ErrLeafSize: the leaf is empty or larger than Options.MaxLeafSize; it was not appended.
	ErrLeafSize = errors.New("log: leaf size out of bounds")
	// ErrOverloaded: too many appends are waiting; nothing was appended. Callers answer
	// 503 with Retry-After.
	ErrOverloaded = errors.New("log: overloaded, retry later")
	// ErrClosed: the log is closed; nothing was appended.
	ErrClosed = errors.New("log: closed")
	// ErrNotFound: no leaf at that index, or no published checkpoint of that size yet.
	ErrNotFound = errors.New("log: not found")
)

// Options configure a [Log]. The zero value is valid for OpenPOSIX with Origin set.
type Options struct {
	// Signer signs checkpoints; its name is the log's origin. When nil, OpenPOSIX loads or
	// generates DIR/note.key (see LoadOrGenerateKey); OpenMySQL requires it.
	Signer note.Signer
	// Verifier verifies Signer's signatures. Required when Signer is set.
	Verifier note.Verifier
	// Origin is the checkpoint origin line, e.g. "proofline.example/log". Required to generate a
	// key; when set it must equal the key's name.
	Origin string
	// BatchMaxSize is the most appends sequenced in one durable write (default 256).
	BatchMaxSize int
	// BatchMaxAge is how long a batch that is not full waits for more appends before its
	// durable write starts (default 1 ms).
	BatchMaxAge time.Duration
	// CheckpointInterval is the publication period of checkpoints (default 1 s; at least
	// 100 ms for POSIX and 1 s for MySQL, tessera's minimums).
	CheckpointInterval time.Duration
	// MaxLeafSize bounds a leaf (default and maximum 65535; OpenMySQL lowers the default so
	// that a full entry bundle fits the server's max_allowed_packet).
	MaxLeafSize int
	// MaxPending bounds the appends waiting for a batch; more get ErrOverloaded (default 4096).
	MaxPending int
	// GCInterval is how often the partial entry bundles and tiles that full ones have replaced
	// are deleted (default DefaultGCInterval). Every durable write of a batch leaves one such
	// file per partial bundle and tile, so a busy log accumulates them quickly; deleting them
	// often, a few bundles at a time, spreads the deletions instead of removing a minute's worth
	// (the POSIX driver's default interval; at 800 appends/s about two gigabytes) at once.
	GCInterval time.Duration
	// Logger receives the log's own events (default: discarded). Tessera itself logs via klog.
	Logger *slog.Logger
}

func (o Options) withDefaults(minInterval time.Duration) (Options, error) {
	if o.BatchMaxSize == 0 {
		o.BatchMaxSize = DefaultBatchMaxSize
	}
	if o.BatchMaxAge == 0 {
		o.BatchMaxAge = DefaultBatchMaxAge
	}
	if o.CheckpointInterval == 0 {
		o.CheckpointInterval = DefaultCheckpointInterval
	}
	if o.MaxLeafSize == 0 {
		o.MaxLeafSize = MaxLeafSize
	}
	if o.MaxPending == 0 {
		o.MaxPending = DefaultMaxPending
	}
	if o.GCInterval == 0 {
		o.GCInterval = DefaultGCInterval
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	switch {
	case o.BatchMaxSize < 0 || o.BatchMaxAge < 0 || o.MaxPending < 0 || o.GCInterval < 0:
		return o, errors.New("log: Options.BatchMaxSize, BatchMaxAge, MaxPending and GCInterval must not be negative")
	case o.CheckpointInterval < minInterval:
		return o, fmt.Errorf("log: Options.CheckpointInterval %v is below this backend's minimum %v", o.CheckpointInterval, minInterval)
	case o.MaxLeafSize < 1 || o.MaxLeafSize > MaxLeafSize:
		return o, fmt.Errorf("log: Options.MaxLeafSize %d must be in [1, %d]", o.MaxLeafSize, MaxLeafSize)
	case (o.Signer == nil) != (o.Verifier == nil):
		return o, errors.New("log: set both Options.Signer and Options.Verifier, or neither")
	case o.Signer != nil && o.Verifier.Name() != o.Signer.Name():
		return o, fmt.Errorf("log: Options.Verifier is named %q but Options.Signer %q", o.Verifier.Name(), o.Signer.Name())
	case o.Signer != nil && o.Origin != "" && o.Origin != o.Signer.Name():
		return o, fmt.Errorf("log: Options.Origin %q differs from the Signer's name %q", o.Origin, o.Signer.Name())
	}
	return o, nil
}

// floorStore durably keeps the largest checkpoint the log has served, the floor of invariant I6.
type floorStore interface {
	// ReadServedCheckpoint returns the stored floor note, or an error wrapping fs.ErrNotExist.
	ReadServedCheckpoint(ctx context.Context) ([]byte, error)
	// raiseFloor records cp as the floor unless a larger one is stored. It MUST NOT return nil
	// before the record is durable.
	raiseFloor(ctx context.Context, cp Checkpoint) error
}

// Log is an open evidence log. Its methods are safe for concurrent use.
type Log struct {
	opts     Options
	verifier note.Verifier
	add      tessera.AddFn
	shutdown func(context.Context) error
	reader   tessera.LogReader
	floor    floorStore
	cancel   context.CancelFunc
	release  func() error // releases the backend's hold on its storage, if any; set after start

	// Appends queue in reqs for the group-commit loop (commit), which closes committed when
	// reqs is closed and drained. submitMu guards closed and sending on reqs.
	reqs      chan appendReq
	committed chan struct{}
	submitMu  sync.RWMutex
	closed    bool

	mu     sync.Mutex // serialises Checkpoint: its read of the stored checkpoint and the floor update
	served Checkpoint // largest checkpoint served so far (Note nil: none): never serve a smaller one (I6)

	// lastBundle is the entry bundle Entry parsed last, so that reading consecutive leaves (the
	// index catching up) parses each bundle once instead of once per leaf. A bundle is keyed by
	// its index and partial size: tessera never rewrites either (a grown partial bundle has
	// another size), so the cached leaves are the stored ones.
	bundleMu   sync.Mutex
	lastBundle *parsedBundle

	// expecting is what Expecting set: appends on their way, and how long a batch waits for them.
	expecting atomic.Pointer[expectation]
}

type expectation struct {
	count  func() int64
	maxAge time.Duration
}

type parsedBundle struct {
	index   uint64
	partial uint8
	entries [][]byte
}

// start wires a tessera driver into a Log and recovers it: it waits for a first checkpoint and
// checks the stored checkpoint against the served floor, so a rolled-back or forked store fails
// here rather than serving.
func start(ctx context.Context, driver tessera.Driver, floor floorStore, opts Options) (*Log, error) {
	bg, cancel := context.WithCancel(context.Background())
	aopts := tessera.NewAppendOptions().
		WithCheckpointSigner(opts.Signer).
		WithBatching(uint(opts.BatchMaxSize), tesseraLinger).
		WithCheckpointInterval(opts.CheckpointInterval).
		WithGarbageCollectionInterval(opts.GCInterval)
	appender, shutdown, reader, err := tessera.NewAppender(bg, driver, aopts)
	if err != nil {
		cancel()
		return nil, fmt.Errorf("log: starting tessera: %w", err)
	}
	l := &Log{
		opts:      opts,
		verifier:  opts.Verifier,
		add:       appender.Add,
		shutdown:  shutdown,
		reader:    reader,
		floor:     floor,
		cancel:    cancel,
		reqs:      make(chan appendReq, opts.MaxPending),
		committed: make(chan struct{}),
	}
	if err := l.recover(ctx); err != nil {
		cancel()
		return nil, err
	}
	go l.commit(bg)
	return l, nil
}

func (l *Log) recover(ctx context.Context) error {
	raw, err := l.floor.ReadServedCheckpoint(ctx)
	switch {
	case errors.Is(err, fs.ErrNotExist):
	case err != nil:
		return fmt.Errorf("log: reading the served checkpoint: %w", err)
	default:
		if l.served, err = openCheckpoint(raw, l.verifier); err != nil {
			return &CorruptError{Invariant: "I6", Reason: "the stored served checkpoint does not verify", Err: err}
		}
	}
	// A fresh MySQL log publishes its first checkpoint asynchronously, and a POSIX log that
	// crashed while being created may have none yet: wait for it.
	t := time.NewTicker(20 * time.Millisecond)
	defer t.Stop()
	for {
		_, err := l.Checkpoint(ctx)
		if !errors.Is(err, fs.ErrNotExist) {
			return err
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("log: waiting for the first checkpoint: %w", ctx.Err())
		case <-t.C:
		}
	}
}

// Append adds leaf to the log and returns its index.
//
// Append MUST NOT return an index before the leaf is durably sequenced: once it returns nil, the
// leaf is at that index, byte for byte, across crashes and restarts, and no other leaf ever gets
// that index. An error MUST NOT be read as "not appended" unless it is ErrLeafSize,
// ErrOverloaded or ErrClosed: after any other error (including ctx's) the leaf may still be
// sequenced. Concurrent appends are batched into one durable write (group commit); their
// relative order in the log is unspecified. Append copies leaf.
func (l *Log) Append(ctx context.Context, leaf []byte) (uint64, error) {
	if len(leaf) == 0 || len(leaf) > l.opts.MaxLeafSize {
		return 0, fmt.Errorf("%w: %d bytes, want 1 to %d", ErrLeafSize, len(leaf), l.opts.MaxLeafSize)
	}
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	req := appendReq{entry: tessera.NewEntry(bytes.Clone(leaf)), done: make(chan appendResult, 1)}
	if err := l.submit(req); err != nil {
		return 0, err
	}
	select {
	case r := <-req.done:
		switch {
		case errors.Is(r.err, tessera.ErrPushback):
			return 0, fmt.Errorf("%w: %w", ErrOverloaded, r.err)
		case r.err != nil:
			return 0, fmt.Errorf("log: append: %w", r.err)
		}
		return r.idx.Index, nil
	case <-ctx.Done():
		return 0, fmt.Errorf("log: append outcome unknown: %w", ctx.Err())
	}
}

type appendReq struct {
	entry *tessera.Entry
	done  chan appendResult // buffered: commit never waits for an Append that gave up
}

type appendResult struct {
	idx tessera.Index
	err error
}

func (l *Log) submit(req appendReq) error {
	l.submitMu.RLock()
	defer l.submitMu.RUnlock()
	if l.closed {
		return ErrClosed
	}
	select {
	case l.reqs <- req:
		return nil
	default:
		return ErrOverloaded
	}
}

// Expecting tells the group commit how many appends are on their way: count reports the
// callers that will call Append soon (a verifier's requests being verified). While count() > 0
// a batch that is not full waits for them, up to maxAge after its first append, instead of
// BatchMaxAge; once count() is 0 (everything announced has been queued) it is written at once.
// A lone append then pays no linger, and under load batches grow to what arrives within maxAge,
// so the durable writes — each rewriting the partial entry bundle — are fewer and fuller.
// count is called from the commit loop, so it must be cheap (an atomic load) and must not call
// the Log. Callers should stop counting an append just before calling Append.
func (l *Log) Expecting(count func() int64, maxAge time.Duration) {
	if count == nil || maxAge <= 0 {
		l.expecting.Store(nil)
		return
	}
	l.expecting.Store(&expectation{count: count, maxAge: maxAge})
}

// commit is the group-commit loop. It takes every append that queued up while the previous
// batch was being written, lingers up to BatchMaxAge for more (unless the batch is full), hands
// the batch to tessera in one burst and waits until it is durable: one durable write at a time,
// carrying everything that arrived meanwhile.
//
// Tessera's own queue starts its linger timer at a batch's first entry, so on its own it cuts
// appends that trickle in during a long durable write into many small batches, each paying the
// whole write (measured: ~13 leaves per batch with 128 writers and a 2 ms linger). Here its
// linger (tesseraLinger) only has to cover the burst.
func (l *Log) commit(ctx context.Context) {
	defer close(l.committed)
	batch := make([]appendReq, 0, l.opts.BatchMaxSize)
	futures := make([]tessera.IndexFuture, l.opts.BatchMaxSize)
	linger := time.NewTimer(0)
	for first := range l.reqs {
		batch = append(batch[:0], first)
		exp := l.expecting.Load()
		if exp != nil {
			linger.Reset(exp.maxAge)
		} else {
			linger.Reset(l.opts.BatchMaxAge)
		}
	collect:
		for len(batch) < l.opts.BatchMaxSize {
			// Take what is queued first: a select with both cases ready picks at random.
			select {
			case r, ok := <-l.reqs:
				if !ok {
					break collect
				}
				batch = append(batch, r)
				continue
			default:
			}
			if exp != nil && exp.count() <= 0 {
				break collect // nothing else is on its way
			}
			select {
			case r, ok := <-l.reqs:
				if !ok {
					break collect
				}
				batch = append(batch, r)
			case <-linger.C:
				break collect
			}
		}
		linger.Stop()
		for i, r := range batch {
			futures[i] = l.add(ctx, r.entry)
		}
		for i, r := range batch {
			idx, err := futures[i]()
			r.done <- appendResult{idx, err}
		}
	}
}

// Checkpoint returns the latest published checkpoint, after verifying its signature and that it
// extends every checkpoint served before (I4, by a consistency proof from the stored tiles).
//
// Checkpoint MUST NOT return a checkpoint smaller than, or inconsistent with, one it returned
// before, in this process or (through the durable served floor) any earlier one (I6); it fails
// with an error wrapping ErrCorrupt instead. A larger checkpoint is durably recorded as the new
// floor before it is returned.
func (l *Log) Checkpoint(ctx context.Context) (Checkpoint, error) {
	// The stored checkpoint is read under mu: read before it, it may be older than one another
	// caller has served meanwhile, which would look like a rollback (I6) on a healthy log. This
	// serialises the read and signature check of concurrent callers, which are off the append
	// path (raising the floor, a durable write, was already serialised).
	l.mu.Lock()
	defer l.mu.Unlock()
	raw, err := l.reader.ReadCheckpoint(ctx)
	if err != nil {
		return Checkpoint{}, fmt.Errorf("log: reading checkpoint: %w", err)
	}
	cp, err := openCheckpoint(raw, l.verifier)
	if err != nil {
		return Checkpoint{}, &CorruptError{Invariant: "I1", Reason: "the stored checkpoint does not verify", Err: err}
	}
	old := l.served
	switch {
	case old.Note == nil: // nothing served yet
	case cp.Size < old.Size:
		return Checkpoint{}, corruptAt("I6", cp.Size, "storage holds a checkpoint of size %d, but one of size %d was served", cp.Size, old.Size)
	case cp.Size == old.Size && !bytes.Equal(cp.Hash, old.Hash):
		return Checkpoint{}, corrupt("I4", "storage holds a checkpoint of size %d with root %x, but root %x was served", cp.Size, cp.Hash, old.Hash)
	case cp.Size == old.Size:
		return cp, nil
	}
	if old.Size > 0 {
		p, err := l.consistencyProof(ctx, old.Size, cp.Size)
		if err != nil {
			return Checkpoint{}, fmt.Errorf("log: proving checkpoint %d consistent with %d: %w", cp.Size, old.Size, err)
		}
		if err := proof.VerifyConsistency(rfc6962.DefaultHasher, old.Size, cp.Size, p, old.Hash, cp.Hash); err != nil {
			return Checkpoint{}, &CorruptError{Invariant: "I4", Reason: fmt.Sprintf("checkpoint %d is not consistent with served checkpoint %d", cp.Size, old.Size), Err: err}
		}
	}
	if err := l.floor.raiseFloor(ctx, cp); err != nil {
		return Checkpoint{}, fmt.Errorf("log: recording served checkpoint: %w", err)
	}
	if cp.Size > l.served.Size {
		l.opts.Logger.DebugContext(ctx, "serving checkpoint", slog.Uint64("size", cp.Size))
	}
	l.served = cp
	return cp, nil
}

// WaitCheckpoint polls until a published checkpoint commits to at least size leaves and returns
// it. A leaf appended at index i is committed to once the checkpoint size exceeds i.
func (l *Log) WaitCheckpoint(ctx context.Context, size uint64) (Checkpoint, error) {
	poll := min(l.opts.CheckpointInterval/4, 50*time.Millisecond)
	for {
		cp, err := l.Checkpoint(ctx)
		if err != nil || cp.Size >= size {
			return cp, err
		}
		select {
		case <-ctx.Done():
			return Checkpoint{}, fmt.Errorf("log: waiting for checkpoint %d: %w", size, ctx.Err())
		case <-time.After(poll):
		}
	}
}

// Entry returns the leaf at index, as soon as its Append returned (before any checkpoint commits
// to it). It returns ErrNotFound beyond the sequenced leaves.
func (l *Log) Entry(ctx context.Context, index uint64) ([]byte, error) {
	size, err := l.reader.IntegratedSize(ctx)
	if err != nil {
		return nil, fmt.Errorf("log: reading tree size: %w", err)
	}
	if index >= size {
		return nil, fmt.Errorf("%w: index %d, log size %d", ErrNotFound, index, size)
	}
	b := index / layout.EntryBundleWidth
	p := layout.PartialTileSize(0, b, size)
	l.bundleMu.Lock()
	pb := l.lastBundle
	l.bundleMu.Unlock()
	if pb == nil || pb.index != b || pb.partial != p {
		raw, err := l.reader.ReadEntryBundle(ctx, b, p)
		if err != nil {
			return nil, fmt.Errorf("log: reading entry bundle %d: %w", b, err)
		}
		var bundle api.EntryBundle
		if err := bundle.UnmarshalText(raw); err != nil {
			return nil, corruptAt("I2", index, "entry bundle %d does not parse: %v", b, err)
		}
		pb = &parsedBundle{index: b, partial: p, entries: bundle.Entries}
		l.bundleMu.Lock()
		l.lastBundle = pb
		l.bundleMu.Unlock()
	}
	i := index % layout.EntryBundleWidth
	if i >= uint64(len(pb.entries)) {
		return nil, corruptAt("I2", index, "entry bundle %d holds only %d leaves", b, len(pb.entries))
	}
	return bytes.Clone(pb.entries[i]), nil
}

// InclusionProof returns the RFC 6962 inclusion proof of the leaf at index in the tree of
// treeSize leaves, which must be the size of a published checkpoint (or below).
func (l *Log) InclusionProof(ctx context.Context, index, treeSize uint64) ([][]byte, error) {
	if index >= treeSize {
		return nil, fmt.Errorf("log: inclusion proof of index %d in a tree of size %d", index, treeSize)
	}
	if err := l.published(ctx, treeSize); err != nil {
		return nil, err
	}
	pb, err := client.NewProofBuilder(ctx, treeSize, l.reader.ReadTile)
	if err != nil {
		return nil, fmt.Errorf("log: %w", err)
	}
	p, err := pb.InclusionProof(ctx, index)
	if err != nil {
		return nil, fmt.Errorf("log: inclusion proof: %w", err)
	}
	return p, nil
}

// ConsistencyProof returns the RFC 6962 consistency proof between trees of oldSize and newSize
// leaves (0 < oldSize <= newSize <= a published checkpoint's size).
func (l *Log) ConsistencyProof(ctx context.Context, oldSize, newSize uint64) ([][]byte, error) {
	if oldSize == 0 || oldSize > newSize {
		return nil, fmt.Errorf("log: consistency proof from size %d to %d", oldSize, newSize)
	}
	if err := l.published(ctx, newSize); err != nil {
		return nil, err
	}
	return l.consistencyProof(ctx, oldSize, newSize)
}

func (l *Log) consistencyProof(ctx context.Context, oldSize, newSize uint64) ([][]byte, error) {
	pb, err := client.NewProofBuilder(ctx, newSize, l.reader.ReadTile)
	if err != nil {
		return nil, fmt.Errorf("log: %w", err)
	}
	p, err := pb.ConsistencyProof(ctx, oldSize, newSize)
	if err != nil {
		return nil, fmt.Errorf("log: consistency proof: %w", err)
	}
	return p, nil
}

// published returns nil if a checkpoint of at least size has been published.
func (l *Log) published(ctx context.Context, size uint64) error {
	l.mu.Lock()
	served := l.served.Size
	l.mu.Unlock()
	if size <= served {
		return nil
	}
	cp, err := l.Checkpoint(ctx)
	if err != nil {
		return err
	}
	if size > cp.Size {
		return fmt.Errorf("%w: tree size %d is not published yet (latest %d)", ErrNotFound, size, cp.Size)
	}
	return nil
}

// Close stops accepting appends, waits (up to a minute) until a published checkpoint commits to
// every acknowledged append, and releases the storage. The *sql.DB of OpenMySQL stays open.
func (l *Log) Close() error {
	l.submitMu.Lock()
	if l.closed {
		l.submitMu.Unlock()
		return nil
	}
	l.closed = true
	close(l.reqs)
	l.submitMu.Unlock()

	ctx, cancel := context.WithTimeout(context.Background(), tessera.DefaultShutdownTimeout)
	defer cancel()
	var err error
	select {
	case <-l.committed: // every queued append has its outcome
		err = l.shutdown(ctx)
	case <-ctx.Done():
		err = errors.New("appends still waiting for storage")
	}
	l.cancel()
	if l.release != nil {
		err = errors.Join(err, l.release())
	}
	if err != nil {
		return fmt.Errorf("log: close: %w", err)
	}
	return nil
}
