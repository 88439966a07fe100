package collateral

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/proofline/proofline/internal/buildinfo"
)

// Canonical vendor origins: the URLs the verifier asks for start with these, as go-tdx-guest's
// pcs package (Intel PCS API v4,
// https://api.portal.trustedservices.intel.com/content/documentation.html) and go-sev-guest's kds
// package (AMD "VCEK Certificate and KDS Interface Specification", doc 57230,
// https://www.amd.com/content/dam/amd/en/documents/epyc-technical-docs/specifications/57230.pdf)
// build them, or as the Intel SGX Root CA's CRL distribution point names it.
const (
	// IntelPCSOrigin serves TCB info, QE identity and PCK CRLs under /sgx/certification/v4/ and
	// /tdx/certification/v4/.
	IntelPCSOrigin = "https://api.trustedservices.intel.com/"
	// IntelCertificatesOrigin serves the Intel SGX Root CA CRL (IntelSGXRootCA.der).
	IntelCertificatesOrigin = "https://certificates.trustedservices.intel.com/"
	// AMDKDSOrigin serves VCEKs, cert chains and CRLs under /vcek/v1/ and /vlek/v1/.
	AMDKDSOrigin = "https://kdsintf.amd.com/"
)

// DefaultMaxWait is how long a fetch waits, by default, for its host's rate budget or Retry-After.
const DefaultMaxWait = 10 * time.Minute

// minHold is the least a 429 or 503 answer holds its host, whatever Retry-After says: a
// "Retry-After: 0" must not turn into a busy loop.
const minHold = time.Second

// Route maps canonical vendor URLs to the server actually asked (the vendor, a PCCS, a caching
// proxy or a mirror), with the request budget of that server.
type Route struct {
	// Prefix selects the canonical URLs the route serves: a URL prefix ending in "/" (e.g.
	// AMDKDSOrigin, or "https://api.trustedservices.intel.com/sgx/") or, without the final "/",
	// one exact URL (e.g. the Root CA CRL "https://certificates.trustedservices.intel.com/IntelSGXRootCA.der").
	// The longest matching Prefix wins.
	Prefix string
	// Base replaces Prefix in the URL requested: for a prefix route a URL ending in "/" (a PCCS:
	// "https://pccs.internal:8081/", whose paths are the PCS v4 paths), for an exact route any
	// URL. Empty means Prefix: ask the vendor itself.
	Base string
	// Every and Burst are the budget of Base's host, shared by every route that sends there: at
	// most Burst requests at once, refilled at one per Every. Every 0 means no budget (Retry-After
	// is still honoured). Burst 0 means 1.
	Every time.Duration
	Burst int
}

// DefaultRoutes asks the vendors themselves: Intel PCS and the Intel certificates host at most 10
// requests at once refilled at one per second (a politeness budget; Intel publishes no number),
// AMD KDS one request per 10 s (KDS answers 429 to faster clients).
func DefaultRoutes() []Route {
	return []Route{
		{Prefix: IntelPCSOrigin, Every: time.Second, Burst: 10},
		{Prefix: IntelCertificatesOrigin, Every: time.Second, Burst: 10},
		{Prefix: AMDKDSOrigin, Every: 10 * time.Second, Burst: 1},
	}
}

// FetcherConfig configures a Fetcher.
type FetcherConfig struct {
	// Client sends the requests. Required: give it a Timeout, and a Transport with the proxy
	// and TLS settings of the deployment (http.DefaultClient is never used). Its CheckRedirect
	// decides whether a server may redirect elsewhere; the response is recorded under the
	// canonical URL either way.
	Client *http.Client
	// Clock judges rate budgets and Retry-After. Nil means SystemClock.
	Clock Clock
	// Routes map canonical URLs to servers. Nil means DefaultRoutes. A URL no route matches is
	// never fetched.
	Routes []Route
	// IntelUpdate, "standard" or "early", is sent as the update parameter of Intel PCS v4 TCB
	// info and QE/QVE identity requests ("Get TCB Info", "Get Quoting Enclave Identity":
	// early gets the TCB recovery collateral as soon as Intel publishes it). Empty sends none,
	// which PCS treats as standard. The parameter is added to the request only: the response is
	// recorded under the URL the verifier asked for, and its body names its
	// tcbEvaluationDataNumber.
	IntelUpdate string
	// MaxResponseSize bounds a response body. 0 means MaxResponseSize.
	MaxResponseSize int64
	// MaxWait bounds how long, on Clock, one Get waits for its host's budget and Retry-After
	// before failing. 0 means DefaultMaxWait.
	MaxWait time.Duration
	// Logger receives one line per throttled or failed request. Nil discards.
	Logger *slog.Logger
}

