package service

import (
	"context"
	"io"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-sev-guest/abi"

	"github.com/proofline/proofline/attest"
	"github.com/proofline/proofline/attest/attesttest/fakeamd"
	"github.com/proofline/proofline/verifier"
	"github.com/proofline/proofline/verifier/collateral"
	"github.com/proofline/proofline/verifier/collateral/collateraltest"
	"github.com/proofline/proofline/verifier/ear"
	"github.com/proofline/proofline/verifier/service/servicetest"
)

// burstActivity counts the collateral HTTP requests in flight (from sending to closing the body)
// and signals every change, so that the test can tell when every fetch is asleep on the clock.
type burstActivity struct {
	active   atomic.Int64 // HTTP requests
	fetching atomic.Int64 // upstream Gets of the service's cache
	changed  chan struct{}
}

// burstUpstream counts the cache's upstream Gets in a.fetching and signals when one ends.
type burstUpstream struct {
	a   *burstActivity
	src collateral.Source
}

func (u burstUpstream) Get(ctx context.Context, url string) (*collateral.Response, error) {
	u.a.fetching.Add(1)
	defer func() { u.a.fetching.Add(-1); u.a.signal() }()
	return u.src.Get(ctx, url)
}

func (a *burstActivity) signal() {
	select {
	case a.changed <- struct{}{}:
	default:
	}
}

type burstTransport struct {
	a    *burstActivity
	base http.RoundTripper
}

func (t burstTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	t.a.active.Add(1)
	t.a.signal()
	resp, err := t.base.RoundTrip(r)
	if err != nil {
		t.a.active.Add(-1)
		t.a.signal()
		return nil, err
	}
	var once sync.Once
	resp.Body = &burstBody{ReadCloser: resp.Body, done: func() { once.Do(func() { t.a.active.Add(-1); t.a.signal() }) }}
	return resp, nil
}

type burstBody struct {
	io.ReadCloser
	done func()
}

func (b *burstBody) Close() error {
	err := b.ReadCloser.Close()
	b.done()
	return err
}

