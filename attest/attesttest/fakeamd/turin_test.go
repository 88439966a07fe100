package fakeamd_test

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/asn1"
	"fmt"
	"testing"

	"github.com/google/go-sev-guest/abi"
	"github.com/google/go-sev-guest/kds"

	"github.com/proofline/proofline/attest/attesttest/fakeamd"
	"github.com/proofline/proofline/verifier/collateral"
	"github.com/proofline/proofline/verifier/ear"
	"github.com/proofline/proofline/verifier/roots"
	"github.com/proofline/proofline/verifier/snp"
)

var oidFMCSPL = asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 3704, 1, 3, 9}

// wantTCB is the default TCB of a product line as the verifier decomposes it.
func wantTCB(line string) snp.TCB {
	if line == "Turin" {
		d := fakeamd.DefaultTurinTCB
		return snp.TCB{FMC: d.FmcSpl, Bootloader: d.BlSpl, TEE: d.TeeSpl, SNP: d.SnpSpl, Microcode: d.UcodeSpl}
	}
	d := fakeamd.DefaultTCB
	return snp.TCB{Bootloader: d.BlSpl, TEE: d.TeeSpl, SNP: d.SnpSpl, Microcode: d.UcodeSpl}
}

// verifyWithProject runs the project's SEV-SNP authenticity checks (verifier/snp) on a report with
// the PKI's roots and collateral.
func verifyWithProject(t *testing.T, p *fakeamd.PKI, report []byte, certs [][]byte) (*ear.Result, *ear.SNPClaims) {
	t.Helper()
	rs, err := p.Collateral(fakeamd.CRLOptions{})
	if err != nil {
		t.Fatal(err)
	}
	set := collateral.Set{}
	if err := set.Add(rs...); err != nil {
		t.Fatal(err)
	}
	res := &ear.Result{}
	_, claims := snp.Verify(context.Background(), report, certs, snp.Options{
		Now:        now,
		Roots:      map[string]*roots.AMDProduct{p.ProductLine: {Line: p.ProductLine, ARK: p.ARK, ASK: p.ASK, ASVK: p.ASVK}},
		Collateral: set,
	}, res)
	return res, claims
}

// TestProjectVerifierVerifies: VCEK- and VLEK-signed reports of every version verify with the
// project's verifier for every product line, Turin included (which go-sev-guest cannot check, see
// goSevGuestLines), with the certificate in the evidence or, for a VCEK and a report that names
// its product line (v3+), fetched from the collateral by the product line's VCEK URL.
func TestProjectVerifierVerifies(t *testing.T) {
	t.Parallel()
	for _, line := range productLines {
		for _, key := range []abi.ReportSigner{abi.VcekReportSigner, abi.VlekReportSigner} {
			for _, version := range []uint32{2, 3, 5} {
				for _, fetch := range []bool{false, true} {
					if fetch && (key != abi.VcekReportSigner || version < 3) {
						continue
					}
					t.Run(fmt.Sprintf("%s/%v/v%d/fetch=%v", line, key, version, fetch), func(t *testing.T) {
						t.Parallel()
						p := pki(t, line)
						r := report(t, p, func(o *fakeamd.ReportOptions) {
							o.Version = version
							o.SignerInfo.SigningKey = key
						})
						certs := p.Certificates(key)
						if fetch {
							certs = nil
						}
						res, claims := verifyWithProject(t, p, r, certs)
						if len(res.Failures) != 0 {
							t.Fatalf("failures: %+v", res.Failures)
						}
						got := snp.TCB{FMC: claims.ReportedTCB.FMC, Bootloader: claims.ReportedTCB.Bootloader,
							TEE: claims.ReportedTCB.TEE, SNP: claims.ReportedTCB.SNP, Microcode: claims.ReportedTCB.Microcode}
						if claims.ProductLine != line || got != wantTCB(line) {
							t.Errorf("claims: line %q, REPORTED_TCB %+v, want %q and %+v", claims.ProductLine, got, line, wantTCB(line))
						}
						if fetch {
							want := fakeamd.VCEKURL(line, p.ChipID[:], p.TCB)
							if len(claims.Collateral) != 2 || claims.Collateral[0].URL != want {
								t.Errorf("collateral %+v, want the VCEK from %s first", claims.Collateral, want)
							}
						}
					})
				}
			}
		}
	}
}

