package service

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"database/sql"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	"github.com/go-sql-driver/mysql"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/mod/sumdb/note"
	"gopkg.in/yaml.v3"

	"github.com/proofline/proofline/evidence"
	"github.com/proofline/proofline/evidence/blob"
	"github.com/proofline/proofline/evidence/index"
	"github.com/proofline/proofline/evidence/log"
	"github.com/proofline/proofline/internal/durable"
	"github.com/proofline/proofline/verifier/collateral"
	"github.com/proofline/proofline/verifier/nonce"
	"github.com/proofline/proofline/verifier/policy"
	"github.com/proofline/proofline/verifier/roots"
	"github.com/proofline/proofline/verifier/token"
)

// Names in the data directory (see the package documentation for the layout).
const (
	LogDirName = "log"
	// LogKeyFileName is the log's checkpoint key with Database (log.LoadOrGenerateKey; its
	// verifier key is log-key.pub). Without Database the POSIX log keeps it as log/note.key.
	LogKeyFileName     = "log-key"
	posixLogKey        = "note.key"
	KeysDirName        = "keys"
	KeyHistoryFileName = "history.json"
	TokenKeyFileName   = "token-key.pem"
	IndexFileName      = "index.db"
	BlobsDirName       = "blobs"
)

// Config is the verifier service's part of the `proofline serve` configuration file (YAML). Every
// field is optional except where its comment says otherwise; Validate says what to change.
type Config struct {
	// DataDir holds the verifier's state: keys, the nonce secret and, without Database, the
	// evidence log, the index, used nonces, blobs and policies (layout in verifier/service's
	// package documentation). Created with mode 0700 if missing. Required.
	DataDir string `yaml:"data_dir"`
	// Database is the DSN of the MySQL or MariaDB database that verifier replicas share, in
	// go-sql-driver/mysql form without parameters, e.g. "proofline:pw@tcp(db:3306)/proofline".
	// When set, the evidence log, the index, used nonces, blobs and policies live there (the
	// server needs innodb_flush_log_at_trx_commit=1); keys stay in DataDir. Replicas must share
	// the nonce secret (nonce.secret_file) and the record key history (keys/ in DataDir).
	Database string `yaml:"database"`
	// Log configures the evidence log.
	Log LogConfig `yaml:"log"`
	// Issuer is the "iss" of result tokens, normally the verifier's public URL. Default
	// "proofline".
	Issuer string `yaml:"issuer"`
	// Tokens configures the result tokens.
	Tokens TokenConfig `yaml:"tokens"`
	// Nonce configures the challenge nonces.
	Nonce NonceConfig `yaml:"nonce"`
	// Policy is a policy file (verifier/policy/README.md) activated at the first start, when the
	// policy store holds no active policy. Later changes go through the policy API
	// (POST /v1/policies?activate=true, admin): editing this file changes nothing, and a start
	// that finds it different from the active policy logs a warning naming both digests.
	// Default: the built-in default policy (every security rule, no reference values: results
	// are at best "warning").
	Policy string `yaml:"policy"`
	// Collateral says where vendor collateral comes from: a directory of recorded responses
	// (offline), or live fetching from Intel PCS and AMD KDS with a persistent cache refreshed in
	// the background (see CollateralConfig). Written as a plain string it is a recorded
	// directory (`collateral: /var/lib/proofline-collateral`). Without either no collateral is
	// available and every verdict that needs collateral is contraindicated
	// (collateral_unavailable).
	Collateral CollateralConfig `yaml:"collateral"`
	// Roots is a directory of *.pem trust anchors replacing the built-in Intel and AMD roots. Such
	// roots are test roots: the service refuses them unless started with --test-mode. Give each
	// AMD product line's ASK (and ASVK) beside its ARK: live collateral keeps only documents
	// that chain to these roots, and a fetched VCEK chains through the ASK.
	Roots string `yaml:"roots"`
	// Queue bounds the work in front of verification.
	Queue QueueConfig `yaml:"queue"`
	// Alerts says where alerts go (signed webhooks, syslog/CEF) and which subjects must attest
	// how often (AlertsConfig; the schema receivers rely on is verifier/alert/README.md).
	Alerts AlertsConfig `yaml:"alerts"`
	// SelfCheck configures the continuous self-check of the evidence log (SelfCheckConfig).
	SelfCheck SelfCheckConfig `yaml:"self_check"`
}

