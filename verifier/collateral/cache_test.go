package collateral_test

import (
	"context"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-sev-guest/abi"
	"github.com/google/go-sev-guest/kds"

	"github.com/proofline/proofline/attest/attesttest/fakeintel"
	"github.com/proofline/proofline/verifier/collateral"
	"github.com/proofline/proofline/verifier/collateral/collateraltest"
)

// TestCacheCoalesces: 100 concurrent misses for one URL make one upstream request, and all get
// the same response.
func TestCacheCoalesces(t *testing.T) {
	f := newFleet(t)
	e := newEnv(t, func(c *collateraltest.Clock) (*collateraltest.Server, error) {
		return collateraltest.NewServer(f.docs, collateraltest.Options{Clock: c})
	}, nil, nil)
	hold := make(chan struct{})
	e.srv.Inject(collateraltest.Fault{URL: f.vceks[0], Hold: hold})
	const n = 100
	got := make([]*collateral.Response, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			r, err := e.cache.Get(context.Background(), f.vceks[0])
			if err != nil {
				t.Error(err)
			}
			got[i] = r
		})
	}
	// Release the held answer only once every Get has joined the fetch.
	for st := e.cache.Stats(); st.Misses+st.Coalesced < n; st = e.cache.Stats() {
		runtime.Gosched()
	}
	close(hold)
	wg.Wait()
	for i := range got {
		if got[i] != got[0] || got[0] == nil {
			t.Fatalf("Get %d returned another response", i)
		}
	}
	if st, cs := e.srv.Stats(), e.cache.Stats(); st.Requests != 1 || cs.Misses != 1 || cs.Coalesced != n-1 {
		t.Fatalf("%d upstream requests, cache %+v; want 1 request, 1 miss, %d coalesced", st.Requests, cs, n-1)
	}
}

// TestCacheExpiry: documents are served until their nextUpdate and refetched from then on; a
// stale document is never served from the cache as fresh (a vendor that serves a stale one is
// asked again at every Get); when the refetch fails the stale copy is returned only through
// AllowStaleUnsafe, within its grace.
func TestCacheExpiry(t *testing.T) {
	p, docs := intelDocs(t, func(o *fakeintel.CollateralOptions) {
		o.PCKCRL.NextUpdate = start.Add(time.Hour)
		o.TCBInfo.NextUpdate = start.Add(2 * time.Hour)
	})
	tcb, qe, pck := docs[0].URL, docs[1].URL, docs[2].URL
	e := newEnv(t, pcsServer(docs), nil, nil)
	ctx := context.Background()
	getAll := func() {
		t.Helper()
		for _, d := range docs {
			if _, err := e.cache.Get(ctx, d.URL); err != nil {
				t.Fatalf("%s: %v", d.URL, err)
			}
		}
	}
	served := func(want map[string]int) {
		t.Helper()
		for u, n := range want {
			if got := e.srv.Served(u); got != n {
				t.Errorf("at +%s: %s served %d times, want %d", e.clock.Now().Sub(start), u, got, n)
			}
		}
	}
	getAll()
	e.clock.Advance(59 * time.Minute)
	getAll()
	served(map[string]int{tcb: 1, qe: 1, pck: 1})

	// At nextUpdate the PCK CRL is stale: it is fetched anew, and the new one is served.
	newer := fakeintel.DefaultCollateralOptions(start)
	newer.PCKCRL.Number, newer.PCKCRL.NextUpdate = 2, start.Add(5*time.Hour)
	fresh, err := p.Collateral(newer)
	if err != nil {
		t.Fatal(err)
	}
	if err := e.srv.Replace(fresh[2]); err != nil {
		t.Fatal(err)
	}
	e.clock.Advance(time.Minute)
	getAll()
	served(map[string]int{tcb: 1, qe: 1, pck: 2})
	if r, _ := e.cache.Get(ctx, pck); r.Digest() != fresh[2].Digest() {
		t.Error("the refetched PCK CRL is not the new one")
	}

	// The vendor now serves a TCB info that is already stale: it is returned (the verifier will
	// report it stale) but asked for again at every Get.
	staleOpts := fakeintel.DefaultCollateralOptions(start)
	staleOpts.TCBInfo.NextUpdate = start.Add(90 * time.Minute)
	stale, err := p.Collateral(staleOpts)
	if err != nil {
		t.Fatal(err)
	}
	if err := e.srv.Replace(stale[0]); err != nil {
		t.Fatal(err)
	}
	e.clock.Advance(time.Hour) // +2h: the first TCB info expires
	for want := 2; want <= 3; want++ {
		r, err := e.cache.Get(ctx, tcb)
		if err != nil || r.Digest() != stale[0].Digest() || e.srv.Served(tcb) != want {
			t.Fatalf("Get: %v; served %d times, want the stale document fetched (%d)", err, e.srv.Served(tcb), want)
		}
	}

	// The refetch fails: the stale copy is not served…
	e.srv.Inject(collateraltest.Fault{URL: tcb, Status: 500, Times: 3})
	_, err = e.cache.Get(ctx, tcb)
	if !errors.Is(err, collateral.ErrUnavailable) || !strings.Contains(err.Error(), "not served stale") {
		t.Fatalf("%v, want ErrUnavailable saying the stale copy is not served", err)
	}
	// …except through AllowStaleUnsafe, within its grace (nextUpdate was 30 min ago).
	r, err := e.cache.AllowStaleUnsafe(time.Hour).Get(ctx, tcb)
	if err != nil || r.Digest() != stale[0].Digest() {
		t.Fatalf("AllowStaleUnsafe(1h): %v", err)
	}
	if _, err := e.cache.AllowStaleUnsafe(10*time.Minute).Get(ctx, tcb); !errors.Is(err, collateral.ErrUnavailable) {
		t.Fatalf("AllowStaleUnsafe(10m) beyond the grace: %v, want ErrUnavailable", err)
	}
	if cs := e.cache.Stats(); cs.StaleServed != 1 || cs.FetchErrors != 3 {
		t.Errorf("stats %+v, want 1 stale served and 3 fetch errors", cs)
	}
}

