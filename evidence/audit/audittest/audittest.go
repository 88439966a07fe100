// Package audittest generates evidence logs for tests of the audit bundle, `proofline audit` and
// hack/auditbench: a real verifier service (verifier/service, embedded defaults in a data
// directory, test mode) appraising a simulated fleet of TDX and SEV-SNP VMs
// (verifier/service/servicetest), under a clock the generator advances, so that the log holds
// real records — affirming and contraindicated verdicts, refused nonces, policy changes and
// key-release decisions — with known times.
//
// Everything here is test material: the records say test_roots: true.
package audittest

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"golang.org/x/mod/sumdb/note"

	"github.com/proofline/proofline/attest"
	"github.com/proofline/proofline/evidence"
	evlog "github.com/proofline/proofline/evidence/log"
	"github.com/proofline/proofline/verifier/ear"
	"github.com/proofline/proofline/verifier/service"
	"github.com/proofline/proofline/verifier/service/servicetest"
)

// DefaultStart is the time of the first round when Options.Start is zero.
var DefaultStart = time.Date(2026, 3, 2, 8, 0, 0, 0, time.UTC)

// Options say what log to generate.
type Options struct {
	// Dir is the service's data directory (created).
	Dir string
	// Records is how many records the log holds at least.
	Records int
	// VMs is the fleet size (default 16): every VM attests once per round, concurrently, so that
	// the log's group commit batches them.
	VMs int
	// Start is the time of the first round (default DefaultStart).
	Start time.Time
	// Step is the time between rounds: each VM's attestation interval. Default: 10 minutes, less
	// for long logs so that the whole log fits in 5 days (the simulated SEV-SNP CRLs expire after 7).
	Step time.Duration
	// Offline names VMs that skip rounds: VM name → the rounds [from, to) it misses.
	Offline map[string][2]int
	// Progress, if set, is called after every round.
	Progress func(records, want int)
}

// Log is a generated log.
type Log struct {
	// Dir is the data directory: log/, keys/, blobs/… (verifier/service's layout).
	Dir string
	// RootsDir holds the simulated platforms' vendor roots as *.pem files (roots.ReadDir).
	RootsDir string
	// Platforms are the simulated platforms (their fake PKIs).
	Platforms *servicetest.Platforms
	// VMs are the fleet's VM names; the records' subjects are "agent:" + name.
	VMs []string
	// Start is the time of the first round, Step the time between rounds, Rounds their number.
	Start  time.Time
	Step   time.Duration
	Rounds int
	// Size is the number of records in the log.
	Size uint64
	// PolicyChangeRound is the round from which the second policy version is active.
	PolicyChangeRound int
}

// RoundTime returns the time of round r.
func (l *Log) RoundTime(r int) time.Time { return l.Start.Add(time.Duration(r) * l.Step) }

// Subject returns the record subject of VM name.
func Subject(name string) string { return "agent:" + name }

type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *clock) set(t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = t
}

// fault says what VM v does wrong in round r: every 23rd attestation is a bad report (cycling
// through the servicetest faults) and every 41st resubmits the VM's previous evidence (a replay,
// whose nonce the service refuses).
func fault(r, v, vms int) (servicetest.Fault, bool) {
	n := r*vms + v
	if n%41 == 13 && r > 0 {
		return servicetest.FaultNone, true
	}
	if n%23 == 7 {
		faults := []servicetest.Fault{servicetest.FaultDebug, servicetest.FaultMeasurement, servicetest.FaultSignature, servicetest.FaultNonceBinding}
		return faults[(n/23)%len(faults)], false
	}
	return servicetest.FaultNone, false
}

