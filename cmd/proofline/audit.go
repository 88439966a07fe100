package main

import (
	"bufio"
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"golang.org/x/mod/sumdb/note"

	"github.com/proofline/proofline/evidence"
	"github.com/proofline/proofline/evidence/audit"
	"github.com/proofline/proofline/evidence/blob"
	evlog "github.com/proofline/proofline/evidence/log"
	"github.com/proofline/proofline/internal/buildinfo"
	"github.com/proofline/proofline/verifier/roots"
	"github.com/proofline/proofline/verifier/service"
)

const auditUsage = `Usage: proofline audit <command> [flags]

Commands:
  export    write an audit bundle: the records of a time window with their blobs, proofs and keys
  verify    check an audit bundle offline: signatures, proofs, completeness, and re-perform its verdicts
  report    verify an audit bundle and write a self-contained HTML report for the auditor

Run 'proofline audit <command> -h' for the flags of a command. The bundle format is specified in
evidence/audit/README.md.
`

func runAudit(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, auditUsage)
		return exitUsage
	}
	switch args[0] {
	case "export":
		return runAuditExport(ctx, args[1:], stdout, stderr)
	case "verify":
		return runAuditVerify(ctx, args[1:], stdout, stderr)
	case "report":
		return runAuditReport(ctx, args[1:], stdout, stderr)
	case "help", "-h", "--help":
		fmt.Fprint(stdout, auditUsage)
		return exitOK
	}
	fmt.Fprintf(stderr, "proofline audit: unknown command %q\n%s", args[0], auditUsage)
	return exitUsage
}

// parseInterleaved parses flags that may come before or after the positional arguments, which it
// returns.
func parseInterleaved(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		if fs.NArg() == 0 {
			return pos, nil
		}
		pos = append(pos, fs.Arg(0))
		args = fs.Args()[1:]
	}
}

func parseTimeFlag(name, v string) (time.Time, error) {
	if v == "" {
		return time.Time{}, nil
	}
	t, err := time.Parse(time.RFC3339, v)
	if err != nil {
		return time.Time{}, fmt.Errorf("--%s %q is not an RFC 3339 time such as 2026-01-02T15:04:05Z", name, v)
	}
	return t, nil
}

// readCheckpointArg reads --previous: a checkpoint note, or a bundle whose checkpoint it takes.
func readCheckpointArg(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("--previous: %w", err)
	}
	defer f.Close()
	br := bufio.NewReader(f)
	prefix, _ := br.Peek(2)
	if audit.IsBundle(prefix) {
		cp, err := audit.BundleCheckpoint(br)
		if err != nil {
			return nil, fmt.Errorf("--previous %s: %w", path, err)
		}
		return cp, nil
	}
	cp, err := io.ReadAll(io.LimitReader(br, 64<<10))
	if err != nil {
		return nil, fmt.Errorf("--previous: %w", err)
	}
	return cp, nil
}

// progress prints "\r<what>: done of total records" on w, a new line for each stage.
type progress struct {
	w     io.Writer
	stage string
}

func (p *progress) update(stage string, done, total uint64) {
	if p.stage != "" && stage != p.stage {
		fmt.Fprintln(p.w)
	}
	p.stage = stage
	fmt.Fprintf(p.w, "\r%s: %d of %d records", stage, done, total)
}

// end ends the last progress line, if any.
func (p *progress) end() {
	if p.stage != "" {
		fmt.Fprintln(p.w)
	}
}

