package fakeamd

import (
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/sha512"
	"encoding/binary"
	"fmt"
	"math/big"

	"github.com/google/go-sev-guest/abi"
	"github.com/google/go-sev-guest/kds"
)

// Offsets in the ATTESTATION_REPORT (ABI spec Table "ATTESTATION_REPORT Structure"). The report is
// signed over bytes 0x000–0x29F; the signature area runs from 0x2A0 to the end (0x4A0).
const (
	signedSize      = 0x2A0
	signatureRSSize = 72 // r and s of an ECDSA P-384 signature, little-endian, zero-padded
)

// Guest policy bits (ABI spec Table "Guest Policy Structure"); bits 7:0 are ABI_MINOR and 15:8
// ABI_MAJOR.
const (
	PolicySMT          uint64 = 1 << 16 // SMT allowed
	PolicyReserved17   uint64 = 1 << 17 // reserved, must be one
	PolicyMigrateMA    uint64 = 1 << 18 // a migration agent is allowed
	PolicyDebug        uint64 = 1 << 19 // debugging (host decryption) allowed
	PolicySingleSocket uint64 = 1 << 20 // the guest may run on one socket only
)

// PLATFORM_INFO bits (ABI spec Table "PLATFORM_INFO Field").
const (
	PlatformSMTEnabled  uint64 = 1 << 0 // SMT_EN
	PlatformTSMEEnabled uint64 = 1 << 1 // TSME_EN
)

// Defaults of DefaultReportOptions.
const (
	// DefaultPolicy is 0x30000: reserved bit 17, SMT allowed, ABI 0.0, DEBUG and MIGRATE_MA
	// clear (QEMU's default SNP policy).
	DefaultPolicy = PolicyReserved17 | PolicySMT
	// DefaultPlatformInfo is 0x3: SMT and TSME enabled.
	DefaultPlatformInfo = PlatformSMTEnabled | PlatformTSMEEnabled
	// DefaultVersion is the report version of DefaultReportOptions.
	DefaultVersion = 3
)

// DefaultMeasurement returns the MEASUREMENT of DefaultReportOptions: bytes 0xA0, 0xA1, …, 0xCF.
func DefaultMeasurement() [abi.MeasurementSize]byte {
	var m [abi.MeasurementSize]byte
	for i := range m {
		m[i] = byte(0xA0 + i)
	}
	return m
}

// ReportOptions holds every field of an ATTESTATION_REPORT (ABI spec Table "ATTESTATION_REPORT
// Structure", AMD doc 56860) except the signature. Report writes fields that a version does not
// have (CPUID_* before version 3, *_MIT_VECTOR before version 5) as the zeros the spec reserves
// there; every reserved byte is zero. To build a malformed report, mutate the bytes and Resign.
type ReportOptions struct {
	Version  uint32                 // 0x000 VERSION: 2, 3 or 5
	GuestSVN uint32                 // 0x004 GUEST_SVN
	Policy   uint64                 // 0x008 POLICY, see Policy* and DefaultPolicy
	FamilyID [abi.FamilyIDSize]byte // 0x010 FAMILY_ID
	ImageID  [abi.ImageIDSize]byte  // 0x020 IMAGE_ID
	VMPL     uint32                 // 0x030 VMPL
	// SignatureAlgo (0x034) is 1 for ECDSA P-384 with SHA-384. Report signs with ECDSA P-384
	// whatever it says.
	SignatureAlgo uint32
	// The TCB_VERSION fields (CURRENT_TCB, REPORTED_TCB, COMMITTED_TCB, LAUNCH_TCB) are raw, in
	// the product line's layout (kds.ComposeTCBParts for Milan and Genoa, ComposeTurinTCB for
	// Turin).
	CurrentTCB   kds.TCBVersion // 0x038 CURRENT_TCB
	PlatformInfo uint64         // 0x040 PLATFORM_INFO, see Platform*
	// SignerInfo (0x048): AUTHOR_KEY_EN bit 0, MASK_CHIP_KEY bit 1, SIGNING_KEY bits 4:2. Report
	// signs with the key SIGNING_KEY selects (VCEK or VLEK). A consistent report with MaskChipKey
	// has a zero ChipID.
	SignerInfo      abi.SignerInfo
	ReportData      [abi.ReportDataSize]byte      // 0x050
	Measurement     [abi.MeasurementSize]byte     // 0x090
	HostData        [abi.HostDataSize]byte        // 0x0C0
	IDKeyDigest     [abi.IDKeyDigestSize]byte     // 0x0E0
	AuthorKeyDigest [abi.AuthorKeyDigestSize]byte // 0x110
	ReportID        [abi.ReportIDSize]byte        // 0x140
	// ReportIDMA (0x160) is all 0xFF when the guest has no migration agent.
	ReportIDMA  [abi.ReportIDMASize]byte
	ReportedTCB kds.TCBVersion // 0x180 REPORTED_TCB, the TCB the VCEK/VLEK must certify
	// CPUIDFamID, CPUIDModID and CPUIDStep (0x188–0x18A) exist from version 3 on.
	CPUIDFamID, CPUIDModID, CPUIDStep byte
	ChipID                            [abi.ChipIDSize]byte // 0x1A0 CHIP_ID, the VCEK's hwID
	CommittedTCB                      kds.TCBVersion       // 0x1E0
	// Firmware versions: CURRENT_BUILD/MINOR/MAJOR at 0x1E8–0x1EA, COMMITTED_* at 0x1EC–0x1EE.
	CurrentBuild, CurrentMinor, CurrentMajor       uint8
	CommittedBuild, CommittedMinor, CommittedMajor uint8
	LaunchTCB                                      kds.TCBVersion // 0x1F0
	// LaunchMitVector (0x1F8) and CurrentMitVector (0x200) exist from version 5 on.
	LaunchMitVector, CurrentMitVector uint64
}

