package tpm

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// TPMS_ATTEST and TPMT_SIGNATURE are parsed by hand rather than with go-tpm's reflective
// unmarshaller, because the verifier needs what that decoder does not promise:
//   - strictness: every size is checked against the bound the specification gives the field,
//     and trailing bytes are an error, so one TPMS_ATTEST encoding has exactly one meaning (an
//     ECDSA signature over it still has the usual equivalent forms, s and n−s: a TPM does not
//     normalise s, so both must verify);
//   - bounded work: the PCR selection count is checked against HASH_COUNT before any entry is
//     read, so a structure announcing thousands of entries costs O(1) and allocates nothing;
//   - errors that name the field and offset that broke, mapped to stable failure codes.
// The AK's TPMT_PUBLIC, whose unions are many, is decoded with go-tpm and then re-encoded and
// compared byte for byte (see ak.go), which gives the same strictness.

// Constants of TPM 2.0 Library Part 2 ("Structures"),
// https://trustedcomputinggroup.org/resource/tpm-library-specification/.
const (
	// generatedValue is TPM_GENERATED_VALUE (Part 2 §6.2): the first four bytes of every
	// structure a TPM signs with a restricted key, and of nothing else it signs.
	generatedValue uint32 = 0xff544347
	// stAttestQuote is TPM_ST_ATTEST_QUOTE (Part 2 §6.9).
	stAttestQuote uint16 = 0x8018

	// maxNameSize is sizeof(TPMU_NAME) = sizeof(TPMT_HA) = 2 + 64 (Part 2 §10.5.2, §10.3.2).
	maxNameSize = 66
	// maxDataSize is sizeof(TPMT_HA), the bound of TPM2B_DATA (Part 2 §10.4.3).
	maxDataSize = 66
	// maxDigestSize is sizeof(TPMU_HA), the bound of TPM2B_DIGEST (Part 2 §10.4.2), with SHA-512
	// the largest hash.
	maxDigestSize = 64
	// maxPCRSelections bounds TPML_PCR_SELECTION.count. The specification bounds it by HASH_COUNT,
	// the number of hash algorithms the TPM implements (Part 2 §10.9.7); 16 is above every
	// implementation's and far below what would cost anything.
	maxPCRSelections = 16
	// pcrSelectMin and pcrSelectMax bound TPMS_PCR_SELECTION.sizeofSelect: PCR_SELECT_MIN is 3
	// (24 PCRs, PC Client Platform TPM Profile) and a TPM with up to 32 PCRs uses 4.
	pcrSelectMin = 3
	pcrSelectMax = 4
	// maxPCR is the highest PCR index of a PC Client TPM.
	maxPCR = 23
	// clockInfoSize is sizeof(TPMS_CLOCK_INFO): clock u64, resetCount u32, restartCount u32,
	// safe u8 (Part 2 §10.11.1).
	clockInfoSize = 17
	// maxECCParameter bounds TPM2B_ECC_PARAMETER for the curves accepted (P-384: 48 bytes).
	maxECCParameter = 48
	// maxRSASignature bounds TPM2B_PUBLIC_KEY_RSA for the key sizes accepted (4096 bits).
	maxRSASignature = 512
)

// ErrMalformed is wrapped by every parse error of this package.
var ErrMalformed = errors.New("malformed TPM structure")

// ErrNotQuote is wrapped by ParseAttest when TPMS_ATTEST.type is not TPM_ST_ATTEST_QUOTE; the
// header fields of the returned Attest are then set and the rest is not parsed.
var ErrNotQuote = errors.New("TPMS_ATTEST is not a quote")

// ParseError says which field of which structure broke, and where.
type ParseError struct {
	// Struct is the TPM structure, e.g. "TPMS_ATTEST".
	Struct string
	// Field is the path of the field within it, e.g. "attested.pcrSelect.count".
	Field string
	// Offset is the byte offset of the field in the input.
	Offset int
	// Msg says what is wrong.
	Msg string
	// Err is ErrMalformed or ErrNotQuote.
	Err error
}

func (e *ParseError) Error() string {
	return fmt.Sprintf("%s.%s at offset %d: %s", e.Struct, e.Field, e.Offset, e.Msg)
}

// Unwrap returns ErrMalformed or ErrNotQuote.
func (e *ParseError) Unwrap() error { return e.Err }

// reader reads big-endian TPM fields and remembers the first error.
type reader struct {
	name string
	b    []byte
	off  int
	err  *ParseError
}

func (r *reader) fail(field, format string, args ...any) {
	if r.err == nil {
		r.err = &ParseError{Struct: r.name, Field: field, Offset: r.off, Msg: fmt.Sprintf(format, args...), Err: ErrMalformed}
	}
}

