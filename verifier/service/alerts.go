package service

import (
	"context"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"path"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/proofline/proofline/evidence"
	"github.com/proofline/proofline/evidence/log"
	"github.com/proofline/proofline/internal/buildinfo"
	"github.com/proofline/proofline/verifier/alert"
	"github.com/proofline/proofline/verifier/collateral"
	"github.com/proofline/proofline/verifier/ear"
)

// AlertsConfig says where alerts go and what to watch (verifier/alert/README.md is the schema
// receivers rely on). Every alert is stored in a durable outbox in the state database (alerts.db
// in DataDir, or the shared Database) before it is sent, and sent at least once to every
// destination that wants it, retried with backoff across restarts. Example:
//
//	alerts:
//	  webhooks:
//	    - {name: soc, url: https://soc.example.com/hooks/proofline, secret_file: /etc/proofline/webhook-secret}
//	    - {name: pager, url: https://pager.example.com/p, secret_file: /etc/proofline/pager-secret, min_severity: critical}
//	  syslog:
//	    - {network: tcp, address: siem.example.com:6514, facility: auth}
//	  expect_every: 1h                          # every subject must attest successfully hourly
//	  expect: [{subject: "agent:batch-*", every: 24h}]
//	  forget_after: 720h                        # then a subject is alerted one last time, and forgotten
//	  auth_failures: {threshold: 10, window: 5m}
//	self_check: {every: 10m}
type AlertsConfig struct {
	// Webhooks receive each alert as a signed JSON POST.
	Webhooks []AlertWebhookConfig `yaml:"webhooks"`
	// Syslog collectors receive each alert as an RFC 5424 message with a CEF body.
	Syslog []AlertSyslogConfig `yaml:"syslog"`
	// ExpectEvery: a subject (e.g. "agent:web-1") whose latest affirming or warning verdict is
	// older than this is alerted (attestation_missed), once per missed interval. 0: not checked,
	// except for the subjects Expect names. Subjects are tracked from their first attestation
	// after expectations are configured.
	ExpectEvery time.Duration `yaml:"expect_every"`
	// Expect sets the interval of the subjects matching a pattern (path.Match syntax, e.g.
	// "agent:web-*"); the first match wins over ExpectEvery.
	Expect []AlertExpectConfig `yaml:"expect"`
	// ForgetAfter: a subject without a good verdict for this long (a decommissioned VM) is
	// alerted one last time (attestation_missed, reason forgotten_after:<duration>) and no
	// longer tracked; its next good verdict tracks it again. Until then its attestation_missed
	// alert is sent again every 7 days (delivered alerts are kept that long), as a reminder.
	// Default 720h (30 days); it must be longer than every expected interval.
	ForgetAfter time.Duration `yaml:"forget_after"`
	// AuthFailures: Threshold failed authentications from one remote address within Window
	// raise one auth_failures alert. Defaults 10 and 5m.
	AuthFailures AuthFailuresConfig `yaml:"auth_failures"`
}

// AlertWebhookConfig is one webhook (alert.Webhook).
type AlertWebhookConfig struct {
	// Name is the webhook's stable id (letters, digits, '.', '_', '-', ':'; at most 64): the
	// outbox keeps undelivered alerts under it, so they survive a change of URL, and logs name
	// it. Default: the URL's host and a hash of the URL (alert.DefaultWebhookName), which
	// changes with the URL: set a name before changing a URL with alerts pending. Names of
	// two destinations must differ in more than case.
	Name string `yaml:"name"`
	// URL receives the POSTs. Required. A secret in its path or query is never logged: logs and
	// errors show only its scheme and host.
	URL string `yaml:"url"`
	// SecretFile holds the HMAC secret (at least 16 bytes; white space around it is ignored).
	// Required. The secret is never logged.
	SecretFile string `yaml:"secret_file"`
	// Kinds, if set, are the only alert kinds sent (alert.Kinds).
	Kinds []string `yaml:"kinds"`
	// MinSeverity drops alerts below info, warning or critical. Default: all.
	MinSeverity string `yaml:"min_severity"`
}

// AlertSyslogConfig is one syslog collector (alert.Syslog).
type AlertSyslogConfig struct {
	// Name is the collector's stable id (as for webhooks). Default: "<network>-<address>".
	Name string `yaml:"name"`
	// Network is udp or tcp (RFC 6587 octet counting). Required.
	Network string `yaml:"network"`
	// Address is host:port. Required.
	Address string `yaml:"address"`
	// Facility is a syslog facility name (default auth).
	Facility string `yaml:"facility"`
	// AppName is the RFC 5424 APP-NAME (default proofline).
	AppName     string   `yaml:"app_name"`
	Kinds       []string `yaml:"kinds"`
	MinSeverity string   `yaml:"min_severity"`
}

// AlertExpectConfig is the expected attestation interval of the subjects matching Subject.
type AlertExpectConfig struct {
	Subject string        `yaml:"subject"`
	Every   time.Duration `yaml:"every"`
}

// AuthFailuresConfig is the threshold of the auth_failures alert.
type AuthFailuresConfig struct {
	Threshold int           `yaml:"threshold"`
	Window    time.Duration `yaml:"window"`
}

