package collateral

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"runtime/debug"
	"slices"
	"sort"
	"sync"
	"time"
)

// Document is one document a Source holds: its URL and validity.
type Document struct {
	URL      string
	Validity Validity
}

// Documents returns the recorded responses whose validity can be read (ValidityOf), sorted by
// URL: what a verifier serving this Set will answer, and until when.
func (s Set) Documents() []Document {
	out := make([]Document, 0, len(s))
	for _, u := range s.URLs() {
		r := s[u]
		if r.Status != http.StatusOK {
			continue
		}
		if v, err := ValidityOf(r); err == nil {
			out = append(out, Document{URL: u, Validity: v})
		}
	}
	return out
}

// Documents returns the documents the cache holds in memory (fresh or stale), sorted by URL. It
// never waits for I/O. Warm loads what the Store holds from earlier runs.
func (c *Cache) Documents() []Document {
	c.mu.Lock()
	out := make([]Document, 0, len(c.mem))
	for u, e := range c.mem {
		out = append(out, Document{URL: u, Validity: e.v})
	}
	c.mu.Unlock()
	sort.Slice(out, func(i, j int) bool { return out[i].URL < out[j].URL })
	return out
}

// Held returns the document the cache holds for url, fresh or not, and its validity.
func (c *Cache) Held(url string) (*Response, Validity, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e := c.mem[url]
	if e == nil {
		return nil, Validity{}, false
	}
	return e.resp, e.v, true
}

// URLLister is implemented by a Store that can list the URLs it holds (MemoryStore, DirStore), so
// that Cache.Warm can load them.
type URLLister interface {
	URLs(ctx context.Context) ([]string, error)
}

// Warm loads into memory every document the Store holds (when it is a URLLister), fresh or stale,
// so that Documents, a Refresher and metrics see what earlier runs fetched. Unusable entries are
// logged and skipped. It returns the number of documents loaded.
func (c *Cache) Warm(ctx context.Context) (int, error) {
	return c.eachStored(ctx, func(u string) bool { return c.load(ctx, u) != nil })
}

// eachStored calls fn with every URL the Store holds (when it is a URLLister) until ctx is done,
// and returns how many times fn reported true.
func (c *Cache) eachStored(ctx context.Context, fn func(url string) bool) (int, error) {
	l, ok := c.store.(URLLister)
	if !ok {
		return 0, nil
	}
	urls, err := l.URLs(ctx)
	if err != nil {
		return 0, fmt.Errorf("collateral cache: listing the store: %w", err)
	}
	n := 0
	for _, u := range urls {
		if err := ctx.Err(); err != nil {
			return n, err
		}
		if fn(u) {
			n++
		}
	}
	return n, nil
}

// Update is one cached document replaced by a different one for the same URL.
type Update struct {
	URL string
	// Old and New are the documents, and OldValidity and NewValidity their validity.
	Old, New                 *Response
	OldValidity, NewValidity Validity
	// Stored is set when New was found in the Store in place of Old (expired, or at a Reload),
	// not fetched by this cache: written by an offline import (proofline collateral import) or
	// by another verifier sharing the Store, which may have recorded the replacement already.
	Stored bool
}

// TCBEvaluationDataNumber returns the tcbEvaluationDataNumber of an Intel PCS v4 TCB info or
// QE identity response ({"tcbInfo": {…}} or {"enclaveIdentity": {…}}, "Get TCB Info" and "Get
// Quoting Enclave Identity" in https://api.portal.trustedservices.intel.com/content/documentation.html).
// It rises with every Intel TCB recovery. It reports false for other documents.
func TCBEvaluationDataNumber(r *Response) (uint64, bool) {
	var doc struct {
		TCBInfo *struct {
			N *uint64 `json:"tcbEvaluationDataNumber"`
		} `json:"tcbInfo"`
		EnclaveIdentity *struct {
			N *uint64 `json:"tcbEvaluationDataNumber"`
		} `json:"enclaveIdentity"`
	}
	if r == nil || json.Unmarshal(r.Body, &doc) != nil {
		return 0, false
	}
	switch {
	case doc.TCBInfo != nil && doc.TCBInfo.N != nil:
		return *doc.TCBInfo.N, true
	case doc.EnclaveIdentity != nil && doc.EnclaveIdentity.N != nil:
		return *doc.EnclaveIdentity.N, true
	}
	return 0, false
}

