package service

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/proofline/proofline/attest"
	"github.com/proofline/proofline/attest/attesttest/fakeintel"
	"github.com/proofline/proofline/evidence"
	"github.com/proofline/proofline/evidence/log"
	"github.com/proofline/proofline/verifier/alert"
	"github.com/proofline/proofline/verifier/collateral"
	"github.com/proofline/proofline/verifier/collateral/collateraltest"
	"github.com/proofline/proofline/verifier/ear"
	"github.com/proofline/proofline/verifier/service/servicetest"
)

func TestAlertsConfigValidate(t *testing.T) {
	ok := Config{DataDir: "/d",
		Alerts: AlertsConfig{
			Webhooks:    []AlertWebhookConfig{{URL: "https://soc.example.com/h", SecretFile: "/s", Kinds: []string{"log_integrity_failure"}, MinSeverity: "warning"}},
			Syslog:      []AlertSyslogConfig{{Network: "tcp", Address: "siem:601", Facility: "local3"}},
			ExpectEvery: time.Hour, Expect: []AlertExpectConfig{{Subject: "agent:batch-*", Every: 24 * time.Hour}},
		},
		SelfCheck: SelfCheckConfig{Every: 5 * time.Minute}}
	if err := ok.Validate(false); err != nil {
		t.Fatal(err)
	}
	for name, c := range map[string]struct {
		edit func(*Config)
		want string
	}{
		"webhook url":  {func(c *Config) { c.Alerts.Webhooks[0].URL = "soc.example.com" }, "alerts.webhooks[0]: webhook url"},
		"webhook name": {func(c *Config) { c.Alerts.Webhooks[0].Name = "soc/pager" }, `alerts.webhooks[0]: webhook https://soc.example.com: name "soc/pager"`},
		"duplicate name": {func(c *Config) {
			c.Alerts.Webhooks[0].Name = "soc"
			c.Alerts.Webhooks = append(c.Alerts.Webhooks, AlertWebhookConfig{Name: "soc", URL: "https://other.example.com/h", SecretFile: "/s"})
		}, `alerts.webhooks[0] and alerts.webhooks[1] are both named "webhook:soc"`},
		"names differing in case": {func(c *Config) {
			c.Alerts.Webhooks[0].Name = "soc"
			c.Alerts.Webhooks = append(c.Alerts.Webhooks, AlertWebhookConfig{Name: "SOC", URL: "https://other.example.com/h", SecretFile: "/s"})
		}, `alerts.webhooks[0] and alerts.webhooks[1] are both named "webhook:SOC" (names must differ in more than case)`},
		"syslog name":                {func(c *Config) { c.Alerts.Syslog[0].Name = "-x" }, `alerts.syslog[0]: syslog siem:601: name "-x"`},
		"no secret file":             {func(c *Config) { c.Alerts.Webhooks[0].SecretFile = "" }, "alerts.webhooks[0].secret_file is required"},
		"unknown kind":               {func(c *Config) { c.Alerts.Webhooks[0].Kinds = []string{"verdict"} }, `unknown kind "verdict"`},
		"severity":                   {func(c *Config) { c.Alerts.Webhooks[0].MinSeverity = "high" }, "min_severity"},
		"syslog network":             {func(c *Config) { c.Alerts.Syslog[0].Network = "tls" }, "alerts.syslog[0]: syslog network"},
		"syslog facility":            {func(c *Config) { c.Alerts.Syslog[0].Facility = "local8" }, "facility"},
		"expect_every":               {func(c *Config) { c.Alerts.ExpectEvery = time.Second }, "alerts.expect_every"},
		"expect pattern":             {func(c *Config) { c.Alerts.Expect[0].Subject = "agent:[" }, "alerts.expect[0].subject"},
		"expect every":               {func(c *Config) { c.Alerts.Expect[0].Every = 0 }, "alerts.expect[0].every"},
		"auth failures":              {func(c *Config) { c.Alerts.AuthFailures.Threshold = -1 }, "alerts.auth_failures"},
		"forget_after":               {func(c *Config) { c.Alerts.ForgetAfter = -time.Hour }, "alerts.forget_after"},
		"forget_after short":         {func(c *Config) { c.Alerts.ForgetAfter = 24 * time.Hour }, "alerts.forget_after is 24h0m0s; give a duration longer than every expected interval (24h0m0s)"},
		"forget_after default short": {func(c *Config) { c.Alerts.Expect[0].Every = 1000 * time.Hour }, "alerts.forget_after is 720h0m0s"},
		"self-check period":          {func(c *Config) { c.SelfCheck.Every = time.Second }, "self_check.every"},
	} {
		c2 := ok
		c2.Alerts.Webhooks = slices.Clone(ok.Alerts.Webhooks)
		c2.Alerts.Syslog = slices.Clone(ok.Alerts.Syslog)
		c2.Alerts.Expect = slices.Clone(ok.Alerts.Expect)
		c.edit(&c2)
		err := c2.Validate(false)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want %q", name, err, c.want)
		}
	}
}

