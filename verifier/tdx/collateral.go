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
	"github.com/proofline/proofline/verifier/internal/vcache"
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
	d := vcache.ResponseDigest(r)
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

// Caches of the time-independent work on collateral, by the digest of every input (see package
// vcache for the fail-closed contract). Validity windows, revocation and every comparison with
// the quote are evaluated on each verification from the cached values, which are read-only.
var (
	// crlCache: CRLs that parsed and whose signature and issuer name matched the issuer.
	crlCache = vcache.New[*x509.RevocationList](1024)
	// signedCache: PCS documents whose issuer chain header parsed and verified to a root of the
	// set and whose signature verified with the signing certificate.
	signedCache = vcache.New[*signedEntry](1024)
	// qeIdentityCache: parsed QE identities, by the digest of the signed JSON.
	qeIdentityCache = vcache.New[*pcs.EnclaveIdentity](256)
	// pckExtCache: the SGX extensions of PCK certificates, by the digest of the DER.
	pckExtCache = vcache.New[*pcs.PckExtensions](4096)
)

// pckExtensions parses the PCK certificate's SGX extensions once per certificate.
func pckExtensions(pck *x509.Certificate) (*pcs.PckExtensions, error) {
	key := vcache.Sum([]byte("tdx/pckext"), pck.Raw)
	if ext, ok := pckExtCache.Get(key); ok {
		return ext, nil
	}
	ext, err := pcs.PckCertificateExtensions(pck)
	if err != nil {
		return nil, err
	}
	pckExtCache.Add(key, ext)
	return ext, nil
}

func (v *verification) checkCollateral() {
	rootCRL := v.checkRootCRL()
	v.checkPCKCRL(rootCRL)
	ext, err := pckExtensions(v.q.PCK)
	if err != nil {
		v.fail(ear.CodeTDXPCKChainInvalid, checkPCKChain, "PCK certificate SGX extensions: %v", err)
		return
	}
	v.claims.FMSPC = strings.ToLower(ext.FMSPC)
	v.claims.PCEID = strings.ToLower(ext.PCEID)
	v.checkQEIdentity(rootCRL)
	v.checkTCBInfo(ext, rootCRL)
}

// openCRL parses a CRL and verifies its issuer name and signature, or takes both from crlCache
// (keyed by the CRL's and the issuer's DER). It returns nil after recording a failure. Freshness
// and revocation are the caller's, on every call.
func (v *verification) openCRL(body []byte, issuer *x509.Certificate, name, what, u string) *x509.RevocationList {
	key := vcache.Sum([]byte("tdx/crl"), body, issuer.Raw)
	if crl, ok := crlCache.Get(key); ok {
		return crl
	}
	crl, err := x509.ParseRevocationList(body)
	if err != nil {
		v.fail(ear.CodeCollateralMalformed, checkPCKChain, "%s from %s: %v", what, u, err)
		return nil
	}
	if err := crl.CheckSignatureFrom(issuer); err != nil || crl.Issuer.String() != issuer.Subject.String() {
		v.fail(ear.CodeTDXCRLInvalid, checkPCKChain, "%s is not signed by %q", name, issuer.Subject.CommonName)
		return nil
	}
	crlCache.Add(key, crl)
	return crl
}

