package snp

import (
	"bytes"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-sev-guest/abi"

	"github.com/proofline/proofline/internal/fixture"
)

func derInt(t *testing.T, v int) []byte {
	t.Helper()
	b, err := asn1.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func derIA5(t *testing.T, s string) []byte {
	t.Helper()
	b, err := asn1.MarshalWithParams(s, "ia5")
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// kdsExtensions returns valid KDS extensions for a product line and key, in AMD's order: those of
// a Milan or Genoa certificate, or, for Turin, with fmcSPL and an 8-byte hwID.
func kdsExtensions(t *testing.T, line string, key abi.ReportSigner) []pkix.Extension {
	t.Helper()
	name := line + "-B0"
	if key == abi.VlekReportSigner {
		name = line
	}
	exts := []pkix.Extension{
		{Id: oidStructVersion, Value: derInt(t, 0)},
		{Id: oidProductName, Value: derIA5(t, name)},
		{Id: oidBlSPL, Value: derInt(t, 2)},
		{Id: oidTeeSPL, Value: derInt(t, 3)},
		{Id: oidSpl4, Value: derInt(t, 0)},
		{Id: oidSpl5, Value: derInt(t, 0)},
		{Id: oidSpl6, Value: derInt(t, 0)},
		{Id: oidSpl7, Value: derInt(t, 0)},
		{Id: oidSNPSPL, Value: derInt(t, 22)},
		{Id: oidUcodeSPL, Value: derInt(t, 213)},
	}
	if line == "Turin" {
		exts = append(exts, pkix.Extension{Id: oidFMCSPL, Value: derInt(t, 1)})
	}
	if key == abi.VcekReportSigner {
		hwID := make([]byte, hwIDSize(line))
		for i := range hwID {
			hwID[i] = byte(i + 1)
		}
		exts = append(exts, pkix.Extension{Id: oidHWID, Value: hwID})
	} else {
		exts = append(exts, pkix.Extension{Id: oidCSPID, Value: derIA5(t, "csp")})
	}
	return exts
}

// set replaces (or appends) the extension with the OID; a nil value removes it.
func set(exts []pkix.Extension, oid asn1.ObjectIdentifier, value []byte) []pkix.Extension {
	out := slices.DeleteFunc(slices.Clone(exts), func(e pkix.Extension) bool { return e.Id.Equal(oid) })
	if value != nil {
		out = append(out, pkix.Extension{Id: oid, Value: value})
	}
	return out
}

// TestParseCertExtensionsRealMilanVCEK: the real Milan VCEK of testdata/real/snp-milan-v2 parses,
// and its hwID and TCB are the real report's CHIP_ID and REPORTED_TCB.
func TestParseCertExtensionsRealMilanVCEK(t *testing.T) {
	ev := fixture.Evidence(t, "real/snp-milan-v2/evidence.json")
	if len(ev.Certificates) != 1 {
		t.Fatalf("%d certificates in the real evidence, want the VCEK", len(ev.Certificates))
	}
	cert, err := x509.ParseCertificate(ev.Certificates[0])
	if err != nil {
		t.Fatal(err)
	}
	r, err := ParseReport(ev.Report)
	if err != nil {
		t.Fatal(err)
	}
	e, err := ParseCertExtensions(cert.Extensions, abi.VcekReportSigner, "Milan")
	if err != nil {
		t.Fatalf("ParseCertExtensions: %v", err)
	}
	if e.StructVersion != 0 || e.ProductName != "Milan-B0" || e.HasFMCSPL || e.CSPID != "" {
		t.Errorf("extensions %+v", e)
	}
	if want := (TCB{Bootloader: 2, TEE: 0, SNP: 5, Microcode: 68}); e.TCB() != want {
		t.Errorf("TCB %+v, want %+v", e.TCB(), want)
	}
	if !bytes.Equal(e.HWID, r.ChipID) {
		t.Errorf("hwID %x is not the report's CHIP_ID %x", e.HWID, r.ChipID)
	}
	if e.TCB() != DecomposeTCB(r.ReportedTCB, "Milan") {
		t.Errorf("TCB %+v is not the report's REPORTED_TCB %+v", e.TCB(), DecomposeTCB(r.ReportedTCB, "Milan"))
	}
	// The same certificate is not a VLEK, nor a Turin VCEK (64-byte hwID, no fmcSPL).
	if _, err := ParseCertExtensions(cert.Extensions, abi.VlekReportSigner, "Milan"); !errors.Is(err, ErrExtensions) {
		t.Errorf("as a VLEK: %v", err)
	}
	if _, err := ParseCertExtensions(cert.Extensions, abi.VcekReportSigner, "Turin"); !errors.Is(err, ErrExtensions) {
		t.Errorf("as a Turin VCEK: %v", err)
	}
}

func TestParseCertExtensionsValid(t *testing.T) {
	seq := func(i int) []byte { // 1, 2, …, i
		b := make([]byte, i)
		for j := range b {
			b[j] = byte(j + 1)
		}
		return b
	}
	octet := func(b []byte) []byte {
		der, err := asn1.Marshal(b)
		if err != nil {
			t.Fatal(err)
		}
		return der
	}
	for _, tc := range []struct {
		name  string
		line  string
		key   abi.ReportSigner
		edit  func([]pkix.Extension) []pkix.Extension
		tcb   TCB
		hwID  []byte
		cspID string
	}{
		{name: "Genoa VCEK", line: "Genoa", key: abi.VcekReportSigner, tcb: TCB{Bootloader: 2, TEE: 3, SNP: 22, Microcode: 213}, hwID: seq(64)},
		{name: "Turin VCEK with fmcSPL and an 8-byte hwID", line: "Turin", key: abi.VcekReportSigner,
			tcb: TCB{FMC: 1, Bootloader: 2, TEE: 3, SNP: 22, Microcode: 213}, hwID: seq(8)},
		{name: "Turin VCEK, structVersion 1, no spl4–spl7", line: "Turin", key: abi.VcekReportSigner,
			edit: func(e []pkix.Extension) []pkix.Extension {
				e = set(e, oidStructVersion, derInt(t, 1))
				for _, oid := range []asn1.ObjectIdentifier{oidSpl4, oidSpl5, oidSpl6, oidSpl7} {
					e = set(e, oid, nil)
				}
				return e
			},
			tcb: TCB{FMC: 1, Bootloader: 2, TEE: 3, SNP: 22, Microcode: 213}, hwID: seq(8)},
		{name: "Milan VLEK with cspID", line: "Milan", key: abi.VlekReportSigner, tcb: TCB{Bootloader: 2, TEE: 3, SNP: 22, Microcode: 213}, cspID: "csp"},
		{name: "Turin VLEK with fmcSPL", line: "Turin", key: abi.VlekReportSigner, tcb: TCB{FMC: 1, Bootloader: 2, TEE: 3, SNP: 22, Microcode: 213}, cspID: "csp"},
		{name: "hwID as a DER OCTET STRING", line: "Milan", key: abi.VcekReportSigner,
			edit: func(e []pkix.Extension) []pkix.Extension { return set(e, oidHWID, octet(seq(64))) },
			tcb:  TCB{Bootloader: 2, TEE: 3, SNP: 22, Microcode: 213}, hwID: seq(64)},
		{name: "Turin hwID as a DER OCTET STRING", line: "Turin", key: abi.VcekReportSigner,
			edit: func(e []pkix.Extension) []pkix.Extension { return set(e, oidHWID, octet(seq(8))) },
			tcb:  TCB{FMC: 1, Bootloader: 2, TEE: 3, SNP: 22, Microcode: 213}, hwID: seq(8)},
		{name: "non-AMD extensions are left to crypto/x509", line: "Milan", key: abi.VcekReportSigner,
			edit: func(e []pkix.Extension) []pkix.Extension {
				return append(e, pkix.Extension{Id: asn1.ObjectIdentifier{2, 5, 29, 35}, Value: []byte{0x30, 0x00}})
			},
			tcb: TCB{Bootloader: 2, TEE: 3, SNP: 22, Microcode: 213}, hwID: seq(64)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			exts := kdsExtensions(t, tc.line, tc.key)
			if tc.edit != nil {
				exts = tc.edit(exts)
			}
			e, err := ParseCertExtensions(exts, tc.key, tc.line)
			if err != nil {
				t.Fatalf("ParseCertExtensions: %v", err)
			}
			if e.TCB() != tc.tcb || !bytes.Equal(e.HWID, tc.hwID) || e.CSPID != tc.cspID || e.HasFMCSPL != (tc.line == "Turin") {
				t.Errorf("got %+v, want TCB %+v, hwID %x, cspID %q", e, tc.tcb, tc.hwID, tc.cspID)
			}
		})
	}
}

func TestParseCertExtensionsRejects(t *testing.T) {
	utf8, err := asn1.MarshalWithParams("Milan-B0", "utf8")
	if err != nil {
		t.Fatal(err)
	}
	printable, err := asn1.MarshalWithParams("Milan-B0", "printable")
	if err != nil {
		t.Fatal(err)
	}
	hwID := bytes.Repeat([]byte{7}, 64)
	for _, tc := range []struct {
		name string
		line string
		key  abi.ReportSigner
		edit func([]pkix.Extension) []pkix.Extension
		want string
	}{
		{"duplicate extension", "Milan", abi.VcekReportSigner, func(e []pkix.Extension) []pkix.Extension {
			return append(e, pkix.Extension{Id: oidBlSPL, Value: derInt(t, 2)})
		}, "appears twice"},
		{"duplicate hwID", "Milan", abi.VcekReportSigner, func(e []pkix.Extension) []pkix.Extension {
			return append(e, pkix.Extension{Id: oidHWID, Value: hwID})
		}, "appears twice"},
		{"SPL as an OCTET STRING", "Milan", abi.VcekReportSigner, func(e []pkix.Extension) []pkix.Extension {
			return set(e, oidSNPSPL, []byte{0x04, 0x01, 0x16})
		}, "snpSPL: not an ASN.1 INTEGER"},
		{"SPL as an ENUMERATED", "Milan", abi.VcekReportSigner, func(e []pkix.Extension) []pkix.Extension {
			return set(e, oidBlSPL, []byte{0x0A, 0x01, 0x02})
		}, "blSPL: not an ASN.1 INTEGER"},
		{"productName as a UTF8String", "Milan", abi.VcekReportSigner, func(e []pkix.Extension) []pkix.Extension {
			return set(e, oidProductName, utf8)
		}, "productName: not an ASN.1 IA5String"},
		{"productName as a PrintableString", "Milan", abi.VcekReportSigner, func(e []pkix.Extension) []pkix.Extension {
			return set(e, oidProductName, printable)
		}, "productName: not an ASN.1 IA5String"},
		{"cspID as an OCTET STRING", "Milan", abi.VlekReportSigner, func(e []pkix.Extension) []pkix.Extension {
			return set(e, oidCSPID, []byte{0x04, 0x03, 'c', 's', 'p'})
		}, "cspID: not an ASN.1 IA5String"},
		{"VCEK without hwID", "Milan", abi.VcekReportSigner, func(e []pkix.Extension) []pkix.Extension {
			return set(e, oidHWID, nil)
		}, "no hwID"},
		{"Turin VCEK without hwID", "Turin", abi.VcekReportSigner, func(e []pkix.Extension) []pkix.Extension {
			return set(e, oidHWID, nil)
		}, "no hwID"},
		{"VCEK with cspID", "Milan", abi.VcekReportSigner, func(e []pkix.Extension) []pkix.Extension {
			return set(e, oidCSPID, derIA5(t, "csp"))
		}, "carries cspID"},
		{"VLEK without cspID", "Milan", abi.VlekReportSigner, func(e []pkix.Extension) []pkix.Extension {
			return set(e, oidCSPID, nil)
		}, "no cspID"},
		{"VLEK with hwID", "Milan", abi.VlekReportSigner, func(e []pkix.Extension) []pkix.Extension {
			return set(e, oidHWID, hwID)
		}, "carries hwID"},
		{"empty cspID", "Genoa", abi.VlekReportSigner, func(e []pkix.Extension) []pkix.Extension {
			return set(e, oidCSPID, []byte{0x16, 0x00})
		}, "empty IA5String"},
		{"Milan hwID of 8 bytes", "Milan", abi.VcekReportSigner, func(e []pkix.Extension) []pkix.Extension {
			return set(e, oidHWID, hwID[:8])
		}, "hwID of a Milan VCEK"},
		{"Turin hwID of 64 bytes (go-sev-guest's model)", "Turin", abi.VcekReportSigner, func(e []pkix.Extension) []pkix.Extension {
			return set(e, oidHWID, hwID)
		}, "hwID of a Turin VCEK"},
		{"hwID OCTET STRING of the wrong size", "Genoa", abi.VcekReportSigner, func(e []pkix.Extension) []pkix.Extension {
			return set(e, oidHWID, append([]byte{0x04, 0x3F}, hwID[:63]...))
		}, "an OCTET STRING of 63 bytes"},
		{"Turin without fmcSPL", "Turin", abi.VcekReportSigner, func(e []pkix.Extension) []pkix.Extension {
			return set(e, oidFMCSPL, nil)
		}, "fmcSPL extension is missing"},
		{"Turin VLEK without fmcSPL", "Turin", abi.VlekReportSigner, func(e []pkix.Extension) []pkix.Extension {
			return set(e, oidFMCSPL, nil)
		}, "fmcSPL extension is missing"},
		{"Genoa with fmcSPL", "Genoa", abi.VcekReportSigner, func(e []pkix.Extension) []pkix.Extension {
			return set(e, oidFMCSPL, derInt(t, 1))
		}, "carries fmcSPL"},
		{"Milan without spl5", "Milan", abi.VcekReportSigner, func(e []pkix.Extension) []pkix.Extension {
			return set(e, oidSpl5, nil)
		}, "spl5 extension is missing"},
		{"no ucodeSPL", "Turin", abi.VcekReportSigner, func(e []pkix.Extension) []pkix.Extension {
			return set(e, oidUcodeSPL, nil)
		}, "ucodeSPL extension is missing"},
		{"no productName", "Milan", abi.VcekReportSigner, func(e []pkix.Extension) []pkix.Extension {
			return set(e, oidProductName, nil)
		}, "productName extension is missing"},
		{"no structVersion", "Milan", abi.VcekReportSigner, func(e []pkix.Extension) []pkix.Extension {
			return set(e, oidStructVersion, nil)
		}, "structVersion extension is missing"},
		{"structVersion 2", "Milan", abi.VcekReportSigner, func(e []pkix.Extension) []pkix.Extension {
			return set(e, oidStructVersion, derInt(t, 2))
		}, "structVersion 2 is not known"},
		{"SPL 256", "Milan", abi.VcekReportSigner, func(e []pkix.Extension) []pkix.Extension {
			return set(e, oidUcodeSPL, derInt(t, 256))
		}, "256 is not a security patch level"},
		{"negative SPL", "Milan", abi.VcekReportSigner, func(e []pkix.Extension) []pkix.Extension {
			return set(e, oidTeeSPL, derInt(t, -1))
		}, "-1 is not a security patch level"},
		{"non-minimal INTEGER", "Milan", abi.VcekReportSigner, func(e []pkix.Extension) []pkix.Extension {
			return set(e, oidTeeSPL, []byte{0x02, 0x02, 0x00, 0x03})
		}, "teeSPL: not a DER INTEGER"},
		{"bytes after the INTEGER", "Milan", abi.VcekReportSigner, func(e []pkix.Extension) []pkix.Extension {
			return set(e, oidTeeSPL, []byte{0x02, 0x01, 0x03, 0x00})
		}, "1 bytes after the INTEGER"},
		{"empty value", "Milan", abi.VcekReportSigner, func(e []pkix.Extension) []pkix.Extension {
			return set(e, oidSpl7, []byte{})
		}, "spl7: not an ASN.1 INTEGER"},
		{"unknown AMD extension", "Milan", abi.VcekReportSigner, func(e []pkix.Extension) []pkix.Extension {
			return append(e, pkix.Extension{Id: asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 3704, 1, 3, 10}, Value: derInt(t, 0)})
		}, "unknown AMD extension"},
		{"unknown product line", "Venice", abi.VcekReportSigner, nil, "unknown product line"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			line := tc.line
			if line == "Venice" {
				line = "Milan"
			}
			exts := kdsExtensions(t, line, tc.key)
			if tc.edit != nil {
				exts = tc.edit(exts)
			}
			_, err := ParseCertExtensions(exts, tc.key, tc.line)
			if !errors.Is(err, ErrExtensions) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("ParseCertExtensions = %v, want ErrExtensions with %q", err, tc.want)
			}
		})
	}
	if _, err := ParseCertExtensions(kdsExtensions(t, "Milan", abi.VcekReportSigner), abi.NoneReportSigner, "Milan"); !errors.Is(err, ErrExtensions) {
		t.Errorf("SIGNING_KEY none: %v", err)
	}
}
