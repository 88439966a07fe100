// Package mysqltest gives tests a MariaDB database of their own on the server the project's
// tests use (root@tcp(127.0.0.1:3306), or PROOFLINE_TEST_MYSQL_DSN): created empty for the test
// and dropped when it ends, so packages and tests run in parallel. When the server is
// unreachable the test is skipped with a message, except with CI=true, where it fails: CI always
// has MariaDB, and a test that silently skipped there would prove nothing.
package mysqltest

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

// EnvDSN overrides the server (a DSN without a database name).
const EnvDSN = "PROOFLINE_TEST_MYSQL_DSN"

// NewDatabase creates a database of its own and returns its DSN.
func NewDatabase(t testing.TB) string {
	t.Helper()
	base := os.Getenv(EnvDSN)
	if base == "" {
		base = "root@tcp(127.0.0.1:3306)/"
	}
	cfg, err := mysql.ParseDSN(base)
	if err != nil {
		t.Fatalf("%s: %v", EnvDSN, err)
	}
	admin := Open(t, cfg.FormatDSN())
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	if err := admin.PingContext(ctx); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("MariaDB at %s is unreachable (CI=true, so this fails): %v", cfg.Addr, err)
		}
		t.Skipf("MariaDB at %s is unreachable, skipping (set %s to point elsewhere; CI=true makes this a failure): %v", cfg.Addr, EnvDSN, err)
	}
	var b [6]byte
	rand.Read(b[:])
	name := "proofline_test_" + hex.EncodeToString(b[:])
	if _, err := admin.ExecContext(ctx, "CREATE DATABASE "+name); err != nil {
		t.Fatalf("creating database %s: %v", name, err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if _, err := admin.ExecContext(ctx, "DROP DATABASE "+name); err != nil {
			t.Errorf("dropping database %s: %v", name, err)
		}
	})
	cfg.DBName = name
	return cfg.FormatDSN()
}

// DB creates a database of its own and returns a connection to it.
func DB(t testing.TB) *sql.DB {
	t.Helper()
	return Open(t, NewDatabase(t))
}

// Open opens dsn and closes it when the test ends.
func Open(t testing.TB, dsn string) *sql.DB {
	t.Helper()
	db, err := sql.Open("mysql", dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}
