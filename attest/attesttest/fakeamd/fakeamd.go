// Package fakeamd is a fake AMD SEV-SNP PKI for tests: it issues an ARK, ASK, ASVK, VCEK and VLEK
// shaped like AMD's, signs ATTESTATION_REPORTs with the VCEK or VLEK, and records the AMD KDS
// collateral (cert_chain, VCEK and CRL responses) a verifier fetches, all relative to an injected
// clock. Negative tests start from a valid report and mutate and re-sign it (Resign), or issue a
// mismatching VCEK (NewVCEK), a revoking or stale CRL (CRLOptions), or a foreign PKI
// (AlternateKeys).
//
// It is test-only: the keys are public and compiled in (see Keys), and nothing it signs must ever
// be trusted outside a test or the verifier's explicit test mode. It uses go-sev-guest's
// production packages (abi, kds, verify/trust) for constants and URLs but not its testing package,
// which registers global flags and signs with a shared, unsynchronised math/rand source.
//
// References: the SEV-SNP Firmware ABI specification (AMD doc 56860), Table "ATTESTATION_REPORT
// Structure", and the VCEK Certificate and KDS Interface specification (AMD doc 57230). The
// certificates copy the shape of AMD's real ones (subject attributes and their order, serial
// numbers, key usages, CRL distribution points, RSASSA-PSS SHA-384 signatures, a VCEK with serial 0,
// no authority key identifier and an untagged 64-byte hwID extension, 8 bytes on Turin).
//
// Turin is modelled as AMD's Turin (EPYC 9005, family 1Ah) works, which go-sev-guest v0.15.0 does
// not model:
//   - its TCB_VERSION has the Turin layout: byte 0 FMC SPL, 1 boot loader, 2 TEE, 3 SNP, 4–6
//     reserved, 7 microcode (Milan and Genoa: 0 boot loader, 1 TEE, 2–5 reserved, 6 SNP,
//     7 microcode); see TurinTCBParts;
//   - its VCEK's and VLEK's extensions add fmcSPL (1.3.6.1.4.1.3704.1.3.9), and its VCEK's hwID is
//     8 bytes, the first 8 of CHIP_ID;
//   - its VCEK is served at the Turin KDS URL, which names the chip by those 8 bytes and adds
//     fmcSPL (VCEKURL).
//
// go-sev-guest's kds package rejects such certificates (it knows no fmcSPL and wants a 64-byte
// hwID), so its verify and validate can cross-check this package for Milan and Genoa only; Turin
// is checked by the project's own verifier (verifier/snp).
//
// Turin details this package assumes, not confirmed against a real Turin certificate: the Turin
// certificates keep the reserved spl4–spl7 extensions (as zeros) and carry structVersion 1; the
// 8-byte hwID is bare bytes like the 64-byte one; the fmcSPL extension follows ucodeSPL; the
// KDS query parameters are decimal, fmcSPL first.
package fakeamd

import (
	"bytes"
	"crypto"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/pem"
	"fmt"
	"math/big"
	"time"

	"github.com/google/go-sev-guest/abi"
	"github.com/google/go-sev-guest/kds"
	"github.com/google/go-sev-guest/verify/trust"
)

// Validity periods. AMD's ARK, ASK and ASVK are valid for 25 years and VCEKs for 7 (the real
// Milan VCEK in go-sev-guest's testdata runs 2022-09-24 to 2029-09-24). AMD does not publish a VLEK
// lifetime; the VCEK's is used.
const (
	rootValidity = 25 * 365 * 24 * time.Hour
	keyValidity  = 7 * 365 * 24 * time.Hour
	// backdate is how long before the PKI's clock every certificate starts to be valid.
	backdate = time.Hour
)

