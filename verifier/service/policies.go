package service

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"strings"
	"sync"
	"time"

	_ "modernc.org/sqlite" // the "sqlite" database/sql driver

	"github.com/proofline/proofline/evidence"
	"github.com/proofline/proofline/verifier/ear"
	"github.com/proofline/proofline/verifier/policy"
)

// PoliciesFileName is the SQLite file of the policy store in the data directory.
const PoliciesFileName = "policies.db"

// maxPolicyName bounds a policy id and an actor name in the store.
const maxPolicyName = 255

// PolicyStore keeps every policy version ever created and which one is active, in SQLite (the
// data directory) or in the MySQL/MariaDB database replicas share: tables
// proofline_policy_versions (version, policy id, digest, the exact YAML, who created it and when,
// and the log index of the record of its creation) and proofline_policy_active (one row: the
// active version, who activated it and when, and the record of the activation). Versions are
// numbered from 1 and never change; the YAML is also in the blob store under its digest.
//
// Every change is first written as an evidence record (kind policy_change) inside the store's
// transaction: the transaction commits only after the log acknowledged the record, so the store
// never holds a change the log does not. (If the commit itself fails after the append, the log
// holds a change the store does not; the record names the version, and the operator retries.)
//
// The transaction holds the store's write lock while the log appends, for as long as a slow log
// takes: the record names the active version it replaces, read under that lock, so two changes
// made at once cannot both record replacing the same version. Only other policy changes wait for
// it (the store has its own SQLite file, or its own tables in MySQL); attestations read the
// active version without waiting.
type PolicyStore struct {
	db      *sql.DB
	mysql   bool
	closeDB bool
	// active is the query of the active version, prepared once: every attestation runs it.
	active *sql.Stmt

	mu     sync.Mutex
	parsed map[int64]*policy.Policy // by version; versions never change
}

var policySchemaSQLite = []string{
	`CREATE TABLE IF NOT EXISTS proofline_policy_versions (
		version INTEGER NOT NULL PRIMARY KEY,
		policy_id BLOB NOT NULL,
		digest BLOB NOT NULL,
		body BLOB NOT NULL,
		created_unix INTEGER NOT NULL,
		created_by BLOB NOT NULL,
		created_record INTEGER NOT NULL
	)`,
	`CREATE TABLE IF NOT EXISTS proofline_policy_active (
		id INTEGER NOT NULL PRIMARY KEY,
		version INTEGER NOT NULL,
		activated_unix INTEGER NOT NULL,
		activated_by BLOB NOT NULL,
		activated_record INTEGER NOT NULL
	)`,
}

var policySchemaMySQL = []string{
	`CREATE TABLE IF NOT EXISTS proofline_policy_versions (
		version BIGINT NOT NULL,
		policy_id VARBINARY(255) NOT NULL,
		digest BINARY(32) NOT NULL,
		body LONGBLOB NOT NULL,
		created_unix BIGINT NOT NULL,
		created_by VARBINARY(255) NOT NULL,
		created_record BIGINT UNSIGNED NOT NULL,
		PRIMARY KEY (version)
	) ENGINE=InnoDB`,
	`CREATE TABLE IF NOT EXISTS proofline_policy_active (
		id TINYINT NOT NULL,
		version BIGINT NOT NULL,
		activated_unix BIGINT NOT NULL,
		activated_by VARBINARY(255) NOT NULL,
		activated_record BIGINT UNSIGNED NOT NULL,
		PRIMARY KEY (id)
	) ENGINE=InnoDB`,
}

// OpenPolicySQLite opens the policy store in the SQLite file at path, creating it as needed.
func OpenPolicySQLite(ctx context.Context, path string) (*PolicyStore, error) {
	if strings.ContainsRune(path, '?') {
		return nil, fmt.Errorf("policies: SQLite path %q contains '?'", path)
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, fmt.Errorf("policies: %w", err)
	}
	// synchronous=FULL: an acknowledged change survives a power loss. _txlock=immediate: writers
	// queue on the busy timeout instead of failing on a lock upgrade.
	db, err := sql.Open("sqlite", abs+"?_busy_timeout=10000&_journal_mode=WAL&_synchronous=FULL&_txlock=immediate")
	if err != nil {
		return nil, fmt.Errorf("policies: opening %s: %w", path, err)
	}
	s, err := openPolicies(ctx, db, false, policySchemaSQLite)
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("policies: %s: %w", path, err)
	}
	s.closeDB = true
	return s, nil
}

