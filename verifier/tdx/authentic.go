package tdx

import (
	"bytes"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"slices"
	"strings"

	"github.com/google/go-tdx-guest/pcs"
	"github.com/proofline/proofline/verifier/collateral"
)

// Authentic reports whether r, a PCS document whose validity (collateral.ValidityOf) has kind
// v.Kind, was issued by Intel: signed through a chain that ends at one of roots. A collateral
// cache asks this before it keeps a fetched document or raises its URL's mark
// (collateral.CacheConfig.Authenticate), so that a forged document — one naming a far-future
// issue date or a huge tcbEvaluationDataNumber — can neither be served from the cache nor make
// the genuine documents that follow look like rollbacks.
//
// It checks signatures, and that the document is the one r.URL names (a genuine document served
// at another URL — another FMSPC's TCB info, SGX's at TDX's URL, the Processor CA's CRL at the
// Platform CA's — is refused too). Validity periods, revocation and freshness depend on the
// verification time and are the verifier's, on every verification (Verify).
//
//   - TCB info: the signature over the signed object by the TCB signing certificate of the
//     issuer-chain header, which a root must have signed; id "TDX", and r.URL is the TDX TCB
//     info URL of its fmspc.
//   - QE identity: signed the same way; id "TD_QE", at the TDX QE identity URL.
//   - CRLs: the Root CA CRL signed by a root, at that root's CRL distribution point; or a PCK
//     CRL signed by the PCK CA of its SGX-PCK-CRL-Issuer-Chain header, which a root must have
//     signed, at the PCK CRL URL of that CA (ca=platform or ca=processor).
//
// Any other kind is an error: Intel PCS serves no other document.
func Authentic(r *collateral.Response, v collateral.Validity, roots []*x509.Certificate) error {
	switch v.Kind {
	case "tcb_info":
		doc, err := authenticSigned(r, pcs.TcbInfoIssuerChainPhrase, "tcbInfo", roots)
		if err != nil {
			return err
		}
		if want := pcs.TcbInfoURL(strings.ToLower(doc.FMSPC)); doc.ID != "TDX" || r.URL != want {
			return fmt.Errorf("it is the %s TCB info of FMSPC %s (at %s), served at %s", doc.ID, doc.FMSPC, want, r.URL)
		}
		return nil
	case "qe_identity":
		doc, err := authenticSigned(r, pcs.SgxQeIdentityIssuerChainPhrase, "enclaveIdentity", roots)
		if err != nil {
			return err
		}
		if want := pcs.QeIdentityURL(); doc.ID != "TD_QE" || r.URL != want {
			return fmt.Errorf("it is the %s identity, served at %s (the TDX QE identity is TD_QE, at %s)", doc.ID, r.URL, want)
		}
		return nil
	case "crl":
		crl, err := x509.ParseRevocationList(r.Body)
		if err != nil {
			return fmt.Errorf("the CRL does not parse: %w", err)
		}
		// The Root CA CRL: a root that signed it names r.URL as its distribution point (roots
		// that share a key may name different ones).
		var signer *x509.Certificate
		for _, root := range roots {
			if crlSignedBy(crl, []*x509.Certificate{root}) != nil {
				if slices.Contains(root.CRLDistributionPoints, r.URL) {
					return nil
				}
				signer = root
			}
		}
		if signer != nil {
			return fmt.Errorf("it is the CRL of %q, served at %s, which is not the CRL distribution point of a pinned root that signed it", signer.Subject.CommonName, r.URL)
		}
		if len(r.Header(pcs.SgxPckCrlIssuerChainPhrase)) == 0 {
			return fmt.Errorf("the CRL is not signed by a pinned Intel SGX Root CA and has no %s header", pcs.SgxPckCrlIssuerChainPhrase)
		}
		ca, err := rootSigned(r, pcs.SgxPckCrlIssuerChainPhrase, roots)
		if err != nil {
			return err
		}
		if crlSignedBy(crl, []*x509.Certificate{ca}) == nil {
			return fmt.Errorf("the CRL is not signed by the %q of its %s header", ca.Subject.CommonName, pcs.SgxPckCrlIssuerChainPhrase)
		}
		kind := pckCAParam(ca.Subject.CommonName)
		if kind == "" {
			return fmt.Errorf("the PCK CRL is signed by %q, neither the Platform nor the Processor CA", ca.Subject.CommonName)
		}
		if want := pcs.PckCrlURL(kind); r.URL != want {
			return fmt.Errorf("it is the CRL of %q (at %s), served at %s", ca.Subject.CommonName, want, r.URL)
		}
		return nil
	}
	return fmt.Errorf("Intel PCS serves no %q document", v.Kind)
}

// signedID is what Authentic reads of a signed PCS document to tie it to its URL.
type signedID struct {
	ID    string `json:"id"`
	FMSPC string `json:"fmspc"`
}

// authenticSigned checks a signed PCS JSON document (see Authentic) and returns its identity.
func authenticSigned(r *collateral.Response, header, field string, roots []*x509.Certificate) (*signedID, error) {
	signer, err := rootSigned(r, header, roots)
	if err != nil {
		return nil, err
	}
	if signer.Subject.CommonName != tcbSigningCN {
		return nil, fmt.Errorf("%s is signed by %q, want %q", field, signer.Subject.CommonName, tcbSigningCN)
	}
	raw, sig, _, err := signedParts(r.Body, field)
	if err != nil {
		return nil, err
	}
	pub, err := publicKeyP256(signer)
	if err != nil || !verifyRawP256(pub, raw, sig) {
		return nil, fmt.Errorf("%s signature does not verify with the TCB signing certificate", field)
	}
	var id signedID
	if err := json.Unmarshal(raw, &id); err != nil {
		return nil, fmt.Errorf("%s: %w", field, err)
	}
	return &id, nil
}

// rootSigned returns the certificate of r's issuer-chain header after checking that one of roots
// signed it. The header's own root is never trusted.
func rootSigned(r *collateral.Response, header string, roots []*x509.Certificate) (*x509.Certificate, error) {
	c, err := issuerChain(r.Header(header))
	if err != nil {
		return nil, fmt.Errorf("%s header: %w", header, err)
	}
	if issuedBy(c, roots) == nil {
		return nil, fmt.Errorf("the %q certificate of the %s header is not signed by a pinned Intel SGX Root CA", c.Subject.CommonName, header)
	}
	return c, nil
}

// issuedBy returns the first of cas that issued c — c names its subject as issuer, byte for
// byte, as crypto/x509 builds chains — or nil. Nil entries are skipped.
func issuedBy(c *x509.Certificate, cas []*x509.Certificate) *x509.Certificate {
	for _, ca := range cas {
		if ca != nil && bytes.Equal(c.RawIssuer, ca.RawSubject) && c.CheckSignatureFrom(ca) == nil {
			return ca
		}
	}
	return nil
}

// crlSignedBy returns the first of cas that signed crl and whose subject is the CRL's issuer
// name (compared as the verifier's CRL checks compare it, openCRL), or nil. Nil entries are
// skipped.
func crlSignedBy(crl *x509.RevocationList, cas []*x509.Certificate) *x509.Certificate {
	for _, ca := range cas {
		if ca != nil && crl.Issuer.String() == ca.Subject.String() && crl.CheckSignatureFrom(ca) == nil {
			return ca
		}
	}
	return nil
}
