package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-tpm/tpm2/transport"

	"github.com/proofline/proofline/attest/attesttest/fakedevice"
	"github.com/proofline/proofline/attest/attesttest/faketpm"
	"github.com/proofline/proofline/internal/agent/agenttest"
	"github.com/proofline/proofline/verifier/service/servicetest"
)

// hangGuard bounds waits for another process or goroutine; it only stops a hang.
const hangGuard = 60 * time.Second

// run refuses what cannot work, before touching anything, with exit 2 and what to change.
func TestRunRefuses(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "agent.yaml")
	os.WriteFile(cfg, []byte("verifier: {url: http://127.0.0.1:1, token_file: "+filepath.Join(dir, "token")+"}\nsocket: {path: "+filepath.Join(dir, "s.sock")+"}\nkey_file: "+filepath.Join(dir, "key.pem")+"\n"), 0o600)
	cfgTPMOn := filepath.Join(dir, "agent-tpm-on.yaml")
	os.WriteFile(cfgTPMOn, []byte("verifier: {url: http://127.0.0.1:1, token_file: "+filepath.Join(dir, "token")+"}\nsocket: {path: "+filepath.Join(dir, "s.sock")+"}\nkey_file: "+filepath.Join(dir, "key.pem")+"\ntpm: {mode: on}\n"), 0o600)
	for _, c := range []struct {
		name string
		args []string
		want string
	}{
		{"no config", []string{}, "--config FILE is required"},
		{"replay", []string{"--config", cfg, "--tee", "replay:" + dir}, "cannot answer the verifier's fresh nonce"},
		{"simulation without test mode", []string{"--config", cfg, "--tee", "sim-tdx"}, "needs --test-mode"},
		{"simulation without platforms", []string{"--config", cfg, "--tee", "sim-tdx", "--test-mode"}, "needs --sim-platforms FILE"},
		{"platforms without simulation", []string{"--config", cfg, "--tee", "tdx", "--sim-platforms", "x"}, "--sim-platforms is for"},
		{"simulation with tpm.mode on", []string{"--config", cfgTPMOn, "--tee", "sim-tdx", "--test-mode", "--sim-platforms", "x"}, "the simulated platforms (tee sim-tdx) have none"},
		{"missing file", []string{"--config", filepath.Join(dir, "none.yaml")}, "no such file"},
		{"argument", []string{"--config", cfg, "now"}, `unexpected argument "now"`},
	} {
		t.Run(c.name, func(t *testing.T) {
			r := runAgent(t, noTEE(), append([]string{"run"}, c.args...)...)
			if r.code != exitUsage || !strings.Contains(r.stderr, c.want) {
				t.Fatalf("exit %d, stderr %q; want exit 2 with %q", r.code, r.stderr, c.want)
			}
		})
	}
	if _, err := os.Stat(filepath.Join(dir, "key.pem")); !os.IsNotExist(err) {
		t.Error("a refused run created the key")
	}
}

// The README's example configuration is valid as written.
func TestREADMEConfig(t *testing.T) {
	readme, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, rest, ok := bytes.Cut(readme, []byte("```yaml\n"))
	block, _, ok2 := bytes.Cut(rest, []byte("```"))
	if !ok || !ok2 {
		t.Fatal("README.md has no yaml block")
	}
	p := filepath.Join(t.TempDir(), "agent.yaml")
	os.WriteFile(p, block, 0o600)
	if err := checkConfigFile(p); err != nil {
		t.Fatalf("the README's configuration: %v", err)
	}
}

