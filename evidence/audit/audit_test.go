package audit

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/proofline/proofline/evidence"
	"github.com/proofline/proofline/evidence/audit/audittest"
	evlog "github.com/proofline/proofline/evidence/log"
	"github.com/proofline/proofline/verifier/ear"
)

// The whole log generated through the service exports and verifies: every record present,
// included in the checkpoint and signed; every attestation verdict re-performed to the same
// result, except the refusals of replayed nonces, which are not re-performable.
func TestRoundTrip(t *testing.T) {
	start := time.Now()
	l := fixture(t)
	generated := time.Now()
	bundle, m := export(t, l, ExportOptions{})
	exported := time.Now()
	if m.First != 0 || m.End != l.Size || m.Records != l.Size || m.Redacted != 0 || m.Blobs < 3 {
		t.Fatalf("manifest %+v for a log of %d records", m, l.Size)
	}
	rep := verify(t, bundle, VerifyOptions{})
	verified := time.Now()
	if !rep.OK() {
		t.Fatalf("the bundle of the whole log fails:\n%s", failures(rep))
	}
	if rep.Records != l.Size || rep.Included != l.Size || rep.Signed != l.Size {
		t.Fatalf("records %d, included %d, signed %d; want %d each", rep.Records, rep.Included, rep.Signed, l.Size)
	}
	att := rep.Kinds[string(evidence.KindAttestation)]
	if att == 0 || rep.Attestations != att || rep.Reproduced+rep.NonceRefused != att || rep.NonceRefused == 0 || rep.Normalised != 0 {
		t.Fatalf("%d attestations: %d re-performed, %d reproduced, %d normalised, %d nonce refusals", att, rep.Attestations, rep.Reproduced, rep.Normalised, rep.NonceRefused)
	}
	if rep.Kinds[string(evidence.KindPolicyChange)] != 4 || rep.Kinds[string(evidence.KindKeyRelease)] == 0 {
		t.Fatalf("kinds %v: want two policies each created and activated, and key releases", rep.Kinds)
	}
	var contraindicated int
	for _, v := range rep.Verdicts {
		if v.Status == ear.StatusContraindicated {
			contraindicated++
		}
	}
	if contraindicated <= int(rep.NonceRefused) {
		t.Fatalf("%d contraindicated verdicts, %d of them nonce refusals: the faulty reports are missing", contraindicated, rep.NonceRefused)
	}
	if rep.TestRoots != "bundle" || rep.KeysPinned || rep.LogKeyPinned || rep.Checkpoint == nil || !rep.Checkpoint.Verified {
		t.Fatalf("report %+v", rep)
	}
	t.Logf("%d records (%d attestations: %d reproduced, %d nonce refusals), %d blobs, bundle %d bytes; generated in %v (if by this test), exported in %v, verified in %v",
		rep.Records, rep.Attestations, rep.Reproduced, rep.NonceRefused, rep.Blobs, len(bundle),
		generated.Sub(start).Round(time.Millisecond), exported.Sub(generated).Round(time.Millisecond), verified.Sub(exported).Round(time.Millisecond))
}

