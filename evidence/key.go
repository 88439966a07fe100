package evidence

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	_ "crypto/sha256" // ES256 hashes through crypto.SHA256, which must be linked in.
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"

	"github.com/proofline/proofline/internal/durable"
	"github.com/veraison/go-cose"
)

// KeyFileName is the signing key's file name in the data directory.
const KeyFileName = "signing-key.pem"

// maxKeyFileSize bounds what LoadKey reads.
const maxKeyFileSize = 64 << 10

// Key is an in-process ECDSA P-256 signing key (ES256). It implements Signer and is safe for
// concurrent use.
type Key struct {
	priv   *ecdsa.PrivateKey
	signer cose.Signer
	id     []byte
}

// GenerateKey returns a new random key.
func GenerateKey() (*Key, error) {
	priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("evidence: generating a signing key: %w", err)
	}
	k, err := newKey(priv)
	if err != nil {
		return nil, fmt.Errorf("evidence: signing key: %w", err)
	}
	return k, nil
}

func newKey(priv *ecdsa.PrivateKey) (*Key, error) {
	if priv.Curve != elliptic.P256() {
		return nil, errors.New("only ECDSA P-256 keys are supported in process (implement Signer for others)")
	}
	s, err := cose.NewSigner(cose.AlgorithmES256, priv)
	if err != nil {
		return nil, err
	}
	id, err := KeyID(&priv.PublicKey)
	if err != nil {
		return nil, err
	}
	return &Key{priv: priv, signer: s, id: id}, nil
}

// Algorithm returns ES256.
func (k *Key) Algorithm() cose.Algorithm { return cose.AlgorithmES256 }

// Public returns the *ecdsa.PublicKey.
func (k *Key) Public() crypto.PublicKey { return &k.priv.PublicKey }

// KeyID returns the key id: the SHA-256 of the public key's DER SubjectPublicKeyInfo.
func (k *Key) KeyID() []byte { return slices.Clone(k.id) }

// Sign signs the COSE Sig_structure with ECDSA P-256 over its SHA-256 (ES256).
func (k *Key) Sign(ctx context.Context, toBeSigned []byte) ([]byte, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	return k.signer.Sign(rand.Reader, toBeSigned)
}

// LoadKey reads a PKCS #8 "PRIVATE KEY" PEM file holding an ECDSA P-256 key. It refuses a file
// that group or others may access, with an error wrapping fs.ErrPermission.
func LoadKey(path string) (*Key, error) {
	data, err := durable.ReadPrivate(path, maxKeyFileSize)
	if err != nil {
		return nil, fmt.Errorf("evidence: signing key: %w", err)
	}
	k, err := parseKeyPEM(data)
	if err != nil {
		return nil, fmt.Errorf("evidence: signing key %s: %w", path, err)
	}
	return k, nil
}

func parseKeyPEM(data []byte) (*Key, error) {
	block, rest := pem.Decode(data)
	if block == nil || block.Type != "PRIVATE KEY" {
		return nil, errors.New(`want a PKCS #8 "PRIVATE KEY" PEM block`)
	}
	if len(bytes.TrimSpace(rest)) != 0 {
		return nil, errors.New("data after the PEM block")
	}
	parsed, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		return nil, err
	}
	priv, ok := parsed.(*ecdsa.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("%T: only ECDSA P-256 keys are supported in process (implement Signer for others)", parsed)
	}
	return newKey(priv)
}

// LoadOrCreateKey loads dir/signing-key.pem, or on first start generates a key there: PKCS #8
// PEM, mode 0600, written to a temporary file, synced and then linked into place, so the file
// is never seen partly written and two processes starting together end up with the same key.
// dir is created with mode 0700 if missing. The caller adds a new key to the key history.
func LoadOrCreateKey(dir string) (*Key, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("evidence: signing key: %w", err)
	}
	path := filepath.Join(dir, KeyFileName)
	k, err := LoadKey(path)
	if !errors.Is(err, fs.ErrNotExist) {
		return k, err
	}
	if k, err = GenerateKey(); err != nil {
		return nil, err
	}
	der, err := x509.MarshalPKCS8PrivateKey(k.priv)
	if err != nil {
		return nil, fmt.Errorf("evidence: signing key: %w", err)
	}
	err = durable.Create(path, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600)
	if errors.Is(err, fs.ErrExist) {
		return LoadKey(path) // another process created it first
	}
	if err != nil {
		return nil, fmt.Errorf("evidence: signing key: %w", err)
	}
	return k, nil
}
