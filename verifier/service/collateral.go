package service

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"net/url"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/proofline/proofline/attest"
	"github.com/proofline/proofline/evidence"
	"github.com/proofline/proofline/evidence/index"
	"github.com/proofline/proofline/verifier"
	"github.com/proofline/proofline/verifier/collateral"
	"github.com/proofline/proofline/verifier/policy"
)

// LiveCollateral is what the service needs to fetch collateral live (OpenDeps builds it from
// collateral.fetch).
type LiveCollateral struct {
	// Upstream fetches documents: a *collateral.Fetcher. Required.
	Upstream collateral.Source
	// Store keeps fetched documents across restarts: a *collateral.DirStore. Nil means memory.
	Store collateral.Store
	// Clock times fetching, caching, refreshing and expiry; nil means the system clock. It must
	// be the Fetcher's clock too.
	Clock collateral.Clock
	// Offline: Upstream never answers (collateral.offline), so no refresher runs.
	Offline bool
}

// offlineSource is the upstream of an offline cache (collateral.offline): it has nothing.
type offlineSource struct{}

func (offlineSource) Get(_ context.Context, u string) (*collateral.Response, error) {
	return nil, fmt.Errorf("%w: %s: collateral.offline is set and the collateral cache holds no fresh copy; import a fresh bundle with proofline collateral import",
		collateral.ErrUnavailable, u)
}

// openCollateral sets up the service's collateral source: Deps.Collateral as given, or a cache
// over Deps.LiveCollateral whose replacements are recorded, warmed from its store, and its
// refresher (run by Start).
func (s *Service) openCollateral(ctx context.Context) error {
	lc := s.d.LiveCollateral
	if lc == nil {
		s.coll = s.d.Collateral
		return nil
	}
	if s.d.Collateral != nil {
		return errors.New("service: Deps.Collateral and Deps.LiveCollateral are both set; give one")
	}
	if lc.Upstream == nil {
		return errors.New("service: Deps.LiveCollateral.Upstream is required")
	}
	s.collClock = lc.Clock
	if s.collClock == nil {
		s.collClock = collateral.SystemClock{}
	}
	cache, err := collateral.NewCache(collateral.CacheConfig{
		Upstream: countingSource{src: lc.Upstream, errors: s.m.collateralFetchErrors}, Store: lc.Store,
		Clock: s.collClock, Logger: s.logger, OnReplace: s.recordCollateralUpdate,
		OnRefused:      func(u string) { s.m.collateralFetchErrors.WithLabelValues(vendorOf(u), "older").Inc() },
		Authenticate:   verifier.AuthenticCollateral(s.d.Roots),
		OnNotAuthentic: func(u string) { s.m.collateralFetchErrors.WithLabelValues(vendorOf(u), "not_authentic").Inc() },
	})
	if err != nil {
		return err
	}
	if n, err := cache.Warm(ctx); err != nil {
		// The documents are fetched again when asked for.
		s.logger.WarnContext(ctx, "collateral cache: could not list the stored documents", slog.Any("error", err))
	} else if n > 0 {
		s.logger.InfoContext(ctx, "collateral cache loaded", slog.Int("documents", n))
	}
	if lc.Offline {
		s.cache, s.coll, s.collOffline = cache, cache, true
		return nil
	}
	s.refresher, err = collateral.NewRefresher(collateral.RefresherConfig{
		Cache: cache, Clock: s.collClock, Interval: s.set.CollateralRefreshInterval,
		Horizon: s.set.CollateralRefreshHorizon, RefetchEvery: s.set.CollateralRefetchEvery, Logger: s.logger,
	})
	if err != nil {
		cache.Close()
		return err
	}
	s.cache, s.coll = cache, cache
	return nil
}

// recentVerdictsScanned bounds the log entries recordCollateralChangedAtRest reads at start-up.
const recentVerdictsScanned = 512

