package service

import (
	"fmt"
	"strings"
	"unicode"
)

// Role is what an authenticated caller may do (the role matrix is in verifier/api/openapi.yaml).
type Role string

// Roles.
const (
	// RoleAgent: a guest agent submitting its own evidence (token or mTLS client certificate).
	RoleAgent Role = "agent"
	// RoleRelyingParty: a relying party (a key-release service): submits evidence it was handed
	// (background check), reads results, records its release decisions.
	RoleRelyingParty Role = "relying-party"
	// RoleAdmin: manages policies; reads everything.
	RoleAdmin Role = "admin"
	// RoleAuditor: reads results, records, proofs, keys, policies and metrics; changes nothing.
	RoleAuditor Role = "auditor"
)

// Roles lists every role.
var Roles = []Role{RoleAgent, RoleRelyingParty, RoleAdmin, RoleAuditor}

// Valid reports whether r is one of Roles.
func (r Role) Valid() bool {
	switch r {
	case RoleAgent, RoleRelyingParty, RoleAdmin, RoleAuditor:
		return true
	}
	return false
}

// Principal is an authenticated caller. The zero value is the anonymous caller.
//
// Principal names live in two namespaces that cannot collide: names from API tokens are plain
// (ValidName: no ':' or '/'), and names from TLS client certificates are
// "mtls:<issuer>/<common name>" (CertificateName), where <issuer> is the short hex SHA-256 of the
// issuing CA's public key, so that the same common name from two CAs is two principals.
type Principal struct {
	// Name identifies the caller within its role: the agent's VM or workload id, the relying
	// party's service name, the operator's name.
	Name string
	Role Role
}

// ValidName checks a principal name from configuration (an API token's name) or a certificate's
// common name: not empty, at most 128 characters, no ':' or '/' (they separate the role and the
// certificate issuer in subjects and nonce bindings), no spaces or control characters.
func ValidName(name string) error {
	switch {
	case name == "":
		return fmt.Errorf("the name is empty")
	case len(name) > 128:
		return fmt.Errorf("the name %.20q… is longer than 128 bytes", name)
	case strings.ContainsAny(name, ":/"):
		return fmt.Errorf("the name %q contains ':' or '/', which are reserved (role and certificate issuer prefixes)", name)
	case strings.ContainsFunc(name, func(r rune) bool { return unicode.IsSpace(r) || !unicode.IsPrint(r) }):
		return fmt.Errorf("the name %q contains spaces or control characters", name)
	}
	return nil
}

// CertificateName is the principal name of a TLS client certificate's common name cn issued by the
// CA whose SubjectPublicKeyInfo has the SHA-256 issuerSPKI: "mtls:<first 8 bytes in hex>/<cn>".
// cn must pass ValidName. No API token name can equal it (token names have no ':' or '/').
func CertificateName(issuerSPKI [32]byte, cn string) (string, error) {
	if err := ValidName(cn); err != nil {
		return "", fmt.Errorf("client certificate common name: %w", err)
	}
	return fmt.Sprintf("mtls:%x/%s", issuerSPKI[:8], cn), nil
}

// Check reports whether p's name is in one of the two namespaces: a plain name (ValidName), or,
// for an agent, a CertificateName. Attest and Challenge refuse any other principal.
func (p Principal) Check() error {
	if p.Anonymous() {
		return nil
	}
	if rest, ok := strings.CutPrefix(p.Name, "mtls:"); ok && p.Role == RoleAgent {
		issuer, cn, ok := strings.Cut(rest, "/")
		if !ok || len(issuer) != 16 || strings.Trim(issuer, "0123456789abcdef") != "" {
			return fmt.Errorf("principal %q: not mtls:<16 hex digits>/<common name>", p.Name)
		}
		return ValidName(cn)
	}
	return ValidName(p.Name)
}

// Anonymous reports whether p is the unauthenticated caller.
func (p Principal) Anonymous() bool { return p.Name == "" }

// String is "role:name", the form used in nonce bindings, record subjects, logs and policy change
// records. It is unambiguous: the role has no ':' and names cannot collide across namespaces.
func (p Principal) String() string {
	if p.Anonymous() {
		return "anonymous"
	}
	return fmt.Sprintf("%s:%s", p.Role, p.Name)
}

// subject is the subject id of the attestation records of evidence p submits: always
// role-prefixed, "agent:<name>" for an agent's own evidence, "relying-party:<name>" for evidence
// a relying party submits on an attester's behalf, so that no agent's subject can equal a
// relying party's.
func (p Principal) subject() string { return p.String() }

// binding is the nonce binding of challenges p asks for: "" for the anonymous caller, otherwise
// "role:name", so that a nonce issued to one principal is refused to every other.
func (p Principal) binding() string {
	if p.Anonymous() {
		return ""
	}
	return p.String()
}