// CollateralConfig says where the verifier gets vendor collateral (TCB info, QE identity, CRLs,
// VCEKs and cert chains). Either Dir or Fetch, not both. A plain string in YAML is Dir, the form
// of earlier configurations. Example of live fetching through a PCCS for Intel and from AMD KDS
// directly:
//
//	collateral:
//	  fetch:
//	    enabled: true
//	    intel_update: early
//	    ca_file: /etc/proofline/pccs-ca.pem
//	    routes:
//	      - {prefix: "https://api.trustedservices.intel.com/", base: "https://pccs.internal:8081/", every: 100ms, burst: 10}
//	      - {prefix: "https://certificates.trustedservices.intel.com/", every: 1s, burst: 10}
//	      - {prefix: "https://kdsintf.amd.com/", every: 10s, burst: 1}
//	  cache_dir: /var/lib/proofline/collateral-cache
//	  expiry_warning: 6h
type CollateralConfig struct {
	// Dir is a directory of recorded vendor collateral responses (*.json, the format of
	// `proofline verify --collateral`), served as recorded: nothing is fetched or refreshed.
	Dir string `yaml:"dir"`
	// Fetch fetches collateral live and keeps it fresh.
	Fetch FetchConfig `yaml:"fetch"`
	// CacheDir keeps fetched collateral across restarts (collateral.DirStore). Default
	// DataDir/collateral-cache, each replica its own; with Database and no CacheDir, the cache
	// is two tables of that database (collateral.SQLStore), shared by every replica: a document
	// one replica fetched is never fetched again by another.
	CacheDir string `yaml:"cache_dir"`
	// Offline serves the collateral in CacheDir and never fetches: an air-gapped verifier whose
	// cache is filled by `proofline collateral import` (a signed bundle exported by a connected
	// verifier). A document the cache lacks, or holds past its nextUpdate, is unavailable
	// (collateral_unavailable) until a fresh bundle is imported. A running verifier reads an
	// imported document the next time it needs one it lacks or holds expired, and looks for newer
	// ones every minute (Settings.CollateralReloadInterval): an imported TCB recovery replaces the
	// TCB info it holds then, not when that one expires. Each replacement of a held document is a
	// collateral_update record, as for a fetched one; one imported while the verifier was stopped
	// is recorded at its start when it differs from the document its latest verdicts used
	// (recordCollateralChangedAtRest). Nothing is fetched. Not with Dir or Fetch.
	Offline bool `yaml:"offline"`
	// ExpiryWarning: /readyz reports degraded (collateral_expiring) while a collateral document
	// the verifier holds expires within this long, or has expired, and could not be refreshed (a
	// recorded Dir is never refreshed). Default 6h.
	ExpiryWarning time.Duration `yaml:"expiry_warning"`
}

// UnmarshalYAML accepts a plain string (Dir) or a mapping, whose keys are checked strictly.
func (c *CollateralConfig) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind == yaml.ScalarNode {
		*c = CollateralConfig{}
		return n.Decode(&c.Dir)
	}
	// Node.Decode does not inherit the file decoder's KnownFields: decode the mapping again with
	// a strict decoder, so that a misspelt key is an error here as everywhere else.
	b, err := yaml.Marshal(n)
	if err != nil {
		return err
	}
	type plain CollateralConfig
	var v plain
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(&v); err != nil {
		var te *yaml.TypeError
		if !errors.As(err, &te) {
			return fmt.Errorf("collateral (line %d): %w", n.Line, err)
		}
		// Line numbers in te are those of the re-encoded mapping: name the keys instead.
		msgs := make([]string, len(te.Errors))
		for i, m := range te.Errors {
			if k := unknownKey.FindStringSubmatch(m); k != nil {
				m = fmt.Sprintf("unknown key %q in %s", k[1], sectionNames[k[2]])
			} else if _, rest, ok := strings.Cut(m, ": "); ok {
				m = rest
			}
			msgs[i] = m
		}
		return fmt.Errorf("collateral (line %d): %s", n.Line, strings.Join(msgs, "; "))
	}
	*c = CollateralConfig(v)
	return nil
}

var (
	unknownKey   = regexp.MustCompile(`field (\S+) not found in type service\.(\w+)`)
	sectionNames = map[string]string{"plain": "collateral", "FetchConfig": "collateral.fetch", "RouteConfig": "a collateral.fetch route"}
)

