package blob

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"os"
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"
)

// envMySQL overrides the server the MariaDB tests use (a DSN without a database name).
const envMySQL = "PROOFLINE_TEST_MYSQL_DSN"

// newTestDatabase creates a database of its own on the test MariaDB, returns a connection to it
// and drops it when the test ends. It skips the test when the server is unreachable, unless
// CI=true.
func newTestDatabase(t testing.TB) *sql.DB {
	t.Helper()
	base := os.Getenv(envMySQL)
	if base == "" {
		base = "root@tcp(127.0.0.1:3306)/"
	}
	cfg, err := mysql.ParseDSN(base)
	if err != nil {
		t.Fatalf("%s: %v", envMySQL, err)
	}
	admin := openDB(t, cfg.FormatDSN())
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	if err := admin.PingContext(ctx); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("MariaDB at %s is unreachable (CI=true, so this fails): %v", cfg.Addr, err)
		}
		t.Skipf("MariaDB at %s is unreachable, skipping (set %s to point elsewhere; CI=true makes this a failure): %v", cfg.Addr, envMySQL, err)
	}
	var b [6]byte
	rand.Read(b[:])
	name := "proofline_test_" + hex.EncodeToString(b[:])
	if _, err := admin.ExecContext(ctx, "CREATE DATABASE "+name); err != nil {
		t.Fatalf("creating database: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if _, err := admin.ExecContext(ctx, "DROP DATABASE "+name); err != nil {
			t.Errorf("dropping database %s: %v", name, err)
		}
	})
	cfg.DBName = name
	return openDB(t, cfg.FormatDSN())
}

func openDB(t testing.TB, dsn string) *sql.DB {
	t.Helper()
	db, err := sql.Open("mysql", dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}
