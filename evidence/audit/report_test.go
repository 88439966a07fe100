package audit

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"html"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/proofline/proofline/evidence"
	"github.com/proofline/proofline/evidence/index"
	"github.com/proofline/proofline/verifier/ear"
)

var t0 = time.Date(2026, 3, 1, 10, 0, 0, 0, time.UTC)

// verdictRecord is an attestation record with a result of the given status, failure codes and
// claims JSON (nil: none).
func verdictRecord(t *testing.T, at time.Time, subject, platform string, status ear.Status, claims string, codes ...ear.Code) *evidence.Record {
	t.Helper()
	r := map[string]any{"status": status, "test_roots": true, "failures": []ear.Finding{}}
	for _, c := range codes {
		r["failures"] = append(r["failures"].([]ear.Finding), ear.Finding{Code: c, Check: "x", Message: "m"})
	}
	if claims != "" {
		r["claims"] = json.RawMessage(claims)
	}
	b, err := json.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	return &evidence.Record{Version: evidence.Version, Kind: evidence.KindAttestation, Time: at, Subject: &evidence.Subject{ID: subject, Platform: platform}, Result: b}
}

// knownRecords is a small log: verdicts over two days, a policy change, a collateral update, a
// key release, and one record outside the window.
func knownRecords(t *testing.T) []*evidence.Record {
	tdxOK := `{"tcb":{"status":"UpToDate"}}`
	tdxOld := `{"tcb":{"status":"OutOfDate"}}`
	snp := `{"reported_tcb":{"raw":"0x0300000000000a73"}}`
	prev := evidence.Digest{1}
	eval := uint64(17)
	return []*evidence.Record{
		{Version: evidence.Version, Kind: evidence.KindPolicyChange, Time: t0, Policy: &evidence.PolicyRef{ID: "prod", Digest: evidence.Digest{2}},
			PolicyChange: &evidence.PolicyChange{Actor: "alice", Previous: &evidence.PolicyRef{ID: "prod", Digest: prev}}},
		verdictRecord(t, t0.Add(time.Minute), "agent:a", "tdx", ear.StatusAffirming, tdxOK),
		verdictRecord(t, t0.Add(2*time.Minute), "agent:b", "sev-snp", ear.StatusAffirming, snp),
		verdictRecord(t, t0.Add(3*time.Minute), "agent:a", "tdx", ear.StatusContraindicated, tdxOld, "tdx_tcb_status", "tdx_debug", "tdx_debug"),
		verdictRecord(t, t0.Add(24*time.Hour), "agent:a", "tdx", ear.StatusWarning, tdxOK),
		verdictRecord(t, t0.Add(24*time.Hour+time.Minute), "agent:b", "sev-snp", ear.StatusContraindicated, "", "snp_signature"),
		verdictRecord(t, t0.Add(24*time.Hour+2*time.Minute), "agent:c", "tdx", ear.StatusContraindicated, "", "nonce_mismatch", "tdx_debug"),
		{Version: evidence.Version, Kind: evidence.KindCollateralUpdate, Time: t0.Add(25 * time.Hour), Verifier: evidence.Verifier{Name: "proofline", Version: "v1"},
			Collateral:       []evidence.CollateralRef{{Kind: "tcb_info", URL: "https://pcs.example/tcb", Digest: evidence.Digest{3}}},
			CollateralUpdate: []evidence.CollateralChange{{TCBEvaluationDataNumber: &eval}}},
		{Version: evidence.Version, Kind: evidence.KindKeyRelease, Time: t0.Add(25 * time.Hour), KeyRelease: &evidence.KeyRelease{Decision: evidence.DecisionDeny}},
		verdictRecord(t, t0.Add(72*time.Hour), "agent:a", "tdx", ear.StatusAffirming, tdxOK), // after the window
	}
}

