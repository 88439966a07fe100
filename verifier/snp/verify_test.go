package snp_test

import (
	"context"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"math/big"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/google/go-sev-guest/abi"
	"github.com/google/go-sev-guest/kds"

	"github.com/proofline/proofline/attest/attesttest/fakeamd"
	"github.com/proofline/proofline/verifier/collateral"
	"github.com/proofline/proofline/verifier/ear"
	"github.com/proofline/proofline/verifier/roots"
	"github.com/proofline/proofline/verifier/snp"
)

var now = time.Date(2026, 11, 3, 12, 0, 0, 0, time.UTC)

var pkis = sync.OnceValues(func() (map[string]*fakeamd.PKI, error) {
	out := map[string]*fakeamd.PKI{}
	for _, line := range []string{"Milan", "Genoa", "Turin"} {
		p, err := fakeamd.New(line, now)
		if err != nil {
			return nil, err
		}
		out[line] = p
	}
	return out, nil
})

func pki(t *testing.T, line string) *fakeamd.PKI {
	t.Helper()
	m, err := pkis()
	if err != nil {
		t.Fatal(err)
	}
	return m[line]
}

var oidFMCSPL = asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 3704, 1, 3, 9}

// reissue issues a VCEK or VLEK for the PKI's key whose AMD extensions are the default
// certificate's, edited: a certificate of the right chain with extensions fakeamd would not make.
func reissue(t *testing.T, p *fakeamd.PKI, key abi.ReportSigner, edit func([]pkix.Extension) []pkix.Extension) []byte {
	t.Helper()
	leaf, issuer, issuerKey, pub := p.VCEK, *p.ASK, p.Keys.ASK, p.Keys.VCEK.Public()
	if key == abi.VlekReportSigner {
		leaf, issuer, issuerKey, pub = p.VLEK, *p.ASVK, p.Keys.ASVK, p.Keys.VLEK.Public()
	}
	var exts []pkix.Extension
	for _, e := range leaf.Extensions {
		if len(e.Id) > 7 && e.Id[:7].Equal(asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 3704}) {
			exts = append(exts, e)
		}
	}
	issuer.SubjectKeyId = nil
	der, err := x509.CreateCertificate(rand.Reader, &x509.Certificate{
		SerialNumber:       big.NewInt(0),
		RawSubject:         leaf.RawSubject,
		NotBefore:          leaf.NotBefore,
		NotAfter:           leaf.NotAfter,
		SignatureAlgorithm: x509.SHA384WithRSAPSS,
		ExtraExtensions:    edit(exts),
	}, &issuer, pub, issuerKey)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

func setExt(oid asn1.ObjectIdentifier, value []byte) func([]pkix.Extension) []pkix.Extension {
	return func(exts []pkix.Extension) []pkix.Extension {
		out := slices.DeleteFunc(slices.Clone(exts), func(e pkix.Extension) bool { return e.Id.Equal(oid) })
		if value != nil {
			out = append(out, pkix.Extension{Id: oid, Value: value})
		}
		return out
	}
}

type scenario struct {
	p       *fakeamd.PKI
	report  fakeamd.ReportOptions
	certs   [][]byte
	editSet func(collateral.Set)
}

func newScenario(t *testing.T, line string, key abi.ReportSigner) *scenario {
	p := pki(t, line)
	s := &scenario{p: p, report: p.DefaultReportOptions(), certs: p.Certificates(key)}
	s.report.SignerInfo.SigningKey = key
	return s
}

func (s *scenario) run(t *testing.T) (*ear.Result, *ear.SNPClaims) {
	t.Helper()
	raw, err := s.p.Report(s.report)
	if err != nil {
		t.Fatal(err)
	}
	rs, err := s.p.Collateral(fakeamd.CRLOptions{})
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
	res := &ear.Result{}
	_, claims := snp.Verify(context.Background(), raw, s.certs, snp.Options{
		Now:        now,
		Roots:      map[string]*roots.AMDProduct{s.p.ProductLine: {Line: s.p.ProductLine, ARK: s.p.ARK, ASK: s.p.ASK, ASVK: s.p.ASVK}},
		Collateral: set,
	}, res)
	return res, claims
}

