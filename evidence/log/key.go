package log

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/proofline/proofline/internal/durable"
	"golang.org/x/mod/sumdb/note"
)

// LoadOrGenerateKey returns the Ed25519 note signer stored at path, and its verifier. When path
// does not exist it generates a key named origin and writes it to path (mode 0600). An existing
// key whose name is not origin is an error (origin "" accepts any name).
//
// Concurrent first calls, also from replicas sharing path, all return the one key that was
// stored: the key file is created, never replaced, and a caller that loses the race loads the
// winner's. The verifier key at PublicKeyPath(path) (mode 0644, for auditors) is derived from the
// stored key and written after it, when missing; one that is not the stored key's is an error,
// as is a verifier key without its key (the key was lost: restore it rather than replace it).
// The files it writes, or loses the race to write, are durable before it returns.
func LoadOrGenerateKey(path, origin string) (note.Signer, note.Verifier, error) {
	pubPath := PublicKeyPath(path)
	raw, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		raw, err = generateKey(path, pubPath, origin)
	} else if err != nil {
		err = fmt.Errorf("log: reading note key: %w", err)
	}
	if err != nil {
		return nil, nil, err
	}
	s, v, vkey, err := parseSignerKey(strings.TrimSpace(string(raw)))
	if err != nil {
		return nil, nil, fmt.Errorf("log: note key %s: %w", path, err)
	}
	if origin != "" && s.Name() != origin {
		return nil, nil, fmt.Errorf("log: note key %s is named %q, but Options.Origin is %q", path, s.Name(), origin)
	}
	if err := ensurePublicKey(pubPath, path, vkey); err != nil {
		return nil, nil, err
	}
	return s, v, nil
}

// generateKey stores a new key at path unless one appears there meanwhile, and returns the
// stored key's bytes.
func generateKey(path, pubPath, origin string) ([]byte, error) {
	// The key is always written before its verifier key, so a verifier key without a key means
	// the key was lost — unless a concurrent caller created both since path was read.
	if _, err := os.Stat(pubPath); err == nil {
		raw, err := os.ReadFile(path)
		switch {
		case errors.Is(err, fs.ErrNotExist):
			return nil, fmt.Errorf("log: the note verifier key %s exists but its note key %s does not: restore the key (or, if no log was ever signed with it, delete %s)", pubPath, path, pubPath)
		case err != nil:
			return nil, fmt.Errorf("log: reading note key: %w", err)
		}
		return raw, nil
	} else if !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("log: %w", err)
	}
	if origin == "" {
		return nil, errors.New("log: no note key at " + path + " and no origin to generate one: set Options.Origin, e.g. \"proofline.example/log\"")
	}
	skey, _, err := note.GenerateKey(rand.Reader, origin)
	if err != nil {
		return nil, fmt.Errorf("log: generating note key: %w", err)
	}
	switch err := durable.Create(path, []byte(skey+"\n"), 0o600); {
	case errors.Is(err, fs.ErrExist):
		// Another caller's key won; Create never leaves a torn file, but its creator may not
		// have synced the directory yet.
		raw, err := os.ReadFile(path)
		if err == nil {
			err = durable.SyncDir(filepath.Dir(path))
		}
		if err != nil {
			return nil, fmt.Errorf("log: reading note key: %w", err)
		}
		return raw, nil
	case err != nil:
		return nil, fmt.Errorf("log: writing the note key: %w", err)
	}
	return []byte(skey), nil
}

// ensurePublicKey writes vkey, the verifier key of the key at path, to pubPath when missing, and
// checks that a stored one is vkey.
func ensurePublicKey(pubPath, path, vkey string) error {
	raw, err := os.ReadFile(pubPath)
	if errors.Is(err, fs.ErrNotExist) {
		err = durable.Create(pubPath, []byte(vkey+"\n"), 0o644)
		if err == nil {
			return nil
		}
		if errors.Is(err, fs.ErrExist) { // a concurrent caller wrote it, and may not have synced it yet
			if raw, err = os.ReadFile(pubPath); err == nil {
				err = durable.SyncDir(filepath.Dir(pubPath))
			}
		}
	}
	if err != nil {
		return fmt.Errorf("log: the note verifier key: %w", err)
	}
	if strings.TrimSpace(string(raw)) != vkey {
		return fmt.Errorf("log: the note verifier key %s is not the verifier key of %s (%s): restore the matching pair", pubPath, path, vkey)
	}
	return nil
}

// parseSignerKey parses a note private key (PRIVATE+KEY+name+hash+base64(0x01‖seed)) and derives
// its verifier and verifier key, so the verifier can never disagree with the signer.
func parseSignerKey(skey string) (note.Signer, note.Verifier, string, error) {
	s, err := note.NewSigner(skey)
	if err != nil {
		return nil, nil, "", err
	}
	parts := strings.SplitN(skey, "+", 5) // PRIVATE, KEY, name, hash, key; NewSigner checked the shape
	key, err := base64.StdEncoding.DecodeString(parts[4])
	if err != nil || len(key) != 1+ed25519.SeedSize || key[0] != 1 {
		return nil, nil, "", errors.New("not an Ed25519 note key")
	}
	pub := ed25519.NewKeyFromSeed(key[1:]).Public().(ed25519.PublicKey)
	vkey, err := note.NewEd25519VerifierKey(s.Name(), pub)
	if err != nil {
		return nil, nil, "", err
	}
	v, err := note.NewVerifier(vkey)
	if err != nil {
		return nil, nil, "", err
	}
	if v.KeyHash() != s.KeyHash() {
		return nil, nil, "", errors.New("derived verifier does not match the signer")
	}
	return s, v, vkey, nil
}

// PublicKeyPath is where LoadOrGenerateKey writes the verifier key of the key at path: "note.key"
// → "note.pub", any other name → name + ".pub".
func PublicKeyPath(path string) string {
	if strings.HasSuffix(path, ".key") {
		return strings.TrimSuffix(path, ".key") + ".pub"
	}
	return path + ".pub"
}
