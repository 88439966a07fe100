package agent

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"os/user"
	"strconv"
	"strings"
	"time"

	"github.com/proofline/proofline/attest/tpm"
	"github.com/proofline/proofline/internal/yamlstrict"
)

// TPMConfig says whether and what the agent quotes from the vTPM.
type TPMConfig struct {
	// Mode is auto (quote when the VM has a TPM device; the default), on (a TPM is required:
	// without one the agent does not start) or off. The simulated platforms have no vTPM.
	Mode string `yaml:"mode"`
	// PCRBank and PCRs are the quoted selection (default sha256, PCRs 0–9). They must equal the
	// verifier policy's tpm.pcr_bank and tpm.pcrs exactly, or the verifier rejects the quote.
	PCRBank string `yaml:"pcr_bank"`
	PCRs    []int  `yaml:"pcrs"`
}

// Config is the configuration file of `proofline-agent run` (YAML). Every field is optional
// except verifier.url and one credential (verifier.token_file, or client_cert_file and
// client_key_file); unknown keys are errors. A complete example:
//
//	verifier:
//	  url: https://verifier.example.com
//	  token_file: /etc/proofline-agent/token          # an API token of role agent, mode 0600
//	  ca_file: /etc/proofline-agent/verifier-ca.pem   # default: the system roots
//	  timeout: 30s
//	tee: auto
//	key_file: /var/lib/proofline-agent/key.pem
//	interval: 5m
//	jitter: 0.1
//	backoff: {initial: 1s, max: 5m}
//	event_logs: true
//	tpm: {mode: auto, pcr_bank: sha256, pcrs: [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]}
//	socket:
//	  path: /run/proofline-agent/agent.sock
//	  mode: "0660"
//	  group: proofline
//	  allow_uids: [1000]
//	  allow_gids: [1001]
//	log_level: info
//	log_format: text
type Config struct {
	// Verifier is the Proofline verifier to attest to.
	Verifier VerifierConfig `yaml:"verifier"`
	// TEE is where reports come from: auto (detect TDX or SEV-SNP), tdx or sev-snp; sim-tdx and
	// sim-snp (fake vendor keys) only with --test-mode. Default auto. replay:DIR is refused: a
	// recorded report cannot answer the verifier's fresh nonce.
	TEE string `yaml:"tee"`
	// KeyFile holds the agent's ECDSA P-256 key (PKCS #8 PEM, mode 0600), created at the first
	// start. Its public half is in every envelope's runtime_data (attest.RuntimeData.PublicKey),
	// so relying parties can wrap secrets to this VM. Default /var/lib/proofline-agent/key.pem.
	KeyFile string `yaml:"key_file"`
	// Interval is the time between two attestations once one succeeded (default 5m, at least
	// 10s; 1s with --test-mode). Keep it below the verifier's token TTL (tokens.ttl, default 10m): the agent also
	// re-attests when 80% of its token's lifetime has passed, whichever comes first.
	Interval time.Duration `yaml:"interval"`
	// Jitter shortens each interval by a random fraction up to Jitter (default 0.1, 0 to 0.5),
	// so a fleet started together drifts apart.
	Jitter *float64 `yaml:"jitter"`
	// Backoff paces retries after a failure.
	Backoff BackoffConfig `yaml:"backoff"`
	// EventLogs includes the TDX CCEL event log when the firmware publishes one, and with a vTPM
	// the TCG event log (default true).
	EventLogs *bool `yaml:"event_logs"`
	// TPM adds vTPM quotes to the evidence.
	TPM TPMConfig `yaml:"tpm"`
	// Socket is the local API for workloads on this VM.
	Socket SocketConfig `yaml:"socket"`
	// LogLevel is debug, info, warn or error (default info).
	LogLevel string `yaml:"log_level"`
	// LogFormat is text or json (default text; journald adds the time).
	LogFormat string `yaml:"log_format"`
}

// VerifierConfig is how the agent reaches and authenticates to the verifier.
type VerifierConfig struct {
	// URL is the verifier's base URL, e.g. https://verifier.example.com. Required. http:// is
	// accepted only for a loopback host or with --test-mode: the token would travel in clear.
	// The agent follows no redirects: give the address the verifier itself answers on.
	URL string `yaml:"url"`
	// TokenFile holds the agent's API token (role agent; its name becomes the record subject
	// agent:<name>), one line, mode 0600.
	TokenFile string `yaml:"token_file"`
	// ClientCertFile and ClientKeyFile authenticate the agent with a TLS client certificate
	// instead of (or besides) a token. Both or neither.
	ClientCertFile string `yaml:"client_cert_file"`
	ClientKeyFile  string `yaml:"client_key_file"`
	// CAFile holds the CA certificates (PEM) the verifier's TLS certificate must chain to;
	// default: the system roots.
	CAFile string `yaml:"ca_file"`
	// Timeout bounds one request to the verifier (default 30s).
	Timeout time.Duration `yaml:"timeout"`
}