func (r *reader) take(field string, n int) []byte {
	if r.err != nil {
		return nil
	}
	if n > len(r.b)-r.off {
		r.fail(field, "needs %d bytes, %d left", n, len(r.b)-r.off)
		return nil
	}
	out := r.b[r.off : r.off+n]
	r.off += n
	return out
}

func (r *reader) u8(field string) uint8 {
	if b := r.take(field, 1); b != nil {
		return b[0]
	}
	return 0
}

func (r *reader) u16(field string) uint16 {
	if b := r.take(field, 2); b != nil {
		return binary.BigEndian.Uint16(b)
	}
	return 0
}

func (r *reader) u32(field string) uint32 {
	if b := r.take(field, 4); b != nil {
		return binary.BigEndian.Uint32(b)
	}
	return 0
}

func (r *reader) u64(field string) uint64 {
	if b := r.take(field, 8); b != nil {
		return binary.BigEndian.Uint64(b)
	}
	return 0
}

// sized reads a TPM2B: a u16 size, at most max, then that many bytes. The result aliases the
// input.
func (r *reader) sized(field string, max int) []byte {
	start := r.off
	n := int(r.u16(field + ".size"))
	if r.err != nil {
		return nil
	}
	if n > max {
		r.off = start
		r.fail(field+".size", "%d bytes, over the limit of %d", n, max)
		return nil
	}
	return r.take(field, n)
}

func (r *reader) end() {
	if r.err == nil && r.off != len(r.b) {
		r.fail("(end)", "%d trailing bytes after the structure", len(r.b)-r.off)
	}
}

// Attest is a parsed TPMS_ATTEST of type quote (Part 2 §10.12.12). Byte slices alias the input.
type Attest struct {
	// Magic should be TPM_GENERATED_VALUE; ParseAttest does not check it.
	Magic uint32
	// Type is TPM_ST_ATTEST_QUOTE unless ParseAttest returned ErrNotQuote.
	Type uint16
	// QualifiedSigner is the qualified name of the signing key.
	QualifiedSigner []byte
	// ExtraData is the caller's qualifyingData.
	ExtraData []byte
	// Clock is TPMS_CLOCK_INFO.
	Clock ClockInfo
	// FirmwareVersion is the TPM vendor's firmware version.
	FirmwareVersion uint64
	// PCRSelections is TPMS_QUOTE_INFO.pcrSelect, in order.
	PCRSelections []PCRSelection
	// PCRDigest is TPMS_QUOTE_INFO.pcrDigest.
	PCRDigest []byte
}

// ClockInfo is TPMS_CLOCK_INFO (Part 2 §10.11.1).
type ClockInfo struct {
	// Clock is milliseconds the TPM has been powered since its last TPM2_Clear.
	Clock uint64
	// ResetCount counts TPM resets (reboots) since the last TPM2_Clear.
	ResetCount uint32
	// RestartCount counts TPM restarts (resume from hibernation) since the last reset.
	RestartCount uint32
	// Safe says no Clock value greater than this one was ever reported.
	Safe bool
}

// PCRSelection is one TPMS_PCR_SELECTION (Part 2 §10.6.2).
type PCRSelection struct {
	// Hash is the bank's TPM_ALG_ID.
	Hash uint16
	// Select is the bitmap: bit i%8 of byte i/8 selects PCR i.
	Select []byte
}

// PCRs returns the selected PCR indices, ascending.
func (s PCRSelection) PCRs() []int {
	var out []int
	for i := range len(s.Select) * 8 {
		if s.Select[i/8]&(1<<(i%8)) != 0 {
			out = append(out, i)
		}
	}
	return out
}

// ParseAttest parses a TPMS_ATTEST of type quote strictly: every size within its bound, the
// PCR selection count at most 16 (checked before any entry is read), each selection of 3 or 4
// bytes selecting nothing above PCR 23, TPMI_YES_NO 0 or 1, and no trailing bytes. Magic is
// returned, not checked. A type other than quote returns the header and an error wrapping
// ErrNotQuote. Errors are *ParseError.
func ParseAttest(b []byte) (*Attest, error) {
	return parseAttest(b, &Counter{})
}

