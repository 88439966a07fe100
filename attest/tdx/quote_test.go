package tdx

import (
	"bytes"
	"testing"
	"time"

	"github.com/proofline/proofline/attest/attesttest/fakeintel"
)

// checkQuote reads the quote the host returned: whatever the bytes, it never panics, and what it
// accepts carries the requested REPORT_DATA where the quote layout puts it.
func FuzzCheckQuote(f *testing.F) {
	pki, err := fakeintel.New(time.Now())
	if err != nil {
		f.Fatal(err)
	}
	var rd [64]byte
	copy(rd[:], "fuzzed report data")
	for _, v := range []int{4, 5} {
		o := fakeintel.DefaultQuoteOptions()
		o.Version, o.ReportData = v, rd
		q, err := pki.Quote(o)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(q)
		f.Add(q[:len(q)/2])
	}
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, q []byte) {
		got, err := checkQuote(q, rd)
		if err != nil {
			return
		}
		l, err := fakeintel.ParseLayout(got)
		if err != nil {
			// checkQuote does not need the signature data; the fake's parser does.
			return
		}
		if !bytes.Equal(got[l.ReportDataOffset:l.ReportDataOffset+64], rd[:]) {
			t.Fatal("accepted a quote whose REPORT_DATA is elsewhere")
		}
	})
}

// Versions 4 and 5 (both body types) put REPORT_DATA where the DCAP quote format says.
func TestReportDataOffset(t *testing.T) {
	pki, err := fakeintel.New(time.Now())
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range []int{4, 5} {
		o := fakeintel.DefaultQuoteOptions()
		o.Version = v
		q, err := pki.Quote(o)
		if err != nil {
			t.Fatal(err)
		}
		l, err := fakeintel.ParseLayout(q)
		if err != nil {
			t.Fatal(err)
		}
		off, err := reportDataOffset(q)
		if err != nil || off != l.ReportDataOffset {
			t.Errorf("v%d: offset %d, %v; want %d", v, off, err, l.ReportDataOffset)
		}
	}
}
