package log

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"slices"

	"github.com/transparency-dev/merkle/compact"
	"github.com/transparency-dev/merkle/rfc6962"
	"github.com/transparency-dev/tessera/api/layout"
	"golang.org/x/mod/sumdb/note"
)

// Reader reads a log's stored resources, as [POSIXReader] and [MySQLReader] do. Entry bundles
// and tiles are addressed as in C2SP tlog-tiles; p is the partial size (0 = full) and an
// implementation may return a larger resource than asked for. Missing resources are errors
// wrapping fs.ErrNotExist.
type Reader interface {
	ReadCheckpoint(ctx context.Context) ([]byte, error)
	ReadEntryBundle(ctx context.Context, index uint64, p uint8) ([]byte, error)
	ReadTile(ctx context.Context, level, index uint64, p uint8) ([]byte, error)
	// ReadServedCheckpoint returns the largest checkpoint the log has served (its I6 floor).
	ReadServedCheckpoint(ctx context.Context) ([]byte, error)
}

// Report describes a log Fsck found sound.
type Report struct {
	// Checkpoint is the latest checkpoint, verified and recomputed from the leaves.
	Checkpoint Checkpoint
	// Leaves is the number of leaves read, hashed and passed to checkLeaf.
	Leaves uint64
	// Tiles is the number of stored hash tiles compared with the recomputed ones.
	Tiles int
	// Earlier is the number of earlier checkpoints (served floor and those passed in) found to
	// commit to a prefix of the same leaves.
	Earlier int
}

// Fsck checks the whole log r holds against invariants I1 and I3–I6 (see the package
// documentation) and returns a report, or an error wrapping ErrCorrupt — a *CorruptError naming
// the invariant and, when it can, the first bad leaf index. Any other error means the check could
// not run.
//
// v verifies checkpoints; its name is the expected origin. checkLeaf, if not nil, is called for
// every leaf in index order; its error fails the check as I5 at that index. earlier are
// checkpoints obtained before (by auditors, in receipts); each must verify with v, be no larger
// than the latest and commit to the same leaves.
func Fsck(ctx context.Context, r Reader, v note.Verifier, checkLeaf func(index uint64, leaf []byte) error, earlier ...[]byte) (*Report, error) {
	// The served floor first: it only ever records checkpoints already published, so on a live,
	// healthy log it is no larger than the latest checkpoint read after it. Read the other way
	// round, a checkpoint served in between would look like a rollback (I6).
	served, err := r.ReadServedCheckpoint(ctx)
	hasServed := err == nil
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("log: fsck: reading served checkpoint: %w", err)
	}
	raw, err := r.ReadCheckpoint(ctx)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, corrupt("I1", "no checkpoint stored")
	} else if err != nil {
		return nil, fmt.Errorf("log: fsck: reading checkpoint: %w", err)
	}
	latest, err := openCheckpoint(raw, v)
	if err != nil {
		return nil, &CorruptError{Invariant: "I1", Reason: "the latest checkpoint does not verify", Err: err}
	}
	rep := &Report{Checkpoint: latest}

	var cps []Checkpoint
	for i, raw := range earlier {
		cp, err := openCheckpoint(raw, v)
		if err != nil {
			// Fail closed: a checkpoint kept from this log that no longer verifies means the log
			// is now signed by another key (rebuilt), unless the file is not one of its checkpoints.
			return nil, &CorruptError{Invariant: "I4", Reason: fmt.Sprintf("earlier checkpoint %d does not verify with the log key: the log was re-signed under another key since it was taken, or it is not a checkpoint of this log", i), Err: err}
		}
		cps = append(cps, cp)
	}
	if hasServed {
		cp, err := openCheckpoint(served, v)
		if err != nil {
			return nil, &CorruptError{Invariant: "I6", Reason: "the stored served checkpoint does not verify", Err: err}
		}
		cps = append(cps, cp)
	}
	slices.SortFunc(cps, func(a, b Checkpoint) int { return compareUint64(a.Size, b.Size) })
	if n := len(cps); n > 0 && cps[n-1].Size > latest.Size {
		return nil, corruptAt("I6", latest.Size, "a checkpoint of size %d was served, but the latest checkpoint has size %d: leaves from index %d are missing", cps[n-1].Size, latest.Size, latest.Size)
	}

	for len(cps) > 0 && cps[0].Size == 0 {
		if !bytes.Equal(cps[0].Hash, rfc6962.DefaultHasher.EmptyRoot()) {
			return nil, corrupt("I4", "a checkpoint of size 0 has root %x, not the empty root", cps[0].Hash)
		}
		rep.Earlier++
		cps = cps[1:]
	}

	t := &treeCheck{ctx: ctx, r: r, size: latest.Size, pending: map[compact.NodeID][][]byte{}}
	t.tree = (&compact.RangeFactory{Hash: rfc6962.DefaultHasher.HashChildren}).NewEmptyRange(0)
	lastGood := uint64(0) // size of the largest earlier checkpoint matched so far
	for b := uint64(0); b*layout.EntryBundleWidth < latest.Size; b++ {
		leaves, err := t.bundle(b)
		if err != nil {
			return nil, err
		}
		first := b * layout.EntryBundleWidth
		for k, leaf := range leaves {
			index := first + uint64(k)
			if checkLeaf != nil {
				if err := checkLeaf(index, leaf); err != nil {
					return nil, &CorruptError{Invariant: "I5", Index: index, HasIndex: true, Reason: "leaf check failed", Err: err}
				}
			}
			if err := t.tree.Append(rfc6962.DefaultHasher.HashLeaf(leaf), t.visit); err != nil {
				return nil, fmt.Errorf("log: fsck: %w", err)
			}
			if t.err != nil {
				return nil, t.err
			}
			rep.Leaves++
			for len(cps) > 0 && cps[0].Size == t.tree.End() {
				root, err := t.tree.GetRootHash(nil)
				if err != nil {
					return nil, fmt.Errorf("log: fsck: %w", err)
				}
				if !bytes.Equal(root, cps[0].Hash) {
					return nil, corruptAt("I4", lastGood, "the checkpoint of size %d (root %x) does not commit to the stored leaves (root %x): they differ in [%d, %d)", cps[0].Size, cps[0].Hash, root, lastGood, cps[0].Size)
				}
				lastGood = cps[0].Size
				rep.Earlier++
				cps = cps[1:]
			}
		}
	}
	if err := t.flush(); err != nil {
		return nil, err
	}
	rep.Tiles = t.tiles
	root := rfc6962.DefaultHasher.EmptyRoot()
	if latest.Size > 0 {
		if root, err = t.tree.GetRootHash(nil); err != nil {
			return nil, fmt.Errorf("log: fsck: %w", err)
		}
	}
	if !bytes.Equal(root, latest.Hash) {
		return nil, corruptAt("I1", lastGood, "the root recomputed from the stored leaves is %x, but the latest checkpoint (size %d) says %x: they differ in [%d, %d)", root, latest.Size, latest.Hash, lastGood, latest.Size)
	}
	return rep, nil
}

