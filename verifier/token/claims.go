package token

import (
	"bytes"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/fxamacker/cbor/v2"
	"github.com/proofline/proofline/verifier/ear"
)

// Developer is the "developer" of the ear.verifier-id claim.
const Developer = "proofline"

// Claims is the claim set of a result token, independent of its encoding. README.md gives the JWT
// name and the CWT label of every field.
type Claims struct {
	// Issuer (iss) names the verifier service, e.g. its URL.
	Issuer string
	// Subject (sub) is the evidence record's subject (the VM or workload id), or empty.
	Subject string
	// Audience (aud) lists the relying parties the token is for; at least one.
	Audience []string
	// IssuedAt (iat), NotBefore (nbf) and Expiry (exp) have whole seconds. NotBefore is zero
	// when the token has no nbf.
	IssuedAt  time.Time
	NotBefore time.Time
	Expiry    time.Time
	// ID (jti, base64url in a JWT; cti in a CWT) is random, 16 bytes from this package.
	ID []byte
	// Nonce (eat_nonce) is the verifier nonce the appraisal checked the evidence against, or nil
	// when the appraisal checked none (then Status is at best warning).
	Nonce []byte
	// Verifier is ear.verifier-id: the verifier's build (its version) and developer.
	Verifier VerifierID
	// Platform names the one submodule: "tdx" or "sev-snp" (the evidence envelope's platform).
	Platform string
	// Status is the submodule's ear.status.
	Status ear.Status
	// TrustVector is the submodule's ear.trustworthiness-vector; a zero entry is "no claim" and
	// is left out of the encoding.
	TrustVector ear.TrustVector
	// PolicyID and PolicyDigest name the appraisal policy ("sha256:<hex>" of its exact bytes).
	// The submodule's ear.appraisal-policy-id is PolicyID + "@" + PolicyDigest.
	PolicyID     string
	PolicyDigest string
	// LogIndex is the evidence record's index in the evidence log.
	LogIndex uint64
	// RecordSHA256 is the SHA-256 of the signed evidence record (its COSE_Sign1 bytes, which are
	// the log leaf). It is the value a key-release record puts in KeyRelease.Attestation.
	RecordSHA256 [32]byte
	// Failures and Warnings are the codes (verifier/README.md) of the result's findings.
	Failures []ear.Code
	Warnings []ear.Code
	// TestRoots is true when the verifier ran with test vendor roots (test mode or --roots).
	TestRoots bool
}

// VerifierID is the ear.verifier-id claim (draft-ietf-rats-ear §2.1, AR4SI §2.2.2).
type VerifierID struct {
	Build     string
	Developer string
}

// AppraisalPolicyID returns the ear.appraisal-policy-id of the submodule: "<policy id>@<digest>".
func (c *Claims) AppraisalPolicyID() string { return c.PolicyID + "@" + c.PolicyDigest }

// Payload sizes and counts are bounded on decoding.
const (
	maxFindings = 256
	minNonce    = 8  // EAT eat_nonce: 8..64 bytes (RFC 9711 §4.1)
	maxNonce    = 64 // ditto
	maxID       = 64
)

