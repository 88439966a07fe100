package audit

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sort"
	"time"

	"github.com/proofline/proofline/evidence"
	"github.com/proofline/proofline/evidence/index"
	"github.com/proofline/proofline/verifier/ear"
)

// Summary is what the auditor's HTML report (`proofline audit report`) and the auditor web UI
// (GET /v1/audit/summary) show of a stretch of the evidence log: both compute it with a
// Summarizer from the records themselves, so they cannot disagree. Its JSON encoding is what the
// API serves.
type Summary struct {
	// From and To are the window asked for (inclusive); zero when unbounded. Records timed
	// outside it are not counted.
	From time.Time `json:"from,omitzero"`
	To   time.Time `json:"to,omitzero"`
	// First and Last are the times of the first and last record counted (zero: none).
	First time.Time `json:"first,omitzero"`
	Last  time.Time `json:"last,omitzero"`
	// FirstIndex and LastIndex are the lowest and highest log index counted.
	FirstIndex uint64 `json:"first_index"`
	LastIndex  uint64 `json:"last_index"`
	// Records counts the records of the window, Kinds them by kind.
	Records int            `json:"records"`
	Kinds   map[string]int `json:"kinds"`
	// Attestations counts the attestation verdicts, Statuses them by status; Subjects the
	// distinct subjects with a verdict; TestRoots the verdicts given with test vendor roots
	// (test mode: they show the verifier's logic, not genuine hardware; every figure and chart
	// that counts them says so).
	Attestations int            `json:"attestations"`
	Statuses     map[string]int `json:"statuses"`
	Subjects     int            `json:"subjects"`
	TestRoots    int            `json:"test_roots"`
	// KeyReleases counts the key-release decisions by decision (release, deny).
	KeyReleases map[string]int `json:"key_releases"`
	// AccessChanges counts the API token changes (access_change records) by action (create,
	// revoke).
	AccessChanges map[string]int `json:"access_changes"`
	// Bucket is the period of Periods and TCB: "day" (windows up to BucketDays days) or "month"
	// (UTC).
	Bucket string `json:"bucket"`
	// Periods are the attestation verdicts per period, by status, in time order (periods
	// without a verdict are left out).
	Periods []PeriodCount `json:"periods"`
	// Failures counts the verdicts that failed each check, by failure code (verifier/README.md),
	// most frequent first.
	Failures []CodeCount `json:"failures"`
	// TCB counts the verdicts per period by the TCB status the verifier established (TCBLabel).
	TCB       []TCBPeriod `json:"tcb"`
	TCBLabels []string    `json:"tcb_labels"`
	// Changes are the policy changes, collateral updates and access changes, in log order.
	Changes []Change `json:"changes"`
	// Coverage is the reconciliation with an inventory, when one was given.
	Coverage *Coverage `json:"coverage,omitempty"`
}

// PeriodCount is the attestation verdicts of one period.
type PeriodCount struct {
	Period          string `json:"period"`
	Affirming       int    `json:"affirming"`
	Warning         int    `json:"warning"`
	Contraindicated int    `json:"contraindicated"`
	// TestRoots counts the period's verdicts (of any status) given with test vendor roots.
	TestRoots int `json:"test_roots"`
}

// CodeCount is how many verdicts failed with one code.
type CodeCount struct {
	Code  string `json:"code"`
	Count int    `json:"count"`
}

// TCBPeriod counts one period's verdicts by TCB label (Summary.TCBLabels).
type TCBPeriod struct {
	Period string         `json:"period"`
	Counts map[string]int `json:"counts"`
}

// Change is a policy change, a collateral update or an access change: what changed, when and by
// whom.
type Change struct {
	Index uint64    `json:"index"`
	Time  time.Time `json:"time"`
	Kind  string    `json:"kind"`
	// Actor is who made it: the admin of a policy change or an access change, the verifier
	// (name and version) of a collateral update.
	Actor string `json:"actor"`
	What  string `json:"what"`
}

// BucketDays is the longest window Summary counts per day; longer ones are counted per month.
const BucketDays = 92

// TCB labels for verdicts without a TCB claim.
const (
	TCBNoClaims = "no claims"
	TCBUnknown  = "not established"
)

// Summarizer builds a Summary from records added in any order. It is not safe for concurrent use.
type Summarizer struct {
	s        Summary
	subjects map[string]bool
	days     map[string]*PeriodCount
	tcbDays  map[string]map[string]int
	codes    map[string]int
	verdicts []Verdict
	any      bool
}

