package collateral_test

import (
	"context"
	"errors"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/proofline/proofline/attest/attesttest/fakeintel"
	"github.com/proofline/proofline/verifier/collateral"
	"github.com/proofline/proofline/verifier/collateral/collateraltest"
)

// refreshEnv is a Cache whose replacements are recorded, over a Fetcher and the fake PCS, with a
// Refresher, all on one fake clock.
type refreshEnv struct {
	clock   *collateraltest.Clock
	srv     *collateraltest.Server
	cache   *collateral.Cache
	ref     *collateral.Refresher
	mu      sync.Mutex
	updates []collateral.Update
	fail    error // OnReplace's answer
}

func newRefreshEnv(t *testing.T, docs []*collateral.Response, store collateral.Store) *refreshEnv {
	return newRefreshEnvEvery(t, docs, store, 72*time.Hour)
}

// newRefreshEnvEvery is newRefreshEnv with the Refresher's RefetchEvery.
func newRefreshEnvEvery(t *testing.T, docs []*collateral.Response, store collateral.Store, every time.Duration) *refreshEnv {
	t.Helper()
	e := &refreshEnv{clock: collateraltest.NewClock(start)}
	srv, err := collateraltest.NewPCS(docs, e.clock)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Close)
	e.srv = srv
	fetcher, err := collateral.NewFetcher(collateral.FetcherConfig{Client: srv.Client(), Clock: e.clock, Routes: srv.Routes()})
	if err != nil {
		t.Fatal(err)
	}
	e.cache, err = collateral.NewCache(collateral.CacheConfig{Upstream: fetcher, Store: store, Clock: e.clock,
		OnReplace: func(_ context.Context, u collateral.Update) error {
			e.mu.Lock()
			defer e.mu.Unlock()
			if e.fail != nil {
				return e.fail
			}
			e.updates = append(e.updates, u)
			return nil
		}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.cache.Close() })
	if e.ref, err = collateral.NewRefresher(collateral.RefresherConfig{Cache: e.cache, Clock: e.clock, Interval: time.Hour, Horizon: 24 * time.Hour, RefetchEvery: every}); err != nil {
		t.Fatal(err)
	}
	return e
}

func (e *refreshEnv) recorded() []collateral.Update {
	e.mu.Lock()
	defer e.mu.Unlock()
	return slices.Clone(e.updates)
}

