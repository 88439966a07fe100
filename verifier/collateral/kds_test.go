package collateral_test

import (
	"context"
	"encoding/hex"
	"sync"
	"testing"
	"time"

	"github.com/google/go-sev-guest/abi"
	"github.com/google/go-sev-guest/kds"

	"github.com/proofline/proofline/attest/attesttest/fakeamd"
	"github.com/proofline/proofline/verifier/collateral"
	"github.com/proofline/proofline/verifier/collateral/collateraltest"
	"github.com/proofline/proofline/verifier/ear"
	"github.com/proofline/proofline/verifier/roots"
	"github.com/proofline/proofline/verifier/snp"
)

// amdFleet is a fake Milan PKI with VCEKs for chips distinct chips at the PKI's TCB, and the KDS
// documents serving them (both CRLs, both cert chains, the default chip's VCEK and the chips').
type amdFleet struct {
	pki   *fakeamd.PKI
	chips [][abi.ChipIDSize]byte
	vceks []string // VCEK URL of chips[i]
	docs  []*collateral.Response
}

var (
	fleetOnce sync.Once
	fleet     *amdFleet
	fleetErr  error
)

const fleetSize = 50

// newFleet issues the fleet once per test binary: 50 RSA-4096 signatures.
func newFleet(t *testing.T) *amdFleet {
	t.Helper()
	fleetOnce.Do(func() {
		p, err := fakeamd.New("Milan", start)
		if err != nil {
			fleetErr = err
			return
		}
		f := &amdFleet{pki: p}
		if f.docs, err = p.Collateral(fakeamd.CRLOptions{}); err != nil {
			fleetErr = err
			return
		}
		for i := range fleetSize {
			var chip [abi.ChipIDSize]byte
			for j := range chip {
				chip[j] = byte(0x80 + i + j)
			}
			chip[0] = 0xC0 // never the default chip
			cert, err := p.NewVCEK(chip, p.TCB)
			if err != nil {
				fleetErr = err
				return
			}
			r, err := p.VCEKResponse(cert)
			if err != nil {
				fleetErr = err
				return
			}
			f.chips = append(f.chips, chip)
			f.vceks = append(f.vceks, r.URL)
			f.docs = append(f.docs, r)
		}
		fleet = f
	})
	if fleetErr != nil {
		t.Fatal(fleetErr)
	}
	return fleet
}

func (f *amdFleet) kds(c *collateraltest.Clock) (*collateraltest.Server, error) {
	return collateraltest.NewKDS(f.docs, c)
}

