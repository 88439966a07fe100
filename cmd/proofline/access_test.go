package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// startAccessServe runs `proofline serve` (embedded storage, no test mode) with the given token
// principals (name → role and token) until the test ends, and returns its base URL and data dir.
func startAccessServe(t *testing.T, tokens map[string][2]string) (string, string, func()) {
	t.Helper()
	dir := t.TempDir()
	var cfg strings.Builder
	cfg.WriteString("data_dir: " + dir + "\nhttp:\n  listen: 127.0.0.1:0\n  tokens:\n")
	for name, rt := range tokens {
		sum := sha256.Sum256([]byte(rt[1]))
		cfg.WriteString("    - {name: " + name + ", role: " + rt[0] + ", sha256: " + hex.EncodeToString(sum[:]) + "}\n")
	}
	c, err := loadServeConfig(writeConfig(t, cfg.String()))
	if err != nil {
		t.Fatal(err)
	}
	if err := c.validate(false); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	addrc := make(chan net.Addr, 1)
	done := make(chan error, 1)
	go func() { done <- serve(ctx, c, false, slog.New(slog.DiscardHandler), func(a net.Addr) { addrc <- a }) }()
	var addr net.Addr
	select {
	case addr = <-addrc:
	case err := <-done:
		cancel()
		t.Fatalf("serve: %v", err)
	}
	stopped := false
	stop := func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		if err := <-done; err != nil {
			t.Errorf("serve: %v", err)
		}
	}
	t.Cleanup(stop)
	return "http://" + addr.String(), dir, stop
}

func writeAccessTokenFile(t *testing.T, tok string, mode os.FileMode) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(p, []byte(tok+"\n"), mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(p, mode); err != nil {
		t.Fatal(err)
	}
	return p
}

func accessBearerStatus(t *testing.T, base, tok string) int {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, base+"/v1/openapi.yaml", nil)
	req.Header.Set("Authorization", "Bearer "+tok)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// proofline access against a real `proofline serve`: create prints the token once, the token
// works, list shows its last use, revoke makes the next request 401, review writes the export,
// and the log — with its access_change records — passes fsck and an audit bundle round trip.
func TestAccessCLI(t *testing.T) {
	t.Setenv(EnvToken, "")
	t.Setenv(EnvServer, "")
	const adminTok, auditorTok = "cli-admin-token", "cli-auditor-token"
	base, dir, stop := startAccessServe(t, map[string][2]string{"alice": {"admin", adminTok}, "audrey": {"auditor", auditorTok}})
	admin := writeAccessTokenFile(t, adminTok, 0o600)
	common := []string{"--server", base, "--token-file", admin}

	code, out, errOut := runCLI(t, append(append([]string{"access", "token", "create"}, common...), "--name", "vm-cli", "--role", "agent", "--expires-in", "24h")...)
	if code != exitOK || !strings.Contains(errOut, "printed once") {
		t.Fatalf("create: %d\n%s\n%s", code, out, errOut)
	}
	tok := strings.TrimSpace(out)
	if !strings.HasPrefix(tok, "pl_") || strings.Contains(tok, "\n") {
		t.Fatalf("create printed %q, want the token alone", out)
	}
	if got := accessBearerStatus(t, base, tok); got != http.StatusOK {
		t.Fatalf("the created token: %d", got)
	}

	// list, as the auditor through the environment.
	t.Setenv(EnvToken, auditorTok)
	code, out, errOut = runCLI(t, "access", "list", "--server", base)
	if code != exitOK {
		t.Fatalf("list: %d\n%s", code, errOut)
	}
	var id string
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		if len(f) == 9 && f[1] == "vm-cli" {
			id = f[0]
			if f[2] != "agent" || f[3] != "database" || f[5] != "admin:alice" || f[7] == "-" || f[8] != "active" {
				t.Fatalf("list row: %q", line)
			}
		}
	}
	if id == "" || !strings.HasPrefix(out, "ID ") || !strings.Contains(out, "LAST-USED") || !strings.Contains(out, "config:admin:alice") {
		t.Fatalf("list:\n%s", out)
	}
	code, out, _ = runCLI(t, "access", "list", "--server", base, "--json")
	var listed struct {
		Tokens []struct{ ID, Source string } `json:"tokens"`
	}
	if code != exitOK || json.Unmarshal([]byte(out), &listed) != nil || len(listed.Tokens) != 3 {
		t.Fatalf("list --json: %d %s", code, out)
	}
	// The auditor may not change access: the server's 403 is exit 1 with its message.
	code, _, errOut = runCLI(t, "access", "token", "revoke", id, "--server", base)
	if code != 1 || !strings.Contains(errOut, "403") {
		t.Fatalf("revoke as auditor: %d %s", code, errOut)
	}
	t.Setenv(EnvToken, "")

	code, out, errOut = runCLI(t, append([]string{"access", "token", "revoke", id}, common...)...)
	if code != exitOK || !strings.Contains(out, "revoked token "+id) {
		t.Fatalf("revoke: %d\n%s\n%s", code, out, errOut)
	}
	if got := accessBearerStatus(t, base, tok); got != http.StatusUnauthorized {
		t.Fatalf("the revoked token: %d, want 401", got)
	}
	code, _, errOut = runCLI(t, append([]string{"access", "token", "revoke", "config:admin:alice"}, common...)...)
	if code != 1 || !strings.Contains(errOut, "http.tokens") {
		t.Fatalf("revoking a configuration token: %d %s", code, errOut)
	}

	reviewFile := filepath.Join(t.TempDir(), "review.json")
	code, out, errOut = runCLI(t, append(append([]string{"access", "review"}, common...), "--from", time.Now().Add(-time.Hour).UTC().Format(time.RFC3339), "--out", reviewFile)...)
	if code != exitOK || !strings.Contains(out, "2 access changes") {
		t.Fatalf("review: %d\n%s\n%s", code, out, errOut)
	}
	var review struct {
		Changes []struct {
			Action  string `json:"action"`
			TokenID string `json:"token_id"`
		} `json:"changes"`
	}
	if data, err := os.ReadFile(reviewFile); err != nil || json.Unmarshal(data, &review) != nil || len(review.Changes) != 2 || review.Changes[1].Action != "revoke" || review.Changes[1].TokenID != id {
		t.Fatalf("review file: %v %+v", err, review)
	}

	// The log with its access_change records passes fsck and an audit bundle round trip.
	stop()
	if code, out, errOut := runCLI(t, "log", "fsck", "--log", filepath.Join(dir, "log"), "--keys", filepath.Join(dir, "keys", "history.json")); code != exitOK {
		t.Fatalf("log fsck: %d\n%s%s", code, out, errOut)
	}
	bundle := filepath.Join(t.TempDir(), "bundle.tar.gz")
	if code, out, errOut := runCLI(t, "audit", "export", "--data", dir, "--out", bundle, "--quiet"); code != exitOK {
		t.Fatalf("audit export: %d\n%s%s", code, out, errOut)
	}
	code, out, errOut = runCLI(t, "audit", "verify", bundle, "--json", "--quiet")
	var rep struct {
		Pass   bool `json:"pass"`
		Report struct {
			Kinds map[string]int `json:"kinds"`
		} `json:"report"`
	}
	if code != exitOK || json.Unmarshal([]byte(out), &rep) != nil || !rep.Pass || rep.Report.Kinds["access_change"] != 2 {
		t.Fatalf("audit verify: %d\n%.3000s%s", code, out, errOut)
	}
}