// TestRefresherReplacesBeforeExpiry: with a pinned clock, a TCB info whose nextUpdate comes
// within the horizon is refetched and, when the vendor has published a new one (a TCB recovery:
// tcbEvaluationDataNumber 18 → 19), replaced before it expires; OnReplace sees the old and the
// new document first, and Gets serve the new one without asking upstream. Documents far from
// expiry are not asked for, and an unchanged answer is no replacement.
func TestRefresherReplacesBeforeExpiry(t *testing.T) {
	expiry := start.Add(48 * time.Hour)
	p, docs := intelDocs(t, func(o *fakeintel.CollateralOptions) { o.TCBInfo.NextUpdate = expiry })
	tcb, qe := docs[0].URL, docs[1].URL
	e := newRefreshEnv(t, docs, nil)
	ctx := context.Background()
	for _, d := range docs {
		if _, err := e.cache.Get(ctx, d.URL); err != nil {
			t.Fatal(err)
		}
	}
	if u := e.ref.RefreshOnce(ctx); len(u) != 0 || e.srv.Stats().Requests != len(docs) {
		t.Fatalf("a pass two days before expiry refetched: %d updates, %d requests", len(u), e.srv.Stats().Requests)
	}

	// The vendor publishes a new TCB info (recovery); 12 hours before the old one's expiry the
	// refresher replaces it.
	o := fakeintel.DefaultCollateralOptions(start.Add(36 * time.Hour))
	o.TCBInfo.EvaluationDataNumber = 19
	fresh, err := p.Collateral(o)
	if err != nil {
		t.Fatal(err)
	}
	if err := e.srv.Replace(fresh[0]); err != nil {
		t.Fatal(err)
	}
	e.clock.Advance(36 * time.Hour)
	updates := e.ref.RefreshOnce(ctx)
	if len(updates) != 1 || updates[0].URL != tcb {
		t.Fatalf("updates %+v, want the TCB info", updates)
	}
	u := updates[0]
	if u.Old.Digest() != docs[0].Digest() || u.New.Digest() != fresh[0].Digest() ||
		!u.OldValidity.NextUpdate.Equal(expiry) || !u.NewValidity.NextUpdate.After(expiry) || u.NewValidity.Kind != "tcb_info" {
		t.Fatalf("update %s → %s, validity %+v → %+v", u.Old.Digest(), u.New.Digest(), u.OldValidity, u.NewValidity)
	}
	if n, ok := collateral.TCBEvaluationDataNumber(u.New); !ok || n != 19 {
		t.Fatalf("new tcbEvaluationDataNumber %d %v", n, ok)
	}
	if n, ok := collateral.TCBEvaluationDataNumber(u.Old); !ok || n != 18 {
		t.Fatalf("old tcbEvaluationDataNumber %d %v", n, ok)
	}
	if rec := e.recorded(); len(rec) != 1 || rec[0].New.Digest() != fresh[0].Digest() {
		t.Fatalf("OnReplace saw %d updates", len(rec))
	}
	if !e.clock.Now().Before(expiry) {
		t.Fatal("the replacement came after the expiry")
	}
	// Only the TCB info was due: the QE identity and the CRLs expire in 30 days or later.
	if got := e.srv.Served(tcb); got != 2 {
		t.Fatalf("TCB info served %d times, want 2", got)
	}
	if got := e.srv.Served(qe); got != 1 {
		t.Fatalf("QE identity served %d times, want 1", got)
	}
	requests := e.srv.Stats().Requests
	if r, err := e.cache.Get(ctx, tcb); err != nil || r.Digest() != fresh[0].Digest() || e.srv.Stats().Requests != requests {
		t.Fatalf("Get after the refresh: %v, %d requests (was %d)", err, e.srv.Stats().Requests, requests)
	}

	// RefetchEvery (72 hours) after it first saw them, the refresher asks for the other dated
	// documents again (not the TCB info, asked 36 hours ago); the vendor answers what the cache
	// holds, which is no replacement.
	e.clock.Advance(36 * time.Hour)
	if u := e.ref.RefreshOnce(ctx); len(u) != 0 || len(e.recorded()) != 1 {
		t.Fatalf("unchanged documents replaced: %+v", u)
	}
	if e.srv.Served(qe) != 2 || e.srv.Served(tcb) != 2 {
		t.Fatalf("after 72 hours: QE identity served %d times, TCB info %d; want 2 and 2 (RefetchEvery)", e.srv.Served(qe), e.srv.Served(tcb))
	}
}

