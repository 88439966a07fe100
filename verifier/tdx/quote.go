package tdx

import (
	"bytes"
	"crypto/x509"
	"encoding/binary"
	"encoding/pem"
	"errors"
	"fmt"

	"github.com/proofline/proofline/verifier/internal/vcache"
)

// This file is a strict parser for Intel TDX quotes, versions 4 and 5, as laid out in the Intel
// TDX DCAP Quote Generation Library and Quote Verification Library API, Appendix "Quote Format"
// (v4: §A.3, v5: §A.4).
//
// It is written by hand rather than taken from go-tdx-guest's abi package because the verifier
// needs what that parser does not give: exact byte ranges of the signed regions (so signatures are
// checked over the bytes received, not a re-encoding), rejection of trailing data and of size
// fields that disagree with the data, and no reachable panic on any input (it is fuzzed).

// ErrMalformed is wrapped by every parse error.
var ErrMalformed = errors.New("malformed TDX quote")

// Quote format constants.
const (
	HeaderSize          = 48
	BodySizeV4          = 584 // TD quote body, TDX 1.0 (v4, and v5 body type 2)
	BodySizeV15         = 648 // TD quote body, TDX 1.5 (v5 body type 3)
	QEReportSize        = 384
	teeTypeTDX          = 0x81
	attestationKeyECDSA = 2 // ECDSA-256-with-P-256
	certDataQEReport    = 6 // QE report certification data
	certDataPCKChain    = 5 // concatenated PEM PCK certificate chain
	maxQuoteSize        = 64 << 10
)

// IntelQEVendorID is the QE vendor ID of Intel's quoting enclave.
var IntelQEVendorID = []byte{0x93, 0x9a, 0x72, 0x33, 0xf7, 0x9c, 0x4c, 0xa9, 0x94, 0x0a, 0x0d, 0xb3, 0x95, 0x7f, 0x06, 0x07}

// Body is the TD quote body (TD report fields signed by the quote).
type Body struct {
	TeeTCBSVN      []byte // 16
	MRSeam         []byte // 48
	MRSignerSeam   []byte // 48
	SeamAttributes []byte // 8
	TDAttributes   []byte // 8
	XFAM           []byte // 8
	MRTD           []byte // 48
	MRConfigID     []byte // 48
	MROwner        []byte // 48
	MROwnerConfig  []byte // 48
	RTMRs          [4][]byte
	ReportData     []byte // 64
	TeeTCBSVN2     []byte // 16, TDX 1.5 only
	MRServiceTD    []byte // 48, TDX 1.5 only
}

// QEReport is the SGX report of the quoting enclave (SGX report body, 384 bytes).
type QEReport struct {
	Raw        []byte
	CPUSVN     []byte
	MiscSelect uint32
	Attributes []byte // 16
	MREnclave  []byte
	MRSigner   []byte
	ISVProdID  uint16
	ISVSVN     uint16
	ReportData []byte // 64
}

// Quote is a parsed TDX quote. All slices alias the input.
type Quote struct {
	Version  int
	BodyType int // 2 = TDX 1.0 body, 3 = TDX 1.5 body (v4 quotes: 2)
	// Header fields.
	PCESVN     uint16
	QESVN      uint16
	QEVendorID []byte
	// Signed is header ‖ body (v4) or header ‖ body descriptor (v5): the bytes the attestation key signs.
	Signed []byte
	Body   Body
	// Signature is the raw r ‖ s of the quote signature; AttestationKey is the raw x ‖ y P-256 key.
	Signature      []byte
	AttestationKey []byte
	QEReport       QEReport
	QESignature    []byte
	QEAuthData     []byte
	// PCKChainPEM is the certification data of type 5; Leaf, Intermediate and Root are parsed from it.
	PCKChainPEM  []byte
	PCK          *x509.Certificate
	Intermediate *x509.Certificate
	Root         *x509.Certificate

	// pckChainKey is PCKChainPEM's key in pckChainCache; pckChainCached is set when the chain
	// came from there.
	pckChainKey    vcache.Key
	pckChainCached bool
}

// reader reads little-endian fields from a byte slice and records the first overrun.
type reader struct {
	b   []byte
	off int
	err error
}

func (r *reader) take(n int, what string) []byte {
	if r.err != nil {
		return nil
	}
	if n < 0 || len(r.b)-r.off < n {
		r.err = fmt.Errorf("%w: truncated in %s (need %d bytes at offset %d, have %d)", ErrMalformed, what, n, r.off, len(r.b)-r.off)
		return nil
	}
	out := r.b[r.off : r.off+n : r.off+n]
	r.off += n
	return out
}

func (r *reader) u16(what string) uint16 {
	b := r.take(2, what)
	if b == nil {
		return 0
	}
	return binary.LittleEndian.Uint16(b)
}

func (r *reader) u32(what string) uint32 {
	b := r.take(4, what)
	if b == nil {
		return 0
	}
	return binary.LittleEndian.Uint32(b)
}

