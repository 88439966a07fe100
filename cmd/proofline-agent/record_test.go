package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/proofline/proofline/attest"
	"github.com/proofline/proofline/attest/attesttest/fakedevice"
	"github.com/proofline/proofline/verifier/collateral"
	"github.com/proofline/proofline/verifier/collateral/collateraltest"
	"github.com/proofline/proofline/verifier/service/servicetest"
)

// simPlatforms makes simulated platforms and writes their fake keys where --sim-platforms reads
// them, as `proofline serve --test-mode` does.
func simPlatforms(t *testing.T) (*servicetest.Platforms, string) {
	t.Helper()
	plat, err := servicetest.New(time.Now())
	if err != nil {
		t.Fatal(err)
	}
	data, err := plat.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), servicetest.FileName)
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return plat, path
}

// fakeVendors are a fake Intel PCS (standing in for the Intel certificates host too) and a fake
// AMD KDS serving the simulated platforms' collateral over TLS, on one fake clock that the
// agent's Fetcher shares.
type fakeVendors struct {
	pcs, kds *collateraltest.Server
	clock    *collateraltest.Clock
	// caFile holds the servers' TLS certificate, for --ca-file.
	caFile string
}

func newFakeVendors(t *testing.T, plat *servicetest.Platforms) *fakeVendors {
	t.Helper()
	v := &fakeVendors{clock: collateraltest.NewClock(plat.Now)}
	var intel, amd []*collateral.Response
	for _, u := range plat.Collateral.URLs() {
		if strings.HasPrefix(u, collateral.AMDKDSOrigin) {
			amd = append(amd, plat.Collateral[u])
		} else {
			intel = append(intel, plat.Collateral[u])
		}
	}
	var err error
	if v.pcs, err = collateraltest.NewPCS(intel, v.clock); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(v.pcs.Close)
	if v.kds, err = collateraltest.NewKDS(amd, v.clock); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(v.kds.Close)
	var certs []byte
	for _, s := range []*collateraltest.Server{v.pcs, v.kds} {
		certs = append(certs, serverCertPEM(t, s.URL)...)
	}
	v.caFile = filepath.Join(t.TempDir(), "fake-vendors-ca.pem")
	if err := os.WriteFile(v.caFile, certs, 0o644); err != nil {
		t.Fatal(err)
	}
	return v
}

// serverCertPEM returns the certificate a local TLS server presents, to pin it with --ca-file
// (as an operator pins a PCCS's self-signed certificate).
func serverCertPEM(t *testing.T, serverURL string) []byte {
	t.Helper()
	u, err := url.Parse(serverURL)
	if err != nil {
		t.Fatal(err)
	}
	conn, err := tls.Dial("tcp", u.Host, &tls.Config{InsecureSkipVerify: true})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	var out []byte
	for _, c := range conn.ConnectionState().PeerCertificates {
		out = append(out, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})...)
	}
	return out
}

// routeArgs point every collateral route at the fake servers.
func (v *fakeVendors) routeArgs() []string {
	return []string{"--pcs", v.pcs.URL, "--intel-certs", v.pcs.URL, "--kds", v.kds.URL, "--ca-file", v.caFile}
}

// served returns the canonical URLs the fake servers answered with a document, and how often.
func (v *fakeVendors) served() map[string]int {
	out := v.pcs.ServedURLs()
	for u, n := range v.kds.ServedURLs() {
		out[u] += n
	}
	return out
}

// runDriven runs the agent while moving the fake clock to each deadline someone sleeps for (a
// host's rate budget, a Retry-After), so that nothing waits in real time.
func runDriven(t *testing.T, e *env, clock *collateraltest.Clock, args ...string) result {
	t.Helper()
	done := make(chan result, 1)
	go func() {
		var stdout, stderr bytes.Buffer
		code := run(context.Background(), args, &stdout, &stderr, e)
		done <- result{code, stdout.String(), stderr.String()}
	}()
	for {
		select {
		case r := <-done:
			return r
		case <-clock.Changed():
			clock.AdvanceToNext()
		}
	}
}