// OpenPolicyMySQL opens the policy store in the database db is connected to, creating its tables
// as needed. Closing the store does not close db.
func OpenPolicyMySQL(ctx context.Context, db *sql.DB) (*PolicyStore, error) {
	s, err := openPolicies(ctx, db, true, policySchemaMySQL)
	if err != nil {
		return nil, fmt.Errorf("policies: %w", err)
	}
	return s, nil
}

func openPolicies(ctx context.Context, db *sql.DB, mysql bool, schema []string) (*PolicyStore, error) {
	for _, stmt := range schema {
		if _, err := db.ExecContext(ctx, stmt); err != nil {
			return nil, fmt.Errorf("creating tables: %w", err)
		}
	}
	active, err := db.PrepareContext(ctx, "SELECT version FROM proofline_policy_active WHERE id = 0")
	if err != nil {
		return nil, fmt.Errorf("preparing the query of the active policy: %w", err)
	}
	return &PolicyStore{db: db, mysql: mysql, active: active, parsed: map[int64]*policy.Policy{}}, nil
}

// Close closes the database if OpenPolicySQLite opened it.
func (s *PolicyStore) Close() error {
	err := s.active.Close()
	if s.closeDB {
		err = errors.Join(err, s.db.Close())
	}
	return err
}

// PolicyVersion is one stored policy version.
type PolicyVersion struct {
	Version int64
	// ID and Digest name the policy as results and records do ("sha256:<hex>" of Body).
	ID     string
	Digest string
	// Body is the policy YAML exactly as created.
	Body          []byte
	CreatedAt     time.Time
	CreatedBy     string
	CreatedRecord uint64
	// Active is set on the active version, with who activated it, when, and the record.
	Active          bool
	ActivatedAt     time.Time
	ActivatedBy     string
	ActivatedRecord uint64
}

// ActivePolicy is the policy attestations are appraised with.
type ActivePolicy struct {
	Version int64
	Policy  *policy.Policy
}

func (s *PolicyStore) forUpdate() string {
	if s.mysql {
		return " FOR UPDATE"
	}
	return ""
}

// Active returns the active policy, or an error wrapping ErrNotFound if none is.
func (s *PolicyStore) Active(ctx context.Context) (*ActivePolicy, error) {
	var version int64
	err := s.active.QueryRowContext(ctx).Scan(&version)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, fmt.Errorf("%w: no active policy", ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("policies: %w", err)
	}
	s.mu.Lock()
	p := s.parsed[version]
	s.mu.Unlock()
	if p == nil {
		var body []byte
		if err := s.db.QueryRowContext(ctx, "SELECT body FROM proofline_policy_versions WHERE version = ?", version).Scan(&body); err != nil {
			return nil, fmt.Errorf("policies: reading version %d: %w", version, err)
		}
		if p, err = policy.Parse(body); err != nil {
			return nil, fmt.Errorf("policies: stored version %d no longer parses: %w", version, err)
		}
		s.mu.Lock()
		s.parsed[version] = p
		s.mu.Unlock()
	}
	return &ActivePolicy{Version: version, Policy: p}, nil
}

const versionColumns = "v.version, v.policy_id, v.digest, v.body, v.created_unix, v.created_by, v.created_record, " +
	"a.activated_unix, a.activated_by, a.activated_record"

type rowScanner interface{ Scan(...any) error }

func scanVersion(r rowScanner) (PolicyVersion, error) {
	var (
		v                 PolicyVersion
		id, by, digest    []byte
		created           int64
		actUnix, actRec   sql.NullInt64
		actBy             []byte
		createdRecordUint uint64
	)
	if err := r.Scan(&v.Version, &id, &digest, &v.Body, &created, &by, &createdRecordUint, &actUnix, &actBy, &actRec); err != nil {
		return v, err
	}
	v.ID, v.CreatedBy, v.CreatedAt, v.CreatedRecord = string(id), string(by), time.Unix(created, 0).UTC(), createdRecordUint
	v.Digest = "sha256:" + evidence.Digest(digest32(digest)).String()
	if actUnix.Valid {
		v.Active, v.ActivatedAt, v.ActivatedBy, v.ActivatedRecord = true, time.Unix(actUnix.Int64, 0).UTC(), string(actBy), uint64(actRec.Int64)
	}
	return v, nil
}

