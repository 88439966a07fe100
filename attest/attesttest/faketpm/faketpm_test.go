package faketpm_test

// The tests share the process-wide TPM simulator: none may call t.Parallel.

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/sha256"
	"math/big"
	"testing"

	"github.com/google/go-eventlog/proto/state"
	"github.com/google/go-eventlog/register"
	"github.com/google/go-eventlog/tcg"
	"github.com/google/go-tpm/tpm2"
	"github.com/proofline/proofline/attest/attesttest/faketpm"
)

var pcrs0to9 = []int{0, 1, 2, 3, 4, 5, 6, 7, 8, 9}

// TestExtendLog replays the real log into the simulator and checks, with go-eventlog's replay,
// that the log replays to the simulator's PCRs in every bank it carries.
func TestExtendLog(t *testing.T) {
	f := faketpm.New(t)
	log := faketpm.UbuntuSEVSNPLog()
	if err := f.ExtendLog(log); err != nil {
		t.Fatal(err)
	}
	for _, b := range []struct {
		name string
		alg  state.HashAlgo
		hash crypto.Hash
	}{
		{"sha1", state.HashAlgo_SHA1, crypto.SHA1},
		{"sha256", state.HashAlgo_SHA256, crypto.SHA256},
		{"sha384", state.HashAlgo_SHA384, crypto.SHA384},
	} {
		values := f.PCRs(b.name, append(pcrs0to9, 14))
		bank := register.PCRBank{TCGHashAlgo: b.alg}
		for i, v := range values {
			bank.PCRs = append(bank.PCRs, register.PCR{Index: i, Digest: v, DigestAlg: b.hash})
		}
		events, err := tcg.ParseAndReplay(log, bank.MRs(), tcg.ParseOpts{})
		if err != nil {
			t.Fatalf("%s: the log does not replay to the simulator's PCRs: %v", b.name, err)
		}
		if len(events) != 116 {
			t.Errorf("%s: %d events replayed, want all 116 measured events", b.name, len(events))
		}
	}
	// A PCR the log never touches keeps its reset value.
	if v := f.PCRs("sha256", []int{10})[10]; !bytes.Equal(v, make([]byte, 32)) {
		t.Errorf("PCR 10 = %x, want zero", v)
	}
}

func TestExtendLogRejectsGarbage(t *testing.T) {
	f := faketpm.New(t)
	if err := f.ExtendLog([]byte("not an event log")); err == nil {
		t.Fatal("ExtendLog accepted garbage")
	}
}

func TestExtend(t *testing.T) {
	f := faketpm.New(t)
	d := sha256.Sum256([]byte("measured"))
	f.Extend(16, "sha256", d[:])
	want := sha256.Sum256(append(make([]byte, 32), d[:]...))
	if got := f.PCRs("sha256", []int{16})[16]; !bytes.Equal(got, want[:]) {
		t.Fatalf("PCR 16 = %x, want H(0 ‖ digest) = %x", got, want)
	}
}

// TestDecodeAttestRoundTrip decodes a real quote and re-encodes it byte for byte.
func TestDecodeAttestRoundTrip(t *testing.T) {
	f := faketpm.New(t)
	q := f.Quote("sha256", pcrs0to9, []byte("extra"))
	a, err := faketpm.DecodeAttest(q.Quote)
	if err != nil {
		t.Fatal(err)
	}
	if a.Magic != faketpm.GeneratedValue || a.Type != faketpm.AttestQuote || string(a.ExtraData) != "extra" {
		t.Errorf("decoded %+v", a)
	}
	if len(a.Selections) != 1 || !bytes.Equal(a.Selections[0].Select, faketpm.SelectPCRs(pcrs0to9...)) {
		t.Errorf("selections %+v, want one of PCRs 0–9", a.Selections)
	}
	if !bytes.Equal(a.Marshal(), q.Quote) {
		t.Error("Marshal does not give back the TPM's bytes")
	}
}

// TestSoftwareAK checks the software AK with go-tpm: its public area decodes to its own key, with
// the AK template's attributes, and its signatures verify.
func TestSoftwareAK(t *testing.T) {
	k := faketpm.NewSoftwareAK(t, nil)
	pub, err := tpm2.Unmarshal[tpm2.TPMTPublic](k.Public)
	if err != nil {
		t.Fatal(err)
	}
	key, err := tpm2.Pub(*pub)
	if err != nil {
		t.Fatal(err)
	}
	if !k.Key.PublicKey.Equal(key) {
		t.Fatal("the public area does not hold the key")
	}
	if a := pub.ObjectAttributes; !a.Restricted || !a.SignEncrypt || !a.FixedTPM {
		t.Errorf("attributes %+v, want an AK's", a)
	}
	data := []byte("attest")
	sig, err := tpm2.Unmarshal[tpm2.TPMTSignature](k.Sign(data))
	if err != nil {
		t.Fatal(err)
	}
	ecc, err := sig.Signature.ECDSA()
	if err != nil {
		t.Fatal(err)
	}
	h := sha256.Sum256(data)
	r, s := new(big.Int).SetBytes(ecc.SignatureR.Buffer), new(big.Int).SetBytes(ecc.SignatureS.Buffer)
	if ecc.Hash != tpm2.TPMAlgSHA256 || !ecdsa.Verify(&k.Key.PublicKey, h[:], r, s) {
		t.Error("the signature does not verify")
	}

	unrestricted := faketpm.NewSoftwareAK(t, func(p *tpm2.TPMTPublic) { p.ObjectAttributes.Restricted = false })
	pub2, err := tpm2.Unmarshal[tpm2.TPMTPublic](unrestricted.Public)
	if err != nil || pub2.ObjectAttributes.Restricted {
		t.Errorf("modify did not clear Restricted: %v", err)
	}
}
