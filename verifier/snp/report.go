package snp

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/google/go-sev-guest/abi"
)

// ErrMalformed is wrapped by every report parse error.
var ErrMalformed = errors.New("malformed SEV-SNP report")

// ErrGuestPolicy is wrapped, with ErrMalformed, when the guest policy has reserved or unknown bits
// wrong.
var ErrGuestPolicy = errors.New("invalid guest policy")

// ReportSize is the size of an ATTESTATION_REPORT (SEV-SNP Firmware ABI, Table
// "ATTESTATION_REPORT Structure").
const ReportSize = abi.ReportSize

// signedSize is the number of leading report bytes the signature covers (0x000–0x29F).
const signedSize = 0x2A0

// Report is a parsed SEV-SNP attestation report. Byte slices alias the input.
type Report struct {
	Raw             []byte
	Version         uint32
	GuestSVN        uint32
	Policy          uint64
	FamilyID        []byte
	ImageID         []byte
	VMPL            uint32
	SignatureAlgo   uint32
	CurrentTCB      uint64
	PlatformInfo    uint64
	SignerInfo      abi.SignerInfo
	ReportData      []byte
	Measurement     []byte
	HostData        []byte
	IDKeyDigest     []byte
	AuthorKeyDigest []byte
	ReportID        []byte
	ReportIDMA      []byte
	ReportedTCB     uint64
	// CPUID1EAX is the masked CPUID(1).EAX family/model/stepping (report version 3 and later).
	CPUID1EAX    uint32
	ChipID       []byte
	CommittedTCB uint64
	LaunchTCB    uint64
	Signature    []byte // 0x2A0–0x49F
}

// ParseReport parses a report strictly: exact size, a supported version, the ECDSA P-384
// signature algorithm, a known signing key, and zero in every reserved field of its version,
// including the unused tail of the signature. The structural decoding is go-sev-guest's
// abi.ReportToProto; this function adds the checks it leaves out (exact size, version, the
// reserved fields of older versions, the signature algorithm, a signed report).
func ParseReport(raw []byte) (*Report, error) {
	if len(raw) != ReportSize {
		return nil, fmt.Errorf("%w: %d bytes, want exactly %d", ErrMalformed, len(raw), ReportSize)
	}
	version := binary.LittleEndian.Uint32(raw[0:4])
	if version < abi.ReportVersion2 || version > abi.ReportVersion5 {
		return nil, fmt.Errorf("%w: version %d is not supported (want 2 to 5)", ErrMalformed, version)
	}
	if algo := abi.SignatureAlgo(raw); algo != abi.SignEcdsaP384Sha384 {
		return nil, fmt.Errorf("%w: signature algorithm %d is not ECDSA P-384 with SHA-384", ErrMalformed, algo)
	}
	// Guest policy (SEV-SNP ABI, Table "Guest Policy Structure"): reserved bit 17 must be one and
	// bits above the known ones zero (VERIFIER-CHECKS SNP 5).
	if _, err := abi.ParseSnpPolicy(binary.LittleEndian.Uint64(raw[0x08:0x10])); err != nil {
		return nil, fmt.Errorf("%w: %w: %v", ErrMalformed, ErrGuestPolicy, err)
	}
	p, err := abi.ReportToProto(raw)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	// Before version 5, LAUNCH_MIT_VECTOR and CURRENT_MIT_VECTOR (0x1F8–0x207) are reserved.
	if version < abi.ReportVersion5 {
		for _, b := range raw[0x1F8:0x208] {
			if b != 0 {
				return nil, fmt.Errorf("%w: reserved bytes 0x1F8–0x207 are not zero in a version %d report", ErrMalformed, version)
			}
		}
	}
	si, err := abi.ParseSignerInfo(p.SignerInfo)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	if si.SigningKey != abi.VcekReportSigner && si.SigningKey != abi.VlekReportSigner {
		return nil, fmt.Errorf("%w: SIGNING_KEY is %v; only VCEK- or VLEK-signed reports can be verified", ErrMalformed, si.SigningKey)
	}
	return &Report{
		Raw:             raw,
		Version:         p.Version,
		GuestSVN:        p.GuestSvn,
		Policy:          p.Policy,
		FamilyID:        raw[0x10:0x20],
		ImageID:         raw[0x20:0x30],
		VMPL:            p.Vmpl,
		SignatureAlgo:   p.SignatureAlgo,
		CurrentTCB:      p.CurrentTcb,
		PlatformInfo:    p.PlatformInfo,
		SignerInfo:      si,
		ReportData:      raw[0x50:0x90],
		Measurement:     raw[0x90:0xC0],
		HostData:        raw[0xC0:0xE0],
		IDKeyDigest:     raw[0xE0:0x110],
		AuthorKeyDigest: raw[0x110:0x140],
		ReportID:        raw[0x140:0x160],
		ReportIDMA:      raw[0x160:0x180],
		ReportedTCB:     p.ReportedTcb,
		CPUID1EAX:       p.Cpuid1EaxFms,
		ChipID:          raw[0x1A0:0x1E0],
		CommittedTCB:    p.CommittedTcb,
		LaunchTCB:       p.LaunchTcb,
		Signature:       raw[signedSize:ReportSize],
	}, nil
}

// TCB is a TCB_VERSION decomposed by product line. Milan and Genoa: byte 0 boot loader, 1 TEE,
// 6 SNP, 7 microcode. Turin: byte 0 FMC, 1 boot loader, 2 TEE, 3 SNP, 7 microcode.
type TCB struct {
	FMC, Bootloader, TEE, SNP, Microcode uint8
}

// DecomposeTCB splits a TCB_VERSION for a product line.
func DecomposeTCB(v uint64, line string) TCB {
	b := make([]byte, 8)
	binary.LittleEndian.PutUint64(b, v)
	if line == "Turin" {
		return TCB{FMC: b[0], Bootloader: b[1], TEE: b[2], SNP: b[3], Microcode: b[7]}
	}
	return TCB{Bootloader: b[0], TEE: b[1], SNP: b[6], Microcode: b[7]}
}

// compose is the TCB_VERSION of a product line that DecomposeTCB splits into t, with the
// reserved bytes zero.
func (t TCB) compose(line string) uint64 {
	var b [8]byte
	if line == "Turin" {
		b[0], b[1], b[2], b[3], b[7] = t.FMC, t.Bootloader, t.TEE, t.SNP, t.Microcode
	} else {
		b[0], b[1], b[6], b[7] = t.Bootloader, t.TEE, t.SNP, t.Microcode
	}
	return binary.LittleEndian.Uint64(b[:])
}

// AtLeast reports whether every component of t is at or above floor's.
func (t TCB) AtLeast(floor TCB) bool {
	return t.FMC >= floor.FMC && t.Bootloader >= floor.Bootloader && t.TEE >= floor.TEE &&
		t.SNP >= floor.SNP && t.Microcode >= floor.Microcode
}
