package tpm_test

import (
	"crypto/rand"
	"crypto/rsa"
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-tpm/tpm2"
	"github.com/proofline/proofline/attest"
	"github.com/proofline/proofline/attest/attesttest/faketpm"
	attesttpm "github.com/proofline/proofline/attest/tpm"
	"github.com/proofline/proofline/verifier/ear"
	"github.com/proofline/proofline/verifier/tpm"
)

func validAttest() *faketpm.Attest {
	return &faketpm.Attest{
		Magic:      faketpm.GeneratedValue,
		Type:       faketpm.AttestQuote,
		ExtraData:  make([]byte, 32),
		Selections: []faketpm.Selection{{Hash: tpm2.TPMAlgSHA256, Select: faketpm.SelectPCRs(0, 1)}},
		PCRDigest:  make([]byte, 32),
	}
}

func TestParseAttestErrors(t *testing.T) {
	for _, tc := range []struct {
		name   string
		change func(a *faketpm.Attest)
		field  string
	}{
		{"qualifiedSigner over 66 bytes", func(a *faketpm.Attest) { a.QualifiedSigner = make([]byte, 67) }, "qualifiedSigner.size"},
		{"extraData over 66 bytes", func(a *faketpm.Attest) { a.ExtraData = make([]byte, 67) }, "extraData.size"},
		{"safe not a TPMI_YES_NO", func(a *faketpm.Attest) { a.Safe = 2 }, "clockInfo.safe"},
		{"17 selections", func(a *faketpm.Attest) {
			for range 16 {
				a.Selections = append(a.Selections, a.Selections[0])
			}
		}, "attested.pcrSelect.count"},
		{"sizeofSelect 2", func(a *faketpm.Attest) { a.Selections[0].Select = []byte{1, 0} }, "attested.pcrSelect[0].sizeofSelect"},
		{"sizeofSelect 5", func(a *faketpm.Attest) { a.Selections[0].Select = make([]byte, 5) }, "attested.pcrSelect[0].sizeofSelect"},
		{"PCR 24 selected", func(a *faketpm.Attest) { a.Selections[0].Select = []byte{1, 0, 0, 1} }, "attested.pcrSelect[0].pcrSelect"},
		{"pcrDigest over 64 bytes", func(a *faketpm.Attest) { a.PCRDigest = make([]byte, 65) }, "attested.pcrDigest.size"},
		{"trailing byte", func(a *faketpm.Attest) { a.Trailing = []byte{0} }, "(end)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := validAttest()
			tc.change(a)
			_, err := tpm.ParseAttest(a.Marshal())
			var pe *tpm.ParseError
			if !errors.As(err, &pe) || !errors.Is(err, tpm.ErrMalformed) {
				t.Fatalf("ParseAttest = %v, want a *ParseError wrapping ErrMalformed", err)
			}
			if pe.Field != tc.field || pe.Struct != "TPMS_ATTEST" {
				t.Errorf("error names %s.%s, want TPMS_ATTEST.%s (%v)", pe.Struct, pe.Field, tc.field, err)
			}
		})
	}

	// Every truncation is an error, never a panic or a shorter quote.
	raw := validAttest().Marshal()
	for n := range len(raw) {
		if _, err := tpm.ParseAttest(raw[:n]); !errors.Is(err, tpm.ErrMalformed) {
			t.Fatalf("ParseAttest of %d of %d bytes = %v, want ErrMalformed", n, len(raw), err)
		}
	}
}

func TestParseAttestNotQuote(t *testing.T) {
	a := validAttest()
	a.Type = faketpm.AttestCertify
	a.ExtraData = []byte("x")
	got, err := tpm.ParseAttest(a.Marshal())
	if !errors.Is(err, tpm.ErrNotQuote) {
		t.Fatalf("ParseAttest = %v, want ErrNotQuote", err)
	}
	if got == nil || got.Type != faketpm.AttestCertify || string(got.ExtraData) != "x" {
		t.Fatalf("header = %+v, want the parsed header", got)
	}
}

