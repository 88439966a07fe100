package service

import (
	"context"
	"database/sql"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-sev-guest/abi"
	"github.com/google/go-sev-guest/kds"
	"github.com/prometheus/client_golang/prometheus"
	"gopkg.in/yaml.v3"

	"github.com/proofline/proofline/attest"
	"github.com/proofline/proofline/attest/attesttest/fakeamd"
	"github.com/proofline/proofline/attest/attesttest/fakeintel"
	"github.com/proofline/proofline/evidence"
	"github.com/proofline/proofline/evidence/index"
	"github.com/proofline/proofline/verifier/collateral"
	"github.com/proofline/proofline/verifier/collateral/collateraltest"
	"github.com/proofline/proofline/verifier/ear"
	"github.com/proofline/proofline/verifier/service/servicetest"
)

// liveStart is the pinned clock's start in the live-collateral tests.
var liveStart = time.Date(2026, 5, 4, 8, 0, 0, 0, time.UTC)

// liveEnv is a service fetching its collateral live from a fake PCS/KDS, on a pinned clock that
// both the service and its collateral use.
type liveEnv struct {
	t     *testing.T
	clock *collateraltest.Clock
	plat  *servicetest.Platforms
	srv   *collateraltest.Server
	svc   *Service
	reg   *prometheus.Registry
	logs  *syncBuffer
	tcb   string // the TCB info's canonical URL
	cfg   Config
	env   Env
}

// newLiveEnv serves the simulated platforms' collateral, with a TCB info expiring tcbExpiry after
// the start, from a fake server, and opens a service that fetches it (collateral.fetch) with
// hourly refresh passes. policyEdit, if set, edits the initial policy YAML.
// editCfg, if given, edits the configuration before it is validated.
func newLiveEnv(t *testing.T, tcbExpiry time.Duration, policyEdit func(string) string, editCfg ...func(*Config)) *liveEnv {
	t.Helper()
	e := &liveEnv{t: t, clock: collateraltest.NewClock(liveStart), reg: prometheus.NewRegistry(), logs: &syncBuffer{}}
	plat, err := servicetest.New(liveStart)
	if err != nil {
		t.Fatal(err)
	}
	e.plat = plat
	o := fakeintel.DefaultCollateralOptions(liveStart)
	o.TCBInfo.NextUpdate = liveStart.Add(tcbExpiry)
	ic, err := plat.Intel.Collateral(o)
	if err != nil {
		t.Fatal(err)
	}
	e.tcb = ic[0].URL
	ac, err := plat.AMD.Collateral(fakeamd.CRLOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if e.srv, err = collateraltest.NewServer(append(ic, ac...), collateraltest.Options{Clock: e.clock}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.srv.Close)
	var routes []RouteConfig
	for _, r := range e.srv.Routes() {
		routes = append(routes, RouteConfig{Prefix: r.Prefix, Base: r.Base})
	}
	cfg := Config{DataDir: t.TempDir(), Log: LogConfig{CheckpointInterval: 100 * time.Millisecond},
		Collateral: CollateralConfig{Fetch: FetchConfig{Enabled: true, Routes: routes, RefreshInterval: time.Hour}}}
	for _, edit := range editCfg {
		edit(&cfg)
	}
	if err := cfg.Validate(true); err != nil {
		t.Fatal(err)
	}
	pol := string(plat.PolicyYAML)
	if policyEdit != nil {
		pol = policyEdit(pol)
	}
	e.cfg, e.env = cfg, Env{
		TestMode: true, Now: e.clock.Now, Roots: plat.Roots, InitialPolicy: []byte(pol), Registerer: e.reg,
		Logger:           slog.New(slog.NewTextHandler(e.logs, &slog.HandlerOptions{Level: slog.LevelInfo})),
		CollateralClient: e.srv.Client(), CollateralClock: e.clock,
	}
	e.svc, err = Open(context.Background(), e.cfg, e.env)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.svc.Close() })
	return e
}

// attest runs one challenge → evidence → attest round for platform.
func (e *liveEnv) attest(platform attest.Platform) *Attestation {
	e.t.Helper()
	ctx := context.Background()
	p := Principal{Name: "vm-1", Role: RoleAgent}
	ch, err := e.svc.Challenge(ctx, p)
	if err != nil {
		e.t.Fatal(err)
	}
	body, err := e.plat.Evidence(platform, ch.Nonce, servicetest.RuntimeData("vm-1"), servicetest.FaultNone)
	if err != nil {
		e.t.Fatal(err)
	}
	a, err := e.svc.Attest(ctx, p, body)
	if err != nil {
		e.t.Fatal(err)
	}
	return a
}

// updates returns the collateral_update records in the log.
func (e *liveEnv) updates() []*evidence.Record {
	e.t.Helper()
	ctx := context.Background()
	es, err := e.svc.Records(ctx, index.Query{Kind: evidence.KindCollateralUpdate})
	if err != nil {
		e.t.Fatal(err)
	}
	var out []*evidence.Record
	for _, en := range es {
		_, rec, err := e.svc.Record(ctx, en.LogIndex)
		if err != nil {
			e.t.Fatal(err)
		}
		out = append(out, rec)
	}
	return out
}

