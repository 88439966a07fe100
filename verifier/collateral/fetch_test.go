package collateral_test

import (
	"context"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-tdx-guest/pcs"

	"github.com/proofline/proofline/attest/attesttest/fakeintel"
	"github.com/proofline/proofline/verifier/collateral"
	"github.com/proofline/proofline/verifier/collateral/collateraltest"
	"github.com/proofline/proofline/verifier/ear"
	"github.com/proofline/proofline/verifier/tdx"
)

// intelDocs returns a fake Intel PKI and its four PCS documents (TCB info, QE identity, PCK CRL,
// Root CA CRL) built with edit applied to the default collateral options.
func intelDocs(t *testing.T, edit func(*fakeintel.CollateralOptions)) (*fakeintel.PKI, []*collateral.Response) {
	t.Helper()
	p, err := fakeintel.New(start)
	if err != nil {
		t.Fatal(err)
	}
	o := fakeintel.DefaultCollateralOptions(start)
	if edit != nil {
		edit(&o)
	}
	rs, err := p.Collateral(o)
	if err != nil {
		t.Fatal(err)
	}
	return p, rs
}

func pcsServer(rs []*collateral.Response) func(*collateraltest.Clock) (*collateraltest.Server, error) {
	return func(c *collateraltest.Clock) (*collateraltest.Server, error) { return collateraltest.NewPCS(rs, c) }
}

// TestFetcherIntel: the four PCS documents a TDX verification needs come back through a Cache and
// a Fetcher from the fake PCS with the recorded digests (issuer-chain headers kept, Date and other
// per-fetch headers dropped), update=early goes to the TCB info and QE identity requests only, and
// the project's TDX verifier accepts a quote with that collateral.
func TestFetcherIntel(t *testing.T) {
	p, docs := intelDocs(t, nil)
	e := newEnv(t, pcsServer(docs), nil, func(c *collateral.FetcherConfig) { c.IntelUpdate = "early" })
	ctx := context.Background()
	for _, d := range docs {
		got, err := e.cache.Get(ctx, d.URL)
		if err != nil {
			t.Fatalf("%s: %v", d.URL, err)
		}
		if got.Digest() != d.Digest() {
			t.Errorf("%s: fetched response differs from the recorded one:\n got %s\nwant %s", d.URL, got.Canonical()[:200], d.Canonical()[:200])
		}
	}
	for u, want := range map[string][]string{
		pcs.TcbInfoURL(p.FMSPCHex()): {"early"},
		pcs.QeIdentityURL():          {"early"},
		pcs.PckCrlURL("platform"):    nil,
		docs[3].URL:                  nil,
	} {
		if got := e.srv.Updates(u); !slices.Equal(got, want) {
			t.Errorf("%s: PCS received update=%v, want %v", u, got, want)
		}
	}

	quote, err := p.Quote(fakeintel.DefaultQuoteOptions())
	if err != nil {
		t.Fatal(err)
	}
	res := &ear.Result{}
	_, claims := tdx.Verify(ctx, quote, tdx.Options{Now: e.clock.Now(), Roots: []*x509.Certificate{p.Root}, Collateral: e.cache}, res)
	if len(res.Failures) != 0 {
		t.Fatalf("TDX verification with fetched collateral: %+v", res.Failures)
	}
	for _, ci := range claims.Collateral {
		i := slices.IndexFunc(docs, func(d *collateral.Response) bool { return d.URL == ci.URL })
		if d := docs[i].Digest(); ci.Digest != "sha256:"+hex.EncodeToString(d[:]) {
			t.Errorf("%s: claims name digest %s, not the recorded document's", ci.URL, ci.Digest)
		}
	}
	if st := e.srv.Stats(); st.Requests != len(docs) {
		t.Errorf("PCS received %d requests, want %d (the verification is answered from the cache)", st.Requests, len(docs))
	}
}

// recorder is an upstream that answers 200 with a fixed body and records the request URIs.
type recorder struct {
	mu   sync.Mutex
	uris []string
	srv  *httptest.Server
}

func newRecorder(t *testing.T, body []byte) *recorder {
	r := &recorder{}
	r.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		r.mu.Lock()
		r.uris = append(r.uris, req.URL.RequestURI())
		r.mu.Unlock()
		w.Header().Set("Date", "Mon, 02 Mar 2026 12:00:00 GMT")
		w.Header().Set("Tcb-Info-Issuer-Chain", "chain")
		w.Header().Set("X-Request-Id", "changes every time")
		_, _ = w.Write(body)
	}))
	t.Cleanup(r.srv.Close)
	return r
}

func (r *recorder) last() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.uris) == 0 {
		return ""
	}
	return r.uris[len(r.uris)-1]
}

