// Package fakeintel is a test-only fake of Intel's SGX/TDX attestation PKI. It issues a Root CA,
// a PCK Platform CA, a TCB Signing certificate and a PCK leaf certificate shaped like Intel's,
// produces TDX quotes (versions 4 and 5) signed under them, and signs the matching Intel PCS
// collateral (TCB info, QE identity, PCK CRL, Root CA CRL), all relative to an injected clock.
//
// Everything it produces verifies end to end with go-tdx-guest's verify.TdxQuote when the fake
// root is the only trusted root. Negative tests start from the valid defaults and change one
// thing: an option, a field of the returned collateral, or bytes of a quote followed by
// (*PKI).ResignQuote so that the signatures are valid again.
//
// Never use it outside tests: its keys are generated in memory and are exported on purpose.
package fakeintel

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"math/big"
	"time"

	"github.com/google/go-tdx-guest/pcs"
)

// Subject common names. go-tdx-guest and Intel's QVL check certificates by these exact names.
const (
	RootCN       = "Intel SGX Root CA"
	PlatformCACN = "Intel SGX PCK Platform CA"
	TCBSigningCN = "Intel SGX TCB Signing"
	PCKCN        = "Intel SGX PCK Certificate"
)

// RootCRLURL is the CRL distribution point of the fake Root CA (and of the certificates it
// issues), i.e. the URL at which the verifier fetches the Root CA CRL. Intel's real root uses
// https://certificates.trustedservices.intel.com/IntelSGXRootCA.der; the fake uses a different
// path on the same host so that fake and real recorded collateral can live in one set.
const RootCRLURL = "https://certificates.trustedservices.intel.com/fakeintel/IntelSGXRootCA.der"

// Values carried in the SGX extensions of the fake PCK certificate (see PKI for their meaning).
var (
	// DefaultFMSPC is the FMSPC of the fake platform; "fa4e" marks it as fake.
	DefaultFMSPC = [6]byte{0x50, 0x80, 0x6f, 0xfa, 0x4e, 0x00}
	// DefaultPCEID is Intel's only PCE ID.
	DefaultPCEID = [2]byte{0x00, 0x00}
	// DefaultCPUSVN is the platform's CPUSVN; its bytes are also the 16 SGX TCB component SVNs
	// (values of a 5th-generation Xeon platform).
	DefaultCPUSVN = [16]byte{4, 4, 2, 2, 4, 1, 0, 5}
	// DefaultPCESVN is the PCE SVN of the platform.
	DefaultPCESVN uint16 = 13
	// DefaultPPID is the (recognisable, fake) platform provisioning ID.
	DefaultPPID = [16]byte{0xfa, 0x4e, 0x99, 0x1d, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11}
)

// PKI is a fake Intel attestation PKI. Its fields are the source of truth for everything it
// produces: a test may replace a certificate or key (for instance re-issue the PCK with another
// key) and later quotes and collateral use the replacement.
type PKI struct {
	// Root is the self-signed "Intel SGX Root CA"; RootKey signs the Platform CA, the TCB
	// Signing certificate and the Root CA CRL.
	Root    *x509.Certificate
	RootKey *ecdsa.PrivateKey
	// PlatformCA is the "Intel SGX PCK Platform CA"; PlatformCAKey signs the PCK and the PCK CRL.
	PlatformCA    *x509.Certificate
	PlatformCAKey *ecdsa.PrivateKey
	// TCBSigning is the "Intel SGX TCB Signing" certificate; TCBSigningKey signs TCB info and
	// QE identity.
	TCBSigning    *x509.Certificate
	TCBSigningKey *ecdsa.PrivateKey
	// PCK is the "Intel SGX PCK Certificate" of the fake platform; PCKKey signs QE reports.
	PCK    *x509.Certificate
	PCKKey *ecdsa.PrivateKey

	// The SGX extension values inside PCK (OID 1.2.840.113741.1.13.1): FMSPC selects the TCB
	// info, PCEID must equal the TCB info's pceId, CPUSVN holds the SGX TCB component SVNs and
	// PCESVN the PCE SVN that TCB levels are compared against, PPID identifies the platform.
	FMSPC  [6]byte
	PCEID  [2]byte
	CPUSVN [16]byte
	PCESVN uint16
	PPID   [16]byte
}