// runUntil starts the service's background loops and advances the pinned clock from one
// refresh pass to the next, each time the refresher sleeps between passes, until done says so.
// Nothing waits in real time.
// It fails the test after maxPasses passes without done, rather than hang.
func (e *liveEnv) runUntil(done func() bool) {
	e.t.Helper()
	const maxPasses = 1000
	for passes := 0; ; {
		// The refresher is the clock's only sleeper, between passes.
		if e.clock.Sleeping() == 1 {
			if done() {
				return
			}
			if passes++; passes > maxPasses {
				e.t.Fatalf("not done after %d refresh passes (fake time %s)", maxPasses, e.clock.Now().Sub(liveStart))
			}
			e.clock.AdvanceToNext() // wakes it: Sleeping is 0 until its next pass ends
		}
		<-e.clock.Changed()
	}
}

func (e *liveEnv) warnings() []Warning {
	e.t.Helper()
	w, err := e.svc.Ready(context.Background())
	if err != nil {
		e.t.Fatal(err)
	}
	return w
}

func warningCode(ws []Warning, code string) *Warning {
	for i := range ws {
		if ws[i].Code == code {
			return &ws[i]
		}
	}
	return nil
}

// metricValue returns the value of the metric name with labels, and whether it exists.
func metricValue(t *testing.T, reg *prometheus.Registry, name string, labels map[string]string) (float64, bool) {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	metrics:
		for _, m := range mf.GetMetric() {
			got := map[string]string{}
			for _, lp := range m.GetLabel() {
				got[lp.GetName()] = lp.GetValue()
			}
			for k, v := range labels {
				if got[k] != v {
					continue metrics
				}
			}
			if m.Gauge != nil {
				return m.Gauge.GetValue(), true
			}
			return m.Counter.GetValue(), true
		}
	}
	return 0, false
}

// Acceptance 3 of the collateral service: with a pinned clock, the background refresh replaces
// the TCB info before it expires, once Intel has published a new one (a TCB recovery), and the
// replacement is a collateral_update record in the log naming the URL, the old and the new
// digest, the new issue and nextUpdate times and the tcbEvaluationDataNumber, both documents in
// the blob store. Verdicts after the old document's expiry use the new one, without a fetch.
func TestLiveCollateralRefreshRecorded(t *testing.T) {
	e := newLiveEnv(t, 30*time.Hour, nil)
	ctx := context.Background()
	e.svc.Start()
	first := e.attest(attest.PlatformTDX)
	if first.Result.Status != ear.StatusAffirming {
		t.Fatalf("first verdict %s: %+v", first.Result.Status, first.Result.Failures)
	}
	if e.srv.Served(e.tcb) != 1 {
		t.Fatalf("TCB info fetched %d times", e.srv.Served(e.tcb))
	}

	// Intel publishes a new TCB info (tcbEvaluationDataNumber 18 → 19).
	o := fakeintel.DefaultCollateralOptions(liveStart.Add(time.Hour))
	o.TCBInfo.EvaluationDataNumber = 19
	fresh, err := e.plat.Intel.Collateral(o)
	if err != nil {
		t.Fatal(err)
	}
	if err := e.srv.Replace(fresh[0]); err != nil {
		t.Fatal(err)
	}
	var recs []*evidence.Record
	e.runUntil(func() bool { recs = e.updates(); return len(recs) > 0 })

	// Issued an hour before the start and expiring 30 hours after it, the TCB info is due once
	// half its validity (15.5 hours) is left: at the pass of hour 15.
	if want := liveStart.Add(15 * time.Hour); !e.clock.Now().Equal(want) {
		t.Fatalf("replaced at %s, want %s", e.clock.Now(), want)
	}
	if len(recs) != 1 {
		t.Fatalf("%d collateral_update records", len(recs))
	}
	rec := recs[0]
	oldDigest := collateralDigest(t, first, e.tcb)
	newDigest := evidence.Digest(fresh[0].Digest())
	if len(rec.Collateral) != 1 || rec.Collateral[0].URL != e.tcb || rec.Collateral[0].Kind != "tcb_info" || rec.Collateral[0].Digest != newDigest {
		t.Fatalf("record collateral %+v", rec.Collateral)
	}
	ch := rec.CollateralUpdate[0]
	if ch.Previous == nil || *ch.Previous != oldDigest || ch.TCBEvaluationDataNumber == nil || *ch.TCBEvaluationDataNumber != 19 ||
		!ch.IssuedAt.Equal(o.TCBInfo.IssueDate) || !ch.NextUpdate.Equal(o.TCBInfo.NextUpdate) {
		t.Fatalf("record change %+v", ch)
	}
	if !rec.Time.Equal(e.clock.Now()) || !rec.Time.Before(liveStart.Add(30*time.Hour)) {
		t.Fatalf("recorded at %s, not before the old TCB info's expiry", rec.Time)
	}
	for _, d := range []evidence.Digest{oldDigest, newDigest} {
		if _, err := e.svc.Blob(ctx, d); err != nil {
			t.Fatalf("blob %s: %v", d, err)
		}
	}
	if v, ok := metricValue(t, e.reg, "proofline_collateral_updates_total", map[string]string{"kind": "tcb_info"}); !ok || v != 1 {
		t.Fatalf("proofline_collateral_updates_total %v %v", v, ok)
	}

	// Past the old TCB info's expiry, a verdict uses the new one without fetching it.
	e.runUntil(func() bool { return e.clock.Now().After(liveStart.Add(31 * time.Hour)) })
	second := e.attest(attest.PlatformTDX)
	if second.Result.Status != ear.StatusAffirming || collateralDigest(t, second, e.tcb) != newDigest || e.srv.Served(e.tcb) != 2 {
		t.Fatalf("second verdict %s with %s after %d fetches: %+v", second.Result.Status, collateralDigest(t, second, e.tcb), e.srv.Served(e.tcb), second.Result.Failures)
	}
	if w := warningCode(e.warnings(), WarnCollateralExpiring); w != nil {
		t.Fatalf("ready with fresh collateral warns: %+v", w)
	}
	if v, ok := metricValue(t, e.reg, "proofline_collateral_expiry_seconds", map[string]string{"kind": "tcb_info"}); !ok || v < 28*24*3600 {
		t.Fatalf("TCB info expiry metric %v %v", v, ok)
	}
	if v, ok := metricValue(t, e.reg, "proofline_collateral_cached_age_seconds", map[string]string{"kind": "tcb_info", "host": "api.trustedservices.intel.com"}); !ok || v <= 0 {
		t.Fatalf("TCB info age metric %v %v", v, ok)
	}
}