func TestParseAttestValid(t *testing.T) {
	a := validAttest()
	a.Selections[0].Select = []byte{3, 0, 0, 0} // 4-byte selections are valid up to PCR 23
	got, err := tpm.ParseAttest(a.Marshal())
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(got.PCRSelections[0].PCRs(), []int{0, 1}) {
		t.Errorf("PCRs() = %v, want [0 1]", got.PCRSelections[0].PCRs())
	}
}

func TestParseSignatureErrors(t *testing.T) {
	for _, tc := range []struct {
		name  string
		b     []byte
		field string
	}{
		{"HMAC", []byte{0, 0x05, 0, 0x0b}, "sigAlg"},
		{"NULL", []byte{0, 0x10, 0, 0x0b}, "sigAlg"},
		{"ECDSA r over 48 bytes", append([]byte{0, 0x18, 0, 0x0b, 0, 49}, make([]byte, 49)...), "signature.signatureR.size"},
		{"ECDSA without s", []byte{0, 0x18, 0, 0x0b, 0, 1, 1}, "signature.signatureS.size"},
		{"RSA over 512 bytes", append([]byte{0, 0x14, 0, 0x0b, 2, 1}, make([]byte, 513)...), "signature.sig.size"},
		{"trailing byte", []byte{0, 0x14, 0, 0x0b, 0, 1, 1, 0}, "(end)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := tpm.ParseSignature(tc.b)
			var pe *tpm.ParseError
			if !errors.As(err, &pe) || pe.Field != tc.field {
				t.Fatalf("ParseSignature = %v, want an error in %s", err, tc.field)
			}
		})
	}
}

func rsaTemplate(scheme tpm2.TPMAlgID, bits int) tpm2.TPMTPublic {
	var details tpm2.TPMUAsymScheme
	if scheme == tpm2.TPMAlgRSASSA {
		details = tpm2.NewTPMUAsymScheme(scheme, &tpm2.TPMSSigSchemeRSASSA{HashAlg: tpm2.TPMAlgSHA256})
	} else {
		details = tpm2.NewTPMUAsymScheme(scheme, &tpm2.TPMSSigSchemeRSAPSS{HashAlg: tpm2.TPMAlgSHA256})
	}
	return tpm2.TPMTPublic{
		Type:    tpm2.TPMAlgRSA,
		NameAlg: tpm2.TPMAlgSHA256,
		ObjectAttributes: tpm2.TPMAObject{
			FixedTPM: true, FixedParent: true, SensitiveDataOrigin: true, UserWithAuth: true,
			Restricted: true, SignEncrypt: true,
		},
		Parameters: tpm2.NewTPMUPublicParms(tpm2.TPMAlgRSA, &tpm2.TPMSRSAParms{
			Symmetric: tpm2.TPMTSymDefObject{Algorithm: tpm2.TPMAlgNull},
			Scheme:    tpm2.TPMTRSAScheme{Scheme: scheme, Details: details},
			KeyBits:   tpm2.TPMIRSAKeyBits(bits),
		}),
		Unique: tpm2.NewTPMUPublicID(tpm2.TPMAlgRSA, &tpm2.TPM2BPublicKeyRSA{Buffer: make([]byte, bits/8)}),
	}
}

