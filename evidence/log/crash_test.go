package log

import (
	"context"
	mrand "math/rand/v2"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/transparency-dev/tessera/api/layout"
)

// TestCrash kills a helper process that appends concurrently (SIGKILL, at random moments, some
// during Open), reopens the log and checks, after every kill, that Fsck passes (I1, I3, I4, I6)
// and that every acknowledged record is at its index byte for byte (I2). Set
// PROOFLINE_LOGCRASH_KILLS to run more kills per backend (hack/logcrash/run.sh does).
func TestCrash(t *testing.T) {
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			t.Parallel()
			f := b.new(t)
			kills := map[string]int{"posix": 20, "mysql": 6}[b.name]
			if n, err := strconv.Atoi(os.Getenv("PROOFLINE_LOGCRASH_KILLS")); err == nil {
				kills = n
			}
			// Opening MySQL takes longer (checkpoints at most every second): kill later.
			maxDelay := map[string]int{"posix": 250, "mysql": 700}[b.name]
			acked := map[uint64]string{}
			for k := range kills {
				run := startHelper(t, f, "crash", time.Duration(5+mrand.IntN(maxDelay))*time.Millisecond)
				if len(run.fatals) > 0 {
					t.Fatalf("kill %d: helper: %v", k, run.fatals)
				}
				for i, h := range run.acks {
					if prev, ok := acked[i]; ok && prev != h {
						t.Fatalf("kill %d: index %d acknowledged for leaf %s, and earlier for %s (I3)", k, i, h, prev)
					}
					acked[i] = h
				}
				// Publication after a restart takes up to two checkpoint intervals: wait for it
				// on every POSIX restart, and on every third MySQL one.
				recheck(t, f, acked, b.name == "posix" || k%3 == 2 || k == kills-1)
			}
			if len(acked) == 0 {
				t.Fatal("no append was ever acknowledged: the kills came too early")
			}
			t.Logf("%d kills, %d acknowledged records survived", kills, len(acked))
		})
	}
}

// recheck reopens the log, checks every acknowledged record and runs Fsck; with publish it also
// waits for a checkpoint that commits to every acknowledged record and runs Fsck again.
func recheck(t *testing.T, f *fixture, acked map[uint64]string, publish bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	l, err := f.open(ctx, Options{Origin: testOrigin, CheckpointInterval: f.cpInterval})
	if err != nil {
		t.Fatalf("reopen after kill: %v", err)
	}
	defer l.Close()
	size := checkAcked(ctx, t, l, acked)
	if _, err := Fsck(ctx, f.reader, f.verifier, nil); err != nil {
		t.Fatalf("fsck after restart: %v", err)
	}
	if !publish {
		return
	}
	if _, err := l.WaitCheckpoint(ctx, size); err != nil {
		t.Fatal(err)
	}
	rep, err := Fsck(ctx, f.reader, f.verifier, nil)
	if err != nil {
		t.Fatalf("fsck after publication: %v", err)
	}
	if rep.Checkpoint.Size < size {
		t.Fatalf("fsck checked size %d, want at least %d", rep.Checkpoint.Size, size)
	}
}

// checkAcked checks that every acknowledged leaf is at its index, byte for byte (I2), reading
// each entry bundle once, and returns the size of log they imply.
func checkAcked(ctx context.Context, t *testing.T, l *Log, acked map[uint64]string) uint64 {
	t.Helper()
	size, err := l.reader.IntegratedSize(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var want uint64
	bundles := map[uint64][][]byte{}
	for i, h := range acked {
		want = max(want, i+1)
		if i >= size {
			t.Fatalf("acknowledged index %d is beyond the log's size %d (I2)", i, size)
		}
		b := i / layout.EntryBundleWidth
		if _, ok := bundles[b]; !ok {
			raw, err := l.reader.ReadEntryBundle(ctx, b, layout.PartialTileSize(0, b, size))
			if err != nil {
				t.Fatalf("acknowledged index %d: %v (I2)", i, err)
			}
			if bundles[b], err = parseBundle(raw); err != nil {
				t.Fatalf("acknowledged index %d: %v (I2)", i, err)
			}
		}
		leaves := bundles[b]
		if k := i % layout.EntryBundleWidth; k >= uint64(len(leaves)) || digest(leaves[k]) != h {
			t.Fatalf("acknowledged index %d does not hold leaf %s (I2)", i, h)
		}
	}
	return want
}