// New creates a fresh fake PKI with P-256 keys. Every certificate is valid from now-1h; the root
// until now+20y, the Platform CA until now+10y, the TCB Signing and PCK certificates until now+7y.
func New(now time.Time) (*PKI, error) {
	p := &PKI{FMSPC: DefaultFMSPC, PCEID: DefaultPCEID, CPUSVN: DefaultCPUSVN, PCESVN: DefaultPCESVN, PPID: DefaultPPID}
	var err error
	for _, k := range []**ecdsa.PrivateKey{&p.RootKey, &p.PlatformCAKey, &p.TCBSigningKey, &p.PCKKey} {
		if *k, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader); err != nil {
			return nil, err
		}
	}
	notBefore := now.Add(-time.Hour)

	// The profiles follow Intel's "SGX PCK Certificate and CRL Profile": ECDSA P-256 with
	// SHA-256, X.509 v3, subject "CN=…, O=Intel Corporation, L=Santa Clara, ST=CA, C=US".
	root := &x509.Certificate{
		Subject:               intelName(RootCN),
		NotBefore:             notBefore,
		NotAfter:              now.AddDate(20, 0, 0),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLen:            1,
		CRLDistributionPoints: []string{RootCRLURL},
	}
	if p.Root, err = issue(root, root, &p.RootKey.PublicKey, p.RootKey); err != nil {
		return nil, fmt.Errorf("root CA: %w", err)
	}
	platform := &x509.Certificate{
		Subject:               intelName(PlatformCACN),
		NotBefore:             notBefore,
		NotAfter:              now.AddDate(10, 0, 0),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLen:            0,
		MaxPathLenZero:        true,
		CRLDistributionPoints: []string{RootCRLURL},
	}
	if p.PlatformCA, err = issue(platform, p.Root, &p.PlatformCAKey.PublicKey, p.RootKey); err != nil {
		return nil, fmt.Errorf("platform CA: %w", err)
	}
	tcb := &x509.Certificate{
		Subject:               intelName(TCBSigningCN),
		NotBefore:             notBefore,
		NotAfter:              now.AddDate(7, 0, 0),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageContentCommitment,
		BasicConstraintsValid: true,
		CRLDistributionPoints: []string{RootCRLURL},
	}
	if p.TCBSigning, err = issue(tcb, p.Root, &p.TCBSigningKey.PublicKey, p.RootKey); err != nil {
		return nil, fmt.Errorf("TCB signing certificate: %w", err)
	}
	if p.PCK, err = p.IssuePCK(&p.PCKKey.PublicKey, now); err != nil {
		return nil, err
	}
	return p, nil
}

// IssuePCK issues a PCK leaf certificate for pub under the Platform CA, carrying the SGX
// extensions from p's FMSPC, PCEID, CPUSVN, PCESVN and PPID fields, valid from now-1h to now+7y.
// New uses it; a test can change those fields and call it again to model another platform.
//
// Its extensions are exactly the six of a real PCK certificate (go-tdx-guest insists on six):
// authority and subject key identifiers, CRL distribution point (the PCK CRL URL), key usage,
// basic constraints, and the SGX extension.
func (p *PKI) IssuePCK(pub *ecdsa.PublicKey, now time.Time) (*x509.Certificate, error) {
	ext, err := p.sgxExtension()
	if err != nil {
		return nil, err
	}
	leaf := &x509.Certificate{
		Subject:               intelName(PCKCN),
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.AddDate(7, 0, 0),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageContentCommitment,
		BasicConstraintsValid: true,
		CRLDistributionPoints: []string{pcs.PckCrlURL("platform")},
		ExtraExtensions:       []pkix.Extension{ext},
	}
	c, err := issue(leaf, p.PlatformCA, pub, p.PlatformCAKey)
	if err != nil {
		return nil, fmt.Errorf("PCK certificate: %w", err)
	}
	return c, nil
}

// RootsPEM returns the fake Root CA certificate in PEM form: the trust anchor a verifier is
// configured with (what `--roots DIR` reads).
func (p *PKI) RootsPEM() []byte {
	return pemCert(p.Root)
}

// RootPool returns a certificate pool holding only the fake Root CA.
func (p *PKI) RootPool() *x509.CertPool {
	pool := x509.NewCertPool()
	pool.AddCert(p.Root)
	return pool
}

// FMSPCHex is the FMSPC in the lower-case hex form used in PCS URLs and in TCB info.
func (p *PKI) FMSPCHex() string { return hex.EncodeToString(p.FMSPC[:]) }

// intelName is Intel's subject name, with the RDNs in Intel's order (CN, O, L, ST, C); ExtraNames
// keeps that order where pkix.Name's own fields would be reordered.
func intelName(cn string) pkix.Name {
	attr := func(oid asn1.ObjectIdentifier, v string) pkix.AttributeTypeAndValue {
		return pkix.AttributeTypeAndValue{Type: oid, Value: v}
	}
	return pkix.Name{ExtraNames: []pkix.AttributeTypeAndValue{
		attr(asn1.ObjectIdentifier{2, 5, 4, 3}, cn),
		attr(asn1.ObjectIdentifier{2, 5, 4, 10}, "Intel Corporation"),
		attr(asn1.ObjectIdentifier{2, 5, 4, 7}, "Santa Clara"),
		attr(asn1.ObjectIdentifier{2, 5, 4, 8}, "CA"),
		attr(asn1.ObjectIdentifier{2, 5, 4, 6}, "US"),
	}}
}