func readRecorded(t *testing.T, dir string) []*collateral.Response {
	t.Helper()
	path := filepath.Join(dir, "collateral", "recorded.json")
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o644 {
		t.Errorf("%s has mode %v, want 0644", path, fi.Mode().Perm())
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	rs, err := collateral.Parse(data)
	if err != nil {
		t.Fatal(err)
	}
	return rs
}

type verifyResult struct {
	Status    string `json:"status"`
	TestRoots bool   `json:"test_roots"`
	Platform  string `json:"platform"`
	Failures  []struct {
		Code string `json:"code"`
	} `json:"failures"`
}

// runVerify runs `proofline verify` with args (without the leading "proofline") and returns
// its result and exit code.
func runVerify(t *testing.T, args ...string) (verifyResult, int) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	cmd := exec.Command(prooflineBinary(t), args...)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	var res verifyResult
	if err := json.Unmarshal(stdout.Bytes(), &res); err != nil {
		t.Fatalf("proofline %v: exit %d, not a JSON result: %v\nstdout: %s\nstderr: %s", args, code, err, stdout.String(), stderr.String())
	}
	return res, code
}

// The acceptance path in test mode: `record --test-mode --tee sim-tdx|sim-snp`, with the
// Fetcher pointed at fake PCS/KDS servers serving the simulated platforms' collateral, writes
// the evidence, exactly the collateral the verifier asked for (by its canonical URLs), the
// simulated roots and policy; the printed `proofline verify` command reproduces the recorded
// verdict offline, the policy beside it makes it affirming, and `collect --tee replay:DIR`
// re-emits the evidence.
func TestRecordSimulated(t *testing.T) {
	for _, c := range []struct{ tee, platform string }{{"sim-tdx", "tdx"}, {"sim-snp", "sev-snp"}} {
		t.Run(c.tee, func(t *testing.T) {
			plat, platFile := simPlatforms(t)
			v := newFakeVendors(t, plat)
			dir := filepath.Join(t.TempDir(), "rec")
			e := noTEE()
			e.clock = v.clock
			at := plat.Now.Add(90 * time.Second).Truncate(time.Second)
			e.now = func() time.Time { return at }

			args := append([]string{"record", "--test-mode", "--tee", c.tee, "--sim-platforms", platFile, "--out", dir}, v.routeArgs()...)
			r := runDriven(t, e, v.clock, args...)
			if r.code != exitOK {
				t.Fatalf("record exited %d:\n%s", r.code, r.stderr)
			}

			evPath := filepath.Join(dir, "evidence.json")
			if fi, err := os.Stat(evPath); err != nil || fi.Mode().Perm() != 0o644 {
				t.Fatalf("evidence: %v, mode %v; want 0644", err, fi.Mode())
			}
			ev := readEvidence(t, evPath)
			if string(ev.Platform) != c.platform || len(ev.Nonce) != attest.NonceSize {
				t.Fatalf("evidence platform %q, nonce %d bytes", ev.Platform, len(ev.Nonce))
			}
			nonce := base64.StdEncoding.EncodeToString(ev.Nonce)

			// The recording holds what the verifier asked for, each document once, by its
			// canonical URL, with the bytes the servers hold: no more, no less.
			recorded := readRecorded(t, dir)
			served := v.served()
			if len(recorded) == 0 || len(recorded) != len(served) {
				t.Fatalf("recorded %d documents, the servers served %v", len(recorded), served)
			}
			for _, rsp := range recorded {
				if served[rsp.URL] != 1 {
					t.Errorf("%s recorded, served %d times", rsp.URL, served[rsp.URL])
				}
				if want := plat.Collateral[rsp.URL]; want == nil || !bytes.Equal(rsp.Body, want.Body) || rsp.Status != http.StatusOK {
					t.Errorf("%s: recorded status %d and a body that is not the server's", rsp.URL, rsp.Status)
				}
			}
			if st := v.kds.Stats(); st.Early != 0 || st.RateLimited != 0 {
				t.Errorf("the fake KDS saw %d early and %d rate-limited requests: the fetcher ignored its budget", st.Early, st.RateLimited)
			}
			entries, _ := os.ReadDir(filepath.Join(dir, "collateral"))
			if len(entries) != 1 {
				t.Errorf("collateral/ holds %d entries, want recorded.json only", len(entries))
			}

			sum := sha256.Sum256(ev.Report)
			for _, want := range []string{
				"TEST MODE", "recorded " + c.platform + " evidence",
				"report sha256:" + hex.EncodeToString(sum[:]),
				nonce + " (random: no --nonce was given)",
				strconv.Itoa(len(recorded)) + " collateral documents",
				"verdict:    warning at " + at.Format(time.RFC3339) + " with the default policy and the simulated roots",
				"no_reference_values",
			} {
				if !strings.Contains(r.stderr, want) {
					t.Errorf("the summary lacks %q:\n%s", want, r.stderr)
				}
			}

			// The printed command, run as printed, reproduces the verdict offline.
			cmd := verifyCommand(t, r.stderr)
			want := []string{"proofline", "verify", "--evidence", evPath, "--collateral", filepath.Join(dir, "collateral"),
				"--roots", filepath.Join(dir, "roots"), "--nonce", nonce, "--at", at.Format(time.RFC3339)}
			if !slices.Equal(cmd, want) {
				t.Fatalf("command %q\nwant    %q", cmd, want)
			}
			res, code := runVerify(t, cmd[1:]...)
			if code != 0 || res.Status != "warning" || !res.TestRoots || res.Platform != c.platform {
				t.Fatalf("the printed command: exit %d, %+v; want warning (the default policy pins nothing)", code, res)
			}
			// With the simulated platforms' policy, the recording is affirming.
			res, code = runVerify(t, append(cmd[1:], "--policy", filepath.Join(dir, "policy.yaml"))...)
			if code != 0 || res.Status != "affirming" {
				t.Fatalf("with the policy: exit %d, %+v; want affirming", code, res)
			}

			// replay:DIR re-emits the recording, and its command verifies it from DIR.
			out := filepath.Join(t.TempDir(), "replayed.json")
			r = runAgent(t, noTEE(), "collect", "--tee", "replay:"+dir, "--nonce", nonce, "--out", out)
			if r.code != exitOK {
				t.Fatalf("replay: exit %d: %s", r.code, r.stderr)
			}
			a, _ := os.ReadFile(evPath)
			b, _ := os.ReadFile(out)
			if !bytes.Equal(a, b) {
				t.Error("the replayed evidence differs from the recording")
			}
			cmd = verifyCommand(t, r.stderr)
			if res, code := runVerify(t, append(cmd[1:], "--at", at.Format(time.RFC3339))...); code != 0 || res.Status != "affirming" {
				t.Fatalf("replay's command %q: exit %d, %+v; want affirming", cmd, code, res)
			}
		})
	}
}

