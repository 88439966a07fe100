package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/proofline/proofline/attest"
	"github.com/proofline/proofline/attest/attesttest/fakeamd"
	"github.com/proofline/proofline/attest/attesttest/fakeintel"
	"github.com/proofline/proofline/evidence"
	"github.com/proofline/proofline/evidence/index"
	"github.com/proofline/proofline/internal/mysqltest"
	"github.com/proofline/proofline/verifier/collateral"
	"github.com/proofline/proofline/verifier/collateral/collateraltest"
	"github.com/proofline/proofline/verifier/ear"
	"github.com/proofline/proofline/verifier/roots"
	"github.com/proofline/proofline/verifier/service"
	"github.com/proofline/proofline/verifier/service/servicetest"
)

// airGap is a connected verifier (data dir A) that fetched its collateral live from a fake
// PCS/KDS while verifying TDX and SNP evidence, the evidence bodies, their results, and the
// bundle it exported.
type airGap struct {
	start   time.Time
	clock   *collateraltest.Clock
	plat    *servicetest.Platforms
	srv     *collateraltest.Server
	dirA    string
	bodies  [][]byte
	results [][]byte // ResultJSON of bodies[i] at A
	status  []string
	bundle  string
	docs    int    // documents in A's cache
	roots   string // a directory of the simulated platforms' roots, for import --roots
}

var agent = service.Principal{Name: "vm-1", Role: service.RoleAgent}

func newAirGap(t *testing.T) *airGap {
	t.Helper()
	ctx := context.Background()
	// The fixtures are dated from the real time so that `import` judges freshness at its default,
	// now; the services run on a pinned clock starting there.
	g := &airGap{start: time.Now().UTC().Truncate(time.Second)}
	g.clock = collateraltest.NewClock(g.start)
	var err error
	if g.plat, err = servicetest.New(g.start); err != nil {
		t.Fatal(err)
	}
	ic, err := g.plat.Intel.Collateral(fakeintel.DefaultCollateralOptions(g.start))
	if err != nil {
		t.Fatal(err)
	}
	ac, err := g.plat.AMD.Collateral(fakeamd.CRLOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if g.srv, err = collateraltest.NewServer(append(ic, ac...), collateraltest.Options{Clock: g.clock}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(g.srv.Close)
	var routes []service.RouteConfig
	for _, r := range g.srv.Routes() {
		routes = append(routes, service.RouteConfig{Prefix: r.Prefix, Base: r.Base})
	}
	g.dirA = t.TempDir()
	g.roots = writeRoots(t, g.plat.Roots)
	svcA := g.open(t, service.Config{DataDir: g.dirA,
		Collateral: service.CollateralConfig{Fetch: service.FetchConfig{Enabled: true, Routes: routes, RefreshInterval: time.Hour}}},
		g.srv.Client())
	for _, c := range []struct {
		platform attest.Platform
		fault    servicetest.Fault
	}{
		{attest.PlatformTDX, servicetest.FaultNone},
		{attest.PlatformSNP, servicetest.FaultNone},
		{attest.PlatformTDX, servicetest.FaultMeasurement},
		{attest.PlatformSNP, servicetest.FaultDebug},
	} {
		ch, err := svcA.Challenge(ctx, agent)
		if err != nil {
			t.Fatal(err)
		}
		body, err := g.plat.Evidence(c.platform, ch.Nonce, servicetest.RuntimeData(agent.Name), c.fault)
		if err != nil {
			t.Fatal(err)
		}
		a, err := svcA.Attest(ctx, agent, body)
		if err != nil {
			t.Fatal(err)
		}
		g.bodies = append(g.bodies, body)
		g.results = append(g.results, a.ResultJSON)
		g.status = append(g.status, string(a.Result.Status))
	}
	if err := svcA.Close(); err != nil {
		t.Fatal(err)
	}
	if want := []string{"affirming", "affirming", "contraindicated", "contraindicated"}; strings.Join(g.status, " ") != strings.Join(want, " ") {
		t.Fatalf("verdicts at the connected verifier: %v, want %v", g.status, want)
	}
	store, err := collateral.OpenDirStore(filepath.Join(g.dirA, service.DefaultCollateralCacheDir))
	if err != nil {
		t.Fatal(err)
	}
	urls, err := store.URLs(ctx)
	if err != nil || len(urls) == 0 {
		t.Fatalf("the connected verifier cached %d documents: %v", len(urls), err)
	}
	g.docs = len(urls)
	g.bundle = filepath.Join(t.TempDir(), "collateral.bundle")
	var errb bytes.Buffer
	if code := collateralExport(ctx, []string{"--data-dir", g.dirA, "--out", g.bundle, "--name", "verifier-a"}, &errb, g.clock.Now); code != 0 {
		t.Fatalf("export: exit %d: %s", code, errb.String())
	}
	t.Logf("export: %s", strings.TrimSpace(errb.String()))
	return g
}

// open opens a service on g's pinned clock and simulated platforms.
func (g *airGap) open(t *testing.T, cfg service.Config, client *http.Client) *service.Service {
	t.Helper()
	cfg.Log.CheckpointInterval = 100 * time.Millisecond
	svc, err := service.Open(context.Background(), cfg, service.Env{
		TestMode: true, Now: g.clock.Now, Roots: g.plat.Roots, InitialPolicy: g.plat.PolicyYAML,
		CollateralClient: client, CollateralClock: g.clock,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { svc.Close() })
	return svc
}

func (g *airGap) importInto(t *testing.T, dir string, args ...string) (int, string) {
	t.Helper()
	var errb bytes.Buffer
	code := collateralImport(context.Background(), append([]string{"--data-dir", dir, "--test-mode", "--roots", g.roots}, args...), &errb, g.clock.Now)
	return code, errb.String()
}

// writeRoots writes rs's certificates into a roots directory (serve's roots:, import --roots).
func writeRoots(t *testing.T, rs *roots.Set) string {
	t.Helper()
	var b bytes.Buffer
	certs := slices.Clone(rs.Intel)
	for _, p := range rs.AMD {
		certs = append(certs, p.ARK, p.ASK, p.ASVK)
	}
	for _, c := range certs {
		if c != nil {
			pem.Encode(&b, &pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})
		}
	}
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "roots.pem"), b.Bytes(), 0o600); err != nil {
		t.Fatal(err)
	}
	return dir
}