// DefaultReportOptions returns a valid report signed by this PKI's VCEK; for Milan and Genoa it
// passes go-sev-guest's verify and its validate with DEBUG and MIGRATE_MA disallowed and VMPL 0
// (go-sev-guest cannot read Turin certificates; see the package comment). It has version 3,
// DefaultPolicy (DEBUG clear), VMPL 0, ECDSA P-384, DefaultPlatformInfo, DefaultMeasurement, the
// PKI's CPUID values, ChipID and TCB (reported, current, committed and launch TCB all equal),
// firmware 1.55 build 21, no ID block (zero FAMILY_ID, IMAGE_ID and key digests), no migration
// agent, zero REPORT_DATA and HOST_DATA. For a VLEK-signed report set SignerInfo.SigningKey to abi.VlekReportSigner.
func (p *PKI) DefaultReportOptions() ReportOptions {
	o := ReportOptions{
		Version:       DefaultVersion,
		Policy:        DefaultPolicy,
		SignatureAlgo: abi.SignEcdsaP384Sha384,
		CurrentTCB:    p.TCB,
		PlatformInfo:  DefaultPlatformInfo,
		SignerInfo:    abi.SignerInfo{SigningKey: abi.VcekReportSigner},
		Measurement:   DefaultMeasurement(),
		ReportedTCB:   p.TCB,
		CPUIDFamID:    p.CPUIDFamily,
		CPUIDModID:    p.CPUIDModel,
		CPUIDStep:     p.CPUIDStepping,
		ChipID:        p.ChipID,
		CommittedTCB:  p.TCB,
		CurrentBuild:  21, CurrentMinor: 55, CurrentMajor: 1,
		CommittedBuild: 21, CommittedMinor: 55, CommittedMajor: 1,
		LaunchTCB: p.TCB,
	}
	for i := range o.ReportID {
		o.ReportID[i] = byte(0x20 + i)
	}
	for i := range o.ReportIDMA {
		o.ReportIDMA[i] = 0xFF
	}
	return o
}