// FetchConfig configures live collateral fetching (collateral.Fetcher behind a collateral.Cache,
// refreshed by a collateral.Refresher; every replaced document is a collateral_update record).
type FetchConfig struct {
	// Enabled turns live fetching on.
	Enabled bool `yaml:"enabled"`
	// Routes map the canonical vendor URLs to the servers asked: the vendors, a PCCS or a mirror,
	// each with its request budget. Default: Intel PCS, the Intel certificates host and AMD KDS
	// themselves (collateral.DefaultRoutes). A URL no route matches is never fetched.
	Routes []RouteConfig `yaml:"routes"`
	// IntelUpdate is the Intel PCS update parameter: "standard" (the default) or "early" (TCB
	// recovery collateral as soon as Intel publishes it).
	IntelUpdate string `yaml:"intel_update"`
	// Timeout bounds one HTTP request. Default 30s; between 1s and 5m.
	Timeout time.Duration `yaml:"timeout"`
	// MaxWait bounds how long one fetch waits for its host's budget and Retry-After. Default 10m;
	// between 1s and 1h.
	MaxWait time.Duration `yaml:"max_wait"`
	// CAFile holds PEM CA certificates trusted for the collateral servers besides the system
	// roots (a PCCS with its own certificate).
	CAFile string `yaml:"ca_file"`
	// RefreshInterval is the time between background refresh passes. Default 15m.
	RefreshInterval time.Duration `yaml:"refresh_interval"`
	// RefreshHorizon: a cached document is refetched once its nextUpdate is this close (or half
	// its validity, if shorter). Default 24h.
	RefreshHorizon time.Duration `yaml:"refresh_horizon"`
	// RefetchEvery: a cached document is also refetched when it was not asked for this long, so
	// that a TCB recovery published before the old TCB info expires arrives. Default 24h; between
	// 1m and 168h (a week), never "never": a recovery must arrive before the old TCB info expires.
	RefetchEvery time.Duration `yaml:"refetch_every"`
}

// RouteConfig is one collateral.Route.
type RouteConfig struct {
	// Prefix selects canonical URLs: a prefix ending in "/" (e.g.
	// "https://api.trustedservices.intel.com/") or one exact URL.
	Prefix string `yaml:"prefix"`
	// Base replaces Prefix in the URL asked, e.g. a PCCS "https://pccs.internal:8081/". Empty:
	// the vendor itself.
	Base string `yaml:"base"`
	// Every and Burst are the request budget of Base's host: at most Burst at once, refilled at
	// one per Every (0: no budget; Retry-After is still honoured).
	Every time.Duration `yaml:"every"`
	Burst int           `yaml:"burst"`
}

func (f *FetchConfig) routes() []collateral.Route {
	if f.Routes == nil {
		return nil
	}
	out := make([]collateral.Route, len(f.Routes))
	for i, r := range f.Routes {
		out[i] = collateral.Route{Prefix: r.Prefix, Base: r.Base, Every: r.Every, Burst: r.Burst}
	}
	return out
}

// DefaultCollateralCacheDir is the collateral cache's directory in the data directory.
const DefaultCollateralCacheDir = "collateral-cache"

// LogConfig configures the evidence log.
type LogConfig struct {
	// Origin names the log in its checkpoints, e.g. "verifier.example.com/log"; it is the name of
	// the checkpoint key generated at the first start (log-key in DataDir). Default
	// "proofline.local/log".
	Origin string `yaml:"origin"`
	// CheckpointInterval is how often a checkpoint is published (default 1s; at least 100ms, 1s
	// with Database; at most 1m). A record's inclusion proof is available once a checkpoint
	// covers it, and a caller asking earlier is told to retry after this long.
	CheckpointInterval time.Duration `yaml:"checkpoint_interval"`
	// BatchMaxWait bounds how long a group commit waits for the records of attestations still
	// being verified (default 20ms, at most 1s): fuller batches make fewer durable writes under
	// load; a lone attestation never waits.
	BatchMaxWait time.Duration `yaml:"batch_max_wait"`
}

// TokenConfig configures result tokens.
type TokenConfig struct {
	// Audience lists the relying parties result tokens are for (their "aud"); each relying party
	// checks that its own name is in it. Default ["proofline-relying-party"].
	Audience []string `yaml:"audience"`
	// TTL is how long a result token is valid (default 10m; between 1s and 24h).
	TTL time.Duration `yaml:"ttl"`
}

// NonceConfig configures challenge nonces.
type NonceConfig struct {
	// TTL is how long an issued nonce may be used (default 5m, between 1s and 1h).
	TTL time.Duration `yaml:"ttl"`
	// SecretFile holds the nonce HMAC secret (at least 32 random bytes, mode 0600). Replicas
	// sharing a Database must share it. Default: DataDir/nonce-secret, created at the first start.
	SecretFile string `yaml:"secret_file"`
}

// QueueConfig sizes the bounded queue in front of verification. Requests beyond Workers+Size are
// answered 503 with Retry-After at once.
type QueueConfig struct {
	// Workers is how many attestations are appraised at once (default 8; at most 4096).
	Workers int `yaml:"workers"`
	// Size is how many more may wait for a turn (default 64; at most 65536). Every place may hold
	// a request body of up to http.max_attest_body in memory, and a request that waits longer
	// than the HTTP timeouts is lost anyway: add workers or replicas rather than places.
	Size int `yaml:"size"`
	// RetryAfter is what an overloaded verifier tells callers to wait (default 1s; between 1s and
	// 1h, the longest Retry-After the agent honours).
	RetryAfter time.Duration `yaml:"retry_after"`
}