// BackoffConfig paces retries: exponential backoff with full jitter. Retry n waits a random
// time between 0 and min(Max, Initial·2^(n-1)), added to the verifier's Retry-After if it sent
// one, so agents told to wait the same time do not come back together.
type BackoffConfig struct {
	// Initial is the cap of the first retry's wait (default 1s).
	Initial time.Duration `yaml:"initial"`
	// Max is the largest cap (default 5m).
	Max time.Duration `yaml:"max"`
}

// SocketConfig is the local API: HTTP on a unix socket. Access is checked twice: by the socket
// file's mode and group, and by the connecting process's credentials (SO_PEERCRED): its uid
// must be the agent's own, in AllowUIDs, or its gid in AllowGIDs.
type SocketConfig struct {
	// Path is the socket (default /run/proofline-agent/agent.sock). Its directory must exist.
	Path string `yaml:"path"`
	// Mode is the socket file's mode, octal, as a string (default "0600"; "0660" with Group).
	Mode string `yaml:"mode"`
	// Group is the group (name or number) the socket file is given, e.g. the workloads' group.
	Group string `yaml:"group"`
	// AllowUIDs are the uids besides the agent's own that may use the API.
	AllowUIDs []uint32 `yaml:"allow_uids"`
	// AllowGIDs are the gids whose processes may use the API. SO_PEERCRED reports a process's
	// effective primary gid only, not its supplementary groups.
	AllowGIDs []uint32 `yaml:"allow_gids"`
	// MaxRequest bounds a request body in bytes (default 16384, at most 1 MiB).
	MaxRequest int64 `yaml:"max_request"`
	// ReadTimeout bounds reading one request, headers and body (default 5s): slow clients are
	// disconnected.
	ReadTimeout time.Duration `yaml:"read_timeout"`
	// WriteTimeout bounds handling and answering one request, evidence collection included
	// (default 60s).
	WriteTimeout time.Duration `yaml:"write_timeout"`
}

// Defaults.
const (
	DefaultKeyFile    = "/var/lib/proofline-agent/key.pem"
	DefaultSocketPath = "/run/proofline-agent/agent.sock"
	DefaultInterval   = 5 * time.Minute
	DefaultJitter     = 0.1
	MinInterval       = 10 * time.Second
)

// TEE values.
const (
	TEEAuto   = "auto"
	TEETDX    = "tdx"
	TEESNP    = "sev-snp"
	TEESimTDX = "sim-tdx"
	TEESimSNP = "sim-snp"
)

// ReadConfig reads a configuration file and applies the defaults; it does not validate.
func ReadConfig(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var c Config
	if err := yamlstrict.Decode(data, &c); err != nil && !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("%s: %v", path, err)
	}
	return &c, nil
}

// WithDefaults returns c with every unset field at its default.
func (c Config) WithDefaults() Config {
	if c.TEE == "" {
		c.TEE = TEEAuto
	}
	if c.KeyFile == "" {
		c.KeyFile = DefaultKeyFile
	}
	if c.Interval == 0 {
		c.Interval = DefaultInterval
	}
	if c.Jitter == nil {
		j := DefaultJitter
		c.Jitter = &j
	}
	if c.Backoff.Initial == 0 {
		c.Backoff.Initial = time.Second
	}
	if c.Backoff.Max == 0 {
		c.Backoff.Max = 5 * time.Minute
	}
	if c.EventLogs == nil {
		t := true
		c.EventLogs = &t
	}
	if c.TPM.Mode == "" {
		c.TPM.Mode = TPMAuto
	}
	if c.TPM.PCRBank == "" {
		c.TPM.PCRBank = "sha256"
	}
	if c.TPM.PCRs == nil {
		c.TPM.PCRs = DefaultTPMPCRs
	}
	if c.Verifier.Timeout == 0 {
		c.Verifier.Timeout = 30 * time.Second
	}
	s := &c.Socket
	if s.Path == "" {
		s.Path = DefaultSocketPath
	}
	if s.Mode == "" {
		s.Mode = "0600"
		if s.Group != "" {
			s.Mode = "0660"
		}
	}
	if s.MaxRequest == 0 {
		s.MaxRequest = 16 << 10
	}
	if s.ReadTimeout == 0 {
		s.ReadTimeout = 5 * time.Second
	}
	if s.WriteTimeout == 0 {
		s.WriteTimeout = time.Minute
	}
	if c.LogLevel == "" {
		c.LogLevel = "info"
	}
	if c.LogFormat == "" {
		c.LogFormat = "text"
	}
	return c
}

