// Package vcache is a bounded, concurrency-safe LRU map from a content digest to the result of an
// expensive verification step: a parsed and signature-checked certificate chain, CRL or signed
// collateral document. It lets a warm verification do only the evidence's own signature checks
// (DESIGN.md, performance model; hack/bench/README.md).
//
// The contract that keeps a cache from ever making a failing check pass (fail closed):
//   - The key is the digest of every input of the cached step (Sum): the exact bytes checked, the
//     trust anchors they were checked against, and any parameter that changes the outcome. A
//     different root set or one flipped byte is a different key, hence a miss.
//   - Only successes are cached, and only the time-independent part of them (parsing and
//     signatures). Whatever depends on the verification time (certificate validity, a CRL's
//     thisUpdate/nextUpdate, a document's issueDate/nextUpdate) or on another document
//     (revocation by a CRL) is evaluated by the caller on every call, from the cached value.
//   - Values are shared between goroutines and MUST be treated as read-only.
//
// Entries are dropped least-recently-used beyond the bound. They are not dropped by wall-clock
// time: the verification time is an input (--at, re-performance), so an entry is valid for every
// verification time and the caller's per-call window checks decide.
package vcache

import (
	"container/list"
	"crypto/sha256"
	"encoding/binary"
	"hash"
	"io"
	"sync"
)

// Key is the SHA-256 digest of a cached step's inputs.
type Key [32]byte

// Sum returns the key of the given inputs. Each part is length-prefixed, so no two different
// sequences of parts share a key.
func Sum(parts ...[]byte) Key {
	h := sha256.New()
	var n [8]byte
	for _, p := range parts {
		binary.BigEndian.PutUint64(n[:], uint64(len(p)))
		h.Write(n[:])
		h.Write(p)
	}
	var k Key
	h.Sum(k[:0])
	return k
}

// Builder computes a Key part by part, with the same encoding as Sum, without collecting the
// parts first.
type Builder struct {
	h hash.Hash
	n [8]byte
}

// NewBuilder returns an empty Builder.
func NewBuilder() *Builder { return &Builder{h: sha256.New()} }

// Bytes adds one part.
func (b *Builder) Bytes(p []byte) *Builder {
	binary.BigEndian.PutUint64(b.n[:], uint64(len(p)))
	b.h.Write(b.n[:])
	b.h.Write(p)
	return b
}

// String adds one part.
func (b *Builder) String(p string) *Builder {
	binary.BigEndian.PutUint64(b.n[:], uint64(len(p)))
	b.h.Write(b.n[:])
	io.WriteString(b.h, p)
	return b
}

// Uint adds one part: the 8-byte big-endian encoding of v.
func (b *Builder) Uint(v uint64) *Builder {
	var p [8]byte
	binary.BigEndian.PutUint64(p[:], v)
	return b.Bytes(p[:])
}

// Key returns the key of the parts added.
func (b *Builder) Key() Key {
	var k Key
	b.h.Sum(k[:0])
	return k
}

// shards spreads entries over independent locks so that concurrent verifications of different
// artefacts do not contend on one mutex.
const shards = 16

// Cache is a bounded LRU of values by Key. The zero value is not usable; use New.
type Cache[V any] struct {
	shard [shards]shard[V]
}

type shard[V any] struct {
	mu  sync.Mutex
	max int
	ll  *list.List // front = most recently used; elements hold *entry[V]
	m   map[Key]*list.Element
}

type entry[V any] struct {
	key Key
	val V
}

// New returns a cache holding at most about size entries (at least one per shard).
func New[V any](size int) *Cache[V] {
	c := &Cache[V]{}
	per := max(1, (size+shards-1)/shards)
	for i := range c.shard {
		c.shard[i] = shard[V]{max: per, ll: list.New(), m: make(map[Key]*list.Element)}
	}
	return c
}

func (c *Cache[V]) shardOf(k Key) *shard[V] { return &c.shard[k[0]%shards] }

// Get returns the value stored under k and marks it recently used.
func (c *Cache[V]) Get(k Key) (V, bool) {
	s := c.shardOf(k)
	s.mu.Lock()
	defer s.mu.Unlock()
	if e, ok := s.m[k]; ok {
		s.ll.MoveToFront(e)
		return e.Value.(*entry[V]).val, true
	}
	var zero V
	return zero, false
}

// Add stores v under k, evicting the least recently used entry of k's shard when it is full.
func (c *Cache[V]) Add(k Key, v V) {
	s := c.shardOf(k)
	s.mu.Lock()
	defer s.mu.Unlock()
	if e, ok := s.m[k]; ok {
		e.Value.(*entry[V]).val = v
		s.ll.MoveToFront(e)
		return
	}
	s.m[k] = s.ll.PushFront(&entry[V]{key: k, val: v})
	if s.ll.Len() > s.max {
		old := s.ll.Back()
		s.ll.Remove(old)
		delete(s.m, old.Value.(*entry[V]).key)
	}
}

// Len returns the number of entries.
func (c *Cache[V]) Len() int {
	n := 0
	for i := range c.shard {
		s := &c.shard[i]
		s.mu.Lock()
		n += s.ll.Len()
		s.mu.Unlock()
	}
	return n
}

// Purge drops every entry (tests, and a trust-anchor reload that wants memory back).
func (c *Cache[V]) Purge() {
	for i := range c.shard {
		s := &c.shard[i]
		s.mu.Lock()
		s.ll.Init()
		clear(s.m)
		s.mu.Unlock()
	}
}