func runAuditExport(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("proofline audit export", flag.ContinueOnError)
	fs.SetOutput(stderr)
	dataDir := fs.String("data", "", "the verifier's data directory (log/, keys/, blobs/: embedded storage); required")
	fromFlag := fs.String("from", "", "first record time to export (RFC 3339); default: the log's start")
	toFlag := fs.String("to", "", "last record time to export (RFC 3339); default: the latest checkpoint")
	subject := fs.String("subject", "", "export only this subject's records (others are present by their leaf hash only)")
	previous := fs.String("previous", "", "the previous export (bundle) or its checkpoint: prove the log consistent with it")
	rootsDir := fs.String("roots", "", "directory of *.pem test vendor roots the verdicts used (test mode), included in the bundle")
	out := fs.String("out", "", "the bundle file to write (a .tar.gz); required")
	quiet := fs.Bool("quiet", false, "no progress on stderr")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "Usage: proofline audit export --data DIR [--from RFC3339] [--to RFC3339] [--subject S] [--previous FILE] [--roots DIR] --out FILE")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return exitOK
		}
		return exitUsage
	}
	fail := func(format string, a ...any) int {
		fmt.Fprintf(stderr, "proofline audit export: "+format+"\n", a...)
		return exitUsage
	}
	if fs.NArg() > 0 {
		return fail("unexpected argument %q", fs.Arg(0))
	}
	if *dataDir == "" || *out == "" {
		return fail("--data DIR and --out FILE are required")
	}
	var opts audit.ExportOptions
	var err error
	if opts.From, err = parseTimeFlag("from", *fromFlag); err != nil {
		return fail("%v", err)
	}
	if opts.To, err = parseTimeFlag("to", *toFlag); err != nil {
		return fail("%v", err)
	}
	opts.Subject = *subject
	if *previous != "" {
		if opts.Previous, err = readCheckpointArg(*previous); err != nil {
			return fail("%v", err)
		}
	}
	if *rootsDir != "" {
		if _, err := roots.ReadDir(*rootsDir); err != nil {
			return fail("--roots: %v", err)
		}
		paths, _ := filepath.Glob(filepath.Join(*rootsDir, "*.pem"))
		opts.Roots = map[string][]byte{}
		for _, p := range paths {
			if opts.Roots[filepath.Base(p)], err = os.ReadFile(p); err != nil {
				return fail("--roots: %v", err)
			}
		}
	}
	src, err := exportSource(*dataDir)
	if err != nil {
		return fail("%v", err)
	}
	pr := &progress{w: stderr}
	if !*quiet {
		opts.Progress = func(stage string, done, total uint64) {
			if stage == "scan" {
				stage = "export: looking for the window"
			} else {
				stage = "export: writing"
			}
			pr.update(stage, done, total)
		}
	}
	tmp, err := os.CreateTemp(filepath.Dir(*out), ".proofline-audit-*.tmp")
	if err != nil {
		return fail("%v", err)
	}
	defer os.Remove(tmp.Name())
	w := bufio.NewWriterSize(tmp, 1<<20)
	m, err := audit.Export(ctx, w, src, opts)
	pr.end()
	if err == nil {
		err = w.Flush()
	}
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), *out)
	}
	if err != nil {
		fmt.Fprintf(stderr, "proofline audit export: %v\n", err)
		return exitContraindicated
	}
	fi, _ := os.Stat(*out)
	fmt.Fprintf(stdout, "proofline audit export: wrote %s (%d bytes)\n", *out, fi.Size())
	fmt.Fprintf(stdout, "  records     [%d, %d) of the log's %d: %d in the bundle, %d by leaf hash only\n", m.First, m.End, m.CheckpointSize, m.Records, m.Redacted)
	fmt.Fprintf(stdout, "  window      %s\n", windowText(m))
	fmt.Fprintf(stdout, "  blobs       %d (collateral, policies, large evidence)\n", m.Blobs)
	if m.PreviousSize != nil {
		fmt.Fprintf(stdout, "  consistency proven from the previous checkpoint of %d records\n", *m.PreviousSize)
	}
	if m.Roots > 0 {
		fmt.Fprintf(stdout, "  test roots  %d file(s): the verdicts used test vendor roots\n", m.Roots)
	}
	fmt.Fprintf(stdout, "Check it with: proofline audit verify %s\n", *out)
	return exitOK
}