// Defaults.
const (
	DefaultOrigin   = "proofline.local/log"
	DefaultIssuer   = "proofline"
	DefaultNonceTTL = 5 * time.Minute
)

// Bounds of the configuration's numbers, as the field comments state them, and the defaults
// (Settings.withDefaults) that the messages name.
const (
	maxTokenTTL           = 24 * time.Hour
	maxQueueWorkers       = 4096
	maxQueueSize          = 1 << 16
	maxRetryAfter         = time.Hour // the longest Retry-After the agent honours
	maxCheckpointInterval = time.Minute
	maxFetchTimeout       = 5 * time.Minute
	maxFetchMaxWait       = time.Hour
	minRefetchEvery       = time.Minute
	maxRefetchEvery       = 7 * 24 * time.Hour

	defaultTokenTTL     = 10 * time.Minute
	defaultQueueWorkers = 8
	defaultQueueSize    = 64
	defaultRetryAfter   = time.Second
)

// durationIn reports a duration setting outside [lo, hi]; 0 (absent) is the default, def.
func durationIn(bad func(string, ...any), key string, v, lo, hi, def time.Duration) {
	if v != 0 && (v < lo || v > hi) {
		bad("%s is %s; give a duration between %s and %s, or leave it out for the default (%s)", key, shortDuration(v), shortDuration(lo), shortDuration(hi), shortDuration(def))
	}
}

// intIn reports a number setting outside [1, hi]; 0 (absent) is the default, def.
func intIn(bad func(string, ...any), key string, v, hi, def int) {
	if v < 0 || v > hi {
		bad("%s is %d; give a number between 1 and %d, or leave it out for the default (%d)", key, v, hi, def)
	}
}

// shortDuration writes d as an operator would: 24h, 1m, 100ms (not 24h0m0s).
func shortDuration(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}

// Validate checks the configuration and says what to change. testMode is --test-mode.
func (c *Config) Validate(testMode bool) error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	if c.DataDir == "" {
		bad("data_dir is required: a directory for the verifier's keys and state, e.g. /var/lib/proofline")
	}
	if c.Database != "" {
		cfg, err := mysql.ParseDSN(c.Database)
		switch {
		case err != nil:
			bad("database: %v; write it as user:password@tcp(host:3306)/dbname", err)
		case cfg.DBName == "":
			bad("database: the DSN names no database; end it with /dbname")
		}
		durationIn(bad, "log.checkpoint_interval (with a database)", c.Log.CheckpointInterval, time.Second, maxCheckpointInterval, log.DefaultCheckpointInterval)
	} else {
		durationIn(bad, "log.checkpoint_interval", c.Log.CheckpointInterval, 100*time.Millisecond, maxCheckpointInterval, log.DefaultCheckpointInterval)
	}
	if c.Log.BatchMaxWait < 0 || c.Log.BatchMaxWait > time.Second {
		bad("log.batch_max_wait is %v; it must be between 0 (the default, 20ms) and 1s", c.Log.BatchMaxWait)
	}
	if strings.ContainsAny(c.Log.Origin, " \t\n+") {
		bad("log.origin %q must not contain spaces or '+'", c.Log.Origin)
	}
	durationIn(bad, "tokens.ttl", c.Tokens.TTL, time.Second, maxTokenTTL, defaultTokenTTL)
	for _, a := range c.Tokens.Audience {
		if a == "" {
			bad("tokens.audience holds an empty name")
		}
	}
	if c.Nonce.TTL != 0 && (c.Nonce.TTL < nonce.MinTTL || c.Nonce.TTL > nonce.MaxTTL) {
		bad("nonce.ttl is %v; give a duration between %v and %v, e.g. 5m", c.Nonce.TTL, nonce.MinTTL, nonce.MaxTTL)
	}
	intIn(bad, "queue.workers", c.Queue.Workers, maxQueueWorkers, defaultQueueWorkers)
	intIn(bad, "queue.size", c.Queue.Size, maxQueueSize, defaultQueueSize)
	durationIn(bad, "queue.retry_after", c.Queue.RetryAfter, time.Second, maxRetryAfter, defaultRetryAfter)
	c.Collateral.validate(bad)
	c.Alerts.validate(bad)
	c.SelfCheck.validate(bad)
	if c.Roots != "" && !testMode {
		bad("roots: %s replaces the vendor roots with test roots, which the service accepts only with --test-mode; remove roots for production", c.Roots)
	}
	return errors.Join(errs...)
}

