package collateral

import (
	"context"
	"crypto/sha256"
	"errors"
	"os"
	"path/filepath"
	"testing"
)

func TestReadDir(t *testing.T) {
	dir := t.TempDir()
	write := func(name, s string) {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("one.json", `{"url":"https://a.example/x","status":200,"headers":{"TCB-Info-Issuer-Chain":["v"]},"body":"AQI="}`)
	write("many.json", `[{"url":"https://a.example/y","status":200,"body":""},{"url":"https://a.example/z","status":404,"body":""}]`)
	write("ignored.txt", `not json`)
	set, err := ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	r, err := set.Get(context.Background(), "https://a.example/x")
	if err != nil || string(r.Body) != "\x01\x02" {
		t.Fatalf("Get = %v, %v", r, err)
	}
	// Header names match case-insensitively, as in HTTP.
	if v := r.Header("tcb-info-issuer-chain"); len(v) != 1 || v[0] != "v" {
		t.Fatalf("Header = %v", v)
	}
	for _, u := range []string{"https://a.example/z", "https://a.example/missing", "https://a.example/X"} {
		if _, err := set.Get(context.Background(), u); !errors.Is(err, ErrUnavailable) {
			t.Errorf("%s: %v, want ErrUnavailable", u, err)
		}
	}
	// The same URL twice is an error.
	write("dup.json", `{"url":"https://a.example/x","status":200,"body":""}`)
	if _, err := ReadDir(dir); err == nil {
		t.Fatal("duplicate URL accepted")
	}
	// One header named twice in different cases would make lookups and digests depend on map order.
	if _, err := Parse([]byte(`{"url":"https://a.example/h","status":200,"headers":{"TCB-Info-Issuer-Chain":["a"],"tcb-info-issuer-chain":["b"]},"body":""}`)); err == nil {
		t.Fatal("a header named twice was accepted")
	}
	if _, err := ReadDir(filepath.Join(dir, "nope")); err == nil {
		t.Fatal("missing directory accepted")
	}
}

func TestDigestCanonical(t *testing.T) {
	a := &Response{URL: "u", Status: 200, Headers: map[string][]string{"tcb-info-issuer-chain": {"v"}}, Body: []byte{1}}
	b := &Response{URL: "u", Status: 200, Headers: map[string][]string{"TCB-Info-Issuer-Chain": {"v"}}, Body: []byte{1}}
	if sha256.Sum256(a.Canonical()) != a.Digest() {
		t.Fatal("Digest is not the SHA-256 of Canonical")
	}
	if rs, err := Parse(a.Canonical()); err != nil || rs[0].Digest() != a.Digest() {
		t.Fatalf("canonical form does not parse back to the same response: %v", err)
	}
	if a.Digest() != b.Digest() {
		t.Fatal("header name case changes the digest")
	}
	for _, c := range []*Response{
		{URL: "v", Status: 200, Headers: b.Headers, Body: []byte{1}},
		{URL: "u", Status: 201, Headers: b.Headers, Body: []byte{1}},
		{URL: "u", Status: 200, Headers: map[string][]string{"TCB-Info-Issuer-Chain": {"w"}}, Body: []byte{1}},
		{URL: "u", Status: 200, Headers: b.Headers, Body: []byte{2}},
	} {
		if c.Digest() == b.Digest() {
			t.Fatalf("digest does not cover %+v", c)
		}
	}
}
