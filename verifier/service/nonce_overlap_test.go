package service

import (
	"context"
	"crypto/rand"
	"errors"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/proofline/proofline/attest"
	"github.com/proofline/proofline/verifier/collateral/collateraltest"
	"github.com/proofline/proofline/verifier/ear"
	"github.com/proofline/proofline/verifier/nonce"
	"github.com/proofline/proofline/verifier/service/servicetest"
)

// scriptedNonces is a store of used nonces whose MarkUsed waits for release (when set) and
// then answers err.
type scriptedNonces struct {
	err     error
	release chan struct{}
	called  chan struct{}
}

func (s *scriptedNonces) MarkUsed(ctx context.Context, _ []byte, _ time.Time) error {
	if s.called != nil {
		close(s.called)
	}
	if s.release != nil {
		<-s.release
	}
	return s.err
}

func (s *scriptedNonces) Sweep(context.Context, time.Time) (int64, error) { return 0, nil }

// nonceEnv is an alertEnv whose nonces are recorded in store.
func nonceEnv(t *testing.T, store nonce.Store) *alertEnv {
	secret := make([]byte, nonce.SecretSize)
	if _, err := rand.Read(secret); err != nil {
		t.Fatal(err)
	}
	return newAlertEnv(t, nil, func(d *Deps, clock *collateraltest.Clock) {
		var err error
		if d.Nonces, err = nonce.New(secret, store, time.Minute, clock.Now); err != nil {
			t.Fatal(err)
		}
	})
}

// verifications is how many evidence verifications of platform e's service has run.
func verifications(t *testing.T, e *alertEnv, platform attest.Platform) uint64 {
	t.Helper()
	var m dto.Metric
	if err := e.svc.m.verifyLatency.WithLabelValues(string(platform)).(prometheus.Metric).Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetHistogram().GetSampleCount()
}

// The evidence is verified while its nonce's use is being recorded; the verdict counts only
// once the nonce is accepted. Each case starts from valid evidence that verifies.
func TestNonceDecidesAfterVerification(t *testing.T) {
	ctx := context.Background()
	size := func(t *testing.T, e *alertEnv) uint64 {
		n, err := logLeaves{e.svc.d.Log, e.svc.d.Index}.Size(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return n
	}

	t.Run("refused without the store", func(t *testing.T) {
		store := &scriptedNonces{called: make(chan struct{})}
		e := nonceEnv(t, store)
		p, _ := e.evidence(t, "vm-unknown-nonce", attest.PlatformSNP)
		foreign := make([]byte, attest.NonceSize) // not issued by this verifier
		ev, err := e.plat.Evidence(attest.PlatformSNP, foreign, servicetest.RuntimeData(p.Name), servicetest.FaultNone)
		if err != nil {
			t.Fatal(err)
		}
		a, err := e.svc.Attest(ctx, p, ev)
		if err != nil {
			t.Fatal(err)
		}
		if a.Result.Status != ear.StatusContraindicated || !a.Result.HasFailure(ear.CodeNonceMismatch) {
			t.Fatalf("an unknown nonce: %s %+v, want contraindicated, nonce_mismatch", a.Result.Status, a.Result.Failures)
		}
		select {
		case <-store.called:
			t.Fatal("an unknown nonce reached the store")
		default:
		}
		if n := verifications(t, e, attest.PlatformSNP); n != 0 {
			t.Fatalf("an unknown nonce's evidence was verified (%d verifications)", n)
		}
	})

	t.Run("replayed", func(t *testing.T) {
		e := nonceEnv(t, &scriptedNonces{err: nonce.ErrReplayed})
		p, ev := e.evidence(t, "vm-replayed", attest.PlatformTDX)
		before := size(t, e)
		a, err := e.svc.Attest(ctx, p, ev)
		if err != nil {
			t.Fatal(err)
		}
		if a.Result.Status != ear.StatusContraindicated || !a.Result.HasFailure(ear.CodeNonceMismatch) {
			t.Fatalf("a replayed nonce with evidence that verifies: %s %+v, want contraindicated, nonce_mismatch", a.Result.Status, a.Result.Failures)
		}
		if a.Result.Claims != nil {
			t.Fatalf("the refused nonce's verdict carries the discarded verification's claims: %+v", a.Result.Claims)
		}
		if after := size(t, e); after != before+1 {
			t.Fatalf("log grew from %d to %d, want the refusal recorded", before, after)
		}
	})

	t.Run("store fails", func(t *testing.T) {
		e := nonceEnv(t, &scriptedNonces{err: errors.New("disk full")})
		p, ev := e.evidence(t, "vm-store-fails", attest.PlatformSNP)
		before := size(t, e)
		if a, err := e.svc.Attest(ctx, p, ev); !errors.Is(err, ErrUnavailable) {
			t.Fatalf("Attest with a failing nonce store = %+v, %v, want ErrUnavailable", a, err)
		}
		if after := size(t, e); after != before {
			t.Fatalf("log grew from %d to %d, want nothing recorded", before, after)
		}
	})

	t.Run("waits for the nonce", func(t *testing.T) {
		store := &scriptedNonces{release: make(chan struct{}), called: make(chan struct{})}
		e := nonceEnv(t, store)
		p, ev := e.evidence(t, "vm-slow-store", attest.PlatformTDX)
		done := make(chan error, 1)
		go func() {
			a, err := e.svc.Attest(ctx, p, ev)
			if err == nil && a.Result.Status != ear.StatusAffirming {
				err = errors.New(string(a.Result.Status))
			}
			done <- err
		}()
		select {
		case <-store.called:
		case err := <-done:
			t.Fatalf("Attest answered (%v) without recording the nonce's use", err)
		case <-time.After(10 * time.Second):
			t.Fatal("the nonce's use was not recorded within 10 s")
		}
		// The evidence is verified while the store holds the nonce's use back, and no answer
		// is given before it is recorded.
		for deadline := time.Now().Add(10 * time.Second); verifications(t, e, attest.PlatformTDX) == 0; time.Sleep(time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatal("the evidence was not verified while the nonce's use was being recorded")
			}
		}
		select {
		case err := <-done:
			t.Fatalf("Attest answered (%v) before the nonce's use was recorded", err)
		case <-time.After(50 * time.Millisecond):
		}
		close(store.release)
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	})
}
