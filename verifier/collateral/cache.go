package collateral

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"
)

// CacheConfig configures a Cache.
type CacheConfig struct {
	// Upstream answers what the cache does not hold fresh: typically a *Fetcher. Required.
	Upstream Source
	// Store keeps responses across restarts (and, shared, across replicas). Nil means a new
	// MemoryStore.
	Store Store
	// Clock judges freshness. Nil means SystemClock. Give the Fetcher the same one.
	Clock Clock
	// Logger receives a line per fetch failure, store failure and stale response served. Nil
	// discards.
	Logger *slog.Logger
	// OnReplace, when set, is called before the cache keeps a fetched document in place of a
	// different one (another digest) it held for the same URL — ahead of expiry through Refetch
	// (a Refresher), or on demand once the old one went stale — and not for a URL's first
	// document. It is also called, with Update.Stored set, when the Store holds a different
	// document for the URL (an offline import, or another verifier sharing the Store) and the
	// cache uses that one in its place: once the old one went stale, or at a Reload when the
	// stored one is newer. The cache keeps the new document only once OnReplace returned nil: a
	// verifier service makes the replacement an evidence record there (MUST be durable on
	// return). When it fails, Refetch returns its error and a Get still answers the caller with
	// the new document but keeps the old one, so the next Get or Refetch tries again. It is
	// called with the URL's replacement lock held (one replacement per URL at a time,
	// concurrently for different URLs) and MUST NOT call the Cache.
	OnReplace func(ctx context.Context, u Update) error
	// OnRefused, when set, is called with the URL of every fetched document the cache refuses as
	// older than what it holds (ErrOlder, a possible rollback): a verifier service counts it in
	// its fetch-error metric. It MUST return quickly.
	OnRefused func(url string)
	// Authenticate, when set, is asked whether a fetched document was issued by its vendor
	// (signed through a chain to a pinned root, and the document its URL names:
	// verifier.AuthenticCollateral) before the cache keeps it. A document it refuses is still
	// answered to the Get that fetched it (the verification rejects it with its precise reason)
	// but never kept, stored or counted in the URL's Mark, and Refetch returns the refusal. A
	// document in the Store that it refuses is unusable, as if it did not parse. Without it, a forged document naming a
	// far-future issue date or a huge tcbEvaluationDataNumber would be served until its own
	// nextUpdate and, through the Mark, make every genuine document after it look like a
	// rollback. It MUST NOT call the Cache.
	Authenticate func(r *Response, v Validity) error
	// OnNotAuthentic, when set, is called with the URL of every fetched document Authenticate
	// refuses (not of stored ones): a verifier service counts it in its fetch-error metric. It
	// MUST return quickly.
	OnNotAuthentic func(url string)
}

// Cache is a Source in front of another (a Fetcher): it serves a document for as long as the
// document says it is valid (ValidityOf), keeps it in its Store, and asks upstream once for all
// the concurrent requests of one URL.
//
//   - Immutable documents (a VCEK, named by chip and TCB) are kept forever.
//   - TCB info, QE identity, CRLs and cert chains are served strictly before their nextUpdate.
//     From then on they are stale: a Get fetches anew, and when that fails it returns the
//     failure, never the stale copy — except through AllowStaleUnsafe.
//   - A document whose validity cannot be read is returned to the caller (who will reject it with
//     a precise reason) but not kept.
//   - A fetched document older than what is held for its URL — a lower Intel
//     tcbEvaluationDataNumber or an earlier issue date than the cached copy, the stored one, or
//     the URL's Mark (MarkStore), which outlives them — is a rollback: refused and never served
//     (see keep). The caller gets the held copy while it is fresh, and an error otherwise.
//   - Concurrent misses for one URL are coalesced into one upstream Get. That Get runs detached
//     from the callers' cancellation (a caller that gives up does not cancel it for the others,
//     and its result still fills the cache) until it ends or Close is called; each caller waits
//     for it only as long as its own ctx allows.
//   - Hits never wait: no lock is held across I/O, and the rate budgets live in the Fetcher,
//     which only misses reach.
//
// The Store is read on a miss (another process or replica may have fetched the document) and
// written after every successful fetch; a store failure is logged and does not fail the Get.
// A Cache is safe for concurrent use.
type Cache struct {
	upstream  Source
	store     Store
	clock     Clock
	log       *slog.Logger
	onReplace func(context.Context, Update) error
	onRefused func(url string)
	authentic func(*Response, Validity) error
	onForged  func(url string)

	ctx    context.Context // cancelled by Close; bounds detached fetches
	cancel context.CancelFunc
	leads  sync.WaitGroup // the detached fetches (lead), waited for by Close

	// replacing holds a lock per URL, taken by every replacement of the document held for it
	// (keep, adoptStored) across OnReplace: one replacement at a time per URL, each recorded
	// once, against the document held when it is recorded.
	replacing map[string]*sync.Mutex
	// reloadRefused is, per URL, the SHA-256 of the stored bytes Reload last refused, so that
	// a refusal is logged and counted once, not every Reload.
	reloadRefused map[string][32]byte

	mu     sync.Mutex
	closed bool // by Close: no new fetch starts
	mem    map[string]*entry
	calls  map[string]*call
	// marks is the Mark of every document kept per URL, for Stores that are no MarkStore and
	// for when the Store's cannot be raised.
	marks map[string]Mark

	hits, misses, coalesced, storeHits, fetches, fetchErrors, storeErrors, staleServed atomic.Uint64
}