// Generate runs the service over the simulated fleet until the log holds opts.Records records,
// then closes it (a checkpoint then covers every record). Each round, every VM that is not
// offline asks for a challenge and submits its evidence, all at once; then a relying party
// records a key-release decision relying on one of the round's affirming results; halfway
// through, an admin creates and activates a second policy version.
func Generate(ctx context.Context, opts Options) (*Log, error) {
	if opts.VMs == 0 {
		opts.VMs = 16
	}
	if opts.Start.IsZero() {
		opts.Start = DefaultStart
	}
	rounds := (opts.Records + opts.VMs) / (opts.VMs + 1) // each round: VMs attestations + 1 key release
	if rounds < 1 {
		rounds = 1
	}
	if opts.Step == 0 {
		opts.Step = min(10*time.Minute, (5 * 24 * time.Hour / time.Duration(rounds)).Truncate(time.Second))
	}
	if opts.Step < time.Second || opts.Step%time.Second != 0 {
		return nil, fmt.Errorf("audittest: step %v is not a whole number of seconds", opts.Step)
	}
	plat, err := servicetest.New(opts.Start.Add(-time.Minute))
	if err != nil {
		return nil, err
	}
	l := &Log{Dir: opts.Dir, RootsDir: filepath.Join(opts.Dir, "test-roots"), Platforms: plat, Start: opts.Start, Step: opts.Step}
	if err := os.MkdirAll(l.RootsDir, 0o755); err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(l.RootsDir, "intel.pem"), plat.Intel.RootsPEM(), 0o644); err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(l.RootsDir, "amd-"+servicetest.AMDProductLine+".pem"), plat.AMD.RootsPEM(), 0o644); err != nil {
		return nil, err
	}
	for v := range opts.VMs {
		l.VMs = append(l.VMs, fmt.Sprintf("vm-%02d", v))
	}
	clk := &clock{t: opts.Start}
	svc, err := service.Open(ctx, service.Config{DataDir: opts.Dir, Log: service.LogConfig{CheckpointInterval: 100 * time.Millisecond}, Queue: service.QueueConfig{Size: 2 * opts.VMs}},
		service.Env{TestMode: true, Now: clk.Now, Roots: plat.Roots, Collateral: plat.Collateral, InitialPolicy: plat.PolicyYAML})
	if err != nil {
		return nil, err
	}
	// No svc.Start(): the background index catch-up is not needed here (the index is not part of
	// the log) and, nudged by every index write that races another, it re-reads entry bundles.
	closed := false
	defer func() {
		if !closed {
			svc.Close()
		}
	}()

	admin := service.Principal{Name: "auditor-test-admin", Role: service.RoleAdmin}
	kms := service.Principal{Name: "kms", Role: service.RoleRelyingParty}
	previous := make([][]byte, opts.VMs) // each VM's last evidence, for replays
	records := 1                         // the bootstrap policy_change record
	l.PolicyChangeRound = rounds / 2
	for r := 0; r < rounds && records < opts.Records; r++ {
		clk.set(l.RoundTime(r))
		if r == l.PolicyChangeRound && r > 0 {
			v2 := append(append([]byte(nil), plat.PolicyYAML...), "# version 2: the same pins, re-issued\n"...)
			if _, err := svc.CreatePolicy(ctx, admin, v2, true); err != nil {
				return nil, fmt.Errorf("audittest: round %d: policy change: %w", r, err)
			}
			records += 2
		}
		answers := make([]*service.Attestation, opts.VMs)
		errs := make([]error, opts.VMs)
		attestOne := func(v int, name string) error {
			p := service.Principal{Name: name, Role: service.RoleAgent}
			f, replay := fault(r, v, opts.VMs)
			body := previous[v]
			if !replay || body == nil {
				ch, err := svc.Challenge(ctx, p)
				if err != nil {
					return err
				}
				platform := attest.PlatformTDX
				if v%2 == 1 {
					platform = attest.PlatformSNP
				}
				if body, err = plat.Evidence(platform, ch.Nonce, servicetest.RuntimeData(name), f); err != nil {
					return err
				}
			}
			a, err := svc.Attest(ctx, p, body)
			if err != nil {
				return fmt.Errorf("round %d, %s: %w", r, name, err)
			}
			previous[v], answers[v] = body, a
			return nil
		}
		var wg sync.WaitGroup
		for v, name := range l.VMs {
			if off, ok := opts.Offline[name]; ok && r >= off[0] && r < off[1] {
				continue
			}
			wg.Go(func() { errs[v] = attestOne(v, name) })
		}
		wg.Wait()
		if err := errors.Join(errs...); err != nil {
			return nil, fmt.Errorf("audittest: %w", err)
		}
		for v, a := range answers {
			if a == nil || a.Result.Status != ear.StatusAffirming {
				continue
			}
			d := evidence.Digest(a.RecordSHA256)
			if _, err := svc.RecordKeyRelease(ctx, kms, service.KeyRelease{
				Subject: Subject(l.VMs[v]), Platform: a.Result.Platform, Resource: "db-password",
				Decision: evidence.DecisionRelease, Attestation: &d,
			}); err != nil {
				return nil, fmt.Errorf("audittest: round %d: key release: %w", r, err)
			}
			records++
			break
		}
		for _, a := range answers {
			if a != nil {
				records++
			}
		}
		l.Rounds = r + 1
		if opts.Progress != nil {
			opts.Progress(records, opts.Records)
		}
	}
	closed = true
	if err := svc.Close(); err != nil {
		return nil, err
	}
	size, err := logSize(ctx, opts.Dir)
	if err != nil {
		return nil, err
	}
	l.Size = size
	return l, nil
}