// DefaultTCB is the Milan and Genoa TCB_VERSION the default VCEK and VLEK certify and that
// DefaultReportOptions reports as REPORTED_TCB, CURRENT_TCB, COMMITTED_TCB and LAUNCH_TCB. The
// values are illustrative, not AMD's published levels; UcodeSpl is above 127 on purpose.
var DefaultTCB = kds.TCBParts{BlSpl: 4, TeeSpl: 0, SnpSpl: 22, UcodeSpl: 213}

// DefaultTurinTCB is DefaultTCB for Turin. The values are illustrative, not AMD's published
// levels, and all different so that a layout confusion shows. They rise from FMC to TEE on
// purpose: a floor derived from the TCB_VERSION with the Milan/Genoa layout (boot loader = byte 0,
// TEE = byte 1, SNP = byte 6) is then still met, so a test that builds its policy that way keeps
// passing on Turin.
var DefaultTurinTCB = TurinTCBParts{FmcSpl: 1, BlSpl: 2, TeeSpl: 3, SnpSpl: 22, UcodeSpl: 213}

// TurinTCBParts are the security patch levels of a Turin TCB_VERSION: byte 0 FMC, 1 boot loader,
// 2 TEE, 3 SNP, 4–6 reserved (zero), 7 microcode.
type TurinTCBParts struct {
	FmcSpl, BlSpl, TeeSpl, SnpSpl, UcodeSpl uint8
}

// ComposeTurinTCB returns the Turin TCB_VERSION of parts, its reserved bytes zero.
func ComposeTurinTCB(parts TurinTCBParts) kds.TCBVersion {
	return kds.TCBVersion(uint64(parts.FmcSpl) | uint64(parts.BlSpl)<<8 | uint64(parts.TeeSpl)<<16 |
		uint64(parts.SnpSpl)<<24 | uint64(parts.UcodeSpl)<<56)
}

// DecomposeTurinTCB splits a Turin TCB_VERSION; the reserved bytes 4–6 are dropped.
func DecomposeTurinTCB(tcb kds.TCBVersion) TurinTCBParts {
	return TurinTCBParts{FmcSpl: uint8(tcb), BlSpl: uint8(tcb >> 8), TeeSpl: uint8(tcb >> 16),
		SnpSpl: uint8(tcb >> 24), UcodeSpl: uint8(tcb >> 56)}
}

// DefaultChipID returns the CHIP_ID the default VCEK certifies as its hwID: bytes 0x01, 0x02, …,
// 0x40.
func DefaultChipID() [abi.ChipIDSize]byte {
	var id [abi.ChipIDSize]byte
	for i := range id {
		id[i] = byte(i + 1)
	}
	return id
}

// DefaultCSPID is the CSP_ID extension of the default VLEK.
const DefaultCSPID = "proofline-fake-csp"

// product holds what differs between product lines.
type product struct {
	// family, model and stepping are the CPUID Fn0000_0001_EAX values that go-sev-guest's
	// abi.SevProductFromCpuid1Eax maps to the product line.
	family, model, stepping byte
	// steppingName is the stepping as the VCEK productName extension spells it (KDS spec).
	steppingName string
	// serialBase numbers the roots like AMD's: ARK base, ASK base+1, ASVK base+0x101
	// (Milan 0x10000, 0x10001, 0x10101).
	serialBase int64
}

var products = map[string]product{
	"Milan": {family: 0x19, model: 0x01, stepping: 1, steppingName: "B1", serialBase: 0x10000},
	"Genoa": {family: 0x19, model: 0x11, stepping: 1, steppingName: "B1", serialBase: 0x20000},
	"Turin": {family: 0x1A, model: 0x02, stepping: 0, steppingName: "B0", serialBase: 0x30000},
}