// SelfCheckConfig configures the continuous self-check of the evidence log: every Every, the
// service runs the checks of `proofline log fsck` on its own log (every leaf re-hashed against
// the stored tiles and the latest checkpoint; signatures verified for the leaves added since
// the last verified size) and checks that the latest checkpoint is consistent with the last one
// it verified, and with the checkpoints the running process keeps in memory (the one its log
// serves, the largest it verified). A failure raises a critical log_integrity_failure alert and
// /readyz degraded; so does a self-check that cannot run (SelfCheckMaxFailures passes in a row,
// or no success within SelfCheckStaleAfter × Every). The stored baseline lives beside the log:
// restoring an old copy of both while the verifier is stopped is not detectable by the verifier
// alone; keep an anchor outside the host (auditors' checkpoints, or a Prometheus rule on
// proofline_log_selfcheck_verified_size going down, hack/alerting).
type SelfCheckConfig struct {
	// Every is the time between passes (default 10m, at least 10s).
	Every time.Duration `yaml:"every"`
}

// Alerting defaults.
const (
	DefaultSelfCheckEvery     = 10 * time.Minute
	DefaultAuthFailures       = 10
	DefaultAuthFailuresWindow = 5 * time.Minute
	DefaultForgetAfter        = 30 * 24 * time.Hour
	// alertCheckEvery is the period of the missed-attestation and collateral-expiry checks.
	alertCheckEvery = time.Minute
)

func (c *AlertsConfig) validate(bad func(string, ...any)) {
	filters := func(where string, kinds []string, sev string) {
		for _, k := range kinds {
			if !alert.Kind(k).Known() {
				bad("%s.kinds: unknown kind %q; give some of %v", where, k, alert.Kinds)
			}
		}
		if sev != "" && alert.Severity(sev).Rank() == 0 {
			bad("%s.min_severity %q: give info, warning or critical", where, sev)
		}
	}
	// Destination names differing only in case are refused too: they would be told apart by the
	// outbox only since its keys compare byte for byte, and not by people reading logs.
	names := map[string]string{} // lower-cased destination name → where it is configured
	named := func(where, name string) {
		if other, dup := names[strings.ToLower(name)]; dup {
			bad("%s and %s are both named %q (names must differ in more than case): give each its own name", other, where, name)
		}
		names[strings.ToLower(name)] = where
	}
	for i, w := range c.Webhooks {
		where := fmt.Sprintf("alerts.webhooks[%d]", i)
		if wh, err := alert.NewWebhook(alert.WebhookConfig{URL: w.URL, Name: w.Name, Secret: make([]byte, alert.MinSecretSize)}); err != nil {
			bad("%s: %v", where, strings.TrimPrefix(err.Error(), "alert: "))
		} else {
			named(where, wh.Name())
		}
		if w.SecretFile == "" {
			bad("%s.secret_file is required: a file holding the HMAC secret shared with the receiver (at least %d bytes)", where, alert.MinSecretSize)
		}
		filters(where, w.Kinds, w.MinSeverity)
	}
	for i, s := range c.Syslog {
		where := fmt.Sprintf("alerts.syslog[%d]", i)
		if sl, err := alert.NewSyslog(alert.SyslogConfig{Name: s.Name, Network: s.Network, Address: s.Address, Facility: s.Facility, Hostname: "-"}); err != nil {
			bad("%s: %v", where, strings.TrimPrefix(err.Error(), "alert: "))
		} else {
			named(where, sl.Name())
		}
		filters(where, s.Kinds, s.MinSeverity)
	}
	if c.ExpectEvery < 0 {
		bad("alerts.expect_every is %v; give a positive duration such as 1h (or leave it out)", c.ExpectEvery)
	} else if c.ExpectEvery > 0 && c.ExpectEvery < time.Minute {
		bad("alerts.expect_every is %v; give at least 1m", c.ExpectEvery)
	}
	for i, e := range c.Expect {
		if _, err := path.Match(e.Subject, ""); err != nil || e.Subject == "" {
			bad("alerts.expect[%d].subject %q: give a subject or a pattern such as agent:web-*", i, e.Subject)
		}
		if e.Every < time.Minute {
			bad("alerts.expect[%d].every is %v; give at least 1m", i, e.Every)
		}
	}
	forget := c.ForgetAfter
	if forget == 0 {
		forget = DefaultForgetAfter
	}
	longest := c.ExpectEvery
	for _, e := range c.Expect {
		longest = max(longest, e.Every)
	}
	if c.ForgetAfter < 0 || forget <= longest {
		bad("alerts.forget_after is %v; give a duration longer than every expected interval (%v), e.g. 720h", forget, longest)
	}
	if c.AuthFailures.Threshold < 0 || c.AuthFailures.Window < 0 {
		bad("alerts.auth_failures: threshold and window must not be negative")
	}
}

func (c *SelfCheckConfig) validate(bad func(string, ...any)) {
	if c.Every != 0 && c.Every < 10*time.Second {
		bad("self_check.every is %v; give at least 10s (a pass re-reads the whole log), e.g. 10m", c.Every)
	}
}

