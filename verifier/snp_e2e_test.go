package verifier_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/binary"
	"fmt"
	"math/big"
	"strings"
	"testing"
	"time"

	"github.com/google/go-sev-guest/abi"
	"github.com/google/go-sev-guest/kds"
	"github.com/proofline/proofline/attest"
	"github.com/proofline/proofline/attest/attesttest/fakeamd"
	"github.com/proofline/proofline/verifier"
	"github.com/proofline/proofline/verifier/collateral"
	"github.com/proofline/proofline/verifier/ear"
	"github.com/proofline/proofline/verifier/policy"
	"github.com/proofline/proofline/verifier/roots"
	"github.com/proofline/proofline/verifier/snp"
)

// snpScenario is one valid SEV-SNP attestation and the knobs that break it.
type snpScenario struct {
	pki     *fakeamd.PKI
	key     abi.ReportSigner
	report  fakeamd.ReportOptions
	crl     fakeamd.CRLOptions
	certs   [][]byte
	nonce   []byte
	policy  string // extra lines for the sev_snp section
	mutate  func(t *testing.T, s *snpScenario, r []byte) []byte
	editSet func(collateral.Set)
	roots   *roots.AMDProduct
	opts    func(*verifier.Options)
	served  collateral.Set // the collateral the last run served
}

func newSNPScenario(t *testing.T, line string, key abi.ReportSigner) *snpScenario {
	t.Helper()
	pki, err := fakeamd.New(line, testNow)
	if err != nil {
		t.Fatal(err)
	}
	s := &snpScenario{pki: pki, key: key, report: pki.DefaultReportOptions(), nonce: newNonce(t)}
	s.report.SignerInfo.SigningKey = key
	s.report.ReportData = attest.ReportData(s.nonce, runtimeData)
	s.certs = pki.Certificates(key)
	s.roots = &roots.AMDProduct{Line: line, ARK: pki.ARK, ASK: pki.ASK, ASVK: pki.ASVK}
	return s
}

func (s *snpScenario) policyYAML() string {
	tcb := snp.DecomposeTCB(uint64(s.pki.TCB), s.pki.ProductLine)
	base := []string{
		fmt.Sprintf("  measurement: [%x, %s]", s.report.Measurement, strings.Repeat("cd", 48)),
		fmt.Sprintf("  host_data: [%x]", s.report.HostData),
		fmt.Sprintf("  tcb_floors: {%s: {fmc: %d, bootloader: %d, tee: %d, snp: %d, microcode: %d}}", s.pki.ProductLine, tcb.FMC, tcb.Bootloader, tcb.TEE, tcb.SNP, tcb.Microcode),
	}
	// Lines of s.policy replace the base line with the same key.
	var extra []string
	for _, l := range strings.Split(strings.TrimRight(s.policy, "\n"), "\n") {
		key, _, _ := strings.Cut(l, ":")
		replaced := false
		for i, b := range base {
			if strings.HasPrefix(b, key+":") {
				base[i], replaced = l, true
			}
		}
		if !replaced && l != "" {
			extra = append(extra, l)
		}
	}
	return "id: test-snp\nsev_snp:\n" + strings.Join(append(base, extra...), "\n") + "\n"
}

func (s *snpScenario) run(t *testing.T) *ear.Result {
	t.Helper()
	raw, err := s.pki.Report(s.report)
	if err != nil {
		t.Fatal(err)
	}
	if s.mutate != nil {
		raw = s.mutate(t, s, raw)
	}
	rs, err := s.pki.Collateral(s.crl)
	if err != nil {
		t.Fatal(err)
	}
	set := collateral.Set{}
	if err := set.Add(rs...); err != nil {
		t.Fatal(err)
	}
	if s.editSet != nil {
		s.editSet(set)
	}
	s.served = set
	pol, err := policy.Parse([]byte(s.policyYAML()))
	if err != nil {
		t.Fatalf("policy: %v\n%s", err, s.policyYAML())
	}
	opts := verifier.Options{
		Policy:     pol,
		Roots:      &roots.Set{AMD: map[string]*roots.AMDProduct{s.pki.ProductLine: s.roots}, Test: true},
		Collateral: set,
		Now:        testNow,
		Nonce:      s.nonce, // the verifier issued it
	}
	if s.opts != nil {
		s.opts(&opts)
	}
	ev := &attest.Evidence{Version: 1, Platform: attest.PlatformSNP, Report: raw, Certificates: s.certs, Nonce: s.nonce, RuntimeData: runtimeData}
	return verifier.Verify(context.Background(), ev, opts)
}

