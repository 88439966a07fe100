package fakeintel

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"encoding/asn1"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"math/big"
)

// The quote layout follows Intel's "Intel TDX DCAP Quoting Library API" specification, appendix
// "Quote Format", sections "Version 4 Quote Format" and "Version 5 Quote Format" (the latter adds
// the TD Quote Body Descriptor). All integers are little-endian.
//
//	v4: Quote Header (48) ‖ TD Quote Body (584)                              ‖ sig_data_len u32 ‖ sig_data
//	v5: Quote Header (48) ‖ body type u16 ‖ body size u32 ‖ TD Quote Body (584 or 648) ‖ sig_data_len u32 ‖ sig_data
//
// The ECDSA quote signature covers everything before sig_data_len. sig_data is the "ECDSA 256-bit
// Quote Signature Data Structure – Version 4" (also used by v5):
//
//	signature (r‖s, 64) ‖ ECDSA attestation key (x‖y, 64) ‖ Certification Data:
//	  type u16 = 6 (QE Report Certification Data) ‖ size u32 ‖
//	    QE Report (SGX REPORT BODY, 384) ‖ QE Report Signature (64, by the PCK key) ‖
//	    QE Authentication Data: size u16 ‖ data ‖
//	    Certification Data: type u16 = 5 (PCK certificate chain) ‖ size u32 ‖ PEM leaf‖intermediate‖root
//
// QE Report REPORT_DATA = SHA-256(attestation key ‖ QE authentication data) ‖ 32 zero bytes.
const (
	headerSize        = 48
	bodySizeV4        = 584 // TD Quote Body of TDX 1.0 (v4, and v5 body type 2)
	bodySizeV5        = 648 // TD Quote Body of TDX 1.5 (v5 body type 3)
	bodyTypeTDX15     = 3
	qeReportSize      = 384
	signatureSize     = 64
	attestKeySize     = 64
	qeReportCertType  = 6
	pckChainCertType  = 5
	attestKeyTypeP256 = 2
	teeTypeTDX        = 0x81
)

// Offsets inside the TD Quote Body ("TD Quote Body" table of the spec).
const (
	offTeeTcbSvn      = 0
	offMrSeam         = 16
	offMrSignerSeam   = 64
	offSeamAttributes = 112
	offTdAttributes   = 120
	offXfam           = 128
	offMrTd           = 136
	offMrConfigID     = 184
	offMrOwner        = 232
	offMrOwnerConfig  = 280
	offRtmrs          = 328
	offReportData     = 520
	offTeeTcbSvn2     = 584 // TDX 1.5 only
	offMrServiceTd    = 600 // TDX 1.5 only
)

// Offsets inside the QE Report, an SGX REPORT BODY (Intel SDM Vol. 3D "REPORT Structure").
const (
	offQECPUSVN     = 0
	offQEMiscSelect = 16
	offQEAttributes = 48
	offQEMrEnclave  = 64
	offQEMrSigner   = 128
	offQEIsvProdID  = 256
	offQEIsvSvn     = 258
	offQEReportData = 320
)

// IntelQEVendorID is the QE Vendor ID of Intel's quoting enclave, carried in every quote header.
var IntelQEVendorID = [16]byte{0x93, 0x9a, 0x72, 0x33, 0xf7, 0x9c, 0x4c, 0xa9, 0x94, 0x0a, 0x0d, 0xb3, 0x95, 0x7f, 0x06, 0x07}

// Identity of Intel's TD quoting enclave, as in the default quote and the default QE identity.
var (
	// DefaultQEMrSigner is the MRSIGNER of Intel's real TD QE (dc9e2a7c…a8c5).
	DefaultQEMrSigner = mustHex32("dc9e2a7c6f948f17474e34a7fc43ed030f7c1563f1babddf6340c82e0e54a8c5")
	// DefaultQEAttributes are the QE's SGX ATTRIBUTES as in real quotes (INIT|MODE64BIT|PROVISIONKEY, XFRM 0xe7).
	DefaultQEAttributes = [16]byte{0x15, 8: 0xe7}
)