// Acceptance 2 across processes: `proofline serve --test-mode` (the real binary) writes its
// simulated platforms to its data dir; `proofline-agent run --test-mode --tee sim-tdx
// --sim-platforms DATA_DIR/simulated-platforms.json` signs with the same fake keys, attests, and
// serves the affirming token on its socket. The verifier is then killed (SIGKILL) mid-run: the
// agent's next round fails and it backs off; the verifier restarts on the same data dir and
// address (with new fake keys, which the agent picks up from the file), and the agent recovers
// with a new token. After both stop, `proofline log fsck` passes on the log that lived through
// the kill. The only real wait is the agent's interval, 1 s (the least test mode allows).
func TestRunAgainstProoflineServe(t *testing.T) {
	bin := prooflineBinary(t)
	dir := t.TempDir()
	data := filepath.Join(dir, "verifier")
	token := "agent-run-test-token"
	sum := sha256.Sum256([]byte(token))
	addr := freeAddr(t)
	serveCfg := filepath.Join(dir, "proofline.yaml")
	os.WriteFile(serveCfg, []byte(fmt.Sprintf("data_dir: %s\nlog_format: text\nhttp:\n  listen: %s\n  tokens:\n    - {name: vm-1, role: agent, sha256: %s}\n", data, addr, hex.EncodeToString(sum[:]))), 0o600)
	platforms := filepath.Join(dir, "verifier", servicetest.FileName)
	srv := startServe(t, bin, serveCfg, addr, platforms)

	tokenFile := filepath.Join(dir, "token")
	os.WriteFile(tokenFile, []byte(token+"\n"), 0o600)
	sock := filepath.Join(dir, "agent.sock")
	agentCfg := filepath.Join(dir, "agent.yaml")
	os.WriteFile(agentCfg, []byte(fmt.Sprintf("verifier: {url: http://%s, token_file: %s}\nkey_file: %s\nsocket: {path: %s}\ninterval: 1s\njitter: 0\nbackoff: {initial: 100ms, max: 1s}\n",
		addr, tokenFile, filepath.Join(dir, "key.pem"), sock)), 0o600)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var stderr syncBuffer
	exited := make(chan int, 1)
	go func() {
		exited <- run(ctx, []string{"run", "--config", agentCfg, "--test-mode", "--tee", "sim-tdx", "--sim-platforms", platforms}, io.Discard, &stderr, noTEE())
	}()
	client := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", sock)
	}}}
	type tokenAnswer struct {
		Token    string `json:"token"`
		Status   string `json:"status"`
		LogIndex uint64 `json:"log_index"`
	}
	tokenAfter := func(after int64) tokenAnswer {
		t.Helper()
		var tok tokenAnswer
		waitFor(t, "the agent's socket to serve a new token", func() bool {
			resp, err := client.Get("http://agent/v1/token")
			if err != nil {
				return false
			}
			defer resp.Body.Close()
			return resp.StatusCode == http.StatusOK && json.NewDecoder(resp.Body).Decode(&tok) == nil && int64(tok.LogIndex) > after
		}, nil)
		if tok.Status != "affirming" || tok.Token == "" {
			t.Fatalf("token %+v\nagent log:\n%s", tok, stderr.String())
		}
		return tok
	}
	first := tokenAfter(-1)

	if err := srv.kill(); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the agent to fail against the killed verifier", func() bool {
		return strings.Contains(stderr.String(), "attestation failed; retrying")
	}, nil)
	srv = startServe(t, bin, serveCfg, addr, platforms)
	second := tokenAfter(int64(first.LogIndex))

	cancel()
	select {
	case code := <-exited:
		if code != exitOK {
			t.Fatalf("run exited %d:\n%s", code, stderr.String())
		}
	case <-time.After(hangGuard):
		t.Fatal("run did not stop")
	}
	if err := srv.stop(); err != nil {
		t.Fatalf("proofline serve: %v\n%s", err, srv.log.String())
	}
	logText := stderr.String()
	for _, want := range []string{"TEST MODE", "msg=attested", "local API listening", "connection refused", "the verifier answers again"} {
		if !strings.Contains(logText, want) {
			t.Errorf("the agent's log lacks %q:\n%s", want, logText)
		}
	}
	if strings.Contains(logText, token) || strings.Contains(logText, first.Token) || strings.Contains(logText, second.Token) {
		t.Error("the agent's log holds a token")
	}
	out, err := exec.Command(bin, "log", "fsck", "--log", filepath.Join(data, "log"), "--keys", filepath.Join(data, "keys", "history.json")).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "OK") {
		t.Fatalf("log fsck: %v\n%s", err, out)
	}
}

