// Package collateraltest provides fake Intel PCS and AMD KDS HTTP servers and a fake clock for
// testing collateral clients. A Server serves a set of recorded responses (the
// []*collateral.Response that attest/attesttest/fakeintel and fakeamd produce, or a recorded
// collateral directory) by path and query, over TLS on localhost, and can inject what real vendor
// services do: 429 and 503 with Retry-After, 500, slow answers, oversized or stale documents, and
// AMD KDS's per-client rate limit. It counts what it answered, per canonical URL.
//
// It is test-only: import it from tests.
package collateraltest

import (
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/proofline/proofline/verifier/collateral"
)

// KDSInterval is the fake KDS's rate limit: one request per client per 10 s, as the issue
// describes AMD KDS's (AMD doc 57230 documents 429 for clients over the limit).
const KDSInterval = 10 * time.Second

// Options configure a Server.
type Options struct {
	// Clock times the rate limit, Retry-After and Delay faults. Required.
	Clock collateral.Clock
	// Interval, when positive, allows each client (by remote IP) one request per Interval on
	// Clock, and answers the others 429 with Retry-After (whole seconds, rounded up) until then.
	// Every request that is not refused starts a new interval, whatever it is answered.
	Interval time.Duration
}

// Fault shapes the answer to matching requests. The first injected fault that matches a request
// applies, and is used up after Times requests.
type Fault struct {
	// URL restricts the fault to requests for this canonical URL; empty matches every request.
	URL string
	// Times is the number of requests the fault applies to; 0 means 1.
	Times int
	// Delay holds the answer until Clock has advanced by Delay (or the request is cancelled).
	Delay time.Duration
	// Hold holds the answer until the channel is closed (or the request is cancelled).
	Hold <-chan struct{}
	// Status, when not 0, is answered instead of the document, with RetryAfter as the
	// Retry-After header when not empty (a 429 or 503 with Retry-After also tells the server
	// when the client may come back, see Stats.Early).
	Status     int
	RetryAfter string
	// Body, when not nil and Status is 0, is answered with status 200 instead of the document.
	Body []byte
}

// Stats count a Server's answers.
type Stats struct {
	// Requests is every request received.
	Requests int
	// Served is the documents answered (with their recorded status, normally 200).
	Served int
	// RateLimited is the 429 answers of the rate limit (Options.Interval).
	RateLimited int
	// Injected is the answers a Fault shaped (Delay and Hold alone do not count).
	Injected int
	// NotFound is the 404 answers for URLs the server has no document for.
	NotFound int
	// Early is the requests a client sent before the Retry-After the server last gave it: a
	// well-behaved client keeps it at 0.
	Early int
}

// Server is a fake vendor collateral server. Its methods are safe for concurrent use.
type Server struct {
	// URL is the server's base URL, https://127.0.0.1:port, without a final "/".
	URL string

	srv      *httptest.Server
	clock    collateral.Clock
	interval time.Duration

	mu      sync.Mutex
	docs    map[string]*collateral.Response // by request URI (path and query)
	faults  []*Fault
	served  map[string]int      // by canonical URL
	updates map[string][]string // update parameters received, by canonical URL
	clients map[string]*client
	stats   Stats
}

type client struct {
	seen    bool
	last    time.Time // the last request not refused
	retryAt time.Time // the Retry-After last given
}

// NewServer starts a Server serving rs. Two responses with the same path and query are an error.
// Close it when done.
func NewServer(rs []*collateral.Response, o Options) (*Server, error) {
	if o.Clock == nil {
		return nil, errors.New("collateraltest: Options.Clock is required")
	}
	s := &Server{clock: o.Clock, interval: o.Interval, docs: map[string]*collateral.Response{},
		served: map[string]int{}, updates: map[string][]string{}, clients: map[string]*client{}}
	if err := s.Replace(rs...); err != nil {
		return nil, err
	}
	s.srv = httptest.NewUnstartedServer(s)
	// Clients that hang up on Close are normal in tests: keep the test log quiet.
	s.srv.Config.ErrorLog = log.New(io.Discard, "", 0)
	s.srv.StartTLS()
	s.URL = s.srv.URL
	return s, nil
}

// NewKDS starts a fake AMD KDS: NewServer with the KDSInterval rate limit.
func NewKDS(rs []*collateral.Response, clock collateral.Clock) (*Server, error) {
	return NewServer(rs, Options{Clock: clock, Interval: KDSInterval})
}

// NewPCS starts a fake Intel PCS (and Intel certificates host): NewServer without a rate limit.
// Like PCS v4, it accepts the update parameter (standard or early, anything else is 400) on every
// request and serves the document recorded without it; Updates reports what it received.
func NewPCS(rs []*collateral.Response, clock collateral.Clock) (*Server, error) {
	return NewServer(rs, Options{Clock: clock})
}

// Close shuts the server down.
func (s *Server) Close() { s.srv.Close() }

// Client returns an *http.Client that trusts the server's certificate.
func (s *Server) Client() *http.Client { return s.srv.Client() }

// Routes returns a collateral.Route per origin of the server's documents (e.g.
// "https://kdsintf.amd.com/") with the server as Base and no budget.
func (s *Server) Routes() []collateral.Route {
	s.mu.Lock()
	defer s.mu.Unlock()
	origins := map[string]bool{}
	for _, d := range s.docs {
		if u, err := url.Parse(d.URL); err == nil {
			origins[u.Scheme+"://"+u.Host+"/"] = true
		}
	}
	var out []collateral.Route
	for o := range origins {
		out = append(out, collateral.Route{Prefix: o, Base: s.URL + "/"})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Prefix < out[j].Prefix })
	return out
}