// Default QE product ID and SVN.
const (
	DefaultQEIsvProdID uint16 = 2
	DefaultQEIsvSvn    uint16 = 4
)

// DefaultTeeTcbSvn is the TEE_TCB_SVN of the default quote: TDX module SVN 7 (byte 0), module
// major version 0 (byte 1, so TCB status comes from the tcbLevels, not tdxModuleIdentities) and
// TDX late microcode SVN 3 (byte 2). It maps to the UpToDate level of the default TCB info.
var DefaultTeeTcbSvn = [16]byte{ModuleSVNUpToDate, 0, 3}

// QuoteOptions holds every field of a TDX quote that Quote serialises. Start from
// DefaultQuoteOptions and change what the test needs.
type QuoteOptions struct {
	// Version is the quote format: 4, or 5 (v5 with body descriptor type 3 = TDX 1.5, which adds
	// TeeTcbSvn2 and MrServiceTd).
	Version int
	// UserData is the header's 20-byte user data (Intel's QE puts a platform QE ID in the first 16).
	UserData [20]byte

	// TD Quote Body fields, in layout order.
	TeeTcbSvn      [16]byte
	MrSeam         [48]byte
	MrSignerSeam   [48]byte
	SeamAttributes [8]byte
	TdAttributes   [8]byte
	Xfam           [8]byte
	MrTd           [48]byte
	MrConfigID     [48]byte
	MrOwner        [48]byte
	MrOwnerConfig  [48]byte
	Rtmrs          [4][48]byte
	ReportData     [64]byte
	TeeTcbSvn2     [16]byte // v5 only
	MrServiceTd    [48]byte // v5 only

	// QE Report fields (the quoting enclave's SGX report, signed by the PCK key).
	QECPUSVN     [16]byte
	QEMiscSelect uint32
	QEAttributes [16]byte
	QEMrEnclave  [32]byte
	QEMrSigner   [32]byte
	QEIsvProdID  uint16
	QEIsvSvn     uint16
	// QEAuthData is the QE authentication data, hashed into the QE report data.
	QEAuthData []byte

	// PCKChain replaces the PEM certificate chain in the quote; nil means the PEM encodings of
	// PCK, PlatformCA and Root. (Quotes from Intel's QGS often end the chain with one NUL byte.)
	PCKChain []byte
}

// DefaultQuoteOptions returns the options of a valid, secure version 4 TD quote:
//   - TD_ATTRIBUTES with only SEPT_VE_DISABLE (bit 28) set, so DEBUG (bit 0) is clear;
//   - XFAM e7 1a 06 00 00 00 00 00 (that of Intel's real v4 sample quote);
//   - TEE_TCB_SVN = DefaultTeeTcbSvn (UpToDate), MRSIGNERSEAM zero like Intel's module signer
//     and the default TCB info, SEAMATTRIBUTES zero, MRSEAM 48×0x5e;
//   - MRTD 48×0x7d, RTMR0..3 48×0x10, 0x20, 0x30, 0x40, MRCONFIGID/MROWNER/MROWNERCONFIG zero,
//     REPORT_DATA bytes 0x00…0x3f;
//   - for v5: TEE_TCB_SVN2 = TEE_TCB_SVN and MRSERVICETD zero;
//   - the QE of Intel (DefaultQEMrSigner, product 2, SVN 4, DefaultQEAttributes, MISCSELECT 0),
//     MRENCLAVE 32×0x9e, CPUSVN DefaultCPUSVN, QE auth data bytes 0x00…0x1f.
func DefaultQuoteOptions() QuoteOptions {
	o := QuoteOptions{
		Version:      4,
		TeeTcbSvn:    DefaultTeeTcbSvn,
		TeeTcbSvn2:   DefaultTeeTcbSvn,
		TdAttributes: [8]byte{3: 0x10},
		Xfam:         [8]byte{0xe7, 0x1a, 0x06},
		QECPUSVN:     DefaultCPUSVN,
		QEAttributes: DefaultQEAttributes,
		QEMrSigner:   DefaultQEMrSigner,
		QEIsvProdID:  DefaultQEIsvProdID,
		QEIsvSvn:     DefaultQEIsvSvn,
	}
	copy(o.UserData[:], "fakeintel QE id.")
	fill(o.MrSeam[:], 0x5e)
	fill(o.MrTd[:], 0x7d)
	for i := range o.Rtmrs {
		fill(o.Rtmrs[i][:], byte(0x10*(i+1)))
	}
	for i := range o.ReportData {
		o.ReportData[i] = byte(i)
	}
	fill(o.QEMrEnclave[:], 0x9e)
	o.QEAuthData = make([]byte, 32)
	for i := range o.QEAuthData {
		o.QEAuthData[i] = byte(i)
	}
	return o
}

