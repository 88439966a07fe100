package blob

import (
	"context"
	"database/sql"
	"strings"
	"testing"

	"github.com/proofline/proofline/internal/mysqltest"
)

func newTestDatabase(t testing.TB) *sql.DB { return mysqltest.DB(t) }

// TestMySQLEngine: blob tables that already exist with an engine other than InnoDB (neither
// transactional nor durable) are refused. Skipped without MariaDB unless CI=true.
func TestMySQLEngine(t *testing.T) {
	t.Parallel()
	for _, table := range []string{"proofline_blobs", "proofline_blob_chunks"} {
		t.Run(table, func(t *testing.T) {
			t.Parallel()
			db := newTestDatabase(t)
			ctx := context.Background()
			for _, s := range mysqlSchema {
				if strings.Contains(s, " "+table+" ") {
					s = strings.Replace(s, "ENGINE=InnoDB", "ENGINE=MyISAM", 1)
				}
				if _, err := db.ExecContext(ctx, s); err != nil {
					t.Fatal(err)
				}
			}
			if _, err := OpenMySQL(ctx, db); err == nil || !strings.Contains(err.Error(), table) || !strings.Contains(err.Error(), "InnoDB") {
				t.Fatalf("OpenMySQL over a MyISAM %s = %v, want an error naming the table and InnoDB", table, err)
			}
		})
	}
}
