package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"strings"
	"sync"

	"github.com/proofline/proofline/attest"
	"github.com/proofline/proofline/attest/tpm"
	"github.com/proofline/proofline/internal/agent"
	"github.com/proofline/proofline/internal/buildinfo"
	"github.com/proofline/proofline/internal/durable"
)

// maxTokenFile bounds the API token file.
const maxTokenFile = 4 << 10

func runRun(ctx context.Context, args []string, stderr io.Writer, e *env) int {
	flags := flag.NewFlagSet("proofline-agent run", flag.ContinueOnError)
	flags.SetOutput(stderr)
	configPath := flags.String("config", "", "the agent's configuration file (YAML, documented in README.md); required")
	tee := flags.String("tee", "", "override the configuration's tee: auto, tdx, sev-snp, or sim-tdx / sim-snp with --test-mode")
	testMode := flags.Bool("test-mode", false, "allow --tee sim-tdx and sim-snp, which sign with fake vendor keys, and plain http:// to any verifier; never use it on a real VM")
	simPlatforms := flags.String("sim-platforms", "", "test mode: the simulated platforms' fake keys to sign with, as proofline serve --test-mode writes them (DATA_DIR/simulated-platforms.json)")
	verbose := flags.Bool("verbose", false, "log debug details (overrides log_level)")
	flags.Usage = func() {
		fmt.Fprintln(stderr, "Usage: proofline-agent run --config FILE [--tee auto|tdx|sev-snp|sim-tdx|sim-snp] [--test-mode --sim-platforms FILE] [--verbose]")
		flags.PrintDefaults()
	}
	if err := flags.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return exitOK
		}
		return exitUsage
	}
	fail := func(code int, format string, a ...any) int {
		fmt.Fprintf(stderr, "proofline-agent run: "+format+"\n", a...)
		return code
	}
	if flags.NArg() > 0 {
		return fail(exitUsage, "unexpected argument %q", flags.Arg(0))
	}
	if *configPath == "" {
		return fail(exitUsage, "--config FILE is required (README.md documents the file; a minimal one names verifier.url and verifier.token_file)")
	}
	cfg, err := loadConfig(*configPath, *tee, *testMode, *simPlatforms)
	if err != nil {
		return fail(exitUsage, "%v", err)
	}
	if *verbose {
		cfg.LogLevel = "debug"
	}
	log := newLogger(stderr, cfg.LogLevel, cfg.LogFormat)
	if err := daemon(ctx, cfg, *testMode, *simPlatforms, log, e); err != nil {
		return fail(exitFailed, "%v", err)
	}
	return exitOK
}

// loadConfig reads and validates the configuration file, with --tee (if given) replacing its tee.
func loadConfig(path, tee string, testMode bool, simPlatforms string) (*agent.Config, error) {
	read, err := agent.ReadConfig(path)
	if err != nil {
		return nil, err
	}
	cfg := read.WithDefaults()
	if tee != "" {
		cfg.TEE = tee
	}
	errs := []error{cfg.Validate(testMode)}
	sim := cfg.TEE == agent.TEESimTDX || cfg.TEE == agent.TEESimSNP
	switch {
	case sim && testMode && simPlatforms == "":
		errs = append(errs, fmt.Errorf("tee %s needs --sim-platforms FILE: the fake keys the verifier trusts (proofline serve --test-mode writes DATA_DIR/simulated-platforms.json)", cfg.TEE))
	case !sim && simPlatforms != "":
		errs = append(errs, errors.New("--sim-platforms is for --tee sim-tdx or sim-snp (with --test-mode) only"))
	}
	if sim && cfg.TPM.Mode == agent.TPMOn {
		errs = append(errs, fmt.Errorf("tpm.mode is on, which requires a vTPM, but the simulated platforms (tee %s) have none: set tpm.mode to auto or off", cfg.TEE))
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("the configuration needs changes:\n  %s", strings.ReplaceAll(err.Error(), "\n", "\n  "))
	}
	return &cfg, nil
}

// checkConfigFile validates a production configuration file (no test mode).
func checkConfigFile(path string) error {
	_, err := loadConfig(path, "", false, "")
	return err
}

