package vcache

import (
	"fmt"
	"sync"
	"testing"

	"github.com/proofline/proofline/verifier/collateral"
)

func TestSumSeparatesParts(t *testing.T) {
	if Sum([]byte("ab"), []byte("c")) == Sum([]byte("a"), []byte("bc")) {
		t.Fatal("parts are not length-prefixed: ab|c and a|bc share a key")
	}
	if Sum([]byte("x")) != Sum([]byte("x")) {
		t.Fatal("Sum is not deterministic")
	}
}

func TestLRUBoundAndOrder(t *testing.T) {
	c := New[int](shards) // one entry per shard
	var a, b Key          // same shard (first byte 0), different keys
	b[1] = 1
	c.Add(a, 1)
	c.Add(b, 2)
	if _, ok := c.Get(a); ok {
		t.Fatal("the least recently used entry was not evicted")
	}
	if v, ok := c.Get(b); !ok || v != 2 {
		t.Fatalf("Get(b) = %d, %v; want 2, true", v, ok)
	}
	for i := range 1000 {
		c.Add(Sum(fmt.Append(nil, i)), i)
	}
	if n := c.Len(); n > shards {
		t.Fatalf("Len = %d, want ≤ %d", n, shards)
	}
	c.Purge()
	if n := c.Len(); n != 0 {
		t.Fatalf("Len after Purge = %d", n)
	}
}

func TestConcurrent(t *testing.T) {
	c := New[int](64)
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 500 {
				k := Sum(fmt.Append(nil, (g*i)%100))
				if v, ok := c.Get(k); ok && v != (g*i)%100 {
					t.Errorf("key %d holds %d", (g*i)%100, v)
				}
				c.Add(k, (g*i)%100)
			}
		}()
	}
	wg.Wait()
}

func TestResponseDigest(t *testing.T) {
	base := func() *collateral.Response {
		return &collateral.Response{URL: "https://x/crl", Status: 200, Headers: map[string][]string{"A": {"1", "2"}}, Body: []byte("body")}
	}
	changes := map[string]func(r *collateral.Response){
		"url":          func(r *collateral.Response) { r.URL += "?x" },
		"status":       func(r *collateral.Response) { r.Status = 203 },
		"body":         func(r *collateral.Response) { r.Body = []byte("bodz") },
		"header value": func(r *collateral.Response) { r.Headers["A"] = []string{"1", "3"} },
		"header split": func(r *collateral.Response) { r.Headers["A"] = []string{"12"} },
		"header added": func(r *collateral.Response) { r.Headers["B"] = []string{""} },
	}
	for name, change := range changes {
		t.Run(name, func(t *testing.T) {
			r := base()
			if got, want := ResponseDigest(r), r.Digest(); got != want {
				t.Fatalf("cached digest of the base response differs from Digest")
			}
			change(r)
			if got, want := ResponseDigest(r), r.Digest(); got != want {
				t.Fatalf("after changing the %s the cached digest is stale", name)
			}
		})
	}
}

func TestBuilderMatchesSum(t *testing.T) {
	a, b := []byte("first"), []byte("")
	if NewBuilder().Bytes(a).String("x").Bytes(b).Key() != Sum(a, []byte("x"), b) {
		t.Fatal("Builder and Sum disagree on the same parts")
	}
}