// captured is a destination that keeps what it is sent.
type captured struct {
	mu     sync.Mutex
	alerts []alert.Alert
}

func (c *captured) Name() string { return "webhook:capture" }

func (c *captured) Deliver(_ context.Context, a *alert.Alert, _ []byte) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.alerts = append(c.alerts, *a)
	return nil
}

// take returns and forgets what was delivered.
func (c *captured) take(t *testing.T, s *Service) []alert.Alert {
	t.Helper()
	s.DeliverAlerts(context.Background())
	c.mu.Lock()
	defer c.mu.Unlock()
	out := c.alerts
	c.alerts = nil
	return out
}

type alertEnv struct {
	svc   *Service
	cap   *captured
	clock *collateraltest.Clock
	plat  *servicetest.Platforms
}

var alertStart = time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)

// newAlertEnv opens a service (not started) on the simulated platforms whose alerts go to a
// captured destination, with the service and the alerts on one pinned clock.
func newAlertEnv(t *testing.T, edit func(*Config), depsEdit func(*Deps, *collateraltest.Clock)) *alertEnv {
	t.Helper()
	e := &alertEnv{cap: &captured{}, clock: collateraltest.NewClock(alertStart)}
	var err error
	if e.plat, err = servicetest.New(alertStart); err != nil {
		t.Fatal(err)
	}
	cfg := Config{DataDir: t.TempDir(), Log: LogConfig{CheckpointInterval: 100 * time.Millisecond}}
	if edit != nil {
		edit(&cfg)
	}
	ctx := context.Background()
	d, err := OpenDeps(ctx, cfg, Env{TestMode: true, Now: e.clock.Now, Roots: e.plat.Roots, Collateral: e.plat.Collateral, InitialPolicy: e.plat.PolicyYAML})
	if err != nil {
		t.Fatal(err)
	}
	d.Alerting.Routes = append(d.Alerting.Routes, alert.Route{Destination: e.cap})
	d.Alerting.Clock = e.clock
	if depsEdit != nil {
		depsEdit(d, e.clock)
	}
	if e.svc, err = New(ctx, *d); err != nil {
		for _, c := range d.Closers {
			c()
		}
		t.Fatal(err)
	}
	t.Cleanup(func() { e.svc.Close() })
	return e
}