// NewSummarizer returns a Summarizer for the records timed in [from, to] (zero: unbounded).
func NewSummarizer(from, to time.Time) *Summarizer {
	return &Summarizer{
		s: Summary{From: from.UTC(), To: to.UTC(), Kinds: map[string]int{}, Statuses: map[string]int{}, KeyReleases: map[string]int{}, AccessChanges: map[string]int{},
			Periods: []PeriodCount{}, Failures: []CodeCount{}, TCB: []TCBPeriod{}, TCBLabels: []string{}, Changes: []Change{}},
		subjects: map[string]bool{}, days: map[string]*PeriodCount{}, tcbDays: map[string]map[string]int{}, codes: map[string]int{},
	}
}

// summaryResult is what the summary reads of a recorded attestation result.
type summaryResult struct {
	Status    ear.Status    `json:"status"`
	TestRoots bool          `json:"test_roots"`
	Failures  []ear.Finding `json:"failures"`
	Claims    *struct {
		TCB *struct {
			Status string `json:"status"`
		} `json:"tcb"`
		ReportedTCB *struct {
			Raw string `json:"raw"`
		} `json:"reported_tcb"`
	} `json:"claims"`
}

// TCBLabel names the TCB status a recorded result established: the Intel TCB status of a TDX
// verdict ("TDX UpToDate"), the reported TCB of an SEV-SNP verdict ("SEV-SNP TCB <raw>", which
// the policy's floors judge), TCBNoClaims when the verifier established no claims (the evidence
// did not authenticate), TCBUnknown otherwise.
func TCBLabel(platform string, result []byte) string {
	var r summaryResult
	if json.Unmarshal(result, &r) != nil || r.Claims == nil {
		return TCBNoClaims
	}
	switch {
	case r.Claims.TCB != nil && r.Claims.TCB.Status != "":
		return "TDX " + r.Claims.TCB.Status
	case r.Claims.ReportedTCB != nil && r.Claims.ReportedTCB.Raw != "":
		return "SEV-SNP TCB " + r.Claims.ReportedTCB.Raw
	}
	if platform != "" {
		return platform + " " + TCBUnknown
	}
	return TCBUnknown
}

// Add counts one record (its log index and decoded form). Records timed outside the window are
// ignored; Add reports whether it counted the record.
func (z *Summarizer) Add(index uint64, rec *evidence.Record) bool {
	s := &z.s
	if !s.From.IsZero() && rec.Time.Before(s.From) || !s.To.IsZero() && rec.Time.After(s.To) {
		return false
	}
	t := rec.Time.UTC()
	if !z.any || t.Before(s.First) {
		s.First = t
	}
	if !z.any || t.After(s.Last) {
		s.Last = t
	}
	if !z.any || index < s.FirstIndex {
		s.FirstIndex = index
	}
	if !z.any || index > s.LastIndex {
		s.LastIndex = index
	}
	z.any = true
	s.Records++
	s.Kinds[string(rec.Kind)]++
	switch rec.Kind {
	case evidence.KindAttestation:
		z.addVerdict(index, t, rec)
	case evidence.KindKeyRelease:
		if rec.KeyRelease != nil {
			s.KeyReleases[string(rec.KeyRelease.Decision)]++
		}
	case evidence.KindPolicyChange:
		c := Change{Index: index, Time: t, Kind: string(rec.Kind)}
		if rec.PolicyChange != nil {
			c.Actor = rec.PolicyChange.Actor
		}
		if rec.Policy != nil {
			c.What = fmt.Sprintf("policy %q is now sha256:%s", rec.Policy.ID, shortDigest(rec.Policy.Digest))
			if rec.PolicyChange != nil && rec.PolicyChange.Previous != nil {
				c.What += fmt.Sprintf(" (was sha256:%s)", shortDigest(rec.PolicyChange.Previous.Digest))
			} else {
				c.What += " (first version)"
			}
		}
		s.Changes = append(s.Changes, c)
	case evidence.KindCollateralUpdate:
		c := Change{Index: index, Time: t, Kind: string(rec.Kind), Actor: rec.Verifier.Name + " " + rec.Verifier.Version}
		c.What = fmt.Sprintf("%d collateral document(s) replaced", len(rec.Collateral))
		for i, ref := range rec.Collateral {
			if i == 3 {
				c.What += fmt.Sprintf("; and %d more", len(rec.Collateral)-3)
				break
			}
			c.What += fmt.Sprintf("; %s %s", ref.Kind, ref.URL)
			if i < len(rec.CollateralUpdate) && rec.CollateralUpdate[i].TCBEvaluationDataNumber != nil {
				c.What += fmt.Sprintf(" (tcbEvaluationDataNumber %d)", *rec.CollateralUpdate[i].TCBEvaluationDataNumber)
			}
		}
		s.Changes = append(s.Changes, c)
	case evidence.KindAccessChange:
		c := Change{Index: index, Time: t, Kind: string(rec.Kind)}
		if a := rec.AccessChange; a != nil {
			s.AccessChanges[string(a.Action)]++
			c.Actor = a.Actor
			switch a.Action {
			case evidence.AccessCreate:
				c.What = fmt.Sprintf("API token %s created for %s:%s, expiring %s", a.TokenID, a.Role, a.Name, a.ExpiresAt.UTC().Format(time.RFC3339))
			case evidence.AccessRevoke:
				c.What = fmt.Sprintf("API token %s of %s:%s revoked", a.TokenID, a.Role, a.Name)
			default: // the record's validation allows no other action
				c.What = fmt.Sprintf("API token %s of %s:%s: %s", a.TokenID, a.Role, a.Name, a.Action)
			}
		}
		s.Changes = append(s.Changes, c)
	}
	return true
}

