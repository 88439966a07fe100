// Package fakedevice fakes the guest interfaces of confidential VMs — the Linux configfs-tsm
// report interface and the legacy /dev/tdx_guest and /dev/sev-guest devices — so that the
// collectors (attest/tdx, attest/snp) run without hardware. The fakes sign with the project's
// fake vendor PKIs (attest/attesttest/fakeintel, fakeamd) over the REPORT_DATA the guest
// writes, so what they produce verifies end to end against those PKIs' roots and collateral.
//
// The configfs-tsm fake is go-configfs-tsm's faketsm with its read function replaced, wrapped
// so that provider is readable at any time as in the kernel
// (Documentation/ABI/testing/configfs-tsm). The legacy devices implement the Device interfaces
// of go-tdx-guest's and go-sev-guest's client packages and follow the kernel's ioctl contracts
// (Documentation/virt/coco/tdx-guest.rst and sev-guest.rst).
//
// Test material only: it is reachable from a shipped binary solely through the agent's
// --test-mode, and everything it signs chains to fake roots.
package fakedevice

import (
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"syscall"

	"github.com/google/go-configfs-tsm/configfs/configfsi"
	"github.com/google/go-configfs-tsm/configfs/faketsm"
)

// tsm is a configfs-tsm report interface backed by faketsm.
type tsm struct {
	*faketsm.Client
	provider string
}

// newTSM returns a configfs-tsm fake whose provider is provider and whose read-only attributes
// come from read. check vets writes before faketsm stores them (nil: faketsm's rules).
func newTSM(provider string, floor uint, read func(e *faketsm.ReportEntry, attr string) ([]byte, error), check func(e *faketsm.ReportEntry, attr string, contents []byte) error) *tsm {
	sub := faketsm.Report611(floor)
	// faketsm's ReadFile leaks its lock when no entry was ever made; start with a map.
	sub.Entries = map[string]*faketsm.ReportEntry{}
	sub.ReadAttr = read
	if check != nil {
		base := sub.CheckInAttr
		sub.CheckInAttr = func(e *faketsm.ReportEntry, attr string, contents []byte) error {
			if err := check(e, attr, contents); err != nil {
				return err
			}
			return base(e, attr, contents)
		}
	}
	return &tsm{Client: &faketsm.Client{Subsystems: map[string]configfsi.Client{"report": sub}}, provider: provider}
}

// ReadFile serves provider before anything was written, as the kernel does (faketsm serves
// read-only attributes only after a write), and everything else from faketsm.
func (c *tsm) ReadFile(name string) ([]byte, error) {
	p, err := configfsi.ParseTsmPath(name)
	if err == nil && p.Subsystem == "report" && p.Entry != "" && p.Attribute == "provider" {
		gen := configfsi.TsmPath{Subsystem: p.Subsystem, Entry: p.Entry, Attribute: "generation"}
		if _, err := c.Client.ReadFile(gen.String()); err != nil {
			return nil, err // no such entry
		}
		return []byte(c.provider + "\n"), nil
	}
	return c.Client.ReadFile(name)
}

// inblob returns the REPORT_DATA written to an entry. Called by faketsm with the entry locked.
func inblob(e *faketsm.ReportEntry) []byte {
	if a, ok := e.InAttrs["inblob"]; ok {
		return a.Value
	}
	return nil
}

// counter counts what a fake served, for tests that check which interface a collector used.
type counter struct {
	tsm, device atomic.Int64
}

// Served returns how many reports the fake produced through configfs-tsm and through the
// legacy device.
func (c *counter) Served() (tsm, device int) {
	return int(c.tsm.Load()), int(c.device.Load())
}

// device is the open/closed state every legacy device fake shares.
type device struct {
	mu   sync.Mutex
	open bool
}

func (d *device) Open(string) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.open {
		return syscall.EBUSY
	}
	d.open = true
	return nil
}

func (d *device) Close() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.open = false
	return nil
}

func (d *device) checkOpen() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if !d.open {
		return fmt.Errorf("fakedevice: ioctl on a closed device: %w", os.ErrClosed)
	}
	return nil
}