func compareUint64(a, b uint64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// treeCheck streams the leaves of a tree of size leaves and compares the hash tiles it recomputes
// with the stored ones.
type treeCheck struct {
	ctx   context.Context
	r     Reader
	size  uint64
	tree  *compact.Range
	tiles int
	// pending holds the hashes of the tiles above level 0 being recomputed, keyed by tile
	// coordinates (Level = tile level).
	pending map[compact.NodeID][][]byte
	err     error // the first error of visit
}

// bundle reads entry bundle b, checks its leaves against the stored level-0 tile (leaf hashes)
// and returns the leaves that belong to the tree.
func (t *treeCheck) bundle(b uint64) ([][]byte, error) {
	first := b * layout.EntryBundleWidth
	want := min(uint64(layout.EntryBundleWidth), t.size-first)
	p := layout.PartialTileSize(0, b, t.size)
	raw, err := t.r.ReadEntryBundle(t.ctx, b, p)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, corruptAt("I3", first, "entry bundle %d is missing: leaves [%d, %d) are gone", b, first, first+want)
	} else if err != nil {
		return nil, fmt.Errorf("log: fsck: reading entry bundle %d: %w", b, err)
	}
	leaves, perr := parseBundle(raw)
	tile, err := t.readTile(0, b, p)
	if err != nil {
		return nil, err
	}
	// Leaf hashes first, so that an altered length prefix is named at the leaf it belongs to
	// rather than where parsing gives up.
	for k := range min(uint64(len(leaves)), want, uint64(len(tile))) {
		if h := rfc6962.DefaultHasher.HashLeaf(leaves[k]); !bytes.Equal(h, tile[k]) {
			return nil, corruptAt("I1", first+k, "the leaf in entry bundle %d does not match its hash in tile 0/%d: the entry bundle or the tile was altered", b, b)
		}
	}
	switch {
	case perr != nil && uint64(len(leaves)) < want:
		return nil, corruptAt("I3", first+uint64(len(leaves)), "entry bundle %d is truncated or malformed: %v", b, perr)
	case uint64(len(leaves)) < want:
		return nil, corruptAt("I3", first+uint64(len(leaves)), "entry bundle %d holds %d leaves, want %d: the tail is missing", b, len(leaves), want)
	case perr != nil || len(leaves) > layout.EntryBundleWidth:
		// Bytes after the tree's leaves would corrupt the next append to this bundle.
		return nil, corruptAt("I3", first+want, "entry bundle %d has malformed data after its %d leaves", b, want)
	case uint64(len(tile)) < want:
		return nil, corruptAt("I1", first+uint64(len(tile)), "tile 0/%d holds %d hashes, want %d", b, len(tile), want)
	}
	t.tiles++
	return leaves[:want], nil
}