func shortDigest(d evidence.Digest) string { return d.String()[:16] + "…" }

func (z *Summarizer) addVerdict(index uint64, t time.Time, rec *evidence.Record) {
	s := &z.s
	var r summaryResult
	if err := json.Unmarshal(rec.Result, &r); err != nil || r.Status == "" {
		// The record signature covers the result, so this is a verifier defect: count it as
		// the safe side, with a code that says what happened.
		r = summaryResult{Status: ear.StatusContraindicated, Failures: []ear.Finding{{Code: "result_unreadable"}}}
	}
	s.Attestations++
	s.Statuses[string(r.Status)]++
	if r.TestRoots {
		s.TestRoots++
	}
	subject, platform := "", ""
	if rec.Subject != nil {
		subject, platform = rec.Subject.ID, rec.Subject.Platform
	}
	z.subjects[subject] = true
	day := t.Format(time.DateOnly)
	pc := z.days[day]
	if pc == nil {
		pc = &PeriodCount{Period: day}
		z.days[day] = pc
	}
	if r.TestRoots {
		pc.TestRoots++
	}
	switch r.Status {
	case ear.StatusAffirming:
		pc.Affirming++
	case ear.StatusWarning:
		pc.Warning++
	default:
		pc.Contraindicated++
	}
	seen := map[ear.Code]bool{}
	for _, f := range r.Failures {
		if !seen[f.Code] {
			seen[f.Code] = true
			z.codes[string(f.Code)]++
		}
	}
	label := TCBLabel(platform, rec.Result)
	if z.tcbDays[day] == nil {
		z.tcbDays[day] = map[string]int{}
	}
	z.tcbDays[day][label]++
	z.verdicts = append(z.verdicts, Verdict{Index: index, Time: t, Subject: subject, Status: r.Status})
}

// Verdicts returns the attestation verdicts counted, for Reconcile.
func (z *Summarizer) Verdicts() []Verdict { return slices.Clone(z.verdicts) }

