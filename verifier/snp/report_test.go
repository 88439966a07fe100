package snp

import (
	"bytes"
	"errors"
	"testing"

	"github.com/proofline/proofline/internal/fixture"
)

func TestParseReportReal(t *testing.T) {
	raw := fixture.Evidence(t, "real/snp-milan-v2/evidence.json").Report
	r, err := ParseReport(raw)
	if err != nil {
		t.Fatalf("ParseReport: %v", err)
	}
	if r.Version != 2 || len(r.ChipID) != 64 || !bytes.Equal(r.Signature, raw[signedSize:]) {
		t.Errorf("version %d, CHIP_ID %d bytes", r.Version, len(r.ChipID))
	}
	for _, bad := range [][]byte{nil, raw[:ReportSize-1], append(bytes.Clone(raw), 0)} {
		if _, err := ParseReport(bad); !errors.Is(err, ErrMalformed) {
			t.Errorf("%d bytes: %v, want ErrMalformed", len(bad), err)
		}
	}
}

// FuzzParseReport: ParseReport never panics, every error wraps ErrMalformed, and a parsed report
// keeps its structural invariants. Seeded with the real Milan v2 report and a few variants.
func FuzzParseReport(f *testing.F) {
	raw := fixture.Evidence(f, "real/snp-milan-v2/evidence.json").Report
	f.Add(raw)
	for _, edit := range []func(b []byte){
		func(b []byte) { b[0] = 3 },     // version 3
		func(b []byte) { b[0] = 5 },     // version 5
		func(b []byte) { b[0x48] = 4 },  // SIGNING_KEY VLEK
		func(b []byte) { b[0x1F8] = 1 }, // a reserved byte of v2
	} {
		b := bytes.Clone(raw)
		edit(b)
		f.Add(b)
	}
	f.Add(raw[:0x2A0])
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := ParseReport(b)
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("error %v does not wrap ErrMalformed", err)
			}
			return
		}
		if len(r.Raw) != ReportSize || len(r.Signature) != ReportSize-signedSize || len(r.ChipID) != 64 ||
			len(r.ReportData) != 64 || len(r.Measurement) != 48 || r.Version < 2 || r.Version > 5 {
			t.Fatal("parsed report breaks a structural invariant")
		}
		for _, line := range []string{"Milan", "Genoa", "Turin"} {
			_ = DecomposeTCB(r.ReportedTCB, line)
			_ = VCEKURL(line, r.ChipID, r.ReportedTCB)
		}
	})
}
