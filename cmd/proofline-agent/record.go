package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/proofline/proofline/attest"
	"github.com/proofline/proofline/internal/agent"
	"github.com/proofline/proofline/internal/durable"
	"github.com/proofline/proofline/verifier"
	"github.com/proofline/proofline/verifier/collateral"
	"github.com/proofline/proofline/verifier/ear"
	"github.com/proofline/proofline/verifier/policy"
	"github.com/proofline/proofline/verifier/roots"
	"github.com/proofline/proofline/verifier/service/servicetest"
)

// The layout `record --out DIR` writes, which `collect --tee replay:DIR` and `proofline verify`
// read (DESIGN.md, "Recorded collateral").
const (
	recordEvidence   = "evidence.json"
	recordCollateral = "collateral"
	recordedFile     = "recorded.json" // in DIR/collateral
	recordRoots      = "roots"         // test mode only: the simulated platforms' roots
	recordPolicy     = "policy.yaml"   // test mode only: pins the simulated measurements
)

// defaultFetchTimeout bounds one collateral request (not the wait for a host's rate budget).
const defaultFetchTimeout = time.Minute

// maxCAFile bounds --ca-file.
const maxCAFile = 1 << 20

// errIncomplete marks a recording whose collateral is missing documents the verifier asked for.
var errIncomplete = errors.New("the collateral is incomplete")

// recordFlags are record's parsed flags besides those it shares with collect.
type recordFlags struct {
	collect      *collectFlags
	dir          string
	nonceGiven   bool
	simPlatforms string
	// routes are collateral.DefaultRoutes with the Base of --pcs, --intel-certs and --kds.
	routes  []collateral.Route
	caFile  string
	timeout time.Duration
}

func runRecord(ctx context.Context, args []string, stderr io.Writer, e *env) int {
	flags := flag.NewFlagSet("proofline-agent record", flag.ContinueOnError)
	flags.SetOutput(stderr)
	out := flags.String("out", "", "directory to write evidence.json and collateral/recorded.json to (created if needed; files of those names are replaced); required")
	nonceB64 := flags.String("nonce", "", "the nonce the report binds, 32 bytes in standard base64; default: 32 random bytes, printed")
	runtimeData := flags.String("runtime-data", "", "file whose exact bytes become runtime_data; default: the agent's JSON object with a new public key")
	key := flags.String("key", "", "the agent's private key (PKCS#8 PEM, ECDSA P-256): reused if the file exists, else created with mode 0600; default: a key that lives only for this command")
	tee := flags.String("tee", teeAuto, "where the report comes from: auto (detect), tdx, sev-snp, or sim-tdx / sim-snp (fake vendor keys; needs --test-mode and --sim-platforms)")
	testMode := flags.Bool("test-mode", false, "allow --tee sim-tdx and sim-snp, which sign with fake vendor keys; never use it on a real VM")
	simPlatforms := flags.String("sim-platforms", "", "test mode: the simulated platforms' fake keys to sign with (servicetest.Marshal, as proofline serve --test-mode writes DATA_DIR/simulated-platforms.json)")
	eventLogs := flags.Bool("event-logs", true, "include the TDX CCEL event log when the firmware publishes one, and with a vTPM the TCG event log")
	tpmMode := flags.String("tpm", agent.TPMAuto, "add a vTPM quote: auto (when /dev/tpmrm0 or /dev/tpm0 exists), on (required) or off")
	tpmPCRs := flags.String("tpm-pcrs", "0,1,2,3,4,5,6,7,8,9", "the sha256 PCRs to quote; must equal the verifier policy's tpm.pcrs")
	pcs := flags.String("pcs", "", "base URL asked instead of "+collateral.IntelPCSOrigin+" (a PCCS or mirror serving the PCS v4 paths); default: Intel")
	intelCerts := flags.String("intel-certs", "", "base URL asked instead of "+collateral.IntelCertificatesOrigin+" (the Intel SGX Root CA CRL; a mirror); default: Intel")
	kds := flags.String("kds", "", "base URL asked instead of "+collateral.AMDKDSOrigin+" (a caching proxy or mirror serving the KDS paths); default: AMD")
	caFile := flags.String("ca-file", "", "PEM certificates to trust, besides the system roots, for the HTTPS of --pcs, --intel-certs and --kds")
	timeout := flags.Duration("timeout", defaultFetchTimeout, "bound on one collateral request")
	verbose := flags.Bool("verbose", false, "log debug details")
	flags.Usage = func() {
		fmt.Fprintln(stderr, "Usage: proofline-agent record --out DIR [--nonce B64] [--runtime-data FILE | --key FILE] [--tee auto|tdx|sev-snp|sim-tdx|sim-snp] [--test-mode --sim-platforms FILE] [--pcs URL] [--intel-certs URL] [--kds URL] [--ca-file FILE]")
		flags.PrintDefaults()
	}
	if err := flags.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return exitOK
		}
		return exitUsage
	}
	level := slog.LevelInfo
	if *verbose {
		level = slog.LevelDebug
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))
	rf, err := checkRecordFlags(flags, *out, *nonceB64, *runtimeData, *key, *tee, *testMode, *simPlatforms,
		map[string]string{collateral.IntelPCSOrigin: *pcs, collateral.IntelCertificatesOrigin: *intelCerts, collateral.AMDKDSOrigin: *kds})
	if err == nil {
		rf.collect.eventLogs, rf.collect.tpm, rf.caFile, rf.timeout = *eventLogs, *tpmMode, *caFile, *timeout
		if rf.collect.tpmPCRs, err = parsePCRList(*tpmPCRs); err == nil {
			err = record(ctx, rf, stderr, log, e)
		}
	}
	if err != nil {
		fmt.Fprintf(stderr, "proofline-agent record: %v\n", err)
		if errors.Is(err, errUsage) {
			return exitUsage
		}
		return exitFailed
	}
	return exitOK
}