// ErrOlder is wrapped when a document older than the one held for its URL is refused (olderThan,
// belowMark): by Refetch, by a Get whose fetch answered with one (together with ErrUnavailable),
// and in ImportBundle's report. It is a rollback, e.g. from a lagging mirror or a replayed
// response: it is never kept.
var ErrOlder = errors.New("collateral: an older document than the one held is refused")

// olderThan returns why the document resp (validity v) is older than held (validity hv), or ""
// when it is not: a lower Intel tcbEvaluationDataNumber, however it is dated (it never goes
// backwards, VERIFIER-CHECKS TDX 6), or an earlier issue date. It is the one rule for every path
// that replaces a stored document (Cache.keep, ImportBundle); Refetch, which replaces a copy
// that may still be fresh, also refuses an earlier nextUpdate.
func olderThan(resp *Response, v Validity, held *Response, hv Validity) string {
	if on, ok := TCBEvaluationDataNumber(held); ok {
		if nn, ok := TCBEvaluationDataNumber(resp); ok && nn < on {
			return fmt.Sprintf("tcbEvaluationDataNumber %d, the held one's is %d (it never goes backwards)", nn, on)
		}
	}
	if v.IssuedAt.Before(hv.IssuedAt) {
		return fmt.Sprintf("issued %s; the held one was issued %s", rfc3339(v.IssuedAt), rfc3339(hv.IssuedAt))
	}
	return ""
}

// belowMark returns why the document resp (validity v) is below m, the high-water mark of the
// documents kept for its URL, or "" when it is not.
func belowMark(resp *Response, v Validity, m Mark) string {
	if m.HasNumber {
		if nn, ok := TCBEvaluationDataNumber(resp); ok && nn < m.EvaluationDataNumber {
			return fmt.Sprintf("tcbEvaluationDataNumber %d, below the highest kept for this URL, %d (it never goes backwards)", nn, m.EvaluationDataNumber)
		}
	}
	if v.IssuedAt.Before(m.IssuedAt) {
		return fmt.Sprintf("issued %s, before the latest issue date kept for this URL, %s", rfc3339(v.IssuedAt), rfc3339(m.IssuedAt))
	}
	return ""
}

// Refetch asks upstream for url whether or not the cached copy is fresh, and keeps the answer in
// place of the cached copy (through OnReplace when it differs). It returns the replacement, or
// nil when upstream answered with the document already held. It fails, keeping the cached copy,
// when upstream fails, answers something undatable, older than the cached copy, the stored one or
// the URL's mark (ErrOlder, see keep) or with an earlier nextUpdate than the cached copy's
// (ErrOlder), or OnReplace fails. It does not join a running Get's fetch; the two replace the
// held document one at a time (keep holds the URL's lock), each against the document held then.
func (c *Cache) Refetch(ctx context.Context, url string) (*Update, error) {
	c.mu.Lock()
	prev := c.mem[url]
	c.mu.Unlock()
	if prev == nil {
		prev = c.load(ctx, url)
	}
	resp, err := c.fetchUpstream(ctx, url)
	if err != nil {
		return nil, err
	}
	v, err := ValidityOf(resp)
	if err != nil {
		return nil, fmt.Errorf("collateral: %s: the refetched document is not kept: its validity cannot be read: %w", url, err)
	}
	if err := c.authenticate(resp, v); err != nil {
		return nil, fmt.Errorf("%w: %s: the refetched document is not kept: it is not signed by its vendor through a pinned root: %w", ErrUnavailable, url, err)
	}
	// keep refuses a lower number or an earlier issue date, naming them, and here also a later
	// or equal issue date with an earlier nextUpdate.
	return c.keep(ctx, url, prev, resp, v, true)
}

func rfc3339(t time.Time) string { return t.UTC().Format(time.RFC3339) }

