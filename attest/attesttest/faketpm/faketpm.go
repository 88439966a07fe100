// Package faketpm is a test-only vTPM: the Microsoft TPM 2.0 reference implementation running
// in-process (go-tpm-tools' simulator), driven through the real collector (attest/tpm), plus a
// software "attestation key" and a TPMS_ATTEST encoder for negative cases a real TPM refuses to
// produce.
//
// The simulator is a process-wide singleton: simulator.Get holds a global lock until the
// simulator is closed, so New blocks while another test holds it. Tests that use New must not
// call t.Parallel, and a test must not call New twice (the second call would wait forever).
// Each New starts from a freshly manufactured TPM (new seeds, PCRs at their reset values).
//
// A real restricted AK signs only digests the TPM computed over data that does not start with
// TPM_GENERATED_VALUE, so no TPM can be made to sign a TPMS_ATTEST with a wrong magic, a wrong
// type or a hand-made PCR selection. Tests of those cases decode a real quote with
// DecodeAttest, change it, encode it with (*Attest).Marshal and sign it with a SoftwareAK,
// whose TPMT_PUBLIC carries the attributes of a real AK.
package faketpm

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	_ "crypto/sha1" // SoftwareAK.SignWithHash builds SHA-1 signatures for negative tests
	_ "crypto/sha256"
	_ "crypto/sha512"
	_ "embed"
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"testing"

	"github.com/google/go-eventlog/register"
	"github.com/google/go-eventlog/tcg"
	"github.com/google/go-tpm-tools/simulator"
	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"
	"github.com/proofline/proofline/attest"
	"github.com/proofline/proofline/attest/tpm"
)

//go:embed testdata/ubuntu-2404-amd-sevsnp.bin
var ubuntuSEVSNPLog []byte

// UbuntuSEVSNPLog returns a real TCG event log (crypto-agile, SHA-1/SHA-256/SHA-384) of an
// Ubuntu 24.04 SEV-SNP VM; testdata/README.md gives its origin. ExtendLog reproduces it exactly.
func UbuntuSEVSNPLog() []byte { return slices.Clone(ubuntuSEVSNPLog) }

// TPM is a simulated vTPM for one test.
type TPM struct {
	t   testing.TB
	sim *simulator.Simulator
	tr  transport.TPM
	ak  *tpm.AK
}

// New starts a freshly manufactured simulator for the test and closes it on t.Cleanup.
func New(t testing.TB) *TPM {
	t.Helper()
	sim, err := simulator.Get()
	if err != nil {
		t.Fatalf("faketpm: starting the TPM simulator: %v", err)
	}
	f := &TPM{t: t, sim: sim, tr: transport.FromReadWriter(sim)}
	t.Cleanup(func() {
		if err := sim.Close(); err != nil {
			t.Errorf("faketpm: closing the TPM simulator: %v", err)
		}
	})
	return f
}

// Transport is the simulator as a go-tpm transport, for calling attest/tpm or go-tpm directly.
func (f *TPM) Transport() transport.TPM { return f.tr }

// Extend extends one PCR of one bank ("sha1", "sha256", "sha384") with a digest of that bank's
// size, as TPM2_PCR_Extend does: PCR = H(PCR ‖ digest).
func (f *TPM) Extend(pcr int, bank string, digest []byte) {
	f.t.Helper()
	alg, ok := tpm.BankAlg(bank)
	if !ok {
		f.t.Fatalf("faketpm: unknown PCR bank %q", bank)
	}
	if err := f.extend(pcr, []tpm2.TPMTHA{{HashAlg: alg, Digest: digest}}); err != nil {
		f.t.Fatalf("faketpm: %v", err)
	}
}

func (f *TPM) extend(pcr int, digests []tpm2.TPMTHA) error {
	_, err := tpm2.PCRExtend{
		PCRHandle: tpm2.AuthHandle{Handle: tpm2.TPMHandle(uint32(pcr)), Auth: tpm2.PasswordAuth(nil)},
		Digests:   tpm2.TPMLDigestValues{Digests: digests},
	}.Execute(f.tr)
	if err != nil {
		return fmt.Errorf("TPM2_PCR_Extend of PCR %d: %w", pcr, err)
	}
	return nil
}

