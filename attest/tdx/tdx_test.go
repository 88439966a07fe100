package tdx_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-configfs-tsm/configfs/configfsi"
	"github.com/google/go-tdx-guest/client"
	labi "github.com/google/go-tdx-guest/client/linuxabi"

	"github.com/proofline/proofline/attest"
	"github.com/proofline/proofline/attest/attesttest/fakedevice"
	"github.com/proofline/proofline/attest/tdx"
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
// built once: every test signs with the same fake Intel PKI.
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
	return nil, &fs.PathError{Op: "stat", Path: tdx.TSMReportPath, Err: fs.ErrNotExist}
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

// Quotes collected through either interface — configfs-tsm, or the legacy device when
// configfs-tsm is absent or belongs to another vendor — verify as affirming with the real
// verifier for the nonce they were collected for, and the collector uses exactly the interface
// expected.
func TestCollectVerifies(t *testing.T) {
	p := platforms(t)
	otherVendor := fakedevice.NewSNP(p.AMD)
	for _, c := range []struct {
		name              string
		tsm               func(f *fakedevice.TDX) func() (configfsi.Client, error)
		open              func(f *fakedevice.TDX) func(string) (client.Device, error)
		wantTSM, wantDevs int
	}{
		{
			name:    "configfs-tsm",
			tsm:     func(f *fakedevice.TDX) func() (configfsi.Client, error) { return f.TSM },
			open:    func(*fakedevice.TDX) func(string) (client.Device, error) { return absentDevice },
			wantTSM: 1,
		},
		{
			name:     "legacy device without configfs-tsm",
			tsm:      func(*fakedevice.TDX) func() (configfsi.Client, error) { return absentTSM },
			open:     func(f *fakedevice.TDX) func(string) (client.Device, error) { return f.OpenDevice },
			wantDevs: 1,
		},
		{
			name:     "legacy device when configfs-tsm is another vendor's",
			tsm:      func(*fakedevice.TDX) func() (configfsi.Client, error) { return otherVendor.TSM },
			open:     func(f *fakedevice.TDX) func(string) (client.Device, error) { return f.OpenDevice },
			wantDevs: 1,
		},
	} {
		t.Run(c.name, func(t *testing.T) {
			f := fakedevice.NewTDX(p.Intel)
			col := &tdx.Collector{TSM: c.tsm(f), OpenDevice: c.open(f)}
			n := nonce(t)
			rt := (&attest.RuntimeData{PublicKey: []byte("agent key")}).Encode()
			quote, err := col.Collect(context.Background(), attest.ReportData(n, rt))
			if err != nil {
				t.Fatal(err)
			}
			if tsm, dev := f.Served(); tsm != c.wantTSM || dev != c.wantDevs {
				t.Errorf("served %d through configfs-tsm and %d through the device, want %d and %d", tsm, dev, c.wantTSM, c.wantDevs)
			}
			ev := &attest.Evidence{Version: attest.Version, Platform: attest.PlatformTDX, Report: quote, Nonce: n, RuntimeData: rt}
			if res := verify(t, p, ev, n); res.Status != ear.StatusAffirming {
				t.Fatalf("want affirming, got %s", describe(res))
			}
		})
	}
}

// A quote bound to one nonce does not verify for another, whether the envelope names the other
// nonce or the verifier asks for it.
func TestWrongNonceFails(t *testing.T) {
	p := platforms(t)
	f := fakedevice.NewTDX(p.Intel)
	col := &tdx.Collector{TSM: f.TSM, OpenDevice: absentDevice}
	bound, other := nonce(t), nonce(t)
	quote, err := col.Collect(context.Background(), attest.ReportData(bound, nil))
	if err != nil {
		t.Fatal(err)
	}
	for name, c := range map[string]struct{ envelope, verifier []byte }{
		"envelope names another nonce":   {envelope: other, verifier: other},
		"verifier issued another nonce":  {envelope: bound, verifier: other},
		"envelope nonce, none requested": {envelope: other},
	} {
		t.Run(name, func(t *testing.T) {
			ev := &attest.Evidence{Version: attest.Version, Platform: attest.PlatformTDX, Report: quote, Nonce: c.envelope}
			res := verify(t, p, ev, c.verifier)
			if res.Status != ear.StatusContraindicated || !res.HasFailure(ear.CodeNonceMismatch) {
				t.Fatalf("want contraindicated with %s, got %s", ear.CodeNonceMismatch, describe(res))
			}
		})
	}
}

// With neither interface, the error wraps ErrUnavailable and names both paths and what to check.
func TestCollectUnavailable(t *testing.T) {
	col := &tdx.Collector{TSM: absentTSM, OpenDevice: absentDevice}
	_, err := col.Collect(context.Background(), [64]byte{})
	if !errors.Is(err, tdx.ErrUnavailable) {
		t.Fatalf("want ErrUnavailable, got %v", err)
	}
	for _, want := range []string{tdx.TSMReportPath, tdx.DevicePath, "TDX guest", "configfs mounted"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("%q does not mention %q", err, want)
		}
	}
}

// When both interfaces exist but fail, the error is not ErrUnavailable and carries both causes.
func TestCollectBothFail(t *testing.T) {
	p := platforms(t)
	otherVendor := fakedevice.NewSNP(p.AMD)
	col := &tdx.Collector{TSM: otherVendor.TSM, OpenDevice: func(string) (client.Device, error) { return nil, syscall.EACCES }}
	_, err := col.Collect(context.Background(), [64]byte{})
	if err == nil || errors.Is(err, tdx.ErrUnavailable) {
		t.Fatalf("want a failure other than ErrUnavailable, got %v", err)
	}
	if !errors.Is(err, syscall.EACCES) || !strings.Contains(err.Error(), `provider is "sev_guest"`) {
		t.Errorf("error lacks a cause: %v", err)
	}
}

