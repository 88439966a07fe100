package evidence

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
	"testing"
)

// TestLoadOrCreateKey: the first start writes a private PKCS #8 key file and nothing else; the
// next start loads the same key.
func TestLoadOrCreateKey(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	k1, err := LoadOrCreateKey(dir)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, KeyFileName)
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("key file mode %#o, want 0600", fi.Mode().Perm())
	}
	if di, _ := os.Stat(dir); di.Mode().Perm() != 0o700 {
		t.Errorf("data dir mode %#o, want 0700", di.Mode().Perm())
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 1 {
		t.Errorf("data dir holds %d entries, want only the key file", len(entries))
	}
	data, _ := os.ReadFile(path)
	block, _ := pem.Decode(data)
	if block == nil || block.Type != "PRIVATE KEY" {
		t.Fatalf("key file is not a PKCS #8 PEM block:\n%s", data)
	}
	if _, err := x509.ParsePKCS8PrivateKey(block.Bytes); err != nil {
		t.Fatal(err)
	}

	k2, err := LoadOrCreateKey(dir)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(k1.KeyID(), k2.KeyID()) {
		t.Errorf("second start loaded key %x, want %x", k2.KeyID(), k1.KeyID())
	}
	if want, _ := KeyID(k1.Public()); !bytes.Equal(k1.KeyID(), want) {
		t.Errorf("KeyID %x, want the SHA-256 of the SPKI %x", k1.KeyID(), want)
	}
}

// TestLoadOrCreateKeyConcurrent: starts racing on an empty data dir all end up with one key.
func TestLoadOrCreateKeyConcurrent(t *testing.T) {
	dir := t.TempDir()
	ids := make([][]byte, 8)
	var wg sync.WaitGroup
	for i := range ids {
		wg.Go(func() {
			k, err := LoadOrCreateKey(dir)
			if err != nil {
				t.Error(err)
				return
			}
			ids[i] = k.KeyID()
		})
	}
	wg.Wait()
	for _, id := range ids[1:] {
		if !bytes.Equal(id, ids[0]) {
			t.Fatalf("racing starts got different keys: %x, %x", ids[0], id)
		}
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 1 {
		t.Errorf("data dir holds %d entries, want only the key file", len(entries))
	}
}

// TestLoadKeyPermissions: a key file that group or others may read is refused, by LoadKey and
// by LoadOrCreateKey (which must not silently replace it either).
func TestLoadKeyPermissions(t *testing.T) {
	dir := t.TempDir()
	k, err := LoadOrCreateKey(dir)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, KeyFileName)
	for _, mode := range []fs.FileMode{0o644, 0o640, 0o604, 0o666} {
		if err := os.Chmod(path, mode); err != nil {
			t.Fatal(err)
		}
		if _, err := LoadKey(path); !errors.Is(err, fs.ErrPermission) {
			t.Fatalf("mode %#o: got %v, want an error wrapping fs.ErrPermission", mode, err)
		} else {
			t.Logf("mode %#o: %v", mode, err)
		}
		if _, err := LoadOrCreateKey(dir); !errors.Is(err, fs.ErrPermission) {
			t.Fatalf("LoadOrCreateKey, mode %#o: got %v", mode, err)
		}
	}
	if err := os.Chmod(path, 0o400); err != nil {
		t.Fatal(err)
	}
	k2, err := LoadKey(path)
	if err != nil {
		t.Fatalf("mode 0400: %v", err)
	}
	if !bytes.Equal(k.KeyID(), k2.KeyID()) {
		t.Error("the key file changed")
	}
}

// TestLoadKeyRejects: anything but one PKCS #8 ECDSA P-256 key is refused.
func TestLoadKeyRejects(t *testing.T) {
	p384, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	_, ed, _ := ed25519.GenerateKey(rand.Reader)
	pkcs8 := func(k any) []byte {
		der, err := x509.MarshalPKCS8PrivateKey(k)
		if err != nil {
			t.Fatal(err)
		}
		return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
	}
	good, err := os.ReadFile("testdata/test-key-a.pem")
	if err != nil {
		t.Fatal(err)
	}
	p256, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	sec1, _ := x509.MarshalECPrivateKey(p256)
	tests := map[string][]byte{
		"empty":            nil,
		"not PEM":          []byte("hello"),
		"SEC 1 EC key":     pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: sec1}),
		"P-384 key":        pkcs8(p384),
		"Ed25519 key":      pkcs8(ed),
		"two keys":         append(append([]byte{}, good...), good...),
		"trailing garbage": append(append([]byte{}, good...), "x"...),
		"bad DER":          pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: []byte{0x30, 0x00}}),
	}
	dir := t.TempDir()
	for name, data := range tests {
		path := filepath.Join(dir, "key.pem")
		if err := os.WriteFile(path, data, 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err := LoadKey(path); err == nil {
			t.Errorf("%s: loaded", name)
		} else {
			t.Logf("%s: %v", name, err)
		}
	}
	if _, err := LoadKey(dir); err == nil {
		t.Error("a directory: loaded")
	}
	if _, err := LoadKey(filepath.Join(dir, "missing.pem")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("missing file: got %v, want fs.ErrNotExist", err)
	}
}
