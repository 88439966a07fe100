package audit

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/proofline/proofline/evidence/audit/audittest"
	"github.com/proofline/proofline/evidence/blob"
	evlog "github.com/proofline/proofline/evidence/log"
	"github.com/proofline/proofline/verifier/service"
)

// fixtureSize is the size of the log the tests share, generated once per test binary through
// the real service: 2,000 records from 128 VMs in 16 rounds (about 12 s on two cores). Under the
// race detector, which makes the service about five times slower, 400 records from 32 VMs in 12
// rounds. The tests need at least offlineTo + 2 rounds.
func fixtureSize() (records, vms int) {
	if raceEnabled {
		return 400, 32
	}
	return 2000, 128
}

// offlineVM misses rounds [offlineFrom, offlineTo) of the fixture: a gap for Reconcile to find.
const (
	offlineVM   = "vm-03"
	offlineFrom = 4
	offlineTo   = 9
)

var (
	fixtureOnce sync.Once
	fixtureLog  *audittest.Log
	fixtureErr  error
	fixtureDir  string
)

func TestMain(m *testing.M) {
	code := m.Run()
	if fixtureDir != "" {
		os.RemoveAll(fixtureDir)
	}
	os.Exit(code)
}

// fixture returns the shared generated log. Tests must not change it: copy it (copyLog) first.
func fixture(t *testing.T) *audittest.Log {
	t.Helper()
	fixtureOnce.Do(func() {
		if fixtureDir, fixtureErr = os.MkdirTemp("", "proofline-audit-test-"); fixtureErr != nil {
			return
		}
		records, vms := fixtureSize()
		fixtureLog, fixtureErr = audittest.Generate(context.Background(), audittest.Options{
			Dir: filepath.Join(fixtureDir, "data"), Records: records, VMs: vms,
			Offline: map[string][2]int{offlineVM: {offlineFrom, offlineTo}},
		})
	})
	if fixtureErr != nil {
		t.Fatal(fixtureErr)
	}
	return fixtureLog
}

// copyLog copies a generated log's data directory, so that a test may append to it.
func copyLog(t *testing.T, l *audittest.Log) *audittest.Log {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "data")
	if err := os.CopyFS(dir, os.DirFS(l.Dir)); err != nil {
		t.Fatal(err)
	}
	// CopyFS makes files readable by all; the record key must not be.
	if err := os.Chmod(filepath.Join(dir, service.KeysDirName, "signing-key.pem"), 0o600); err != nil {
		t.Fatal(err)
	}
	c := *l
	c.Dir = dir
	return &c
}

// source opens a generated log for Export.
func source(t testing.TB, dataDir string) Source {
	t.Helper()
	logKey, err := os.ReadFile(filepath.Join(dataDir, service.LogDirName, "note.pub"))
	if err != nil {
		t.Fatal(err)
	}
	keys, err := os.ReadFile(filepath.Join(dataDir, service.KeysDirName, service.KeyHistoryFileName))
	if err != nil {
		t.Fatal(err)
	}
	blobs, err := blob.OpenDir(filepath.Join(dataDir, service.BlobsDirName))
	if err != nil {
		t.Fatal(err)
	}
	return Source{Log: evlog.NewPOSIXReader(filepath.Join(dataDir, service.LogDirName)), LogKey: string(logKey), KeyHistory: keys, Blobs: blobs}
}

// testRoots reads a generated log's test roots as ExportOptions.Roots.
func testRoots(t testing.TB, l *audittest.Log) map[string][]byte {
	t.Helper()
	out := map[string][]byte{}
	es, err := os.ReadDir(l.RootsDir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range es {
		b, err := os.ReadFile(filepath.Join(l.RootsDir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		out[e.Name()] = b
	}
	return out
}

// export exports a generated log with its test roots and returns the bundle.
func export(t testing.TB, l *audittest.Log, opts ExportOptions) ([]byte, *Manifest) {
	t.Helper()
	if opts.Roots == nil {
		opts.Roots = testRoots(t, l)
	}
	var buf bytes.Buffer
	m, err := Export(context.Background(), &buf, source(t, l.Dir), opts)
	if err != nil {
		t.Fatal(err)
	}
	return buf.Bytes(), m
}

func verify(t testing.TB, bundle []byte, opts VerifyOptions) *Report {
	t.Helper()
	rep, err := Verify(context.Background(), bytes.NewReader(bundle), opts)
	if err != nil {
		t.Fatal(err)
	}
	return rep
}

// tarEntry is one entry of a bundle, for tests that alter bundles.
type tarEntry struct {
	name string
	data []byte
}

// unpack returns a bundle's entries in order.
func unpack(t testing.TB, bundle []byte) []tarEntry {
	t.Helper()
	gz, err := gzip.NewReader(bytes.NewReader(bundle))
	if err != nil {
		t.Fatal(err)
	}
	tr := tar.NewReader(gz)
	var es []tarEntry
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			return es
		}
		if err != nil {
			t.Fatal(err)
		}
		data, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		es = append(es, tarEntry{hdr.Name, data})
	}
}

// pack writes entries as a bundle, uncompressed when raw.
func pack(t testing.TB, es []tarEntry, raw bool) []byte {
	t.Helper()
	var buf bytes.Buffer
	var w io.Writer = &buf
	var gz *gzip.Writer
	if !raw {
		gz = gzip.NewWriter(&buf)
		w = gz
	}
	tw := tar.NewWriter(w)
	for _, e := range es {
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: e.name, Mode: 0o644, Size: int64(len(e.data))}); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write(e.data); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	if gz != nil {
		if err := gz.Close(); err != nil {
			t.Fatal(err)
		}
	}
	return buf.Bytes()
}

// find returns the position of the entry named name.
func find(t testing.TB, es []tarEntry, name string) int {
	t.Helper()
	for i, e := range es {
		if e.name == name {
			return i
		}
	}
	t.Fatalf("no entry %s", name)
	return -1
}

// failures returns the report's findings as text, one a line.
func failures(rep *Report) string {
	var b strings.Builder
	for _, f := range rep.Failures {
		fmt.Fprintln(&b, f.String())
	}
	return b.String()
}
