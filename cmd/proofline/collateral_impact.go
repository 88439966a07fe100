package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/proofline/proofline/attest"
	"github.com/proofline/proofline/evidence"
	"github.com/proofline/proofline/evidence/audit"
	evlog "github.com/proofline/proofline/evidence/log"
	"github.com/proofline/proofline/verifier"
	"github.com/proofline/proofline/verifier/collateral"
	"github.com/proofline/proofline/verifier/ear"
	"github.com/proofline/proofline/verifier/policy"
	"github.com/proofline/proofline/verifier/roots"
	"github.com/proofline/proofline/verifier/service"
	"golang.org/x/mod/sumdb/note"
)

const collateralImpactUsage = `Usage: proofline collateral impact --data-dir DIR [flags]

Re-performs the attestation verdicts of a recent window of the evidence log with new collateral
(a TCB recovery's TCB info or QE identity, typically) instead of the collateral each verdict used,
and lists the verdicts whose status or codes would change. Read-only: nothing is written to the
log, the blob store or the collateral cache.

The new collateral is the data dir's collateral cache (DIR/collateral-cache, what the verifier
fetched last), or --collateral CDIR of recorded responses; a URL it lacks is answered by the
verdict's own recorded document. Each verdict is re-performed with its own evidence and policy,
at its own time or at --at. Exit 0 when no verdict would change, 1 when some would, 2 when the
command could not run.

Flags:
`

// impactChange is one verdict that would change.
type impactChange struct {
	Index     uint64    `json:"index"`
	Subject   string    `json:"subject"`
	Platform  string    `json:"platform"`
	Time      time.Time `json:"time"`
	OldStatus string    `json:"old_status"`
	NewStatus string    `json:"new_status"`
	// Added and Removed are the failure and warning codes the new verdict adds and drops.
	Added   []string `json:"added_codes"`
	Removed []string `json:"removed_codes"`
	// OldTCB and NewTCB are the TDX platform TCB statuses (empty for other platforms).
	OldTCB string `json:"old_tcb_status,omitempty"`
	NewTCB string `json:"new_tcb_status,omitempty"`
}

// impactGroup counts the verdicts of one platform and new TCB level.
type impactGroup struct {
	Platform string `json:"platform"`
	TCB      string `json:"tcb_status,omitempty"`
	Checked  int    `json:"checked"`
	Changed  int    `json:"changed"`
}

// impactSkip is a verdict that could not be re-performed.
type impactSkip struct {
	Index  uint64 `json:"index"`
	Reason string `json:"reason"`
}

type impactReport struct {
	DataDir    string         `json:"data_dir"`
	Collateral string         `json:"collateral"`
	Since      time.Time      `json:"since"`
	At         *time.Time     `json:"at,omitempty"`
	Checked    int            `json:"checked"`
	Changed    int            `json:"changed"`
	Skipped    []impactSkip   `json:"skipped"`
	Changes    []impactChange `json:"changes"`
	ByLevel    []impactGroup  `json:"by_level"`
}

// impactWindowMargin: the log is scanned from its end backwards until a record older than the
// window's start by this much. Records are appended in time order up to the service's group
// commit (milliseconds), so this margin finds every record of the window.
const impactWindowMargin = time.Hour

