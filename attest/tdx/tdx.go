// Package tdx collects Intel TDX quotes inside a trust domain (TD): the guest side of the
// evidence that verifier/tdx checks.
//
// Collect asks the kernel for a quote over a 64-byte REPORT_DATA through two interfaces, in order:
//
//  1. configfs-tsm, the kernel's vendor-neutral report interface (Linux 6.7+): write REPORT_DATA
//     to /sys/kernel/config/tsm/report/$entry/inblob, read the quote from outblob, and check that
//     provider says "tdx_guest". ABI: Documentation/ABI/testing/configfs-tsm in the Linux tree,
//     https://www.kernel.org/doc/Documentation/ABI/testing/configfs-tsm
//  2. the legacy /dev/tdx_guest device: TDX_CMD_GET_REPORT0 for a TDREPORT, then the GET_QUOTE
//     ioctl that the TDX guest kernels of Intel and the distributions shipped before configfs-tsm
//     (upstream Linux never merged it: there /dev/tdx_guest only gives TDREPORTs). The quote comes
//     from the host's quote generation service over the GHCI TDG.VP.VMCALL<GetQuote>, see the
//     Intel TDX Guest-Hypervisor Communication Interface (GHCI) specification, section
//     "TDG.VP.VMCALL<GetQuote>".
//
// Both interfaces are seams (Collector.TSM, Collector.OpenDevice) so that tests and the agent's
// simulated mode run without hardware (attest/attesttest/fakedevice).
//
// The quote format is Intel's "TDX DCAP Quoting Library API", appendix "Quote Format"
// (versions 4 and 5); this package reads only enough of it to check that the quote carries the
// REPORT_DATA it asked for. Authenticity is the verifier's job.
package tdx

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"strings"
	"syscall"

	"github.com/google/go-configfs-tsm/configfs/configfsi"
	"github.com/google/go-configfs-tsm/configfs/linuxtsm"
	"github.com/google/go-configfs-tsm/report"
	"github.com/google/go-tdx-guest/client"
	labi "github.com/google/go-tdx-guest/client/linuxabi"

	"github.com/proofline/proofline/attest"
)

// Default locations of the guest interfaces.
const (
	// TSMReportPath is the configfs-tsm report directory (configfs mounted at /sys/kernel/config).
	TSMReportPath = configfsi.TsmPrefix + "/report"
	// DevicePath is the legacy TDX guest device.
	DevicePath = "/dev/tdx_guest"
	// CCELPath is where Linux (6.4+) exposes the log area of the ACPI CCEL table: the TDX
	// confidential-computing event log of RTMR0–3 (UEFI 2.10 "EFI_CC_MEASUREMENT_PROTOCOL" and
	// ACPI 6.5 "CC Event Log ACPI Table").
	CCELPath = "/sys/firmware/acpi/tables/data/CCEL"
	// Provider is the configfs-tsm provider name of TDX guests.
	Provider = "tdx_guest"
)

// ErrUnavailable is wrapped by Collect's error when this machine has neither interface: it is
// not a TDX guest, configfs is not mounted, or the kernel lacks TDX guest support.
var ErrUnavailable = errors.New("no TDX guest interface found")

// Collector collects TDX quotes. The zero value uses the kernel's interfaces; set the fields to
// substitute fakes. A Collector is safe for concurrent use if its seams are.
type Collector struct {
	// TSM opens the configfs-tsm report interface. An error wrapping fs.ErrNotExist means the
	// interface is absent. Nil means the kernel's (linuxtsm.MakeClient).
	TSM func() (configfsi.Client, error)
	// OpenDevice opens the legacy guest device at path. An error wrapping fs.ErrNotExist means
	// the device is absent. Nil means go-tdx-guest's client.LinuxDevice.
	OpenDevice func(path string) (client.Device, error)
	// DevicePath is the legacy device; empty means DevicePath.
	DevicePath string
	// CCELPath is the CCEL event log; empty means CCELPath.
	CCELPath string
	// Logger receives why an interface was skipped; nil discards.
	Logger *slog.Logger
}