// routeFlags name the flag that sets the Base of each default route.
var routeFlags = map[string]string{
	collateral.IntelPCSOrigin:          "--pcs",
	collateral.IntelCertificatesOrigin: "--intel-certs",
	collateral.AMDKDSOrigin:            "--kds",
}

func checkRecordFlags(flags *flag.FlagSet, dir, nonceB64, runtimeData, key, tee string, testMode bool, simPlatforms string, bases map[string]string) (*recordFlags, error) {
	if flags.NArg() > 0 {
		return nil, usagef("unexpected argument %q", flags.Arg(0))
	}
	if dir == "" {
		return nil, usagef("--out DIR is required: the directory to write evidence.json and collateral/ to")
	}
	if strings.HasPrefix(tee, replayPfx) {
		return nil, usagef("--tee %s: record collects new evidence; to re-emit a recording use `proofline-agent collect --tee %s`", tee, tee)
	}
	nonceGiven := nonceB64 != ""
	if !nonceGiven {
		n := make([]byte, attest.NonceSize)
		if _, err := rand.Read(n); err != nil {
			return nil, err
		}
		nonceB64 = base64.StdEncoding.EncodeToString(n)
	}
	cf, err := checkCollectFlags(flags, nonceB64, filepath.Join(dir, recordEvidence), runtimeData, key, tee, testMode)
	if err != nil {
		return nil, err
	}
	rf := &recordFlags{collect: cf, dir: dir, nonceGiven: nonceGiven, simPlatforms: simPlatforms}
	sim := tee == teeSimTDX || tee == teeSimSNP
	switch {
	case sim && simPlatforms == "":
		return nil, usagef("--tee %s needs --sim-platforms FILE: the fake keys whose collateral the fake PCS/KDS servers serve (proofline serve --test-mode writes DATA_DIR/%s)", tee, servicetest.FileName)
	case !sim && simPlatforms != "":
		return nil, usagef("--sim-platforms is for --tee sim-tdx or sim-snp (with --test-mode) only")
	}
	// The simulated platforms' collateral exists only on fake servers: never ask the vendors.
	need := map[string][]string{
		teeSimTDX: {collateral.IntelPCSOrigin, collateral.IntelCertificatesOrigin},
		teeSimSNP: {collateral.AMDKDSOrigin},
	}[tee]
	for _, origin := range need {
		if bases[origin] == "" {
			return nil, usagef("--tee %s: the simulated collateral is on fake servers only; give %s URL (the fake server standing in for %s)", tee, routeFlags[origin], origin)
		}
	}
	for _, r := range collateral.DefaultRoutes() {
		if b := bases[r.Prefix]; b != "" {
			if r.Base, err = checkBaseURL(routeFlags[r.Prefix], b); err != nil {
				return nil, err
			}
		}
		rf.routes = append(rf.routes, r)
	}
	// DIR/collateral is read as a whole by proofline verify: a file of another recording there
	// would mix into this one (or repeat its URLs, which is an error).
	others, _ := filepath.Glob(filepath.Join(dir, recordCollateral, "*.json"))
	others = slices.DeleteFunc(others, func(p string) bool { return filepath.Base(p) == recordedFile })
	if len(others) > 0 {
		return nil, usagef("--out %s: %s already holds %s, which proofline verify would read together with this recording; choose another --out or remove it",
			dir, filepath.Join(dir, recordCollateral), strings.Join(others, ", "))
	}
	return rf, nil
}

