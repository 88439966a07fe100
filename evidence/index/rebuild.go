package index

import (
	"bytes"
	"context"
	"crypto/sha256"
	"database/sql"
	"errors"
	"fmt"

	"github.com/proofline/proofline/evidence"
)

// LeafSource is what the index needs of the evidence log. *log.Log has Entry; its Size is the
// number of sequenced leaves (or the size of the latest checkpoint, to index only what is
// committed to).
type LeafSource interface {
	// Size returns the number of leaves in the log.
	Size(ctx context.Context) (uint64, error)
	// Entry returns the leaf at index i < Size.
	Entry(ctx context.Context, i uint64) ([]byte, error)
}

// OpenFunc verifies a leaf and returns its record: evidence.Open against the key history, which
// the index does not know.
type OpenFunc func(leaf []byte) (*evidence.Record, error)

// Progress is told, after each batch, how many leaves are indexed and the log size being caught
// up to. It runs on the caller's goroutine.
type Progress func(indexed, size uint64)

// batch bounds one transaction of Catchup: rows, and bytes of indexed strings (so that a batch
// stays well within MySQL's max_allowed_packet whatever the records hold).
const (
	batchRows  = 256
	batchBytes = 1 << 20
)

// Rebuild empties the index and indexes every leaf of the log from 0, opening each with open.
// It returns the number of entries indexed. progress may be nil.
//
// Rebuild reads nothing but the log: it is `proofline log reindex`. A leaf that does not open is
// an error naming its index (the log holds a record that does not verify: run the log's fsck);
// the index then holds the prefix before it.
func Rebuild(ctx context.Context, ix *Index, leaves LeafSource, open OpenFunc, progress Progress) (uint64, error) {
	if _, err := ix.db.ExecContext(ctx, ix.d.empty); err != nil {
		return 0, fmt.Errorf("index: emptying: %w", err)
	}
	return Catchup(ctx, ix, leaves, open, progress)
}

// Catchup indexes the leaves from ix.Next() to the log's current size and returns how many it
// added. It first checks that the last indexed entry is the log's leaf at that index, so that an
// index built from another log fails with ErrConflict instead of growing on top of it; an index
// larger than the log fails the same way. progress may be nil.
func Catchup(ctx context.Context, ix *Index, leaves LeafSource, open OpenFunc, progress Progress) (uint64, error) {
	next, err := ix.Next(ctx)
	if err != nil {
		return 0, err
	}
	size, err := leaves.Size(ctx)
	if err != nil {
		return 0, fmt.Errorf("index: log size: %w", err)
	}
	if next > size {
		return 0, fmt.Errorf("%w: the index holds %d entries but the log only %d leaves: rebuild the index", ErrConflict, next, size)
	}
	if next > 0 {
		if err := ix.checkLast(ctx, leaves, next-1); err != nil {
			return 0, err
		}
	}
	start := next
	var (
		batch   []Entry
		pending int // bytes of indexed strings in batch
	)
	flush := func() error {
		if len(batch) == 0 {
			return nil
		}
		if err := ix.add(ctx, batch); err != nil {
			return err
		}
		next = batch[len(batch)-1].LogIndex + 1
		batch, pending = batch[:0], 0
		if progress != nil {
			progress(next, size)
		}
		return nil
	}
	for i := next; i < size; i++ {
		e, err := entryAt(ctx, leaves, open, i)
		if err != nil {
			// Keep what was opened before the bad leaf: the index stays a prefix of the log.
			if ferr := flush(); ferr != nil {
				return next - start, errors.Join(err, ferr)
			}
			return next - start, err
		}
		batch = append(batch, e)
		pending += len(e.Subject) + len(e.Status) + len(e.Policy)
		if len(batch) == batchRows || pending >= batchBytes {
			if err := flush(); err != nil {
				return next - start, err
			}
		}
	}
	if err := flush(); err != nil {
		return next - start, err
	}
	return next - start, nil
}

// entryAt reads, opens and derives the entry of leaf i.
func entryAt(ctx context.Context, leaves LeafSource, open OpenFunc, i uint64) (Entry, error) {
	leaf, err := leaves.Entry(ctx, i)
	if err != nil {
		return Entry{}, fmt.Errorf("index: reading log entry %d: %w", i, err)
	}
	rec, err := open(leaf)
	if err != nil {
		return Entry{}, fmt.Errorf("index: opening log entry %d: %w", i, err)
	}
	e, err := newEntry(i, leaf, rec)
	if err != nil {
		return Entry{}, fmt.Errorf("index: log entry %d: %w", i, err)
	}
	return e, nil
}

// checkLast compares entry i with the log's leaf i.
func (ix *Index) checkLast(ctx context.Context, leaves LeafSource, i uint64) error {
	leaf, err := leaves.Entry(ctx, i)
	if err != nil {
		return fmt.Errorf("index: reading log entry %d: %w", i, err)
	}
	var h []byte
	switch err := ix.db.QueryRowContext(ctx, "SELECT leaf_sha256 FROM proofline_index_entries WHERE log_index = ?", i).Scan(&h); {
	case errors.Is(err, sql.ErrNoRows):
		return fmt.Errorf("%w: entry %d vanished (a concurrent Rebuild?)", ErrGap, i)
	case err != nil:
		return fmt.Errorf("index: reading entry %d: %w", i, err)
	}
	if want := sha256.Sum256(leaf); !bytes.Equal(h, want[:]) {
		return fmt.Errorf("%w: entry %d has leaf %x, the log's leaf is %x: the index was built from another log; rebuild it", ErrConflict, i, h, want)
	}
	return nil
}