// collateralDigest returns the digest of url's document in an attestation's result claims.
func collateralDigest(t *testing.T, a *Attestation, url string) evidence.Digest {
	t.Helper()
	var infos []ear.CollateralInfo
	switch c := a.Result.Claims.(type) {
	case *ear.TDXClaims:
		infos = c.Collateral
	case *ear.SNPClaims:
		infos = c.Collateral
	}
	for _, ci := range infos {
		if ci.URL == url {
			d, err := parseDigest(ci.Digest)
			if err != nil {
				t.Fatal(err)
			}
			return d
		}
	}
	t.Fatalf("the result names no %s", url)
	return evidence.Digest{}
}

// Acceptance 5 of the collateral service: fetch failures never crash the service; they are
// counted by vendor and status, and /readyz reports degraded (collateral_expiring) once a
// document expires within expiry_warning and could not be refreshed — PCS failing, or answering
// the same document again. Past its expiry, verdicts that need it fail closed
// (collateral_unavailable, or tdx_tcb_info_expired when PCS hands out the stale document) —
// unless the policy sets stale_grace_unsafe, within which the stale copy is used and the verdict
// is warning (acceptance 2).
func TestLiveCollateralFailures(t *testing.T) {
	grace := func(s string) string { return strings.Replace(s, "tdx:\n", "tdx:\n  stale_grace_unsafe: 6h\n", 1) }
	for _, tc := range []struct {
		name    string
		failing bool // PCS answers 500 for the TCB info; otherwise the same, old, TCB info
		policy  func(string) string
		detail  string // in the readiness warning
		want    ear.Code
	}{
		{"PCS failing", true, nil, "500 Internal Server Error", ear.CodeCollateralUnavailable},
		{"PCS failing with stale_grace_unsafe", true, grace, "500 Internal Server Error", ear.CodeCollateralStaleAccepted},
		{"PCS answering the old document", false, nil, "still answered with this document", ear.CodeTDXTCBInfoExpired},
		{"PCS answering the old document with stale_grace_unsafe", false, grace, "still answered with this document", ear.CodeCollateralStaleAccepted},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newLiveEnv(t, 30*time.Hour, tc.policy)
			e.svc.Start()
			if a := e.attest(attest.PlatformTDX); a.Result.Status != ear.StatusAffirming {
				t.Fatalf("first verdict %s: %+v", a.Result.Status, a.Result.Failures)
			}
			if tc.failing {
				e.srv.Inject(collateraltest.Fault{URL: e.tcb, Status: http.StatusInternalServerError, Times: 1 << 20})
			}

			// Due at hour 15 and not replaced since: /readyz says nothing while more than 6 hours
			// are left, then collateral_expiring.
			e.runUntil(func() bool { return e.clock.Now().Equal(liveStart.Add(23 * time.Hour)) })
			if w := warningCode(e.warnings(), WarnCollateralExpiring); w != nil {
				t.Fatalf("7 hours before expiry: %+v", w)
			}
			e.runUntil(func() bool { return e.clock.Now().Equal(liveStart.Add(25 * time.Hour)) })
			w := warningCode(e.warnings(), WarnCollateralExpiring)
			if w == nil || !strings.Contains(w.Detail, e.tcb) || !strings.Contains(w.Detail, tc.detail) {
				t.Fatalf("5 hours before expiry, not refreshed: %+v", e.warnings())
			}
			if v, ok := metricValue(t, e.reg, "proofline_collateral_fetch_errors_total", map[string]string{"vendor": "intel", "status": "500"}); tc.failing && (!ok || v < 10) {
				t.Fatalf("fetch errors %v %v", v, ok)
			}
			if v, ok := metricValue(t, e.reg, "proofline_collateral_expiry_seconds", map[string]string{"kind": "tcb_info"}); !ok || v != (5*time.Hour).Seconds() {
				t.Fatalf("TCB info expiry metric %v %v, want 5h", v, ok)
			}

			// An hour past the expiry.
			e.runUntil(func() bool { return e.clock.Now().Equal(liveStart.Add(31 * time.Hour)) })
			a := e.attest(attest.PlatformTDX)
			switch res := a.Result; tc.want {
			case ear.CodeCollateralStaleAccepted:
				if res.Status != ear.StatusWarning || !res.HasWarning(tc.want) || !res.HasWarning(ear.CodeUnsafeOption) {
					t.Fatalf("stale TCB info within the grace: %s %+v %+v", res.Status, res.Failures, res.Warnings)
				}
			default:
				if res.Status != ear.StatusContraindicated || !res.HasFailure(tc.want) {
					t.Fatalf("stale TCB info: %s %+v, want %s", res.Status, res.Failures, tc.want)
				}
			}
			// SEV-SNP collateral is fresh: unaffected.
			if a := e.attest(attest.PlatformSNP); a.Result.Status != ear.StatusAffirming {
				t.Fatalf("SEV-SNP verdict %s: %+v", a.Result.Status, a.Result.Failures)
			}
			// The collateral servers go away altogether: still no crash, network errors
			// counted, still degraded.
			e.srv.Close()
			e.runUntil(func() bool { return e.clock.Now().Equal(liveStart.Add(33 * time.Hour)) })
			if v, ok := metricValue(t, e.reg, "proofline_collateral_fetch_errors_total", map[string]string{"vendor": "intel", "status": "network"}); !ok || v < 1 {
				t.Fatalf("network errors %v %v", v, ok)
			}
			if warningCode(e.warnings(), WarnCollateralExpiring) == nil {
				t.Fatal("not degraded with the collateral servers gone")
			}
			if len(e.updates()) != 0 {
				t.Fatal("an update was recorded although nothing was replaced")
			}
		})
	}
}

