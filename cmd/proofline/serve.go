package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"k8s.io/klog/v2"

	"github.com/proofline/proofline/internal/buildinfo"
	"github.com/proofline/proofline/internal/durable"
	"github.com/proofline/proofline/internal/yamlstrict"
	"github.com/proofline/proofline/verifier/api"
	"github.com/proofline/proofline/verifier/service"
	"github.com/proofline/proofline/verifier/service/servicetest"
)

// serveConfig is the configuration file of `proofline serve` (YAML). The verifier's settings
// (service.Config) sit at the top level, the HTTP server's under `http:`. Unknown keys are
// errors. A complete example:
//
//	data_dir: /var/lib/proofline
//	issuer: https://verifier.example.com
//	policy: /etc/proofline/policy.yaml        # activated at the first start only
//	collateral: /var/lib/proofline-collateral # recorded PCS/KDS responses, offline; or live:
//	# collateral: {fetch: {enabled: true}}   # Intel PCS + AMD KDS, cached in DATA_DIR/collateral-cache
//	#                                        # (routes to a PCCS, budgets, refresh: service.CollateralConfig)
//	# collateral: {offline: true}            # air-gapped: only what `proofline collateral import` put in the cache
//	log: {origin: verifier.example.com/log}
//	tokens: {audience: [key-release], ttl: 10m}
//	nonce: {ttl: 5m}
//	queue: {workers: 8, size: 64}
//	alerts:                                   # verifier/alert/README.md; service.AlertsConfig
//	  webhooks: [{url: https://soc.example.com/hooks/proofline, secret_file: /etc/proofline/webhook-secret}]
//	  syslog: [{network: tcp, address: siem.example.com:601}]
//	  expect_every: 1h
//	self_check: {every: 10m}                  # the log's continuous fsck
//	log_level: info
//	http:
//	  listen: ":8443"
//	  tls: {cert_file: /etc/proofline/tls.crt, key_file: /etc/proofline/tls.key, client_ca_file: /etc/proofline/agents-ca.pem}
//	  tokens:
//	    - {name: key-release, role: relying-party, sha256: 3b0c…}
//	    - {name: alice, role: admin, sha256: 9f86…}
//
// Token names have no ':' or '/'. An agent with a client certificate from client_ca_file is the
// principal "mtls:<issuer>/<common name>" (<issuer>: 8 bytes of the SHA-256 of the issuing CA's
// public key, hex), never a token principal; record subjects are "agent:<name>" and
// "relying-party:<name>" (verifier/api.Config).
type serveConfig struct {
	service.Config `yaml:",inline"`
	// HTTP configures the HTTP server, TLS and the API tokens.
	HTTP api.Config `yaml:"http"`
	// LogLevel is debug, info, warn or error (default info).
	LogLevel string `yaml:"log_level"`
	// LogFormat is json or text (default json).
	LogFormat string `yaml:"log_format"`
}

// defaultDataDir is the data directory of a `proofline serve` run without a configuration file.
const defaultDataDir = "proofline-data"

// loadServeConfig reads the configuration file; path "" means the defaults.
func loadServeConfig(path string) (*serveConfig, error) {
	cfg := &serveConfig{}
	if path != "" {
		data, err := os.ReadFile(path)
		if err != nil {
			return nil, err
		}
		if err := yamlstrict.Decode(data, cfg); err != nil && !errors.Is(err, io.EOF) {
			return nil, fmt.Errorf("%s: %v", path, err)
		}
	}
	if cfg.DataDir == "" {
		cfg.DataDir = defaultDataDir
	}
	return cfg, nil
}

func (c *serveConfig) validate(testMode bool) error {
	errs := []error{c.Config.Validate(testMode), c.HTTP.Validate()}
	switch c.LogLevel {
	case "", "debug", "info", "warn", "error":
	default:
		errs = append(errs, fmt.Errorf("log_level %q: give debug, info, warn or error", c.LogLevel))
	}
	switch c.LogFormat {
	case "", "json", "text":
	default:
		errs = append(errs, fmt.Errorf("log_format %q: give json or text", c.LogFormat))
	}
	return errors.Join(errs...)
}

func (c *serveConfig) logger(w io.Writer) *slog.Logger {
	var level slog.Level
	level.UnmarshalText([]byte(c.LogLevel)) // validated; "" is info
	opts := &slog.HandlerOptions{Level: level}
	if c.LogFormat == "text" {
		return slog.New(slog.NewTextHandler(w, opts))
	}
	return slog.New(slog.NewJSONHandler(w, opts))
}

