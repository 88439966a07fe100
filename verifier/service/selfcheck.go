package service

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"strconv"

	"golang.org/x/mod/sumdb/note"

	"github.com/proofline/proofline/evidence"
	"github.com/proofline/proofline/evidence/log"
	"github.com/proofline/proofline/verifier/alert"
)

// WarnLogIntegrity is the readiness warning while the latest self-check of the log failed.
const WarnLogIntegrity = "log_integrity_failure"

// selfCheckState is what the self-check keeps between passes (in the alert state table): the
// tree size it verified and the checkpoint (signed note) that committed to it.
type selfCheckState struct {
	Size       uint64 `json:"size"`
	Checkpoint []byte `json:"checkpoint"`
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
// the state database, so across restarts too) and the one read at the start of this pass. Every
// leaf is re-hashed on every pass, since a leaf altered after it was verified is what the check
// is for; the record signature check against the key history (I5, the costly part) runs only on
// the leaves past the last verified size. A failure is alerted (critical log_integrity_failure,
// naming the first bad leaf when Fsck can) and reported by /readyz until a pass succeeds; a
// corruption is confirmed by a second run first, so that a checkpoint published during the pass
// never raises a false alarm.
func (s *Service) SelfCheck(ctx context.Context) error {
	al := s.al
	if al == nil || al.cfg.LogReader == nil {
		return errors.New("service: the self-check is not configured")
	}
	err := s.selfCheckPass(ctx)
	var ce *log.CorruptError
	if errors.As(err, &ce) {
		err = s.selfCheckPass(ctx)
	}
	switch {
	case err == nil:
		al.checkMu.Lock()
		al.checkFailed = ""
		al.checkMu.Unlock()
		return nil
	case ctx.Err() != nil:
		return err
	case !errors.As(err, &ce):
		al.selfCheckFailures.WithLabelValues("error").Inc()
		s.logger.WarnContext(ctx, "log self-check could not run; retrying at the next pass", slog.Any("error", err))
		return err
	}
	al.selfCheckFailures.WithLabelValues("corrupt").Inc()
	where := ""
	a := alert.Alert{Kind: alert.KindLogIntegrity, Severity: alert.SeverityCritical, Subject: "log", Reason: "fsck:" + ce.Invariant}
	if ce.HasIndex {
		where = " at leaf " + strconv.FormatUint(ce.Index, 10)
		a.Record(al.origin, ce.Index)
	}
	a.Message = fmt.Sprintf("the evidence log failed its self-check (invariant %s%s): %v; stop trusting new proofs, keep the storage as it is for investigation, and run `proofline log fsck`",
		ce.Invariant, where, ce)
	al.checkMu.Lock()
	al.checkFailed = a.Message
	al.checkMu.Unlock()
	s.logger.ErrorContext(ctx, "log self-check failed", slog.String("invariant", ce.Invariant), slog.Any("error", ce))
	s.Emit(ctx, a)
	return err
}

func (s *Service) selfCheckPass(ctx context.Context) error {
	al := s.al
	v, err := s.logNoteVerifier()
	if err != nil {
		return fmt.Errorf("self-check: the log's verifier key: %w", err)
	}
	var st selfCheckState
	b, ok, err := al.cfg.Outbox.State(ctx, selfCheckStateName)
	if err != nil {
		return err
	}
	if ok {
		if err := json.Unmarshal(b, &st); err != nil {
			return fmt.Errorf("self-check: the stored state: %w", err)
		}
	}
	// The checkpoint now: Fsck reads the latest one again, which may be larger, and checks that
	// this one commits to a prefix of the same leaves. It is the next pass's baseline.
	current, err := al.cfg.LogReader.ReadCheckpoint(ctx)
	if errors.Is(err, fs.ErrNotExist) && st.Checkpoint == nil {
		return nil // a new log that has published nothing yet: nothing to check
	}
	if err != nil {
		return fmt.Errorf("self-check: reading the checkpoint: %w", err)
	}
	earlier := [][]byte{current}
	if st.Checkpoint != nil {
		earlier = append(earlier, st.Checkpoint)
	}
	checkLeaf := func(i uint64, leaf []byte) error {
		if i < st.Size {
			return nil
		}
		_, _, err := evidence.Open(leaf, s.d.KeyHistory)
		return err
	}
	rep, err := log.Fsck(ctx, al.cfg.LogReader, v, checkLeaf, earlier...)
	if err != nil {
		return err
	}
	cp, err := log.OpenCheckpoint(current, v)
	if err != nil {
		return fmt.Errorf("self-check: %w", err)
	}
	if cp.Size >= st.Size {
		nb, _ := json.Marshal(selfCheckState{Size: cp.Size, Checkpoint: current})
		if err := al.cfg.Outbox.SetState(ctx, selfCheckStateName, nb); err != nil {
			return err
		}
	}
	al.selfCheckLast.Set(float64(al.clock.Now().Unix()))
	al.selfCheckSize.Set(float64(rep.Checkpoint.Size))
	s.logger.DebugContext(ctx, "log self-check passed", slog.Uint64("size", rep.Checkpoint.Size), slog.Uint64("signatures_from", st.Size))
	return nil
}

// selfCheckWarning is the readiness warning of a failed self-check ("" when the latest pass
// succeeded or none ran).
func (s *Service) selfCheckWarning() string {
	if s.al == nil {
		return ""
	}
	s.al.checkMu.Lock()
	defer s.al.checkMu.Unlock()
	return s.al.checkFailed
}