// evNoAction is EV_NO_ACTION (TCG PC Client Platform Firmware Profile §10.4.1): it carries
// information for the log's reader and is never extended into a PCR.
const evNoAction = 0x03

// evHCRTM is EV_EFI_HCRTM_EVENT, whose PCR 0 starts from a value only an H-CRTM sequence sets.
const evHCRTM = 0x80000010

// ExtendLog replays a TCG PC Client event log (SHA-1 or crypto-agile format) into the
// simulator: every event except EV_NO_ACTION is extended, with its digest in every bank the log
// carries, into the PCR it names, so that afterwards the simulator's PCRs are what the log
// replays to. Logs that start PCR 0 at a non-zero locality (a StartupLocality event) or with an
// H-CRTM event cannot be reproduced by the simulator, which always starts at locality 0: they are
// an error.
func (f *TPM) ExtendLog(raw []byte) error {
	el, err := tcg.ParseEventLog(raw, tcg.ParseOpts{AllowPadding: true})
	if err != nil {
		return fmt.Errorf("parsing the event log: %w", err)
	}
	var byBank [][]tcg.Event
	var algs []tpm2.TPMAlgID
	for _, a := range el.Algs {
		alg, ok := logAlg(a)
		if !ok {
			return fmt.Errorf("the event log carries bank %v, which the simulator does not have", a)
		}
		algs = append(algs, alg)
		byBank = append(byBank, el.Events(a))
	}
	if len(byBank) == 0 {
		return errors.New("the event log carries no digest bank")
	}
	for n, ev := range byBank[0] {
		if ev.Type == evNoAction {
			if ev.Index == 0 && len(ev.Data) == 17 && string(ev.Data[:15]) == "StartupLocality" && ev.Data[16] != 0 {
				return fmt.Errorf("event %d: the log starts PCR 0 at locality %d; the simulator starts at locality 0", n, ev.Data[16])
			}
			continue
		}
		if uint32(ev.Type) == evHCRTM {
			return fmt.Errorf("event %d: an H-CRTM event cannot be reproduced by the simulator", n)
		}
		if ev.Index < 0 || ev.Index > 23 {
			return fmt.Errorf("event %d: PCR index %d is not 0–23", n, ev.Index)
		}
		var digests []tpm2.TPMTHA
		for b, events := range byBank {
			d := events[n].Digest
			if d == nil {
				return fmt.Errorf("event %d (PCR %d) has no digest in bank %v", n, ev.Index, el.Algs[b])
			}
			digests = append(digests, tpm2.TPMTHA{HashAlg: algs[b], Digest: d})
		}
		if err := f.extend(ev.Index, digests); err != nil {
			return fmt.Errorf("event %d: %w", n, err)
		}
	}
	return nil
}

func logAlg(a register.HashAlg) (tpm2.TPMAlgID, bool) {
	switch a {
	case register.HashSHA1:
		return tpm2.TPMAlgSHA1, true
	case register.HashSHA256:
		return tpm2.TPMAlgSHA256, true
	case register.HashSHA384:
		return tpm2.TPMAlgSHA384, true
	}
	return 0, false
}

// AK returns the simulator's attestation key, created on first use with tpm.CreateAK.
func (f *TPM) AK() *tpm.AK {
	f.t.Helper()
	if f.ak == nil {
		ak, err := tpm.CreateAK(f.tr)
		if err != nil {
			f.t.Fatalf("faketpm: %v", err)
		}
		f.ak = ak
	}
	return f.ak
}

// Quote quotes PCRs of one bank with the AK through attest/tpm.Quote.
func (f *TPM) Quote(bank string, pcrs []int, extraData []byte) *attest.TPM {
	f.t.Helper()
	q, err := tpm.Quote(f.tr, f.AK(), bank, pcrs, extraData)
	if err != nil {
		f.t.Fatalf("faketpm: %v", err)
	}
	return q
}

// PCRs reads PCRs of one bank.
func (f *TPM) PCRs(bank string, pcrs []int) map[int][]byte {
	f.t.Helper()
	v, err := tpm.ReadPCRs(f.tr, bank, pcrs)
	if err != nil {
		f.t.Fatalf("faketpm: %v", err)
	}
	return v
}