// recordCollateralChangedAtRest records, at start-up, each document of the collateral cache that
// differs from the one the latest verdicts (among the last recentVerdictsScanned records) used
// for the same URL: written to the store while the verifier was stopped (an import, or another
// verifier sharing the store). A running verifier records such a replacement when it adopts the
// document (collateral.Update.Stored); a stopped one cannot, and without this its log would show
// verdicts on a new document with no collateral_update before them. A replacement the index
// already names is not recorded again. A held document older than the one the verdicts used (a
// rolled-back store) is not recorded: the cache holds the used one again and its mark is raised
// to it (collateral.Cache.HoldUsed), so that verdicts never go back. The latest verdicts are read
// from the log itself, not found through the index: an index that cannot catch up (it is derived,
// and the verifier serves without it) must not leave a replacement unrecorded or a rolled-back
// document in use. It returns the number recorded.
func (s *Service) recordCollateralChangedAtRest(ctx context.Context) (int, error) {
	if s.cache == nil {
		return 0, nil
	}
	size, err := s.logEnd(ctx)
	if err != nil {
		return 0, err
	}
	var start uint64
	if size > recentVerdictsScanned {
		start = size - recentVerdictsScanned
	}
	used := map[string]evidence.Digest{} // the latest use of each URL
	for i := start; i < size; i++ {
		_, rec, err := s.record(ctx, i)
		if err := ctx.Err(); err != nil {
			return 0, err
		}
		if err != nil {
			s.logger.WarnContext(ctx, "a recent record could not be read; the collateral it used is not compared", slog.Uint64("log_index", i), slog.Any("error", err))
			continue
		}
		if rec.Kind != evidence.KindAttestation {
			continue
		}
		for _, c := range rec.Collateral {
			used[c.URL] = c.Digest
		}
	}
	// The held documents that differ from the ones used, and the collateral_update records since
	// a day before the earliest of them was issued, read once.
	type candidate struct {
		url  string
		resp *collateral.Response
		v    collateral.Validity
		last evidence.Digest
	}
	var cands []candidate
	var from time.Time
	for _, url := range slices.Sorted(maps.Keys(used)) {
		resp, v, held := s.cache.Held(url)
		if !held || evidence.Digest(resp.Digest()) == used[url] {
			continue
		}
		cands = append(cands, candidate{url, resp, v, used[url]})
		if t := v.IssuedAt.Add(-24 * time.Hour); from.IsZero() || t.Before(from) {
			from = t
		}
	}
	if len(cands) == 0 {
		return 0, nil
	}
	recorded, err := s.recordedCollateral(ctx, from)
	if err != nil {
		// A replacement recorded twice says the same thing twice; one not recorded is a gap.
		s.logger.WarnContext(ctx, "could not read the collateral updates already recorded; recording those found at start-up", slog.Any("error", err))
	}
	n := 0
	for _, c := range cands {
		u := collateral.Update{URL: c.url, New: c.resp, NewValidity: c.v, Stored: true}
		old, err := s.storedCollateral(ctx, c.last)
		if err == nil {
			u.Old = old
			u.OldValidity, err = collateral.ValidityOf(old)
		}
		if err != nil {
			// Recorded without the previous document rather than not at all.
			s.logger.WarnContext(ctx, "the collateral a verdict used cannot be read from the blob store; its replacement is recorded without it", slog.String("url", c.url), slog.String("sha256", c.last.String()), slog.Any("error", err))
			u.Old, u.OldValidity = nil, collateral.Validity{}
		}
		// Older first: a restored document may well have been recorded once, when it was new.
		if u.Old != nil {
			if why := collateral.OlderThan(c.resp, c.v, u.Old, u.OldValidity); why != "" {
				s.logger.ErrorContext(ctx, "the collateral store holds an older document than the latest verdicts used (a restored backup?): the one used is held again; import a current bundle",
					slog.String("url", c.url), slog.String("why", why), slog.String("used_sha256", c.last.String()))
				if err := s.cache.HoldUsed(ctx, c.url, u.Old, u.OldValidity); err != nil {
					s.logger.ErrorContext(ctx, "holding the document the latest verdicts used", slog.String("url", c.url), slog.Any("error", err))
				}
				continue
			}
		}
		if recorded[c.url][evidence.Digest(c.resp.Digest())] {
			continue
		}
		if err := s.appendCollateralUpdate(ctx, u); err != nil {
			return n, err
		}
		n++
	}
	return n, nil
}

