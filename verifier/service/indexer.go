package service

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/proofline/proofline/evidence"
	"github.com/proofline/proofline/evidence/index"
)

// The index writer group-commits the index entries of the records this process appends.
//
// Indexing each record in its own transaction right after its append costs a transaction per
// record and, with concurrent appends, mostly fails: the log's group commit acknowledges a batch
// in any order, so a record's predecessor is often not indexed yet (index.ErrGap), and the
// record was then indexed again by Catchup, which re-reads the leaf from the log and verifies
// its signature once more. The writer instead keeps the entries of acknowledged records in
// memory by log index and adds every run that continues the index in one transaction. Woken by
// a new entry, it first lingers (at most indexLinger, and only while other appends are under
// way), so that the entries of one log batch (acknowledged together, handed over one by one)
// share a transaction: ~25 entries per transaction in the end-to-end benchmark instead of ~2,
// which took the index from ~8 % to ~2 % of the CPU. A record waits for its own entry (so that
// a caller who queries the index after Attest finds it) but never longer than indexWait, and
// only indexGapGrace behind a gap: the index is derived and best effort, a verdict never waits
// on it.
//
// A gap is a record this writer was not given: one appended by another replica sharing the
// database (its writer fills it), or one whose append outcome was unknown. Past indexGapWait the
// writer asks the log (Catchup, which indexes what the log holds up to its checkpoint), then
// again with a doubling delay up to indexMaxRetry while the gap stays open; a failing index
// database is retried the same way. The entries wait meanwhile (at most indexMaxPending; past
// that records are left to Catchup) and are written as soon as the gap closes.
const (
	indexWait     = time.Second
	indexGapGrace = 20 * time.Millisecond
	indexLinger   = time.Millisecond
	indexGapWait  = 100 * time.Millisecond
	indexMaxRetry = 30 * time.Second
	// indexMaxPending bounds the entries held while the index cannot be written.
	indexMaxPending = 1 << 16
	// indexMaxBatch bounds the entries of one transaction.
	indexMaxBatch = 1024
)

type indexWriter struct {
	s       *Service
	wake    chan struct{} // buffered 1
	running atomic.Bool   // run is running: add may wait for it
	// appending counts the appends under way whose entries are not handed over yet (add).
	appending atomic.Int64

	mu      sync.Mutex
	pending map[uint64]*pendingEntry

	// Owned by run: the backoff of retries (gaps and failures), and when a gap was first seen
	// (zero while there is none).
	backoff  time.Duration
	gapSince time.Time
	askedLog time.Time // the last Catchup run for a gap
	// next is the index's next position as the writer last knew it, when nextKnown.
	next      uint64
	nextKnown bool
}

type pendingEntry struct {
	entry index.Entry
	since time.Time
	done  chan struct{} // closed once the entry is indexed or its caller need not wait
	freed bool          // done is closed
}

func (p *pendingEntry) free() {
	if !p.freed {
		p.freed = true
		close(p.done)
	}
}

func newIndexWriter(s *Service) *indexWriter {
	return &indexWriter{s: s, wake: make(chan struct{}, 1), pending: map[uint64]*pendingEntry{}}
}

func (w *indexWriter) nudge() {
	select {
	case w.wake <- struct{}{}:
	default:
	}
}

// add hands the writer the entry of the record appended at logIndex and waits (at most
// indexWait, or until ctx ends) until it is indexed or the writer lets it go on.
//
// The caller counted its append in w.appending before it started; add stops counting it.
func (w *indexWriter) add(ctx context.Context, logIndex uint64, leaf []byte, rec *evidence.Record, status string) {
	e, err := index.NewSignedEntry(logIndex, leaf, rec, status)
	if err != nil {
		w.appending.Add(-1)
		w.nudge()
		w.s.m.indexErrors.Inc()
		w.s.logger.WarnContext(ctx, "no index entry for the record; the index catches up later", slog.Uint64("log_index", logIndex), slog.Any("error", err))
		return
	}
	p := &pendingEntry{entry: e, since: time.Now(), done: make(chan struct{})}
	w.mu.Lock()
	full := len(w.pending) >= indexMaxPending
	if !full {
		w.pending[logIndex] = p
	}
	w.mu.Unlock()
	w.appending.Add(-1)
	w.nudge() // also when full: the writer forgets what the index holds by now
	if full {
		return // the index is failing: Catchup indexes the record from the log later
	}
	t := time.NewTimer(indexWait)
	defer t.Stop()
	select {
	case <-p.done:
	case <-t.C:
	case <-ctx.Done():
	}
}

// run writes entries until ctx ends.
func (w *indexWriter) run(ctx context.Context) {
	retry := time.NewTimer(time.Hour)
	retry.Stop()
	defer retry.Stop()
	for {
		select {
		case <-ctx.Done():
			w.release(func(*pendingEntry) bool { return true })
			return
		case <-w.wake:
			w.linger(ctx)
		case <-retry.C:
		}
		if again := w.drain(ctx); again > 0 {
			retry.Reset(again)
		}
	}
}

// linger waits, at most indexLinger, while appends are under way whose entries are not handed
// over yet: the records of one log batch are acknowledged together, but their callers hand their
// entries over one by one, and they should share a transaction. A lone attestation does not
// wait: its own entry was the last one.
func (w *indexWriter) linger(ctx context.Context) {
	if w.appending.Load() <= 0 {
		return
	}
	t := time.NewTimer(indexLinger)
	defer t.Stop()
	for w.appending.Load() > 0 {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			return
		case <-w.wake: // an entry was handed over
		}
	}
}

