// Package alert tells people what the verifier finds: contraindicated verdicts, VMs that stopped
// attesting, evidence log integrity failures, collateral about to expire, TCB recoveries, policy
// changes, signing key rotations and repeated authentication failures.
//
// An Alert has a stable JSON schema (README.md is the contract for receivers). Emit writes it to
// an Outbox in the state database — durable before Emit returns — once per configured
// Destination that accepts it; a Deliverer sends what is due, retries failures with capped
// exponential backoff and jitter, and resumes after a restart from what the outbox holds.
// Delivery is at least once: an alert's ID is derived from what it is about, so a receiver
// deduplicates re-deliveries and re-emits of the same event by ID.
//
// Two destinations are built in: a signed webhook (Webhook: JSON POST with an HMAC-SHA256
// signature header) and syslog (Syslog: RFC 5424 over UDP or TCP, the message in CEF for SIEMs).
package alert

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"strconv"
	"time"
)

// Kind says what an alert is about. Its values are stable strings (README.md).
type Kind string

// The kinds of alert.
const (
	// KindContraindicated: an attestation verdict was contraindicated. Record: the attestation.
	KindContraindicated Kind = "verdict_contraindicated"
	// KindAttestationMissed: a subject did not attest successfully within its expected interval.
	// Record: its last successful attestation.
	KindAttestationMissed Kind = "attestation_missed"
	// KindLogIntegrity: the evidence log failed its self-check (the checks of `proofline log
	// fsck`, or consistency with the last verified checkpoint). Record: the first bad leaf, when
	// known.
	KindLogIntegrity Kind = "log_integrity_failure"
	// KindCollateralExpiring: a vendor collateral document nears or passed its nextUpdate and
	// could not be refreshed. Subject: its URL.
	KindCollateralExpiring Kind = "collateral_expiring"
	// KindTCBRecovery: Intel published TCB info or QE identity with a higher
	// tcbEvaluationDataNumber (a TCB recovery). Record: the collateral_update record.
	KindTCBRecovery Kind = "tcb_recovery"
	// KindPolicyChanged: a policy version was created or activated. Record: the policy_change.
	KindPolicyChanged Kind = "policy_changed"
	// KindSigningKeyRotated: a new record signing key entered the key history. Subject: its id.
	KindSigningKeyRotated Kind = "signing_key_rotated"
	// KindAuthFailures: repeated authentication failures from one remote address. Subject: it.
	KindAuthFailures Kind = "auth_failures"
)

// Kinds lists every kind, in the order of README.md.
var Kinds = []Kind{KindContraindicated, KindAttestationMissed, KindLogIntegrity, KindCollateralExpiring,
	KindTCBRecovery, KindPolicyChanged, KindSigningKeyRotated, KindAuthFailures}

// Known reports whether k is one of Kinds.
func (k Kind) Known() bool {
	for _, x := range Kinds {
		if x == k {
			return true
		}
	}
	return false
}

// Severity orders alerts: info < warning < critical.
type Severity string

// The severities.
const (
	SeverityInfo     Severity = "info"
	SeverityWarning  Severity = "warning"
	SeverityCritical Severity = "critical"
)

// Rank is the severity's order (info 1, warning 2, critical 3; 0 for an unknown severity).
func (s Severity) Rank() int {
	switch s {
	case SeverityInfo:
		return 1
	case SeverityWarning:
		return 2
	case SeverityCritical:
		return 3
	}
	return 0
}

// CEF is the severity on CEF's 0–10 scale (info 3, warning 6, critical 10).
func (s Severity) CEF() int {
	switch s {
	case SeverityInfo:
		return 3
	case SeverityWarning:
		return 6
	case SeverityCritical:
		return 10
	}
	return 0
}

// Alert is one event to tell people about. The JSON form is the webhook body and the contract of
// README.md: fields are only ever added.
type Alert struct {
	// ID is stable: SHA-256 over the kind, the record (log origin and index) or else the subject,
	// the reason and the incident (if any), first 16 bytes in hex. Re-emits of the same event
	// have the same ID.
	ID       string   `json:"id"`
	Kind     Kind     `json:"kind"`
	Severity Severity `json:"severity"`
	// Subject is who or what the alert is about: a record subject ("agent:web-1"), a collateral
	// URL, a remote address, a key id, or "log" for the evidence log.
	Subject string `json:"subject"`
	// LogOrigin and RecordIndex name the evidence record the alert is about, if any.
	LogOrigin   string  `json:"log_origin,omitempty"`
	RecordIndex *uint64 `json:"record_index,omitempty"`
	// Reason is a short machine-readable code: a failure code of verifier/README.md, an fsck
	// invariant, "next_update:<time>"….
	Reason string `json:"reason"`
	// Incident tells one occurrence of a condition that can end and come back from the next,
	// where kind, record, subject and reason may be the same (the same leaf of the log tampered
	// with again after a repair): the same for every re-emit while the condition lasts, another
	// once it has ended. Empty for alerts about one event, whose ids it then leaves unchanged.
	Incident string `json:"incident,omitempty"`
	// Message says what happened and what to do, for people.
	Message string `json:"message"`
	// Time is when the event happened (the record's time, or when it was found).
	Time time.Time `json:"time"`
}

// Record sets the evidence record the alert is about.
func (a *Alert) Record(origin string, index uint64) {
	a.LogOrigin, a.RecordIndex = origin, &index
}

// Finalize checks the alert and sets its ID.
func (a *Alert) Finalize() error {
	switch {
	case !a.Kind.Known():
		return fmt.Errorf("alert: unknown kind %q", a.Kind)
	case a.Severity.Rank() == 0:
		return fmt.Errorf("alert: unknown severity %q", a.Severity)
	case a.Subject == "" && a.RecordIndex == nil:
		return fmt.Errorf("alert: a %s alert names neither a subject nor a record", a.Kind)
	case a.Time.IsZero():
		return fmt.Errorf("alert: a %s alert has no time", a.Kind)
	}
	a.Time = a.Time.UTC()
	a.ID = ID(a.Kind, a.LogOrigin, a.RecordIndex, a.Subject, a.Reason, a.Incident)
	return nil
}

// ID derives an alert's id from what it is about: the kind, the record (origin and index) if
// any, else the subject, the reason, and the incident if not empty (an alert without one has
// the id it had before incidents were added).
func ID(k Kind, origin string, index *uint64, subject, reason, incident string) string {
	about := "subject\x00" + subject
	if index != nil {
		about = "record\x00" + origin + "\x00" + strconv.FormatUint(*index, 10)
	}
	in := "proofline-alert/v1\x00" + string(k) + "\x00" + about + "\x00" + reason
	if incident != "" {
		in += "\x00incident\x00" + incident
	}
	h := sha256.Sum256([]byte(in))
	return hex.EncodeToString(h[:16])
}

// Marshal is the alert's JSON, the webhook body.
func (a *Alert) Marshal() ([]byte, error) { return json.Marshal(a) }
