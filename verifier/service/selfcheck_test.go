package service

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/mod/sumdb/note"

	"github.com/proofline/proofline/attest"
	"github.com/proofline/proofline/evidence/log"
	"github.com/proofline/proofline/verifier/alert"
	"github.com/proofline/proofline/verifier/collateral/collateraltest"
	"github.com/proofline/proofline/verifier/service/servicetest"
)

// faultyReader injects storage faults into the self-check's reads of a real log (the tests run
// as root, where chmod 000 on a tile does not stop reads, so the fault comes through the
// interface). failFrom and corruptUntil are ReadCheckpoint call counts: the reads made after
// call failFrom fail with EACCES, those up to call corruptUntil see a flipped leaf byte.
type faultyReader struct {
	log.Reader
	mu            sync.Mutex
	checkpoints   int
	failFrom      int // 0: never
	corruptUntil  int
	noCheckpoint  bool
	checkpointErr error
}

func (r *faultyReader) state() (fail, corrupt bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.failFrom > 0 && r.checkpoints >= r.failFrom, r.checkpoints <= r.corruptUntil
}

func (r *faultyReader) set(f func(r *faultyReader)) {
	r.mu.Lock()
	defer r.mu.Unlock()
	f(r)
}

func (r *faultyReader) ReadCheckpoint(ctx context.Context) ([]byte, error) {
	r.mu.Lock()
	r.checkpoints++
	no := r.noCheckpoint
	r.mu.Unlock()
	if no {
		return nil, fs.ErrNotExist
	}
	return r.Reader.ReadCheckpoint(ctx)
}

func (r *faultyReader) ReadTile(ctx context.Context, level, index uint64, p uint8) ([]byte, error) {
	if fail, _ := r.state(); fail {
		return nil, &fs.PathError{Op: "open", Path: "tile/0/000", Err: syscall.EACCES}
	}
	return r.Reader.ReadTile(ctx, level, index, p)
}

func (r *faultyReader) ReadEntryBundle(ctx context.Context, index uint64, p uint8) ([]byte, error) {
	fail, corrupt := r.state()
	if fail {
		return nil, &fs.PathError{Op: "open", Path: "tile/entries/000", Err: syscall.EACCES}
	}
	b, err := r.Reader.ReadEntryBundle(ctx, index, p)
	if err == nil && corrupt && len(b) > 8 {
		b = slices.Clone(b)
		b[7] ^= 0x40 // inside the first leaf, past its 2-byte length
	}
	return b, err
}

// newSelfCheckEnv is an alerting service whose self-check reads its log through a faultyReader,
// with one attestation in the log and its checkpoint published.
func newSelfCheckEnv(t *testing.T) (*alertEnv, *faultyReader) {
	t.Helper()
	fr := &faultyReader{}
	e := newAlertEnv(t, nil, func(d *Deps, _ *collateraltest.Clock) {
		fr.Reader = d.Alerting.LogReader
		d.Alerting.LogReader = fr
	})
	a := e.attest(t, "vm-tdx", attest.PlatformTDX, servicetest.FaultNone)
	if _, err := e.svc.d.Log.(*log.Log).WaitCheckpoint(context.Background(), a.LogIndex+1); err != nil {
		t.Fatal(err)
	}
	return e, fr
}

