package agent

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"sync"

	"github.com/proofline/proofline/attest"
	"github.com/proofline/proofline/attest/attesttest/fakedevice"
	"github.com/proofline/proofline/attest/snp"
	"github.com/proofline/proofline/attest/tdx"
	"github.com/proofline/proofline/internal/durable"
	"github.com/proofline/proofline/verifier/service/servicetest"
)

// Collector produces an evidence envelope whose hardware report binds nonce and runtimeData:
// REPORT_DATA = attest.ReportData(nonce, runtimeData), with Nonce and RuntimeData set to them.
type Collector interface {
	Collect(ctx context.Context, nonce, runtimeData []byte) (*attest.Evidence, error)
}

// Hardware collects from this VM's guest interfaces (attest/tdx, attest/snp).
type Hardware struct {
	// Platform is attest.PlatformTDX or attest.PlatformSNP (attest/detect chooses it for "auto").
	Platform attest.Platform
	TDX      tdx.Collector
	SNP      snp.Collector
	// EventLogs includes the TDX CCEL event log when the firmware publishes one.
	EventLogs bool
	// VTPM, when set, adds a vTPM quote (and the TCG event log when EventLogs is set); runtime
	// data must then name its attestation key (Options.TPMAKDigest).
	VTPM *VTPM
	// Logger receives what was collected and skipped; nil discards.
	Logger *slog.Logger
}

// Collect implements Collector.
func (h *Hardware) Collect(ctx context.Context, nonce, runtimeData []byte) (*attest.Evidence, error) {
	log := h.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	ev := &attest.Evidence{Version: attest.Version, Platform: h.Platform, Nonce: nonce, RuntimeData: runtimeData}
	reportData := attest.ReportData(nonce, runtimeData)
	switch h.Platform {
	case attest.PlatformTDX:
		c := h.TDX
		c.Logger = log
		quote, err := c.Collect(ctx, reportData)
		if err != nil {
			return nil, err
		}
		ev.Report = quote
		if h.EventLogs {
			ccel, err := c.ReadCCEL()
			switch {
			case err == nil:
				ev.EventLogs = &attest.EventLogs{CCEL: ccel}
			case errors.Is(err, fs.ErrNotExist):
				log.Debug("no CCEL event log to include (the firmware publishes none, or the kernel is older than 6.4)")
			default:
				log.Warn("the CCEL event log is not included", "error", err)
			}
		}
	case attest.PlatformSNP:
		c := h.SNP
		c.Logger = log
		report, certs, err := c.Collect(ctx, reportData)
		if err != nil {
			return nil, err
		}
		ev.Report, ev.Certificates = report, certs
	default:
		return nil, fmt.Errorf("platform %q has no collector", h.Platform)
	}
	if h.VTPM != nil {
		if err := h.VTPM.add(ev, nonce, runtimeData, h.EventLogs); err != nil {
			return nil, err
		}
	}
	return ev, nil
}

// Simulated collects from the fake guest interfaces of a simulated platform
// (attest/attesttest/fakedevice over servicetest's fake vendor PKIs). Test mode only.
type Simulated struct {
	// Platform is attest.PlatformTDX or attest.PlatformSNP.
	Platform attest.Platform
	// Platforms returns the platforms to sign as; called at every collection.
	Platforms func() (*servicetest.Platforms, error)
}

// Collect implements Collector.
func (s *Simulated) Collect(ctx context.Context, nonce, runtimeData []byte) (*attest.Evidence, error) {
	plat, err := s.Platforms()
	if err != nil {
		return nil, err
	}
	ev := &attest.Evidence{Version: attest.Version, Platform: s.Platform, Nonce: nonce, RuntimeData: runtimeData}
	reportData := attest.ReportData(nonce, runtimeData)
	switch s.Platform {
	case attest.PlatformTDX:
		dev := fakedevice.NewTDX(plat.Intel)
		c := tdx.Collector{TSM: dev.TSM, OpenDevice: dev.OpenDevice}
		if ev.Report, err = c.Collect(ctx, reportData); err != nil {
			return nil, fmt.Errorf("simulated TDX: %w", err)
		}
	case attest.PlatformSNP:
		dev := fakedevice.NewSNP(plat.AMD)
		c := snp.Collector{TSM: dev.TSM, OpenDevice: dev.OpenDevice}
		if ev.Report, ev.Certificates, err = c.Collect(ctx, reportData); err != nil {
			return nil, fmt.Errorf("simulated SEV-SNP: %w", err)
		}
	default:
		return nil, fmt.Errorf("platform %q has no simulator", s.Platform)
	}
	return ev, nil
}

// maxPlatformsFile bounds the simulated platforms file.
const maxPlatformsFile = 1 << 20

// PlatformsFile returns a Simulated.Platforms that reads the file `proofline serve --test-mode`
// writes (DATA_DIR/simulated-platforms.json, servicetest.Marshal) at every collection and
// rebuilds the platforms when its content changed, so an agent follows a restarted verifier.
func PlatformsFile(path string) func() (*servicetest.Platforms, error) {
	var (
		mu     sync.Mutex
		digest [32]byte
		cached *servicetest.Platforms
	)
	return func() (*servicetest.Platforms, error) {
		data, err := readLimited(path, maxPlatformsFile)
		if err != nil {
			return nil, fmt.Errorf("simulated platforms: %w (proofline serve --test-mode writes them to DATA_DIR/%s at start-up)", err, servicetest.FileName)
		}
		sum := sha256.Sum256(data)
		mu.Lock()
		defer mu.Unlock()
		if cached != nil && sum == digest {
			return cached, nil
		}
		p, err := servicetest.Unmarshal(data)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		cached, digest = p, sum
		return p, nil
	}
}

func readLimited(path string, limit int64) ([]byte, error) { return durable.ReadLimited(path, limit) }

// PlatformsFunc returns a Simulated.Platforms that always returns p.
func PlatformsFunc(p *servicetest.Platforms) func() (*servicetest.Platforms, error) {
	return func() (*servicetest.Platforms, error) { return p, nil }
}
