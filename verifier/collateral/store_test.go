package collateral_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/proofline/proofline/verifier/collateral"
)

// TestStores: both stores keep the last Put per URL, answer ErrNotStored for others, and are
// safe for concurrent use; the DirStore survives a reopen and never returns altered bytes.
func TestStores(t *testing.T) {
	ctx := context.Background()
	for name, open := range map[string]func(t *testing.T, dir string) collateral.Store{
		"memory": func(*testing.T, string) collateral.Store { return collateral.NewMemoryStore() },
		"dir": func(t *testing.T, dir string) collateral.Store {
			s, err := collateral.OpenDirStore(dir)
			if err != nil {
				t.Fatal(err)
			}
			return s
		},
	} {
		t.Run(name, func(t *testing.T) {
			s := open(t, t.TempDir())
			if _, err := s.Get(ctx, "https://a.example/x"); !errors.Is(err, collateral.ErrNotStored) {
				t.Fatalf("Get of nothing: %v, want ErrNotStored", err)
			}
			for _, v := range []string{"one", "two", "two"} {
				if err := s.Put(ctx, "https://a.example/x", []byte(v)); err != nil {
					t.Fatal(err)
				}
				if got, err := s.Get(ctx, "https://a.example/x"); err != nil || string(got) != v {
					t.Fatalf("Get = %q, %v; want %q", got, err, v)
				}
			}
			var wg sync.WaitGroup
			for i := range 16 {
				wg.Go(func() {
					u := fmt.Sprintf("https://a.example/%d", i%4)
					if err := s.Put(ctx, u, []byte(u)); err != nil {
						t.Error(err)
					}
					if got, err := s.Get(ctx, u); err != nil || string(got) != u {
						t.Errorf("%s: %q, %v", u, got, err)
					}
				})
			}
			wg.Wait()
			cancelled, cancel := context.WithCancel(ctx)
			cancel()
			if err := s.Put(cancelled, "https://a.example/y", nil); !errors.Is(err, context.Canceled) {
				t.Errorf("Put with a cancelled context: %v", err)
			}
		})
	}
}

func TestDirStoreTampering(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	s, err := collateral.OpenDirStore(dir)
	if err != nil {
		t.Fatal(err)
	}
	const u = "https://a.example/x"
	if err := s.Put(ctx, u, []byte("payload")); err != nil {
		t.Fatal(err)
	}
	s2, err := collateral.OpenDirStore(dir)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := s2.Get(ctx, u); err != nil || string(got) != "payload" {
		t.Fatalf("after reopening: %q, %v", got, err)
	}
	blobs, _ := filepath.Glob(filepath.Join(dir, "blobs", "*"))
	ptrs, _ := filepath.Glob(filepath.Join(dir, "urls", "*"))
	if len(blobs) != 1 || len(ptrs) != 1 {
		t.Fatalf("layout: blobs %v, pointers %v", blobs, ptrs)
	}
	if err := os.WriteFile(blobs[0], []byte("paylaod"), 0o644); err != nil {
		t.Fatal(err)
	}
	if got, err := s.Get(ctx, u); err == nil || errors.Is(err, collateral.ErrNotStored) {
		t.Fatalf("altered blob: %q, %v; want a corruption error", got, err)
	}
	// Putting the same bytes again repairs the blob.
	if err := s.Put(ctx, u, []byte("payload")); err != nil {
		t.Fatal(err)
	}
	if got, err := s.Get(ctx, u); err != nil || string(got) != "payload" {
		t.Fatalf("after repair: %q, %v", got, err)
	}
	if err := os.WriteFile(ptrs[0], []byte("not a digest\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Get(ctx, u); err == nil || errors.Is(err, collateral.ErrNotStored) {
		t.Fatalf("garbage pointer: %v, want an error", err)
	}
}
