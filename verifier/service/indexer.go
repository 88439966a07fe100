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
// memory by log index and adds every run that continues the index in one transaction. A record
// waits for its own entry (so that a caller who queries the index after Attest finds it) but
// never longer than indexWait: the index is derived and best effort, a verdict never waits on it.
//
// A gap that does not close within indexGapWait is a record whose append outcome was unknown,
// or one appended by another replica sharing the database: the writer then runs Catchup, which
// indexes what the log holds up to its checkpoint, and the waiting entries follow.
const (
	indexWait    = time.Second
	indexGapWait = 100 * time.Millisecond
	// indexMaxPending bounds the entries held while the index cannot be written; past it records
	// are left to Catchup.
	indexMaxPending = 1 << 16
	// indexMaxBatch bounds the entries of one transaction.
	indexMaxBatch = 1024
)

type indexWriter struct {
	s       *Service
	wake    chan struct{} // buffered 1
	running atomic.Bool   // run is running: add may wait for it

	mu      sync.Mutex
	pending map[uint64]*pendingEntry
}

type pendingEntry struct {
	entry index.Entry
	since time.Time
	done  chan struct{} // closed once the entry is indexed or the writer gave up waiting
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

// add hands the writer the entry of the record appended at logIndex and waits (at most
// indexWait, or until ctx ends) until it is indexed.
func (w *indexWriter) add(ctx context.Context, logIndex uint64, leaf []byte, rec *evidence.Record) {
	e, err := index.NewEntry(logIndex, leaf, rec)
	if err != nil {
		w.s.m.indexErrors.Inc()
		w.s.logger.WarnContext(ctx, "no index entry for the record; the index catches up later", slog.Uint64("log_index", logIndex), slog.Any("error", err))
		return
	}
	p := &pendingEntry{entry: e, since: time.Now(), done: make(chan struct{})}
	w.mu.Lock()
	if len(w.pending) >= indexMaxPending {
		w.mu.Unlock()
		return // the index is failing: Catchup indexes the record from the log later
	}
	w.pending[logIndex] = p
	w.mu.Unlock()
	select {
	case w.wake <- struct{}{}:
	default:
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
	var next uint64
	known := false // next is the index's Next as of the last write
	gap := time.NewTimer(time.Hour)
	gap.Stop()
	for {
		select {
		case <-ctx.Done():
			w.release(func(*pendingEntry) bool { return true })
			return
		case <-w.wake:
		case <-gap.C:
		}
		for ctx.Err() == nil {
			if !known {
				n, err := w.s.d.Index.Next(ctx)
				if err != nil {
					w.fail(ctx, err)
					break
				}
				next, known = n, true
			}
			batch := w.run0(next)
			if len(batch) == 0 {
				if w.oldestWaitingSince().IsZero() {
					break
				}
				// A gap: wait for it to close, then ask the log.
				if wait := indexGapWait - time.Since(w.oldestWaitingSince()); wait > 0 {
					gap.Reset(wait)
					break
				}
				if _, err := w.s.catchupIndex(ctx); err != nil && ctx.Err() == nil {
					w.s.logger.WarnContext(ctx, "index catch-up failed", slog.Any("error", err))
				}
				n, err := w.s.d.Index.Next(ctx)
				if err != nil {
					w.fail(ctx, err)
					break
				}
				next = n
				// Whatever is still not indexable has waited long enough: its callers go on, and
				// its entry stays until the gap closes (or Catchup indexes it).
				w.release(func(p *pendingEntry) bool { return time.Since(p.since) >= indexGapWait })
				if len(w.run0(next)) == 0 {
					gap.Reset(indexGapWait)
					break
				}
				continue
			}
			err := w.s.d.Index.AddEntries(ctx, batch)
			switch {
			case err == nil:
				last := batch[len(batch)-1].LogIndex
				w.release(func(p *pendingEntry) bool { return p.entry.LogIndex <= last })
				next = last + 1
			case errors.Is(err, index.ErrGap):
				known = false // another writer (a replica, Catchup) moved the index: re-read it
				w.release(func(p *pendingEntry) bool { return time.Since(p.since) >= indexGapWait })
				gap.Reset(indexGapWait)
			default:
				// A conflict or a database failure: the entries are left to Catchup, which compares
				// the index with the log and says what is wrong.
				w.fail(ctx, err)
				last := batch[len(batch)-1].LogIndex
				w.drop(func(p *pendingEntry) bool { return p.entry.LogIndex <= last })
				known = false
			}
			if err != nil {
				break
			}
		}
	}
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

// oldestWaitingSince is when the oldest entry still pending (behind a gap) was handed over, or
// zero if none is.
func (w *indexWriter) oldestWaitingSince() time.Time {
	w.mu.Lock()
	defer w.mu.Unlock()
	var t time.Time
	for _, p := range w.pending {
		if t.IsZero() || p.since.Before(t) {
			t = p.since
		}
	}
	return t
}

// release lets the callers of the entries matching f go on; indexed entries (f for every entry
// at or below the last written) are forgotten by the next run0.
func (w *indexWriter) release(f func(*pendingEntry) bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, p := range w.pending {
		if f(p) {
			p.free()
		}
	}
}

// drop releases and forgets the entries matching f.
func (w *indexWriter) drop(f func(*pendingEntry) bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for i, p := range w.pending {
		if f(p) {
			p.free()
			delete(w.pending, i)
		}
	}
}

func (w *indexWriter) fail(ctx context.Context, err error) {
	if ctx.Err() != nil {
		return
	}
	w.s.m.indexErrors.Inc()
	w.s.logger.WarnContext(ctx, "index write failed; the index catches up from the log later", slog.Any("error", err))
	// Callers do not wait for an index that cannot be written.
	w.release(func(*pendingEntry) bool { return true })
}