// exportSource opens the embedded storage of a data directory for reading.
func exportSource(dir string) (audit.Source, error) {
	logDir := filepath.Join(dir, service.LogDirName)
	if _, err := os.Stat(filepath.Join(logDir, "tlog")); err != nil {
		return audit.Source{}, fmt.Errorf("--data %s holds no evidence log (log/tlog): %w", dir, err)
	}
	logKey, err := os.ReadFile(filepath.Join(logDir, "note.pub"))
	if err != nil {
		return audit.Source{}, fmt.Errorf("the log's note key: %w", err)
	}
	keys, err := os.ReadFile(filepath.Join(dir, service.KeysDirName, service.KeyHistoryFileName))
	if err != nil {
		return audit.Source{}, fmt.Errorf("the key history: %w", err)
	}
	blobDir := filepath.Join(dir, service.BlobsDirName)
	if _, err := os.Stat(blobDir); err != nil {
		return audit.Source{}, fmt.Errorf("the blob store: %w", err)
	}
	blobs, err := blob.OpenDir(blobDir)
	if err != nil {
		return audit.Source{}, err
	}
	return audit.Source{Log: evlog.NewPOSIXReader(logDir), LogKey: string(logKey), KeyHistory: keys, Blobs: blobs}, nil
}

func windowText(m *audit.Manifest) string {
	t := func(p *time.Time, none string) string {
		if p == nil {
			return none
		}
		return p.Format(time.RFC3339)
	}
	s := t(m.From, "the log's start") + " to " + t(m.To, "its checkpoint")
	if m.Subject != "" {
		s += ", subject " + m.Subject
	} else {
		s += ", all subjects"
	}
	return s
}

func runAuditVerify(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("proofline audit verify", flag.ContinueOnError)
	fs.SetOutput(stderr)
	vf := addVerifyFlags(fs)
	jsonOut := fs.Bool("json", false, "print the report as JSON")
	quiet := fs.Bool("quiet", false, "no progress on stderr")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "Usage: proofline audit verify FILE [--keys FILE] [--log-key FILE] [--previous FILE] [--roots DIR] [--inventory FILE] [--json]")
		fs.PrintDefaults()
	}
	pos, err := parseInterleaved(fs, args)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return exitOK
		}
		return exitUsage
	}
	fail := func(format string, a ...any) int {
		fmt.Fprintf(stderr, "proofline audit verify: "+format+"\n", a...)
		return exitUsage
	}
	if len(pos) != 1 {
		return fail("give exactly one bundle FILE")
	}
	opts, inv, err := vf.options()
	if err != nil {
		return fail("%v", err)
	}
	f, err := os.Open(pos[0])
	if err != nil {
		return fail("%v", err)
	}
	defer f.Close()
	pr := &progress{w: stderr}
	if !*quiet {
		opts.Progress = func(done, total uint64) { pr.update("verify", done, total) }
	}
	rep, err := audit.Verify(ctx, bufio.NewReaderSize(f, 1<<20), opts)
	pr.end()
	if err != nil {
		return fail("%v", err)
	}
	var cov *audit.Coverage
	if inv != nil {
		cov = audit.Reconcile(rep, inv)
	}
	pass := rep.OK() && (cov == nil || cov.Gaps() == 0)
	if *jsonOut {
		out, err := json.MarshalIndent(struct {
			Pass     bool            `json:"pass"`
			Report   *audit.Report   `json:"report"`
			Coverage *audit.Coverage `json:"coverage,omitempty"`
		}{pass, rep, cov}, "", "  ")
		if err != nil {
			return fail("%v", err)
		}
		fmt.Fprintf(stdout, "%s\n", out)
	} else {
		printReport(stdout, pos[0], rep, cov, *vf.inventory)
	}
	if !pass {
		return exitContraindicated
	}
	return exitOK
}

// verifyFlags are the flags of audit verify and audit report that say what to trust besides the
// bundle.
type verifyFlags struct {
	keys, logKey, previous, roots, inventory *string
	workers                                  *int
}

func addVerifyFlags(fs *flag.FlagSet) *verifyFlags {
	return &verifyFlags{
		keys:      fs.String("keys", "", "the record key history you obtained independently (GET /v1/keys); default: the bundle's"),
		logKey:    fs.String("log-key", "", "the log's checkpoint verifier key you obtained independently; default: the bundle's note.pub"),
		previous:  fs.String("previous", "", "the previous bundle you verified, or its checkpoint: the bundle must prove consistency from it"),
		roots:     fs.String("roots", "", "directory of *.pem test vendor roots for verdicts marked test_roots (default: the bundle's)"),
		inventory: fs.String("inventory", "", "inventory (YAML or JSON: subjects and attestation interval) to reconcile the verdicts with"),
		workers:   fs.Int("workers", 0, "records verified in parallel (default: the number of CPUs)"),
	}
}

