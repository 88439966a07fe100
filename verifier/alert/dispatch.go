package alert

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	mrand "math/rand/v2"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Destination delivers one alert. Deliver returns nil only once the receiver has it; any error
// means "try again later". body is the alert's JSON as stored.
type Destination interface {
	Name() string
	Deliver(ctx context.Context, a *Alert, body []byte) error
}

// Route is a destination and the alerts it wants.
type Route struct {
	Destination Destination
	// Kinds, if not empty, are the only kinds sent.
	Kinds []Kind
	// MinSeverity, if set, drops alerts below it.
	MinSeverity Severity
}

func (r Route) accepts(a *Alert) bool {
	if len(r.Kinds) > 0 && !slices.Contains(r.Kinds, a.Kind) {
		return false
	}
	return a.Severity.Rank() >= r.MinSeverity.Rank()
}

// Clock is the dispatcher's time: collateral.SystemClock and collateraltest.Clock implement it.
type Clock interface {
	Now() time.Time
	// Sleep waits d on this clock, or until ctx is done and then returns ctx.Err().
	Sleep(ctx context.Context, d time.Duration) error
}

// Config configures a Dispatcher.
type Config struct {
	// Outbox keeps alerts until delivered. Required.
	Outbox *Outbox
	Routes []Route
	// Clock; required (collateral.SystemClock{} in production).
	Clock  Clock
	Logger *slog.Logger
	// Registerer receives the metrics; nil registers none.
	Registerer prometheus.Registerer
	// Backoff is the wait after the first failed attempt; it doubles per attempt up to
	// MaxBackoff, with jitter (a random half of it). Defaults 10s and 15m.
	Backoff, MaxBackoff time.Duration
	// Lease is how long a replica holds the rows it is sending. Default 5m. A pass claims at
	// most as many rows as it can send within the lease (ClaimLimit): each delivery is cut off
	// at SendTimeout, so a lease never lapses while its row is still to be sent (which would let
	// another replica send it too).
	Lease time.Duration
	// SendTimeout bounds one delivery attempt (its context's deadline). Default 10s, the
	// destinations' own default timeout.
	SendTimeout time.Duration
	// Poll is the longest wait between passes (rows due later, or left by another replica).
	// Default 1m.
	Poll time.Duration
	// Jitter returns a number in [0, 1); default math/rand/v2.Float64.
	Jitter func() float64
}

// Dispatcher emits alerts into the outbox and delivers them.
type Dispatcher struct {
	cfg   Config
	owner string
	names []string
	log   *slog.Logger
	// nudges wake each route's loop (Run) when Emit stores an alert for it.
	nudges []chan struct{}

	emitted    *prometheus.CounterVec // kind, severity
	deliveries *prometheus.CounterVec // destination (webhook, syslog), outcome
	pending    prometheus.Gauge
}

// New checks cfg and returns a Dispatcher.
func New(cfg Config) (*Dispatcher, error) {
	if cfg.Outbox == nil || cfg.Clock == nil {
		return nil, errors.New("alert: Config.Outbox and Config.Clock are required")
	}
	if cfg.Backoff == 0 {
		cfg.Backoff = 10 * time.Second
	}
	if cfg.MaxBackoff == 0 {
		cfg.MaxBackoff = 15 * time.Minute
	}
	if cfg.Lease == 0 {
		cfg.Lease = 5 * time.Minute
	}
	if cfg.SendTimeout == 0 {
		cfg.SendTimeout = 10 * time.Second
	}
	if cfg.SendTimeout < 0 || cfg.Lease < 2*cfg.SendTimeout {
		return nil, fmt.Errorf("alert: Config.Lease (%v) must be at least twice Config.SendTimeout (%v)", cfg.Lease, cfg.SendTimeout)
	}
	if cfg.Poll == 0 {
		cfg.Poll = time.Minute
	}
	if cfg.Jitter == nil {
		cfg.Jitter = mrand.Float64
	}
	d := &Dispatcher{cfg: cfg, log: cfg.Logger}
	if d.log == nil {
		d.log = slog.New(slog.DiscardHandler)
	}
	seen := map[string]bool{}
	for _, r := range cfg.Routes {
		n := r.Destination.Name()
		if seen[strings.ToLower(n)] {
			return nil, fmt.Errorf("alert: destination %s is configured twice (names differing only in case are the same)", n)
		}
		seen[strings.ToLower(n)] = true
		d.names = append(d.names, n)
		d.nudges = append(d.nudges, make(chan struct{}, 1))
	}
	var b [8]byte
	rand.Read(b[:])
	d.owner = hex.EncodeToString(b[:])
	d.emitted = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "proofline_alerts_emitted_total", Help: "Alerts emitted, by kind and severity (a re-emit of an alert already in the outbox for every destination is not counted).",
	}, []string{"kind", "severity"})
	d.deliveries = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "proofline_alert_deliveries_total", Help: "Alert delivery attempts, by destination type (webhook, syslog) and outcome (delivered, failed).",
	}, []string{"destination", "outcome"})
	d.pending = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "proofline_alert_outbox_pending", Help: "Alerts in the outbox not yet delivered to a configured destination (as of the latest delivery pass).",
	})
	for _, typ := range []string{"webhook", "syslog"} { // exported at 0, for rules and dashboards
		d.deliveries.WithLabelValues(typ, "delivered")
		d.deliveries.WithLabelValues(typ, "failed")
	}
	if cfg.Registerer != nil {
		cfg.Registerer.MustRegister(d.emitted, d.deliveries, d.pending)
	}
	return d, nil
}

