// Package snp collects AMD SEV-SNP attestation reports inside a guest: the guest side of the
// evidence that verifier/snp checks.
//
// Collect asks the kernel for an ATTESTATION_REPORT over a 64-byte REPORT_DATA, with the
// certificate table the host provides (VCEK or VLEK, usually ASK and ARK), through two
// interfaces, in order:
//
//  1. configfs-tsm (Linux 6.7+): write REPORT_DATA to /sys/kernel/config/tsm/report/$entry/inblob
//     (and the VMPL to privlevel when asked), read the report from outblob and the host's
//     certificate table from auxblob, and check that provider says "sev_guest". ABI:
//     Documentation/ABI/testing/configfs-tsm in the Linux tree,
//     https://www.kernel.org/doc/Documentation/ABI/testing/configfs-tsm
//  2. the legacy /dev/sev-guest device: SNP_GET_EXT_REPORT, which returns the report and the
//     certificate table, falling back to SNP_GET_REPORT (no certificates) when the extended
//     request fails. Documentation/virt/coco/sev-guest.rst in the Linux tree.
//
// The report is the SEV-SNP Firmware ABI specification's ATTESTATION_REPORT (AMD doc 56860,
// "MSG_REPORT_RSP" and "ATTESTATION_REPORT Structure"); the certificate table is the GHCB
// specification's (AMD doc 56421, "SNP Extended Guest Request", the table of GUID, offset and
// length entries ended by an all-zero entry).
//
// Both interfaces are seams (Collector.TSM, Collector.OpenDevice) so that tests and the agent's
// simulated mode run without hardware (attest/attesttest/fakedevice).
package snp

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"strings"

	"github.com/google/go-configfs-tsm/configfs/configfsi"
	"github.com/google/go-configfs-tsm/configfs/linuxtsm"
	"github.com/google/go-configfs-tsm/report"
	"github.com/google/go-sev-guest/abi"
	"github.com/google/go-sev-guest/client"
	labi "github.com/google/go-sev-guest/client/linuxabi"
)

// Default locations of the guest interfaces.
const (
	// TSMReportPath is the configfs-tsm report directory (configfs mounted at /sys/kernel/config).
	TSMReportPath = configfsi.TsmPrefix + "/report"
	// DevicePath is the legacy SEV guest device.
	DevicePath = "/dev/sev-guest"
	// Provider is the configfs-tsm provider name of SEV-SNP guests.
	Provider = "sev_guest"
)

// ErrUnavailable is wrapped by Collect's error when this machine has neither interface: it is
// not an SEV-SNP guest, configfs is not mounted, or the kernel lacks the sev-guest driver.
var ErrUnavailable = errors.New("no SEV-SNP guest interface found")

// Offsets in the ATTESTATION_REPORT (Firmware ABI, "ATTESTATION_REPORT Structure").
const (
	offVMPL       = 0x30
	offReportData = 0x50
)

// Collector collects SEV-SNP reports. The zero value uses the kernel's interfaces; set the
// fields to substitute fakes. A Collector is safe for concurrent use if its seams are.
type Collector struct {
	// TSM opens the configfs-tsm report interface. An error wrapping fs.ErrNotExist means the
	// interface is absent. Nil means the kernel's (linuxtsm.MakeClient).
	TSM func() (configfsi.Client, error)
	// OpenDevice opens the legacy guest device at path. An error wrapping fs.ErrNotExist means
	// the device is absent. Nil means go-sev-guest's client.LinuxDevice, which waits 2 s between
	// two commands (its own rate limit), so a report with certificates takes 2 s there.
	OpenDevice func(path string) (client.Device, error)
	// DevicePath is the legacy device; empty means DevicePath.
	DevicePath string
	// VMPL is the privilege level to report at. Nil leaves the kernel's default through
	// configfs-tsm and asks for VMPL 0 through the device. A guest under an SVSM runs at a VMPL
	// above 0 and must set it (configfs-tsm's privlevel_floor says which).
	VMPL *uint
	// Logger receives why an interface or the host's certificates were skipped; nil discards.
	Logger *slog.Logger
}

