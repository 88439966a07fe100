package main

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-configfs-tsm/configfs/configfsi"
	sevclient "github.com/google/go-sev-guest/client"
	tdxclient "github.com/google/go-tdx-guest/client"
	"github.com/google/go-tpm/tpm2/transport"

	"github.com/proofline/proofline/attest"
	"github.com/proofline/proofline/attest/attesttest/fakedevice"
	"github.com/proofline/proofline/attest/detect"
	"github.com/proofline/proofline/attest/snp"
	"github.com/proofline/proofline/attest/tdx"
	"github.com/proofline/proofline/attest/tpm"
	"github.com/proofline/proofline/verifier"
	"github.com/proofline/proofline/verifier/ear"
	"github.com/proofline/proofline/verifier/policy"
	"github.com/proofline/proofline/verifier/service/servicetest"
)

func absentTSM() (configfsi.Client, error) {
	return nil, &fs.PathError{Op: "stat", Path: tdx.TSMReportPath, Err: fs.ErrNotExist}
}

func absentStat(path string) (fs.FileInfo, error) {
	return nil, &fs.PathError{Op: "stat", Path: path, Err: fs.ErrNotExist}
}

// noTEE is a machine without any guest interface.
func noTEE() *env {
	return &env{
		prober: detect.Prober{TSM: absentTSM, Stat: absentStat},
		tdx: tdx.Collector{TSM: absentTSM, OpenDevice: func(p string) (tdxclient.Device, error) {
			return nil, &fs.PathError{Op: "open", Path: p, Err: fs.ErrNotExist}
		}, CCELPath: "/nonexistent/CCEL"},
		snp: snp.Collector{TSM: absentTSM, OpenDevice: func(p string) (sevclient.Device, error) {
			return nil, &fs.PathError{Op: "open", Path: p, Err: fs.ErrNotExist}
		}},
		openTPM: absentTPM,
		now:     time.Now,
	}
}

// absentTPM is tpm.Open on a machine without a TPM device.
func absentTPM() (transport.TPMCloser, error) {
	return nil, fmt.Errorf("%w: none of [/dev/tpmrm0 /dev/tpm0] exists", tpm.ErrNoTPM)
}

func newNonce(t *testing.T) string {
	t.Helper()
	n := make([]byte, attest.NonceSize)
	rand.Read(n)
	return base64.StdEncoding.EncodeToString(n)
}

type result struct {
	code           int
	stdout, stderr string
}

func runAgent(t *testing.T, e *env, args ...string) result {
	t.Helper()
	var stdout, stderr bytes.Buffer
	code := run(context.Background(), args, &stdout, &stderr, e)
	return result{code, stdout.String(), stderr.String()}
}

func readEvidence(t *testing.T, path string) *attest.Evidence {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	ev, err := attest.DecodeEvidence(data)
	if err != nil {
		t.Fatal(err)
	}
	return ev
}

var (
	buildOnce sync.Once
	proofline string
	buildErr  error
	buildOut  []byte
)

// prooflineBinary builds cmd/proofline once for the package's tests.
func prooflineBinary(t *testing.T) string {
	t.Helper()
	goTool, err := exec.LookPath("go")
	if err != nil {
		goTool = filepath.Join(runtime.GOROOT(), "bin", "go")
		if _, err := os.Stat(goTool); err != nil {
			t.Skip("no go toolchain to build cmd/proofline with")
		}
	}
	buildOnce.Do(func() {
		dir, err := os.MkdirTemp("", "proofline-agent-test")
		if err != nil {
			buildErr = err
			return
		}
		proofline = filepath.Join(dir, "proofline")
		cmd := exec.Command(goTool, "build", "-o", proofline, "github.com/proofline/proofline/cmd/proofline")
		buildOut, buildErr = cmd.CombinedOutput()
	})
	if buildErr != nil {
		t.Fatalf("go build cmd/proofline: %v\n%s", buildErr, buildOut)
	}
	return proofline
}