// readyCodes are the readiness warning codes of s.
func readyCodes(t *testing.T, s *Service) []string {
	t.Helper()
	ws, err := s.Ready(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, w := range ws {
		out = append(out, w.Code)
	}
	return out
}

// selfCheckAlerts returns the delivered log_integrity_failure alerts.
func selfCheckAlerts(t *testing.T, e *alertEnv) []alert.Alert {
	t.Helper()
	var out []alert.Alert
	for _, a := range e.cap.take(t, e.svc) {
		if a.Kind == alert.KindLogIntegrity {
			out = append(out, a)
		}
	}
	return out
}

// A self-check that cannot read its tiles (EACCES) is alerted (self_check_failed) and degrades
// /readyz after SelfCheckMaxFailures passes in a row, not before; a pass that succeeds clears it.
func TestSelfCheckUnreadableTileAlerts(t *testing.T) {
	e, fr := newSelfCheckEnv(t)
	ctx := context.Background()
	if err := e.svc.SelfCheck(ctx); err != nil {
		t.Fatalf("sound log: %v", err)
	}
	fr.set(func(r *faultyReader) { r.failFrom = r.checkpoints + 1 })
	for i := 1; i <= SelfCheckMaxFailures; i++ {
		e.clock.Advance(DefaultSelfCheckEvery)
		err := e.svc.SelfCheck(ctx)
		if !errors.Is(err, syscall.EACCES) {
			t.Fatalf("pass %d: %v, want EACCES", i, err)
		}
		got := selfCheckAlerts(t, e)
		degraded := slices.Contains(readyCodes(t, e.svc), WarnSelfCheckFailed)
		if i < SelfCheckMaxFailures {
			if len(got) != 0 || degraded {
				t.Fatalf("pass %d: alerted %v / degraded %v before the threshold", i, got, degraded)
			}
			continue
		}
		if len(got) != 1 || got[0].Severity != alert.SeverityCritical || !strings.HasPrefix(got[0].Reason, "self_check_failed:since:") ||
			!strings.Contains(got[0].Message, "permission denied") {
			t.Fatalf("pass %d: alerts %+v, want one self_check_failed", i, got)
		}
		if !degraded {
			t.Fatalf("pass %d: /readyz not degraded: %v", i, readyCodes(t, e.svc))
		}
	}
	// Later failures of the same run are not alerted again.
	e.svc.SelfCheck(ctx)
	if got := selfCheckAlerts(t, e); len(got) != 0 {
		t.Fatalf("alerted again: %+v", got)
	}
	fr.set(func(r *faultyReader) { r.failFrom = 0 })
	if err := e.svc.SelfCheck(ctx); err != nil {
		t.Fatalf("recovered: %v", err)
	}
	if codes := readyCodes(t, e.svc); slices.Contains(codes, WarnSelfCheckFailed) {
		t.Fatalf("still degraded after a successful pass: %v", codes)
	}
}

// No successful pass for SelfCheckStaleAfter intervals (a pass that hangs) is alerted by the
// periodic checks, counted from the last success (or the first pass); a second less is not.
func TestSelfCheckStaleAlerts(t *testing.T) {
	e, _ := newSelfCheckEnv(t)
	ctx := context.Background()
	// Before the self-check ever ran (a service whose loops are not started), nothing is stale.
	e.clock.Advance(SelfCheckStaleAfter * DefaultSelfCheckEvery)
	e.svc.CheckAlerts(ctx)
	if got := selfCheckAlerts(t, e); len(got) != 0 {
		t.Fatalf("alerted before any pass: %+v", got)
	}
	start := e.clock.Now()
	if err := e.svc.SelfCheck(ctx); err != nil {
		t.Fatalf("sound log: %v", err)
	}
	// Then no pass finishes (one hangs).
	e.clock.Advance(SelfCheckStaleAfter*DefaultSelfCheckEvery - time.Second)
	e.svc.CheckAlerts(ctx)
	if got := selfCheckAlerts(t, e); len(got) != 0 || slices.Contains(readyCodes(t, e.svc), WarnSelfCheckFailed) {
		t.Fatalf("alerted before the threshold: %+v", got)
	}
	e.clock.Advance(time.Second)
	e.svc.CheckAlerts(ctx)
	got := selfCheckAlerts(t, e)
	if len(got) != 1 || got[0].Reason != "self_check_failed:since:"+itoa(start.Unix()) {
		t.Fatalf("alerts %+v, want self_check_failed since the last success", got)
	}
	if !slices.Contains(readyCodes(t, e.svc), WarnSelfCheckFailed) {
		t.Fatal("/readyz not degraded")
	}
}

// A corruption whose confirmation run cannot read the log keeps the corruption: alerted and
// /readyz degraded (log_integrity_failure), not dropped as an I/O error.
func TestSelfCheckConfirmationErrorKeepsCorruption(t *testing.T) {
	e, fr := newSelfCheckEnv(t)
	ctx := context.Background()
	if err := e.svc.SelfCheck(ctx); err != nil {
		t.Fatalf("sound log: %v", err)
	}
	perPass := fr.checkpoints // ReadCheckpoint calls in one pass
	// The valid case first: a corruption seen by the first run only (the second run reads a
	// sound log) is not alerted.
	fr.set(func(r *faultyReader) { r.corruptUntil = r.checkpoints + perPass })
	if err := e.svc.SelfCheck(ctx); err != nil {
		t.Fatalf("corruption not confirmed by the second run: %v", err)
	}
	if got := selfCheckAlerts(t, e); len(got) != 0 {
		t.Fatalf("unconfirmed corruption alerted: %+v", got)
	}
	// Now the second run fails with EACCES.
	fr.set(func(r *faultyReader) { r.corruptUntil, r.failFrom = r.checkpoints+perPass, r.checkpoints+perPass+1 })
	var ce *log.CorruptError
	if err := e.svc.SelfCheck(ctx); !errors.As(err, &ce) {
		t.Fatalf("%v, want the first run's corruption", err)
	}
	got := selfCheckAlerts(t, e)
	if len(got) != 1 || !strings.HasPrefix(got[0].Reason, "fsck:") {
		t.Fatalf("alerts %+v, want fsck:", got)
	}
	if !slices.Contains(readyCodes(t, e.svc), WarnLogIntegrity) {
		t.Fatal("/readyz not degraded")
	}
}

// A log with entries whose storage holds no checkpoint (deleted, or unreadable as not found)
// fails the pass instead of passing as a new log, and is alerted after the threshold.
func TestSelfCheckMissingCheckpoint(t *testing.T) {
	e, fr := newSelfCheckEnv(t)
	ctx := context.Background()
	// No pass has stored a baseline yet: only the log itself knows it has entries.
	fr.set(func(r *faultyReader) { r.noCheckpoint = true })
	err := e.svc.SelfCheck(ctx)
	if !errors.Is(err, fs.ErrNotExist) || !strings.Contains(err.Error(), "holds no checkpoint") {
		t.Fatalf("%v, want a missing checkpoint failure", err)
	}
	for range SelfCheckMaxFailures - 1 {
		e.svc.SelfCheck(ctx)
	}
	if got := selfCheckAlerts(t, e); len(got) != 1 || !strings.HasPrefix(got[0].Reason, "self_check_failed:") {
		t.Fatalf("alerts %+v", got)
	}
	// The valid case: the same log with its checkpoint readable passes.
	fr.set(func(r *faultyReader) { r.noCheckpoint = false })
	if err := e.svc.SelfCheck(ctx); err != nil {
		t.Fatalf("sound log: %v", err)
	}
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }

// The self-check's pacer sleeps, every pacerEvery steps, for the time the steps took scaled to
// its share (here as long again, for a half share), and gives up when the context ends.
func TestSelfCheckPacer(t *testing.T) {
	p := pacer{share: 0.5, mark: time.Now().Add(-30 * time.Millisecond)}
	start := time.Now()
	for range pacerEvery {
		if err := p.step(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	if slept := time.Since(start); slept < 30*time.Millisecond {
		t.Fatalf("a half-share pacer after 30ms of work slept %v, want at least 30ms", slept)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	p = pacer{share: 0.01, mark: time.Now().Add(-time.Hour)}
	var err error
	for range pacerEvery {
		err = p.step(ctx)
	}
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("pacer with its context ended: %v", err)
	}
}

// A corruption keeps one alert id while it lasts (re-emits at every pass are one alert), and the
// same corruption found again after a repair (a pass that succeeded) is a new alert, delivered.
func TestSelfCheckRepeatTamperAlertedAgain(t *testing.T) {
	e, fr := newSelfCheckEnv(t)
	ctx := context.Background()
	if err := e.svc.SelfCheck(ctx); err != nil {
		t.Fatal(err)
	}
	tamper := func(on bool) {
		fr.set(func(r *faultyReader) {
			r.corruptUntil = 0
			if on {
				r.corruptUntil = 1 << 30
			}
		})
	}
	tamper(true)
	if err := e.svc.SelfCheck(ctx); err == nil {
		t.Fatal("tampering not found")
	}
	first := selfCheckAlerts(t, e)
	if len(first) != 1 || first[0].Incident == "" {
		t.Fatalf("first tampering: alerts %+v, want one with an incident", first)
	}
	e.clock.Advance(DefaultSelfCheckEvery)
	if err := e.svc.SelfCheck(ctx); err == nil {
		t.Fatal("tampering not found again")
	}
	if again := selfCheckAlerts(t, e); len(again) != 0 {
		t.Fatalf("the same incident alerted again: %+v", again)
	}
	tamper(false) // the operator restores the leaf
	if err := e.svc.SelfCheck(ctx); err != nil {
		t.Fatal(err)
	}
	tamper(true) // and it is tampered with again
	if err := e.svc.SelfCheck(ctx); err == nil {
		t.Fatal("second tampering not found")
	}
	second := selfCheckAlerts(t, e)
	if len(second) != 1 || second[0].ID == first[0].ID || second[0].Reason != first[0].Reason ||
		second[0].Incident == first[0].Incident {
		t.Fatalf("second tampering: alerts %+v, want a new alert (first %+v)", second, first[0])
	}
}

// self_check_failed whose outbox write failed is raised again by the next failed pass or
// periodic check, not dropped for the rest of the run of failures; once stored, it is not raised
// again.
func TestSelfCheckFailedAlertedAfterPutError(t *testing.T) {
	var dir string
	fr := &faultyReader{}
	e := newAlertEnv(t, func(c *Config) { dir = c.DataDir }, func(d *Deps, _ *collateraltest.Clock) {
		fr.Reader = d.Alerting.LogReader
		d.Alerting.LogReader = fr
	})
	ctx := context.Background()
	a := e.attest(t, "vm-tdx", attest.PlatformTDX, servicetest.FaultNone)
	if _, err := e.svc.d.Log.(*log.Log).WaitCheckpoint(ctx, a.LogIndex+1); err != nil {
		t.Fatal(err)
	}
	if err := e.svc.SelfCheck(ctx); err != nil {
		t.Fatal(err)
	}
	fr.set(func(r *faultyReader) { r.failFrom = r.checkpoints + 1 })
	restore := failInserts(t, filepath.Join(dir, alert.DBFileName), "proofline_alert_outbox", "injected outbox failure")
	for range SelfCheckMaxFailures + 1 {
		e.clock.Advance(DefaultSelfCheckEvery)
		e.svc.SelfCheck(ctx)
	}
	if !slices.Contains(readyCodes(t, e.svc), WarnSelfCheckFailed) {
		t.Fatalf("/readyz not degraded: %v", readyCodes(t, e.svc))
	}
	restore() // the outbox works again; the log still cannot be read
	e.clock.Advance(DefaultSelfCheckEvery)
	e.svc.SelfCheck(ctx)
	if got := selfCheckAlerts(t, e); len(got) != 1 || !strings.HasPrefix(got[0].Reason, "self_check_failed:") {
		t.Fatalf("after the outbox recovered: alerts %+v, want self_check_failed", got)
	}
	e.clock.Advance(DefaultSelfCheckEvery)
	e.svc.SelfCheck(ctx)
	e.svc.CheckAlerts(ctx)
	if got := selfCheckAlerts(t, e); len(got) != 0 {
		t.Fatalf("stored, then raised again: %+v", got)
	}
}

// forgetfulLog is a Log that keeps nothing in memory: its Checkpoint is whatever the storage
// holds now (a log client that is not the process's own appender).
type forgetfulLog struct {
	Log
	r log.Reader
	v note.Verifier
}

func (f forgetfulLog) Checkpoint(ctx context.Context) (log.Checkpoint, error) {
	raw, err := f.r.ReadCheckpoint(ctx)
	if err != nil {
		return log.Checkpoint{}, err
	}
	return log.OpenCheckpoint(raw, f.v)
}

// Restoring an old copy of the log storage together with the self-check's stored state (its
// baseline, and the served floor, which live beside the log) hides the records appended since;
// within the running process the self-check still finds it, from what is kept in memory — the
// checkpoint the log serves, and the largest one the self-check verified (alone when the log
// keeps nothing) — and alerts.
func TestSelfCheckRollbackWithState(t *testing.T) {
	for _, forgetful := range []bool{false, true} {
		t.Run(fmt.Sprintf("forgetful=%v", forgetful), func(t *testing.T) {
			var dataDir string
			var l *log.Log
			e := newAlertEnv(t, func(c *Config) { dataDir = c.DataDir }, func(d *Deps, _ *collateraltest.Clock) {
				l = d.Log.(*log.Log)
				if forgetful {
					v, err := note.NewVerifier(d.LogVerifierKey)
					if err != nil {
						t.Fatal(err)
					}
					d.Log = forgetfulLog{Log: l, r: d.Alerting.LogReader, v: v}
				}
			})
			testRollbackWithState(t, e, l, dataDir)
		})
	}
}

func testRollbackWithState(t *testing.T, e *alertEnv, l *log.Log, dataDir string) {
	ctx := context.Background()
	a := e.attest(t, "vm-1", attest.PlatformTDX, servicetest.FaultNone)
	if _, err := l.WaitCheckpoint(ctx, a.LogIndex+1); err != nil {
		t.Fatal(err)
	}
	if err := e.svc.SelfCheck(ctx); err != nil {
		t.Fatal(err)
	}
	logDir := filepath.Join(dataDir, LogDirName)
	snap := filepath.Join(t.TempDir(), "snap")
	if err := os.CopyFS(snap, os.DirFS(logDir)); err != nil {
		t.Fatal(err)
	}
	oldState, _, err := e.svc.al.cfg.Outbox.State(ctx, selfCheckStateName)
	if err != nil {
		t.Fatal(err)
	}
	e.attest(t, "vm-1", attest.PlatformTDX, servicetest.FaultMeasurement) // the record to hide
	b := e.attest(t, "vm-1", attest.PlatformTDX, servicetest.FaultNone)
	if _, err := l.WaitCheckpoint(ctx, b.LogIndex+1); err != nil {
		t.Fatal(err)
	}
	if err := e.svc.SelfCheck(ctx); err != nil {
		t.Fatal(err)
	}
	e.cap.take(t, e.svc)
	// Roll back; put the current log back at the end, so that closing it does not wait (a
	// minute) for a checkpoint committing to the appends the rollback removed.
	current := filepath.Join(t.TempDir(), "current")
	if err := os.CopyFS(current, os.DirFS(logDir)); err != nil {
		t.Fatal(err)
	}
	replace := func(from string) {
		t.Helper()
		if err := os.RemoveAll(logDir); err != nil {
			t.Fatal(err)
		}
		if err := os.CopyFS(logDir, os.DirFS(from)); err != nil {
			t.Fatal(err)
		}
	}
	replace(snap)
	t.Cleanup(func() { replace(current) })
	if err := e.svc.al.cfg.Outbox.SetState(ctx, selfCheckStateName, oldState); err != nil {
		t.Fatal(err)
	}
	var ce *log.CorruptError
	if err := e.svc.SelfCheck(ctx); !errors.As(err, &ce) || ce.Invariant != "I6" {
		t.Fatalf("self-check after the rollback: %v, want an I6 corruption", err)
	}
	got := selfCheckAlerts(t, e)
	if len(got) != 1 || got[0].Reason != "fsck:I6" || got[0].Severity != alert.SeverityCritical {
		t.Fatalf("alerts %+v, want fsck:I6", got)
	}
	if code, _ := e.svc.selfCheckWarning(); code != WarnLogIntegrity {
		t.Fatalf("readiness warning %q, want %s", code, WarnLogIntegrity)
	}
}