// checkCRL checks the freshness of a CRL opened by openCRL. It returns false after recording a
// failure.
func (v *verification) checkCRL(crl *x509.RevocationList, name string) bool {
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
	crl := v.openCRL(r.Body, v.root, "the Root CA CRL", "Root CA CRL", u)
	if crl == nil || !v.checkCRL(crl, "the Root CA CRL") {
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
	crl := v.openCRL(r.Body, v.q.Intermediate, "the PCK CRL", "PCK CRL", u)
	if crl == nil || !v.checkCRL(crl, "the PCK CRL") {
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

// signedEntry is a cached result of openSigned: the document, and the window in which the signing
// certificate's chain to the root is valid.
type signedEntry struct {
	sc                  *signedCollateral
	notBefore, notAfter time.Time
}

// openSigned verifies the issuer chain carried in header and the signature over the raw value of
// field in the body. It records failures with code invalid and returns nil.
//
// A document that passed is cached by the digest of the header, the body, field and the root set.
// A cached document is used only while Now lies in its signing chain's validity window, and its
// signing certificate is checked against rootCRL on every call; otherwise it is opened in full.
func (v *verification) openSigned(r *collateral.Response, header, field string, invalid ear.Code, check string, rootCRL *x509.RevocationList) *signedCollateral {
	hv := r.Header(header)
	kb := vcache.NewBuilder().String("tdx/signed").String(field).Bytes(r.Body).Uint(uint64(len(hv)))
	for _, h := range hv {
		kb.String(h)
	}
	for _, root := range v.opts.Roots {
		kb.Bytes(root.Raw)
	}
	key := kb.Key()
	if e, ok := signedCache.Get(key); ok && !v.opts.Now.Before(e.notBefore) && !v.opts.Now.After(e.notAfter) {
		if revoked(rootCRL, e.sc.signer) {
			v.fail(ear.CodeTDXCertRevoked, check, "the %s signing certificate (serial %s) is revoked by the Root CA CRL", field, e.sc.signer.SerialNumber)
			return nil
		}
		return e.sc
	}
	sc := v.openSignedUncached(r, header, field, invalid, check, rootCRL)
	if sc != nil {
		// The signing chain's window, as verifyChain just cached it (if not evicted meanwhile).
		if c, ok := chainCache.Get(chainKey("tdx/chain", sc.signer, nil, v.opts.Roots)); ok {
			signedCache.Add(key, &signedEntry{sc: sc, notBefore: c.notBefore, notAfter: c.notAfter})
		}
	}
	return sc
}

func (v *verification) openSignedUncached(r *collateral.Response, header, field string, invalid ear.Code, check string, rootCRL *x509.RevocationList) *signedCollateral {
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
	raw, sig, malformed, err := signedParts(r.Body, field)
	if err != nil {
		code := invalid
		if malformed {
			code = ear.CodeCollateralMalformed
		}
		v.fail(code, check, "%v", err)
		return nil
	}
	pub, err := publicKeyP256(signer)
	if err != nil || !verifyRawP256(pub, raw, sig) {
		v.fail(invalid, check, "%s signature does not verify with the TCB signing certificate", field)
		return nil
	}
	return &signedCollateral{raw: raw, signature: sig, signer: signer}
}

// signedParts splits the body of a PCS signed document into the exact signed bytes of field and
// the signature over them. A body that is not a JSON object, or lacks field or "signature", is
// reported with malformed set; a signature that is not 64 bytes of hex, without.
func signedParts(body []byte, field string) (raw json.RawMessage, sig []byte, malformed bool, err error) {
	var members map[string]json.RawMessage
	if err := json.Unmarshal(body, &members); err != nil {
		return nil, nil, true, fmt.Errorf("%s response is not a JSON object: %w", field, err)
	}
	raw, ok := members[field]
	var sigHex string
	if !ok || json.Unmarshal(members["signature"], &sigHex) != nil {
		return nil, nil, true, fmt.Errorf("%s response lacks %q or \"signature\"", field, field)
	}
	sig, err = hex.DecodeString(sigHex)
	if err != nil || len(sig) != 64 {
		return nil, nil, false, fmt.Errorf("%s signature is not 64 bytes of hex", field)
	}
	return raw, sig, false, nil
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
	id, err := parseQEIdentity(sc.raw)
	if err != nil {
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
	if undated(id.IssueDate, id.NextUpdate) {
		v.fail(ear.CodeTDXQEIdentityInvalid, checkQEIdentity, "QE identity lacks issueDate or nextUpdate")
		return
	}
	if why := unrated(id.TcbLevels); why != "" {
		v.fail(ear.CodeTDXQEIdentityInvalid, checkQEIdentity, "QE identity: %s", why)
		return
	}
	v.qeIdentity = id
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
			v.recoveryGrace(checkQEIdentity, "the QE", string(l.TcbStatus), id.TcbEvaluationDataNumber, recoveryPart{what: "QE TCB level", levels: id.TcbLevels, index: i})
			return
		}
	}
	v.fail(ear.CodeTDXQETCBStatus, checkQEIdentity, "the QE's ISVSVN %d matches no TCB level of the QE identity", qe.ISVSVN)
}

// parseQEIdentity parses a QE identity once per signed document. The result is shared: read-only.
func parseQEIdentity(raw []byte) (*pcs.EnclaveIdentity, error) {
	key := vcache.Sum([]byte("tdx/qeidentity"), raw)
	if id, ok := qeIdentityCache.Get(key); ok {
		return id, nil
	}
	var id pcs.EnclaveIdentity
	if err := json.Unmarshal(raw, &id); err != nil {
		return nil, err
	}
	qeIdentityCache.Add(key, &id)
	return &id, nil
}

// tcbInfoCache holds parsed TCB infos, by the digest of the signed JSON; see parseTCBInfo.
var tcbInfoCache = vcache.New[*pcs.TcbInfo](256)

// parseTCBInfo parses a TCB info once per signed document (its JSON decoding is about a quarter
// of a warm TDX verification). The result is shared between verifications: read-only.
func parseTCBInfo(raw []byte) (*pcs.TcbInfo, error) {
	key := vcache.Sum([]byte("tdx/tcbinfo"), raw)
	if info, ok := tcbInfoCache.Get(key); ok {
		return info, nil
	}
	var info pcs.TcbInfo
	if err := json.Unmarshal(raw, &info); err != nil {
		return nil, err
	}
	tcbInfoCache.Add(key, &info)
	return &info, nil
}

func equalBytes(a, b []byte) bool { return string(a) == string(b) }

func le32(b []byte) uint32 {
	if len(b) != 4 {
		return 0
	}
	return uint32(b[0]) | uint32(b[1])<<8 | uint32(b[2])<<16 | uint32(b[3])<<24
}