func TestSNPFullPathAffirming(t *testing.T) {
	for _, line := range []string{"Milan", "Genoa", "Turin"} {
		for _, key := range []abi.ReportSigner{abi.VcekReportSigner, abi.VlekReportSigner} {
			for _, version := range []uint32{2, 3, 5} {
				t.Run(fmt.Sprintf("%s/%s/v%d", line, key, version), func(t *testing.T) {
					s := newSNPScenario(t, line, key)
					s.report.Version = version
					r := s.run(t)
					if r.Status != ear.StatusAffirming {
						t.Fatalf("want affirming, got %s", describe(r))
					}
					c := r.Claims.(*ear.SNPClaims)
					if c.ProductLine != line || c.SigningKey != key.String() || len(c.Collateral) != 1 {
						t.Fatalf("claims: line %q key %q collateral %+v", c.ProductLine, c.SigningKey, c.Collateral)
					}
				})
			}
		}
	}
}

// The VCEK need not travel in the evidence: it is fetched from the collateral by CHIP_ID and
// REPORTED_TCB (version 3+ reports name their product line). The ASK may come from the evidence
// when the roots pin only the ARK; it is still verified against the pinned ARK.
func TestSNPCertificateSources(t *testing.T) {
	s := newSNPScenario(t, "Genoa", abi.VcekReportSigner)
	s.certs = nil
	if r := s.run(t); r.Status != ear.StatusAffirming {
		t.Fatalf("VCEK from collateral: %s", describe(r))
	}
	s = newSNPScenario(t, "Milan", abi.VcekReportSigner)
	s.roots.ASK, s.roots.ASVK = nil, nil
	s.certs = s.pki.CertificatesWithChain(abi.VcekReportSigner)
	if r := s.run(t); r.Status != ear.StatusAffirming {
		t.Fatalf("ASK from evidence: %s", describe(r))
	}
}

