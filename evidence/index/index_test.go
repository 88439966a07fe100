package index

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/proofline/proofline/evidence"
)

// queries returns named queries over c: every filter alone, combinations, time ranges with
// whole-second and sub-second bounds, a cursor, and empty answers.
func queries(c *corpus) []struct {
	name string
	q    Query
} {
	mid := c.want[len(c.want)/2].Time
	late := c.want[3*len(c.want)/4].Time
	type nq = struct {
		name string
		q    Query
	}
	qs := []nq{
		{"all", Query{Limit: MaxLimit}},
		{"default limit", Query{}},
		{"platform tdx", Query{Platform: "tdx"}},
		{"platform sev-snp", Query{Platform: "sev-snp"}},
		{"subject vm-a", Query{Subject: "vm-a"}},
		{"subject VM-A is not vm-a", Query{Subject: "VM-A"}},
		{"long subject", Query{Subject: longSubject}},
		{"unknown subject", Query{Subject: "vm-z"}},
		{"status release", Query{Status: "release"}},
		{"status deny", Query{Status: "deny"}},
		{"policy Prod is not prod", Query{Policy: "Prod"}},
		{"policy prod", Query{Policy: "prod"}},
		{"subject+kind key_release", Query{Subject: "vm-b", Kind: evidence.KindKeyRelease}},
		{"subject+platform+status", Query{Subject: "vm-a", Platform: "tdx", Status: "affirming"}},
		{"kind+policy", Query{Kind: evidence.KindPolicyChange, Policy: "default"}},
		{"from mid", Query{From: mid}},
		{"to mid", Query{To: mid}},
		{"mid to late", Query{From: mid, To: late}},
		{"mid to mid is empty", Query{From: mid, To: mid}},
		{"late to mid is empty", Query{From: late, To: mid}},
		{"from just after mid", Query{From: mid.Add(time.Nanosecond)}},
		{"to just after mid", Query{To: mid.Add(time.Nanosecond)}},
		{"from just before mid", Query{From: mid.Add(-time.Nanosecond)}},
		{"time range+subject+kind", Query{From: mid, To: late.Add(time.Second), Subject: "vm-a", Kind: evidence.KindAttestation}},
		{"before 1970", Query{To: time.Unix(-5, 0)}},
		{"start", Query{Start: uint64(len(c.want) / 3)}},
		{"start beyond the end", Query{Start: uint64(len(c.want))}},
		{"start+platform+small limit", Query{Start: 5, Platform: "tdx", Limit: 3}},
	}
	for _, k := range []evidence.Kind{evidence.KindAttestation, evidence.KindPolicyChange, evidence.KindKeyRelease, evidence.KindCollateralUpdate} {
		qs = append(qs, nq{"kind " + string(k), Query{Kind: k}})
	}
	for _, s := range statuses {
		qs = append(qs, nq{"status " + s, Query{Status: s, Kind: evidence.KindAttestation}})
	}
	return qs
}

// checkQueries runs every query against ix and the model.
func checkQueries(t *testing.T, ix *Index, c *corpus) {
	t.Helper()
	for _, tc := range queries(c) {
		got, err := ix.Query(context.Background(), tc.q)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if want := c.model(tc.q); !reflect.DeepEqual(got, want) {
			t.Errorf("%s: got %d entries, want %d\n got: %s\nwant: %s", tc.name, len(got), len(want), summary(got), summary(want))
		}
	}
}

func summary(es []Entry) string {
	var b strings.Builder
	for _, e := range es {
		fmt.Fprintf(&b, "[%d %s %s %.10s %s %s %s] ", e.LogIndex, e.Kind, e.Time.Format(time.RFC3339), e.Subject, e.Platform, e.Status, e.Policy)
	}
	return b.String()
}

// TestQuery: entries added one by one answer every filter, combination, time range and cursor
// exactly as a brute-force model of the expected entries does — including the fields derived
// from each kind of record (status from the result JSON or the key-release decision), exact
// case-sensitive matches, and a subject longer than an InnoDB index key.
func TestQuery(t *testing.T) {
	t.Parallel()
	s := newSigner(t)
	c := newCorpus(t, s, 120, 1)
	for _, k := range []evidence.Kind{evidence.KindAttestation, evidence.KindPolicyChange, evidence.KindKeyRelease, evidence.KindCollateralUpdate} {
		if len(c.model(Query{Kind: k})) == 0 {
			t.Fatalf("the corpus has no %s record", k)
		}
	}
	forEach(t, func(t *testing.T, open func(*testing.T) *Index) {
		ix := open(t)
		c.addAll(t, ix)
		if n, err := ix.Next(context.Background()); err != nil || n != uint64(len(c.want)) {
			t.Fatalf("Next = %d, %v; want %d", n, err, len(c.want))
		}
		checkQueries(t, ix, c)
	})
}

