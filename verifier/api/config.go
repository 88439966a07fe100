package api

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/proofline/proofline/attest"
	"github.com/proofline/proofline/verifier/service"
)

// Config is the HTTP part of the `proofline serve` configuration file (the `http:` section).
type Config struct {
	// Listen is the TCP address to serve on. Default ":8443" with TLS, ":8080" without.
	Listen string `yaml:"listen"`
	// TLS serves HTTPS; without it the server speaks plain HTTP (put it behind a TLS-terminating
	// proxy, or use it on a laptop).
	TLS TLSConfig `yaml:"tls"`
	// Tokens are the API tokens and the principal each authenticates. Tokens are stored as their
	// SHA-256 only: generate one with `head -c 32 /dev/urandom | base64 | tr -d '=+/'` and store
	// `printf %s "$TOKEN" | sha256sum`.
	//
	// These are bootstrap tokens: listed by GET /v1/tokens with source "config", never revoked
	// or expired through the API (edit this file and restart every replica). Further tokens are
	// created and revoked at runtime by admins (POST /v1/tokens, `proofline access`), kept in the
	// state database and recorded as access_change records (tokens.go).
	Tokens []TokenConfig `yaml:"tokens"`
	// MaxAttestBody bounds a POST /v1/attest body in bytes (default 1 MiB; at most 16 MiB).
	MaxAttestBody int64 `yaml:"max_attest_body"`
	// MaxBody bounds every other request body in bytes (default 1 MiB, the largest policy).
	MaxBody int64 `yaml:"max_body"`
	// ShutdownTimeout is how long a graceful shutdown waits for requests in flight (default 15s).
	ShutdownTimeout time.Duration `yaml:"shutdown_timeout"`
	// ReadTimeout bounds reading one request, body included (default 30s).
	ReadTimeout time.Duration `yaml:"read_timeout"`
	// WriteTimeout bounds writing one response (default 60s).
	WriteTimeout time.Duration `yaml:"write_timeout"`
	// IdleTimeout closes idle keep-alive connections (default 2m).
	IdleTimeout time.Duration `yaml:"idle_timeout"`
}

// TLSConfig configures HTTPS and client certificates.
type TLSConfig struct {
	// CertFile and KeyFile are the server certificate chain and key (PEM). Both or neither.
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
	// ClientCAFile, when set, lets agents authenticate with a client certificate issued by one
	// of these CAs (PEM). A certificate authenticates the agent "mtls:<issuer>/<common name>",
	// where <issuer> is the first 8 bytes, in hex, of the SHA-256 of the issuing CA's
	// SubjectPublicKeyInfo: the same common name from two CAs is two agents, and no certificate
	// can take the name of a token principal (token names have no ':' or '/'). The common name
	// must be 1-128 bytes without ':', '/', spaces or control characters. Such an agent's records
	// have the subject "agent:mtls:<issuer>/<common name>". Requires CertFile and KeyFile.
	ClientCAFile string `yaml:"client_ca_file"`
}

// TokenConfig is one API token.
type TokenConfig struct {
	// Name identifies the principal: an agent's VM id, a relying party's service name, a
	// person. Required: 1-128 bytes without ':', '/', spaces or control characters (':' and '/'
	// are reserved for role prefixes and client certificate principals, so a token name never
	// collides with either). An agent's records have the subject "agent:<name>", a relying
	// party's submissions "relying-party:<name>".
	Name string `yaml:"name"`
	// Role is agent, relying-party, admin or auditor. Required.
	Role service.Role `yaml:"role"`
	// SHA256 is the lower-case hex SHA-256 of the token. Required.
	SHA256 string `yaml:"sha256"`
}

// Defaults.
const (
	DefaultMaxBody  = 1 << 20
	defaultShutdown = 15 * time.Second
)

// Addr is the address to listen on: Listen, or its default.
func (c Config) Addr() string {
	switch {
	case c.Listen != "":
		return c.Listen
	case c.TLS.CertFile != "":
		return ":8443"
	}
	return ":8080"
}