// Alerting is what the service needs to raise alerts and check its log (OpenDeps builds it from
// alerts and self_check).
type Alerting struct {
	// Outbox keeps alerts until delivered, and the alerting state. Required.
	Outbox *alert.Outbox
	Routes []alert.Route
	// Clock times deliveries, retries, the self-check and the missed-attestation checks; nil
	// means the system clock.
	Clock alert.Clock
	// LogReader reads the log's storage for the self-check; nil disables it.
	LogReader log.Reader
	// SelfCheckEvery is the time between self-check passes (default 10m).
	SelfCheckEvery time.Duration
	ExpectEvery    time.Duration
	Expect         []AlertExpectConfig
	// ForgetAfter is AlertsConfig.ForgetAfter (default DefaultForgetAfter).
	ForgetAfter   time.Duration
	AuthThreshold int
	AuthWindow    time.Duration
	// Backoff and MaxBackoff tune delivery retries (alert.Config; zero: its defaults).
	Backoff, MaxBackoff time.Duration
}

// openAlerting builds Deps.Alerting from cfg: the outbox in db (nil: SQLite in the data
// directory), the destinations, and the log reader of the self-check.
func (d *Deps) openAlerting(ctx context.Context, cfg Config, db *sql.DB, closer func(func() error)) error {
	a := &Alerting{
		SelfCheckEvery: cfg.SelfCheck.Every, ExpectEvery: cfg.Alerts.ExpectEvery, Expect: cfg.Alerts.Expect, ForgetAfter: cfg.Alerts.ForgetAfter,
		AuthThreshold: cfg.Alerts.AuthFailures.Threshold, AuthWindow: cfg.Alerts.AuthFailures.Window,
	}
	var err error
	if db != nil {
		a.Outbox, err = alert.OpenMySQL(ctx, db)
		a.LogReader = log.NewMySQLReader(db)
	} else {
		a.Outbox, err = alert.OpenSQLite(ctx, filepath.Join(cfg.DataDir, alert.DBFileName))
		a.LogReader = log.NewPOSIXReader(filepath.Join(cfg.DataDir, LogDirName))
	}
	if err != nil {
		return err
	}
	closer(a.Outbox.Close)
	kinds := func(ks []string) []alert.Kind {
		var out []alert.Kind
		for _, k := range ks {
			out = append(out, alert.Kind(k))
		}
		return out
	}
	for i, w := range cfg.Alerts.Webhooks {
		secret, err := alert.ReadSecretFile(w.SecretFile)
		if err != nil {
			return fmt.Errorf("alerts.webhooks[%d].secret_file: %w", i, err)
		}
		wh, err := alert.NewWebhook(alert.WebhookConfig{URL: w.URL, Name: w.Name, Secret: secret})
		if err != nil {
			return fmt.Errorf("alerts.webhooks[%d]: %w", i, err)
		}
		a.Routes = append(a.Routes, alert.Route{Destination: wh, Kinds: kinds(w.Kinds), MinSeverity: alert.Severity(w.MinSeverity)})
	}
	for i, s := range cfg.Alerts.Syslog {
		sl, err := alert.NewSyslog(alert.SyslogConfig{Name: s.Name, Network: s.Network, Address: s.Address, Facility: s.Facility, AppName: s.AppName, Version: buildinfo.Version()})
		if err != nil {
			return fmt.Errorf("alerts.syslog[%d]: %w", i, err)
		}
		a.Routes = append(a.Routes, alert.Route{Destination: sl, Kinds: kinds(s.Kinds), MinSeverity: alert.Severity(s.MinSeverity)})
	}
	d.Alerting = a
	return nil
}

// alerting is the service's alerting state.
type alerting struct {
	cfg    *Alerting
	disp   *alert.Dispatcher
	clock  alert.Clock
	origin string

	// handled holds the log indexes of attestation records whose alert this process stored in
	// the outbox (or that needed none) right after their append: the re-scan passes them
	// without reading and verifying them again, which under load would cost a signature check
	// per record every minute in one burst. At most handledMax; the re-scan forgets what it
	// passes. Records of other replicas and of a crashed process are not in it and are scanned.
	handledMu sync.Mutex
	handled   map[uint64]struct{}
	// scanOpened counts the records the re-scan opened (tests).
	scanOpened atomic.Int64
	// keysAlerted: the signing_key_rotated alerts of the key history are in the outbox.
	keysAlerted atomic.Bool

	authMu   sync.Mutex
	authSeen map[string]*authFailures // by remote address

	checkMu        sync.Mutex
	checkFailed    string    // the readiness detail of a failed self-check, "" after a pass succeeds
	checkCode      string    // its warning code: WarnLogIntegrity or WarnSelfCheckFailed
	checkStreak    int       // passes in a row that could not run
	checkErr       string    // the latest such pass's error
	checkSuccess   time.Time // the latest successful pass, or the first pass; zero before it
	checkSucceeded bool      // a pass has succeeded since the start
	checkAlerted   bool      // self_check_failed of this run of failures is in the outbox
	// checkVerified is the largest checkpoint a pass of this process verified: an anchor that
	// restoring an old copy of the log and the self-check's stored state does not roll back.
	checkVerified log.Checkpoint

	selfCheckLast     prometheus.Gauge
	selfCheckSize     prometheus.Gauge
	selfCheckFailures *prometheus.CounterVec // result: corrupt, error
}

