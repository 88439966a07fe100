package snp_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"io/fs"
	"log/slog"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-configfs-tsm/configfs/configfsi"
	"github.com/google/go-sev-guest/abi"
	"github.com/google/go-sev-guest/client"
	labi "github.com/google/go-sev-guest/client/linuxabi"

	"github.com/proofline/proofline/attest"
	"github.com/proofline/proofline/attest/attesttest/fakedevice"
	"github.com/proofline/proofline/attest/snp"
	"github.com/proofline/proofline/verifier"
	"github.com/proofline/proofline/verifier/ear"
	"github.com/proofline/proofline/verifier/policy"
	"github.com/proofline/proofline/verifier/service/servicetest"
)

var (
	platOnce sync.Once
	plat     *servicetest.Platforms
	platErr  error
)

// platforms returns the simulated platforms (fake PKIs, their collateral, roots and policy),
// built once: every test signs with the same fake AMD PKI.
func platforms(t *testing.T) *servicetest.Platforms {
	t.Helper()
	platOnce.Do(func() { plat, platErr = servicetest.New(time.Now()) })
	if platErr != nil {
		t.Fatal(platErr)
	}
	return plat
}

func nonce(t *testing.T) []byte {
	t.Helper()
	n := make([]byte, attest.NonceSize)
	rand.Read(n)
	return n
}

func absentTSM() (configfsi.Client, error) {
	return nil, &fs.PathError{Op: "stat", Path: snp.TSMReportPath, Err: fs.ErrNotExist}
}

func absentDevice(path string) (client.Device, error) {
	return nil, &fs.PathError{Op: "open", Path: path, Err: fs.ErrNotExist}
}

// verify runs the real verifier over the envelope, as `proofline verify --nonce` does with the
// simulated platforms' roots, collateral and policy.
func verify(t *testing.T, p *servicetest.Platforms, ev *attest.Evidence, verifierNonce []byte) *ear.Result {
	t.Helper()
	data, err := ev.Encode()
	if err != nil {
		t.Fatal(err)
	}
	decoded, err := attest.DecodeEvidence(data)
	if err != nil {
		t.Fatal(err)
	}
	pol, err := policy.Parse(p.PolicyYAML)
	if err != nil {
		t.Fatal(err)
	}
	return verifier.Verify(context.Background(), decoded, verifier.Options{
		Policy: pol, Roots: p.Roots, Collateral: p.Collateral, Now: p.Now, Nonce: verifierNonce,
	})
}

func describe(r *ear.Result) string {
	var b strings.Builder
	b.WriteString(string(r.Status))
	for _, f := range r.Failures {
		b.WriteString("; failure " + string(f.Code) + ": " + f.Message)
	}
	for _, w := range r.Warnings {
		b.WriteString("; warning " + string(w.Code) + ": " + w.Message)
	}
	return b.String()
}

