package api

import (
	"errors"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/proofline/proofline/attest"
	"github.com/proofline/proofline/internal/mysqltest"
	"github.com/proofline/proofline/verifier/ear"
	"github.com/proofline/proofline/verifier/rp"
	"github.com/proofline/proofline/verifier/service"
	"github.com/proofline/proofline/verifier/service/servicetest"
)

// wantRefused checks that an attest answer is a recorded, contraindicated nonce_mismatch verdict
// whose message gives reason, and that relying parties refuse its token.
func wantRefused(t *testing.T, f *fixture, a *attestResult, reason string) {
	t.Helper()
	res := a.decoded(t)
	if a.Status != ear.StatusContraindicated || !res.HasFailure(ear.CodeNonceMismatch) {
		t.Fatalf("want contraindicated with nonce_mismatch, got %s %v", a.Status, failureCodes(res))
	}
	if !strings.Contains(string(a.Result), reason) {
		t.Fatalf("the result does not say %q: %s", reason, a.Result)
	}
	if a.Token == "" || a.RecordSHA256 == "" {
		t.Fatalf("a refused nonce is still a recorded verdict with a token: %+v", a)
	}
	if _, err := f.rpVerifier().VerifyJWT(a.Token); !errors.Is(err, rp.ErrStatus) {
		t.Fatalf("relying party on a refused-nonce token: %v", err)
	}
}

// Acceptance 2, one verifier: a replayed nonce, an expired one, an unknown one, one issued to
// another caller, evidence bound to another nonce and evidence without a nonce are all refused.
func TestNonceRefusals(t *testing.T) {
	f := newFixture(t, options{})
	const agent = "vm-tdx"
	tdx := attest.PlatformTDX

	t.Run("replayed", func(t *testing.T) {
		ev := f.evidence(tdx, agent, f.challenge(agent), servicetest.FaultNone)
		if a := f.attest(agent, ev); a.Status != ear.StatusAffirming {
			t.Fatalf("first submission: %s", a.Result)
		}
		wantRefused(t, f, f.attest(agent, ev), "already used")
	})
	t.Run("expired", func(t *testing.T) {
		ev := f.evidence(tdx, agent, f.challenge(agent), servicetest.FaultNone)
		f.clock.Advance(service.DefaultNonceTTL)
		wantRefused(t, f, f.attest(agent, ev), "expired")
	})
	t.Run("unknown", func(t *testing.T) {
		wantRefused(t, f, f.attest(agent, f.evidence(tdx, agent, randomBytes(attest.NonceSize), servicetest.FaultNone)), "not issued by this verifier")
	})
	t.Run("issued to another caller", func(t *testing.T) {
		nonce := f.challenge("vm-snp")
		wantRefused(t, f, f.attest(agent, f.evidence(tdx, agent, nonce, servicetest.FaultNone)), "issued to another caller")
		// The rightful owner may still use it: a refusal for a wrong binding spends nothing.
		if a := f.attest("vm-snp", f.evidence(attest.PlatformSNP, "vm-snp", nonce, servicetest.FaultNone)); a.Status != ear.StatusAffirming {
			t.Fatalf("owner after a wrong-binding attempt: %s", a.Result)
		}
	})
	t.Run("REPORT_DATA binds another nonce", func(t *testing.T) {
		a := f.attest(agent, f.evidence(tdx, agent, f.challenge(agent), servicetest.FaultNonceBinding))
		if res := a.decoded(t); a.Status != ear.StatusContraindicated || !res.HasFailure(ear.CodeNonceMismatch) {
			t.Fatalf("got %s %v", a.Status, failureCodes(res))
		}
	})
	t.Run("no nonce", func(t *testing.T) {
		ev := &attest.Evidence{Version: 1, Platform: tdx, Report: []byte{1, 2, 3}}
		b, err := ev.Encode()
		if err != nil {
			t.Fatal(err)
		}
		wantRefused(t, f, f.attest(agent, b), "carries no nonce")
	})
	t.Run("anonymous challenge, spent once", func(t *testing.T) {
		nonce := f.challenge("")
		if a := f.attest(agent, f.evidence(tdx, agent, nonce, servicetest.FaultNone)); a.Status != ear.StatusAffirming {
			t.Fatalf("anonymous nonce: %s", a.Result)
		}
		wantRefused(t, f, f.attest("vm-snp", f.evidence(attest.PlatformSNP, "vm-snp", nonce, servicetest.FaultNone)), "already used")
	})
	t.Run("malformed envelope", func(t *testing.T) {
		for _, body := range []string{`not json`, `{"version":1,"platform":"tdx","report":"AA==","extra":1}`, `{"version":2}`} {
			code, hdr, b := f.do(http.MethodPost, "/v1/attest", agent, []byte(body))
			if code != http.StatusBadRequest || strings.Contains(string(b), "token") || hdr.Get("Content-Type") != "application/json" {
				t.Fatalf("%s: %d %s", body, code, b)
			}
		}
	})
}

