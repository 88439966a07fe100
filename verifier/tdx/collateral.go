package tdx

import (
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"time"

	"github.com/google/go-tdx-guest/pcs"
	"github.com/proofline/proofline/verifier/collateral"
	"github.com/proofline/proofline/verifier/ear"
)

// Collateral checks follow Intel's "TDX DCAP Quote Verification" flow: CRLs (check 2), QE
// identity (check 5) and TCB info (check 6), all against the pinned root at the verification time.
// Every collateral item used is listed in the claims with its digest.

const (
	tcbInfoVersion    = 3
	qeIdentityVersion = 2
	tcbSigningCN      = "Intel SGX TCB Signing"
)

// fetch gets a collateral item by URL and records it in the claims. It records a failure and
// returns nil when the item is unavailable.
func (v *verification) fetch(kind, u, check string) *collateral.Response {
	if v.opts.Collateral == nil {
		v.fail(ear.CodeCollateralUnavailable, check, "%s is needed and no collateral source is configured (give --collateral DIR, or waive with skip_collateral_unsafe)", kind)
		return nil
	}
	r, err := v.opts.Collateral.Get(v.ctx, u)
	if err != nil {
		v.fail(ear.CodeCollateralUnavailable, check, "%s: %v", kind, err)
		return nil
	}
	d := r.Digest()
	v.claims.Collateral = append(v.claims.Collateral, ear.CollateralInfo{
		Kind: kind, URL: u, Digest: "sha256:" + hex.EncodeToString(d[:]),
	})
	return r
}

// noteTimes sets the issue and expiry times of the last collateral item recorded.
func (v *verification) noteTimes(issued, next time.Time) {
	ci := &v.claims.Collateral[len(v.claims.Collateral)-1]
	ci.IssuedAt, ci.NextUpdate = ptr(issued.UTC()), ptr(next.UTC())
}

func ptr[T any](t T) *T { return &t }

func (v *verification) checkCollateral() {
	rootCRL := v.checkRootCRL()
	v.checkPCKCRL(rootCRL)
	ext, err := pcs.PckCertificateExtensions(v.q.PCK)
	if err != nil {
		v.fail(ear.CodeTDXPCKChainInvalid, checkPCKChain, "PCK certificate SGX extensions: %v", err)
		return
	}
	v.claims.FMSPC = strings.ToLower(ext.FMSPC)
	v.claims.PCEID = strings.ToLower(ext.PCEID)
	v.checkQEIdentity(rootCRL)
	v.checkTCBInfo(ext, rootCRL)
}

// checkCRL verifies a CRL's issuer, signature and freshness. It returns false after recording a
// failure.
func (v *verification) checkCRL(crl *x509.RevocationList, issuer *x509.Certificate, name string) bool {
	if err := crl.CheckSignatureFrom(issuer); err != nil || crl.Issuer.String() != issuer.Subject.String() {
		v.fail(ear.CodeTDXCRLInvalid, checkPCKChain, "%s is not signed by %q", name, issuer.Subject.CommonName)
		return false
	}
	v.noteTimes(crl.ThisUpdate, crl.NextUpdate)
	if ok, why := v.window(name, checkPCKChain, crl.ThisUpdate, crl.NextUpdate); !ok {
		v.fail(ear.CodeTDXCRLStale, checkPCKChain, "%s; fetch a fresh CRL", why)
		return false
	}
	return true
}

// window checks issued ≤ Now ≤ next for the collateral document name. Past next by at most
// StaleGraceUnsafe it accepts the document and records a collateral_stale_accepted warning that
// says how stale it is. Otherwise it returns false and why, for the caller's stale or expired
// failure.
func (v *verification) window(name, check string, issued, next time.Time) (ok bool, why string) {
	now := v.opts.Now
	why = fmt.Sprintf("%s is valid from %s to %s, not at %s", name, rfc3339(issued), rfc3339(next), rfc3339(now))
	grace := v.opts.StaleGraceUnsafe
	switch {
	case next.IsZero() || now.Before(issued):
		return false, why
	case !now.After(next):
		return true, ""
	case grace > 0 && !now.After(next.Add(grace)):
		v.res.Warn(ear.CodeCollateralStaleAccepted, check, fmt.Sprintf("%s expired at %s, %s before the verification time, and was accepted within stale_grace_unsafe (%s): revocations and TCB changes published since may be missed; refresh the collateral",
			name, rfc3339(next), now.Sub(next), grace))
		return true, ""
	case grace > 0:
		return false, fmt.Sprintf("%s (%s past its nextUpdate, beyond stale_grace_unsafe of %s)", why, now.Sub(next), grace)
	}
	return false, why
}

func rfc3339(t time.Time) string { return t.UTC().Format(time.RFC3339) }

