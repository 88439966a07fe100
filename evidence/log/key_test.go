package log

import (
	"crypto/rand"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"golang.org/x/mod/sumdb/note"
)

// TestLoadOrGenerateKeyConcurrent: replicas starting at once on a shared key path all get the
// one key that was stored, and note.pub is its verifier key.
func TestLoadOrGenerateKeyConcurrent(t *testing.T) {
	path := filepath.Join(t.TempDir(), "note.key")
	var wg sync.WaitGroup
	vs := make([]note.Verifier, 8)
	for i := range vs {
		wg.Go(func() {
			_, v, err := LoadOrGenerateKey(path, testOrigin)
			if err != nil {
				t.Errorf("LoadOrGenerateKey: %v", err)
			}
			vs[i] = v
		})
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	_, stored, err := LoadOrGenerateKey(path, "")
	if err != nil {
		t.Fatal(err)
	}
	for i, v := range vs {
		if v.KeyHash() != stored.KeyHash() {
			t.Errorf("caller %d got key %08x, but %08x is stored", i, v.KeyHash(), stored.KeyHash())
		}
	}
	pub, err := os.ReadFile(PublicKeyPath(path))
	if err != nil {
		t.Fatal(err)
	}
	if v, err := note.NewVerifier(strings.TrimSpace(string(pub))); err != nil || v.KeyHash() != stored.KeyHash() {
		t.Fatalf("note.pub %q is not the verifier key of note.key (%v)", pub, err)
	}
}

// TestLoadOrGenerateKeyPub: a missing note.pub is derived from note.key; one of another key, or
// one without its note.key, is refused.
func TestLoadOrGenerateKeyPub(t *testing.T) {
	dir := t.TempDir()
	path, pubPath := filepath.Join(dir, "note.key"), filepath.Join(dir, "note.pub")
	_, v, err := LoadOrGenerateKey(path, testOrigin)
	if err != nil {
		t.Fatal(err)
	}
	want, err := os.ReadFile(pubPath)
	if err != nil {
		t.Fatal(err)
	}
	os.Remove(pubPath)
	if _, v2, err := LoadOrGenerateKey(path, ""); err != nil || v2.KeyHash() != v.KeyHash() {
		t.Fatalf("with note.pub missing: %v", err)
	}
	if got, err := os.ReadFile(pubPath); err != nil || string(got) != string(want) {
		t.Fatalf("note.pub rewritten as %q (%v), want %q", got, err, want)
	}

	_, other, err := note.GenerateKey(rand.Reader, testOrigin)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(pubPath, []byte(other+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, _, err := LoadOrGenerateKey(path, ""); err == nil || !strings.Contains(err.Error(), pubPath) {
		t.Fatalf("with note.pub of another key: %v, want an error naming it", err)
	}

	os.Remove(path)
	if _, _, err := LoadOrGenerateKey(path, testOrigin); err == nil {
		t.Fatal("with note.pub but no note.key, a new key was generated")
	}
	if _, err := os.Stat(path); err == nil {
		t.Fatal("a note.key was written beside a note.pub of another key")
	}
}