// TestPaging: paging with the cursor visits every matching entry exactly once, in log order;
// Limit 0 means DefaultLimit, a larger Limit is capped at MaxLimit, a negative one is an error.
func TestPaging(t *testing.T) {
	t.Parallel()
	s := newSigner(t)
	c := newCorpus(t, s, MaxLimit+60, 2)
	forEach(t, func(t *testing.T, open func(*testing.T) *Index) {
		ctx := context.Background()
		ix := open(t)
		if _, err := Catchup(ctx, ix, &c.log, s.open, nil); err != nil {
			t.Fatal(err)
		}
		for _, filter := range []Query{{}, {Kind: evidence.KindAttestation}, {Platform: "sev-snp", Status: "warning"}} {
			var got []Entry
			q := filter
			q.Limit = 7
			for {
				page, err := ix.Query(ctx, q)
				if err != nil {
					t.Fatal(err)
				}
				if len(page) > 7 {
					t.Fatalf("page of %d entries, limit 7", len(page))
				}
				got = append(got, page...)
				if len(page) < 7 {
					break
				}
				q.Start = page[len(page)-1].LogIndex + 1
			}
			if w := c.matching(filter, len(c.want)); !reflect.DeepEqual(got, w) {
				t.Fatalf("paging %+v: got %d entries, want %d", filter, len(got), len(w))
			}
		}
		for _, tc := range []struct{ limit, want int }{{0, DefaultLimit}, {MaxLimit + 1, MaxLimit}, {1 << 30, MaxLimit}} {
			got, err := ix.Query(ctx, Query{Limit: tc.limit})
			if err != nil || len(got) != tc.want {
				t.Fatalf("Query(Limit %d) = %d entries, %v; want %d", tc.limit, len(got), err, tc.want)
			}
		}
		if _, err := ix.Query(ctx, Query{Limit: -1}); err == nil {
			t.Fatal("Query(Limit -1) succeeded")
		}
	})
}

// TestAddIdempotent: adding the same leaf at the same index again changes nothing.
func TestAddIdempotent(t *testing.T) {
	t.Parallel()
	s := newSigner(t)
	c := newCorpus(t, s, 10, 3)
	forEach(t, func(t *testing.T, open func(*testing.T) *Index) {
		ix := open(t)
		c.addAll(t, ix)
		c.addAll(t, ix)
		if err := ix.Add(context.Background(), 4, c.log.leaves[4], c.recs[4]); err != nil {
			t.Fatalf("re-adding entry 4: %v", err)
		}
		if n, err := ix.Next(context.Background()); err != nil || n != 10 {
			t.Fatalf("Next = %d, %v; want 10", n, err)
		}
		checkQueries(t, ix, c)
	})
}

// TestAddConflict: a different leaf at an indexed log index is refused with ErrConflict, and the
// entry there is unchanged.
func TestAddConflict(t *testing.T) {
	t.Parallel()
	s := newSigner(t)
	c := newCorpus(t, s, 10, 4)
	other := newCorpus(t, s, 10, 5)
	forEach(t, func(t *testing.T, open func(*testing.T) *Index) {
		ix := open(t)
		c.addAll(t, ix)
		for _, i := range []int{0, 4, 9} {
			err := ix.Add(context.Background(), uint64(i), other.log.leaves[i], other.recs[i])
			if !errors.Is(err, ErrConflict) {
				t.Fatalf("Add of another leaf at %d = %v, want ErrConflict", i, err)
			}
		}
		// The same record signed again is another leaf (ECDSA signatures are randomised).
		leaf, err := evidence.Sign(context.Background(), c.recs[4], s.key)
		if err != nil {
			t.Fatal(err)
		}
		if err := ix.Add(context.Background(), 4, leaf, c.recs[4]); !errors.Is(err, ErrConflict) {
			t.Fatalf("Add of a re-signed record at 4 = %v, want ErrConflict", err)
		}
		checkQueries(t, ix, c)
	})
}

