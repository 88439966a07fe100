// Package evidence defines Proofline's evidence record — the signed statement of one decision:
// an attestation verdict, a policy change, a key-release decision, a collateral update or an
// access change — its COSE_Sign1 envelope (RFC 9052 §4.2), the verifier's signing keys, and the key history that
// keeps old records verifiable after a rotation.
//
// A record is CBOR in Core Deterministic Encoding (RFC 8949 §4.2.1) and is decoded strictly:
// input that does not re-encode to the identical bytes is rejected, so a record has exactly one
// encoding and a signed record exactly one byte string. README.md documents the schema, the
// envelope, the key history format and the verification rules; auditors rely on them, so they
// change only with a new Version.
package evidence

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/url"
	"time"

	"github.com/fxamacker/cbor/v2"
)

// Version is the record schema version this package writes and accepts.
const Version = 1

// MaxRecordSize bounds a signed record (the whole COSE_Sign1 message, so also its payload).
// Evidence larger than this is recorded by digest (Evidence.Digest) and kept in the blob store.
const MaxRecordSize = 4 << 20

// MaxCollateral bounds the number of collateral references in one record.
const MaxCollateral = 256

// Kind says what a record is the evidence of. Its values are stable strings.
type Kind string

// Record kinds.
const (
	KindAttestation      Kind = "attestation"
	KindPolicyChange     Kind = "policy_change"
	KindKeyRelease       Kind = "key_release"
	KindCollateralUpdate Kind = "collateral_update"
	KindAccessChange     Kind = "access_change"
)

// Decision is the outcome of a key-release request.
type Decision string

// Key-release decisions.
const (
	DecisionRelease Decision = "release"
	DecisionDeny    Decision = "deny"
)

// Digest is a SHA-256 digest, encoded as a 32-byte CBOR byte string.
type Digest [sha256.Size]byte

// String returns the digest in lower-case hex.
func (d Digest) String() string { return hex.EncodeToString(d[:]) }

// MarshalCBOR encodes the digest as a byte string (major type 2, length 32).
func (d Digest) MarshalCBOR() ([]byte, error) {
	return append([]byte{0x58, sha256.Size}, d[:]...), nil
}

// UnmarshalCBOR accepts exactly a 32-byte byte string. (The CBOR library would otherwise
// truncate or zero-fill byte strings of another length into a byte array.)
func (d *Digest) UnmarshalCBOR(data []byte) error {
	if len(data) != 2+sha256.Size || data[0] != 0x58 || data[1] != sha256.Size {
		return fmt.Errorf("a digest must be a 32-byte byte string")
	}
	copy(d[:], data[2:])
	return nil
}

// Record is one evidence record. Which of the optional fields a record carries depends on its
// Kind (see Validate and README.md). The cbor tags are the schema: integer map keys, never
// renumbered.
type Record struct {
	// Version is the schema version; it must be Version.
	Version int  `cbor:"0,keyasint"`
	Kind    Kind `cbor:"1,keyasint"`
	// Time is when the decision was made: for an attestation, the verification time every check
	// used. It has second precision (a sub-second part is an error) and is encoded as an
	// epoch-based date/time, tag 1 with an integer (RFC 8949 §3.4.2). Decoded times are UTC.
	Time    time.Time `cbor:"2,keyasint"`
	Subject *Subject  `cbor:"3,keyasint,omitempty"`
	// Evidence is the attestation evidence the verdict was given on.
	Evidence *Evidence `cbor:"4,keyasint,omitempty"`
	// Collateral lists the exact collateral responses used, sorted by URL, each URL once.
	Collateral []CollateralRef `cbor:"5,keyasint,omitempty"`
	// Policy is the appraisal policy used (attestation), the new policy (policy_change) or the
	// release policy (key_release).
	Policy *PolicyRef `cbor:"6,keyasint,omitempty"`
	// Result is the verifier's attestation result (verifier/ear.Result) exactly as the JSON bytes
	// it returned, so the verdict can be compared byte for byte when it is re-performed.
	Result       []byte        `cbor:"7,keyasint,omitempty"`
	Verifier     Verifier      `cbor:"8,keyasint"`
	KeyRelease   *KeyRelease   `cbor:"9,keyasint,omitempty"`
	PolicyChange *PolicyChange `cbor:"10,keyasint,omitempty"`
	// CollateralUpdate says how each document of a collateral_update record changed: entry i
	// describes Collateral[i]. The verifier service always writes it; it is optional so that
	// records written before it existed stay valid.
	CollateralUpdate []CollateralChange `cbor:"11,keyasint,omitempty"`
	// AccessChange is the change of an access_change record: an API token created or revoked.
	AccessChange *AccessChange `cbor:"12,keyasint,omitempty"`
}

