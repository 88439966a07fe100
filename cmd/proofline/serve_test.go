package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/proofline/proofline/attest"
	"github.com/proofline/proofline/verifier/service/servicetest"
)

func writeConfig(t *testing.T, yaml string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "proofline.yaml")
	if err := os.WriteFile(p, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// A configuration that needs changes is refused at start-up with exit 2 and a message naming
// every field to change.
func TestServeConfigErrors(t *testing.T) {
	for _, c := range []struct {
		name, yaml string
		args       []string
		want       []string
	}{
		{name: "unknown key", yaml: "data_dir: /tmp/x\nlisten: :80\n", want: []string{`field listen not found`}},
		{name: "test roots without test mode", yaml: "data_dir: /tmp/x\nroots: testdata/fake/tdx-v4/roots\n", want: []string{"--test-mode"}},
		{name: "several problems", yaml: "data_dir: /tmp/x\nnonce: {ttl: 2h}\nhttp:\n  tls: {cert_file: a.pem}\n  tokens: [{name: bob, role: root, sha256: abc}]\n",
			want: []string{"nonce.ttl", "http.tls", `role "root"`, "http.tokens[0] (bob): sha256"}},
		// yaml.v3 stops at "---": the TLS section after it would be dropped, and the verifier
		// would serve plain HTTP.
		{name: "second YAML document", yaml: "data_dir: /tmp/x\n---\nhttp:\n  tls: {cert_file: a.pem, key_file: a.key}\n", want: []string{"more than one YAML document"}},
		// One token, its hash in lower- and upper-case hex: it would authenticate as the admin.
		{name: "token listed twice in another spelling", yaml: "data_dir: /tmp/x\nhttp:\n  tokens:\n    - {name: viewer, role: auditor, sha256: " + strings.Repeat("ab", 32) + "}\n    - {name: root, role: admin, sha256: " + strings.Repeat("AB", 32) + "}\n",
			want: []string{"http.tokens[1] (root): the same token is listed twice"}},
		{name: "bad database", yaml: "data_dir: /tmp/x\ndatabase: \"root@tcp(127.0.0.1:3306)\"\n", want: []string{"database"}},
		{name: "bad log level", yaml: "data_dir: /tmp/x\nlog_level: loud\n", want: []string{"log_level"}},
		{name: "collateral dir and fetch", yaml: "data_dir: /tmp/x\ncollateral:\n  dir: /tmp/c\n  fetch: {enabled: true}\n", want: []string{"either dir"}},
		{name: "collateral key misspelt", yaml: "data_dir: /tmp/x\ncollateral:\n  fetch: {enabled: true, intel_updat: early}\n", want: []string{`unknown key "intel_updat" in collateral.fetch`}},
		{name: "collateral route", yaml: "data_dir: /tmp/x\ncollateral:\n  fetch:\n    enabled: true\n    routes: [{prefix: \"https://kdsintf.amd.com/\", base: \"https://mirror\"}]\n", want: []string{`must end in "/"`}},
	} {
		t.Run(c.name, func(t *testing.T) {
			var out, errb bytes.Buffer
			args := append([]string{"serve", "--config", writeConfig(t, c.yaml)}, c.args...)
			if code := run(context.Background(), args, &out, &errb); code != exitUsage {
				t.Fatalf("exit %d, stderr %s", code, errb.String())
			}
			for _, w := range c.want {
				if !strings.Contains(errb.String(), w) {
					t.Errorf("stderr lacks %q:\n%s", w, errb.String())
				}
			}
			if out.Len() != 0 {
				t.Errorf("stdout: %s", out.String())
			}
		})
	}
}

// proofline serve starts on embedded defaults (files and SQLite in the data directory, the
// built-in vendor roots), answers, reports itself degraded (no collateral, no reference values),
// and shuts down gracefully when its context ends; a second start reuses the same keys and log.
func TestServeLifecycle(t *testing.T) {
	dir := t.TempDir()
	tok := "serve-test-token"
	sum := sha256.Sum256([]byte(tok))
	cfgPath := writeConfig(t, "data_dir: "+dir+"\nlog_format: text\nhttp:\n  listen: 127.0.0.1:0\n  tokens:\n    - {name: audrey, role: auditor, sha256: "+hex.EncodeToString(sum[:])+"}\n")
	var firstKeys []byte
	for range 2 {
		cfg, err := loadServeConfig(cfgPath)
		if err != nil {
			t.Fatal(err)
		}
		if err := cfg.validate(false); err != nil {
			t.Fatal(err)
		}
		var logBuf bytes.Buffer
		logs := &syncWriter{w: &logBuf}
		ctx, cancel := context.WithCancel(context.Background())
		addrc := make(chan net.Addr, 1)
		done := make(chan error, 1)
		go func() {
			done <- serve(ctx, cfg, false, slog.New(slog.NewTextHandler(logs, nil)), func(a net.Addr) { addrc <- a })
		}()
		var addr net.Addr
		select {
		case addr = <-addrc:
		case err := <-done:
			t.Fatalf("serve: %v", err)
		}
		base := "http://" + addr.String()
		get := func(path string, auth bool) (int, []byte) {
			req, _ := http.NewRequest(http.MethodGet, base+path, nil)
			if auth {
				req.Header.Set("Authorization", "Bearer "+tok)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			b, _ := io.ReadAll(resp.Body)
			return resp.StatusCode, b
		}
		if code, b := get("/healthz", false); code != http.StatusOK {
			t.Fatalf("healthz: %d %s", code, b)
		}
		code, b := get("/readyz", false)
		var ready struct {
			Status   string   `json:"status"`
			Warnings []string `json:"warnings"`
		}
		if err := json.Unmarshal(b, &ready); code != http.StatusOK || err != nil || ready.Status != "degraded" || !strings.Contains(strings.Join(ready.Warnings, "\n"), "collateral") {
			t.Fatalf("readyz: %d %s", code, b)
		}
		if code, b := get("/metrics", true); code != http.StatusOK || !bytes.Contains(b, []byte("proofline_http_requests_total")) || !bytes.Contains(b, []byte("go_goroutines")) {
			t.Fatalf("metrics: %d", code)
		}
		code, keys := get("/v1/keys", true)
		if code != http.StatusOK {
			t.Fatalf("keys: %d %s", code, keys)
		}
		if firstKeys == nil {
			firstKeys = keys
		} else if !bytes.Equal(firstKeys, keys) {
			t.Fatalf("the second start has other keys:\n%s\n%s", firstKeys, keys)
		}
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Fatalf("serve after shutdown: %v", err)
			}
		case <-time.After(30 * time.Second):
			t.Fatal("serve did not stop")
		}
		logs.mu.Lock()
		text := logBuf.String()
		logs.mu.Unlock()
		if !strings.Contains(text, "proofline verifier stopped") || strings.Contains(text, tok) {
			t.Fatalf("logs:\n%s", text)
		}
	}
	// The data directory is what `proofline log fsck` reads: every record verifies.
	var out, errb bytes.Buffer
	if code := run(context.Background(), []string{"log", "fsck", "--log", filepath.Join(dir, "log"), "--keys", filepath.Join(dir, "keys", "history.json")}, &out, &errb); code != 0 {
		t.Fatalf("log fsck: %d\n%s%s", code, out.String(), errb.String())
	}
	for _, name := range []string{"log/note.key", "log/note.pub", "keys/signing-key.pem", "keys/history.json", "token-key.pem", "nonce-secret", "nonces.db", "index.db", "blobs", "policies.db"} {
		if _, err := os.Stat(filepath.Join(dir, name)); err != nil {
			t.Errorf("data dir: %v", err)
		}
	}
}