// The collateral key takes a plain directory (the earlier form) or a mapping, whose keys are
// checked as strictly as the rest of the file; Validate says what to change.
func TestCollateralConfig(t *testing.T) {
	decode := func(y string) (Config, error) {
		var c Config
		dec := yaml.NewDecoder(strings.NewReader(y))
		dec.KnownFields(true)
		err := dec.Decode(&c)
		return c, err
	}
	c, err := decode("data_dir: /d\ncollateral: /var/lib/recorded\n")
	if err != nil || c.Collateral.Dir != "/var/lib/recorded" || c.Collateral.Fetch.Enabled {
		t.Fatalf("plain string: %v %+v", err, c.Collateral)
	}
	c, err = decode(`data_dir: /d
collateral:
  fetch:
    enabled: true
    intel_update: early
    timeout: 20s
    refresh_interval: 30m
    routes:
      - {prefix: "https://api.trustedservices.intel.com/", base: "https://pccs.internal:8081/", every: 100ms, burst: 10}
  cache_dir: /var/cache/proofline
  expiry_warning: 12h
`)
	if err != nil {
		t.Fatal(err)
	}
	f := c.Collateral.Fetch
	if !f.Enabled || f.IntelUpdate != "early" || f.Timeout != 20*time.Second || f.RefreshInterval != 30*time.Minute ||
		len(f.Routes) != 1 || f.Routes[0].Base != "https://pccs.internal:8081/" || f.Routes[0].Every != 100*time.Millisecond ||
		c.Collateral.CacheDir != "/var/cache/proofline" || c.Collateral.ExpiryWarning != 12*time.Hour {
		t.Fatalf("mapping: %+v", c.Collateral)
	}
	if err := c.Validate(false); err != nil {
		t.Fatal(err)
	}
	if _, err := decode("data_dir: /d\ncollateral:\n  fetch: {enabled: true, rotues: []}\n"); err == nil || !strings.Contains(err.Error(), `collateral (line 3): unknown key "rotues" in collateral.fetch`) {
		t.Fatalf("misspelt key: %v", err)
	}
	if _, err := decode("data_dir: /d\ncollateral:\n  directory: /x\n"); err == nil || !strings.Contains(err.Error(), `unknown key "directory" in collateral`) {
		t.Fatalf("unknown key: %v", err)
	}

	for _, tc := range []struct {
		name string
		c    CollateralConfig
		want string
	}{
		{"dir and fetch", CollateralConfig{Dir: "/x", Fetch: FetchConfig{Enabled: true}}, "either dir"},
		{"fetch not enabled", CollateralConfig{Fetch: FetchConfig{IntelUpdate: "early"}}, "enabled: true"},
		{"bad update", CollateralConfig{Fetch: FetchConfig{Enabled: true, IntelUpdate: "soon"}}, "intel_update"},
		{"route without scheme", CollateralConfig{Fetch: FetchConfig{Enabled: true, Routes: []RouteConfig{{Prefix: "pccs/"}}}}, "route prefix"},
		{"route base without slash", CollateralConfig{Fetch: FetchConfig{Enabled: true, Routes: []RouteConfig{{Prefix: collateral.AMDKDSOrigin, Base: "https://mirror"}}}}, "must end in"},
		{"refresh too often", CollateralConfig{Fetch: FetchConfig{Enabled: true, RefreshInterval: time.Second}}, "refresh_interval"},
		{"negative expiry warning", CollateralConfig{ExpiryWarning: -time.Hour}, "expiry_warning"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := (&Config{DataDir: "/d", Collateral: tc.c}).Validate(false)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("%v, want %q", err, tc.want)
			}
		})
	}
}