// lockURL takes url's replacement lock and returns its unlock.
func (c *Cache) lockURL(url string) func() {
	c.mu.Lock()
	m := c.replacing[url]
	if m == nil {
		m = &sync.Mutex{}
		c.replacing[url] = m
	}
	c.mu.Unlock()
	m.Lock()
	return m.Unlock
}

type entry struct {
	resp *Response
	v    Validity
}

// call is one upstream fetch that concurrent callers share.
type call struct {
	done chan struct{}
	resp *Response
	err  error
}

// CacheStats are a Cache's counters since it was created.
type CacheStats struct {
	// Hits are Gets answered from memory, without waiting.
	Hits uint64
	// Misses are Gets that started a fetch; Coalesced are Gets that joined one already running.
	Misses, Coalesced uint64
	// StoreHits are fetches answered by a fresh copy in the Store.
	StoreHits uint64
	// Fetches are upstream Gets; FetchErrors those that failed, those whose answer was
	// refused as older than the document held (ErrOlder), and those whose answer Authenticate
	// refused.
	Fetches, FetchErrors uint64
	// StoreErrors are failed Store reads (other than ErrNotStored, and including stored
	// documents Authenticate refuses) and writes.
	StoreErrors uint64
	// StaleServed are stale documents served through AllowStaleUnsafe.
	StaleServed uint64
	// InFlight is the number of fetches running now.
	InFlight int
}

// NewCache checks cfg and returns a Cache. Call Close when done with it.
func NewCache(cfg CacheConfig) (*Cache, error) {
	if cfg.Upstream == nil {
		return nil, errors.New("collateral: CacheConfig.Upstream is required (a *Fetcher)")
	}
	c := &Cache{upstream: cfg.Upstream, store: cfg.Store, clock: cfg.Clock, log: cfg.Logger, onReplace: cfg.OnReplace, onRefused: cfg.OnRefused, authentic: cfg.Authenticate, onForged: cfg.OnNotAuthentic,
		mem: map[string]*entry{}, calls: map[string]*call{}, marks: map[string]Mark{}, replacing: map[string]*sync.Mutex{}, reloadRefused: map[string][32]byte{}}
	if c.store == nil {
		c.store = NewMemoryStore()
	}
	if c.clock == nil {
		c.clock = SystemClock{}
	}
	if c.log == nil {
		c.log = slog.New(slog.DiscardHandler)
	}
	c.ctx, c.cancel = context.WithCancel(context.Background())
	return c, nil
}

// Close cancels the fetches still running, whose callers get an error wrapping ErrUnavailable,
// and returns once they have ended (one recording a replacement through OnReplace finishes it).
// After Close a miss fails with ErrUnavailable; Get keeps answering hits.
func (c *Cache) Close() error {
	c.mu.Lock()
	c.closed = true
	c.mu.Unlock()
	c.cancel()
	// A fetch that already has its answer may be recording a replacement (OnReplace): Close
	// returns once it is done, so that nothing is appended to a log its owner then closes.
	c.leads.Wait()
	return nil
}