// A window exports the records timed in it, plus the record before and the one after, whose
// times show the window is whole; only its verdicts are re-performed.
func TestWindow(t *testing.T) {
	l := fixture(t)
	from, to := l.RoundTime(3), l.RoundTime(6).Add(-time.Second)
	bundle, m := export(t, l, ExportOptions{From: from, To: to})
	rep := verify(t, bundle, VerifyOptions{})
	if !rep.OK() {
		t.Fatalf("window bundle fails:\n%s", failures(rep))
	}
	if m.First == 0 || m.End == l.Size || rep.Records != m.End-m.First {
		t.Fatalf("manifest %+v", m)
	}
	for _, v := range rep.Verdicts {
		if v.Time.Before(from) || v.Time.After(to) {
			t.Fatalf("verdict %+v outside the window", v)
		}
	}
	if got, want := len(rep.Verdicts), 3*(len(l.VMs)-1); got > want+len(l.VMs) || got < want {
		t.Fatalf("%d verdicts in three rounds", got)
	}

	// Another subject's records are present by their leaf hash only.
	sub := audittest.Subject(l.VMs[5])
	bundle, m = export(t, l, ExportOptions{From: from, To: to, Subject: sub})
	rep = verify(t, bundle, VerifyOptions{})
	if !rep.OK() {
		t.Fatalf("subject bundle fails:\n%s", failures(rep))
	}
	if m.Redacted == 0 || rep.Redacted != m.Redacted || rep.Included != m.End-m.First {
		t.Fatalf("manifest %+v, report redacted %d included %d", m, rep.Redacted, rep.Included)
	}
	for _, v := range rep.Verdicts {
		if v.Subject != sub {
			t.Fatalf("verdict of %s in a bundle for %s", v.Subject, sub)
		}
	}
	if len(rep.Verdicts) != 3 {
		t.Fatalf("%d verdicts of %s in three rounds", len(rep.Verdicts), sub)
	}

	_, err := Export(context.Background(), &bytes.Buffer{}, source(t, l.Dir), ExportOptions{From: l.RoundTime(10000)})
	if !errors.Is(err, ErrEmpty) {
		t.Fatalf("window after the log: %v", err)
	}

	// A window whose end the log has not passed yet cannot be proven closed: Export refuses it,
	// and Verify fails a bundle that claims an end time but stops at its checkpoint's last
	// record (here one exported up to the latest record, given an end time afterwards: what an
	// old checkpoint's bundle would show once the log has grown).
	_, err = Export(context.Background(), &bytes.Buffer{}, source(t, l.Dir), ExportOptions{From: from, To: l.RoundTime(10000)})
	if !errors.Is(err, ErrWindowOpen) || !strings.Contains(err.Error(), "export again once the log holds a later record") {
		t.Fatalf("window past the log's last record: %v, want ErrWindowOpen saying what to do", err)
	}
	bundle, m = export(t, l, ExportOptions{From: l.RoundTime(l.Rounds - 2)})
	if rep := verify(t, bundle, VerifyOptions{}); !rep.OK() || m.End != l.Size {
		t.Fatalf("bundle up to the latest record (manifest %+v):\n%s", m, failures(rep))
	}
	es := unpack(t, bundle)
	setManifest(t, es, func(m *Manifest) { t := l.RoundTime(10000); m.To = &t })
	rep = verify(t, pack(t, es, false), VerifyOptions{})
	if rep.OK() || !strings.Contains(failures(rep), "does not prove that the log holds nothing more in the window") {
		t.Fatalf("a bundle with an end time that stops at its checkpoint passes, or fails for another reason:\n%s", failures(rep))
	}
}

// A later export proves the log consistent with the previous export's checkpoint, and the
// auditor can insist on their copy of it.
func TestConsistency(t *testing.T) {
	l := copyLog(t, fixture(t))
	first, _ := export(t, l, ExportOptions{To: l.RoundTime(2)})
	prev, err := BundleCheckpoint(bytes.NewReader(first))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := audittest.Append(context.Background(), l.Dir, 2, nil); err != nil {
		t.Fatal(err)
	}
	second, m := export(t, l, ExportOptions{From: l.RoundTime(l.Rounds - 1), Previous: prev})
	if m.PreviousSize == nil || *m.PreviousSize != l.Size || m.CheckpointSize != l.Size+1 || m.End != l.Size+1 {
		t.Fatalf("manifest %+v", m)
	}
	rep := verify(t, second, VerifyOptions{Previous: prev})
	if !rep.OK() || rep.Previous == nil || !rep.Previous.Verified {
		t.Fatalf("consistency: %+v\n%s", rep.Previous, failures(rep))
	}
}

// One of the fixture's attestation records, by status and failure code, and the code.
func findRecord(t *testing.T, l *audittest.Log, status ear.Status, codes ...ear.Code) (uint64, ear.Code) {
	t.Helper()
	bundle, _ := export(t, l, ExportOptions{To: l.RoundTime(8)})
	for _, e := range unpack(t, bundle) {
		k, _, i := classify(e.name)
		if k != kindRecord {
			continue
		}
		rec, err := peek(e.data)
		if err != nil || rec.Kind != evidence.KindAttestation {
			continue
		}
		var res ear.Result
		if err := json.Unmarshal(rec.Result, &res); err != nil {
			t.Fatal(err)
		}
		if res.Status != status {
			continue
		}
		if len(codes) == 0 {
			return i, ""
		}
		for _, c := range codes {
			if res.HasFailure(c) {
				return i, c
			}
		}
	}
	t.Fatalf("no %s record with %v in the first rounds", status, codes)
	return 0, ""
}

