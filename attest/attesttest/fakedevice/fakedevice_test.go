package fakedevice_test

import (
	"errors"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-configfs-tsm/report"
	"github.com/google/go-sev-guest/abi"
	labi "github.com/google/go-sev-guest/client/linuxabi"

	"github.com/proofline/proofline/attest/attesttest/fakeamd"
	"github.com/proofline/proofline/attest/attesttest/fakedevice"
	"github.com/proofline/proofline/attest/attesttest/fakeintel"
)

// The fakes keep the kernel's contracts that a collector could get wrong: provider is readable
// before anything is written; TDX needs exactly 64 bytes of inblob; SEV-SNP refuses a privlevel
// below privlevel_floor; the extended report wants a page-aligned buffer; a closed device
// refuses ioctls.
func TestKernelContracts(t *testing.T) {
	now := time.Now()
	intel, err := fakeintel.New(now)
	if err != nil {
		t.Fatal(err)
	}
	amd, err := fakeamd.New("Genoa", now)
	if err != nil {
		t.Fatal(err)
	}

	t.Run("provider before a write", func(t *testing.T) {
		cl, _ := fakedevice.NewTDX(intel).TSM()
		r, err := report.CreateOpenReport(cl)
		if err != nil {
			t.Fatal(err)
		}
		defer r.Destroy()
		if p, err := r.ReadOption("provider"); err != nil || string(p) != "tdx_guest\n" {
			t.Fatalf("provider = %q, %v", p, err)
		}
	})

	t.Run("TDX inblob of 32 bytes", func(t *testing.T) {
		cl, _ := fakedevice.NewTDX(intel).TSM()
		if _, err := report.Get(cl, &report.Request{InBlob: make([]byte, 32)}); err == nil {
			t.Fatal("a short inblob gave a quote")
		}
	})

	t.Run("SEV-SNP privlevel below the floor", func(t *testing.T) {
		f := fakedevice.NewSNP(amd)
		f.VMPLFloor = 1
		cl, _ := f.TSM()
		_, err := report.Get(cl, &report.Request{InBlob: make([]byte, 64), Privilege: &report.Privilege{Level: 0}})
		if err == nil || !strings.Contains(err.Error(), "privlevel") {
			t.Fatalf("privlevel 0 with floor 1: %v", err)
		}
	})

	t.Run("SEV-SNP unaligned certificate buffer", func(t *testing.T) {
		d, err := fakedevice.NewSNP(amd).OpenDevice("/dev/sev-guest")
		if err != nil {
			t.Fatal(err)
		}
		defer d.Close()
		req := &labi.SnpExtendedReportReq{Certs: make([]byte, 5000), CertsLength: 5000}
		_, err = d.Ioctl(labi.IocSnpGetExtendedReport, &labi.SnpUserGuestRequest{ReqData: req, RespData: &labi.SnpReportRespABI{}})
		if !errors.Is(err, syscall.EINVAL) {
			t.Fatalf("want EINVAL, got %v", err)
		}
		req = &labi.SnpExtendedReportReq{}
		sreq := &labi.SnpUserGuestRequest{ReqData: req, RespData: &labi.SnpReportRespABI{}}
		if _, err := d.Ioctl(labi.IocSnpGetExtendedReport, sreq); !errors.Is(err, syscall.EIO) ||
			sreq.FwErr != uint64(abi.GuestRequestInvalidLength) || req.CertsLength%4096 != 0 || req.CertsLength == 0 {
			t.Fatalf("length query: %v, fw_err %#x, length %d", err, sreq.FwErr, req.CertsLength)
		}
	})

	t.Run("closed device", func(t *testing.T) {
		d, err := fakedevice.NewSNP(amd).OpenDevice("/dev/sev-guest")
		if err != nil {
			t.Fatal(err)
		}
		d.Close()
		_, err = d.Ioctl(labi.IocSnpGetReport, &labi.SnpUserGuestRequest{ReqData: &labi.SnpReportReqABI{}, RespData: &labi.SnpReportRespABI{}})
		if !errors.Is(err, os.ErrClosed) {
			t.Fatalf("want os.ErrClosed, got %v", err)
		}
	})
}