// authFailures is what AuthFailed keeps of one remote address.
type authFailures struct {
	times   []time.Time // its failures within the window (at most the threshold + 1)
	alerted bool        // the alert of its current burst is stored (or being stored)
}

// maxAuthTracked bounds the remote addresses tracked for auth_failures.
const maxAuthTracked = 10000

// openAlerting sets up alerting from Deps.Alerting (none when it is nil).
func (s *Service) openAlerting(ctx context.Context) error {
	a := s.d.Alerting
	if a == nil {
		return nil
	}
	if a.Outbox == nil {
		return errors.New("service: Deps.Alerting.Outbox is required")
	}
	al := &alerting{cfg: a, clock: a.Clock, authSeen: map[string]*authFailures{}}
	if al.clock == nil {
		al.clock = collateral.SystemClock{}
	}
	if a.SelfCheckEvery == 0 {
		a.SelfCheckEvery = DefaultSelfCheckEvery
	}
	if a.AuthThreshold == 0 {
		a.AuthThreshold = DefaultAuthFailures
	}
	if a.AuthWindow == 0 {
		a.AuthWindow = DefaultAuthFailuresWindow
	}
	if a.ForgetAfter == 0 {
		a.ForgetAfter = DefaultForgetAfter
	}
	if v, err := s.logNoteVerifier(); err == nil {
		al.origin = v.Name()
	}
	var err error
	al.disp, err = alert.New(alert.Config{Outbox: a.Outbox, Routes: a.Routes, Clock: al.clock, Logger: s.logger,
		Registerer: s.d.Registerer, Backoff: a.Backoff, MaxBackoff: a.MaxBackoff})
	if err != nil {
		return err
	}
	al.selfCheckLast = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "proofline_log_selfcheck_last_success_timestamp_seconds", Help: "Unix time of the latest successful self-check of the evidence log.",
	})
	al.selfCheckSize = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "proofline_log_selfcheck_verified_size", Help: "Tree size the latest successful self-check verified.",
	})
	al.selfCheckFailures = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "proofline_log_selfcheck_failures_total", Help: "Self-check passes that failed, by result: corrupt (an integrity failure, alerted) or error (the check could not run).",
	}, []string{"result"})
	al.selfCheckFailures.WithLabelValues("corrupt") // exported at 0, for rules and dashboards
	al.selfCheckFailures.WithLabelValues("error")
	if s.d.Registerer != nil {
		s.d.Registerer.MustRegister(al.selfCheckLast, al.selfCheckSize, al.selfCheckFailures)
	}
	s.al = al
	return s.initAlertScan(ctx)
}

// startAlerting runs the alerting loops until ctx is done: delivery, the self-check, the re-scan
// of recorded alerts (ScanAlerts, at once and every minute), and the missed-attestation and
// collateral-expiry checks. Key rotations found in the key history are
// emitted at once (re-emits dedupe by id).
func (s *Service) startAlerting(ctx context.Context) {
	al := s.al
	if al == nil {
		return
	}
	s.emitKeyRotations(ctx)
	s.loops.Go(func() { al.disp.Run(ctx) })
	if al.cfg.LogReader != nil {
		s.loops.Go(func() {
			for {
				s.SelfCheck(ctx)
				if al.clock.Sleep(ctx, al.cfg.SelfCheckEvery) != nil {
					return
				}
			}
		})
	}
	s.loops.Go(func() {
		for {
			if err := s.ScanAlerts(ctx); err != nil && ctx.Err() == nil {
				s.logger.WarnContext(ctx, "alerting: the re-scan of recorded alerts failed; retrying in a minute", slog.Any("error", err))
			}
			if al.clock.Sleep(ctx, alertCheckEvery) != nil {
				return
			}
			s.CheckAlerts(ctx)
		}
	})
}

// Emit raises an alert: stored durably in the outbox for every destination that wants it, then
// delivered in the background. Failures are logged, never returned: an alert never fails the
// operation that raised it. It is safe to call from hooks (e.g. the collateral refresher's).
func (s *Service) Emit(ctx context.Context, a alert.Alert) *alert.Alert {
	out, _ := s.emit(ctx, a)
	return out
}

// emit is Emit, also saying whether the alert was stored.
func (s *Service) emit(ctx context.Context, a alert.Alert) (*alert.Alert, bool) {
	if s.al == nil {
		return nil, false
	}
	if a.Time.IsZero() {
		a.Time = s.al.clock.Now()
	}
	out, err := s.al.disp.Emit(context.WithoutCancel(ctx), a)
	if err != nil {
		s.logger.ErrorContext(ctx, "alert could not be stored in the outbox; it is only in this log line",
			slog.String("kind", string(a.Kind)), slog.String("subject", a.Subject), slog.String("message", a.Message), slog.Any("error", err))
		return nil, false
	}
	return out, true
}

// handledMax bounds alerting.handled.
const handledMax = 1 << 20

