// Package snp checks the authenticity of AMD SEV-SNP attestation reports: that a report was
// signed by a VCEK or VLEK that chains to the pinned ARK of its product line and is not revoked.
// Whether the measurements, the guest policy and the TCB are acceptable is the policy package's
// decision.
//
// go-sev-guest's verify package is not used for the chain: it checks nothing it is not given,
// never checks CRL freshness, never checks the VCEK/VLEK itself against the CRL, and reports
// failures as strings. The project needs each of those as a distinct failure code, so the chain,
// CRL and extension checks are written here on crypto/x509 and go-sev-guest's kds and abi.
// go-sev-guest's kds does not model Turin (its extension parser rejects the fmcSPL extension and
// an 8-byte hwID, and it builds Turin TCBs and VCEK URLs the Milan way), so the KDS certificate
// extensions are parsed here (ParseCertExtensions) and Turin's VCEK URL is built here (VCEKURL).
package snp

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/sha512"
	"crypto/x509"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/google/go-sev-guest/abi"
	"github.com/google/go-sev-guest/kds"
	"github.com/proofline/proofline/verifier/collateral"
	"github.com/proofline/proofline/verifier/ear"
	"github.com/proofline/proofline/verifier/internal/vcache"
	"github.com/proofline/proofline/verifier/roots"
)

// Options are the inputs of one verification. Build one per request.
type Options struct {
	// Now is the verification time for every certificate and CRL check.
	Now time.Time
	// Roots holds the pinned ARK (and ASK/ASVK) per product line. Required.
	Roots map[string]*roots.AMDProduct
	// Collateral answers AMD KDS requests by URL. Nil means none is available.
	Collateral collateral.Source
	// SkipCollateralUnsafe skips the CRL checks. The chain and the signature are still checked.
	SkipCollateralUnsafe bool
	// StaleGraceUnsafe accepts the AMD CRL up to this long past its nextUpdate, with a
	// collateral_stale_accepted warning in place of the snp_crl_stale failure. A CRL not yet
	// valid at Now is never accepted. Only the policy option stale_grace_unsafe sets it.
	StaleGraceUnsafe time.Duration
}

const (
	checkParse     = "snp.1"
	checkChain     = "snp.2"
	checkSignature = "snp.3"
	checkCRL       = "snp.4"
)

// Verify checks the authenticity of a raw report and the certificates from the evidence envelope
// (DER, any order), recording every failed check in res. It returns the parsed report and its
// claims; both are nil when the report could not be parsed.
func Verify(ctx context.Context, raw []byte, certs [][]byte, opts Options, res *ear.Result) (*Report, *ear.SNPClaims) {
	r, err := ParseReport(raw)
	if errors.Is(err, ErrGuestPolicy) {
		res.Fail(ear.CodeSNPGuestPolicy, "snp.5", err.Error())
		return nil, nil
	}
	if err != nil {
		res.Fail(ear.CodeSNPReportMalformed, checkParse, err.Error())
		return nil, nil
	}
	v := &verification{ctx: ctx, opts: opts, res: res, r: r}
	v.claims = v.reportClaims()
	if !v.classify(certs) {
		return r, v.claims
	}
	v.claims.ProductLine = v.line
	// Claims decompose TCBs per product line, which is known only now.
	v.claims.CurrentTCB = tcbClaim(r.CurrentTCB, v.line)
	v.claims.ReportedTCB = tcbClaim(r.ReportedTCB, v.line)
	v.claims.CommittedTCB = tcbClaim(r.CommittedTCB, v.line)
	v.claims.LaunchTCB = tcbClaim(r.LaunchTCB, v.line)
	if v.checkChain() {
		v.checkExtensions()
		v.checkSignature()
		if !opts.SkipCollateralUnsafe {
			v.checkCRL()
		}
	}
	return r, v.claims
}