// On the hardware path (`--tee auto` on a fake TDX guest) record collects exactly as collect
// does and appraises with the built-in roots: evidence from fake Intel keys is contraindicated,
// which is still a complete recording (exit 0), and the printed command reproduces that verdict.
func TestRecordHardwarePath(t *testing.T) {
	plat, _ := simPlatforms(t)
	v := newFakeVendors(t, plat)
	dev := fakedevice.NewTDX(plat.Intel)
	e := noTEE()
	e.prober.TSM, e.tdx.TSM = dev.TSM, dev.TSM
	e.clock = v.clock
	at := plat.Now.Add(time.Minute).Truncate(time.Second)
	e.now = func() time.Time { return at }
	dir := filepath.Join(t.TempDir(), "rec")
	nonce := newNonce(t)

	args := append([]string{"record", "--nonce", nonce, "--tpm", "off", "--out", dir}, v.routeArgs()...)
	r := runDriven(t, e, v.clock, args...)
	if r.code != exitOK {
		t.Fatalf("record exited %d:\n%s", r.code, r.stderr)
	}
	ev := readEvidence(t, filepath.Join(dir, "evidence.json"))
	if ev.Platform != attest.PlatformTDX || base64.StdEncoding.EncodeToString(ev.Nonce) != nonce {
		t.Fatalf("evidence platform %q, nonce %x", ev.Platform, ev.Nonce)
	}
	if strings.Contains(r.stderr, "random") || strings.Contains(r.stderr, "TEST MODE") {
		t.Errorf("the summary calls a given nonce random or a hardware recording a test:\n%s", r.stderr)
	}
	if !strings.Contains(r.stderr, "verdict:    contraindicated at "+at.Format(time.RFC3339)+" with the default policy and the built-in vendor roots") {
		t.Errorf("the summary does not give the verdict with the built-in roots:\n%s", r.stderr)
	}
	// The built-in roots do not trust the fake PCK chain, so the verifier stops there and asks
	// for no collateral: an empty recording is the complete one.
	if n := len(readRecorded(t, dir)); n != 0 || len(v.served()) != 0 {
		t.Errorf("recorded %d documents, the servers served %v; want none", n, v.served())
	}
	if _, err := os.Stat(filepath.Join(dir, "roots")); err == nil {
		t.Error("a hardware recording wrote test roots")
	}
	cmd := verifyCommand(t, r.stderr)
	if slices.Contains(cmd, "--roots") {
		t.Errorf("the command %q replaces the built-in roots", cmd)
	}
	if res, code := runVerify(t, cmd[1:]...); code != 1 || res.Status != "contraindicated" || res.TestRoots {
		t.Fatalf("the printed command: exit %d, %+v; want contraindicated with the built-in roots", code, res)
	}
}