// Validate checks a configuration (after WithDefaults) and says what to change. testMode is
// --test-mode.
func (c *Config) Validate(testMode bool) error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	switch c.TPM.Mode {
	case TPMAuto, TPMOn, TPMOff, "":
	default:
		bad("tpm.mode %q is not auto, on or off", c.TPM.Mode)
	}
	if _, ok := tpm.BankAlg(c.TPM.PCRBank); c.TPM.PCRBank != "" && (!ok || c.TPM.PCRBank == "sha1") {
		bad("tpm.pcr_bank %q is not sha256, sha384 or sha512", c.TPM.PCRBank)
	}
	for _, i := range c.TPM.PCRs {
		if i < 0 || i > 23 {
			bad("tpm.pcrs: %d is not a PCR index (0–23)", i)
		}
	}
	v := c.Verifier
	if v.URL == "" {
		bad("verifier.url is required: the verifier's base URL, e.g. https://verifier.example.com")
	} else if u, err := url.Parse(v.URL); err != nil || u.Host == "" || (u.Scheme != "https" && u.Scheme != "http") || u.RawQuery != "" || u.Fragment != "" {
		bad("verifier.url %q: give an absolute https:// URL without query, e.g. https://verifier.example.com", v.URL)
	} else if u.Scheme == "http" && !testMode && !isLoopback(u.Hostname()) {
		bad("verifier.url %q: use https:// (over http:// the agent's token and evidence travel in clear); plain http is accepted only for a loopback host or with --test-mode", v.URL)
	}
	if v.TokenFile == "" && v.ClientCertFile == "" {
		bad("verifier: give token_file (an API token of role agent) or client_cert_file and client_key_file: POST /v1/attest needs an authenticated agent")
	}
	if (v.ClientCertFile == "") != (v.ClientKeyFile == "") {
		bad("verifier: give both client_cert_file and client_key_file, or neither")
	}
	if v.Timeout < 0 {
		bad("verifier.timeout must not be negative")
	}
	switch {
	case c.TEE == TEEAuto || c.TEE == TEETDX || c.TEE == TEESNP:
	case c.TEE == TEESimTDX || c.TEE == TEESimSNP:
		if !testMode {
			bad("tee %s signs with the project's fake vendor keys and proves nothing about this machine; it needs --test-mode (tests and demos only)", c.TEE)
		}
	case strings.HasPrefix(c.TEE, "replay:"):
		bad("tee %s: a recorded report binds the nonce it was recorded for and cannot answer the verifier's fresh nonce, so run cannot use it; use auto, tdx or sev-snp on the VM (replay works with proofline-agent collect, for its recorded nonce only)", c.TEE)
	default:
		bad("tee %q is not one of auto, tdx, sev-snp, sim-tdx, sim-snp", c.TEE)
	}
	if minInterval := MinInterval; c.Interval < minInterval && (!testMode || c.Interval < time.Second) {
		if testMode {
			minInterval = time.Second
		}
		bad("interval is %v; give at least %v, e.g. 5m", c.Interval, minInterval)
	}
	if c.Jitter != nil && (*c.Jitter < 0 || *c.Jitter > 0.5) {
		bad("jitter is %v; give a fraction between 0 and 0.5, e.g. 0.1", *c.Jitter)
	}
	if c.Backoff.Initial <= 0 || c.Backoff.Max < c.Backoff.Initial {
		bad("backoff: initial (%v) must be positive and max (%v) at least initial", c.Backoff.Initial, c.Backoff.Max)
	}
	s := c.Socket
	if _, err := s.FileMode(); err != nil {
		bad("socket.mode %q: give an octal mode such as \"0660\" without setuid, setgid or sticky bits", s.Mode)
	}
	if s.MaxRequest <= 0 || s.MaxRequest > 1<<20 {
		bad("socket.max_request is %d; give 1 to %d bytes", s.MaxRequest, 1<<20)
	}
	if s.ReadTimeout <= 0 || s.WriteTimeout <= 0 {
		bad("socket.read_timeout and socket.write_timeout must be positive")
	}
	switch c.LogLevel {
	case "debug", "info", "warn", "error":
	default:
		bad("log_level %q: give debug, info, warn or error", c.LogLevel)
	}
	switch c.LogFormat {
	case "json", "text":
	default:
		bad("log_format %q: give text or json", c.LogFormat)
	}
	return errors.Join(errs...)
}

// FileMode returns the socket's mode.
func (s SocketConfig) FileMode() (os.FileMode, error) {
	m, err := strconv.ParseUint(s.Mode, 8, 32)
	if err != nil || m > 0o777 {
		return 0, fmt.Errorf("bad mode %q", s.Mode)
	}
	return os.FileMode(m), nil
}

// lookupGroup returns the gid of a group name or number.
func lookupGroup(g string) (int, error) {
	if n, err := strconv.ParseUint(g, 10, 31); err == nil {
		return int(n), nil
	}
	grp, err := user.LookupGroup(g)
	if err != nil {
		return 0, fmt.Errorf("no group %q on this machine: create it or give a gid", g)
	}
	n, err := strconv.Atoi(grp.Gid)
	if err != nil {
		return 0, fmt.Errorf("group %q has gid %q", g, grp.Gid)
	}
	return n, nil
}

func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