// validate enforces the rules every token obeys, on issuing and on parsing.
func (c *Claims) validate() error {
	switch {
	case c.Issuer == "":
		return errors.New("no issuer (iss)")
	case len(c.Audience) == 0:
		return errors.New("no audience (aud)")
	case c.IssuedAt.IsZero() || c.Expiry.IsZero():
		return errors.New("iat and exp are required")
	case !c.Expiry.After(c.IssuedAt):
		return fmt.Errorf("exp %d is not after iat %d", c.Expiry.Unix(), c.IssuedAt.Unix())
	case !c.NotBefore.IsZero() && !c.NotBefore.Before(c.Expiry):
		return fmt.Errorf("nbf %d is not before exp %d", c.NotBefore.Unix(), c.Expiry.Unix())
	case len(c.ID) > maxID:
		return fmt.Errorf("token id of %d bytes, more than %d", len(c.ID), maxID)
	case c.Nonce != nil && (len(c.Nonce) < minNonce || len(c.Nonce) > maxNonce):
		return fmt.Errorf("eat_nonce of %d bytes, want %d..%d", len(c.Nonce), minNonce, maxNonce)
	case c.Verifier.Build == "" || c.Verifier.Developer == "":
		return errors.New("ear.verifier-id needs a build and a developer")
	case c.Platform == "":
		return errors.New("no platform (submodule name)")
	case c.PolicyID == "" || c.PolicyDigest == "":
		return errors.New("no policy id or digest")
	case c.RecordSHA256 == [32]byte{}:
		return errors.New("no evidence record digest")
	case len(c.Failures) > maxFindings || len(c.Warnings) > maxFindings:
		return fmt.Errorf("more than %d failures or warnings", maxFindings)
	}
	for _, a := range c.Audience {
		if a == "" {
			return errors.New("empty audience entry")
		}
	}
	for _, f := range append(append([]ear.Code(nil), c.Failures...), c.Warnings...) {
		if f == "" {
			return errors.New("empty failure or warning code")
		}
	}
	if _, err := tierOf(c.Status); err != nil {
		return err
	}
	// The status follows the findings exactly as ear.Result.Finalize derives it.
	want := ear.StatusAffirming
	switch {
	case len(c.Failures) > 0:
		want = ear.StatusContraindicated
	case len(c.Warnings) > 0:
		want = ear.StatusWarning
	}
	if c.Status != want {
		return fmt.Errorf("ear.status %q with %d failures and %d warnings, want %q", c.Status, len(c.Failures), len(c.Warnings), want)
	}
	// draft-ietf-rats-ear §2.2: ear.status is no more trusting than the worst claim of the vector.
	st, _ := tierOf(c.Status)
	for name, v := range trustEntries(&c.TrustVector) {
		if t := claimTier(v); t > st {
			return fmt.Errorf("ear.status %q is more trusting than trust vector claim %s=%d", c.Status, name, v)
		}
	}
	return nil
}

// AR4SI trust tiers as EAR encodes them in CBOR (draft-ietf-rats-ear, trust-tiers).
const (
	tierNone            = 0
	tierAffirming       = 2
	tierWarning         = 32
	tierContraindicated = 96
)

func tierOf(s ear.Status) (int, error) {
	switch s {
	case ear.StatusAffirming:
		return tierAffirming, nil
	case ear.StatusWarning:
		return tierWarning, nil
	case ear.StatusContraindicated:
		return tierContraindicated, nil
	}
	return 0, fmt.Errorf("ear.status %q is not affirming, warning or contraindicated", s)
}

func statusOfTier(t int64) (ear.Status, error) {
	switch t {
	case tierAffirming:
		return ear.StatusAffirming, nil
	case tierWarning:
		return ear.StatusWarning, nil
	case tierContraindicated:
		return ear.StatusContraindicated, nil
	}
	return "", fmt.Errorf("ear.status %d is not 2 (affirming), 32 (warning) or 96 (contraindicated)", t)
}

// claimTier is the tier of an AR4SI trustworthiness claim (draft-ietf-rats-ar4si §2.3.2): |v| ≤ 1
// none, ≤ 31 affirming, ≤ 95 warning, otherwise contraindicated.
func claimTier(v int8) int {
	a := int(v)
	if a < 0 {
		a = -a
	}
	switch {
	case a <= 1:
		return tierNone
	case a <= 31:
		return tierAffirming
	case a <= 95:
		return tierWarning
	}
	return tierContraindicated
}

func trustEntries(tv *ear.TrustVector) map[string]int8 {
	return map[string]int8{
		"instance-identity": tv.InstanceIdentity, "configuration": tv.Configuration,
		"executables": tv.Executables, "file-system": tv.FileSystem, "hardware": tv.Hardware,
		"runtime-opaque": tv.RuntimeOpaque, "storage-opaque": tv.StorageOpaque, "sourced-data": tv.SourcedData,
	}
}

// audience is aud: one string encodes as a string, several as an array (RFC 7519 §4.1.3); both
// forms decode.
type audience []string

func (a audience) MarshalJSON() ([]byte, error) {
	if len(a) == 1 {
		return json.Marshal(a[0])
	}
	return json.Marshal([]string(a))
}

func (a *audience) UnmarshalJSON(b []byte) error {
	var one string
	if err := json.Unmarshal(b, &one); err == nil {
		*a = audience{one}
		return nil
	}
	var many []string
	if err := json.Unmarshal(b, &many); err != nil {
		return errors.New("aud is neither a string nor an array of strings")
	}
	*a = many
	return nil
}

func (a audience) MarshalCBOR() ([]byte, error) {
	if len(a) == 1 {
		return encMode.Marshal(a[0])
	}
	return encMode.Marshal([]string(a))
}