// The summary counts a known set of records: verdicts per day by status, failures by code (once
// per verdict), TCB labels per day, changes with their actor, and nothing outside the window.
func TestSummarizer(t *testing.T) {
	z := NewSummarizer(t0, t0.Add(48*time.Hour))
	recs := knownRecords(t)
	// Added out of order: the summary does not depend on it.
	for _, i := range []int{5, 0, 3, 9, 1, 8, 2, 7, 6, 4} {
		z.Add(uint64(i), recs[i])
	}
	s := z.Summary(nil)
	if s.Records != 9 || s.Attestations != 6 || s.Subjects != 3 || s.TestRoots != 6 || s.FirstIndex != 0 || s.LastIndex != 8 {
		t.Fatalf("records %d, attestations %d, subjects %d, test roots %d, indices [%d, %d]", s.Records, s.Attestations, s.Subjects, s.TestRoots, s.FirstIndex, s.LastIndex)
	}
	wantPeriods := []PeriodCount{{"2026-03-01", 2, 0, 1, 3}, {"2026-03-02", 0, 1, 2, 3}}
	if s.Bucket != "day" || !slices.Equal(s.Periods, wantPeriods) {
		t.Errorf("periods %s %+v, want %+v", s.Bucket, s.Periods, wantPeriods)
	}
	wantCodes := []CodeCount{{"tdx_debug", 2}, {"nonce_mismatch", 1}, {"snp_signature", 1}, {"tdx_tcb_status", 1}}
	if !slices.Equal(s.Failures, wantCodes) {
		t.Errorf("failures %+v, want %+v", s.Failures, wantCodes)
	}
	wantLabels := []string{"SEV-SNP TCB 0x0300000000000a73", "TDX OutOfDate", "TDX UpToDate", TCBNoClaims}
	if !slices.Equal(s.TCBLabels, wantLabels) {
		t.Errorf("TCB labels %q", s.TCBLabels)
	}
	if len(s.TCB) != 2 || s.TCB[0].Counts["TDX UpToDate"] != 1 || s.TCB[0].Counts["TDX OutOfDate"] != 1 || s.TCB[1].Counts[TCBNoClaims] != 2 {
		t.Errorf("TCB %+v", s.TCB)
	}
	if s.Statuses["contraindicated"] != 3 || s.KeyReleases["deny"] != 1 || s.Kinds["policy_change"] != 1 || s.Kinds["collateral_update"] != 1 {
		t.Errorf("statuses %v, key releases %v, kinds %v", s.Statuses, s.KeyReleases, s.Kinds)
	}
	if len(s.Changes) != 2 || s.Changes[0].Actor != "alice" || !strings.Contains(s.Changes[0].What, "was sha256:01") ||
		s.Changes[1].Index != 7 || !strings.Contains(s.Changes[1].What, "tcbEvaluationDataNumber 17") {
		t.Errorf("changes %+v", s.Changes)
	}

	// Without a window every record counts; a long window counts per month.
	z = NewSummarizer(time.Time{}, time.Time{})
	for i, r := range recs {
		z.Add(uint64(i), r)
	}
	if s := z.Summary(nil); s.Records != 10 || s.Attestations != 7 {
		t.Errorf("unbounded: %d records, %d attestations", s.Records, s.Attestations)
	}
	z = NewSummarizer(t0.Add(-200*24*time.Hour), t0.Add(48*time.Hour))
	for i, r := range recs {
		z.Add(uint64(i), r)
	}
	if s := z.Summary(nil); s.Bucket != "month" || len(s.Periods) != 1 || s.Periods[0] != (PeriodCount{"2026-03", 2, 1, 3, 6}) {
		t.Errorf("months: %s %+v", s.Bucket, s.Periods)
	}
}

// An unreadable recorded result counts as contraindicated, never as a pass.
func TestSummarizerUnreadableResult(t *testing.T) {
	z := NewSummarizer(time.Time{}, time.Time{})
	r := verdictRecord(t, t0, "agent:a", "tdx", ear.StatusAffirming, "")
	z.Add(0, r)
	if s := z.Summary(nil); s.Statuses["affirming"] != 1 {
		t.Fatalf("valid: %v", s.Statuses)
	}
	r.Result = []byte("{not json")
	z = NewSummarizer(time.Time{}, time.Time{})
	z.Add(0, r)
	if s := z.Summary(nil); s.Statuses["contraindicated"] != 1 || s.Statuses["affirming"] != 0 || s.Failures[0].Code != "result_unreadable" {
		t.Fatalf("unreadable: %v %v", s.Statuses, s.Failures)
	}
}