func digest32(b []byte) (d [32]byte) {
	copy(d[:], b)
	return d
}

// List returns every version, oldest first.
func (s *PolicyStore) List(ctx context.Context) ([]PolicyVersion, error) {
	rows, err := s.db.QueryContext(ctx, "SELECT "+versionColumns+" FROM proofline_policy_versions v "+
		"LEFT JOIN proofline_policy_active a ON a.id = 0 AND a.version = v.version ORDER BY v.version")
	if err != nil {
		return nil, fmt.Errorf("policies: %w", err)
	}
	defer rows.Close()
	var out []PolicyVersion
	for rows.Next() {
		v, err := scanVersion(rows)
		if err != nil {
			return nil, fmt.Errorf("policies: %w", err)
		}
		out = append(out, v)
	}
	return out, rows.Err()
}

// Get returns one version, or an error wrapping ErrNotFound.
func (s *PolicyStore) Get(ctx context.Context, version int64) (PolicyVersion, error) {
	return s.get(ctx, s.db, version, "")
}

type querier interface {
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}

func (s *PolicyStore) get(ctx context.Context, q querier, version int64, suffix string) (PolicyVersion, error) {
	v, err := scanVersion(q.QueryRowContext(ctx, "SELECT "+versionColumns+" FROM proofline_policy_versions v "+
		"LEFT JOIN proofline_policy_active a ON a.id = 0 AND a.version = v.version WHERE v.version = ?"+suffix, version))
	if errors.Is(err, sql.ErrNoRows) {
		return v, fmt.Errorf("%w: no policy version %d", ErrNotFound, version)
	}
	if err != nil {
		return v, fmt.Errorf("policies: %w", err)
	}
	return v, nil
}

// RecordFunc writes the evidence record of a change and returns its log index once it is durable.
type RecordFunc func(ctx context.Context, rec *evidence.Record) (uint64, error)

// change is one policy change: a version to create (body set) and/or to activate.
type change struct {
	body     []byte // create a version from these bytes; nil: activate version
	version  int64
	activate bool
	// onlyIfNone activates only if no version is active (the start-up bootstrap).
	onlyIfNone bool
	actor      string
	at         time.Time
}