func (c Config) withDefaults() Config {
	c.Listen = c.Addr()
	if c.MaxAttestBody == 0 {
		c.MaxAttestBody = DefaultMaxBody
	}
	if c.MaxBody == 0 {
		c.MaxBody = DefaultMaxBody
	}
	if c.ShutdownTimeout == 0 {
		c.ShutdownTimeout = defaultShutdown
	}
	if c.ReadTimeout == 0 {
		c.ReadTimeout = 30 * time.Second
	}
	if c.WriteTimeout == 0 {
		c.WriteTimeout = 60 * time.Second
	}
	if c.IdleTimeout == 0 {
		c.IdleTimeout = 2 * time.Minute
	}
	return c
}

// Validate checks the configuration and says what to change.
func (c *Config) Validate() error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf("http."+format, args...)) }
	if (c.TLS.CertFile == "") != (c.TLS.KeyFile == "") {
		bad("tls: give both cert_file and key_file, or neither")
	}
	if c.TLS.ClientCAFile != "" && c.TLS.CertFile == "" {
		bad("tls.client_ca_file needs cert_file and key_file: client certificates need TLS")
	}
	if c.MaxAttestBody < 0 || c.MaxAttestBody > attest.MaxEnvelopeSize {
		bad("max_attest_body is %d; give 1 to %d bytes", c.MaxAttestBody, attest.MaxEnvelopeSize)
	}
	if c.MaxBody < 0 {
		bad("max_body must not be negative")
	}
	if c.ShutdownTimeout < 0 || c.ReadTimeout < 0 || c.WriteTimeout < 0 || c.IdleTimeout < 0 {
		bad("timeouts must not be negative")
	}
	names := map[string]bool{}
	hashes := map[string]bool{}
	for i, t := range c.Tokens {
		switch {
		case t.Name == "":
			bad("tokens[%d]: name is required", i)
		case service.ValidName(t.Name) != nil:
			bad("tokens[%d]: %v", i, service.ValidName(t.Name))
		case !t.Role.Valid():
			bad("tokens[%d] (%s): role %q is not one of agent, relying-party, admin, auditor", i, t.Name, t.Role)
		}
		h, err := hex.DecodeString(t.SHA256)
		if err != nil || len(h) != 32 {
			bad("tokens[%d] (%s): sha256 must be the 64 hex digits of the token's SHA-256 (printf %%s \"$TOKEN\" | sha256sum)", i, t.Name)
		}
		key := string(t.Role) + ":" + t.Name
		if names[key] {
			bad("tokens[%d]: %s is listed twice; give each principal one token", i, key)
		}
		// By the decoded hash, not its spelling: the same token in upper- and lower-case hex
		// would otherwise authenticate as whichever principal is listed last.
		if len(h) == 32 && hashes[string(h)] {
			bad("tokens[%d] (%s): the same token is listed twice (one token must name one principal)", i, t.Name)
		}
		names[key], hashes[string(h)] = true, true
	}
	return errors.Join(errs...)
}

// tlsConfig builds the server's TLS configuration, or nil without TLS.
func (c Config) tlsConfig() (*tls.Config, error) {
	if c.TLS.CertFile == "" {
		return nil, nil
	}
	cert, err := tls.LoadX509KeyPair(c.TLS.CertFile, c.TLS.KeyFile)
	if err != nil {
		return nil, fmt.Errorf("http.tls: %w", err)
	}
	tc := &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	if c.TLS.ClientCAFile != "" {
		pemBytes, err := os.ReadFile(c.TLS.ClientCAFile)
		if err != nil {
			return nil, fmt.Errorf("http.tls.client_ca_file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pemBytes) {
			return nil, fmt.Errorf("http.tls.client_ca_file %s holds no PEM certificate", c.TLS.ClientCAFile)
		}
		// Verified if given: agents may use a certificate, everyone else a token.
		tc.ClientCAs, tc.ClientAuth = pool, tls.VerifyClientCertIfGiven
	}
	return tc, nil
}