// parseBundle splits a C2SP tlog-tiles entry bundle (16-bit big-endian length, data, …). On
// malformed data it returns the leaves before it and an error.
func parseBundle(raw []byte) ([][]byte, error) {
	var leaves [][]byte
	for len(raw) > 0 {
		if len(raw) < 2 {
			return leaves, errors.New("dangling length byte")
		}
		n := int(binary.BigEndian.Uint16(raw))
		if len(raw) < 2+n {
			return leaves, fmt.Errorf("leaf of %d bytes, but only %d remain", n, len(raw)-2)
		}
		leaves = append(leaves, raw[2:2+n])
		raw = raw[2+n:]
	}
	return leaves, nil
}

// readTile reads a stored hash tile and splits it into hashes; a missing tile is corruption.
func (t *treeCheck) readTile(level, index uint64, p uint8) ([][]byte, error) {
	raw, err := t.r.ReadTile(t.ctx, level, index, p)
	first := (index * layout.TileWidth) << (level * layout.TileHeight)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, corruptAt("I1", first, "tile %d/%d is missing", level, index)
	} else if err != nil {
		return nil, fmt.Errorf("log: fsck: reading tile %d/%d: %w", level, index, err)
	}
	if len(raw)%32 != 0 {
		return nil, corruptAt("I1", first, "tile %d/%d has %d bytes, not a multiple of 32", level, index, len(raw))
	}
	var hashes [][]byte
	for ; len(raw) > 0; raw = raw[32:] {
		hashes = append(hashes, raw[:32])
	}
	return hashes, nil
}

// visit collects the recomputed nodes stored in tiles above level 0 (tree levels 8, 16, …) and
// compares each tile once it is complete.
func (t *treeCheck) visit(id compact.NodeID, h []byte) {
	if id.Level == 0 || id.Level%layout.TileHeight != 0 || t.err != nil {
		return
	}
	k := compact.NodeID{Level: id.Level / layout.TileHeight, Index: id.Index / layout.TileWidth}
	t.pending[k] = append(t.pending[k], bytes.Clone(h))
	if len(t.pending[k]) == layout.TileWidth {
		t.err = t.compare(k)
	}
}

// flush compares the partial tiles left at the right edge of the tree.
func (t *treeCheck) flush() error {
	keys := make([]compact.NodeID, 0, len(t.pending))
	for k := range t.pending {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(a, b compact.NodeID) int { return compareUint64(uint64(a.Level), uint64(b.Level)) })
	for _, k := range keys {
		if err := t.compare(k); err != nil {
			return err
		}
	}
	return nil
}

func (t *treeCheck) compare(k compact.NodeID) error {
	level, index := uint64(k.Level), k.Index
	got := t.pending[k]
	delete(t.pending, k)
	stored, err := t.readTile(level, index, layout.PartialTileSize(level, index, t.size))
	if err != nil {
		return err
	}
	for i, h := range got {
		if i >= len(stored) || !bytes.Equal(h, stored[i]) {
			first := (index*layout.TileWidth + uint64(i)) << (level * layout.TileHeight)
			return corruptAt("I1", first, "tile %d/%d differs from the one recomputed from the leaves at node %d (leaves from %d)", level, index, i, first)
		}
	}
	t.tiles++
	return nil
}

// OpenCheckpoint verifies a checkpoint (signed note) with v and parses it, for callers that keep
// checkpoints to pass to Fsck later (the verifier's continuous self-check).
func OpenCheckpoint(raw []byte, v note.Verifier) (Checkpoint, error) { return openCheckpoint(raw, v) }
