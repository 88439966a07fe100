package snp_test

import (
	"bytes"
	"crypto/x509"
	"encoding/binary"
	"errors"
	"testing"
	"time"

	"github.com/google/go-sev-guest/abi"
	pb "github.com/google/go-sev-guest/proto/sevsnp"

	"github.com/proofline/proofline/attest"
	"github.com/proofline/proofline/attest/attesttest/fakeamd"
	"github.com/proofline/proofline/attest/attesttest/fakedevice"
	"github.com/proofline/proofline/attest/snp"
)

func table(entries ...abi.CertTableEntry) []byte {
	return (&abi.CertTable{Entries: entries}).Marshal()
}

// entry makes a table entry; go-sev-guest parses the GUID (its CertsFromProto takes any GUID
// string as an extra).
func entry(guid string, der []byte) abi.CertTableEntry {
	return abi.CertsFromProto(&pb.CertificateChain{Extras: map[string][]byte{guid: der}}).Entries[0]
}

func TestParseCertTable(t *testing.T) {
	p := platforms(t)
	vcek, ask, ark := p.AMD.VCEK.Raw, p.AMD.ASK.Raw, p.AMD.ARK.Raw
	platformInfo := make([]byte, 16)
	tooMany := make([]abi.CertTableEntry, attest.MaxCertificates+1)
	for i := range tooMany {
		tooMany[i] = entry(abi.VcekGUID, vcek)
	}
	pastEnd := table(entry(abi.VcekGUID, vcek))
	binary.LittleEndian.PutUint32(pastEnd[16:], 0xFFFFFFF0) // offset + length wraps in 32 bits
	for _, c := range []struct {
		name  string
		table []byte
		want  [][]byte
	}{
		{name: "VCEK, ASK, ARK", table: fakedevice.CertTable(p.AMD, abi.VcekReportSigner), want: [][]byte{vcek, ask, ark}},
		{name: "VLEK, ASVK, ARK", table: fakedevice.CertTable(p.AMD, abi.VlekReportSigner), want: [][]byte{p.AMD.VLEK.Raw, p.AMD.ASVK.Raw, ark}},
		{name: "other entries skipped", table: table(entry(abi.ExtraPlatformInfoGUID, platformInfo), entry(abi.VcekGUID, vcek)), want: [][]byte{vcek}},
		{name: "page padding after the table", table: append(table(entry(abi.VcekGUID, vcek)), make([]byte, 3000)...), want: [][]byte{vcek}},
		{name: "empty", table: nil},
		{name: "no terminator", table: table(entry(abi.VcekGUID, vcek))[:24]},
		{name: "entry past the end", table: pastEnd},
		{name: "not a certificate", table: table(entry(abi.VcekGUID, []byte("not DER")))},
		{name: "certificate with trailing bytes", table: table(entry(abi.ArkGUID, append(bytes.Clone(ark), 0)))},
		{name: "only platform info", table: table(entry(abi.ExtraPlatformInfoGUID, platformInfo))},
		{name: "too many", table: table(tooMany...)},
	} {
		t.Run(c.name, func(t *testing.T) {
			got, err := snp.ParseCertTable(c.table)
			if c.want == nil {
				if !errors.Is(err, snp.ErrCertTable) {
					t.Fatalf("want ErrCertTable, got %d certificates, %v", len(got), err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != len(c.want) {
				t.Fatalf("%d certificates, want %d", len(got), len(c.want))
			}
			for i := range got {
				if !bytes.Equal(got[i], c.want[i]) {
					t.Errorf("certificate %d differs", i)
				}
			}
		})
	}
}

// The certificate table comes from the untrusted host: whatever its bytes, parsing never
// panics, and what it accepts is a bounded list of DER certificates found inside the table.
func FuzzParseCertTable(f *testing.F) {
	p, err := fakeamd.New("Milan", time.Now())
	if err != nil {
		f.Fatal(err)
	}
	f.Add(fakedevice.CertTable(p, abi.VcekReportSigner))
	f.Add(table(entry(abi.ExtraPlatformInfoGUID, make([]byte, 16)), entry(abi.ArkGUID, p.ARK.Raw)))
	f.Add([]byte{})
	f.Add(make([]byte, 24))
	f.Fuzz(func(t *testing.T, data []byte) {
		certs, err := snp.ParseCertTable(data)
		if err != nil {
			return
		}
		if len(certs) == 0 || len(certs) > attest.MaxCertificates {
			t.Fatalf("%d certificates accepted", len(certs))
		}
		for _, c := range certs {
			if _, err := x509.ParseCertificate(c); err != nil || !bytes.Contains(data, c) {
				t.Fatal("accepted something that is not a certificate of the table")
			}
		}
	})
}