// collateral.fetch.ca_file adds a CA for the collateral servers (a PCCS with its own
// certificate): the fetch client trusts the fake PCS with it, and not without it.
func TestCollateralClientCAFile(t *testing.T) {
	clock := collateraltest.NewClock(liveStart)
	pki, err := fakeintel.New(liveStart)
	if err != nil {
		t.Fatal(err)
	}
	docs, err := pki.Collateral(fakeintel.DefaultCollateralOptions(liveStart))
	if err != nil {
		t.Fatal(err)
	}
	srv, err := collateraltest.NewPCS(docs, clock)
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	caFile := filepath.Join(t.TempDir(), "pccs-ca.pem")
	if err := os.WriteFile(caFile, srv.CertificatePEM(), 0o600); err != nil {
		t.Fatal(err)
	}
	get := func(fc FetchConfig) error {
		client, err := collateralClient(fc)
		if err != nil {
			return err
		}
		f, err := collateral.NewFetcher(collateral.FetcherConfig{Client: client, Clock: clock, Routes: srv.Routes()})
		if err != nil {
			t.Fatal(err)
		}
		_, err = f.Get(context.Background(), docs[0].URL)
		return err
	}
	if err := get(FetchConfig{CAFile: caFile}); err != nil {
		t.Fatalf("with ca_file: %v", err)
	}
	if err := get(FetchConfig{}); err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Fatalf("without ca_file: %v", err)
	}
	notPEM := filepath.Join(t.TempDir(), "x.pem")
	if err := os.WriteFile(notPEM, []byte("no"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := collateralClient(FetchConfig{CAFile: notPEM}); err == nil || !strings.Contains(err.Error(), "no PEM certificate") {
		t.Fatalf("ca_file without PEM: %v", err)
	}
}

// TestLiveCollateralAuthenticated: the live cache keeps only documents their vendor signed
// through a pinned root. Every genuine document of a TDX and an SEV-SNP verification is fetched
// once and then served from the cache; an AMD CRL signed by a look-alike ARK and dated 50 years
// on fails the verification, is counted (status not_authentic) and is not kept, so the genuine
// CRL served next is fetched and used at once instead of being refused as a rollback.
func TestLiveCollateralAuthenticated(t *testing.T) {
	e := newLiveEnv(t, 30*time.Hour, nil)
	amd := e.plat.AMD
	forger, err := fakeamd.NewWithKeys(amd.ProductLine, liveStart.AddDate(50, 0, 0), fakeamd.AlternateKeys())
	if err != nil {
		t.Fatal(err)
	}
	crlURL := kds.CrlLinkByKey(amd.ProductLine, abi.VcekReportSigner)
	var genuine *collateral.Response
	rs, err := amd.Collateral(fakeamd.CRLOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range rs {
		if r.URL == crlURL {
			genuine = r
		}
	}
	forged, err := forger.CRL(abi.VcekReportSigner, fakeamd.CRLOptions{})
	if err != nil || genuine == nil {
		t.Fatalf("forged CRL: %v; genuine CRL found: %v", err, genuine != nil)
	}
	if err := e.srv.Replace(&collateral.Response{URL: crlURL, Status: http.StatusOK, Body: forged}); err != nil {
		t.Fatal(err)
	}
	notAuthentic := func() float64 {
		v, _ := metricValue(t, e.reg, "proofline_collateral_fetch_errors_total", map[string]string{"vendor": "amd", "status": "not_authentic"})
		return v
	}
	if a := e.attest(attest.PlatformSNP); a.Result.Status == ear.StatusAffirming || notAuthentic() != 1 {
		t.Fatalf("with the forged CRL: %s, not_authentic %v; want a refusal and one count", a.Result.Status, notAuthentic())
	}
	if err := e.srv.Replace(genuine); err != nil {
		t.Fatal(err)
	}
	for round := range 2 {
		for _, p := range []attest.Platform{attest.PlatformTDX, attest.PlatformSNP} {
			if a := e.attest(p); a.Result.Status != ear.StatusAffirming {
				t.Fatalf("round %d, %s: %s: %+v", round, p, a.Result.Status, a.Result.Failures)
			}
		}
	}
	for u, n := range e.srv.ServedURLs() {
		if want := map[bool]int{true: 2, false: 1}[u == crlURL]; n != want {
			t.Errorf("%s served %d times, want %d (a genuine document is kept after its first fetch)", u, n, want)
		}
	}
	if n := notAuthentic(); n != 1 {
		t.Errorf("not_authentic %v after the genuine documents, want 1", n)
	}
}

// An air-gapped verifier gets new collateral only through `proofline collateral import`, into its
// collateral store. Once the document it held has expired, it uses the imported one, and that
// replacement is a collateral_update record like a fetched one: the audit trail of a running
// offline verifier shows its document changes too. A replacement the log already records (another
// verifier sharing the store and the log) is not recorded twice.
func TestLiveCollateralStoredReplacementRecorded(t *testing.T) {
	e := newLiveEnv(t, 2*time.Hour, nil)
	ctx := context.Background()
	first := e.attest(attest.PlatformTDX)
	if first.Result.Status != ear.StatusAffirming {
		t.Fatalf("first verdict %s: %+v", first.Result.Status, first.Result.Failures)
	}
	oldDigest := collateralDigest(t, first, e.tcb)

	// The verifier loses its route to PCS; its TCB info expires.
	e.srv.Close()
	e.clock.Advance(3 * time.Hour)
	if a := e.attest(attest.PlatformTDX); a.Result.Status == ear.StatusAffirming {
		t.Fatalf("verdict with an expired TCB info and PCS unreachable: %s", a.Result.Status)
	}

	// An operator imports Intel's new TCB info into the verifier's collateral store.
	o := fakeintel.DefaultCollateralOptions(e.clock.Now().Add(-time.Hour))
	o.TCBInfo.EvaluationDataNumber = 19
	fresh, err := e.plat.Intel.Collateral(o)
	if err != nil {
		t.Fatal(err)
	}
	store, err := collateral.OpenDirStore(filepath.Join(e.cfg.DataDir, DefaultCollateralCacheDir))
	if err != nil {
		t.Fatal(err)
	}
	if err := store.Put(ctx, e.tcb, fresh[0].Canonical()); err != nil {
		t.Fatal(err)
	}
	second := e.attest(attest.PlatformTDX)
	newDigest := evidence.Digest(fresh[0].Digest())
	if second.Result.Status != ear.StatusAffirming || collateralDigest(t, second, e.tcb) != newDigest {
		t.Fatalf("verdict after the import %s with %s: %+v", second.Result.Status, collateralDigest(t, second, e.tcb), second.Result.Failures)
	}
	recs := e.updates()
	if len(recs) != 1 {
		t.Fatalf("%d collateral_update records after the import, want 1", len(recs))
	}
	rec := recs[0]
	if len(rec.Collateral) != 1 || rec.Collateral[0].URL != e.tcb || rec.Collateral[0].Digest != newDigest {
		t.Fatalf("record collateral %+v", rec.Collateral)
	}
	ch := rec.CollateralUpdate[0]
	if ch.Previous == nil || *ch.Previous != oldDigest || ch.TCBEvaluationDataNumber == nil || *ch.TCBEvaluationDataNumber != 19 {
		t.Fatalf("record change %+v", ch)
	}
	for _, d := range []evidence.Digest{oldDigest, newDigest} {
		if _, err := e.svc.Blob(ctx, d); err != nil {
			t.Fatalf("blob %s: %v", d, err)
		}
	}
	if !strings.Contains(e.logs.String(), "source=store") {
		t.Errorf("the log line of the update does not say it came from the store:\n%s", e.logs.String())
	}

	// Another verifier sharing the store and the log meets the same replacement: recorded once.
	var oldResp, newResp *collateral.Response
	for _, r := range []struct {
		d   evidence.Digest
		out **collateral.Response
	}{{oldDigest, &oldResp}, {newDigest, &newResp}} {
		b, err := e.svc.Blob(ctx, r.d)
		if err != nil {
			t.Fatal(err)
		}
		rs, err := collateral.Parse(b)
		if err != nil || len(rs) != 1 {
			t.Fatalf("blob %s: %v", r.d, err)
		}
		*r.out = rs[0]
	}
	u := collateral.Update{URL: e.tcb, Old: oldResp, New: newResp, Stored: true}
	if u.OldValidity, err = collateral.ValidityOf(oldResp); err != nil {
		t.Fatal(err)
	}
	if u.NewValidity, err = collateral.ValidityOf(newResp); err != nil {
		t.Fatal(err)
	}
	if err := e.svc.recordCollateralUpdate(ctx, u); err != nil {
		t.Fatal(err)
	}
	if n := len(e.updates()); n != 1 {
		t.Fatalf("%d collateral_update records after the same replacement was met again, want 1", n)
	}
	// The control: the same replacement fetched (not found in the store) is recorded.
	u.Stored = false
	if err := e.svc.recordCollateralUpdate(ctx, u); err != nil {
		t.Fatal(err)
	}
	if n := len(e.updates()); n != 2 {
		t.Fatalf("%d collateral_update records after a fetched replacement, want 2", n)
	}
}

// An offline verifier (collateral.offline) never fetches: an operator imports Intel's new TCB
// info (a TCB recovery) while the one it holds is still valid for weeks. Within
// Settings.CollateralReloadInterval it uses the imported one, and the replacement is a
// collateral_update record; without the reload it would go on using the old TCB info until its
// nextUpdate.
func TestOfflineCollateralReload(t *testing.T) {
	ctx := context.Background()
	clock := collateraltest.NewClock(liveStart)
	plat, ic, cfg, store := offlineSetup(t)
	logs := &syncBuffer{}
	e := &liveEnv{t: t, clock: clock, plat: plat, reg: prometheus.NewRegistry(), logs: logs, tcb: ic[0].URL, cfg: cfg}
	e.env = Env{TestMode: true, Now: clock.Now, Roots: plat.Roots, InitialPolicy: plat.PolicyYAML, Registerer: e.reg,
		Logger:          slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelInfo})),
		CollateralClock: clock}
	var err error
	if e.svc, err = Open(ctx, cfg, e.env); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.svc.Close() })
	e.svc.Start()
	first := e.attest(attest.PlatformTDX)
	if first.Result.Status != ear.StatusAffirming || collateralDigest(t, first, e.tcb) != evidence.Digest(ic[0].Digest()) {
		t.Fatalf("first verdict %s: %+v", first.Result.Status, first.Result.Failures)
	}

	// The import: tcbEvaluationDataNumber 19, issued an hour on.
	o := fakeintel.DefaultCollateralOptions(liveStart.Add(time.Hour))
	o.TCBInfo.EvaluationDataNumber = 19
	fresh, err := plat.Intel.Collateral(o)
	if err != nil {
		t.Fatal(err)
	}
	if err := store.Put(ctx, e.tcb, fresh[0].Canonical()); err != nil {
		t.Fatal(err)
	}
	if a := e.attest(attest.PlatformTDX); collateralDigest(t, a, e.tcb) == evidence.Digest(fresh[0].Digest()) {
		t.Fatal("the import was used before a reload: the test cannot show the reload does it")
	}
	var recs []*evidence.Record
	// The reload loop is the collateral clock's only sleeper.
	for passes := 0; len(recs) == 0; {
		if clock.Sleeping() == 1 {
			// The reload has run; its record reaches the index through the index writer.
			for deadline := time.Now().Add(5 * time.Second); passes > 0 && len(recs) == 0 && time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
				recs = e.updates()
			}
			if len(recs) > 0 {
				break
			}
			if passes++; passes > 3 {
				t.Fatalf("no collateral_update record after %d reload intervals", passes-1)
			}
			clock.AdvanceToNext()
		}
		select {
		case <-clock.Changed():
		case <-time.After(30 * time.Second): // a guard against a hang, not a timing
			t.Fatalf("the collateral clock has no sleeper: no reload loop runs (%d sleeping)", clock.Sleeping())
		}
	}
	if got := clock.Now().Sub(liveStart); got != DefaultCollateralReloadInterval {
		t.Errorf("recorded after %s, want one reload interval (%s)", got, DefaultCollateralReloadInterval)
	}
	newDigest := evidence.Digest(fresh[0].Digest())
	rec := recs[0]
	if len(recs) != 1 || len(rec.Collateral) != 1 || rec.Collateral[0].Digest != newDigest || rec.CollateralUpdate[0].Previous == nil ||
		*rec.CollateralUpdate[0].Previous != evidence.Digest(ic[0].Digest()) {
		t.Fatalf("%d records; the first: %+v %+v", len(recs), rec.Collateral, rec.CollateralUpdate)
	}
	if a := e.attest(attest.PlatformTDX); a.Result.Status != ear.StatusAffirming || collateralDigest(t, a, e.tcb) != newDigest {
		t.Fatalf("verdict after the reload %s with %s: %+v", a.Result.Status, collateralDigest(t, a, e.tcb), a.Result.Failures)
	}
	if !strings.Contains(logs.String(), "collateral reloaded from the store") {
		t.Errorf("no log line says the collateral was reloaded:\n%s", logs.String())
	}
}

