package service

import (
	"crypto/sha256"
	"testing"
)

// Token names and certificate names live in namespaces that cannot collide, and subjects and
// nonce bindings are role-prefixed.
func TestPrincipalNamespaces(t *testing.T) {
	for _, bad := range []string{"", "relying-party:key-release", "agent:vm", "mtls:0011223344556677/vm", "a/b", "vm 1", "vm\x00"} {
		if ValidName(bad) == nil {
			t.Errorf("ValidName(%q) = nil", bad)
		}
		if (Principal{Name: bad, Role: RoleAgent}).Check() == nil && bad != "" && bad != "mtls:0011223344556677/vm" {
			t.Errorf("Check(%q) = nil", bad)
		}
	}
	caA, caB := sha256.Sum256([]byte("CA A")), sha256.Sum256([]byte("CA B"))
	a, err := CertificateName(caA, "vm-tdx")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := CertificateName(caB, "vm-tdx")
	if a == b || a == "vm-tdx" || (Principal{Name: a, Role: RoleAgent}).Check() != nil {
		t.Fatalf("certificate names %q, %q", a, b)
	}
	if _, err := CertificateName(caA, "relying-party:key-release"); err == nil {
		t.Fatal("a common name with ':' was accepted")
	}
	if (Principal{Name: a, Role: RoleRelyingParty}).Check() == nil {
		t.Fatal("a certificate name for a relying party was accepted")
	}
	agent, rp := Principal{Name: "key-release", Role: RoleAgent}, Principal{Name: "key-release", Role: RoleRelyingParty}
	if agent.subject() != "agent:key-release" || rp.subject() != "relying-party:key-release" || agent.binding() == rp.binding() {
		t.Fatalf("subjects %q %q, bindings %q %q", agent.subject(), rp.subject(), agent.binding(), rp.binding())
	}
}