// Emit finalizes a, stores it in the outbox for every route that accepts it, and logs it; it
// returns once that is durable. The same alert emitted again (same ID) is stored once per
// destination: a re-emit that finds every row already there (the periodic checks re-emit what
// still holds) is logged at Debug and not counted. An error means the alert may be lost: the
// caller logs it.
func (d *Dispatcher) Emit(ctx context.Context, a Alert) (*Alert, error) {
	if err := a.Finalize(); err != nil {
		return nil, err
	}
	var dests []string
	var routes []int
	for i, r := range d.cfg.Routes {
		if r.accepts(&a) {
			dests = append(dests, r.Destination.Name())
			routes = append(routes, i)
		}
	}
	added := 0
	if len(dests) > 0 {
		n, err := d.cfg.Outbox.Put(ctx, &a, dests, d.cfg.Clock.Now())
		if err != nil {
			return nil, err
		}
		added = n
	}
	attrs := []any{slog.String("alert_id", a.ID), slog.String("kind", string(a.Kind)), slog.String("severity", string(a.Severity)),
		slog.String("subject", a.Subject), slog.String("reason", a.Reason)}
	if a.RecordIndex != nil {
		attrs = append(attrs, slog.Uint64("log_index", *a.RecordIndex))
	}
	if len(dests) > 0 && added == 0 {
		d.log.DebugContext(ctx, "alert re-emitted, already in the outbox: "+a.Message, attrs...)
		return &a, nil
	}
	d.emitted.WithLabelValues(string(a.Kind), string(a.Severity)).Inc()
	level := slog.LevelInfo // the alert goes out through its destinations; the log keeps a copy
	if a.Severity == SeverityCritical {
		level = slog.LevelWarn
	}
	d.log.Log(ctx, level, "alert: "+a.Message, attrs...)
	for _, i := range routes {
		select {
		case d.nudges[i] <- struct{}{}:
		default:
		}
	}
	return &a, nil
}

// backoff is the wait after the given number of failed attempts (≥ 1): Backoff·2^(n-1), capped,
// then a random value in its upper half.
func (d *Dispatcher) backoff(n int) time.Duration {
	w := d.cfg.Backoff
	for i := 1; i < n && w < d.cfg.MaxBackoff; i++ {
		w *= 2
	}
	w = min(w, d.cfg.MaxBackoff)
	return w/2 + time.Duration(d.cfg.Jitter()*float64(w/2))
}

// maxClaim is the most rows one claim takes.
const maxClaim = 32

// ClaimLimit is how many rows one claim takes: as many as can be sent one after another, each
// within SendTimeout, before the lease runs out, less a margin (a tenth of the lease, at most
// 30s) for the outbox writes; at most 32 and at least 1. With the defaults (5m, 10s): 27.
func (d *Dispatcher) ClaimLimit() int {
	margin := min(d.cfg.Lease/10, 30*time.Second)
	return max(1, min(maxClaim, int((d.cfg.Lease-margin)/d.cfg.SendTimeout)))
}

// RunOnce runs one delivery pass of every destination, all at once, and returns how many
// deliveries succeeded and failed. It returns when every destination's pass has ended (see
// deliverRoute): a destination that fails or hangs costs its own pass one attempt of at most
// SendTimeout, and never delays another's.
func (d *Dispatcher) RunOnce(ctx context.Context) (delivered, failed int) {
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, r := range d.cfg.Routes {
		wg.Go(func() {
			ok, bad, _ := d.deliverRoute(ctx, r)
			mu.Lock()
			delivered, failed = delivered+ok, failed+bad
			mu.Unlock()
		})
	}
	wg.Wait()
	d.updatePending(ctx)
	return delivered, failed
}