func revoked(crl *x509.RevocationList, c *x509.Certificate) bool {
	if crl == nil || c == nil {
		return false
	}
	for _, e := range crl.RevokedCertificateEntries {
		if e.SerialNumber != nil && e.SerialNumber.Cmp(c.SerialNumber) == 0 {
			return true
		}
	}
	return false
}

// checkRootCRL fetches the Root CA CRL named by the pinned root's distribution point, checks it,
// and checks that the PCK CA is not revoked. It returns the CRL only when it is valid and fresh.
func (v *verification) checkRootCRL() *x509.RevocationList {
	if len(v.root.CRLDistributionPoints) == 0 {
		v.fail(ear.CodeCollateralUnavailable, checkPCKChain, "the pinned Intel SGX Root CA names no CRL distribution point")
		return nil
	}
	u := v.root.CRLDistributionPoints[0]
	r := v.fetch("root_ca_crl", u, checkPCKChain)
	if r == nil {
		return nil
	}
	crl, err := x509.ParseRevocationList(r.Body)
	if err != nil {
		v.fail(ear.CodeCollateralMalformed, checkPCKChain, "Root CA CRL from %s: %v", u, err)
		return nil
	}
	if !v.checkCRL(crl, v.root, "the Root CA CRL") {
		return nil
	}
	if revoked(crl, v.q.Intermediate) {
		v.fail(ear.CodeTDXCertRevoked, checkPCKChain, "the PCK CA certificate (serial %s) is revoked by the Root CA CRL", v.q.Intermediate.SerialNumber)
	}
	return crl
}

// checkPCKCRL fetches the PCK CRL of the PCK's CA, checks it, and checks the PCK leaf.
func (v *verification) checkPCKCRL(rootCRL *x509.RevocationList) {
	ca, _ := pckCA(v.q.PCK)
	u := pcs.PckCrlURL(ca)
	r := v.fetch("pck_crl", u, checkPCKChain)
	if r == nil {
		return
	}
	crl, err := x509.ParseRevocationList(r.Body)
	if err != nil {
		v.fail(ear.CodeCollateralMalformed, checkPCKChain, "PCK CRL from %s: %v", u, err)
		return
	}
	if !v.checkCRL(crl, v.q.Intermediate, "the PCK CRL") {
		return
	}
	if revoked(crl, v.q.PCK) {
		v.fail(ear.CodeTDXCertRevoked, checkPCKChain, "the PCK certificate (serial %s) is revoked by the PCK CRL", v.q.PCK.SerialNumber)
	}
}

// signedCollateral is a PCS response whose JSON body holds a signed object under one key.
type signedCollateral struct {
	raw       json.RawMessage // the exact signed bytes
	signature []byte
	signer    *x509.Certificate
}

// openSigned verifies the issuer chain carried in header and the signature over the raw value of
// field in the body. It records failures with code invalid and returns nil.
func (v *verification) openSigned(r *collateral.Response, header, field string, invalid ear.Code, check string, rootCRL *x509.RevocationList) *signedCollateral {
	signer, err := issuerChain(r.Header(header))
	if err != nil {
		v.fail(invalid, check, "%s issuer chain (%s header): %v", field, header, err)
		return nil
	}
	if signer.Subject.CommonName != tcbSigningCN {
		v.fail(invalid, check, "%s is signed by %q, want %q", field, signer.Subject.CommonName, tcbSigningCN)
		return nil
	}
	if _, err := verifyChain(signer, nil, v.opts.Roots, v.opts.Now); err != nil {
		var inv x509.CertificateInvalidError
		if errors.As(err, &inv) && inv.Reason == x509.Expired {
			v.fail(ear.CodeTDXCertExpired, check, "%s signing certificate is outside its validity period: %v", field, err)
		} else {
			v.fail(invalid, check, "%s signing certificate does not chain to a pinned Intel SGX Root CA: %v", field, err)
		}
		return nil
	}
	if revoked(rootCRL, signer) {
		v.fail(ear.CodeTDXCertRevoked, check, "the %s signing certificate (serial %s) is revoked by the Root CA CRL", field, signer.SerialNumber)
		return nil
	}
	var body map[string]json.RawMessage
	if err := json.Unmarshal(r.Body, &body); err != nil {
		v.fail(ear.CodeCollateralMalformed, check, "%s response is not a JSON object: %v", field, err)
		return nil
	}
	raw, ok := body[field]
	var sigHex string
	if !ok || json.Unmarshal(body["signature"], &sigHex) != nil {
		v.fail(ear.CodeCollateralMalformed, check, "%s response lacks %q or \"signature\"", field, field)
		return nil
	}
	sig, err := hex.DecodeString(sigHex)
	if err != nil || len(sig) != 64 {
		v.fail(invalid, check, "%s signature is not 64 bytes of hex", field)
		return nil
	}
	pub, err := publicKeyP256(signer)
	if err != nil || !verifyRawP256(pub, raw, sig) {
		v.fail(invalid, check, "%s signature does not verify with the TCB signing certificate", field)
		return nil
	}
	return &signedCollateral{raw: raw, signature: sig, signer: signer}
}