// checkBaseURL checks a --pcs, --intel-certs or --kds URL and returns it ending in "/", as a
// prefix route's Base must.
func checkBaseURL(name, s string) (string, error) {
	u, err := url.Parse(s)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" || u.User != nil || u.RawQuery != "" || u.Fragment != "" {
		return "", usagef("%s %q: want an absolute http(s) URL without credentials, query or fragment, such as https://pccs.internal:8081/", name, s)
	}
	if !strings.HasSuffix(s, "/") {
		s += "/"
	}
	return s, nil
}

// recording is the outcome of one record run.
type recording struct {
	ev       *attest.Evidence
	at       time.Time
	result   *ear.Result
	served   []*collateral.Response // sorted by URL
	failures []fetchFailure
	test     bool // signed by the simulated platforms, appraised with their roots
}

// record collects evidence as collect does, writes it to DIR/evidence.json, appraises it with
// verifier.Verify (default policy; built-in roots, or in test mode the simulated ones) over a
// recorder in front of the collateral Fetcher, writes what the recorder served to
// DIR/collateral/recorded.json, checks that the recording alone reproduces the verdict, and
// prints a summary with the `proofline verify` command that reproduces it.
func record(ctx context.Context, rf *recordFlags, stderr io.Writer, log *slog.Logger, e *env) error {
	fetcher, client, err := newRecordFetcher(rf, e, log)
	if err != nil {
		return err
	}
	defer client.CloseIdleConnections()
	if err := os.MkdirAll(rf.dir, 0o755); err != nil {
		return fmt.Errorf("--out: %w", err)
	}
	f := rf.collect
	rec := &recording{test: f.tee == teeSimTDX || f.tee == teeSimSNP}
	if rec.test {
		err = recordSimulated(ctx, rf, log)
	} else {
		err = collect(ctx, f, stderr, log, e)
	}
	if err != nil {
		return err
	}
	// Appraise the envelope as written: exactly what `proofline verify --evidence` will read.
	data, err := readLimited(f.out, attest.MaxEnvelopeSize)
	if err != nil {
		return fmt.Errorf("reading back the evidence: %w", err)
	}
	if rec.ev, err = attest.DecodeEvidence(data); err != nil {
		return fmt.Errorf("reading back the evidence %s: %w", f.out, err)
	}
	rs, err := appraisalRoots(rf, rec.test)
	if err != nil {
		return err
	}
	rec.at = e.now().UTC().Truncate(time.Second)
	opts := verifier.Options{Policy: policy.Default(), Roots: rs, Now: rec.at, Nonce: f.nonce}
	src := &recorder{upstream: fetcher, served: map[string]*collateral.Response{}}
	opts.Collateral = src
	rec.result = verifier.Verify(ctx, rec.ev, opts)
	rec.served, rec.failures = src.recorded()
	collDir := filepath.Join(rf.dir, recordCollateral)
	if err := os.MkdirAll(collDir, 0o755); err != nil {
		return fmt.Errorf("--out: %w (the evidence is in %s)", err, f.out)
	}
	path := filepath.Join(collDir, recordedFile)
	if err := writeCollateral(path, rec.served); err != nil {
		return fmt.Errorf("writing the collateral: %w (the evidence is in %s)", err, f.out)
	}
	log.Info("wrote the collateral", "path", path, "documents", len(rec.served))
	err = rec.incomplete(f.out)
	if err == nil {
		err = reproduces(ctx, rf.dir, collDir, rec.ev, opts, rec.result)
	}
	printRecording(stderr, rf, rec, err == nil)
	return err
}