// Fetcher is a Source that fetches collateral over HTTP. It maps each canonical vendor URL to the
// server its Route names, keeps each server's rate budget, honours 429 and 503 Retry-After, and
// returns the 200 response recorded under the canonical URL with the headers a verifier or an
// auditor uses (Content-Type, Warning, Intel's *-Issuer-Chain and SGX-* headers). Anything else
// is an error wrapping ErrUnavailable (a *StatusError when the server answered). It does not
// cache: put a Cache in front of it. It is safe for concurrent use.
type Fetcher struct {
	client  *http.Client
	clock   Clock
	routes  []route // longest prefix first
	update  string
	maxSize int64
	maxWait time.Duration
	log     *slog.Logger
}

type route struct {
	prefix, base string
	exact        bool
	host         string // scheme://host of base, the budget's key
	budget       *budget
}

// NewFetcher checks cfg and returns a Fetcher.
func NewFetcher(cfg FetcherConfig) (*Fetcher, error) {
	if cfg.Client == nil {
		return nil, errors.New("collateral: FetcherConfig.Client is required (an *http.Client with a Timeout)")
	}
	f := &Fetcher{client: cfg.Client, clock: cfg.Clock, update: cfg.IntelUpdate, maxSize: cfg.MaxResponseSize,
		maxWait: cfg.MaxWait, log: cfg.Logger}
	if f.clock == nil {
		f.clock = SystemClock{}
	}
	if f.maxSize <= 0 {
		f.maxSize = MaxResponseSize
	}
	if f.maxWait <= 0 {
		f.maxWait = DefaultMaxWait
	}
	if f.log == nil {
		f.log = slog.New(slog.DiscardHandler)
	}
	switch f.update {
	case "", "standard", "early":
	default:
		return nil, fmt.Errorf("collateral: IntelUpdate is %q; set \"standard\", \"early\" or nothing", f.update)
	}
	routes := cfg.Routes
	if routes == nil {
		routes = DefaultRoutes()
	}
	budgets := map[string]*budget{}
	seen := map[string]bool{}
	for _, r := range routes {
		rt, err := checkRoute(r)
		if err != nil {
			return nil, err
		}
		if seen[rt.prefix] {
			return nil, fmt.Errorf("collateral: two routes for %s; keep one", rt.prefix)
		}
		seen[rt.prefix] = true
		b := budgets[rt.host]
		if b == nil {
			b = newBudget(r.Every, r.Burst)
			budgets[rt.host] = b
		} else if b.every != r.Every || b.burst != max(r.Burst, 1) {
			return nil, fmt.Errorf("collateral: routes send to %s with different budgets; give every route to one host the same Every and Burst", rt.host)
		}
		rt.budget = b
		f.routes = append(f.routes, rt)
	}
	slices.SortStableFunc(f.routes, func(a, b route) int { return len(b.prefix) - len(a.prefix) })
	return f, nil
}

func checkRoute(r Route) (route, error) {
	p, err := url.Parse(r.Prefix)
	if err != nil || (p.Scheme != "https" && p.Scheme != "http") || p.Host == "" || p.User != nil || p.Fragment != "" {
		return route{}, fmt.Errorf("collateral: route prefix %q is not an absolute http(s) URL without credentials or fragment", r.Prefix)
	}
	rt := route{prefix: r.Prefix, base: r.Base, exact: !strings.HasSuffix(r.Prefix, "/")}
	if !rt.exact && p.RawQuery != "" {
		return route{}, fmt.Errorf("collateral: route prefix %q ends in \"/\" but has a query; give an exact URL or a path prefix", r.Prefix)
	}
	if rt.base == "" {
		rt.base = r.Prefix
	}
	b, err := url.Parse(rt.base)
	if err != nil || (b.Scheme != "https" && b.Scheme != "http") || b.Host == "" || b.Fragment != "" {
		return route{}, fmt.Errorf("collateral: route base %q (for %s) is not an absolute http(s) URL", rt.base, r.Prefix)
	}
	if !rt.exact && (!strings.HasSuffix(rt.base, "/") || b.RawQuery != "") {
		return route{}, fmt.Errorf("collateral: route base %q must end in \"/\" like its prefix %q", rt.base, r.Prefix)
	}
	if r.Every < 0 || r.Burst < 0 {
		return route{}, fmt.Errorf("collateral: route %s has a negative budget", r.Prefix)
	}
	rt.host = b.Scheme + "://" + b.Host
	return rt, nil
}

// route returns the route of a canonical URL and the URL to request.
func (f *Fetcher) route(canonical string) (*route, string, bool) {
	for i := range f.routes {
		rt := &f.routes[i]
		switch {
		case rt.exact && canonical == rt.prefix:
			return rt, rt.base, true
		case !rt.exact && strings.HasPrefix(canonical, rt.prefix):
			return rt, rt.base + canonical[len(rt.prefix):], true
		}
	}
	return nil, "", false
}

