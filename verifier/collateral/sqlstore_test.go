package collateral_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	_ "github.com/go-sql-driver/mysql"
	_ "modernc.org/sqlite"

	"github.com/proofline/proofline/internal/mysqltest"
	"github.com/proofline/proofline/verifier/collateral"
)

// storeBackend opens stores over one backing storage: open returns a new handle on it each time
// (a restart, or another replica); corrupt, when set, alters the stored bytes of url's document
// behind the store's back.
type storeBackend struct {
	open    func(t *testing.T) collateral.ListingStore
	corrupt func(t *testing.T, url string)
}

func storeBackends(t *testing.T) map[string]func(t *testing.T) storeBackend {
	return map[string]func(t *testing.T) storeBackend{
		"memory": func(t *testing.T) storeBackend {
			s := collateral.NewMemoryStore()
			return storeBackend{open: func(*testing.T) collateral.ListingStore { return s }}
		},
		"dir": func(t *testing.T) storeBackend {
			dir := t.TempDir()
			return storeBackend{
				open: func(t *testing.T) collateral.ListingStore {
					s, err := collateral.OpenDirStore(dir)
					if err != nil {
						t.Fatal(err)
					}
					return s
				},
				corrupt: func(t *testing.T, _ string) {
					blobs, _ := filepath.Glob(filepath.Join(dir, "blobs", "*"))
					for _, b := range blobs {
						if err := os.WriteFile(b, []byte(`{"url":"https://evil.example/"}`), 0o644); err != nil {
							t.Fatal(err)
						}
					}
				},
			}
		},
		"sqlite": func(t *testing.T) storeBackend {
			path := filepath.Join(t.TempDir(), "collateral.db")
			var db *sql.DB
			return storeBackend{
				open: func(t *testing.T) collateral.ListingStore {
					h, err := sql.Open("sqlite", path+collateral.SQLiteDSNParams)
					if err != nil {
						t.Fatal(err)
					}
					t.Cleanup(func() { h.Close() })
					s, err := collateral.OpenSQLStoreSQLite(context.Background(), h)
					if err != nil {
						t.Fatal(err)
					}
					db = h
					return s
				},
				corrupt: func(t *testing.T, _ string) { corruptSQL(t, db) },
			}
		},
		"mysql": func(t *testing.T) storeBackend {
			dsn := mysqltest.NewDatabase(t)
			var db *sql.DB
			return storeBackend{
				open: func(t *testing.T) collateral.ListingStore {
					db = mysqltest.Open(t, dsn)
					s, err := collateral.OpenSQLStoreMySQL(context.Background(), db)
					if err != nil {
						t.Fatal(err)
					}
					return s
				},
				corrupt: func(t *testing.T, _ string) { corruptSQL(t, db) },
			}
		},
	}
}

func corruptSQL(t *testing.T, db *sql.DB) {
	t.Helper()
	if _, err := db.Exec("UPDATE proofline_collateral_blobs SET data = ?", []byte(`{"url":"https://evil.example/"}`)); err != nil {
		t.Fatal(err)
	}
}

// doc is a canonical 200 response for u that DirStore.URLs lists.
func doc(u, body string) []byte {
	return (&collateral.Response{URL: u, Status: 200, Body: []byte(body)}).Canonical()
}

// TestStoreContract runs the Store contract (store.go) on every Store: MemoryStore, DirStore and
// SQLStore on SQLite and on MariaDB (skipped with a message when no MariaDB answers, failing
// with CI=true). Nothing stored is ErrNotStored; the last Put wins; concurrent use is safe; a
// cancelled Put fails; URLs lists what is stored, sorted; another handle on the same storage (a
// restart or a replica) reads the same documents, and a Cache over it is answered from the
// store without fetching; altered stored bytes are an error, never returned, and a Put repairs
// them.
func TestStoreContract(t *testing.T) {
	ctx := context.Background()
	for name, backend := range storeBackends(t) {
		t.Run(name, func(t *testing.T) {
			b := backend(t)
			s := b.open(t)
			const u = "https://a.example/x"
			if _, err := s.Get(ctx, u); !errors.Is(err, collateral.ErrNotStored) {
				t.Fatalf("Get of nothing: %v, want ErrNotStored", err)
			}
			for _, v := range []string{"one", "two", "two"} {
				if err := s.Put(ctx, u, doc(u, v)); err != nil {
					t.Fatal(err)
				}
				if got, err := s.Get(ctx, u); err != nil || string(got) != string(doc(u, v)) {
					t.Fatalf("Get = %q, %v; want %q", got, err, doc(u, v))
				}
			}
			var wg sync.WaitGroup
			for i := range 16 {
				wg.Go(func() {
					cu := fmt.Sprintf("https://b.example/%d", i%4)
					if err := s.Put(ctx, cu, doc(cu, cu)); err != nil {
						t.Error(err)
					}
					if got, err := s.Get(ctx, cu); err != nil || string(got) != string(doc(cu, cu)) {
						t.Errorf("%s: %q, %v", cu, got, err)
					}
				})
			}
			wg.Wait()
			cancelled, cancel := context.WithCancel(ctx)
			cancel()
			if err := s.Put(cancelled, "https://a.example/y", doc("https://a.example/y", "")); !errors.Is(err, context.Canceled) {
				t.Errorf("Put with a cancelled context: %v", err)
			}
			want := []string{u, "https://b.example/0", "https://b.example/1", "https://b.example/2", "https://b.example/3"}
			if got, err := s.URLs(ctx); err != nil || !slices.Equal(got, want) {
				t.Errorf("URLs = %q, %v; want %q", got, err, want)
			}

			// Another handle (a restart, a replica) reads the same documents; a Cache over it
			// answers a document another cache stored without fetching.
			crl := newFleet(t).docs[0]
			first, err := collateral.NewCache(collateral.CacheConfig{Upstream: collateral.Set{crl.URL: crl}, Store: s, Clock: fixedClock(start)})
			if err != nil {
				t.Fatal(err)
			}
			defer first.Close()
			if _, err := first.Get(ctx, crl.URL); err != nil {
				t.Fatal(err)
			}
			other := b.open(t)
			if got, err := other.Get(ctx, u); err != nil || string(got) != string(doc(u, "two")) {
				t.Errorf("another handle: %q, %v", got, err)
			}
			replica, err := collateral.NewCache(collateral.CacheConfig{Upstream: collateral.Set{}, Store: other, Clock: fixedClock(start)})
			if err != nil {
				t.Fatal(err)
			}
			defer replica.Close()
			if r, err := replica.Get(ctx, crl.URL); err != nil || r.Digest() != crl.Digest() {
				t.Errorf("a cache over another handle: %v", err)
			}
			if st := replica.Stats(); st.StoreHits != 1 || st.Fetches != 0 {
				t.Errorf("replica cache: %+v, want one store hit and no fetch", st)
			}

			if b.corrupt == nil {
				return
			}
			b.corrupt(t, u)
			if got, err := other.Get(ctx, u); err == nil || errors.Is(err, collateral.ErrNotStored) {
				t.Errorf("Get of altered bytes: %q, %v; want an error other than ErrNotStored", got, err)
			}
			if err := other.Put(ctx, u, doc(u, "two")); err != nil {
				t.Fatal(err)
			}
			if got, err := other.Get(ctx, u); err != nil || string(got) != string(doc(u, "two")) {
				t.Errorf("after a repairing Put: %q, %v", got, err)
			}
		})
	}
}