// Replace serves rs from now on, in place of the documents with the same URL (e.g. a stale CRL,
// or a new TCB info), and in addition to the others.
func (s *Server) Replace(rs ...*collateral.Response) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, r := range rs {
		u, err := url.Parse(r.URL)
		if err != nil || u.Host == "" {
			return fmt.Errorf("collateraltest: %q is not an absolute URL", r.URL)
		}
		key := u.RequestURI()
		if old := s.docs[key]; old != nil && old.URL != r.URL {
			return fmt.Errorf("collateraltest: %s and %s have the same path and query; serve them from two servers", old.URL, r.URL)
		}
		s.docs[key] = r
	}
	return nil
}

// Inject adds a fault.
func (s *Server) Inject(f Fault) {
	if f.Times <= 0 {
		f.Times = 1
	}
	s.mu.Lock()
	s.faults = append(s.faults, &f)
	s.mu.Unlock()
}

// Served returns how many times the document at canonical URL u was served.
func (s *Server) Served(u string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.served[u]
}

// ServedURLs returns the count of documents served per canonical URL.
func (s *Server) ServedURLs() map[string]int {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[string]int, len(s.served))
	for k, v := range s.served {
		out[k] = v
	}
	return out
}

// Updates returns the update parameters received with requests for canonical URL u, in order.
func (s *Server) Updates(u string) []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.updates[u]...)
}

// Stats returns the server's counters.
func (s *Server) Stats() Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.stats
}

// splitUpdate removes Intel PCS's update parameter from a request URI's query.
func splitUpdate(u *url.URL) (target string, update string, present bool) {
	if u.RawQuery == "" {
		return u.RequestURI(), "", false
	}
	var kept []string
	for _, part := range strings.Split(u.RawQuery, "&") {
		if v, ok := strings.CutPrefix(part, "update="); ok {
			update, present = v, true
			continue
		}
		kept = append(kept, part)
	}
	target = u.EscapedPath()
	if len(kept) > 0 {
		target += "?" + strings.Join(kept, "&")
	}
	return target, update, present
}

func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet {
		http.Error(w, "GET only", http.StatusMethodNotAllowed)
		return
	}
	target, update, hasUpdate := splitUpdate(r.URL)
	host, _, _ := net.SplitHostPort(r.RemoteAddr)

	s.mu.Lock()
	s.stats.Requests++
	cl := s.clients[host]
	if cl == nil {
		cl = &client{}
		s.clients[host] = cl
	}
	if s.clock.Now().Before(cl.retryAt) {
		s.stats.Early++
	}
	doc := s.docs[target]
	var canonical string
	if doc != nil {
		canonical = doc.URL
	}
	var f *Fault
	for i, c := range s.faults {
		if c.URL == "" || c.URL == canonical {
			f = c
			if c.Times--; c.Times == 0 {
				s.faults = append(s.faults[:i], s.faults[i+1:]...)
			}
			break
		}
	}
	s.mu.Unlock()

	if f != nil {
		if f.Delay > 0 && s.clock.Sleep(r.Context(), f.Delay) != nil {
			return
		}
		if f.Hold != nil {
			select {
			case <-f.Hold:
			case <-r.Context().Done():
				return
			}
		}
		if f.Status != 0 || f.Body != nil {
			s.mu.Lock()
			s.stats.Injected++
			if ra, ok := collateral.ParseRetryAfter(f.RetryAfter, s.clock.Now()); ok &&
				(f.Status == http.StatusTooManyRequests || f.Status == http.StatusServiceUnavailable) {
				cl.retryAt = s.clock.Now().Add(ra)
			}
			s.mu.Unlock()
			if f.Status != 0 {
				if f.RetryAfter != "" {
					w.Header().Set("Retry-After", f.RetryAfter)
				}
				http.Error(w, http.StatusText(f.Status), f.Status)
				return
			}
			w.Header()["Content-Type"] = nil
			_, _ = w.Write(f.Body)
			return
		}
	}
	if hasUpdate && update != "standard" && update != "early" {
		http.Error(w, "update must be standard or early", http.StatusBadRequest)
		return
	}

	s.mu.Lock()
	now := s.clock.Now()
	if s.interval > 0 && cl.seen && now.Before(cl.last.Add(s.interval)) {
		wait := cl.last.Add(s.interval).Sub(now)
		secs := int64((wait + time.Second - 1) / time.Second)
		cl.retryAt = now.Add(time.Duration(secs) * time.Second)
		s.stats.RateLimited++
		s.mu.Unlock()
		w.Header().Set("Retry-After", strconv.FormatInt(secs, 10))
		http.Error(w, "rate limited", http.StatusTooManyRequests)
		return
	}
	cl.seen, cl.last = true, now
	if doc == nil {
		s.stats.NotFound++
		s.mu.Unlock()
		http.NotFound(w, r)
		return
	}
	s.stats.Served++
	s.served[canonical]++
	if hasUpdate {
		s.updates[canonical] = append(s.updates[canonical], update)
	}
	s.mu.Unlock()

	for k, v := range doc.Headers {
		w.Header()[http.CanonicalHeaderKey(k)] = append([]string(nil), v...)
	}
	if w.Header().Get("Content-Type") == "" {
		// No sniffed Content-Type: answer with exactly the recorded headers.
		w.Header()["Content-Type"] = nil
	}
	status := doc.Status
	if status == 0 {
		status = http.StatusOK
	}
	w.WriteHeader(status)
	_, _ = w.Write(doc.Body)
}
