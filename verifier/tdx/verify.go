// Package tdx checks the authenticity of Intel TDX quotes: that a quote was produced by a genuine
// TDX platform through a valid, unrevoked Intel certificate chain, and what the platform's TCB
// status is according to Intel's signed collateral. Whether the measurements and the TCB status
// are acceptable is the policy package's decision, not this one's.
//
// Parsing and TCB-level evaluation are the project's own (see quote.go and tcb.go for why); the
// collateral formats and URLs are go-tdx-guest's pcs package.
package tdx

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/sha256"
	"crypto/x509"
	"errors"
	"fmt"
	"math/big"
	"time"

	"github.com/google/go-tdx-guest/pcs"
	"github.com/proofline/proofline/verifier/collateral"
	"github.com/proofline/proofline/verifier/ear"
	"github.com/proofline/proofline/verifier/internal/vcache"
)

// Options are the inputs of one verification. Build one per request.
type Options struct {
	// Now is the verification time for every check: certificates, CRLs, TCB info, QE identity.
	Now time.Time
	// Roots are the trusted Intel SGX Root CA certificates. Required.
	Roots []*x509.Certificate
	// Collateral answers Intel PCS and CRL requests by URL. Nil means none is available.
	Collateral collateral.Source
	// SkipCollateralUnsafe skips TCB info, QE identity and CRLs. The PCK chain, the QE report and
	// the quote signature are still checked. Only a policy option ending in _unsafe sets it.
	SkipCollateralUnsafe bool
	// StaleGraceUnsafe accepts a PCK or Root CA CRL, TCB info or QE identity up to this long past
	// its nextUpdate, with a collateral_stale_accepted warning naming it in place of the stale or
	// expired failure. A document not yet valid at Now is never accepted. Only the policy option
	// stale_grace_unsafe sets it.
	StaleGraceUnsafe time.Duration
	// TCBRecoveryGraceUnsafe: a platform or QE TCB level that is OutOfDate only because of a TCB
	// recovery less than this long before Now gets a tcb_recovery_grace warning (tcb.go,
	// RecoveryGrace). Only the policy option tcb_recovery_grace_unsafe sets it.
	TCBRecoveryGraceUnsafe time.Duration
}

// Check references into VERIFIER-CHECKS.md.
const (
	checkParse      = "tdx.1"
	checkPCKChain   = "tdx.2"
	checkQEReport   = "tdx.3"
	checkSignature  = "tdx.4"
	checkQEIdentity = "tdx.5"
	checkTCBInfo    = "tdx.6"
)

// Verify checks the authenticity of a raw quote, recording every failed check in res. It returns
// the parsed quote and its claims; both are nil when the quote could not be parsed. Claims are
// returned even when checks failed, so that the policy can report every failure it can evaluate.
func Verify(ctx context.Context, raw []byte, opts Options, res *ear.Result) (*Quote, *ear.TDXClaims) {
	q, err := ParseQuote(raw)
	if err != nil {
		res.Fail(ear.CodeTDXQuoteMalformed, checkParse, err.Error())
		return nil, nil
	}
	claims := bodyClaims(q)
	v := &verification{ctx: ctx, opts: opts, res: res, q: q, claims: claims}
	if !bytes.Equal(q.QEVendorID, IntelQEVendorID) {
		v.fail(ear.CodeTDXQEIdentityMismatch, checkQEIdentity, "QE vendor ID %x is not Intel's quoting enclave (%x)", q.QEVendorID, IntelQEVendorID)
	}
	chainOK := v.checkPCKChain()
	if chainOK {
		v.checkQEReport()
	}
	v.checkQuoteSignature()
	if chainOK && !opts.SkipCollateralUnsafe {
		v.checkCollateral()
	}
	return q, claims
}

type verification struct {
	ctx    context.Context
	opts   Options
	res    *ear.Result
	q      *Quote
	claims *ear.TDXClaims
	// root is the pinned root the PCK chain verified to.
	root *x509.Certificate
	// qeIdentity is the verified QE identity, once checked.
	qeIdentity *pcs.EnclaveIdentity
}

func (v *verification) fail(code ear.Code, check, format string, args ...any) {
	v.res.Fail(code, check, fmt.Sprintf(format, args...))
}

