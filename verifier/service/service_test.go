package service

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/proofline/proofline/evidence"
	"github.com/proofline/proofline/internal/mysqltest"
	"github.com/proofline/proofline/verifier/policy"
	"github.com/proofline/proofline/verifier/service/servicetest"
)

// The service's built-in initial policy is verifier/policy/default.yaml byte for byte.
func TestDefaultPolicyInStep(t *testing.T) {
	_, file, _, _ := runtime.Caller(0)
	want, err := os.ReadFile(filepath.Join(filepath.Dir(file), "..", "policy", "default.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if string(want) != defaultPolicyYAML {
		t.Fatal("defaultPolicyYAML differs from verifier/policy/default.yaml: copy it again")
	}
	p, err := policy.Parse([]byte(defaultPolicyYAML))
	if err != nil || p.Ref() != policy.Default().Ref() {
		t.Fatalf("%v: %v vs %v", err, p.Ref(), policy.Default().Ref())
	}
}

func TestConfigValidate(t *testing.T) {
	for _, c := range []struct {
		name     string
		cfg      Config
		testMode bool
		want     []string // substrings of the error; none: valid
	}{
		{name: "minimal", cfg: Config{DataDir: "/d"}},
		{name: "no data dir", cfg: Config{}, want: []string{"data_dir is required"}},
		{name: "roots need test mode", cfg: Config{DataDir: "/d", Roots: "/r"}, want: []string{"--test-mode"}},
		{name: "roots in test mode", cfg: Config{DataDir: "/d", Roots: "/r"}, testMode: true},
		{name: "database without name", cfg: Config{DataDir: "/d", Database: "root@tcp(127.0.0.1:3306)/"}, want: []string{"names no database"}},
		{name: "fast checkpoints on a database", cfg: Config{DataDir: "/d", Database: "root@tcp(h:3306)/p", Log: LogConfig{CheckpointInterval: 200 * time.Millisecond}}, want: []string{"between 1s and 1m"}},
		{name: "everything wrong", cfg: Config{Log: LogConfig{Origin: "a b"}, Tokens: TokenConfig{TTL: 48 * time.Hour, Audience: []string{""}}, Nonce: NonceConfig{TTL: time.Millisecond}, Queue: QueueConfig{Workers: -1}},
			want: []string{"data_dir", "log.origin", "tokens.ttl", "tokens.audience", "nonce.ttl", "queue.workers"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			checkValidate(t, c.cfg.Validate(c.testMode), c.want)
		})
	}
}

// Test roots are refused outside test mode, whatever brings them.
func TestTestRootsNeedTestMode(t *testing.T) {
	plat, err := servicetest.New(time.Now())
	if err != nil {
		t.Fatal(err)
	}
	_, err = Open(context.Background(), Config{DataDir: t.TempDir()}, Env{Roots: plat.Roots, Collateral: plat.Collateral})
	if err == nil || !strings.Contains(err.Error(), "test mode") {
		t.Fatalf("test roots outside test mode: %v", err)
	}
}

// The policy store, on SQLite and on MariaDB: a fresh store starts with a recorded, active
// policy; creating and activating versions writes policy_change records naming the actor and the
// policy replaced; activating the active version is a conflict; only admins change policies.
func TestPolicies(t *testing.T) {
	for _, backend := range []string{"sqlite", "mariadb"} {
		t.Run(backend, func(t *testing.T) {
			cfg := Config{DataDir: t.TempDir(), Log: LogConfig{CheckpointInterval: 100 * time.Millisecond}}
			if backend == "mariadb" {
				cfg.Database = mysqltest.NewDatabase(t)
				cfg.Log.CheckpointInterval = time.Second
			}
			ctx := context.Background()
			var logs syncBuffer
			env := Env{Logger: slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelWarn}))}
			s, err := Open(ctx, cfg, env)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { s.Close() })
			vs, err := s.ListPolicies(ctx)
			if err != nil || len(vs) != 1 || !vs[0].Active || vs[0].ID != "proofline-default" || vs[0].CreatedBy != "system:bootstrap" {
				t.Fatalf("initial policies: %v %+v", err, vs)
			}
			admin := Principal{Name: "alice", Role: RoleAdmin}
			if _, err := s.CreatePolicy(ctx, Principal{Name: "audrey", Role: RoleAuditor}, []byte("id: x\ntdx: {}\n"), false); !errors.Is(err, ErrForbidden) {
				t.Fatalf("auditor creating a policy: %v", err)
			}
			if _, err := s.CreatePolicy(ctx, admin, []byte("id: x\ntdx: {mrtd: [zz]}\n"), false); !errors.Is(err, ErrMalformed) {
				t.Fatalf("bad policy: %v", err)
			}
			body := []byte("id: fleet\ndescription: v2\ntdx: {}\n")
			v2, err := s.CreatePolicy(ctx, admin, body, false)
			if err != nil || v2.Version != 2 || v2.Active {
				t.Fatalf("create: %v %+v", err, v2)
			}
			if act, _ := s.d.Policies.Active(ctx); act.Version != 1 {
				t.Fatalf("creating activated version %d", act.Version)
			}
			v2, err = s.ActivatePolicy(ctx, admin, 2)
			if err != nil || !v2.Active || v2.ActivatedBy != "admin:alice" {
				t.Fatalf("activate: %v %+v", err, v2)
			}
			if _, err := s.ActivatePolicy(ctx, admin, 2); !errors.Is(err, ErrConflict) {
				t.Fatalf("activating the active version: %v", err)
			}
			if _, err := s.ActivatePolicy(ctx, admin, 9); !errors.Is(err, ErrNotFound) {
				t.Fatalf("activating a missing version: %v", err)
			}
			if act, _ := s.d.Policies.Active(ctx); act.Version != 2 || act.Policy.ID != "fleet" {
				t.Fatalf("active: %+v", act)
			}
			// The change records: the activation names the policy it replaced and the actor.
			_, rec, err := s.Record(ctx, v2.ActivatedRecord)
			if err != nil {
				t.Fatal(err)
			}
			first := vs[0]
			if rec.Kind != evidence.KindPolicyChange || rec.Policy.ID != "fleet" || rec.PolicyChange.Actor != "admin:alice" ||
				rec.PolicyChange.Previous == nil || rec.PolicyChange.Previous.ID != first.ID || "sha256:"+rec.PolicyChange.Previous.Digest.String() != first.Digest {
				t.Fatalf("activation record: %+v %+v", rec, rec.PolicyChange)
			}
			// The policy's exact bytes are in the blob store under its digest.
			d, _ := parseDigest(v2.Digest)
			if b, err := s.Blob(ctx, d); err != nil || string(b) != string(body) {
				t.Fatalf("policy blob: %v", err)
			}
			// A restart keeps the active policy and records nothing new.
			s.Close()
			s, err = Open(ctx, cfg, env)
			if err != nil {
				t.Fatal(err)
			}
			if act, _ := s.d.Policies.Active(ctx); act.Version != 2 {
				t.Fatalf("after restart: version %d", act.Version)
			}
			// The index, written right after each append, may run ahead of the checkpoints;
			// catching up at start-up accepts that.
			if strings.Contains(logs.String(), "index") {
				t.Fatalf("warnings:\n%s", logs.String())
			}
		})
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

// checkValidate fails t unless err, a Config.Validate result, is nil when want is empty, or names
// every string of want.
func checkValidate(t *testing.T, err error, want []string) {
	t.Helper()
	if len(want) == 0 {
		if err != nil {
			t.Fatal(err)
		}
		return
	}
	if err == nil {
		t.Fatal("accepted")
	}
	for _, w := range want {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("%q lacks %q", err, w)
		}
	}
}