// TestKDSBurst is the acceptance test of the collateral service's first part: the fake KDS allows
// one request per 10 s per client (on the injected clock) and answers 429 with Retry-After
// otherwise. 500 requests for the VCEKs of 50 chips (10 per chip) arriving at once all complete,
// with exactly one successful KDS request per (chip, TCB) and no request before a Retry-After;
// requests for chips already cached never wait and never reach KDS. The fetched VCEKs verify
// reports end to end with the project's SEV-SNP verifier.
//
// It runs with the default KDS budget (one request per 10 s, which the fake KDS never refuses),
// with a budget too generous for KDS (one per 4 s: KDS refuses about every other request and the
// fetcher must honour Retry-After), and with no budget at all (Retry-After alone: every request
// still completes with one successful KDS request per chip, but the waiting requests leave
// together when a Retry-After ends, so KDS refuses many and sees concurrent requests as early —
// which is why the default KDS route has a budget).
func TestKDSBurst(t *testing.T) {
	f := newFleet(t)
	for _, tc := range []struct {
		name  string
		chips int
		every time.Duration
	}{
		{"budget=10s", 50, 10 * time.Second},
		{"budget=4s", 50, 4 * time.Second},
		{"no-budget", 10, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := newEnv(t, f.kds, nil, withBudget(tc.every, 1))
			const perChip = 10
			n := tc.chips * perChip

			// Round 1: everything arrives at once, nothing is cached.
			errs, advances := e.drive(n, func(i int) error { return e.get(f.vceks[i%tc.chips]) })
			for i, err := range errs {
				if err != nil {
					t.Fatalf("request %d (chip %d): %v", i, i%tc.chips, err)
				}
			}
			st, cs := e.srv.Stats(), e.cache.Stats()
			for i, u := range f.vceks[:tc.chips] {
				if got := e.srv.Served(u); got != 1 {
					t.Errorf("chip %d: KDS served its VCEK %d times, want exactly 1", i, got)
				}
			}
			if st.Served != tc.chips {
				t.Errorf("KDS served %d documents, want %d", st.Served, tc.chips)
			}
			// With a budget, requests are spaced, so none arrives while KDS has asked this client to
			// wait. Without one, the requests that waited for a Retry-After all leave when it ends
			// (none before it), and KDS sees the concurrent ones after its next 429 as early.
			if tc.every > 0 && st.Early != 0 {
				t.Errorf("%d requests reached KDS before the Retry-After it gave", st.Early)
			}
			if cs.Misses != uint64(tc.chips) || cs.Misses+cs.Coalesced+cs.Hits != uint64(n) {
				t.Errorf("cache: %+v, want %d misses and the other %d requests coalesced or hits", cs, tc.chips, n-tc.chips)
			}
			elapsed := e.clock.Now().Sub(start)
			t.Logf("round 1: %d requests for %d chips: KDS received %d requests, served %d, refused %d with 429, %d early; "+
				"cache %d misses, %d coalesced, %d hits; fake time %s in %d clock advances, %d sleeps",
				n, tc.chips, st.Requests, st.Served, st.RateLimited, st.Early, cs.Misses, cs.Coalesced, cs.Hits, elapsed, advances, e.clock.Sleeps())
			if tc.every == collateraltest.KDSInterval && (st.RateLimited != 0 || elapsed != time.Duration(tc.chips-1)*tc.every) {
				t.Errorf("with the budget matching KDS: %d refusals and %s elapsed, want 0 and %s", st.RateLimited, elapsed, time.Duration(tc.chips-1)*tc.every)
			}

			// Round 2: every chip is cached: no request reaches KDS and nobody waits.
			sleeps, hits := e.clock.Sleeps(), cs.Hits
			errs, advances = e.drive(n, func(i int) error { return e.get(f.vceks[i%tc.chips]) })
			for i, err := range errs {
				if err != nil {
					t.Fatalf("cached request %d: %v", i, err)
				}
			}
			st2, cs2 := e.srv.Stats(), e.cache.Stats()
			if st2.Requests != st.Requests || e.clock.Sleeps() != sleeps || advances != 0 || cs2.Hits-hits != uint64(n) {
				t.Errorf("cached round: %d KDS requests, %d sleeps, %d advances, %d hits; want 0, 0, 0, %d",
					st2.Requests-st.Requests, e.clock.Sleeps()-sleeps, advances, cs2.Hits-hits, n)
			}
			t.Logf("round 2: %d requests for cached chips: %d KDS requests, %d sleeps, %d hits",
				n, st2.Requests-st.Requests, e.clock.Sleeps()-sleeps, cs2.Hits-hits)

			// End to end: reports of three chips verify with VCEKs from the cache; the VCEK CRL is
			// fetched once for the three (it waits for the budget like any KDS request).
			if tc.every != collateraltest.KDSInterval {
				return
			}
			verifyChips(t, e, f, []int{0, 17, 49})
		})
	}
}

// verifyChips runs the project's SEV-SNP verifier on a report from each chip, with the cache as
// its collateral source.
func verifyChips(t *testing.T, e *env, f *amdFleet, chips []int) {
	t.Helper()
	p := f.pki
	reports := make([][]byte, len(chips))
	for i, c := range chips {
		o := p.DefaultReportOptions()
		o.ChipID = f.chips[c]
		r, err := p.Report(o)
		if err != nil {
			t.Fatal(err)
		}
		reports[i] = r
	}
	before := e.srv.Stats().Served
	results := make([]*ear.Result, len(chips))
	claims := make([]*ear.SNPClaims, len(chips))
	e.drive(len(chips), func(i int) error {
		results[i] = &ear.Result{}
		_, claims[i] = snp.Verify(context.Background(), reports[i], nil, snp.Options{
			Now:        e.clock.Now(),
			Roots:      map[string]*roots.AMDProduct{p.ProductLine: {Line: p.ProductLine, ARK: p.ARK, ASK: p.ASK, ASVK: p.ASVK}},
			Collateral: e.cache,
		}, results[i])
		return nil
	})
	for i, c := range chips {
		if len(results[i].Failures) != 0 {
			t.Fatalf("chip %d: %+v", c, results[i].Failures)
		}
		if claims[i] == nil || len(claims[i].Collateral) != 2 || claims[i].Collateral[0].URL != f.vceks[c] {
			t.Fatalf("chip %d: collateral %+v, want its VCEK then the CRL", c, claims[i])
		}
		vcek := f.docs[len(f.docs)-fleetSize+c]
		if d := vcek.Digest(); claims[i].Collateral[0].Digest != "sha256:"+hex.EncodeToString(d[:]) {
			t.Errorf("chip %d: VCEK digest %s, want the KDS document's", c, claims[i].Collateral[0].Digest)
		}
	}
	crl := kds.CrlLinkByKey(p.ProductLine, abi.VcekReportSigner)
	if got := e.srv.Stats().Served - before; got != 1 || e.srv.Served(crl) != 1 {
		t.Errorf("verifying %d reports made KDS serve %d documents (CRL %d times), want only the CRL, once", len(chips), got, e.srv.Served(crl))
	}
	t.Logf("end to end: reports of chips %v verified with their cached VCEKs and one CRL fetch", chips)
}