// drain writes every pending run that continues the index. It returns 0 when nothing is left
// to do, or how soon to try again (a gap to ask the log about, a failure to retry).
//
// The index's next position is read from the database when the writer knows nothing better:
// at the start, after a failure or ErrGap, and before a gap is declared (Catchup and other
// replicas move it too). After a write it is the entry after the last one written, which saves
// a query per write on the attestation path.
func (w *indexWriter) drain(ctx context.Context) time.Duration {
	for ctx.Err() == nil {
		next, known := w.next, w.nextKnown
		if !known {
			var err error
			if next, err = w.s.d.Index.Next(ctx); err != nil {
				w.fail(ctx, err)
				return w.retryDelay()
			}
			w.next, w.nextKnown = next, true
		}
		batch := w.run0(next)
		if len(batch) == 0 {
			if w.pendingCount() == 0 {
				w.gapSince, w.backoff = time.Time{}, 0
				return 0
			}
			if known {
				w.nextKnown = false // the index may have moved meanwhile: read it before a gap
				continue
			}
			return w.gap(ctx, next)
		}
		if err := w.s.d.Index.AddEntries(ctx, batch); err != nil {
			w.nextKnown = false
			if errors.Is(err, index.ErrGap) {
				continue // the index moved under us (Catchup, a replica): read Next again
			}
			// A database failure, or a conflict (the index holds another leaf: Catchup and
			// `proofline log reindex` say more). The entries stay and are retried, less and less
			// often, until the index takes them or moves past them.
			w.fail(ctx, err)
			return w.retryDelay()
		}
		last := batch[len(batch)-1].LogIndex
		w.next = last + 1
		w.release(func(p *pendingEntry) bool { return p.entry.LogIndex <= last })
		w.gapSince, w.backoff = time.Time{}, 0
	}
	return 0
}

// gap handles pending entries that do not continue the index at next. The records of one log
// batch are acknowledged together but handed over one by one, so most gaps close within a
// millisecond: a caller waits up to indexGapGrace behind one, then goes on. The log is asked
// once a gap has lasted indexGapWait, then with a doubling delay while it stays open.
func (w *indexWriter) gap(ctx context.Context, next uint64) time.Duration {
	now := time.Now()
	w.release(func(p *pendingEntry) bool { return now.Sub(p.since) >= indexGapGrace })
	if w.gapSince.IsZero() {
		w.gapSince, w.backoff = now, indexGapWait
	}
	askAt := w.gapSince.Add(indexGapWait)
	if t := w.askedLog.Add(w.backoff); t.After(askAt) {
		askAt = t
	}
	if !now.Before(askAt) {
		w.askedLog = now
		if _, err := w.s.catchupIndex(ctx); err != nil && ctx.Err() == nil {
			w.s.logger.WarnContext(ctx, "index catch-up for a gap failed; retrying", slog.Uint64("index_next", next), slog.Any("error", err))
		}
		w.backoff = min(2*w.backoff, indexMaxRetry)
		w.nudge() // write what now continues the index
		askAt = now.Add(w.backoff)
	}
	wait := askAt.Sub(now)
	if t := w.oldestWaiting(); !t.IsZero() {
		wait = min(wait, t.Add(indexGapGrace).Sub(now))
	}
	return max(wait, time.Millisecond)
}

// oldestWaiting is when the oldest entry whose caller still waits was handed over, or zero.
func (w *indexWriter) oldestWaiting() time.Time {
	w.mu.Lock()
	defer w.mu.Unlock()
	var t time.Time
	for _, p := range w.pending {
		if !p.freed && (t.IsZero() || p.since.Before(t)) {
			t = p.since
		}
	}
	return t
}

// retryDelay is the delay before retrying after a failure, doubling up to indexMaxRetry.
func (w *indexWriter) retryDelay() time.Duration {
	w.backoff = min(max(2*w.backoff, indexGapWait), indexMaxRetry)
	return w.backoff
}

// run0 returns the pending entries that continue the index at next, in order, and forgets those
// below next (already indexed, by Catchup or another replica).
func (w *indexWriter) run0(next uint64) []index.Entry {
	w.mu.Lock()
	defer w.mu.Unlock()
	for i, p := range w.pending {
		if i < next {
			p.free()
			delete(w.pending, i)
		}
	}
	var batch []index.Entry
	for i := next; len(batch) < indexMaxBatch; i++ {
		p, ok := w.pending[i]
		if !ok {
			break
		}
		batch = append(batch, p.entry)
	}
	return batch
}

func (w *indexWriter) pendingCount() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return len(w.pending)
}

// release lets the callers of the entries matching f go on; indexed entries are forgotten by
// the next run0.
func (w *indexWriter) release(f func(*pendingEntry) bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, p := range w.pending {
		if f(p) {
			p.free()
		}
	}
}

func (w *indexWriter) fail(ctx context.Context, err error) {
	if ctx.Err() != nil {
		return
	}
	w.s.m.indexErrors.Inc()
	w.s.logger.WarnContext(ctx, "index write failed; retrying, and the index catches up from the log", slog.Any("error", err))
	// Callers do not wait for an index that cannot be written.
	w.release(func(*pendingEntry) bool { return true })
}