// TestFetcherRoutes: canonical URLs are mapped to the configured servers (PCCS, mirrors with a
// path, exact-URL routes; the longest prefix wins), the update parameter is added only where PCS
// takes it, the response is recorded under the canonical URL with only the kept headers, and a
// URL no route matches is never fetched.
func TestFetcherRoutes(t *testing.T) {
	rec := newRecorder(t, []byte("body"))
	base := rec.srv.URL
	f, err := collateral.NewFetcher(collateral.FetcherConfig{
		Client:      rec.srv.Client(),
		Clock:       collateraltest.NewClock(start),
		IntelUpdate: "standard",
		Routes: []collateral.Route{
			{Prefix: collateral.IntelPCSOrigin, Base: base + "/pccs/"},
			{Prefix: collateral.IntelPCSOrigin + "tdx/", Base: base + "/tdx-mirror/"},
			{Prefix: "https://certificates.trustedservices.intel.com/IntelSGXRootCA.der", Base: base + "/sgx/certification/v4/rootcacrl"},
			{Prefix: collateral.AMDKDSOrigin, Base: base + "/amd/"},
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for _, tc := range []struct{ canonical, upstream string }{
		{pcs.PckCrlURL("platform"), "/pccs/sgx/certification/v4/pckcrl?ca=platform&encoding=der"},
		{"https://api.trustedservices.intel.com/sgx/certification/v4/tcb?fmspc=00906ED50000", "/pccs/sgx/certification/v4/tcb?fmspc=00906ED50000&update=standard"},
		{pcs.TcbInfoURL("00806f050000"), "/tdx-mirror/certification/v4/tcb?fmspc=00806f050000&update=standard"},
		{pcs.QeIdentityURL(), "/tdx-mirror/certification/v4/qe/identity?update=standard"},
		{pcs.TcbInfoURL("00806f050000") + "&tcbEvaluationDataNumber=17", "/tdx-mirror/certification/v4/tcb?fmspc=00806f050000&tcbEvaluationDataNumber=17"},
		{"https://certificates.trustedservices.intel.com/IntelSGXRootCA.der", "/sgx/certification/v4/rootcacrl"},
		{"https://kdsintf.amd.com/vcek/v1/Milan/00ff?blSPL=4&teeSPL=0&snpSPL=22&ucodeSPL=213", "/amd/vcek/v1/Milan/00ff?blSPL=4&teeSPL=0&snpSPL=22&ucodeSPL=213"},
	} {
		r, err := f.Get(ctx, tc.canonical)
		if err != nil {
			t.Fatalf("%s: %v", tc.canonical, err)
		}
		if got := rec.last(); got != tc.upstream {
			t.Errorf("%s was requested as %s, want %s", tc.canonical, got, tc.upstream)
		}
		want := map[string][]string{"Tcb-Info-Issuer-Chain": {"chain"}, "Content-Type": {"text/plain; charset=utf-8"}}
		if r.URL != tc.canonical || r.Status != 200 || string(r.Body) != "body" || !equalHeaders(r.Headers, want) {
			t.Errorf("%s: response %s, want it under the canonical URL with only the kept headers", tc.canonical, r.Canonical())
		}
	}
	n := len(rec.uris)
	for _, u := range []string{"https://example.com/x", "https://kdsintf.amd.com.evil.example/vcek", "http://kdsintf.amd.com/vcek", "https://certificates.trustedservices.intel.com/other.der"} {
		if _, err := f.Get(ctx, u); !errors.Is(err, collateral.ErrUnavailable) || !strings.Contains(err.Error(), "no collateral route") {
			t.Errorf("%s: %v, want ErrUnavailable naming the missing route", u, err)
		}
	}
	if len(rec.uris) != n {
		t.Errorf("URLs without a route were fetched")
	}
}

func equalHeaders(a, b map[string][]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if !slices.Equal(v, b[k]) {
			return false
		}
	}
	return true
}

// TestFetcherConfig: configurations that cannot work are refused with a message that says what to
// change.
func TestFetcherConfig(t *testing.T) {
	client := &http.Client{}
	for _, tc := range []struct {
		name string
		cfg  collateral.FetcherConfig
		want string
	}{
		{"no client", collateral.FetcherConfig{}, "Client is required"},
		{"update", collateral.FetcherConfig{Client: client, IntelUpdate: "latest"}, `set "standard", "early"`},
		{"prefix", collateral.FetcherConfig{Client: client, Routes: []collateral.Route{{Prefix: "kdsintf.amd.com/"}}}, "not an absolute http(s) URL"},
		{"base slash", collateral.FetcherConfig{Client: client, Routes: []collateral.Route{{Prefix: collateral.AMDKDSOrigin, Base: "https://mirror.example/amd"}}}, `must end in "/"`},
		{"duplicate", collateral.FetcherConfig{Client: client, Routes: []collateral.Route{{Prefix: collateral.AMDKDSOrigin}, {Prefix: collateral.AMDKDSOrigin}}}, "two routes"},
		{"budgets", collateral.FetcherConfig{Client: client, Routes: []collateral.Route{
			{Prefix: collateral.AMDKDSOrigin, Base: "https://proxy.example/amd/", Every: time.Second},
			{Prefix: collateral.IntelPCSOrigin, Base: "https://proxy.example/intel/", Every: time.Minute},
		}}, "different budgets"},
		{"negative", collateral.FetcherConfig{Client: client, Routes: []collateral.Route{{Prefix: collateral.AMDKDSOrigin, Every: -1}}}, "negative budget"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := collateral.NewFetcher(tc.cfg); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("NewFetcher: %v, want an error containing %q", err, tc.want)
			}
		})
	}
	if _, err := collateral.NewFetcher(collateral.FetcherConfig{Client: client}); err != nil {
		t.Fatalf("default routes: %v", err)
	}
}