// PKI is one product line's fake AMD PKI. Its fields are set by New and are read-only afterwards;
// the methods are safe for concurrent use.
type PKI struct {
	// ProductLine is "Milan", "Genoa" or "Turin".
	ProductLine string
	// ProductName is the VCEK's productName extension, e.g. "Milan-B1" (the VLEK's omits the
	// stepping).
	ProductName string
	// CPUIDFamily, CPUIDModel and CPUIDStepping are the CPUID_FAM_ID, CPUID_MOD_ID and CPUID_STEP
	// that DefaultReportOptions puts in v3+ reports.
	CPUIDFamily, CPUIDModel, CPUIDStepping byte
	// Now is the clock the PKI was built against; certificate validity and CRL defaults derive
	// from it.
	Now time.Time
	// Keys are the private keys behind the certificates, for tests that sign something
	// themselves.
	Keys *Keys
	// ARK is self-signed. ASK and ASVK are signed by the ARK, VCEK by the ASK, VLEK by the ASVK.
	ARK, ASK, ASVK, VCEK, VLEK *x509.Certificate
	// ChipID is the CHIP_ID the VCEK certifies: its hwID extension is the whole of it on Milan and
	// Genoa and its first 8 bytes on Turin.
	ChipID [abi.ChipIDSize]byte
	// TCB is the TCB_VERSION in the VCEK's and VLEK's SPL extensions, in the product line's layout
	// (DefaultTCB composed by kds.ComposeTCBParts for Milan and Genoa, DefaultTurinTCB composed by
	// ComposeTurinTCB for Turin).
	TCB kds.TCBVersion
	// CSPID is the VLEK's CSP_ID extension.
	CSPID string
}

// New builds a PKI for productLine ("Milan", "Genoa" or "Turin") with DefaultKeys, DefaultChipID,
// DefaultTCB (DefaultTurinTCB for Turin) and DefaultCSPID, every certificate valid from now-1h. It
// signs five RSA-4096 certificates, a few tens of milliseconds.
func New(productLine string, now time.Time) (*PKI, error) {
	return NewWithKeys(productLine, now, DefaultKeys())
}

// NewWithKeys is New with the given keys, e.g. AlternateKeys for a PKI that an ARK from New does
// not anchor.
func NewWithKeys(productLine string, now time.Time, keys *Keys) (*PKI, error) {
	prod, ok := products[productLine]
	if !ok {
		return nil, fmt.Errorf("fakeamd: unknown product line %q, want Milan, Genoa or Turin", productLine)
	}
	tcb := ComposeTurinTCB(DefaultTurinTCB)
	if productLine != "Turin" {
		var err error
		if tcb, err = kds.ComposeTCBParts(DefaultTCB); err != nil {
			return nil, fmt.Errorf("fakeamd: %w", err)
		}
	}
	p := &PKI{
		ProductLine:   productLine,
		ProductName:   productLine + "-" + prod.steppingName,
		CPUIDFamily:   prod.family,
		CPUIDModel:    prod.model,
		CPUIDStepping: prod.stepping,
		Now:           now,
		Keys:          keys,
		ChipID:        DefaultChipID(),
		TCB:           tcb,
		CSPID:         DefaultCSPID,
	}
	vcekCRL := kds.CrlLinkByKey(productLine, abi.VcekReportSigner)
	vlekCRL := kds.CrlLinkByKey(productLine, abi.VlekReportSigner)
	// The ARK's template is its own parent: it is self-signed.
	ark, err := rootTemplate(prod.serialBase, "ARK-"+productLine, vcekCRL, now)
	if err != nil {
		return nil, err
	}
	ark.KeyUsage = x509.KeyUsageCertSign | x509.KeyUsageCRLSign
	if p.ARK, err = issue("ARK", ark, ark, keys.ARK.Public(), keys.ARK); err != nil {
		return nil, err
	}
	// ASK and ASVK: CA with path length 0, certificate signing only (as AMD's).
	ask, err := rootTemplate(prod.serialBase+0x1, "SEV-"+productLine, vcekCRL, now)
	if err != nil {
		return nil, err
	}
	ask.MaxPathLenZero = true
	if p.ASK, err = issue("ASK", ask, p.ARK, keys.ASK.Public(), keys.ARK); err != nil {
		return nil, err
	}
	asvk, err := rootTemplate(prod.serialBase+0x101, "SEV-VLEK-"+productLine, vlekCRL, now)
	if err != nil {
		return nil, err
	}
	asvk.MaxPathLenZero = true
	if p.ASVK, err = issue("ASVK", asvk, p.ARK, keys.ASVK.Public(), keys.ARK); err != nil {
		return nil, err
	}
	if p.VCEK, err = p.NewVCEK(p.ChipID, p.TCB); err != nil {
		return nil, err
	}
	if p.VLEK, err = p.NewVLEK(p.TCB); err != nil {
		return nil, err
	}
	return p, nil
}