// Summary returns the summary of the records added so far, with cov (nil: no inventory).
func (z *Summarizer) Summary(cov *Coverage) *Summary {
	s := z.s // a copy: the Summarizer may go on
	s.Subjects = len(z.subjects)
	s.Coverage = cov
	from, to := s.From, s.To
	if from.IsZero() {
		from = s.First
	}
	if to.IsZero() {
		to = s.Last
	}
	s.Bucket = "day"
	period := func(day string) string { return day }
	if to.Sub(from) > BucketDays*24*time.Hour {
		s.Bucket = "month"
		period = func(day string) string { return day[:7] }
	}
	byPeriod := map[string]*PeriodCount{}
	tcb := map[string]map[string]int{}
	labels := map[string]bool{}
	for day, pc := range z.days {
		p := period(day)
		acc := byPeriod[p]
		if acc == nil {
			acc = &PeriodCount{Period: p}
			byPeriod[p] = acc
		}
		acc.Affirming += pc.Affirming
		acc.Warning += pc.Warning
		acc.Contraindicated += pc.Contraindicated
		acc.TestRoots += pc.TestRoots
		if tcb[p] == nil {
			tcb[p] = map[string]int{}
		}
		for l, n := range z.tcbDays[day] {
			tcb[p][l] += n
			labels[l] = true
		}
	}
	s.Periods = make([]PeriodCount, 0, len(byPeriod))
	for _, pc := range byPeriod {
		s.Periods = append(s.Periods, *pc)
	}
	sort.Slice(s.Periods, func(i, j int) bool { return s.Periods[i].Period < s.Periods[j].Period })
	s.TCB = make([]TCBPeriod, 0, len(tcb))
	for p, counts := range tcb {
		s.TCB = append(s.TCB, TCBPeriod{Period: p, Counts: counts})
	}
	sort.Slice(s.TCB, func(i, j int) bool { return s.TCB[i].Period < s.TCB[j].Period })
	s.TCBLabels = make([]string, 0, len(labels))
	for l := range labels {
		s.TCBLabels = append(s.TCBLabels, l)
	}
	sort.Strings(s.TCBLabels)
	s.Failures = make([]CodeCount, 0, len(z.codes))
	for c, n := range z.codes {
		s.Failures = append(s.Failures, CodeCount{Code: c, Count: n})
	}
	sort.Slice(s.Failures, func(i, j int) bool {
		if s.Failures[i].Count != s.Failures[j].Count {
			return s.Failures[i].Count > s.Failures[j].Count
		}
		return s.Failures[i].Code < s.Failures[j].Code
	})
	s.Changes = slices.Clone(s.Changes)
	sort.SliceStable(s.Changes, func(i, j int) bool { return s.Changes[i].Index < s.Changes[j].Index })
	s.Kinds, s.Statuses, s.KeyReleases, s.AccessChanges = cloneMap(s.Kinds), cloneMap(s.Statuses), cloneMap(s.KeyReleases), cloneMap(s.AccessChanges)
	return &s
}

func cloneMap(m map[string]int) map[string]int {
	out := make(map[string]int, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

// ReconcileVerdicts reconciles verdicts (Summarizer.Verdicts) with an inventory over the window
// [from, to] (zero: the verdicts' first and last times), as Reconcile does for a verified bundle.
func ReconcileVerdicts(verdicts []Verdict, from, to time.Time, inv *Inventory) *Coverage {
	rep := &Report{Manifest: &Manifest{}, Verdicts: verdicts}
	if !from.IsZero() {
		rep.Manifest.From = &from
	}
	if !to.IsZero() {
		rep.Manifest.To = &to
	}
	return Reconcile(rep, inv)
}

// LogRecords is what SummarizeLog needs of a verifier service (verifier/service.Service): its
// index, to find the records of a window, and the records themselves, read from the log and
// opened against the key history.
type LogRecords interface {
	Records(ctx context.Context, q index.Query) ([]index.Entry, error)
	Record(ctx context.Context, idx uint64) ([]byte, *evidence.Record, error)
}

// MaxSummaryRecords bounds the records SummarizeLog reads.
const MaxSummaryRecords = 50000

// ErrWindowTooLarge: the window holds more than MaxSummaryRecords records.
var ErrWindowTooLarge = fmt.Errorf("audit: the window holds more than %d records: ask for a shorter one, or export it (proofline audit export) and run proofline audit report", MaxSummaryRecords)

// ErrWindowInverted: the window ends before it starts.
var ErrWindowInverted = errors.New("audit: the window ends before it starts")

// SummarizeLog summarises the records of a live log timed in [from, to] (zero: unbounded), for
// the auditor web UI. The index only finds them: each record is read and verified by src, and
// one that does not verify fails the summary (the error is src's). The index may trail the log
// by the records of the last moments.
func SummarizeLog(ctx context.Context, src LogRecords, from, to time.Time) (*Summary, error) {
	if !from.IsZero() && !to.IsZero() && to.Before(from) {
		return nil, ErrWindowInverted
	}
	z := NewSummarizer(from, to)
	q := index.Query{From: from, Limit: index.MaxLimit}
	if !to.IsZero() {
		q.To = to.Add(time.Second) // the index's To is exclusive, record times whole seconds
	}
	n := 0
	for {
		es, err := src.Records(ctx, q)
		if err != nil {
			return nil, err
		}
		for _, e := range es {
			if n++; n > MaxSummaryRecords {
				return nil, ErrWindowTooLarge
			}
			_, rec, err := src.Record(ctx, e.LogIndex)
			if err != nil {
				return nil, err
			}
			z.Add(e.LogIndex, rec)
		}
		if len(es) < index.MaxLimit {
			return z.Summary(nil), nil
		}
		q.Start = es[len(es)-1].LogIndex + 1
	}
}