func TestCollectCanceled(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	f := fakedevice.NewTDX(platforms(t).Intel)
	if _, err := (&tdx.Collector{TSM: f.TSM, OpenDevice: f.OpenDevice}).Collect(ctx, [64]byte{}); !errors.Is(err, context.Canceled) {
		t.Fatalf("want context.Canceled, got %v", err)
	}
	if tsm, dev := f.Served(); tsm+dev != 0 {
		t.Fatal("a canceled collection asked the device")
	}
}

// hostile wraps the fake legacy device and then changes what the host answered.
type hostile struct {
	client.Device
	report func(*labi.TdxReportReq)
	quote  func(*labi.TdxQuoteHdr) (uintptr, error)
}

func (h *hostile) Ioctl(command uintptr, arg any) (uintptr, error) {
	res, err := h.Device.Ioctl(command, arg)
	switch a := arg.(type) {
	case *labi.TdxReportReq:
		if h.report != nil {
			h.report(a)
		}
	case *labi.TdxQuoteReq:
		if h.quote != nil {
			return h.quote(a.Buffer.(*labi.TdxQuoteHdr))
		}
	}
	return res, err
}

// A host that answers the legacy device's ioctls with nonsense gets an error naming the
// problem, never a panic or a quote that the verifier would reject for its binding.
func TestHostileDevice(t *testing.T) {
	p := platforms(t)
	for _, c := range []struct {
		name   string
		report func(*labi.TdxReportReq)
		quote  func(*labi.TdxQuoteHdr) (uintptr, error)
		want   string
	}{
		{name: "quote longer than the buffer", quote: func(h *labi.TdxQuoteHdr) (uintptr, error) { h.OutLen = labi.ReqBufSize + 1; return 0, nil }, want: "quote length"},
		{name: "empty quote", quote: func(h *labi.TdxQuoteHdr) (uintptr, error) { h.OutLen = 0; return 0, nil }, want: "quote length"},
		{name: "in flight", quote: func(h *labi.TdxQuoteHdr) (uintptr, error) { h.Status = labi.GetQuoteInFlight; return 0, nil }, want: "retry"},
		{name: "service unavailable", quote: func(h *labi.TdxQuoteHdr) (uintptr, error) {
			h.Status = labi.GetQuoteServiceUnavailable
			return 0, nil
		}, want: "QGS"},
		{name: "no GET_QUOTE ioctl", quote: func(*labi.TdxQuoteHdr) (uintptr, error) { return 0, syscall.ENOTTY }, want: "configfs-tsm"},
		{name: "ioctl result", quote: func(*labi.TdxQuoteHdr) (uintptr, error) { return labi.TdxAttestErrorQuoteFailure, nil }, want: "returned 8"},
		{name: "quote for other REPORT_DATA", quote: func(h *labi.TdxQuoteHdr) (uintptr, error) { h.Data[48+520] ^= 1; return 0, nil }, want: "another REPORT_DATA"},
		{name: "truncated quote", quote: func(h *labi.TdxQuoteHdr) (uintptr, error) { h.OutLen = 100; return 0, nil }, want: "too short"},
		{name: "not a TDX quote", quote: func(h *labi.TdxQuoteHdr) (uintptr, error) { h.Data[4] = 0; return 0, nil }, want: "TEE type"},
		{name: "TDREPORT for other REPORT_DATA", report: func(r *labi.TdxReportReq) { r.TdReport[128] ^= 1 }, want: "TDREPORT for another"},
	} {
		t.Run(c.name, func(t *testing.T) {
			f := fakedevice.NewTDX(p.Intel)
			open := func(path string) (client.Device, error) {
				d, err := f.OpenDevice(path)
				return &hostile{Device: d, report: c.report, quote: c.quote}, err
			}
			rd := attest.ReportData(nonce(t), nil)
			_, err := (&tdx.Collector{TSM: absentTSM, OpenDevice: open}).Collect(context.Background(), rd)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("want an error mentioning %q, got %v", c.want, err)
			}
		})
	}
}

func TestReadCCEL(t *testing.T) {
	dir := t.TempDir()
	write := func(name string, data []byte) string {
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, data, 0o400); err != nil {
			t.Fatal(err)
		}
		return path
	}
	log := make([]byte, 64<<10)
	copy(log, "a CCEL log area, padded")
	got, err := (&tdx.Collector{CCELPath: write("CCEL", log)}).ReadCCEL()
	if err != nil || !bytes.Equal(got, log) {
		t.Fatalf("ReadCCEL = %d bytes, %v; want the %d bytes written", len(got), err, len(log))
	}
	if _, err := (&tdx.Collector{CCELPath: filepath.Join(dir, "absent")}).ReadCCEL(); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("absent log: want fs.ErrNotExist, got %v", err)
	}
	if _, err := (&tdx.Collector{CCELPath: write("empty", nil)}).ReadCCEL(); err == nil || !strings.Contains(err.Error(), "empty") {
		t.Errorf("empty log: %v", err)
	}
	if _, err := (&tdx.Collector{CCELPath: write("huge", make([]byte, attest.MaxEventLogSize+1))}).ReadCCEL(); err == nil || !strings.Contains(err.Error(), "limit") {
		t.Errorf("oversized log: %v", err)
	}
}