// reproduces checks the point of a recording: `proofline verify --collateral DIR/collateral`
// gives the recorded verdict offline. It checks with what was written, not what is in memory.
func reproduces(ctx context.Context, dir, collDir string, ev *attest.Evidence, opts verifier.Options, recorded *ear.Result) error {
	set, err := collateral.ReadDir(collDir)
	if err != nil {
		return fmt.Errorf("reading back the collateral: %w", err)
	}
	opts.Collateral = set
	if a, b := resultJSON(recorded), resultJSON(verifier.Verify(ctx, ev, opts)); !bytes.Equal(a, b) {
		return fmt.Errorf("the recording in %s does not reproduce the verdict offline (internal error, please report this):\nrecorded: %s\noffline:  %s", dir, a, b)
	}
	return nil
}

// newRecordFetcher returns the Fetcher over rf's routes and the HTTP client it uses. Its clock
// is the agent's (tests inject a fake one shared with the fake PCS/KDS servers).
func newRecordFetcher(rf *recordFlags, e *env, log *slog.Logger) (*collateral.Fetcher, *http.Client, error) {
	// The environment's proxy settings, as the default transport has them.
	tr := &http.Transport{Proxy: http.ProxyFromEnvironment}
	if dt, ok := http.DefaultTransport.(*http.Transport); ok {
		tr = dt.Clone()
	}
	if rf.caFile != "" {
		pem, err := readLimited(rf.caFile, maxCAFile)
		if err != nil {
			return nil, nil, usagef("--ca-file: %v", err)
		}
		pool, err := x509.SystemCertPool()
		if err != nil {
			pool = x509.NewCertPool()
		}
		if !pool.AppendCertsFromPEM(pem) {
			return nil, nil, usagef("--ca-file %s holds no PEM certificate; give the CA certificate(s) of the PCCS or mirror", rf.caFile)
		}
		tr.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	}
	if rf.timeout <= 0 {
		return nil, nil, usagef("--timeout must be positive")
	}
	client := &http.Client{Timeout: rf.timeout, Transport: tr}
	var clock collateral.Clock = collateral.SystemClock{}
	if e.clock != nil {
		clock = e.clock
	}
	fetcher, err := collateral.NewFetcher(collateral.FetcherConfig{Client: client, Clock: clock, Routes: rf.routes, Logger: log})
	if err != nil {
		return nil, nil, usagef("%v", err)
	}
	return fetcher, client, nil
}

// recordSimulated collects from the simulated platforms of --sim-platforms and writes, beside
// the evidence, their roots (DIR/roots, one PEM file per vendor) and their policy
// (DIR/policy.yaml): the layout of `collect --tee sim-*`, except that the collateral is the one
// recorded from the (fake) servers.
func recordSimulated(ctx context.Context, rf *recordFlags, log *slog.Logger) error {
	f := rf.collect
	plat, err := agent.PlatformsFile(rf.simPlatforms)()
	if err != nil {
		return fmt.Errorf("--sim-platforms: %w", err)
	}
	rt, err := runtimeData(f, log)
	if err != nil {
		return err
	}
	platform := attest.PlatformTDX
	if f.tee == teeSimSNP {
		platform = attest.PlatformSNP
	}
	sim := &agent.Simulated{Platform: platform, Platforms: agent.PlatformsFunc(plat)}
	ev, err := sim.Collect(ctx, f.nonce, rt)
	if err != nil {
		return err
	}
	rootsDir := filepath.Join(rf.dir, recordRoots)
	if err := os.MkdirAll(rootsDir, 0o755); err != nil {
		return err
	}
	for _, w := range []struct {
		path string
		data []byte
	}{
		{filepath.Join(rootsDir, "intel.pem"), plat.Intel.RootsPEM()},
		{filepath.Join(rootsDir, fmt.Sprintf("amd-%s.pem", strings.ToLower(servicetest.AMDProductLine))), plat.AMD.RootsPEM()},
		{filepath.Join(rf.dir, recordPolicy), plat.PolicyYAML},
	} {
		if err := durable.Replace(w.path, w.data, 0o644); err != nil {
			return fmt.Errorf("writing the simulated roots and policy: %w", err)
		}
	}
	return writeEvidence(f.out, ev, log)
}