// TestRefresherFailures: a failed refresh keeps the cached copy (served until it expires),
// is remembered with its error until a later refresh succeeds, and never stops the other
// documents; an older document from upstream, an undatable one and a failed OnReplace are not
// kept either.
func TestRefresherFailures(t *testing.T) {
	p, docs := intelDocs(t, func(o *fakeintel.CollateralOptions) {
		o.TCBInfo.NextUpdate = start.Add(12 * time.Hour)
		o.PCKCRL.NextUpdate = start.Add(12 * time.Hour)
	})
	tcb, pck := docs[0].URL, docs[2].URL
	e := newRefreshEnv(t, docs, nil)
	ctx := context.Background()
	for _, d := range docs {
		if _, err := e.cache.Get(ctx, d.URL); err != nil {
			t.Fatal(err)
		}
	}
	o := fakeintel.DefaultCollateralOptions(start.Add(time.Hour))
	fresh, err := p.Collateral(o)
	if err != nil {
		t.Fatal(err)
	}
	if err := e.srv.Replace(fresh[0], fresh[2]); err != nil {
		t.Fatal(err)
	}
	// Issued an hour before start, expiring 12 hours after: due once at most half of the
	// validity (6.5 hours) is left.
	e.clock.Advance(5 * time.Hour)
	if u := e.ref.RefreshOnce(ctx); len(u) != 0 || e.srv.Stats().Requests != len(docs) {
		t.Fatalf("refetched with 7 of 13 hours left: %+v", u)
	}
	e.clock.Advance(time.Hour)

	// PCS fails for the TCB info; the PCK CRL is still replaced.
	e.srv.Inject(collateraltest.Fault{URL: tcb, Status: http.StatusInternalServerError})
	updates := e.ref.RefreshOnce(ctx)
	if len(updates) != 1 || updates[0].URL != pck {
		t.Fatalf("updates %+v, want the PCK CRL only", updates)
	}
	f, failed := e.ref.Failure(tcb)
	var se *collateral.StatusError
	if !failed || !errors.As(f.Err, &se) || se.Status != http.StatusInternalServerError || !f.At.Equal(e.clock.Now()) {
		t.Fatalf("failure %+v %v", f, failed)
	}
	if r, err := e.cache.Get(ctx, tcb); err != nil || r.Digest() != docs[0].Digest() {
		t.Fatalf("the cached TCB info is not served after a failed refresh: %v", err)
	}

	// OnReplace fails: nothing is kept, and the failure is the refresh's.
	e.mu.Lock()
	e.fail = errors.New("log unavailable")
	e.mu.Unlock()
	if u := e.ref.RefreshOnce(ctx); len(u) != 0 {
		t.Fatalf("kept despite OnReplace failing: %+v", u)
	}
	if f, failed := e.ref.Failure(tcb); !failed || f.Err.Error() != "log unavailable" {
		t.Fatalf("failure %+v", f)
	}
	if r, _ := e.cache.Get(ctx, tcb); r.Digest() != docs[0].Digest() {
		t.Fatal("the TCB info was replaced although OnReplace failed")
	}
	e.mu.Lock()
	e.fail = nil
	e.mu.Unlock()

	// A mirror serving an older TCB info: refused with ErrOlder.
	older, err := p.Collateral(fakeintel.DefaultCollateralOptions(start.Add(-48 * time.Hour)))
	if err != nil {
		t.Fatal(err)
	}
	if err := e.srv.Replace(older[0]); err != nil {
		t.Fatal(err)
	}
	if _, err := e.cache.Refetch(ctx, tcb); !errors.Is(err, collateral.ErrOlder) {
		t.Fatalf("older TCB info: %v, want ErrOlder", err)
	}
	// An undatable answer.
	e.srv.Inject(collateraltest.Fault{URL: tcb, Body: []byte(`{"tcbInfo":{}}`)})
	if _, err := e.cache.Refetch(ctx, tcb); err == nil {
		t.Fatal("an undatable TCB info was kept")
	}

	// The vendor recovers: the next pass replaces the TCB info and clears the failure.
	if err := e.srv.Replace(fresh[0]); err != nil {
		t.Fatal(err)
	}
	e.clock.Advance(time.Hour)
	if u := e.ref.RefreshOnce(ctx); len(u) != 1 || u[0].URL != tcb {
		t.Fatalf("updates %+v, want the TCB info", u)
	}
	if _, failed := e.ref.Failure(tcb); failed {
		t.Fatal("the failure was not cleared")
	}
	if n := len(e.recorded()); n != 2 {
		t.Fatalf("%d replacements recorded, want 2", n)
	}
}