// Gaps from the summary's verdicts are Reconcile's.
func TestReconcileVerdicts(t *testing.T) {
	z := NewSummarizer(time.Time{}, time.Time{})
	for i, r := range knownRecords(t) {
		z.Add(uint64(i), r)
	}
	inv := &Inventory{Interval: time.Hour, Statuses: []ear.Status{ear.StatusAffirming, ear.StatusWarning}, Subjects: []InventorySubject{{ID: "agent:a"}, {ID: "agent:d"}}}
	cov := ReconcileVerdicts(z.Verdicts(), t0, t0.Add(48*time.Hour), inv)
	if len(cov.Subjects) != 2 || len(cov.Subjects[0].Gaps) != 2 || cov.Subjects[1].Attested != 0 || len(cov.Subjects[1].Gaps) != 1 ||
		!slices.Equal(cov.Unlisted, []string{"agent:b", "agent:c"}) {
		t.Fatalf("%+v", cov)
	}
}

func passingReport() *Report {
	from, to := t0, t0.Add(48*time.Hour)
	return &Report{Manifest: &Manifest{Format: Format, Origin: "test/log", From: &from, To: &to, First: 0, End: 10, CheckpointSize: 10},
		Checkpoint: &CheckpointInfo{Size: 10, Verified: true}, Kinds: map[string]uint64{}, Failures: []Finding{}, Attestations: 6, Reproduced: 6,
		LogKeyPinned: true, KeysPinned: true, TestRoots: "given"}
}

// The report escapes everything that comes from records: a subject, an actor or a failure code
// holding markup appears as text, in the tables and in the SVG charts alike.
func TestReportEscapes(t *testing.T) {
	const evil = `<script>alert("x")</script>`
	quoted, _ := json.Marshal(evil)
	z := NewSummarizer(time.Time{}, time.Time{})
	for i, r := range knownRecords(t) {
		z.Add(uint64(i), r)
	}
	z.Add(20, verdictRecord(t, t0.Add(time.Hour), evil, "tdx", ear.StatusContraindicated, `{"tcb":{"status":`+string(quoted)+`}}`, ear.Code(evil)))
	z.Add(21, &evidence.Record{Version: evidence.Version, Kind: evidence.KindPolicyChange, Time: t0.Add(time.Hour), Policy: &evidence.PolicyRef{ID: evil},
		PolicyChange: &evidence.PolicyChange{Actor: evil}})
	inv := &Inventory{Interval: time.Hour, Statuses: []ear.Status{ear.StatusAffirming}, Subjects: []InventorySubject{{ID: evil}}}
	s := z.Summary(ReconcileVerdicts(z.Verdicts(), time.Time{}, time.Time{}, inv))
	var out bytes.Buffer
	page := &ReportPage{Source: evil + ".tar.gz", Generator: "proofline test", Generated: t0, Verification: passingReport(), Summary: s, Inventory: "inv.yaml"}
	if err := page.WriteHTML(&out); err != nil {
		t.Fatal(err)
	}
	html := out.String()
	if strings.Contains(html, "<script") || strings.Contains(html, `alert("x")`) {
		t.Fatalf("unescaped markup in the report:\n%s", html)
	}
	if n := strings.Count(html, "&lt;script&gt;"); n < 6 {
		t.Fatalf("the escaped subject, actor, code and TCB status appear %d times, want at least 6", n)
	}
	for name, svg := range s.Charts() {
		if strings.Contains(svg, "<script") || strings.Contains(svg, "style=") {
			t.Errorf("chart %s holds a script or a style attribute", name)
		}
	}
	if !strings.Contains(html, `http-equiv="Content-Security-Policy" content="default-src &#39;none&#39;`) || !strings.Contains(html, "<style>"+reportCSS+"</style>") {
		t.Error("the CSP or the style element (whose hash the CSP allows) is not as written")
	}
}