// Collect returns a TDX quote over reportData from the kernel's interfaces.
func Collect(ctx context.Context, reportData [64]byte) ([]byte, error) {
	return (&Collector{}).Collect(ctx, reportData)
}

// ReadCCEL returns the TDX CCEL event log from CCELPath.
func ReadCCEL() ([]byte, error) {
	return (&Collector{}).ReadCCEL()
}

// Collect returns a quote (version 4 or 5, as the platform's quoting enclave produces it) whose
// TD quote body carries reportData as REPORT_DATA. It tries configfs-tsm first and falls back
// to the legacy device when configfs-tsm is absent or fails; the error names what each
// interface said. Quote generation cannot be interrupted once the kernel has started it: ctx is
// checked before each attempt.
func (c *Collector) Collect(ctx context.Context, reportData [64]byte) ([]byte, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	log := c.logger()
	quote, tsmErr := c.viaTSM(reportData)
	if tsmErr == nil {
		log.Debug("TDX quote from configfs-tsm", "bytes", len(quote))
		return quote, nil
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	path := c.devicePath()
	if !errors.Is(tsmErr, fs.ErrNotExist) {
		log.Info("configfs-tsm did not give a TDX quote; trying the legacy device", "device", path, "error", tsmErr)
	}
	quote, devErr := c.viaDevice(path, reportData)
	if devErr == nil {
		log.Debug("TDX quote from the legacy device", "device", path, "bytes", len(quote))
		return quote, nil
	}
	if errors.Is(tsmErr, fs.ErrNotExist) && errors.Is(devErr, fs.ErrNotExist) {
		return nil, fmt.Errorf("%w: %s: %v; %s: %v; is this a TDX guest (a confidential VM on Intel TDX)? is configfs mounted (mount -t configfs none /sys/kernel/config)?",
			ErrUnavailable, TSMReportPath, tsmErr, path, devErr)
	}
	return nil, fmt.Errorf("no TDX quote: configfs-tsm: %w; legacy device %s: %w", tsmErr, path, devErr)
}

func (c *Collector) logger() *slog.Logger {
	if c.Logger != nil {
		return c.Logger
	}
	return slog.New(slog.DiscardHandler)
}

func (c *Collector) devicePath() string {
	if c.DevicePath != "" {
		return c.DevicePath
	}
	return DevicePath
}

// viaTSM gets the quote through configfs-tsm. TDX has no auxiliary blob and no privilege levels,
// so only inblob is written. The provider is checked after the fact (report.Get reads it last):
// on a machine of another vendor the outblob is that vendor's report, which is discarded.
func (c *Collector) viaTSM(reportData [64]byte) ([]byte, error) {
	open := c.TSM
	if open == nil {
		open = linuxtsm.MakeClient
	}
	cl, err := open()
	if err != nil {
		return nil, err
	}
	resp, err := report.Get(cl, &report.Request{InBlob: reportData[:]})
	if err != nil {
		return nil, fmt.Errorf("configfs-tsm report: %w", err)
	}
	if p := strings.TrimSpace(resp.Provider); p != Provider {
		return nil, fmt.Errorf("configfs-tsm provider is %q, not %q: this is not a TDX guest", p, Provider)
	}
	return checkQuote(resp.OutBlob, reportData)
}

// TDREPORT_STRUCT layout (Intel TDX Module ABI specification, "TDREPORT_STRUCT"): it starts with
// REPORTMACSTRUCT, whose REPORTDATA is at offset 128.
const tdReportDataOffset = 128

// viaDevice gets the quote through the legacy device: a TDREPORT for reportData
// (TDX_CMD_GET_REPORT0), then the quote for that TDREPORT (TDX_CMD_GET_QUOTE). It follows
// go-tdx-guest's client.GetRawQuote but checks the length the host returns, which that function
// trusts (a hostile host could make it slice past its buffer).
func (c *Collector) viaDevice(path string, reportData [64]byte) ([]byte, error) {
	open := c.OpenDevice
	if open == nil {
		open = openLinuxDevice
	}
	d, err := open(path)
	if err != nil {
		return nil, err
	}
	defer d.Close()

	var rreq labi.TdxReportReq
	rreq.ReportData = reportData
	res, err := d.Ioctl(labi.IocTdxGetReport, &rreq)
	if err != nil {
		return nil, fmt.Errorf("TDX_CMD_GET_REPORT0: %w", err)
	}
	if res != labi.TdxAttestSuccess {
		return nil, fmt.Errorf("TDX_CMD_GET_REPORT0 returned %d", res)
	}
	if !bytes.Equal(rreq.TdReport[tdReportDataOffset:tdReportDataOffset+64], reportData[:]) {
		return nil, errors.New("TDX_CMD_GET_REPORT0 returned a TDREPORT for another REPORT_DATA")
	}

	hdr := &labi.TdxQuoteHdr{Version: 1, InLen: labi.TdReportSize}
	copy(hdr.Data[:], rreq.TdReport[:])
	qreq := labi.TdxQuoteReq{Buffer: hdr, Length: labi.ReqBufSize}
	res, err = d.Ioctl(labi.IocTdxGetQuote, &qreq)
	if errors.Is(err, syscall.ENOTTY) || (err != nil && strings.Contains(err.Error(), "invalid ioctl")) {
		return nil, fmt.Errorf("TDX_CMD_GET_QUOTE is not supported by this kernel (upstream Linux gives quotes only through configfs-tsm: mount configfs at /sys/kernel/config): %w", err)
	}
	if err != nil {
		return nil, fmt.Errorf("TDX_CMD_GET_QUOTE: %w", err)
	}
	if res != labi.TdxAttestSuccess {
		return nil, fmt.Errorf("TDX_CMD_GET_QUOTE returned %d", res)
	}
	switch hdr.Status {
	case labi.GetQuoteSuccess:
	case labi.GetQuoteInFlight:
		return nil, errors.New("TDX_CMD_GET_QUOTE: the host is still generating the quote (GET_QUOTE_IN_FLIGHT); retry")
	case labi.GetQuoteServiceUnavailable:
		return nil, errors.New("TDX_CMD_GET_QUOTE: the host's quote generation service is unavailable (GET_QUOTE_SERVICE_UNAVAILABLE); check the QGS on the host")
	default:
		return nil, fmt.Errorf("TDX_CMD_GET_QUOTE: the host returned status %#x", hdr.Status)
	}
	if hdr.OutLen == 0 || int(hdr.OutLen) > len(hdr.Data) {
		return nil, fmt.Errorf("TDX_CMD_GET_QUOTE: the host returned a quote length of %d bytes (buffer %d)", hdr.OutLen, len(hdr.Data))
	}
	return checkQuote(bytes.Clone(hdr.Data[:hdr.OutLen]), reportData)
}

// openLinuxDevice opens path with go-tdx-guest's LinuxDevice. It checks that the path exists
// first because LinuxDevice.Open flattens the error and fs.ErrNotExist would be lost.
func openLinuxDevice(path string) (client.Device, error) {
	if _, err := os.Stat(path); err != nil {
		return nil, err
	}
	d := &client.LinuxDevice{}
	if err := d.Open(path); err != nil {
		if errors.Is(err, fs.ErrPermission) || strings.Contains(err.Error(), "permission denied") {
			return nil, fmt.Errorf("%w (run the agent as root, or give its user read-write access to %s)", err, path)
		}
		return nil, err
	}
	return d, nil
}

// Quote layout, "Quote Format" appendix of the TDX DCAP Quoting Library API: a 48-byte header
// (version u16 at 0, TEE type u32 at 4, 0x81 for TDX), then for v4 the 584-byte TD quote body,
// and for v5 a body descriptor (type u16, size u32) and the body (584 bytes for type 2, 648 for
// type 3). REPORT_DATA is at offset 520 of the body.
const (
	quoteHeaderSize     = 48
	quoteTEETypeTDX     = 0x81
	bodyReportDataOff   = 520
	bodySizeTDX10       = 584
	bodySizeTDX15       = 648
	bodyDescriptorBytes = 6
)

// reportDataOffset returns the offset of REPORT_DATA in a v4 or v5 TDX quote, after checking
// that the header and the whole body fit.
func reportDataOffset(q []byte) (int, error) {
	if len(q) < quoteHeaderSize+bodyDescriptorBytes {
		return 0, fmt.Errorf("the quote is %d bytes, too short for a TDX quote", len(q))
	}
	if tee := binary.LittleEndian.Uint32(q[4:]); tee != quoteTEETypeTDX {
		return 0, fmt.Errorf("the quote's TEE type is %#x, not TDX (%#x)", tee, quoteTEETypeTDX)
	}
	body, size := quoteHeaderSize, bodySizeTDX10
	switch v := binary.LittleEndian.Uint16(q); v {
	case 4:
	case 5:
		body = quoteHeaderSize + bodyDescriptorBytes
		switch t := binary.LittleEndian.Uint16(q[quoteHeaderSize:]); t {
		case 2:
		case 3:
			size = bodySizeTDX15
		default:
			return 0, fmt.Errorf("the v5 quote has body type %d, want 2 (TDX 1.0) or 3 (TDX 1.5)", t)
		}
		if n := binary.LittleEndian.Uint32(q[quoteHeaderSize+2:]); n != uint32(size) {
			return 0, fmt.Errorf("the v5 quote's body size is %d, want %d", n, size)
		}
	default:
		return 0, fmt.Errorf("quote version %d is not 4 or 5", v)
	}
	if len(q) < body+size {
		return 0, fmt.Errorf("the quote is %d bytes, too short for its %d-byte body", len(q), size)
	}
	return body + bodyReportDataOff, nil
}

// checkQuote checks that q is a TDX quote within the envelope's size limit that carries
// reportData, so that the agent never sends evidence the verifier must reject for its binding.
func checkQuote(q []byte, reportData [64]byte) ([]byte, error) {
	if len(q) > attest.MaxReportSize {
		return nil, fmt.Errorf("the quote is %d bytes, over the envelope's %d-byte limit", len(q), attest.MaxReportSize)
	}
	off, err := reportDataOffset(q)
	if err != nil {
		return nil, err
	}
	if !bytes.Equal(q[off:off+64], reportData[:]) {
		return nil, errors.New("the quote carries another REPORT_DATA than the one requested (is another process using the same report entry?)")
	}
	return q, nil
}

// ReadCCEL returns the CCEL event log area exactly as the kernel exposes it, trailing padding
// included (the envelope's event_logs.ccel). An error wraps fs.ErrNotExist when the firmware
// publishes no CCEL table or the kernel is older than 6.4; reading needs root.
func (c *Collector) ReadCCEL() ([]byte, error) {
	path := c.CCELPath
	if path == "" {
		path = CCELPath
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("TDX CCEL event log: %w", err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, attest.MaxEventLogSize+1))
	if err != nil {
		return nil, fmt.Errorf("TDX CCEL event log %s: %w", path, err)
	}
	switch {
	case len(data) > attest.MaxEventLogSize:
		return nil, fmt.Errorf("TDX CCEL event log %s is over the envelope's %d-byte limit", path, attest.MaxEventLogSize)
	case len(data) == 0:
		return nil, fmt.Errorf("TDX CCEL event log %s is empty", path)
	}
	return data, nil
}