// deliverRoute is one delivery pass of r's destination: it claims and sends the rows due now,
// batch after batch, until none is due or an attempt fails. After a failure the destination is
// not tried again in this pass (a receiver that is down or hangs would fail the rest too, each
// after SendTimeout): the rows claimed after the failed one are released untried, and retry is
// when the failed row is due again (zero when nothing failed).
func (d *Dispatcher) deliverRoute(ctx context.Context, r Route) (delivered, failed int, retry time.Time) {
	name := r.Destination.Name()
	typ, _, _ := strings.Cut(name, ":")
	for ctx.Err() == nil {
		claimed := d.cfg.Clock.Now()
		es, err := d.cfg.Outbox.Claim(ctx, name, d.owner, claimed, d.cfg.Lease, d.ClaimLimit())
		if err != nil {
			d.log.WarnContext(ctx, "alert outbox: claiming alerts failed", slog.String("destination", name), slog.Any("error", err))
			return delivered, failed, retry
		}
		if len(es) == 0 {
			return delivered, failed, retry
		}
		for i, e := range es {
			if d.cfg.Clock.Now().Add(d.cfg.SendTimeout).After(claimed.Add(d.cfg.Lease)) {
				// The lease would lapse during this send (a slow clock step, or outbox writes
				// slower than the margin): release the rest, to be claimed again at once.
				d.release(ctx, name, es[i:])
				break
			}
			sctx, cancel := context.WithTimeout(ctx, d.cfg.SendTimeout)
			err := r.Destination.Deliver(sctx, &e.Alert, e.Body)
			cancel()
			if ctx.Err() != nil {
				// Stopping: this attempt's outcome is unknown, not a failure of the receiver.
				// Release it and the rest so that the next start sends them at once (a receiver
				// deduplicates by alert id if this one arrived).
				d.release(ctx, name, es[i:])
				return delivered, failed, retry
			}
			now := d.cfg.Clock.Now()
			if err == nil {
				delivered++
				d.deliveries.WithLabelValues(typ, "delivered").Inc()
				if err := d.cfg.Outbox.Delivered(ctx, e, d.owner, now); err != nil {
					d.log.WarnContext(ctx, "alert outbox: marking an alert delivered failed (it may be sent again)", slog.String("alert_id", e.Alert.ID), slog.Any("error", err))
				}
				continue
			}
			failed++
			d.deliveries.WithLabelValues(typ, "failed").Inc()
			retry = now.Add(d.backoff(e.Attempts + 1))
			d.log.WarnContext(ctx, "alert delivery failed; retrying later", slog.String("alert_id", e.Alert.ID), slog.String("destination", name),
				slog.Int("attempt", e.Attempts+1), slog.Time("next_attempt", retry), slog.Any("error", err))
			if err := d.cfg.Outbox.Failed(ctx, e, d.owner, retry, err); err != nil {
				d.log.WarnContext(ctx, "alert outbox: recording a failed delivery failed", slog.String("alert_id", e.Alert.ID), slog.Any("error", err))
			}
			d.release(ctx, name, es[i+1:])
			return delivered, failed, retry
		}
	}
	return delivered, failed, retry
}

// releaseTimeout bounds the release of claimed alerts, which also runs while the dispatcher
// stops: an outbox that does not answer must not hold the shutdown up.
const releaseTimeout = 5 * time.Second

// release gives up this dispatcher's claim on es, untried, so that they can be claimed again at
// once rather than when their lease ends.
func (d *Dispatcher) release(ctx context.Context, name string, es []Entry) {
	if len(es) == 0 {
		return
	}
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), releaseTimeout)
	defer cancel()
	if err := d.cfg.Outbox.Release(rctx, es, d.owner); err != nil {
		d.log.WarnContext(ctx, "alert outbox: releasing untried alerts failed (they are claimed again when their lease ends)", slog.String("destination", name), slog.Any("error", err))
	}
}

// updatePending sets the pending gauge from the outbox.
func (d *Dispatcher) updatePending(ctx context.Context) {
	if n, err := d.cfg.Outbox.Pending(ctx, d.names); err == nil {
		d.pending.Set(float64(n))
	}
}

// Run delivers until ctx is done. Each destination has its own loop, so that one that is down or
// slow never holds up another: a pass at once, then whenever an alert for it is emitted, a row
// falls due, or Poll has passed (on the Clock). After a failed attempt the loop waits until that
// row is due again (at most Poll), not for the rows due now: a receiver that is down is tried
// once per backoff, not once per row.
func (d *Dispatcher) Run(ctx context.Context) {
	var wg sync.WaitGroup
	for i, r := range d.cfg.Routes {
		wg.Go(func() { d.runRoute(ctx, r, d.nudges[i]) })
	}
	wg.Wait()
}

func (d *Dispatcher) runRoute(ctx context.Context, r Route, nudge chan struct{}) {
	name := []string{r.Destination.Name()}
	for ctx.Err() == nil {
		_, _, retry := d.deliverRoute(ctx, r)
		d.updatePending(ctx)
		if !retry.IsZero() {
			// The receiver just failed: alerts emitted meanwhile wait for the retry too.
			d.cfg.Clock.Sleep(ctx, min(d.cfg.Poll, max(retry.Sub(d.cfg.Clock.Now()), time.Second)))
			select {
			case <-nudge:
			default:
			}
			continue
		}
		wait := d.cfg.Poll
		if next, ok, err := d.cfg.Outbox.NextDue(ctx, name); err == nil && ok {
			wait = min(wait, max(next.Sub(d.cfg.Clock.Now()), time.Second))
		}
		select {
		case <-nudge:
			continue
		default:
		}
		sctx, cancel := context.WithCancel(ctx)
		go func() {
			select {
			case <-nudge:
				cancel()
			case <-sctx.Done():
			}
		}()
		d.cfg.Clock.Sleep(sctx, wait)
		cancel()
	}
}
