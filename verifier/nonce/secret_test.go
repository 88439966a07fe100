package nonce

import (
	"bytes"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
	"testing"
)

// TestLoadOrCreateSecret: the first start writes a private file of SecretSize bytes and nothing
// else; the next start loads the same secret.
func TestLoadOrCreateSecret(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	s1, err := LoadOrCreateSecret(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(s1) != SecretSize || bytes.Equal(s1, make([]byte, SecretSize)) {
		t.Fatalf("secret %d bytes, all zero: %v", len(s1), bytes.Equal(s1, make([]byte, SecretSize)))
	}
	path := filepath.Join(dir, SecretFileName)
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("secret file mode %#o, want 0600", fi.Mode().Perm())
	}
	if di, _ := os.Stat(dir); di.Mode().Perm() != 0o700 {
		t.Errorf("data dir mode %#o, want 0700", di.Mode().Perm())
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 1 {
		t.Errorf("data dir holds %d entries, want only the secret file", len(entries))
	}
	if data, _ := os.ReadFile(path); !bytes.Equal(data, s1) {
		t.Error("the file does not hold the raw secret")
	}
	s2, err := LoadOrCreateSecret(dir)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(s1, s2) {
		t.Error("the second start loaded another secret")
	}
}

// TestLoadOrCreateSecretConcurrent: starts racing on an empty data dir all get one secret.
func TestLoadOrCreateSecretConcurrent(t *testing.T) {
	dir := t.TempDir()
	secrets := make([][]byte, 8)
	var wg sync.WaitGroup
	for i := range secrets {
		wg.Go(func() {
			s, err := LoadOrCreateSecret(dir)
			if err != nil {
				t.Error(err)
				return
			}
			secrets[i] = s
		})
	}
	wg.Wait()
	for _, s := range secrets[1:] {
		if !bytes.Equal(s, secrets[0]) {
			t.Fatal("racing starts got different secrets")
		}
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 1 {
		t.Errorf("data dir holds %d entries, want only the secret file", len(entries))
	}
}

// TestLoadSecretRejects: a file others may read, or of the wrong size, is refused, and
// LoadOrCreateSecret does not replace it.
func TestLoadSecretRejects(t *testing.T) {
	dir := t.TempDir()
	s, err := LoadOrCreateSecret(dir)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, SecretFileName)
	for _, mode := range []fs.FileMode{0o644, 0o640, 0o604} {
		if err := os.Chmod(path, mode); err != nil {
			t.Fatal(err)
		}
		if _, err := LoadOrCreateSecret(dir); !errors.Is(err, fs.ErrPermission) {
			t.Errorf("mode %#o: %v, want an error wrapping fs.ErrPermission", mode, err)
		}
	}
	if err := os.Chmod(path, 0o400); err != nil {
		t.Fatal(err)
	}
	if got, err := LoadSecret(path); err != nil || !bytes.Equal(got, s) {
		t.Errorf("mode 0400: %v", err)
	}

	for name, data := range map[string][]byte{
		"empty":    nil,
		"31 bytes": make([]byte, 31),
		"too long": make([]byte, maxSecretFileSize+1),
	} {
		p := filepath.Join(t.TempDir(), SecretFileName)
		if err := os.WriteFile(p, data, 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err := LoadOrCreateSecret(filepath.Dir(p)); err == nil {
			t.Errorf("%s: loaded", name)
		}
		if got, _ := os.ReadFile(p); !bytes.Equal(got, data) {
			t.Errorf("%s: the file was replaced", name)
		}
	}
	if _, err := LoadSecret(t.TempDir()); err == nil {
		t.Error("a directory loaded as a secret")
	}
}