func TestMain(m *testing.M) {
	code := m.Run()
	if proofline != "" {
		os.RemoveAll(filepath.Dir(proofline))
	}
	os.Exit(code)
}

// verifyCommand returns the `proofline verify` command collect printed.
func verifyCommand(t *testing.T, stderr string) []string {
	t.Helper()
	for _, line := range strings.Split(stderr, "\n") {
		if strings.HasPrefix(line, "proofline verify ") {
			if strings.ContainsAny(line, `'"\`) {
				t.Fatalf("the test cannot split a quoted command: %s", line)
			}
			return strings.Fields(line)
		}
	}
	t.Fatalf("no proofline verify command on stderr:\n%s", stderr)
	return nil
}

// The acceptance path: `proofline-agent collect --test-mode --tee sim-tdx` (and sim-snp)
// writes evidence plus the roots, collateral and policy beside it, and prints a `proofline
// verify` command; running exactly that command with the real proofline binary exits 0 and
// says affirming, with test_roots set.
func TestSimulatedEvidenceVerifiesWithProoflineVerify(t *testing.T) {
	bin := prooflineBinary(t)
	for _, tee := range []string{"sim-tdx", "sim-snp"} {
		t.Run(tee, func(t *testing.T) {
			dir := t.TempDir()
			out := filepath.Join(dir, "evidence.json")
			nonce := newNonce(t)
			r := runAgent(t, noTEE(), "collect", "--test-mode", "--tee", tee, "--nonce", nonce, "--out", out)
			if r.code != exitOK {
				t.Fatalf("collect exited %d: %s", r.code, r.stderr)
			}
			if !strings.Contains(r.stderr, "TEST MODE") {
				t.Errorf("stderr does not warn about test mode:\n%s", r.stderr)
			}
			fi, err := os.Stat(out)
			if err != nil || fi.Mode().Perm() != 0o644 {
				t.Errorf("evidence file: %v, mode %v; want 0644", err, fi.Mode())
			}
			args := verifyCommand(t, r.stderr)
			if !strings.Contains(strings.Join(args, " "), "--nonce "+nonce) || !strings.Contains(strings.Join(args, " "), "--at ") {
				t.Errorf("the command does not pin the nonce and the time: %v", args)
			}
			var stdout, stderr bytes.Buffer
			cmd := exec.Command(bin, args[1:]...)
			cmd.Stdout, cmd.Stderr = &stdout, &stderr
			if err := cmd.Run(); err != nil {
				t.Fatalf("%v: %v\nstdout: %s\nstderr: %s", args, err, stdout.String(), stderr.String())
			}
			var res struct {
				Status    string `json:"status"`
				TestRoots bool   `json:"test_roots"`
				Platform  string `json:"platform"`
			}
			if err := json.Unmarshal(stdout.Bytes(), &res); err != nil {
				t.Fatal(err)
			}
			want := map[string]string{"sim-tdx": "tdx", "sim-snp": "sev-snp"}[tee]
			if res.Status != "affirming" || !res.TestRoots || res.Platform != want {
				t.Fatalf("result %+v, want affirming %s with test roots:\n%s", res, want, stdout.String())
			}

			// The same evidence for another nonce is refused by the same command.
			for i, a := range args {
				if a == "--nonce" {
					args[i+1] = newNonce(t)
				}
			}
			stdout.Reset()
			cmd = exec.Command(bin, args[1:]...)
			cmd.Stdout = &stdout
			if err := cmd.Run(); err == nil || !strings.Contains(stdout.String(), string(ear.CodeNonceMismatch)) {
				t.Fatalf("verify with another nonce: %v\n%s", err, stdout.String())
			}
		})
	}
}

// The simulated platforms are reachable only with --test-mode.
func TestSimulationNeedsTestMode(t *testing.T) {
	out := filepath.Join(t.TempDir(), "evidence.json")
	r := runAgent(t, noTEE(), "collect", "--tee", "sim-tdx", "--nonce", newNonce(t), "--out", out)
	if r.code != exitUsage || !strings.Contains(r.stderr, "--test-mode") {
		t.Fatalf("exit %d, stderr %q; want exit 2 naming --test-mode", r.code, r.stderr)
	}
	if _, err := os.Stat(out); !os.IsNotExist(err) {
		t.Error("evidence written without --test-mode")
	}
}

// On a machine without a TEE, collect and detect fail with the message that names what was
// looked for and what to check, and write nothing (not even a --key file).
func TestNoTEE(t *testing.T) {
	dir := t.TempDir()
	out, key := filepath.Join(dir, "evidence.json"), filepath.Join(dir, "agent.key")
	r := runAgent(t, noTEE(), "collect", "--nonce", newNonce(t), "--out", out, "--key", key)
	want := "no TDX or SEV-SNP guest interface found: looked for /sys/kernel/config/tsm/report (absent), /dev/tdx_guest (absent), /dev/sev-guest (absent)"
	if r.code != exitFailed || !strings.Contains(r.stderr, want) || !strings.Contains(r.stderr, "is this a confidential VM") {
		t.Fatalf("exit %d, stderr %q", r.code, r.stderr)
	}
	for _, p := range []string{out, key} {
		if _, err := os.Stat(p); !os.IsNotExist(err) {
			t.Errorf("%s was written", p)
		}
	}
	r = runAgent(t, noTEE(), "detect")
	if r.code != exitFailed || !strings.Contains(r.stderr, want) || !strings.Contains(r.stdout, "platform: none") {
		t.Fatalf("detect: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}
	// Forcing a platform names that platform's interfaces.
	r = runAgent(t, noTEE(), "collect", "--tee", "sev-snp", "--nonce", newNonce(t), "--out", out)
	if r.code != exitFailed || !strings.Contains(r.stderr, "no SEV-SNP guest interface found") {
		t.Fatalf("--tee sev-snp: exit %d, stderr %q", r.code, r.stderr)
	}
}

// --tee auto on a (fake) confidential VM detects the platform from the configfs-tsm provider
// and collects through the kernel interfaces; the evidence verifies for the nonce.
func TestAutoOnFakeGuest(t *testing.T) {
	plat, err := servicetest.New(time.Now())
	if err != nil {
		t.Fatal(err)
	}
	pol, err := policy.Parse(plat.PolicyYAML)
	if err != nil {
		t.Fatal(err)
	}
	tdxDev, snpDev := fakedevice.NewTDX(plat.Intel), fakedevice.NewSNP(plat.AMD)
	ccel := filepath.Join(t.TempDir(), "CCEL")
	if err := os.WriteFile(ccel, []byte("a CCEL log"), 0o400); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name string
		e    *env
		want attest.Platform
	}{
		{name: "TDX", want: attest.PlatformTDX, e: func() *env {
			e := noTEE()
			e.prober.TSM = tdxDev.TSM
			e.tdx.TSM, e.tdx.CCELPath = tdxDev.TSM, ccel
			return e
		}()},
		{name: "SEV-SNP", want: attest.PlatformSNP, e: func() *env {
			e := noTEE()
			e.prober.TSM = snpDev.TSM
			e.snp.TSM = snpDev.TSM
			return e
		}()},
	} {
		t.Run(c.name, func(t *testing.T) {
			out := filepath.Join(t.TempDir(), "evidence.json")
			nonce := newNonce(t)
			r := runAgent(t, c.e, "collect", "--nonce", nonce, "--out", out)
			if r.code != exitOK {
				t.Fatalf("exit %d: %s", r.code, r.stderr)
			}
			ev := readEvidence(t, out)
			if ev.Platform != c.want {
				t.Fatalf("platform %q, want %q", ev.Platform, c.want)
			}
			if c.want == attest.PlatformTDX {
				if ev.EventLogs == nil || string(ev.EventLogs.CCEL) != "a CCEL log" {
					t.Error("the CCEL event log is not in the evidence")
				}
				// The fake log replays to nothing: appraise the hardware evidence alone.
				ev.EventLogs = nil
			}
			n, _ := base64.StdEncoding.DecodeString(nonce)
			res := verifier.Verify(context.Background(), ev, verifier.Options{Policy: pol, Roots: plat.Roots, Collateral: plat.Collateral, Now: plat.Now, Nonce: n})
			if res.Status != ear.StatusAffirming {
				t.Fatalf("status %s: failures %+v, warnings %+v", res.Status, res.Failures, res.Warnings)
			}
		})
	}
}

// runtime_data is by default the agent's JSON object with a fresh P-256 public key; --key keeps
// that key in a private PKCS#8 file and reuses it; --runtime-data carries a file's exact bytes.
func TestRuntimeData(t *testing.T) {
	dir := t.TempDir()
	collect := func(extra ...string) *attest.Evidence {
		t.Helper()
		out := filepath.Join(dir, "evidence.json")
		r := runAgent(t, noTEE(), append([]string{"collect", "--test-mode", "--tee", "sim-snp", "--nonce", newNonce(t), "--out", out}, extra...)...)
		if r.code != exitOK {
			t.Fatalf("exit %d: %s", r.code, r.stderr)
		}
		return readEvidence(t, out)
	}
	publicKey := func(ev *attest.Evidence) *ecdsa.PublicKey {
		t.Helper()
		rd, err := attest.ParseRuntimeData(ev.RuntimeData)
		if err != nil {
			t.Fatal(err)
		}
		pub, err := x509.ParsePKIXPublicKey(rd.PublicKey)
		if err != nil {
			t.Fatal(err)
		}
		return pub.(*ecdsa.PublicKey)
	}
	if a, b := publicKey(collect()), publicKey(collect()); a.Equal(b) {
		t.Error("two runs without --key used the same key")
	}

	key := filepath.Join(dir, "agent.key")
	first := publicKey(collect("--key", key))
	fi, err := os.Stat(key)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("key file: %v, mode %v; want 0600", err, fi.Mode())
	}
	if second := publicKey(collect("--key", key)); !first.Equal(second) {
		t.Error("--key was not reused")
	}
	if err := os.Chmod(key, 0o644); err != nil {
		t.Fatal(err)
	}
	r := runAgent(t, noTEE(), "collect", "--test-mode", "--tee", "sim-snp", "--nonce", newNonce(t), "--out", filepath.Join(dir, "x.json"), "--key", key)
	if r.code != exitFailed || !strings.Contains(r.stderr, "chmod 600") {
		t.Errorf("a readable key: exit %d, %q", r.code, r.stderr)
	}

	custom := []byte(`{"workload":"batch-7"}`)
	path := filepath.Join(dir, "rt.json")
	if err := os.WriteFile(path, custom, 0o644); err != nil {
		t.Fatal(err)
	}
	if ev := collect("--runtime-data", path); !bytes.Equal(ev.RuntimeData, custom) {
		t.Errorf("runtime_data %q, want %q", ev.RuntimeData, custom)
	}
}

// replay:DIR re-emits DIR/evidence.json for its recorded nonce only, and prints a verify
// command using what DIR holds.
func TestReplay(t *testing.T) {
	rec := t.TempDir()
	nonce := newNonce(t)
	if r := runAgent(t, noTEE(), "collect", "--test-mode", "--tee", "sim-tdx", "--nonce", nonce, "--out", filepath.Join(rec, "evidence.json")); r.code != exitOK {
		t.Fatalf("recording: %s", r.stderr)
	}
	out := filepath.Join(t.TempDir(), "evidence.json")
	r := runAgent(t, noTEE(), "collect", "--tee", "replay:"+rec, "--nonce", nonce, "--out", out)
	if r.code != exitOK {
		t.Fatalf("exit %d: %s", r.code, r.stderr)
	}
	recorded, replayed := readEvidence(t, filepath.Join(rec, "evidence.json")), readEvidence(t, out)
	if !bytes.Equal(recorded.Report, replayed.Report) || !bytes.Equal(recorded.RuntimeData, replayed.RuntimeData) {
		t.Error("the replayed evidence differs from the recording")
	}
	if args := strings.Join(verifyCommand(t, r.stderr), " "); !strings.Contains(args, "--collateral "+filepath.Join(rec, "collateral")) || !strings.Contains(args, "--roots ") {
		t.Errorf("verify command %q does not use the recording's collateral and roots", args)
	}

	other := newNonce(t)
	r = runAgent(t, noTEE(), "collect", "--tee", "replay:"+rec, "--nonce", other, "--out", filepath.Join(t.TempDir(), "e.json"))
	if r.code != exitFailed || !strings.Contains(r.stderr, "was recorded for the nonce "+nonce) || !strings.Contains(r.stderr, "cannot be bound to a new nonce") {
		t.Fatalf("replay for another nonce: exit %d, %q", r.code, r.stderr)
	}
	r = runAgent(t, noTEE(), "collect", "--tee", "replay:"+t.TempDir(), "--nonce", nonce, "--out", out)
	if r.code != exitFailed || !strings.Contains(r.stderr, "evidence.json") {
		t.Fatalf("replay of an empty directory: exit %d, %q", r.code, r.stderr)
	}
}

// Bad flags exit 2 with one line that says what to change, and write nothing.
func TestCollectUsage(t *testing.T) {
	dir := t.TempDir()
	out := filepath.Join(dir, "evidence.json")
	nonce := newNonce(t)
	for _, c := range []struct {
		name string
		args []string
		want string
	}{
		{"no nonce", []string{"--out", out}, "--nonce B64 and --out FILE are required"},
		{"no out", []string{"--nonce", nonce}, "--nonce B64 and --out FILE are required"},
		{"nonce not base64", []string{"--nonce", "!!", "--out", out}, "standard base64"},
		{"short nonce", []string{"--nonce", base64.StdEncoding.EncodeToString([]byte("short")), "--out", out}, "32-byte nonce"},
		{"unknown tee", []string{"--nonce", nonce, "--out", out, "--tee", "sgx"}, `--tee "sgx" is not one of`},
		{"empty replay", []string{"--nonce", nonce, "--out", out, "--tee", "replay:"}, "needs the directory"},
		{"replay with key", []string{"--nonce", nonce, "--out", out, "--tee", "replay:" + dir, "--key", "k"}, "drop --runtime-data and --key"},
		{"key and runtime data", []string{"--nonce", nonce, "--out", out, "--key", "k", "--runtime-data", "r"}, "not both"},
		{"argument", []string{"--nonce", nonce, "--out", out, "extra"}, `unexpected argument "extra"`},
		{"tpm on with a simulated platform", []string{"--nonce", nonce, "--out", out, "--tee", "sim-tdx", "--test-mode", "--tpm", "on"}, "have none: use --tpm auto or off"},
	} {
		t.Run(c.name, func(t *testing.T) {
			r := runAgent(t, noTEE(), append([]string{"collect"}, c.args...)...)
			if r.code != exitUsage || !strings.Contains(r.stderr, c.want) {
				t.Fatalf("exit %d, stderr %q; want exit 2 with %q", r.code, r.stderr, c.want)
			}
		})
	}
	if _, err := os.Stat(out); !os.IsNotExist(err) {
		t.Error("evidence written despite bad flags")
	}
	if r := runAgent(t, noTEE(), "bogus"); r.code != exitUsage {
		t.Errorf("unknown command: exit %d", r.code)
	}
}
