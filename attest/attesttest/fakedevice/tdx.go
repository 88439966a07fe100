package fakedevice

import (
	"errors"
	"fmt"
	"os"
	"syscall"

	"github.com/google/go-configfs-tsm/configfs/configfsi"
	"github.com/google/go-configfs-tsm/configfs/faketsm"
	"github.com/google/go-tdx-guest/client"
	labi "github.com/google/go-tdx-guest/client/linuxabi"

	"github.com/proofline/proofline/attest/attesttest/fakeintel"
)

// TDX is a fake Intel TDX guest: its configfs-tsm interface (provider "tdx_guest") and its
// legacy /dev/tdx_guest device return quotes signed by PKI. Set the fields before use.
type TDX struct {
	// PKI signs the quotes.
	PKI *fakeintel.PKI
	// Quote is the template of every quote; REPORT_DATA and, through the legacy device, the TD
	// fields of the TDREPORT replace its own.
	Quote fakeintel.QuoteOptions

	counter
	tsm *tsm
}

// NewTDX returns a fake TD whose quotes are fakeintel.DefaultQuoteOptions signed by pki.
func NewTDX(pki *fakeintel.PKI) *TDX {
	f := &TDX{PKI: pki, Quote: fakeintel.DefaultQuoteOptions()}
	f.tsm = newTSM("tdx_guest", 0, f.readAttr, func(_ *faketsm.ReportEntry, attr string, _ []byte) error {
		if attr != "inblob" {
			return fmt.Errorf("%s: TDX has no such attribute: %w", attr, os.ErrNotExist)
		}
		return nil
	})
	return f
}

// TSM opens the fake's configfs-tsm interface; it has the signature of tdx.Collector.TSM.
func (f *TDX) TSM() (configfsi.Client, error) { return f.tsm, nil }

// OpenDevice opens the fake's legacy device; it has the signature of tdx.Collector.OpenDevice.
func (f *TDX) OpenDevice(path string) (client.Device, error) {
	d := &tdxDevice{f: f}
	if err := d.Open(path); err != nil {
		return nil, err
	}
	return d, nil
}

// readAttr serves the entry's read-only attributes. Like Linux's tdx-guest driver, outblob
// needs exactly 64 bytes of inblob (tdx_report_new returns EINVAL otherwise).
func (f *TDX) readAttr(e *faketsm.ReportEntry, attr string) ([]byte, error) {
	switch attr {
	case "outblob":
		in := inblob(e)
		if len(in) != 64 {
			return nil, syscall.EINVAL
		}
		o := f.Quote
		copy(o.ReportData[:], in)
		q, err := f.PKI.Quote(o)
		if err != nil {
			return nil, err
		}
		f.counter.tsm.Add(1)
		return q, nil
	case "auxblob":
		return nil, nil
	}
	return nil, os.ErrNotExist
}

// TDREPORT_STRUCT (Intel TDX Module ABI specification): REPORTMACSTRUCT (256 bytes; REPORTTYPE
// at 0, REPORTDATA at 128), TEE_TCB_INFO (239) and 17 reserved bytes, then TDINFO_STRUCT at 512:
// ATTRIBUTES 8, XFAM 8, MRTD 48, MRCONFIGID 48, MROWNER 48, MROWNERCONFIG 48, RTMR0–3 4×48.
const (
	tdReportData    = 128
	tdInfo          = 512
	tdAttributes    = tdInfo
	tdXfam          = tdInfo + 8
	tdMrTd          = tdInfo + 16
	tdMrConfigID    = tdInfo + 64
	tdMrOwner       = tdInfo + 112
	tdMrOwnerConfig = tdInfo + 160
	tdRtmrs         = tdInfo + 208
	reportTypeTDX   = 0x81
	tdQuoteHdrInLen = labi.TdReportSize
	tdQuoteHdrVer   = 1
)

// tdReport is the TDREPORT the TDX module would produce for reportData (without a valid MAC:
// only the host's quoting enclave checks it, and the fake's trusts it).
func (f *TDX) tdReport(reportData [64]byte) [labi.TdReportSize]byte {
	var r [labi.TdReportSize]byte
	r[0] = reportTypeTDX
	copy(r[tdReportData:], reportData[:])
	copy(r[tdAttributes:], f.Quote.TdAttributes[:])
	copy(r[tdXfam:], f.Quote.Xfam[:])
	copy(r[tdMrTd:], f.Quote.MrTd[:])
	copy(r[tdMrConfigID:], f.Quote.MrConfigID[:])
	copy(r[tdMrOwner:], f.Quote.MrOwner[:])
	copy(r[tdMrOwnerConfig:], f.Quote.MrOwnerConfig[:])
	for i, rtmr := range f.Quote.Rtmrs {
		copy(r[tdRtmrs+48*i:], rtmr[:])
	}
	return r
}

// quoteFor is the host's quoting enclave: it turns a TDREPORT into a quote, taking the TD's
// fields from the TDREPORT and the rest from the template.
func (f *TDX) quoteFor(r []byte) ([]byte, error) {
	if r[0] != reportTypeTDX {
		return nil, errors.New("not a TDREPORT")
	}
	o := f.Quote
	copy(o.ReportData[:], r[tdReportData:])
	copy(o.TdAttributes[:], r[tdAttributes:])
	copy(o.Xfam[:], r[tdXfam:])
	copy(o.MrTd[:], r[tdMrTd:])
	copy(o.MrConfigID[:], r[tdMrConfigID:])
	copy(o.MrOwner[:], r[tdMrOwner:])
	copy(o.MrOwnerConfig[:], r[tdMrOwnerConfig:])
	for i := range o.Rtmrs {
		copy(o.Rtmrs[i][:], r[tdRtmrs+48*i:])
	}
	return f.PKI.Quote(o)
}

// tdxDevice is the legacy /dev/tdx_guest: TDX_CMD_GET_REPORT0 and the GET_QUOTE ioctl of the
// pre-configfs-tsm TDX guest kernels, as go-tdx-guest's client drives them.
type tdxDevice struct {
	device
	f *TDX
}

func (d *tdxDevice) Ioctl(command uintptr, arg any) (uintptr, error) {
	if err := d.checkOpen(); err != nil {
		return 0, err
	}
	switch command {
	case labi.IocTdxGetReport:
		req, ok := arg.(*labi.TdxReportReq)
		if !ok {
			return 0, syscall.EINVAL
		}
		req.TdReport = d.f.tdReport(req.ReportData)
		return labi.TdxAttestSuccess, nil
	case labi.IocTdxGetQuote:
		req, ok := arg.(*labi.TdxQuoteReq)
		if !ok {
			return 0, syscall.EINVAL
		}
		hdr, ok := req.Buffer.(*labi.TdxQuoteHdr)
		if !ok || hdr.Version != tdQuoteHdrVer || hdr.InLen != tdQuoteHdrInLen || req.Length == 0 {
			return 0, syscall.EINVAL
		}
		q, err := d.f.quoteFor(hdr.Data[:labi.TdReportSize])
		if err != nil || len(q) > len(hdr.Data) {
			hdr.Status = labi.GetQuoteError
			return labi.TdxAttestSuccess, nil
		}
		clear(hdr.Data[:])
		copy(hdr.Data[:], q)
		hdr.OutLen = uint32(len(q))
		hdr.Status = labi.GetQuoteSuccess
		d.f.counter.device.Add(1)
		return labi.TdxAttestSuccess, nil
	}
	return 0, syscall.ENOTTY
}

var _ client.Device = (*tdxDevice)(nil)