// rootTemplate is the template of an ARK, ASK or ASVK: CA, certificate signing, one CRL
// distribution point (KDS spec, "ARK/ASK Certificate").
func rootTemplate(serial int64, cn, crl string, now time.Time) (*x509.Certificate, error) {
	name, err := amdName(cn)
	if err != nil {
		return nil, err
	}
	return &x509.Certificate{
		SerialNumber:          big.NewInt(serial),
		RawSubject:            name,
		NotBefore:             now.Add(-backdate),
		NotAfter:              now.Add(-backdate + rootValidity),
		SignatureAlgorithm:    x509.SHA384WithRSAPSS,
		KeyUsage:              x509.KeyUsageCertSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		CRLDistributionPoints: []string{crl},
	}, nil
}

// NewVCEK issues another VCEK certificate, signed by the ASK, for the same VCEK key but with the
// hwID of chipID and the given TCB extensions (tcb in the product line's TCB_VERSION layout). A
// report signed by the PKI then verifies against it, so a test can exercise the CHIP_ID and
// REPORTED_TCB binding checks alone. Its serial number is 0, as on AMD's VCEKs.
func (p *PKI) NewVCEK(chipID [abi.ChipIDSize]byte, tcb kds.TCBVersion) (*x509.Certificate, error) {
	exts, err := endorsementExtensions(p.ProductLine, p.ProductName, tcb)
	if err != nil {
		return nil, err
	}
	// KDS spec Table "VCEK Certificate Extensions": hwID is the 64-byte CHIP_ID on Milan and Genoa
	// and its first 8 bytes on Turin. AMD's VCEKs carry it as the bare extension value, without an
	// inner OCTET STRING tag (assumed the same for Turin's 8 bytes).
	exts = append(exts, pkix.Extension{Id: kds.OidHwid, Value: bytes.Clone(chipID[:hwIDSize(p.ProductLine)])})
	return p.issueEndorsement(abi.VcekReportSigner, exts)
}

// hwIDSize is the size of a VCEK's hwID extension on a product line.
func hwIDSize(line string) int {
	if line == "Turin" {
		return 8
	}
	return abi.ChipIDSize
}

// NewVLEK issues another VLEK certificate, signed by the ASVK, for the same VLEK key with the given
// TCB extensions (tcb in the product line's TCB_VERSION layout; Turin VLEKs carry fmcSPL too).
func (p *PKI) NewVLEK(tcb kds.TCBVersion) (*x509.Certificate, error) {
	// The VLEK's productName carries no stepping (KDS spec, "VLEK Certificate Extensions").
	exts, err := endorsementExtensions(p.ProductLine, p.ProductLine, tcb)
	if err != nil {
		return nil, err
	}
	cspID, err := asn1.MarshalWithParams(p.CSPID, "ia5")
	if err != nil {
		return nil, fmt.Errorf("fakeamd: CSP_ID: %w", err)
	}
	exts = append(exts, pkix.Extension{Id: kds.OidCspID, Value: cspID})
	return p.issueEndorsement(abi.VlekReportSigner, exts)
}