// TestSQLStoreSQLiteDurability: a SQLite database opened without WAL and synchronous=FULL is
// refused with a message saying how to open it.
func TestSQLStoreSQLiteDurability(t *testing.T) {
	db, err := sql.Open("sqlite", filepath.Join(t.TempDir(), "collateral.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := collateral.OpenSQLStoreSQLite(context.Background(), db); err == nil {
		t.Fatal("a SQLite database without WAL and synchronous=FULL was accepted")
	} else {
		t.Log(err)
	}
}

// TestStoreMarks runs the MarkStore contract (store.go) on every Store: no mark is ErrNotStored;
// RaiseMark never lowers a field (a lower number or an earlier date leaves it, a document without
// a number keeps the number); another handle on the same storage (a restart or a replica) reads
// the same mark; concurrent raises keep the maximum.
func TestStoreMarks(t *testing.T) {
	ctx := context.Background()
	at := func(h int) time.Time { return start.Add(time.Duration(h) * time.Hour) }
	for name, backend := range storeBackends(t) {
		t.Run(name, func(t *testing.T) {
			b := backend(t)
			s := b.open(t).(collateral.MarkStore)
			const u = "https://a.example/tcb"
			if _, err := s.StoredMark(ctx, u); !errors.Is(err, collateral.ErrNotStored) {
				t.Fatalf("StoredMark of nothing: %v, want ErrNotStored", err)
			}
			for _, step := range []struct {
				raise, want collateral.Mark
			}{
				{collateral.Mark{EvaluationDataNumber: 19, HasNumber: true, IssuedAt: at(1)}, collateral.Mark{EvaluationDataNumber: 19, HasNumber: true, IssuedAt: at(1)}},
				{collateral.Mark{EvaluationDataNumber: 18, HasNumber: true, IssuedAt: at(2)}, collateral.Mark{EvaluationDataNumber: 19, HasNumber: true, IssuedAt: at(2)}},
				{collateral.Mark{IssuedAt: at(0)}, collateral.Mark{EvaluationDataNumber: 19, HasNumber: true, IssuedAt: at(2)}},
				{collateral.Mark{EvaluationDataNumber: 20, HasNumber: true, IssuedAt: at(1)}, collateral.Mark{EvaluationDataNumber: 20, HasNumber: true, IssuedAt: at(2)}},
			} {
				if err := s.RaiseMark(ctx, u, step.raise); err != nil {
					t.Fatal(err)
				}
				if got, err := s.StoredMark(ctx, u); err != nil || got.EvaluationDataNumber != step.want.EvaluationDataNumber ||
					got.HasNumber != step.want.HasNumber || !got.IssuedAt.Equal(step.want.IssuedAt) {
					t.Fatalf("after raising %+v: %+v, %v; want %+v", step.raise, got, err, step.want)
				}
			}
			const v = "https://a.example/crl"
			var wg sync.WaitGroup
			for i := range 8 {
				wg.Go(func() {
					if err := s.RaiseMark(ctx, v, collateral.Mark{IssuedAt: at(i)}); err != nil {
						t.Error(err)
					}
				})
			}
			wg.Wait()
			other := b.open(t).(collateral.MarkStore)
			if got, err := other.StoredMark(ctx, v); err != nil || got.HasNumber || !got.IssuedAt.Equal(at(7)) {
				t.Fatalf("after concurrent raises, reopened: %+v, %v; want issued %s, no number", got, err, at(7))
			}
			if got, err := other.StoredMark(ctx, u); err != nil || got.EvaluationDataNumber != 20 {
				t.Fatalf("reopened: %+v, %v", got, err)
			}
		})
	}
}
