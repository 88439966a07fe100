package evidence

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/veraison/go-cose"
)

// TestRotation: after a rotation, published and reloaded, records signed before it still open
// with the old key, new records open with the new key, and each key is refused outside its
// period.
func TestRotation(t *testing.T) {
	oldKey, newKey := testKey(t, "test-key-a.pem"), testKey(t, "test-key-b.pem")
	var h KeyHistory
	if err := h.Add(oldKey, t0); err != nil {
		t.Fatal(err)
	}
	at := func(k *Key, d time.Duration) []byte {
		r := testRecords()[KindAttestation]
		r.Time = t0.Add(d)
		return mustSign(t, r, k)
	}
	beforeRotation := at(oldKey, time.Hour)
	rotation := t0.Add(2 * time.Hour)
	if err := h.Rotate(newKey, rotation); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "key-history.json")
	if err := h.Save(path); err != nil {
		t.Fatal(err)
	}
	published, err := LoadKeyHistory(path)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(published.Keys(), h.Keys()) {
		t.Fatalf("reloaded history differs:\n%+v\n%+v", published.Keys(), h.Keys())
	}

	tests := []struct {
		name string
		data []byte
		key  *Key
		want error
	}{
		{"old key before the rotation", beforeRotation, oldKey, nil},
		{"old key in the last second of its period", at(oldKey, 2*time.Hour-time.Second), oldKey, nil},
		{"new key at the rotation", at(newKey, 2*time.Hour), newKey, nil},
		{"new key later", at(newKey, 1000*time.Hour), newKey, nil},
		{"old key at the rotation", at(oldKey, 2*time.Hour), nil, ErrKeyNotValidAt},
		{"new key before the rotation", at(newKey, time.Hour), nil, ErrKeyNotValidAt},
		{"old key before its period", at(oldKey, -time.Second), nil, ErrKeyNotValidAt},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, info, err := Open(tt.data, published)
			if !errors.Is(err, tt.want) {
				t.Fatalf("got %v, want %v", err, tt.want)
			}
			if tt.key != nil && !bytes.Equal(info.ID, tt.key.KeyID()) {
				t.Errorf("opened with key %x, want %x", info.ID, tt.key.KeyID())
			}
		})
	}
}

// TestKeyHistoryFile: the published format, field by field, and the file's mode.
func TestKeyHistoryFile(t *testing.T) {
	oldKey, newKey := testKey(t, "test-key-a.pem"), testKey(t, "test-key-b.pem")
	var h KeyHistory
	if err := h.Add(oldKey, t0); err != nil {
		t.Fatal(err)
	}
	if err := h.Rotate(newKey, t0.Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "key-history.json")
	if err := h.Save(path); err != nil {
		t.Fatal(err)
	}
	if fi, _ := os.Stat(path); fi.Mode().Perm() != 0o644 {
		t.Errorf("mode %#o, want 0644", fi.Mode().Perm())
	}
	data, _ := os.ReadFile(path)
	var generic struct {
		Keys []map[string]any `json:"keys"`
	}
	if err := json.Unmarshal(data, &generic); err != nil {
		t.Fatal(err)
	}
	if len(generic.Keys) != 2 {
		t.Fatalf("%d keys in\n%s", len(generic.Keys), data)
	}
	first, second := generic.Keys[0], generic.Keys[1]
	if first["kid"] != hex.EncodeToString(oldKey.KeyID()) || first["alg"] != "ES256" ||
		first["not_before"] != "2026-11-02T10:00:00Z" || first["not_after"] != "2026-11-02T11:00:00Z" {
		t.Errorf("first key: %v", first)
	}
	if _, ok := second["not_after"]; ok || second["not_before"] != "2026-11-02T11:00:00Z" {
		t.Errorf("second key: %v", second)
	}
	if len(first) != 5 || len(second) != 4 {
		t.Errorf("unexpected fields:\n%s", data)
	}
	t.Logf("%s", data)
}

// TestKeyHistoryRejects: a history that breaks a rule is refused as a whole.
func TestKeyHistoryRejects(t *testing.T) {
	a, b := testKey(t, "test-key-a.pem"), testKey(t, "test-key-b.pem")
	var h KeyHistory
	if err := h.Add(a, t0); err != nil {
		t.Fatal(err)
	}
	if err := h.Rotate(b, t0.Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	valid, err := h.MarshalJSON()
	if err != nil {
		t.Fatal(err)
	}
	edit := func(f func(keys []map[string]any) []map[string]any) []byte {
		var doc struct {
			Keys []map[string]any `json:"keys"`
		}
		if err := json.Unmarshal(valid, &doc); err != nil {
			t.Fatal(err)
		}
		doc.Keys = f(doc.Keys)
		out, err := json.Marshal(doc)
		if err != nil {
			t.Fatal(err)
		}
		return out
	}
	p384, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	tests := map[string][]byte{
		"duplicate key":     edit(func(k []map[string]any) []map[string]any { return append(k, k[0]) }),
		"kid not the key's": edit(func(k []map[string]any) []map[string]any { k[0]["kid"] = k[1]["kid"]; return k }),
		"upper-case kid": edit(func(k []map[string]any) []map[string]any {
			k[0]["kid"] = strings.ToUpper(k[0]["kid"].(string))
			return k
		}),
		"unknown algorithm": edit(func(k []map[string]any) []map[string]any { k[0]["alg"] = "PS256"; return k }),
		"algorithm not the key's": edit(func(k []map[string]any) []map[string]any {
			k[0]["alg"] = "ES384"
			return k
		}),
		"empty period": edit(func(k []map[string]any) []map[string]any { k[0]["not_after"] = k[0]["not_before"]; return k }),
		"sub-second time": edit(func(k []map[string]any) []map[string]any {
			k[0]["not_before"] = "2026-11-02T10:00:00.5Z"
			return k
		}),
		"missing not_before": edit(func(k []map[string]any) []map[string]any { delete(k[0], "not_before"); return k }),
		"unknown field":      edit(func(k []map[string]any) []map[string]any { k[0]["comment"] = "x"; return k }),
		"bad public key":     edit(func(k []map[string]any) []map[string]any { k[0]["public_key"] = "AAAA"; return k }),
		"trailing data":      append(append([]byte{}, valid...), "{}"...),
		"not JSON":           []byte("keys"),
	}
	for name, data := range tests {
		var got KeyHistory
		if err := json.Unmarshal(data, &got); err == nil {
			t.Errorf("%s: accepted\n%s", name, data)
		} else {
			t.Logf("%s: %v", name, err)
		}
	}

	if err := h.Add(a, t0.Add(5*time.Hour)); err == nil {
		t.Error("Add of a listed key: accepted")
	}
	var empty KeyHistory
	if err := empty.Rotate(a, t0); err == nil {
		t.Error("Rotate with no current key: accepted")
	}
	var one KeyHistory
	if err := one.Add(a, t0); err != nil {
		t.Fatal(err)
	}
	if err := one.Rotate(b, t0); err == nil {
		t.Error("Rotate at the current key's not_before: accepted")
	}
	if err := one.Rotate(b, t0.Add(time.Hour+time.Millisecond)); err == nil {
		t.Error("Rotate at a sub-second time: accepted")
	}
	if len(one.Keys()) != 1 || !one.Keys()[0].NotAfter.IsZero() {
		t.Errorf("a refused Rotate changed the history: %+v", one.Keys())
	}
	if err := one.Add(cryptoSigner{cose.AlgorithmES256, p384}, t0); err == nil {
		t.Error("Add of an ES256 signer with a P-384 key: accepted")
	}
}