// Usage errors say what to change and exit 2 without asking the server; a token is never taken
// from the command line.
func TestAccessCLIUsage(t *testing.T) {
	t.Setenv(EnvToken, "")
	t.Setenv(EnvServer, "")
	good := writeAccessTokenFile(t, "some-token", 0o600)
	for _, c := range []struct {
		name string
		args []string
		want string
	}{
		{"no command", []string{"access"}, "Usage: proofline access"},
		{"unknown command", []string{"access", "grant"}, "unknown command"},
		{"no token", []string{"access", "list"}, EnvToken},
		{"token flag", []string{"access", "list", "--token", "secret"}, "flag provided but not defined"},
		{"readable token file", []string{"access", "list", "--token-file", writeAccessTokenFile(t, "x", 0o644)}, "chmod 600"},
		{"plain http to another host", []string{"access", "list", "--token-file", good, "--server", "http://verifier.example.com"}, "https://"},
		{"bad server", []string{"access", "list", "--token-file", good, "--server", "verifier:8080"}, "not an http(s) URL"},
		{"create without role", []string{"access", "token", "create", "--token-file", good, "--name", "x"}, "--name and --role"},
		{"both expiries", []string{"access", "token", "create", "--token-file", good, "--name", "x", "--role", "agent", "--expires-in", "1h", "--expires-at", "2030-01-01T00:00:00Z"}, "not both"},
		{"revoke without id", []string{"access", "token", "revoke", "--token-file", good}, "ID"},
		{"review without out", []string{"access", "review", "--token-file", good}, "--out"},
		{"review bad time", []string{"access", "review", "--token-file", good, "--out", "x", "--from", "monday"}, "RFC 3339"},
	} {
		t.Run(c.name, func(t *testing.T) {
			code, out, errOut := runCLI(t, c.args...)
			if code != exitUsage || !strings.Contains(errOut, c.want) {
				t.Fatalf("exit %d, stderr %q, want 2 and %q", code, errOut, c.want)
			}
			if out != "" {
				t.Fatalf("stdout: %q", out)
			}
		})
	}
}