// intelUpdatable reports whether a canonical URL is an Intel PCS v4 TCB info or enclave identity
// request that takes the update parameter and does not already pin its collateral version.
func intelUpdatable(canonical string) bool {
	u, err := url.Parse(canonical)
	if err != nil || "https://"+u.Host+"/" != IntelPCSOrigin {
		return false
	}
	switch u.Path {
	case "/sgx/certification/v4/tcb", "/tdx/certification/v4/tcb",
		"/sgx/certification/v4/qe/identity", "/tdx/certification/v4/qe/identity", "/sgx/certification/v4/qve/identity":
		q := u.Query()
		return !q.Has("update") && !q.Has("tcbEvaluationDataNumber")
	}
	return false
}

// Get implements Source: it fetches canonical (the exact URL the verifier asked for) from the
// server its route names, waiting for the host's budget and any Retry-After up to MaxWait or
// until ctx is done.
func (f *Fetcher) Get(ctx context.Context, canonical string) (*Response, error) {
	rt, target, ok := f.route(canonical)
	if !ok {
		return nil, fmt.Errorf("%w: %s: no collateral route matches it; add a route for its origin (or import the collateral)", ErrUnavailable, canonical)
	}
	if f.update != "" && intelUpdatable(canonical) {
		sep := "?"
		if strings.Contains(target, "?") {
			sep = "&"
		}
		target += sep + "update=" + f.update
	}
	deadline := f.clock.Now().Add(f.maxWait)
	var last *StatusError
	for {
		if err := rt.budget.wait(ctx, f.clock, deadline); err != nil {
			var tl *waitTooLong
			switch {
			case errors.As(err, &tl) && last != nil:
				return nil, fmt.Errorf("%w (not retried: %s may be asked again at %s, after this fetch's limit of %s)",
					last, rt.host, tl.at.UTC().Format(time.RFC3339), f.maxWait)
			case errors.As(err, &tl) && tl.held:
				return nil, fmt.Errorf("%w: %s: %s asked (Retry-After) not to be asked again before %s, after this fetch's limit of %s; retry later",
					ErrUnavailable, canonical, rt.host, tl.at.UTC().Format(time.RFC3339), f.maxWait)
			case errors.As(err, &tl):
				return nil, fmt.Errorf("%w: %s: the request budget of %s allows the next request at %s, after this fetch's limit of %s; retry later or raise the route's budget if the server allows",
					ErrUnavailable, canonical, rt.host, tl.at.UTC().Format(time.RFC3339), f.maxWait)
			default:
				return nil, fmt.Errorf("%w: %s: waiting for the request budget of %s: %w", ErrUnavailable, canonical, rt.host, err)
			}
		}
		resp, serr, err := f.do(ctx, rt, canonical, target)
		if err != nil || serr == nil {
			return resp, err
		}
		if serr.Status != http.StatusTooManyRequests && serr.Status != http.StatusServiceUnavailable {
			return nil, serr
		}
		hold := max(serr.RetryAfter, minHold)
		if serr.RetryAfter == 0 {
			hold = max(rt.budget.every, minHold)
		}
		rt.budget.holdUntil(f.clock.Now().Add(hold))
		f.log.WarnContext(ctx, "collateral server is throttling", "url", canonical, "host", rt.host,
			"status", serr.Status, "hold", hold)
		last = serr
	}
}

// do sends one request. A 200 is returned as a Response; another status as a *StatusError
// (second result); a transport or read failure as an error.
func (f *Fetcher) do(ctx context.Context, rt *route, canonical, target string) (*Response, *StatusError, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, target, nil)
	if err != nil {
		return nil, nil, fmt.Errorf("%w: %s: %w", ErrUnavailable, canonical, err)
	}
	req.Header.Set("User-Agent", "proofline/"+buildinfo.Version())
	resp, err := f.client.Do(req)
	if err != nil {
		f.log.WarnContext(ctx, "collateral fetch failed", "url", canonical, "host", rt.host, "err", err)
		return nil, nil, fmt.Errorf("%w: %s: asking %s: %w", ErrUnavailable, canonical, rt.host, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		// Drain a bounded amount so that the connection can be reused.
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
		serr := &StatusError{URL: canonical, Host: rt.host, Status: resp.StatusCode, VendorError: vendorError(resp.Header)}
		if resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode == http.StatusServiceUnavailable {
			serr.RetryAfter, _ = ParseRetryAfter(resp.Header.Get("Retry-After"), f.clock.Now())
		} else {
			f.log.WarnContext(ctx, "collateral server refused", "url", canonical, "host", rt.host, "status", resp.StatusCode)
		}
		return nil, serr, nil
	}
	if resp.ContentLength > f.maxSize {
		return nil, nil, fmt.Errorf("%w: %s: %s announces %d bytes, over the limit of %d", ErrUnavailable, canonical, rt.host, resp.ContentLength, f.maxSize)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, f.maxSize+1))
	if err != nil {
		return nil, nil, fmt.Errorf("%w: %s: reading the answer of %s: %w", ErrUnavailable, canonical, rt.host, err)
	}
	if int64(len(body)) > f.maxSize {
		return nil, nil, fmt.Errorf("%w: %s: the answer of %s is over the limit of %d bytes", ErrUnavailable, canonical, rt.host, f.maxSize)
	}
	out := &Response{URL: canonical, Status: http.StatusOK, Body: body}
	for name, v := range resp.Header {
		if keptHeader(name) {
			if out.Headers == nil {
				out.Headers = map[string][]string{}
			}
			out.Headers[name] = slices.Clone(v)
		}
	}
	return out, nil, nil
}