func (p *PKI) issueEndorsement(key abi.ReportSigner, exts []pkix.Extension) (*x509.Certificate, error) {
	name, err := amdName("SEV-" + key.String())
	if err != nil {
		return nil, err
	}
	issuer, issuerKey, pub := p.ASK, crypto.Signer(p.Keys.ASK), p.Keys.VCEK.Public()
	if key == abi.VlekReportSigner {
		issuer, issuerKey, pub = p.ASVK, p.Keys.ASVK, p.Keys.VLEK.Public()
	}
	// Without the issuer's subject key ID, crypto/x509 adds no authority key identifier, as on
	// AMD's VCEKs; go-sev-guest's kds package rejects any extension it does not know except that
	// one (and so rejects Turin's fmcSPL anyway).
	parent := *issuer
	parent.SubjectKeyId = nil
	return issue(key.String(), &x509.Certificate{
		SerialNumber:       big.NewInt(0),
		RawSubject:         name,
		NotBefore:          p.Now.Add(-backdate),
		NotAfter:           p.Now.Add(-backdate + keyValidity),
		SignatureAlgorithm: x509.SHA384WithRSAPSS,
		ExtraExtensions:    exts,
	}, &parent, pub, issuerKey)
}

// oidFMCSPL is the fmcSPL extension of Turin and later VCEKs and VLEKs (KDS spec Table "VCEK
// Certificate Extensions"), which go-sev-guest v0.15.0 does not define.
var oidFMCSPL = asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 3704, 1, 3, 9}

// endorsementExtensions returns the KDS extensions shared by the VCEK and VLEK of a product line,
// in AMD's order: structVersion, productName, then the SPLs of the TCB_VERSION (KDS spec Table
// "VCEK Certificate Extensions"; TCB_VERSION layouts from the ABI spec). Milan and Genoa
// certificates carry structVersion 0, as AMD's do. Turin ones carry structVersion 1, the reserved
// spl4–spl7 as zeros and fmcSPL after ucodeSPL (assumptions, see the package comment).
func endorsementExtensions(line, productName string, tcb kds.TCBVersion) ([]pkix.Extension, error) {
	parts := kds.DecomposeTCBVersion(tcb)
	structVersion := 0
	if line == "Turin" {
		t := DecomposeTurinTCB(tcb)
		parts = kds.TCBParts{BlSpl: t.BlSpl, TeeSpl: t.TeeSpl, SnpSpl: t.SnpSpl, UcodeSpl: t.UcodeSpl}
		structVersion = 1
	}
	name, err := asn1.MarshalWithParams(productName, "ia5")
	if err != nil {
		return nil, fmt.Errorf("fakeamd: productName: %w", err)
	}
	exts := []pkix.Extension{
		{Id: kds.OidStructVersion, Value: asn1Int(structVersion)},
		{Id: kds.OidProductName1, Value: name},
	}
	for _, spl := range []struct {
		id    asn1.ObjectIdentifier
		value uint8
	}{
		{kds.OidBlSpl, parts.BlSpl},
		{kds.OidTeeSpl, parts.TeeSpl},
		{kds.OidSpl4, parts.Spl4},
		{kds.OidSpl5, parts.Spl5},
		{kds.OidSpl6, parts.Spl6},
		{kds.OidSpl7, parts.Spl7},
		{kds.OidSnpSpl, parts.SnpSpl},
		{kds.OidUcodeSpl, parts.UcodeSpl},
	} {
		exts = append(exts, pkix.Extension{Id: spl.id, Value: asn1Int(int(spl.value))})
	}
	if line == "Turin" {
		exts = append(exts, pkix.Extension{Id: oidFMCSPL, Value: asn1Int(int(DecomposeTurinTCB(tcb).FmcSpl))})
	}
	return exts, nil
}

func asn1Int(v int) []byte {
	b, err := asn1.Marshal(v)
	if err != nil {
		panic(err) // an int always marshals
	}
	return b
}

