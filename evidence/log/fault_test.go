package log

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-sql-driver/mysql"

	"github.com/proofline/proofline/internal/mysqltest"
)

// TestFaultPOSIX injects write errors into tessera's POSIX driver through RLIMIT_FSIZE in a
// helper process (see fsizeHelper): appends under a lowered limit must fail rather than be
// acknowledged, and after the limit is lifted the log must be whole (I1–I4), hold every
// acknowledged record at its index, and nothing else — with this seam a failed append is never
// "failed but saved", because the tree state is written last.
func TestFaultPOSIX(t *testing.T) {
	t.Parallel()
	f := newPOSIXFixture(t)
	run := startHelper(t, f, "fault-fsize", 0, "PROOFLINE_LOG_TEST_ROUNDS=40")
	if run.err != nil || len(run.fatals) > 0 {
		t.Fatalf("helper: %v %v", run.err, run.fatals)
	}
	if len(run.errs) == 0 || len(run.acks) < 32 {
		t.Fatalf("%d appends failed and %d were acknowledged: the faults did not bite", len(run.errs), len(run.acks))
	}
	failed := map[string]bool{}
	for _, h := range run.errs {
		failed[h] = true
	}
	l := f.openLog(t, Options{})
	ctx := context.Background()
	size := checkAcked(ctx, t, l, run.acks)
	rep, err := Fsck(ctx, f.reader, f.verifier, func(i uint64, leaf []byte) error {
		if failed[digest(leaf)] {
			return fmt.Errorf("leaf %d failed to append but is in the log", i)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Checkpoint.Size != size || size != uint64(len(run.acks)) {
		t.Fatalf("log size %d, %d acknowledged up to index %d: the log holds unacknowledged records", rep.Checkpoint.Size, len(run.acks), size)
	}
	// Where in tessera's write sequence the injected EFBIG struck.
	where := map[string]int{}
	for _, m := range run.msgs {
		switch {
		case !strings.Contains(m, "file too large"):
			t.Errorf("append failed with an error that was not injected: %s", m)
		case strings.Contains(m, "tree state"):
			where["tree state"]++
		case strings.Contains(m, "/tile/entries/"):
			where["entry bundle"]++
		case strings.Contains(m, "/tile/"):
			where["hash tile"]++
		default:
			where["other"]++
		}
	}
	t.Logf("%d appends acknowledged, %d failed with EFBIG writing %v; fsck: %d leaves, %d tiles, %d earlier checkpoints",
		len(run.acks), len(run.errs), where, rep.Leaves, rep.Tiles, rep.Earlier)
}

// faultMode is what the MySQL fault seam does to the next statements and commits.
type faultMode int32

const (
	faultNone faultMode = iota
	// faultWrite fails every INSERT/REPLACE/UPDATE before it reaches the server, with the error
	// MariaDB returns on a full disk: "failed and not saved".
	faultWrite
	// faultCommit rolls back instead of committing and reports an I/O error: "failed and not
	// saved", at the last possible moment.
	faultCommit
	// faultLostAck commits and then reports the connection as lost: "failed but saved".
	faultLostAck
)

var faultNames = []string{"none", "write", "commit", "lost-ack"}

// faultConnector wraps go-sql-driver/mysql's connections; mode applies to all of them.
type faultConnector struct {
	base driver.Connector
	mode atomic.Int32
}

var (
	errDiskFull = &mysql.MySQLError{Number: 1021, Message: "Disk full (injected)"}
	errIO       = &mysql.MySQLError{Number: 1026, Message: "Error writing file (injected, Errcode: 5 \"Input/output error\")"}
	errLostAck  = errors.New("injected: connection lost after COMMIT was sent")
)

func (c *faultConnector) Connect(ctx context.Context) (driver.Conn, error) {
	conn, err := c.base.Connect(ctx)
	if err != nil {
		return nil, err
	}
	return &faultConn{Conn: conn, c: c}, nil
}

func (c *faultConnector) Driver() driver.Driver { return c.base.Driver() }

// faultConn forwards to the driver's connection, failing writes and commits on command.
type faultConn struct {
	driver.Conn
	c *faultConnector
}

func (f *faultConn) ExecContext(ctx context.Context, query string, args []driver.NamedValue) (driver.Result, error) {
	if faultMode(f.c.mode.Load()) == faultWrite && !strings.HasPrefix(query, "SELECT") {
		return nil, errDiskFull
	}
	return f.Conn.(driver.ExecerContext).ExecContext(ctx, query, args)
}

func (f *faultConn) QueryContext(ctx context.Context, query string, args []driver.NamedValue) (driver.Rows, error) {
	return f.Conn.(driver.QueryerContext).QueryContext(ctx, query, args)
}

func (f *faultConn) PrepareContext(ctx context.Context, query string) (driver.Stmt, error) {
	return f.Conn.(driver.ConnPrepareContext).PrepareContext(ctx, query)
}

func (f *faultConn) BeginTx(ctx context.Context, opts driver.TxOptions) (driver.Tx, error) {
	tx, err := f.Conn.(driver.ConnBeginTx).BeginTx(ctx, opts)
	if err != nil {
		return nil, err
	}
	return &faultTx{Tx: tx, c: f.c}, nil
}

func (f *faultConn) Ping(ctx context.Context) error { return f.Conn.(driver.Pinger).Ping(ctx) }

func (f *faultConn) CheckNamedValue(nv *driver.NamedValue) error {
	return f.Conn.(driver.NamedValueChecker).CheckNamedValue(nv)
}

func (f *faultConn) ResetSession(ctx context.Context) error {
	return f.Conn.(driver.SessionResetter).ResetSession(ctx)
}

func (f *faultConn) IsValid() bool { return f.Conn.(driver.Validator).IsValid() }

type faultTx struct {
	driver.Tx
	c *faultConnector
}

func (t *faultTx) Commit() error {
	switch faultMode(t.c.mode.Load()) {
	case faultCommit:
		t.Tx.Rollback()
		return errIO
	case faultLostAck:
		if err := t.Tx.Commit(); err != nil {
			return err
		}
		return errLostAck
	}
	return t.Tx.Commit()
}

// TestFaultMySQL injects storage errors into tessera's MySQL driver through a wrapping
// driver.Conn: each round picks a fault mode, runs 16 concurrent appends and clears it. No
// failed append may be acknowledged; appends that failed under "failed and not saved" faults
// must be absent, those under the lost-ack fault present but never at an acknowledged index; and
// once the faults stop the log must accept appends and pass Fsck.
func TestFaultMySQL(t *testing.T) {
	t.Parallel()
	dsn := mysqltest.NewDatabase(t)
	cfg, err := mysql.ParseDSN(dsn)
	if err != nil {
		t.Fatal(err)
	}
	base, err := mysql.NewConnector(cfg)
	if err != nil {
		t.Fatal(err)
	}
	faults := &faultConnector{base: base}
	db := sql.OpenDB(faults)
	t.Cleanup(func() { db.Close() })
	s, v, err := LoadOrGenerateKey(filepath.Join(t.TempDir(), "note.key"), testOrigin)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 45*time.Second)
	defer cancel()
	l, err := OpenMySQL(ctx, db, Options{Signer: s, Verifier: v, CheckpointInterval: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()

	acked := map[uint64]string{}
	failedBy := map[faultMode]map[string]bool{}
	var mu sync.Mutex
	appendRound := func(mode faultMode) {
		faults.mode.Store(int32(mode))
		defer faults.mode.Store(int32(faultNone))
		var wg sync.WaitGroup
		for range 16 {
			wg.Go(func() {
				leaf := randomLeaf(8, 1200)
				i, err := l.Append(ctx, leaf)
				mu.Lock()
				defer mu.Unlock()
				if err != nil {
					if failedBy[mode] == nil {
						failedBy[mode] = map[string]bool{}
					}
					failedBy[mode][digest(leaf)] = true
					return
				}
				if mode != faultNone {
					t.Errorf("append acknowledged at %d while every %s failed", i, faultNames[mode])
				}
				if _, dup := acked[i]; dup {
					t.Errorf("index %d acknowledged twice (I3)", i)
				}
				acked[i] = digest(leaf)
			})
		}
		wg.Wait()
	}
	for round := range 16 {
		appendRound(faultMode(round % 4))
	}
	for range 2 {
		appendRound(faultNone)
	}
	for _, m := range []faultMode{faultWrite, faultCommit, faultLostAck} {
		if len(failedBy[m]) == 0 {
			t.Errorf("no append failed under the %s fault", faultNames[m])
		}
	}
	if len(failedBy[faultNone]) > 0 {
		t.Fatalf("%d appends failed without a fault", len(failedBy[faultNone]))
	}
	size := checkAcked(ctx, t, l, acked)
	cp, err := l.WaitCheckpoint(ctx, size)
	if err != nil {
		t.Fatal(err)
	}
	saved := 0
	rep, err := Fsck(ctx, NewMySQLReader(db), v, func(i uint64, leaf []byte) error {
		d := digest(leaf)
		switch {
		case failedBy[faultWrite][d] || failedBy[faultCommit][d]:
			return fmt.Errorf("leaf %d failed to append (not saved) but is in the log", i)
		case failedBy[faultLostAck][d]:
			saved++
		case acked[i] != d:
			return fmt.Errorf("leaf %d is neither acknowledged there nor a lost acknowledgement", i)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if saved != len(failedBy[faultLostAck]) || rep.Checkpoint.Size != uint64(len(acked)+saved) {
		t.Fatalf("log size %d = %d acknowledged + %d failed-but-saved?", cp.Size, len(acked), saved)
	}
	t.Logf("%d acknowledged; failed: %d write, %d commit, %d lost-ack (all %d saved); fsck: %d leaves, %d tiles, %d earlier checkpoints",
		len(acked), len(failedBy[faultWrite]), len(failedBy[faultCommit]), len(failedBy[faultLostAck]), saved, rep.Leaves, rep.Tiles, rep.Earlier)
}
