package nonce

import (
	"crypto/rand"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/proofline/proofline/internal/durable"
)

// SecretFileName is the secret's file name in the data directory.
const SecretFileName = "nonce-secret"

// maxSecretFileSize bounds what LoadSecret reads.
const maxSecretFileSize = 4 << 10

// LoadSecret reads a secret file: the raw secret bytes, at least SecretSize of them. It refuses a
// file that group or others may access, with an error wrapping fs.ErrPermission.
func LoadSecret(path string) ([]byte, error) {
	secret, err := durable.ReadPrivate(path, maxSecretFileSize)
	if err != nil {
		return nil, fmt.Errorf("nonce: secret: %w", err)
	}
	if len(secret) < SecretSize || len(secret) > maxSecretFileSize {
		return nil, fmt.Errorf("nonce: secret %s holds %d bytes, want between %d and %d raw random bytes", path, len(secret), SecretSize, maxSecretFileSize)
	}
	return secret, nil
}

// LoadOrCreateSecret loads dir/nonce-secret, or on first start creates it with SecretSize
// random bytes: mode 0600, written to a temporary file, synced and then linked into place, so
// the file is never seen partly written and processes starting together end up with the same
// secret. dir is created with mode 0700 if missing. This is for a single verifier; replicas
// share a secret from configuration (see the package documentation).
func LoadOrCreateSecret(dir string) ([]byte, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("nonce: secret: %w", err)
	}
	path := filepath.Join(dir, SecretFileName)
	secret, err := LoadSecret(path)
	if !errors.Is(err, fs.ErrNotExist) {
		return secret, err
	}
	secret = make([]byte, SecretSize)
	rand.Read(secret) // never fails (crypto/rand crashes the program instead)
	err = durable.Create(path, secret, 0o600)
	if errors.Is(err, fs.ErrExist) {
		return LoadSecret(path) // another process created it first
	}
	if err != nil {
		return nil, fmt.Errorf("nonce: secret: %w", err)
	}
	return secret, nil
}
