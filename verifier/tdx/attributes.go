package tdx

import "encoding/binary"

// TDAttributes is the TD_ATTRIBUTES field of a TD report (Intel TDX Module ABI specification,
// "TDINFO_STRUCT" / "ATTRIBUTES"), read as a little-endian 64-bit value.
type TDAttributes uint64

// TD_ATTRIBUTES bits the verifier knows.
const (
	AttrDebug         TDAttributes = 1 << 0
	AttrLASS          TDAttributes = 1 << 27
	AttrSeptVEDisable TDAttributes = 1 << 28
	AttrMigratable    TDAttributes = 1 << 29
	AttrPKS           TDAttributes = 1 << 30
	AttrKL            TDAttributes = 1 << 31
	AttrPerfmon       TDAttributes = 1 << 63

	// AttrKnown is every bit with a defined meaning; any other bit set is rejected.
	AttrKnown = AttrDebug | AttrLASS | AttrSeptVEDisable | AttrMigratable | AttrPKS | AttrKL | AttrPerfmon
)

// Uint64LE reads an 8-byte little-endian field (TD_ATTRIBUTES, XFAM); shorter input reads as 0.
func Uint64LE(b []byte) uint64 {
	if len(b) != 8 {
		return 0
	}
	return binary.LittleEndian.Uint64(b)
}

// XFAM bits that the TDX module requires (x87 and SSE state) and the bits it can ever allow
// (Intel TDX Module ABI specification, XFAM fixed-1 / fixed-0 values).
const (
	XFAMFixed1 uint64 = 0x00000003
	XFAMFixed0 uint64 = 0x0006DBE7
)