// Collect returns an SEV-SNP report over reportData and the DER certificates of the host's
// certificate table (possibly none) from the kernel's interfaces.
func Collect(ctx context.Context, reportData [64]byte) (report []byte, certs [][]byte, err error) {
	return (&Collector{}).Collect(ctx, reportData)
}

// Collect returns an ATTESTATION_REPORT (abi.ReportSize bytes) whose REPORT_DATA is reportData,
// and the DER certificates of the host's certificate table. A missing or malformed table is not
// an error: it is logged and no certificates are returned, and the verifier then needs the VCEK
// or VLEK from AMD's KDS (recorded collateral). It tries configfs-tsm first and falls back to the
// legacy device when configfs-tsm is absent or fails; the error names what each interface said.
// ctx is checked before each attempt.
func (c *Collector) Collect(ctx context.Context, reportData [64]byte) ([]byte, [][]byte, error) {
	if err := ctx.Err(); err != nil {
		return nil, nil, err
	}
	log := c.logger()
	rep, table, tsmErr := c.viaTSM(reportData)
	if tsmErr == nil {
		log.Debug("SEV-SNP report from configfs-tsm", "certificate_table_bytes", len(table))
		return rep, c.certificates(table, "configfs-tsm auxblob"), nil
	}
	if err := ctx.Err(); err != nil {
		return nil, nil, err
	}
	path := c.devicePath()
	if !errors.Is(tsmErr, fs.ErrNotExist) {
		log.Info("configfs-tsm did not give an SEV-SNP report; trying the legacy device", "device", path, "error", tsmErr)
	}
	rep, table, devErr := c.viaDevice(path, reportData)
	if devErr == nil {
		log.Debug("SEV-SNP report from the legacy device", "device", path, "certificate_table_bytes", len(table))
		return rep, c.certificates(table, path+" extended report"), nil
	}
	if errors.Is(tsmErr, fs.ErrNotExist) && errors.Is(devErr, fs.ErrNotExist) {
		return nil, nil, fmt.Errorf("%w: %s: %v; %s: %v; is this an SEV-SNP guest (a confidential VM on AMD SEV-SNP)? is configfs mounted (mount -t configfs none /sys/kernel/config)?",
			ErrUnavailable, TSMReportPath, tsmErr, path, devErr)
	}
	return nil, nil, fmt.Errorf("no SEV-SNP report: configfs-tsm: %w; legacy device %s: %w", tsmErr, path, devErr)
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

// certificates parses the host's table, logging and dropping it when it is malformed: the
// report stays good evidence, and the verifier looks the endorsement key up itself.
func (c *Collector) certificates(table []byte, source string) [][]byte {
	if len(table) == 0 {
		c.logger().Info("the host provided no SEV-SNP certificates; the verifier needs the VCEK or VLEK from AMD KDS (recorded collateral)", "source", source)
		return nil
	}
	certs, err := ParseCertTable(table)
	if err != nil {
		c.logger().Warn("ignoring the host's SEV-SNP certificate table; the verifier needs the VCEK or VLEK from AMD KDS (recorded collateral)", "source", source, "error", err)
		return nil
	}
	return certs
}

// viaTSM gets the report and the certificate table through configfs-tsm. The provider is
// checked after the fact (report.Get reads it last): on a machine of another vendor the outblob
// is that vendor's report, which is discarded.
func (c *Collector) viaTSM(reportData [64]byte) ([]byte, []byte, error) {
	open := c.TSM
	if open == nil {
		open = linuxtsm.MakeClient
	}
	cl, err := open()
	if err != nil {
		return nil, nil, err
	}
	req := &report.Request{InBlob: reportData[:], GetAuxBlob: true}
	if c.VMPL != nil {
		req.Privilege = &report.Privilege{Level: *c.VMPL}
	}
	resp, err := report.Get(cl, req)
	if err != nil {
		return nil, nil, fmt.Errorf("configfs-tsm report: %w", err)
	}
	if p := strings.TrimSpace(resp.Provider); p != Provider {
		return nil, nil, fmt.Errorf("configfs-tsm provider is %q, not %q: this is not an SEV-SNP guest", p, Provider)
	}
	rep, err := checkReport(resp.OutBlob, reportData, c.VMPL)
	if err != nil {
		return nil, nil, err
	}
	return rep, resp.AuxBlob, nil
}

// maxCertTable bounds the certificate buffer the guest hands the host. Linux refuses more than
// SEV_FW_BLOB_MAX_SIZE (16 KiB, include/uapi/linux/psp-sev.h); a real table (VCEK, ASK, ARK) is
// about 5 KiB. Without a bound a hostile host could ask the guest to allocate 4 GiB.
const maxCertTable = 64 << 10

// pageSize is the granule of the certificate buffer: the kernel requires a page-aligned length.
const pageSize = 4096

// viaDevice gets the report through the legacy device: SNP_GET_EXT_REPORT with no certificate
// buffer first (the host answers with the buffer length it needs, or with the report when it has
// no certificates), then with a buffer of that length. It follows go-sev-guest's
// LinuxIoctlQuoteProvider but bounds the length the host asks for and needs one command fewer
// when the host has no certificates. If the extended request fails, it falls back to
// SNP_GET_REPORT.
func (c *Collector) viaDevice(path string, reportData [64]byte) ([]byte, []byte, error) {
	open := c.OpenDevice
	if open == nil {
		open = openLinuxDevice
	}
	d, err := open(path)
	if err != nil {
		return nil, nil, err
	}
	defer d.Close()
	vmpl := uint32(0)
	if c.VMPL != nil {
		vmpl = uint32(*c.VMPL)
	}
	want := uint(vmpl)

	rep, need, extErr := extendedReport(d, reportData, vmpl, nil)
	if extErr == nil && need == 0 {
		rep, err := checkReport(rep, reportData, &want)
		return rep, nil, err
	}
	if extErr == nil {
		if need > maxCertTable {
			extErr = fmt.Errorf("the host asks for a %d-byte certificate buffer, over the %d-byte limit", need, maxCertTable)
		} else {
			buf := make([]byte, need)
			var got uint32
			rep, got, extErr = extendedReport(d, reportData, vmpl, buf)
			if extErr == nil && got != 0 {
				extErr = fmt.Errorf("the host asked for a %d-byte certificate buffer, then for %d bytes", need, got)
			}
			if extErr == nil {
				rep, err := checkReport(rep, reportData, &want)
				return rep, buf, err
			}
		}
	}
	c.logger().Info("SNP_GET_EXT_REPORT failed; asking for a report without certificates", "device", path, "error", extErr)
	rep, err = plainReport(d, reportData, vmpl)
	if err != nil {
		return nil, nil, fmt.Errorf("SNP_GET_EXT_REPORT: %w; SNP_GET_REPORT: %w", extErr, err)
	}
	rep, err = checkReport(rep, reportData, &want)
	return rep, nil, err
}

// extendedReport sends SNP_GET_EXT_REPORT with certs as the certificate buffer. When the host
// needs a larger buffer it returns no report and the page-aligned length it needs.
func extendedReport(d client.Device, reportData [64]byte, vmpl uint32, certs []byte) (rep []byte, need uint32, err error) {
	var rsp labi.SnpReportRespABI
	req := labi.SnpExtendedReportReq{
		Data:        labi.SnpReportReqABI{ReportData: reportData, Vmpl: vmpl},
		Certs:       certs,
		CertsLength: uint32(len(certs)),
	}
	if err := message(d, labi.IocSnpGetExtendedReport, &labi.SnpUserGuestRequest{ReqData: &req, RespData: &rsp}); err != nil {
		var fw *abi.SevFirmwareErr
		if errors.As(err, &fw) && fw.Status == abi.GuestRequestInvalidLength {
			if req.CertsLength <= uint32(len(certs)) || req.CertsLength%pageSize != 0 {
				return nil, 0, fmt.Errorf("the host asks for a certificate buffer of %d bytes (had %d), which is not a larger whole number of pages", req.CertsLength, len(certs))
			}
			return nil, req.CertsLength, nil
		}
		return nil, 0, err
	}
	rep, err = reportFrom(&rsp)
	return rep, 0, err
}

// plainReport sends SNP_GET_REPORT.
func plainReport(d client.Device, reportData [64]byte, vmpl uint32) ([]byte, error) {
	var rsp labi.SnpReportRespABI
	req := labi.SnpReportReqABI{ReportData: reportData, Vmpl: vmpl}
	if err := message(d, labi.IocSnpGetReport, &labi.SnpUserGuestRequest{ReqData: &req, RespData: &rsp}); err != nil {
		return nil, err
	}
	return reportFrom(&rsp)
}

// message sends one guest request, as go-sev-guest's unexported client.message does: a
// firmware or VMM error (exitinfo2) is an *abi.SevFirmwareErr, a GHCB result other than OK a
// *labi.SevEsErr.
func message(d client.Device, command uintptr, req *labi.SnpUserGuestRequest) error {
	result, err := d.Ioctl(command, req)
	if err != nil {
		if req.FwErr != 0 {
			return &abi.SevFirmwareErr{Status: abi.SevFirmwareStatus(req.FwErr)}
		}
		return err
	}
	if result != uintptr(labi.EsOk) {
		return &labi.SevEsErr{Result: labi.EsResult(result)}
	}
	return nil
}

// reportFrom reads the report out of MSG_REPORT_RSP (Firmware ABI, "MSG_REPORT_RSP Message
// Structure"): STATUS 0 and REPORT_SIZE 0x4A0.
func reportFrom(rsp *labi.SnpReportRespABI) ([]byte, error) {
	if rsp.Status != 0 {
		return nil, fmt.Errorf("MSG_REPORT_RSP status %#x (0x16: invalid parameters, e.g. a VMPL below the guest's)", rsp.Status)
	}
	if rsp.ReportSize != abi.ReportSize {
		return nil, fmt.Errorf("MSG_REPORT_RSP report size is %d, want %d", rsp.ReportSize, abi.ReportSize)
	}
	return bytes.Clone(rsp.Data[:abi.ReportSize]), nil
}

// checkReport checks that rep is one ATTESTATION_REPORT that carries reportData (and, when
// vmpl is set, reports at that VMPL), so that the agent never sends evidence the verifier must
// reject for its binding. configfs-tsm may pad the outblob; trailing zeros are dropped.
func checkReport(rep []byte, reportData [64]byte, vmpl *uint) ([]byte, error) {
	if len(rep) < abi.ReportSize {
		return nil, fmt.Errorf("the report is %d bytes, want %d", len(rep), abi.ReportSize)
	}
	if len(rep) > abi.ReportSize {
		if len(bytes.Trim(rep[abi.ReportSize:], "\x00")) != 0 {
			return nil, fmt.Errorf("the report is %d bytes, want %d", len(rep), abi.ReportSize)
		}
		rep = rep[:abi.ReportSize]
	}
	if !bytes.Equal(rep[offReportData:offReportData+64], reportData[:]) {
		return nil, errors.New("the report carries another REPORT_DATA than the one requested (is another process using the same report entry?)")
	}
	if vmpl != nil {
		got := uint32(rep[offVMPL]) | uint32(rep[offVMPL+1])<<8 | uint32(rep[offVMPL+2])<<16 | uint32(rep[offVMPL+3])<<24
		if uint64(got) != uint64(*vmpl) {
			return nil, fmt.Errorf("the report is at VMPL %d, not the VMPL %d requested", got, *vmpl)
		}
	}
	return rep, nil
}

// openLinuxDevice opens path with go-sev-guest's LinuxDevice. It checks that the path exists
// first because LinuxDevice.Open flattens the error and fs.ErrNotExist would be lost.
func openLinuxDevice(path string) (client.Device, error) {
	if _, err := os.Stat(path); err != nil {
		return nil, err
	}
	d := &client.LinuxDevice{}
	if err := d.Open(path); err != nil {
		if strings.Contains(err.Error(), "permission denied") {
			return nil, fmt.Errorf("%w (run the agent as root, or give its user read-write access to %s)", err, path)
		}
		return nil, err
	}
	return d, nil
}
