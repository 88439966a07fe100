package service

import (
	"context"
	"crypto"
	"errors"
	"fmt"
	"path/filepath"
	"reflect"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/proofline/proofline/attest"
	"github.com/proofline/proofline/evidence"
	"github.com/proofline/proofline/evidence/index"
	"github.com/proofline/proofline/verifier/collateral/collateraltest"
	"github.com/proofline/proofline/verifier/service/servicetest"
)

// Concurrent attestations are all indexed (the index writer's group commit) and the index stays
// a prefix of the log. Most are indexed before their Attest returns; that is best effort (a
// record behind another's entry waits only indexGapGrace), so the test counts it, and checks
// every record once the writer has caught up.
func TestIndexWriterConcurrent(t *testing.T) {
	e := newAlertEnv(t, nil, nil)
	e.svc.Start()
	ctx := context.Background()
	const n = 48
	evs := make([][]byte, n)
	ps := make([]Principal, n)
	for i := range n {
		ps[i] = Principal{Name: fmt.Sprintf("vm-%02d", i), Role: RoleAgent}
		ch, err := e.svc.Challenge(ctx, ps[i])
		if err != nil {
			t.Fatal(err)
		}
		platform := attest.PlatformTDX
		if i%2 == 1 {
			platform = attest.PlatformSNP
		}
		if evs[i], err = e.plat.Evidence(platform, ch.Nonce, servicetest.RuntimeData(ps[i].Name), faultOf(i)); err != nil {
			t.Fatal(err)
		}
	}
	var wg sync.WaitGroup
	var immediate atomic.Int64
	as := make([]*Attestation, n)
	errs := make(chan error, n)
	for i := range n {
		wg.Go(func() {
			a, err := e.svc.Attest(ctx, ps[i], evs[i])
			if err != nil {
				errs <- err
				return
			}
			as[i] = a
			if got, err := e.svc.d.Index.Query(ctx, index.Query{Subject: ps[i].subject()}); err == nil && len(got) == 1 {
				immediate.Add(1)
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	size, err := logLeaves{e.svc.d.Log, e.svc.d.Index}.Size(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		next, err := e.svc.d.Index.Next(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if next >= size {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("index holds %d entries after 10s, the log %d leaves", next, size)
		}
	}
	for i, a := range as {
		want := "affirming"
		if faultOf(i) != servicetest.FaultNone {
			want = "contraindicated"
		}
		got, err := e.svc.d.Index.Query(ctx, index.Query{Subject: ps[i].subject()})
		if err != nil || len(got) != 1 || got[0].LogIndex != a.LogIndex || got[0].LeafHash != a.RecordSHA256 || got[0].Status != want {
			t.Fatalf("%s: %v %+v, want record %d (%s)", ps[i].Name, err, got, a.LogIndex, want)
		}
	}
	if next, _ := e.svc.d.Index.Next(ctx); next != size || size < n {
		t.Fatalf("index holds %d entries, the log %d leaves (%d attestations)", next, size, n)
	}
	// The writer's entries (index.NewSignedEntry: the status as decided, the record not read
	// back) are exactly those an index rebuilt from the log derives.
	rebuilt, err := index.OpenSQLite(ctx, filepath.Join(t.TempDir(), "rebuilt.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer rebuilt.Close()
	if _, err := index.Rebuild(ctx, rebuilt, logLeaves{e.svc.d.Log, e.svc.d.Index}, e.svc.open, nil); err != nil {
		t.Fatal(err)
	}
	all := func(ix *index.Index) []index.Entry {
		es, err := ix.Query(ctx, index.Query{Limit: index.MaxLimit})
		if err != nil {
			t.Fatal(err)
		}
		return es
	}
	if w, r := all(e.svc.d.Index), all(rebuilt); !reflect.DeepEqual(w, r) || len(w) != int(size) {
		t.Fatalf("the writer's index (%d entries) differs from the one rebuilt from the log (%d):\n%+v\n%+v", len(w), len(r), w, r)
	}
	waitNoAppends(t, e.svc)
	t.Logf("%d of %d attestations were in the index when Attest returned", immediate.Load(), n)
}

// faultOf is the fault of TestIndexWriterConcurrent's attestation i: every fifth is refused.
func faultOf(i int) servicetest.Fault {
	switch i % 10 {
	case 3:
		return servicetest.FaultDebug
	case 8:
		return servicetest.FaultMeasurement
	}
	return servicetest.FaultNone
}

// unknownOutcomeLog appends for real but reports failure on the appends it is told to fail: the
// outcome a caller cannot tell from a lost append, which leaves a record in the log that no one
// hands to the index writer.
type unknownOutcomeLog struct {
	Log
	fail atomic.Bool
}

func (l *unknownOutcomeLog) Append(ctx context.Context, leaf []byte) (uint64, error) {
	i, err := l.Log.Append(ctx, leaf)
	if err == nil && l.fail.CompareAndSwap(true, false) {
		return 0, errors.New("connection reset: append outcome unknown")
	}
	return i, err
}

// A record whose append outcome was unknown leaves a gap before the next record's entry: the
// writer closes it from the log (Catchup) and indexes the next record after it, and the index
// ends up holding both.
func TestIndexWriterGap(t *testing.T) {
	var ul *unknownOutcomeLog
	e := newAlertEnv(t, nil, func(d *Deps, _ *collateraltest.Clock) {
		ul = &unknownOutcomeLog{Log: d.Log}
		d.Log = ul
	})
	e.svc.Start()
	ctx := context.Background()
	p, ev := e.evidence(t, "vm-gap", attest.PlatformTDX)
	ul.fail.Store(true)
	if _, err := e.svc.Attest(ctx, p, ev); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("Attest with the append outcome unknown = %v, want ErrUnavailable", err)
	}
	a := e.attest(t, "vm-after", attest.PlatformSNP, servicetest.FaultNone)
	deadline := time.Now().Add(10 * time.Second)
	for {
		next, err := e.svc.d.Index.Next(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if next > a.LogIndex {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("index stuck at %d entries; record %d follows the unknown-outcome record %d", next, a.LogIndex, a.LogIndex-1)
		}
		time.Sleep(10 * time.Millisecond)
	}
	lost, err := e.svc.d.Index.Query(ctx, index.Query{Subject: p.subject()})
	if err != nil || len(lost) != 1 || lost[0].LogIndex != a.LogIndex-1 {
		t.Fatalf("the unknown-outcome record in the index: %v %+v, want log index %d", err, lost, a.LogIndex-1)
	}
	after, err := e.svc.d.Index.Query(ctx, index.Query{Subject: "agent:vm-after"})
	if err != nil || len(after) != 1 || after[0].LogIndex != a.LogIndex {
		t.Fatalf("the record after the gap in the index: %v %+v", err, after)
	}
	// The append that failed (as far as the service knows) stopped counting too.
	waitNoAppends(t, e.svc)
}

// waitNoAppends fails t unless the index writer's count of appends under way is back to 0
// within 5 s (a background record of the service may be appending meanwhile): a count that
// never goes down would make the writer linger on every wake.
func waitNoAppends(t *testing.T, s *Service) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); s.ixw.appending.Load() != 0; time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("the index writer counts %d appends under way after all returned", s.ixw.appending.Load())
		}
	}
}

// lyingSigner reports one public key and signs with another: a misconfigured KMS key.
type lyingSigner struct {
	evidence.Signer
	other evidence.Signer
}

func (s lyingSigner) Sign(ctx context.Context, tbs []byte) ([]byte, error) {
	return s.other.Sign(ctx, tbs)
}
func (s lyingSigner) Public() crypto.PublicKey { return s.Signer.Public() }

// Invariant I5 before an append: the first record of a signer whose signatures do not verify
// under its reported key is refused and nothing is appended; a record timed after the signing
// key's end in the key history is refused, after any number of good records.
func TestRecordsOpenBeforeAppend(t *testing.T) {
	t.Run("signature", func(t *testing.T) {
		plat, err := servicetest.New(alertStart)
		if err != nil {
			t.Fatal(err)
		}
		ctx := context.Background()
		cfg := Config{DataDir: t.TempDir(), Log: LogConfig{CheckpointInterval: 100 * time.Millisecond}}
		env := Env{TestMode: true, Now: func() time.Time { return alertStart }, Roots: plat.Roots, Collateral: plat.Collateral, InitialPolicy: plat.PolicyYAML}
		open := func(lie bool) (*Service, error) {
			d, err := OpenDeps(ctx, cfg, env)
			if err != nil {
				t.Fatal(err)
			}
			if lie {
				other, err := evidence.GenerateKey()
				if err != nil {
					t.Fatal(err)
				}
				d.RecordKey = lyingSigner{Signer: d.RecordKey, other: other}
			}
			s, err := New(ctx, *d)
			if err != nil {
				for _, c := range d.Closers {
					c()
				}
			}
			return s, err
		}
		// On a fresh data dir the first record is the initial policy's.
		if _, err := open(true); !errors.Is(err, evidence.ErrSignature) {
			t.Fatalf("New with a signer whose signatures do not verify = %v, want ErrSignature", err)
		}
		s, err := open(false)
		if err != nil {
			t.Fatal(err)
		}
		s.Close()
		// On a restart the first record is an attestation.
		if s, err = open(true); err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		before, err := logLeaves{s.d.Log, s.d.Index}.Size(ctx)
		if err != nil {
			t.Fatal(err)
		}
		p := Principal{Name: "vm-1", Role: RoleAgent}
		ch, err := s.Challenge(ctx, p)
		if err != nil {
			t.Fatal(err)
		}
		ev, err := plat.Evidence(attest.PlatformTDX, ch.Nonce, servicetest.RuntimeData(p.Name), servicetest.FaultNone)
		if err != nil {
			t.Fatal(err)
		}
		if _, err = s.Attest(ctx, p, ev); !errors.Is(err, evidence.ErrSignature) {
			t.Fatalf("Attest with a signer whose signatures do not verify = %v, want ErrSignature", err)
		}
		if _, err := s.d.Log.Entry(ctx, before); err == nil {
			t.Fatalf("a record was appended at %d", before)
		}
	})
	t.Run("validity", func(t *testing.T) {
		end := alertStart.Add(time.Hour)
		e := newAlertEnv(t, nil, func(d *Deps, _ *collateraltest.Clock) {
			next, err := evidence.GenerateKey()
			if err != nil {
				t.Fatal(err)
			}
			if err := d.KeyHistory.Rotate(next, end); err != nil {
				t.Fatal(err)
			}
		})
		e.attest(t, "vm-1", attest.PlatformTDX, servicetest.FaultNone)
		e.attest(t, "vm-2", attest.PlatformSNP, servicetest.FaultNone)
		e.clock.Advance(time.Hour)
		ctx := context.Background()
		p, ev := e.evidence(t, "vm-3", attest.PlatformTDX)
		if _, err := e.svc.Attest(ctx, p, ev); !errors.Is(err, evidence.ErrKeyNotValidAt) {
			t.Fatalf("Attest after the record key's end = %v, want ErrKeyNotValidAt", err)
		}
	})
}

// An index database that refuses writes does not hold attestations up (their callers go on),
// and once it accepts writes again the writer indexes what it kept, without another append to
// wake it.
func TestIndexWriterRecovers(t *testing.T) {
	for _, n := range []int{1, 4} {
		t.Run(fmt.Sprint(n), func(t *testing.T) { testIndexWriterRecovers(t, n) })
	}
}

func testIndexWriterRecovers(t *testing.T, n int) {
	var dir string
	e := newAlertEnv(t, func(c *Config) { dir = c.DataDir }, nil)
	e.svc.Start()
	ctx := context.Background()
	restore := failInserts(t, filepath.Join(dir, IndexFileName), "proofline_index_entries", "injected index failure")
	var last uint64
	for i := range n {
		start := time.Now()
		last = e.attest(t, fmt.Sprintf("vm-%d", i), attest.PlatformTDX, servicetest.FaultNone).LogIndex
		if d := time.Since(start); d >= indexWait {
			t.Fatalf("attestation %d took %v with the index failing: it waited for the index", i, d)
		}
	}
	if next, err := e.svc.d.Index.Next(ctx); err != nil || next > last {
		t.Fatalf("index Next = %d, %v while inserts fail", next, err)
	}
	restore()
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		next, err := e.svc.d.Index.Next(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if next > last {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("index stuck at %d entries after the database recovered; the last record is %d", next, last)
		}
	}
}

// evidence returns agent name's principal and its evidence for a fresh challenge.
func (e *alertEnv) evidence(t *testing.T, name string, platform attest.Platform) (Principal, []byte) {
	t.Helper()
	p := Principal{Name: name, Role: RoleAgent}
	ch, err := e.svc.Challenge(context.Background(), p)
	if err != nil {
		t.Fatal(err)
	}
	ev, err := e.plat.Evidence(platform, ch.Nonce, servicetest.RuntimeData(name), servicetest.FaultNone)
	if err != nil {
		t.Fatal(err)
	}
	return p, ev
}