// TestFetcherFailures: every failure is an error wrapping ErrUnavailable that says what happened
// (with the status and, for throttling, the Retry-After), and none panics or retries a
// non-throttling status.
func TestFetcherFailures(t *testing.T) {
	_, docs := intelDocs(t, nil)
	tcb := docs[0].URL
	ctx := context.Background()

	t.Run("not found", func(t *testing.T) {
		e := newEnv(t, pcsServer(docs), nil, nil)
		u := pcs.TcbInfoURL("ffffffffffff")
		_, err := e.fetcher.Get(ctx, u)
		var se *collateral.StatusError
		if !errors.As(err, &se) || se.Status != 404 || !errors.Is(err, collateral.ErrUnavailable) || !strings.Contains(err.Error(), "no document at this URL") {
			t.Fatalf("%v, want a 404 StatusError", err)
		}
	})
	t.Run("500 is not retried", func(t *testing.T) {
		e := newEnv(t, pcsServer(docs), nil, nil)
		e.srv.Inject(collateraltest.Fault{URL: tcb, Status: 500})
		_, err := e.fetcher.Get(ctx, tcb)
		var se *collateral.StatusError
		if !errors.As(err, &se) || se.Status != 500 || e.srv.Stats().Requests != 1 {
			t.Fatalf("%v after %d requests, want one 500 StatusError", err, e.srv.Stats().Requests)
		}
	})
	t.Run("vendor error headers", func(t *testing.T) {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Error-Code", "InvalidParameter")
			w.Header().Set("Error-Message", "fmspc is invalid")
			w.WriteHeader(http.StatusBadRequest)
		}))
		defer srv.Close()
		f, err := collateral.NewFetcher(collateral.FetcherConfig{Client: srv.Client(), Routes: []collateral.Route{{Prefix: collateral.IntelPCSOrigin, Base: srv.URL + "/"}}})
		if err != nil {
			t.Fatal(err)
		}
		_, err = f.Get(ctx, tcb)
		if !errors.Is(err, collateral.ErrUnavailable) || !strings.Contains(err.Error(), `Error-Code "InvalidParameter", Error-Message "fmspc is invalid"`) {
			t.Fatalf("%v, want the vendor's error code and message", err)
		}
	})
	t.Run("oversized", func(t *testing.T) {
		e := newEnv(t, pcsServer(docs), nil, func(c *collateral.FetcherConfig) { c.MaxResponseSize = 100 })
		if _, err := e.fetcher.Get(ctx, tcb); !errors.Is(err, collateral.ErrUnavailable) || !strings.Contains(err.Error(), "over the limit of 100") {
			t.Fatalf("%v, want the size limit", err)
		}
	})
	t.Run("transport", func(t *testing.T) {
		e := newEnv(t, pcsServer(docs), nil, nil)
		e.srv.Close()
		_, err := e.fetcher.Get(ctx, tcb)
		var ue *url.Error
		if !errors.Is(err, collateral.ErrUnavailable) || !errors.As(err, &ue) {
			t.Fatalf("%v, want ErrUnavailable wrapping the transport error", err)
		}
	})
	t.Run("Retry-After beyond MaxWait", func(t *testing.T) {
		e := newEnv(t, pcsServer(docs), nil, nil) // MaxWait 1h
		e.srv.Inject(collateraltest.Fault{URL: tcb, Status: 429, RetryAfter: "7200"})
		_, err := e.fetcher.Get(ctx, tcb)
		var se *collateral.StatusError
		if !errors.As(err, &se) || se.Status != 429 || se.RetryAfter != 2*time.Hour || e.clock.Sleeps() != 0 || !strings.Contains(err.Error(), "not retried") {
			t.Fatalf("%v after %d sleeps, want the 429 at once", err, e.clock.Sleeps())
		}
		// The host stays held: the next request fails at once too, without asking.
		if _, err := e.fetcher.Get(ctx, docs[1].URL); !errors.Is(err, collateral.ErrUnavailable) || e.srv.Stats().Requests != 1 {
			t.Fatalf("%v after %d requests, want no request during the hold", err, e.srv.Stats().Requests)
		}
	})
	t.Run("budget beyond MaxWait", func(t *testing.T) {
		e := newEnv(t, pcsServer(docs), nil, func(c *collateral.FetcherConfig) {
			withBudget(time.Hour, 1)(c)
			c.MaxWait = time.Minute
		})
		if _, err := e.fetcher.Get(ctx, tcb); err != nil {
			t.Fatal(err)
		}
		_, err := e.fetcher.Get(ctx, docs[1].URL)
		if !errors.Is(err, collateral.ErrUnavailable) || !strings.Contains(err.Error(), "request budget") || e.clock.Sleeps() != 0 {
			t.Fatalf("%v, want the budget named at once", err)
		}
	})
	t.Run("cancelled while waiting", func(t *testing.T) {
		e := newEnv(t, pcsServer(docs), nil, withBudget(time.Minute, 1))
		if _, err := e.fetcher.Get(ctx, tcb); err != nil {
			t.Fatal(err)
		}
		cctx, cancel := context.WithCancel(ctx)
		done := make(chan error)
		go func() { _, err := e.fetcher.Get(cctx, docs[1].URL); done <- err }()
		for e.clock.Sleeping() == 0 {
			<-e.clock.Changed()
		}
		cancel()
		if err := <-done; !errors.Is(err, collateral.ErrUnavailable) || !errors.Is(err, context.Canceled) {
			t.Fatalf("%v, want ErrUnavailable and context.Canceled", err)
		}
	})
}

