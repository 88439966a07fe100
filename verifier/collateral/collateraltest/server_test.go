package collateraltest_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/proofline/proofline/verifier/collateral"
	"github.com/proofline/proofline/verifier/collateral/collateraltest"
)

var start = time.Date(2026, 3, 2, 12, 0, 0, 0, time.UTC)

const (
	vcek = "https://kdsintf.amd.com/vcek/v1/Milan/00ff?blSPL=4&teeSPL=0&snpSPL=22&ucodeSPL=213"
	tcb  = "https://api.trustedservices.intel.com/tdx/certification/v4/tcb?fmspc=00806f050000"
)

var docs = []*collateral.Response{
	{URL: vcek, Status: 200, Body: []byte("vcek")},
	{URL: tcb, Status: 200, Headers: map[string][]string{"TCB-Info-Issuer-Chain": {"chain"}}, Body: []byte("tcb")},
}

type answer struct {
	status     int
	retryAfter string
	body       string
	header     http.Header
}

func get(t *testing.T, s *collateraltest.Server, path string) answer {
	t.Helper()
	resp, err := s.Client().Get(s.URL + path)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return answer{resp.StatusCode, resp.Header.Get("Retry-After"), string(b), resp.Header}
}

// TestKDSRateLimit: one request per client per 10 s; others get 429 with the seconds left, and
// a request before that Retry-After is counted as early.
func TestKDSRateLimit(t *testing.T) {
	clock := collateraltest.NewClock(start)
	s, err := collateraltest.NewKDS(docs, clock)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	path := strings.TrimPrefix(vcek, "https://kdsintf.amd.com")
	if a := get(t, s, path); a.status != 200 || a.body != "vcek" || a.header.Get("Content-Type") != "" {
		t.Fatalf("first request: %+v", a)
	}
	if a := get(t, s, path); a.status != 429 || a.retryAfter != "10" {
		t.Fatalf("second request: %+v, want 429 Retry-After 10", a)
	}
	clock.Advance(3500 * time.Millisecond)
	if a := get(t, s, path); a.status != 429 || a.retryAfter != "7" { // 6.5 s rounded up
		t.Fatalf("after 3.5 s: %+v, want 429 Retry-After 7", a)
	}
	clock.Advance(7 * time.Second) // as told: the interval ended at 10 s, Retry-After said 10.5 s
	if a := get(t, s, "/vcek/v1/Milan/unknown"); a.status != 404 {
		t.Fatalf("unknown chip: %+v", a)
	}
	clock.Advance(10 * time.Second)
	if a := get(t, s, path); a.status != 200 {
		t.Fatalf("after the interval: %+v", a)
	}
	st := s.Stats()
	if want := (collateraltest.Stats{Requests: 5, Served: 2, RateLimited: 2, NotFound: 1, Early: 1}); st != want {
		t.Errorf("stats %+v, want %+v", st, want)
	}
	if s.Served(vcek) != 2 {
		t.Errorf("served %d", s.Served(vcek))
	}
}

// TestPCSFaults: the update parameter, recorded headers, 404, injected statuses and bodies,
// Replace, and held answers.
func TestPCSFaults(t *testing.T) {
	clock := collateraltest.NewClock(start)
	s, err := collateraltest.NewPCS(docs, clock)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	path := strings.TrimPrefix(tcb, "https://api.trustedservices.intel.com")
	if a := get(t, s, path+"&update=early"); a.status != 200 || a.body != "tcb" || a.header.Get("Tcb-Info-Issuer-Chain") != "chain" {
		t.Fatalf("update=early: %+v", a)
	}
	if a := get(t, s, path+"&update=latest"); a.status != 400 {
		t.Fatalf("update=latest: %+v, want 400", a)
	}
	if got := s.Updates(tcb); len(got) != 1 || got[0] != "early" {
		t.Errorf("updates %v", got)
	}
	s.Inject(collateraltest.Fault{URL: tcb, Status: 503, RetryAfter: "5", Times: 2})
	s.Inject(collateraltest.Fault{Body: []byte("other")})
	for range 2 {
		if a := get(t, s, path); a.status != 503 || a.retryAfter != "5" {
			t.Fatalf("injected: %+v", a)
		}
	}
	if a := get(t, s, path); a.status != 200 || a.body != "other" {
		t.Fatalf("injected body: %+v", a)
	}
	if err := s.Replace(&collateral.Response{URL: tcb, Status: 200, Body: []byte("new")}); err != nil {
		t.Fatal(err)
	}
	if a := get(t, s, path); a.body != "new" {
		t.Fatalf("after Replace: %+v", a)
	}
	if err := s.Replace(&collateral.Response{URL: "https://elsewhere.example" + path, Status: 200}); err == nil {
		t.Fatal("two documents with one path were accepted")
	}

	// A delayed answer waits for the fake clock.
	s.Inject(collateraltest.Fault{URL: tcb, Delay: time.Minute})
	done := make(chan answer)
	go func() { done <- get(t, s, path) }()
	for clock.Sleeping() == 0 {
		<-clock.Changed()
	}
	clock.Advance(time.Minute)
	if a := <-done; a.status != 200 {
		t.Fatalf("delayed: %+v", a)
	}
	if routes := s.Routes(); len(routes) != 2 || routes[0].Prefix != "https://api.trustedservices.intel.com/" || routes[0].Base != s.URL+"/" {
		t.Errorf("routes %+v", routes)
	}
}

func TestClock(t *testing.T) {
	c := collateraltest.NewClock(start)
	if err := c.Sleep(context.Background(), 0); err != nil || c.Sleeps() != 0 {
		t.Fatal("a zero sleep waited or was counted")
	}
	woke := make(chan time.Duration, 3)
	for _, d := range []time.Duration{3 * time.Second, time.Second, 2 * time.Second} {
		go func() {
			if err := c.Sleep(context.Background(), d); err == nil {
				woke <- d
			}
		}()
	}
	for c.Sleeping() < 3 {
		<-c.Changed()
	}
	for _, want := range []time.Duration{time.Second, 2 * time.Second, 3 * time.Second} {
		now, ok := c.AdvanceToNext()
		if !ok || now != start.Add(want) || <-woke != want {
			t.Fatalf("AdvanceToNext: %s %v, want the %s sleeper woken", now, ok, want)
		}
	}
	if _, ok := c.AdvanceToNext(); ok {
		t.Fatal("AdvanceToNext with no sleeper")
	}
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error)
	go func() { errc <- c.Sleep(ctx, time.Hour) }()
	for c.Sleeping() == 0 {
		<-c.Changed()
	}
	cancel()
	if err := <-errc; !errors.Is(err, context.Canceled) || c.Sleeping() != 0 || c.Sleeps() != 4 {
		t.Fatalf("cancelled sleep: %v, %d sleeping, %d sleeps", err, c.Sleeping(), c.Sleeps())
	}
}