func runServe(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("proofline serve", flag.ContinueOnError)
	fs.SetOutput(stderr)
	configPath := fs.String("config", "", "configuration file (YAML); default: a data directory ./"+defaultDataDir+" and no API tokens")
	testMode := fs.Bool("test-mode", false, "accept test vendor roots; without a roots directory, appraise the simulated platforms of `proofline demo` (fake Intel and AMD PKIs), whose fake keys it writes to DATA_DIR/simulated-platforms.json for proofline-agent run --test-mode --sim-platforms. Every result says test_roots: true")
	listen := fs.String("listen", "", "address to serve on, overriding http.listen")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "Usage: proofline serve [--config FILE] [--test-mode] [--listen ADDR]")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return exitOK
		}
		return exitUsage
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "proofline serve: unexpected argument %q\n", fs.Arg(0))
		return exitUsage
	}
	cfg, err := loadServeConfig(*configPath)
	if err != nil {
		fmt.Fprintf(stderr, "proofline serve: %v\n", err)
		return exitUsage
	}
	if *listen != "" {
		cfg.HTTP.Listen = *listen
	}
	if err := cfg.validate(*testMode); err != nil {
		fmt.Fprintf(stderr, "proofline serve: the configuration needs changes:\n%v\n", indent(err.Error()))
		return exitUsage
	}
	ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stop()
	logger := cfg.logger(stderr)
	if err := serve(ctx, cfg, *testMode, logger, nil); err != nil {
		logger.Error("proofline serve stopped", slog.Any("error", err))
		return 1
	}
	return exitOK
}

// writeSimulatedPlatforms writes the fake keys of this run's simulated platforms to
// DATA_DIR/simulated-platforms.json (mode 0600, replaced at every start), where
// `proofline-agent run --test-mode --sim-platforms FILE` reads them to sign as the simulated VMs
// this verifier trusts.
func writeSimulatedPlatforms(dataDir string, plat *servicetest.Platforms, logger *slog.Logger) error {
	data, err := plat.Marshal()
	if err != nil {
		return err
	}
	path := filepath.Join(dataDir, servicetest.FileName)
	if err := durable.Replace(path, data, 0o600); err != nil {
		return fmt.Errorf("test mode: writing the simulated platforms: %w", err)
	}
	logger.Warn("test mode: wrote the simulated platforms' fake keys for proofline-agent run --test-mode --sim-platforms", slog.String("path", path))
	return nil
}

func indent(s string) string { return "  " + strings.ReplaceAll(s, "\n", "\n  ") }

// serve runs the verifier until ctx is done. ready, if set, is called with the listening address.
func serve(ctx context.Context, cfg *serveConfig, testMode bool, logger *slog.Logger, ready func(net.Addr)) error {
	routeKlog(logger)
	build, err := service.ExecutableDigest()
	if err != nil {
		return fmt.Errorf("hashing the executable: %w", err)
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	env := service.Env{TestMode: testMode, Logger: logger, Registerer: reg, Build: build}
	var plat *servicetest.Platforms
	if testMode && cfg.Roots == "" {
		if plat, err = servicetest.New(time.Now()); err != nil {
			return err
		}
		env.Roots, env.Collateral, env.InitialPolicy = plat.Roots, plat.Collateral, plat.PolicyYAML
		logger.Warn("test mode: appraising the simulated platforms (fake Intel and AMD PKIs); every result says test_roots: true")
	}
	if len(cfg.HTTP.Tokens) == 0 {
		logger.Warn("no API tokens configured (http.tokens): only /healthz, /readyz, /v1/challenge and the JWKS answer; agents may still use client certificates")
	}
	svc, err := service.Open(ctx, cfg.Config, env)
	if err != nil {
		return err
	}
	if plat != nil {
		if err := writeSimulatedPlatforms(cfg.DataDir, plat, logger); err != nil {
			svc.Close()
			return err
		}
	}
	svc.Start()
	srv, err := api.New(svc, cfg.HTTP, api.Options{Logger: logger, Registry: reg})
	if err != nil {
		svc.Close()
		return err
	}
	logger.Info("proofline verifier starting", slog.String("version", buildinfo.Version()), slog.String("data_dir", cfg.DataDir),
		slog.Bool("database", cfg.Database != ""), slog.Bool("test_mode", testMode))
	ln, err := (&net.ListenConfig{}).Listen(ctx, "tcp", cfg.HTTP.Addr())
	if err != nil {
		svc.Close()
		return fmt.Errorf("http.listen: %w", err)
	}
	if ready != nil {
		ready(ln.Addr())
	}
	serr := srv.Serve(ctx, ln)
	cerr := svc.Close()
	logger.Info("proofline verifier stopped")
	return errors.Join(serr, cerr)
}

// Tessera logs through klog, a process-wide logger that must be set before anything logs through
// it and never again. routeKlog sets it once, to a handler that forwards to the logger of the
// latest serve or demo, tagged component=tessera, with its routine info messages at debug level.
var (
	klogOnce   sync.Once
	klogTarget atomic.Pointer[slog.Logger]
)

func routeKlog(l *slog.Logger) {
	klogTarget.Store(l.With(slog.String("component", "tessera")))
	klogOnce.Do(func() { klog.SetSlogLogger(slog.New(klogHandler{})) })
}

// klogHandler forwards to klogTarget. Groups are flattened.
type klogHandler struct{ attrs []slog.Attr }

func (h klogHandler) Enabled(context.Context, slog.Level) bool { return true }

func (h klogHandler) Handle(ctx context.Context, r slog.Record) error {
	l := klogTarget.Load()
	if r.Level == slog.LevelInfo {
		r.Level = slog.LevelDebug
	}
	if l == nil || !l.Handler().Enabled(ctx, r.Level) {
		return nil
	}
	r.AddAttrs(h.attrs...)
	return l.Handler().Handle(ctx, r)
}

func (h klogHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return klogHandler{attrs: append(slices.Clip(h.attrs), as...)}
}

func (h klogHandler) WithGroup(string) slog.Handler { return h }
