package verifier_test

import (
	"bytes"
	"context"
	"crypto/x509"
	"maps"
	"math/big"
	"sync"
	"testing"
	"time"

	"github.com/google/go-sev-guest/abi"
	"github.com/google/go-sev-guest/kds"
	"github.com/google/go-tdx-guest/pcs"
	"github.com/proofline/proofline/attest"
	"github.com/proofline/proofline/attest/attesttest/fakeamd"
	"github.com/proofline/proofline/attest/attesttest/fakeintel"
	"github.com/proofline/proofline/verifier"
	"github.com/proofline/proofline/verifier/collateral"
	"github.com/proofline/proofline/verifier/ear"
	"github.com/proofline/proofline/verifier/policy"
	"github.com/proofline/proofline/verifier/roots"
)

// The verification caches (verifier/internal/vcache, used by verifier/tdx and verifier/snp) must
// never make a check pass that fails without them. Each test first verifies a valid attestation
// (which fills the caches with its chain, CRLs and signed collateral), then changes one input and
// requires the failure the uncached path reports.

func hasFailure(r *ear.Result, code ear.Code) bool {
	for _, f := range r.Failures {
		if f.Code == code {
			return true
		}
	}
	return false
}

// replay serves exactly the collateral of an earlier run, byte for byte (a re-signed CRL would
// have other bytes and miss the caches).
func replay(earlier collateral.Set) func(collateral.Set) {
	return func(set collateral.Set) {
		clear(set)
		maps.Copy(set, earlier)
	}
}

// warm verifies the unchanged scenario and requires it to be affirming.
func warm(t *testing.T, run func(*testing.T) *ear.Result) {
	t.Helper()
	if r := run(t); r.Status != ear.StatusAffirming {
		t.Fatalf("the valid attestation is not affirming: %s", describe(r))
	}
}

func TestTDXCacheDoesNotMask(t *testing.T) {
	cases := []struct {
		name   string
		change func(t *testing.T, s *tdxScenario)
		want   ear.Code
	}{
		{"PCK expired at a later verification time", func(t *testing.T, s *tdxScenario) {
			s.opts = func(o *verifier.Options) { o.Now = s.pki.PCK.NotAfter.Add(time.Second) }
		}, ear.CodeTDXCertExpired},
		{"PCK not yet valid at an earlier verification time", func(t *testing.T, s *tdxScenario) {
			s.opts = func(o *verifier.Options) { o.Now = s.pki.PCK.NotBefore.Add(-time.Second) }
		}, ear.CodeTDXCertExpired},
		{"PCK revoked by a new PCK CRL", func(t *testing.T, s *tdxScenario) {
			s.coll.PCKCRL.Revoked = []*big.Int{s.pki.PCK.SerialNumber}
		}, ear.CodeTDXCertRevoked},
		{"TCB signing certificate revoked by a new Root CA CRL", func(t *testing.T, s *tdxScenario) {
			s.coll.RootCRL.Revoked = []*big.Int{s.pki.TCBSigning.SerialNumber}
		}, ear.CodeTDXCertRevoked},
		{"a different root set", func(t *testing.T, s *tdxScenario) {
			other, err := fakeintel.New(testNow)
			if err != nil {
				t.Fatal(err)
			}
			s.opts = func(o *verifier.Options) { o.Roots.Intel = []*x509.Certificate{other.Root} }
		}, ear.CodeTDXPCKChainInvalid},
		{"a tampered byte in the TCB info", func(t *testing.T, s *tdxScenario) {
			s.editSet = func(set collateral.Set) {
				r := set[pcs.TcbInfoURL(s.pki.FMSPCHex())]
				if r == nil {
					t.Fatal("no TCB info in the collateral set")
				}
				body := bytes.Replace(r.Body, []byte("UpToDate"), []byte("UpToDatf"), 1)
				if bytes.Equal(body, r.Body) {
					t.Fatal("the TCB info has no UpToDate level to tamper with")
				}
				r.Body = body
			}
		}, ear.CodeTDXTCBInfoInvalid},
		{"the same PCK CRL at a verification time past its nextUpdate", func(t *testing.T, s *tdxScenario) {
			s.editSet = replay(s.served)
			s.opts = func(o *verifier.Options) { o.Now = s.coll.PCKCRL.NextUpdate.Add(time.Second) }
		}, ear.CodeTDXCRLStale},
		{"the same Root CA CRL at a verification time past its nextUpdate", func(t *testing.T, s *tdxScenario) {
			s.editSet = replay(s.served)
			s.opts = func(o *verifier.Options) { o.Now = s.coll.RootCRL.NextUpdate.Add(time.Second) }
		}, ear.CodeTDXCRLStale},
		{"a tampered byte in the PCK CRL", func(t *testing.T, s *tdxScenario) {
			s.editSet = func(set collateral.Set) {
				r := set[pcs.PckCrlURL("platform")]
				if r == nil {
					t.Fatal("no PCK CRL in the collateral set")
				}
				r.Body = append([]byte(nil), r.Body...)
				r.Body[len(r.Body)-1] ^= 1 // inside the signature value
			}
		}, ear.CodeTDXCRLInvalid},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			s := newTDXScenario(t, 4)
			warm(t, s.run)
			c.change(t, s)
			r := s.run(t)
			if !hasFailure(r, c.want) {
				t.Fatalf("after a cached valid verification, want failure %s, got %s", c.want, describe(r))
			}
		})
	}
}