// TestKDSBurstAttest is acceptance 1 of the collateral service through the verification path of
// POST /v1/attest (Service.Attest: nonce, verifier.Verify with the service's collateral cache,
// signed record in the log). The fake KDS allows one request per 10 s per client on the injected
// clock and answers 429 with Retry-After otherwise. 500 SNP attestations from 50 chips (evidence
// without certificates: the verifier fetches each chip's VCEK) arriving at once all complete
// affirming, with exactly one successful KDS VCEK request per (chip, TCB); then 100 attestations
// for chips already cached complete with no KDS request, no sleep on the clock and no clock
// advance.
func TestKDSBurstAttest(t *testing.T) {
	const chips, perChip, cached = 50, 10, 100
	start := liveStart
	clock := collateraltest.NewClock(start)
	plat, err := servicetest.New(start)
	if err != nil {
		t.Fatal(err)
	}
	p := plat.AMD
	docs, err := p.Collateral(fakeamd.CRLOptions{})
	if err != nil {
		t.Fatal(err)
	}
	chipIDs := make([][abi.ChipIDSize]byte, chips)
	vceks := make([]string, chips)
	for i := range chipIDs {
		for j := range chipIDs[i] {
			chipIDs[i][j] = byte(0x80 + i + j)
		}
		chipIDs[i][0] = 0xC0 // never the default chip
		cert, err := p.NewVCEK(chipIDs[i], p.TCB)
		if err != nil {
			t.Fatal(err)
		}
		r, err := p.VCEKResponse(cert)
		if err != nil {
			t.Fatal(err)
		}
		vceks[i] = r.URL
		docs = append(docs, r)
	}
	srv, err := collateraltest.NewKDS(docs, clock)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Close)
	act := &burstActivity{changed: make(chan struct{}, 1)}
	client := srv.Client()
	client.Transport = burstTransport{a: act, base: client.Transport}
	var routes []RouteConfig
	for _, r := range srv.Routes() {
		// The default KDS budget: one request per 10 s.
		routes = append(routes, RouteConfig{Prefix: r.Prefix, Base: r.Base, Every: collateraltest.KDSInterval, Burst: 1})
	}
	cfg := Config{DataDir: t.TempDir(), Log: LogConfig{CheckpointInterval: 100 * time.Millisecond},
		Collateral: CollateralConfig{Fetch: FetchConfig{Enabled: true, Routes: routes, RefreshInterval: time.Hour, MaxWait: time.Hour}}}
	if err := cfg.Validate(true); err != nil {
		t.Fatal(err)
	}
	d, err := OpenDeps(context.Background(), cfg, Env{
		TestMode: true, Now: clock.Now, Roots: plat.Roots, InitialPolicy: plat.PolicyYAML,
		CollateralClient: client, CollateralClock: clock,
	})
	if err != nil {
		t.Fatal(err)
	}
	// The service's own fetcher and cache, with its upstream Gets counted for the clock driver.
	d.LiveCollateral.Upstream = burstUpstream{a: act, src: d.LiveCollateral.Upstream}
	svc, err := New(context.Background(), *d)
	if err != nil {
		for _, c := range d.Closers {
			c()
		}
		t.Fatal(err)
	}
	t.Cleanup(func() { svc.Close() })

	ctx := context.Background()
	agentP := Principal{Name: "vm-1", Role: RoleAgent}
	// One report per chip, bound to a nonce of this service (not consumed: see verify).
	bodies := make([][]byte, chips)
	for i := range bodies {
		ch, err := svc.Challenge(ctx, agentP)
		if err != nil {
			t.Fatal(err)
		}
		rd := servicetest.RuntimeData(agentP.Name)
		o := p.DefaultReportOptions()
		o.ChipID = chipIDs[i]
		o.ReportData = attest.ReportData(ch.Nonce, rd)
		report, err := p.Report(o)
		if err != nil {
			t.Fatal(err)
		}
		ev := &attest.Evidence{Version: attest.Version, Platform: attest.PlatformSNP, Report: report, Nonce: ch.Nonce, RuntimeData: rd}
		if bodies[i], err = ev.Encode(); err != nil {
			t.Fatal(err)
		}
	}
	pol, err := svc.d.Policies.Active(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// verify appraises chip's report as Service.attest does, minus the nonce store and the
	// record: verifier.Verify with the active policy, the service's roots and clock, the nonce,
	// and the service's collateral source for the policy and platform (its live cache).
	verify := func(chip int) *ear.Result {
		ev, err := attest.DecodeEvidence(bodies[chip])
		if err != nil {
			panic(err) // decoded once above already
		}
		return verifier.Verify(ctx, ev, verifier.Options{Policy: pol.Policy, Roots: svc.d.Roots, Now: svc.now().UTC().Truncate(time.Second),
			Nonce: ev.Nonce, Collateral: svc.collateralFor(pol.Policy, ev.Platform)})
	}
	// drive runs n verifications at once (the i-th of chip chipOf(i)) and, until all are done,
	// advances the clock to the next sleeper's deadline whenever every running upstream fetch is
	// asleep on it (waiting for the KDS budget or a Retry-After) and no request is in flight. It
	// never waits in real time. It returns the results and the number of advances.
	drive := func(n int, chipOf func(i int) int) ([]*ear.Result, int) {
		out := make([]*ear.Result, n)
		var left atomic.Int64
		left.Store(int64(n))
		for i := range n {
			go func() {
				out[i] = verify(chipOf(i))
				left.Add(-1)
				act.signal()
			}()
		}
		advances := 0
		for left.Load() > 0 {
			in := act.fetching.Load()
			if in > 0 && act.active.Load() == 0 && int64(clock.Sleeping()) == in && act.fetching.Load() == in {
				if _, ok := clock.AdvanceToNext(); ok {
					advances++
					continue
				}
			}
			select {
			case <-clock.Changed():
			case <-act.changed:
			}
		}
		return out, advances
	}
	// check: every result affirming, with its chip's VCEK as its first collateral document.
	check := func(round string, rs []*ear.Result, chipOf func(i int) int) {
		t.Helper()
		for i, r := range rs {
			if r.Status != ear.StatusAffirming {
				t.Fatalf("%s: attestation %d: %s %+v", round, i, r.Status, r.Failures)
			}
			c, ok := r.Claims.(*ear.SNPClaims)
			if !ok || len(c.Collateral) == 0 || c.Collateral[0].URL != vceks[chipOf(i)] {
				t.Fatalf("%s: attestation %d: claims %+v, want chip %d's VCEK first", round, i, r.Claims, chipOf(i))
			}
		}
	}

	burst := func(i int) int { return i % chips }
	rs, advances := drive(chips*perChip, burst)
	check("burst", rs, burst)
	st := srv.Stats()
	for i, u := range vceks {
		if got := srv.Served(u); got != 1 {
			t.Errorf("chip %d: KDS served its VCEK %d times, want exactly 1", i, got)
		}
	}
	if st.Early != 0 {
		t.Errorf("%d requests reached KDS before the Retry-After it gave", st.Early)
	}
	cs := svc.cache.Stats()
	t.Logf("burst: %d attestations of %d chips: KDS received %d requests, served %d (%d VCEKs), refused %d with 429; "+
		"cache %d misses, %d coalesced, %d hits; fake time %s in %d clock advances",
		chips*perChip, chips, st.Requests, st.Served, chips, st.RateLimited, cs.Misses, cs.Coalesced, cs.Hits, clock.Now().Sub(start), advances)

	// Chips already cached: no KDS request, no sleep, no advance.
	cachedChips := []int{0, 7, 19, 33, 49}
	sleeps, now := clock.Sleeps(), clock.Now()
	again := func(i int) int { return cachedChips[i%len(cachedChips)] }
	rs, advances = drive(cached, again)
	check("cached", rs, again)
	if st2 := srv.Stats(); st2.Requests != st.Requests || clock.Sleeps() != sleeps || advances != 0 || !clock.Now().Equal(now) {
		t.Errorf("cached round: %d KDS requests, %d sleeps, %d advances; want none",
			st2.Requests-st.Requests, clock.Sleeps()-sleeps, advances)
	}
}