type verification struct {
	ctx    context.Context
	opts   Options
	res    *ear.Result
	r      *Report
	claims *ear.SNPClaims

	line         string
	product      *roots.AMDProduct
	leaf         *x509.Certificate   // VCEK or VLEK
	intermediate *x509.Certificate   // ASK or ASVK the chain ran through
	candidates   []*x509.Certificate // intermediates offered by the evidence
}

func (v *verification) fail(code ear.Code, check, format string, args ...any) {
	v.res.Fail(code, check, fmt.Sprintf(format, args...))
}

func (v *verification) reportClaims() *ear.SNPClaims {
	r := v.r
	pol, _ := abi.ParseSnpPolicy(r.Policy) // already validated by ParseReport
	return &ear.SNPClaims{
		Version:         r.Version,
		SigningKey:      r.SignerInfo.SigningKey.String(),
		GuestSVN:        r.GuestSVN,
		Policy:          fmt.Sprintf("0x%x", r.Policy),
		Debug:           pol.Debug,
		MigrateMA:       pol.MigrateMA,
		SMT:             pol.SMT,
		ABIMajor:        pol.ABIMajor,
		ABIMinor:        pol.ABIMinor,
		FamilyID:        r.FamilyID,
		ImageID:         r.ImageID,
		VMPL:            r.VMPL,
		CurrentTCB:      tcbClaim(r.CurrentTCB, ""),
		ReportedTCB:     tcbClaim(r.ReportedTCB, ""),
		CommittedTCB:    tcbClaim(r.CommittedTCB, ""),
		LaunchTCB:       tcbClaim(r.LaunchTCB, ""),
		PlatformInfo:    fmt.Sprintf("0x%x", r.PlatformInfo),
		ReportData:      r.ReportData,
		Measurement:     r.Measurement,
		HostData:        r.HostData,
		IDKeyDigest:     r.IDKeyDigest,
		AuthorKeyDigest: r.AuthorKeyDigest,
		ReportID:        r.ReportID,
		ChipID:          r.ChipID,
		Collateral:      []ear.CollateralInfo{},
	}
}

func tcbClaim(v uint64, line string) ear.SNPTCB {
	t := DecomposeTCB(v, line)
	return ear.SNPTCB{Raw: fmt.Sprintf("0x%016x", v), Bootloader: t.Bootloader, TEE: t.TEE, SNP: t.SNP, Microcode: t.Microcode, FMC: t.FMC}
}

// Caches of the time-independent work of a verification, by the digest of every input (see
// package vcache for the fail-closed contract). Certificate validity at Now, CRL freshness,
// revocation and every comparison with the report are evaluated on each verification from the
// cached values, which are read-only.
var (
	// certCache: parsed certificates, by the digest of their DER.
	certCache = vcache.New[*x509.Certificate](4096)
	// chainCache: endorsement chains that verified to the pinned ARK, by the leaf, the
	// intermediates offered, the expected issuer and the ARK.
	chainCache = vcache.New[*verifiedChain](4096)
	// crlCache: AMD CRLs that parsed and whose issuer name and signature matched the ARK.
	crlCache = vcache.New[*x509.RevocationList](256)
)

// verifiedChain is a chain that verified at some time: its intermediate and the window in which
// all three certificates are valid (the latest NotBefore, the earliest NotAfter).
type verifiedChain struct {
	intermediate        *x509.Certificate
	notBefore, notAfter time.Time
}