// Refresher defaults.
const (
	DefaultRefreshInterval = 15 * time.Minute
	DefaultRefreshHorizon  = 24 * time.Hour
	DefaultRefetchEvery    = 24 * time.Hour
)

// RefresherConfig configures a Refresher.
type RefresherConfig struct {
	// Cache is the cache to keep fresh. Required.
	Cache *Cache
	// Clock times the passes and judges expiry: the Cache's. Nil means SystemClock.
	Clock Clock
	// Interval is the time between passes. 0 means DefaultRefreshInterval.
	Interval time.Duration
	// Horizon: a document is refetched once its nextUpdate is at most this far ahead, or half
	// its validity period if that is shorter. 0 means DefaultRefreshHorizon.
	Horizon time.Duration
	// RefetchEvery: a document is also refetched when the Refresher has not asked for it for this
	// long, so that a new document the vendor publishes before the old one expires (an Intel TCB
	// recovery raises tcbEvaluationDataNumber in a new TCB info) arrives within this delay.
	// 0 means DefaultRefetchEvery; negative never.
	RefetchEvery time.Duration
	// Logger receives a line per refresh failure and replacement. Nil discards.
	Logger *slog.Logger
	// OnTCBRecovery, when set, is called once for every TCB recovery (RecoveryOf) among the
	// replacements the Refresher makes or is told of (Observe); SubscribeTCBRecovery adds more
	// callbacks. See Observe for when it runs.
	OnTCBRecovery func(ctx context.Context, r TCBRecovery)
}

// Refresher keeps the dated documents of a Cache (TCB info, QE identity, CRLs, cert chains;
// never immutable ones such as VCEKs) fresh ahead of their expiry: every Interval it refetches,
// through Cache.Refetch, the documents whose nextUpdate is within the horizon or that it has not
// asked for in RefetchEvery. A failure is logged and remembered (Failure) and the cached copy
// stays until it expires; the next pass tries again. It is safe for concurrent use.
type Refresher struct {
	cache   *Cache
	clock   Clock
	every   time.Duration
	horizon time.Duration
	refetch time.Duration
	log     *slog.Logger

	mu        sync.Mutex
	asked     map[string]time.Time // when each URL was last refetched (or first seen)
	refetched map[string]time.Time // when each URL was last refetched
	failures  map[string]Failure
	// TCB recovery hook: the callbacks, and the new document's digest of the latest recovery
	// reported per URL (each is reported once, however it is observed).
	onRecovery []func(context.Context, TCBRecovery)
	recovered  map[string][32]byte
}

// Failure is a document's latest failed refresh.
type Failure struct {
	At  time.Time
	Err error
}

// NewRefresher checks cfg and returns a Refresher.
func NewRefresher(cfg RefresherConfig) (*Refresher, error) {
	if cfg.Cache == nil {
		return nil, errors.New("collateral: RefresherConfig.Cache is required")
	}
	if cfg.Interval < 0 || cfg.Horizon < 0 {
		return nil, errors.New("collateral: RefresherConfig.Interval and Horizon must not be negative")
	}
	r := &Refresher{cache: cfg.Cache, clock: cfg.Clock, every: cfg.Interval, horizon: cfg.Horizon, refetch: cfg.RefetchEvery,
		log: cfg.Logger, asked: map[string]time.Time{}, refetched: map[string]time.Time{}, failures: map[string]Failure{},
		recovered: map[string][32]byte{}}
	if cfg.OnTCBRecovery != nil {
		r.onRecovery = append(r.onRecovery, cfg.OnTCBRecovery)
	}
	if r.clock == nil {
		r.clock = SystemClock{}
	}
	if r.every == 0 {
		r.every = DefaultRefreshInterval
	}
	if r.horizon == 0 {
		r.horizon = DefaultRefreshHorizon
	}
	if r.refetch == 0 {
		r.refetch = DefaultRefetchEvery
	}
	if r.log == nil {
		r.log = slog.New(slog.DiscardHandler)
	}
	return r, nil
}

