package service

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"strconv"
	"time"

	"golang.org/x/mod/sumdb/note"

	"github.com/proofline/proofline/evidence"
	"github.com/proofline/proofline/evidence/log"
	"github.com/proofline/proofline/verifier/alert"
)

// Readiness warnings of the self-check: WarnLogIntegrity while the latest pass found the log
// corrupt, WarnSelfCheckFailed while the self-check cannot run (SelfCheckMaxFailures passes in a
// row, or no success for SelfCheckStaleAfter intervals).
const (
	WarnLogIntegrity    = "log_integrity_failure"
	WarnSelfCheckFailed = "log_self_check_failed"
)

// selfCheckState is what the self-check keeps between passes (in the alert state table): the
// tree size it verified, the checkpoint (signed note) that committed to it, and how many passes
// have succeeded.
type selfCheckState struct {
	Size       uint64 `json:"size"`
	Checkpoint []byte `json:"checkpoint"`
	// Passes counts the successful passes (of every replica sharing the state). It is the
	// incident of a corruption alert: the same while the log stays corrupt, so that re-emits
	// keep one id, and another once a pass has succeeded, so that the same corruption found
	// again after a repair is a new alert.
	Passes uint64 `json:"passes"`
}

const selfCheckStateName = "selfcheck/verified"

func (s *Service) logNoteVerifier() (note.Verifier, error) {
	return note.NewVerifier(s.d.LogVerifierKey)
}

// SelfCheck runs one self-check pass of the evidence log and returns its error (nil: sound).
//
// It runs log.Fsck — the checks of `proofline log fsck` — over the whole stored log: every leaf
// is re-hashed against the stored tiles and recomputed into the latest checkpoint's root (I1,
// I3), tiles are compared, the served floor is no larger (I6), and two earlier checkpoints must
// commit to a prefix of the same leaves (I4): the one it verified in its previous pass (kept in
// the state database, so across restarts too) and the one read at the start of this pass; so
// must two kept in memory, the checkpoint the running log serves (Log.Checkpoint, whose own
// CorruptError — a stored checkpoint smaller than or inconsistent with it — is a corruption
// too) and the largest one this process verified. Those two catch a restore of an old copy of
// the log together with the stored state and served floor (all in the same data directory or
// database), but only while the process runs: across a restart, only a checkpoint kept outside
// the host (an auditor's, a witness's, the history of proofline_log_selfcheck_verified_size in
// Prometheus) shows such a rollback. Every leaf is re-hashed on every pass, since a leaf altered
// after it was verified is what the check is for; the record signature check against the key
// history (I5, the costly part) runs only on the leaves past the last verified size.
//
// A corruption is alerted (critical log_integrity_failure, reason fsck:<invariant>, naming the
// first bad leaf when Fsck can) and reported by /readyz (log_integrity_failure) until a pass
// succeeds. Its incident is the count of successful passes in the stored state: re-emits while
// the log stays corrupt have one id, and the same corruption found after a repair a new one. It
// is confirmed by a second run first, so that a checkpoint published during the pass never
// raises a false alarm; only a second run that succeeds clears it (one that cannot run keeps
// the first result).
//
// A pass that cannot run (an unreadable tile or checkpoint, an I/O error, the state database)
// fails closed too: after SelfCheckMaxFailures consecutive failed passes, or when no pass has
// succeeded for SelfCheckStaleAfter × the interval (counted from the first pass, so a pass that
// hangs is caught by the periodic checks), it raises a critical log_integrity_failure with reason
// self_check_failed:since:<unix seconds of the last success or of the first pass>, and /readyz
// reports log_self_check_failed until a pass succeeds.
// A log with entries but no stored checkpoint is such a failure, not a pass.
func (s *Service) SelfCheck(ctx context.Context) error {
	al := s.al
	if al == nil || al.cfg.LogReader == nil {
		return errors.New("service: the self-check is not configured")
	}
	al.checkMu.Lock()
	if al.checkSuccess.IsZero() {
		al.checkSuccess = al.clock.Now() // staleness counts from the first pass
	}
	al.checkMu.Unlock()
	st, err := s.selfCheckPass(ctx)
	var ce *log.CorruptError
	if errors.As(err, &ce) && ctx.Err() == nil {
		if _, err2 := s.selfCheckPass(ctx); err2 == nil {
			err = nil // the log moved on during the first run: sound
		}
	}
	switch {
	case err == nil:
		al.checkMu.Lock()
		al.checkFailed, al.checkCode = "", ""
		al.checkStreak, al.checkAlerted = 0, false
		al.checkSuccess, al.checkSucceeded = al.clock.Now(), true
		al.checkMu.Unlock()
		return nil
	case ctx.Err() != nil:
		return err
	case !errors.As(err, &ce):
		al.selfCheckFailures.WithLabelValues("error").Inc()
		al.checkMu.Lock()
		al.checkStreak++
		al.checkErr = err.Error()
		al.checkMu.Unlock()
		s.logger.WarnContext(ctx, "log self-check could not run; retrying at the next pass", slog.Any("error", err))
		s.checkSelfCheckStale(ctx)
		return err
	}
	al.selfCheckFailures.WithLabelValues("corrupt").Inc()
	where := ""
	a := alert.Alert{Kind: alert.KindLogIntegrity, Severity: alert.SeverityCritical, Subject: "log", Reason: "fsck:" + ce.Invariant,
		Incident: "after_pass:" + strconv.FormatUint(st.Passes, 10)}
	if ce.HasIndex {
		where = " at leaf " + strconv.FormatUint(ce.Index, 10)
		a.Record(al.origin, ce.Index)
	}
	a.Message = fmt.Sprintf("the evidence log failed its self-check (invariant %s%s): %v; stop trusting new proofs, keep the storage as it is for investigation, and run `proofline log fsck`",
		ce.Invariant, where, ce)
	al.checkMu.Lock()
	al.checkFailed, al.checkCode = a.Message, WarnLogIntegrity
	al.checkMu.Unlock()
	s.logger.ErrorContext(ctx, "log self-check failed", slog.String("invariant", ce.Invariant), slog.Any("error", ce))
	s.Emit(ctx, a)
	return err
}