// Quote serialises a TDX quote from o and signs it: a fresh P-256 attestation key is generated,
// the QE report data binds it (with the QE auth data), the QE report is signed with PCKKey and
// the header and body with the attestation key.
func (p *PKI) Quote(o QuoteOptions) ([]byte, error) {
	var q []byte
	q = binary.LittleEndian.AppendUint16(q, uint16(o.Version))
	q = binary.LittleEndian.AppendUint16(q, attestKeyTypeP256)
	q = binary.LittleEndian.AppendUint32(q, teeTypeTDX)
	q = append(q, 0, 0, 0, 0) // two reserved u16 (QE SVN and PCE SVN in SGX quotes)
	q = append(q, IntelQEVendorID[:]...)
	q = append(q, o.UserData[:]...)

	bodySize := bodySizeV4
	switch o.Version {
	case 4:
	case 5:
		bodySize = bodySizeV5
		q = binary.LittleEndian.AppendUint16(q, bodyTypeTDX15)
		q = binary.LittleEndian.AppendUint32(q, uint32(bodySize))
	default:
		return nil, fmt.Errorf("fakeintel: quote version %d, want 4 or 5", o.Version)
	}
	body := make([]byte, bodySize)
	copy(body[offTeeTcbSvn:], o.TeeTcbSvn[:])
	copy(body[offMrSeam:], o.MrSeam[:])
	copy(body[offMrSignerSeam:], o.MrSignerSeam[:])
	copy(body[offSeamAttributes:], o.SeamAttributes[:])
	copy(body[offTdAttributes:], o.TdAttributes[:])
	copy(body[offXfam:], o.Xfam[:])
	copy(body[offMrTd:], o.MrTd[:])
	copy(body[offMrConfigID:], o.MrConfigID[:])
	copy(body[offMrOwner:], o.MrOwner[:])
	copy(body[offMrOwnerConfig:], o.MrOwnerConfig[:])
	for i, r := range o.Rtmrs {
		copy(body[offRtmrs+48*i:], r[:])
	}
	copy(body[offReportData:], o.ReportData[:])
	if o.Version == 5 {
		copy(body[offTeeTcbSvn2:], o.TeeTcbSvn2[:])
		copy(body[offMrServiceTd:], o.MrServiceTd[:])
	}
	q = append(q, body...)

	qeReport := make([]byte, qeReportSize)
	copy(qeReport[offQECPUSVN:], o.QECPUSVN[:])
	binary.LittleEndian.PutUint32(qeReport[offQEMiscSelect:], o.QEMiscSelect)
	copy(qeReport[offQEAttributes:], o.QEAttributes[:])
	copy(qeReport[offQEMrEnclave:], o.QEMrEnclave[:])
	copy(qeReport[offQEMrSigner:], o.QEMrSigner[:])
	binary.LittleEndian.PutUint16(qeReport[offQEIsvProdID:], o.QEIsvProdID)
	binary.LittleEndian.PutUint16(qeReport[offQEIsvSvn:], o.QEIsvSvn)

	chain := o.PCKChain
	if chain == nil {
		chain = append(append(pemCert(p.PCK), pemCert(p.PlatformCA)...), pemCert(p.Root)...)
	}
	var qeCert []byte // QE Report Certification Data
	qeCert = append(qeCert, qeReport...)
	qeCert = append(qeCert, make([]byte, signatureSize)...)
	qeCert = binary.LittleEndian.AppendUint16(qeCert, uint16(len(o.QEAuthData)))
	qeCert = append(qeCert, o.QEAuthData...)
	qeCert = binary.LittleEndian.AppendUint16(qeCert, pckChainCertType)
	qeCert = binary.LittleEndian.AppendUint32(qeCert, uint32(len(chain)))
	qeCert = append(qeCert, chain...)

	var sig []byte // signature data, signed below
	sig = append(sig, make([]byte, signatureSize+attestKeySize)...)
	sig = binary.LittleEndian.AppendUint16(sig, qeReportCertType)
	sig = binary.LittleEndian.AppendUint32(sig, uint32(len(qeCert)))
	sig = append(sig, qeCert...)

	q = binary.LittleEndian.AppendUint32(q, uint32(len(sig)))
	q = append(q, sig...)
	return p.Resign(q, ResignOptions{})
}