// TestSNPNegative builds each failure of VERIFIER-CHECKS SEV-SNP 1–10 from a valid VCEK- and
// VLEK-signed report and asserts its specific code.
func TestSNPNegative(t *testing.T) {
	resign := func(edit func(r []byte)) func(*testing.T, *snpScenario, []byte) []byte {
		return func(t *testing.T, s *snpScenario, r []byte) []byte {
			r = append([]byte(nil), r...)
			edit(r)
			out, err := s.pki.Resign(r)
			if err != nil {
				t.Fatal(err)
			}
			return out
		}
	}
	noResign := func(edit func(r []byte)) func(*testing.T, *snpScenario, []byte) []byte {
		return func(t *testing.T, s *snpScenario, r []byte) []byte {
			r = append([]byte(nil), r...)
			edit(r)
			return r
		}
	}
	alternate := func(t *testing.T, line string) *fakeamd.PKI {
		p, err := fakeamd.NewWithKeys(line, testNow, fakeamd.AlternateKeys())
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	cases := []struct {
		name  string
		setup func(*testing.T, *snpScenario)
		want  ear.Code
		vcek  bool // the case exists for VCEK-signed reports only
		vlek  bool // the case exists for VLEK-signed reports only
	}{
		// 1. Strict parse.
		{name: "version 1", setup: func(t *testing.T, s *snpScenario) {
			s.mutate = resign(func(r []byte) { binary.LittleEndian.PutUint32(r[0:], 1) })
		}, want: ear.CodeSNPReportMalformed},
		{name: "version 6", setup: func(t *testing.T, s *snpScenario) {
			s.mutate = resign(func(r []byte) { binary.LittleEndian.PutUint32(r[0:], 6) })
		}, want: ear.CodeSNPReportMalformed},
		{name: "one byte too long", setup: func(t *testing.T, s *snpScenario) {
			s.mutate = func(t *testing.T, s *snpScenario, r []byte) []byte { return append(append([]byte(nil), r...), 0) }
		}, want: ear.CodeSNPReportMalformed},
		{name: "reserved byte 0x4C set", setup: func(t *testing.T, s *snpScenario) {
			s.mutate = resign(func(r []byte) { r[0x4C] = 1 })
		}, want: ear.CodeSNPReportMalformed},
		{name: "reserved byte 0x1A0-ish range set", setup: func(t *testing.T, s *snpScenario) {
			s.mutate = resign(func(r []byte) { r[0x19F] = 1 })
		}, want: ear.CodeSNPReportMalformed},
		{name: "mitigation vector set in a version 3 report", setup: func(t *testing.T, s *snpScenario) {
			s.mutate = resign(func(r []byte) { r[0x1F8] = 1 })
		}, want: ear.CodeSNPReportMalformed},
		{name: "reserved tail before the signature set", setup: func(t *testing.T, s *snpScenario) {
			s.mutate = resign(func(r []byte) { r[0x29F] = 1 })
		}, want: ear.CodeSNPReportMalformed},
		{name: "unsigned tail of the signature set", setup: func(t *testing.T, s *snpScenario) {
			s.mutate = noResign(func(r []byte) { r[0x49F] = 1 })
		}, want: ear.CodeSNPReportMalformed},
		{name: "signature algorithm 2", setup: func(t *testing.T, s *snpScenario) {
			s.mutate = resign(func(r []byte) { r[0x34] = 2 })
		}, want: ear.CodeSNPReportMalformed},
		{name: "guest policy reserved bit 17 clear", setup: func(t *testing.T, s *snpScenario) {
			s.report.Policy &^= fakeamd.PolicyReserved17
		}, want: ear.CodeSNPGuestPolicy},
		{name: "guest policy unknown bit 40", setup: func(t *testing.T, s *snpScenario) {
			s.report.Policy |= 1 << 40
		}, want: ear.CodeSNPGuestPolicy},
		{name: "SIGNING_KEY none", setup: func(t *testing.T, s *snpScenario) {
			s.mutate = func(t *testing.T, s *snpScenario, r []byte) []byte {
				r = append([]byte(nil), r...)
				r[0x48] = 7 << 2
				out, err := fakeamd.SignReport(r, s.pki.Keys.VCEK)
				if err != nil {
					t.Fatal(err)
				}
				return out
			}
		}, want: ear.CodeSNPReportMalformed},
		// 2. Chain and extensions.
		{name: "chain from an untrusted ARK", setup: func(t *testing.T, s *snpScenario) {
			other := alternate(t, s.pki.ProductLine)
			s.pki, s.certs = other, other.Certificates(s.key)
		}, want: ear.CodeSNPChainInvalid},
		{name: "certificates expired", setup: func(t *testing.T, s *snpScenario) {
			s.opts = func(o *verifier.Options) { o.Now = testNow.AddDate(30, 0, 0) }
		}, want: ear.CodeSNPCertExpired},
		{name: "certificate not yet valid", setup: func(t *testing.T, s *snpScenario) {
			s.opts = func(o *verifier.Options) { o.Now = testNow.Add(-2 * time.Hour) }
		}, want: ear.CodeSNPCertExpired},
		{name: "report says VLEK, evidence carries the VCEK", vcek: true, setup: func(t *testing.T, s *snpScenario) {
			s.report.SignerInfo.SigningKey = abi.VlekReportSigner
		}, want: ear.CodeSNPSigningKeyMismatch},
		{name: "report says VCEK, evidence carries the VLEK", vlek: true, setup: func(t *testing.T, s *snpScenario) {
			s.report.SignerInfo.SigningKey = abi.VcekReportSigner
		}, want: ear.CodeSNPSigningKeyMismatch},
		{name: "VCEK for another chip", vcek: true, setup: func(t *testing.T, s *snpScenario) {
			chip := s.pki.ChipID
			chip[0] ^= 0xff
			c, err := s.pki.NewVCEK(chip, s.pki.TCB)
			if err != nil {
				t.Fatal(err)
			}
			s.certs = [][]byte{c.Raw}
		}, want: ear.CodeSNPChipIDMismatch},
		{name: "endorsement key certificate for another TCB", setup: func(t *testing.T, s *snpScenario) {
			lower, _ := kds.ComposeTCBParts(kds.TCBParts{BlSpl: 3, SnpSpl: 22, UcodeSpl: 213})
			var err error
			if s.key == abi.VcekReportSigner {
				c, e := s.pki.NewVCEK(s.pki.ChipID, lower)
				s.certs, err = [][]byte{c.Raw}, e
			} else {
				c, e := s.pki.NewVLEK(lower)
				s.certs, err = [][]byte{c.Raw}, e
			}
			if err != nil {
				t.Fatal(err)
			}
		}, want: ear.CodeSNPTCBMismatch},
		{name: "VLEK missing from the evidence", vlek: true, setup: func(t *testing.T, s *snpScenario) { s.certs = nil }, want: ear.CodeSNPCertMissing},
		{name: "VCEK missing from a version 2 report's evidence", vcek: true, setup: func(t *testing.T, s *snpScenario) {
			s.certs, s.report.Version = nil, 2
		}, want: ear.CodeSNPCertMissing},
		{name: "VCEK missing from evidence and collateral", vcek: true, setup: func(t *testing.T, s *snpScenario) {
			s.certs = nil
			s.editSet = func(set collateral.Set) {
				delete(set, kds.VCEKCertURL(s.pki.ProductLine, s.pki.ChipID[:], s.pki.TCB))
			}
		}, want: ear.CodeCollateralUnavailable},
		{name: "unparsable certificate in the evidence", setup: func(t *testing.T, s *snpScenario) {
			s.certs = append(s.certs, []byte{0x30, 0x03, 0x02, 0x01, 0x01})
		}, want: ear.CodeSNPChainInvalid},
		{name: "non-AMD certificate in the evidence", setup: func(t *testing.T, s *snpScenario) {
			s.certs = append(s.certs, nonAMDCert(t))
		}, want: ear.CodeSNPChainInvalid},
		{name: "intermediate from the evidence that did not sign the endorsement key", setup: func(t *testing.T, s *snpScenario) {
			s.roots.ASK, s.roots.ASVK = nil, nil
			s.certs = append(s.certs, alternate(t, s.pki.ProductLine).CertificatesWithChain(s.key)[1])
		}, want: ear.CodeSNPChainInvalid},
		{name: "endorsement chain of another AMD PKI, only the ARK pinned", setup: func(t *testing.T, s *snpScenario) {
			// VCEK → ASK (VLEK → ASVK) and the report signature are all valid under the other
			// PKI: only the intermediate's link to the pinned ARK is broken.
			alt := alternate(t, s.pki.ProductLine)
			s.roots.ASK, s.roots.ASVK = nil, nil
			s.certs = alt.CertificatesWithChain(s.key)[:2]
			leafKey := alt.Keys.VCEK
			if s.key == abi.VlekReportSigner {
				leafKey = alt.Keys.VLEK
			}
			s.mutate = func(t *testing.T, s *snpScenario, r []byte) []byte {
				out, err := fakeamd.SignReport(r, leafKey)
				if err != nil {
					t.Fatal(err)
				}
				return out
			}
		}, want: ear.CodeSNPChainInvalid},
		// 3. Signature.
		{name: "MEASUREMENT byte flipped", setup: func(t *testing.T, s *snpScenario) {
			s.mutate = noResign(func(r []byte) { r[0x90] ^= 1 })
		}, want: ear.CodeSNPReportSignature},
		{name: "signature byte flipped", setup: func(t *testing.T, s *snpScenario) {
			s.mutate = noResign(func(r []byte) { r[0x2A0] ^= 1 })
		}, want: ear.CodeSNPReportSignature},
		{name: "signed by another key", setup: func(t *testing.T, s *snpScenario) {
			s.mutate = func(t *testing.T, s *snpScenario, r []byte) []byte {
				out, err := fakeamd.SignReport(r, alternate(t, s.pki.ProductLine).Keys.VCEK)
				if err != nil {
					t.Fatal(err)
				}
				return out
			}
		}, want: ear.CodeSNPReportSignature},
		// 4. CRL.
		{name: "CRL signature corrupt", setup: func(t *testing.T, s *snpScenario) { s.crl.CorruptSignature = true }, want: ear.CodeSNPCRLInvalid},
		{name: "CRL stale", setup: func(t *testing.T, s *snpScenario) { s.crl.NextUpdate = testNow.Add(-time.Minute) }, want: ear.CodeSNPCRLStale},
		{name: "CRL from the future", setup: func(t *testing.T, s *snpScenario) { s.crl.ThisUpdate = testNow.Add(time.Hour) }, want: ear.CodeSNPCRLStale},
		{name: "CRL signed by another ARK", setup: func(t *testing.T, s *snpScenario) {
			crl, err := alternate(t, s.pki.ProductLine).CRL(s.key, fakeamd.CRLOptions{})
			if err != nil {
				t.Fatal(err)
			}
			s.editSet = func(set collateral.Set) { set[kds.CrlLinkByKey(s.pki.ProductLine, s.key)].Body = crl }
		}, want: ear.CodeSNPCRLInvalid},
		{name: "CRL missing", setup: func(t *testing.T, s *snpScenario) {
			s.editSet = func(set collateral.Set) { delete(set, kds.CrlLinkByKey(s.pki.ProductLine, s.key)) }
		}, want: ear.CodeCollateralUnavailable},
		{name: "ASK revoked", vcek: true, setup: func(t *testing.T, s *snpScenario) {
			s.crl.Revoked = []*big.Int{s.pki.ASK.SerialNumber}
		}, want: ear.CodeSNPCertRevoked},
		{name: "VCEK revoked", vcek: true, setup: func(t *testing.T, s *snpScenario) {
			s.crl.Revoked = []*big.Int{s.pki.VCEK.SerialNumber}
		}, want: ear.CodeSNPCertRevoked},
		{name: "ASVK revoked", vlek: true, setup: func(t *testing.T, s *snpScenario) {
			s.crl.RevokedVLEK = []*big.Int{s.pki.ASVK.SerialNumber}
		}, want: ear.CodeSNPCertRevoked},
		{name: "VLEK revoked", vlek: true, setup: func(t *testing.T, s *snpScenario) {
			s.crl.RevokedVLEK = []*big.Int{s.pki.VLEK.SerialNumber}
		}, want: ear.CodeSNPCertRevoked},
		// 5. Guest policy.
		{name: "DEBUG", setup: func(t *testing.T, s *snpScenario) { s.report.Policy |= fakeamd.PolicyDebug }, want: ear.CodeSNPDebug},
		{name: "MIGRATE_MA", setup: func(t *testing.T, s *snpScenario) { s.report.Policy |= fakeamd.PolicyMigrateMA }, want: ear.CodeSNPMigrateMA},
		{name: "SMT allowed, policy forbids", setup: func(t *testing.T, s *snpScenario) {
			s.report.PlatformInfo &^= fakeamd.PlatformSMTEnabled
			s.policy = "  allow_smt: false\n"
		}, want: ear.CodeSNPSMT},
		{name: "ABI below the minimum", setup: func(t *testing.T, s *snpScenario) { s.policy = "  min_abi: \"1.51\"\n" }, want: ear.CodeSNPABI},
		// 6. VMPL.
		{name: "VMPL 1", setup: func(t *testing.T, s *snpScenario) { s.report.VMPL = 1 }, want: ear.CodeSNPVMPL},
		// 7. TCB.
		{name: "TCB below the floor", setup: func(t *testing.T, s *snpScenario) {
			tcb := kds.DecomposeTCBVersion(s.pki.TCB)
			s.policy = fmt.Sprintf("  tcb_floors: {%s: {bootloader: %d, snp: %d, microcode: %d}}\n", s.pki.ProductLine, tcb.BlSpl, tcb.SnpSpl+1, tcb.UcodeSpl)
		}, want: ear.CodeSNPTCBBelowFloor},
		{name: "committed TCB behind current", setup: func(t *testing.T, s *snpScenario) {
			lower, _ := kds.ComposeTCBParts(kds.TCBParts{BlSpl: 3, SnpSpl: 22, UcodeSpl: 213})
			s.report.CommittedTCB = lower
			s.policy = "  require_committed_tcb: true\n"
		}, want: ear.CodeSNPCommittedTCB},
		// 8. Reference values.
		{name: "MEASUREMENT", setup: func(t *testing.T, s *snpScenario) { s.policy = "  measurement: [" + strings.Repeat("ef", 48) + "]\n" }, want: ear.CodeSNPMeasurement},
		{name: "HOST_DATA", setup: func(t *testing.T, s *snpScenario) { s.policy = "  host_data: [" + strings.Repeat("01", 32) + "]\n" }, want: ear.CodeSNPHostData},
		{name: "ID_KEY_DIGEST", setup: func(t *testing.T, s *snpScenario) { s.policy = "  id_key_digest: [" + strings.Repeat("01", 48) + "]\n" }, want: ear.CodeSNPIDKeyDigest},
		{name: "AUTHOR_KEY_DIGEST", setup: func(t *testing.T, s *snpScenario) {
			s.policy = "  author_key_digest: [" + strings.Repeat("01", 48) + "]\n"
		}, want: ear.CodeSNPAuthorKeyDigest},
		{name: "FAMILY_ID", setup: func(t *testing.T, s *snpScenario) { s.policy = "  family_id: [" + strings.Repeat("01", 16) + "]\n" }, want: ear.CodeSNPFamilyID},
		{name: "IMAGE_ID", setup: func(t *testing.T, s *snpScenario) { s.policy = "  image_id: [" + strings.Repeat("01", 16) + "]\n" }, want: ear.CodeSNPImageID},
		{name: "GUEST_SVN below the minimum", setup: func(t *testing.T, s *snpScenario) { s.policy = "  min_guest_svn: 3\n" }, want: ear.CodeSNPGuestSVN},
		// 9. Nonce binding.
		{name: "another nonce", setup: func(t *testing.T, s *snpScenario) {
			s.opts = func(o *verifier.Options) { o.Nonce = newNonce(t) }
		}, want: ear.CodeNonceMismatch},
		{name: "REPORT_DATA flipped and re-signed", setup: func(t *testing.T, s *snpScenario) { s.report.ReportData[0] ^= 1 }, want: ear.CodeNonceMismatch},
		// 10. Platform info.
		{name: "TSME required and off", setup: func(t *testing.T, s *snpScenario) {
			s.report.PlatformInfo &^= fakeamd.PlatformTSMEEnabled
			s.policy = "  require_tsme: true\n"
		}, want: ear.CodeSNPPlatformInfo},
		{name: "unknown PLATFORM_INFO bit", setup: func(t *testing.T, s *snpScenario) { s.report.PlatformInfo |= 1 << 40 }, want: ear.CodeSNPPlatformInfo},
		{name: "SMT enabled on the platform, policy forbids", setup: func(t *testing.T, s *snpScenario) {
			s.report.Policy &^= fakeamd.PolicySMT
			s.policy = "  allow_smt: false\n"
		}, want: ear.CodeSNPSMT},
	}
	for _, key := range []abi.ReportSigner{abi.VcekReportSigner, abi.VlekReportSigner} {
		for _, tc := range cases {
			if (tc.vlek && key != abi.VlekReportSigner) || (tc.vcek && key != abi.VcekReportSigner) {
				continue
			}
			t.Run(fmt.Sprintf("%s/%s", key, tc.name), func(t *testing.T) {
				t.Parallel()
				s := newSNPScenario(t, "Milan", key)
				tc.setup(t, s)
				r := s.run(t)
				if r.Status != ear.StatusContraindicated || !r.HasFailure(tc.want) {
					t.Fatalf("want contraindicated with %s, got %s", tc.want, describe(r))
				}
			})
		}
	}
}

// allow_debug_unsafe accepts a DEBUG guest and caps the result at warning. (The real recorded
// Milan report under the default policy is covered by cmd/proofline's tests.)
func TestSNPAllowDebugUnsafe(t *testing.T) {
	s := newSNPScenario(t, "Milan", abi.VcekReportSigner)
	s.report.Policy |= fakeamd.PolicyDebug
	s.policy = "  allow_debug_unsafe: true\n"
	r := s.run(t)
	if r.Status != ear.StatusWarning || !r.HasWarning(ear.CodeUnsafeOption) {
		t.Fatalf("allow_debug_unsafe: want warning, got %s", describe(r))
	}
}

// nonAMDCert is a well-formed certificate that is not part of any AMD hierarchy.
func nonAMDCert(t *testing.T) []byte {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "example.com"}, NotBefore: testNow.Add(-time.Hour), NotAfter: testNow.Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

// Waiving the CRL never waives the chain or the signature.
func TestSNPSkipCollateralUnsafe(t *testing.T) {
	s := newSNPScenario(t, "Milan", abi.VcekReportSigner)
	s.policy = "  skip_collateral_unsafe: true\n"
	s.editSet = func(set collateral.Set) {
		for u := range set {
			delete(set, u)
		}
	}
	if r := s.run(t); r.Status != ear.StatusWarning || !r.HasWarning(ear.CodeUnsafeOption) {
		t.Fatalf("want warning with %s, got %s", ear.CodeUnsafeOption, describe(r))
	}
	s.mutate = func(t *testing.T, s *snpScenario, r []byte) []byte {
		r = append([]byte(nil), r...)
		r[0x90] ^= 1
		return r
	}
	if r := s.run(t); !r.HasFailure(ear.CodeSNPReportSignature) {
		t.Fatalf("a corrupted report passed with the CRL waived: %s", describe(r))
	}
}

// stale_grace_unsafe, built from the valid case: an AMD CRL an hour past its nextUpdate is
// snp_crl_stale without a grace and beyond one, and warning within one (collateral_stale_accepted
// with the reason, unsafe_option naming the option). A CRL from the future is never accepted,
// and the grace waives no revocation.
func TestSNPStaleGraceUnsafe(t *testing.T) {
	past := testNow.Add(-time.Hour)
	for _, key := range []abi.ReportSigner{abi.VcekReportSigner, abi.VlekReportSigner} {
		for _, g := range []struct {
			grace string
			ok    bool
		}{{"", false}, {"0s", false}, {"30m", false}, {"1h", true}, {"24h", true}} {
			t.Run(fmt.Sprintf("%s/grace %s", key, g.grace), func(t *testing.T) {
				s := newSNPScenario(t, "Genoa", key)
				s.crl.NextUpdate = past
				if g.grace != "" {
					s.policy = "  stale_grace_unsafe: " + g.grace + "\n"
				}
				r := s.run(t)
				if !g.ok {
					if r.Status != ear.StatusContraindicated || !r.HasFailure(ear.CodeSNPCRLStale) || r.HasWarning(ear.CodeCollateralStaleAccepted) {
						t.Fatalf("want %s, got %s", ear.CodeSNPCRLStale, describe(r))
					}
					if g.grace == "30m" && !strings.Contains(describe(r), "beyond stale_grace_unsafe of 30m0s") {
						t.Fatalf("the failure does not say the grace was exceeded: %s", describe(r))
					}
					return
				}
				if r.Status != ear.StatusWarning || !r.HasWarning(ear.CodeCollateralStaleAccepted) || !r.HasWarning(ear.CodeUnsafeOption) {
					t.Fatalf("want warning with %s and %s, got %s", ear.CodeCollateralStaleAccepted, ear.CodeUnsafeOption, describe(r))
				}
				for _, w := range r.Warnings {
					if w.Code == ear.CodeCollateralStaleAccepted && (w.Check != "snp.4" || !strings.Contains(w.Message, "the AMD CRL expired at "+past.Format(time.RFC3339)+", 1h0m0s before")) {
						t.Errorf("the warning does not say which document is how stale: %+v", w)
					}
					if w.Code == ear.CodeUnsafeOption && !strings.Contains(w.Message, "sev_snp.stale_grace_unsafe") {
						t.Errorf("unsafe_option does not name the option: %+v", w)
					}
				}
			})
		}
	}
	s := newSNPScenario(t, "Milan", abi.VcekReportSigner)
	s.policy = "  stale_grace_unsafe: 24h\n"
	s.crl.ThisUpdate = testNow.Add(time.Hour)
	if r := s.run(t); !r.HasFailure(ear.CodeSNPCRLStale) {
		t.Fatalf("a CRL from the future with a grace: %s", describe(r))
	}
	s = newSNPScenario(t, "Milan", abi.VcekReportSigner)
	s.policy = "  stale_grace_unsafe: 24h\n"
	s.crl.NextUpdate = past
	s.crl.Revoked = []*big.Int{s.pki.VCEK.SerialNumber}
	if r := s.run(t); r.Status != ear.StatusContraindicated || !r.HasFailure(ear.CodeSNPCertRevoked) {
		t.Fatalf("a revoked VCEK in a stale CRL within the grace: %s", describe(r))
	}
}