// TestFetcherRetryAfter: a 429 or 503 holds the host for its Retry-After (delay-seconds or
// HTTP-date), at least one second, or the route's interval when it gives none; the fetch then
// succeeds, and no request reaches the server before the Retry-After.
func TestFetcherRetryAfter(t *testing.T) {
	_, docs := intelDocs(t, nil)
	tcb := docs[0].URL
	for _, tc := range []struct {
		name       string
		status     int
		retryAfter string
		every      time.Duration
		want       time.Duration
	}{
		{"seconds", 429, "7", 0, 7 * time.Second},
		{"date", 503, start.Add(30 * time.Second).Format(http.TimeFormat), 0, 30 * time.Second},
		{"zero", 429, "0", 0, time.Second},
		{"none", 503, "", 0, time.Second},
		{"none with budget", 429, "", 20 * time.Second, 20 * time.Second},
		{"garbage", 429, "soon", 0, time.Second},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, pcsServer(docs), nil, withBudget(tc.every, 1))
			e.srv.Inject(collateraltest.Fault{URL: tcb, Status: tc.status, RetryAfter: tc.retryAfter})
			errs, _ := e.drive(1, func(int) error { return e.get(tcb) })
			if errs[0] != nil {
				t.Fatal(errs[0])
			}
			st := e.srv.Stats()
			if got := e.clock.Now().Sub(start); got != tc.want || st.Requests != 2 || st.Early != 0 || e.srv.Served(tcb) != 1 {
				t.Fatalf("waited %s, %d requests, %d early; want %s, 2, 0", got, st.Requests, st.Early, tc.want)
			}
		})
	}
}

func TestParseRetryAfter(t *testing.T) {
	now := start
	for _, tc := range []struct {
		in   string
		want time.Duration
		ok   bool
	}{
		{"120", 2 * time.Minute, true},
		{" 5 ", 5 * time.Second, true},
		{"0", 0, true},
		{now.Add(90 * time.Second).Format(http.TimeFormat), 90 * time.Second, true},
		{now.Add(-time.Hour).Format(http.TimeFormat), 0, true},
		{"99999999999999999999999", 30 * 24 * time.Hour, true},
		{"4000000000", 30 * 24 * time.Hour, true},
		{"", 0, false},
		{"-5", 0, false},
		{"1.5", 0, false},
		{"tomorrow", 0, false},
	} {
		if got, ok := collateral.ParseRetryAfter(tc.in, now); got != tc.want || ok != tc.ok {
			t.Errorf("ParseRetryAfter(%q) = %s, %v; want %s, %v", tc.in, got, ok, tc.want, tc.ok)
		}
	}
}

func FuzzParseRetryAfter(f *testing.F) {
	for _, s := range []string{"10", "Sun, 06 Nov 1994 08:49:37 GMT", "", "18446744073709551616", "Sunday, 06-Nov-94 08:49:37 GMT"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if d, _ := collateral.ParseRetryAfter(s, start); d < 0 || d > 30*24*time.Hour {
			t.Fatalf("ParseRetryAfter(%q) = %s", s, d)
		}
	})
}
