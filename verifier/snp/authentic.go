package snp

import (
	"bytes"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"strings"

	"github.com/google/go-sev-guest/abi"
	"github.com/google/go-sev-guest/kds"

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
// It checks signatures, and that the document is the one r.URL names (a genuine document served
// at another URL — another chip's or TCB's VCEK, another product line's CRL — is refused too).
// Validity periods, revocation and freshness depend on the verification time and are the
// verifier's, on every verification (Verify).
//
//   - CRLs: signed by a pinned ARK, at that product line's VCEK or VLEK CRL URL (the two are
//     signed alike, so which of them a CRL is cannot be told from the CRL).
//   - A VCEK: signed by the pinned ASK of the product line its issuer names, at the URL its
//     hwID and SPL extensions make (VCEKURL). The KDS answer does not carry its intermediate, so
//     with roots that pin only an ARK a fetched VCEK is never kept (it is fetched for every
//     verification that needs it); every built-in product line pins the ASK.
//   - A cert_chain (ASK or ASVK, then ARK): the ARK is the pinned one of the product line whose
//     cert_chain URL r.URL is, and it signed the other certificate, which is that line's.
//
// Any other kind is an error: AMD KDS serves no other document.
func Authentic(r *collateral.Response, v collateral.Validity, products map[string]*roots.AMDProduct) error {
	switch v.Kind {
	case "crl":
		crl, err := x509.ParseRevocationList(r.Body)
		if err != nil {
			return fmt.Errorf("the CRL does not parse: %w", err)
		}
		signed := ""
		for line, p := range products {
			if p != nil && p.ARK != nil && crl.Issuer.String() == p.ARK.Subject.String() && crl.CheckSignatureFrom(p.ARK) == nil { // as checkCRL
				if r.URL == kds.CrlLinkByKey(line, abi.VcekReportSigner) || r.URL == kds.CrlLinkByKey(line, abi.VlekReportSigner) {
					return nil
				}
				signed = line
			}
		}
		if signed != "" {
			return fmt.Errorf("it is the CRL of ARK-%s, served at %s, which is not a %s CRL URL", signed, r.URL, signed)
		}
		return fmt.Errorf("the CRL (issuer %q) is not signed by a pinned AMD ARK", crl.Issuer.CommonName)
	case "certificate":
		c, err := x509.ParseCertificate(r.Body)
		if err != nil {
			return fmt.Errorf("the certificate does not parse: %w", err)
		}
		line, ok := strings.CutPrefix(c.Issuer.CommonName, "SEV-")
		p := products[line]
		if !ok || p == nil || !signedBy(c, p.ASK) {
			return fmt.Errorf("the %q certificate is not a VCEK signed by a pinned AMD ASK (issuer %q)", c.Subject.CommonName, c.Issuer.CommonName)
		}
		ext, err := ParseCertExtensions(c.Extensions, abi.VcekReportSigner, line)
		if err != nil {
			return err
		}
		if want := VCEKURL(line, ext.HWID, ext.TCB().compose(line)); r.URL != want {
			return fmt.Errorf("it is the VCEK at %s, served at %s", want, r.URL)
		}
		return nil
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
		for line, p := range products {
			for key, cn := range map[abi.ReportSigner]string{abi.VcekReportSigner: "SEV-" + line, abi.VlekReportSigner: "SEV-VLEK-" + line} {
				if p == nil || p.ARK == nil || r.URL != kds.ProductCertChainURL(key, line) {
					continue
				}
				if !p.ARK.Equal(ark) || inter.Subject.CommonName != cn || !signedBy(inter, ark) {
					return fmt.Errorf("the cert_chain at %s is not %s signed by the pinned ARK-%s", r.URL, cn, line)
				}
				return nil
			}
		}
		return fmt.Errorf("%s is the cert_chain URL of no product line with a pinned ARK", r.URL)
	}
	return fmt.Errorf("AMD KDS serves no %q document", v.Kind)
}

// signedBy reports whether ca (nil: none) issued c: c names its subject as issuer, byte for
// byte, as crypto/x509 builds chains (checkChain), and ca's key signed it.
func signedBy(c, ca *x509.Certificate) bool {
	return ca != nil && bytes.Equal(c.RawIssuer, ca.RawSubject) && c.CheckSignatureFrom(ca) == nil
}