func bodyClaims(q *Quote) *ear.TDXClaims {
	b := q.Body
	attrs := b.TDAttributes
	c := &ear.TDXClaims{
		QuoteVersion:   q.Version,
		TeeTCBSVN:      b.TeeTCBSVN,
		MRSeam:         b.MRSeam,
		MRSignerSeam:   b.MRSignerSeam,
		SeamAttributes: b.SeamAttributes,
		TDAttributes:   attrs,
		XFAM:           b.XFAM,
		MRTD:           b.MRTD,
		MRConfigID:     b.MRConfigID,
		MROwner:        b.MROwner,
		MROwnerConfig:  b.MROwnerConfig,
		ReportData:     b.ReportData,
		TeeTCBSVN2:     b.TeeTCBSVN2,
		MRServiceTD:    b.MRServiceTD,
		Debug:          TDAttributes(Uint64LE(attrs))&AttrDebug != 0,
		SeptVEDisable:  TDAttributes(Uint64LE(attrs))&AttrSeptVEDisable != 0,
		Migratable:     TDAttributes(Uint64LE(attrs))&AttrMigratable != 0,
		QE: &ear.TDXQE{
			MRSigner:  q.QEReport.MRSigner,
			ISVProdID: q.QEReport.ISVProdID,
			ISVSVN:    q.QEReport.ISVSVN,
		},
		Collateral: []ear.CollateralInfo{},
	}
	for i := range b.RTMRs {
		c.RTMRs[i] = b.RTMRs[i]
	}
	return c
}

// checkPCKChain verifies PCK leaf → PCK CA → pinned Intel SGX Root CA at the verification time.
// The root certificate carried in the quote is not trusted; only its pinned counterpart is.
func (v *verification) checkPCKChain() bool {
	q := v.q
	if q.PCK.Subject.CommonName != "Intel SGX PCK Certificate" {
		v.fail(ear.CodeTDXPCKChainInvalid, checkPCKChain, "PCK leaf certificate subject is %q, want \"Intel SGX PCK Certificate\"", q.PCK.Subject.CommonName)
		return false
	}
	if _, err := pckCA(q.PCK); err != nil {
		v.fail(ear.CodeTDXPCKChainInvalid, checkPCKChain, "%v", err)
		return false
	}
	root, err := verifyChain(q.PCK, q.Intermediate, v.opts.Roots, v.opts.Now)
	if err != nil {
		v.chainFailure(err, checkPCKChain, "PCK certificate chain")
		return false
	}
	v.root = root
	if _, err := publicKeyP256(q.PCK); err != nil {
		v.fail(ear.CodeTDXPCKChainInvalid, checkPCKChain, "PCK certificate: %v", err)
		return false
	}
	rememberPCKChain(q, root)
	return true
}

// chainFailure maps an x509 verification error to the expired or the invalid code.
func (v *verification) chainFailure(err error, check, what string) {
	var inv x509.CertificateInvalidError
	if errors.As(err, &inv) && inv.Reason == x509.Expired {
		v.fail(ear.CodeTDXCertExpired, check, "%s: a certificate is outside its validity period at %s: %v", what, v.opts.Now.Format(time.RFC3339), err)
		return
	}
	v.fail(ear.CodeTDXPCKChainInvalid, check, "%s does not chain to a pinned Intel SGX Root CA: %v", what, err)
}

// chainCache holds chains that verified (signatures, names, constraints), keyed by every
// certificate's DER and the whole root set; see verifyChain.
var chainCache = vcache.New[*verifiedChain](4096)

// verifiedChain is a chain that verified at some time: the root it ended at and the window in
// which every certificate of the chain is valid (the latest NotBefore, the earliest NotAfter).
type verifiedChain struct {
	root                *x509.Certificate
	notBefore, notAfter time.Time
}

// chainKey is the cache key of a chain verification: every input of it.
func chainKey(kind string, leaf, intermediate *x509.Certificate, roots []*x509.Certificate) vcache.Key {
	parts := make([][]byte, 0, 3+len(roots))
	parts = append(parts, []byte(kind), leaf.Raw, nil)
	if intermediate != nil {
		parts[2] = intermediate.Raw
	}
	for _, r := range roots {
		parts = append(parts, r.Raw)
	}
	return vcache.Sum(parts...)
}

// verifyChain verifies leaf → intermediate → one of roots at now and returns the root used.
//
// A chain that verified once is cached by the digest of its certificates and of the root set; a
// cache hit is used only when now lies within every certificate's validity, which is the only
// time-dependent part of x509 verification. Otherwise (and on a miss) the chain is verified in
// full, so an expired or not-yet-valid certificate fails exactly as without the cache.
// Revocation is checked by the callers on every call.
func verifyChain(leaf, intermediate *x509.Certificate, roots []*x509.Certificate, now time.Time) (*x509.Certificate, error) {
	if len(roots) == 0 {
		return nil, errors.New("no Intel SGX Root CA is configured")
	}
	key := chainKey("tdx/chain", leaf, intermediate, roots)
	if c, ok := chainCache.Get(key); ok && !now.Before(c.notBefore) && !now.After(c.notAfter) {
		return c.root, nil
	}
	chain, err := verifyChainUncached(leaf, intermediate, roots, now)
	if err != nil {
		return nil, err
	}
	c := &verifiedChain{root: chain[len(chain)-1], notBefore: chain[0].NotBefore, notAfter: chain[0].NotAfter}
	for _, cert := range chain[1:] {
		if cert.NotBefore.After(c.notBefore) {
			c.notBefore = cert.NotBefore
		}
		if cert.NotAfter.Before(c.notAfter) {
			c.notAfter = cert.NotAfter
		}
	}
	chainCache.Add(key, c)
	return c.root, nil
}