// TestVerifyTurin: Turin reports verify with Turin-layout TCBs, fmcSPL and the 8-byte hwID, from
// the evidence or from the Turin KDS URL, and claims decompose the TCB the Turin way.
func TestVerifyTurin(t *testing.T) {
	for _, key := range []abi.ReportSigner{abi.VcekReportSigner, abi.VlekReportSigner} {
		s := newScenario(t, "Turin", key)
		res, claims := s.run(t)
		if len(res.Failures) != 0 {
			t.Fatalf("%v: failures %+v", key, res.Failures)
		}
		want := ear.SNPTCB{Raw: "0xd500000016030201", FMC: 1, Bootloader: 2, TEE: 3, SNP: 22, Microcode: 213}
		if claims.ProductLine != "Turin" || claims.ReportedTCB != want || claims.CommittedTCB != want {
			t.Errorf("%v: claims line %q, REPORTED_TCB %+v, want %+v", key, claims.ProductLine, claims.ReportedTCB, want)
		}
	}

	s := newScenario(t, "Turin", abi.VcekReportSigner)
	s.certs = nil
	res, claims := s.run(t)
	const url = "https://kdsintf.amd.com/vcek/v1/Turin/0102030405060708?fmcSPL=1&blSPL=2&teeSPL=3&snpSPL=22&ucodeSPL=213"
	if len(res.Failures) != 0 || len(claims.Collateral) != 2 || claims.Collateral[0].URL != url {
		t.Fatalf("VCEK from the collateral: failures %+v, collateral %+v, want the VCEK from %s", res.Failures, claims.Collateral, url)
	}
	s.editSet = func(set collateral.Set) { delete(set, url) }
	if res, _ := s.run(t); !res.HasFailure(ear.CodeCollateralUnavailable) {
		t.Fatalf("VCEK missing at the Turin URL: %+v", res.Failures)
	}

	// On Turin the VCEK certifies CHIP_ID[0:8] only: the rest of CHIP_ID is not bound to it.
	s = newScenario(t, "Turin", abi.VcekReportSigner)
	s.report.ChipID[8] ^= 0xFF
	if res, _ := s.run(t); len(res.Failures) != 0 {
		t.Fatalf("CHIP_ID[8] changed: %+v", res.Failures)
	}
}

