package api

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/transparency-dev/tessera/api/layout"

	"github.com/proofline/proofline/attest"
	"github.com/proofline/proofline/evidence/log"
	"github.com/proofline/proofline/internal/mysqltest"
	"github.com/proofline/proofline/verifier/alert"
	"github.com/proofline/proofline/verifier/collateral/collateraltest"
	"github.com/proofline/proofline/verifier/ear"
	"github.com/proofline/proofline/verifier/service"
	"github.com/proofline/proofline/verifier/service/servicetest"
)

// receiver is a webhook receiver: down (503) or up (200), recording every attempt.
type receiver struct {
	t      *testing.T
	secret []byte
	clock  *collateraltest.Clock
	srv    *httptest.Server
	got    chan delivery

	mu sync.Mutex
	up bool
}

type delivery struct {
	id       string // the Proofline-Alert-Id header
	sigErr   error
	alert    alert.Alert
	accepted bool
}

func newReceiver(t *testing.T, clock *collateraltest.Clock) *receiver {
	r := &receiver{t: t, secret: []byte("webhook secret for tests 0123456789"), clock: clock, got: make(chan delivery, 100)}
	r.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		body, _ := io.ReadAll(req.Body)
		d := delivery{id: req.Header.Get(alert.HeaderAlertID)}
		d.sigErr = alert.VerifySignature(r.secret, body, req.Header.Get(alert.HeaderSignature), clock.Now(), 5*time.Minute)
		if err := json.Unmarshal(body, &d.alert); err != nil {
			t.Errorf("webhook body: %v\n%s", err, body)
		}
		r.mu.Lock()
		d.accepted = r.up
		r.mu.Unlock()
		if !d.accepted {
			w.WriteHeader(http.StatusServiceUnavailable)
		}
		r.got <- d
	}))
	t.Cleanup(r.srv.Close)
	return r
}

func (r *receiver) setUp(up bool) {
	r.mu.Lock()
	r.up = up
	r.mu.Unlock()
}

// next returns the next delivery attempt of an alert of kind (others are skipped).
func (r *receiver) next(kind alert.Kind) delivery {
	r.t.Helper()
	for {
		select {
		case d := <-r.got:
			if d.alert.Kind == kind {
				return d
			}
		case <-time.After(30 * time.Second):
			r.t.Fatalf("no %s alert reached the webhook receiver", kind)
		}
	}
}

// withAlerts routes the fixture's alerts to the receiver, on the alert clock.
func withAlerts(r *receiver, clock *collateraltest.Clock, deps **service.Deps) func(*service.Deps) {
	return func(d *service.Deps) {
		wh, err := alert.NewWebhook(alert.WebhookConfig{URL: r.srv.URL, Secret: r.secret, Now: clock.Now})
		if err != nil {
			r.t.Fatal(err)
		}
		d.Alerting.Routes = []alert.Route{{Destination: wh}}
		d.Alerting.Clock = clock
		d.Alerting.Backoff, d.Alerting.MaxBackoff = 10*time.Second, time.Minute
		if deps != nil {
			*deps = d
		}
	}
}

