package blob

import (
	"database/sql"
	"testing"

	"github.com/proofline/proofline/internal/mysqltest"
)

func newTestDatabase(t testing.TB) *sql.DB { return mysqltest.DB(t) }