// TestAddGap: an entry is refused with ErrGap unless the one before it is indexed, so the index
// stays a prefix of the log.
func TestAddGap(t *testing.T) {
	t.Parallel()
	s := newSigner(t)
	c := newCorpus(t, s, 10, 6)
	forEach(t, func(t *testing.T, open func(*testing.T) *Index) {
		ctx := context.Background()
		ix := open(t)
		if err := ix.Add(ctx, 3, c.log.leaves[3], c.recs[3]); !errors.Is(err, ErrGap) {
			t.Fatalf("Add(3) to an empty index = %v, want ErrGap", err)
		}
		for i := range 2 {
			if err := ix.Add(ctx, uint64(i), c.log.leaves[i], c.recs[i]); err != nil {
				t.Fatal(err)
			}
		}
		if err := ix.Add(ctx, 3, c.log.leaves[3], c.recs[3]); !errors.Is(err, ErrGap) {
			t.Fatalf("Add(3) after 0..1 = %v, want ErrGap", err)
		}
		if n, err := ix.Next(ctx); err != nil || n != 2 {
			t.Fatalf("Next = %d, %v; want 2", n, err)
		}
		if got, _ := ix.Query(ctx, Query{}); len(got) != 2 {
			t.Fatalf("%d entries after refused Adds, want 2", len(got))
		}
	})
}

// TestRebuild: Rebuild from the log alone gives exactly the answers of incremental Adds, even
// over an index that held another log's entries; it reports progress up to the log size; and
// Catchup then has nothing to do.
func TestRebuild(t *testing.T) {
	t.Parallel()
	s := newSigner(t)
	c := newCorpus(t, s, 300, 7)
	stale := newCorpus(t, s, 350, 8)
	forEach(t, func(t *testing.T, open func(*testing.T) *Index) {
		ctx := context.Background()
		incremental := open(t)
		c.addAll(t, incremental)

		rebuilt := open(t)
		stale.addAll(t, rebuilt)
		var calls []uint64
		n, err := Rebuild(ctx, rebuilt, &c.log, s.open, func(indexed, size uint64) {
			if size != uint64(len(c.want)) {
				t.Errorf("progress size %d, want %d", size, len(c.want))
			}
			calls = append(calls, indexed)
		})
		if err != nil || n != uint64(len(c.want)) {
			t.Fatalf("Rebuild = %d, %v; want %d", n, err, len(c.want))
		}
		if len(calls) < 2 || calls[len(calls)-1] != n {
			t.Fatalf("progress calls %v, want several ending at %d", calls, n)
		}
		for i := 1; i < len(calls); i++ {
			if calls[i] <= calls[i-1] {
				t.Fatalf("progress went from %d to %d", calls[i-1], calls[i])
			}
		}
		for _, tc := range queries(c) {
			a, errA := incremental.Query(ctx, tc.q)
			b, errB := rebuilt.Query(ctx, tc.q)
			if errA != nil || errB != nil || !reflect.DeepEqual(a, b) {
				t.Fatalf("%s: incremental %d entries (%v), rebuilt %d (%v)", tc.name, len(a), errA, len(b), errB)
			}
		}
		checkQueries(t, rebuilt, c)
		if n, err := Catchup(ctx, rebuilt, &c.log, s.open, nil); err != nil || n != 0 {
			t.Fatalf("Catchup after Rebuild = %d, %v; want 0", n, err)
		}
	})
}