// serveProcess is a running `proofline serve`.
type serveProcess struct {
	cmd    *exec.Cmd
	log    *syncBuffer
	exited chan error
}

// startServe starts `proofline serve --test-mode` and waits until it answers and has written
// its simulated platforms.
func startServe(t *testing.T, bin, cfg, addr, platforms string) *serveProcess {
	t.Helper()
	os.Remove(platforms) // so that waiting sees this start's file
	p := &serveProcess{log: &syncBuffer{}, exited: make(chan error, 1)}
	p.cmd = exec.Command(bin, "serve", "--test-mode", "--config", cfg)
	p.cmd.Stdout, p.cmd.Stderr = p.log, p.log
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.exited <- p.cmd.Wait() }()
	t.Cleanup(func() { p.cmd.Process.Kill() })
	waitFor(t, "proofline serve to answer /healthz and write its simulated platforms", func() bool {
		if _, err := os.Stat(platforms); err != nil {
			return false
		}
		resp, err := http.Get("http://" + addr + "/healthz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	}, p.exited)
	return p
}

func (p *serveProcess) kill() error {
	p.cmd.Process.Kill()
	select {
	case <-p.exited:
		return nil
	case <-time.After(hangGuard):
		return fmt.Errorf("proofline serve survived SIGKILL")
	}
}

func (p *serveProcess) stop() error {
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-p.exited:
		return err
	case <-time.After(hangGuard):
		p.cmd.Process.Kill()
		return fmt.Errorf("proofline serve did not stop")
	}
}

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// waitFor polls cond until it holds; died, if not nil, reports a process that ended meanwhile.
func waitFor(t *testing.T, what string, cond func() bool, died <-chan error) {
	t.Helper()
	deadline := time.Now().Add(hangGuard)
	for !cond() {
		select {
		case err := <-died:
			t.Fatalf("waiting for %s: the process ended: %v", what, err)
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("waiting for %s: gave up", what)
		}
	}
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// simTPM is the TPM simulator as the device run opens; it counts the closes, since the
// simulator itself is closed by faketpm at the test's end.
type simTPM struct {
	transport.TPM
	closes atomic.Int32
}

func (s *simTPM) Close() error {
	s.closes.Add(1)
	return nil
}

// socketToken is the part of the local API's GET /v1/token answer the tests read.
type socketToken struct {
	Token    string   `json:"token"`
	Status   string   `json:"status"`
	Failures []string `json:"failures"`
	Result   struct {
		Claims struct {
			TPM *struct {
				AKBound bool `json:"ak_bound"`
			} `json:"tpm"`
		} `json:"claims"`
	} `json:"result"`
}

// runUntilAttested starts `proofline-agent run --config cfg`, waits for its socket to serve a
// token, stops it as SIGTERM does and checks that it exited 0. It returns the token and the log.
func runUntilAttested(t *testing.T, e *env, cfg, sock string) (socketToken, string) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var stderr syncBuffer
	exited := make(chan int, 1)
	go func() { exited <- run(ctx, []string{"run", "--config", cfg}, io.Discard, &stderr, e) }()
	client := &http.Client{Transport: &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", sock)
	}}}
	var tok socketToken
	deadline := time.Now().Add(hangGuard)
	for tok.Token == "" {
		select {
		case code := <-exited:
			t.Fatalf("run exited %d before attesting:\n%s", code, stderr.String())
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("no token on the socket:\n%s", stderr.String())
		}
		resp, err := client.Get("http://agent/v1/token")
		if err != nil {
			continue
		}
		if resp.StatusCode == http.StatusOK {
			if err := json.NewDecoder(resp.Body).Decode(&tok); err != nil {
				t.Fatal(err)
			}
		}
		resp.Body.Close()
	}
	cancel()
	select {
	case code := <-exited:
		if code != exitOK {
			t.Fatalf("run exited %d after SIGTERM:\n%s", code, stderr.String())
		}
	case <-time.After(hangGuard):
		t.Fatal("run did not stop")
	}
	return tok, stderr.String()
}

