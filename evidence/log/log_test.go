package log

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/transparency-dev/merkle/proof"
	"github.com/transparency-dev/merkle/rfc6962"
	"golang.org/x/mod/sumdb/tlog"

	"github.com/proofline/proofline/internal/mysqltest"
)

// appendConcurrently appends n fresh random leaves from g goroutines and returns index → leaf.
func appendConcurrently(t testing.TB, l *Log, n, g int) map[uint64][]byte {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	jobs := make(chan []byte, n)
	for range n {
		jobs <- randomLeaf(1, 2000)
	}
	close(jobs)
	var mu sync.Mutex
	got := map[uint64][]byte{}
	var wg sync.WaitGroup
	for range g {
		wg.Go(func() {
			for leaf := range jobs {
				i, err := l.Append(ctx, leaf)
				if err != nil {
					t.Errorf("Append: %v", err)
					return
				}
				mu.Lock()
				if _, dup := got[i]; dup {
					t.Errorf("index %d returned twice", i)
				}
				got[i] = leaf
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	return got
}

// wantContiguous fails unless the indices are exactly [from, from+len).
func wantContiguous(t testing.TB, got map[uint64][]byte, from uint64) {
	t.Helper()
	idx := make([]uint64, 0, len(got))
	for i := range got {
		idx = append(idx, i)
	}
	slices.Sort(idx)
	for k, i := range idx {
		if i != from+uint64(k) {
			t.Fatalf("indices are not contiguous from %d: position %d holds %d", from, k, i)
		}
	}
}

func TestAppendConcurrent(t *testing.T) {
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			t.Parallel()
			f := b.new(t)
			l := f.openLog(t, Options{})
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()

			first := appendConcurrently(t, l, 100, 16)
			wantContiguous(t, first, 0)
			cp1, err := l.WaitCheckpoint(ctx, 100)
			if err != nil {
				t.Fatal(err)
			}
			second := appendConcurrently(t, l, 100, 16)
			wantContiguous(t, second, 100)
			cp2, err := l.WaitCheckpoint(ctx, 200)
			if err != nil {
				t.Fatal(err)
			}
			if cp1.Size != 100 || cp2.Size != 200 || cp2.Origin != testOrigin {
				t.Fatalf("checkpoints: size %d then %d, origin %q", cp1.Size, cp2.Size, cp2.Origin)
			}
			all := first
			for i, leaf := range second {
				all[i] = leaf
			}

			for i, leaf := range all {
				got, err := l.Entry(ctx, i)
				if err != nil || !bytes.Equal(got, leaf) {
					t.Fatalf("Entry(%d) = %x, %v; want the appended bytes", i, got, err)
				}
				for _, cp := range []Checkpoint{cp1, cp2} {
					if i >= cp.Size {
						continue
					}
					p, err := l.InclusionProof(ctx, i, cp.Size)
					if err != nil {
						t.Fatalf("InclusionProof(%d, %d): %v", i, cp.Size, err)
					}
					verifyInclusion(t, leaf, i, cp, p)
				}
			}
			p, err := l.ConsistencyProof(ctx, cp1.Size, cp2.Size)
			if err != nil {
				t.Fatal(err)
			}
			verifyConsistency(t, cp1, cp2, p)

			if _, err := l.Entry(ctx, 200); !errors.Is(err, ErrNotFound) {
				t.Errorf("Entry(200) = %v, want ErrNotFound", err)
			}
			if _, err := l.InclusionProof(ctx, 0, 201); !errors.Is(err, ErrNotFound) {
				t.Errorf("InclusionProof beyond the checkpoint = %v, want ErrNotFound", err)
			}

			rep, err := Fsck(ctx, f.reader, f.verifier, func(i uint64, leaf []byte) error {
				if !bytes.Equal(leaf, all[i]) {
					return fmt.Errorf("leaf %d differs", i)
				}
				return nil
			}, cp1.Note)
			if err != nil {
				t.Fatal(err)
			}
			if rep.Leaves != 200 || rep.Checkpoint.Size != 200 || rep.Earlier != 2 || rep.Tiles == 0 {
				t.Errorf("Fsck report %+v, want 200 leaves, 2 earlier checkpoints (cp1 and the served floor)", rep)
			}

			// Everything survives a clean restart.
			if err := l.Close(); err != nil {
				t.Fatal(err)
			}
			l = f.openLog(t, Options{})
			if got, err := l.Entry(ctx, 199); err != nil || !bytes.Equal(got, all[199]) {
				t.Fatalf("after reopen, Entry(199) = %x, %v", got, err)
			}
			if i, err := l.Append(ctx, []byte("after reopen")); err != nil || i != 200 {
				t.Fatalf("after reopen, Append = %d, %v; want 200", i, err)
			}
		})
	}
}

// verifyInclusion checks an inclusion proof with two independent implementations: the
// transparency-dev verifier tessera uses, and golang.org/x/mod/sumdb/tlog.
func verifyInclusion(t testing.TB, leaf []byte, index uint64, cp Checkpoint, p [][]byte) {
	t.Helper()
	if err := proof.VerifyInclusion(rfc6962.DefaultHasher, index, cp.Size, rfc6962.DefaultHasher.HashLeaf(leaf), p, cp.Hash); err != nil {
		t.Fatalf("inclusion of %d in %d (merkle/proof): %v", index, cp.Size, err)
	}
	if err := tlog.CheckRecord(tlogHashes(p), int64(cp.Size), tlogHash(cp.Hash), int64(index), tlog.RecordHash(leaf)); err != nil {
		t.Fatalf("inclusion of %d in %d (sumdb/tlog): %v", index, cp.Size, err)
	}
}

func verifyConsistency(t testing.TB, old, new Checkpoint, p [][]byte) {
	t.Helper()
	if err := proof.VerifyConsistency(rfc6962.DefaultHasher, old.Size, new.Size, p, old.Hash, new.Hash); err != nil {
		t.Fatalf("consistency %d → %d (merkle/proof): %v", old.Size, new.Size, err)
	}
	if err := tlog.CheckTree(tlogHashes(p), int64(new.Size), tlogHash(new.Hash), int64(old.Size), tlogHash(old.Hash)); err != nil {
		t.Fatalf("consistency %d → %d (sumdb/tlog): %v", old.Size, new.Size, err)
	}
}

func tlogHash(b []byte) (h tlog.Hash) {
	copy(h[:], b)
	return h
}

func tlogHashes(p [][]byte) []tlog.Hash {
	hs := make([]tlog.Hash, len(p))
	for i := range p {
		hs[i] = tlogHash(p[i])
	}
	return hs
}

func TestAppendRejects(t *testing.T) {
	f := newPOSIXFixture(t)
	l := f.openLog(t, Options{MaxLeafSize: 100})
	ctx := context.Background()
	for _, size := range []int{0, 101} {
		if _, err := l.Append(ctx, make([]byte, size)); !errors.Is(err, ErrLeafSize) {
			t.Errorf("Append(%d bytes) = %v, want ErrLeafSize", size, err)
		}
	}
	canceled, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := l.Append(canceled, []byte("x")); !errors.Is(err, context.Canceled) {
		t.Errorf("Append with a canceled context = %v", err)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := l.Append(ctx, []byte("x")); !errors.Is(err, ErrClosed) {
		t.Errorf("Append after Close = %v, want ErrClosed", err)
	}
}

func TestOpenPOSIX(t *testing.T) {
	ctx := context.Background()
	t.Run("one writer per directory", func(t *testing.T) {
		f := newPOSIXFixture(t)
		f.openLog(t, Options{})
		if l, err := f.open(ctx, Options{CheckpointInterval: time.Second}); err == nil {
			l.Close()
			t.Fatal("a second OpenPOSIX of an open directory succeeded")
		}
	})
	t.Run("generates a key once", func(t *testing.T) {
		dir := t.TempDir()
		if _, err := OpenPOSIX(ctx, dir, Options{}); err == nil {
			t.Fatal("OpenPOSIX without an origin or key succeeded")
		}
		l, err := OpenPOSIX(ctx, dir, Options{Origin: testOrigin})
		if err != nil {
			t.Fatal(err)
		}
		cp, err := l.Checkpoint(ctx)
		if err != nil || cp.Size != 0 || cp.Origin != testOrigin {
			t.Fatalf("fresh log checkpoint %+v, %v", cp, err)
		}
		_, v, err := LoadOrGenerateKey(filepath.Join(dir, posixKeyFile), "")
		if err != nil {
			t.Fatal(err)
		}
		if rep, err := Fsck(ctx, NewPOSIXReader(dir), v, nil); err != nil || rep.Leaves != 0 || rep.Earlier != 1 {
			t.Fatalf("Fsck of an empty log: %+v, %v", rep, err)
		}
		if fi, err := os.Stat(filepath.Join(dir, posixKeyFile)); err != nil || fi.Mode().Perm() != 0o600 {
			t.Fatalf("note key: %v, %v; want mode 0600", fi, err)
		}
		l.Close()
		if _, err := OpenPOSIX(ctx, dir, Options{Origin: "other.example/log"}); err == nil {
			t.Fatal("reopening with another origin succeeded")
		}
		l, err = OpenPOSIX(ctx, dir, Options{}) // the key file names the origin
		if err != nil {
			t.Fatal(err)
		}
		l.Close()
	})
	t.Run("bad options", func(t *testing.T) {
		for name, o := range map[string]Options{
			"interval below tessera's minimum": {Origin: testOrigin, CheckpointInterval: time.Millisecond},
			"leaf size above tlog-tiles'":      {Origin: testOrigin, MaxLeafSize: 1 << 16},
		} {
			if l, err := OpenPOSIX(ctx, t.TempDir(), o); err == nil {
				l.Close()
				t.Errorf("%s: OpenPOSIX succeeded", name)
			}
		}
	})
}

func TestAppendOverloaded(t *testing.T) {
	f := newPOSIXFixture(t)
	// Batches of one, and room for one append waiting: of 50 concurrent appends, most find the
	// queue full while a batch is being written.
	l := f.openLog(t, Options{MaxPending: 1, BatchMaxSize: 1})
	ctx := context.Background()
	var overloaded, ok atomic.Int32
	var wg sync.WaitGroup
	for range 50 {
		wg.Go(func() {
			_, err := l.Append(ctx, []byte("x"))
			switch {
			case errors.Is(err, ErrOverloaded):
				overloaded.Add(1)
			case err == nil:
				ok.Add(1)
			default:
				t.Errorf("Append: %v", err)
			}
		})
	}
	wg.Wait()
	if overloaded.Load() == 0 || ok.Load() == 0 {
		t.Errorf("%d appends overloaded, %d succeeded; want some of each", overloaded.Load(), ok.Load())
	}
}

// TestMySQLReplicas runs two Logs on one database, as two verifier replicas would: their
// appends interleave into one contiguous log, and each serves checkpoints the other extends.
func TestMySQLReplicas(t *testing.T) {
	t.Parallel()
	f := newMySQLFixture(t)
	a, b := f.openLog(t, Options{}), f.openLog(t, Options{})
	var mu sync.Mutex
	all := map[uint64][]byte{}
	var wg sync.WaitGroup
	for _, l := range []*Log{a, b} {
		wg.Go(func() {
			got := appendConcurrently(t, l, 100, 8)
			mu.Lock()
			defer mu.Unlock()
			for i, leaf := range got {
				if _, dup := all[i]; dup {
					t.Errorf("index %d acknowledged by both replicas", i)
				}
				all[i] = leaf
			}
		})
	}
	wg.Wait()
	wantContiguous(t, all, 0)
	ctx := context.Background()
	cpA, err := a.WaitCheckpoint(ctx, 200)
	if err != nil {
		t.Fatal(err)
	}
	cpB, err := b.Checkpoint(ctx)
	if err != nil || cpB.Size < cpA.Size {
		t.Fatalf("replica b serves %d after a served %d: %v", cpB.Size, cpA.Size, err)
	}
	for i, leaf := range all {
		if got, err := b.Entry(ctx, i); err != nil || !bytes.Equal(got, leaf) {
			t.Fatalf("replica b: Entry(%d) = %v", i, err)
		}
	}
	if _, err := Fsck(ctx, f.reader, f.verifier, nil, cpA.Note); err != nil {
		t.Fatal(err)
	}
}

// Expecting: a batch waits for the appends announced as on their way (up to the bound) and is
// written as soon as none is left; with none announced an append is written without lingering.
func TestAppendExpecting(t *testing.T) {
	f := backends[0].new(t) // POSIX: the group commit is the same for both backends
	l := f.openLog(t, Options{})
	var coming atomic.Int64
	l.Expecting(coming.Load, time.Hour)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	// Nothing announced: written at once (an hour's linger would time the test out).
	if _, err := l.Append(ctx, []byte("alone")); err != nil {
		t.Fatal(err)
	}

	// Two announced: the first waits for the second, then both are written.
	coming.Store(2)
	type result struct {
		idx uint64
		err error
	}
	done := make(chan result, 2)
	appendOne := func(leaf string) {
		coming.Add(-1)
		i, err := l.Append(ctx, []byte(leaf))
		done <- result{i, err}
	}
	go appendOne("first")
	select {
	case r := <-done:
		t.Fatalf("the first append was written (%d, %v) while another was announced", r.idx, r.err)
	case <-time.After(100 * time.Millisecond):
	}
	go appendOne("second")
	var got []uint64
	for range 2 {
		r := <-done
		if r.err != nil {
			t.Fatal(r.err)
		}
		got = append(got, r.idx)
	}
	slices.Sort(got)
	if got[0] != 1 || got[1] != 2 {
		t.Fatalf("indices %v, want [1 2]", got)
	}

	// An announced append that never comes holds a batch for the bound, and only for it.
	l.Expecting(coming.Load, 50*time.Millisecond)
	coming.Store(1)
	start := time.Now()
	if _, err := l.Append(ctx, []byte("bounded")); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d < 50*time.Millisecond {
		t.Fatalf("the append was written after %v, before the 50ms bound, with another announced", d)
	}
}

// TestMySQLEngine: a log table that already exists with another engine than InnoDB is refused.
func TestMySQLEngine(t *testing.T) {
	t.Parallel()
	db := mysqltest.DB(t)
	ctx := context.Background()
	if _, err := db.ExecContext(ctx, strings.Replace(mysqlSchema[4], "ENGINE=InnoDB", "ENGINE=MyISAM", 1)); err != nil {
		t.Fatal(err)
	}
	f := newPOSIXFixture(t) // for its key
	if l, err := OpenMySQL(ctx, db, Options{Signer: f.signer, Verifier: f.verifier}); err == nil || !strings.Contains(err.Error(), "table Subtree") {
		if err == nil {
			l.Close()
		}
		t.Fatalf("OpenMySQL with a MyISAM Subtree table = %v, want an error naming it", err)
	}
}