// due reports whether d is to be refetched at now; asked is when it was last refetched.
func (r *Refresher) due(d Document, now, asked time.Time) bool {
	v := d.Validity
	if v.Immutable || v.NextUpdate.IsZero() {
		return false
	}
	if lead := min(r.horizon, v.NextUpdate.Sub(v.IssuedAt)/2); v.NextUpdate.Sub(now) <= lead {
		return true
	}
	return r.refetch > 0 && !now.Before(asked.Add(r.refetch))
}

// RefreshOnce refetches every due document once, in URL order, and returns the replacements
// made. Failures are logged and remembered; none stops the others.
func (r *Refresher) RefreshOnce(ctx context.Context) []Update {
	var updates []Update
	for _, d := range r.cache.Documents() {
		if ctx.Err() != nil {
			break
		}
		now := r.clock.Now()
		r.mu.Lock()
		asked, seen := r.asked[d.URL]
		if !seen {
			asked = now
			r.asked[d.URL] = now
		}
		r.mu.Unlock()
		if !r.due(d, now, asked) {
			continue
		}
		u, err := r.cache.Refetch(ctx, d.URL)
		r.mu.Lock()
		r.asked[d.URL] = r.clock.Now()
		r.refetched[d.URL] = r.clock.Now()
		if err != nil {
			r.failures[d.URL] = Failure{At: r.clock.Now(), Err: err}
		} else {
			delete(r.failures, d.URL)
		}
		r.mu.Unlock()
		switch {
		case err != nil && ctx.Err() == nil:
			r.log.WarnContext(ctx, "collateral refresh failed; the cached copy stays until it expires", "url", d.URL,
				"next_update", d.Validity.NextUpdate, "err", err)
		case u != nil:
			r.log.InfoContext(ctx, "collateral replaced", "url", d.URL, "kind", u.NewValidity.Kind,
				"old_next_update", u.OldValidity.NextUpdate, "new_next_update", u.NewValidity.NextUpdate)
			updates = append(updates, *u)
			r.Observe(ctx, *u)
		}
	}
	return updates
}

// Failure returns the latest refresh failure of url, if its latest refresh failed.
func (r *Refresher) Failure(url string) (Failure, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	f, ok := r.failures[url]
	return f, ok
}

// LastRefetch returns when the Refresher last refetched url (whatever the outcome), if ever.
func (r *Refresher) LastRefetch(url string) (time.Time, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	t, ok := r.refetched[url]
	return t, ok
}

// Run makes a pass at once and then every Interval on the Clock, until ctx is done. A pass that
// panics is logged and the next one runs: a refresh never takes the caller down.
func (r *Refresher) Run(ctx context.Context) {
	for {
		r.pass(ctx)
		if r.clock.Sleep(ctx, r.every) != nil {
			return
		}
	}
}

func (r *Refresher) pass(ctx context.Context) {
	defer func() {
		if p := recover(); p != nil {
			r.log.ErrorContext(ctx, "collateral refresh panicked", "panic", p, "stack", string(debug.Stack()))
		}
	}()
	r.RefreshOnce(ctx)
}

// SubscribeTCBRecovery adds fn to the callbacks of TCB recoveries (RefresherConfig.OnTCBRecovery).
// It is the hook for alerting: fn is called once per recovery, see Observe.
func (r *Refresher) SubscribeTCBRecovery(fn func(ctx context.Context, rec TCBRecovery)) {
	if fn == nil {
		return
	}
	r.mu.Lock()
	r.onRecovery = append(r.onRecovery, fn)
	r.mu.Unlock()
}