func (c *CollateralConfig) validate(bad func(string, ...any)) {
	f := &c.Fetch
	if c.Dir != "" && f.Enabled {
		bad("collateral: give either dir (recorded responses, offline) or fetch (live), not both")
	}
	if c.Offline && (c.Dir != "" || f.Enabled) {
		bad("collateral.offline serves the imported cache_dir only: remove dir and fetch, or offline")
	}
	if c.ExpiryWarning < 0 {
		bad("collateral.expiry_warning is %v; give a positive duration such as 6h", c.ExpiryWarning)
	}
	if !f.Enabled {
		if len(f.Routes) > 0 || f.CAFile != "" || f.IntelUpdate != "" {
			bad("collateral.fetch is configured but not enabled; add enabled: true (or remove it)")
		}
		return
	}
	if f.RefreshInterval < 0 || f.RefreshHorizon < 0 {
		bad("collateral.fetch: refresh_interval and refresh_horizon must not be negative")
	}
	durationIn(bad, "collateral.fetch.timeout", f.Timeout, time.Second, maxFetchTimeout, DefaultCollateralTimeout)
	durationIn(bad, "collateral.fetch.max_wait", f.MaxWait, time.Second, maxFetchMaxWait, collateral.DefaultMaxWait)
	// collateral.Refresher reads a negative RefetchEvery as "never", which would stop a TCB
	// recovery published before the old TCB info expires from arriving: refused with the rest.
	durationIn(bad, "collateral.fetch.refetch_every", f.RefetchEvery, minRefetchEvery, maxRefetchEvery, collateral.DefaultRefetchEvery)
	if f.RefreshInterval != 0 && f.RefreshInterval < time.Minute {
		bad("collateral.fetch.refresh_interval is %v; give at least 1m (the vendors' rate limits apply)", f.RefreshInterval)
	}
	switch f.IntelUpdate {
	case "", "standard", "early":
	default:
		bad("collateral.fetch.intel_update is %q; give standard or early", f.IntelUpdate)
	}
	// The fetcher checks the routes; a client is needed but not used.
	if _, err := collateral.NewFetcher(collateral.FetcherConfig{Client: &http.Client{}, Routes: f.routes()}); err != nil {
		bad("collateral.fetch: %v", strings.TrimPrefix(err.Error(), "collateral: "))
	}
}

// Env is what OpenDeps takes besides the configuration: flags and process-wide things.
type Env struct {
	// TestMode is --test-mode: test vendor roots are accepted.
	TestMode bool
	Logger   *slog.Logger
	// Registerer receives the metrics; nil registers none.
	Registerer prometheus.Registerer
	// Now is the clock; nil means time.Now.
	Now func() time.Time
	// Build is the SHA-256 of the running executable (see ExecutableDigest).
	Build evidence.Digest
	// Roots and Collateral, when set, replace Config.Roots and Config.Collateral (proofline demo
	// passes the simulated platforms' here). Roots marked Test still need TestMode.
	Roots      *roots.Set
	Collateral collateral.Source
	// InitialPolicy, when set, replaces Config.Policy.
	InitialPolicy []byte
	// CollateralClient, when set, sends the collateral fetches instead of a client built from
	// collateral.fetch (tests use the fake PCS/KDS servers' clients).
	CollateralClient *http.Client
	// CollateralClock, when set, is the clock of collateral fetching, caching, refreshing and
	// expiry instead of the system clock.
	CollateralClock collateral.Clock
}

// ExecutableDigest returns the SHA-256 of the running executable, for Env.Build.
func ExecutableDigest() (evidence.Digest, error) {
	path, err := os.Executable()
	if err != nil {
		return evidence.Digest{}, err
	}
	f, err := os.Open(path)
	if err != nil {
		return evidence.Digest{}, err
	}
	defer f.Close()
	return digestReader(f)
}

// Open opens everything the configuration names and composes the service.
func Open(ctx context.Context, cfg Config, env Env) (*Service, error) {
	d, err := OpenDeps(ctx, cfg, env)
	if err != nil {
		return nil, err
	}
	s, err := New(ctx, *d)
	if err != nil {
		for _, c := range d.Closers {
			c()
		}
		return nil, err
	}
	return s, nil
}