// A failed verification is stated, and every figure is marked unverified; the criteria claim
// nothing.
func TestReportUnverified(t *testing.T) {
	z := NewSummarizer(time.Time{}, time.Time{})
	for i, r := range knownRecords(t) {
		z.Add(uint64(i), r)
	}
	render := func(rep *Report) string {
		var out bytes.Buffer
		if err := (&ReportPage{Source: "b.tar.gz", Generated: t0, Verification: rep, Summary: z.Summary(nil)}).WriteHTML(&out); err != nil {
			t.Fatal(err)
		}
		return out.String()
	}
	ok := render(passingReport())
	if !strings.Contains(ok, "VERIFICATION PASSED") || strings.Contains(ok, "(unverified)") || strings.Contains(ok, "Nothing yet") {
		t.Fatal("the passing report is marked unverified")
	}
	bad := passingReport()
	i := uint64(3)
	bad.Failures = append(bad.Failures, Finding{Record: &i, Check: "inclusion", Message: "altered"})
	html := render(bad)
	if !strings.Contains(html, "VERIFICATION FAILED") || strings.Contains(html, "VERIFICATION PASSED") ||
		strings.Count(html, "(unverified)") < 6 || strings.Count(html, "Nothing yet") != 5 || !strings.Contains(html, "<td>3</td><td>inclusion</td><td>altered</td>") {
		t.Fatalf("the failing report:\n%s", html)
	}
}

// VerifyAndSummarize refuses to summarise bytes other than those it verified.
func TestVerifyAndSummarizeChanged(t *testing.T) {
	reads := 0
	open := func(second []byte) func() (io.ReadCloser, error) {
		return func() (io.ReadCloser, error) {
			reads++
			if reads%2 == 0 {
				return io.NopCloser(bytes.NewReader(second)), nil
			}
			return io.NopCloser(strings.NewReader("not a bundle")), nil
		}
	}
	rep, s, err := VerifyAndSummarize(context.Background(), open([]byte("not a bundle")), VerifyOptions{}, nil)
	if err != nil || rep.OK() || s.Records != 0 {
		t.Fatalf("same bytes: %v %v", err, rep)
	}
	if _, _, err := VerifyAndSummarize(context.Background(), open([]byte("not a bundle!")), VerifyOptions{}, nil); !errors.Is(err, ErrBundleChanged) {
		t.Fatalf("changed bytes: %v", err)
	}
}

// fakeLog is an index and a log of n attestation records, one a minute from t0.
type fakeLog struct {
	n       int
	bad     uint64 // a record that does not verify, if not 0
	queries int
}

func (l *fakeLog) Records(_ context.Context, q index.Query) ([]index.Entry, error) {
	l.queries++
	var out []index.Entry
	for i := q.Start; i < uint64(l.n) && len(out) < q.Limit; i++ {
		t := t0.Add(time.Duration(i) * time.Minute)
		if (!q.From.IsZero() && t.Before(q.From)) || (!q.To.IsZero() && !t.Before(q.To)) {
			continue
		}
		out = append(out, index.Entry{LogIndex: i, Time: t, Kind: evidence.KindAttestation})
	}
	return out, nil
}

var errUnverified = errors.New("does not verify against the key history")

func (l *fakeLog) Record(_ context.Context, i uint64) ([]byte, *evidence.Record, error) {
	if l.bad != 0 && i == l.bad {
		return nil, nil, errUnverified
	}
	r := &evidence.Record{Version: evidence.Version, Kind: evidence.KindAttestation, Time: t0.Add(time.Duration(i) * time.Minute),
		Subject: &evidence.Subject{ID: "agent:a"}, Result: []byte(`{"status":"affirming"}`)}
	return nil, r, nil
}

