package log

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	mrand "math/rand/v2"
	"strings"
	"testing"
	"time"

	f_log "github.com/transparency-dev/formats/log"
	"golang.org/x/mod/sumdb/note"
)

// TestTamper alters stored leaves, tiles and checkpoints the way someone with access to the
// storage could, and checks that Fsck fails naming the first bad leaf index.
func TestTamper(t *testing.T) {
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			t.Parallel()
			f := b.new(t)
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			l := f.openLog(t, Options{})
			appendConcurrently(t, l, 300, 16)
			cp1, err := l.WaitCheckpoint(ctx, 300)
			if err != nil {
				t.Fatal(err)
			}
			appendConcurrently(t, l, 300, 16)
			cp2, err := l.WaitCheckpoint(ctx, 600) // also the served floor
			if err != nil {
				t.Fatal(err)
			}
			if err := l.Close(); err != nil {
				t.Fatal(err)
			}
			mustFsck(t, f)

			// Leaves 0–255 and 256–511 are full bundles, 512–599 a partial one.
			leafAt := func(i uint64) (bundle []byte, start, end int) {
				bundle = f.store.bundle(t, i/256, partial(i/256, 600))
				off := 0
				for range i % 256 {
					off += 2 + int(binary.BigEndian.Uint16(bundle[off:]))
				}
				return bundle, off, off + 2 + int(binary.BigEndian.Uint16(bundle[off:]))
			}
			for _, i := range []uint64{0, 1, 255, 256, 300, 511, 512, 599, uint64(mrand.IntN(600))} {
				t.Run(fmt.Sprintf("flip a byte of leaf %d", i), func(t *testing.T) {
					bundle, start, end := leafAt(i)
					pos := start + 2 + mrand.IntN(end-start-2)
					edit(t, f, i/256, bundle, func(b []byte) []byte { b[pos] ^= 1 << mrand.IntN(8); return b })
					wantCorrupt(t, f, "I1", i)
				})
				t.Run(fmt.Sprintf("flip a byte of the length of leaf %d", i), func(t *testing.T) {
					bundle, start, _ := leafAt(i)
					pos := start + mrand.IntN(2)
					edit(t, f, i/256, bundle, func(b []byte) []byte { b[pos] ^= 1 << mrand.IntN(8); return b })
					wantCorruptAt(t, f, i)
				})
			}
			for _, cut := range []int{1, 2, 3, 700, -1} {
				t.Run(fmt.Sprintf("truncate the tail by %d bytes", cut), func(t *testing.T) {
					bundle := f.store.bundle(t, 2, partial(2, 600))
					if cut < 0 {
						cut = len(bundle) // the whole partial bundle
					}
					newLen := len(bundle) - cut
					var want uint64 = 512 // the leaf whose record holds the new end
					for off := 0; off+2+int(binary.BigEndian.Uint16(bundle[off:])) <= newLen; off += 2 + int(binary.BigEndian.Uint16(bundle[off:])) {
						want++
					}
					edit(t, f, 2, bundle, func(b []byte) []byte { return b[:newLen] })
					wantCorrupt(t, f, "I3", want)
				})
			}
			t.Run("alter a leaf hash in tile 0/1", func(t *testing.T) {
				tile := f.store.tile(t, 0, 1, 0)
				k := mrand.IntN(256)
				bad := append([]byte(nil), tile...)
				bad[k*32+mrand.IntN(32)] ^= 0x80
				f.store.setTile(t, 0, 1, 0, bad)
				defer f.store.setTile(t, 0, 1, 0, tile)
				wantCorrupt(t, f, "I1", 256+uint64(k))
			})
			t.Run("alter a node in tile 1/0", func(t *testing.T) {
				tile := f.store.tile(t, 1, 0, partial1(600))
				bad := append([]byte(nil), tile...)
				bad[32+5] ^= 0x01 // node 1: the subtree of leaves 256–511
				f.store.setTile(t, 1, 0, partial1(600), bad)
				defer f.store.setTile(t, 1, 0, partial1(600), tile)
				wantCorrupt(t, f, "I1", 256)
			})
			t.Run("roll back to an earlier checkpoint", func(t *testing.T) {
				f.store.rollback(t, cp1)
				defer f.store.rollback(t, cp2)
				wantCorrupt(t, f, "I6", 300)
				if l, err := f.open(ctx, Options{CheckpointInterval: f.cpInterval}); !errors.Is(err, ErrCorrupt) {
					if err == nil {
						l.Close()
					}
					t.Fatalf("opening a rolled-back log: %v, want ErrCorrupt", err)
				}
			})
			t.Run("an earlier checkpoint the log does not commit to", func(t *testing.T) {
				forged := forgeCheckpoint(t, f, 300, cp2.Hash)
				_, err := Fsck(ctx, f.reader, f.verifier, nil, forged)
				var ce *CorruptError
				if !errors.As(err, &ce) || ce.Invariant != "I4" {
					t.Fatalf("Fsck with an inconsistent earlier checkpoint: %v, want I4", err)
				}
			})
			t.Run("checkLeaf fails", func(t *testing.T) {
				bad := errors.New("signature does not verify")
				_, err := Fsck(ctx, f.reader, f.verifier, func(i uint64, _ []byte) error {
					if i == 42 {
						return bad
					}
					return nil
				})
				var ce *CorruptError
				if !errors.As(err, &ce) || ce.Invariant != "I5" || ce.Index != 42 || !errors.Is(err, bad) {
					t.Fatalf("Fsck = %v, want I5 at 42 wrapping the leaf error", err)
				}
			})
			mustFsck(t, f) // every edit was undone
		})
	}
}