// TestCacheImmutable: a VCEK is kept forever.
func TestCacheImmutable(t *testing.T) {
	f := newFleet(t)
	e := newEnv(t, f.kds, nil, nil)
	ctx := context.Background()
	if _, err := e.cache.Get(ctx, f.vceks[3]); err != nil {
		t.Fatal(err)
	}
	e.clock.Advance(10 * 365 * 24 * time.Hour)
	if _, err := e.cache.Get(ctx, f.vceks[3]); err != nil || e.srv.Stats().Requests != 1 {
		t.Fatalf("%v after %d KDS requests, want the cached VCEK", err, e.srv.Stats().Requests)
	}
}

// TestCachePersists: responses kept in a DirStore are served by a new cache (a restart) with
// the upstream unreachable, with the same digests, for as long as they are valid.
func TestCachePersists(t *testing.T) {
	f := newFleet(t)
	_, intel := intelDocs(t, func(o *fakeintel.CollateralOptions) { o.PCKCRL.NextUpdate = start.Add(time.Hour) })
	dir := t.TempDir()
	store, err := collateral.OpenDirStore(dir)
	if err != nil {
		t.Fatal(err)
	}
	docs := append([]*collateral.Response{f.docs[len(f.docs)-1]}, intel...)
	e := newEnv(t, func(c *collateraltest.Clock) (*collateraltest.Server, error) {
		return collateraltest.NewServer(docs, collateraltest.Options{Clock: c})
	}, store, nil)
	ctx := context.Background()
	for _, d := range docs {
		if _, err := e.cache.Get(ctx, d.URL); err != nil {
			t.Fatal(err)
		}
	}
	e.srv.Close()

	// A restarted verifier: a new store handle and cache; the upstream refuses every connection.
	restart := func(at time.Time) *collateral.Cache {
		store, err := collateral.OpenDirStore(dir)
		if err != nil {
			t.Fatal(err)
		}
		fetcher, err := collateral.NewFetcher(collateral.FetcherConfig{Client: e.srv.Client(), Routes: e.srv.Routes()})
		if err != nil {
			t.Fatal(err)
		}
		c, err := collateral.NewCache(collateral.CacheConfig{Upstream: fetcher, Store: store, Clock: collateraltest.NewClock(at)})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	c := restart(start.Add(30 * time.Minute))
	for _, d := range docs {
		r, err := c.Get(ctx, d.URL)
		if err != nil || r.Digest() != d.Digest() {
			t.Fatalf("%s after a restart: %v", d.URL, err)
		}
	}
	if cs := c.Stats(); cs.StoreHits != uint64(len(docs)) || cs.Fetches != 0 {
		t.Errorf("stats %+v, want every document from the store", cs)
	}
	// Two hours on, the PCK CRL is stale and cannot be refetched; the VCEK is still served.
	c = restart(start.Add(2 * time.Hour))
	if _, err := c.Get(ctx, intel[2].URL); !errors.Is(err, collateral.ErrUnavailable) {
		t.Fatalf("stale PCK CRL with the upstream down: %v, want ErrUnavailable", err)
	}
	if _, err := c.Get(ctx, docs[0].URL); err != nil {
		t.Fatalf("VCEK: %v", err)
	}

	// A corrupt blob is not served: the cache refetches and the store is repaired.
	blobs, _ := filepath.Glob(filepath.Join(dir, "blobs", "*"))
	for _, b := range blobs {
		data, err := os.ReadFile(b)
		if err != nil {
			t.Fatal(err)
		}
		data[len(data)/2] ^= 1
		if err := os.WriteFile(b, data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	srv, err := collateraltest.NewServer(docs, collateraltest.Options{Clock: collateraltest.NewClock(start)})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	fetcher, err := collateral.NewFetcher(collateral.FetcherConfig{Client: srv.Client(), Routes: srv.Routes()})
	if err != nil {
		t.Fatal(err)
	}
	c, err = collateral.NewCache(collateral.CacheConfig{Upstream: fetcher, Store: store, Clock: collateraltest.NewClock(start)})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if r, err := c.Get(ctx, docs[0].URL); err != nil || r.Digest() != docs[0].Digest() {
		t.Fatalf("after corruption: %v", err)
	}
	if cs := c.Stats(); cs.StoreErrors != 1 || cs.Fetches != 1 {
		t.Errorf("stats %+v, want the corrupt blob reported and the VCEK refetched", cs)
	}
	if data, err := store.Get(ctx, docs[0].URL); err != nil || string(data) != string(docs[0].Canonical()) {
		t.Errorf("the store was not repaired: %v", err)
	}
}

// TestCacheCallerGivesUp: a caller whose context ends stops waiting at once; the fetch goes on
// for the others, and its result fills the cache.
func TestCacheCallerGivesUp(t *testing.T) {
	f := newFleet(t)
	e := newEnv(t, f.kds, nil, withBudget(collateraltest.KDSInterval, 1))
	if err := e.get(f.vceks[0]); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { _, err := e.cache.Get(ctx, f.vceks[1]); done <- err }()
	for e.clock.Sleeping() == 0 { // the fetch waits for the KDS budget
		<-e.clock.Changed()
	}
	cancel()
	if err := <-done; !errors.Is(err, collateral.ErrUnavailable) || !errors.Is(err, context.Canceled) {
		t.Fatalf("%v, want ErrUnavailable and context.Canceled", err)
	}
	if e.cache.Stats().InFlight != 1 {
		t.Fatal("the fetch stopped with its caller")
	}
	errs, _ := e.drive(1, func(int) error { return e.get(f.vceks[1]) })
	if errs[0] != nil || e.srv.Served(f.vceks[1]) != 1 {
		t.Fatalf("%v; served %d times, want once", errs[0], e.srv.Served(f.vceks[1]))
	}
}

// TestCacheClose: Close ends the fetches still waiting; their callers get ErrUnavailable.
func TestCacheClose(t *testing.T) {
	f := newFleet(t)
	e := newEnv(t, f.kds, nil, withBudget(collateraltest.KDSInterval, 1))
	if err := e.get(f.vceks[0]); err != nil {
		t.Fatal(err)
	}
	done := make(chan error)
	go func() { done <- e.get(f.vceks[1]) }()
	for e.clock.Sleeping() == 0 {
		<-e.clock.Changed()
	}
	e.cache.Close()
	if err := <-done; !errors.Is(err, collateral.ErrUnavailable) {
		t.Fatalf("%v, want ErrUnavailable", err)
	}
	if err := e.get(f.vceks[0]); err != nil {
		t.Fatalf("a hit after Close: %v", err)
	}
}

// TestCacheUndatable: a document whose validity cannot be read is returned but not kept.
func TestCacheUndatable(t *testing.T) {
	u := kds.CrlLinkByKey("Genoa", abi.VcekReportSigner)
	docs := []*collateral.Response{{URL: u, Status: http.StatusOK, Body: []byte("not a CRL")}}
	store := collateral.NewMemoryStore()
	e := newEnv(t, func(c *collateraltest.Clock) (*collateraltest.Server, error) {
		return collateraltest.NewServer(docs, collateraltest.Options{Clock: c})
	}, store, nil)
	for i := 1; i <= 2; i++ {
		r, err := e.cache.Get(context.Background(), u)
		if err != nil || string(r.Body) != "not a CRL" || e.srv.Served(u) != i {
			t.Fatalf("Get %d: %v, served %d", i, err, e.srv.Served(u))
		}
	}
	if _, err := store.Get(context.Background(), u); !errors.Is(err, collateral.ErrNotStored) {
		t.Fatalf("store: %v, want ErrNotStored", err)
	}
}

type sourceFunc func(ctx context.Context, url string) (*collateral.Response, error)

func (f sourceFunc) Get(ctx context.Context, url string) (*collateral.Response, error) {
	return f(ctx, url)
}

// TestCacheUpstreamMisbehaves: an upstream that panics, or answers with a non-200 or another
// URL's response, is a failure wrapping ErrUnavailable, never a panic or a cached answer.
func TestCacheUpstreamMisbehaves(t *testing.T) {
	const u = "https://kdsintf.amd.com/vcek/v1/Milan/cert_chain"
	for name, src := range map[string]sourceFunc{
		"panic": func(context.Context, string) (*collateral.Response, error) { panic("boom") },
		"nil":   func(context.Context, string) (*collateral.Response, error) { return nil, nil },
		"404": func(_ context.Context, u string) (*collateral.Response, error) {
			return &collateral.Response{URL: u, Status: 404}, nil
		},
		"other URL": func(context.Context, string) (*collateral.Response, error) {
			return &collateral.Response{URL: "x", Status: 200}, nil
		},
		"plain err": func(context.Context, string) (*collateral.Response, error) { return nil, errors.New("plain") },
	} {
		t.Run(name, func(t *testing.T) {
			c, err := collateral.NewCache(collateral.CacheConfig{Upstream: src, Clock: collateraltest.NewClock(start)})
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			if _, err := c.Get(context.Background(), u); !errors.Is(err, collateral.ErrUnavailable) {
				t.Fatalf("%v, want ErrUnavailable", err)
			}
		})
	}
	if _, err := collateral.NewCache(collateral.CacheConfig{}); err == nil {
		t.Fatal("a cache without upstream was accepted")
	}
}

// TestCacheStoreRollback: a document never goes backwards on the on-demand path either. A TCB info
// with tcbEvaluationDataNumber 19 is fetched into a Store; after a restart over the same Store
// and its expiry, the fake PCS answers a cold-cache miss with a freshly issued TCB info with 18,
// or with 19 but an earlier issue date: both are refused (ErrUnavailable and ErrOlder, naming
// the URL and both values, counted as fetch errors) and the stored document stays; with the
// document itself lost from the Store, the Store's mark still refuses them. The same number
// issued later is accepted. Before the expiry the stored document is served without fetching.
func TestCacheStoreRollback(t *testing.T) {
	ctx := context.Background()
	for name, backend := range storeBackends(t) {
		t.Run(name, func(t *testing.T) {
			b := backend(t)
			p, docs := intelDocs(t, func(o *fakeintel.CollateralOptions) {
				o.TCBInfo.EvaluationDataNumber = 19
				o.TCBInfo.NextUpdate = start.Add(2 * time.Hour)
			})
			tcb := docs[0].URL
			version := func(issued time.Time, n int) *collateral.Response {
				t.Helper()
				o := fakeintel.DefaultCollateralOptions(start)
				o.TCBInfo.IssueDate, o.TCBInfo.NextUpdate, o.TCBInfo.EvaluationDataNumber = issued, issued.Add(30*24*time.Hour), n
				rs, err := p.Collateral(o)
				if err != nil {
					t.Fatal(err)
				}
				return rs[0]
			}
			e := newEnv(t, pcsServer(docs), b.open(t), nil)
			if _, err := e.cache.Get(ctx, tcb); err != nil {
				t.Fatal(err)
			}
			restart := func() (*collateral.Cache, collateral.Store) {
				t.Helper()
				s := b.open(t)
				c, err := collateral.NewCache(collateral.CacheConfig{Upstream: e.fetcher, Store: s, Clock: e.clock})
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { c.Close() })
				return c, s
			}
			stored := func(s collateral.Store, want *collateral.Response) {
				t.Helper()
				if got, err := s.Get(ctx, tcb); err != nil || string(got) != string(want.Canonical()) {
					t.Fatalf("the store does not hold the expected TCB info: %v", err)
				}
			}

			// Before the expiry, the stored 19 is served by a restarted cache without fetching.
			if err := e.srv.Replace(version(start, 18)); err != nil {
				t.Fatal(err)
			}
			c, _ := restart()
			if r, err := c.Get(ctx, tcb); err != nil || r.Digest() != docs[0].Digest() || c.Stats().Fetches != 0 {
				t.Fatalf("before expiry: %v, %+v; want the stored TCB info, no fetch", err, c.Stats())
			}

			e.clock.Advance(3 * time.Hour) // the stored 19 has expired
			for _, tc := range []struct {
				name string
				resp *collateral.Response
				want []string
			}{
				{"lower number, issued later", version(e.clock.Now().Add(-time.Minute), 18), []string{"tcbEvaluationDataNumber 18", "is 19"}},
				{"same number, issued earlier", version(start.Add(-2*time.Hour), 19), []string{"issued " + start.Add(-2*time.Hour).Format(time.RFC3339), start.Add(-time.Hour).Format(time.RFC3339)}},
			} {
				if err := e.srv.Replace(tc.resp); err != nil {
					t.Fatal(err)
				}
				c, s := restart()
				_, err := c.Get(ctx, tcb)
				if !errors.Is(err, collateral.ErrUnavailable) || !errors.Is(err, collateral.ErrOlder) || !strings.Contains(err.Error(), tcb) {
					t.Fatalf("%s: %v; want ErrUnavailable and ErrOlder naming the URL", tc.name, err)
				}
				for _, w := range tc.want {
					if !strings.Contains(err.Error(), w) {
						t.Errorf("%s: %q does not say %q", tc.name, err, w)
					}
				}
				if st := c.Stats(); st.Fetches != 1 || st.FetchErrors != 1 {
					t.Errorf("%s: stats %+v; want the refusal counted as a fetch error", tc.name, st)
				}
				stored(s, docs[0])
				if _, err := c.Refetch(ctx, tcb); !errors.Is(err, collateral.ErrOlder) {
					t.Errorf("%s: Refetch: %v, want ErrOlder", tc.name, err)
				}
			}

			if b.corrupt != nil {
				// The document is lost (unreadable); the Store's mark still refuses the 18.
				if err := e.srv.Replace(version(e.clock.Now().Add(-time.Minute), 18)); err != nil {
					t.Fatal(err)
				}
				b.corrupt(t, tcb)
				c, _ := restart()
				if _, err := c.Get(ctx, tcb); !errors.Is(err, collateral.ErrOlder) || !strings.Contains(err.Error(), "below the highest kept for this URL, 19") {
					t.Fatalf("document lost: %v; want the mark to refuse tcbEvaluationDataNumber 18", err)
				}
			}

			// The same number, issued later: kept.
			newer := version(e.clock.Now().Add(-time.Minute), 19)
			if err := e.srv.Replace(newer); err != nil {
				t.Fatal(err)
			}
			c, s := restart()
			if r, err := c.Get(ctx, tcb); err != nil || r.Digest() != newer.Digest() {
				t.Fatalf("same number, issued later: %v; want it served", err)
			}
			stored(s, newer)
		})
	}
}

// TestCacheStoredReplacement: once the held document has expired, a different one found in the
// Store (an offline import, or another verifier sharing it) replaces it only through OnReplace,
// with Update.Stored set, as a fetched replacement does; an older one is never used.
func TestCacheStoredReplacement(t *testing.T) {
	ctx := context.Background()
	p, docs := intelDocs(t, func(o *fakeintel.CollateralOptions) {
		o.TCBInfo.EvaluationDataNumber = 19
		o.TCBInfo.NextUpdate = start.Add(time.Hour)
	})
	tcb := docs[0]
	version := func(issued time.Time, n int) *collateral.Response { return tcbVersion(t, p, issued, 24*time.Hour, n) }
	for name, backend := range storeBackends(t) {
		t.Run(name, func(t *testing.T) {
			store := backend(t).open(t)
			if err := store.Put(ctx, tcb.URL, tcb.Canonical()); err != nil {
				t.Fatal(err)
			}
			clock := collateraltest.NewClock(start)
			var updates []collateral.Update
			var failReplace error
			c := airGappedCache(t, store, clock, &updates, &failReplace)
			get := func() (*collateral.Response, error) { return c.Get(ctx, tcb.URL) }

			if r, err := get(); err != nil || r.Digest() != tcb.Digest() || len(updates) != 0 {
				t.Fatalf("first document: %v, %d updates; want it served and no update", err, len(updates))
			}
			clock.Advance(2 * time.Hour) // it has expired, and the upstream cannot be reached
			if _, err := get(); !errors.Is(err, collateral.ErrUnavailable) || len(updates) != 0 {
				t.Fatalf("expired: %v, %d updates; want ErrUnavailable and no update", err, len(updates))
			}

			newer := version(clock.Now().Add(-time.Minute), 20)
			if err := store.Put(ctx, tcb.URL, newer.Canonical()); err != nil {
				t.Fatal(err)
			}
			// Recording fails: the caller is answered, but the replacement is not kept.
			failReplace = errors.New("the evidence log is down")
			for i := 1; i <= 2; i++ {
				if r, err := get(); err != nil || r.Digest() != newer.Digest() || len(updates) != i {
					t.Fatalf("recording fails, Get %d: %v, %d updates; want the stored document answered and OnReplace asked again", i, err, len(updates))
				}
			}
			failReplace = nil
			if r, err := get(); err != nil || r.Digest() != newer.Digest() {
				t.Fatalf("recorded: %v", err)
			}
			u := updates[len(updates)-1]
			if len(updates) != 3 || !u.Stored || u.URL != tcb.URL || u.Old.Digest() != tcb.Digest() || u.New.Digest() != newer.Digest() {
				t.Fatalf("update %+v (%d in all); want the stored replacement of the expired document", u, len(updates))
			}
			if _, err := get(); err != nil || len(updates) != 3 {
				t.Fatalf("kept: %v, %d updates; want it served from memory without another update", err, len(updates))
			}

			// An older document in the Store (evaluation number 19 again) never replaces the
			// expired 20.
			clock.Advance(25 * time.Hour)
			if err := store.Put(ctx, tcb.URL, version(clock.Now().Add(-time.Minute), 19).Canonical()); err != nil {
				t.Fatal(err)
			}
			if _, err := get(); !errors.Is(err, collateral.ErrUnavailable) || len(updates) != 3 {
				t.Fatalf("older stored document: %v, %d updates; want ErrUnavailable and no update", err, len(updates))
			}

			// A Store rolled back below the URL's mark: 21 was kept once (by another verifier
			// sharing the Store), the Store now holds a 20 issued later than the held one. It is
			// not older than the held document, but below the mark: never used.
			ms, ok := store.(collateral.MarkStore)
			if !ok {
				t.Fatalf("%T is no MarkStore", store)
			}
			v21, err := collateral.ValidityOf(version(clock.Now().Add(-time.Minute), 21))
			if err != nil {
				t.Fatal(err)
			}
			if err := ms.RaiseMark(ctx, tcb.URL, collateral.MarkOf(version(clock.Now().Add(-time.Minute), 21), v21)); err != nil {
				t.Fatal(err)
			}
			if err := store.Put(ctx, tcb.URL, version(clock.Now().Add(-time.Minute), 20).Canonical()); err != nil {
				t.Fatal(err)
			}
			if _, err := get(); !errors.Is(err, collateral.ErrUnavailable) || len(updates) != 3 {
				t.Fatalf("stored document below the mark: %v, %d updates; want ErrUnavailable and no update", err, len(updates))
			}
		})
	}
}

// TestCacheReload: Reload replaces a held document that has not expired by a newer one found in
// the Store (an import of a TCB recovery), through OnReplace with Update.Stored; never by an
// older one, and not when OnReplace fails.
func TestCacheReload(t *testing.T) {
	ctx := context.Background()
	p, docs := intelDocs(t, func(o *fakeintel.CollateralOptions) { o.TCBInfo.EvaluationDataNumber = 19 })
	tcb := docs[0]
	version := func(issued time.Time, n int) *collateral.Response {
		return tcbVersion(t, p, issued, 30*24*time.Hour, n)
	}
	for name, backend := range storeBackends(t) {
		t.Run(name, func(t *testing.T) {
			store := backend(t).open(t)
			if err := store.Put(ctx, tcb.URL, tcb.Canonical()); err != nil {
				t.Fatal(err)
			}
			var updates []collateral.Update
			var failReplace error
			c := airGappedCache(t, store, collateraltest.NewClock(start), &updates, &failReplace)
			held := func(want *collateral.Response) {
				t.Helper()
				if r, err := c.Get(ctx, tcb.URL); err != nil || r.Digest() != want.Digest() {
					t.Fatalf("Get: %v; want the document with evaluation number %v", err, want == tcb)
				}
			}
			reload := func(want int) {
				t.Helper()
				if n, err := c.Reload(ctx); err != nil || n != want {
					t.Fatalf("Reload: %d, %v; want %d replaced", n, err, want)
				}
			}
			held(tcb)
			reload(0) // the store holds what the cache holds
			if len(updates) != 0 {
				t.Fatalf("%d updates with nothing new", len(updates))
			}

			// A TCB recovery is imported while the held TCB info is still fresh.
			newer := version(start.Add(time.Minute), 20)
			if err := store.Put(ctx, tcb.URL, newer.Canonical()); err != nil {
				t.Fatal(err)
			}
			held(tcb) // a Get alone keeps serving the fresh held document
			failReplace = errors.New("the evidence log is down")
			reload(0)
			held(tcb)
			failReplace = nil
			reload(1)
			held(newer)
			if u := updates[len(updates)-1]; len(updates) != 2 || !u.Stored || u.Old.Digest() != tcb.Digest() || u.New.Digest() != newer.Digest() {
				t.Fatalf("updates %d, last %+v; want the stored replacement", len(updates), u)
			}

			// An older document written to the Store is never used, nor one issued with the held
			// one that expires sooner; each refusal is counted once, not at every Reload.
			for _, doc := range []*collateral.Response{
				version(start.Add(time.Hour), 19),
				tcbVersion(t, p, start.Add(time.Minute), 10*24*time.Hour, 20),
			} {
				if err := store.Put(ctx, tcb.URL, doc.Canonical()); err != nil {
					t.Fatal(err)
				}
				errs := c.Stats().StoreErrors
				reload(0)
				reload(0)
				held(newer)
				if len(updates) != 2 || c.Stats().StoreErrors != errs+1 {
					t.Fatalf("%d updates and %d store errors after a stored document no newer than the held one, want 2 and %d", len(updates), c.Stats().StoreErrors, errs+1)
				}
			}
		})
	}
}

// tcbVersion returns p's TCB info issued at issued, valid for valid, with tcbEvaluationDataNumber n.
func tcbVersion(t *testing.T, p *fakeintel.PKI, issued time.Time, valid time.Duration, n int) *collateral.Response {
	t.Helper()
	o := fakeintel.DefaultCollateralOptions(start)
	o.TCBInfo.IssueDate, o.TCBInfo.NextUpdate, o.TCBInfo.EvaluationDataNumber = issued, issued.Add(valid), n
	rs, err := p.Collateral(o)
	if err != nil {
		t.Fatal(err)
	}
	return rs[0]
}

// airGappedCache is the cache of an air-gapped verifier: documents arrive only through store.
// OnReplace appends to *updates and returns *fail.
func airGappedCache(t *testing.T, store collateral.Store, clock *collateraltest.Clock, updates *[]collateral.Update, fail *error) *collateral.Cache {
	t.Helper()
	c, err := collateral.NewCache(collateral.CacheConfig{
		Upstream: sourceFunc(func(context.Context, string) (*collateral.Response, error) {
			return nil, collateral.ErrUnavailable
		}),
		Store: store,
		Clock: clock,
		OnReplace: func(_ context.Context, u collateral.Update) error {
			*updates = append(*updates, u)
			return *fail
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// TestCacheCloseWaitsForRecording: Close returns only after a fetch that is recording its
// replacement (OnReplace) has finished, so that its owner does not close the evidence log under
// it; a miss after Close fails.
func TestCacheCloseWaitsForRecording(t *testing.T) {
	ctx := context.Background()
	p, docs := intelDocs(t, func(o *fakeintel.CollateralOptions) {
		o.TCBInfo.EvaluationDataNumber = 19
		o.TCBInfo.NextUpdate = start.Add(time.Hour)
	})
	tcb, newer := docs[0], tcbVersion(t, p, start.Add(time.Minute), 30*24*time.Hour, 20)
	store := collateral.NewMemoryStore()
	if err := store.Put(ctx, tcb.URL, tcb.Canonical()); err != nil {
		t.Fatal(err)
	}
	clock := collateraltest.NewClock(start)
	entered, canceled, finish := make(chan struct{}), make(chan struct{}), make(chan struct{})
	var recorded atomic.Bool
	c, err := collateral.NewCache(collateral.CacheConfig{
		Upstream: sourceFunc(func(context.Context, string) (*collateral.Response, error) { return newer, nil }),
		Store:    store,
		Clock:    clock,
		OnReplace: func(ctx context.Context, u collateral.Update) error {
			close(entered)
			<-ctx.Done() // Close has cancelled the fetch
			close(canceled)
			<-finish
			recorded.Store(true)
			return nil
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Get(ctx, tcb.URL); err != nil {
		t.Fatal(err)
	}
	clock.Advance(2 * time.Hour) // expired: the next Get fetches the newer one and records it
	go c.Get(ctx, tcb.URL)
	<-entered
	closed := make(chan struct{})
	go func() {
		c.Close()
		close(closed)
	}()
	<-canceled
	select {
	case <-closed:
		t.Fatal("Close returned while a replacement was being recorded")
	default:
	}
	close(finish)
	<-closed
	if !recorded.Load() {
		t.Fatal("Close returned before the replacement was recorded")
	}
	if _, err := c.Get(ctx, "https://api.trustedservices.intel.com/sgx/certification/v4/pckcrl?ca=processor&encoding=der"); !errors.Is(err, collateral.ErrUnavailable) {
		t.Fatalf("a miss after Close: %v, want ErrUnavailable", err)
	}
}