// Acceptance 1: a contraindicated attestation produces a signed webhook delivery naming its
// record. With the receiver down it is retried on the clock; after a restart of the service on
// the same data directory the outbox still holds it, and it is delivered once the receiver is
// back — the same alert id on every attempt.
func TestAlertWebhookDelivery(t *testing.T) {
	aclock := collateraltest.NewClock(time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC))
	rcv := newReceiver(t, aclock)
	dir := t.TempDir()
	ctx := context.Background()

	f1 := newFixture(t, options{dataDir: dir, noStart: true, settings: withAlerts(rcv, aclock, nil)})
	res := f1.attest("vm-tdx", f1.evidence(attest.PlatformTDX, "vm-tdx", f1.challenge("vm-tdx"), servicetest.FaultDebug))
	if res.Status != ear.StatusContraindicated {
		t.Fatalf("status %s", res.Status)
	}
	// An affirming verdict raises nothing.
	if ok := f1.attest("vm-snp", f1.evidence(attest.PlatformSNP, "vm-snp", f1.challenge("vm-snp"), servicetest.FaultNone)); ok.Status == ear.StatusContraindicated {
		t.Fatalf("valid evidence: %s", ok.Status)
	}
	if ok, failed := f1.svc.DeliverAlerts(ctx); ok != 0 || failed != 1 {
		t.Fatalf("first pass: %d delivered, %d failed; want the one alert, failed", ok, failed)
	}
	first := rcv.next(alert.KindContraindicated)
	if first.accepted || first.sigErr != nil || first.id != first.alert.ID || first.alert.RecordIndex == nil || *first.alert.RecordIndex != res.LogIndex ||
		first.alert.Subject != "agent:vm-tdx" || first.alert.Severity != alert.SeverityCritical || !strings.Contains(first.alert.Reason, "tdx_debug") ||
		first.alert.LogOrigin != service.DefaultOrigin {
		t.Fatalf("first attempt: %+v (record %d)", first, res.LogIndex)
	}
	// Not due again before the backoff; due after it.
	if ok, failed := f1.svc.DeliverAlerts(ctx); ok+failed != 0 {
		t.Fatal("retried before the backoff")
	}
	aclock.Advance(10 * time.Second)
	if _, failed := f1.svc.DeliverAlerts(ctx); failed != 1 {
		t.Fatal("not retried after the backoff")
	}
	if d := rcv.next(alert.KindContraindicated); d.id != first.id || d.sigErr != nil {
		t.Fatalf("second attempt: %+v", d)
	}

	// Restart on the same data directory; the receiver comes back.
	f1.srv.Close()
	if err := f1.svc.Close(); err != nil {
		t.Fatal(err)
	}
	rcv.setUp(true)
	f2 := newFixture(t, options{dataDir: dir, noStart: true, settings: withAlerts(rcv, aclock, nil)})
	f2.svc.Start()
	var got delivery
	for done := false; !done; {
		select {
		case got = <-rcv.got:
			done = got.alert.Kind == alert.KindContraindicated && got.accepted
		case <-aclock.Changed():
			aclock.Advance(10 * time.Second) // the delivery loop sleeps until the retry is due
		case <-time.After(30 * time.Second):
			t.Fatal("the alert was not delivered after the restart")
		}
	}
	if got.id != first.id || got.sigErr != nil || *got.alert.RecordIndex != res.LogIndex {
		t.Fatalf("delivery after the restart: %+v", got)
	}
	if ok, failed := f2.svc.DeliverAlerts(ctx); ok+failed != 0 {
		t.Fatalf("delivered again after success: %d %d", ok, failed)
	}
}

// Repeated authentication failures from one address raise one alert; fewer raise none.
func TestAlertAuthFailures(t *testing.T) {
	aclock := collateraltest.NewClock(time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC))
	rcv := newReceiver(t, aclock)
	rcv.setUp(true)
	f := newFixture(t, options{noStart: true, settings: withAlerts(rcv, aclock, nil)})
	bad := func(n int) {
		for range n {
			req, _ := http.NewRequest(http.MethodGet, f.srv.URL+"/v1/policies", nil)
			req.Header.Set("Authorization", "Bearer not-a-token")
			resp, err := f.srv.Client().Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusUnauthorized {
				t.Fatalf("bad token: %d", resp.StatusCode)
			}
		}
	}
	ctx := context.Background()
	bad(service.DefaultAuthFailures - 1)
	if ok, _ := f.svc.DeliverAlerts(ctx); ok != 0 {
		t.Fatal("alerted below the threshold")
	}
	// Outside the window the count starts again.
	aclock.Advance(service.DefaultAuthFailuresWindow + time.Second)
	bad(service.DefaultAuthFailures - 1)
	if ok, _ := f.svc.DeliverAlerts(ctx); ok != 0 {
		t.Fatal("failures outside the window were counted")
	}
	bad(1)
	bad(5) // the same burst: no second alert
	if ok, _ := f.svc.DeliverAlerts(ctx); ok != 1 {
		t.Fatalf("%d alerts delivered, want 1", ok)
	}
	if d := rcv.next(alert.KindAuthFailures); d.alert.Subject != "127.0.0.1" || d.sigErr != nil {
		t.Fatalf("%+v", d)
	}
}

