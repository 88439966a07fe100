package fakedevice

import (
	"fmt"
	"os"
	"strconv"
	"syscall"

	"github.com/google/go-configfs-tsm/configfs/configfsi"
	"github.com/google/go-configfs-tsm/configfs/faketsm"
	"github.com/google/go-sev-guest/abi"
	"github.com/google/go-sev-guest/client"
	labi "github.com/google/go-sev-guest/client/linuxabi"
	pb "github.com/google/go-sev-guest/proto/sevsnp"

	"github.com/proofline/proofline/attest/attesttest/fakeamd"
)

// SNP is a fake AMD SEV-SNP guest: its configfs-tsm interface (provider "sev_guest") and its
// legacy /dev/sev-guest device return reports signed by PKI with the key Report.SignerInfo
// selects, and the host's certificate table CertTable. Set the fields before use.
type SNP struct {
	// PKI signs the reports.
	PKI *fakeamd.PKI
	// Report is the template of every report; REPORT_DATA and VMPL are replaced by the guest's.
	Report fakeamd.ReportOptions
	// CertTable is what the host returns with extended reports (configfs-tsm's auxblob); nil
	// models a host that provides no certificates.
	CertTable []byte
	// VMPLFloor is the VMPL the guest runs at (configfs-tsm's privlevel_floor): reports at a
	// lower VMPL are refused.
	VMPLFloor uint

	counter
	tsm *tsm
}

// NewSNP returns a fake guest whose reports are pki.DefaultReportOptions signed by the VCEK, and
// whose host provides the VCEK, ASK and ARK (CertTable(pki, abi.VcekReportSigner)).
func NewSNP(pki *fakeamd.PKI) *SNP {
	f := &SNP{PKI: pki, Report: pki.DefaultReportOptions(), CertTable: CertTable(pki, abi.VcekReportSigner)}
	f.tsm = newTSM("sev_guest", 0, f.readAttr, func(_ *faketsm.ReportEntry, attr string, contents []byte) error {
		if attr != "privlevel" {
			return nil
		}
		level, err := configfsi.Kstrtouint(contents, 10, 32)
		if err == nil && level < uint64(f.VMPLFloor) {
			return fmt.Errorf("privlevel %d is below privlevel_floor %d: %w", level, f.VMPLFloor, syscall.EINVAL)
		}
		return nil // faketsm checks the format
	})
	return f
}

// CertTable returns the host certificate table (GHCB specification, "SNP Extended Guest
// Request") for reports signed by key: the VCEK, ASK and ARK, or the VLEK, ASVK (under the ASK
// GUID, as AMD defines no ASVK GUID) and ARK.
func CertTable(pki *fakeamd.PKI, key abi.ReportSigner) []byte {
	chain := &pb.CertificateChain{VcekCert: pki.VCEK.Raw, AskCert: pki.ASK.Raw, ArkCert: pki.ARK.Raw}
	if key == abi.VlekReportSigner {
		chain = &pb.CertificateChain{VlekCert: pki.VLEK.Raw, AskCert: pki.ASVK.Raw, ArkCert: pki.ARK.Raw}
	}
	return abi.CertsFromProto(chain).Marshal()
}

// TSM opens the fake's configfs-tsm interface; it has the signature of snp.Collector.TSM.
func (f *SNP) TSM() (configfsi.Client, error) { return f.tsm, nil }

// OpenDevice opens the fake's legacy device; it has the signature of snp.Collector.OpenDevice.
func (f *SNP) OpenDevice(path string) (client.Device, error) {
	d := &snpDevice{f: f}
	if err := d.Open(path); err != nil {
		return nil, err
	}
	return d, nil
}

// report signs the template with reportData and vmpl, or returns nil when the firmware would
// refuse vmpl (MSG_REPORT_REQ requires VMPL ≥ the guest's, ≤ 3).
func (f *SNP) report(reportData []byte, vmpl uint32) ([]byte, error) {
	if vmpl < uint32(f.VMPLFloor) || vmpl > 3 {
		return nil, nil
	}
	o := f.Report
	copy(o.ReportData[:], reportData)
	o.VMPL = vmpl
	return f.PKI.Report(o)
}