func newLogger(w io.Writer, level, format string) *slog.Logger {
	var l slog.Level
	l.UnmarshalText([]byte(level)) // validated
	opts := &slog.HandlerOptions{Level: l}
	if format == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

// daemon runs the agent loop and the local API until ctx is done.
func daemon(ctx context.Context, cfg *agent.Config, testMode bool, simPlatforms string, log *slog.Logger, e *env) error {
	client, err := verifierClient(cfg.Verifier)
	if err != nil {
		return err
	}
	key, err := agent.LoadOrCreateKey(cfg.KeyFile, log)
	if err != nil {
		return fmt.Errorf("key_file: %w", err)
	}
	collector, err := newCollector(ctx, cfg, simPlatforms, log, e)
	if err != nil {
		return err
	}
	if testMode {
		log.Warn("TEST MODE: results of simulated platforms say nothing about this machine", "tee", cfg.TEE)
	}
	var akDigest string
	if hw, ok := collector.(*agent.Hardware); ok && hw.VTPM != nil {
		defer func() {
			if err := hw.VTPM.Close(); err != nil {
				log.Warn("closing the vTPM", "error", err)
			}
		}()
		akDigest = hw.VTPM.AKDigest()
	}
	a, err := agent.New(agent.Options{
		Verifier: client, Collector: collector, Key: key, TPMAKDigest: akDigest,
		Interval: cfg.Interval, Jitter: *cfg.Jitter, Backoff: agent.Backoff{Initial: cfg.Backoff.Initial, Max: cfg.Backoff.Max},
		Clock: e.clock, Logger: log,
	})
	if err != nil {
		return err
	}
	sock, err := agent.ListenSocket(cfg.Socket, a, agent.SocketOptions{Logger: log.With("component", "local-api")})
	if err != nil {
		return err
	}
	log.Info("proofline-agent starting", "version", buildinfo.Version(), "verifier", cfg.Verifier.URL, "tee", cfg.TEE, "socket", sock.Path())
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	var serr error
	wg.Go(func() {
		serr = sock.Serve(ctx)
		cancel() // the local API failing stops the agent: the unit restarts it
	})
	a.Run(ctx)
	cancel()
	wg.Wait()
	if serr != nil {
		return fmt.Errorf("local API: %w", serr)
	}
	return nil
}

// verifierClient builds the HTTP client of the verifier: the token, the CA, the client
// certificate.
func verifierClient(v agent.VerifierConfig) (*agent.Client, error) {
	c := &agent.Client{URL: v.URL}
	if v.TokenFile != "" {
		b, err := durable.ReadPrivate(v.TokenFile, maxTokenFile)
		if err != nil {
			return nil, fmt.Errorf("verifier.token_file: %w", err)
		}
		c.Token = strings.TrimSpace(string(b))
		if c.Token == "" || strings.ContainsAny(c.Token, " \t\r\n") {
			return nil, fmt.Errorf("verifier.token_file %s must hold the API token on one line", v.TokenFile)
		}
	}
	tc := &tls.Config{MinVersion: tls.VersionTLS12}
	if v.CAFile != "" {
		pemBytes, err := os.ReadFile(v.CAFile)
		if err != nil {
			return nil, fmt.Errorf("verifier.ca_file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pemBytes) {
			return nil, fmt.Errorf("verifier.ca_file %s holds no PEM certificate", v.CAFile)
		}
		tc.RootCAs = pool
	}
	if v.ClientCertFile != "" {
		cert, err := tls.LoadX509KeyPair(v.ClientCertFile, v.ClientKeyFile)
		if err != nil {
			return nil, fmt.Errorf("verifier.client_cert_file: %w", err)
		}
		tc.Certificates = []tls.Certificate{cert}
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = tc
	// agent.Client follows no redirects whatever this client says, so the token never goes to
	// another scheme or port.
	c.HTTP = &http.Client{Transport: tr, Timeout: v.Timeout}
	return c, nil
}

// newCollector picks the evidence source: the simulated platforms (test mode), or this VM's
// TDX or SEV-SNP interfaces, detected once at start-up for "auto", plus the vTPM as tpm.mode
// says. The caller must Close the returned Hardware's VTPM.
func newCollector(ctx context.Context, cfg *agent.Config, simPlatforms string, log *slog.Logger, e *env) (agent.Collector, error) {
	switch cfg.TEE {
	case agent.TEESimTDX:
		return &agent.Simulated{Platform: attest.PlatformTDX, Platforms: agent.PlatformsFile(simPlatforms)}, nil
	case agent.TEESimSNP:
		return &agent.Simulated{Platform: attest.PlatformSNP, Platforms: agent.PlatformsFile(simPlatforms)}, nil
	}
	hw := &agent.Hardware{TDX: e.tdx, SNP: e.snp, EventLogs: *cfg.EventLogs, Logger: log}
	switch cfg.TEE {
	case agent.TEETDX:
		hw.Platform = attest.PlatformTDX
	case agent.TEESNP:
		hw.Platform = attest.PlatformSNP
	default:
		found, err := e.prober.Detect(ctx)
		if err != nil {
			return nil, err
		}
		log.Info("detected", "platform", found.Platform, "configfs_tsm_provider", found.TSMProvider, "vtpm", found.TPMDevice)
		hw.Platform = found.Platform
	}
	vt, err := agent.OpenVTPM(cfg.TPM.Mode, cfg.TPM.PCRBank, cfg.TPM.PCRs, e.openTPM)
	switch {
	case errors.Is(err, tpm.ErrNoTPM):
		return nil, fmt.Errorf("tpm.mode is on, so a vTPM is required: %w; to attest without one, set tpm.mode to auto (quote when a TPM exists) or off", err)
	case err != nil:
		return nil, fmt.Errorf("tpm (mode %s): %w", cfg.TPM.Mode, err)
	case vt != nil:
		hw.VTPM = vt
		log.Info("vTPM quotes included", "pcr_bank", vt.Bank, "pcrs", vt.PCRs, "ak_sha256", vt.AKDigest())
	case cfg.TPM.Mode == agent.TPMAuto:
		log.Info("no vTPM found: the evidence carries no vTPM quote (under a verifier policy with a tpm section the result is contraindicated, tpm_missing)")
	}
	return hw, nil
}