// noNetwork is a transport that fails the test on any request.
type noNetwork struct{ t *testing.T }

func (n noNetwork) RoundTrip(r *http.Request) (*http.Response, error) {
	n.t.Errorf("the air-gapped verifier fetched %s", r.URL)
	return nil, errors.New("no network")
}

// Acceptance 4 of the collateral service: export on one data dir → import on another with no
// network → the same verdicts. The connected verifier fetched its collateral live; the
// air-gapped one, with collateral.offline and a client that fails the test if used, appraises
// the very same evidence bodies (same nonces: it shares the nonce secret) and records
// byte-identical results (status, failures, claims and collateral digests).
func TestCollateralAirGap(t *testing.T) {
	g := newAirGap(t)
	dirB := t.TempDir()
	trust := filepath.Join(g.dirA, service.KeysDirName, service.KeyHistoryFileName)
	// The built-in vendor roots (no --roots) do not anchor the simulated platforms' documents:
	// every one is refused as not signed by its vendor, and nothing is written.
	var errb bytes.Buffer
	if code := collateralImport(context.Background(), []string{"--data-dir", dirB, "--trusted-key", trust, g.bundle}, &errb, g.clock.Now); code != 1 ||
		strings.Count(errb.String(), "not signed by its vendor through a pinned root") != g.docs ||
		!strings.Contains(errb.String(), fmt.Sprintf("0 imported, 0 kept because the data directory's copy is newer or the same, %d refused", g.docs)) {
		t.Fatalf("import with the built-in roots: exit %d, want 1 and %d documents refused as not authentic:\n%s", code, g.docs, errb.String())
	}
	// Test roots need --test-mode.
	errb.Reset()
	if code := collateralImport(context.Background(), []string{"--data-dir", dirB, "--trusted-key", trust, "--roots", g.roots, g.bundle}, &errb, g.clock.Now); code != 2 ||
		!strings.Contains(errb.String(), "give --test-mode too") {
		t.Fatalf("import with --roots and no --test-mode: exit %d, want 2 and a message:\n%s", code, errb.String())
	}
	code, out := g.importInto(t, dirB, g.bundle, "--trusted-key", trust)
	if code != 0 || !strings.Contains(out, "imported, 0 kept") || !strings.Contains(out, " 0 refused") {
		t.Fatalf("import: exit %d:\n%s", code, out)
	}
	t.Logf("import: %s", strings.TrimSpace(out))
	requests := g.srv.Stats().Requests
	svcB := g.open(t, service.Config{DataDir: dirB,
		Nonce:      service.NonceConfig{SecretFile: filepath.Join(g.dirA, "nonce-secret")},
		Collateral: service.CollateralConfig{Offline: true}},
		&http.Client{Transport: noNetwork{t}})
	for i, body := range g.bodies {
		a, err := svcB.Attest(context.Background(), agent, body)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(a.ResultJSON, g.results[i]) {
			t.Errorf("evidence %d: the air-gapped verdict differs:\n got %s\nwant %s", i, a.ResultJSON, g.results[i])
		}
	}
	if got := g.srv.Stats().Requests; got != requests {
		t.Errorf("the fake PCS/KDS received %d requests during the air-gapped verifications", got-requests)
	}

	// Importing the same bundle again, into the exporting data dir with its own key history as
	// the trust anchor (no --trusted-key), keeps every document.
	code, out = g.importInto(t, g.dirA, g.bundle)
	if code != 0 || !strings.Contains(out, "0 imported") {
		t.Errorf("re-import into the exporting data dir: exit %d:\n%s", code, out)
	}
}

