package detect_test

import (
	"context"
	"errors"
	"io/fs"
	"strings"
	"testing"
	"time"

	"github.com/google/go-configfs-tsm/configfs/configfsi"

	"github.com/proofline/proofline/attest"
	"github.com/proofline/proofline/attest/attesttest/fakeamd"
	"github.com/proofline/proofline/attest/attesttest/fakedevice"
	"github.com/proofline/proofline/attest/attesttest/fakeintel"
	"github.com/proofline/proofline/attest/detect"
)

func absentTSM() (configfsi.Client, error) {
	return nil, &fs.PathError{Op: "stat", Path: "/sys/kernel/config/tsm/report", Err: fs.ErrNotExist}
}

// stat reports the given paths as present and every other one as absent.
func stat(present ...string) func(string) (fs.FileInfo, error) {
	return func(path string) (fs.FileInfo, error) {
		for _, p := range present {
			if p == path {
				return nil, nil
			}
		}
		return nil, &fs.PathError{Op: "stat", Path: path, Err: fs.ErrNotExist}
	}
}

func TestDetect(t *testing.T) {
	now := time.Now()
	intel, err := fakeintel.New(now)
	if err != nil {
		t.Fatal(err)
	}
	amd, err := fakeamd.New("Genoa", now)
	if err != nil {
		t.Fatal(err)
	}
	tdxTSM, snpTSM := fakedevice.NewTDX(intel).TSM, fakedevice.NewSNP(amd).TSM
	for _, c := range []struct {
		name         string
		prober       detect.Prober
		want         attest.Platform
		wantProvider string
		wantTPM      bool
	}{
		{name: "configfs-tsm TDX", prober: detect.Prober{TSM: tdxTSM, Stat: stat("/dev/tdx_guest")}, want: attest.PlatformTDX, wantProvider: "tdx_guest"},
		{name: "configfs-tsm SEV-SNP with a vTPM", prober: detect.Prober{TSM: snpTSM, Stat: stat("/dev/sev-guest", "/dev/tpmrm0")}, want: attest.PlatformSNP, wantProvider: "sev_guest", wantTPM: true},
		{name: "legacy TDX device only", prober: detect.Prober{TSM: absentTSM, Stat: stat("/dev/tdx_guest")}, want: attest.PlatformTDX},
		{name: "legacy SEV device only", prober: detect.Prober{TSM: absentTSM, Stat: stat("/dev/sev-guest")}, want: attest.PlatformSNP},
	} {
		t.Run(c.name, func(t *testing.T) {
			f, err := c.prober.Detect(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			if f.Platform != c.want || f.TSMProvider != c.wantProvider || f.TPMDevice != c.wantTPM {
				t.Fatalf("found %+v", f)
			}
			if !strings.Contains(f.String(), "platform: "+string(c.want)) {
				t.Errorf("String() = %q", f)
			}
		})
	}
}

// With no TEE interface the error wraps ErrNoTEE and names every path looked for, what was
// found, and what to check.
func TestDetectNoTEE(t *testing.T) {
	for _, c := range []struct {
		name   string
		prober detect.Prober
		want   []string
	}{
		{
			name:   "nothing",
			prober: detect.Prober{TSM: absentTSM, Stat: stat()},
			want:   []string{"/sys/kernel/config/tsm/report (absent)", "/dev/tdx_guest (absent)", "/dev/sev-guest (absent)", "is this a confidential VM", "is configfs mounted"},
		},
		{
			name:   "a vTPM only",
			prober: detect.Prober{TSM: absentTSM, Stat: stat("/dev/tpmrm0")},
			want:   []string{"found /dev/tpmrm0", "a vTPM alone"},
		},
		{
			name:   "configfs-tsm unusable",
			prober: detect.Prober{TSM: func() (configfsi.Client, error) { return nil, errors.New("permission denied") }, Stat: stat()},
			want:   []string{"/sys/kernel/config/tsm/report (unusable: permission denied; run the agent as root)"},
		},
	} {
		t.Run(c.name, func(t *testing.T) {
			f, err := c.prober.Detect(context.Background())
			if !errors.Is(err, detect.ErrNoTEE) {
				t.Fatalf("want ErrNoTEE, got %v", err)
			}
			if f == nil || f.Platform != "" {
				t.Fatalf("found %+v", f)
			}
			for _, w := range c.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("%q does not say %q", err, w)
				}
			}
		})
	}
}