// amdName is the DER subject AMD gives every SEV certificate, with its attributes in AMD's order:
// OU=Engineering, C=US, L=Santa Clara, ST=CA, O=Advanced Micro Devices, CN=cn.
func amdName(cn string) ([]byte, error) {
	attr := func(oid []int, v string) pkix.RelativeDistinguishedNameSET {
		return pkix.RelativeDistinguishedNameSET{{Type: oid, Value: v}}
	}
	der, err := asn1.Marshal(pkix.RDNSequence{
		attr([]int{2, 5, 4, 11}, "Engineering"),
		attr([]int{2, 5, 4, 6}, "US"),
		attr([]int{2, 5, 4, 7}, "Santa Clara"),
		attr([]int{2, 5, 4, 8}, "CA"),
		attr([]int{2, 5, 4, 10}, "Advanced Micro Devices"),
		attr([]int{2, 5, 4, 3}, cn),
	})
	if err != nil {
		return nil, fmt.Errorf("fakeamd: subject %q: %w", cn, err)
	}
	return der, nil
}

func issue(what string, template, parent *x509.Certificate, pub crypto.PublicKey, key crypto.Signer) (*x509.Certificate, error) {
	der, err := x509.CreateCertificate(rand.Reader, template, parent, pub, key)
	if err != nil {
		return nil, fmt.Errorf("fakeamd: issuing the %s certificate: %w", what, err)
	}
	return x509.ParseCertificate(der)
}

// RootsPEM returns the ARK, ASK and ASVK certificates as PEM, ARK first: the file the verifier's
// --roots DIR reads (the self-signed ARK is the trust anchor, ASK and ASVK its intermediates).
func (p *PKI) RootsPEM() []byte {
	return pemCerts(p.ARK, p.ASK, p.ASVK)
}

// CertChainPEM returns the body of the KDS cert_chain endpoint for key
// (kds.ProductCertChainURL): ASK then ARK for the VCEK, ASVK then ARK for the VLEK.
func (p *PKI) CertChainPEM(key abi.ReportSigner) []byte {
	return pemCerts(p.intermediate(key), p.ARK)
}

func (p *PKI) intermediate(key abi.ReportSigner) *x509.Certificate {
	if key == abi.VlekReportSigner {
		return p.ASVK
	}
	return p.ASK
}

func (p *PKI) endorsement(key abi.ReportSigner) *x509.Certificate {
	if key == abi.VlekReportSigner {
		return p.VLEK
	}
	return p.VCEK
}

func pemCerts(certs ...*x509.Certificate) []byte {
	var out []byte
	for _, c := range certs {
		out = append(out, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})...)
	}
	return out
}

// Certificates returns what an agent puts in the evidence envelope's certificates for a report
// signed by key: the DER VCEK (abi.VcekReportSigner) or VLEK (abi.VlekReportSigner), as the host
// provides it through the extended guest request. The slices are copies a test may mutate.
func (p *PKI) Certificates(key abi.ReportSigner) [][]byte {
	return [][]byte{bytes.Clone(p.endorsement(key).Raw)}
}

// CertificatesWithChain is Certificates followed by the DER ASK (or ASVK for the VLEK) and ARK.
func (p *PKI) CertificatesWithChain(key abi.ReportSigner) [][]byte {
	return [][]byte{bytes.Clone(p.endorsement(key).Raw), bytes.Clone(p.intermediate(key).Raw), bytes.Clone(p.ARK.Raw)}
}

// TrustedRoots returns go-sev-guest verify.Options.TrustedRoots holding this PKI's ARK, ASK and
// ASVK. Each call returns new values: go-sev-guest caches the CRL it fetched inside them.
func (p *PKI) TrustedRoots() map[string][]*trust.AMDRootCerts {
	r := trust.AMDRootCertsProduct(p.ProductLine)
	r.ProductCerts = &trust.ProductCerts{Ark: p.ARK, Ask: p.ASK, Asvk: p.ASVK}
	return map[string][]*trust.AMDRootCerts{p.ProductLine: {r}}
}
