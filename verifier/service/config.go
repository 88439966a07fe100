package service

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"database/sql"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/go-sql-driver/mysql"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/mod/sumdb/note"

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
	// policy store holds no active policy. Later changes go through the policy API. Default: the
	// built-in default policy (every security rule, no reference values: results are at best
	// "warning").
	Policy string `yaml:"policy"`
	// Collateral is a directory of recorded vendor collateral responses (*.json, the format of
	// `proofline verify --collateral`). Without it no collateral is available and every verdict
	// that needs collateral is contraindicated (collateral_unavailable).
	Collateral string `yaml:"collateral"`
	// Roots is a directory of *.pem trust anchors replacing the built-in Intel and AMD roots. Such
	// roots are test roots: the service refuses them unless started with --test-mode.
	Roots string `yaml:"roots"`
	// Queue bounds the work in front of verification.
	Queue QueueConfig `yaml:"queue"`
}

// LogConfig configures the evidence log.
type LogConfig struct {
	// Origin names the log in its checkpoints, e.g. "verifier.example.com/log"; it is the name of
	// the checkpoint key generated at the first start (log-key in DataDir). Default
	// "proofline.local/log".
	Origin string `yaml:"origin"`
	// CheckpointInterval is how often a checkpoint is published (default 1s; at least 100ms, 1s
	// with Database). A record's inclusion proof is available once a checkpoint covers it.
	CheckpointInterval time.Duration `yaml:"checkpoint_interval"`
}

// TokenConfig configures result tokens.
type TokenConfig struct {
	// Audience lists the relying parties result tokens are for (their "aud"); each relying party
	// checks that its own name is in it. Default ["proofline-relying-party"].
	Audience []string `yaml:"audience"`
	// TTL is how long a result token is valid (default 10m, at most 24h).
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
	// Workers is how many attestations are appraised at once (default 8).
	Workers int `yaml:"workers"`
	// Size is how many more may wait for a turn (default 64).
	Size int `yaml:"size"`
	// RetryAfter is what an overloaded verifier tells callers to wait (default 1s).
	RetryAfter time.Duration `yaml:"retry_after"`
}

// Defaults.
const (
	DefaultOrigin   = "proofline.local/log"
	DefaultIssuer   = "proofline"
	DefaultNonceTTL = 5 * time.Minute
)

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
		if c.Log.CheckpointInterval != 0 && c.Log.CheckpointInterval < time.Second {
			bad("log.checkpoint_interval is %v; with a database it must be at least 1s", c.Log.CheckpointInterval)
		}
	} else if c.Log.CheckpointInterval != 0 && c.Log.CheckpointInterval < 100*time.Millisecond {
		bad("log.checkpoint_interval is %v; it must be at least 100ms", c.Log.CheckpointInterval)
	}
	if strings.ContainsAny(c.Log.Origin, " \t\n+") {
		bad("log.origin %q must not contain spaces or '+'", c.Log.Origin)
	}
	if c.Tokens.TTL < 0 || c.Tokens.TTL > 24*time.Hour {
		bad("tokens.ttl is %v; give a duration between 1s and 24h, e.g. 10m", c.Tokens.TTL)
	}
	for _, a := range c.Tokens.Audience {
		if a == "" {
			bad("tokens.audience holds an empty name")
		}
	}
	if c.Nonce.TTL != 0 && (c.Nonce.TTL < nonce.MinTTL || c.Nonce.TTL > nonce.MaxTTL) {
		bad("nonce.ttl is %v; give a duration between %v and %v, e.g. 5m", c.Nonce.TTL, nonce.MinTTL, nonce.MaxTTL)
	}
	if c.Queue.Workers < 0 || c.Queue.Size < 0 || c.Queue.RetryAfter < 0 {
		bad("queue.workers, queue.size and queue.retry_after must not be negative")
	}
	if c.Roots != "" && !testMode {
		bad("roots: %s replaces the vendor roots with test roots, which the service accepts only with --test-mode; remove roots for production", c.Roots)
	}
	return errors.Join(errs...)
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
			CheckpointInterval: cfg.Log.CheckpointInterval,
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
	var nonceStore nonce.Store
	if cfg.Database != "" {
		db, err := openMySQL(cfg.Database)
		if err != nil {
			return d, err
		}
		closer(db.Close)
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
	} else {
		l, err := log.OpenPOSIX(ctx, filepath.Join(dir, LogDirName), logOpts)
		if err != nil {
			return d, err
		}
		closer(l.Close)
		d.Log = l
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
	switch {
	case env.Collateral != nil:
		d.Collateral = env.Collateral
	case cfg.Collateral != "":
		set, err := collateral.ReadDir(cfg.Collateral)
		if err != nil {
			return d, fmt.Errorf("collateral: %w", err)
		}
		d.Collateral = set
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