// A vendor server failing (500) leaves the collateral incomplete: record names the URL, the
// server and its answer, says what to do, keeps the evidence, prints no reproduce command, and
// exits 1.
func TestRecordFetchFailure(t *testing.T) {
	for _, c := range []struct {
		tee, urlPart string
		server       func(*fakeVendors) *collateraltest.Server
	}{
		{"sim-tdx", "/tdx/certification/v4/tcb?", func(v *fakeVendors) *collateraltest.Server { return v.pcs }},
		{"sim-snp", "/vcek/v1/Genoa/crl", func(v *fakeVendors) *collateraltest.Server { return v.kds }},
	} {
		t.Run(c.tee, func(t *testing.T) {
			plat, platFile := simPlatforms(t)
			v := newFakeVendors(t, plat)
			var failing string
			for _, u := range plat.Collateral.URLs() {
				if strings.Contains(u, c.urlPart) {
					failing = u
				}
			}
			if failing == "" {
				t.Fatalf("the simulated collateral has no URL with %q", c.urlPart)
			}
			srv := c.server(v)
			srv.Inject(collateraltest.Fault{URL: failing, Status: http.StatusInternalServerError})
			e := noTEE()
			e.clock = v.clock
			dir := filepath.Join(t.TempDir(), "rec")
			args := append([]string{"record", "--test-mode", "--tee", c.tee, "--sim-platforms", platFile, "--out", dir}, v.routeArgs()...)
			r := runDriven(t, e, v.clock, args...)
			if r.code != exitFailed {
				t.Fatalf("exit %d, want 1:\n%s", r.code, r.stderr)
			}
			for _, want := range []string{
				"the collateral is incomplete", failing, srv.URL + " answered 500 Internal Server Error",
				"The evidence is kept in " + filepath.Join(dir, "evidence.json"), "Run record again",
			} {
				if !strings.Contains(r.stderr, want) {
					t.Errorf("stderr lacks %q:\n%s", want, r.stderr)
				}
			}
			if strings.Contains(r.stderr, "proofline verify --evidence") {
				t.Errorf("a reproduce command was printed for an incomplete recording:\n%s", r.stderr)
			}
			ev := readEvidence(t, filepath.Join(dir, "evidence.json"))
			if string(ev.Platform) == "" || len(ev.Nonce) != attest.NonceSize {
				t.Fatalf("evidence not kept: %+v", ev)
			}
			for _, rsp := range readRecorded(t, dir) {
				if rsp.URL == failing {
					t.Errorf("the failed URL %s was recorded", failing)
				}
			}
		})
	}
}

// A throttling KDS (429 with Retry-After) is waited out on the injected clock, never in real
// time, and the recording completes.
func TestRecordThrottled(t *testing.T) {
	plat, platFile := simPlatforms(t)
	v := newFakeVendors(t, plat)
	v.kds.Inject(collateraltest.Fault{Status: http.StatusTooManyRequests, RetryAfter: "30"})
	start := v.clock.Now()
	e := noTEE()
	e.clock = v.clock
	dir := filepath.Join(t.TempDir(), "rec")
	args := append([]string{"record", "--test-mode", "--tee", "sim-snp", "--sim-platforms", platFile, "--out", dir}, v.routeArgs()...)
	r := runDriven(t, e, v.clock, args...)
	if r.code != exitOK {
		t.Fatalf("exit %d:\n%s", r.code, r.stderr)
	}
	if waited := v.clock.Now().Sub(start); waited < 30*time.Second {
		t.Errorf("the fetcher came back after %s on the clock, before the Retry-After of 30s", waited)
	}
	if st := v.kds.Stats(); st.Early != 0 || st.Injected != 1 || st.Served != 1 {
		t.Errorf("fake KDS stats %+v; want one 429, then one document, nothing early", st)
	}
	if n := len(readRecorded(t, dir)); n != 1 {
		t.Errorf("recorded %d documents, want 1", n)
	}
}

