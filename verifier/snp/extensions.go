package snp

import (
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/hex"
	"errors"
	"fmt"

	"github.com/google/go-sev-guest/abi"
	"github.com/google/go-sev-guest/kds"
)

// ErrExtensions is wrapped by every error of ParseCertExtensions.
var ErrExtensions = errors.New("malformed AMD KDS certificate extensions")

// The AMD KDS extensions of a VCEK or VLEK certificate (AMD doc 57230, "Versioned Chip
// Endorsement Key (VCEK) Certificate and KDS Interface Specification", tables "VCEK Certificate
// Extensions" and "VLEK Certificate Extensions"). All live under AMD's enterprise arc
// 1.3.6.1.4.1.3704.
var (
	oidAMD           = asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 3704}
	oidStructVersion = kds.OidStructVersion                                   // .1.1   INTEGER
	oidProductName   = kds.OidProductName1                                    // .1.2   IA5String
	oidBlSPL         = kds.OidBlSpl                                           // .1.3.1 INTEGER
	oidTeeSPL        = kds.OidTeeSpl                                          // .1.3.2 INTEGER
	oidSNPSPL        = kds.OidSnpSpl                                          // .1.3.3 INTEGER
	oidSpl4          = kds.OidSpl4                                            // .1.3.4 INTEGER, reserved
	oidSpl5          = kds.OidSpl5                                            // .1.3.5 INTEGER, reserved
	oidSpl6          = kds.OidSpl6                                            // .1.3.6 INTEGER, reserved
	oidSpl7          = kds.OidSpl7                                            // .1.3.7 INTEGER, reserved
	oidUcodeSPL      = kds.OidUcodeSpl                                        // .1.3.8 INTEGER
	oidFMCSPL        = asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 3704, 1, 3, 9} // .1.3.9 INTEGER, Turin and later
	oidHWID          = kds.OidHwid                                            // .1.4   OCTET STRING, VCEK only
	oidCSPID         = kds.OidCspID                                           // .1.5   IA5String, VLEK only
)

// hwIDSize is the size of a VCEK's hwID extension per product line. Milan and Genoa VCEKs certify
// the whole 64-byte CHIP_ID; Turin VCEKs certify only its first 8 bytes (the Turin KDS VCEK URL
// carries 8 bytes, and AMD's and VirTEE's Turin tooling compare hwID with CHIP_ID[0:8]).
func hwIDSize(line string) int {
	if line == "Turin" {
		return 8
	}
	return abi.ChipIDSize
}

// CertExtensions are the AMD KDS extensions of a VCEK or VLEK certificate.
type CertExtensions struct {
	// StructVersion is the structVersion extension: 0 on AMD's Milan and Genoa certificates; 1 is
	// also accepted (see ParseCertExtensions).
	StructVersion uint8
	// ProductName is the productName extension, e.g. "Milan-B0" (a VLEK's may omit the stepping).
	ProductName string
	// The security patch levels the certificate is issued for. Spl4–Spl7 are reserved; on Milan
	// and Genoa they are TCB_VERSION bytes 2–5.
	BlSPL, TeeSPL, SNPSPL, UcodeSPL uint8
	Spl4, Spl5, Spl6, Spl7          uint8
	// FMCSPL is the fmcSPL extension, which Turin certificates carry and Milan and Genoa ones do
	// not (HasFMCSPL).
	FMCSPL    uint8
	HasFMCSPL bool
	// HWID is a VCEK's hwID: the 64-byte CHIP_ID on Milan and Genoa, CHIP_ID[0:8] on Turin. Nil
	// for a VLEK.
	HWID []byte
	// CSPID is a VLEK's cspID, the cloud service provider it was issued to. Empty for a VCEK.
	CSPID string
}

// TCB returns the certified TCB components, for comparison with a TCB_VERSION decomposed by
// DecomposeTCB. FMC is zero for Milan and Genoa certificates, as DecomposeTCB's.
func (e *CertExtensions) TCB() TCB {
	return TCB{FMC: e.FMCSPL, Bootloader: e.BlSPL, TEE: e.TeeSPL, SNP: e.SNPSPL, Microcode: e.UcodeSPL}
}

