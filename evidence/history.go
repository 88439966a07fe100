package evidence

import (
	"bytes"
	"crypto"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"time"

	"github.com/proofline/proofline/internal/durable"
	"github.com/veraison/go-cose"
)

const timeFormat = time.RFC3339

// maxHistorySize bounds what LoadKeyHistory reads.
const maxHistorySize = 1 << 20

// KeyInfo is one signing key in the key history and its validity period [NotBefore, NotAfter).
type KeyInfo struct {
	// ID is the key id: the SHA-256 of Public's DER SubjectPublicKeyInfo.
	ID        []byte
	Algorithm cose.Algorithm
	Public    crypto.PublicKey
	NotBefore time.Time
	// NotAfter is the end of the period, exclusive; zero while the key is current.
	NotAfter time.Time
}

// ValidAt reports whether t is inside the key's validity period.
func (k KeyInfo) ValidAt(t time.Time) bool {
	return !t.Before(k.NotBefore) && (k.NotAfter.IsZero() || t.Before(k.NotAfter))
}

func (k KeyInfo) period() string {
	if k.NotAfter.IsZero() {
		return fmt.Sprintf("valid from %s", k.NotBefore.Format(timeFormat))
	}
	return fmt.Sprintf("valid from %s until %s", k.NotBefore.Format(timeFormat), k.NotAfter.Format(timeFormat))
}

// KeyHistory is the published list of every key that ever signed records, with its validity
// period, so that records signed before a rotation stay verifiable. Every key id appears once;
// periods of different keys may overlap (several verifier replicas, each with its own key).
// Times have second precision, like record times.
//
// The zero value is an empty history. Lookup and Open may run concurrently; Add, Rotate and
// UnmarshalJSON must not run concurrently with any other method.
type KeyHistory struct {
	keys []historyKey
}

type historyKey struct {
	info     KeyInfo
	verifier cose.Verifier
}

// Add adds s's public key, valid from notBefore on with no end.
func (h *KeyHistory) Add(s Signer, notBefore time.Time) error {
	k, err := newHistoryKey(KeyInfo{Algorithm: s.Algorithm(), Public: s.Public(), NotBefore: notBefore})
	if err != nil {
		return err
	}
	return h.add(k)
}

// Rotate ends the period of every current key at `at` and adds s's public key, valid from `at`
// on. Records timed before `at` remain verifiable with the old keys; a record signed by an old
// key and timed at or after `at` is rejected (ErrKeyNotValidAt), so switch signers before `at`
// arrives, or rotate at the moment of the switch.
func (h *KeyHistory) Rotate(s Signer, at time.Time) error {
	k, err := newHistoryKey(KeyInfo{Algorithm: s.Algorithm(), Public: s.Public(), NotBefore: at})
	if err != nil {
		return err
	}
	var current []int
	for i, old := range h.keys {
		if old.info.NotAfter.IsZero() {
			if !at.After(old.info.NotBefore) {
				return fmt.Errorf("evidence: key history: rotation at %s, but key %x is valid only from %s", at.Format(timeFormat), old.info.ID, old.info.NotBefore.Format(timeFormat))
			}
			current = append(current, i)
		}
	}
	if len(current) == 0 {
		return errors.New("evidence: key history: no current key to rotate from; use Add")
	}
	if err := h.add(k); err != nil {
		return err
	}
	for _, i := range current {
		h.keys[i].info.NotAfter = k.info.NotBefore
	}
	return nil
}

func (h *KeyHistory) add(k historyKey) error {
	if _, ok := h.lookup(k.info.ID); ok {
		return fmt.Errorf("evidence: key history: key %x is already listed", k.info.ID)
	}
	h.keys = append(h.keys, k)
	return nil
}

// Lookup returns the key with the given id.
func (h *KeyHistory) Lookup(kid []byte) (KeyInfo, bool) {
	k, ok := h.lookup(kid)
	return k.clone(), ok
}

func (h *KeyHistory) lookup(kid []byte) (historyKey, bool) {
	if h == nil {
		return historyKey{}, false
	}
	for _, k := range h.keys {
		if bytes.Equal(k.info.ID, kid) {
			return k, true
		}
	}
	return historyKey{}, false
}

// Keys returns the keys in the order they were added.
func (h *KeyHistory) Keys() []KeyInfo {
	var ks []KeyInfo
	for _, k := range h.keys {
		ks = append(ks, k.clone())
	}
	return ks
}

// clone returns a copy of the key's info that shares no memory with the history.
func (k historyKey) clone() KeyInfo {
	info := k.info
	info.ID = slices.Clone(info.ID)
	return info
}

