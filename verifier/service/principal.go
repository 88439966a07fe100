package service

import "fmt"

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
type Principal struct {
	// Name identifies the caller within its role: the agent's VM or workload id, the relying
	// party's service name, the operator's name.
	Name string
	Role Role
}

// Anonymous reports whether p is the unauthenticated caller.
func (p Principal) Anonymous() bool { return p.Name == "" }

// String is "role:name", the form used in nonce bindings, logs and policy change records.
func (p Principal) String() string {
	if p.Anonymous() {
		return "anonymous"
	}
	return fmt.Sprintf("%s:%s", p.Role, p.Name)
}

// subject is the subject id of the attestation records of evidence p submits: an agent's own
// name, or "relying-party:<name>" for evidence a relying party submits on an attester's behalf.
func (p Principal) subject() string {
	if p.Role == RoleAgent {
		return p.Name
	}
	return p.String()
}

// binding is the nonce binding of challenges p asks for: "" for the anonymous caller, otherwise
// "role:name", so that a nonce issued to one principal is refused to every other.
func (p Principal) binding() string {
	if p.Anonymous() {
		return ""
	}
	return p.String()
}