// Subject is what a record is about.
type Subject struct {
	// ID identifies the VM or workload.
	ID string `cbor:"0,keyasint"`
	// Platform is "tdx" or "sev-snp" (the evidence envelope's platform), or empty.
	Platform string `cbor:"1,keyasint,omitempty"`
}

// Evidence is the attestation evidence: exactly one of the raw envelope bytes or their SHA-256.
type Evidence struct {
	// Raw is the evidence envelope (attest.Evidence JSON) exactly as received.
	Raw []byte `cbor:"0,keyasint,omitempty"`
	// Digest is the SHA-256 of the envelope bytes, which are then kept in the blob store.
	Digest *Digest `cbor:"1,keyasint,omitempty"`
}

// ContentDigest returns the SHA-256 of the evidence envelope, whichever form the record holds.
func (e *Evidence) ContentDigest() Digest {
	if e.Digest != nil {
		return *e.Digest
	}
	return sha256.Sum256(e.Raw)
}

// CollateralRef names one collateral response (verifier/collateral.Response) a decision used.
type CollateralRef struct {
	// Kind says what the response is, e.g. "tcb_info", "qe_identity", "crl", "vcek".
	Kind string `cbor:"0,keyasint"`
	// URL is the exact URL the response answered.
	URL string `cbor:"1,keyasint"`
	// Digest is collateral.Response.Digest: the SHA-256 of the whole response in canonical JSON,
	// and its name in the blob store.
	Digest Digest `cbor:"2,keyasint"`
}

// PolicyRef names a policy by its ID and the SHA-256 of its exact bytes.
type PolicyRef struct {
	ID     string `cbor:"0,keyasint"`
	Digest Digest `cbor:"1,keyasint"`
}

// Verifier identifies the software that made the decision.
type Verifier struct {
	Name    string `cbor:"0,keyasint"`
	Version string `cbor:"1,keyasint"`
	// Build is the SHA-256 of the executable that made the decision.
	Build Digest `cbor:"2,keyasint"`
}

// KeyRelease is the decision of a key-release service.
type KeyRelease struct {
	// RelyingParty names the service that decided.
	RelyingParty string `cbor:"0,keyasint"`
	// Resource names the key or secret that was requested.
	Resource string   `cbor:"1,keyasint"`
	Decision Decision `cbor:"2,keyasint"`
	// Reason explains a denial, or is empty.
	Reason string `cbor:"3,keyasint,omitempty"`
	// Attestation is the SHA-256 of the signed attestation record (the COSE_Sign1 bytes, as
	// stored in the log) the decision relied on, if any.
	Attestation *Digest `cbor:"4,keyasint,omitempty"`
}

// CollateralChange describes one collateral document a verifier replaced (a collateral_update
// record); the new document is the Record.Collateral entry at the same position, its canonical
// bytes in the blob store.
type CollateralChange struct {
	// Previous is the digest (collateral.Response.Digest) of the document it replaced, for the
	// same URL; absent when the verifier held none.
	Previous *Digest `cbor:"0,keyasint,omitempty"`
	// IssuedAt and NextUpdate are the new document's issue time (issueDate, thisUpdate) and
	// nextUpdate, in whole seconds.
	IssuedAt   time.Time `cbor:"1,keyasint"`
	NextUpdate time.Time `cbor:"2,keyasint"`
	// TCBEvaluationDataNumber is the tcbEvaluationDataNumber of an Intel TCB info or QE
	// identity (it rises with every Intel TCB recovery); absent for other documents.
	TCBEvaluationDataNumber *uint64 `cbor:"3,keyasint,omitempty"`
	// PreviousTCBEvaluationDataNumber is the tcbEvaluationDataNumber of the document replaced,
	// when both have one. Above it, TCBEvaluationDataNumber marks a TCB recovery reaching the
	// verifier. Only with Previous and TCBEvaluationDataNumber.
	PreviousTCBEvaluationDataNumber *uint64 `cbor:"4,keyasint,omitempty"`
	// TCBDate is the newest tcbDate of the new document's TCB levels, in whole seconds: at a TCB
	// recovery, the date of the levels it added. Only with TCBEvaluationDataNumber.
	TCBDate *time.Time `cbor:"5,keyasint,omitempty"`
}