// Reports collected through either interface — configfs-tsm, or the legacy device when
// configfs-tsm is absent or belongs to another vendor — with or without the host's
// certificates, verify as affirming with the real verifier for the nonce they were collected
// for; the collector uses exactly the interface expected and returns the host's certificates.
func TestCollectVerifies(t *testing.T) {
	p := platforms(t)
	otherVendor := fakedevice.NewTDX(p.Intel)
	wantCerts := [][]byte{p.AMD.VCEK.Raw, p.AMD.ASK.Raw, p.AMD.ARK.Raw}
	for _, c := range []struct {
		name              string
		tsm               func(f *fakedevice.SNP) func() (configfsi.Client, error)
		open              func(f *fakedevice.SNP) func(string) (client.Device, error)
		noHostCerts       bool
		wantTSM, wantDevs int
	}{
		{
			name:    "configfs-tsm",
			tsm:     func(f *fakedevice.SNP) func() (configfsi.Client, error) { return f.TSM },
			open:    func(*fakedevice.SNP) func(string) (client.Device, error) { return absentDevice },
			wantTSM: 1,
		},
		{
			name:        "configfs-tsm, host without certificates",
			tsm:         func(f *fakedevice.SNP) func() (configfsi.Client, error) { return f.TSM },
			open:        func(*fakedevice.SNP) func(string) (client.Device, error) { return absentDevice },
			noHostCerts: true,
			wantTSM:     1,
		},
		{
			name:     "legacy device without configfs-tsm",
			tsm:      func(*fakedevice.SNP) func() (configfsi.Client, error) { return absentTSM },
			open:     func(f *fakedevice.SNP) func(string) (client.Device, error) { return f.OpenDevice },
			wantDevs: 1,
		},
		{
			name:        "legacy device, host without certificates",
			tsm:         func(*fakedevice.SNP) func() (configfsi.Client, error) { return absentTSM },
			open:        func(f *fakedevice.SNP) func(string) (client.Device, error) { return f.OpenDevice },
			noHostCerts: true,
			wantDevs:    1,
		},
		{
			name:     "legacy device when configfs-tsm is another vendor's",
			tsm:      func(*fakedevice.SNP) func() (configfsi.Client, error) { return otherVendor.TSM },
			open:     func(f *fakedevice.SNP) func(string) (client.Device, error) { return f.OpenDevice },
			wantDevs: 1,
		},
	} {
		t.Run(c.name, func(t *testing.T) {
			f := fakedevice.NewSNP(p.AMD)
			want := wantCerts
			if c.noHostCerts {
				f.CertTable, want = nil, nil
			}
			col := &snp.Collector{TSM: c.tsm(f), OpenDevice: c.open(f)}
			n := nonce(t)
			rt := (&attest.RuntimeData{PublicKey: []byte("agent key")}).Encode()
			report, certs, err := col.Collect(context.Background(), attest.ReportData(n, rt))
			if err != nil {
				t.Fatal(err)
			}
			if tsm, dev := f.Served(); tsm != c.wantTSM || dev != c.wantDevs {
				t.Errorf("served %d through configfs-tsm and %d through the device, want %d and %d", tsm, dev, c.wantTSM, c.wantDevs)
			}
			if len(certs) != len(want) {
				t.Fatalf("%d certificates, want %d", len(certs), len(want))
			}
			for i := range certs {
				if !bytes.Equal(certs[i], want[i]) {
					t.Errorf("certificate %d is not the host's", i)
				}
			}
			ev := &attest.Evidence{Version: attest.Version, Platform: attest.PlatformSNP, Report: report, Certificates: certs, Nonce: n, RuntimeData: rt}
			if res := verify(t, p, ev, n); res.Status != ear.StatusAffirming {
				t.Fatalf("want affirming, got %s", describe(res))
			}
		})
	}
}

// A VLEK-signed report comes with the VLEK and ASVK from the host and verifies too.
func TestCollectVLEK(t *testing.T) {
	p := platforms(t)
	f := fakedevice.NewSNP(p.AMD)
	f.Report.SignerInfo.SigningKey = abi.VlekReportSigner
	f.CertTable = fakedevice.CertTable(p.AMD, abi.VlekReportSigner)
	n := nonce(t)
	report, certs, err := (&snp.Collector{TSM: f.TSM, OpenDevice: absentDevice}).Collect(context.Background(), attest.ReportData(n, nil))
	if err != nil {
		t.Fatal(err)
	}
	if len(certs) != 3 || !bytes.Equal(certs[0], p.AMD.VLEK.Raw) || !bytes.Equal(certs[1], p.AMD.ASVK.Raw) {
		t.Fatal("the host's VLEK and ASVK are not in the certificates")
	}
	ev := &attest.Evidence{Version: attest.Version, Platform: attest.PlatformSNP, Report: report, Certificates: certs, Nonce: n}
	if res := verify(t, p, ev, n); res.Status != ear.StatusAffirming {
		t.Fatalf("want affirming, got %s", describe(res))
	}
}