// TestTurinShapes: Turin reports use the Turin TCB_VERSION layout; Turin VCEKs carry fmcSPL and an
// 8-byte hwID (CHIP_ID[0:8]), VLEKs fmcSPL; the VCEK is served at the Turin KDS URL; the
// project's verifier reads all of it, and go-sev-guest v0.15.0 (still) cannot.
func TestTurinShapes(t *testing.T) {
	t.Parallel()
	p := pki(t, "Turin")

	// REPORTED_TCB at 0x180: FMC, boot loader, TEE, SNP, three reserved zeros, microcode.
	r := report(t, p, nil)
	if got, want := r[0x180:0x188], []byte{1, 2, 3, 22, 0, 0, 0, 213}; !bytes.Equal(got, want) {
		t.Errorf("REPORTED_TCB bytes %v, want %v", got, want)
	}
	if fakeamd.ComposeTurinTCB(fakeamd.DefaultTurinTCB) != p.TCB || fakeamd.DecomposeTurinTCB(p.TCB) != fakeamd.DefaultTurinTCB {
		t.Errorf("PKI TCB %#x does not round-trip DefaultTurinTCB", p.TCB)
	}

	ext := func(c *x509.Certificate, oid asn1.ObjectIdentifier) []byte {
		for _, e := range c.Extensions {
			if e.Id.Equal(oid) {
				return e.Value
			}
		}
		return nil
	}
	if got := ext(p.VCEK, kds.OidHwid); !bytes.Equal(got, p.ChipID[:8]) {
		t.Errorf("VCEK hwID %x, want the bare first 8 bytes of CHIP_ID %x", got, p.ChipID[:8])
	}
	for _, c := range []*x509.Certificate{p.VCEK, p.VLEK} {
		if got := ext(c, oidFMCSPL); !bytes.Equal(got, []byte{0x02, 0x01, 0x01}) {
			t.Errorf("%s fmcSPL %x, want INTEGER 1", c.Subject.CommonName, got)
		}
		if got := ext(c, kds.OidStructVersion); !bytes.Equal(got, []byte{0x02, 0x01, 0x01}) {
			t.Errorf("%s structVersion %x, want INTEGER 1", c.Subject.CommonName, got)
		}
	}
	if ext(p.VLEK, kds.OidHwid) != nil {
		t.Error("the VLEK carries hwID")
	}

	// The project's parser reads them.
	for _, key := range []abi.ReportSigner{abi.VcekReportSigner, abi.VlekReportSigner} {
		c := p.VCEK
		if key == abi.VlekReportSigner {
			c = p.VLEK
		}
		e, err := snp.ParseCertExtensions(c.Extensions, key, "Turin")
		if err != nil {
			t.Fatalf("%v: %v", key, err)
		}
		if e.TCB() != wantTCB("Turin") || !e.HasFMCSPL {
			t.Errorf("%v: TCB %+v, want %+v", key, e.TCB(), wantTCB("Turin"))
		}
	}
	// go-sev-guest v0.15.0 does not: when this starts to pass, revisit goSevGuestLines.
	if _, err := kds.VcekCertificateExtensions(p.VCEK); err == nil {
		t.Error("go-sev-guest now reads a Turin VCEK: consider cross-checking Turin with it")
	}

	// The KDS URL, spelled out, and the same from the project's verifier.
	const wantURL = "https://kdsintf.amd.com/vcek/v1/Turin/0102030405060708?fmcSPL=1&blSPL=2&teeSPL=3&snpSPL=22&ucodeSPL=213"
	if got := fakeamd.VCEKURL("Turin", p.ChipID[:], p.TCB); got != wantURL {
		t.Errorf("VCEKURL = %s, want %s", got, wantURL)
	}
	if got := snp.VCEKURL("Turin", p.ChipID[:], uint64(p.TCB)); got != wantURL {
		t.Errorf("snp.VCEKURL = %s, want %s", got, wantURL)
	}
	rs, err := p.Collateral(fakeamd.CRLOptions{})
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, r := range rs {
		found = found || (r.URL == wantURL && bytes.Equal(r.Body, p.VCEK.Raw))
	}
	if !found {
		t.Errorf("the collateral does not serve the VCEK at %s", wantURL)
	}

	// A VCEK for another chip and TCB is served at its own URL; bytes of CHIP_ID after the 8th are
	// not part of a Turin hwID.
	chip := p.ChipID
	chip[7] ^= 0xFF
	chip[8] ^= 0xFF
	other := fakeamd.ComposeTurinTCB(fakeamd.TurinTCBParts{FmcSpl: 9, BlSpl: 2, TeeSpl: 3, SnpSpl: 22, UcodeSpl: 213})
	vcek, err := p.NewVCEK(chip, other)
	if err != nil {
		t.Fatal(err)
	}
	if got := ext(vcek, kds.OidHwid); !bytes.Equal(got, chip[:8]) {
		t.Errorf("NewVCEK hwID %x, want %x", got, chip[:8])
	}
	resp, err := p.VCEKResponse(vcek)
	if err != nil {
		t.Fatal(err)
	}
	if want := "https://kdsintf.amd.com/vcek/v1/Turin/01020304050607f7?fmcSPL=9&blSPL=2&teeSPL=3&snpSPL=22&ucodeSPL=213"; resp.URL != want {
		t.Errorf("VCEKResponse URL %s, want %s", resp.URL, want)
	}
}
