package service

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/proofline/proofline/verifier/ear"
)

// metrics are the service's Prometheus metrics (the HTTP ones are verifier/api's). Labels hold
// only bounded values: platforms, statuses, failure codes, collateral kinds, outcomes.
type metrics struct {
	verdicts      *prometheus.CounterVec   // platform, status
	failures      *prometheus.CounterVec   // code
	verifyLatency *prometheus.HistogramVec // platform
	appendLatency prometheus.Histogram
	appendErrors  prometheus.Counter
	collateralAge *prometheus.GaugeVec // kind
	overloaded    prometheus.Counter
	nonceRejected *prometheus.CounterVec // reason
	queueDepth    prometheus.GaugeFunc
	indexErrors   prometheus.Counter
	// Live collateral; the age and expiry gauges are collateralCollector's.
	collateralFetchErrors *prometheus.CounterVec // vendor, status
	collateralUpdates     *prometheus.CounterVec // kind
	tcbRecoveries         *prometheus.CounterVec // kind
}

func newMetrics(reg prometheus.Registerer, depth func() float64) *metrics {
	buckets := []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5}
	m := &metrics{
		verdicts: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "proofline_verdicts_total", Help: "Attestation verdicts given, by platform and status.",
		}, []string{"platform", "status"}),
		failures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "proofline_verdict_failures_total", Help: "Failed checks in attestation verdicts, by failure code (verifier/README.md).",
		}, []string{"code"}),
		verifyLatency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "proofline_verification_duration_seconds", Help: "Time to appraise one piece of evidence (authenticity and policy), by platform.",
			Buckets: buckets,
		}, []string{"platform"}),
		appendLatency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "proofline_log_append_duration_seconds", Help: "Time until an evidence record is durably in the log.",
			Buckets: buckets,
		}),
		appendErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "proofline_log_append_errors_total", Help: "Evidence records the log did not acknowledge (no answer was given).",
		}),
		collateralAge: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "proofline_collateral_age_seconds", Help: "Age (now minus issue time) of the collateral the latest verification used, by kind.",
		}, []string{"kind"}),
		overloaded: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "proofline_attest_overloaded_total", Help: "Attestation requests refused because the verification queue was full.",
		}),
		nonceRejected: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "proofline_nonce_rejected_total", Help: "Attestations whose nonce was refused, by reason.",
		}, []string{"reason"}),
		queueDepth: prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "proofline_attest_queue_depth", Help: "Attestations running or waiting for a verification slot.",
		}, depth),
		indexErrors: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "proofline_index_errors_total", Help: "Index writes that failed (the index catches up from the log later).",
		}),
		collateralFetchErrors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "proofline_collateral_fetch_errors_total", Help: "Failed collateral fetches, by vendor (intel, amd, other) and status (HTTP status, timeout, network, other; older: a document refused as older than the one held, a possible rollback; not_authentic: one not signed by its vendor through a pinned root, not kept).",
		}, []string{"vendor", "status"}),
		collateralUpdates: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "proofline_collateral_updates_total", Help: "Collateral documents replaced by a different one and recorded (collateral_update records), by kind.",
		}, []string{"kind"}),
		tcbRecoveries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "proofline_collateral_tcb_recoveries_total", Help: "Intel TCB recoveries recorded: TCB info or QE identity replaced by one with a higher tcbEvaluationDataNumber, by kind.",
		}, []string{"kind"}),
	}
	if reg != nil {
		reg.MustRegister(m.verdicts, m.failures, m.verifyLatency, m.appendLatency, m.appendErrors,
			m.collateralAge, m.overloaded, m.nonceRejected, m.queueDepth, m.indexErrors,
			m.collateralFetchErrors, m.collateralUpdates, m.tcbRecoveries)
	}
	return m
}

func (m *metrics) verdict(res *ear.Result, now time.Time) {
	m.verdicts.WithLabelValues(res.Platform, string(res.Status)).Inc()
	for _, f := range res.Failures {
		m.failures.WithLabelValues(string(f.Code)).Inc()
	}
	var infos []ear.CollateralInfo
	switch c := res.Claims.(type) {
	case *ear.TDXClaims:
		infos = c.Collateral
	case *ear.SNPClaims:
		infos = c.Collateral
	}
	for _, ci := range infos {
		if ci.IssuedAt != nil {
			m.collateralAge.WithLabelValues(ci.Kind).Set(now.Sub(*ci.IssuedAt).Seconds())
		}
	}
}