// options reads the files the flags name.
func (f *verifyFlags) options() (audit.VerifyOptions, *audit.Inventory, error) {
	opts := audit.VerifyOptions{Workers: *f.workers}
	var err error
	if *f.keys != "" {
		if opts.Keys, err = evidence.LoadKeyHistory(*f.keys); err != nil {
			return opts, nil, fmt.Errorf("--keys: %w", err)
		}
	}
	if *f.logKey != "" {
		vkey, err := readLimited(*f.logKey, 16<<10)
		if err != nil {
			return opts, nil, fmt.Errorf("--log-key: %w", err)
		}
		if opts.LogKey, err = note.NewVerifier(strings.TrimSpace(string(vkey))); err != nil {
			return opts, nil, fmt.Errorf("--log-key %s: %w", *f.logKey, err)
		}
	}
	if *f.previous != "" {
		if opts.Previous, err = readCheckpointArg(*f.previous); err != nil {
			return opts, nil, err
		}
	}
	if *f.roots != "" {
		if opts.TestRoots, err = roots.ReadDir(*f.roots); err != nil {
			return opts, nil, fmt.Errorf("--roots: %w", err)
		}
	}
	var inv *audit.Inventory
	if *f.inventory != "" {
		data, err := readLimited(*f.inventory, 16<<20)
		if err != nil {
			return opts, nil, fmt.Errorf("--inventory: %w", err)
		}
		if inv, err = audit.ParseInventory(data); err != nil {
			return opts, nil, fmt.Errorf("--inventory %s: %w", *f.inventory, err)
		}
	}
	return opts, inv, nil
}

func short(b []byte) string {
	h := hex.EncodeToString(b)
	if len(h) > 16 {
		return h[:16] + "…"
	}
	return h
}