// TestVerifyExtensionFailures: the certificate binding checks of SEV-SNP check 2 per product line,
// each with its failure code.
func TestVerifyExtensionFailures(t *testing.T) {
	turinTCB := func(p fakeamd.TurinTCBParts) kds.TCBVersion { return fakeamd.ComposeTurinTCB(p) }
	d := fakeamd.DefaultTurinTCB
	otherFMC, otherBL := d, d
	otherFMC.FmcSpl++
	otherBL.BlSpl++
	intDER := func(v int) []byte {
		b, _ := asn1.Marshal(v)
		return b
	}
	for _, tc := range []struct {
		name  string
		line  string
		key   abi.ReportSigner
		setup func(t *testing.T, s *scenario)
		want  ear.Code
	}{
		{"Turin VCEK for another chip (CHIP_ID[0:8])", "Turin", abi.VcekReportSigner, func(t *testing.T, s *scenario) {
			chip := s.p.ChipID
			chip[7] ^= 0xFF
			c, err := s.p.NewVCEK(chip, s.p.TCB)
			if err != nil {
				t.Fatal(err)
			}
			s.certs = [][]byte{c.Raw}
		}, ear.CodeSNPChipIDMismatch},
		{"Turin report for another chip", "Turin", abi.VcekReportSigner, func(t *testing.T, s *scenario) {
			s.report.ChipID[0] ^= 0xFF
		}, ear.CodeSNPChipIDMismatch},
		{"Milan VCEK for another chip (CHIP_ID[63])", "Milan", abi.VcekReportSigner, func(t *testing.T, s *scenario) {
			s.report.ChipID[63] ^= 0xFF
		}, ear.CodeSNPChipIDMismatch},
		{"Turin VCEK for another FMC SPL", "Turin", abi.VcekReportSigner, func(t *testing.T, s *scenario) {
			c, err := s.p.NewVCEK(s.p.ChipID, turinTCB(otherFMC))
			if err != nil {
				t.Fatal(err)
			}
			s.certs = [][]byte{c.Raw}
		}, ear.CodeSNPTCBMismatch},
		{"Turin VLEK for another FMC SPL", "Turin", abi.VlekReportSigner, func(t *testing.T, s *scenario) {
			c, err := s.p.NewVLEK(turinTCB(otherFMC))
			if err != nil {
				t.Fatal(err)
			}
			s.certs = [][]byte{c.Raw}
		}, ear.CodeSNPTCBMismatch},
		{"Turin report for another boot loader SPL", "Turin", abi.VcekReportSigner, func(t *testing.T, s *scenario) {
			s.report.ReportedTCB = turinTCB(otherBL)
		}, ear.CodeSNPTCBMismatch},
		{"Turin VCEK composed the Milan way", "Turin", abi.VcekReportSigner, func(t *testing.T, s *scenario) {
			milanStyle, err := kds.ComposeTCBParts(kds.TCBParts{BlSpl: d.BlSpl, TeeSpl: d.TeeSpl, SnpSpl: d.SnpSpl, UcodeSpl: d.UcodeSpl})
			if err != nil {
				t.Fatal(err)
			}
			s.report.ReportedTCB = milanStyle
		}, ear.CodeSNPTCBMismatch},
		{"Milan VCEK with another reserved SPL", "Milan", abi.VcekReportSigner, func(t *testing.T, s *scenario) {
			s.certs = [][]byte{reissue(t, s.p, abi.VcekReportSigner, setExt(kds.OidSpl5, intDER(1)))}
		}, ear.CodeSNPTCBMismatch},
		{"Turin VCEK without fmcSPL", "Turin", abi.VcekReportSigner, func(t *testing.T, s *scenario) {
			s.certs = [][]byte{reissue(t, s.p, abi.VcekReportSigner, setExt(oidFMCSPL, nil))}
		}, ear.CodeSNPChainInvalid},
		{"Turin VLEK without fmcSPL", "Turin", abi.VlekReportSigner, func(t *testing.T, s *scenario) {
			s.certs = [][]byte{reissue(t, s.p, abi.VlekReportSigner, setExt(oidFMCSPL, nil))}
		}, ear.CodeSNPChainInvalid},
		{"Turin VCEK with a 64-byte hwID", "Turin", abi.VcekReportSigner, func(t *testing.T, s *scenario) {
			s.certs = [][]byte{reissue(t, s.p, abi.VcekReportSigner, setExt(kds.OidHwid, s.p.ChipID[:]))}
		}, ear.CodeSNPChainInvalid},
		{"Genoa VCEK with fmcSPL", "Genoa", abi.VcekReportSigner, func(t *testing.T, s *scenario) {
			s.certs = [][]byte{reissue(t, s.p, abi.VcekReportSigner, setExt(oidFMCSPL, intDER(0)))}
		}, ear.CodeSNPChainInvalid},
		{"VCEK with a cspID", "Milan", abi.VcekReportSigner, func(t *testing.T, s *scenario) {
			cspID, _ := asn1.MarshalWithParams("csp", "ia5")
			s.certs = [][]byte{reissue(t, s.p, abi.VcekReportSigner, setExt(kds.OidCspID, cspID))}
		}, ear.CodeSNPChainInvalid},
		{"VLEK without a cspID", "Turin", abi.VlekReportSigner, func(t *testing.T, s *scenario) {
			s.certs = [][]byte{reissue(t, s.p, abi.VlekReportSigner, setExt(kds.OidCspID, nil))}
		}, ear.CodeSNPChainInvalid},
		{"SPL as an OCTET STRING", "Turin", abi.VcekReportSigner, func(t *testing.T, s *scenario) {
			s.certs = [][]byte{reissue(t, s.p, abi.VcekReportSigner, setExt(kds.OidSnpSpl, []byte{0x04, 0x01, 22}))}
		}, ear.CodeSNPChainInvalid},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := newScenario(t, tc.line, tc.key)
			tc.setup(t, s)
			res, _ := s.run(t)
			if !res.HasFailure(tc.want) {
				t.Fatalf("want %s, got %+v", tc.want, res.Failures)
			}
			for _, f := range res.Failures {
				if f.Code != tc.want {
					t.Errorf("unexpected extra failure %+v", f)
				}
			}
		})
	}
}
