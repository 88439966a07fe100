package fakeamd

import (
	"crypto/rand"
	"crypto/x509"
	"encoding/asn1"
	"encoding/hex"
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
// VCEKURL(line, ChipID, TCB). The responses carry no headers.
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
// verifier builds from a report with the certificate's hwID and TCB: VCEKURL(line, hwID, TCB).
// Milan and Genoa certificates are read with go-sev-guest's kds package (a cross-check of their
// shape); Turin ones, which it cannot read, with this package's own reader.
func (p *PKI) VCEKResponse(cert *x509.Certificate) (*collateral.Response, error) {
	if p.ProductLine != "Turin" {
		exts, err := kds.VcekCertificateExtensions(cert)
		if err != nil {
			return nil, fmt.Errorf("fakeamd: VCEK extensions: %w", err)
		}
		return ok(VCEKURL(p.ProductLine, exts.HWID, exts.TCBVersion), cert.Raw), nil
	}
	var t TurinTCBParts
	for _, f := range []struct {
		oid asn1.ObjectIdentifier
		dst *uint8
	}{
		{oidFMCSPL, &t.FmcSpl}, {kds.OidBlSpl, &t.BlSpl}, {kds.OidTeeSpl, &t.TeeSpl},
		{kds.OidSnpSpl, &t.SnpSpl}, {kds.OidUcodeSpl, &t.UcodeSpl},
	} {
		v, found := extension(cert, f.oid)
		var n int
		if rest, err := asn1.Unmarshal(v, &n); !found || err != nil || len(rest) != 0 || n < 0 || n > 255 {
			return nil, fmt.Errorf("fakeamd: Turin VCEK: extension %v is missing or not an INTEGER from 0 to 255", f.oid)
		}
		*f.dst = uint8(n)
	}
	hwID, found := extension(cert, kds.OidHwid)
	if !found || len(hwID) != hwIDSize(p.ProductLine) {
		return nil, fmt.Errorf("fakeamd: Turin VCEK: hwID is missing or not %d bytes", hwIDSize(p.ProductLine))
	}
	return ok(VCEKURL(p.ProductLine, hwID, ComposeTurinTCB(t)), cert.Raw), nil
}

func extension(cert *x509.Certificate, oid asn1.ObjectIdentifier) ([]byte, bool) {
	for _, e := range cert.Extensions {
		if e.Id.Equal(oid) {
			return e.Value, true
		}
	}
	return nil, false
}

// VCEKURL is the AMD KDS URL of the VCEK of a chip at a TCB on a product line: chipID is the
// CHIP_ID (or, on Turin, the 8-byte hwID) and tcb the TCB_VERSION in the line's layout. Milan and
// Genoa: kds.VCEKCertURL, the hex of the 64-byte CHIP_ID and blSPL, teeSPL, snpSPL and ucodeSPL.
// Turin: the hex of CHIP_ID[0:8] and fmcSPL, blSPL, teeSPL, snpSPL and ucodeSPL of the Turin
// layout (KDS spec, "Get VCEK Certificate"; parameter order and decimal form assumed as Milan's,
// fmcSPL first):
//
//	https://kdsintf.amd.com/vcek/v1/Turin/0102030405060708?fmcSPL=1&blSPL=2&teeSPL=3&snpSPL=22&ucodeSPL=213
func VCEKURL(line string, chipID []byte, tcb kds.TCBVersion) string {
	if line != "Turin" {
		return kds.VCEKCertURL(line, chipID, tcb)
	}
	t := DecomposeTurinTCB(tcb)
	return fmt.Sprintf("https://kdsintf.amd.com/vcek/v1/Turin/%s?fmcSPL=%d&blSPL=%d&teeSPL=%d&snpSPL=%d&ucodeSPL=%d",
		hex.EncodeToString(chipID[:min(len(chipID), hwIDSize(line))]), t.FmcSpl, t.BlSpl, t.TeeSpl, t.SnpSpl, t.UcodeSpl)
}

func ok(url string, body []byte) *collateral.Response {
	return &collateral.Response{URL: url, Status: http.StatusOK, Body: body}
}