func parseAttest(b []byte, c *Counter) (*Attest, error) {
	r := &reader{name: "TPMS_ATTEST", b: b}
	a := &Attest{}
	a.Magic = r.u32("magic")
	typeOff := r.off
	a.Type = r.u16("type")
	a.QualifiedSigner = r.sized("qualifiedSigner", maxNameSize)
	a.ExtraData = r.sized("extraData", maxDataSize)
	a.Clock.Clock = r.u64("clockInfo.clock")
	a.Clock.ResetCount = r.u32("clockInfo.resetCount")
	a.Clock.RestartCount = r.u32("clockInfo.restartCount")
	safeOff := r.off
	switch safe := r.u8("clockInfo.safe"); safe {
	case 0:
	case 1:
		a.Clock.Safe = true
	default:
		r.off = safeOff
		r.fail("clockInfo.safe", "%d is not a TPMI_YES_NO (0 or 1)", safe)
	}
	a.FirmwareVersion = r.u64("firmwareVersion")
	if r.err != nil {
		return nil, r.err
	}
	if a.Type != stAttestQuote {
		return a, &ParseError{Struct: r.name, Field: "type", Offset: typeOff,
			Msg: fmt.Sprintf("0x%04x is not TPM_ST_ATTEST_QUOTE (0x%04x)", a.Type, stAttestQuote), Err: ErrNotQuote}
	}
	countOff := r.off
	count := r.u32("attested.pcrSelect.count")
	if r.err == nil && count > maxPCRSelections {
		r.off = countOff
		r.fail("attested.pcrSelect.count", "%d selections, over the limit of %d (HASH_COUNT)", count, maxPCRSelections)
	}
	if r.err != nil {
		return nil, r.err
	}
	a.PCRSelections = make([]PCRSelection, 0, count)
	for i := range int(count) {
		c.SelectionEntries++
		field := fmt.Sprintf("attested.pcrSelect[%d]", i)
		var s PCRSelection
		s.Hash = r.u16(field + ".hash")
		sizeOff := r.off
		n := int(r.u8(field + ".sizeofSelect"))
		if r.err == nil && (n < pcrSelectMin || n > pcrSelectMax) {
			r.off = sizeOff
			r.fail(field+".sizeofSelect", "%d is not %d or %d", n, pcrSelectMin, pcrSelectMax)
		}
		s.Select = r.take(field+".pcrSelect", n)
		if r.err == nil && n == 4 && s.Select[3] != 0 {
			r.off -= n
			r.fail(field+".pcrSelect", "selects PCRs above %d", maxPCR)
		}
		if r.err != nil {
			return nil, r.err
		}
		a.PCRSelections = append(a.PCRSelections, s)
	}
	a.PCRDigest = r.sized("attested.pcrDigest", maxDigestSize)
	r.end()
	if r.err != nil {
		return nil, r.err
	}
	return a, nil
}

// TPM_ALG_IDs (TCG Algorithm Registry, https://trustedcomputinggroup.org/resource/tcg-algorithm-registry/).
const (
	algRSA    uint16 = 0x0001
	algSHA1   uint16 = 0x0004
	algSHA256 uint16 = 0x000B
	algSHA384 uint16 = 0x000C
	algSHA512 uint16 = 0x000D
	algNull   uint16 = 0x0010
	algRSASSA uint16 = 0x0014
	algRSAPSS uint16 = 0x0016
	algECDSA  uint16 = 0x0018
	algECC    uint16 = 0x0023
)

// Signature is a parsed TPMT_SIGNATURE of an asymmetric scheme (Part 2 §11.3.4).
type Signature struct {
	// Alg is TPM_ALG_ECDSA, TPM_ALG_RSASSA or TPM_ALG_RSAPSS.
	Alg uint16
	// Hash is the TPM_ALG_ID of the hash the signer used; ParseSignature does not judge it.
	Hash uint16
	// R and S are the ECDSA signature (TPMS_SIGNATURE_ECC).
	R, S []byte
	// RSA is the RSA signature (TPMS_SIGNATURE_RSA).
	RSA []byte
}

// ParseSignature parses a TPMT_SIGNATURE strictly: ECDSA (r and s at most 48 bytes each),
// RSASSA or RSAPSS (at most 512 bytes), no trailing bytes. Other schemes are errors. Errors are
// *ParseError.
func ParseSignature(b []byte) (*Signature, error) {
	r := &reader{name: "TPMT_SIGNATURE", b: b}
	s := &Signature{}
	s.Alg = r.u16("sigAlg")
	s.Hash = r.u16("signature.hash")
	switch s.Alg {
	case algECDSA:
		s.R = r.sized("signature.signatureR", maxECCParameter)
		s.S = r.sized("signature.signatureS", maxECCParameter)
	case algRSASSA, algRSAPSS:
		s.RSA = r.sized("signature.sig", maxRSASignature)
	default:
		if r.err == nil {
			r.off = 0
			r.fail("sigAlg", "0x%04x is not ECDSA, RSASSA or RSAPSS", s.Alg)
		}
	}
	r.end()
	if r.err != nil {
		return nil, r.err
	}
	return s, nil
}