// TestCollateralImportRefused: bundles built from the valid one are refused with exit 1 and a
// message naming the problem: a flipped byte in an entry (naming its URL), a signature by a key
// the importer does not trust, a document past its nextUpdate (naming its URL and nextUpdate),
// a truncated file. Without --trusted-key, a fresh data dir has nothing to trust: exit 2.
func TestCollateralImportRefused(t *testing.T) {
	g := newAirGap(t)
	valid, err := os.ReadFile(g.bundle)
	if err != nil {
		t.Fatal(err)
	}
	b, err := collateral.ParseBundle(valid)
	if err != nil {
		t.Fatal(err)
	}
	entry := b.Entries[0]
	i := bytes.Index(valid, []byte(base64.StdEncoding.EncodeToString(entry.Canonical)))
	if i < 0 {
		t.Fatal("entry not found in the bundle")
	}
	flipped := bytes.Clone(valid)
	flipped[i+40] ^= 'A' ^ 'B'
	if flipped[i+40] == valid[i+40] {
		t.Fatal("no flip")
	}
	writeFile := func(data []byte) string {
		p := filepath.Join(t.TempDir(), "bundle")
		if err := os.WriteFile(p, data, 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	// Another verifier's key history: a data dir whose key did not sign the bundle.
	otherKeys := t.TempDir()
	other, err := evidence.LoadOrCreateKey(otherKeys)
	if err != nil {
		t.Fatal(err)
	}
	var h evidence.KeyHistory
	if err := h.Add(other, g.start.Add(-time.Hour)); err != nil {
		t.Fatal(err)
	}
	otherHistory := filepath.Join(otherKeys, "history.json")
	if err := h.Save(otherHistory); err != nil {
		t.Fatal(err)
	}
	trusted := filepath.Join(g.dirA, service.KeysDirName, service.KeyHistoryFileName)
	// The AMD CRLs expire 7 days after start (fakeamd.CRLOptions' default).
	late := g.start.Add(8 * 24 * time.Hour).Format(time.RFC3339)
	for _, tc := range []struct {
		name string
		args []string
		code int
		want []string
	}{
		{"flipped byte", []string{writeFile(flipped), "--trusted-key", trusted}, 1, []string{entry.URL, "does not hash"}},
		{"untrusted key", []string{g.bundle, "--trusted-key", otherHistory}, 1, []string{"not a trusted key"}},
		{"stale", []string{g.bundle, "--trusted-key", trusted, "--at", late}, 1,
			[]string{"refused https://kdsintf.amd.com/vcek/v1/" + servicetest.AMDProductLine + "/crl: expired: its nextUpdate is " + g.start.AddDate(0, 0, 7).Format(time.RFC3339), " 1 refused"}},
		{"truncated", []string{writeFile(valid[:len(valid)*2/3]), "--trusted-key", trusted}, 1, []string{"truncated"}},
		{"no trusted key", []string{g.bundle}, exitUsage, []string{"give --trusted-key"}},
		{"grace", []string{g.bundle, "--trusted-key", trusted, "--at", late, "--stale-grace-unsafe", "48h"}, 0, []string{" 0 refused"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			code, out := g.importInto(t, dir, tc.args...)
			if code != tc.code {
				t.Fatalf("exit %d, want %d:\n%s", code, tc.code, out)
			}
			for _, w := range tc.want {
				if !strings.Contains(out, w) {
					t.Errorf("output lacks %q:\n%s", w, out)
				}
			}
			if tc.code != 0 && tc.name != "stale" {
				if urls, _ := mustStore(t, dir).URLs(context.Background()); len(urls) != 0 {
					t.Errorf("a refused bundle wrote %d documents", len(urls))
				}
			}
		})
	}
}

func mustStore(t *testing.T, dataDir string) *collateral.DirStore {
	t.Helper()
	s, err := collateral.OpenDirStore(filepath.Join(dataDir, service.DefaultCollateralCacheDir))
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// TestServeOfflineConfig: collateral.offline is accepted alone (with cache_dir) and refused with
// dir or fetch.
func TestServeOfflineConfig(t *testing.T) {
	for _, c := range []struct {
		yaml string
		ok   bool
	}{
		{"data_dir: /tmp/x\ncollateral: {offline: true, cache_dir: /tmp/c}\n", true},
		{"data_dir: /tmp/x\ncollateral: {offline: true, fetch: {enabled: true}}\n", false},
		{"data_dir: /tmp/x\ncollateral: {offline: true, dir: /tmp/c}\n", false},
	} {
		cfg, err := loadServeConfig(writeConfig(t, c.yaml))
		if err != nil {
			t.Fatal(err)
		}
		err = cfg.validate(false)
		if (err == nil) != c.ok || (err != nil && !strings.Contains(err.Error(), "collateral.offline")) {
			t.Errorf("%q: %v", c.yaml, err)
		}
	}
}

// A fleet keeps its collateral cache in the state database: --database imports into it and
// exports from it. The bundle goes data dir → database → a second bundle → another data dir,
// and every document arrives.
func TestCollateralBundleDatabase(t *testing.T) {
	g := newAirGap(t)
	dsn := mysqltest.NewDatabase(t)
	trust := filepath.Join(g.dirA, service.KeysDirName, service.KeyHistoryFileName)
	code, out := g.importInto(t, g.dirA, g.bundle, "--database", dsn, "--trusted-key", trust)
	if want := fmt.Sprintf("%d imported, 0 kept", g.docs); code != 0 || !strings.Contains(out, want) || !strings.Contains(out, "into the state database") {
		t.Fatalf("import into the database: exit %d, want %q:\n%s", code, want, out)
	}
	again := filepath.Join(t.TempDir(), "again.bundle")
	var errb bytes.Buffer
	if code := collateralExport(context.Background(), []string{"--data-dir", g.dirA, "--database", dsn, "--out", again, "--name", "fleet"}, &errb, g.clock.Now); code != 0 {
		t.Fatalf("export from the database: exit %d: %s", code, errb.String())
	}
	code, out = g.importInto(t, t.TempDir(), again, "--trusted-key", trust)
	if want := fmt.Sprintf("%d imported, 0 kept", g.docs); code != 0 || !strings.Contains(out, want) {
		t.Fatalf("import of the database's export: exit %d, want %q:\n%s", code, want, out)
	}
	// Both stores named: refused.
	if code, out := g.importInto(t, g.dirA, g.bundle, "--database", dsn, "--cache-dir", t.TempDir(), "--trusted-key", trust); code != exitUsage || !strings.Contains(out, "not both") {
		t.Errorf("--database with --cache-dir: exit %d:\n%s", code, out)
	}
}

// TestCollateralImportIntoRunningOfflineVerifier: Intel publishes a TCB recovery; the connected
// verifier fetches it and a new bundle is exported. `proofline collateral import` writes it into
// a running air-gapped verifier's data dir while the TCB info that verifier holds is still valid
// for weeks. Within one reload interval the air-gapped verifier uses the new TCB info, and its
// log has a collateral_update record naming the old and the new document.
func TestCollateralImportIntoRunningOfflineVerifier(t *testing.T) {
	g := newAirGap(t)
	dirB := t.TempDir()
	g.mustImport(t, dirB, g.bundle)
	svcB := g.openOffline(t, dirB)
	svcB.Start()
	g.attestTDX(t, svcB)
	rec := g.recoveryBundle(t, 19, time.Minute)
	g.mustImport(t, dirB, rec.bundle)

	// The reload loop is the collateral clock's only sleeper (the connected verifier is closed).
	var recs []*evidence.Record
	for passes := 0; len(recs) == 0; {
		if g.clock.Sleeping() == 1 {
			for deadline := time.Now().Add(5 * time.Second); passes > 0 && len(recs) == 0 && time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
				recs = collateralUpdates(t, svcB)
			}
			if len(recs) > 0 {
				break
			}
			if passes++; passes > 2 {
				t.Fatalf("no collateral_update record after %d reload intervals", passes-1)
			}
			g.clock.AdvanceToNext()
		}
		select {
		case <-g.clock.Changed():
		case <-time.After(30 * time.Second): // a guard against a hang, not a timing
			t.Fatal("the collateral clock has no sleeper: no reload loop runs")
		}
	}
	rec.check(t, recs)
	rec.used(t, g.attestTDX(t, svcB))
}

// TestCollateralImportIntoStoppedOfflineVerifier: the same import, into the data dir of an
// air-gapped verifier that is stopped. At its next start it records the replacement of the TCB
// info its last verdicts used (a collateral_update before any verdict on the new one), and only
// once across restarts.
func TestCollateralImportIntoStoppedOfflineVerifier(t *testing.T) {
	g := newAirGap(t)
	dirB := t.TempDir()
	g.mustImport(t, dirB, g.bundle)
	svcB := g.openOffline(t, dirB)
	g.attestTDX(t, svcB)
	if err := svcB.Close(); err != nil {
		t.Fatal(err)
	}
	cacheB := filepath.Join(dirB, service.DefaultCollateralCacheDir)
	backup := snapshotDir(t, cacheB)
	rec := g.recoveryBundle(t, 19, time.Minute)
	g.mustImport(t, dirB, rec.bundle)
	g.clock.Advance(time.Minute) // the new TCB info's issue time
	for i := 0; i < 2; i++ {     // a second start finds the replacement recorded
		svcB = g.openOffline(t, dirB)
		rec.check(t, collateralUpdates(t, svcB))
		if err := svcB.Close(); err != nil {
			t.Fatal(err)
		}
	}
	svcB = g.openOffline(t, dirB)
	rec.used(t, g.attestTDX(t, svcB))
	rec.check(t, collateralUpdates(t, svcB))
	if err := svcB.Close(); err != nil {
		t.Fatal(err)
	}

	// The collateral cache restored from the backup, marks and all: the old TCB info is older
	// than the one the verdicts used. It is not recorded as an update, and the verifier goes on
	// with the one its verdicts used.
	restoreDir(t, cacheB, backup)
	for i := 0; i < 2; i++ { // and after another restart (the store holds it again)
		svcB = g.openOffline(t, dirB)
		rec.check(t, collateralUpdates(t, svcB))
		rec.used(t, g.attestTDX(t, svcB))
		if err := svcB.Close(); err != nil {
			t.Fatal(err)
		}
	}
	backup19 := snapshotDir(t, cacheB)
	// A later import replaces the TCB info held again, recorded at the next start.
	next := g.recoveryBundle(t, 20, 2*time.Minute)
	g.mustImport(t, dirB, next.bundle)
	g.clock.Advance(time.Minute)
	svcB = g.openOffline(t, dirB)
	recs := collateralUpdates(t, svcB)
	if len(recs) != 2 || recs[1].CollateralUpdate[0].Previous == nil || *recs[1].CollateralUpdate[0].Previous != evidence.Digest(rec.tcb.Digest()) ||
		recs[1].Collateral[0].Digest != evidence.Digest(next.tcb.Digest()) {
		t.Fatalf("%d collateral_update records; want a second replacing the 19 by the 20", len(recs))
	}
	next.used(t, g.attestTDX(t, svcB))
	if err := svcB.Close(); err != nil {
		t.Fatal(err)
	}
	// The cache restored to the 19, a document recorded once as new: still never gone back to.
	restoreDir(t, cacheB, backup19)
	svcB = g.openOffline(t, dirB)
	next.used(t, g.attestTDX(t, svcB))
	if n := len(collateralUpdates(t, svcB)); n != 2 {
		t.Fatalf("%d collateral_update records after restoring the 19, want 2", n)
	}
}

// snapshotDir copies dir (a backup) and returns the copy's path.
func snapshotDir(t *testing.T, dir string) string {
	t.Helper()
	snap := filepath.Join(t.TempDir(), filepath.Base(dir))
	if err := os.CopyFS(snap, os.DirFS(dir)); err != nil {
		t.Fatal(err)
	}
	return snap
}

// restoreDir replaces dir by the snapshot snap (snapshotDir).
func restoreDir(t *testing.T, dir, snap string) {
	t.Helper()
	if err := os.RemoveAll(dir); err != nil {
		t.Fatal(err)
	}
	if err := os.CopyFS(dir, os.DirFS(snap)); err != nil {
		t.Fatal(err)
	}
}

// recovery is a TCB recovery exported by the connected verifier: the bundle, the new TCB info and
// the digest of the one it replaces.
type recovery struct {
	bundle    string
	tcb       *collateral.Response
	oldDigest evidence.Digest
}

// recoveryBundle puts a TCB info with tcbEvaluationDataNumber n, issued that long after the start,
// into the connected verifier's cache, as its refresh would, and exports a new bundle.
func (g *airGap) recoveryBundle(t *testing.T, n int, issued time.Duration) recovery {
	t.Helper()
	ctx := context.Background()
	o := fakeintel.DefaultCollateralOptions(g.start)
	o.TCBInfo.EvaluationDataNumber = n
	o.TCBInfo.IssueDate = g.start.Add(issued)
	rs, err := g.plat.Intel.Collateral(o)
	if err != nil {
		t.Fatal(err)
	}
	r := recovery{tcb: rs[0], bundle: filepath.Join(t.TempDir(), "collateral-2.bundle")}
	storeA, err := collateral.OpenDirStore(filepath.Join(g.dirA, service.DefaultCollateralCacheDir))
	if err != nil {
		t.Fatal(err)
	}
	old, err := storeA.Get(ctx, r.tcb.URL)
	if err != nil {
		t.Fatal(err)
	}
	r.oldDigest = sha256.Sum256(old)
	if err := storeA.Put(ctx, r.tcb.URL, r.tcb.Canonical()); err != nil {
		t.Fatal(err)
	}
	var errb bytes.Buffer
	if code := collateralExport(ctx, []string{"--data-dir", g.dirA, "--out", r.bundle, "--name", "verifier-a"}, &errb, g.clock.Now); code != 0 {
		t.Fatalf("second export: exit %d: %s", code, errb.String())
	}
	return r
}

// check fails unless recs is one collateral_update replacing the old TCB info by the new one.
func (r recovery) check(t *testing.T, recs []*evidence.Record) {
	t.Helper()
	newDigest := evidence.Digest(r.tcb.Digest())
	if len(recs) != 1 || recs[0].Collateral[0].URL != r.tcb.URL || recs[0].Collateral[0].Digest != newDigest ||
		recs[0].CollateralUpdate[0].Previous == nil || *recs[0].CollateralUpdate[0].Previous != r.oldDigest {
		t.Fatalf("%d collateral_update records; want one replacing %s by %s for %s: %+v", len(recs), r.oldDigest, newDigest, r.tcb.URL, recs)
	}
}

// used fails unless the verdict a used the new TCB info.
func (r recovery) used(t *testing.T, a *service.Attestation) {
	t.Helper()
	claims, ok := a.Result.Claims.(*ear.TDXClaims)
	if !ok {
		t.Fatal("a TDX verdict without TDX claims")
	}
	for _, ci := range claims.Collateral {
		if ci.URL == r.tcb.URL && ci.Digest == "sha256:"+evidence.Digest(r.tcb.Digest()).String() {
			return
		}
	}
	t.Fatalf("the verdict does not use the imported TCB info: %+v", claims.Collateral)
}

// mustImport imports bundle into dir, trusting the connected verifier's key.
func (g *airGap) mustImport(t *testing.T, dir, bundle string) {
	t.Helper()
	if code, out := g.importInto(t, dir, bundle, "--trusted-key", filepath.Join(g.dirA, service.KeysDirName, service.KeyHistoryFileName)); code != 0 || strings.Contains(out, " 0 imported") {
		t.Fatalf("import of %s: exit %d, want something imported:\n%s", bundle, code, out)
	}
}

// openOffline opens an air-gapped verifier on dir (the connected one's nonce secret, no network).
func (g *airGap) openOffline(t *testing.T, dir string) *service.Service {
	t.Helper()
	return g.open(t, service.Config{DataDir: dir,
		Nonce:      service.NonceConfig{SecretFile: filepath.Join(g.dirA, "nonce-secret")},
		Collateral: service.CollateralConfig{Offline: true}},
		&http.Client{Transport: noNetwork{t}})
}

// attestTDX runs one affirming TDX attestation on svc.
func (g *airGap) attestTDX(t *testing.T, svc *service.Service) *service.Attestation {
	t.Helper()
	ctx := context.Background()
	ch, err := svc.Challenge(ctx, agent)
	if err != nil {
		t.Fatal(err)
	}
	body, err := g.plat.Evidence(attest.PlatformTDX, ch.Nonce, servicetest.RuntimeData(agent.Name), servicetest.FaultNone)
	if err != nil {
		t.Fatal(err)
	}
	a, err := svc.Attest(ctx, agent, body)
	if err != nil {
		t.Fatal(err)
	}
	if a.Result.Status != "affirming" {
		t.Fatalf("air-gapped verdict %s: %+v", a.Result.Status, a.Result.Failures)
	}
	return a
}

// collateralUpdates returns the collateral_update records of svc's log.
func collateralUpdates(t *testing.T, svc *service.Service) []*evidence.Record {
	t.Helper()
	ctx := context.Background()
	es, err := svc.Records(ctx, index.Query{Kind: evidence.KindCollateralUpdate})
	if err != nil {
		t.Fatal(err)
	}
	var out []*evidence.Record
	for _, e := range es {
		_, rec, err := svc.Record(ctx, e.LogIndex)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, rec)
	}
	return out
}