// SummarizeLog pages through the index, counts the window inclusively, fails on a record that
// does not verify, and refuses windows that end before they start or hold too many records.
func TestSummarizeLog(t *testing.T) {
	ctx := context.Background()
	l := &fakeLog{n: 2500}
	s, err := SummarizeLog(ctx, l, time.Time{}, time.Time{})
	if err != nil || s.Attestations != 2500 || l.queries != 3 {
		t.Fatalf("all: %v, %d verdicts in %d queries", err, s.Attestations, l.queries)
	}
	s, err = SummarizeLog(ctx, l, t0.Add(10*time.Minute), t0.Add(20*time.Minute))
	if err != nil || s.Attestations != 11 || s.FirstIndex != 10 || s.LastIndex != 20 {
		t.Fatalf("window: %v %+v", err, s)
	}
	l.bad = 15
	if _, err := SummarizeLog(ctx, l, t0.Add(10*time.Minute), t0.Add(20*time.Minute)); !errors.Is(err, errUnverified) {
		t.Fatalf("a record that does not verify: %v", err)
	}
	if _, err := SummarizeLog(ctx, l, t0.Add(time.Minute), t0); !errors.Is(err, ErrWindowInverted) {
		t.Fatalf("inverted: %v", err)
	}
	if _, err := SummarizeLog(ctx, &fakeLog{n: MaxSummaryRecords}, time.Time{}, time.Time{}); err != nil {
		t.Fatalf("at the limit: %v", err)
	}
	if _, err := SummarizeLog(ctx, &fakeLog{n: MaxSummaryRecords + 1}, time.Time{}, time.Time{}); !errors.Is(err, ErrWindowTooLarge) {
		t.Fatalf("over the limit: %v", err)
	}
}

// renderReport writes the report of rep over the records.
func renderReport(t *testing.T, rep *Report, recs []*evidence.Record) string {
	t.Helper()
	z := NewSummarizer(time.Time{}, time.Time{})
	for i, r := range recs {
		z.Add(uint64(i), r)
	}
	var out bytes.Buffer
	if err := (&ReportPage{Source: "b.tar.gz", Generated: t0, Verification: rep, Summary: z.Summary(nil)}).WriteHTML(&out); err != nil {
		t.Fatal(err)
	}
	return out.String()
}

// The green "passed" banner needs the log key and the record keys pinned by the auditor, and
// test roots that are not the bundle's own; a bundle that verified only against what it carries
// gets the amber "internally consistent" banner with the flags that pin what is missing, and the
// criteria say so before anything else.
func TestReportBanners(t *testing.T) {
	recs := knownRecords(t)
	const selfVouched = "INTERNALLY CONSISTENT — KEYS NOT PINNED: the bundle vouches for itself"
	const qualified = "Only as far as the bundle vouches for itself"
	for _, c := range []struct {
		name   string
		change func(*Report)
		pinned bool
		flags  string
	}{
		{"pinned, test roots given", func(*Report) {}, true, ""},
		{"pinned, no test roots", func(r *Report) { r.TestRoots = "" }, true, ""},
		{"nothing pinned", func(r *Report) { r.LogKeyPinned, r.KeysPinned = false, false }, false, "--log-key FILE --keys FILE"},
		{"log key not pinned", func(r *Report) { r.LogKeyPinned = false }, false, "--log-key FILE"},
		{"record keys not pinned", func(r *Report) { r.KeysPinned = false }, false, "--keys FILE"},
		{"test roots from the bundle", func(r *Report) { r.TestRoots = "bundle" }, false, "--roots DIR"},
	} {
		t.Run(c.name, func(t *testing.T) {
			rep := passingReport()
			c.change(rep)
			html := renderReport(t, rep, recs)
			if c.pinned {
				if !strings.Contains(html, `<div class="banner pass" id="verdict">VERIFICATION PASSED`) || strings.Contains(html, selfVouched) ||
					strings.Contains(html, qualified) || strings.Contains(html, "pin-command") {
					t.Fatalf("pinned: no unqualified green banner:\n%s", html)
				}
				return
			}
			want := `<code id="pin-command">proofline audit report b.tar.gz --out report.html ` + c.flags + `</code>`
			if strings.Contains(html, "VERIFICATION PASSED") || strings.Contains(html, `class="banner pass"`) ||
				!strings.Contains(html, `<div class="banner selfvouched" id="verdict">`+selfVouched) || !strings.Contains(html, want) ||
				strings.Count(html, qualified) != 5 || strings.Contains(html, "the log key you pinned") {
				t.Fatalf("not pinned: want the amber banner with %q and qualified criteria:\n%s", want, html)
			}
		})
	}
	// A failed bundle stays red whatever was pinned.
	rep := passingReport()
	rep.LogKeyPinned = false
	rep.Failures = append(rep.Failures, Finding{Check: "checkpoint", Message: "bad"})
	if html := renderReport(t, rep, recs); !strings.Contains(html, "VERIFICATION FAILED") || strings.Contains(html, selfVouched) || strings.Contains(html, qualified) {
		t.Fatal("a failed, unpinned bundle is not reported as failed")
	}
}