// storedCollateral reads the collateral response with digest d from the blob store.
func (s *Service) storedCollateral(ctx context.Context, d evidence.Digest) (*collateral.Response, error) {
	b, err := s.d.Blobs.Get(ctx, d)
	if err != nil {
		return nil, err
	}
	rs, err := collateral.Parse(b)
	if err != nil {
		return nil, err
	}
	if len(rs) != 1 || evidence.Digest(rs[0].Digest()) != d {
		return nil, fmt.Errorf("blob %s is not that collateral response", d)
	}
	return rs[0], nil
}

// reloadCollateral is an offline verifier's loop: every Settings.CollateralReloadInterval on the
// collateral clock it makes the cache use the newer documents an import wrote to its store
// (collateral.Cache.Reload), each replacement a collateral_update record (recordCollateralUpdate),
// so that an imported TCB recovery takes effect within the interval rather than when the held TCB
// info expires, up to 30 days later.
func (s *Service) reloadCollateral(ctx context.Context) {
	for s.collClock.Sleep(ctx, s.set.CollateralReloadInterval) == nil {
		func() {
			defer func() {
				if p := recover(); p != nil {
					s.logger.ErrorContext(ctx, "collateral reload panicked", slog.Any("panic", p), slog.String("stack", string(debug.Stack())))
				}
			}()
			n, err := s.cache.Reload(ctx)
			switch {
			case err != nil && ctx.Err() == nil:
				s.logger.WarnContext(ctx, "collateral reload from the store failed; retried at the next interval", slog.Any("error", err))
			case n > 0:
				s.logger.InfoContext(ctx, "collateral reloaded from the store", slog.Int("replaced", n))
			}
		}()
	}
}

// SubscribeTCBRecovery registers fn for every Intel TCB recovery that reaches the service's live
// collateral (collateral.TCBRecovery: a TCB info or QE identity replaced by one with a higher
// tcbEvaluationDataNumber), by the background refresh or on demand, once its collateral_update
// record is durable; each recovery is reported once. It is the hook for alerting; fn MUST return
// quickly (see collateral.Refresher.Observe). It reports false, registering nothing, when the
// service has no refreshed live collateral (recorded or offline collateral never changes).
func (s *Service) SubscribeTCBRecovery(fn func(ctx context.Context, r collateral.TCBRecovery)) bool {
	if s.refresher == nil {
		return false
	}
	s.refresher.SubscribeTCBRecovery(fn)
	return true
}

func (s *Service) closeCollateral() {
	if s.cache != nil {
		s.cache.Close()
	}
}

// collateralFor is the collateral source of one verification: with live collateral and a policy
// whose section for the platform sets stale_grace_unsafe, the cache may serve a stale copy within
// that grace when it cannot refetch it (the verifier still reports it, and caps the result).
func (s *Service) collateralFor(p *policy.Policy, platform attest.Platform) collateral.Source {
	if s.cache == nil {
		return s.coll
	}
	var grace time.Duration
	switch platform {
	case attest.PlatformTDX:
		grace = p.TDX.StaleGrace()
	case attest.PlatformSNP:
		grace = p.SNP.StaleGrace()
	}
	if grace > 0 {
		return s.cache.AllowStaleUnsafe(grace)
	}
	return s.cache
}

// recordCollateralUpdate is the cache's OnReplace: it stores both documents in the blob store
// and appends a collateral_update record naming the URL, the old and the new digest, the new
// document's issue time and nextUpdate and, for Intel TCB info and QE identity, its
// tcbEvaluationDataNumber. It returns once the record is durable; the cache keeps the new
// document only then.
//
// A replacement found in the cache's store (u.Stored: an offline import, or another verifier
// sharing the store and the log) is recorded the same way, unless the index already holds a
// collateral_update naming that document for that URL (when it cannot be searched, the
// replacement is recorded).
func (s *Service) recordCollateralUpdate(ctx context.Context, u collateral.Update) error {
	if u.Stored {
		newD := evidence.Digest(u.New.Digest())
		done, err := s.collateralRecorded(ctx, u.URL, newD, u.NewValidity.IssuedAt)
		if ctx.Err() != nil {
			return ctx.Err() // stopping: nothing recorded, nothing kept
		}
		if err != nil {
			// A replacement recorded twice says the same thing twice; one not recorded is a gap.
			s.logger.WarnContext(ctx, "could not look for an earlier record of a collateral update found in the store; recording it", slog.String("url", u.URL), slog.Any("error", err))
		}
		if done {
			s.logger.InfoContext(ctx, "collateral update found in the store, already recorded", slog.String("url", u.URL), slog.String("new_sha256", newD.String()))
			return nil
		}
	}
	return s.appendCollateralUpdate(ctx, u)
}

