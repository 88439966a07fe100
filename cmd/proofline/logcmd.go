package main

import (
	"context"
	"database/sql"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	_ "github.com/go-sql-driver/mysql" // the MariaDB/MySQL database/sql driver
	"golang.org/x/mod/sumdb/note"

	"github.com/proofline/proofline/evidence"
	"github.com/proofline/proofline/evidence/index"
	evlog "github.com/proofline/proofline/evidence/log"
)

const logUsage = `Usage: proofline log <command> [flags]

Commands:
  fsck      check the whole evidence log: tree, checkpoints and every record's signature
  reindex   rebuild the query index from the log alone

Run 'proofline log <command> -h' for the flags of a command.
`

func runLog(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, logUsage)
		return exitUsage
	}
	switch args[0] {
	case "fsck":
		return runFsck(ctx, args[1:], stdout, stderr)
	case "reindex":
		return runReindex(ctx, args[1:], stdout, stderr)
	case "help", "-h", "--help":
		fmt.Fprint(stdout, logUsage)
		return exitOK
	}
	fmt.Fprintf(stderr, "proofline log: unknown command %q\n%s", args[0], logUsage)
	return exitUsage
}

// logSource names where a log is stored and how to read it.
type logSource struct {
	dir, dsn, pub, keys string
}

func (s *logSource) flags(fs *flag.FlagSet) {
	fs.StringVar(&s.dir, "log", "", "the log's directory (POSIX storage; its note.pub verifies checkpoints)")
	fs.StringVar(&s.dsn, "mysql", "", "the log's MariaDB/MySQL database, as a DSN such as user@tcp(host:3306)/proofline (instead of --log)")
	fs.StringVar(&s.pub, "log-key", "", "the log's checkpoint verifier key file (default: DIR/note.pub with --log; required with --mysql)")
	fs.StringVar(&s.keys, "keys", "", "the record key history (JSON) every record is verified against; required")
}

// keyFile is the checkpoint verifier key file open reads.
func (s *logSource) keyFile() string {
	if s.pub == "" && s.dir != "" {
		return filepath.Join(s.dir, "note.pub")
	}
	return s.pub
}

// open returns the log's reader and checkpoint verifier, the key history, and a close function.
func (s *logSource) open() (evlog.Reader, note.Verifier, *evidence.KeyHistory, func(), error) {
	if (s.dir == "") == (s.dsn == "") {
		return nil, nil, nil, nil, errors.New("give the log's storage: --log DIR or --mysql DSN")
	}
	if s.keys == "" {
		return nil, nil, nil, nil, errors.New("--keys FILE (the record key history) is required: records are verified against it")
	}
	keys, err := evidence.LoadKeyHistory(s.keys)
	if err != nil {
		return nil, nil, nil, nil, err
	}
	pub := s.keyFile()
	if pub == "" {
		return nil, nil, nil, nil, errors.New("--log-key FILE (the checkpoint verifier key) is required with --mysql")
	}
	vkey, err := os.ReadFile(pub)
	if err != nil {
		return nil, nil, nil, nil, fmt.Errorf("checkpoint verifier key: %w", err)
	}
	v, err := note.NewVerifier(strings.TrimSpace(string(vkey)))
	if err != nil {
		return nil, nil, nil, nil, fmt.Errorf("checkpoint verifier key %s: %w", pub, err)
	}
	if s.dir != "" {
		if _, err := os.Stat(s.dir); err != nil {
			return nil, nil, nil, nil, fmt.Errorf("log directory: %w", err)
		}
		return evlog.NewPOSIXReader(s.dir), v, keys, func() {}, nil
	}
	db, err := sql.Open("mysql", s.dsn)
	if err != nil {
		return nil, nil, nil, nil, fmt.Errorf("--mysql: %w", err)
	}
	return evlog.NewMySQLReader(db), v, keys, func() { db.Close() }, nil
}

// multiFlag collects a repeated flag.
type multiFlag []string

func (m *multiFlag) String() string     { return strings.Join(*m, ",") }
func (m *multiFlag) Set(v string) error { *m = append(*m, v); return nil }

