package audit

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/transparency-dev/merkle/rfc6962"
	"github.com/transparency-dev/tessera/client"
	"golang.org/x/mod/sumdb/note"

	"github.com/proofline/proofline/evidence/audit/audittest"
	evlog "github.com/proofline/proofline/evidence/log"
	"github.com/proofline/proofline/verifier/service"
)

// windowBundle is a bundle of one round of the fixture and its entries.
func windowBundle(t *testing.T) (*audittest.Log, []tarEntry, *Manifest) {
	t.Helper()
	l := fixture(t)
	bundle, m := export(t, l, ExportOptions{From: l.RoundTime(3), To: l.RoundTime(4).Add(-time.Second)})
	if rep := verify(t, bundle, VerifyOptions{}); !rep.OK() {
		t.Fatalf("the untouched bundle fails:\n%s", failures(rep))
	}
	return l, unpack(t, bundle), m
}

// attestations returns the indices of the window's attestation records (not the records at its
// edges) whose collateral or policy includes digest d (any, when d is empty).
func attestations(t *testing.T, es []tarEntry, d string) []uint64 {
	t.Helper()
	var m Manifest
	if err := json.Unmarshal(es[find(t, es, nameManifest)].data, &m); err != nil {
		t.Fatal(err)
	}
	var out []uint64
	for _, e := range es {
		k, _, i := classify(e.name)
		if k != kindRecord || i == m.First || i == m.End-1 {
			continue
		}
		rec, err := peek(e.data)
		if err != nil || rec.Kind != "attestation" {
			continue
		}
		uses := d == "" || rec.Policy.Digest.String() == d
		for _, c := range rec.Collateral {
			uses = uses || c.Digest.String() == d
		}
		if uses {
			out = append(out, i)
		}
	}
	return out
}

// blobsLike returns the names of the blobs whose content starts with prefix.
func blobsLike(es []tarEntry, prefix string) []int {
	var out []int
	for i, e := range es {
		if strings.HasPrefix(e.name, prefixBlobs) && bytes.HasPrefix(e.data, []byte(prefix)) {
			out = append(out, i)
		}
	}
	return out
}

func setManifest(t *testing.T, es []tarEntry, edit func(*Manifest)) {
	t.Helper()
	var m Manifest
	i := find(t, es, nameManifest)
	if err := json.Unmarshal(es[i].data, &m); err != nil {
		t.Fatal(err)
	}
	edit(&m)
	es[i].data, _ = json.Marshal(&m)
}