// issuerChain parses a PCS issuer-chain header: URL-escaped PEM of the signing certificate
// followed by the root. Only the signing certificate is returned; the root is never trusted from
// the header.
func issuerChain(values []string) (*x509.Certificate, error) {
	if len(values) != 1 {
		return nil, fmt.Errorf("want one header value, have %d", len(values))
	}
	p, err := url.QueryUnescape(values[0])
	if err != nil {
		return nil, err
	}
	block, _ := pem.Decode([]byte(p))
	if block == nil || block.Type != "CERTIFICATE" {
		return nil, errors.New("no PEM certificate")
	}
	return x509.ParseCertificate(block.Bytes)
}

// checkQEIdentity verifies the QE identity, matches the QE report against it and records the QE's
// TCB status (check 5).
func (v *verification) checkQEIdentity(rootCRL *x509.RevocationList) {
	r := v.fetch("qe_identity", pcs.QeIdentityURL(), checkQEIdentity)
	if r == nil {
		return
	}
	sc := v.openSigned(r, "SGX-Enclave-Identity-Issuer-Chain", "enclaveIdentity", ear.CodeTDXQEIdentityInvalid, checkQEIdentity, rootCRL)
	if sc == nil {
		return
	}
	var id pcs.EnclaveIdentity
	if err := json.Unmarshal(sc.raw, &id); err != nil {
		v.fail(ear.CodeCollateralMalformed, checkQEIdentity, "QE identity: %v", err)
		return
	}
	v.noteTimes(id.IssueDate, id.NextUpdate)
	if id.ID != "TD_QE" || id.Version != qeIdentityVersion || len(id.TcbLevels) == 0 ||
		len(id.MiscselectMask.Bytes) != 4 || len(id.Miscselect.Bytes) != 4 ||
		len(id.Attributes.Bytes) != 16 || len(id.AttributesMask.Bytes) != 16 || len(id.Mrsigner.Bytes) != 32 {
		v.fail(ear.CodeTDXQEIdentityInvalid, checkQEIdentity, "QE identity is not a TD_QE identity of version %d with well-formed fields", qeIdentityVersion)
		return
	}
	v.qeIdentity = &id
	if ok, why := v.window("QE identity", checkQEIdentity, id.IssueDate, id.NextUpdate); !ok {
		v.fail(ear.CodeTDXQEIdentityExpired, checkQEIdentity, "%s; fetch fresh collateral", why)
	}
	qe := v.q.QEReport
	var mismatches []string
	if !equalBytes(qe.MRSigner, id.Mrsigner.Bytes) {
		mismatches = append(mismatches, "MRSIGNER")
	}
	if qe.ISVProdID != id.IsvProdID {
		mismatches = append(mismatches, "ISVPRODID")
	}
	if qe.MiscSelect&le32(id.MiscselectMask.Bytes) != le32(id.Miscselect.Bytes) {
		mismatches = append(mismatches, "MISCSELECT")
	}
	for i := range qe.Attributes {
		if qe.Attributes[i]&id.AttributesMask.Bytes[i] != id.Attributes.Bytes[i] {
			mismatches = append(mismatches, "ATTRIBUTES")
			break
		}
	}
	if len(mismatches) > 0 {
		v.fail(ear.CodeTDXQEIdentityMismatch, checkQEIdentity, "the quoting enclave's %s do not match Intel's TD_QE identity", strings.Join(mismatches, ", "))
	}
	// QE TCB levels are sorted by ISVSVN descending: the first level at or below the QE's ISVSVN.
	for i := range id.TcbLevels {
		l := &id.TcbLevels[i]
		if l.Tcb.Isvsvn <= uint32(qe.ISVSVN) {
			v.claims.QE.TCBStatus = string(l.TcbStatus)
			v.claims.QE.AdvisoryIDs = l.AdvisoryIDs
			return
		}
	}
	v.fail(ear.CodeTDXQETCBStatus, checkQEIdentity, "the QE's ISVSVN %d matches no TCB level of the QE identity", qe.ISVSVN)
}

func equalBytes(a, b []byte) bool { return string(a) == string(b) }

func le32(b []byte) uint32 {
	if len(b) != 4 {
		return 0
	}
	return uint32(b[0]) | uint32(b[1])<<8 | uint32(b[2])<<16 | uint32(b[3])<<24
}