// Stats returns the cache's counters.
func (c *Cache) Stats() CacheStats {
	c.mu.Lock()
	inFlight := len(c.calls)
	c.mu.Unlock()
	return CacheStats{
		Hits: c.hits.Load(), Misses: c.misses.Load(), Coalesced: c.coalesced.Load(), StoreHits: c.storeHits.Load(),
		Fetches: c.fetches.Load(), FetchErrors: c.fetchErrors.Load(), StoreErrors: c.storeErrors.Load(),
		StaleServed: c.staleServed.Load(), InFlight: inFlight,
	}
}

// Get implements Source. The Response returned is shared: callers MUST NOT modify it.
func (c *Cache) Get(ctx context.Context, url string) (*Response, error) {
	return c.get(ctx, url, 0)
}

// AllowStaleUnsafe returns a Source over this cache that, when a stale document cannot be
// fetched anew, serves the stale copy for up to grace past its nextUpdate instead of failing. It
// is the hook of the policy option stale_grace_unsafe: build one per verification whose policy
// sets that option. It only supplies the document: the verifier still checks nextUpdate against
// its verification time and reports the document stale unless its policy accepts the grace.
func (c *Cache) AllowStaleUnsafe(grace time.Duration) Source {
	return staleSource{c: c, grace: grace}
}

type staleSource struct {
	c     *Cache
	grace time.Duration
}

func (s staleSource) Get(ctx context.Context, url string) (*Response, error) {
	return s.c.get(ctx, url, s.grace)
}

func (c *Cache) get(ctx context.Context, url string, grace time.Duration) (*Response, error) {
	now := c.clock.Now()
	c.mu.Lock()
	e := c.mem[url]
	c.mu.Unlock()
	if e != nil && e.v.Fresh(now) {
		c.hits.Add(1)
		return e.resp, nil
	}
	resp, err := c.flight(ctx, url)
	if err == nil {
		return resp, nil
	}
	// The fetch may have loaded a stale copy from the store.
	c.mu.Lock()
	e = c.mem[url]
	c.mu.Unlock()
	switch {
	case e == nil:
		return nil, err
	case e.v.Fresh(c.clock.Now()):
		// Another fetch succeeded meanwhile.
		return e.resp, nil
	case grace > 0 && !now.After(e.v.NextUpdate.Add(grace)):
		c.staleServed.Add(1)
		c.log.WarnContext(ctx, "serving stale collateral (stale_grace_unsafe)", "url", url,
			"next_update", e.v.NextUpdate, "grace", grace, "err", err)
		return e.resp, nil
	}
	return nil, fmt.Errorf("%w (the cached copy expired at %s and is not served stale)", err, e.v.NextUpdate.UTC().Format(time.RFC3339))
}

// flight joins or starts the one fetch of url and waits for it as long as ctx allows.
func (c *Cache) flight(ctx context.Context, url string) (*Response, error) {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil, fmt.Errorf("%w: %s: the collateral cache is closed", ErrUnavailable, url)
	}
	cl, running := c.calls[url]
	if running {
		c.coalesced.Add(1)
	} else {
		c.misses.Add(1)
		cl = &call{done: make(chan struct{})}
		c.calls[url] = cl
		c.leads.Add(1)
		go func() {
			defer c.leads.Done()
			c.lead(ctx, url, cl)
		}()
	}
	c.mu.Unlock()
	select {
	case <-cl.done:
		return cl.resp, cl.err
	case <-ctx.Done():
		return nil, fmt.Errorf("%w: %s: gave up waiting for the fetch: %w", ErrUnavailable, url, ctx.Err())
	}
}