// A verifier whose index cannot catch up at start-up still compares the collateral it holds with
// the latest verdicts, read from the log itself: a TCB info imported while it was stopped is
// recorded, as a collateral_update naming the one the verdicts used, before the first verdict on
// it. Here the index's last entry names another leaf (an index built from another log), which
// the catch-up refuses until the operator rebuilds it.
func TestCollateralChangedAtRestWithIndexBehind(t *testing.T) {
	ctx := context.Background()
	plat, ic, cfg, store := offlineSetup(t)
	logs := &syncBuffer{}
	open := func() *liveEnv {
		clock := collateraltest.NewClock(liveStart)
		e := &liveEnv{t: t, clock: clock, plat: plat, reg: prometheus.NewRegistry(), logs: logs, tcb: ic[0].URL, cfg: cfg}
		e.env = Env{TestMode: true, Now: clock.Now, Roots: plat.Roots, InitialPolicy: plat.PolicyYAML, Registerer: e.reg,
			Logger:          slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelInfo})),
			CollateralClock: clock}
		var err error
		if e.svc, err = Open(ctx, cfg, e.env); err != nil {
			t.Fatal(err)
		}
		return e
	}
	e := open()
	first := e.attest(attest.PlatformTDX)
	if collateralDigest(t, first, e.tcb) != evidence.Digest(ic[0].Digest()) {
		t.Fatal("the first verdict did not use the stored TCB info")
	}
	if err := e.svc.Close(); err != nil {
		t.Fatal(err)
	}

	// While it is stopped: a newer TCB info imported, and the index made to conflict with the log.
	o := fakeintel.DefaultCollateralOptions(liveStart.Add(time.Hour))
	o.TCBInfo.EvaluationDataNumber = 19
	fresh, err := plat.Intel.Collateral(o)
	if err != nil {
		t.Fatal(err)
	}
	if err := store.Put(ctx, e.tcb, fresh[0].Canonical()); err != nil {
		t.Fatal(err)
	}
	db, err := sql.Open("sqlite", filepath.Join(cfg.DataDir, IndexFileName))
	if err != nil {
		t.Fatal(err)
	}
	res, err := db.ExecContext(ctx, "UPDATE proofline_index_entries SET leaf_sha256 = zeroblob(32) WHERE log_index = (SELECT MAX(log_index) FROM proofline_index_entries)")
	if err != nil {
		t.Fatal(err)
	}
	if n, err := res.RowsAffected(); err != nil || n != 1 {
		t.Fatalf("index entries changed: %d, %v", n, err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}

	e = open()
	t.Cleanup(func() { e.svc.Close() })
	if !strings.Contains(logs.String(), "index catch-up failed at start-up") {
		t.Fatalf("the index caught up: the test cannot show the comparison does without it:\n%s", logs.String())
	}
	if !strings.Contains(logs.String(), `msg="recorded the collateral replaced while the verifier was stopped" records=1`) {
		t.Errorf("no log line says the replacement was recorded:\n%s", logs.String())
	}
	newDigest := evidence.Digest(fresh[0].Digest())
	next := e.attest(attest.PlatformTDX)
	if collateralDigest(t, next, e.tcb) != newDigest {
		t.Fatal("the verdict after the restart did not use the imported TCB info")
	}
	if next.LogIndex != first.LogIndex+2 {
		t.Fatalf("the verdict after the restart is record %d, want %d: one record between them", next.LogIndex, first.LogIndex+2)
	}
	_, rec, err := e.svc.Record(ctx, first.LogIndex+1)
	if err != nil {
		t.Fatal(err)
	}
	if rec.Kind != evidence.KindCollateralUpdate || len(rec.Collateral) != 1 || rec.Collateral[0].Digest != newDigest ||
		len(rec.CollateralUpdate) != 1 || rec.CollateralUpdate[0].Previous == nil || *rec.CollateralUpdate[0].Previous != evidence.Digest(ic[0].Digest()) {
		t.Fatalf("record %d: %s %+v %+v", first.LogIndex+1, rec.Kind, rec.Collateral, rec.CollateralUpdate)
	}
}

