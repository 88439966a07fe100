package service

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/proofline/proofline/attest"
	"github.com/proofline/proofline/internal/mysqltest"
	"github.com/proofline/proofline/verifier/ear"
)

// With a database, the collateral cache is in it, shared by every replica: a verifier that
// starts on the same database (a replica, or this one restarted, with nothing of the cache in
// memory or on its disk) verifies with the documents another fetched, without fetching any.
func TestLiveCollateralSharedInDatabase(t *testing.T) {
	e := newLiveEnv(t, 30*24*time.Hour, nil, func(c *Config) {
		c.Database = mysqltest.NewDatabase(t)
		c.Log.CheckpointInterval = time.Second
	})
	for _, p := range []attest.Platform{attest.PlatformTDX, attest.PlatformSNP} {
		if a := e.attest(p); a.Result.Status != ear.StatusAffirming {
			t.Fatalf("%s on the first replica: %s %+v", p, a.Result.Status, a.Result.Failures)
		}
	}
	served := e.srv.ServedURLs()
	if len(served) == 0 {
		t.Fatal("the first replica fetched nothing: the test proves nothing")
	}
	if _, err := os.Stat(filepath.Join(e.cfg.DataDir, DefaultCollateralCacheDir)); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("a collateral cache directory exists with a database configured: %v", err)
	}
	if err := e.svc.Close(); err != nil {
		t.Fatal(err)
	}

	e.env.Registerer = prometheus.NewRegistry()
	second, err := Open(context.Background(), e.cfg, e.env)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { second.Close() })
	e.svc = second
	for _, p := range []attest.Platform{attest.PlatformTDX, attest.PlatformSNP} {
		if a := e.attest(p); a.Result.Status != ear.StatusAffirming {
			t.Fatalf("%s on the second replica: %s %+v", p, a.Result.Status, a.Result.Failures)
		}
	}
	for u, n := range e.srv.ServedURLs() {
		if n != served[u] {
			t.Errorf("%s served %d times, %d before the second replica: it fetched what the database holds", u, n, served[u])
		}
	}
}