// lead runs one fetch for every caller of url, detached from their cancellation (keeping the
// first caller's context values) and bounded by Close.
func (c *Cache) lead(callerCtx context.Context, url string, cl *call) {
	ctx, cancel := context.WithCancel(context.WithoutCancel(callerCtx))
	stop := context.AfterFunc(c.ctx, cancel)
	defer func() {
		if p := recover(); p != nil {
			c.log.Error("collateral fetch panicked", "url", url, "panic", p, "stack", string(debug.Stack()))
			cl.resp, cl.err = nil, fmt.Errorf("%w: %s: internal error while fetching: %v", ErrUnavailable, url, p)
		}
		stop()
		cancel()
		c.mu.Lock()
		delete(c.calls, url)
		c.mu.Unlock()
		close(cl.done)
	}()
	cl.resp, cl.err = c.refresh(ctx, url)
}

// refresh answers url from the store when it holds a fresh copy, and from upstream otherwise.
func (c *Cache) refresh(ctx context.Context, url string) (*Response, error) {
	if e := c.load(ctx, url); e != nil && e.v.Fresh(c.clock.Now()) {
		c.storeHits.Add(1)
		return e.resp, nil
	}
	resp, err := c.fetchUpstream(ctx, url)
	if err != nil {
		return nil, err
	}
	v, err := ValidityOf(resp)
	if err != nil {
		c.log.WarnContext(ctx, "collateral not cached: its validity cannot be read", "url", url, "err", err)
		return resp, nil
	}
	if err := c.authenticate(resp, v); err != nil {
		c.log.WarnContext(ctx, "collateral not cached: it is not signed by its vendor through a pinned root", "url", url, "err", err)
		return resp, nil
	}
	if !v.Fresh(c.clock.Now()) {
		c.log.WarnContext(ctx, "the collateral server answered with a stale document", "url", url, "next_update", v.NextUpdate)
	}
	c.mu.Lock()
	prev := c.mem[url] // what load found: a stale copy, or nothing
	c.mu.Unlock()
	if _, err := c.keep(ctx, url, prev, resp, v, false); errors.Is(err, ErrOlder) {
		// A rollback is never answered: the caller serves the held copy if it is fresh (get),
		// or fails closed.
		return nil, fmt.Errorf("%w: %w", ErrUnavailable, err)
	} else if err != nil {
		c.log.WarnContext(ctx, "collateral answered but not cached: recording its replacement failed; the next request tries again", "url", url, "err", err)
	}
	return resp, nil
}

// keep makes resp, whose validity is v, the cached document for url in place of prev (nil: none):
// OnReplace first when the digest changes, then the store and memory. It returns the
// replacement, or nil when the document did not change. When OnReplace fails nothing is kept.
//
// keep is the one way a fetched document replaces a held one (Get's fetch and Refetch), so it
// enforces that documents never go backwards (olderThan, belowMark): resp is refused, with an
// error wrapping ErrOlder that names url and both values and counted as a fetch error, when it is
// older than prev, than the document the Store holds now (fresh or expired; another replica may
// have written it), or than url's Mark in the Store (MarkStore) or in this cache, which outlive
// the document itself. A Mark that cannot be read refuses too (fail closed). A kept document
// raises the Mark before it is stored. With noEarlierNext (Refetch) it also refuses a dated resp
// that is not older than prev but expires before it, judged against the document held once the
// URL's lock is taken.
func (c *Cache) keep(ctx context.Context, url string, prev *entry, resp *Response, v Validity, noEarlierNext bool) (*Update, error) {
	defer c.lockURL(url)()
	c.mu.Lock()
	if cur := c.mem[url]; cur != nil {
		prev = cur // a stored document adopted, or another fetch kept, meanwhile
	}
	c.mu.Unlock()
	if noEarlierNext && prev != nil && !v.Immutable && v.NextUpdate.Before(prev.v.NextUpdate) && olderThan(resp, v, prev.resp, prev.v) == "" {
		c.fetchErrors.Add(1)
		return nil, fmt.Errorf("%w: %s: next update %s, before the cached one's %s: check the route's server",
			ErrOlder, url, rfc3339(v.NextUpdate), rfc3339(prev.v.NextUpdate))
	}
	if err := c.checkNotOlder(ctx, url, prev, resp, v); err != nil {
		c.fetchErrors.Add(1)
		c.log.WarnContext(ctx, "collateral refused: older than the document held (rollback)", "url", url, "err", err)
		if c.onRefused != nil {
			c.onRefused(url)
		}
		return nil, err
	}
	var u *Update
	if prev != nil && prev.resp.Digest() != resp.Digest() {
		u = &Update{URL: url, Old: prev.resp, OldValidity: prev.v, New: resp, NewValidity: v}
		if c.onReplace != nil {
			if err := c.onReplace(ctx, *u); err != nil {
				return nil, err
			}
		}
	}
	m := MarkOf(resp, v)
	c.mu.Lock()
	c.marks[url] = c.marks[url].Max(m)
	c.mu.Unlock()
	if ms, ok := c.store.(MarkStore); ok {
		if err := ms.RaiseMark(ctx, url, m); err != nil {
			c.storeErrors.Add(1)
			c.log.WarnContext(ctx, "collateral store: raising the URL's mark failed", "url", url, "err", err)
		}
	}
	// Memory first: a miss that reads the Store meanwhile (load) finds this document held, not a
	// different one to adopt and record again.
	c.mu.Lock()
	c.mem[url] = &entry{resp: resp, v: v}
	c.mu.Unlock()
	if err := c.store.Put(ctx, url, resp.Canonical()); err != nil {
		c.storeErrors.Add(1)
		c.log.WarnContext(ctx, "collateral store write failed", "url", url, "err", err)
	}
	return u, nil
}