func verifyChainUncached(leaf, intermediate *x509.Certificate, roots []*x509.Certificate, now time.Time) ([]*x509.Certificate, error) {
	if len(roots) == 0 {
		return nil, errors.New("no Intel SGX Root CA is configured")
	}
	rootPool := x509.NewCertPool()
	for _, r := range roots {
		rootPool.AddCert(r)
	}
	inter := x509.NewCertPool()
	if intermediate != nil {
		inter.AddCert(intermediate)
	}
	chains, err := leaf.Verify(x509.VerifyOptions{
		Roots:         rootPool,
		Intermediates: inter,
		CurrentTime:   now,
		KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageAny},
	})
	if err != nil {
		return nil, err
	}
	chain := chains[0]
	if intermediate != nil && (len(chain) != 3 || !chain[1].Equal(intermediate)) {
		return nil, errors.New("chain does not run through the supplied intermediate CA")
	}
	return chain, nil
}

// pckCAParam returns the PCS "ca" parameter of the PCK CA named cn, or "" when cn names neither
// the Platform nor the Processor CA.
func pckCAParam(cn string) string {
	switch cn {
	case "Intel SGX PCK Platform CA":
		return "platform"
	case "Intel SGX PCK Processor CA":
		return "processor"
	}
	return ""
}

// pckCA returns the PCS "ca" parameter for the PCK's issuer.
func pckCA(pck *x509.Certificate) (string, error) {
	if ca := pckCAParam(pck.Issuer.CommonName); ca != "" {
		return ca, nil
	}
	return "", fmt.Errorf("PCK issuer %q is neither the Platform nor the Processor CA", pck.Issuer.CommonName)
}

func publicKeyP256(c *x509.Certificate) (*ecdsa.PublicKey, error) {
	pub, ok := c.PublicKey.(*ecdsa.PublicKey)
	if !ok || pub.Curve != elliptic.P256() {
		return nil, errors.New("public key is not ECDSA P-256")
	}
	return pub, nil
}

// verifyRawP256 verifies an Intel raw r ‖ s ECDSA P-256 SHA-256 signature over msg.
func verifyRawP256(pub *ecdsa.PublicKey, msg, sig []byte) bool {
	if len(sig) != 64 {
		return false
	}
	h := sha256.Sum256(msg)
	r := new(big.Int).SetBytes(sig[:32])
	s := new(big.Int).SetBytes(sig[32:])
	return ecdsa.Verify(pub, h[:], r, s)
}

// checkQEReport verifies the QE report signature by the PCK and the QE report data binding of the
// attestation key (check 3).
func (v *verification) checkQEReport() {
	q := v.q
	pub, _ := publicKeyP256(q.PCK)
	if !verifyRawP256(pub, q.QEReport.Raw, q.QESignature) {
		v.fail(ear.CodeTDXQEReportSignature, checkQEReport, "the QE report signature does not verify with the PCK certificate's key")
	}
	h := sha256.New()
	h.Write(q.AttestationKey)
	h.Write(q.QEAuthData)
	want := append(h.Sum(nil), make([]byte, 32)...)
	if !bytes.Equal(q.QEReport.ReportData, want) {
		v.fail(ear.CodeTDXQEReportData, checkQEReport, "QE report_data is not SHA-256(attestation key ‖ QE auth data) ‖ 32 zero bytes: the attestation key is not the one the QE certified")
	}
}

// checkQuoteSignature verifies the quote signature over the signed bytes (check 4).
func (v *verification) checkQuoteSignature() {
	q := v.q
	pub, err := ecdsa.ParseUncompressedPublicKey(elliptic.P256(), append([]byte{4}, q.AttestationKey...))
	if err != nil {
		v.fail(ear.CodeTDXQuoteSignature, checkSignature, "the attestation key is not a valid P-256 point: %v", err)
		return
	}
	if !verifyRawP256(pub, q.Signed, q.Signature) {
		v.fail(ear.CodeTDXQuoteSignature, checkSignature, "the quote signature over header and body does not verify with the attestation key")
	}
}