// The pin command names the bundle as one word of a POSIX shell: a file name holding ;, $(…),
// backticks, quotes or a leading - reaches the command as that name, and nothing in it runs.
func TestReportPinCommandQuoted(t *testing.T) {
	sh, err := exec.LookPath("sh")
	if err != nil {
		t.Skip("no sh to run the command with")
	}
	z := NewSummarizer(time.Time{}, time.Time{})
	for i, r := range knownRecords(t) {
		z.Add(uint64(i), r)
	}
	rep := passingReport()
	rep.LogKeyPinned = false
	for _, c := range []struct{ name, word string }{
		{"b.tar.gz", "b.tar.gz"},
		{"b;touch pwned;.tar.gz", ""},
		{"$(touch pwned).tar.gz", ""},
		{"`touch pwned`.tar.gz", ""},
		{"it's'$(touch pwned)'.tar.gz", ""},
		{"a b\n\\\"c\".tar.gz", ""},
		{"--keys=mine.json", "./--keys=mine.json"},
	} {
		var out bytes.Buffer
		if err := (&ReportPage{Source: c.name, Generated: t0, Verification: rep, Summary: z.Summary(nil)}).WriteHTML(&out); err != nil {
			t.Fatal(err)
		}
		_, code, ok := strings.Cut(out.String(), `<code id="pin-command">`)
		code, _, ok2 := strings.Cut(code, "</code>")
		if !ok || !ok2 {
			t.Fatalf("%q: no pin command", c.name)
		}
		cmd, ok := strings.CutPrefix(html.UnescapeString(code), "proofline audit report ")
		if !ok || strings.Contains(code, "<") {
			t.Fatalf("%q: pin command %q", c.name, code)
		}
		// The command's words, as a shell splits them, each ended by a NUL.
		dir := t.TempDir()
		run := exec.Command(sh, "-c", `printf '%s\000' `+cmd)
		run.Dir = dir
		got, err := run.Output()
		if err != nil {
			t.Fatalf("%q: sh -c %q: %v", c.name, cmd, err)
		}
		want := c.word
		if want == "" {
			want = c.name
		}
		if words := strings.Split(strings.TrimSuffix(string(got), "\x00"), "\x00"); len(words) != 5 || words[0] != want || words[1] != "--out" || words[3] != "--log-key" {
			t.Errorf("%q: the command %q reads as %q", c.name, cmd, words)
		}
		if _, err := os.Stat(filepath.Join(dir, "pwned")); err == nil {
			t.Errorf("%q: the command %q ran what the name holds", c.name, cmd)
		}
	}
}

// withoutTestRoots returns r with its recorded result's test_roots set to false.
func withoutTestRoots(t *testing.T, r *evidence.Record) *evidence.Record {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(r.Result, &m); err != nil {
		t.Fatal(err)
	}
	m["test_roots"] = false
	b, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	c := *r
	c.Result = b
	return &c
}