// TestCacheReplacesOnDemand: once a document expires, the Get that fetches a different one
// calls OnReplace with both; when OnReplace fails the caller still gets the new document, the
// old one stays cached and the next Get tries again.
func TestCacheReplacesOnDemand(t *testing.T) {
	p, docs := intelDocs(t, func(o *fakeintel.CollateralOptions) { o.PCKCRL.NextUpdate = start.Add(time.Hour) })
	pck := docs[2].URL
	e := newRefreshEnv(t, docs, nil)
	ctx := context.Background()
	if _, err := e.cache.Get(ctx, pck); err != nil {
		t.Fatal(err)
	}
	fresh, err := p.Collateral(fakeintel.DefaultCollateralOptions(start.Add(2 * time.Hour)))
	if err != nil {
		t.Fatal(err)
	}
	if err := e.srv.Replace(fresh[2]); err != nil {
		t.Fatal(err)
	}
	e.clock.Advance(2 * time.Hour)
	e.mu.Lock()
	e.fail = errors.New("log unavailable")
	e.mu.Unlock()
	if r, err := e.cache.Get(ctx, pck); err != nil || r.Digest() != fresh[2].Digest() {
		t.Fatalf("Get with OnReplace failing: %v", err)
	}
	if d := e.cache.Documents(); len(d) != 1 || !d[0].Validity.NextUpdate.Equal(start.Add(time.Hour)) {
		t.Fatalf("documents %+v, want the old PCK CRL kept", d)
	}
	e.mu.Lock()
	e.fail = nil
	e.mu.Unlock()
	if r, err := e.cache.Get(ctx, pck); err != nil || r.Digest() != fresh[2].Digest() {
		t.Fatal(err)
	}
	rec := e.recorded()
	if len(rec) != 1 || rec[0].Old.Digest() != docs[2].Digest() || rec[0].New.Digest() != fresh[2].Digest() || rec[0].NewValidity.Kind != "crl" {
		t.Fatalf("recorded %+v", rec)
	}
	if _, ok := collateral.TCBEvaluationDataNumber(rec[0].New); ok {
		t.Fatal("a CRL has a tcbEvaluationDataNumber")
	}
}

// TestRefresherRun: Run makes a pass at once and then one per Interval on the clock; it stops
// when its context ends. Nothing waits in real time: the test advances the fake clock whenever
// Run sleeps on it.
func TestRefresherRun(t *testing.T) {
	p, docs := intelDocs(t, func(o *fakeintel.CollateralOptions) { o.TCBInfo.NextUpdate = start.Add(48 * time.Hour) })
	tcb := docs[0].URL
	e := newRefreshEnv(t, docs, nil)
	ctx, cancel := context.WithCancel(context.Background())
	if _, err := e.cache.Get(ctx, tcb); err != nil {
		t.Fatal(err)
	}
	fresh, err := p.Collateral(fakeintel.DefaultCollateralOptions(start.Add(time.Hour)))
	if err != nil {
		t.Fatal(err)
	}
	if err := e.srv.Replace(fresh[0]); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { e.ref.Run(ctx); close(done) }()
	// Hourly passes: the TCB info comes within the 24-hour horizon after 24 hours.
	for {
		<-e.clock.Changed()
		if e.clock.Sleeping() != 1 {
			continue
		}
		// Run is asleep between passes.
		if len(e.recorded()) > 0 {
			break
		}
		e.clock.AdvanceToNext()
	}
	if got := e.clock.Now(); !got.Equal(start.Add(24*time.Hour)) || e.srv.Served(tcb) != 2 {
		t.Fatalf("replaced at %s after %d fetches, want at %s after 2", got, e.srv.Served(tcb), start.Add(24*time.Hour))
	}
	cancel()
	<-done
}