// AccessAction is what an access_change record did to an API token.
type AccessAction string

// Access actions. A token that passes its expiry is refused from then on without a record: its
// expiry time is in the record of its creation.
const (
	AccessCreate AccessAction = "create"
	AccessRevoke AccessAction = "revoke"
)

// AccessChange describes a change of API access (an access_change record): who created or
// revoked which token, for which principal and until when.
type AccessChange struct {
	// Actor is the principal that made the change ("admin:<name>").
	Actor  string       `cbor:"0,keyasint"`
	Action AccessAction `cbor:"1,keyasint"`
	// TokenID identifies the token (never the token or its hash).
	TokenID string `cbor:"2,keyasint"`
	// Name and Role are the principal the token authenticates.
	Name string `cbor:"3,keyasint"`
	Role string `cbor:"4,keyasint"`
	// ExpiresAt is the token's expiry, in whole seconds.
	ExpiresAt time.Time `cbor:"5,keyasint"`
}

// PolicyChange describes a change of policy; the new policy is Record.Policy.
type PolicyChange struct {
	// Actor identifies who made the change.
	Actor string `cbor:"0,keyasint"`
	// Previous is the policy replaced, absent for the first policy with this ID.
	Previous *PolicyRef `cbor:"1,keyasint,omitempty"`
}

var (
	// encMode is Core Deterministic Encoding (RFC 8949 §4.2.1) with times as tag 1 + integer.
	encMode cbor.EncMode
	// decMode refuses what deterministic encoding never produces, within tight bounds. Whatever
	// it still accepts leniently (non-minimal heads, unsorted maps, other tags…) is caught by the
	// re-encoding comparison in ParseRecord.
	decMode cbor.DecMode
)

func init() {
	eo := cbor.CoreDetEncOptions()
	eo.Time = cbor.TimeUnix
	eo.TimeTag = cbor.EncTagRequired
	var err error
	if encMode, err = eo.EncMode(); err != nil {
		panic(err)
	}
	decMode, err = cbor.DecOptions{
		DupMapKey:         cbor.DupMapKeyEnforcedAPF,
		TimeTag:           cbor.DecTagRequired,
		MaxNestedLevels:   8,
		MaxArrayElements:  MaxCollateral,
		MaxMapPairs:       16,
		IndefLength:       cbor.IndefLengthForbidden,
		TagsMd:            cbor.TagsAllowed,
		ExtraReturnErrors: cbor.ExtraDecErrorUnknownField,
		UTF8:              cbor.UTF8RejectInvalid,
	}.DecMode()
	if err != nil {
		panic(err)
	}
}

// Marshal validates the record and returns its deterministic encoding.
func (r *Record) Marshal() ([]byte, error) {
	if err := r.Validate(); err != nil {
		return nil, err
	}
	b, err := encMode.Marshal(r)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrMalformed, err)
	}
	return b, nil
}

// ParseRecord decodes a record strictly: no duplicate map keys, indefinite lengths, unknown
// fields, trailing bytes, nesting deeper than 8 or input over MaxRecordSize; the record must be
// valid and data must be exactly its deterministic encoding. Every error wraps ErrMalformed.
func ParseRecord(data []byte) (*Record, error) {
	if len(data) > MaxRecordSize {
		return nil, fmt.Errorf("%w: %d bytes, more than %d", ErrMalformed, len(data), MaxRecordSize)
	}
	var r Record
	if err := decMode.Unmarshal(data, &r); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrMalformed, err)
	}
	r.Time = r.Time.UTC()
	for i := range r.CollateralUpdate {
		c := &r.CollateralUpdate[i]
		c.IssuedAt, c.NextUpdate = c.IssuedAt.UTC(), c.NextUpdate.UTC()
		if c.TCBDate != nil {
			d := c.TCBDate.UTC()
			c.TCBDate = &d
		}
	}
	if r.AccessChange != nil {
		r.AccessChange.ExpiresAt = r.AccessChange.ExpiresAt.UTC()
	}
	canon, err := r.Marshal()
	if err != nil {
		return nil, err
	}
	if !bytes.Equal(canon, data) {
		return nil, fmt.Errorf("%w: not in deterministic encoding (RFC 8949 §4.2.1)", ErrMalformed)
	}
	return &r, nil
}