// Verdicts given with test vendor roots are marked in the figures and on the charts that count
// them (verdicts, TCB); verdicts on the real roots are not.
func TestReportTestRootsMarked(t *testing.T) {
	recs := knownRecords(t)
	html := renderReport(t, passingReport(), recs)
	z := NewSummarizer(time.Time{}, time.Time{})
	for i, r := range recs {
		z.Add(uint64(i), r)
	}
	charts := z.Summary(nil).Charts()
	if !strings.Contains(html, `id="test-roots-note">TEST VENDOR ROOTS: 7 of these 7 verdicts`) {
		t.Errorf("the figures do not mark the test-root verdicts:\n%s", html)
	}
	for _, name := range []string{ChartVerdicts, ChartTCB} {
		if !strings.Contains(charts[name], `class="test-roots"`) || !strings.Contains(charts[name], "TEST VENDOR ROOTS: 7 of 7 verdicts") {
			t.Errorf("chart %s does not mark the test-root verdicts:\n%s", name, charts[name])
		}
	}
	if !strings.Contains(charts[ChartVerdicts], "verdicts on TEST vendor roots)</title>") {
		t.Error("the verdict bars' tooltips do not count the test-root verdicts")
	}

	// One verdict on the real roots: the count says 6 of 7. None: no mark anywhere.
	recs[1] = withoutTestRoots(t, recs[1])
	if html := renderReport(t, passingReport(), recs); !strings.Contains(html, "TEST VENDOR ROOTS: 6 of these 7 verdicts") {
		t.Error("one real-root verdict: the count is not 6 of 7")
	}
	for i, r := range recs {
		if r.Kind == evidence.KindAttestation {
			recs[i] = withoutTestRoots(t, r)
		}
	}
	z = NewSummarizer(time.Time{}, time.Time{})
	for i, r := range recs {
		z.Add(uint64(i), r)
	}
	s := z.Summary(nil)
	html = renderReport(t, passingReport(), recs)
	if s.TestRoots != 0 || strings.Contains(html, "TEST VENDOR ROOTS") || strings.Contains(html, "test-roots") ||
		strings.Contains(s.Charts()[ChartVerdicts], "TEST") || strings.Contains(html, "were given with TEST vendor roots") {
		t.Errorf("no test-root verdict, yet marked (%d)", s.TestRoots)
	}
}

// access_change records are counted by action, drawn on the changes timeline with who made them,
// and what they support is stated under CC6.1.
func TestSummarizerAccessChanges(t *testing.T) {
	exp := t0.Add(30 * 24 * time.Hour)
	recs := append(knownRecords(t),
		&evidence.Record{Version: evidence.Version, Kind: evidence.KindAccessChange, Time: t0.Add(2 * time.Hour),
			AccessChange: &evidence.AccessChange{Actor: "admin:alice", Action: evidence.AccessCreate, TokenID: "tok-1", Name: "bob", Role: "auditor", ExpiresAt: exp}},
		&evidence.Record{Version: evidence.Version, Kind: evidence.KindAccessChange, Time: t0.Add(3 * time.Hour),
			AccessChange: &evidence.AccessChange{Actor: "admin:carol", Action: evidence.AccessRevoke, TokenID: "tok-1", Name: "bob", Role: "auditor", ExpiresAt: exp}},
	)
	z := NewSummarizer(time.Time{}, time.Time{})
	for i, r := range recs {
		z.Add(uint64(i), r)
	}
	s := z.Summary(nil)
	if s.Kinds["access_change"] != 2 || s.AccessChanges["create"] != 1 || s.AccessChanges["revoke"] != 1 {
		t.Fatalf("kinds %v, access changes %v", s.Kinds, s.AccessChanges)
	}
	var got []Change
	for _, c := range s.Changes {
		if c.Kind == "access_change" {
			got = append(got, c)
		}
	}
	if len(got) != 2 || got[0].Actor != "admin:alice" || got[0].What != "API token tok-1 created for auditor:bob, expiring 2026-03-31T10:00:00Z" ||
		got[1].Actor != "admin:carol" || got[1].What != "API token tok-1 of auditor:bob revoked" {
		t.Fatalf("access changes on the timeline: %+v", got)
	}
	if chart := s.Charts()[ChartChanges]; strings.Count(chart, `class="point"`) != 4 || !strings.Contains(chart, "access_change by admin:carol") {
		t.Errorf("changes chart:\n%s", chart)
	}
	html := renderReport(t, passingReport(), recs)
	for _, want := range []string{
		"2 change(s) of API access through the verifier&#39;s API (1 token creation(s), 1 revocation(s)",
		"API tokens from the service&#39;s configuration file (http.tokens)",
		"<td>access_change</td><td>admin:alice</td>",
	} {
		if !strings.Contains(html, want) {
			t.Errorf("the report lacks %q", want)
		}
	}
	if strings.Contains(html, "not in the evidence log") {
		t.Error("the report still says access management is not in the evidence log")
	}
	// Without them, CC6.1 counts none.
	if html := renderReport(t, passingReport(), knownRecords(t)); !strings.Contains(html, "0 change(s) of API access") {
		t.Error("no access change: the count is not 0")
	}
}