// ParseQuote parses a TDX quote strictly. Trailing bytes after the signature data are tolerated
// only when all zero (the legacy guest device returns the quote in a zero-padded buffer); they are
// never used.
func ParseQuote(raw []byte) (*Quote, error) {
	if len(raw) > maxQuoteSize {
		return nil, fmt.Errorf("%w: %d bytes exceeds the %d-byte limit", ErrMalformed, len(raw), maxQuoteSize)
	}
	q := &Quote{}
	r := &reader{b: raw}

	// Header (48 bytes).
	version := r.u16("header version")
	akType := r.u16("header attestation key type")
	teeType := r.u32("header TEE type")
	q.PCESVN = r.u16("header")
	q.QESVN = r.u16("header")
	q.QEVendorID = r.take(16, "header QE vendor ID")
	r.take(20, "header user data")
	if r.err != nil {
		return nil, r.err
	}
	switch {
	case version != 4 && version != 5:
		return nil, fmt.Errorf("%w: version %d is not supported (want 4 or 5)", ErrMalformed, version)
	case akType != attestationKeyECDSA:
		return nil, fmt.Errorf("%w: attestation key type %d is not ECDSA-256-with-P-256", ErrMalformed, akType)
	case teeType != teeTypeTDX:
		return nil, fmt.Errorf("%w: TEE type 0x%x is not TDX (0x81)", ErrMalformed, teeType)
	}
	q.Version = int(version)

	// Body.
	bodySize := BodySizeV4
	q.BodyType = 2
	if version == 5 {
		q.BodyType = int(r.u16("body descriptor type"))
		size := r.u32("body descriptor size")
		switch {
		case r.err != nil:
			return nil, r.err
		case q.BodyType == 2 && size == BodySizeV4:
		case q.BodyType == 3 && size == BodySizeV15:
			bodySize = BodySizeV15
		default:
			return nil, fmt.Errorf("%w: v5 body type %d with size %d is not a TD report body (want type 2/584 or 3/648)", ErrMalformed, q.BodyType, size)
		}
	}
	body := r.take(bodySize, "TD quote body")
	if r.err != nil {
		return nil, r.err
	}
	q.Signed = raw[:r.off:r.off]
	q.Body = parseBody(body)

	// Signature data.
	sigDataLen := r.u32("signature data length")
	if r.err != nil {
		return nil, r.err
	}
	sigData := r.take(int(min(sigDataLen, uint32(maxQuoteSize))), "signature data")
	if r.err != nil {
		return nil, r.err
	}
	if int64(sigDataLen) != int64(len(sigData)) {
		return nil, fmt.Errorf("%w: signature data length %d exceeds the quote", ErrMalformed, sigDataLen)
	}
	for _, b := range raw[r.off:] {
		if b != 0 {
			return nil, fmt.Errorf("%w: %d trailing bytes after the signature data are not zero padding", ErrMalformed, len(raw)-r.off)
		}
	}
	if err := q.parseSignatureData(sigData); err != nil {
		return nil, err
	}
	return q, nil
}

func parseBody(b []byte) Body {
	r := &reader{b: b}
	var body Body
	body.TeeTCBSVN = r.take(16, "")
	body.MRSeam = r.take(48, "")
	body.MRSignerSeam = r.take(48, "")
	body.SeamAttributes = r.take(8, "")
	body.TDAttributes = r.take(8, "")
	body.XFAM = r.take(8, "")
	body.MRTD = r.take(48, "")
	body.MRConfigID = r.take(48, "")
	body.MROwner = r.take(48, "")
	body.MROwnerConfig = r.take(48, "")
	for i := range body.RTMRs {
		body.RTMRs[i] = r.take(48, "")
	}
	body.ReportData = r.take(64, "")
	if len(b) == BodySizeV15 {
		body.TeeTCBSVN2 = r.take(16, "")
		body.MRServiceTD = r.take(48, "")
	}
	return body
}

// parseSignatureData parses the ECDSA 256-bit quote signature data structure, requiring every
// size field to account for exactly the bytes present.
func (q *Quote) parseSignatureData(b []byte) error {
	r := &reader{b: b}
	q.Signature = r.take(64, "quote signature")
	q.AttestationKey = r.take(64, "attestation key")
	certType := r.u16("certification data type")
	certSize := r.u32("certification data size")
	if r.err != nil {
		return r.err
	}
	if certType != certDataQEReport {
		return fmt.Errorf("%w: outer certification data type %d, want %d (QE report certification data)", ErrMalformed, certType, certDataQEReport)
	}
	if int64(certSize) != int64(len(b)-r.off) {
		return fmt.Errorf("%w: certification data size %d does not match the %d bytes present", ErrMalformed, certSize, len(b)-r.off)
	}

	qeRaw := r.take(QEReportSize, "QE report")
	q.QESignature = r.take(64, "QE report signature")
	authSize := r.u16("QE auth data size")
	q.QEAuthData = r.take(int(authSize), "QE auth data")
	pckType := r.u16("PCK certification data type")
	pckSize := r.u32("PCK certification data size")
	if r.err != nil {
		return r.err
	}
	if pckType != certDataPCKChain {
		return fmt.Errorf("%w: certification data type %d, want %d (PCK certificate chain)", ErrMalformed, pckType, certDataPCKChain)
	}
	if int64(pckSize) != int64(len(b)-r.off) {
		return fmt.Errorf("%w: PCK chain size %d does not match the %d bytes present", ErrMalformed, pckSize, len(b)-r.off)
	}
	q.PCKChainPEM = r.take(int(pckSize), "PCK chain")
	q.QEReport = parseQEReport(qeRaw)
	return q.parsePCKChain()
}

