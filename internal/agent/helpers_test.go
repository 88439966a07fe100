package agent

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/proofline/proofline/verifier/service/servicetest"
)

// hangGuard bounds every wait of a test for something the code under test must do: it only
// guards against hangs, it never measures.
const hangGuard = 60 * time.Second

var (
	platOnce sync.Once
	plat     *servicetest.Platforms
	platErr  error
)

// simulated returns the simulated platforms shared by the package's tests.
func simulated(t testing.TB) *servicetest.Platforms {
	t.Helper()
	platOnce.Do(func() { plat, platErr = servicetest.New(time.Now()) })
	if platErr != nil {
		t.Fatal(platErr)
	}
	return plat
}

func newKey(t testing.TB) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// stepClock hands every wait the agent asks for to the test, and returns from Sleep only when
// the test releases it: the agent's schedule is observed, never slept.
type stepClock struct {
	sleeps  chan time.Duration
	release chan struct{}
}

func newStepClock() *stepClock {
	return &stepClock{sleeps: make(chan time.Duration), release: make(chan struct{})}
}

func (c *stepClock) Now() time.Time { return time.Now() }

func (c *stepClock) Sleep(ctx context.Context, d time.Duration) error {
	select {
	case c.sleeps <- d:
	case <-ctx.Done():
		return ctx.Err()
	}
	select {
	case <-c.release:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// next returns the next wait the agent asks for.
func (c *stepClock) next(t *testing.T) time.Duration {
	t.Helper()
	select {
	case d := <-c.sleeps:
		return d
	case <-time.After(hangGuard):
		t.Fatal("the agent did not come to its next wait")
		return 0
	}
}

// wake ends the wait the agent is in.
func (c *stepClock) wake(t *testing.T) {
	t.Helper()
	select {
	case c.release <- struct{}{}:
	case <-time.After(hangGuard):
		t.Fatal("the agent is not waiting")
	}
}

// syncBuffer is a log destination shared by goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func textLogger(w *syncBuffer) *slog.Logger {
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug}))
}