// ParseCertExtensions reads the AMD KDS extensions of a VCEK (key abi.VcekReportSigner) or VLEK
// (abi.VlekReportSigner) certificate of a product line ("Milan", "Genoa" or "Turin"). It is
// strict; every error wraps ErrExtensions:
//
//   - every extension under AMD's arc 1.3.6.1.4.1.3704 must be one of the above, at most once;
//     extensions outside the arc are crypto/x509's business (it rejects duplicates and Verify
//     rejects unhandled critical ones) and are ignored here;
//   - INTEGER extensions are a single DER INTEGER from 0 to 255, IA5String ones a single non-empty
//     DER IA5String (tag 0x16, not any string type), with no trailing bytes;
//   - structVersion is 0 or 1. AMD's Milan and Genoa certificates carry 0. Assumption: Turin
//     certificates may carry 1 (the KDS revision that added fmcSPL); no other value is known;
//   - structVersion, productName, blSPL, teeSPL, snpSPL and ucodeSPL are required. spl4–spl7 are
//     required on Milan and Genoa (AMD's certificates carry them). Assumption: on Turin they are
//     optional (reserved, and whether KDS still issues them for Turin is not known here) and, when
//     present, must still be valid INTEGERs;
//   - fmcSPL is required on Turin and forbidden on Milan and Genoa, whose TCB_VERSION has no FMC;
//   - a VCEK has hwID and no cspID, a VLEK cspID and no hwID;
//   - hwID is 64 bytes on Milan and Genoa and 8 on Turin. AMD issues it as the bare bytes, without
//     an OCTET STRING header (as go-sev-guest notes); a DER OCTET STRING of the right size is
//     accepted too. A value whose total length is the hwID size is always taken as bare bytes.
//
// The product name is returned but not checked against the product line: parts sold under other
// names (e.g. Siena) are served from a product line's endpoints.
func ParseCertExtensions(exts []pkix.Extension, key abi.ReportSigner, line string) (*CertExtensions, error) {
	if key != abi.VcekReportSigner && key != abi.VlekReportSigner {
		return nil, fmt.Errorf("%w: a %v certificate has no KDS extensions to read", ErrExtensions, key)
	}
	turin := line == "Turin"
	if !turin && line != "Milan" && line != "Genoa" {
		return nil, fmt.Errorf("%w: unknown product line %q", ErrExtensions, line)
	}
	byOID := map[string][]byte{}
	for _, e := range exts {
		if !isUnder(e.Id, oidAMD) {
			continue
		}
		if !knownOID(e.Id) {
			return nil, fmt.Errorf("%w: unknown AMD extension %v", ErrExtensions, e.Id)
		}
		k := e.Id.String()
		if _, dup := byOID[k]; dup {
			return nil, fmt.Errorf("%w: extension %v appears twice", ErrExtensions, e.Id)
		}
		byOID[k] = e.Value
	}
	get := func(oid asn1.ObjectIdentifier) ([]byte, bool) {
		v, ok := byOID[oid.String()]
		return v, ok
	}

	var out CertExtensions
	var err error
	for _, f := range []struct {
		name     string
		oid      asn1.ObjectIdentifier
		dst      *uint8
		required bool
	}{
		{"structVersion", oidStructVersion, &out.StructVersion, true},
		{"blSPL", oidBlSPL, &out.BlSPL, true},
		{"teeSPL", oidTeeSPL, &out.TeeSPL, true},
		{"snpSPL", oidSNPSPL, &out.SNPSPL, true},
		{"spl4", oidSpl4, &out.Spl4, !turin},
		{"spl5", oidSpl5, &out.Spl5, !turin},
		{"spl6", oidSpl6, &out.Spl6, !turin},
		{"spl7", oidSpl7, &out.Spl7, !turin},
		{"ucodeSPL", oidUcodeSPL, &out.UcodeSPL, true},
		{"fmcSPL", oidFMCSPL, &out.FMCSPL, turin},
	} {
		v, ok := get(f.oid)
		if !ok {
			if f.required {
				return nil, fmt.Errorf("%w: the %s extension is missing", ErrExtensions, f.name)
			}
			continue
		}
		if *f.dst, err = derUint8(v); err != nil {
			return nil, fmt.Errorf("%w: %s: %v", ErrExtensions, f.name, err)
		}
	}
	if out.StructVersion > 1 {
		return nil, fmt.Errorf("%w: structVersion %d is not known (want 0 or 1)", ErrExtensions, out.StructVersion)
	}
	_, out.HasFMCSPL = get(oidFMCSPL)
	if out.HasFMCSPL && !turin {
		return nil, fmt.Errorf("%w: a %s certificate carries fmcSPL, which only Turin and later have", ErrExtensions, line)
	}
	v, ok := get(oidProductName)
	if !ok {
		return nil, fmt.Errorf("%w: the productName extension is missing", ErrExtensions)
	}
	if out.ProductName, err = derIA5String(v); err != nil {
		return nil, fmt.Errorf("%w: productName: %v", ErrExtensions, err)
	}

	hwID, hasHWID := get(oidHWID)
	cspID, hasCSPID := get(oidCSPID)
	switch key {
	case abi.VcekReportSigner:
		if hasCSPID {
			return nil, fmt.Errorf("%w: a VCEK certificate carries cspID, which only VLEKs have", ErrExtensions)
		}
		if !hasHWID {
			return nil, fmt.Errorf("%w: the VCEK certificate has no hwID extension", ErrExtensions)
		}
		if out.HWID, err = hwIDBytes(hwID, hwIDSize(line)); err != nil {
			return nil, fmt.Errorf("%w: hwID of a %s VCEK: %v", ErrExtensions, line, err)
		}
	case abi.VlekReportSigner:
		if hasHWID {
			return nil, fmt.Errorf("%w: a VLEK certificate carries hwID (%s), which only VCEKs have", ErrExtensions, hex.EncodeToString(hwID))
		}
		if !hasCSPID {
			return nil, fmt.Errorf("%w: the VLEK certificate has no cspID extension", ErrExtensions)
		}
		if out.CSPID, err = derIA5String(cspID); err != nil {
			return nil, fmt.Errorf("%w: cspID: %v", ErrExtensions, err)
		}
	}
	return &out, nil
}