func printReport(w io.Writer, file string, rep *audit.Report, cov *audit.Coverage, invFile string) {
	p := func(format string, a ...any) { fmt.Fprintf(w, format, a...) }
	p("proofline audit verify %s\n", file)
	if m := rep.Manifest; m != nil {
		p("  bundle      %s by %s, log %q\n", m.Created.Format(time.RFC3339), m.Generator, m.Origin)
		p("  window      %s; records [%d, %d)\n", windowText(m), m.First, m.End)
	}
	if cp := rep.Checkpoint; cp != nil {
		state := "signature NOT verified"
		if cp.Verified {
			state = "signature verified"
		}
		from := "the bundle's note.pub: compare its name+hash with the key you obtained from the operator, or pass --log-key"
		if rep.LogKeyPinned {
			from = "given with --log-key"
		}
		p("  checkpoint  %d records, root %s: %s with %s (%s)\n", cp.Size, short(cp.Root), state, rep.LogKey, from)
	}
	if pr := rep.Previous; pr != nil {
		state := "NOT verified"
		if pr.Verified {
			state = "verified: the log still holds every record it held then"
		}
		p("  consistency from the previous checkpoint (%d records, root %s): %s\n", pr.Size, short(pr.Root), state)
	} else {
		p("  consistency no previous checkpoint in the bundle (pass --previous with your last bundle to require one)\n")
	}
	if len(rep.RecordKeys) > 0 {
		from := "the bundle's keys/history.json (pass --keys to pin them)"
		if rep.KeysPinned {
			from = "given with --keys"
		}
		ids := make([]string, len(rep.RecordKeys))
		for i, k := range rep.RecordKeys {
			ids[i] = k[:min(16, len(k))] + "…"
		}
		p("  keys        %d record key(s) from %s: %s\n", len(rep.RecordKeys), from, strings.Join(ids, ", "))
	}
	var kinds []string
	for k, n := range rep.Kinds {
		kinds = append(kinds, fmt.Sprintf("%d %s", n, k))
	}
	sort.Strings(kinds)
	p("  records     %d present, %d by leaf hash only; %d inclusion proofs and %d signatures verified (%s)\n",
		rep.Records, rep.Redacted, rep.Included, rep.Signed, strings.Join(kinds, ", "))
	if rep.OutsideWindow > 0 {
		p("              %d of them timed just outside the window (appended concurrently with its edge)\n", rep.OutsideWindow)
	}
	p("  blobs       %d (%d bytes)\n", rep.Blobs, rep.BlobBytes)
	p("  verdicts    %d attestation verdicts: %d re-performed and reproduced", rep.Attestations, rep.Reproduced)
	if rep.Normalised > 0 {
		p(" (%d of them by another verifier version or with other collateral error messages)", rep.Normalised)
	}
	p(", %d NOT reproduced, %d not re-performable (%d nonce refusals, which the service gives before appraisal: contraindicated; %d with missing inputs)\n",
		rep.NotReproduced, rep.NonceRefused+rep.NotReperformed, rep.NonceRefused, rep.NotReperformed)
	switch rep.TestRoots {
	case "bundle":
		p("              test-mode verdicts were re-performed with the bundle's own test roots: that shows they follow from the recorded inputs, not that the hardware was genuine\n")
	case "given":
		p("              test-mode verdicts were re-performed with the test roots given with --roots\n")
	}
	if cov != nil {
		printCoverage(w, cov, invFile, rep.OK())
	}
	if n := len(rep.Failures) + rep.FailuresOmitted; n > 0 {
		p("\nFAILED CHECKS (%d):\n", n)
		for _, f := range rep.Failures {
			p("  %s\n", f)
		}
		if rep.FailuresOmitted > 0 {
			p("  … and %d more (use --json for the first %d in full)\n", rep.FailuresOmitted, len(rep.Failures))
		}
	}
	gaps := 0
	if cov != nil {
		gaps = cov.Gaps()
	}
	switch {
	case rep.OK() && gaps == 0:
		if tg := audit.TrustGaps(rep); len(tg) > 0 {
			var what, flags []string
			for _, g := range tg {
				what, flags = append(what, g.What), append(flags, g.Flag)
			}
			p("\nRESULT: PASS, KEYS NOT PINNED — internally consistent only: the bundle vouches for itself (%s); pin them with %s\n",
				strings.Join(what, ", "), strings.Join(flags, " "))
		} else {
			p("\nRESULT: PASS\n")
		}
	case rep.OK():
		p("\nRESULT: FAIL — the bundle verifies, but %d attestation gap(s) against the inventory\n", gaps)
	default:
		p("\nRESULT: FAIL — %d failed check(s)", len(rep.Failures)+rep.FailuresOmitted)
		if gaps > 0 {
			p(", %d attestation gap(s)", gaps)
		}
		p("\n")
	}
}

func printCoverage(w io.Writer, c *audit.Coverage, invFile string, verified bool) {
	fmt.Fprintf(w, "\nCOMPLETENESS against %s: %d subjects, window %s to %s\n", invFile, len(c.Subjects), c.From.Format(time.RFC3339), c.To.Format(time.RFC3339))
	if !verified {
		fmt.Fprintf(w, "  (the bundle failed verification: these figures rest on unverified records)\n")
	}
	tw := tabwriter.NewWriter(w, 2, 8, 2, ' ', 0)
	fmt.Fprintln(tw, "  subject\tinterval\tattested\tother\tgaps\tmissing\tlast attested")
	for _, s := range c.Subjects {
		last := "never"
		if !s.Last.IsZero() {
			last = s.Last.Format(time.RFC3339)
		}
		fmt.Fprintf(tw, "  %s\t%s\t%d\t%d\t%d\t%s\t%s\n", s.ID, s.Interval, s.Attested, s.Other, len(s.Gaps), s.Missing, last)
	}
	tw.Flush()
	if c.Gaps() > 0 {
		fmt.Fprintf(w, "  gaps (no counted verdict for longer than the interval and grace):\n")
		for _, s := range c.Subjects {
			for _, g := range s.Gaps {
				fmt.Fprintf(w, "    %s  %s to %s (%s)\n", s.ID, g.From.Format(time.RFC3339), g.To.Format(time.RFC3339), g.To.Sub(g.From))
			}
		}
	}
	if len(c.Unlisted) > 0 {
		fmt.Fprintf(w, "  subjects with verdicts that the inventory does not list: %s\n", strings.Join(c.Unlisted, ", "))
	}
}