// A report bound to one nonce does not verify for another, whether the envelope names the
// other nonce or the verifier asks for it.
func TestWrongNonceFails(t *testing.T) {
	p := platforms(t)
	f := fakedevice.NewSNP(p.AMD)
	bound, other := nonce(t), nonce(t)
	report, certs, err := (&snp.Collector{TSM: f.TSM, OpenDevice: absentDevice}).Collect(context.Background(), attest.ReportData(bound, nil))
	if err != nil {
		t.Fatal(err)
	}
	for name, c := range map[string]struct{ envelope, verifier []byte }{
		"envelope names another nonce":   {envelope: other, verifier: other},
		"verifier issued another nonce":  {envelope: bound, verifier: other},
		"envelope nonce, none requested": {envelope: other},
	} {
		t.Run(name, func(t *testing.T) {
			ev := &attest.Evidence{Version: attest.Version, Platform: attest.PlatformSNP, Report: report, Certificates: certs, Nonce: c.envelope}
			res := verify(t, p, ev, c.verifier)
			if res.Status != ear.StatusContraindicated || !res.HasFailure(ear.CodeNonceMismatch) {
				t.Fatalf("want contraindicated with %s, got %s", ear.CodeNonceMismatch, describe(res))
			}
		})
	}
}

// The requested VMPL reaches the report through both interfaces; one below the guest's is
// refused with an error, not a report at another level.
func TestVMPL(t *testing.T) {
	p := platforms(t)
	for _, iface := range []string{"configfs-tsm", "device"} {
		t.Run(iface, func(t *testing.T) {
			f := fakedevice.NewSNP(p.AMD)
			f.VMPLFloor = 2
			col := &snp.Collector{TSM: f.TSM, OpenDevice: absentDevice}
			if iface == "device" {
				col = &snp.Collector{TSM: absentTSM, OpenDevice: f.OpenDevice}
			}
			for _, c := range []struct {
				vmpl uint
				ok   bool
			}{{2, true}, {3, true}, {1, false}} {
				col.VMPL = &c.vmpl
				report, _, err := col.Collect(context.Background(), attest.ReportData(nonce(t), nil))
				if !c.ok {
					if err == nil {
						t.Errorf("VMPL %d below the floor: accepted", c.vmpl)
					}
					continue
				}
				if err != nil {
					t.Fatalf("VMPL %d: %v", c.vmpl, err)
				}
				if report[0x30] != byte(c.vmpl) {
					t.Errorf("VMPL %d requested, report says %d", c.vmpl, report[0x30])
				}
			}
		})
	}
}

// With neither interface, the error wraps ErrUnavailable and names both paths and what to check.
func TestCollectUnavailable(t *testing.T) {
	_, _, err := (&snp.Collector{TSM: absentTSM, OpenDevice: absentDevice}).Collect(context.Background(), [64]byte{})
	if !errors.Is(err, snp.ErrUnavailable) {
		t.Fatalf("want ErrUnavailable, got %v", err)
	}
	for _, want := range []string{snp.TSMReportPath, snp.DevicePath, "SEV-SNP guest", "configfs mounted"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("%q does not mention %q", err, want)
		}
	}
}

func TestCollectCanceled(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	f := fakedevice.NewSNP(platforms(t).AMD)
	if _, _, err := (&snp.Collector{TSM: f.TSM, OpenDevice: f.OpenDevice}).Collect(ctx, [64]byte{}); !errors.Is(err, context.Canceled) {
		t.Fatalf("want context.Canceled, got %v", err)
	}
}

// hostile wraps the fake legacy device and then changes what the host answered.
type hostile struct {
	client.Device
	change func(cmd uintptr, req *labi.SnpUserGuestRequest, res uintptr, err error) (uintptr, error)
}

func (h *hostile) Ioctl(command uintptr, arg any) (uintptr, error) {
	res, err := h.Device.Ioctl(command, arg)
	return h.change(command, arg.(*labi.SnpUserGuestRequest), res, err)
}

