package log

import (
	"context"
	"sync"
	"testing"
	"time"
)

// TestCheckpointConcurrent: Checkpoint callers racing each other while the log grows never see
// a checkpoint another caller has just served as a rollback (a false I6).
func TestCheckpointConcurrent(t *testing.T) {
	f := newPOSIXFixture(t)
	l := f.openLog(t, Options{}) // a checkpoint every 100 ms
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	wg.Go(func() {
		for ctx.Err() == nil {
			if _, err := l.Append(ctx, randomLeaf(1, 100)); err != nil && ctx.Err() == nil {
				t.Errorf("Append: %v", err)
				return
			}
		}
	})
	for range 8 {
		wg.Go(func() {
			for ctx.Err() == nil {
				if _, err := l.Checkpoint(ctx); err != nil && ctx.Err() == nil {
					t.Errorf("Checkpoint: %v", err)
					return
				}
			}
		})
	}
	wg.Wait()
}

// servingReader runs serve once, just before the first ReadServedCheckpoint.
type servingReader struct {
	Reader
	once  sync.Once
	serve func()
}

func (r *servingReader) ReadServedCheckpoint(ctx context.Context) ([]byte, error) {
	r.once.Do(r.serve)
	return r.Reader.ReadServedCheckpoint(ctx)
}

// TestFsckLive: a checkpoint served while Fsck runs on a live log is not a false I6.
func TestFsckLive(t *testing.T) {
	f := newPOSIXFixture(t)
	l := f.openLog(t, Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	appendConcurrently(t, l, 10, 2)
	if _, err := l.WaitCheckpoint(ctx, 10); err != nil {
		t.Fatal(err)
	}
	r := &servingReader{Reader: f.reader, serve: func() {
		if _, err := l.Append(ctx, []byte("appended during fsck")); err != nil {
			t.Errorf("Append: %v", err)
		}
		if _, err := l.WaitCheckpoint(ctx, 11); err != nil {
			t.Errorf("WaitCheckpoint: %v", err)
		}
	}}
	rep, err := Fsck(ctx, r, f.verifier, nil)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Checkpoint.Size != 11 || rep.Earlier != 1 {
		t.Fatalf("Fsck report %+v, want the checkpoint of size 11 and the served floor", rep)
	}
}