// markHandled records that the alerts of attestation record idx are in the outbox (or that it
// needs none), for the re-scan.
func (al *alerting) markHandled(idx uint64) {
	al.handledMu.Lock()
	defer al.handledMu.Unlock()
	if al.handled == nil {
		al.handled = map[uint64]struct{}{}
	}
	if len(al.handled) < handledMax {
		al.handled[idx] = struct{}{}
	}
}

// forgetHandledBelow forgets the handled records below next, which the re-scan has passed.
func (al *alerting) forgetHandledBelow(next uint64) {
	al.handledMu.Lock()
	defer al.handledMu.Unlock()
	for i := range al.handled {
		if i < next {
			delete(al.handled, i)
		}
	}
}

// takeHandled reports whether record idx was handled in-process, and forgets it.
func (al *alerting) takeHandled(idx uint64) bool {
	al.handledMu.Lock()
	defer al.handledMu.Unlock()
	_, ok := al.handled[idx]
	delete(al.handled, idx)
	return ok
}

// DeliverAlerts runs one delivery pass now (tests, and `serve` at shutdown is not needed: the
// outbox keeps what is undelivered).
func (s *Service) DeliverAlerts(ctx context.Context) (delivered, failed int) {
	if s.al == nil {
		return 0, 0
	}
	return s.al.disp.RunOnce(ctx)
}

// alertVerdict raises verdict_contraindicated for a contraindicated result, and remembers the
// subject's latest good verdict for attestation_missed.
func (s *Service) alertVerdict(ctx context.Context, rec *evidence.Record, idx uint64, res *ear.Result) {
	if s.al == nil {
		return
	}
	if res.Status != ear.StatusContraindicated {
		if s.al.cfg.ExpectEvery > 0 || len(s.al.cfg.Expect) > 0 {
			b, _ := json.Marshal(lastGood{Unix: rec.Time.Unix(), Index: idx})
			// Not the request's context: a client that disconnects must not lose the subject's
			// latest good verdict (which would later raise a false attestation_missed).
			if err := s.al.cfg.Outbox.SetState(context.WithoutCancel(ctx), lastGoodPrefix+rec.Subject.ID, b); err != nil {
				s.logger.WarnContext(ctx, "alerting: recording the latest good verdict failed", slog.Uint64("log_index", idx), slog.Any("error", err))
			}
		}
		s.al.markHandled(idx)
		return
	}
	if _, ok := s.emit(ctx, s.al.verdictAlert(rec, idx, res)); ok {
		s.al.markHandled(idx)
	}
}

// verdictAlert is the verdict_contraindicated alert of a contraindicated attestation record
// (alertVerdict, and the re-scan of ScanAlerts: both give the same alert id).
func (al *alerting) verdictAlert(rec *evidence.Record, idx uint64, res *ear.Result) alert.Alert {
	codes := make([]string, 0, len(res.Failures))
	msgs := make([]string, 0, len(res.Failures))
	for _, f := range res.Failures {
		if !slices.Contains(codes, string(f.Code)) {
			codes = append(codes, string(f.Code))
		}
		msgs = append(msgs, string(f.Code)+": "+f.Message)
	}
	a := alert.Alert{Kind: alert.KindContraindicated, Severity: alert.SeverityCritical, Subject: rec.Subject.ID,
		Reason: strings.Join(codes, ","), Time: rec.Time,
		Message: fmt.Sprintf("the %s attestation of %s is contraindicated (%s); evidence record %d; do not release secrets to it and investigate the VM",
			res.Platform, rec.Subject.ID, strings.Join(msgs, "; "), idx)}
	a.Record(al.origin, idx)
	return a
}

// lastGood is the state kept per subject for attestation_missed.
type lastGood struct {
	Unix  int64  `json:"unix"`
	Index uint64 `json:"index"`
}

const lastGoodPrefix = "lastgood/"

// expectedEvery is the expected attestation interval of subject (0: not checked).
func (al *alerting) expectedEvery(subject string) time.Duration {
	for _, e := range al.cfg.Expect {
		if ok, _ := path.Match(e.Subject, subject); ok {
			return e.Every
		}
	}
	return al.cfg.ExpectEvery
}

// deliveredRetention is how long delivered alerts stay in the outbox (a re-emit within it is
// recognised and not sent again).
const deliveredRetention = 7 * 24 * time.Hour