// authenticate returns why resp, whose validity is v, is not known to be issued by its vendor
// (CacheConfig.Authenticate), counted as a fetch error; nil when it is, or when no check is
// configured.
func (c *Cache) authenticate(resp *Response, v Validity) error {
	if c.authentic == nil {
		return nil
	}
	if err := c.authentic(resp, v); err != nil {
		c.fetchErrors.Add(1)
		if c.onForged != nil {
			c.onForged(resp.URL)
		}
		return err
	}
	return nil
}

// checkNotOlder returns an error wrapping ErrOlder when resp is older than what is held for url
// (see keep).
func (c *Cache) checkNotOlder(ctx context.Context, url string, prev *entry, resp *Response, v Validity) error {
	refuse := func(why string) error {
		return fmt.Errorf("%w: %s: %s: the answer is not kept; check the route's server (a lagging mirror or a replayed response)", ErrOlder, url, why)
	}
	if prev != nil {
		if why := olderThan(resp, v, prev.resp, prev.v); why != "" {
			return refuse(why)
		}
	}
	if st, err := c.readStore(ctx, url); err == nil && (prev == nil || st.resp.Digest() != prev.resp.Digest()) {
		if why := olderThan(resp, v, st.resp, st.v); why != "" {
			return refuse("the stored document: " + why)
		}
	}
	m, err := c.markOf(ctx, url)
	if err != nil {
		return err
	}
	if why := belowMark(resp, v, m); why != "" {
		return refuse(why)
	}
	return nil
}

// markOf returns url's Mark: the highest of this cache's and the Store's (MarkStore). A Store
// mark that cannot be read is an error wrapping ErrOlder: a rollback cannot be ruled out.
func (c *Cache) markOf(ctx context.Context, url string) (Mark, error) {
	c.mu.Lock()
	m := c.marks[url]
	c.mu.Unlock()
	if ms, ok := c.store.(MarkStore); ok {
		sm, err := ms.StoredMark(ctx, url)
		if err != nil && !errors.Is(err, ErrNotStored) {
			c.storeErrors.Add(1)
			return Mark{}, fmt.Errorf("%w: %s: the stored mark of the documents kept cannot be read, so a rollback cannot be ruled out: %w", ErrOlder, url, err)
		}
		m = m.Max(sm)
	}
	return m, nil
}

// load reads url's response from the store into memory (fresh or not, so that a stale copy can
// be served through AllowStaleUnsafe) and returns it; nil when there is none usable.
//
// A stored document that differs from the expired one held replaces it as a fetched one would
// (adoptStored). When OnReplace fails, the document is returned but not kept, like a fetched
// one; while the one held is fresh, that one is returned; when the stored one is older than the
// one held or below the URL's Mark, nil.
func (c *Cache) load(ctx context.Context, url string) *entry {
	e, err := c.readStore(ctx, url)
	if err != nil {
		if !errors.Is(err, ErrNotStored) {
			c.storeErrors.Add(1)
			c.log.WarnContext(ctx, "collateral store holds no usable response; refetching", "url", url, "err", err)
		}
		return nil
	}
	switch held, a := c.adoptStored(ctx, url, e, true); a {
	case storedOlder, markUnread:
		return nil
	case heldFresh:
		return held
	}
	return e
}