func (a *audience) UnmarshalCBOR(b []byte) error {
	var one string
	if err := decMode.Unmarshal(b, &one); err == nil {
		*a = audience{one}
		return nil
	}
	var many []string
	if err := decMode.Unmarshal(b, &many); err != nil {
		return errors.New("aud is neither a text string nor an array of text strings")
	}
	*a = many
	return nil
}

// JWT payload (README.md, "JWT").
type jwtClaims struct {
	Iss        string                  `json:"iss"`
	Sub        string                  `json:"sub,omitempty"`
	Aud        audience                `json:"aud"`
	Exp        *int64                  `json:"exp"`
	Nbf        *int64                  `json:"nbf,omitempty"`
	Iat        *int64                  `json:"iat"`
	Jti        string                  `json:"jti,omitempty"`
	Profile    string                  `json:"eat_profile"`
	Nonce      string                  `json:"eat_nonce,omitempty"`
	VerifierID *jwtVerifierID          `json:"ear.verifier-id"`
	Submods    map[string]jwtAppraisal `json:"submods"`
	Proofline  *jwtProofline           `json:"proofline"`
}

type jwtVerifierID struct {
	Build     string `json:"build"`
	Developer string `json:"developer"`
}

type jwtAppraisal struct {
	Status      ear.Status      `json:"ear.status"`
	TrustVector *jwtTrustVector `json:"ear.trustworthiness-vector,omitempty"`
	PolicyID    string          `json:"ear.appraisal-policy-id,omitempty"`
}

type jwtTrustVector struct {
	InstanceIdentity int8 `json:"instance-identity,omitempty"`
	Configuration    int8 `json:"configuration,omitempty"`
	Executables      int8 `json:"executables,omitempty"`
	FileSystem       int8 `json:"file-system,omitempty"`
	Hardware         int8 `json:"hardware,omitempty"`
	RuntimeOpaque    int8 `json:"runtime-opaque,omitempty"`
	StorageOpaque    int8 `json:"storage-opaque,omitempty"`
	SourcedData      int8 `json:"sourced-data,omitempty"`
}

type jwtProofline struct {
	LogIndex     *uint64    `json:"log_index"`
	RecordSHA256 string     `json:"record_sha256"`
	PolicyID     string     `json:"policy_id"`
	PolicyDigest string     `json:"policy_digest"`
	Failures     []ear.Code `json:"failures"`
	Warnings     []ear.Code `json:"warnings"`
	TestRoots    bool       `json:"test_roots"`
}

// CWT payload (README.md, "CWT"): RFC 8392 and EAT labels, EAR's labels, and the Proofline claim
// under a private-use label (less than -65536, RFC 8392 §9.1).
type cwtClaims struct {
	Iss        string                  `cbor:"1,keyasint"`
	Sub        string                  `cbor:"2,keyasint,omitempty"`
	Aud        audience                `cbor:"3,keyasint"`
	Exp        *int64                  `cbor:"4,keyasint"`
	Nbf        *int64                  `cbor:"5,keyasint,omitempty"`
	Iat        *int64                  `cbor:"6,keyasint"`
	Cti        []byte                  `cbor:"7,keyasint,omitempty"`
	Nonce      []byte                  `cbor:"10,keyasint,omitempty"`
	Profile    string                  `cbor:"265,keyasint"`
	Submods    map[string]cwtAppraisal `cbor:"266,keyasint"`
	VerifierID *cwtVerifierID          `cbor:"1004,keyasint"`
	Proofline  *cwtProofline           `cbor:"-65537,keyasint"`
}

type cwtVerifierID struct {
	Developer string `cbor:"0,keyasint"`
	Build     string `cbor:"1,keyasint"`
}

type cwtAppraisal struct {
	Status      *int64          `cbor:"1000,keyasint"`
	TrustVector *cwtTrustVector `cbor:"1001,keyasint,omitempty"`
	PolicyID    string          `cbor:"1003,keyasint,omitempty"`
}

type cwtTrustVector struct {
	InstanceIdentity int8 `cbor:"0,keyasint,omitempty"`
	Configuration    int8 `cbor:"1,keyasint,omitempty"`
	Executables      int8 `cbor:"2,keyasint,omitempty"`
	FileSystem       int8 `cbor:"3,keyasint,omitempty"`
	Hardware         int8 `cbor:"4,keyasint,omitempty"`
	RuntimeOpaque    int8 `cbor:"5,keyasint,omitempty"`
	StorageOpaque    int8 `cbor:"6,keyasint,omitempty"`
	SourcedData      int8 `cbor:"7,keyasint,omitempty"`
}