// Layout gives the byte offsets of the parts of a serialised quote, for tests that mutate bytes.
// Offsets are from the start of the quote.
type Layout struct {
	// Version is the quote version from the header (4 or 5).
	Version int
	// BodyOffset and BodyLen locate the TD Quote Body (for v5, after the 6-byte body descriptor).
	BodyOffset, BodyLen int
	// ReportDataOffset locates the TD's 64-byte REPORT_DATA.
	ReportDataOffset int
	// SignedLen: the quote signature covers bytes [0, SignedLen).
	SignedLen int
	// SignatureOffset (64 bytes r‖s) and AttestationKeyOffset (64 bytes x‖y).
	SignatureOffset, AttestationKeyOffset int
	// QEReportOffset (384 bytes), QEReportDataOffset (its 64-byte REPORT_DATA) and
	// QEReportSignatureOffset (64 bytes r‖s).
	QEReportOffset, QEReportDataOffset, QEReportSignatureOffset int
	// QEAuthDataOffset and QEAuthDataLen locate the QE authentication data.
	QEAuthDataOffset, QEAuthDataLen int
	// PCKChainOffset and PCKChainLen locate the PEM PCK certificate chain.
	PCKChainOffset, PCKChainLen int
}

// ParseLayout locates the parts of a v4 or v5 quote by their length fields. It checks only that
// the lengths fit; it does not check types, sizes or signatures, so it accepts broken quotes.
func ParseLayout(q []byte) (Layout, error) {
	var l Layout
	if len(q) < headerSize+6 {
		return l, errors.New("fakeintel: quote too short")
	}
	l.Version = int(binary.LittleEndian.Uint16(q))
	switch l.Version {
	case 4:
		l.BodyOffset, l.BodyLen = headerSize, bodySizeV4
	case 5:
		l.BodyOffset, l.BodyLen = headerSize+6, int(binary.LittleEndian.Uint32(q[headerSize+2:]))
	default:
		return l, fmt.Errorf("fakeintel: quote version %d, want 4 or 5", l.Version)
	}
	l.ReportDataOffset = l.BodyOffset + offReportData
	l.SignedLen = l.BodyOffset + l.BodyLen
	// read returns the little-endian integer of size n at off, or -1 past the end.
	read := func(off, n int) int {
		if off < 0 || off+n > len(q) || off+n < off {
			return -1
		}
		if n == 2 {
			return int(binary.LittleEndian.Uint16(q[off:]))
		}
		return int(binary.LittleEndian.Uint32(q[off:]))
	}
	sigLen := read(l.SignedLen, 4)
	sigData := l.SignedLen + 4
	if sigLen < 0 || sigData+sigLen > len(q) {
		return l, errors.New("fakeintel: signature data length past the end of the quote")
	}
	end := sigData + sigLen
	l.SignatureOffset = sigData
	l.AttestationKeyOffset = sigData + signatureSize
	l.QEReportOffset = l.AttestationKeyOffset + attestKeySize + 6 // after certification data type and size
	l.QEReportDataOffset = l.QEReportOffset + offQEReportData
	l.QEReportSignatureOffset = l.QEReportOffset + qeReportSize
	authSize := l.QEReportSignatureOffset + signatureSize
	l.QEAuthDataLen = read(authSize, 2)
	l.QEAuthDataOffset = authSize + 2
	chainHeader := l.QEAuthDataOffset + l.QEAuthDataLen
	l.PCKChainLen = read(chainHeader+2, 4)
	l.PCKChainOffset = chainHeader + 6
	if l.QEAuthDataLen < 0 || l.PCKChainLen < 0 || l.PCKChainOffset+l.PCKChainLen > end {
		return l, errors.New("fakeintel: QE certification data past the end of the signature data")
	}
	return l, nil
}