// CheckAlerts runs the periodic checks once: subjects that missed their attestation interval,
// and collateral that nears expiry unrefreshed. It also sweeps old delivered alerts, and raises
// again the alerts of a self-check that keeps failing and of key rotations whose outbox write
// failed.
func (s *Service) CheckAlerts(ctx context.Context) {
	al := s.al
	if al == nil {
		return
	}
	s.checkSelfCheckStale(ctx)
	s.emitKeyRotations(ctx)
	now := al.clock.Now()
	if _, err := al.cfg.Outbox.Sweep(ctx, now.Add(-deliveredRetention)); err != nil {
		s.logger.WarnContext(ctx, "alerting: sweeping delivered alerts failed", slog.Any("error", err))
	}
	if al.cfg.ExpectEvery > 0 || len(al.cfg.Expect) > 0 {
		states, err := al.cfg.Outbox.States(ctx, lastGoodPrefix)
		if err != nil {
			s.logger.WarnContext(ctx, "alerting: reading the latest good verdicts failed", slog.Any("error", err))
		}
		for name, b := range states {
			subject := strings.TrimPrefix(name, lastGoodPrefix)
			every := al.expectedEvery(subject)
			var lg lastGood
			if json.Unmarshal(b, &lg) != nil {
				continue
			}
			last := time.Unix(lg.Unix, 0)
			forget := now.Sub(last) > al.cfg.ForgetAfter
			if every <= 0 { // not expected: kept only until forgotten
				if forget {
					s.forgetSubject(ctx, name, b)
				}
				continue
			}
			if now.Sub(last) <= every {
				continue
			}
			a := alert.Alert{Kind: alert.KindAttestationMissed, Severity: alert.SeverityWarning, Subject: subject,
				Reason: "expected_every:" + every.String(), Time: now,
				Message: fmt.Sprintf("%s has not attested successfully since %s (record %d), though expected every %s: check the VM and its agent",
					subject, last.UTC().Format(time.RFC3339), lg.Index, every)}
			if forget {
				a.Reason = "forgotten_after:" + al.cfg.ForgetAfter.String()
				a.Message = fmt.Sprintf("%s has not attested successfully since %s (record %d), though expected every %s, and is no longer tracked (alerts.forget_after %s): if it still exists, check the VM and its agent; its next good verdict tracks it again",
					subject, last.UTC().Format(time.RFC3339), lg.Index, every, al.cfg.ForgetAfter)
			}
			a.Record(al.origin, lg.Index)
			if _, stored := s.emit(ctx, a); stored && forget {
				s.forgetSubject(ctx, name, b)
			}
		}
	}
	if detail := s.collateralExpiring(); detail != "" {
		docs, cnow := s.collateralDocuments()
		for _, d := range docs {
			v := d.Validity
			if v.Immutable || v.NextUpdate.IsZero() || v.NextUpdate.Sub(cnow) >= s.set.CollateralExpiryWarning {
				continue
			}
			s.Emit(ctx, alert.Alert{Kind: alert.KindCollateralExpiring, Severity: alert.SeverityWarning, Subject: d.URL,
				Reason: "next_update:" + v.NextUpdate.UTC().Format(time.RFC3339), Time: now,
				Message: fmt.Sprintf("collateral %s expires at %s and could not be refreshed; verdicts that need it will be contraindicated: check the collateral servers and collateral.fetch",
					d.URL, v.NextUpdate.UTC().Format(time.RFC3339))})
		}
	}
}

// forgetSubject stops tracking a subject (its state name, holding value), unless a good verdict
// has replaced value meanwhile.
func (s *Service) forgetSubject(ctx context.Context, name string, value []byte) {
	if _, err := s.al.cfg.Outbox.DeleteState(ctx, name, value); err != nil {
		s.logger.WarnContext(ctx, "alerting: forgetting a subject failed; retrying at the next check", slog.String("subject", strings.TrimPrefix(name, lastGoodPrefix)), slog.Any("error", err))
	}
}

// AuthFailed notes a failed authentication from remote (an address, never a credential); the
// threshold-th failure within the window raises one auth_failures alert for that burst (until
// the count in the window falls below the threshold again). An alert that could not be stored is
// raised again by the next failure.
func (s *Service) AuthFailed(ctx context.Context, remote string) {
	al := s.al
	if al == nil {
		return
	}
	now := al.clock.Now()
	al.authMu.Lock()
	f := al.authSeen[remote]
	if f == nil {
		if len(al.authSeen) >= maxAuthTracked {
			for r, o := range al.authSeen { // forget the addresses whose failures are all old
				if len(o.times) == 0 || now.Sub(o.times[len(o.times)-1]) > al.cfg.AuthWindow {
					delete(al.authSeen, r)
				}
			}
			if len(al.authSeen) >= maxAuthTracked {
				al.authMu.Unlock()
				return
			}
		}
		f = &authFailures{}
		al.authSeen[remote] = f
	}
	for len(f.times) > 0 && now.Sub(f.times[0]) > al.cfg.AuthWindow {
		f.times = f.times[1:]
	}
	if len(f.times) < al.cfg.AuthThreshold {
		f.alerted = false // below the threshold: the burst alerted before is over
	}
	if len(f.times) <= al.cfg.AuthThreshold { // past the threshold, the count need not grow
		f.times = append(f.times, now)
	}
	fire := len(f.times) >= al.cfg.AuthThreshold && !f.alerted
	f.alerted = f.alerted || fire // taken before the Emit, so that concurrent failures raise one alert
	n, first := len(f.times), f.times[0]
	al.authMu.Unlock()
	if !fire {
		return
	}
	_, stored := s.emit(ctx, alert.Alert{Kind: alert.KindAuthFailures, Severity: alert.SeverityWarning, Subject: remote,
		Reason: "since:" + strconv.FormatInt(first.Unix(), 10), Time: now,
		Message: fmt.Sprintf("%d failed authentications from %s within %s: a misconfigured client or someone guessing API tokens", n, remote, al.cfg.AuthWindow)})
	if !stored {
		al.authMu.Lock()
		f.alerted = false // the next failure raises it again
		al.authMu.Unlock()
	}
}