type cwtProofline struct {
	LogIndex     *uint64    `cbor:"0,keyasint"`
	RecordSHA256 []byte     `cbor:"1,keyasint"`
	PolicyID     string     `cbor:"2,keyasint"`
	PolicyDigest string     `cbor:"3,keyasint"`
	Failures     []ear.Code `cbor:"4,keyasint"`
	Warnings     []ear.Code `cbor:"5,keyasint"`
	TestRoots    bool       `cbor:"6,keyasint"`
}

var (
	// encMode is Core Deterministic Encoding (RFC 8949 §4.2.1).
	encMode cbor.EncMode
	// decMode refuses duplicate keys, indefinite lengths, tags and invalid UTF-8, within bounds.
	// Unknown claims are ignored (draft-ietf-rats-ear §3: a receiver MUST ignore unknown claims).
	decMode cbor.DecMode
)

func init() {
	var err error
	if encMode, err = cbor.CoreDetEncOptions().EncMode(); err != nil {
		panic(err)
	}
	decMode, err = cbor.DecOptions{
		DupMapKey:        cbor.DupMapKeyEnforcedAPF,
		IndefLength:      cbor.IndefLengthForbidden,
		TagsMd:           cbor.TagsForbidden,
		MaxNestedLevels:  8,
		MaxArrayElements: maxFindings,
		MaxMapPairs:      64,
		UTF8:             cbor.UTF8RejectInvalid,
	}.DecMode()
	if err != nil {
		panic(err)
	}
}

func nonNil(codes []ear.Code) []ear.Code {
	if codes == nil {
		return []ear.Code{}
	}
	return codes
}

func (c *Claims) times() (iat, exp int64, nbf *int64) {
	iat, exp = c.IssuedAt.Unix(), c.Expiry.Unix()
	if !c.NotBefore.IsZero() {
		n := c.NotBefore.Unix()
		nbf = &n
	}
	return iat, exp, nbf
}

func (c *Claims) jwtTrustVector() *jwtTrustVector {
	if c.TrustVector == (ear.TrustVector{}) {
		return nil
	}
	tv := jwtTrustVector(c.TrustVector)
	return &tv
}

func (c *Claims) cwtTrustVector() *cwtTrustVector {
	if c.TrustVector == (ear.TrustVector{}) {
		return nil
	}
	tv := cwtTrustVector(c.TrustVector)
	return &tv
}

// marshalJWT encodes the JWT payload. Encoding is deterministic.
func (c *Claims) marshalJWT() ([]byte, error) {
	if err := c.validate(); err != nil {
		return nil, err
	}
	iat, exp, nbf := c.times()
	idx := c.LogIndex
	p := jwtClaims{
		Iss: c.Issuer, Sub: c.Subject, Aud: audience(c.Audience),
		Exp: &exp, Nbf: nbf, Iat: &iat,
		Profile:    ear.Profile,
		VerifierID: &jwtVerifierID{Build: c.Verifier.Build, Developer: c.Verifier.Developer},
		Submods: map[string]jwtAppraisal{c.Platform: {
			Status: c.Status, TrustVector: c.jwtTrustVector(), PolicyID: c.AppraisalPolicyID(),
		}},
		Proofline: &jwtProofline{
			LogIndex: &idx, RecordSHA256: hex.EncodeToString(c.RecordSHA256[:]),
			PolicyID: c.PolicyID, PolicyDigest: c.PolicyDigest,
			Failures: nonNil(c.Failures), Warnings: nonNil(c.Warnings), TestRoots: c.TestRoots,
		},
	}
	if c.ID != nil {
		p.Jti = base64.RawURLEncoding.EncodeToString(c.ID)
	}
	if c.Nonce != nil {
		p.Nonce = base64.RawURLEncoding.EncodeToString(c.Nonce)
	}
	return json.Marshal(p)
}

