package service

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/proofline/proofline/verifier/policy"
)

// The policy file in the configuration is activated at the first start only. A later start that
// finds it different from the active policy warns, naming both digests and how to apply it; one
// that finds it equal, or no policy file, does not.
func TestPolicyFileChangedWarns(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	path := filepath.Join(dir, "policy.yaml")
	first := []byte("id: fleet\ndescription: first\ntdx: {}\n")
	edited := []byte("id: fleet\ndescription: edited\ntdx: {}\n")
	cfg := Config{DataDir: filepath.Join(dir, "data"), Policy: path, Log: LogConfig{CheckpointInterval: 100 * time.Millisecond}}
	start := func(body []byte, cfg Config) string {
		t.Helper()
		if body != nil {
			if err := os.WriteFile(path, body, 0o600); err != nil {
				t.Fatal(err)
			}
		}
		var logs syncBuffer
		s, err := Open(ctx, cfg, Env{Logger: slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelWarn}))})
		if err != nil {
			t.Fatal(err)
		}
		s.Close()
		return logs.String()
	}
	digest := func(b []byte) string {
		p, err := policy.Parse(b)
		if err != nil {
			t.Fatal(err)
		}
		return p.Ref().Digest
	}

	if logs := start(first, cfg); strings.Contains(logs, "policy") {
		t.Fatalf("first start:\n%s", logs)
	}
	logs := start(edited, cfg)
	for _, want := range []string{"level=WARN", "differs from the active policy", "configured_digest=" + digest(edited), "active_digest=" + digest(first), "/v1/policies?activate=true"} {
		if !strings.Contains(logs, want) {
			t.Errorf("start with an edited policy file: the log lacks %q:\n%s", want, logs)
		}
	}
	if logs := start(first, cfg); strings.Contains(logs, "policy") {
		t.Fatalf("start with the active policy's file:\n%s", logs)
	}
	cfg.Policy = ""
	if logs := start(nil, cfg); strings.Contains(logs, "policy") {
		t.Fatalf("start without a policy file:\n%s", logs)
	}
}