// alertPolicyChange raises policy_changed for a created or activated policy version.
func (s *Service) alertPolicyChange(ctx context.Context, p Principal, v PolicyVersion, activated bool) {
	if s.al == nil {
		return
	}
	s.Emit(ctx, s.al.policyAlert(p.String(), v, activated))
}

// policyAlert is the policy_changed alert of a created or activated policy version
// (alertPolicyChange, and the re-scan of ScanAlerts for activations: the same alert id).
func (al *alerting) policyAlert(actor string, v PolicyVersion, activated bool) alert.Alert {
	a := alert.Alert{Kind: alert.KindPolicyChanged, Severity: alert.SeverityInfo, Subject: "policy:" + v.ID,
		Reason: "created", Time: v.CreatedAt,
		Message: fmt.Sprintf("%s created policy %q version %d (not active)", actor, v.ID, v.Version)}
	idx := v.CreatedRecord
	if activated {
		a.Severity, a.Reason, a.Time, idx = alert.SeverityWarning, "activated", v.ActivatedAt, v.ActivatedRecord
		a.Message = fmt.Sprintf("%s activated policy %q version %d: verdicts from now on are given under it", actor, v.ID, v.Version)
	}
	a.Record(al.origin, idx)
	return a
}

// alertCollateralUpdate raises tcb_recovery when a recorded collateral update is a TCB recovery
// (collateral.RecoveryOf: an Intel TCB info or QE identity with a higher tcbEvaluationDataNumber),
// naming its collateral_update record. It is called where the record is made rather than from the
// refresher's SubscribeTCBRecovery hook, which does not know the record.
func (s *Service) alertCollateralUpdate(ctx context.Context, u collateral.Update, idx uint64, at time.Time) {
	if s.al == nil {
		return
	}
	r, ok := collateral.RecoveryOf(u)
	if !ok {
		return
	}
	s.Emit(ctx, s.al.tcbRecoveryAlert(r.URL, r.Previous, r.New, r.TCBDate, idx, at))
}

// tcbRecoveryAlert is the tcb_recovery alert of a collateral_update record (alertCollateralUpdate,
// and the re-scan of ScanAlerts from the record's CollateralChange: the same alert id).
func (al *alerting) tcbRecoveryAlert(url string, prev, next uint64, tcbDate time.Time, idx uint64, at time.Time) alert.Alert {
	date := ""
	if !tcbDate.IsZero() {
		date = " (TCB levels dated " + tcbDate.UTC().Format(time.RFC3339) + ")"
	}
	a := alert.Alert{Kind: alert.KindTCBRecovery, Severity: alert.SeverityWarning, Subject: url,
		Reason: fmt.Sprintf("tcb_evaluation_data_number:%d->%d", prev, next), Time: at,
		Message: fmt.Sprintf("Intel published a TCB recovery in %s: tcbEvaluationDataNumber %d → %d%s; platforms not updated will stop being UpToDate: plan the firmware and TD module updates",
			url, prev, next, date)}
	a.Record(al.origin, idx)
	return a
}

// emitKeyRotations raises signing_key_rotated for every record key of the history but the first
// (those are rotations); re-emits at every start dedupe by id. It runs at start-up and, until
// every one of them has been stored, with the periodic checks.
func (s *Service) emitKeyRotations(ctx context.Context) {
	if s.al.keysAlerted.Load() {
		return
	}
	stored := true
	keys := s.d.KeyHistory.Keys()
	for i, k := range keys {
		if i == 0 {
			continue
		}
		kid := hex.EncodeToString(k.ID)
		_, ok := s.emit(ctx, alert.Alert{Kind: alert.KindSigningKeyRotated, Severity: alert.SeverityInfo, Subject: "key:" + kid,
			Reason: "valid_from:" + k.NotBefore.UTC().Format(time.RFC3339), Time: k.NotBefore,
			Message: fmt.Sprintf("record signing key %s is in use from %s (previous key %x); auditors need the new key history (GET /v1/keys)",
				kid, k.NotBefore.UTC().Format(time.RFC3339), keys[i-1].ID)})
		stored = stored && ok
	}
	s.al.keysAlerted.Store(stored)
}

// The re-scan of recorded alerts. The alerts of a record (verdict_contraindicated,
// tcb_recovery, policy_changed activated) are emitted right after the record is appended; a
// crash between the append and the outbox Put, or a Put that fails, would lose them. So the
// alert state keeps the index below which every record's alerts are known to be in the outbox
// (alertScanState), advanced only after those Puts succeeded, and ScanAlerts re-reads the
// records from it — at start-up and with the periodic checks — and emits their alerts again:
// the alert ids make a re-emit of an alert already stored a no-op. Policy creations (info) and
// the bootstrap policy are not re-scanned.
const (
	alertScanState = "scan/alerted_through"
	// bootstrapActor is the actor of the initial policy's records (bootstrapPolicy), which is
	// not alerted.
	bootstrapActor = "system:bootstrap"
	// alertScanBatch bounds the records one ScanAlerts call reads (each is opened and its
	// signature verified); the next call continues.
	alertScanBatch = 10000
)