// SoftwareAK is an ECDSA P-256 key held in memory whose TPMT_PUBLIC (Public) claims to be an
// attestation key. It signs whatever it is given, which is what negative tests need.
type SoftwareAK struct {
	t testing.TB
	// Key is the private key.
	Key *ecdsa.PrivateKey
	// Area is the decoded TPMT_PUBLIC.
	Area tpm2.TPMTPublic
	// Public is the TPMT_PUBLIC as a TPM marshals it, for attest.TPM.AKPublic.
	Public []byte
}

// NewSoftwareAK returns a software key whose public area is tpm.AKTemplate with the key's point.
// modify, when not nil, changes the public area before it is marshalled (to clear Restricted,
// say); the key stays ECDSA P-256.
func NewSoftwareAK(t testing.TB, modify func(*tpm2.TPMTPublic)) *SoftwareAK {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatalf("faketpm: %v", err)
	}
	point, err := key.PublicKey.Bytes()
	if err != nil {
		t.Fatalf("faketpm: %v", err)
	}
	area := tpm.AKTemplate()
	area.Unique = tpm2.NewTPMUPublicID(tpm2.TPMAlgECC, &tpm2.TPMSECCPoint{
		X: tpm2.TPM2BECCParameter{Buffer: point[1:33]},
		Y: tpm2.TPM2BECCParameter{Buffer: point[33:65]},
	})
	if modify != nil {
		modify(&area)
	}
	return &SoftwareAK{t: t, Key: key, Area: area, Public: tpm2.Marshal(area)}
}

// Sign returns a TPMT_SIGNATURE (ECDSA, SHA-256) over data, as TPM2_Quote would.
func (k *SoftwareAK) Sign(data []byte) []byte {
	return k.SignWithHash(data, tpm2.TPMAlgSHA256)
}

// SignWithHash returns a TPMT_SIGNATURE (ECDSA) over data hashed with alg, which may be one no
// verifier should accept (SHA-1).
func (k *SoftwareAK) SignWithHash(data []byte, alg tpm2.TPMAlgID) []byte {
	k.t.Helper()
	h, err := alg.Hash()
	if err != nil {
		k.t.Fatalf("faketpm: %v", err)
	}
	r, s, err := ecdsa.Sign(rand.Reader, k.Key, digest(h, data))
	if err != nil {
		k.t.Fatalf("faketpm: %v", err)
	}
	return tpm2.Marshal(tpm2.TPMTSignature{
		SigAlg: tpm2.TPMAlgECDSA,
		Signature: tpm2.NewTPMUSignature(tpm2.TPMAlgECDSA, &tpm2.TPMSSignatureECC{
			Hash:       alg,
			SignatureR: tpm2.TPM2BECCParameter{Buffer: r.FillBytes(make([]byte, 32))},
			SignatureS: tpm2.TPM2BECCParameter{Buffer: s.FillBytes(make([]byte, 32))},
		}),
	})
}

// Resign returns a copy of q whose quote is a.Marshal(), signed by k, with k as the AK.
func (k *SoftwareAK) Resign(q *attest.TPM, a *Attest) *attest.TPM {
	out := Clone(q)
	out.Quote = a.Marshal()
	out.Signature = k.Sign(out.Quote)
	out.AKPublic = slices.Clone(k.Public)
	return out
}

// Clone returns a deep copy of q, for changing one thing in a valid quote.
func Clone(q *attest.TPM) *attest.TPM {
	out := &attest.TPM{
		AKPublic:  slices.Clone(q.AKPublic),
		Quote:     slices.Clone(q.Quote),
		Signature: slices.Clone(q.Signature),
	}
	for _, p := range q.PCRs {
		out.PCRs = append(out.PCRs, attest.PCR{Bank: p.Bank, Index: p.Index, Digest: slices.Clone(p.Digest)})
	}
	return out
}

func digest(h crypto.Hash, data []byte) []byte {
	w := h.New()
	w.Write(data)
	return w.Sum(nil)
}

// PCRDigest is TPMS_QUOTE_INFO.pcrDigest: H(values concatenated in selection order).
func PCRDigest(h crypto.Hash, values ...[]byte) []byte {
	w := h.New()
	for _, v := range values {
		w.Write(v)
	}
	return w.Sum(nil)
}