// run adds a vTPM quote, bound through runtime_data, to every evidence it submits, as the
// configuration's tpm section says, and closes the TPM when it stops: against a verifier whose
// policy has a tpm section, the quote is there and bound (no tpm_missing). tpm.mode auto on a VM
// without a TPM still attests (and that policy then says tpm_missing); tpm.mode on without a TPM
// refuses to start, saying what to change.
func TestRunVTPM(t *testing.T) {
	plat, err := servicetest.New(time.Now())
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	pol := append(append([]byte{}, plat.PolicyYAML...), "tpm:\n  pcrs: [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]\n"...)
	v, err := agenttest.Start(agenttest.Options{DataDir: filepath.Join(dir, "verifier"), Platforms: plat, Agents: []string{"vm-1"}, Policy: pol})
	if err != nil {
		t.Fatal(err)
	}
	defer v.Stop()
	tokenFile := filepath.Join(dir, "token")
	if err := os.WriteFile(tokenFile, []byte(agenttest.Token("vm-1")+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	config := func(name, mode string) (cfg, sock string) {
		cfg, sock = filepath.Join(dir, name+".yaml"), filepath.Join(dir, name+".sock")
		// event_logs off: the quote alone, whatever TCG log this machine publishes.
		text := fmt.Sprintf("verifier: {url: %s, token_file: %s}\ntee: tdx\nkey_file: %s\nsocket: {path: %s}\nevent_logs: false\ntpm: {mode: %s}\n",
			v.URL(), tokenFile, filepath.Join(dir, "key.pem"), sock, mode)
		if err := os.WriteFile(cfg, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
		return cfg, sock
	}
	dev := fakedevice.NewTDX(plat.Intel)
	tdxVM := func() *env {
		e := noTEE()
		e.tdx.TSM = dev.TSM
		return e
	}

	t.Run("on, with a vTPM", func(t *testing.T) {
		sim := &simTPM{TPM: faketpm.New(t).Transport()}
		e := tdxVM()
		e.openTPM = func() (transport.TPMCloser, error) { return sim, nil }
		cfg, sock := config("on", "on")
		tok, logText := runUntilAttested(t, e, cfg, sock)
		if tok.Status != "affirming" || tok.Result.Claims.TPM == nil || !tok.Result.Claims.TPM.AKBound {
			t.Fatalf("want a bound vTPM quote in the appraised evidence; got status %s, failures %v, tpm claims %+v\n%s", tok.Status, tok.Failures, tok.Result.Claims.TPM, logText)
		}
		if !strings.Contains(logText, "vTPM quotes included") || strings.Contains(logText, "not collected yet") {
			t.Errorf("the log does not say that vTPM quotes are included:\n%s", logText)
		}
		if n := sim.closes.Load(); n != 1 {
			t.Errorf("the TPM was closed %d times, want once", n)
		}
	})

	t.Run("auto, without a vTPM", func(t *testing.T) {
		cfg, sock := config("auto", "auto")
		tok, logText := runUntilAttested(t, tdxVM(), cfg, sock)
		if tok.Result.Claims.TPM != nil || !slices.Contains(tok.Failures, "tpm_missing") {
			t.Fatalf("want evidence without a vTPM quote (tpm_missing under this policy); got status %s, failures %v", tok.Status, tok.Failures)
		}
		if !strings.Contains(logText, "no vTPM found") {
			t.Errorf("the log does not say that there is no vTPM:\n%s", logText)
		}
	})

	t.Run("on, without a vTPM", func(t *testing.T) {
		cfg, _ := config("on-absent", "on")
		ctx, cancel := context.WithTimeout(context.Background(), hangGuard)
		defer cancel()
		var stderr bytes.Buffer
		code := run(ctx, []string{"run", "--config", cfg}, io.Discard, &stderr, tdxVM())
		for _, want := range []string{"tpm.mode is on, so a vTPM is required", "no TPM device", "set tpm.mode to auto"} {
			if code != exitFailed || !strings.Contains(stderr.String(), want) {
				t.Fatalf("exit %d, stderr %q; want exit 1 with %q", code, stderr.String(), want)
			}
		}
	})
}
