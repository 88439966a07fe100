package log

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strings"

	"github.com/proofline/proofline/internal/durable"
	"golang.org/x/mod/sumdb/note"
)

// LoadOrGenerateKey returns the Ed25519 note signer stored at path, and its verifier. When path
// does not exist it generates a key named origin, writes it to path (mode 0600) and its verifier
// key to PublicKeyPath(path) (mode 0644), both durably, before returning. An existing key whose name is
// not origin is an error (origin "" accepts any name).
func LoadOrGenerateKey(path, origin string) (note.Signer, note.Verifier, error) {
	raw, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		if origin == "" {
			return nil, nil, errors.New("log: no note key at " + path + " and no origin to generate one: set Options.Origin, e.g. \"proofline.example/log\"")
		}
		skey, vkey, err := note.GenerateKey(rand.Reader, origin)
		if err != nil {
			return nil, nil, fmt.Errorf("log: generating note key: %w", err)
		}
		// The public half first: a crash between the two leaves no orphan private key.
		if err := durable.Replace(PublicKeyPath(path), []byte(vkey+"\n"), 0o644); err != nil {
			return nil, nil, fmt.Errorf("log: writing the note verifier key: %w", err)
		}
		if err := durable.Replace(path, []byte(skey+"\n"), 0o600); err != nil {
			return nil, nil, fmt.Errorf("log: writing the note key: %w", err)
		}
		raw = []byte(skey)
	} else if err != nil {
		return nil, nil, fmt.Errorf("log: reading note key: %w", err)
	}
	s, v, err := parseSignerKey(strings.TrimSpace(string(raw)))
	if err != nil {
		return nil, nil, fmt.Errorf("log: note key %s: %w", path, err)
	}
	if origin != "" && s.Name() != origin {
		return nil, nil, fmt.Errorf("log: note key %s is named %q, but Options.Origin is %q", path, s.Name(), origin)
	}
	return s, v, nil
}

// parseSignerKey parses a note private key (PRIVATE+KEY+name+hash+base64(0x01‖seed)) and derives
// its verifier, so the verifier can never disagree with the signer.
func parseSignerKey(skey string) (note.Signer, note.Verifier, error) {
	s, err := note.NewSigner(skey)
	if err != nil {
		return nil, nil, err
	}
	parts := strings.SplitN(skey, "+", 5) // PRIVATE, KEY, name, hash, key; NewSigner checked the shape
	key, err := base64.StdEncoding.DecodeString(parts[4])
	if err != nil || len(key) != 1+ed25519.SeedSize || key[0] != 1 {
		return nil, nil, errors.New("not an Ed25519 note key")
	}
	pub := ed25519.NewKeyFromSeed(key[1:]).Public().(ed25519.PublicKey)
	vkey, err := note.NewEd25519VerifierKey(s.Name(), pub)
	if err != nil {
		return nil, nil, err
	}
	v, err := note.NewVerifier(vkey)
	if err != nil {
		return nil, nil, err
	}
	if v.KeyHash() != s.KeyHash() {
		return nil, nil, errors.New("derived verifier does not match the signer")
	}
	return s, v, nil
}

// PublicKeyPath is where LoadOrGenerateKey writes the verifier key of the key at path: "note.key"
// → "note.pub", any other name → name + ".pub".
func PublicKeyPath(path string) string {
	if strings.HasSuffix(path, ".key") {
		return strings.TrimSuffix(path, ".key") + ".pub"
	}
	return path + ".pub"
}