// What adoptStored did with a stored document.
type adoption int

const (
	adopted     adoption = iota // it is held now (it already was, or replaced the one held)
	heldFresh                   // a fresh document is held, and expiredOnly was set: not used
	storedOlder                 // older than the one held (olderThan), not newer than a fresh one, or below the Mark: not used
	notRecorded                 // OnReplace failed: not kept
	markUnread                  // the URL's Mark in the Store could not be read: not used, for now
)

// adoptStored makes e, read from the Store for url, the document held for url in place of the
// one held now, if any and different: through OnReplace (Update.Stored set: an offline import,
// or another verifier sharing the Store, wrote it), never when it is older than the held one or
// below the URL's Mark (a rolled-back Store). With expiredOnly, only in place of an expired one;
// without, a fresh one is replaced only by a newer one (sameIssueNoLater). It returns the entry
// held before, and what it did. A replacement raises the in-memory Mark to the new document's.
func (c *Cache) adoptStored(ctx context.Context, url string, e *entry, expiredOnly bool) (*entry, adoption) {
	// Quick paths first, without the URL's lock: nothing to record.
	c.mu.Lock()
	old := c.mem[url]
	switch {
	case old != nil && old.resp.Digest() == e.resp.Digest():
		if !old.v.Fresh(c.clock.Now()) {
			c.mem[url] = e
		}
		c.mu.Unlock()
		return old, adopted
	case old != nil && expiredOnly && old.v.Fresh(c.clock.Now()):
		c.mu.Unlock()
		return old, heldFresh
	}
	c.mu.Unlock()
	why, err := c.notAdoptable(ctx, url, e, old, expiredOnly)
	if err != nil {
		c.log.WarnContext(ctx, "collateral store document not used for now", "url", url, "err", err)
		return old, markUnread
	}
	if why != "" {
		c.storeErrors.Add(1)
		c.log.WarnContext(ctx, "collateral store document not used: it is not newer than the one held, or below the URL's mark", "url", url, "why", why)
		return old, storedOlder
	}
	if old == nil {
		c.mu.Lock()
		if c.mem[url] == nil {
			c.mem[url] = e
		}
		c.mu.Unlock()
		return nil, adopted
	}
	defer c.lockURL(url)()
	c.mu.Lock()
	if cur := c.mem[url]; cur != old { // replaced meanwhile (keep, or another adoption): try again later
		c.mu.Unlock()
		return cur, heldFresh
	}
	c.mu.Unlock()
	if c.onReplace != nil {
		u := Update{URL: url, Old: old.resp, OldValidity: old.v, New: e.resp, NewValidity: e.v, Stored: true}
		if err := c.onReplace(ctx, u); err != nil {
			c.log.WarnContext(ctx, "collateral from the store not kept: recording its replacement failed; the next request or reload tries again", "url", url, "err", err)
			return old, notRecorded
		}
	}
	c.mu.Lock()
	c.marks[url] = c.marks[url].Max(MarkOf(e.resp, e.v))
	c.mem[url] = e // still old: every replacement holds the URL's lock
	c.mu.Unlock()
	c.log.InfoContext(ctx, "collateral replaced by the document found in the store", "url", url, "next_update", e.v.NextUpdate)
	return old, adopted
}

// notAdoptable returns why the stored e may not replace old (nil: nothing held) for url, or "";
// an error when the URL's Mark cannot be read (nothing is decided).
func (c *Cache) notAdoptable(ctx context.Context, url string, e, old *entry, expiredOnly bool) (string, error) {
	if old != nil {
		if why := olderThan(e.resp, e.v, old.resp, old.v); why != "" {
			return why, nil
		}
		if !expiredOnly && old.v.Fresh(c.clock.Now()) && sameIssueNoLater(e.v, old.v) {
			return fmt.Sprintf("issued with the held one (%s), and with no later next update", rfc3339(e.v.IssuedAt)), nil
		}
	}
	m, err := c.markOf(ctx, url)
	if err != nil {
		return "", err
	}
	return belowMark(e.resp, e.v, m), nil
}