// A host that answers the legacy device's ioctls with nonsense gets an error naming the problem
// (or, for a bad certificate table, a report without certificates), never a panic, a huge
// allocation or a report the verifier would reject for its binding.
func TestHostileDevice(t *testing.T) {
	p := platforms(t)
	rsp := func(r *labi.SnpUserGuestRequest) *labi.SnpReportRespABI { return r.RespData.(*labi.SnpReportRespABI) }
	ext := func(r *labi.SnpUserGuestRequest) *labi.SnpExtendedReportReq {
		e, _ := r.ReqData.(*labi.SnpExtendedReportReq)
		return e
	}
	for _, c := range []struct {
		name      string
		change    func(cmd uintptr, r *labi.SnpUserGuestRequest, res uintptr, err error) (uintptr, error)
		want      string // error text; empty: a report without certificates
		wantCerts int
	}{
		{name: "asks for 4 GiB", change: func(cmd uintptr, r *labi.SnpUserGuestRequest, res uintptr, err error) (uintptr, error) {
			if e := ext(r); e != nil && err != nil {
				e.CertsLength = 0xFFFFF000
			}
			return res, err
		}},
		{name: "asks for an unaligned buffer", change: func(cmd uintptr, r *labi.SnpUserGuestRequest, res uintptr, err error) (uintptr, error) {
			if e := ext(r); e != nil && err != nil {
				e.CertsLength = 5000
			}
			return res, err
		}},
		{name: "table entry past the end", wantCerts: 0, change: func(cmd uintptr, r *labi.SnpUserGuestRequest, res uintptr, err error) (uintptr, error) {
			if e := ext(r); e != nil && err == nil && len(e.Certs) > 0 {
				e.Certs[16], e.Certs[17], e.Certs[18], e.Certs[19] = 0xF0, 0xFF, 0xFF, 0xFF // offset of entry 0
			}
			return res, err
		}},
		{name: "report status", want: "status 0x16", change: func(cmd uintptr, r *labi.SnpUserGuestRequest, res uintptr, err error) (uintptr, error) {
			rsp(r).Status = 0x16
			return res, err
		}},
		{name: "report size", want: "report size", change: func(cmd uintptr, r *labi.SnpUserGuestRequest, res uintptr, err error) (uintptr, error) {
			rsp(r).ReportSize = 4000
			return res, err
		}},
		{name: "GHCB error", want: "not supported", change: func(cmd uintptr, r *labi.SnpUserGuestRequest, res uintptr, err error) (uintptr, error) {
			return uintptr(labi.EsUnsupported), nil
		}},
		{name: "report for other REPORT_DATA", want: "another REPORT_DATA", change: func(cmd uintptr, r *labi.SnpUserGuestRequest, res uintptr, err error) (uintptr, error) {
			rsp(r).Data[0x50] ^= 1
			return res, err
		}},
		{name: "no extended report", wantCerts: 0, change: func(cmd uintptr, r *labi.SnpUserGuestRequest, res uintptr, err error) (uintptr, error) {
			if cmd == labi.IocSnpGetExtendedReport {
				return 0, syscall.ENOTTY
			}
			return res, err
		}},
	} {
		t.Run(c.name, func(t *testing.T) {
			f := fakedevice.NewSNP(p.AMD)
			open := func(path string) (client.Device, error) {
				d, err := f.OpenDevice(path)
				return &hostile{Device: d, change: c.change}, err
			}
			var logs strings.Builder
			col := &snp.Collector{TSM: absentTSM, OpenDevice: open, Logger: slog.New(slog.NewTextHandler(&logs, nil))}
			report, certs, err := col.Collect(context.Background(), attest.ReportData(nonce(t), nil))
			if c.want != "" {
				if err == nil || !strings.Contains(err.Error(), c.want) {
					t.Fatalf("want an error mentioning %q, got %v", c.want, err)
				}
				return
			}
			if err != nil || len(report) != abi.ReportSize || len(certs) != c.wantCerts {
				t.Fatalf("want a report and %d certificates, got %d bytes, %d certificates, %v", c.wantCerts, len(report), len(certs), err)
			}
			if logs.Len() == 0 {
				t.Error("what the host did wrong was not logged")
			}
		})
	}
}
