package nonce

import (
	"context"
	"crypto/rand"
	"errors"
	"sync"
	"testing"

	"github.com/proofline/proofline/attest"
)

// TestGroupCommit: many concurrent MarkUsed calls on one handle (which share group commits),
// three per nonce, record every nonce exactly once: one call per nonce succeeds, the others get
// ErrReplayed, and every nonce is durably recorded (another handle sees it as used).
func TestGroupCommit(t *testing.T) {
	forEach(t, func(t *testing.T, open func(t *testing.T) *SQLStore) {
		s := open(t)
		const nonces, callsPer = 100, 3
		ns := make([][]byte, nonces)
		for i := range ns {
			ns[i] = make([]byte, attest.NonceSize)
			rand.Read(ns[i])
		}
		expires := t0.Add(ttl)
		start := make(chan struct{})
		var (
			wg   sync.WaitGroup
			mu   sync.Mutex
			wins = make([]int, nonces)
		)
		for i := range nonces * callsPer {
			wg.Go(func() {
				<-start
				err := s.MarkUsed(ctx, ns[i%nonces], expires)
				mu.Lock()
				defer mu.Unlock()
				switch {
				case err == nil:
					wins[i%nonces]++
				case !errors.Is(err, ErrReplayed):
					t.Errorf("nonce %d: %v, want nil or ErrReplayed", i%nonces, err)
				}
			})
		}
		close(start)
		wg.Wait()
		for i, w := range wins {
			if w != 1 {
				t.Errorf("nonce %d: %d of %d calls succeeded, want exactly 1", i, w, callsPer)
			}
		}
		other := open(t)
		for i, n := range ns {
			if err := other.MarkUsed(ctx, n, expires); !errors.Is(err, ErrReplayed) {
				t.Errorf("nonce %d on another handle: %v, want ErrReplayed (recorded)", i, err)
			}
		}
		if s.leading || len(s.queue) != 0 {
			t.Errorf("after the calls: leading %v, %d queued; want an idle store", s.leading, len(s.queue))
		}
	})
}

// TestGroupCommitFailure: when the database fails, every concurrent call fails with its error —
// none reports success or ErrReplayed — and the store stays usable by no one silently.
func TestGroupCommitFailure(t *testing.T) {
	path := t.TempDir() + "/" + DBFileName
	s, err := OpenSQLite(context.Background(), path)
	if err != nil {
		t.Fatal(err)
	}
	s.db.Close() // every statement now fails
	var wg sync.WaitGroup
	errs := make(chan error, 64)
	for range 64 {
		wg.Go(func() {
			n := make([]byte, attest.NonceSize)
			rand.Read(n)
			errs <- s.MarkUsed(ctx, n, t0.Add(ttl))
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err == nil || errors.Is(err, ErrReplayed) {
			t.Fatalf("MarkUsed on a closed database: %v, want a store error", err)
		}
	}
}