// syncWriter serialises writes from the service's goroutines.
type syncWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (s *syncWriter) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.w.Write(p)
}

// serve --test-mode writes its simulated platforms' fake keys to the data directory (mode 0600);
// evidence signed with the platforms read back from that file is affirmed by that verifier,
// which is what `proofline-agent run --test-mode --sim-platforms` relies on.
func TestServeTestModeWritesSimulatedPlatforms(t *testing.T) {
	dir := t.TempDir()
	tok := "serve-test-agent-token"
	sum := sha256.Sum256([]byte(tok))
	cfg, err := loadServeConfig(writeConfig(t, "data_dir: "+dir+"\nhttp:\n  listen: 127.0.0.1:0\n  tokens:\n    - {name: vm-1, role: agent, sha256: "+hex.EncodeToString(sum[:])+"}\n"))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	addrc := make(chan net.Addr, 1)
	done := make(chan error, 1)
	go func() {
		done <- serve(ctx, cfg, true, slog.New(slog.DiscardHandler), func(a net.Addr) { addrc <- a })
	}()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("serve: %v", err)
		}
	}()
	var addr net.Addr
	select {
	case addr = <-addrc:
	case err := <-done:
		t.Fatalf("serve: %v", err)
	}
	path := filepath.Join(dir, servicetest.FileName)
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("%s: %v, mode %v; want 0600", path, err, fi.Mode())
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	plat, err := servicetest.Unmarshal(data)
	if err != nil {
		t.Fatal(err)
	}
	do := func(method, p string, body []byte) []byte {
		req, _ := http.NewRequest(method, "http://"+addr.String()+p, bytes.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+tok)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("%s %s: %d %s", method, p, resp.StatusCode, b)
		}
		return b
	}
	for _, platform := range []attest.Platform{attest.PlatformTDX, attest.PlatformSNP} {
		var ch struct {
			Nonce []byte `json:"nonce"`
		}
		if err := json.Unmarshal(do(http.MethodGet, "/v1/challenge", nil), &ch); err != nil {
			t.Fatal(err)
		}
		ev, err := plat.Evidence(platform, ch.Nonce, servicetest.RuntimeData("vm-1"), servicetest.FaultNone)
		if err != nil {
			t.Fatal(err)
		}
		var res struct {
			Status string `json:"status"`
		}
		if err := json.Unmarshal(do(http.MethodPost, "/v1/attest", ev), &res); err != nil || res.Status != "affirming" {
			t.Fatalf("%s: %v %+v", platform, err, res)
		}
	}
}

