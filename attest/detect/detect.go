// Package detect finds out which confidential-computing guest interfaces this machine has: the
// configfs-tsm report interface and its provider, the legacy /dev/tdx_guest and /dev/sev-guest
// devices, and a vTPM (/dev/tpmrm0). The agent uses it to choose a collector (attest/tdx,
// attest/snp) and to say clearly what is missing when there is none.
//
// configfs-tsm: Documentation/ABI/testing/configfs-tsm in the Linux tree; the provider
// attribute names the TSM driver, "tdx_guest" or "sev_guest".
package detect

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strings"

	"github.com/google/go-configfs-tsm/configfs/configfsi"
	"github.com/google/go-configfs-tsm/configfs/linuxtsm"
	"github.com/google/go-configfs-tsm/report"

	"github.com/proofline/proofline/attest"
	"github.com/proofline/proofline/attest/snp"
	"github.com/proofline/proofline/attest/tdx"
)

// TPMPath is the vTPM's resource-managed device.
const TPMPath = "/dev/tpmrm0"

// ErrNoTEE is wrapped by Detect's error when the machine has no TDX or SEV-SNP guest interface.
var ErrNoTEE = errors.New("no TDX or SEV-SNP guest interface found")

// Found is what Detect found.
type Found struct {
	// Platform is the TEE the agent should collect evidence from: from the configfs-tsm provider
	// when there is one, otherwise from the legacy device present. Empty when there is none.
	Platform attest.Platform
	// TSMProvider is the configfs-tsm provider ("tdx_guest", "sev_guest", …), empty when
	// configfs-tsm could not be used; TSMError then says why.
	TSMProvider string
	TSMError    error
	// TDXDevice, SEVDevice and TPMDevice say whether /dev/tdx_guest, /dev/sev-guest and
	// /dev/tpmrm0 exist.
	TDXDevice, SEVDevice, TPMDevice bool
}

// Prober probes the interfaces. The zero value probes the kernel's.
type Prober struct {
	// TSM opens the configfs-tsm report interface; nil means the kernel's (linuxtsm.MakeClient).
	TSM func() (configfsi.Client, error)
	// Stat reports whether a device path exists; nil means os.Stat.
	Stat func(path string) (fs.FileInfo, error)
}

// Detect probes the kernel's interfaces.
func Detect(ctx context.Context) (*Found, error) {
	return Prober{}.Detect(ctx)
}

// Detect probes every interface and returns what it found. When there is neither a TDX nor an
// SEV-SNP interface it also returns an error wrapping ErrNoTEE that names what was looked for,
// what was found, and what to check. Probing the configfs-tsm provider creates a report entry
// and removes it; it generates no report.
func (p Prober) Detect(ctx context.Context) (*Found, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	stat := p.Stat
	if stat == nil {
		stat = os.Stat
	}
	exists := func(path string) bool {
		_, err := stat(path)
		return err == nil
	}
	f := &Found{
		TDXDevice: exists(tdx.DevicePath),
		SEVDevice: exists(snp.DevicePath),
		TPMDevice: exists(TPMPath),
	}
	f.TSMProvider, f.TSMError = p.provider()
	switch {
	case f.TSMProvider == tdx.Provider:
		f.Platform = attest.PlatformTDX
	case f.TSMProvider == snp.Provider:
		f.Platform = attest.PlatformSNP
	case f.TDXDevice:
		f.Platform = attest.PlatformTDX
	case f.SEVDevice:
		f.Platform = attest.PlatformSNP
	default:
		return f, f.noTEE()
	}
	return f, nil
}

// provider reads the configfs-tsm provider from a fresh report entry.
func (p Prober) provider() (string, error) {
	open := p.TSM
	if open == nil {
		open = linuxtsm.MakeClient
	}
	cl, err := open()
	if err != nil {
		return "", err
	}
	r, err := report.CreateOpenReport(cl)
	if err != nil {
		return "", err
	}
	b, err := r.ReadOption("provider")
	if derr := r.Destroy(); err == nil && derr != nil {
		err = fmt.Errorf("removing the probe's report entry: %w", derr)
	}
	if err != nil {
		return "", err
	}
	name := strings.TrimSpace(string(b))
	if name == "" {
		return "", errors.New("configfs-tsm names no provider")
	}
	return name, nil
}

func (f *Found) noTEE() error {
	var tsm string
	switch {
	case f.TSMProvider != "":
		tsm = fmt.Sprintf("provider %q, which is neither %q nor %q", f.TSMProvider, tdx.Provider, snp.Provider)
	case errors.Is(f.TSMError, fs.ErrNotExist):
		tsm = "absent"
	case f.TSMError != nil:
		tsm = "unusable: " + f.TSMError.Error()
		if errors.Is(f.TSMError, fs.ErrPermission) || strings.Contains(f.TSMError.Error(), "permission denied") {
			tsm += "; run the agent as root"
		}
	}
	state := func(ok bool) string {
		if ok {
			return "present"
		}
		return "absent"
	}
	msg := fmt.Sprintf("%v: looked for %s (%s), %s (%s), %s (%s)", ErrNoTEE,
		tdx.TSMReportPath, tsm, tdx.DevicePath, state(f.TDXDevice), snp.DevicePath, state(f.SEVDevice))
	if f.TPMDevice {
		msg += fmt.Sprintf("; found %s, but a vTPM alone is not a confidential VM", TPMPath)
	}
	msg += "; is this a confidential VM (Intel TDX or AMD SEV-SNP guest)? is configfs mounted (mount -t configfs none /sys/kernel/config)? does the kernel have the tdx-guest or sev-guest driver?"
	return &noTEEError{msg: msg}
}

type noTEEError struct{ msg string }

func (e *noTEEError) Error() string { return e.msg }
func (e *noTEEError) Unwrap() error { return ErrNoTEE }

// String describes the interfaces found, one per line.
func (f *Found) String() string {
	var b strings.Builder
	switch {
	case f.TSMProvider != "":
		fmt.Fprintf(&b, "%s: provider %s\n", tdx.TSMReportPath, f.TSMProvider)
	case f.TSMError != nil:
		fmt.Fprintf(&b, "%s: %v\n", tdx.TSMReportPath, f.TSMError)
	}
	for _, d := range []struct {
		path string
		ok   bool
	}{{tdx.DevicePath, f.TDXDevice}, {snp.DevicePath, f.SEVDevice}, {TPMPath, f.TPMDevice}} {
		state := "absent"
		if d.ok {
			state = "present"
		}
		fmt.Fprintf(&b, "%s: %s\n", d.path, state)
	}
	platform := string(f.Platform)
	if platform == "" {
		platform = "none"
	}
	fmt.Fprintf(&b, "platform: %s\n", platform)
	return b.String()
}