// TestCatchup: Catchup indexes from Next() to the log size; it refuses an index built from
// another log, or larger than the log, with ErrConflict instead of growing it.
func TestCatchup(t *testing.T) {
	t.Parallel()
	s := newSigner(t)
	c := newCorpus(t, s, 40, 9)
	other := newCorpus(t, s, 40, 10)
	forEach(t, func(t *testing.T, open func(*testing.T) *Index) {
		ctx := context.Background()
		ix := open(t)
		for i := range 10 {
			if err := ix.Add(ctx, uint64(i), c.log.leaves[i], c.recs[i]); err != nil {
				t.Fatal(err)
			}
		}
		if n, err := Catchup(ctx, ix, &c.log, s.open, nil); err != nil || n != 30 {
			t.Fatalf("Catchup = %d, %v; want 30", n, err)
		}
		checkQueries(t, ix, c)
		if n, err := Catchup(ctx, ix, &c.log, s.open, nil); err != nil || n != 0 {
			t.Fatalf("second Catchup = %d, %v; want 0", n, err)
		}
		if _, err := Catchup(ctx, ix, &other.log, s.open, nil); !errors.Is(err, ErrConflict) {
			t.Fatalf("Catchup from another log = %v, want ErrConflict", err)
		}
		short := &memLog{leaves: c.log.leaves[:20]}
		if _, err := Catchup(ctx, ix, short, s.open, nil); !errors.Is(err, ErrConflict) {
			t.Fatalf("Catchup from a shorter log = %v, want ErrConflict", err)
		}
	})
}

// TestRebuildBadLeaf: a leaf that does not open stops Rebuild with an error naming its index,
// and the index keeps the prefix before it.
func TestRebuildBadLeaf(t *testing.T) {
	t.Parallel()
	s := newSigner(t)
	c := newCorpus(t, s, 20, 11)
	bad := &memLog{leaves: append([][]byte{}, c.log.leaves...)}
	bad.leaves[13] = append([]byte{}, bad.leaves[13]...)
	bad.leaves[13][len(bad.leaves[13])-1] ^= 1 // the signature's last byte
	forEach(t, func(t *testing.T, open func(*testing.T) *Index) {
		ctx := context.Background()
		ix := open(t)
		n, err := Rebuild(ctx, ix, bad, s.open, nil)
		if !errors.Is(err, evidence.ErrSignature) || !strings.Contains(err.Error(), "entry 13") {
			t.Fatalf("Rebuild over a bad leaf = %v, want evidence.ErrSignature naming entry 13", err)
		}
		if next, err := ix.Next(ctx); err != nil || n != 13 || next != 13 {
			t.Fatalf("after the bad leaf: Rebuild = %d, Next = %d (%v); want 13", n, next, err)
		}
	})
}