type presence uint8

const (
	forbidden presence = iota
	optional
	required
)

// fieldRules says, per kind, which optional fields a record must, may or must not carry.
var fieldRules = map[Kind]struct {
	subject, evidence, collateral, policy, result, keyRelease, policyChange, collateralUpdate, accessChange presence
}{
	KindAttestation:      {required, required, optional, required, required, forbidden, forbidden, forbidden, forbidden},
	KindPolicyChange:     {forbidden, forbidden, forbidden, required, forbidden, forbidden, required, forbidden, forbidden},
	KindKeyRelease:       {required, forbidden, forbidden, optional, forbidden, required, forbidden, forbidden, forbidden},
	KindCollateralUpdate: {forbidden, forbidden, required, forbidden, forbidden, forbidden, forbidden, optional, forbidden},
	KindAccessChange:     {forbidden, forbidden, forbidden, forbidden, forbidden, forbidden, forbidden, forbidden, required},
}

// Validate checks the record against the schema rules of README.md. Errors wrap ErrMalformed.
func (r *Record) Validate() error {
	if err := r.validate(); err != nil {
		return fmt.Errorf("%w: %w", ErrMalformed, err)
	}
	return nil
}

func (r *Record) validate() error {
	if r.Version != Version {
		return fmt.Errorf("version %d, want %d", r.Version, Version)
	}
	rules, ok := fieldRules[r.Kind]
	if !ok {
		return fmt.Errorf("unknown kind %q", r.Kind)
	}
	if err := checkTime("time", r.Time); err != nil {
		return err
	}
	for _, f := range []struct {
		name    string
		present bool
		rule    presence
	}{
		{"subject", r.Subject != nil, rules.subject},
		{"evidence", r.Evidence != nil, rules.evidence},
		{"collateral", len(r.Collateral) > 0, rules.collateral},
		{"policy", r.Policy != nil, rules.policy},
		{"result", len(r.Result) > 0, rules.result},
		{"key_release", r.KeyRelease != nil, rules.keyRelease},
		{"policy_change", r.PolicyChange != nil, rules.policyChange},
		{"collateral_update", len(r.CollateralUpdate) > 0, rules.collateralUpdate},
		{"access_change", r.AccessChange != nil, rules.accessChange},
	} {
		if f.present && f.rule == forbidden {
			return fmt.Errorf("%s: not allowed in a %s record", f.name, r.Kind)
		}
		if !f.present && f.rule == required {
			return fmt.Errorf("%s: required in a %s record", f.name, r.Kind)
		}
	}
	if s := r.Subject; s != nil {
		if s.ID == "" {
			return fmt.Errorf("subject: empty id")
		}
		switch s.Platform {
		case "tdx", "sev-snp":
		case "":
			if r.Kind == KindAttestation {
				return fmt.Errorf("subject: platform required in an attestation record")
			}
		default:
			return fmt.Errorf("subject: unknown platform %q", s.Platform)
		}
	}
	if e := r.Evidence; e != nil && (len(e.Raw) > 0) == (e.Digest != nil) {
		return fmt.Errorf("evidence: needs exactly one of raw and digest")
	}
	if len(r.Collateral) > MaxCollateral {
		return fmt.Errorf("collateral: %d entries, more than %d", len(r.Collateral), MaxCollateral)
	}
	for i, c := range r.Collateral {
		if c.Kind == "" {
			return fmt.Errorf("collateral[%d]: empty kind", i)
		}
		u, err := url.Parse(c.URL)
		if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
			return fmt.Errorf("collateral[%d]: %q is not an absolute http(s) URL", i, c.URL)
		}
		if i > 0 && r.Collateral[i-1].URL >= c.URL {
			return fmt.Errorf("collateral[%d]: URLs must be sorted and unique (%q after %q)", i, c.URL, r.Collateral[i-1].URL)
		}
	}
	if r.Policy != nil && r.Policy.ID == "" {
		return fmt.Errorf("policy: empty id")
	}
	if len(r.Result) > 0 && !json.Valid(r.Result) {
		return fmt.Errorf("result: not valid JSON")
	}
	if r.Verifier.Name == "" || r.Verifier.Version == "" {
		return fmt.Errorf("verifier: needs a name and a version")
	}
	if k := r.KeyRelease; k != nil {
		if k.RelyingParty == "" || k.Resource == "" {
			return fmt.Errorf("key_release: needs a relying party and a resource")
		}
		if k.Decision != DecisionRelease && k.Decision != DecisionDeny {
			return fmt.Errorf("key_release: unknown decision %q", k.Decision)
		}
	}
	if p := r.PolicyChange; p != nil {
		if p.Actor == "" {
			return fmt.Errorf("policy_change: empty actor")
		}
		if p.Previous != nil && p.Previous.ID == "" {
			return fmt.Errorf("policy_change: previous policy has an empty id")
		}
	}
	if a := r.AccessChange; a != nil {
		if err := a.validate(); err != nil {
			return fmt.Errorf("access_change: %w", err)
		}
	}
	if len(r.CollateralUpdate) > 0 && len(r.CollateralUpdate) != len(r.Collateral) {
		return fmt.Errorf("collateral_update: %d entries for %d collateral documents; give one per document, in the same order", len(r.CollateralUpdate), len(r.Collateral))
	}
	for i, c := range r.CollateralUpdate {
		if err := checkTime(fmt.Sprintf("collateral_update[%d].issued_at", i), c.IssuedAt); err != nil {
			return err
		}
		if err := checkTime(fmt.Sprintf("collateral_update[%d].next_update", i), c.NextUpdate); err != nil {
			return err
		}
		if c.NextUpdate.Before(c.IssuedAt) {
			return fmt.Errorf("collateral_update[%d]: next_update is before issued_at", i)
		}
		if c.Previous != nil && *c.Previous == r.Collateral[i].Digest {
			return fmt.Errorf("collateral_update[%d]: the previous document is the new one; record changes only", i)
		}
		if c.PreviousTCBEvaluationDataNumber != nil && (c.TCBEvaluationDataNumber == nil || c.Previous == nil) {
			return fmt.Errorf("collateral_update[%d]: previous_tcb_evaluation_data_number without tcb_evaluation_data_number and previous", i)
		}
		if c.TCBDate != nil {
			if c.TCBEvaluationDataNumber == nil {
				return fmt.Errorf("collateral_update[%d]: tcb_date without tcb_evaluation_data_number", i)
			}
			if err := checkTime(fmt.Sprintf("collateral_update[%d].tcb_date", i), *c.TCBDate); err != nil {
				return err
			}
		}
	}
	return nil
}

func (a *AccessChange) validate() error {
	switch {
	case a.Actor == "":
		return fmt.Errorf("empty actor")
	case a.Action != AccessCreate && a.Action != AccessRevoke:
		return fmt.Errorf("unknown action %q (create or revoke)", a.Action)
	case a.TokenID == "":
		return fmt.Errorf("empty token id")
	case a.Name == "":
		return fmt.Errorf("empty principal name")
	case a.Role == "":
		return fmt.Errorf("empty role")
	}
	return checkTime("expires_at", a.ExpiresAt)
}

// checkTime enforces the package's one rule for times: whole seconds, 1970-01-01T00:00:01Z to
// the end of year 9999 (so that every time also has an RFC 3339 form).
func checkTime(name string, t time.Time) error {
	if t.Unix() <= 0 || t.UTC().Year() > 9999 {
		return fmt.Errorf("%s %s is outside 1970..9999", name, t.UTC().Format(time.RFC3339))
	}
	if t.Nanosecond() != 0 {
		return fmt.Errorf("%s %s has a sub-second part; times have second precision", name, t.UTC().Format(time.RFC3339Nano))
	}
	return nil
}