// apply runs a change in one transaction: the records are appended (durably) before the commit.
func (s *PolicyStore) apply(ctx context.Context, c change, record RecordFunc) (PolicyVersion, error) {
	if len(c.actor) > maxPolicyName {
		return PolicyVersion{}, fmt.Errorf("%w: actor name longer than %d bytes", ErrInvalid, maxPolicyName)
	}
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return PolicyVersion{}, fmt.Errorf("%w: policies: %w", ErrUnavailable, err)
	}
	defer tx.Rollback()
	var prev *PolicyVersion
	var activeVersion int64
	switch err := tx.QueryRowContext(ctx, "SELECT version FROM proofline_policy_active WHERE id = 0"+s.forUpdate()).Scan(&activeVersion); {
	case errors.Is(err, sql.ErrNoRows):
	case err != nil:
		return PolicyVersion{}, fmt.Errorf("%w: policies: %w", ErrUnavailable, err)
	default:
		if c.onlyIfNone {
			return PolicyVersion{}, nil
		}
		pv, err := s.get(ctx, tx, activeVersion, "")
		if err != nil {
			return PolicyVersion{}, err
		}
		prev = &pv
	}
	var v PolicyVersion
	if c.body != nil {
		p, err := policy.Parse(c.body)
		if err != nil {
			return PolicyVersion{}, fmt.Errorf("%w: %w", ErrMalformed, err)
		}
		if len(p.ID) > maxPolicyName {
			return PolicyVersion{}, fmt.Errorf("%w: policy id longer than %d bytes", ErrInvalid, maxPolicyName)
		}
		if err := tx.QueryRowContext(ctx, "SELECT COALESCE(MAX(version), 0) + 1 FROM proofline_policy_versions"+s.forUpdate()).Scan(&v.Version); err != nil {
			return PolicyVersion{}, fmt.Errorf("%w: policies: %w", ErrUnavailable, err)
		}
		ref := p.Ref()
		v.ID, v.Digest, v.Body, v.CreatedAt, v.CreatedBy = ref.ID, ref.Digest, c.body, c.at, c.actor
		pr, err := policyRef(ref)
		if err != nil {
			return PolicyVersion{}, err
		}
		// Creating a version changes no verdict yet; its record names it with no previous policy.
		if v.CreatedRecord, err = record(ctx, policyChangeRecord(c.at, pr, nil, c.actor)); err != nil {
			return PolicyVersion{}, err
		}
		if _, err := tx.ExecContext(ctx, "INSERT INTO proofline_policy_versions (version, policy_id, digest, body, created_unix, created_by, created_record) VALUES (?, ?, ?, ?, ?, ?, ?)",
			v.Version, []byte(v.ID), pr.Digest[:], v.Body, c.at.Unix(), []byte(c.actor), v.CreatedRecord); err != nil {
			return PolicyVersion{}, fmt.Errorf("%w: policies: %w", ErrUnavailable, err)
		}
	} else {
		if v, err = s.get(ctx, tx, c.version, ""); err != nil {
			return PolicyVersion{}, err
		}
	}
	if c.activate {
		if prev != nil && prev.Version == v.Version {
			return PolicyVersion{}, fmt.Errorf("%w: policy version %d is already active", ErrConflict, v.Version)
		}
		pr, err := policyRef(PolicyRefOf(v))
		if err != nil {
			return PolicyVersion{}, err
		}
		var previous *evidence.PolicyRef
		if prev != nil {
			if previous, err = policyRef(PolicyRefOf(*prev)); err != nil {
				return PolicyVersion{}, err
			}
		}
		if v.ActivatedRecord, err = record(ctx, policyChangeRecord(c.at, pr, previous, c.actor)); err != nil {
			return PolicyVersion{}, err
		}
		v.Active, v.ActivatedAt, v.ActivatedBy = true, c.at, c.actor
		if _, err := tx.ExecContext(ctx, "DELETE FROM proofline_policy_active WHERE id = 0"); err != nil {
			return PolicyVersion{}, fmt.Errorf("%w: policies: %w", ErrUnavailable, err)
		}
		if _, err := tx.ExecContext(ctx, "INSERT INTO proofline_policy_active (id, version, activated_unix, activated_by, activated_record) VALUES (0, ?, ?, ?, ?)",
			v.Version, c.at.Unix(), []byte(c.actor), v.ActivatedRecord); err != nil {
			return PolicyVersion{}, fmt.Errorf("%w: policies: %w", ErrUnavailable, err)
		}
	}
	if err := tx.Commit(); err != nil {
		return PolicyVersion{}, fmt.Errorf("%w: policies: committing after the change was recorded: %w", ErrUnavailable, err)
	}
	return v, nil
}

// PolicyRefOf is the ear.PolicyRef of a stored version.
func PolicyRefOf(v PolicyVersion) ear.PolicyRef { return ear.PolicyRef{ID: v.ID, Digest: v.Digest} }

// defaultPolicyYAML is verifier/policy/default.yaml byte for byte (a test keeps them in step), so
// that a service started without a policy records the same policy digest that
// `proofline verify` reports without --policy.
const defaultPolicyYAML = `# The policy Proofline applies when none is given. It applies every security rule at its
# default and pins no reference values, so its best result is "warning" (no_reference_values).
# Write your own from the complete example in verifier/policy/README.md.
id: proofline-default
description: Default security rules, no reference values.
tdx: {}
sev_snp: {}
`

func policyChangeRecord(at time.Time, p, previous *evidence.PolicyRef, actor string) *evidence.Record {
	return &evidence.Record{
		Version:      evidence.Version,
		Kind:         evidence.KindPolicyChange,
		Time:         at,
		Policy:       p,
		PolicyChange: &evidence.PolicyChange{Actor: actor, Previous: previous},
	}
}

// recordFunc appends a record for the policy store, after storing nothing else: the policy bytes
// are in the blob store before the store's transaction starts.
func (s *Service) recordFunc(ctx context.Context, rec *evidence.Record) (uint64, error) {
	rec.Verifier = s.verifier
	_, idx, err := s.appendRecord(ctx, rec)
	return idx, err
}