// marshalCWT encodes the CWT payload in Core Deterministic Encoding.
func (c *Claims) marshalCWT() ([]byte, error) {
	if err := c.validate(); err != nil {
		return nil, err
	}
	iat, exp, nbf := c.times()
	idx := c.LogIndex
	st, _ := tierOf(c.Status)
	status := int64(st)
	p := cwtClaims{
		Iss: c.Issuer, Sub: c.Subject, Aud: audience(c.Audience),
		Exp: &exp, Nbf: nbf, Iat: &iat, Cti: c.ID, Nonce: c.Nonce,
		Profile:    ear.Profile,
		VerifierID: &cwtVerifierID{Build: c.Verifier.Build, Developer: c.Verifier.Developer},
		Submods: map[string]cwtAppraisal{c.Platform: {
			Status: &status, TrustVector: c.cwtTrustVector(), PolicyID: c.AppraisalPolicyID(),
		}},
		Proofline: &cwtProofline{
			LogIndex: &idx, RecordSHA256: c.RecordSHA256[:],
			PolicyID: c.PolicyID, PolicyDigest: c.PolicyDigest,
			Failures: nonNil(c.Failures), Warnings: nonNil(c.Warnings), TestRoots: c.TestRoots,
		},
	}
	return encMode.Marshal(p)
}

// ParseJWTPayload decodes and validates the claims of a JWT payload (the JSON bytes, after
// base64url decoding). It verifies nothing about who signed them: use package verifier/rp to
// verify a token.
func ParseJWTPayload(payload []byte) (*Claims, error) {
	var p jwtClaims
	if err := json.Unmarshal(payload, &p); err != nil {
		return nil, fmt.Errorf("token: JWT claims: %w", err)
	}
	c, err := p.claims()
	if err != nil {
		return nil, fmt.Errorf("token: JWT claims: %w", err)
	}
	return c, nil
}

func (p *jwtClaims) claims() (*Claims, error) {
	if p.Profile != ear.Profile {
		return nil, fmt.Errorf("eat_profile %q, want %q", p.Profile, ear.Profile)
	}
	if p.Iat == nil || p.Exp == nil {
		return nil, errors.New("iat and exp are required")
	}
	if p.VerifierID == nil {
		return nil, errors.New("no ear.verifier-id")
	}
	if p.Proofline == nil || p.Proofline.LogIndex == nil || p.Proofline.RecordSHA256 == "" {
		return nil, errors.New("no Proofline evidence record reference (proofline.log_index, proofline.record_sha256)")
	}
	if len(p.Submods) != 1 {
		return nil, fmt.Errorf("%d submods, want exactly one", len(p.Submods))
	}
	c := &Claims{
		Issuer: p.Iss, Subject: p.Sub, Audience: p.Aud,
		IssuedAt: time.Unix(*p.Iat, 0).UTC(), Expiry: time.Unix(*p.Exp, 0).UTC(),
		Verifier:     VerifierID{Build: p.VerifierID.Build, Developer: p.VerifierID.Developer},
		LogIndex:     *p.Proofline.LogIndex,
		PolicyID:     p.Proofline.PolicyID,
		PolicyDigest: p.Proofline.PolicyDigest,
		Failures:     p.Proofline.Failures,
		Warnings:     p.Proofline.Warnings,
		TestRoots:    p.Proofline.TestRoots,
	}
	if p.Nbf != nil {
		c.NotBefore = time.Unix(*p.Nbf, 0).UTC()
	}
	var err error
	if p.Jti != "" {
		if c.ID, err = base64.RawURLEncoding.Strict().DecodeString(p.Jti); err != nil {
			return nil, fmt.Errorf("jti is not base64url: %w", err)
		}
	}
	if p.Nonce != "" {
		if c.Nonce, err = base64.RawURLEncoding.Strict().DecodeString(p.Nonce); err != nil {
			return nil, fmt.Errorf("eat_nonce is not base64url: %w", err)
		}
	}
	sum, err := hex.DecodeString(p.Proofline.RecordSHA256)
	if err != nil || len(sum) != 32 || hex.EncodeToString(sum) != p.Proofline.RecordSHA256 {
		return nil, errors.New("proofline.record_sha256 is not 64 lower-case hex digits")
	}
	copy(c.RecordSHA256[:], sum)
	for name, a := range p.Submods {
		c.Platform, c.Status = name, a.Status
		if a.TrustVector != nil {
			c.TrustVector = ear.TrustVector(*a.TrustVector)
		}
		if a.PolicyID != c.AppraisalPolicyID() {
			return nil, fmt.Errorf("ear.appraisal-policy-id %q differs from the Proofline policy %q", a.PolicyID, c.AppraisalPolicyID())
		}
	}
	if err := c.validate(); err != nil {
		return nil, err
	}
	return c, nil
}

