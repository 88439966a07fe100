package api

import (
	"crypto/sha256"
	"crypto/subtle"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/proofline/proofline/verifier/service"
)

// errUnauthenticated is a request without a valid credential: 401.
var errUnauthenticated = errors.New("api: authentication required")

// authenticator maps credentials to principals. API tokens are kept as their SHA-256 only and
// compared in constant time against every configured hash, so neither the tokens nor which one
// matched leak through storage or timing.
type authenticator struct {
	hashes     [][]byte
	principals []service.Principal
	// store checks tokens created through the API and keeps principals' last use (tokens.go);
	// nil: configuration tokens only.
	store accessStore
}

func newAuthenticator(tokens []TokenConfig) *authenticator {
	a := &authenticator{}
	for _, t := range tokens {
		h, _ := hex.DecodeString(t.SHA256) // Validate checked it
		a.hashes = append(a.hashes, h)
		a.principals = append(a.principals, service.Principal{Name: t.Name, Role: t.Role})
	}
	return a
}

// certificatePrincipal is the agent a verified client certificate chain authenticates:
// "mtls:<issuer>/<CN>" (service.CertificateName), where <issuer> names the public key of the CA
// that issued the leaf. The same common name from two CAs of client_ca_file is two agents, and
// no certificate can take a token principal's name. A common name that is empty or holds ':',
// '/', spaces or control characters authenticates no one.
func certificatePrincipal(chain []*x509.Certificate) (service.Principal, error) {
	leaf, issuer := chain[0], chain[0]
	if len(chain) > 1 {
		issuer = chain[1]
	}
	name, err := service.CertificateName(sha256.Sum256(issuer.RawSubjectPublicKeyInfo), leaf.Subject.CommonName)
	if err != nil {
		return service.Principal{}, fmt.Errorf("%w: %w", errUnauthenticated, err)
	}
	return service.Principal{Name: name, Role: service.RoleAgent}, nil
}

// authenticate returns the request's principal: the bearer token's, or else (agents only) the
// verified TLS client certificate's (certificatePrincipal), or else the anonymous principal. A credential that is
// present but unknown is errUnauthenticated: it never falls back to anonymous.
func (a *authenticator) authenticate(r *http.Request) (service.Principal, error) {
	if h := r.Header.Get("Authorization"); h != "" {
		scheme, tok, ok := strings.Cut(h, " ")
		if !ok || !strings.EqualFold(scheme, "Bearer") || tok == "" {
			return service.Principal{}, errUnauthenticated
		}
		sum := sha256.Sum256([]byte(strings.TrimSpace(tok)))
		match := -1
		for i, want := range a.hashes {
			if subtle.ConstantTimeCompare(sum[:], want) == 1 {
				match = i
			}
		}
		if match < 0 {
			return a.databaseToken(r, strings.TrimSpace(tok), sum)
		}
		a.noteUse(r, a.principals[match])
		return a.principals[match], nil
	}
	if r.TLS != nil && len(r.TLS.VerifiedChains) > 0 {
		p, err := certificatePrincipal(r.TLS.VerifiedChains[0])
		if err == nil {
			a.noteUse(r, p)
		}
		return p, err
	}
	return service.Principal{}, nil
}