// alertScan is the value of alertScanState.
type alertScan struct {
	// Next is the first record whose alerts are not known to be stored.
	Next uint64 `json:"next"`
}

// initAlertScan starts the re-scan at the log's current size when the state database has no
// position yet (alerting newly enabled): older records are not alerted again.
func (s *Service) initAlertScan(ctx context.Context) error {
	al := s.al
	if _, ok, err := al.cfg.Outbox.State(ctx, alertScanState); err != nil || ok {
		return err
	}
	cp, err := s.d.Log.Checkpoint(ctx)
	if err != nil {
		return fmt.Errorf("service: alerting: the log's checkpoint: %w", err)
	}
	b, _ := json.Marshal(alertScan{Next: cp.Size})
	return al.cfg.Outbox.SetState(ctx, alertScanState, b)
}

// ScanAlerts emits the alerts of the records from the stored position up to the log's latest
// checkpoint (at most alertScanBatch of them) and advances the position past the records whose
// alerts are all in the outbox. It returns the first error; the records from the one that
// failed are scanned again by the next call.
func (s *Service) ScanAlerts(ctx context.Context) error {
	al := s.al
	if al == nil {
		return nil
	}
	b, ok, err := al.cfg.Outbox.State(ctx, alertScanState)
	if err != nil {
		return fmt.Errorf("alerting: reading the re-scan position: %w", err)
	}
	var pos alertScan
	if ok {
		if err := json.Unmarshal(b, &pos); err != nil {
			return fmt.Errorf("alerting: the stored re-scan position: %w", err)
		}
	}
	al.forgetHandledBelow(pos.Next) // passed by another replica's re-scan
	cp, err := s.d.Log.Checkpoint(ctx)
	if err != nil {
		return fmt.Errorf("alerting: the log's checkpoint: %w", err)
	}
	end := min(cp.Size, pos.Next+alertScanBatch)
	var policies []PolicyVersion
	var scanErr error
	next := pos.Next
	for ; next < end; next++ {
		if scanErr = s.scanRecord(ctx, next, &policies); scanErr != nil {
			break
		}
	}
	if next > pos.Next {
		nb, _ := json.Marshal(alertScan{Next: next})
		if err := al.cfg.Outbox.SetState(context.WithoutCancel(ctx), alertScanState, nb); err != nil && scanErr == nil {
			scanErr = fmt.Errorf("alerting: saving the re-scan position: %w", err)
		}
	}
	return scanErr
}

// scanRecord emits the alerts of record idx, returning an error when one could not be stored.
// A record that does not open is the self-check's business (it is reported there) and skipped.
func (s *Service) scanRecord(ctx context.Context, idx uint64, policies *[]PolicyVersion) error {
	al := s.al
	if al.takeHandled(idx) {
		return nil
	}
	leaf, err := s.d.Log.Entry(ctx, idx)
	if err != nil {
		return fmt.Errorf("alerting: reading record %d: %w", idx, err)
	}
	al.scanOpened.Add(1)
	rec, _, err := evidence.Open(leaf, s.d.KeyHistory)
	if err != nil {
		s.logger.WarnContext(ctx, "alerting: a record does not open; skipped by the alert re-scan (the log self-check reports it)",
			slog.Uint64("log_index", idx), slog.Any("error", err))
		return nil
	}
	var out []alert.Alert
	switch rec.Kind {
	case evidence.KindAttestation:
		var res ear.Result
		if rec.Subject == nil || json.Unmarshal(rec.Result, &res) != nil || res.Status != ear.StatusContraindicated {
			return nil
		}
		out = append(out, al.verdictAlert(rec, idx, &res))
	case evidence.KindCollateralUpdate:
		for i, c := range rec.CollateralUpdate {
			if i >= len(rec.Collateral) || c.TCBEvaluationDataNumber == nil || c.PreviousTCBEvaluationDataNumber == nil ||
				*c.TCBEvaluationDataNumber <= *c.PreviousTCBEvaluationDataNumber {
				continue
			}
			var date time.Time
			if c.TCBDate != nil {
				date = *c.TCBDate
			}
			out = append(out, al.tcbRecoveryAlert(rec.Collateral[i].URL, *c.PreviousTCBEvaluationDataNumber, *c.TCBEvaluationDataNumber, date, idx, rec.Time))
		}
	case evidence.KindPolicyChange:
		if rec.PolicyChange == nil || rec.PolicyChange.Actor == bootstrapActor {
			return nil
		}
		if *policies == nil {
			if *policies, err = s.d.Policies.List(ctx); err != nil {
				return fmt.Errorf("alerting: listing policies for record %d: %w", idx, err)
			}
		}
		for _, v := range *policies {
			if v.ActivatedRecord == idx && !v.ActivatedAt.IsZero() {
				out = append(out, al.policyAlert(v.ActivatedBy, v, true))
			}
		}
	}
	for _, a := range out {
		if _, err := al.disp.Emit(context.WithoutCancel(ctx), a); err != nil {
			return fmt.Errorf("alerting: storing the %s alert of record %d: %w", a.Kind, idx, err)
		}
	}
	return nil
}