// parseCertificate parses a DER certificate once per distinct DER.
func parseCertificate(der []byte) (*x509.Certificate, error) {
	key := vcache.Sum([]byte("snp/cert"), der)
	if c, ok := certCache.Get(key); ok {
		return c, nil
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	certCache.Add(key, c)
	return c, nil
}

// Certificate roles, recognised by subject common name as AMD's KDS specification assigns them.
func leafCN(k abi.ReportSigner) string { return "SEV-" + k.String() }

// classify identifies the endorsement certificate and candidate intermediates among the
// evidence's certificates by content, then determines the product line. When the evidence
// carries no endorsement certificate it is fetched from the collateral (VCEK only: VLEKs are
// not published by KDS).
func (v *verification) classify(certs [][]byte) bool {
	key := v.r.SignerInfo.SigningKey
	var other *x509.Certificate
	for i, der := range certs {
		c, err := parseCertificate(der)
		if err != nil {
			v.fail(ear.CodeSNPChainInvalid, checkChain, "certificate %d in the evidence does not parse: %v", i, err)
			return false
		}
		switch cn := c.Subject.CommonName; {
		case cn == leafCN(key):
			if v.leaf != nil && !v.leaf.Equal(c) {
				v.fail(ear.CodeSNPChainInvalid, checkChain, "the evidence carries two different %s certificates", key)
				return false
			}
			v.leaf = c
		case cn == "SEV-VCEK" || cn == "SEV-VLEK":
			other = c
		case strings.HasPrefix(cn, "SEV-"):
			v.candidates = append(v.candidates, c)
		case strings.HasPrefix(cn, "ARK-"):
			// ARKs in the evidence are ignored: only pinned ARKs are trusted.
		default:
			v.fail(ear.CodeSNPChainInvalid, checkChain, "certificate %d in the evidence (%q) is not an AMD certificate", i, cn)
			return false
		}
	}
	if v.leaf == nil && other != nil {
		v.fail(ear.CodeSNPSigningKeyMismatch, checkChain, "the report's SIGNING_KEY is %s but the evidence carries a %s certificate", key, other.Subject.CommonName)
		return false
	}
	// The product line: from the endorsement certificate's issuer (SEV-<line> or SEV-VLEK-<line>),
	// or, for version 3+ reports, from the report's CPUID family/model.
	if v.leaf != nil {
		v.line = strings.TrimPrefix(strings.TrimPrefix(v.leaf.Issuer.CommonName, "SEV-"), "VLEK-")
	}
	if v.r.Version >= abi.ReportVersion3 {
		fmsLine := kds.ProductLineFromFms(v.r.CPUID1EAX)
		if v.line == "" {
			v.line = fmsLine
		} else if fmsLine != v.line {
			v.fail(ear.CodeSNPChainInvalid, checkChain, "the report's CPUID identifies product line %s but its certificate was issued for %s", fmsLine, v.line)
			return false
		}
	}
	v.product = v.opts.Roots[v.line]
	if v.product == nil || v.product.ARK == nil {
		if v.line == "" {
			v.fail(ear.CodeSNPCertMissing, checkChain, "the evidence carries no %s certificate and this version %d report does not name its product line; include the %s in the evidence", key, v.r.Version, key)
		} else {
			v.fail(ear.CodeSNPChainInvalid, checkChain, "no ARK is pinned for product line %q", v.line)
		}
		return false
	}
	if v.leaf == nil {
		if key != abi.VcekReportSigner {
			v.fail(ear.CodeSNPCertMissing, checkChain, "the evidence carries no VLEK certificate; VLEKs are not published by AMD KDS and must come with the evidence")
			return false
		}
		u := VCEKURL(v.line, v.r.ChipID, v.r.ReportedTCB)
		resp := v.fetch("vcek", u, checkChain)
		if resp == nil {
			return false
		}
		c, err := parseCertificate(resp.Body)
		if err != nil {
			v.fail(ear.CodeCollateralMalformed, checkChain, "VCEK from %s: %v", u, err)
			return false
		}
		v.leaf = c
	}
	return true
}

// fetch gets a collateral item by URL and records it in the claims.
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
	v.claims.Collateral = append(v.claims.Collateral, ear.CollateralInfo{Kind: kind, URL: u, Digest: "sha256:" + hex.EncodeToString(d[:])})
	return r
}