// Marshal returns the 0x4A0-byte report with an all-zero signature area.
func (o ReportOptions) Marshal() ([]byte, error) {
	if o.SignerInfo.SigningKey > abi.NoneReportSigner {
		return nil, fmt.Errorf("fakeamd: SIGNING_KEY %d does not fit in 3 bits", o.SignerInfo.SigningKey)
	}
	b := make([]byte, abi.ReportSize)
	le := binary.LittleEndian
	le.PutUint32(b[0x000:], o.Version)
	le.PutUint32(b[0x004:], o.GuestSVN)
	le.PutUint64(b[0x008:], o.Policy)
	copy(b[0x010:0x020], o.FamilyID[:])
	copy(b[0x020:0x030], o.ImageID[:])
	le.PutUint32(b[0x030:], o.VMPL)
	le.PutUint32(b[0x034:], o.SignatureAlgo)
	le.PutUint64(b[0x038:], uint64(o.CurrentTCB))
	le.PutUint64(b[0x040:], o.PlatformInfo)
	le.PutUint32(b[0x048:], abi.ComposeSignerInfo(o.SignerInfo))
	// 0x04C–0x04F reserved.
	copy(b[0x050:0x090], o.ReportData[:])
	copy(b[0x090:0x0C0], o.Measurement[:])
	copy(b[0x0C0:0x0E0], o.HostData[:])
	copy(b[0x0E0:0x110], o.IDKeyDigest[:])
	copy(b[0x110:0x140], o.AuthorKeyDigest[:])
	copy(b[0x140:0x160], o.ReportID[:])
	copy(b[0x160:0x180], o.ReportIDMA[:])
	le.PutUint64(b[0x180:], uint64(o.ReportedTCB))
	if o.Version >= 3 {
		b[0x188], b[0x189], b[0x18A] = o.CPUIDFamID, o.CPUIDModID, o.CPUIDStep
	}
	// 0x18B–0x19F reserved.
	copy(b[0x1A0:0x1E0], o.ChipID[:])
	le.PutUint64(b[0x1E0:], uint64(o.CommittedTCB))
	b[0x1E8], b[0x1E9], b[0x1EA] = o.CurrentBuild, o.CurrentMinor, o.CurrentMajor
	// 0x1EB reserved.
	b[0x1EC], b[0x1ED], b[0x1EE] = o.CommittedBuild, o.CommittedMinor, o.CommittedMajor
	// 0x1EF reserved.
	le.PutUint64(b[0x1F0:], uint64(o.LaunchTCB))
	if o.Version >= 5 {
		le.PutUint64(b[0x1F8:], o.LaunchMitVector)
		le.PutUint64(b[0x200:], o.CurrentMitVector)
	}
	// 0x208–0x29F reserved; 0x2A0–0x49F signature.
	return b, nil
}

// Report serialises o and signs it with the VCEK or VLEK key, as o.SignerInfo.SigningKey selects.
func (p *PKI) Report(o ReportOptions) ([]byte, error) {
	b, err := o.Marshal()
	if err != nil {
		return nil, err
	}
	return p.Resign(b)
}

// Resign returns a copy of report, a serialised (possibly mutated) ATTESTATION_REPORT, signed anew
// with the key its SIGNING_KEY field (0x048 bits 4:2) selects: 0 the VCEK, 1 the VLEK. Other
// values are an error; sign such reports with SignReport.
func (p *PKI) Resign(report []byte) ([]byte, error) {
	if len(report) != abi.ReportSize {
		return nil, fmt.Errorf("fakeamd: report is %d bytes, want %d", len(report), abi.ReportSize)
	}
	switch signer := abi.ReportSigner(binary.LittleEndian.Uint32(report[0x048:]) >> 2 & 7); signer {
	case abi.VcekReportSigner:
		return SignReport(report, p.Keys.VCEK)
	case abi.VlekReportSigner:
		return SignReport(report, p.Keys.VLEK)
	default:
		return nil, fmt.Errorf("fakeamd: SIGNING_KEY %d selects neither the VCEK nor the VLEK", signer)
	}
}

// SignReport returns a copy of report signed with key, whatever its SIGNING_KEY says: the ECDSA
// P-384 SHA-384 signature of bytes 0x000–0x29F, with r at 0x2A0 and s at 0x2E8, each little-endian
// and zero-padded to 72 bytes, and the rest of the signature area zero (ABI spec Table "ECDSA
// P-384 with SHA-384 Signature").
func SignReport(report []byte, key *ecdsa.PrivateKey) ([]byte, error) {
	if len(report) != abi.ReportSize {
		return nil, fmt.Errorf("fakeamd: report is %d bytes, want %d", len(report), abi.ReportSize)
	}
	out := append([]byte(nil), report...)
	digest := sha512.Sum384(out[:signedSize])
	r, s, err := ecdsa.Sign(rand.Reader, key, digest[:])
	if err != nil {
		return nil, fmt.Errorf("fakeamd: signing report: %w", err)
	}
	clear(out[signedSize:])
	putLittleEndian(out[signedSize:signedSize+signatureRSSize], r)
	putLittleEndian(out[signedSize+signatureRSSize:signedSize+2*signatureRSSize], s)
	return out, nil
}

// putLittleEndian writes v into dst least significant byte first, zero-padded.
func putLittleEndian(dst []byte, v *big.Int) {
	v.FillBytes(dst)
	for i, j := 0, len(dst)-1; i < j; i, j = i+1, j-1 {
		dst[i], dst[j] = dst[j], dst[i]
	}
}
