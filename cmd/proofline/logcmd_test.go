package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/mod/sumdb/note"

	"github.com/proofline/proofline/evidence"
	"github.com/proofline/proofline/evidence/index"
	evlog "github.com/proofline/proofline/evidence/log"
)

// buildLog writes a POSIX log of n signed policy-change records and their key history.
func buildLog(t *testing.T, n int) (dir, history string) {
	t.Helper()
	ctx := context.Background()
	dir = filepath.Join(t.TempDir(), "log")
	// Without a signer the log keeps its note key in dir/note.key and dir/note.pub.
	l, err := evlog.OpenPOSIX(ctx, dir, evlog.Options{Origin: "proofline.test/log"})
	if err != nil {
		t.Fatal(err)
	}
	key, err := evidence.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now().UTC().Truncate(time.Second)
	keys := &evidence.KeyHistory{}
	if err := keys.Add(key, start.Add(-time.Hour)); err != nil {
		t.Fatal(err)
	}
	for i := range n {
		rec := &evidence.Record{
			Version: evidence.Version, Kind: evidence.KindPolicyChange, Time: start.Add(time.Duration(i) * time.Second),
			Policy:       &evidence.PolicyRef{ID: fmt.Sprintf("policy-%d", i), Digest: evidence.Digest{byte(i)}},
			PolicyChange: &evidence.PolicyChange{Actor: "admin@example.com"},
			Verifier:     evidence.Verifier{Name: "proofline", Version: "test", Build: evidence.Digest{1}},
		}
		leaf, err := evidence.Sign(ctx, rec, key)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := l.Append(ctx, leaf); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := l.WaitCheckpoint(ctx, uint64(n)); err != nil {
		t.Fatal(err)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	history = filepath.Join(t.TempDir(), "history.json")
	if err := keys.Save(history); err != nil {
		t.Fatal(err)
	}
	return dir, history
}

func runCLI(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var out, errb bytes.Buffer
	code := run(context.Background(), args, &out, &errb)
	return code, out.String(), errb.String()
}

func TestLogFsckAndReindex(t *testing.T) {
	dir, history := buildLog(t, 300)
	pub := filepath.Join(dir, "note.pub")
	if _, err := os.Stat(pub); err != nil {
		t.Fatalf("the log keeps no note.pub: %v", err)
	}
	code, out, errs := runCLI(t, "log", "fsck", "--log", dir, "--keys", history)
	if code != 0 || !strings.Contains(out, "OK") || !strings.Contains(out, "size 300") {
		t.Fatalf("fsck: exit %d\n%s%s", code, out, errs)
	}
	// The log directory's own key vouches only for itself: the output says so, unless the key or
	// a checkpoint kept elsewhere is given.
	if !strings.Contains(out, "NOT PINNED") {
		t.Fatalf("fsck with the log directory's own key does not say the key is not pinned:\n%s", out)
	}
	kept := filepath.Join(t.TempDir(), "note.pub")
	if err := os.WriteFile(kept, []byte(readFileT(t, pub)), 0o644); err != nil {
		t.Fatal(err)
	}
	cp, err := evlog.NewPOSIXReader(dir).ReadCheckpoint(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	keptCP := filepath.Join(t.TempDir(), "checkpoint")
	if err := os.WriteFile(keptCP, cp, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, pin := range [][]string{{"--log-key", kept}, {"--checkpoint", keptCP}} {
		code, out, errs = runCLI(t, append([]string{"log", "fsck", "--log", dir, "--keys", history}, pin...)...)
		if code != 0 || strings.Contains(out, "NOT PINNED") {
			t.Fatalf("fsck %v: exit %d\n%s%s", pin, code, out, errs)
		}
	}
	// A kept checkpoint that the log's key does not verify (the log re-signed under a new key
	// since) is corruption, not an error of use.
	body, _, _ := bytes.Cut(cp, []byte("\n\n"))
	otherKey, _, err := note.GenerateKey(rand.Reader, "proofline.test/log")
	if err != nil {
		t.Fatal(err)
	}
	signer, err := note.NewSigner(otherKey)
	if err != nil {
		t.Fatal(err)
	}
	foreign, err := note.Sign(&note.Note{Text: string(body) + "\n"}, signer)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keptCP, foreign, 0o644); err != nil {
		t.Fatal(err)
	}
	code, out, errs = runCLI(t, "log", "fsck", "--log", dir, "--keys", history, "--checkpoint", keptCP)
	if code != exitContraindicated || !strings.Contains(out, "CORRUPT: invariant I4") || !strings.Contains(out, "re-signed under another key") {
		t.Fatalf("fsck with a kept checkpoint of another key: exit %d\n%s%s", code, out, errs)
	}

	ixPath := filepath.Join(t.TempDir(), "index.db")
	code, out, errs = runCLI(t, "log", "reindex", "--log", dir, "--keys", history, "--index", ixPath)
	if code != 0 || !strings.Contains(out, "300 records indexed") {
		t.Fatalf("reindex: exit %d\n%s%s", code, out, errs)
	}
	ix, err := index.OpenSQLite(context.Background(), ixPath)
	if err != nil {
		t.Fatal(err)
	}
	got, err := ix.Query(context.Background(), index.Query{Policy: "policy-257"})
	ix.Close()
	if err != nil || len(got) != 1 || got[0].LogIndex != 257 {
		t.Fatalf("index query: %v %+v", err, got)
	}

	// A record the key history does not know fails I5 at its index.
	other := &evidence.KeyHistory{}
	k2, _ := evidence.GenerateKey()
	if err := other.Add(k2, time.Now().UTC().Truncate(time.Second).Add(-2*time.Hour)); err != nil {
		t.Fatal(err)
	}
	otherPath := filepath.Join(t.TempDir(), "other.json")
	if err := other.Save(otherPath); err != nil {
		t.Fatal(err)
	}
	code, out, _ = runCLI(t, "log", "fsck", "--log", dir, "--keys", otherPath)
	if code != 1 || !strings.Contains(out, "CORRUPT: invariant I5 at leaf 0") {
		t.Fatalf("fsck with the wrong key history: exit %d\n%s", code, out)
	}

	// One flipped byte in a stored leaf is named by its index.
	bundles, _ := filepath.Glob(filepath.Join(dir, "tlog", "tile", "entries", "*"))
	if len(bundles) == 0 {
		t.Skip("entry bundle layout not found")
	}
	b := bundles[0]
	data, err := os.ReadFile(b)
	if err != nil {
		t.Fatal(err)
	}
	data[len(data)/2] ^= 1
	if err := os.WriteFile(b, data, 0o644); err != nil {
		t.Fatal(err)
	}
	code, out, _ = runCLI(t, "log", "fsck", "--log", dir, "--keys", history)
	if code != 1 || !strings.Contains(out, "CORRUPT") || !strings.Contains(out, "at leaf ") {
		t.Fatalf("fsck after tampering: exit %d\n%s", code, out)
	}
}

func TestLogUsage(t *testing.T) {
	for _, args := range [][]string{
		{"log"},
		{"log", "frob"},
		{"log", "fsck"},
		{"log", "fsck", "--log", t.TempDir()},
		{"log", "fsck", "--log", t.TempDir(), "--mysql", "x", "--keys", "k"},
		{"log", "reindex", "--log", t.TempDir(), "--keys", "nope.json"},
	} {
		if code, out, errs := runCLI(t, args...); code != 2 || out != "" || errs == "" {
			t.Errorf("%v: exit %d stdout %q stderr %q", args, code, out, errs)
		}
	}
}

func readFileT(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