// OpenDeps opens the storage, keys and trust material the configuration names. On error it
// closes what it opened.
func OpenDeps(ctx context.Context, cfg Config, env Env) (d *Deps, err error) {
	if err := cfg.Validate(env.TestMode); err != nil {
		return nil, err
	}
	now := env.Now
	if now == nil {
		now = time.Now
	}
	d = &Deps{
		Now: now, Logger: env.Logger, Registerer: env.Registerer, Build: env.Build,
		Settings: Settings{
			TestMode: env.TestMode, Audience: cfg.Tokens.Audience, TokenTTL: cfg.Tokens.TTL,
			Workers: cfg.Queue.Workers, Queue: cfg.Queue.Size, RetryAfter: cfg.Queue.RetryAfter,
			CheckpointInterval: cfg.Log.CheckpointInterval, LogBatchMaxWait: cfg.Log.BatchMaxWait,
		},
	}
	defer func() {
		if err != nil {
			for _, c := range d.Closers {
				c()
			}
		}
	}()
	closer := func(f func() error) { d.Closers = append([]func() error{f}, d.Closers...) } // closed in reverse
	dir := cfg.DataDir
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return d, fmt.Errorf("data_dir: %w", err)
	}

	// Keys: the record key and its history, the token key, the log's checkpoint key.
	if d.RecordKey, d.KeyHistory, err = loadRecordKey(filepath.Join(dir, KeysDirName), now().UTC().Truncate(time.Second)); err != nil {
		return d, err
	}
	tokenKey, err := loadOrCreateTokenKey(filepath.Join(dir, TokenKeyFileName))
	if err != nil {
		return d, err
	}
	issuer := cfg.Issuer
	if issuer == "" {
		issuer = DefaultIssuer
	}
	if d.Tokens, err = token.NewIssuer(issuer, tokenKey); err != nil {
		return d, err
	}
	origin := cfg.Log.Origin
	if origin == "" {
		origin = DefaultOrigin
	}
	// The POSIX log keeps its key in its own directory (log/note.key, note.pub), where
	// `proofline log fsck --log DIR` finds it and where OpenPOSIX refuses to replace a lost key of
	// an existing log; a database-backed log's key lives in DataDir.
	keyPath := filepath.Join(dir, LogDirName, posixLogKey)
	if cfg.Database != "" {
		keyPath = filepath.Join(dir, LogKeyFileName)
	}
	secretFile := cfg.Nonce.SecretFile
	var secret []byte
	if secretFile == "" {
		secret, err = nonce.LoadOrCreateSecret(dir)
	} else {
		secret, err = nonce.LoadSecret(secretFile)
	}
	if err != nil {
		return d, fmt.Errorf("nonce.secret_file: %w", err)
	}

	// Storage.
	logOpts := log.Options{Origin: origin, CheckpointInterval: cfg.Log.CheckpointInterval, Logger: env.Logger}
	var (
		nonceStore nonce.Store
		sharedDB   *sql.DB // the state database of a fleet, when configured
	)
	if cfg.Database != "" {
		db, err := openMySQL(cfg.Database)
		if err != nil {
			return d, err
		}
		closer(db.Close)
		sharedDB = db
		if err := db.PingContext(ctx); err != nil {
			return d, fmt.Errorf("database: %w", err)
		}
		d.Ping = db.PingContext
		if logOpts.Signer, logOpts.Verifier, err = log.LoadOrGenerateKey(keyPath, origin); err != nil {
			return d, fmt.Errorf("log key: %w", err)
		}
		l, err := log.OpenMySQL(ctx, db, logOpts)
		if err != nil {
			return d, err
		}
		closer(l.Close)
		d.Log = l
		d.LogReader = log.NewMySQLReader(db)
		if d.Index, err = index.OpenMySQL(ctx, db); err != nil {
			return d, err
		}
		closer(d.Index.Close)
		ns, err := nonce.OpenMySQL(ctx, db)
		if err != nil {
			return d, err
		}
		closer(ns.Close)
		nonceStore = ns
		bs, err := blob.OpenMySQL(ctx, db)
		if err != nil {
			return d, err
		}
		closer(bs.Close)
		d.Blobs = bs
		if d.Policies, err = OpenPolicyMySQL(ctx, db); err != nil {
			return d, err
		}
		closer(d.Policies.Close)
		if err := d.openAlerting(ctx, cfg, db, closer); err != nil {
			return d, err
		}
		if d.AccessTokens, err = OpenTokenMySQL(ctx, db); err != nil {
			return d, err
		}
		closer(d.AccessTokens.Close)
	} else {
		l, err := log.OpenPOSIX(ctx, filepath.Join(dir, LogDirName), logOpts)
		if err != nil {
			return d, err
		}
		closer(l.Close)
		d.Log = l
		d.LogReader = log.NewPOSIXReader(filepath.Join(dir, LogDirName))
		if logOpts.Signer, logOpts.Verifier, err = log.LoadOrGenerateKey(keyPath, origin); err != nil {
			return d, fmt.Errorf("log key: %w", err)
		}
		if d.Index, err = index.OpenSQLite(ctx, filepath.Join(dir, IndexFileName)); err != nil {
			return d, err
		}
		closer(d.Index.Close)
		ns, err := nonce.OpenSQLite(ctx, filepath.Join(dir, nonce.DBFileName))
		if err != nil {
			return d, err
		}
		closer(ns.Close)
		nonceStore = ns
		if d.Blobs, err = blob.OpenDir(filepath.Join(dir, BlobsDirName)); err != nil {
			return d, err
		}
		if d.Policies, err = OpenPolicySQLite(ctx, filepath.Join(dir, PoliciesFileName)); err != nil {
			return d, err
		}
		closer(d.Policies.Close)
		if err := d.openAlerting(ctx, cfg, nil, closer); err != nil {
			return d, err
		}
		if d.AccessTokens, err = OpenTokenSQLite(ctx, filepath.Join(dir, TokensFileName)); err != nil {
			return d, err
		}
		closer(d.AccessTokens.Close)
	}
	if d.LogVerifierKey, err = verifierKeyString(log.PublicKeyPath(keyPath), logOpts.Verifier); err != nil {
		return d, err
	}
	ttl := cfg.Nonce.TTL
	if ttl == 0 {
		ttl = DefaultNonceTTL
	}
	if d.Nonces, err = nonce.New(secret, nonceStore, ttl, now); err != nil {
		return d, err
	}

	// Trust material and the initial policy.
	switch {
	case env.Roots != nil:
		d.Roots = env.Roots
	case cfg.Roots != "":
		if d.Roots, err = roots.ReadDir(cfg.Roots); err != nil {
			return d, fmt.Errorf("roots: %w", err)
		}
	default:
		if d.Roots, err = roots.Builtin(); err != nil {
			return d, err
		}
	}
	d.Settings.CollateralExpiryWarning = cfg.Collateral.ExpiryWarning
	switch fc := cfg.Collateral.Fetch; {
	case env.Collateral != nil:
		d.Collateral = env.Collateral
	case cfg.Collateral.Dir != "":
		set, err := collateral.ReadDir(cfg.Collateral.Dir)
		if err != nil {
			return d, fmt.Errorf("collateral: %w", err)
		}
		d.Collateral = set
	case cfg.Collateral.Offline:
		store, err := openCollateralStore(ctx, cfg, sharedDB)
		if err != nil {
			return d, err
		}
		d.LiveCollateral = &LiveCollateral{Upstream: offlineSource{}, Store: store, Clock: env.CollateralClock, Offline: true}
	case fc.Enabled:
		store, err := openCollateralStore(ctx, cfg, sharedDB)
		if err != nil {
			return d, err
		}
		if d.LiveCollateral, err = openLiveCollateral(cfg, env, store); err != nil {
			return d, err
		}
		d.Settings.CollateralRefreshInterval = fc.RefreshInterval
		d.Settings.CollateralRefreshHorizon = fc.RefreshHorizon
		d.Settings.CollateralRefetchEvery = fc.RefetchEvery
	}
	switch {
	case env.InitialPolicy != nil:
		d.InitialPolicy = env.InitialPolicy
	case cfg.Policy != "":
		if d.InitialPolicy, err = os.ReadFile(cfg.Policy); err != nil {
			return d, fmt.Errorf("policy: %w", err)
		}
		if _, err := policy.Parse(d.InitialPolicy); err != nil {
			return d, fmt.Errorf("policy %s: %w", cfg.Policy, err)
		}
	}
	return d, nil
}

