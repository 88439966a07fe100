package log

import (
	"context"
	"fmt"

	"github.com/transparency-dev/tessera/api/layout"
	"golang.org/x/mod/sumdb/note"
)

// LeafReader reads leaves from a log's storage without opening the log for writing, so tools
// such as `proofline log reindex` can run beside a live service. It serves the leaves committed
// to by the latest checkpoint, which it verifies; it does not check the tree (that is Fsck's
// job). It is not safe for concurrent use.
type LeafReader struct {
	r    Reader
	v    note.Verifier
	size uint64
	// The last entry bundle read: leaves are usually read in order, 256 to a bundle.
	bundle uint64
	leaves [][]byte
}

// NewLeafReader returns a LeafReader over r whose checkpoints verify with v.
func NewLeafReader(r Reader, v note.Verifier) *LeafReader {
	return &LeafReader{r: r, v: v, bundle: ^uint64(0)}
}

// Size returns the size of the latest checkpoint, verified with the reader's verifier.
func (lr *LeafReader) Size(ctx context.Context) (uint64, error) {
	raw, err := lr.r.ReadCheckpoint(ctx)
	if err != nil {
		return 0, fmt.Errorf("log: reading checkpoint: %w", err)
	}
	cp, err := openCheckpoint(raw, lr.v)
	if err != nil {
		return 0, fmt.Errorf("log: the latest checkpoint does not verify: %w", err)
	}
	if cp.Size != lr.size {
		lr.size, lr.bundle, lr.leaves = cp.Size, ^uint64(0), nil
	}
	return cp.Size, nil
}

// Entry returns leaf i, which must be below the last Size.
func (lr *LeafReader) Entry(ctx context.Context, i uint64) ([]byte, error) {
	if i >= lr.size {
		return nil, fmt.Errorf("log: leaf %d is beyond the checkpoint's %d leaves: %w", i, lr.size, ErrNotFound)
	}
	b := i / layout.EntryBundleWidth
	if b != lr.bundle {
		raw, err := lr.r.ReadEntryBundle(ctx, b, layout.PartialTileSize(0, b, lr.size))
		if err != nil {
			return nil, fmt.Errorf("log: reading entry bundle %d: %w", b, err)
		}
		leaves, err := parseBundle(raw)
		if err != nil {
			return nil, corruptAt("I3", b*layout.EntryBundleWidth+uint64(len(leaves)), "entry bundle %d is malformed: %v", b, err)
		}
		lr.bundle, lr.leaves = b, leaves
	}
	k := i % layout.EntryBundleWidth
	if k >= uint64(len(lr.leaves)) {
		return nil, corruptAt("I3", i, "entry bundle %d holds %d leaves: leaf %d is missing", b, len(lr.leaves), i)
	}
	return lr.leaves[k], nil
}