// issue signs template with the parent's key, after giving it a random serial number and a
// subject key identifier (x509.CreateCertificate only derives one for CAs).
func issue(template, parent *x509.Certificate, pub *ecdsa.PublicKey, parentKey *ecdsa.PrivateKey) (*x509.Certificate, error) {
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 159))
	if err != nil {
		return nil, err
	}
	template.SerialNumber = serial.Add(serial, big.NewInt(1))
	template.SignatureAlgorithm = x509.ECDSAWithSHA256
	if template.SubjectKeyId, err = keyID(pub); err != nil {
		return nil, err
	}
	if template == parent {
		// Self-signed: like Intel's root, name its own key as the authority key.
		template.AuthorityKeyId = template.SubjectKeyId
	}
	der, err := x509.CreateCertificate(rand.Reader, template, parent, pub, parentKey)
	if err != nil {
		return nil, err
	}
	return x509.ParseCertificate(der)
}

// keyID is the RFC 5280 method-1 key identifier: 20 bytes of a hash of the public key.
func keyID(pub *ecdsa.PublicKey) ([]byte, error) {
	b, err := pub.Bytes()
	if err != nil {
		return nil, err
	}
	sum := sha1.Sum(b)
	return sum[:], nil
}

func pemCert(c *x509.Certificate) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})
}

// OIDs of the SGX extension (Intel "SGX PCK Certificate and CRL Profile", section "Intel SGX
// PCK Certificate: SGX Extensions"), under 1.2.840.113741.1.13.1.
var (
	oidSGX                = asn1.ObjectIdentifier{1, 2, 840, 113741, 1, 13, 1}
	oidSGXType            = asn1.ObjectIdentifier{1, 2, 840, 113741, 1, 13, 1, 5}
	oidPlatformInstanceID = asn1.ObjectIdentifier{1, 2, 840, 113741, 1, 13, 1, 6}
	oidConfiguration      = asn1.ObjectIdentifier{1, 2, 840, 113741, 1, 13, 1, 7}
)

// sgxExtension builds the SGX extension exactly as Intel encodes it for a platform-CA PCK:
//
//	SEQUENCE {
//	  SEQUENCE { ppid OID, OCTET STRING (16) }
//	  SEQUENCE { tcb OID, SEQUENCE { SEQUENCE { tcb.1 … tcb.16 OID, INTEGER } ×16,
//	                                 SEQUENCE { pcesvn OID, INTEGER },
//	                                 SEQUENCE { cpusvn OID, OCTET STRING (16) } } }
//	  SEQUENCE { pceid OID, OCTET STRING (2) }
//	  SEQUENCE { fmspc OID, OCTET STRING (6) }
//	  SEQUENCE { sgxType OID, ENUMERATED 1 (scalable) }
//	  SEQUENCE { platformInstanceId OID, OCTET STRING (16) }
//	  SEQUENCE { configuration OID, SEQUENCE { dynamicPlatform, cachedKeys, smtEnabled BOOLEANs } }
//	}
func (p *PKI) sgxExtension() (pkix.Extension, error) {
	type octets struct {
		ID asn1.ObjectIdentifier
		V  []byte
	}
	type integer struct {
		ID asn1.ObjectIdentifier
		V  int
	}
	type enumerated struct {
		ID asn1.ObjectIdentifier
		V  asn1.Enumerated
	}
	type boolean struct {
		ID asn1.ObjectIdentifier
		V  bool
	}
	type sequence struct {
		ID asn1.ObjectIdentifier
		V  []asn1.RawValue
	}
	var err error
	raw := func(v any) asn1.RawValue {
		b, e := asn1.Marshal(v)
		if e != nil && err == nil {
			err = e
		}
		return asn1.RawValue{FullBytes: b}
	}
	var tcb []asn1.RawValue
	for i, svn := range p.CPUSVN {
		tcb = append(tcb, raw(integer{append(append(asn1.ObjectIdentifier{}, pcs.OidTCB...), i+1), int(svn)}))
	}
	tcb = append(tcb, raw(integer{pcs.OidPCESvn, int(p.PCESVN)}), raw(octets{pcs.OidCPUSvn, p.CPUSVN[:]}))
	instance := sha256.Sum256(p.PPID[:])
	config := []asn1.RawValue{
		raw(boolean{append(append(asn1.ObjectIdentifier{}, oidConfiguration...), 1), true}),
		raw(boolean{append(append(asn1.ObjectIdentifier{}, oidConfiguration...), 2), false}),
		raw(boolean{append(append(asn1.ObjectIdentifier{}, oidConfiguration...), 3), true}),
	}
	value, merr := asn1.Marshal([]asn1.RawValue{
		raw(octets{pcs.OidPPID, p.PPID[:]}),
		raw(sequence{pcs.OidTCB, tcb}),
		raw(octets{pcs.OidPCEID, p.PCEID[:]}),
		raw(octets{pcs.OidFMSPC, p.FMSPC[:]}),
		raw(enumerated{oidSGXType, 1}),
		raw(octets{oidPlatformInstanceID, instance[:16]}),
		raw(sequence{oidConfiguration, config}),
	})
	if err == nil {
		err = merr
	}
	if err != nil {
		return pkix.Extension{}, fmt.Errorf("SGX extension: %w", err)
	}
	return pkix.Extension{Id: oidSGX, Value: value}, nil
}