// Constants of TPMS_ATTEST (TPM 2.0 Library Part 2, §6.2 and §6.9).
const (
	// GeneratedValue is TPM_GENERATED_VALUE, the magic of every TPM-produced TPMS_ATTEST.
	GeneratedValue uint32 = 0xff544347
	// AttestQuote is TPM_ST_ATTEST_QUOTE.
	AttestQuote uint16 = 0x8018
	// AttestCertify is TPM_ST_ATTEST_CERTIFY, a different attestation type.
	AttestCertify uint16 = 0x8017
)

// Attest is a TPMS_ATTEST of type quote taken apart (TPM 2.0 Library Part 2, §10.12.12), for
// building variants a TPM would never sign. Marshal encodes exactly these fields: the selection
// count is len(Selections) and nothing is validated, so any malformed variant can be built.
type Attest struct {
	Magic           uint32
	Type            uint16
	QualifiedSigner []byte
	ExtraData       []byte
	Clock           uint64
	ResetCount      uint32
	RestartCount    uint32
	Safe            uint8
	FirmwareVersion uint64
	Selections      []Selection
	PCRDigest       []byte
	// Trailing is appended after the structure.
	Trailing []byte
}

// Selection is one TPMS_PCR_SELECTION: a bank and a PCR bitmap (bit i of byte i/8 is PCR i).
type Selection struct {
	Hash   tpm2.TPMAlgID
	Select []byte
}

// SelectPCRs returns the 3-byte PC Client bitmap selecting pcrs.
func SelectPCRs(pcrs ...int) []byte {
	b := make([]byte, 3)
	for _, i := range pcrs {
		b[i/8] |= 1 << (i % 8)
	}
	return b
}

// DecodeAttest takes apart a TPMS_ATTEST of type quote with go-tpm's decoder (an implementation
// independent of the verifier's parser).
func DecodeAttest(b []byte) (*Attest, error) {
	a, err := tpm2.Unmarshal[tpm2.TPMSAttest](b)
	if err != nil {
		return nil, err
	}
	info, err := a.Attested.Quote()
	if err != nil {
		return nil, err
	}
	out := &Attest{
		Magic:           uint32(a.Magic),
		Type:            uint16(a.Type),
		QualifiedSigner: a.QualifiedSigner.Buffer,
		ExtraData:       a.ExtraData.Buffer,
		Clock:           a.ClockInfo.Clock,
		ResetCount:      a.ClockInfo.ResetCount,
		RestartCount:    a.ClockInfo.RestartCount,
		FirmwareVersion: a.FirmwareVersion,
		PCRDigest:       info.PCRDigest.Buffer,
	}
	if a.ClockInfo.Safe {
		out.Safe = 1
	}
	for _, s := range info.PCRSelect.PCRSelections {
		out.Selections = append(out.Selections, Selection{Hash: s.Hash, Select: s.PCRSelect})
	}
	if got := out.Marshal(); !slices.Equal(got, b) {
		return nil, fmt.Errorf("faketpm: the quote does not re-encode to the same %d bytes", len(b))
	}
	return out, nil
}

// Marshal encodes the structure big-endian as the TPM does.
func (a *Attest) Marshal() []byte {
	var b []byte
	b = binary.BigEndian.AppendUint32(b, a.Magic)
	b = binary.BigEndian.AppendUint16(b, a.Type)
	b = append2B(b, a.QualifiedSigner)
	b = append2B(b, a.ExtraData)
	b = binary.BigEndian.AppendUint64(b, a.Clock)
	b = binary.BigEndian.AppendUint32(b, a.ResetCount)
	b = binary.BigEndian.AppendUint32(b, a.RestartCount)
	b = append(b, a.Safe)
	b = binary.BigEndian.AppendUint64(b, a.FirmwareVersion)
	b = binary.BigEndian.AppendUint32(b, uint32(len(a.Selections)))
	for _, s := range a.Selections {
		b = binary.BigEndian.AppendUint16(b, uint16(s.Hash))
		b = append(b, byte(len(s.Select)))
		b = append(b, s.Select...)
	}
	b = append2B(b, a.PCRDigest)
	return append(b, a.Trailing...)
}

func append2B(b, data []byte) []byte {
	b = binary.BigEndian.AppendUint16(b, uint16(len(data)))
	return append(b, data...)
}