// newHistoryKey validates a key and its period, fills in its id and prepares its verifier.
func newHistoryKey(info KeyInfo) (historyKey, error) {
	if err := CheckCOSEKey(info.Algorithm, info.Public); err != nil {
		return historyKey{}, fmt.Errorf("evidence: key history: %w", err)
	}
	id, err := KeyID(info.Public)
	if err != nil {
		return historyKey{}, err
	}
	if info.ID != nil && !bytes.Equal(info.ID, id) {
		return historyKey{}, fmt.Errorf("evidence: key history: kid %x is not the SHA-256 of the public key (%x)", info.ID, id)
	}
	info.ID = id
	if err := checkTime("not_before", info.NotBefore); err != nil {
		return historyKey{}, fmt.Errorf("evidence: key history: key %x: %w", id, err)
	}
	info.NotBefore = info.NotBefore.UTC()
	if !info.NotAfter.IsZero() {
		if err := checkTime("not_after", info.NotAfter); err != nil {
			return historyKey{}, fmt.Errorf("evidence: key history: key %x: %w", id, err)
		}
		if !info.NotAfter.After(info.NotBefore) {
			return historyKey{}, fmt.Errorf("evidence: key history: key %x: not_after is not after not_before", id)
		}
		info.NotAfter = info.NotAfter.UTC()
	}
	v, err := cose.NewVerifier(info.Algorithm, info.Public)
	if err != nil {
		return historyKey{}, fmt.Errorf("evidence: key history: key %x: %w", id, err)
	}
	return historyKey{info: info, verifier: v}, nil
}

// historyJSON is the published format (README.md, "Key history").
type historyJSON struct {
	Keys []keyJSON `json:"keys"`
}

type keyJSON struct {
	KID       string     `json:"kid"`        // lower-case hex
	Alg       string     `json:"alg"`        // COSE algorithm name: ES256, ES384, ES512, EdDSA
	PublicKey []byte     `json:"public_key"` // DER SubjectPublicKeyInfo, standard base64
	NotBefore time.Time  `json:"not_before"` // RFC 3339, UTC, whole seconds
	NotAfter  *time.Time `json:"not_after,omitempty"`
}

var algorithms = []cose.Algorithm{cose.AlgorithmES256, cose.AlgorithmES384, cose.AlgorithmES512, cose.AlgorithmEdDSA}

// MarshalJSON encodes the history in its published format.
func (h *KeyHistory) MarshalJSON() ([]byte, error) {
	out := historyJSON{Keys: []keyJSON{}}
	for _, k := range h.keys {
		der, err := x509.MarshalPKIXPublicKey(k.info.Public)
		if err != nil {
			return nil, err
		}
		kj := keyJSON{KID: hex.EncodeToString(k.info.ID), Alg: k.info.Algorithm.String(), PublicKey: der, NotBefore: k.info.NotBefore}
		if !k.info.NotAfter.IsZero() {
			kj.NotAfter = &k.info.NotAfter
		}
		out.Keys = append(out.Keys, kj)
	}
	return json.Marshal(out)
}

// UnmarshalJSON decodes and validates a history: unknown fields, unknown algorithms, a kid that
// is not its key's, a bad period or a repeated key are errors.
func (h *KeyHistory) UnmarshalJSON(data []byte) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	var in historyJSON
	if err := dec.Decode(&in); err != nil {
		return fmt.Errorf("evidence: key history: %w", err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return errors.New("evidence: key history: data after the JSON object")
	}
	var out KeyHistory
	for _, kj := range in.Keys {
		ai := slices.IndexFunc(algorithms, func(a cose.Algorithm) bool { return a.String() == kj.Alg })
		if ai < 0 {
			return fmt.Errorf("evidence: key history: key %s: unknown algorithm %q", kj.KID, kj.Alg)
		}
		pub, err := x509.ParsePKIXPublicKey(kj.PublicKey)
		if err != nil {
			return fmt.Errorf("evidence: key history: key %s: %w", kj.KID, err)
		}
		kid, err := hex.DecodeString(kj.KID)
		if err != nil || hex.EncodeToString(kid) != kj.KID {
			return fmt.Errorf("evidence: key history: kid %q is not lower-case hex", kj.KID)
		}
		info := KeyInfo{ID: kid, Algorithm: algorithms[ai], Public: pub, NotBefore: kj.NotBefore}
		if kj.NotAfter != nil {
			if kj.NotAfter.IsZero() {
				return fmt.Errorf("evidence: key history: key %s: zero not_after", kj.KID)
			}
			info.NotAfter = *kj.NotAfter
		}
		k, err := newHistoryKey(info)
		if err != nil {
			return err
		}
		if der, _ := x509.MarshalPKIXPublicKey(pub); !bytes.Equal(der, kj.PublicKey) {
			return fmt.Errorf("evidence: key history: key %s: public key is not in canonical DER", kj.KID)
		}
		if err := out.add(k); err != nil {
			return err
		}
	}
	*h = out
	return nil
}

// LoadKeyHistory reads a key history file.
func LoadKeyHistory(path string) (*KeyHistory, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("evidence: key history: %w", err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxHistorySize+1))
	if err != nil {
		return nil, fmt.Errorf("evidence: key history: %w", err)
	}
	if len(data) > maxHistorySize {
		return nil, fmt.Errorf("evidence: key history %s: larger than %d bytes", path, maxHistorySize)
	}
	var h KeyHistory
	if err := h.UnmarshalJSON(data); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return &h, nil
}

// Save writes the history to path atomically (mode 0644: it is public), replacing the file.
func (h *KeyHistory) Save(path string) error {
	data, err := h.MarshalJSON()
	if err != nil {
		return fmt.Errorf("evidence: key history: %w", err)
	}
	var buf bytes.Buffer
	if err := json.Indent(&buf, data, "", "  "); err != nil {
		return fmt.Errorf("evidence: key history: %w", err)
	}
	buf.WriteByte('\n')
	if err := durable.Replace(path, buf.Bytes(), 0o644); err != nil {
		return fmt.Errorf("evidence: key history: %w", err)
	}
	return nil
}