// runCollateralImpact implements `proofline collateral impact`.
func runCollateralImpact(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("proofline collateral impact", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprint(stderr, collateralImpactUsage); fs.PrintDefaults() }
	dataDir := fs.String("data-dir", "", "the verifier's data directory (log/, keys/, blobs/, collateral-cache/); required")
	sinceArg := fs.String("since", "168h", "the window's start: a duration before --at (or now), e.g. 72h, or an RFC 3339 time")
	atArg := fs.String("at", "", "re-perform every verdict at this RFC 3339 time instead of its own")
	collDir := fs.String("collateral", "", "a directory of recorded collateral responses to use instead of the data dir's collateral cache")
	rootsDir := fs.String("roots", "", "the test vendor roots (*.pem) of verdicts made with test roots (serve --test-mode)")
	asJSON := fs.Bool("json", false, "print the report as JSON")
	quiet := fs.Bool("quiet", false, "no progress on stderr")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return exitOK
		}
		return exitUsage
	}
	fail := func(format string, a ...any) int {
		fmt.Fprintf(stderr, "proofline collateral impact: "+format+"\n", a...)
		return exitUsage
	}
	if *dataDir == "" || fs.NArg() > 0 {
		return fail("--data-dir DIR is required and no arguments are taken")
	}
	at, err := parseTimeFlag("at", *atArg)
	if err != nil {
		return fail("%v", err)
	}
	since, err := parseSince(*sinceArg, at)
	if err != nil {
		return fail("%v", err)
	}
	newColl, collDesc, err := impactCollateral(ctx, *dataDir, *collDir)
	if err != nil {
		return fail("%v", err)
	}
	var testRoots *roots.Set
	if *rootsDir != "" {
		if testRoots, err = roots.ReadDir(*rootsDir); err != nil {
			return fail("--roots: %v", err)
		}
	}
	builtin, err := roots.Builtin()
	if err != nil {
		return fail("the built-in vendor roots: %v", err)
	}
	src, err := exportSource(*dataDir)
	if err != nil {
		return fail("%v", err)
	}
	hist, err := evidence.LoadKeyHistory(filepath.Join(*dataDir, service.KeysDirName, service.KeyHistoryFileName))
	if err != nil {
		return fail("the record key history: %v", err)
	}
	v, err := note.NewVerifier(strings.TrimSpace(src.LogKey))
	if err != nil {
		return fail("the log's note key: %v", err)
	}
	lr := evlog.NewLeafReader(src.Log, v)
	size, err := lr.Size(ctx)
	if err != nil {
		return fail("reading the log's checkpoint: %v", err)
	}

	im := &impact{ctx: ctx, blobs: src.Blobs, newColl: newColl, builtin: builtin, test: testRoots, at: at,
		policies: map[evidence.Digest]*policy.Policy{}}
	rep := &impactReport{DataDir: *dataDir, Collateral: collDesc, Since: since.UTC(), Skipped: []impactSkip{}, Changes: []impactChange{}}
	if !at.IsZero() {
		rep.At = &at
	}
	groups := map[[2]string]*impactGroup{}
	var scanned uint64
	for i := size; i > 0; i-- {
		idx := i - 1
		if err := ctx.Err(); err != nil {
			return fail("%v", err)
		}
		leaf, err := lr.Entry(ctx, idx)
		if err != nil {
			return fail("reading record %d: %v", idx, err)
		}
		rec, _, err := evidence.Open(leaf, hist)
		if err != nil {
			rep.Skipped = append(rep.Skipped, impactSkip{idx, fmt.Sprintf("the record does not open: %v", err)})
			continue
		}
		scanned++
		if !*quiet && scanned%100 == 0 {
			fmt.Fprintf(stderr, "\rimpact: %d records read, %d verdicts re-performed", scanned, rep.Checked)
		}
		if rec.Time.Before(since.Add(-impactWindowMargin)) {
			break
		}
		if rec.Kind != evidence.KindAttestation || rec.Time.Before(since) {
			continue
		}
		ch, group, skip := im.reperform(idx, rec)
		if skip != "" {
			rep.Skipped = append(rep.Skipped, impactSkip{idx, skip})
			continue
		}
		rep.Checked++
		g := groups[group]
		if g == nil {
			g = &impactGroup{Platform: group[0], TCB: group[1]}
			groups[group] = g
		}
		g.Checked++
		if ch != nil {
			g.Changed++
			rep.Changed++
			rep.Changes = append(rep.Changes, *ch)
		}
	}
	if !*quiet {
		fmt.Fprintf(stderr, "\rimpact: %d records read, %d verdicts re-performed\n", scanned, rep.Checked)
	}
	slices.Reverse(rep.Changes) // log order
	slices.SortFunc(rep.Skipped, func(a, b impactSkip) int { return cmpUint(a.Index, b.Index) })
	for _, g := range groups {
		rep.ByLevel = append(rep.ByLevel, *g)
	}
	sort.Slice(rep.ByLevel, func(i, j int) bool {
		a, b := rep.ByLevel[i], rep.ByLevel[j]
		return a.Platform < b.Platform || (a.Platform == b.Platform && a.TCB < b.TCB)
	})
	if rep.ByLevel == nil {
		rep.ByLevel = []impactGroup{}
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(rep); err != nil {
			return fail("%v", err)
		}
	} else {
		printImpact(stdout, rep)
	}
	if rep.Changed > 0 {
		return exitContraindicated
	}
	return exitOK
}