func TestSNPCacheDoesNotMask(t *testing.T) {
	cases := []struct {
		name   string
		change func(t *testing.T, s *snpScenario)
		want   ear.Code
	}{
		{"VCEK expired at a later verification time", func(t *testing.T, s *snpScenario) {
			s.opts = func(o *verifier.Options) { o.Now = s.pki.VCEK.NotAfter.Add(time.Second) }
		}, ear.CodeSNPCertExpired},
		{"VCEK revoked by a new CRL", func(t *testing.T, s *snpScenario) {
			s.crl.Revoked = []*big.Int{s.pki.VCEK.SerialNumber}
		}, ear.CodeSNPCertRevoked},
		{"ASK revoked by a new CRL", func(t *testing.T, s *snpScenario) {
			s.crl.Revoked = []*big.Int{s.pki.ASK.SerialNumber}
		}, ear.CodeSNPCertRevoked},
		{"a different ARK", func(t *testing.T, s *snpScenario) {
			// fakeamd signs with fixed keys per product line: another Milan PKI has the same ARK
			// key, so take another line's ARK.
			other, err := fakeamd.New("Genoa", testNow)
			if err != nil {
				t.Fatal(err)
			}
			s.roots = &roots.AMDProduct{Line: s.pki.ProductLine, ARK: other.ARK, ASK: s.pki.ASK}
		}, ear.CodeSNPChainInvalid},
		{"a tampered byte in the VCEK", func(t *testing.T, s *snpScenario) {
			for i, der := range s.certs {
				if c, err := x509.ParseCertificate(der); err == nil && c.Subject.CommonName == "SEV-VCEK" {
					der = append([]byte(nil), der...)
					der[len(der)-1] ^= 1 // inside the signature value
					s.certs[i] = der
					return
				}
			}
			t.Fatal("no VCEK among the evidence's certificates")
		}, ear.CodeSNPChainInvalid},
		{"the same CRL at a verification time past its nextUpdate", func(t *testing.T, s *snpScenario) {
			r := s.served[kds.CrlLinkByKey(s.pki.ProductLine, s.key)]
			if r == nil {
				t.Fatal("no CRL in the collateral served")
			}
			crl, err := x509.ParseRevocationList(r.Body)
			if err != nil {
				t.Fatal(err)
			}
			s.editSet = replay(s.served)
			s.opts = func(o *verifier.Options) { o.Now = crl.NextUpdate.Add(time.Second) }
		}, ear.CodeSNPCRLStale},
		{"a tampered byte in the CRL", func(t *testing.T, s *snpScenario) {
			s.editSet = func(set collateral.Set) {
				for _, r := range set {
					if c, err := x509.ParseRevocationList(r.Body); err == nil && c != nil {
						r.Body = append([]byte(nil), r.Body...)
						r.Body[len(r.Body)-1] ^= 1
					}
				}
			}
		}, ear.CodeSNPCRLInvalid},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			s := newSNPScenario(t, "Milan", abi.VcekReportSigner)
			warm(t, s.run)
			c.change(t, s)
			r := s.run(t)
			if !hasFailure(r, c.want) {
				t.Fatalf("after a cached valid verification, want failure %s, got %s", c.want, describe(r))
			}
		})
	}
}

// TestCachesConcurrent verifies one valid and one revoked TDX attestation, and one valid SEV-SNP
// attestation, from many goroutines at once (run with -race): every verdict must be the uncached
// one.
func TestCachesConcurrent(t *testing.T) {
	type job struct {
		ev   *attest.Evidence
		opts verifier.Options
		want ear.Status
	}
	var jobs []job
	tdxJob := func(revoke bool) job {
		s := newTDXScenario(t, 5)
		if revoke {
			s.coll.PCKCRL.Revoked = []*big.Int{s.pki.PCK.SerialNumber}
		}
		raw, set, pol := s.inputs(t)
		want := ear.StatusAffirming
		if revoke {
			want = ear.StatusContraindicated
		}
		return job{
			ev:   &attest.Evidence{Version: 1, Platform: attest.PlatformTDX, Report: raw, Nonce: s.nonce, RuntimeData: runtimeData},
			opts: verifier.Options{Policy: pol, Roots: &roots.Set{Intel: []*x509.Certificate{s.pki.Root}, Test: true}, Collateral: set, Now: testNow, Nonce: s.nonce},
			want: want,
		}
	}
	jobs = append(jobs, tdxJob(false), tdxJob(true))
	snpS := newSNPScenario(t, "Genoa", abi.VcekReportSigner)
	raw, err := snpS.pki.Report(snpS.report)
	if err != nil {
		t.Fatal(err)
	}
	rs, err := snpS.pki.Collateral(snpS.crl)
	if err != nil {
		t.Fatal(err)
	}
	set := collateral.Set{}
	if err := set.Add(rs...); err != nil {
		t.Fatal(err)
	}
	pol, err := policy.Parse([]byte(snpS.policyYAML()))
	if err != nil {
		t.Fatal(err)
	}
	jobs = append(jobs, job{
		ev:   &attest.Evidence{Version: 1, Platform: attest.PlatformSNP, Report: raw, Certificates: snpS.certs, Nonce: snpS.nonce, RuntimeData: runtimeData},
		opts: verifier.Options{Policy: pol, Roots: &roots.Set{AMD: map[string]*roots.AMDProduct{snpS.pki.ProductLine: snpS.roots}, Test: true}, Collateral: set, Now: testNow, Nonce: snpS.nonce},
		want: ear.StatusAffirming,
	})
	var wg sync.WaitGroup
	for g := range 6 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 10 {
				j := jobs[(g+i)%len(jobs)]
				if r := verifier.Verify(context.Background(), j.ev, j.opts); r.Status != j.want {
					t.Errorf("job %d: want %s, got %s", (g+i)%len(jobs), j.want, describe(r))
					return
				}
			}
		}()
	}
	wg.Wait()
}