// Reload makes the cache hold every document its Store holds that is newer than the one it holds
// for the URL, whether that one has expired or not: through OnReplace (Update.Stored), never an
// older one (see adoptStored). An offline verifier, which never fetches, calls it periodically so
// that an imported document — a TCB recovery above all — takes effect then, not only at the held
// document's nextUpdate. A document the Store holds that cannot be read or is not authentic is
// skipped (counted as a store error, as a load would). It returns the number of documents
// replaced, and fails only when the Store cannot be listed (not a URLLister: nothing to do).
func (c *Cache) Reload(ctx context.Context) (int, error) {
	return c.eachStored(ctx, func(u string) bool {
		c.mu.Lock()
		old := c.mem[u]
		c.mu.Unlock()
		if old == nil || old.v.Immutable {
			return false // a URL not held yet is loaded on demand, like Warm's; a VCEK never changes
		}
		// Only bytes that differ from the held document, and that were not refused before, are
		// parsed and checked.
		data, err := c.store.Get(ctx, u)
		if err != nil {
			return false
		}
		sum := sha256.Sum256(data)
		c.mu.Lock()
		refused := c.reloadRefused[u] == sum
		c.mu.Unlock()
		if sum == old.resp.Digest() || refused {
			return false
		}
		refuse := func() {
			c.mu.Lock()
			c.reloadRefused[u] = sum
			c.mu.Unlock()
		}
		e, err := c.parseStored(u, data)
		if err != nil {
			c.storeErrors.Add(1)
			c.log.WarnContext(ctx, "collateral store holds no usable response; not reloaded", "url", u, "err", err)
			refuse()
			return false
		}
		switch _, a := c.adoptStored(ctx, u, e, false); a {
		case adopted:
			return true
		case storedOlder:
			refuse()
		}
		return false
	})
}

// readStore reads and parses url's response in the store, without keeping it. A response that
// Authenticate refuses is unusable, like one that does not parse.
func (c *Cache) readStore(ctx context.Context, url string) (*entry, error) {
	data, err := c.store.Get(ctx, url)
	if err != nil {
		return nil, err
	}
	return c.parseStored(url, data)
}

// parseStored parses data, the Store's bytes for url, as readStore does: the same bytes always
// give the same answer.
func (c *Cache) parseStored(url string, data []byte) (*entry, error) {
	rs, err := Parse(data)
	if err == nil && (len(rs) != 1 || rs[0].URL != url || rs[0].Status != http.StatusOK) {
		err = errors.New("not the 200 response for this URL")
	}
	var v Validity
	if err == nil {
		v, err = ValidityOf(rs[0])
	}
	if err == nil && c.authentic != nil {
		// What another replica, an earlier version or an import wrote is checked like a fetch.
		if err = c.authentic(rs[0], v); err != nil {
			err = fmt.Errorf("it is not signed by its vendor through a pinned root: %w", err)
		}
	}
	if err != nil {
		return nil, fmt.Errorf("collateral store: unusable response for %s: %w", url, err)
	}
	return &entry{resp: rs[0], v: v}, nil
}

// fetchUpstream asks the upstream source for url and accepts only a 200 response for exactly that
// URL; every failure is counted and wraps ErrUnavailable.
func (c *Cache) fetchUpstream(ctx context.Context, url string) (*Response, error) {
	c.fetches.Add(1)
	resp, err := c.upstream.Get(ctx, url)
	switch {
	case err != nil:
		c.fetchErrors.Add(1)
		if !errors.Is(err, ErrUnavailable) {
			err = fmt.Errorf("%w: %s: %w", ErrUnavailable, url, err)
		}
		return nil, err
	case resp == nil || resp.Status != http.StatusOK || resp.URL != url:
		c.fetchErrors.Add(1)
		return nil, fmt.Errorf("%w: %s: the upstream source answered with something else than a 200 response for this URL", ErrUnavailable, url)
	}
	return resp, nil
}