// offlineSetup is an offline verifier's configuration and the platforms' collateral (Intel
// first: ic[0] is the TCB info), stored in its collateral store as an import would.
func offlineSetup(t *testing.T) (*servicetest.Platforms, []*collateral.Response, Config, *collateral.DirStore) {
	t.Helper()
	ctx := context.Background()
	plat, err := servicetest.New(liveStart)
	if err != nil {
		t.Fatal(err)
	}
	ic, err := plat.Intel.Collateral(fakeintel.DefaultCollateralOptions(liveStart))
	if err != nil {
		t.Fatal(err)
	}
	ac, err := plat.AMD.Collateral(fakeamd.CRLOptions{})
	if err != nil {
		t.Fatal(err)
	}
	cfg := Config{DataDir: t.TempDir(), Log: LogConfig{CheckpointInterval: 100 * time.Millisecond},
		Collateral: CollateralConfig{Offline: true}}
	if err := cfg.Validate(true); err != nil {
		t.Fatal(err)
	}
	store, err := collateral.OpenDirStore(filepath.Join(cfg.DataDir, DefaultCollateralCacheDir))
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range append(ic, ac...) {
		if err := store.Put(ctx, r.URL, r.Canonical()); err != nil {
			t.Fatal(err)
		}
	}
	return plat, ic, cfg, store
}