// TestVerifyRSAAK quotes with RSA-2048 AKs (RSASSA and RSAPSS) created in the simulator.
func TestVerifyRSAAK(t *testing.T) {
	f := faketpm.New(t)
	for _, scheme := range []tpm2.TPMAlgID{tpm2.TPMAlgRSASSA, tpm2.TPMAlgRSAPSS} {
		rsp, err := tpm2.CreatePrimary{
			PrimaryHandle: tpm2.AuthHandle{Handle: tpm2.TPMRHEndorsement, Auth: tpm2.PasswordAuth(nil)},
			InPublic:      tpm2.New2B(rsaTemplate(scheme, 2048)),
		}.Execute(f.Transport())
		if err != nil {
			t.Fatal(err)
		}
		ak := &attesttpm.AK{Handle: rsp.ObjectHandle, Name: rsp.Name, Public: rsp.OutPublic.Bytes()}
		q, err := attesttpm.Quote(f.Transport(), ak, "sha256", pcrs0to9, extraData())
		if err != nil {
			t.Fatal(err)
		}
		var res ear.Result
		got := tpm.Verify(q, options(nil), &res)
		if got == nil || got.AKAlgorithm != "rsa-2048" {
			t.Fatalf("scheme 0x%04x: Verify = %+v, failures %+v", scheme, got, res.Failures)
		}
		bad := faketpm.Clone(q)
		bad.Signature[len(bad.Signature)-1] ^= 1
		res = ear.Result{}
		if tpm.Verify(bad, options(nil), &res) != nil || !res.HasFailure(ear.CodeTPMSignature) {
			t.Errorf("scheme 0x%04x: a flipped signature bit gives %+v, want tpm_signature_invalid", scheme, res.Failures)
		}
		if err := ak.Close(f.Transport()); err != nil {
			t.Fatal(err)
		}
	}
}

func TestParseAKJudgesRSA(t *testing.T) {
	key, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Fatal(err)
	}
	small := rsaTemplate(tpm2.TPMAlgRSASSA, 1024)
	small.Unique = tpm2.NewTPMUPublicID(tpm2.TPMAlgRSA, &tpm2.TPM2BPublicKeyRSA{Buffer: key.N.Bytes()})
	ak, err := tpm.ParseAK(tpm2.Marshal(small))
	if err != nil {
		t.Fatal(err)
	}
	if ak.Key != nil || len(ak.Problems) == 0 || !strings.Contains(strings.Join(ak.Problems, ";"), "1024") {
		t.Errorf("RSA-1024 AK judged %+v, want unusable with a key-size problem", ak)
	}

	// An AK with trailing bytes or a truncated buffer is malformed, not merely invalid.
	good := faketpm.NewSoftwareAK(t, nil).Public
	for _, b := range [][]byte{append(slices.Clone(good), 0), good[:len(good)-1], good[:3]} {
		if _, err := tpm.ParseAK(b); !errors.Is(err, tpm.ErrMalformed) {
			t.Errorf("ParseAK(%d bytes) = %v, want ErrMalformed", len(b), err)
		}
	}
}

// TestVerifyInputBounds: oversized or empty structures and too many PCR values are rejected
// before any parsing.
func TestVerifyInputBounds(t *testing.T) {
	q := softQuote(t)
	for _, tc := range []struct {
		name   string
		change func(q *attest.TPM)
	}{
		{"empty quote", func(q *attest.TPM) { q.Quote = nil }},
		{"huge signature", func(q *attest.TPM) { q.Signature = make([]byte, attest.MaxTPMStructSize+1) }},
		{"too many PCR values", func(q *attest.TPM) {
			for len(q.PCRs) <= attest.MaxPCRs {
				q.PCRs = append(q.PCRs, q.PCRs[0])
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			in := faketpm.Clone(q)
			tc.change(in)
			var c tpm.Counter
			var res ear.Result
			if tpm.Verify(in, options(&c), &res) != nil || !slices.Equal(codes(&res), []ear.Code{ear.CodeTPMQuoteMalformed}) {
				t.Fatalf("failures %+v, want tpm_quote_malformed", res.Failures)
			}
			if c != (tpm.Counter{}) {
				t.Errorf("counter %+v, want no work", c)
			}
		})
	}
	var res ear.Result
	if tpm.Verify(nil, options(nil), &res) != nil || !res.HasFailure(ear.CodeTPMMissing) {
		t.Errorf("Verify(nil) failures %+v, want tpm_missing", res.Failures)
	}
}
