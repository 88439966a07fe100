package durable

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
	"testing"
)

func TestCreate(t *testing.T) {
	p := filepath.Join(t.TempDir(), "secret")
	if err := Create(p, []byte("one"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := Create(p, []byte("two"), 0o600); !errors.Is(err, fs.ErrExist) {
		t.Fatalf("second Create = %v, want fs.ErrExist", err)
	}
	got, _ := os.ReadFile(p)
	fi, _ := os.Stat(p)
	if string(got) != "one" || fi.Mode().Perm() != 0o600 {
		t.Fatalf("content %q mode %v", got, fi.Mode())
	}
	entries, _ := os.ReadDir(filepath.Dir(p))
	if len(entries) != 1 {
		t.Fatalf("temporary files left behind: %v", entries)
	}
}

// Of several concurrent creators exactly one wins and the file is never torn.
func TestCreateRace(t *testing.T) {
	p := filepath.Join(t.TempDir(), "key")
	var wg sync.WaitGroup
	wins := make(chan string, 8)
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			data := string(rune('a'+i)) + "-content"
			if Create(p, []byte(data), 0o600) == nil {
				wins <- data
			}
		}()
	}
	wg.Wait()
	close(wins)
	var won []string
	for w := range wins {
		won = append(won, w)
	}
	got, _ := os.ReadFile(p)
	if len(won) != 1 || string(got) != won[0] {
		t.Fatalf("winners %v, file %q", won, got)
	}
}

func TestReplace(t *testing.T) {
	p := filepath.Join(t.TempDir(), "checkpoint")
	for _, s := range []string{"first", "second"} {
		if err := Replace(p, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
		if got, _ := os.ReadFile(p); string(got) != s {
			t.Fatalf("content %q, want %q", got, s)
		}
	}
}

// MkdirAll creates every missing directory with the mode asked for, and leaves existing ones
// (their mode and content) alone.
func TestMkdirAll(t *testing.T) {
	root := t.TempDir()
	if err := os.Chmod(root, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, "kept"), []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(root, "a", "b", "c")
	for range 2 { // the second call finds everything in place
		if err := MkdirAll(dir, 0o700); err != nil {
			t.Fatal(err)
		}
	}
	for _, d := range []string{"a", "a/b", "a/b/c"} {
		if fi, err := os.Stat(filepath.Join(root, d)); err != nil || !fi.IsDir() || fi.Mode().Perm() != 0o700 {
			t.Fatalf("%s: %v, %v; want a directory with mode 0700", d, fi, err)
		}
	}
	if fi, err := os.Stat(root); err != nil || fi.Mode().Perm() != 0o755 {
		t.Fatalf("the existing directory: %v, %v; want it untouched (mode 0755)", fi, err)
	}
	if got, err := os.ReadFile(filepath.Join(root, "kept")); err != nil || string(got) != "x" {
		t.Fatalf("a file in the existing directory: %q, %v", got, err)
	}
	if err := MkdirAll(filepath.Join(root, "kept", "d"), 0o700); err == nil {
		t.Fatal("MkdirAll through a regular file succeeded")
	}
}
