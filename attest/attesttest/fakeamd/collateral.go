package fakeamd

import (
	"crypto/rand"
	"crypto/x509"
	"fmt"
	"math/big"
	"net/http"
	"time"

	"github.com/google/go-sev-guest/abi"
	"github.com/google/go-sev-guest/kds"
	"github.com/proofline/proofline/verifier/collateral"
)

// CRLOptions shapes the two CRLs of a product line: the VCEK one
// (kds.CrlLinkByKey(line, abi.VcekReportSigner), the distribution point of the ARK and ASK) and
// the VLEK one (kds.CrlLinkByKey(line, abi.VlekReportSigner), the ASVK's). The zero value is a
// fresh CRL revoking nothing.
type CRLOptions struct {
	// ThisUpdate defaults to the PKI's Now minus one hour.
	ThisUpdate time.Time
	// NextUpdate defaults to the PKI's Now plus seven days.
	NextUpdate time.Time
	// Revoked are serial numbers listed by the VCEK CRL, e.g. PKI.ASK.SerialNumber or
	// PKI.VCEK.SerialNumber (0).
	Revoked []*big.Int
	// RevokedVLEK are serial numbers listed by the VLEK CRL, e.g. PKI.ASVK.SerialNumber.
	RevokedVLEK []*big.Int
	// CorruptSignature flips a bit of each CRL's signature: the DER still parses, the ARK's
	// signature no longer verifies.
	CorruptSignature bool
}

// CRL returns the DER CRL that AMD's KDS serves at kds.CrlLinkByKey(p.ProductLine, key). Like
// AMD's, it is issued and signed by the ARK with RSASSA-PSS, SHA-384, MGF1-SHA-384 and a 48-byte
// salt, the algorithm go-sev-guest's verify (x509.RevocationList.CheckSignatureFrom with the ARK)
// accepts. Revoked entries carry ThisUpdate as their revocation time.
func (p *PKI) CRL(key abi.ReportSigner, o CRLOptions) ([]byte, error) {
	thisUpdate, nextUpdate := o.ThisUpdate, o.NextUpdate
	if thisUpdate.IsZero() {
		thisUpdate = p.Now.Add(-time.Hour)
	}
	if nextUpdate.IsZero() {
		nextUpdate = p.Now.Add(7 * 24 * time.Hour)
	}
	serials := o.Revoked
	if key == abi.VlekReportSigner {
		serials = o.RevokedVLEK
	}
	tmpl := &x509.RevocationList{
		SignatureAlgorithm: x509.SHA384WithRSAPSS,
		Number:             big.NewInt(thisUpdate.Unix()),
		ThisUpdate:         thisUpdate,
		NextUpdate:         nextUpdate,
	}
	for _, sn := range serials {
		tmpl.RevokedCertificateEntries = append(tmpl.RevokedCertificateEntries,
			x509.RevocationListEntry{SerialNumber: sn, RevocationTime: thisUpdate})
	}
	der, err := x509.CreateRevocationList(rand.Reader, tmpl, p.ARK, p.Keys.ARK)
	if err != nil {
		return nil, fmt.Errorf("fakeamd: CRL: %w", err)
	}
	if o.CorruptSignature {
		// The signature BIT STRING ends the CRL.
		der[len(der)-1] ^= 0x01
	}
	return der, nil
}

// Collateral returns the recorded KDS responses (status 200) a verifier needs for this PKI: both
// CRLs, both cert_chain bodies (kds.ProductCertChainURL) and the default VCEK at
// kds.VCEKCertURL(line, ChipID, TCB). The responses carry no headers.
func (p *PKI) Collateral(o CRLOptions) ([]*collateral.Response, error) {
	var out []*collateral.Response
	for _, key := range []abi.ReportSigner{abi.VcekReportSigner, abi.VlekReportSigner} {
		crl, err := p.CRL(key, o)
		if err != nil {
			return nil, err
		}
		out = append(out,
			ok(kds.CrlLinkByKey(p.ProductLine, key), crl),
			ok(kds.ProductCertChainURL(key, p.ProductLine), p.CertChainPEM(key)))
	}
	vcek, err := p.VCEKResponse(p.VCEK)
	if err != nil {
		return nil, err
	}
	return append(out, vcek), nil
}

// VCEKResponse returns the KDS response serving cert (e.g. one from NewVCEK) at the URL a
// verifier builds from a report with the certificate's hwID and TCB:
// kds.VCEKCertURL(line, hwID, TCB).
func (p *PKI) VCEKResponse(cert *x509.Certificate) (*collateral.Response, error) {
	exts, err := kds.VcekCertificateExtensions(cert)
	if err != nil {
		return nil, fmt.Errorf("fakeamd: VCEK extensions: %w", err)
	}
	return ok(kds.VCEKCertURL(p.ProductLine, exts.HWID, exts.TCBVersion), cert.Raw), nil
}

func ok(url string, body []byte) *collateral.Response {
	return &collateral.Response{URL: url, Status: http.StatusOK, Body: body}
}