// Acceptance 2 across two replicas sharing MariaDB (and the data directory's keys and nonce
// secret, as replicas share them from configuration): a nonce is single-use across both, expiry,
// unknown nonces and wrong bindings are refused whichever replica issued the challenge, and of two
// replicas racing to accept the same evidence exactly one does.
func TestNonceRefusalsAcrossReplicas(t *testing.T) {
	dsn := mysqltest.NewDatabase(t)
	dir := t.TempDir()
	c := &clock{now: simulated(t).Now.Add(time.Minute).Truncate(time.Second)}
	a := newFixture(t, options{dataDir: dir, database: dsn, clock: c})
	b := newFixture(t, options{dataDir: dir, database: dsn, clock: c})
	const agent = "vm-snp"
	snp := attest.PlatformSNP

	t.Run("issued by A, accepted by B, replayed to both", func(t *testing.T) {
		ev := b.evidence(snp, agent, a.challenge(agent), servicetest.FaultNone)
		if r := b.attest(agent, ev); r.Status != ear.StatusAffirming {
			t.Fatalf("B: %s", r.Result)
		}
		wantRefused(t, a, a.attest(agent, ev), "already used")
		wantRefused(t, b, b.attest(agent, ev), "already used")
	})
	t.Run("expired", func(t *testing.T) {
		ev := a.evidence(snp, agent, a.challenge(agent), servicetest.FaultNone)
		c.Advance(service.DefaultNonceTTL + time.Second)
		wantRefused(t, b, b.attest(agent, ev), "expired")
	})
	t.Run("unknown", func(t *testing.T) {
		wantRefused(t, b, b.attest(agent, b.evidence(snp, agent, randomBytes(attest.NonceSize), servicetest.FaultNone)), "not issued by this verifier")
	})
	t.Run("issued to another caller", func(t *testing.T) {
		nonce := a.challenge("vm-tdx")
		wantRefused(t, b, b.attest(agent, b.evidence(snp, agent, nonce, servicetest.FaultNone)), "issued to another caller")
	})
	t.Run("race", func(t *testing.T) {
		ev := a.evidence(snp, agent, a.challenge(agent), servicetest.FaultNone)
		results := make([]*attestResult, 4)
		var wg sync.WaitGroup
		for i := range results {
			f := a
			if i%2 == 1 {
				f = b
			}
			wg.Go(func() { results[i] = f.attest(agent, ev) })
		}
		wg.Wait()
		affirming := 0
		for _, r := range results {
			if r.Status == ear.StatusAffirming {
				affirming++
			} else if !r.decoded(t).HasFailure(ear.CodeNonceMismatch) {
				t.Fatalf("loser: %s", r.Result)
			}
		}
		if affirming != 1 {
			t.Fatalf("%d of %d racing submissions were accepted, want exactly 1", affirming, len(results))
		}
	})
}
