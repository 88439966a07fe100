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