// TestCacheWarm: a new cache over a DirStore (a restart) lists, through Warm, what the earlier
// one kept, fresh and stale, so that the refresher and readiness see it.
func TestCacheWarm(t *testing.T) {
	_, docs := intelDocs(t, func(o *fakeintel.CollateralOptions) { o.PCKCRL.NextUpdate = start.Add(time.Hour) })
	store, err := collateral.OpenDirStore(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	e := newRefreshEnv(t, docs, store)
	ctx := context.Background()
	for _, d := range docs {
		if _, err := e.cache.Get(ctx, d.URL); err != nil {
			t.Fatal(err)
		}
	}
	e2 := newRefreshEnv(t, docs, store)
	e2.clock.Advance(2 * time.Hour)
	if len(e2.cache.Documents()) != 0 {
		t.Fatal("a new cache holds documents before Warm")
	}
	n, err := e2.cache.Warm(ctx)
	if err != nil || n != len(docs) {
		t.Fatalf("Warm: %d, %v", n, err)
	}
	got := e2.cache.Documents()
	if len(got) != len(docs) {
		t.Fatalf("documents %+v", got)
	}
	for _, d := range got {
		if d.URL == docs[2].URL && d.Validity.Fresh(e2.clock.Now()) {
			t.Errorf("the PCK CRL is fresh after its nextUpdate: %+v", d)
		}
	}
	if e2.srv.Stats().Requests != 0 {
		t.Fatal("Warm asked upstream")
	}
	set := collateral.Set{}
	if err := set.Add(docs...); err != nil {
		t.Fatal(err)
	}
	if sd := set.Documents(); len(sd) != len(docs) || sd[0].URL > sd[1].URL {
		t.Fatalf("Set.Documents %+v", sd)
	}
}

// TestRefresherTCBRecovery: with a pinned clock, the fake PCS serves a TCB info with a higher
// tcbEvaluationDataNumber (18 → 19) and a new top level; the refresh pass that replaces it reports
// the recovery once to every subscriber (with the previous and new number and the new levels'
// date), however often the replacement is observed, and a subscriber that panics stops none of
// the others. A re-issued document with the same number, and a CRL, are no recovery; a document
// whose number went backwards is refused (ErrOlder) however it is dated.
func TestRefresherTCBRecovery(t *testing.T) {
	expiry := start.Add(48 * time.Hour)
	p, docs := intelDocs(t, func(o *fakeintel.CollateralOptions) { o.TCBInfo.NextUpdate = expiry; o.QEIdentity.NextUpdate = expiry })
	tcb, qe := docs[0].URL, docs[1].URL
	e := newRefreshEnv(t, docs, nil)
	ctx := context.Background()
	for _, d := range docs {
		if _, err := e.cache.Get(ctx, d.URL); err != nil {
			t.Fatal(err)
		}
	}
	var mu sync.Mutex
	var got, got2 []collateral.TCBRecovery
	e.ref.SubscribeTCBRecovery(func(_ context.Context, r collateral.TCBRecovery) { mu.Lock(); got = append(got, r); mu.Unlock() })
	e.ref.SubscribeTCBRecovery(func(context.Context, collateral.TCBRecovery) { panic("alerting bug") })
	e.ref.SubscribeTCBRecovery(func(_ context.Context, r collateral.TCBRecovery) { mu.Lock(); got2 = append(got2, r); mu.Unlock() })

	recoveryDate := start.Add(30 * time.Hour)
	o := fakeintel.DefaultCollateralOptions(start.Add(36 * time.Hour))
	o.TCBInfo.EvaluationDataNumber = 19
	top := o.TCBInfo.TCBLevels[0]
	top.TDXComponents[0]++
	top.Date = recoveryDate
	o.TCBInfo.TCBLevels[0].Status = "OutOfDate"
	o.TCBInfo.TCBLevels = append([]fakeintel.TCBLevel{top}, o.TCBInfo.TCBLevels...)
	fresh, err := p.Collateral(o) // the QE identity is re-issued with the same number 18
	if err != nil {
		t.Fatal(err)
	}
	if err := e.srv.Replace(fresh[0], fresh[1]); err != nil {
		t.Fatal(err)
	}
	e.clock.Advance(36 * time.Hour)
	updates := e.ref.RefreshOnce(ctx) // in URL order
	if len(updates) != 2 || updates[0].URL != qe || updates[1].URL != tcb {
		t.Fatalf("updates %+v, want the QE identity and the TCB info", updates)
	}
	updates[0], updates[1] = updates[1], updates[0]
	mu.Lock()
	if len(got) != 1 || len(got2) != 1 {
		t.Fatalf("recoveries reported %d and %d times, want once each", len(got), len(got2))
	}
	r := got[0]
	mu.Unlock()
	if r.URL != tcb || r.Kind != "tcb_info" || r.Previous != 18 || r.New != 19 || !r.TCBDate.Equal(recoveryDate) ||
		!r.IssuedAt.Equal(updates[0].NewValidity.IssuedAt) || r.Update.New.Digest() != fresh[0].Digest() {
		t.Fatalf("recovery %+v", r)
	}
	// Observed again (the service's OnReplace observes the same replacement): reported once.
	if rec, ok := e.ref.Observe(ctx, updates[0]); !ok || rec.New != 19 {
		t.Fatalf("Observe: %+v %v", rec, ok)
	}
	if _, ok := e.ref.Observe(ctx, updates[1]); ok {
		t.Fatal("a QE identity re-issued with the same number is a recovery")
	}
	mu.Lock()
	if len(got) != 1 {
		t.Fatalf("reported %d times after a second observation", len(got))
	}
	mu.Unlock()
	if _, ok := collateral.RecoveryOf(collateral.Update{URL: docs[2].URL, Old: docs[2], New: fresh[2]}); ok {
		t.Fatal("a CRL is a recovery")
	}
	if _, ok := collateral.RecoveryOf(collateral.Update{URL: tcb, New: fresh[0]}); ok {
		t.Fatal("a first document is a recovery")
	}

	// The configured callback sees recoveries observed by another Refresher.
	var cfgGot []collateral.TCBRecovery
	other, err := collateral.NewRefresher(collateral.RefresherConfig{Cache: e.cache, Clock: e.clock,
		OnTCBRecovery: func(_ context.Context, r collateral.TCBRecovery) { cfgGot = append(cfgGot, r) }})
	if err != nil {
		t.Fatal(err)
	}
	other.Observe(ctx, updates[0])
	if len(cfgGot) != 1 || cfgGot[0].New != 19 {
		t.Fatalf("OnTCBRecovery saw %+v", cfgGot)
	}

	// A mirror serving a later-dated TCB info with number 18 again: refused, the 19 stays.
	back := fakeintel.DefaultCollateralOptions(start.Add(40 * time.Hour))
	back.TCBInfo.EvaluationDataNumber = 18
	stale, err := p.Collateral(back)
	if err != nil {
		t.Fatal(err)
	}
	if err := e.srv.Replace(stale[0]); err != nil {
		t.Fatal(err)
	}
	e.clock.Advance(4 * time.Hour)
	if _, err := e.cache.Refetch(ctx, tcb); !errors.Is(err, collateral.ErrOlder) || !strings.Contains(err.Error(), "tcbEvaluationDataNumber 18") {
		t.Fatalf("a lower tcbEvaluationDataNumber: %v, want ErrOlder", err)
	}
	if r, err := e.cache.Get(ctx, tcb); err != nil || r.Digest() != fresh[0].Digest() {
		t.Fatalf("the recovered TCB info is not kept: %v", err)
	}
}

// LatestTCBDate reads the newest level of a TCB info (module identities included) or QE identity.
func TestLatestTCBDate(t *testing.T) {
	for _, c := range []struct {
		body string
		want string
	}{
		{`{"tcbInfo":{"tcbLevels":[{"tcbDate":"2026-01-01T00:00:00Z"},{"tcbDate":"2026-03-01T00:00:00Z"}]}}`, "2026-03-01T00:00:00Z"},
		{`{"tcbInfo":{"tcbLevels":[{"tcbDate":"2026-01-01T00:00:00Z"}],"tdxModuleIdentities":[{"tcbLevels":[{"tcbDate":"2026-05-01T00:00:00Z"}]}]}}`, "2026-05-01T00:00:00Z"},
		{`{"enclaveIdentity":{"tcbLevels":[{"tcbDate":"bad"},{"tcbDate":"2025-01-01T00:00:00Z"}]}}`, "2025-01-01T00:00:00Z"},
		{`{"tcbInfo":{"tcbLevels":[{"tcbDate":""}]}}`, ""},
		{`not json`, ""},
	} {
		d, ok := collateral.LatestTCBDate(&collateral.Response{Body: []byte(c.body)})
		if ok != (c.want != "") || (ok && d.Format(time.RFC3339) != c.want) {
			t.Errorf("%s: %v %v, want %q", c.body, d, ok, c.want)
		}
	}
}

// gatedSource answers each Get with the next document of its queue, waiting first for a value on
// gate when the document's slot says so.
type gatedSource struct {
	mu    sync.Mutex
	queue []*collateral.Response
	gates []chan struct{}
	asked chan struct{}
}

func (s *gatedSource) Get(ctx context.Context, url string) (*collateral.Response, error) {
	s.mu.Lock()
	r, g := s.queue[0], s.gates[0]
	s.queue, s.gates = s.queue[1:], s.gates[1:]
	s.mu.Unlock()
	if g != nil {
		s.asked <- struct{}{}
		select {
		case <-g:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	return r, nil
}

// TestRefetchEarlierNextUpdate: Refetch refuses an answer that is not older than the held TCB info
// (same number, a later issue date) but expires before it, judged against the document held when
// the answer is kept, not the one held when it was asked for: here another Refetch replaced the
// held document while the first waited for its answer.
func TestRefetchEarlierNextUpdate(t *testing.T) {
	p, docs := intelDocs(t, func(o *fakeintel.CollateralOptions) { o.TCBInfo.NextUpdate = start.Add(12 * time.Hour) })
	tcbAt := func(issued, next time.Time) *collateral.Response {
		o := fakeintel.DefaultCollateralOptions(start)
		o.TCBInfo.IssueDate, o.TCBInfo.NextUpdate = issued, next
		rs, err := p.Collateral(o)
		if err != nil {
			t.Fatal(err)
		}
		return rs[0]
	}
	a := docs[0]                                                   // issued start-1h, next start+12h
	b := tcbAt(start.Add(time.Hour), start.Add(30*24*time.Hour))   // the concurrent replacement
	c := tcbAt(start.Add(2*time.Hour), start.Add(20*time.Hour))    // later than a in every way; expires before b
	d := tcbAt(start.Add(3*time.Hour), start.Add(29*24*time.Hour)) // issued after b, expires before it
	gate := make(chan struct{})
	src := &gatedSource{queue: []*collateral.Response{a, c, b, d}, gates: []chan struct{}{nil, gate, nil, nil}, asked: make(chan struct{})}
	clock := collateraltest.NewClock(start)
	cache, err := collateral.NewCache(collateral.CacheConfig{Upstream: src, Clock: clock})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cache.Close() })
	ctx := context.Background()
	if r, err := cache.Get(ctx, a.URL); err != nil || r.Digest() != a.Digest() {
		t.Fatalf("Get: %v", err)
	}
	first := make(chan error, 1)
	go func() {
		_, err := cache.Refetch(ctx, a.URL)
		first <- err
	}()
	<-src.asked // the first Refetch has read the held document (a) and waits for c
	if u, err := cache.Refetch(ctx, a.URL); err != nil || u == nil || u.New.Digest() != b.Digest() {
		t.Fatalf("the second Refetch did not replace a with b: %+v, %v", u, err)
	}
	close(gate)
	if err := <-first; !errors.Is(err, collateral.ErrOlder) || !strings.Contains(err.Error(), "before the cached one's") {
		t.Fatalf("an answer expiring before the held document: %v, want ErrOlder naming the next updates", err)
	}
	if r, err := cache.Get(ctx, a.URL); err != nil || r.Digest() != b.Digest() {
		t.Fatalf("the held document changed: %v", err)
	}
	// The same without a race.
	if _, err := cache.Refetch(ctx, a.URL); !errors.Is(err, collateral.ErrOlder) || !strings.Contains(err.Error(), "before the cached one's") {
		t.Fatalf("an answer issued later but expiring earlier: %v, want ErrOlder", err)
	}
}
