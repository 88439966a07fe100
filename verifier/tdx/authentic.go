package tdx

import (
	"bytes"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"fmt"

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
// It checks signatures only. Validity periods, revocation and freshness depend on the
// verification time and are the verifier's, on every verification (Verify).
//
//   - TCB info and QE identity: the signature over the signed object, by the TCB signing
//     certificate of the issuer-chain header, which a root must have signed.
//   - CRLs: the Root CA CRL signed by a root, or a PCK CRL signed by the PCK CA of its
//     SGX-PCK-CRL-Issuer-Chain header, which a root must have signed.
//
// Any other kind is an error: Intel PCS serves no other document.
func Authentic(r *collateral.Response, v collateral.Validity, roots []*x509.Certificate) error {
	switch v.Kind {
	case "tcb_info":
		return authenticSigned(r, pcs.TcbInfoIssuerChainPhrase, "tcbInfo", roots)
	case "qe_identity":
		return authenticSigned(r, pcs.SgxQeIdentityIssuerChainPhrase, "enclaveIdentity", roots)
	case "crl":
		crl, err := x509.ParseRevocationList(r.Body)
		if err != nil {
			return fmt.Errorf("the CRL does not parse: %w", err)
		}
		if issuedBy(crl.RawIssuer, crl.CheckSignatureFrom, roots) != nil {
			return nil // the Root CA CRL
		}
		if len(r.Header(pcs.SgxPckCrlIssuerChainPhrase)) == 0 {
			return fmt.Errorf("the CRL is not signed by a pinned Intel SGX Root CA and has no %s header", pcs.SgxPckCrlIssuerChainPhrase)
		}
		ca, err := rootSigned(r, pcs.SgxPckCrlIssuerChainPhrase, roots)
		if err != nil {
			return err
		}
		if issuedBy(crl.RawIssuer, crl.CheckSignatureFrom, []*x509.Certificate{ca}) == nil {
			return fmt.Errorf("the CRL is not signed by the %q of its %s header", ca.Subject.CommonName, pcs.SgxPckCrlIssuerChainPhrase)
		}
		return nil
	}
	return fmt.Errorf("Intel PCS serves no %q document", v.Kind)
}

// authenticSigned checks a signed PCS JSON document (see Authentic).
func authenticSigned(r *collateral.Response, header, field string, roots []*x509.Certificate) error {
	signer, err := rootSigned(r, header, roots)
	if err != nil {
		return err
	}
	if signer.Subject.CommonName != tcbSigningCN {
		return fmt.Errorf("%s is signed by %q, want %q", field, signer.Subject.CommonName, tcbSigningCN)
	}
	var body map[string]json.RawMessage
	if err := json.Unmarshal(r.Body, &body); err != nil {
		return fmt.Errorf("%s response is not a JSON object: %w", field, err)
	}
	var sigHex string
	raw, ok := body[field]
	if !ok || json.Unmarshal(body["signature"], &sigHex) != nil {
		return fmt.Errorf("%s response lacks %q or \"signature\"", field, field)
	}
	sig, err := hex.DecodeString(sigHex)
	if err != nil {
		return fmt.Errorf("%s signature is not hex: %w", field, err)
	}
	pub, err := publicKeyP256(signer)
	if err != nil || !verifyRawP256(pub, raw, sig) {
		return fmt.Errorf("%s signature does not verify with the TCB signing certificate", field)
	}
	return nil
}

// rootSigned returns the certificate of r's issuer-chain header after checking that one of roots
// signed it. The header's own root is never trusted.
func rootSigned(r *collateral.Response, header string, roots []*x509.Certificate) (*x509.Certificate, error) {
	c, err := issuerChain(r.Header(header))
	if err != nil {
		return nil, fmt.Errorf("%s header: %w", header, err)
	}
	root := issuedBy(c.RawIssuer, c.CheckSignatureFrom, roots)
	if root == nil {
		return nil, fmt.Errorf("the %q certificate of the %s header is not signed by a pinned Intel SGX Root CA", c.Subject.CommonName, header)
	}
	return c, nil
}

// issuedBy returns the first of cas whose subject is rawIssuer and whose key checkFrom accepts,
// or nil.
func issuedBy(rawIssuer []byte, checkFrom func(*x509.Certificate) error, cas []*x509.Certificate) *x509.Certificate {
	for _, ca := range cas {
		if bytes.Equal(rawIssuer, ca.RawSubject) && checkFrom(ca) == nil {
			return ca
		}
	}
	return nil
}