// bootstrapPolicy activates the initial policy (Deps.InitialPolicy or the built-in default) when
// no version is active: a fresh store starts with a recorded, active policy. When a version is
// active, a configured initial policy is not applied (changes go through the policy API, as
// recorded policy_change records); if it differs from the active one, a warning says so, so that
// an edited policy file is not mistaken for the policy in force.
func (s *Service) bootstrapPolicy(ctx context.Context) error {
	body := s.d.InitialPolicy
	if body == nil {
		body = []byte(defaultPolicyYAML)
	}
	initial, err := policy.Parse(body)
	if err != nil {
		return fmt.Errorf("service: initial policy: %w", err)
	}
	active, err := s.d.Policies.Active(ctx)
	switch {
	case err == nil:
		if s.d.InitialPolicy != nil && initial.Ref().Digest != active.Policy.Ref().Digest {
			s.logger.WarnContext(ctx, "the configured policy file differs from the active policy and is not applied: "+
				"it is activated at the first start only; to apply it, POST it to /v1/policies?activate=true with an admin token",
				slog.String("configured_policy", initial.ID), slog.String("configured_digest", initial.Ref().Digest),
				slog.String("active_policy", active.Policy.ID), slog.String("active_digest", active.Policy.Ref().Digest),
				slog.Int64("active_version", active.Version))
		}
		return nil
	case !errors.Is(err, ErrNotFound):
		return err
	}
	if _, err := s.d.Blobs.Put(ctx, body); err != nil {
		return fmt.Errorf("service: storing the initial policy: %w", err)
	}
	v, err := s.d.Policies.apply(ctx, change{body: body, activate: true, onlyIfNone: true, actor: "system:bootstrap", at: s.now().UTC().Truncate(time.Second)}, s.recordFunc)
	if err != nil {
		return fmt.Errorf("service: activating the initial policy: %w", err)
	}
	if v.Version != 0 {
		s.logger.InfoContext(ctx, "initial policy activated", slog.String("policy", v.ID), slog.Int64("version", v.Version), slog.Uint64("log_index", v.ActivatedRecord))
	}
	return nil
}

// ListPolicies returns every policy version (admin, auditor).
func (s *Service) ListPolicies(ctx context.Context) ([]PolicyVersion, error) {
	vs, err := s.d.Policies.List(ctx)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	return vs, nil
}

// Policy returns one policy version (admin, auditor).
func (s *Service) Policy(ctx context.Context, version int64) (PolicyVersion, error) {
	return s.d.Policies.Get(ctx, version)
}

// CreatePolicy stores a new policy version from its YAML (admin), recorded as a policy_change
// record without a previous policy; activate makes it the active policy in the same change, with
// a second record naming the policy it replaces.
func (s *Service) CreatePolicy(ctx context.Context, p Principal, body []byte, activate bool) (PolicyVersion, error) {
	if p.Role != RoleAdmin {
		return PolicyVersion{}, fmt.Errorf("%w: only admins change policies", ErrForbidden)
	}
	if _, err := policy.Parse(body); err != nil {
		return PolicyVersion{}, fmt.Errorf("%w: %w", ErrMalformed, err)
	}
	if _, err := s.d.Blobs.Put(ctx, body); err != nil {
		return PolicyVersion{}, fmt.Errorf("%w: blob store: %w", ErrUnavailable, err)
	}
	v, err := s.d.Policies.apply(ctx, change{body: body, activate: activate, actor: p.String(), at: s.now().UTC().Truncate(time.Second)}, s.recordFunc)
	if err == nil {
		s.logger.InfoContext(ctx, "policy version created", slog.String("principal", p.String()), slog.String("policy", v.ID),
			slog.Int64("version", v.Version), slog.Bool("activated", activate), slog.Uint64("log_index", v.CreatedRecord))
		s.alertPolicyChange(ctx, p, v, activate)
	}
	return v, err
}

// ActivatePolicy makes a stored version the active one (admin), recorded as a policy_change
// record naming the policy it replaces.
func (s *Service) ActivatePolicy(ctx context.Context, p Principal, version int64) (PolicyVersion, error) {
	if p.Role != RoleAdmin {
		return PolicyVersion{}, fmt.Errorf("%w: only admins change policies", ErrForbidden)
	}
	v, err := s.d.Policies.apply(ctx, change{version: version, activate: true, actor: p.String(), at: s.now().UTC().Truncate(time.Second)}, s.recordFunc)
	if err == nil {
		s.logger.InfoContext(ctx, "policy version activated", slog.String("principal", p.String()), slog.String("policy", v.ID),
			slog.Int64("version", v.Version), slog.Uint64("log_index", v.ActivatedRecord))
		s.alertPolicyChange(ctx, p, v, true)
	}
	return v, err
}