// ParseCWTPayload decodes and validates the claims of a CWT payload (the CBOR claims map). It
// verifies nothing about who signed them: use package verifier/rp to verify a token.
func ParseCWTPayload(payload []byte) (*Claims, error) {
	var p cwtClaims
	if err := decMode.Unmarshal(payload, &p); err != nil {
		return nil, fmt.Errorf("token: CWT claims: %w", err)
	}
	c, err := p.claims()
	if err != nil {
		return nil, fmt.Errorf("token: CWT claims: %w", err)
	}
	return c, nil
}

func (p *cwtClaims) claims() (*Claims, error) {
	if p.Profile != ear.Profile {
		return nil, fmt.Errorf("eat_profile (265) %q, want %q", p.Profile, ear.Profile)
	}
	if p.Iat == nil || p.Exp == nil {
		return nil, errors.New("iat (6) and exp (4) are required")
	}
	if p.VerifierID == nil {
		return nil, errors.New("no ear.verifier-id (1004)")
	}
	if p.Proofline == nil || p.Proofline.LogIndex == nil || p.Proofline.RecordSHA256 == nil {
		return nil, errors.New("no Proofline evidence record reference (-65537: 0 log index, 1 record SHA-256)")
	}
	if len(p.Proofline.RecordSHA256) != 32 {
		return nil, fmt.Errorf("record SHA-256 of %d bytes, want 32", len(p.Proofline.RecordSHA256))
	}
	if len(p.Submods) != 1 {
		return nil, fmt.Errorf("%d submods (266), want exactly one", len(p.Submods))
	}
	c := &Claims{
		Issuer: p.Iss, Subject: p.Sub, Audience: p.Aud,
		IssuedAt: time.Unix(*p.Iat, 0).UTC(), Expiry: time.Unix(*p.Exp, 0).UTC(),
		ID: p.Cti, Nonce: p.Nonce,
		Verifier:     VerifierID{Build: p.VerifierID.Build, Developer: p.VerifierID.Developer},
		LogIndex:     *p.Proofline.LogIndex,
		PolicyID:     p.Proofline.PolicyID,
		PolicyDigest: p.Proofline.PolicyDigest,
		Failures:     p.Proofline.Failures,
		Warnings:     p.Proofline.Warnings,
		TestRoots:    p.Proofline.TestRoots,
	}
	if p.Nbf != nil {
		c.NotBefore = time.Unix(*p.Nbf, 0).UTC()
	}
	copy(c.RecordSHA256[:], p.Proofline.RecordSHA256)
	for name, a := range p.Submods {
		if a.Status == nil {
			return nil, errors.New("no ear.status (1000)")
		}
		st, err := statusOfTier(*a.Status)
		if err != nil {
			return nil, err
		}
		c.Platform, c.Status = name, st
		if a.TrustVector != nil {
			c.TrustVector = ear.TrustVector(*a.TrustVector)
		}
		if a.PolicyID != c.AppraisalPolicyID() {
			return nil, fmt.Errorf("ear.appraisal-policy-id (1003) %q differs from the Proofline policy %q", a.PolicyID, c.AppraisalPolicyID())
		}
	}
	if err := c.validate(); err != nil {
		return nil, err
	}
	return c, nil
}

// Equal reports whether two claim sets are the same, treating nil and empty lists alike.
func (c *Claims) Equal(o *Claims) bool {
	return c.Issuer == o.Issuer && c.Subject == o.Subject && slices.Equal(c.Audience, o.Audience) &&
		c.IssuedAt.Equal(o.IssuedAt) && c.NotBefore.Equal(o.NotBefore) && c.Expiry.Equal(o.Expiry) &&
		bytes.Equal(c.ID, o.ID) && bytes.Equal(c.Nonce, o.Nonce) &&
		c.Verifier == o.Verifier && c.Platform == o.Platform && c.Status == o.Status &&
		c.TrustVector == o.TrustVector && c.PolicyID == o.PolicyID && c.PolicyDigest == o.PolicyDigest &&
		c.LogIndex == o.LogIndex && c.RecordSHA256 == o.RecordSHA256 &&
		slices.Equal(c.Failures, o.Failures) && slices.Equal(c.Warnings, o.Warnings) && c.TestRoots == o.TestRoots
}