// checkChain verifies VCEK → ASK → ARK or VLEK → ASVK → ARK (check 2), with the intermediate
// taken from the pinned roots, else the evidence, and always verified against the pinned ARK.
//
// A chain that verified once is cached by the digest of the leaf, the intermediates offered, the
// expected issuer and the ARK; a hit is used only when Now lies within all three certificates'
// validity, else the chain is verified in full (and fails as it would without the cache).
// Revocation is checked by checkCRL on every call.
func (v *verification) checkChain() bool {
	key := v.r.SignerInfo.SigningKey
	wantInter := "SEV-" + v.line
	pinned := v.product.ASK
	if key == abi.VlekReportSigner {
		wantInter = "SEV-VLEK-" + v.line
		pinned = v.product.ASVK
	}
	if v.leaf.Issuer.CommonName != wantInter {
		v.fail(ear.CodeSNPSigningKeyMismatch, checkChain, "the %s certificate is issued by %q, want %q", key, v.leaf.Issuer.CommonName, wantInter)
		return false
	}
	offered := []*x509.Certificate{pinned}
	if pinned == nil {
		offered = offered[:0]
		for _, c := range v.candidates {
			if c.Subject.CommonName == wantInter {
				offered = append(offered, c)
			}
		}
	}
	parts := [][]byte{[]byte("snp/chain"), []byte(wantInter), v.leaf.Raw, v.product.ARK.Raw}
	for _, c := range offered {
		parts = append(parts, c.Raw)
	}
	ckey := vcache.Sum(parts...)
	if c, ok := chainCache.Get(ckey); ok && !v.opts.Now.Before(c.notBefore) && !v.opts.Now.After(c.notAfter) {
		v.intermediate = c.intermediate
		return v.checkLeafKey()
	}
	inter := x509.NewCertPool()
	for _, c := range offered {
		inter.AddCert(c)
	}
	rootPool := x509.NewCertPool()
	rootPool.AddCert(v.product.ARK)
	chains, err := v.leaf.Verify(x509.VerifyOptions{
		Roots: rootPool, Intermediates: inter, CurrentTime: v.opts.Now,
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny},
	})
	if err != nil {
		var inv x509.CertificateInvalidError
		if errors.As(err, &inv) && inv.Reason == x509.Expired {
			v.fail(ear.CodeSNPCertExpired, checkChain, "a certificate of the %s chain is outside its validity period at %s: %v", key, v.opts.Now.UTC().Format(time.RFC3339), err)
		} else {
			v.fail(ear.CodeSNPChainInvalid, checkChain, "the %s does not chain to the pinned ARK-%s through %s: %v", key, v.line, wantInter, err)
		}
		return false
	}
	if len(chains[0]) != 3 {
		v.fail(ear.CodeSNPChainInvalid, checkChain, "the %s chain has %d certificates, want 3", key, len(chains[0]))
		return false
	}
	v.intermediate = chains[0][1]
	c := &verifiedChain{intermediate: v.intermediate, notBefore: v.leaf.NotBefore, notAfter: v.leaf.NotAfter}
	for _, cert := range chains[0][1:] {
		if cert.NotBefore.After(c.notBefore) {
			c.notBefore = cert.NotBefore
		}
		if cert.NotAfter.Before(c.notAfter) {
			c.notAfter = cert.NotAfter
		}
	}
	chainCache.Add(ckey, c)
	return v.checkLeafKey()
}

// checkLeafKey requires the endorsement key to be ECDSA P-384.
func (v *verification) checkLeafKey() bool {
	key := v.r.SignerInfo.SigningKey
	if pub, ok := v.leaf.PublicKey.(*ecdsa.PublicKey); !ok || pub.Curve != elliptic.P384() {
		v.fail(ear.CodeSNPChainInvalid, checkChain, "the %s key is not ECDSA P-384", key)
		return false
	}
	return true
}

