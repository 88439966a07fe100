package snp

import (
	"bytes"
	"crypto/x509"
	"encoding/pem"
	"fmt"

	"github.com/proofline/proofline/verifier/collateral"
	"github.com/proofline/proofline/verifier/roots"
)

// Authentic reports whether r, an AMD KDS document whose validity (collateral.ValidityOf) has
// kind v.Kind, was issued by AMD: signed through a chain that ends at the pinned ARK of one of
// products. A collateral cache asks this before it keeps a fetched document or raises its URL's
// mark (collateral.CacheConfig.Authenticate), so that a forged document — a CRL or a VCEK
// claiming a far-future date — can neither be served from the cache nor make the genuine
// documents that follow look like rollbacks.
//
// It checks signatures only. Validity periods, revocation and freshness depend on the
// verification time and are the verifier's, on every verification (Verify).
//
//   - CRLs: signed by a pinned ARK.
//   - A VCEK or VLEK certificate: signed by a pinned ASK or ASVK. The KDS answer does not carry
//     its intermediate, so with roots that pin only an ARK a fetched VCEK is never kept (it is
//     fetched for every verification that needs it); every built-in product line pins both.
//   - A cert_chain (ASK or ASVK, then ARK): the ARK is a pinned one, and it signed the other
//     certificate.
//
// Any other kind is an error: AMD KDS serves no other document.
func Authentic(r *collateral.Response, v collateral.Validity, products map[string]*roots.AMDProduct) error {
	var arks, intermediates []*x509.Certificate
	for _, p := range products {
		if p.ARK != nil {
			arks = append(arks, p.ARK)
		}
		for _, c := range []*x509.Certificate{p.ASK, p.ASVK} {
			if c != nil {
				intermediates = append(intermediates, c)
			}
		}
	}
	switch v.Kind {
	case "crl":
		crl, err := x509.ParseRevocationList(r.Body)
		if err != nil {
			return fmt.Errorf("the CRL does not parse: %w", err)
		}
		if signedBy(crl.RawIssuer, crl.CheckSignatureFrom, arks) {
			return nil
		}
		return fmt.Errorf("the CRL (issuer %q) is not signed by a pinned AMD ARK", crl.Issuer.CommonName)
	case "certificate":
		c, err := x509.ParseCertificate(r.Body)
		if err != nil {
			return fmt.Errorf("the certificate does not parse: %w", err)
		}
		if signedBy(c.RawIssuer, c.CheckSignatureFrom, intermediates) {
			return nil
		}
		return fmt.Errorf("the %q certificate is not signed by a pinned AMD ASK or ASVK (issuer %q)", c.Subject.CommonName, c.Issuer.CommonName)
	case "cert_chain":
		var chain []*x509.Certificate
		for rest := r.Body; ; {
			var block *pem.Block
			if block, rest = pem.Decode(rest); block == nil {
				break
			}
			c, err := x509.ParseCertificate(block.Bytes)
			if err != nil {
				return fmt.Errorf("cert_chain certificate %d: %w", len(chain), err)
			}
			chain = append(chain, c)
		}
		if len(chain) != 2 {
			return fmt.Errorf("the cert_chain holds %d certificates, want 2 (ASK or ASVK, then ARK)", len(chain))
		}
		inter, ark := chain[0], chain[1]
		pinned := false
		for _, a := range arks {
			pinned = pinned || a.Equal(ark)
		}
		if !pinned {
			return fmt.Errorf("the cert_chain's %q is not a pinned AMD ARK", ark.Subject.CommonName)
		}
		if !signedBy(inter.RawIssuer, inter.CheckSignatureFrom, []*x509.Certificate{ark}) {
			return fmt.Errorf("the cert_chain's %q is not signed by its %q", inter.Subject.CommonName, ark.Subject.CommonName)
		}
		return nil
	}
	return fmt.Errorf("AMD KDS serves no %q document", v.Kind)
}

// signedBy reports whether one of cas has the subject rawIssuer and a key checkFrom accepts.
func signedBy(rawIssuer []byte, checkFrom func(*x509.Certificate) error, cas []*x509.Certificate) bool {
	for _, ca := range cas {
		if bytes.Equal(rawIssuer, ca.RawSubject) && checkFrom(ca) == nil {
			return true
		}
	}
	return false
}