// ResignOptions adjusts Resign for negative tests.
type ResignOptions struct {
	// KeepQEReportData leaves the QE report's REPORT_DATA as it is instead of binding the new
	// attestation key, to build a quote whose QE report does not vouch for its key.
	KeepQEReportData bool
	// QEReportKey signs the QE report instead of PCKKey.
	QEReportKey *ecdsa.PrivateKey
}

// ResignQuote makes an already-serialised (typically mutated) quote valid again: a fresh
// attestation key, the QE report data binding it, the QE report signature by PCKKey and the
// quote signature over the header and body. The input is not modified.
func (p *PKI) ResignQuote(quote []byte) ([]byte, error) {
	return p.Resign(quote, ResignOptions{})
}

// Resign is ResignQuote with options.
func (p *PKI) Resign(quote []byte, o ResignOptions) ([]byte, error) {
	l, err := ParseLayout(quote)
	if err != nil {
		return nil, err
	}
	q := append([]byte(nil), quote...)
	attestKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	pub, err := attestKey.PublicKey.Bytes() // 0x04 ‖ x ‖ y
	if err != nil {
		return nil, err
	}
	copy(q[l.AttestationKeyOffset:], pub[1:])
	if !o.KeepQEReportData {
		h := sha256.New()
		h.Write(q[l.AttestationKeyOffset : l.AttestationKeyOffset+attestKeySize])
		h.Write(q[l.QEAuthDataOffset : l.QEAuthDataOffset+l.QEAuthDataLen])
		reportData := q[l.QEReportDataOffset : l.QEReportDataOffset+64]
		clear(reportData)
		copy(reportData, h.Sum(nil))
	}
	qeKey := o.QEReportKey
	if qeKey == nil {
		qeKey = p.PCKKey
	}
	qeSig, err := signRaw(qeKey, q[l.QEReportOffset:l.QEReportOffset+qeReportSize])
	if err != nil {
		return nil, err
	}
	copy(q[l.QEReportSignatureOffset:], qeSig)
	quoteSig, err := signRaw(attestKey, q[:l.SignedLen])
	if err != nil {
		return nil, err
	}
	copy(q[l.SignatureOffset:], quoteSig)
	return q, nil
}

// signRaw signs SHA-256(msg) and returns the signature in Intel's raw form: r ‖ s, 32 bytes each.
func signRaw(key *ecdsa.PrivateKey, msg []byte) ([]byte, error) {
	digest := sha256.Sum256(msg)
	der, err := ecdsa.SignASN1(rand.Reader, key, digest[:])
	if err != nil {
		return nil, err
	}
	var rs struct{ R, S *big.Int }
	if _, err := asn1.Unmarshal(der, &rs); err != nil {
		return nil, err
	}
	out := make([]byte, 64)
	rs.R.FillBytes(out[:32])
	rs.S.FillBytes(out[32:])
	return out, nil
}

func fill(b []byte, v byte) {
	for i := range b {
		b[i] = v
	}
}

func mustHex32(s string) [32]byte {
	var out [32]byte
	if n, err := hex.Decode(out[:], []byte(s)); err != nil || n != 32 {
		panic("fakeintel: bad 32-byte hex constant " + s)
	}
	return out
}
