package index

import (
	"context"
	"database/sql"
	"path/filepath"
	"strings"
	"testing"
)

// reopeners open an index, and the same storage again, on each engine, with raw access to it.
var reopeners = []struct {
	name string
	// storage returns a function that opens the same index each time, and its database.
	storage func(t *testing.T) (open func() (*Index, error), db func(*Index) *sql.DB)
}{
	{"sqlite", func(t *testing.T) (func() (*Index, error), func(*Index) *sql.DB) {
		path := filepath.Join(t.TempDir(), "index.db")
		return func() (*Index, error) {
			ix, err := OpenSQLite(context.Background(), path)
			if err == nil {
				t.Cleanup(func() { ix.Close() })
			}
			return ix, err
		}, func(ix *Index) *sql.DB { return ix.db }
	}},
	{"mariadb", func(t *testing.T) (func() (*Index, error), func(*Index) *sql.DB) {
		db := newTestDatabase(t)
		return func() (*Index, error) { return OpenMySQL(context.Background(), db) },
			func(*Index) *sql.DB { return db }
	}},
}

// TestSchema: opening creates the schema at the current version; reopening keeps the entries;
// an index whose schema version is newer than the binary's is refused with a message that says
// what to do.
func TestSchema(t *testing.T) {
	t.Parallel()
	s := newSigner(t)
	c := newCorpus(t, s, 30, 14)
	for _, r := range reopeners {
		t.Run(r.name, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			open, rawDB := r.storage(t)
			ix, err := open()
			if err != nil {
				t.Fatal(err)
			}
			c.addAll(t, ix)
			db := rawDB(ix)
			var v int
			if err := db.QueryRow("SELECT version FROM proofline_index_schema WHERE id = 0").Scan(&v); err != nil || v != schemaVersion {
				t.Fatalf("schema version %d, %v; want %d", v, err, schemaVersion)
			}
			again, err := open()
			if err != nil {
				t.Fatalf("reopening: %v", err)
			}
			if n, err := again.Next(ctx); err != nil || n != uint64(len(c.want)) {
				t.Fatalf("Next after reopening = %d, %v; want %d", n, err, len(c.want))
			}
			checkQueries(t, again, c)
			if _, err := db.Exec("UPDATE proofline_index_schema SET version = ? WHERE id = 0", schemaVersion+1); err != nil {
				t.Fatal(err)
			}
			if _, err := open(); err == nil || !strings.Contains(err.Error(), "newer than this binary") {
				t.Fatalf("opening a newer schema = %v, want a refusal", err)
			}
		})
	}
}