var knownOIDs = []asn1.ObjectIdentifier{
	oidStructVersion, oidProductName, oidBlSPL, oidTeeSPL, oidSNPSPL, oidSpl4, oidSpl5, oidSpl6,
	oidSpl7, oidUcodeSPL, oidFMCSPL, oidHWID, oidCSPID,
}

func knownOID(id asn1.ObjectIdentifier) bool {
	for _, k := range knownOIDs {
		if id.Equal(k) {
			return true
		}
	}
	return false
}

func isUnder(id, arc asn1.ObjectIdentifier) bool {
	return len(id) > len(arc) && id[:len(arc)].Equal(arc)
}

// derUint8 reads a value that must be exactly one DER INTEGER from 0 to 255.
func derUint8(v []byte) (uint8, error) {
	if len(v) == 0 || v[0] != asn1.TagInteger {
		return 0, errors.New("not an ASN.1 INTEGER")
	}
	var n int64
	rest, err := asn1.Unmarshal(v, &n)
	if err != nil {
		return 0, fmt.Errorf("not a DER INTEGER: %v", err)
	}
	if len(rest) != 0 {
		return 0, fmt.Errorf("%d bytes after the INTEGER", len(rest))
	}
	if n < 0 || n > 255 {
		return 0, fmt.Errorf("%d is not a security patch level from 0 to 255", n)
	}
	return uint8(n), nil
}

// derIA5String reads a value that must be exactly one non-empty DER IA5String.
func derIA5String(v []byte) (string, error) {
	// encoding/asn1 accepts other string types where an IA5String is asked for: check the tag.
	if len(v) == 0 || v[0] != asn1.TagIA5String {
		return "", errors.New("not an ASN.1 IA5String")
	}
	var s string
	rest, err := asn1.UnmarshalWithParams(v, &s, "ia5")
	if err != nil {
		return "", fmt.Errorf("not a DER IA5String: %v", err)
	}
	if len(rest) != 0 {
		return "", fmt.Errorf("%d bytes after the IA5String", len(rest))
	}
	if s == "" {
		return "", errors.New("empty IA5String")
	}
	return s, nil
}

// hwIDBytes reads a hwID of size bytes: the bare bytes as AMD issues them, or a DER OCTET STRING.
func hwIDBytes(v []byte, size int) ([]byte, error) {
	if len(v) == size {
		return v, nil
	}
	if len(v) == 0 || v[0] != asn1.TagOctetString {
		return nil, fmt.Errorf("%d bytes, want %d bare bytes or an OCTET STRING of %d", len(v), size, size)
	}
	var b []byte
	rest, err := asn1.Unmarshal(v, &b)
	if err != nil {
		return nil, fmt.Errorf("not a DER OCTET STRING: %v", err)
	}
	if len(rest) != 0 {
		return nil, fmt.Errorf("%d bytes after the OCTET STRING", len(rest))
	}
	if len(b) != size {
		return nil, fmt.Errorf("an OCTET STRING of %d bytes, want %d", len(b), size)
	}
	return b, nil
}