func partial(bundle, size uint64) uint8 {
	if (bundle+1)*256 <= size {
		return 0
	}
	return uint8(size % 256)
}

// partial1 is the partial size of tile 1/0 in a tree of size leaves (< 65536).
func partial1(size uint64) uint8 { return uint8(size / 256) }

// edit replaces bundle b by change(copy of original) and restores it when the test ends.
func edit(t *testing.T, f *fixture, b uint64, original []byte, change func([]byte) []byte) {
	t.Helper()
	p := partial(b, 600)
	f.store.setBundle(t, b, p, change(append([]byte(nil), original...)))
	t.Cleanup(func() { f.store.setBundle(t, b, p, original) })
}

func mustFsck(t *testing.T, f *fixture) {
	t.Helper()
	if _, err := Fsck(context.Background(), f.reader, f.verifier, nil); err != nil {
		t.Fatalf("Fsck of an untouched log: %v", err)
	}
}

func wantCorrupt(t *testing.T, f *fixture, invariant string, index uint64) {
	t.Helper()
	ce := wantCorruptAt(t, f, index)
	if ce.Invariant != invariant {
		t.Errorf("Fsck reported %s, want %s: %v", ce.Invariant, invariant, ce)
	}
}

func wantCorruptAt(t *testing.T, f *fixture, index uint64) *CorruptError {
	t.Helper()
	_, err := Fsck(context.Background(), f.reader, f.verifier, nil)
	var ce *CorruptError
	if !errors.As(err, &ce) || !errors.Is(err, ErrCorrupt) {
		t.Fatalf("Fsck = %v, want a *CorruptError", err)
	}
	if !ce.HasIndex || ce.Index != index || !strings.Contains(err.Error(), fmt.Sprintf("leaf index %d", index)) {
		t.Fatalf("Fsck = %q, want it to name leaf index %d", err, index)
	}
	t.Logf("Fsck: %v", err)
	return ce
}

// forgeCheckpoint signs a checkpoint with the log's own key, as someone holding the key could.
func forgeCheckpoint(t *testing.T, f *fixture, size uint64, hash []byte) []byte {
	t.Helper()
	text := f_log.Checkpoint{Origin: testOrigin, Size: size, Hash: hash}.Marshal()
	n, err := note.Sign(&note.Note{Text: string(text)}, f.signer)
	if err != nil {
		t.Fatal(err)
	}
	return n
}