// checkExtensions compares the endorsement certificate's AMD KDS extensions with the report
// (check 2): a VCEK's hwID with CHIP_ID (the whole 64 bytes on Milan and Genoa, the first 8 on
// Turin, whose VCEKs certify only those), and the certified TCB components with REPORTED_TCB
// decomposed per product line (FMC included on Turin). On Milan and Genoa the reserved SPLs
// spl4–spl7 must also equal REPORTED_TCB bytes 2–5, as go-sev-guest's validate requires; Turin's
// reserved bytes 4–6 have no certificate extension to compare with.
func (v *verification) checkExtensions() {
	key := v.r.SignerInfo.SigningKey
	ext, err := ParseCertExtensions(v.leaf.Extensions, key, v.line)
	if err != nil {
		v.fail(ear.CodeSNPChainInvalid, checkChain, "the %s certificate's AMD extensions cannot be used: %v", key, err)
		return
	}
	if key == abi.VcekReportSigner && !v.r.SignerInfo.MaskChipKey {
		chip := v.r.ChipID[:len(ext.HWID)]
		if string(ext.HWID) != string(chip) {
			if v.line == "Turin" {
				v.fail(ear.CodeSNPChipIDMismatch, checkChain, "the Turin VCEK was issued for chip %x, but the first 8 bytes of the report's CHIP_ID are %x", ext.HWID, chip)
			} else {
				v.fail(ear.CodeSNPChipIDMismatch, checkChain, "the VCEK was issued for chip %x…, the report's CHIP_ID is %x…", ext.HWID[:8], v.r.ChipID[:8])
			}
		}
	}
	certTCB, rep := ext.TCB(), DecomposeTCB(v.r.ReportedTCB, v.line)
	if rep != certTCB {
		v.fail(ear.CodeSNPTCBMismatch, checkChain, "the %s certificate is for TCB %+v but REPORTED_TCB is %+v", key, certTCB, rep)
		return
	}
	if v.line != "Turin" {
		var b [8]byte
		binary.LittleEndian.PutUint64(b[:], v.r.ReportedTCB)
		if cert := [4]uint8{ext.Spl4, ext.Spl5, ext.Spl6, ext.Spl7}; cert != [4]uint8(b[2:6]) {
			v.fail(ear.CodeSNPTCBMismatch, checkChain, "the %s certificate's reserved SPLs are %v but REPORTED_TCB's reserved bytes 2–5 are %v", key, cert, b[2:6])
		}
	}
}

// kdsVCEKBase is the AMD KDS VCEK endpoint (KDS spec, "Get VCEK Certificate").
const kdsVCEKBase = "https://kdsintf.amd.com/vcek/v1/"

// VCEKURL is the AMD KDS URL of the VCEK for a chip at a TCB: chipID is the report's CHIP_ID and
// tcb its REPORTED_TCB. Milan and Genoa use go-sev-guest's kds.VCEKCertURL: the whole CHIP_ID in
// hex and blSPL, teeSPL, snpSPL and ucodeSPL of the Milan/Genoa TCB_VERSION layout. Turin's URL
// names the chip by the hex of its 8-byte hwID, CHIP_ID[0:8], and adds fmcSPL, with the SPLs of
// the Turin layout:
//
//	https://kdsintf.amd.com/vcek/v1/Turin/<16 hex digits>?fmcSPL=F&blSPL=B&teeSPL=T&snpSPL=S&ucodeSPL=U
//
// Assumption (not in go-sev-guest v0.15.0): the query parameters are decimal and in this order,
// as for Milan and Genoa with fmcSPL first.
func VCEKURL(line string, chipID []byte, tcb uint64) string {
	if line != "Turin" {
		return kds.VCEKCertURL(line, chipID, kds.TCBVersion(tcb))
	}
	t := DecomposeTCB(tcb, line)
	return fmt.Sprintf("%sTurin/%s?fmcSPL=%d&blSPL=%d&teeSPL=%d&snpSPL=%d&ucodeSPL=%d", kdsVCEKBase,
		hex.EncodeToString(chipID[:min(len(chipID), hwIDSize(line))]), t.FMC, t.Bootloader, t.TEE, t.SNP, t.Microcode)
}