// keptHeader reports whether a response header (canonical name) is recorded: what a verifier or
// an auditor uses, and nothing that changes from one fetch of the same document to the next
// (Date, request IDs, cookies), so that refetching an unchanged document gives the same digest.
// Intel PCS v4 names its issuer chains TCB-Info-Issuer-Chain, SGX-Enclave-Identity-Issuer-Chain
// and SGX-PCK-CRL-Issuer-Chain, and adds SGX-FMSPC and SGX-PCK-Certificate-CA-Type.
func keptHeader(name string) bool {
	return name == "Content-Type" || name == "Warning" ||
		strings.HasSuffix(name, "-Issuer-Chain") || strings.HasPrefix(name, "Sgx-")
}

// vendorError returns Intel PCS's Error-Code and Error-Message headers, quoted and bounded.
func vendorError(h http.Header) string {
	var parts []string
	for _, name := range []string{"Error-Code", "Error-Message"} {
		if v := h.Get(name); v != "" {
			if len(v) > 200 {
				v = v[:200]
			}
			parts = append(parts, name+" "+strconv.Quote(v))
		}
	}
	return strings.Join(parts, ", ")
}

// ParseRetryAfter reads a Retry-After header value (RFC 9110 §10.2.3,
// https://www.rfc-editor.org/rfc/rfc9110#section-10.2.3): delay-seconds or an HTTP-date, which is
// read relative to now (a date in the past is a zero delay). It reports false for an empty or
// malformed value. Delays are capped at 30 days.
func ParseRetryAfter(v string, now time.Time) (time.Duration, bool) {
	const maxDelay = 30 * 24 * time.Hour
	v = strings.TrimSpace(v)
	if v == "" {
		return 0, false
	}
	if v[0] >= '0' && v[0] <= '9' {
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			if errors.Is(err, strconv.ErrRange) {
				return maxDelay, true
			}
			return 0, false
		}
		return min(time.Duration(min(n, uint64(maxDelay/time.Second)))*time.Second, maxDelay), true
	}
	t, err := http.ParseTime(v)
	if err != nil {
		return 0, false
	}
	return min(max(t.Sub(now), 0), maxDelay), true
}

// StatusError is a server's answer other than 200. It wraps ErrUnavailable.
type StatusError struct {
	// URL is the canonical URL the verifier asked for.
	URL string
	// Host is the server asked (scheme://host of the route's base).
	Host string
	// Status is the HTTP status code.
	Status int
	// RetryAfter is the delay a 429 or 503 answer asked for; 0 when it gave none.
	RetryAfter time.Duration
	// VendorError holds Intel PCS's Error-Code and Error-Message headers, when sent.
	VendorError string
}

func (e *StatusError) Error() string {
	var hint string
	switch s := e.Status; {
	case s == http.StatusNotFound:
		hint = "the server has no document at this URL; check the chip ID, TCB or FMSPC the evidence reports, or import the collateral"
	case s == http.StatusUnauthorized || s == http.StatusForbidden:
		hint = "the server refused the request; check the route's base URL and the credentials the client sends"
	case s == http.StatusTooManyRequests || s == http.StatusServiceUnavailable:
		hint = "the server is throttling or unavailable; retry later"
		if e.RetryAfter > 0 {
			hint = fmt.Sprintf("the server is throttling or unavailable and asked to retry after %s", e.RetryAfter)
		}
	case s >= 500:
		hint = "the server failed; retry later"
	default:
		hint = "not a collateral document"
	}
	detail := ""
	if e.VendorError != "" {
		detail = " (" + e.VendorError + ")"
	}
	return fmt.Sprintf("%v: %s: %s answered %d %s%s; %s", ErrUnavailable, e.URL, e.Host, e.Status, http.StatusText(e.Status), detail, hint)
}

// Unwrap returns ErrUnavailable.
func (e *StatusError) Unwrap() error { return ErrUnavailable }