// appendCollateralUpdate stores both documents of u in the blob store and appends its
// collateral_update record (recordCollateralUpdate), returning once it is durable.
func (s *Service) appendCollateralUpdate(ctx context.Context, u collateral.Update) error {
	newD := evidence.Digest(u.New.Digest())
	source := "fetch"
	if u.Stored {
		source = "store"
	}
	if err := s.storeBlob(ctx, newD, u.New.Canonical()); err != nil {
		return err
	}
	change := evidence.CollateralChange{
		IssuedAt:   u.NewValidity.IssuedAt.UTC().Truncate(time.Second),
		NextUpdate: u.NewValidity.NextUpdate.UTC().Truncate(time.Second),
	}
	if u.Old != nil {
		oldD := evidence.Digest(u.Old.Digest())
		if err := s.storeBlob(ctx, oldD, u.Old.Canonical()); err != nil {
			return err
		}
		change.Previous = &oldD
	}
	var evalNumber string
	if n, ok := collateral.TCBEvaluationDataNumber(u.New); ok {
		change.TCBEvaluationDataNumber = &n
		evalNumber = strconv.FormatUint(n, 10)
		if p, ok := collateral.TCBEvaluationDataNumber(u.Old); ok && change.Previous != nil {
			change.PreviousTCBEvaluationDataNumber = &p
		}
		if d, ok := collateral.LatestTCBDate(u.New); ok && d.After(time.Unix(0, 0)) && d.Year() <= 9999 {
			// (A date the record schema cannot hold is left out rather than failing the update.)
			d = d.Truncate(time.Second)
			change.TCBDate = &d
		}
	}
	kind := collateralKind(u.URL, u.NewValidity.Kind)
	rec := &evidence.Record{
		Version:          evidence.Version,
		Kind:             evidence.KindCollateralUpdate,
		Time:             s.now().UTC().Truncate(time.Second),
		Collateral:       []evidence.CollateralRef{{Kind: kind, URL: u.URL, Digest: newD}},
		CollateralUpdate: []evidence.CollateralChange{change},
		Verifier:         s.verifier,
	}
	leaf, idx, err := s.appendRecord(ctx, rec)
	if err != nil {
		return fmt.Errorf("recording the collateral update of %s: %w", u.URL, err)
	}
	s.m.collateralUpdates.WithLabelValues(kind).Inc()
	if _, ok := collateral.RecoveryOf(u); ok {
		s.m.tcbRecoveries.WithLabelValues(kind).Inc()
		if s.refresher != nil {
			// The TCB recovery hook (Refresher.SubscribeTCBRecovery), for replacements made on
			// demand too; the refresher reports each recovery once.
			s.refresher.Observe(ctx, u)
		}
	}
	s.alertCollateralUpdate(ctx, u, idx, rec.Time)
	sum := sha256.Sum256(leaf)
	attrs := []any{slog.String("url", u.URL), slog.String("kind", kind), slog.String("source", source), slog.Uint64("log_index", idx),
		slog.String("record_sha256", hex.EncodeToString(sum[:])), slog.String("new_sha256", newD.String()),
		slog.Time("next_update", change.NextUpdate)}
	if change.Previous != nil {
		attrs = append(attrs, slog.String("old_sha256", change.Previous.String()))
	}
	if evalNumber != "" {
		attrs = append(attrs, slog.String("tcb_evaluation_data_number", evalNumber))
	}
	s.logger.InfoContext(ctx, "collateral update recorded", attrs...)
	return nil
}

