package tpm_test

import (
	"bytes"
	"crypto"
	"errors"
	"testing"

	"github.com/google/go-tpm/tpm2"
	"github.com/proofline/proofline/attest"
	"github.com/proofline/proofline/attest/attesttest/faketpm"
	"github.com/proofline/proofline/verifier/ear"
	"github.com/proofline/proofline/verifier/tpm"
)

// softQuote builds a valid quote signed by a software AK, without the simulator, so that fuzz
// seeds need no cgo device.
func softQuote(t testing.TB) *attest.TPM {
	soft := faketpm.NewSoftwareAK(t, nil)
	q := &attest.TPM{}
	var values [][]byte
	for _, i := range pcrs0to9 {
		d := bytes.Repeat([]byte{byte(i)}, 32)
		values = append(values, d)
		q.PCRs = append(q.PCRs, attest.PCR{Bank: "sha256", Index: i, Digest: d})
	}
	a := &faketpm.Attest{
		Magic:           faketpm.GeneratedValue,
		Type:            faketpm.AttestQuote,
		QualifiedSigner: append([]byte{0, 0x0b}, make([]byte, 32)...),
		ExtraData:       extraData(),
		Clock:           1234,
		Safe:            1,
		FirmwareVersion: 0x2000,
		Selections:      []faketpm.Selection{{Hash: tpm2.TPMAlgSHA256, Select: faketpm.SelectPCRs(pcrs0to9...)}},
		PCRDigest:       faketpm.PCRDigest(crypto.SHA256, values...),
	}
	return soft.Resign(q, a)
}

func TestSoftQuoteVerifies(t *testing.T) {
	var res ear.Result
	if got := tpm.Verify(softQuote(t), options(nil), &res); got == nil || len(res.Failures) != 0 {
		t.Fatalf("Verify = %v, failures %+v", got, res.Failures)
	}
}

// FuzzVerify: no input panics, and a quote is returned exactly when no failure was recorded.
func FuzzVerify(f *testing.F) {
	q := softQuote(f)
	f.Add(q.AKPublic, q.Quote, q.Signature)
	f.Add(q.AKPublic, append(q.Quote, 0), q.Signature)
	f.Add([]byte{0, 1}, []byte{0xff, 0x54, 0x43, 0x47, 0x80, 0x18}, []byte{0, 0x18, 0, 0x0b})
	f.Fuzz(func(t *testing.T, ak, quote, sig []byte) {
		in := faketpm.Clone(q)
		in.AKPublic, in.Quote, in.Signature = ak, quote, sig
		var res ear.Result
		var c tpm.Counter
		opts := options(&c)
		got := tpm.Verify(in, opts, &res)
		if (got != nil) == (len(res.Failures) > 0) {
			t.Fatalf("Verify returned %v with failures %+v", got, res.Failures)
		}
		if c.SelectionEntries > 16 || c.SignatureChecks > 1 {
			t.Fatalf("unbounded work: %+v", c)
		}
	})
}

// FuzzParseAttest: no input panics, and whatever parses re-encodes to exactly its input (one
// quote, one meaning).
func FuzzParseAttest(f *testing.F) {
	f.Add(softQuote(f).Quote)
	f.Add([]byte{})
	f.Add([]byte{0xff, 0x54, 0x43, 0x47, 0x80, 0x17})
	f.Fuzz(func(t *testing.T, b []byte) {
		a, err := tpm.ParseAttest(b)
		if err != nil {
			var pe *tpm.ParseError
			if !errors.As(err, &pe) {
				t.Fatalf("error %v is not a *ParseError", err)
			}
			if !errors.Is(err, tpm.ErrMalformed) && !errors.Is(err, tpm.ErrNotQuote) {
				t.Fatalf("error %v wraps neither ErrMalformed nor ErrNotQuote", err)
			}
			return
		}
		if !bytes.Equal(encode(a), b) {
			t.Fatalf("%x parses but re-encodes to %x", b, encode(a))
		}
	})
}

// FuzzParseSignature: no input panics, and whatever parses re-encodes to exactly its input.
func FuzzParseSignature(f *testing.F) {
	f.Add(softQuote(f).Signature)
	f.Add([]byte{0, 0x14, 0, 0x0b, 0, 1, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		s, err := tpm.ParseSignature(b)
		if err != nil {
			return
		}
		var want []byte
		if s.Alg == 0x0018 {
			want = tpm2.Marshal(tpm2.TPMTSignature{SigAlg: tpm2.TPMAlgECDSA, Signature: tpm2.NewTPMUSignature(tpm2.TPMAlgECDSA,
				&tpm2.TPMSSignatureECC{Hash: tpm2.TPMAlgID(s.Hash), SignatureR: tpm2.TPM2BECCParameter{Buffer: s.R}, SignatureS: tpm2.TPM2BECCParameter{Buffer: s.S}})})
		} else {
			alg := tpm2.TPMAlgID(s.Alg)
			want = tpm2.Marshal(tpm2.TPMTSignature{SigAlg: alg, Signature: tpm2.NewTPMUSignature(alg,
				&tpm2.TPMSSignatureRSA{Hash: tpm2.TPMAlgID(s.Hash), Sig: tpm2.TPM2BPublicKeyRSA{Buffer: s.RSA}})})
		}
		if !bytes.Equal(want, b) {
			t.Fatalf("%x parses but re-encodes to %x", b, want)
		}
	})
}

// FuzzParseAK: no input panics; an accepted key has an algorithm exactly when it has a key.
func FuzzParseAK(f *testing.F) {
	f.Add(softQuote(f).AKPublic)
	f.Fuzz(func(t *testing.T, b []byte) {
		ak, err := tpm.ParseAK(b)
		if err != nil {
			return
		}
		if (ak.Key == nil) != (ak.Algorithm == "") {
			t.Fatalf("key %v with algorithm %q", ak.Key, ak.Algorithm)
		}
	})
}

// encode re-encodes a parsed quote with faketpm's independent encoder.
func encode(a *tpm.Attest) []byte {
	fa := &faketpm.Attest{
		Magic:           a.Magic,
		Type:            a.Type,
		QualifiedSigner: a.QualifiedSigner,
		ExtraData:       a.ExtraData,
		Clock:           a.Clock.Clock,
		ResetCount:      a.Clock.ResetCount,
		RestartCount:    a.Clock.RestartCount,
		FirmwareVersion: a.FirmwareVersion,
		PCRDigest:       a.PCRDigest,
	}
	if a.Clock.Safe {
		fa.Safe = 1
	}
	for _, s := range a.PCRSelections {
		fa.Selections = append(fa.Selections, faketpm.Selection{Hash: tpm2.TPMAlgID(s.Hash), Select: s.Select})
	}
	return fa.Marshal()
}
