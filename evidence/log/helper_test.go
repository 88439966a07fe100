package log

import (
	"bufio"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	mrand "math/rand/v2"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// The helper processes speak a line protocol on stdout, one line per Append, written as soon as
// Append returns:
//
//	ack INDEX SHA256   the leaf with that digest was acknowledged at INDEX
//	err SHA256 MSG     appending the leaf with that digest failed
//	fatal MSG          the helper hit something that must not happen
//
// Lines are shorter than PIPE_BUF, so each arrives whole even when the helper is killed.

func runHelper(mode string) int {
	switch mode {
	case "crash":
		return crashHelper()
	case "fault-fsize":
		return fsizeHelper()
	}
	fmt.Printf("fatal unknown helper mode %q\n", mode)
	return 2
}

type reporter struct{ mu sync.Mutex }

func (r *reporter) printf(format string, args ...any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	fmt.Fprintf(os.Stdout, format+"\n", args...)
}

// appendAndReport appends a fresh random leaf of maxSize bytes at most and reports the outcome.
func (r *reporter) appendAndReport(ctx context.Context, l *Log, maxSize int) error {
	leaf := randomLeaf(8, maxSize) // 8 random bytes: no two leaves collide
	h := sha256.Sum256(leaf)
	i, err := l.Append(ctx, leaf)
	if err != nil {
		r.printf("err %x %s", h, strings.ReplaceAll(err.Error(), "\n", " "))
		return err
	}
	r.printf("ack %d %x", i, h)
	return nil
}

func randomLeaf(minSize, maxSize int) []byte {
	b := make([]byte, minSize+mrand.IntN(maxSize-minSize+1))
	rand.Read(b)
	return b
}

// crashHelper appends from 8 goroutines until it is killed.
func crashHelper() int {
	ctx := context.Background()
	l, err := openFromEnv(ctx, Options{Origin: testOrigin})
	if err != nil {
		fmt.Printf("fatal open: %v\n", err)
		return 1
	}
	r := &reporter{}
	for range 8 {
		go func() {
			for {
				if err := r.appendAndReport(ctx, l, 1200); err != nil {
					r.printf("fatal append failed without any fault injected")
				}
			}
		}()
	}
	select {}
}

// fsizeHelper injects write errors into tessera's POSIX driver with RLIMIT_FSIZE: while the
// limit is lowered, every write(2) that would grow a regular file of this process past it fails
// with EFBIG (Go ignores the SIGXFSZ that comes with it). Each round lowers the limit, runs 16
// concurrent appends, and lifts it; at the end appends must work again and Close must succeed.
//
// A batch writes the entry bundle, then the hash tiles, then the tree state, each to a fresh
// temporary file. Leaves of at most 24 bytes make the bundle (2+len bytes per leaf) smaller than
// the level-0 tile (32 bytes per leaf), and the limit is drawn around their current sizes, so a
// round fails at the bundle, or after it at a tile, or not at all.
func fsizeHelper() int {
	ctx := context.Background()
	l, err := openFromEnv(ctx, Options{Origin: testOrigin})
	if err != nil {
		fmt.Printf("fatal open: %v\n", err)
		return 1
	}
	rounds, _ := strconv.Atoi(os.Getenv("PROOFLINE_LOG_TEST_ROUNDS"))
	r := &reporter{}
	var unlimited syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_FSIZE, &unlimited); err != nil {
		fmt.Printf("fatal getrlimit: %v\n", err)
		return 1
	}
	for range rounds {
		size, err := l.reader.IntegratedSize(ctx)
		if err != nil {
			fmt.Printf("fatal size: %v\n", err)
			return 1
		}
		lim := unlimited
		if mrand.IntN(3) > 0 { // a third of the rounds grow the log unhindered
			lim.Cur = uint64(mrand.IntN(40 * int(size%256+24)))
		}
		if err := syscall.Setrlimit(syscall.RLIMIT_FSIZE, &lim); err != nil {
			fmt.Printf("fatal setrlimit: %v\n", err)
			return 1
		}
		var wg sync.WaitGroup
		for range 16 {
			wg.Go(func() { r.appendAndReport(ctx, l, 24) })
		}
		wg.Wait()
		if err := syscall.Setrlimit(syscall.RLIMIT_FSIZE, &unlimited); err != nil {
			fmt.Printf("fatal setrlimit: %v\n", err)
			return 1
		}
	}
	for range 32 {
		if err := r.appendAndReport(ctx, l, 1200); err != nil {
			r.printf("fatal append still failing after the fault was lifted: %v", err)
			return 1
		}
	}
	if err := l.Close(); err != nil {
		r.printf("fatal close: %v", err)
		return 1
	}
	return 0
}

// helperRun is the parsed output of one helper process.
type helperRun struct {
	acks   map[uint64]string // index → leaf digest
	errs   []string          // digests of leaves whose append failed
	msgs   []string          // their error messages
	fatals []string
	err    error // from Wait
}

// startHelper runs the test binary in helper mode against f's log. With kill > 0 it is killed
// with SIGKILL after that long; otherwise it runs to completion.
func startHelper(t *testing.T, f *fixture, mode string, kill time.Duration, env ...string) helperRun {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(append(append(os.Environ(), envHelper+"="+mode), f.env...), env...)
	cmd.Stderr = nil // tessera logs via klog; keep the test output readable
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	if kill > 0 {
		timer := time.AfterFunc(kill, func() { cmd.Process.Signal(syscall.SIGKILL) })
		defer timer.Stop()
	} else {
		timer := time.AfterFunc(2*time.Minute, func() { cmd.Process.Signal(syscall.SIGKILL) })
		defer timer.Stop()
	}
	run := helperRun{acks: map[uint64]string{}}
	sc := bufio.NewScanner(out)
	for sc.Scan() {
		fields := strings.SplitN(sc.Text(), " ", 3)
		switch fields[0] {
		case "ack":
			i, err := strconv.ParseUint(fields[1], 10, 64)
			if err != nil || len(fields) != 3 {
				t.Fatalf("bad helper line %q", sc.Text())
			}
			if prev, dup := run.acks[i]; dup {
				t.Errorf("index %d acknowledged twice, for %s and %s (I3)", i, prev, fields[2])
			}
			run.acks[i] = fields[2]
		case "err":
			run.errs = append(run.errs, fields[1])
			run.msgs = append(run.msgs, fields[2])
		case "fatal":
			run.fatals = append(run.fatals, sc.Text())
		default:
			t.Fatalf("bad helper line %q", sc.Text())
		}
	}
	run.err = cmd.Wait()
	return run
}

func digest(b []byte) string {
	h := sha256.Sum256(b)
	return hex.EncodeToString(h[:])
}