// openCollateralStore opens the collateral cache's store: the SQL tables of the shared state
// database (db, when configured, unless collateral.cache_dir names a directory), or the
// directory CollateralCacheDir.
func openCollateralStore(ctx context.Context, cfg Config, db *sql.DB) (collateral.Store, error) {
	if db != nil && cfg.Collateral.CacheDir == "" {
		store, err := collateral.OpenSQLStoreMySQL(ctx, db)
		if err != nil {
			return nil, fmt.Errorf("collateral cache in the database: %w", err)
		}
		return store, nil
	}
	store, err := collateral.OpenDirStore(CollateralCacheDir(cfg))
	if err != nil {
		return nil, fmt.Errorf("collateral.cache_dir: %w", err)
	}
	return store, nil
}

// openLiveCollateral builds the fetcher of collateral.fetch in front of store.
func openLiveCollateral(cfg Config, env Env, store collateral.Store) (*LiveCollateral, error) {
	fc := cfg.Collateral.Fetch
	client := env.CollateralClient
	if client == nil {
		var err error
		if client, err = collateralClient(fc); err != nil {
			return nil, err
		}
	}
	fetcher, err := collateral.NewFetcher(collateral.FetcherConfig{
		Client: client, Clock: env.CollateralClock, Routes: fc.routes(), IntelUpdate: fc.IntelUpdate,
		MaxWait: fc.MaxWait, Logger: env.Logger,
	})
	if err != nil {
		return nil, fmt.Errorf("collateral.fetch: %w", err)
	}
	return &LiveCollateral{Upstream: fetcher, Store: store, Clock: env.CollateralClock}, nil
}