// Self-check failure thresholds (see SelfCheck): the defaults are small so that a self-check
// that cannot run is noticed within half an hour at the default interval of 10m.
const (
	// SelfCheckMaxFailures consecutive passes that cannot run raise self_check_failed.
	SelfCheckMaxFailures = 3
	// SelfCheckStaleAfter × the interval without a successful pass raises self_check_failed.
	SelfCheckStaleAfter = 3
)

// checkSelfCheckStale raises self_check_failed, and degrades /readyz, once SelfCheckMaxFailures
// passes in a row could not run or none succeeded for SelfCheckStaleAfter intervals. It runs
// after a failed pass and with the periodic checks (CheckAlerts), so that a pass that hangs is
// noticed too. A corruption already reported keeps its own warning.
func (s *Service) checkSelfCheckStale(ctx context.Context) {
	al := s.al
	if al == nil || al.cfg.LogReader == nil {
		return
	}
	now := al.clock.Now()
	al.checkMu.Lock()
	since, streak, last := al.checkSuccess, al.checkStreak, al.checkErr
	stale := !since.IsZero() && now.Sub(since) >= SelfCheckStaleAfter*al.cfg.SelfCheckEvery
	if (streak < SelfCheckMaxFailures && !stale) || al.checkAlerted || al.checkCode == WarnLogIntegrity {
		al.checkMu.Unlock()
		return
	}
	if last == "" {
		last = "no pass has finished"
	}
	what := "the last success"
	if !al.checkSucceeded {
		what = "the first pass"
	}
	msg := fmt.Sprintf("the evidence log self-check has not succeeded since %s (%s; %d failed passes in a row; latest: %s): the log's integrity is not being verified; check the log storage's permissions and disk, the state database, and run `proofline log fsck`",
		since.UTC().Format(time.RFC3339), what, streak, last)
	al.checkFailed, al.checkCode = msg, WarnSelfCheckFailed
	al.checkMu.Unlock()
	s.logger.ErrorContext(ctx, "log self-check keeps failing", slog.Int("failed_passes", streak), slog.Time("since", since))
	_, stored := s.emit(ctx, alert.Alert{Kind: alert.KindLogIntegrity, Severity: alert.SeverityCritical, Subject: "log",
		Reason: "self_check_failed:since:" + strconv.FormatInt(since.Unix(), 10), Time: now, Message: msg})
	if !stored {
		return // raised again by the next failed pass or periodic check
	}
	al.checkMu.Lock()
	if al.checkCode == WarnSelfCheckFailed && al.checkSuccess.Equal(since) { // the same run of failures
		al.checkAlerted = true
	}
	al.checkMu.Unlock()
}