func runAuditReport(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("proofline audit report", flag.ContinueOnError)
	fs.SetOutput(stderr)
	vf := addVerifyFlags(fs)
	out := fs.String("out", "", "the HTML report to write; required")
	quiet := fs.Bool("quiet", false, "no progress on stderr")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "Usage: proofline audit report BUNDLE --out FILE.html [--inventory FILE] [--keys FILE] [--log-key FILE] [--previous FILE] [--roots DIR]")
		fs.PrintDefaults()
	}
	pos, err := parseInterleaved(fs, args)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return exitOK
		}
		return exitUsage
	}
	fail := func(format string, a ...any) int {
		fmt.Fprintf(stderr, "proofline audit report: "+format+"\n", a...)
		return exitUsage
	}
	if len(pos) != 1 {
		return fail("give exactly one bundle FILE")
	}
	if *out == "" {
		return fail("--out FILE is required (the HTML report to write)")
	}
	opts, inv, err := vf.options()
	if err != nil {
		return fail("%v", err)
	}
	if _, err := os.Stat(pos[0]); err != nil {
		return fail("%v", err)
	}
	pr := &progress{w: stderr}
	if !*quiet {
		opts.Progress = func(done, total uint64) { pr.update("verify", done, total) }
	}
	open := func() (io.ReadCloser, error) {
		f, err := os.Open(pos[0])
		if err != nil {
			return nil, err
		}
		return struct {
			io.Reader
			io.Closer
		}{bufio.NewReaderSize(f, 1<<20), f}, nil
	}
	rep, sum, err := audit.VerifyAndSummarize(ctx, open, opts, inv)
	pr.end()
	if err != nil {
		return fail("%v", err)
	}
	page := &audit.ReportPage{
		Source: filepath.Base(pos[0]), Generator: "proofline " + buildinfo.Version(), Generated: time.Now(),
		Verification: rep, Summary: sum,
	}
	if *vf.inventory != "" {
		page.Inventory = filepath.Base(*vf.inventory)
	}
	tmp, err := os.CreateTemp(filepath.Dir(*out), ".proofline-report-*.tmp")
	if err != nil {
		return fail("%v", err)
	}
	defer os.Remove(tmp.Name())
	w := bufio.NewWriter(tmp)
	err = page.WriteHTML(w)
	if err == nil {
		err = w.Flush()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Chmod(tmp.Name(), 0o644)
	}
	if err == nil {
		err = os.Rename(tmp.Name(), *out)
	}
	if err != nil {
		return fail("writing %s: %v", *out, err)
	}
	gaps := 0
	if sum.Coverage != nil {
		gaps = sum.Coverage.Gaps()
	}
	fmt.Fprintf(stdout, "proofline audit report: wrote %s\n", *out)
	fmt.Fprintf(stdout, "  records     %d summarised: %d attestation verdicts on %d subject(s), %d policy, collateral or access change(s)\n",
		sum.Records, sum.Attestations, sum.Subjects, len(sum.Changes))
	trust := audit.TrustGaps(rep)
	switch {
	case rep.OK() && gaps == 0 && len(trust) == 0:
		fmt.Fprintf(stdout, "RESULT: PASS — the bundle verified against the keys you pinned; the report presents verified records\n")
		return exitOK
	case rep.OK() && gaps == 0:
		// As audit verify: every check passed, exit 0; but the report's banner is amber, and so
		// is this line.
		var what, flags []string
		for _, g := range trust {
			what, flags = append(what, g.What), append(flags, g.Flag)
		}
		fmt.Fprintf(stdout, "RESULT: PASS, KEYS NOT PINNED — internally consistent only: the bundle vouches for itself (%s); pin them with %s (GET /v1/keys returns the record keys and the log key)\n",
			strings.Join(what, "; "), strings.Join(flags, " "))
		return exitOK
	case rep.OK():
		fmt.Fprintf(stdout, "RESULT: FAIL — the bundle verified, but %d attestation gap(s) against the inventory (tabled in the report)\n", gaps)
	default:
		fmt.Fprintf(stdout, "RESULT: FAIL — %d failed check(s): the report marks every figure as unverified (run proofline audit verify %s for the details)\n",
			len(rep.Failures)+rep.FailuresOmitted, pos[0])
	}
	return exitContraindicated
}