// Acceptance 3: a byte flipped in a stored leaf that an earlier self-check pass verified is
// found by the next pass, one interval later on the clock, and alerted naming the leaf.
func TestSelfCheckDetectsTampering(t *testing.T) {
	aclock := collateraltest.NewClock(time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC))
	rcv := newReceiver(t, aclock)
	rcv.setUp(true)
	dir := t.TempDir()
	var deps *service.Deps
	f := newFixture(t, options{dataDir: dir, noStart: true, settings: withAlerts(rcv, aclock, &deps)})
	var last uint64
	for _, vm := range []string{"vm-tdx", "vm-snp", "vm-tdx"} {
		p := attest.PlatformTDX
		if vm == "vm-snp" {
			p = attest.PlatformSNP
		}
		last = f.attest(vm, f.evidence(p, vm, f.challenge(vm), servicetest.FaultNone)).LogIndex
	}
	ctx := context.Background()
	cp, err := deps.Log.(*log.Log).WaitCheckpoint(ctx, last+1)
	if err != nil {
		t.Fatal(err)
	}
	f.svc.Start()
	// The self-check passes at once, then sleeps with the delivery loop and the periodic checks.
	for aclock.Sleeping() < 3 {
		select {
		case <-aclock.Changed():
		case <-time.After(30 * time.Second):
			t.Fatal("the alerting loops did not start")
		}
	}
	if got := gauge(t, f, "proofline_log_selfcheck_verified_size"); got < float64(cp.Size) {
		t.Fatalf("the first pass verified size %v, want %d", got, cp.Size)
	}
	if got := gauge(t, f, "proofline_log_selfcheck_failures_total"); got != 0 {
		t.Fatalf("failures on a sound log: %v", got)
	}

	// Flip a byte in the middle of leaf `last-1` in every stored copy of entry bundle 0.
	target := last - 1
	tampered := 0
	filepath.WalkDir(filepath.Join(dir, service.LogDirName, "tlog", filepath.Dir(layout.EntriesPath(0, 0))), func(path string, e os.DirEntry, err error) error {
		if err != nil || e.IsDir() || !strings.Contains(path, "000") {
			return nil
		}
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		off := 0
		for i := uint64(0); off+2 <= len(b); i++ {
			n := int(binary.BigEndian.Uint16(b[off:]))
			if i == target && off+2+n <= len(b) {
				b[off+2+n/2] ^= 0x40
				os.Chmod(path, 0o644)
				if err := os.WriteFile(path, b, 0o644); err != nil {
					t.Fatal(err)
				}
				tampered++
				break
			}
			off += 2 + n
		}
		return nil
	})
	if tampered == 0 {
		t.Fatal("found no stored copy of the leaf to tamper with")
	}
	aclock.Advance(service.DefaultSelfCheckEvery + time.Second)
	d := rcv.next(alert.KindLogIntegrity)
	if d.alert.RecordIndex == nil || *d.alert.RecordIndex != target || d.alert.Severity != alert.SeverityCritical || d.sigErr != nil ||
		!strings.HasPrefix(d.alert.Reason, "fsck:I") {
		t.Fatalf("alert %+v, want leaf %d", d.alert, target)
	}
	if got := gauge(t, f, "proofline_log_selfcheck_failures_total"); got != 1 {
		t.Fatalf("failures counted: %v", got)
	}
}

// gauge sums the samples of a metric family in the fixture's registry.
func gauge(t *testing.T, f *fixture, name string) float64 {
	t.Helper()
	mfs, err := f.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	sum := 0.0
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			sum += m.GetGauge().GetValue() + m.GetCounter().GetValue()
		}
	}
	return sum
}