// TestConcurrentWriters: Catchups, Adds and a Rebuild of the same log at once (replicas, a
// verifier racing `proofline log reindex`) fail with nothing but ErrGap, and leave a prefix of
// the log, which a final Catchup completes to exactly the log's entries.
func TestConcurrentWriters(t *testing.T) {
	t.Parallel()
	s := newSigner(t)
	c := newCorpus(t, s, 300, 12)
	forEach(t, func(t *testing.T, open func(*testing.T) *Index) {
		ctx := context.Background()
		ix := open(t)
		var wg sync.WaitGroup
		errs := make(chan error, 100)
		for range 3 {
			wg.Go(func() {
				if _, err := Catchup(ctx, ix, &c.log, s.open, nil); err != nil && !errors.Is(err, ErrGap) {
					errs <- fmt.Errorf("Catchup: %w", err)
				}
			})
		}
		wg.Go(func() {
			for { // start once the others are under way
				if n, err := ix.Next(ctx); err != nil || n >= uint64(len(c.recs)/3) {
					break
				}
				time.Sleep(time.Millisecond)
			}
			if _, err := Rebuild(ctx, ix, &c.log, s.open, nil); err != nil && !errors.Is(err, ErrGap) {
				errs <- fmt.Errorf("Rebuild: %w", err)
			}
		})
		for w := range 2 {
			wg.Go(func() {
				for i := w; i < len(c.recs); i += 2 {
					if err := ix.Add(ctx, uint64(i), c.log.leaves[i], c.recs[i]); err != nil && !errors.Is(err, ErrGap) {
						errs <- fmt.Errorf("Add(%d): %w", i, err)
					}
				}
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Error(err)
		}
		next, err := ix.Next(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if got, err := ix.Query(ctx, Query{Limit: MaxLimit}); err != nil || !reflect.DeepEqual(got, c.matching(Query{}, int(next))) {
			t.Fatalf("after the race the index holds %d entries (%v), not the log's first %d", len(got), err, next)
		}
		if _, err := Catchup(ctx, ix, &c.log, s.open, nil); err != nil {
			t.Fatal(err)
		}
		checkQueries(t, ix, c)
	})
}

// TestAddInvalidRecord: Add validates the record it is given.
func TestAddInvalidRecord(t *testing.T) {
	t.Parallel()
	s := newSigner(t)
	c := newCorpus(t, s, 1, 13)
	forEach(t, func(t *testing.T, open func(*testing.T) *Index) {
		ix := open(t)
		if err := ix.Add(context.Background(), 0, c.log.leaves[0], nil); err == nil {
			t.Fatal("Add of a nil record succeeded")
		}
		r := *c.recs[0]
		r.Kind = "verdict"
		if err := ix.Add(context.Background(), 0, c.log.leaves[0], &r); !errors.Is(err, evidence.ErrMalformed) {
			t.Fatalf("Add of an invalid record = %v, want evidence.ErrMalformed", err)
		}
	})
}

// TestAddEntries: a batch of consecutive entries is added in one transaction under Add's rules;
// a batch that is not consecutive, leaves a gap or conflicts with an indexed leaf adds nothing.
func TestAddEntries(t *testing.T) {
	t.Parallel()
	s := newSigner(t)
	c := newCorpus(t, s, 12, 6)
	other := newCorpus(t, s, 12, 7)
	entries := func(t *testing.T, c *corpus, from, to int) []Entry {
		var es []Entry
		for i := from; i < to; i++ {
			e, err := NewEntry(uint64(i), c.log.leaves[i], c.recs[i])
			if err != nil {
				t.Fatal(err)
			}
			es = append(es, e)
		}
		return es
	}
	forEach(t, func(t *testing.T, open func(*testing.T) *Index) {
		ctx := context.Background()
		ix := open(t)
		next := func() uint64 {
			n, err := ix.Next(ctx)
			if err != nil {
				t.Fatal(err)
			}
			return n
		}
		if err := ix.AddEntries(ctx, entries(t, c, 1, 4)); !errors.Is(err, ErrGap) {
			t.Fatalf("AddEntries(1..3) on an empty index = %v, want ErrGap", err)
		}
		es := entries(t, c, 0, 6)
		skip := append(append([]Entry{}, es[:2]...), es[3:]...)
		if err := ix.AddEntries(ctx, skip); err == nil || !strings.Contains(err.Error(), "not consecutive") {
			t.Fatalf("AddEntries without entry 2 = %v, want a refusal", err)
		}
		if n := next(); n != 0 {
			t.Fatalf("Next after refused batches = %d, want 0", n)
		}
		if err := ix.AddEntries(ctx, es); err != nil {
			t.Fatal(err)
		}
		if n := next(); n != 6 {
			t.Fatalf("Next = %d, want 6", n)
		}
		// Overlapping the indexed prefix with the same leaves is a no-op for those entries.
		if err := ix.AddEntries(ctx, entries(t, c, 4, 12)); err != nil {
			t.Fatal(err)
		}
		if n := next(); n != 12 {
			t.Fatalf("Next = %d, want 12", n)
		}
		if err := ix.AddEntries(ctx, entries(t, other, 10, 12)); !errors.Is(err, ErrConflict) {
			t.Fatalf("AddEntries of other leaves at 10..11 = %v, want ErrConflict", err)
		}
		checkQueries(t, ix, c)
	})
}

// TestAddEntriesLarge: a batch larger than one INSERT can carry (SQLite allows 32766 bound
// parameters, 11 an entry: 2978 entries) is added whole.
func TestAddEntriesLarge(t *testing.T) {
	t.Parallel()
	es := make([]Entry, 3000)
	for i := range es {
		es[i] = Entry{LogIndex: uint64(i), LeafHash: sha256.Sum256(fmt.Appendf(nil, "leaf %d", i)),
			Kind: evidence.KindAttestation, Time: t0, Subject: "vm-a", Platform: "tdx", Status: "affirming", Policy: "default"}
	}
	forEach(t, func(t *testing.T, open func(*testing.T) *Index) {
		ctx := context.Background()
		ix := open(t)
		if err := ix.AddEntries(ctx, es); err != nil {
			t.Fatal(err)
		}
		if n, err := ix.Next(ctx); err != nil || n != uint64(len(es)) {
			t.Fatalf("Next = %d, %v; want %d", n, err, len(es))
		}
		got, err := ix.Query(ctx, Query{Start: 2990})
		if err != nil || len(got) != 10 || got[9] != es[2999] {
			t.Fatalf("Query from 2990 = %d entries, %v; want the last 10 added", len(got), err)
		}
	})
}