// The collateral key takes the earlier plain-directory form and the mapping with live fetching;
// with fetch enabled, serve keeps its cache in DATA_DIR/collateral-cache and reports a
// collateral source in /readyz.
func TestServeCollateralForms(t *testing.T) {
	for _, c := range []struct{ name, yaml string }{
		{"recorded directory", "collateral: ../../testdata/fake/tdx-v4/collateral\n"},
		{"recorded directory in a mapping", "collateral: {dir: ../../testdata/fake/tdx-v4/collateral}\n"},
		{"live", "collateral:\n  fetch:\n    enabled: true\n    routes: [{prefix: \"https://api.trustedservices.intel.com/\", base: \"https://127.0.0.1:1/\"}]\n"},
	} {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			cfg, err := loadServeConfig(writeConfig(t, "data_dir: "+dir+"\nhttp: {listen: 127.0.0.1:0}\n"+c.yaml))
			if err != nil {
				t.Fatal(err)
			}
			if err := cfg.validate(false); err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithCancel(context.Background())
			addrc := make(chan net.Addr, 1)
			done := make(chan error, 1)
			go func() { done <- serve(ctx, cfg, false, slog.New(slog.DiscardHandler), func(a net.Addr) { addrc <- a }) }()
			var addr net.Addr
			select {
			case addr = <-addrc:
			case err := <-done:
				t.Fatalf("serve: %v", err)
			}
			resp, err := http.Get("http://" + addr.String() + "/readyz")
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK || bytes.Contains(b, []byte("no_collateral_source")) {
				t.Fatalf("readyz: %d %s", resp.StatusCode, b)
			}
			cancel()
			if err := <-done; err != nil {
				t.Fatalf("serve: %v", err)
			}
			_, err = os.Stat(filepath.Join(dir, "collateral-cache", "urls"))
			if live := strings.Contains(c.yaml, "fetch"); live != (err == nil) {
				t.Fatalf("collateral cache directory: %v (live %v)", err, live)
			}
		})
	}
}
