package agent

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"

	"github.com/proofline/proofline/internal/durable"
)

// maxKeyFile bounds the agent's key file.
const maxKeyFile = 64 << 10

// LoadOrCreateKey reads the agent's ECDSA P-256 key at path (PKCS #8 PEM, which must be private
// to its owner), or creates it with mode 0600, never replacing a file another process created
// meanwhile.
func LoadOrCreateKey(path string, log *slog.Logger) (*ecdsa.PrivateKey, error) {
	for range 2 {
		data, err := durable.ReadPrivate(path, maxKeyFile)
		if err == nil {
			return parseKey(path, data)
		}
		if !errors.Is(err, fs.ErrNotExist) {
			return nil, err
		}
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return nil, err
		}
		der, err := x509.MarshalPKCS8PrivateKey(k)
		if err != nil {
			return nil, err
		}
		err = durable.Create(path, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600)
		if err == nil {
			if log != nil {
				log.Info("created the agent key", "path", path, "public_key_sha256", PublicKeyDigest(&k.PublicKey))
			}
			return k, nil
		}
		if !errors.Is(err, fs.ErrExist) {
			return nil, fmt.Errorf("creating %s: %w", path, err)
		}
	}
	return nil, fmt.Errorf("%s keeps appearing and disappearing", path)
}

func parseKey(path string, data []byte) (*ecdsa.PrivateKey, error) {
	block, _ := pem.Decode(data)
	if block == nil || block.Type != "PRIVATE KEY" {
		return nil, fmt.Errorf("%s is not a PKCS#8 PEM private key; remove it to create a new key, or point elsewhere", path)
	}
	k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	ek, ok := k.(*ecdsa.PrivateKey)
	if !ok || ek.Curve != elliptic.P256() {
		return nil, fmt.Errorf("%s is not an ECDSA P-256 key; remove it to create a new key, or point elsewhere", path)
	}
	return ek, nil
}

// PublicKeyDigest is the lower-case hex SHA-256 of a public key's PKIX DER: what logs carry
// instead of the key.
func PublicKeyDigest(pub *ecdsa.PublicKey) string {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return ""
	}
	return digest(der)
}

func digest(b []byte) string {
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}