// Bad flags exit 2 with one line that says what to change, and write nothing.
func TestRecordUsage(t *testing.T) {
	plat, platFile := simPlatforms(t)
	v := newFakeVendors(t, plat)
	notPEM := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(notPEM, []byte("not a certificate\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	sim := func(tee string, extra ...string) []string {
		return append([]string{"--test-mode", "--tee", tee, "--sim-platforms", platFile}, extra...)
	}
	for _, c := range []struct {
		name string
		args []string
		want string
	}{
		{"no out", []string{}, "--out DIR is required"},
		{"replay", []string{"--tee", "replay:x"}, "record collects new evidence"},
		{"nonce not base64", []string{"--nonce", "!!"}, "32-byte nonce"},
		{"sim without test mode", []string{"--tee", "sim-tdx", "--sim-platforms", platFile}, "add --test-mode"},
		{"sim without platforms", []string{"--test-mode", "--tee", "sim-snp", "--kds", v.kds.URL}, "needs --sim-platforms FILE"},
		{"platforms without sim", []string{"--tee", "tdx", "--sim-platforms", platFile}, "--sim-platforms is for"},
		{"sim-snp to the real KDS", sim("sim-snp"), "give --kds URL"},
		{"sim-tdx to the real Intel certificates host", sim("sim-tdx", "--pcs", v.pcs.URL), "give --intel-certs URL"},
		{"pcs not http", sim("sim-tdx", "--pcs", "ftp://pccs/", "--intel-certs", v.pcs.URL), `--pcs "ftp://pccs/": want an absolute http(s) URL`},
		{"kds with a query", sim("sim-snp", "--kds", v.kds.URL+"/?x=1"), "without credentials, query or fragment"},
		{"ca file without PEM", sim("sim-snp", "--kds", v.kds.URL, "--ca-file", notPEM), "holds no PEM certificate"},
		{"bad pcrs", []string{"--tpm-pcrs", "0,0"}, "--tpm-pcrs"},
		{"argument", []string{"extra"}, `unexpected argument "extra"`},
	} {
		t.Run(c.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "rec")
			args := append([]string{"record"}, c.args...)
			if c.name != "no out" {
				args = append([]string{"record", "--out", dir}, c.args...)
			}
			r := runAgent(t, noTEE(), args...)
			if r.code != exitUsage || !strings.Contains(r.stderr, c.want) {
				t.Fatalf("exit %d, stderr %q; want exit 2 with %q", r.code, r.stderr, c.want)
			}
			if _, err := os.Stat(dir); !os.IsNotExist(err) {
				t.Errorf("%s was created despite bad flags", dir)
			}
		})
	}

	// Another recording's file in DIR/collateral would be read together with this one.
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "collateral"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "collateral", "simulated.json"), []byte("[]"), 0o644); err != nil {
		t.Fatal(err)
	}
	r := runAgent(t, noTEE(), append([]string{"record", "--out", dir}, sim("sim-snp", "--kds", v.kds.URL)...)...)
	if r.code != exitUsage || !strings.Contains(r.stderr, "simulated.json, which proofline verify would read together with this recording") {
		t.Fatalf("exit %d, stderr %q", r.code, r.stderr)
	}
	if _, err := os.Stat(filepath.Join(dir, "evidence.json")); !os.IsNotExist(err) {
		t.Error("evidence written despite the refusal")
	}
}

// On a machine without a TEE, record fails as collect does and writes no evidence.
func TestRecordNoTEE(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "rec")
	r := runAgent(t, noTEE(), "record", "--tpm", "off", "--out", dir)
	if r.code != exitFailed || !strings.Contains(r.stderr, "no TDX or SEV-SNP guest interface found") {
		t.Fatalf("exit %d, stderr %q", r.code, r.stderr)
	}
	if _, err := os.Stat(filepath.Join(dir, "evidence.json")); !os.IsNotExist(err) {
		t.Error("evidence written without a TEE")
	}
}