// Observe reports whether u is a TCB recovery (RecoveryOf) and, the first time this recovery
// (URL and new document) is observed, logs it and calls the TCB recovery callbacks. The
// Refresher observes its own replacements; the cache's OnReplace should observe every
// replacement once it is recorded, so that those made on demand (a Get past nextUpdate) are
// reported too — a replacement observed twice is reported once. Callbacks run synchronously on
// the caller's goroutine (a refresh pass, or the fetch an attestation waits for): they MUST
// return quickly (hand the event to a queue) and never call back into the Refresher. A callback
// that panics is logged; the others still run.
func (r *Refresher) Observe(ctx context.Context, u Update) (TCBRecovery, bool) {
	rec, ok := RecoveryOf(u)
	if !ok {
		return rec, false
	}
	d := u.New.Digest()
	r.mu.Lock()
	if seen, ok := r.recovered[u.URL]; ok && seen == d {
		r.mu.Unlock()
		return rec, true
	}
	r.recovered[u.URL] = d
	subs := slices.Clone(r.onRecovery)
	r.mu.Unlock()
	r.log.WarnContext(ctx, "Intel TCB recovery: a new tcbEvaluationDataNumber reached the verifier; platforms not updated will evaluate to OutOfDate (see proofline collateral impact)",
		"url", u.URL, "kind", rec.Kind, "previous", rec.Previous, "new", rec.New, "tcb_date", rec.TCBDate, "issued_at", rec.IssuedAt)
	for _, fn := range subs {
		r.callRecovery(ctx, fn, rec)
	}
	return rec, true
}

func (r *Refresher) callRecovery(ctx context.Context, fn func(context.Context, TCBRecovery), rec TCBRecovery) {
	defer func() {
		if p := recover(); p != nil {
			r.log.ErrorContext(ctx, "a TCB recovery callback panicked", "url", rec.URL, "panic", p, "stack", string(debug.Stack()))
		}
	}()
	fn(ctx, rec)
}

// sameIssueNoLater reports whether a document of validity v is issued at the same time as one of
// validity held and expires no later (an immutable held one never does): it is then no newer,
// though not older (olderThan). Cache.Reload and ImportBundle keep the held document then.
func sameIssueNoLater(v, held Validity) bool {
	return held.IssuedAt.Equal(v.IssuedAt) && (held.Immutable || !held.NextUpdate.Before(v.NextUpdate))
}

// OlderThan returns why the document resp (validity v) is older than held (validity hv) — a lower
// Intel tcbEvaluationDataNumber, or an earlier issue date — or "" when it is not. A verifier never
// goes back to an older document for a URL.
func OlderThan(resp *Response, v Validity, held *Response, hv Validity) string {
	return olderThan(resp, v, held, hv)
}

// HoldUsed makes used, a document for url that verdicts used (validity uv), the document held
// for url in place of an older one the cache holds (a Store restored from a backup): in memory,
// with url's Mark raised to it, then in the Store (the Mark when a MarkStore, and the document),
// so that the older one stays refused after a restart, as a rolled-back document is, and a later
// replacement of used goes through OnReplace. It refuses a used document that is not authentic
// (CacheConfig.Authenticate) or not newer than the held one, changing nothing. When the Store
// cannot be written, the cache still holds used; the error says what the Store lacks. A
// verifier service calls it at start-up.
func (c *Cache) HoldUsed(ctx context.Context, url string, used *Response, uv Validity) error {
	if c.authentic != nil {
		if err := c.authentic(used, uv); err != nil {
			return fmt.Errorf("collateral cache: %s: the document the verdicts used is not signed by its vendor through a pinned root: %w", url, err)
		}
	}
	defer c.lockURL(url)()
	c.mu.Lock()
	held := c.mem[url]
	c.mu.Unlock()
	if held != nil && olderThan(held.resp, held.v, used, uv) == "" {
		return fmt.Errorf("collateral cache: %s: the document held is not older than the one the verdicts used", url)
	}
	m := MarkOf(used, uv)
	c.mu.Lock()
	c.marks[url] = c.marks[url].Max(m)
	c.mem[url] = &entry{resp: used, v: uv}
	c.mu.Unlock()
	if ms, ok := c.store.(MarkStore); ok {
		if err := ms.RaiseMark(ctx, url, m); err != nil {
			c.storeErrors.Add(1)
			return fmt.Errorf("collateral cache: %s: held, but the Store's mark could not be raised: %w", url, err)
		}
	}
	if err := c.store.Put(ctx, url, used.Canonical()); err != nil {
		c.storeErrors.Add(1)
		return fmt.Errorf("collateral cache: %s: held, but not written back to the Store: %w", url, err)
	}
	return nil
}
