package log

import (
	"bytes"
	"context"
	"errors"
	"testing"
	"time"

	"github.com/transparency-dev/tessera/api/layout"
)

// TestPOSIXReaderBounds: an entry bundle or tile file larger than any tessera writes is reported
// as corruption, without being read whole.
func TestPOSIXReaderBounds(t *testing.T) {
	f := newPOSIXFixture(t)
	l := f.openLog(t, Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	appendConcurrently(t, l, 3, 1)
	if _, err := l.WaitCheckpoint(ctx, 3); err != nil {
		t.Fatal(err)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	store := f.store.(posixEditor)

	// A bundle that parses, as 257 leaves of the largest size: one leaf too many to fit.
	leaf := append([]byte{0xff, 0xff}, bytes.Repeat([]byte{'x'}, MaxLeafSize)...)
	store.write(t, store.bundlePath(t, 0, 3), bytes.Repeat(leaf, layout.EntryBundleWidth+1))
	var ce *CorruptError
	if _, err := f.reader.ReadEntryBundle(ctx, 0, 3); !errors.As(err, &ce) || ce.Invariant != "I3" || ce.Index != 0 {
		t.Fatalf("ReadEntryBundle of an oversized bundle = %v, want I3 at leaf 0", err)
	}
	lr := NewLeafReader(f.reader, f.verifier)
	if _, err := lr.Size(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := lr.Entry(ctx, 1); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("LeafReader.Entry in an oversized bundle = %v, want ErrCorrupt", err)
	}

	store.write(t, store.tilePath(t, 0, 0, 3), make([]byte, 32*(layout.TileWidth+1)))
	if _, err := f.reader.ReadTile(ctx, 0, 0, 3); !errors.As(err, &ce) || ce.Invariant != "I1" || ce.Index != 0 {
		t.Fatalf("ReadTile of an oversized tile = %v, want I1 at leaf 0", err)
	}
}