func parseQEReport(b []byte) QEReport {
	r := &reader{b: b}
	rep := QEReport{Raw: b}
	rep.CPUSVN = r.take(16, "")
	rep.MiscSelect = r.u32("")
	r.take(28, "")
	rep.Attributes = r.take(16, "")
	rep.MREnclave = r.take(32, "")
	r.take(32, "")
	rep.MRSigner = r.take(32, "")
	r.take(96, "")
	rep.ISVProdID = r.u16("")
	rep.ISVSVN = r.u16("")
	r.take(60, "")
	rep.ReportData = r.take(64, "")
	return rep
}

// pckChainCache holds parsed PCK chains by the digest of their PEM bytes (the same bytes give
// the same chain, and a platform sends the same chain in every quote), so a quote's
// certificates are parsed once per platform, not once per attestation. Only chains that a
// verification found issued by a pinned root are kept (rememberPCKChain), so a caller cannot
// fill the cache with chains of its own making; the certificates are shared and read-only.
// Verifying the chain is separate (chainCache) and every time-dependent check is made on each
// call.
var pckChainCache = vcache.New[*[3]*x509.Certificate](4096)

// maxCachedPCKChain bounds the PEM chains kept in pckChainCache; Intel's are ~3.7 KiB.
const maxCachedPCKChain = 8 << 10

func pckChainKey(pem []byte) vcache.Key { return vcache.Sum([]byte("tdx/pckchain"), pem) }

// rememberPCKChain keeps q's parsed PCK chain for the next quote with the same chain bytes. The
// caller has verified the chain to root, a pinned root, which must be the chain's own third
// certificate. Only the encoding Intel's chains come in is kept — each certificate as
// pem.EncodeToMemory writes it, then at most one NUL — so that one genuine chain cannot be
// re-encoded (line breaks, padding, headers) into as many cache entries as a caller likes.
func rememberPCKChain(q *Quote, root *x509.Certificate) {
	if q.pckChainCached || len(q.PCKChainPEM) > maxCachedPCKChain || !bytes.Equal(q.Root.Raw, root.Raw) {
		return
	}
	var canonical []byte
	for _, c := range []*x509.Certificate{q.PCK, q.Intermediate, q.Root} {
		canonical = append(canonical, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.Raw})...)
	}
	if got := bytes.TrimSuffix(q.PCKChainPEM, []byte{0}); !bytes.Equal(got, canonical) {
		return
	}
	pckChainCache.Add(q.pckChainKey, &[3]*x509.Certificate{q.PCK, q.Intermediate, q.Root})
}

// parsePCKChain requires exactly three PEM certificates (PCK leaf, intermediate CA, root CA)
// followed by nothing but NUL padding or whitespace.
func (q *Quote) parsePCKChain() error {
	q.pckChainKey = pckChainKey(q.PCKChainPEM)
	if c, ok := pckChainCache.Get(q.pckChainKey); ok {
		q.PCK, q.Intermediate, q.Root = c[0], c[1], c[2]
		q.pckChainCached = true
		return nil
	}
	rest := q.PCKChainPEM
	var certs []*x509.Certificate
	for i := 0; i < 3; i++ {
		// pem.Decode skips any text before a block; the chain must hold nothing but the blocks.
		if !bytes.HasPrefix(bytes.TrimLeft(rest, "\r\n\t "), []byte("-----BEGIN ")) {
			return fmt.Errorf("%w: PCK chain has data that is not a PEM certificate before certificate %d", ErrMalformed, i)
		}
		block, r := pem.Decode(rest)
		if block == nil || block.Type != "CERTIFICATE" {
			return fmt.Errorf("%w: PCK chain holds %d PEM certificates, want 3", ErrMalformed, i)
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return fmt.Errorf("%w: PCK chain certificate %d: %v", ErrMalformed, i, err)
		}
		certs = append(certs, c)
		rest = r
	}
	if len(bytes.Trim(rest, "\x00\r\n\t ")) != 0 {
		return fmt.Errorf("%w: PCK chain has %d unexpected bytes after the third certificate", ErrMalformed, len(rest))
	}
	q.PCK, q.Intermediate, q.Root = certs[0], certs[1], certs[2]
	return nil
}