// appraisalRoots returns the roots the recording is appraised with: the built-in vendor roots, or
// in test mode the simulated roots as written to DIR/roots (what the printed command uses).
func appraisalRoots(rf *recordFlags, test bool) (*roots.Set, error) {
	if !test {
		return roots.Builtin()
	}
	return roots.ReadDir(filepath.Join(rf.dir, recordRoots))
}

// writeCollateral writes rs as one recorded collateral file (collateral.WriteFile) so that a
// crash leaves the old file or the new one: a temporary file beside it (not *.json, so that a
// reader of the directory never sees it), synced, renamed into place, the directory synced.
func writeCollateral(path string, rs []*collateral.Response) error {
	dir := filepath.Dir(path)
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".*.tmp")
	if err != nil {
		return err
	}
	name := tmp.Name()
	defer os.Remove(name) // a no-op after the rename
	if err := tmp.Close(); err != nil {
		return err
	}
	if err := collateral.WriteFile(name, rs); err != nil {
		return err
	}
	if err := os.Chmod(name, 0o644); err != nil { // CreateTemp made it 0600
		return err
	}
	if err := syncFile(name); err != nil {
		return err
	}
	if err := os.Rename(name, path); err != nil {
		return err
	}
	return durable.SyncDir(dir)
}

func syncFile(path string) error {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// recorder is the collateral.Source of a recording: it asks upstream (the Fetcher) once per URL
// and remembers every response it served and every request that failed. A URL asked again is
// answered with the response already served, so the recording holds one document per URL, the
// one the verdict used.
type recorder struct {
	upstream collateral.Source

	mu     sync.Mutex
	served map[string]*collateral.Response
	failed []fetchFailure
}

// fetchFailure is a collateral request that got no document.
type fetchFailure struct {
	url string
	err error
}

// Get implements collateral.Source.
func (r *recorder) Get(ctx context.Context, u string) (*collateral.Response, error) {
	r.mu.Lock()
	resp, ok := r.served[u]
	r.mu.Unlock()
	if ok {
		return resp, nil
	}
	resp, err := r.upstream.Get(ctx, u)
	r.mu.Lock()
	defer r.mu.Unlock()
	if err != nil {
		r.failed = append(r.failed, fetchFailure{url: u, err: err})
		return nil, err
	}
	if prev, ok := r.served[u]; ok { // a concurrent Get of the same URL came first
		return prev, nil
	}
	r.served[u] = resp
	return resp, nil
}

// recorded returns the responses served, sorted by URL, and the requests that got none (a URL
// that failed and was then served is not a failure).
func (r *recorder) recorded() ([]*collateral.Response, []fetchFailure) {
	r.mu.Lock()
	defer r.mu.Unlock()
	rs := make([]*collateral.Response, 0, len(r.served))
	for _, resp := range r.served {
		rs = append(rs, resp)
	}
	sort.Slice(rs, func(i, j int) bool { return rs[i].URL < rs[j].URL })
	var failed []fetchFailure
	for _, f := range r.failed {
		if _, ok := r.served[f.url]; !ok {
			failed = append(failed, f)
		}
	}
	return rs, failed
}

// incomplete returns an error wrapping errIncomplete, naming each URL that got no document,
// why, and what to do, when the verifier asked for collateral it did not get.
func (rec *recording) incomplete(evidencePath string) error {
	var lines []string
	for _, f := range rec.failures {
		lines = append(lines, "  "+f.err.Error())
	}
	if len(lines) == 0 {
		// Not expected (every collateral request goes through the recorder), but a verdict
		// that says collateral was unavailable is never a complete recording.
		for _, fd := range rec.result.Failures {
			if fd.Code == ear.CodeCollateralUnavailable {
				lines = append(lines, "  "+fd.Message)
			}
		}
	}
	if len(lines) == 0 {
		return nil
	}
	return fmt.Errorf("%w: %d of %d collateral requests got no document:\n%s\nThe evidence is kept in %s, but proofline verify cannot reproduce its verdict offline without that collateral. Run record again once the server answers (a 5xx or 429 is usually temporary), or point --pcs, --intel-certs or --kds at a PCCS or mirror that serves these URLs",
		errIncomplete, len(lines), len(lines)+len(rec.served), strings.Join(lines, "\n"), evidencePath)
}

// printRecording prints the summary of a recording on stderr: platform, report digest,
// collateral documents, the verdict and, when the recording is complete and reproduces the
// verdict, the command that reproduces it offline.
func printRecording(w io.Writer, rf *recordFlags, rec *recording, complete bool) {
	f := rf.collect
	nonce := base64.StdEncoding.EncodeToString(f.nonce)
	sum := sha256.Sum256(rec.ev.Report)
	rootsDesc, cmdRoots := "the built-in vendor roots", []string(nil)
	if rec.test {
		rootsDir := filepath.Join(rf.dir, recordRoots)
		rootsDesc, cmdRoots = "the simulated roots in "+rootsDir, []string{"--roots", rootsDir}
		fmt.Fprintf(w, "proofline-agent: TEST MODE: %s is signed by the fake vendor keys of %s; it says nothing about this machine.\n", f.out, rf.simPlatforms)
	}
	nonceNote := ""
	if !rf.nonceGiven {
		nonceNote = " (random: no --nonce was given)"
	}
	fmt.Fprintf(w, "proofline-agent: recorded %s evidence and its collateral in %s\n", rec.ev.Platform, rf.dir)
	fmt.Fprintf(w, "  evidence:   %s (report sha256:%s)\n", f.out, hex.EncodeToString(sum[:]))
	fmt.Fprintf(w, "  nonce:      %s%s\n", nonce, nonceNote)
	fmt.Fprintf(w, "  recorded:   %d collateral documents in %s\n", len(rec.served), filepath.Join(rf.dir, recordCollateral, recordedFile))
	fmt.Fprintf(w, "  verdict:    %s at %s with the default policy and %s%s\n", rec.result.Status, rec.at.Format(time.RFC3339), rootsDesc, findingCodes(rec.result))
	if !complete {
		return
	}
	cmd := []string{"proofline", "verify", "--evidence", f.out, "--collateral", filepath.Join(rf.dir, recordCollateral)}
	cmd = append(cmd, cmdRoots...)
	cmd = append(cmd, "--nonce", nonce, "--at", rec.at.Format(time.RFC3339))
	fmt.Fprintf(w, "Reproduce the verdict offline with:\n%s\n", shellJoin(cmd))
	if rec.test {
		fmt.Fprintf(w, "Add --policy %s (it pins the simulated measurements) to appraise against them.\n", filepath.Join(rf.dir, recordPolicy))
	}
}

// findingCodes lists a result's failure and warning codes, each once, in order.
func findingCodes(r *ear.Result) string {
	var b strings.Builder
	for _, l := range []struct {
		name string
		fs   []ear.Finding
	}{{"failures", r.Failures}, {"warnings", r.Warnings}} {
		var codes []string
		for _, fd := range l.fs {
			if c := string(fd.Code); !slices.Contains(codes, c) {
				codes = append(codes, c)
			}
		}
		if len(codes) > 0 {
			fmt.Fprintf(&b, "; %s: %s", l.name, strings.Join(codes, ", "))
		}
	}
	return b.String()
}

func resultJSON(r *ear.Result) []byte {
	b, err := json.Marshal(r)
	if err != nil {
		return []byte(err.Error())
	}
	return b
}