// Every way of tampering with a bundle is caught, by a finding that names the record concerned
// (or, for the checkpoint, says so).
func TestTamper(t *testing.T) {
	l, orig, m := windowBundle(t)
	atts := attestations(t, orig, "")
	victim := atts[len(atts)/2]
	otherKey, otherVKey, err := note.GenerateKey(rand.Reader, strings.SplitN(readFile(t, filepath.Join(l.Dir, "log", "note.pub")), "+", 2)[0])
	if err != nil {
		t.Fatal(err)
	}
	resign := func(t *testing.T, es []tarEntry) {
		cp := es[find(t, es, nameCheckpoint)].data
		body, _, _ := bytes.Cut(cp, []byte("\n\n"))
		s, err := note.NewSigner(otherKey)
		if err != nil {
			t.Fatal(err)
		}
		signed, err := note.Sign(&note.Note{Text: string(body) + "\n"}, s)
		if err != nil {
			t.Fatal(err)
		}
		es[find(t, es, nameCheckpoint)].data = signed
	}
	realKey, err := note.NewVerifier(strings.TrimSpace(readFile(t, filepath.Join(l.Dir, "log", "note.pub"))))
	if err != nil {
		t.Fatal(err)
	}

	for _, c := range []struct {
		name   string
		tamper func(t *testing.T, es []tarEntry) []tarEntry
		opts   VerifyOptions
		check  string
		record func(es []tarEntry) []uint64 // records that must be named (nil: a finding without a record)
		msg    string
	}{
		{
			name: "flipped byte in a record",
			tamper: func(t *testing.T, es []tarEntry) []tarEntry {
				e := &es[find(t, es, recordName(victim))]
				e.data[len(e.data)/2] ^= 0x01
				return es
			},
			check: "inclusion", record: func([]tarEntry) []uint64 { return []uint64{victim} }, msg: "not in the log the checkpoint commits to",
		},
		{
			name: "removed record (gap)",
			tamper: func(t *testing.T, es []tarEntry) []tarEntry {
				i := find(t, es, recordName(victim))
				return append(es[:i], es[i+2:]...) // the record and its proof
			},
			check: "gap", record: func([]tarEntry) []uint64 { return []uint64{victim} }, msg: "missing",
		},
		{
			name: "removed record file, proof kept",
			tamper: func(t *testing.T, es []tarEntry) []tarEntry {
				i := find(t, es, recordName(victim))
				return append(es[:i], es[i+1:]...)
			},
			check: "gap", record: func([]tarEntry) []uint64 { return []uint64{victim} }, msg: "holds its inclusion proof but not the record",
		},
		{
			name: "record replaced by its leaf hash",
			tamper: func(t *testing.T, es []tarEntry) []tarEntry {
				i := find(t, es, recordName(victim))
				p, _ := json.Marshal(inclusionProofOf(t, es[i+1].data, rfc6962.DefaultHasher.HashLeaf(es[i].data)))
				es[i+1].data = p
				return append(es[:i], es[i+1:]...)
			},
			check: "subject", record: func([]tarEntry) []uint64 { return []uint64{victim} }, msg: "not for one subject",
		},
		{
			name: "two records swapped",
			tamper: func(t *testing.T, es []tarEntry) []tarEntry {
				i, j := find(t, es, recordName(victim)), find(t, es, recordName(victim+1))
				es[i].data, es[j].data = es[j].data, es[i].data
				return es
			},
			check: "inclusion", record: func([]tarEntry) []uint64 { return []uint64{victim, victim + 1} }, msg: "not in the log",
		},
		{
			name: "swapped collateral blob",
			tamper: func(t *testing.T, es []tarEntry) []tarEntry {
				cs := blobsLike(es, `{"url"`)
				es[cs[0]].data = es[cs[1]].data
				return es
			},
			check: "reperform",
			record: func(es []tarEntry) []uint64 {
				return attestations(t, es, strings.TrimPrefix(es[blobsLike(es, `{"url"`)[0]].name, prefixBlobs))
			},
			msg: "does not match its digest",
		},
		{
			name: "edited policy",
			tamper: func(t *testing.T, es []tarEntry) []tarEntry {
				for _, i := range blobsLike(es, "# The policy of the simulated platforms") {
					es[i].data = bytes.Replace(es[i].data, []byte("DEBUG"), []byte("debug"), 1)
					es[i].data = append(es[i].data, "  allow_debug_unsafe: true\n"...)
				}
				return es
			},
			check: "",
			record: func(es []tarEntry) []uint64 {
				return attestations(t, es, strings.TrimPrefix(es[blobsLike(es, "# The policy of the simulated platforms")[0]].name, prefixBlobs))
			},
			msg: "does not match its digest",
		},
		{
			name:   "checkpoint signed by an unknown key",
			tamper: func(t *testing.T, es []tarEntry) []tarEntry { resign(t, es); return es },
			check:  "checkpoint", msg: "not signed by the log key",
		},
		{
			name: "checkpoint and note.pub replaced, log key pinned",
			tamper: func(t *testing.T, es []tarEntry) []tarEntry {
				resign(t, es)
				es[find(t, es, nameLogKey)].data = []byte(otherVKey + "\n")
				return es
			},
			opts:  VerifyOptions{LogKey: realKey},
			check: "checkpoint", msg: "not signed by the log key",
		},
		{
			name: "window cut short",
			tamper: func(t *testing.T, es []tarEntry) []tarEntry {
				setManifest(t, es, func(m *Manifest) { m.End-- })
				return es[:len(es)-2]
			},
			check: "window", record: func([]tarEntry) []uint64 { return []uint64{m.End - 2} }, msg: "leaves out the end of the window",
		},
		{
			name: "window start moved",
			tamper: func(t *testing.T, es []tarEntry) []tarEntry {
				setManifest(t, es, func(m *Manifest) { m.First++ })
				i := find(t, es, recordName(m.First))
				return append(es[:i], es[i+2:]...)
			},
			check: "window", record: func([]tarEntry) []uint64 { return []uint64{m.First + 1} }, msg: "leaves out the start of the window",
		},
		{
			// The record before the window is both of a one-record bundle's edges: it must be
			// checked as the last record after the window too.
			name: "every record but the one before the window dropped",
			tamper: func(t *testing.T, es []tarEntry) []tarEntry {
				setManifest(t, es, func(m *Manifest) { m.End, m.Records, m.Redacted = m.First+1, 1, 0 })
				var kept []tarEntry
				for _, e := range es {
					if k, _, i := classify(e.name); (k != kindRecord && k != kindProof) || i == m.First {
						kept = append(kept, e)
					}
				}
				return kept
			},
			check: "window", record: func([]tarEntry) []uint64 { return []uint64{m.First} }, msg: "leaves out the end of the window",
		},
		{
			name: "manifest naming another log",
			tamper: func(t *testing.T, es []tarEntry) []tarEntry {
				setManifest(t, es, func(m *Manifest) { m.Origin = "example.com/another-log" })
				return es
			},
			check: "manifest", msg: `names the log "example.com/another-log"`,
		},
		{
			name: "window that ends before it starts",
			tamper: func(t *testing.T, es []tarEntry) []tarEntry {
				setManifest(t, es, func(m *Manifest) { m.From, m.To = m.To, m.From })
				return es
			},
			check: "manifest", msg: "before it starts",
		},
	} {
		t.Run(c.name, func(t *testing.T) {
			es := make([]tarEntry, len(orig))
			for i, e := range orig {
				es[i] = tarEntry{e.name, bytes.Clone(e.data)}
			}
			rep := verify(t, pack(t, c.tamper(t, es), false), c.opts)
			if rep.OK() {
				t.Fatal("the tampered bundle passes")
			}
			var want []uint64
			if c.record != nil {
				want = c.record(es)
				if len(want) == 0 {
					t.Fatal("no record to expect")
				}
			}
			named := map[uint64]bool{}
			found := false
			for _, f := range rep.Failures {
				if (c.check == "" || f.Check == c.check) && strings.Contains(f.Message, c.msg) {
					if !found {
						t.Logf("%d findings, e.g. %s", len(rep.Failures)+rep.FailuresOmitted, f)
					}
					found = true
					if f.Record != nil {
						named[*f.Record] = true
					}
				}
			}
			if !found {
				t.Fatalf("no %s finding %q among:\n%s", c.check, c.msg, failures(rep))
			}
			for _, i := range want {
				if !named[i] {
					t.Errorf("record %d is not named; findings:\n%s", i, failures(rep))
				}
			}
		})
	}
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func inclusionProofOf(t *testing.T, data []byte, leafHash []byte) inclusionProof {
	t.Helper()
	var p inclusionProof
	if err := json.Unmarshal(data, &p); err != nil {
		t.Fatal(err)
	}
	p.LeafHash = leafHash
	return p
}

// A log rewritten after an export is caught: Export refuses to prove it consistent with the
// earlier checkpoint, and a bundle whose consistency proof comes from the rewritten log fails
// Verify against the auditor's copy of that checkpoint.
func TestForkedLog(t *testing.T) {
	ctx := context.Background()
	l, err := audittest.Generate(ctx, audittest.Options{Dir: filepath.Join(t.TempDir(), "data"), Records: 40, VMs: 4})
	if err != nil {
		t.Fatal(err)
	}
	first, _ := export(t, l, ExportOptions{})
	prev, err := BundleCheckpoint(bytes.NewReader(first))
	if err != nil {
		t.Fatal(err)
	}

	// The fork: the same note key, the same records but one, and two more.
	forkDir := filepath.Join(t.TempDir(), "fork")
	s, v, err := evlog.LoadOrGenerateKey(filepath.Join(l.Dir, service.LogDirName, "note.key"), "")
	if err != nil {
		t.Fatal(err)
	}
	fork, err := evlog.OpenPOSIX(ctx, forkDir, evlog.Options{Signer: s, Verifier: v, CheckpointInterval: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	orig := source(t, l.Dir)
	lr := evlog.NewLeafReader(orig.Log, v)
	n, err := lr.Size(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for i := range n + 2 {
		if i == 10 {
			continue
		}
		leaf, err := lr.Entry(ctx, min(i, n-1))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := fork.Append(ctx, leaf); err != nil {
			t.Fatal(err)
		}
	}
	if err := fork.Close(); err != nil {
		t.Fatal(err)
	}
	forkSrc := orig
	forkSrc.Log = evlog.NewPOSIXReader(forkDir)
	_, err = Export(ctx, &bytes.Buffer{}, forkSrc, ExportOptions{Previous: prev, Roots: testRoots(t, l)})
	if !errors.Is(err, ErrInconsistent) {
		t.Fatalf("export of the fork with the earlier checkpoint: %v, want ErrInconsistent", err)
	}

	// A bundle of the fork that claims consistency with the earlier checkpoint.
	var buf bytes.Buffer
	if _, err := Export(ctx, &buf, forkSrc, ExportOptions{Roots: testRoots(t, l)}); err != nil {
		t.Fatal(err)
	}
	es := unpack(t, buf.Bytes())
	pb, err := client.NewProofBuilder(ctx, n+1, forkSrc.Log.ReadTile)
	if err != nil {
		t.Fatal(err)
	}
	hashes, err := pb.ConsistencyProof(ctx, n, n+1)
	if err != nil {
		t.Fatal(err)
	}
	cons, _ := json.Marshal(consistencyProof{OldSize: n, NewSize: n + 1, Hashes: hashes})
	setManifest(t, es, func(m *Manifest) { m.PreviousSize = &n })
	i := find(t, es, nameCheckpoint) + 1
	es = append(es[:i], append([]tarEntry{{namePrevious, prev}, {nameConsistency, cons}}, es[i:]...)...)
	rep := verify(t, pack(t, es, false), VerifyOptions{Previous: prev})
	if rep.OK() || !strings.Contains(failures(rep), fmt.Sprintf("consistency: records [0, %d) are not the ones the previous checkpoint", n)) {
		t.Fatalf("the forked bundle: findings:\n%s", failures(rep))
	}
	// The fork's own bundle, without a previous checkpoint, is sound: only the comparison with
	// what the auditor saw before shows the rewrite.
	if rep := verify(t, buf.Bytes(), VerifyOptions{}); !rep.OK() {
		t.Fatalf("the fork's own bundle:\n%s", failures(rep))
	}
	if rep := verify(t, buf.Bytes(), VerifyOptions{Previous: prev}); rep.OK() {
		t.Fatal("the fork's bundle passes against the earlier checkpoint without any consistency proof")
	}
}