func (e *alertEnv) attest(t *testing.T, agent string, platform attest.Platform, fault servicetest.Fault) *Attestation {
	t.Helper()
	ctx := context.Background()
	p := Principal{Name: agent, Role: RoleAgent}
	ch, err := e.svc.Challenge(ctx, p)
	if err != nil {
		t.Fatal(err)
	}
	ev, err := e.plat.Evidence(platform, ch.Nonce, servicetest.RuntimeData(agent), fault)
	if err != nil {
		t.Fatal(err)
	}
	a, err := e.svc.Attest(ctx, p, ev)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// A subject without a good verdict for longer than its expected interval is alerted once, naming
// its last good record; a subject with a longer interval, or that attested again, is not.
func TestAlertAttestationMissed(t *testing.T) {
	e := newAlertEnv(t, func(c *Config) {
		c.Alerts.ExpectEvery = time.Hour
		c.Alerts.Expect = []AlertExpectConfig{{Subject: "agent:batch-*", Every: 24 * time.Hour}}
	}, nil)
	ctx := context.Background()
	if got := e.cap.take(t, e.svc); len(got) != 0 {
		t.Fatalf("alerts at start: %+v", got)
	}
	web := e.attest(t, "web-1", attest.PlatformTDX, servicetest.FaultNone)
	e.attest(t, "batch-1", attest.PlatformSNP, servicetest.FaultNone)
	if web.Result.Status == ear.StatusContraindicated {
		t.Fatalf("valid evidence: %+v", web.Result.Failures)
	}
	e.clock.Advance(59 * time.Minute)
	e.svc.CheckAlerts(ctx)
	if got := e.cap.take(t, e.svc); len(got) != 0 {
		t.Fatalf("alerted inside the interval: %+v", got)
	}
	e.clock.Advance(2 * time.Minute)
	e.svc.CheckAlerts(ctx)
	got := e.cap.take(t, e.svc)
	if len(got) != 1 || got[0].Kind != alert.KindAttestationMissed || got[0].Subject != "agent:web-1" || *got[0].RecordIndex != web.LogIndex {
		t.Fatalf("missed: %+v", got)
	}
	e.svc.CheckAlerts(ctx)
	if again := e.cap.take(t, e.svc); len(again) != 0 {
		t.Fatalf("the same miss alerted twice: %+v", again)
	}
	// web-1 attests again: no alert until it misses its interval again.
	e.attest(t, "web-1", attest.PlatformTDX, servicetest.FaultNone)
	e.clock.Advance(30 * time.Minute)
	e.svc.CheckAlerts(ctx)
	if got := e.cap.take(t, e.svc); len(got) != 0 {
		t.Fatalf("alerted after a new good verdict: %+v", got)
	}
	// A contraindicated verdict is not a good one: web-1 misses its interval regardless.
	e.attest(t, "web-1", attest.PlatformTDX, servicetest.FaultMeasurement)
	e.clock.Advance(31 * time.Minute)
	e.svc.CheckAlerts(ctx)
	kinds := map[alert.Kind]int{}
	for _, a := range e.cap.take(t, e.svc) {
		kinds[a.Kind]++
	}
	if kinds[alert.KindContraindicated] != 1 || kinds[alert.KindAttestationMissed] != 1 || len(kinds) != 2 {
		t.Fatalf("kinds: %v", kinds)
	}
}

// Policy changes are alerted with their record; the bootstrap policy is not a change.
func TestAlertPolicyChanged(t *testing.T) {
	e := newAlertEnv(t, nil, nil)
	ctx := context.Background()
	admin := Principal{Name: "alice", Role: RoleAdmin}
	v, err := e.svc.CreatePolicy(ctx, admin, []byte("id: fleet\ntdx: {}\n"), false)
	if err != nil {
		t.Fatal(err)
	}
	got := e.cap.take(t, e.svc)
	if len(got) != 1 || got[0].Kind != alert.KindPolicyChanged || got[0].Reason != "created" || *got[0].RecordIndex != v.CreatedRecord || got[0].Severity != alert.SeverityInfo {
		t.Fatalf("create: %+v", got)
	}
	v, err = e.svc.ActivatePolicy(ctx, admin, v.Version)
	if err != nil {
		t.Fatal(err)
	}
	got = e.cap.take(t, e.svc)
	if len(got) != 1 || got[0].Reason != "activated" || *got[0].RecordIndex != v.ActivatedRecord || got[0].Severity != alert.SeverityWarning ||
		!strings.Contains(got[0].Message, "admin:alice") {
		t.Fatalf("activate: %+v", got)
	}
	// A refused change raises nothing.
	if _, err := e.svc.ActivatePolicy(ctx, admin, v.Version); err == nil {
		t.Fatal("activated the active version")
	}
	if got := e.cap.take(t, e.svc); len(got) != 0 {
		t.Fatalf("a refused change alerted: %+v", got)
	}
}

// A rotated record key is alerted (once, whatever the restarts); the first key is not.
func TestAlertKeyRotation(t *testing.T) {
	e := newAlertEnv(t, nil, nil)
	ctx := context.Background()
	e.svc.emitKeyRotations(ctx)
	if got := e.cap.take(t, e.svc); len(got) != 0 {
		t.Fatalf("the first key alerted: %+v", got)
	}
	var newKID []byte
	e2 := newAlertEnv(t, nil, func(d *Deps, clock *collateraltest.Clock) {
		k, err := evidence.LoadOrCreateKey(filepath.Join(t.TempDir(), "k"))
		if err != nil {
			t.Fatal(err)
		}
		clock.Advance(time.Minute)
		if err := d.KeyHistory.Rotate(k, alertStart.Add(time.Minute)); err != nil {
			t.Fatal(err)
		}
		d.RecordKey, newKID = k, k.KeyID()
	})
	e2.svc.emitKeyRotations(ctx)
	e2.svc.emitKeyRotations(ctx) // as at a restart
	got := e2.cap.take(t, e2.svc)
	if len(got) != 1 || got[0].Kind != alert.KindSigningKeyRotated || !strings.Contains(got[0].Subject, strings.ToLower(hexString(newKID))) {
		t.Fatalf("rotation: %+v", got)
	}
}

func hexString(b []byte) string {
	const digits = "0123456789abcdef"
	out := make([]byte, 0, 2*len(b))
	for _, c := range b {
		out = append(out, digits[c>>4], digits[c&15])
	}
	return string(out)
}

// A collateral update raising the tcbEvaluationDataNumber is a TCB recovery, alerted with its
// record; one that does not raise it is not.
func TestAlertTCBRecovery(t *testing.T) {
	e := newAlertEnv(t, nil, nil)
	ctx := context.Background()
	doc := func(n int) *collateral.Response {
		o := fakeintel.DefaultCollateralOptions(alertStart)
		o.TCBInfo.EvaluationDataNumber = n
		rs, err := e.plat.Intel.Collateral(o)
		if err != nil {
			t.Fatal(err)
		}
		return rs[0] // the TCB info
	}
	old, same, newer := doc(18), doc(18), doc(19)
	e.svc.alertCollateralUpdate(ctx, collateral.Update{URL: old.URL, Old: old, New: same}, 5, alertStart)
	if got := e.cap.take(t, e.svc); len(got) != 0 {
		t.Fatalf("no recovery alerted: %+v", got)
	}
	e.svc.alertCollateralUpdate(ctx, collateral.Update{URL: old.URL, Old: old, New: newer}, 6, alertStart)
	got := e.cap.take(t, e.svc)
	if len(got) != 1 || got[0].Kind != alert.KindTCBRecovery || got[0].Reason != "tcb_evaluation_data_number:18->19" || *got[0].RecordIndex != 6 {
		t.Fatalf("recovery: %+v", got)
	}
}

// Recorded collateral inside the expiry warning is alerted per document, once.
func TestAlertCollateralExpiring(t *testing.T) {
	e := newAlertEnv(t, nil, func(d *Deps, _ *collateraltest.Clock) { d.Settings.CollateralExpiryWarning = 7 * 24 * time.Hour })
	ctx := context.Background()
	e.svc.CheckAlerts(ctx)
	if got := e.cap.take(t, e.svc); len(got) != 0 {
		t.Fatalf("alerted with a week to go beyond the warning: %+v", got)
	}
	e.clock.Advance(24 * time.Hour) // the SEV-SNP CRLs expire 7 days after the start
	e.svc.CheckAlerts(ctx)
	got := e.cap.take(t, e.svc)
	if len(got) == 0 {
		t.Fatal("no collateral_expiring alert")
	}
	for _, a := range got {
		if a.Kind != alert.KindCollateralExpiring || !strings.HasPrefix(a.Reason, "next_update:") || !strings.HasPrefix(a.Subject, "https://") {
			t.Fatalf("%+v", a)
		}
	}
	e.svc.CheckAlerts(ctx)
	if again := e.cap.take(t, e.svc); len(again) != 0 {
		t.Fatalf("alerted twice: %d", len(again))
	}
}

// The configuration path end to end: a webhook whose secret comes from secret_file and a UDP
// syslog collector both receive a contraindicated verdict's alert; a secret file too short is
// refused at start-up.
func TestAlertsFromConfig(t *testing.T) {
	dir := t.TempDir()
	secret := []byte("a secret shared with the receiver")
	secretFile := filepath.Join(dir, "secret")
	if err := os.WriteFile(secretFile, append(secret, '\n'), 0o600); err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var sigErrs []error
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		mu.Lock()
		sigErrs = append(sigErrs, alert.VerifySignature(secret, body, r.Header.Get(alert.HeaderSignature), time.Now(), time.Minute))
		mu.Unlock()
	}))
	defer srv.Close()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	edit := func(c *Config) {
		c.Alerts.Webhooks = []AlertWebhookConfig{{URL: srv.URL, SecretFile: secretFile}}
		c.Alerts.Syslog = []AlertSyslogConfig{{Network: "udp", Address: pc.LocalAddr().String()}}
	}
	e := newAlertEnv(t, edit, func(d *Deps, _ *collateraltest.Clock) {
		d.Alerting.Routes = d.Alerting.Routes[:len(d.Alerting.Routes)-1]
	}) // drop the capture
	a := e.attest(t, "web-1", attest.PlatformSNP, servicetest.FaultDebug)
	if ok, failed := e.svc.DeliverAlerts(context.Background()); ok != 2 || failed != 0 {
		t.Fatalf("%d delivered, %d failed", ok, failed)
	}
	mu.Lock()
	if len(sigErrs) != 1 || sigErrs[0] != nil {
		t.Fatalf("webhook signatures: %v", sigErrs)
	}
	mu.Unlock()
	buf := make([]byte, 4096)
	pc.SetReadDeadline(time.Now().Add(10 * time.Second))
	n, _, err := pc.ReadFrom(buf)
	if err != nil {
		t.Fatal(err)
	}
	msg := string(buf[:n])
	if !strings.HasPrefix(msg, "<34>1 ") || !strings.Contains(msg, "|verdict_contraindicated|") || !strings.Contains(msg, "cn1="+strconv.FormatUint(a.LogIndex, 10)) {
		t.Fatalf("syslog message %q", msg)
	}

	if err := os.WriteFile(secretFile, []byte("short"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := Config{DataDir: t.TempDir()}
	edit(&cfg)
	if _, err := Open(context.Background(), cfg, Env{}); err == nil || !strings.Contains(err.Error(), "alerts.webhooks[0].secret_file") {
		t.Fatalf("short secret: %v", err)
	}
}

// An alert whose outbox Put fails when its record is made (the trigger fails every insert into
// the outbox, as a full or broken database would) is not lost: once the outbox works again, the
// re-scan of the records emits it, and it is delivered exactly once.
func TestAlertRescanAfterFailedPut(t *testing.T) {
	var dir string
	e := newAlertEnv(t, func(c *Config) { dir = c.DataDir }, nil)
	ctx := context.Background()
	restore := failInserts(t, filepath.Join(dir, alert.DBFileName), "proofline_alert_outbox", "injected outbox failure")
	a := e.attest(t, "web-1", attest.PlatformSNP, servicetest.FaultDebug)
	if a.Result.Status != ear.StatusContraindicated {
		t.Fatalf("status %s", a.Result.Status)
	}
	if _, err := e.svc.d.Log.(*log.Log).WaitCheckpoint(ctx, a.LogIndex+1); err != nil {
		t.Fatal(err)
	}
	if got := e.cap.take(t, e.svc); len(got) != 0 {
		t.Fatalf("delivered despite the failed Put: %+v", got)
	}
	// While the outbox still fails, the re-scan fails and does not move past the record.
	if err := e.svc.ScanAlerts(ctx); err == nil || !strings.Contains(err.Error(), "injected outbox failure") {
		t.Fatalf("re-scan with a failing outbox: %v", err)
	}
	restore()
	if err := e.svc.ScanAlerts(ctx); err != nil {
		t.Fatal(err)
	}
	got := e.cap.take(t, e.svc)
	if len(got) != 1 || got[0].Kind != alert.KindContraindicated || got[0].RecordIndex == nil || *got[0].RecordIndex != a.LogIndex {
		t.Fatalf("after recovery: %+v, want the contraindicated alert of record %d", got, a.LogIndex)
	}
	// Exactly once: re-scanning again, or a live re-emit, sends nothing new.
	if err := e.svc.ScanAlerts(ctx); err != nil {
		t.Fatal(err)
	}
	e.svc.Emit(ctx, got[0])
	if again := e.cap.take(t, e.svc); len(again) != 0 {
		t.Fatalf("sent again: %+v", again)
	}
}

// The re-scan also restores tcb_recovery and policy activation alerts from their records, and
// emits nothing for sound attestations or policy creations.
func TestAlertRescanRecords(t *testing.T) {
	var dir string
	e := newAlertEnv(t, func(c *Config) { dir = c.DataDir }, nil)
	ctx := context.Background()
	admin := Principal{Name: "alice", Role: RoleAdmin}
	v, err := e.svc.CreatePolicy(ctx, admin, []byte("id: fleet\ntdx: {}\n"), false)
	if err != nil {
		t.Fatal(err)
	}
	if v, err = e.svc.ActivatePolicy(ctx, admin, v.Version); err != nil {
		t.Fatal(err)
	}
	last := e.attest(t, "web-1", attest.PlatformTDX, servicetest.FaultNone).LogIndex
	if _, err := e.svc.d.Log.(*log.Log).WaitCheckpoint(ctx, last+1); err != nil {
		t.Fatal(err)
	}
	live := map[string]alert.Alert{}
	for _, a := range e.cap.take(t, e.svc) {
		live[a.ID] = a
	}
	// The re-scan from the start gives the live alerts' ids.
	b, _ := json.Marshal(alertScan{Next: 0})
	if err := e.svc.al.cfg.Outbox.SetState(ctx, alertScanState, b); err != nil {
		t.Fatal(err)
	}
	want := e.svc.al.policyAlert("x", v, true)
	if err := want.Finalize(); err != nil {
		t.Fatal(err)
	}
	if _, ok := live[want.ID]; !ok {
		t.Fatalf("the live activation alert has another id than the re-scan's: %v", live)
	}
	if err := e.svc.ScanAlerts(ctx); err != nil {
		t.Fatal(err)
	}
	// Already delivered: nothing new.
	if got := e.cap.take(t, e.svc); len(got) != 0 {
		t.Fatalf("re-scan re-sent delivered alerts: %+v", got)
	}
	// Lost from the outbox: the re-scan from the start emits the activation again, and only it.
	db, err := sql.Open("sqlite", filepath.Join(dir, alert.DBFileName)+"?_busy_timeout=10000")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := db.ExecContext(ctx, `DELETE FROM proofline_alert_outbox`); err != nil {
		t.Fatal(err)
	}
	if err := e.svc.al.cfg.Outbox.SetState(ctx, alertScanState, b); err != nil {
		t.Fatal(err)
	}
	if err := e.svc.ScanAlerts(ctx); err != nil {
		t.Fatal(err)
	}
	if got := e.cap.take(t, e.svc); len(got) != 1 || got[0].ID != want.ID {
		t.Fatalf("re-scan of a lost outbox: %+v, want only %s activated", got, v.ID)
	}
	b, ok, err := e.svc.al.cfg.Outbox.State(ctx, alertScanState)
	var pos alertScan
	if err != nil || !ok || json.Unmarshal(b, &pos) != nil || pos.Next != last+1 {
		t.Fatalf("position %s %v %v, want %d", b, ok, err, last+1)
	}
}

// The re-scan does not open again the attestation records whose alerts this process stored right
// after their append (affirming or contraindicated); it opens the one whose alert was lost, and
// emits that alert.
func TestAlertRescanSkipsHandled(t *testing.T) {
	var dir string
	e := newAlertEnv(t, func(c *Config) { dir = c.DataDir }, nil)
	ctx := context.Background()
	var last uint64
	for i, fault := range []servicetest.Fault{servicetest.FaultNone, servicetest.FaultDebug, servicetest.FaultNone} {
		last = e.attest(t, fmt.Sprintf("web-%d", i), attest.PlatformSNP, fault).LogIndex
	}
	restore := failInserts(t, filepath.Join(dir, alert.DBFileName), "proofline_alert_outbox", "injected outbox failure")
	lost := e.attest(t, "web-lost", attest.PlatformSNP, servicetest.FaultDebug).LogIndex
	restore()
	if _, err := e.svc.d.Log.(*log.Log).WaitCheckpoint(ctx, lost+1); err != nil {
		t.Fatal(err)
	}
	e.cap.take(t, e.svc) // the live alert of web-1
	b, _ := json.Marshal(alertScan{Next: last - 2})
	if err := e.svc.al.cfg.Outbox.SetState(ctx, alertScanState, b); err != nil {
		t.Fatal(err)
	}
	before := e.svc.al.scanOpened.Load()
	if err := e.svc.ScanAlerts(ctx); err != nil {
		t.Fatal(err)
	}
	if opened := e.svc.al.scanOpened.Load() - before; opened != 1 {
		t.Fatalf("the re-scan opened %d records, want 1 (the one whose alert was lost)", opened)
	}
	got := e.cap.take(t, e.svc)
	if len(got) != 1 || got[0].RecordIndex == nil || *got[0].RecordIndex != lost {
		t.Fatalf("re-scan alerts %+v, want the lost one of record %d", got, lost)
	}
}

// failInserts makes every INSERT into table of the SQLite database at path fail with message
// (a full or broken database) until the returned function is called.
func failInserts(t *testing.T, path, table, message string) (restore func()) {
	t.Helper()
	db, err := sql.Open("sqlite", path+"?_busy_timeout=10000")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	ctx := context.Background()
	if _, err := db.ExecContext(ctx, "CREATE TRIGGER proofline_test_fail BEFORE INSERT ON "+table+" BEGIN SELECT RAISE(FAIL, '"+message+"'); END"); err != nil {
		t.Fatal(err)
	}
	return func() {
		t.Helper()
		if _, err := db.ExecContext(ctx, "DROP TRIGGER proofline_test_fail"); err != nil {
			t.Fatal(err)
		}
	}
}

// An auth_failures or signing_key_rotated alert whose outbox write failed is raised again once
// the outbox works (by the next failure from that address; by the periodic checks), and only
// once.
func TestAlertOnceAfterFailedPut(t *testing.T) {
	var dir string
	var newKID []byte
	e := newAlertEnv(t, func(c *Config) { dir = c.DataDir }, func(d *Deps, clock *collateraltest.Clock) {
		k, err := evidence.LoadOrCreateKey(filepath.Join(t.TempDir(), "k"))
		if err != nil {
			t.Fatal(err)
		}
		clock.Advance(time.Minute)
		if err := d.KeyHistory.Rotate(k, alertStart.Add(time.Minute)); err != nil {
			t.Fatal(err)
		}
		d.RecordKey, newKID = k, k.KeyID()
	})
	ctx := context.Background()
	restore := failInserts(t, filepath.Join(dir, alert.DBFileName), "proofline_alert_outbox", "injected outbox failure")
	e.svc.emitKeyRotations(ctx) // as at start-up
	for range DefaultAuthFailures {
		e.svc.AuthFailed(ctx, "192.0.2.7")
	}
	restore()
	if got := e.cap.take(t, e.svc); len(got) != 0 {
		t.Fatalf("delivered despite the failed Put: %+v", got)
	}
	e.svc.AuthFailed(ctx, "192.0.2.7")
	e.svc.CheckAlerts(ctx)
	kinds := func(as []alert.Alert) []string {
		var out []string
		for _, a := range as {
			out = append(out, string(a.Kind)+" "+a.Subject)
		}
		slices.Sort(out)
		return out
	}
	want := []string{"auth_failures 192.0.2.7", "signing_key_rotated key:" + hexString(newKID)}
	if got := kinds(e.cap.take(t, e.svc)); !slices.Equal(got, want) {
		t.Fatalf("after the outbox recovered: %q, want %q", got, want)
	}
	e.svc.AuthFailed(ctx, "192.0.2.7")
	e.svc.emitKeyRotations(ctx)
	e.svc.CheckAlerts(ctx)
	if got := e.cap.take(t, e.svc); len(got) != 0 {
		t.Fatalf("raised again once stored: %+v", got)
	}
}

// A subject missing for longer than forget_after (a decommissioned VM) is alerted one last time
// and no longer tracked: nothing more about it, however long the checks run; until then, its
// alert is sent again weekly as a reminder (when the delivered copy is swept). A subject that
// is tracked but not expected is forgotten silently.
func TestAlertForgetsMissingSubject(t *testing.T) {
	e := newAlertEnv(t, func(c *Config) {
		c.Alerts.Expect = []AlertExpectConfig{{Subject: "agent:web-*", Every: time.Hour}}
	}, nil)
	ctx := context.Background()
	web := e.attest(t, "web-1", attest.PlatformTDX, servicetest.FaultNone)
	e.attest(t, "db-1", attest.PlatformTDX, servicetest.FaultNone) // tracked, not expected
	start := e.clock.Now()
	var reminders, finals []time.Duration
	e.clock.Advance(61 * time.Minute)
	for day := 0; day < 60; day++ {
		e.svc.CheckAlerts(ctx)
		for _, a := range e.cap.take(t, e.svc) {
			if a.Kind != alert.KindAttestationMissed {
				continue // the simulated collateral expires meanwhile
			}
			if a.Subject != "agent:web-1" || *a.RecordIndex != web.LogIndex {
				t.Fatalf("day %d: %+v", day, a)
			}
			switch {
			case len(finals) > 0:
				t.Fatalf("day %d: alerted after the last alert: %+v", day, a)
			case a.Reason == "expected_every:1h0m0s":
				reminders = append(reminders, e.clock.Now().Sub(start))
			case a.Reason == "forgotten_after:720h0m0s":
				finals = append(finals, e.clock.Now().Sub(start))
			default:
				t.Fatalf("day %d: reason %q", day, a.Reason)
			}
		}
		e.clock.Advance(24 * time.Hour)
	}
	weekly := len(reminders) > 0
	for i := 1; i < len(reminders); i++ {
		gap := reminders[i] - reminders[i-1]
		weekly = weekly && gap > deliveredRetention && gap <= deliveredRetention+24*time.Hour
	}
	if len(finals) != 1 || finals[0] <= DefaultForgetAfter || finals[0] > DefaultForgetAfter+24*time.Hour || !weekly {
		t.Fatalf("reminders after %v, last alert after %v; want weekly reminders, and one last alert a day after %v", reminders, finals, DefaultForgetAfter)
	}
	states, err := e.svc.al.cfg.Outbox.States(ctx, lastGoodPrefix)
	if err != nil || len(states) != 0 {
		t.Fatalf("subjects still tracked: %q (%v)", states, err)
	}
}