// checkSignature verifies the ECDSA P-384 SHA-384 signature over bytes 0x000–0x29F (check 3).
func (v *verification) checkSignature() {
	der, err := abi.ReportToSignatureDER(v.r.Raw)
	pub := v.leaf.PublicKey.(*ecdsa.PublicKey)
	h := sha512.Sum384(v.r.Raw[:signedSize])
	if err != nil || !ecdsa.VerifyASN1(pub, h[:], der) {
		v.fail(ear.CodeSNPReportSignature, checkSignature, "the report signature does not verify with the %s key", v.r.SignerInfo.SigningKey)
	}
}

// checkCRL fetches the product line's CRL for the signing key's endpoint, checks that the ARK
// signed it and that it is fresh, and that neither the intermediate nor the endorsement
// certificate is listed (check 4). A stale CRL is rejected however it was obtained.
func (v *verification) checkCRL() {
	key := v.r.SignerInfo.SigningKey
	u := kds.CrlLinkByKey(v.line, key)
	resp := v.fetch("amd_crl", u, checkCRL)
	if resp == nil {
		return
	}
	ark := v.product.ARK
	// A CRL whose issuer and signature matched the ARK is cached by the digest of its DER and
	// the ARK's; its freshness and the serials are checked below on every call.
	crlKey := vcache.Sum([]byte("snp/crl"), resp.Body, ark.Raw)
	crl, cached := crlCache.Get(crlKey)
	if !cached {
		var err error
		crl, err = x509.ParseRevocationList(resp.Body)
		if err != nil {
			v.fail(ear.CodeCollateralMalformed, checkCRL, "AMD CRL from %s: %v", u, err)
			return
		}
	}
	ci := &v.claims.Collateral[len(v.claims.Collateral)-1]
	tu, nu := crl.ThisUpdate.UTC(), crl.NextUpdate.UTC()
	ci.IssuedAt, ci.NextUpdate = &tu, &nu
	if !cached {
		if crl.Issuer.String() != ark.Subject.String() || crl.CheckSignatureFrom(ark) != nil {
			v.fail(ear.CodeSNPCRLInvalid, checkCRL, "the CRL from %s is not signed by ARK-%s", u, v.line)
			return
		}
		crlCache.Add(crlKey, crl)
	}
	now, grace := v.opts.Now, v.opts.StaleGraceUnsafe
	stale := func(why string) {
		v.fail(ear.CodeSNPCRLStale, checkCRL, "the AMD CRL is valid from %s to %s, not at %s%s; fetch a fresh CRL",
			tu.Format(time.RFC3339), nu.Format(time.RFC3339), now.UTC().Format(time.RFC3339), why)
	}
	switch {
	case now.Before(crl.ThisUpdate) || crl.NextUpdate.IsZero():
		stale("")
		return
	case !now.After(crl.NextUpdate):
	case grace > 0 && !now.After(crl.NextUpdate.Add(grace)):
		v.res.Warn(ear.CodeCollateralStaleAccepted, checkCRL, fmt.Sprintf("the AMD CRL expired at %s, %s before the verification time, and was accepted within stale_grace_unsafe (%s): revocations published since may be missed; refresh the collateral",
			nu.Format(time.RFC3339), now.Sub(crl.NextUpdate), grace))
	case grace > 0:
		stale(fmt.Sprintf(" (%s past its nextUpdate, beyond stale_grace_unsafe of %s)", now.Sub(crl.NextUpdate), grace))
		return
	default:
		stale("")
		return
	}
	for _, e := range crl.RevokedCertificateEntries {
		if e.SerialNumber == nil {
			continue
		}
		for _, c := range []*x509.Certificate{v.intermediate, v.leaf} {
			if e.SerialNumber.Cmp(c.SerialNumber) == 0 {
				v.fail(ear.CodeSNPCertRevoked, checkCRL, "%q (serial %x) is revoked by the AMD CRL", c.Subject.CommonName, c.SerialNumber)
			}
		}
	}
}