func runFsck(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("proofline log fsck", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var src logSource
	src.flags(fs)
	var earlier multiFlag
	fs.Var(&earlier, "checkpoint", "an earlier checkpoint (signed note file) the log must be consistent with; repeatable")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return exitOK
		}
		return exitUsage
	}
	fail := func(format string, a ...any) int {
		fmt.Fprintf(stderr, "proofline log fsck: "+format+"\n", a...)
		return exitUsage
	}
	r, v, keys, closeFn, err := src.open()
	if err != nil {
		return fail("%v", err)
	}
	defer closeFn()
	var cps [][]byte
	for _, p := range earlier {
		b, err := os.ReadFile(p)
		if err != nil {
			return fail("--checkpoint: %v", err)
		}
		cps = append(cps, b)
	}
	checkLeaf := func(_ uint64, leaf []byte) error {
		_, _, err := evidence.Open(leaf, keys)
		return err
	}
	rep, err := evlog.Fsck(ctx, r, v, checkLeaf, cps...)
	var ce *evlog.CorruptError
	switch {
	case errors.As(err, &ce):
		where := ""
		if ce.HasIndex {
			where = fmt.Sprintf(" at leaf %d", ce.Index)
		}
		fmt.Fprintf(stdout, "proofline log fsck: CORRUPT: invariant %s%s: %s\n", ce.Invariant, where, ce.Error())
		return exitContraindicated
	case err != nil:
		return fail("%v", err)
	}
	cp := rep.Checkpoint
	fmt.Fprintf(stdout, "proofline log fsck: OK\n")
	fmt.Fprintf(stdout, "  checkpoint  %s, size %d, root %x (signature verified with %s)\n", cp.Origin, cp.Size, cp.Hash, src.keyFile())
	if src.pub == "" && len(earlier) == 0 {
		// The key and the served-checkpoint floor are the log directory's own: a log rebuilt under
		// a new key (a leaf removed, everything re-signed) passes as well.
		fmt.Fprintf(stdout, "  log key     NOT PINNED: %s is the log directory's own key, so this shows the log is intact, not that it is the log you had; pin it with --log-key FILE (a copy kept elsewhere, or GET /v1/keys) or give a checkpoint you kept with --checkpoint FILE\n", src.keyFile())
	}
	fmt.Fprintf(stdout, "  leaves      %d read, their hashes recomputed into the root (I1, I3)\n", rep.Leaves)
	fmt.Fprintf(stdout, "  records     %d signatures verified against the key history of %d key(s) (I5)\n", rep.Leaves, len(keys.Keys()))
	fmt.Fprintf(stdout, "  tiles       %d stored hash tiles match the recomputed tree\n", rep.Tiles)
	fmt.Fprintf(stdout, "  earlier     %d earlier checkpoint(s) consistent with this one, none larger (I4, I6)\n", rep.Earlier)
	return exitOK
}

func runReindex(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("proofline log reindex", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var src logSource
	src.flags(fs)
	indexPath := fs.String("index", "", "the SQLite index file to rebuild (with --log); with --mysql the index lives in the same database")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return exitOK
		}
		return exitUsage
	}
	fail := func(format string, a ...any) int {
		fmt.Fprintf(stderr, "proofline log reindex: "+format+"\n", a...)
		return exitUsage
	}
	r, v, keys, closeFn, err := src.open()
	if err != nil {
		return fail("%v", err)
	}
	defer closeFn()
	var ix *index.Index
	switch {
	case src.dsn != "":
		db, err := sql.Open("mysql", src.dsn)
		if err != nil {
			return fail("--mysql: %v", err)
		}
		defer db.Close()
		ix, err = index.OpenMySQL(ctx, db)
		if err != nil {
			return fail("%v", err)
		}
	case *indexPath != "":
		ix, err = index.OpenSQLite(ctx, *indexPath)
		if err != nil {
			return fail("%v", err)
		}
	default:
		return fail("--index FILE is required with --log")
	}
	defer ix.Close()
	open := func(leaf []byte) (*evidence.Record, error) {
		rec, _, err := evidence.Open(leaf, keys)
		return rec, err
	}
	progress := func(done, size uint64) {
		fmt.Fprintf(stderr, "\rreindexing: %d of %d records", done, size)
	}
	n, err := index.Rebuild(ctx, ix, evlog.NewLeafReader(r, v), open, progress)
	fmt.Fprintln(stderr)
	if err != nil {
		fmt.Fprintf(stderr, "proofline log reindex: stopped after %d records: %v\n", n, err)
		return exitContraindicated
	}
	fmt.Fprintf(stdout, "proofline log reindex: OK: %d records indexed from the log\n", n)
	return exitOK
}