// collateralRecorded reports whether the log holds a collateral_update record naming the
// document with digest d for url, among those indexed since a day before issued (a document is
// recorded once it is issued; the day allows for clocks that disagree). The index lags the log
// (by the records being indexed, and by an index outage): a replacement another verifier
// recorded that is not indexed yet is recorded again, which says the same thing twice.
func (s *Service) collateralRecorded(ctx context.Context, url string, d evidence.Digest, issued time.Time) (bool, error) {
	var from time.Time
	if !issued.IsZero() {
		from = issued.Add(-24 * time.Hour)
	}
	recorded, err := s.recordedCollateral(ctx, from)
	return recorded[url][d], err
}

// recordedCollateral returns, per URL, the digests of the documents the collateral_update
// records indexed from the time from (zero: all) name.
func (s *Service) recordedCollateral(ctx context.Context, from time.Time) (map[string]map[evidence.Digest]bool, error) {
	out := map[string]map[evidence.Digest]bool{}
	err := s.eachRecord(ctx, index.Query{Kind: evidence.KindCollateralUpdate, From: from}, func(_ uint64, _ []byte, rec *evidence.Record, err error) error {
		if err != nil {
			return err
		}
		for _, c := range rec.Collateral {
			if out[c.URL] == nil {
				out[c.URL] = map[evidence.Digest]bool{}
			}
			out[c.URL][c.Digest] = true
		}
		return nil
	})
	return out, err
}

// collateralKind names a document in records as attestation records do (verifier/tdx and
// verifier/snp: pck_crl, root_ca_crl, amd_crl, tcb_info, qe_identity…), from its URL and
// validity kind.
func collateralKind(u, validityKind string) string {
	if validityKind != "crl" {
		return validityKind
	}
	switch {
	case strings.HasPrefix(u, collateral.IntelPCSOrigin):
		return "pck_crl"
	case strings.HasPrefix(u, collateral.IntelCertificatesOrigin):
		return "root_ca_crl"
	case strings.HasPrefix(u, collateral.AMDKDSOrigin):
		return "amd_crl"
	}
	return validityKind
}

// collateralDocuments lists the documents the service serves, with the clock they are judged on.
func (s *Service) collateralDocuments() ([]collateral.Document, time.Time) {
	switch src := s.coll.(type) {
	case *collateral.Cache:
		return src.Documents(), s.collClock.Now()
	case collateral.Set:
		return src.Documents(), s.now()
	}
	return nil, s.now()
}

// maxExpiringListed bounds the documents one readiness warning names.
const maxExpiringListed = 5

// collateralExpiring describes, for /readyz, the dated documents that expire within
// Settings.CollateralExpiryWarning (or have expired) and could not be refreshed: with live
// collateral, those that have expired, or whose latest refresh failed, or that the refresher
// asked for once already inside that window and got back unchanged; a recorded set is never
// refreshed, so all of them. It returns "" when there are none.
func (s *Service) collateralExpiring() string {
	docs, now := s.collateralDocuments()
	var listed []string
	n := 0
	for _, d := range docs {
		v := d.Validity
		if v.Immutable || v.NextUpdate.IsZero() || v.NextUpdate.Sub(now) >= s.set.CollateralExpiryWarning {
			continue
		}
		why := "recorded, never refreshed"
		if s.refresher != nil {
			f, failed := s.refresher.Failure(d.URL)
			last, tried := s.refresher.LastRefetch(d.URL)
			switch {
			case failed:
				why = fmt.Sprintf("refresh failed at %s: %v", f.At.UTC().Format(time.RFC3339), f.Err)
			case tried && !last.Before(v.NextUpdate.Add(-s.set.CollateralExpiryWarning)):
				why = fmt.Sprintf("the collateral server still answered with this document at %s", last.UTC().Format(time.RFC3339))
			case !now.Before(v.NextUpdate):
				why = "expired, not refreshed yet"
			default:
				continue // the refresher has not tried inside the window yet
			}
		}
		n++
		if len(listed) < maxExpiringListed {
			listed = append(listed, fmt.Sprintf("%s (next update %s; %s)", d.URL, v.NextUpdate.UTC().Format(time.RFC3339), why))
		}
	}
	if n == 0 {
		return ""
	}
	more := ""
	if n > len(listed) {
		more = fmt.Sprintf("; and %d more", n-len(listed))
	}
	return fmt.Sprintf("%d collateral document(s) expire within %s or have expired and could not be refreshed — verdicts that need them will be contraindicated once they expire; check the collateral servers and collateral.fetch: %s%s",
		n, s.set.CollateralExpiryWarning, strings.Join(listed, "; "), more)
}