func cmpUint(a, b uint64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// parseSince reads --since: a duration before at (or now), or an RFC 3339 time.
func parseSince(v string, at time.Time) (time.Time, error) {
	if d, err := time.ParseDuration(v); err == nil {
		if d < 0 {
			return time.Time{}, fmt.Errorf("--since %s is negative", v)
		}
		ref := at
		if ref.IsZero() {
			ref = time.Now()
		}
		return ref.Add(-d), nil
	}
	t, err := time.Parse(time.RFC3339, v)
	if err != nil {
		return time.Time{}, fmt.Errorf("--since %q is neither a duration such as 168h nor an RFC 3339 time", v)
	}
	return t, nil
}

// impactCollateral loads the new collateral: --collateral DIR, or every document of the data
// dir's collateral cache (opened read-only: it must exist).
func impactCollateral(ctx context.Context, dataDir, dir string) (collateral.Set, string, error) {
	if dir != "" {
		set, err := collateral.ReadDir(dir)
		if err != nil {
			return nil, "", fmt.Errorf("--collateral: %w", err)
		}
		if len(set) == 0 {
			return nil, "", fmt.Errorf("--collateral %s holds no recorded responses (*.json)", dir)
		}
		return set, dir, nil
	}
	cache := filepath.Join(dataDir, service.DefaultCollateralCacheDir)
	for _, sub := range []string{"urls", "blobs"} {
		if _, err := os.Stat(filepath.Join(cache, sub)); err != nil {
			return nil, "", fmt.Errorf("the data dir has no collateral cache (%s: %v): give --collateral DIR of recorded responses, or run the verifier with collateral.fetch", cache, err)
		}
	}
	store, err := collateral.OpenDirStore(cache)
	if err != nil {
		return nil, "", err
	}
	urls, err := store.URLs(ctx)
	if err != nil {
		return nil, "", fmt.Errorf("the collateral cache %s: %w", cache, err)
	}
	set := collateral.Set{}
	for _, u := range urls {
		data, err := store.Get(ctx, u)
		if err != nil {
			return nil, "", fmt.Errorf("the collateral cache %s: %s: %w", cache, u, err)
		}
		rs, err := collateral.Parse(data)
		if err != nil {
			return nil, "", fmt.Errorf("the collateral cache %s: %s: %w", cache, u, err)
		}
		if err := set.Add(rs...); err != nil {
			return nil, "", fmt.Errorf("the collateral cache %s: %w", cache, err)
		}
	}
	if len(set) == 0 {
		return nil, "", fmt.Errorf("the collateral cache %s is empty: give --collateral DIR", cache)
	}
	return set, cache, nil
}

// impact re-performs verdicts.
type impact struct {
	ctx           context.Context
	blobs         audit.BlobSource
	newColl       collateral.Set
	builtin, test *roots.Set
	at            time.Time
	policies      map[evidence.Digest]*policy.Policy
}

// storedVerdict is what impact reads of a recorded result.
type storedVerdict struct {
	Status    ear.Status      `json:"status"`
	TestRoots bool            `json:"test_roots"`
	Platform  string          `json:"platform"`
	Failures  []ear.Finding   `json:"failures"`
	Warnings  []ear.Finding   `json:"warnings"`
	Claims    json.RawMessage `json:"claims"`
}

// layered answers from the new collateral first and the record's own otherwise.
type layered struct{ first, then collateral.Set }

func (l layered) Get(ctx context.Context, u string) (*collateral.Response, error) {
	if r, ok := l.first[u]; ok {
		return r, nil
	}
	return l.then.Get(ctx, u)
}

// reperform re-performs the verdict of rec (as evidence/audit's re-performance does: its
// evidence, policy and the nonce it consumed) with the new collateral. It returns the change (nil
// when the verdict would not change) and its group, or why it could not.
func (im *impact) reperform(idx uint64, rec *evidence.Record) (*impactChange, [2]string, string) {
	var none [2]string
	var old storedVerdict
	if err := json.Unmarshal(rec.Result, &old); err != nil {
		return nil, none, fmt.Sprintf("the recorded result does not parse: %v", err)
	}
	if old.Status == ear.StatusContraindicated && len(old.Failures) == 1 && old.Failures[0].Code == ear.CodeNonceMismatch &&
		(len(old.Claims) == 0 || string(old.Claims) == "null") {
		return nil, none, "a refused nonce: the service did not appraise the evidence"
	}
	raw := rec.Evidence.Raw
	if raw == nil {
		var err error
		if raw, err = im.blobs.Get(im.ctx, *rec.Evidence.Digest); err != nil {
			return nil, none, fmt.Sprintf("the evidence: %v", err)
		}
	}
	ev, err := attest.DecodeEvidence(raw)
	if err != nil {
		return nil, none, fmt.Sprintf("the evidence does not decode: %v", err)
	}
	pol, err := im.policy(rec.Policy)
	if err != nil {
		return nil, none, err.Error()
	}
	own := collateral.Set{}
	for _, ref := range rec.Collateral {
		data, err := im.blobs.Get(im.ctx, ref.Digest)
		if err != nil {
			return nil, none, fmt.Sprintf("collateral %s: %v", ref.URL, err)
		}
		rs, err := collateral.Parse(data)
		if err == nil {
			err = own.Add(rs...)
		}
		if err != nil {
			return nil, none, fmt.Sprintf("collateral %s: %v", ref.URL, err)
		}
	}
	rs := im.builtin
	if old.TestRoots {
		if rs = im.test; rs == nil {
			return nil, none, "the verdict used test vendor roots: give them with --roots DIR"
		}
	}
	now := rec.Time
	if !im.at.IsZero() {
		now = im.at
	}
	res := verifier.Verify(im.ctx, ev, verifier.Options{Policy: pol, Roots: rs, Collateral: layered{im.newColl, own}, Now: now, Nonce: ev.Nonce})
	platform := string(ev.Platform)
	newTCB := tdxTCBStatus(res.Claims)
	group := [2]string{platform, newTCB}
	oldCodes, newCodes := findingCodes(old.Failures, old.Warnings), findingCodes(res.Failures, res.Warnings)
	added, removed := diffCodes(newCodes, oldCodes), diffCodes(oldCodes, newCodes)
	if res.Status == old.Status && len(added) == 0 && len(removed) == 0 {
		return nil, group, ""
	}
	var oldClaims struct {
		TCB *struct {
			Status string `json:"status"`
		} `json:"tcb"`
	}
	_ = json.Unmarshal(old.Claims, &oldClaims) // absent claims: no TCB status to show
	ch := &impactChange{Index: idx, Subject: rec.Subject.ID, Platform: platform, Time: rec.Time, OldStatus: string(old.Status),
		NewStatus: string(res.Status), Added: added, Removed: removed, NewTCB: newTCB}
	if oldClaims.TCB != nil {
		ch.OldTCB = oldClaims.TCB.Status
	}
	return ch, group, ""
}

func (im *impact) policy(ref *evidence.PolicyRef) (*policy.Policy, error) {
	if p, ok := im.policies[ref.Digest]; ok {
		return p, nil
	}
	data, err := im.blobs.Get(im.ctx, ref.Digest)
	if err != nil {
		return nil, fmt.Errorf("policy %q: %v", ref.ID, err)
	}
	p, err := policy.Parse(data)
	if err != nil {
		return nil, fmt.Errorf("policy %q does not parse: %v", ref.ID, err)
	}
	if p.ID != ref.ID {
		return nil, fmt.Errorf("the policy with digest %s has id %q, the record names %q", ref.Digest, p.ID, ref.ID)
	}
	im.policies[ref.Digest] = p
	return p, nil
}

func tdxTCBStatus(c any) string {
	if t, ok := c.(*ear.TDXClaims); ok && t != nil && t.TCB != nil {
		return t.TCB.Status
	}
	return ""
}

func findingCodes(lists ...[]ear.Finding) []string {
	var out []string
	for _, l := range lists {
		for _, f := range l {
			if !slices.Contains(out, string(f.Code)) {
				out = append(out, string(f.Code))
			}
		}
	}
	slices.Sort(out)
	return out
}

// diffCodes returns the codes of a that b lacks.
func diffCodes(a, b []string) []string {
	out := []string{}
	for _, c := range a {
		if !slices.Contains(b, c) {
			out = append(out, c)
		}
	}
	return out
}

func printImpact(w io.Writer, r *impactReport) {
	fmt.Fprintf(w, "collateral impact: %s\n", r.DataDir)
	fmt.Fprintf(w, "  new collateral  %s\n", r.Collateral)
	fmt.Fprintf(w, "  window          attestations since %s\n", r.Since.Format(time.RFC3339))
	if r.At != nil {
		fmt.Fprintf(w, "  re-performed at %s (not each verdict's own time)\n", r.At.Format(time.RFC3339))
	}
	fmt.Fprintln(w)
	if len(r.Changes) > 0 {
		tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "SUBJECT\tINDEX\tTIME\tSTATUS\tTCB\tCODES")
		for _, c := range r.Changes {
			tcb := "-"
			if c.OldTCB != "" || c.NewTCB != "" {
				tcb = c.OldTCB + " → " + c.NewTCB
			}
			var codes []string
			for _, a := range c.Added {
				codes = append(codes, "+"+a)
			}
			for _, a := range c.Removed {
				codes = append(codes, "-"+a)
			}
			fmt.Fprintf(tw, "%s\t%d\t%s\t%s → %s\t%s\t%s\n", c.Subject, c.Index, c.Time.Format(time.RFC3339), c.OldStatus, c.NewStatus, tcb, strings.Join(codes, " "))
		}
		tw.Flush()
		fmt.Fprintln(w)
	}
	fmt.Fprintf(w, "%d verdict(s) checked, %d would change", r.Checked, r.Changed)
	if len(r.Skipped) > 0 {
		fmt.Fprintf(w, ", %d not re-performed", len(r.Skipped))
	}
	fmt.Fprintln(w)
	for _, g := range r.ByLevel {
		level := g.TCB
		if level == "" {
			level = "-"
		}
		fmt.Fprintf(w, "  %-8s %-30s %d checked, %d would change\n", g.Platform, level, g.Checked, g.Changed)
	}
	for _, s := range r.Skipped {
		fmt.Fprintf(w, "  not re-performed: record %d: %s\n", s.Index, s.Reason)
	}
}
