package index

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"fmt"
	mrand "math/rand/v2"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/proofline/proofline/evidence"
	"github.com/proofline/proofline/internal/mysqltest"
)

// backends opens an empty index on each engine; open may be called several times in one test
// for independent indexes.
var backends = []struct {
	name string
	open func(t *testing.T) *Index
}{
	{"sqlite", func(t *testing.T) *Index {
		ix, err := OpenSQLite(context.Background(), filepath.Join(t.TempDir(), "index.db"))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { ix.Close() })
		return ix
	}},
	{"mariadb", func(t *testing.T) *Index {
		ix, err := OpenMySQL(context.Background(), newTestDatabase(t))
		if err != nil {
			t.Fatal(err)
		}
		return ix
	}},
}

func forEach(t *testing.T, f func(t *testing.T, open func(t *testing.T) *Index)) {
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			t.Parallel()
			f(t, b.open)
		})
	}
}

func newTestDatabase(t testing.TB) *sql.DB { return mysqltest.DB(t) }

// t0 is the pinned clock of these tests: the first record's time.
var t0 = time.Date(2026, 11, 2, 10, 0, 0, 0, time.UTC)

// signer signs test records and opens them against its key history, as the log does.
type signer struct {
	key  *evidence.Key
	keys *evidence.KeyHistory
}

func newSigner(t testing.TB) *signer {
	t.Helper()
	k, err := evidence.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	h := &evidence.KeyHistory{}
	if err := h.Add(k, t0.Add(-time.Hour)); err != nil {
		t.Fatal(err)
	}
	return &signer{key: k, keys: h}
}

func (s *signer) open(leaf []byte) (*evidence.Record, error) {
	r, _, err := evidence.Open(leaf, s.keys)
	return r, err
}

// memLog is an in-memory LeafSource.
type memLog struct{ leaves [][]byte }

func (l *memLog) Size(context.Context) (uint64, error) { return uint64(len(l.leaves)), nil }

func (l *memLog) Entry(_ context.Context, i uint64) ([]byte, error) {
	if i >= uint64(len(l.leaves)) {
		return nil, fmt.Errorf("no leaf %d in a log of %d", i, len(l.leaves))
	}
	return l.leaves[i], nil
}

// corpus is a signed log and the entries the index must derive from it, written down from the
// generator's choices rather than by the code under test.
type corpus struct {
	log  memLog
	want []Entry
	recs []*evidence.Record // as opened from the leaves
}

// A long subject: longer than any InnoDB index key (3072 bytes).
var longSubject = "vm-" + strings.Repeat("0123456789abcdef", 300)

var (
	subjects  = []string{"vm-a", "vm-b", "VM-A", longSubject}
	platforms = []string{"tdx", "sev-snp"}
	statuses  = []string{"affirming", "warning", "contraindicated"}
	policies  = []string{"default", "prod", "Prod"}
)

// newCorpus signs n records of all four kinds with varied subjects, platforms, statuses,
// policies and times (several records share a time). seed makes it reproducible; different
// seeds give different logs.
func newCorpus(t testing.TB, s *signer, n int, seed uint64) *corpus {
	t.Helper()
	rng := mrand.New(mrand.NewPCG(seed, 1))
	pick := func(xs []string) string { return xs[rng.IntN(len(xs))] }
	verifier := evidence.Verifier{Name: "proofline", Version: "v0.1.0", Build: sha256.Sum256([]byte("binary"))}
	c := &corpus{}
	at := t0
	for i := range n {
		if rng.IntN(4) > 0 {
			at = at.Add(time.Duration(1+rng.IntN(90)) * time.Minute)
		}
		r := &evidence.Record{Version: evidence.Version, Time: at, Verifier: verifier}
		want := Entry{LogIndex: uint64(i), Time: at}
		policy := &evidence.PolicyRef{ID: pick(policies), Digest: sha256.Sum256([]byte{byte(i)})}
		switch k := rng.IntN(10); {
		case k < 5:
			r.Kind = evidence.KindAttestation
			r.Subject = &evidence.Subject{ID: pick(subjects), Platform: pick(platforms)}
			r.Evidence = &evidence.Evidence{Digest: &evidence.Digest{byte(i)}}
			r.Policy = policy
			want.Status = pick(statuses)
			r.Result = fmt.Appendf(nil, `{"eat_profile":"tag:github.com,2023:veraison/ear","status":%q,"failures":[]}`, want.Status)
			switch rng.IntN(12) { // a status that is not a string indexes as empty
			case 0:
				r.Result, want.Status = []byte(`{"status":7}`), ""
			case 1:
				r.Result, want.Status = []byte(`["affirming"]`), ""
			}
			want.Subject, want.Platform, want.Policy = r.Subject.ID, r.Subject.Platform, policy.ID
		case k < 7:
			r.Kind = evidence.KindKeyRelease
			r.Subject = &evidence.Subject{ID: pick(subjects)}
			d := evidence.DecisionRelease
			if rng.IntN(2) == 0 {
				d = evidence.DecisionDeny
			}
			r.KeyRelease = &evidence.KeyRelease{RelyingParty: "kbs.example", Resource: "disk-key", Decision: d}
			if rng.IntN(2) == 0 {
				r.Policy = policy
				want.Policy = policy.ID
			}
			want.Subject, want.Status = r.Subject.ID, string(d)
		case k < 8:
			r.Kind = evidence.KindPolicyChange
			r.Policy = policy
			r.PolicyChange = &evidence.PolicyChange{Actor: "alice@example.com"}
			want.Policy = policy.ID
		default:
			r.Kind = evidence.KindCollateralUpdate
			r.Collateral = []evidence.CollateralRef{{Kind: "crl", URL: "https://pcs.example/crl", Digest: evidence.Digest{byte(i), 1}}}
		}
		want.Kind = r.Kind
		leaf, err := evidence.Sign(context.Background(), r, s.key)
		if err != nil {
			t.Fatalf("signing record %d: %v", i, err)
		}
		opened, err := s.open(leaf)
		if err != nil {
			t.Fatalf("opening record %d: %v", i, err)
		}
		want.LeafHash = sha256.Sum256(leaf)
		c.log.leaves = append(c.log.leaves, leaf)
		c.want = append(c.want, want)
		c.recs = append(c.recs, opened)
	}
	return c
}

// addAll indexes the corpus one Add at a time, as the verifier does.
func (c *corpus) addAll(t testing.TB, ix *Index) {
	t.Helper()
	for i, leaf := range c.log.leaves {
		if err := ix.Add(context.Background(), uint64(i), leaf, c.recs[i]); err != nil {
			t.Fatalf("Add(%d): %v", i, err)
		}
	}
}

// model answers a query by brute force over the expected entries.
func (c *corpus) model(q Query) []Entry {
	limit := q.Limit
	if limit == 0 {
		limit = DefaultLimit
	}
	return c.matching(q, min(limit, MaxLimit))
}

// matching returns the first limit expected entries that match q.
func (c *corpus) matching(q Query, limit int) []Entry {
	var out []Entry
	for _, e := range c.want {
		switch {
		case e.LogIndex < q.Start,
			q.Subject != "" && e.Subject != q.Subject,
			q.Platform != "" && e.Platform != q.Platform,
			q.Status != "" && e.Status != q.Status,
			q.Kind != "" && e.Kind != q.Kind,
			q.Policy != "" && e.Policy != q.Policy,
			!q.From.IsZero() && e.Time.Before(q.From),
			!q.To.IsZero() && !e.Time.Before(q.To):
			continue
		}
		if len(out) == limit {
			break
		}
		out = append(out, e)
	}
	return out
}