// readAttr serves the entry's read-only attributes. Like Linux's sev-guest driver, outblob
// takes REPORT_DATA from inblob, zero-padded to 64 bytes, and the VMPL from privlevel; auxblob
// is the host's certificate table.
func (f *SNP) readAttr(e *faketsm.ReportEntry, attr string) ([]byte, error) {
	switch attr {
	case "provider":
		return []byte("sev_guest\n"), nil
	case "privlevel_floor":
		return []byte(strconv.FormatUint(uint64(f.VMPLFloor), 10) + "\n"), nil
	case "auxblob":
		return append([]byte(nil), f.CertTable...), nil
	case "outblob":
		in := inblob(e)
		if len(in) == 0 || len(in) > 64 {
			return nil, syscall.EINVAL
		}
		level := uint64(0)
		if a, ok := e.InAttrs["privlevel"]; ok && len(a.Value) > 0 {
			var err error
			if level, err = configfsi.Kstrtouint(a.Value, 10, 32); err != nil {
				return nil, syscall.EINVAL
			}
		}
		r, err := f.report(in, uint32(level))
		if err != nil {
			return nil, err
		}
		if r == nil {
			return nil, syscall.EINVAL
		}
		f.counter.tsm.Add(1)
		return r, nil
	}
	return nil, os.ErrNotExist
}

// Linux sev-guest limits (include/uapi/linux/psp-sev.h, drivers/virt/coco/sev-guest): the
// certificate buffer is a whole number of pages, at most SEV_FW_BLOB_MAX_SIZE.
const (
	pageSize       = 4096
	maxCertsBuffer = 16 << 10
	// statusInvalidParams is MSG_REPORT_RSP's STATUS for invalid parameters (e.g. a VMPL below
	// the guest's).
	statusInvalidParams = 0x16
)

// snpDevice is the legacy /dev/sev-guest: SNP_GET_REPORT and SNP_GET_EXT_REPORT.
type snpDevice struct {
	device
	f *SNP
}

func (d *snpDevice) Ioctl(command uintptr, arg any) (uintptr, error) {
	if err := d.checkOpen(); err != nil {
		return 0, err
	}
	sreq, ok := arg.(*labi.SnpUserGuestRequest)
	if !ok {
		return 0, syscall.EINVAL
	}
	rsp, ok := sreq.RespData.(*labi.SnpReportRespABI)
	if !ok {
		return 0, syscall.EINVAL
	}
	var req *labi.SnpReportReqABI
	switch command {
	case labi.IocSnpGetReport:
		if req, ok = sreq.ReqData.(*labi.SnpReportReqABI); !ok {
			return 0, syscall.EINVAL
		}
	case labi.IocSnpGetExtendedReport:
		ext, ok := sreq.ReqData.(*labi.SnpExtendedReportReq)
		if !ok {
			return 0, syscall.EINVAL
		}
		// A zero length means "no certificates wanted": the host still answers INVALID_LEN when
		// it has some, with the number of bytes it needs.
		if len(d.f.CertTable) > 0 {
			need := (len(d.f.CertTable) + pageSize - 1) / pageSize * pageSize
			if ext.CertsLength != 0 && (ext.CertsLength%pageSize != 0 || ext.CertsLength > maxCertsBuffer || int(ext.CertsLength) > len(ext.Certs)) {
				return 0, syscall.EINVAL
			}
			if int(ext.CertsLength) < need {
				ext.CertsLength = uint32(need)
				sreq.FwErr = uint64(abi.GuestRequestInvalidLength)
				return 0, syscall.EIO
			}
			clear(ext.Certs)
			copy(ext.Certs, d.f.CertTable)
		}
		req = &ext.Data
	default:
		return 0, syscall.ENOTTY
	}
	r, err := d.f.report(req.ReportData[:], req.Vmpl)
	if err != nil {
		return 0, err
	}
	*rsp = labi.SnpReportRespABI{}
	if r == nil {
		rsp.Status = statusInvalidParams
		return uintptr(labi.EsOk), nil
	}
	rsp.ReportSize = abi.ReportSize
	copy(rsp.Data[:], r)
	d.f.counter.device.Add(1)
	return uintptr(labi.EsOk), nil
}

// Product names the fake PKI's product line (deprecated upstream, but part of the interface).
func (d *snpDevice) Product() *pb.SevProduct {
	name := pb.SevProduct_SEV_PRODUCT_UNKNOWN
	switch d.f.PKI.ProductLine {
	case "Milan":
		name = pb.SevProduct_SEV_PRODUCT_MILAN
	case "Genoa":
		name = pb.SevProduct_SEV_PRODUCT_GENOA
	case "Turin":
		name = pb.SevProduct_SEV_PRODUCT_TURIN
	}
	return &pb.SevProduct{Name: name}
}

var _ client.Device = (*snpDevice)(nil)