// selfCheckPass runs one pass and returns the stored state it started from (read before the
// error unless the error is about reading it).
func (s *Service) selfCheckPass(ctx context.Context) (selfCheckState, error) {
	var st selfCheckState
	al := s.al
	v, err := s.logNoteVerifier()
	if err != nil {
		return st, fmt.Errorf("self-check: the log's verifier key: %w", err)
	}
	b, ok, err := al.cfg.Outbox.State(ctx, selfCheckStateName)
	if err != nil {
		return st, err
	}
	if ok {
		if err := json.Unmarshal(b, &st); err != nil {
			return st, fmt.Errorf("self-check: the stored state: %w", err)
		}
	}
	// The checkpoint now: Fsck reads the latest one again, which may be larger, and checks that
	// this one commits to a prefix of the same leaves. It is the next pass's baseline.
	current, err := al.cfg.LogReader.ReadCheckpoint(ctx)
	if errors.Is(err, fs.ErrNotExist) && st.Checkpoint == nil {
		// Nothing to check only if the log really is empty: a log with entries whose storage
		// holds no checkpoint is a failure (deleted or unreadable), not a pass.
		cp, lerr := s.d.Log.Checkpoint(ctx)
		if lerr != nil {
			return st, fmt.Errorf("self-check: the log storage holds no checkpoint, and the log's own: %w", lerr)
		}
		if cp.Size > 0 {
			return st, fmt.Errorf("self-check: the log has %d entries but its storage holds no checkpoint: %w", cp.Size, err)
		}
		return st, nil // a new log that has published nothing yet: nothing to check
	}
	if err != nil {
		return st, fmt.Errorf("self-check: reading the checkpoint: %w", err)
	}
	// The stored state and the served floor are in the same data directory or database as the
	// log: an old copy of both, restored together, is consistent with itself. The running
	// process knows better, in memory: the checkpoint its log serves (Log.Checkpoint, which also
	// fails on a stored checkpoint smaller than or inconsistent with it) and the largest one this
	// process verified. Both are earlier checkpoints the stored log must still extend.
	served, err := s.d.Log.Checkpoint(ctx)
	if err != nil {
		return st, fmt.Errorf("self-check: the log's served checkpoint: %w", err)
	}
	earlier := [][]byte{current}
	if st.Checkpoint != nil {
		earlier = append(earlier, st.Checkpoint)
	}
	if served.Note != nil {
		earlier = append(earlier, served.Note)
	}
	al.checkMu.Lock()
	verified := al.checkVerified
	al.checkMu.Unlock()
	if verified.Note != nil {
		earlier = append(earlier, verified.Note)
	}
	pace := pacer{share: selfCheckShare, mark: time.Now()}
	checkLeaf := func(i uint64, leaf []byte) error {
		if i < st.Size {
			return nil
		}
		// Only the signature checks are paced: they are the CPU-heavy part, and a pass over a
		// large log must still end well within SelfCheckStaleAfter intervals.
		if err := pace.step(ctx); err != nil {
			return err
		}
		_, _, err := evidence.Open(leaf, s.d.KeyHistory)
		return err
	}
	rep, err := log.Fsck(ctx, al.cfg.LogReader, v, checkLeaf, earlier...)
	if err != nil {
		return st, err
	}
	cp, err := log.OpenCheckpoint(current, v)
	if err != nil {
		return st, fmt.Errorf("self-check: %w", err)
	}
	next := selfCheckState{Size: st.Size, Checkpoint: st.Checkpoint, Passes: st.Passes + 1}
	if cp.Size >= st.Size {
		next.Size, next.Checkpoint = cp.Size, current
	}
	nb, _ := json.Marshal(next)
	if err := al.cfg.Outbox.SetState(ctx, selfCheckStateName, nb); err != nil {
		return st, err
	}
	al.checkMu.Lock()
	if cp.Size > al.checkVerified.Size || al.checkVerified.Note == nil {
		al.checkVerified = cp
	}
	al.checkMu.Unlock()
	al.selfCheckLast.Set(float64(al.clock.Now().Unix()))
	al.selfCheckSize.Set(float64(rep.Checkpoint.Size))
	s.logger.DebugContext(ctx, "log self-check passed", slog.Uint64("size", rep.Checkpoint.Size), slog.Uint64("signatures_from", st.Size))
	return st, nil
}

// selfCheckWarning is the readiness warning of a failed self-check, code and detail ("" when
// the latest pass succeeded or the failures are below the thresholds).
func (s *Service) selfCheckWarning() (code, detail string) {
	if s.al == nil {
		return "", ""
	}
	s.al.checkMu.Lock()
	defer s.al.checkMu.Unlock()
	return s.al.checkCode, s.al.checkFailed
}

// selfCheckShare is the part of one core a self-check pass's signature checks may take while
// they run: one per record appended since the last pass (ten minutes of a busy log: hundreds of
// thousands), which unpaced would take the cores from the attestations for a minute or more.
const selfCheckShare = 0.25

// pacer keeps a loop to a share of the time: every pacerEvery steps it sleeps for as long as
// the steps took, times (1 - share) / share. Wall time counts as work (the steps' own CPU time is
// not measurable per goroutine), so a loaded machine slows the loop further.
type pacer struct {
	share float64
	n     int
	mark  time.Time
}

const pacerEvery = 64

func (p *pacer) step(ctx context.Context) error {
	if p.n++; p.n%pacerEvery != 0 {
		return nil
	}
	busy := time.Since(p.mark)
	t := time.NewTimer(time.Duration(float64(busy) * (1 - p.share) / p.share))
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
	}
	p.mark = time.Now()
	return nil
}