// countingSource counts the upstream's failures by vendor and status for the metrics; it is the
// cache's upstream.
type countingSource struct {
	src    collateral.Source
	errors *prometheus.CounterVec // vendor, status
}

func (c countingSource) Get(ctx context.Context, u string) (*collateral.Response, error) {
	r, err := c.src.Get(ctx, u)
	if err != nil {
		c.errors.WithLabelValues(vendorOf(u), fetchStatus(err)).Inc()
	}
	return r, err
}

// vendorOf labels a canonical collateral URL: intel, amd or other.
func vendorOf(u string) string {
	switch {
	case strings.HasPrefix(u, collateral.IntelPCSOrigin), strings.HasPrefix(u, collateral.IntelCertificatesOrigin):
		return "intel"
	case strings.HasPrefix(u, collateral.AMDKDSOrigin):
		return "amd"
	}
	return "other"
}

// fetchStatus sorts a fetch error into a few labels: the HTTP status the server answered,
// "timeout", "network", or "other" (a budget or Retry-After wait longer than allowed, a body
// too large, a route missing).
func fetchStatus(err error) string {
	var se *collateral.StatusError
	var ne net.Error
	var ue *url.Error
	switch {
	case errors.As(err, &se):
		return strconv.Itoa(se.Status)
	case errors.Is(err, context.DeadlineExceeded), errors.As(err, &ne) && ne.Timeout():
		return "timeout"
	case errors.As(err, &ue), errors.As(err, &ne):
		return "network"
	}
	return "other"
}

// collateralCollector exports the age and time to expiry of the collateral the service holds,
// read at scrape time. Labels are bounded: the document kind and the URL's host, never a chip or
// an FMSPC.
type collateralCollector struct {
	s              *Service
	age, toExpiry  *prometheus.Desc
	documentsTotal *prometheus.Desc
}

func newCollateralCollector(s *Service) *collateralCollector {
	return &collateralCollector{
		s: s,
		age: prometheus.NewDesc("proofline_collateral_cached_age_seconds",
			"Age (now minus issue time) of the oldest collateral document held, by kind and host.", []string{"kind", "host"}, nil),
		toExpiry: prometheus.NewDesc("proofline_collateral_expiry_seconds",
			"Seconds until the earliest nextUpdate of the dated collateral documents held, by kind (negative: expired).", []string{"kind"}, nil),
		documentsTotal: prometheus.NewDesc("proofline_collateral_documents",
			"Collateral documents held, by kind.", []string{"kind"}, nil),
	}
}

func (c *collateralCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.age
	ch <- c.toExpiry
	ch <- c.documentsTotal
}

func (c *collateralCollector) Collect(ch chan<- prometheus.Metric) {
	docs, now := c.s.collateralDocuments()
	type kindHost struct{ kind, host string }
	age := map[kindHost]time.Duration{}
	expiry := map[string]time.Duration{}
	count := map[string]int{}
	for _, d := range docs {
		v := d.Validity
		count[v.Kind]++
		host := ""
		if pu, err := url.Parse(d.URL); err == nil {
			host = pu.Hostname()
		}
		k := kindHost{v.Kind, host}
		if a, ok := age[k]; !ok || now.Sub(v.IssuedAt) > a {
			age[k] = now.Sub(v.IssuedAt)
		}
		if v.Immutable || v.NextUpdate.IsZero() {
			continue
		}
		if e, ok := expiry[v.Kind]; !ok || v.NextUpdate.Sub(now) < e {
			expiry[v.Kind] = v.NextUpdate.Sub(now)
		}
	}
	for k, a := range age {
		ch <- prometheus.MustNewConstMetric(c.age, prometheus.GaugeValue, a.Seconds(), k.kind, k.host)
	}
	for k, e := range expiry {
		ch <- prometheus.MustNewConstMetric(c.toExpiry, prometheus.GaugeValue, e.Seconds(), k)
	}
	for k, n := range count {
		ch <- prometheus.MustNewConstMetric(c.documentsTotal, prometheus.GaugeValue, float64(n), k)
	}
}