// CollateralCacheDir is the directory of the collateral cache: collateral.cache_dir, or
// DefaultCollateralCacheDir in the data directory.
func CollateralCacheDir(cfg Config) string {
	if cfg.Collateral.CacheDir != "" {
		return cfg.Collateral.CacheDir
	}
	return filepath.Join(cfg.DataDir, DefaultCollateralCacheDir)
}

// DefaultCollateralTimeout bounds one collateral HTTP request.
const DefaultCollateralTimeout = 30 * time.Second

// collateralClient returns the HTTP client of collateral fetches: the environment's proxy
// settings, the system roots plus fc.CAFile, fc.Timeout.
func collateralClient(fc FetchConfig) (*http.Client, error) {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	if fc.CAFile != "" {
		pemData, err := os.ReadFile(fc.CAFile)
		if err != nil {
			return nil, fmt.Errorf("collateral.fetch.ca_file: %w", err)
		}
		pool, err := x509.SystemCertPool()
		if err != nil {
			pool = x509.NewCertPool()
		}
		if !pool.AppendCertsFromPEM(pemData) {
			return nil, fmt.Errorf("collateral.fetch.ca_file: %s holds no PEM certificate", fc.CAFile)
		}
		tr.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	}
	timeout := fc.Timeout
	if timeout == 0 {
		timeout = DefaultCollateralTimeout
	}
	return &http.Client{Transport: tr, Timeout: timeout}, nil
}

func openMySQL(dsn string) (*sql.DB, error) {
	cfg, err := mysql.ParseDSN(dsn)
	if err != nil {
		return nil, fmt.Errorf("database: %w", err)
	}
	db, err := sql.Open("mysql", cfg.FormatDSN())
	if err != nil {
		return nil, fmt.Errorf("database: %w", err)
	}
	return db, nil
}

// loadRecordKey loads (or creates) the record signing key in dir and its key history, adding the
// key, valid from now, when the history does not hold it yet.
func loadRecordKey(dir string, now time.Time) (*evidence.Key, *evidence.KeyHistory, error) {
	key, err := evidence.LoadOrCreateKey(dir)
	if err != nil {
		return nil, nil, err
	}
	path := filepath.Join(dir, KeyHistoryFileName)
	h, err := evidence.LoadKeyHistory(path)
	if errors.Is(err, fs.ErrNotExist) {
		h, err = &evidence.KeyHistory{}, nil
	}
	if err != nil {
		return nil, nil, err
	}
	if _, ok := h.Lookup(key.KeyID()); !ok {
		if err := h.Add(key, now); err != nil {
			return nil, nil, err
		}
		if err := h.Save(path); err != nil {
			return nil, nil, err
		}
	}
	return key, h, nil
}

// loadOrCreateTokenKey loads the token signing key (PKCS #8 P-256 PEM, mode 0600), generating it
// at the first start. It is separate from the record key: a token can never be confused with a
// record by its key either.
func loadOrCreateTokenKey(path string) (*evidence.Key, error) {
	k, err := evidence.LoadKey(path)
	if !errors.Is(err, fs.ErrNotExist) {
		return k, err
	}
	priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	der, err := x509.MarshalPKCS8PrivateKey(priv)
	if err != nil {
		return nil, err
	}
	err = durable.Create(path, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600)
	if errors.Is(err, fs.ErrExist) {
		return evidence.LoadKey(path) // another process created it first
	}
	if err != nil {
		return nil, fmt.Errorf("token key: %w", err)
	}
	return evidence.LoadKey(path)
}

// digestReader returns the SHA-256 of everything r holds.
func digestReader(r io.Reader) (evidence.Digest, error) {
	h := sha256.New()
	if _, err := io.Copy(h, r); err != nil {
		return evidence.Digest{}, err
	}
	return evidence.Digest(h.Sum(nil)), nil
}

// verifierKeyString returns the note verifier key LoadOrGenerateKey wrote next to the signer.
func verifierKeyString(path string, v note.Verifier) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("log key: the verifier key %s: %w", path, err)
	}
	s := strings.TrimSpace(string(b))
	if nv, err := note.NewVerifier(s); err != nil || nv.KeyHash() != v.KeyHash() || nv.Name() != v.Name() {
		return "", fmt.Errorf("log key: %s is not the verifier key of the log's signing key", path)
	}
	return s, nil
}