// Every metric that hack/alerting's Prometheus rules and Grafana dashboard name is served by a
// running verifier (after one attestation, so that labelled vectors have children).
func TestAlertingArtifactsNameRealMetrics(t *testing.T) {
	aclock := collateraltest.NewClock(time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC))
	rcv := newReceiver(t, aclock)
	rcv.setUp(true)
	f := newFixture(t, options{noStart: true, settings: withAlerts(rcv, aclock, nil)})
	ev := f.evidence(attest.PlatformTDX, "vm-tdx", f.challenge("vm-tdx"), servicetest.FaultDebug)
	f.attest("vm-tdx", ev)
	f.attest("vm-tdx", ev) // a replayed nonce: proofline_nonce_rejected_total gets a child
	f.do(http.MethodGet, "/v1/policies", "alice", nil)
	ctx := context.Background()
	f.svc.DeliverAlerts(ctx)
	f.svc.SelfCheck(ctx)
	mfs, err := f.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	served := map[string]bool{}
	for _, mf := range mfs {
		served[mf.GetName()] = true
		if mf.GetType().String() == "HISTOGRAM" {
			for _, s := range []string{"_bucket", "_sum", "_count"} {
				served[mf.GetName()+s] = true
			}
		}
	}
	_, file, _, _ := runtime.Caller(0)
	root := filepath.Join(filepath.Dir(file), "..", "..", "hack", "alerting")
	names := regexp.MustCompile(`\bproofline_[a-z0-9_]+\b`)
	for _, name := range []string{"prometheus-rules.yaml", "grafana-dashboard.json"} {
		b, err := os.ReadFile(filepath.Join(root, name))
		if err != nil {
			t.Fatal(err)
		}
		if name == "grafana-dashboard.json" && !json.Valid(b) {
			t.Fatalf("%s is not valid JSON", name)
		}
		found := names.FindAllString(string(b), -1)
		if len(found) < 5 {
			t.Fatalf("%s names only %d metrics", name, len(found))
		}
		for _, m := range found {
			if !served[m] {
				t.Errorf("%s names %s, which the verifier does not serve", name, m)
			}
		}
	}
	// The check can fail: a name the verifier does not serve is caught.
	if served["proofline_no_such_metric_total"] {
		t.Fatal("unexpected metric")
	}
}

// The self-check on a log in MariaDB: sound, then a leaf altered in its entry bundle row is found
// and alerted naming it.
func TestSelfCheckMariaDB(t *testing.T) {
	dsn := mysqltest.NewDatabase(t)
	aclock := collateraltest.NewClock(time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC))
	rcv := newReceiver(t, aclock)
	rcv.setUp(true)
	var deps *service.Deps
	f := newFixture(t, options{database: dsn, noStart: true, settings: withAlerts(rcv, aclock, &deps)})
	last := f.attest("vm-tdx", f.evidence(attest.PlatformTDX, "vm-tdx", f.challenge("vm-tdx"), servicetest.FaultNone)).LogIndex
	ctx := context.Background()
	if _, err := deps.Log.(*log.Log).WaitCheckpoint(ctx, last+1); err != nil {
		t.Fatal(err)
	}
	if err := f.svc.SelfCheck(ctx); err != nil {
		t.Fatalf("sound log: %v", err)
	}
	db := mysqltest.Open(t, dsn)
	var data []byte
	if err := db.QueryRowContext(ctx, "SELECT `data` FROM `TiledLeaves` WHERE `tile_index` = 0").Scan(&data); err != nil {
		t.Fatal(err)
	}
	off := 0
	for range last {
		off += 2 + int(binary.BigEndian.Uint16(data[off:]))
	}
	data[off+2+10] ^= 1
	if _, err := db.ExecContext(ctx, "UPDATE `TiledLeaves` SET `data` = ? WHERE `tile_index` = 0", data); err != nil {
		t.Fatal(err)
	}
	var ce *log.CorruptError
	if err := f.svc.SelfCheck(ctx); !errors.As(err, &ce) || !ce.HasIndex || ce.Index != last {
		t.Fatalf("tampered log: %v, want corruption at leaf %d", err, last)
	}
	f.svc.DeliverAlerts(ctx)
	if d := rcv.next(alert.KindLogIntegrity); d.alert.RecordIndex == nil || *d.alert.RecordIndex != last {
		t.Fatalf("%+v", d.alert)
	}
}