// A record signed with the real key, included in the log, whose stored verdict is not what its
// inputs give is reported by name: re-performance catches a verifier that lied. (The forged
// record is a copy of a contraindicated verdict on a DEBUG report, recorded as affirming, after
// the last round.)
func TestReperformCatchesForgedVerdict(t *testing.T) {
	l := copyLog(t, fixture(t))
	bad, code := findRecord(t, l, ear.StatusContraindicated, ear.CodeTDXDebug, ear.CodeSNPDebug)
	at := l.RoundTime(l.Rounds)
	forged, err := audittest.Append(context.Background(), l.Dir, bad, func(r *evidence.Record) {
		var res ear.Result
		if err := json.Unmarshal(r.Result, &res); err != nil {
			t.Fatal(err)
		}
		res.Failures, res.Status, res.VerifiedAt, r.Time = []ear.Finding{}, ear.StatusAffirming, at, at
		r.Result, _ = json.Marshal(&res)
	})
	if err != nil {
		t.Fatal(err)
	}
	bundle, m := export(t, l, ExportOptions{From: at})
	if m.First != forged-1 || m.End != forged+1 {
		t.Fatalf("manifest %+v, want the forged record %d and the one before", m, forged)
	}
	rep := verify(t, bundle, VerifyOptions{})
	if rep.OK() || rep.NotReproduced != 1 || len(rep.Failures) != 1 {
		t.Fatalf("not reproduced %d, failures:\n%s", rep.NotReproduced, failures(rep))
	}
	f := rep.Failures[0]
	if f.Record == nil || *f.Record != forged || f.Check != "reperform" ||
		!strings.Contains(f.Message, "recorded affirming [], re-performed contraindicated ["+string(code)) {
		t.Fatalf("finding %s, want record %d's verdict reported as not reproduced", f, forged)
	}
}

// A verifier that records copies of a VM's earlier affirming evidence as new attestations (to
// hide that the VM stopped attesting) is caught: each copy re-performs like the original, but the
// service consumes a nonce once, so every verdict after the first on one nonce is reported.
func TestReplayedEvidenceCaught(t *testing.T) {
	l := copyLog(t, fixture(t))
	orig, _ := findRecord(t, l, ear.StatusAffirming)
	var copies []uint64
	for r := range 2 {
		at := l.RoundTime(l.Rounds + r)
		i, err := audittest.Append(context.Background(), l.Dir, orig, func(rec *evidence.Record) {
			var res ear.Result
			if err := json.Unmarshal(rec.Result, &res); err != nil {
				t.Fatal(err)
			}
			res.VerifiedAt, rec.Time = at, at
			rec.Result, _ = json.Marshal(&res)
		})
		if err != nil {
			t.Fatal(err)
		}
		copies = append(copies, i)
	}
	bundle, _ := export(t, l, ExportOptions{})
	rep := verify(t, bundle, VerifyOptions{})
	if rep.OK() || rep.NotReproduced != 0 || len(rep.Failures) != 2 {
		t.Fatalf("not reproduced %d (want the copies to re-perform), failures:\n%s", rep.NotReproduced, failures(rep))
	}
	for k, f := range rep.Failures {
		if f.Record == nil || *f.Record != copies[k] || f.Check != "replay" || !strings.Contains(f.Message, fmt.Sprintf("the nonce of record %d's verdict", orig)) {
			t.Errorf("finding %s, want copy %d reported as a replay of record %d", f, copies[k], orig)
		}
	}
}

// rolledBack is a log whose storage holds an older checkpoint than the one it has served.
type rolledBack struct {
	evlog.Reader
	checkpoint, served []byte
}

func (r rolledBack) ReadCheckpoint(context.Context) ([]byte, error)       { return r.checkpoint, nil }
func (r rolledBack) ReadServedCheckpoint(context.Context) ([]byte, error) { return r.served, nil }

// Export refuses a log whose storage was rolled back below a checkpoint it has served (invariant
// I6): the auditor would otherwise get a bundle of the shorter log, with no sign of the records
// it lost.
func TestExportRefusesRolledBackLog(t *testing.T) {
	l := copyLog(t, fixture(t))
	ctx := context.Background()
	src := source(t, l.Dir)
	old, err := src.Log.ReadCheckpoint(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := audittest.Append(ctx, l.Dir, 2, nil); err != nil {
		t.Fatal(err)
	}
	newer, err := src.Log.ReadCheckpoint(ctx)
	if err != nil {
		t.Fatal(err)
	}
	src.Log = rolledBack{Reader: src.Log, checkpoint: newer, served: old}
	if _, err := Export(ctx, &bytes.Buffer{}, src, ExportOptions{}); err != nil {
		t.Fatalf("a served checkpoint below the latest: %v", err)
	}
	src.Log = rolledBack{Reader: src.Log.(rolledBack).Reader, checkpoint: old, served: newer}
	_, err = Export(ctx, &bytes.Buffer{}, src, ExportOptions{})
	if !errors.Is(err, ErrInconsistent) || !strings.Contains(err.Error(), "it was rolled back") {
		t.Fatalf("a rolled-back log: %v, want ErrInconsistent", err)
	}
}
