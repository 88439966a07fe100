// Package agenttest runs a Proofline verifier in-process for the agent's tests and load
// generators: the real service (verifier/service) and HTTP API (verifier/api) on a data
// directory, in test mode, appraising servicetest's simulated platforms, on a localhost
// listener that can be stopped and restarted on the same address and data directory.
//
// Test material only: the verifier trusts fake vendor roots.
package agenttest

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"golang.org/x/mod/sumdb/note"
	"k8s.io/klog/v2"

	"github.com/proofline/proofline/evidence"
	evlog "github.com/proofline/proofline/evidence/log"
	"github.com/proofline/proofline/verifier/api"
	"github.com/proofline/proofline/verifier/service"
	"github.com/proofline/proofline/verifier/service/servicetest"
)

// Token is the API token of the agent named name: fixed, so a restarted verifier knows it.
func Token(name string) string {
	sum := sha256.Sum256([]byte("proofline agenttest token " + name))
	return base64.RawURLEncoding.EncodeToString(sum[:])
}

// Options shape a verifier.
type Options struct {
	// DataDir is the verifier's data directory. Required.
	DataDir string
	// Platforms are the simulated platforms it trusts. Required.
	Platforms *servicetest.Platforms
	// Policy is the verifier's policy (YAML); nil means Platforms.PolicyYAML.
	Policy []byte
	// Agents are the names of the agents (role agent) whose Token it accepts.
	Agents []string
	// Queue sizes the admission queue (zero values: the service's defaults, 8 workers and 64
	// waiting).
	Queue service.QueueConfig
	// Addr is the address to listen on; default 127.0.0.1:0.
	Addr string
	// Logger receives the verifier's log; nil discards.
	Logger *slog.Logger
}

// Tessera logs through klog, process-wide: it goes to the logger of the first Start.
var klogOnce sync.Once

// Verifier is a running (or stopped) in-process verifier.
type Verifier struct {
	o      Options
	mu     sync.Mutex
	addr   string
	cancel context.CancelFunc
	done   chan error
}

// Start starts a verifier.
func Start(o Options) (*Verifier, error) {
	if o.DataDir == "" || o.Platforms == nil {
		return nil, errors.New("agenttest: Options.DataDir and Platforms are required")
	}
	if o.Addr == "" {
		o.Addr = "127.0.0.1:0"
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	klogOnce.Do(func() { klog.SetSlogLogger(o.Logger.With("component", "tessera")) })
	v := &Verifier{o: o, addr: o.Addr}
	if err := v.Restart(); err != nil {
		return nil, err
	}
	return v, nil
}

// URL is the verifier's base URL.
func (v *Verifier) URL() string {
	v.mu.Lock()
	defer v.mu.Unlock()
	return "http://" + v.addr
}

// Restart starts the verifier again on the same address and data directory after Stop.
func (v *Verifier) Restart() error {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.cancel != nil {
		return errors.New("agenttest: the verifier is running")
	}
	ctx := context.Background()
	tokens := make([]api.TokenConfig, 0, len(v.o.Agents))
	for _, name := range v.o.Agents {
		sum := sha256.Sum256([]byte(Token(name)))
		tokens = append(tokens, api.TokenConfig{Name: name, Role: service.RoleAgent, SHA256: hex.EncodeToString(sum[:])})
	}
	cfg := service.Config{DataDir: v.o.DataDir, Log: service.LogConfig{CheckpointInterval: 100 * time.Millisecond}, Queue: v.o.Queue}
	plat := v.o.Platforms
	pol := v.o.Policy
	if pol == nil {
		pol = plat.PolicyYAML
	}
	svc, err := service.Open(ctx, cfg, service.Env{
		TestMode: true, Logger: v.o.Logger, Roots: plat.Roots, Collateral: plat.Collateral, InitialPolicy: pol,
	})
	if err != nil {
		return err
	}
	svc.Start()
	srv, err := api.New(svc, api.Config{Tokens: tokens, ShutdownTimeout: 5 * time.Second}, api.Options{Logger: v.o.Logger})
	if err != nil {
		svc.Close()
		return err
	}
	ln, err := net.Listen("tcp", v.addr)
	if err != nil {
		svc.Close()
		return fmt.Errorf("agenttest: listening on %s again: %w", v.addr, err)
	}
	v.addr = ln.Addr().String()
	sctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() {
		err := srv.Serve(sctx, ln)
		done <- errors.Join(err, svc.Close())
	}()
	v.cancel, v.done = cancel, done
	return nil
}

// Stop shuts the verifier down (gracefully: requests in flight finish, the log is closed with
// a checkpoint covering every record) and returns its error.
func (v *Verifier) Stop() error {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.cancel == nil {
		return nil
	}
	v.cancel()
	err := <-v.done
	v.cancel, v.done = nil, nil
	return err
}

// Record is one attestation record of the log, as Fsck read it.
type Record struct {
	Index   uint64
	Subject string
	Status  string
}

// Fsck checks the whole evidence log of a data directory (stopped verifier) as
// `proofline log fsck` does: the tree, the checkpoint signature and every record's signature
// against the key history; it returns the attestation records.
func Fsck(ctx context.Context, dataDir string) ([]Record, error) {
	logDir := filepath.Join(dataDir, service.LogDirName)
	pub, err := os.ReadFile(filepath.Join(logDir, "note.pub"))
	if err != nil {
		return nil, err
	}
	nv, err := note.NewVerifier(strings.TrimSpace(string(pub)))
	if err != nil {
		return nil, err
	}
	keys, err := evidence.LoadKeyHistory(filepath.Join(dataDir, service.KeysDirName, service.KeyHistoryFileName))
	if err != nil {
		return nil, err
	}
	var recs []Record
	_, err = evlog.Fsck(ctx, evlog.NewPOSIXReader(logDir), nv, func(i uint64, leaf []byte) error {
		r, _, err := evidence.Open(leaf, keys)
		if err != nil {
			return err
		}
		if r.Kind != evidence.KindAttestation {
			return nil
		}
		rec := Record{Index: i}
		if r.Subject != nil {
			rec.Subject = r.Subject.ID
		}
		rec.Status = statusOf(r.Result)
		recs = append(recs, rec)
		return nil
	})
	return recs, err
}

func statusOf(result []byte) string {
	var r struct {
		Status string `json:"status"`
	}
	json.Unmarshal(result, &r)
	return r.Status
}