// logSize returns the size of the latest checkpoint of the log in dataDir.
func logSize(ctx context.Context, dataDir string) (uint64, error) {
	v, err := LogVerifier(dataDir)
	if err != nil {
		return 0, err
	}
	return evlog.NewLeafReader(evlog.NewPOSIXReader(filepath.Join(dataDir, service.LogDirName)), v).Size(ctx)
}

// Append signs the record that edit makes of a copy of the record at index (nil edit: a copy of
// it) with the data directory's own record key, and appends it to the log: a record that opens
// against the key history and is included in the log, whatever it says. The service must be
// closed. It returns the new record's index.
func Append(ctx context.Context, dataDir string, index uint64, edit func(*evidence.Record)) (uint64, error) {
	keysDir := filepath.Join(dataDir, service.KeysDirName)
	key, err := evidence.LoadKey(filepath.Join(keysDir, evidence.KeyFileName))
	if err != nil {
		return 0, err
	}
	hist, err := evidence.LoadKeyHistory(filepath.Join(keysDir, service.KeyHistoryFileName))
	if err != nil {
		return 0, err
	}
	lg, err := evlog.OpenPOSIX(ctx, filepath.Join(dataDir, service.LogDirName), evlog.Options{CheckpointInterval: 100 * time.Millisecond})
	if err != nil {
		return 0, err
	}
	leaf, err := lg.Entry(ctx, index)
	if err != nil {
		return 0, errors.Join(err, lg.Close())
	}
	rec, _, err := evidence.Open(leaf, hist)
	if err != nil {
		return 0, errors.Join(err, lg.Close())
	}
	if edit != nil {
		edit(rec)
	}
	signed, err := evidence.Sign(ctx, rec, key)
	if err != nil {
		return 0, errors.Join(err, lg.Close())
	}
	idx, err := lg.Append(ctx, signed)
	if err != nil {
		return 0, errors.Join(err, lg.Close())
	}
	// Close returns once a published checkpoint covers the new record.
	return idx, lg.Close()
}

// LogVerifier returns the note verifier of the log in dataDir (log/note.pub).
func LogVerifier(dataDir string) (note.Verifier, error) {
	vkey, err := os.ReadFile(filepath.Join(dataDir, service.LogDirName, "note.pub"))
	if err != nil {
		return nil, err
	}
	return note.NewVerifier(strings.TrimSpace(string(vkey)))
}
