package tpm_test

// Tests that use faketpm.New share the process-wide TPM simulator: none of them may call
// t.Parallel.

import (
	"bytes"
	"crypto"
	"crypto/sha256"
	"slices"
	"testing"

	"github.com/google/go-eventlog/proto/state"
	"github.com/google/go-eventlog/register"
	"github.com/google/go-eventlog/tcg"
	"github.com/google/go-tpm/tpm2"
	"github.com/proofline/proofline/attest"
	"github.com/proofline/proofline/attest/attesttest/faketpm"
	"github.com/proofline/proofline/verifier/ear"
	"github.com/proofline/proofline/verifier/tpm"
)

var pcrs0to9 = []int{0, 1, 2, 3, 4, 5, 6, 7, 8, 9}

var (
	testNonce       = bytes.Repeat([]byte{0x4e}, attest.NonceSize)
	testRuntimeData = []byte(`{"tpm_ak_sha256":"00"}`)
)

func extraData() []byte {
	ed := attest.TPMExtraData(testNonce, testRuntimeData)
	return ed[:]
}

// measure extends some PCRs so that the quoted values are not all reset values.
func measure(f *faketpm.TPM) {
	for i := range 10 {
		d := sha256.Sum256([]byte{byte(i)})
		f.Extend(i, "sha256", d[:])
	}
}

func options(c *tpm.Counter) tpm.Options {
	return tpm.Options{ExtraData: extraData(), Bank: "sha256", PCRs: pcrs0to9, Counter: c}
}

func codes(res *ear.Result) []ear.Code {
	var out []ear.Code
	for _, f := range res.Failures {
		if !slices.Contains(out, f.Code) {
			out = append(out, f.Code)
		}
	}
	slices.Sort(out)
	return out
}

func TestVerifySimulatorQuote(t *testing.T) {
	f := faketpm.New(t)
	measure(f)
	q := f.Quote("sha256", pcrs0to9, extraData())

	var res ear.Result
	var c tpm.Counter
	got := tpm.Verify(q, options(&c), &res)
	if got == nil || len(res.Failures) != 0 {
		t.Fatalf("Verify = %v, failures %+v; want a verified quote", got, res.Failures)
	}
	if got.AKDigest != sha256.Sum256(q.AKPublic) {
		t.Errorf("AKDigest = %x, want SHA-256 of ak_public", got.AKDigest)
	}
	if got.AKAlgorithm != "ecc-nist-p256" || got.Bank != "sha256" {
		t.Errorf("AKAlgorithm, Bank = %q, %q; want ecc-nist-p256, sha256", got.AKAlgorithm, got.Bank)
	}
	want := f.PCRs("sha256", pcrs0to9)
	if len(got.PCRs) != len(want) {
		t.Fatalf("%d PCRs verified, want %d", len(got.PCRs), len(want))
	}
	for i, v := range want {
		if !bytes.Equal(got.PCRs[i], v) {
			t.Errorf("PCR %d = %x, want %x", i, got.PCRs[i], v)
		}
	}
	if c.SignatureChecks != 1 || c.SelectionEntries != 1 || c.PCRValues != 10 {
		t.Errorf("counter = %+v, want 1 signature check, 1 selection entry, 10 values", c)
	}
	claims := got.Claims()
	if claims.AKBound || claims.PCRBank != "sha256" || len(claims.PCRs) != 10 || !bytes.Equal(claims.AKDigest, got.AKDigest[:]) {
		t.Errorf("claims = %+v", claims)
	}
}

// TestVerifySchemeHashForPCRDigest quotes the SHA-384 bank with the ECDSA/SHA-256 AK: the
// simulator computes pcrDigest with the signing scheme's hash (32 bytes), not the bank's.
func TestVerifySchemeHashForPCRDigest(t *testing.T) {
	f := faketpm.New(t)
	f.Extend(0, "sha384", bytes.Repeat([]byte{1}, 48))
	q := f.Quote("sha384", []int{0, 1, 2}, extraData())
	a, err := tpm.ParseAttest(q.Quote)
	if err != nil {
		t.Fatal(err)
	}
	if len(a.PCRDigest) != sha256.Size {
		t.Fatalf("pcrDigest is %d bytes, want %d (SHA-256, the AK scheme's hash)", len(a.PCRDigest), sha256.Size)
	}
	var res ear.Result
	got := tpm.Verify(q, tpm.Options{ExtraData: extraData(), Bank: "sha384", PCRs: []int{0, 1, 2}}, &res)
	if got == nil || len(res.Failures) != 0 {
		t.Fatalf("Verify = %v, failures %+v; want a verified quote", got, res.Failures)
	}
}

func TestVerifyNilExtraDataIsNotChecked(t *testing.T) {
	f := faketpm.New(t)
	q := f.Quote("sha256", pcrs0to9, []byte("anything"))
	var res ear.Result
	opts := options(nil)
	opts.ExtraData = nil
	if got := tpm.Verify(q, opts, &res); got == nil || len(res.Failures) != 0 {
		t.Fatalf("Verify with nil ExtraData = %v, failures %+v; want verified (the caller decides)", got, res.Failures)
	}
}

// TestVerifyRejects builds each bad case from a valid simulator quote and requires exactly the
// expected codes: each defect is reported with its own code, without collateral failures.
func TestVerifyRejects(t *testing.T) {
	f := faketpm.New(t)
	measure(f)
	valid := f.Quote("sha256", pcrs0to9, extraData())
	subset := f.Quote("sha256", []int{0, 1, 2, 3, 4, 5, 6, 7}, extraData())
	sha384PCR0 := f.PCRs("sha384", []int{0})[0]
	values := f.PCRs("sha256", pcrs0to9)
	soft := faketpm.NewSoftwareAK(t, nil)

	decode := func(t *testing.T, q *attest.TPM) *faketpm.Attest {
		t.Helper()
		a, err := faketpm.DecodeAttest(q.Quote)
		if err != nil {
			t.Fatal(err)
		}
		return a
	}
	sha256Values := func(pcrs ...int) [][]byte {
		var out [][]byte
		for _, i := range pcrs {
			out = append(out, values[i])
		}
		return out
	}

	for _, tc := range []struct {
		name string
		// build returns the evidence and options of the case, from copies of the valid ones.
		build func(t *testing.T, q *attest.TPM, o *tpm.Options) *attest.TPM
		want  []ear.Code
	}{
		{
			name: "wrong nonce",
			build: func(t *testing.T, q *attest.TPM, o *tpm.Options) *attest.TPM {
				ed := attest.TPMExtraData(bytes.Repeat([]byte{1}, 32), testRuntimeData)
				o.ExtraData = ed[:]
				return q
			},
			want: []ear.Code{ear.CodeTPMNonceMismatch},
		},
		{
			name: "runtime data changed",
			build: func(t *testing.T, q *attest.TPM, o *tpm.Options) *attest.TPM {
				ed := attest.TPMExtraData(testNonce, []byte(`{}`))
				o.ExtraData = ed[:]
				return q
			},
			want: []ear.Code{ear.CodeTPMNonceMismatch},
		},
		{
			name: "PCR subset quoted",
			build: func(t *testing.T, q *attest.TPM, o *tpm.Options) *attest.TPM {
				return faketpm.Clone(subset)
			},
			want: []ear.Code{ear.CodeTPMPCRSelection},
		},
		{
			name: "policy selects fewer PCRs than quoted",
			build: func(t *testing.T, q *attest.TPM, o *tpm.Options) *attest.TPM {
				o.PCRs = []int{0, 1, 2, 3, 4, 5, 6, 7}
				return q
			},
			want: []ear.Code{ear.CodeTPMPCRSelection},
		},
		{
			name: "duplicated PCR index in the selection",
			build: func(t *testing.T, q *attest.TPM, o *tpm.Options) *attest.TPM {
				a := decode(t, q)
				a.Selections = append(a.Selections, faketpm.Selection{Hash: tpm2.TPMAlgSHA256, Select: faketpm.SelectPCRs(0)})
				a.PCRDigest = faketpm.PCRDigest(crypto.SHA256, append(sha256Values(pcrs0to9...), values[0])...)
				return soft.Resign(q, a)
			},
			want: []ear.Code{ear.CodeTPMPCRDuplicate},
		},
		{
			name: "duplicated PCR value",
			build: func(t *testing.T, q *attest.TPM, o *tpm.Options) *attest.TPM {
				q.PCRs = append(q.PCRs, q.PCRs[3])
				return q
			},
			want: []ear.Code{ear.CodeTPMPCRDuplicate},
		},
		{
			name: "extra bank in the selection",
			build: func(t *testing.T, q *attest.TPM, o *tpm.Options) *attest.TPM {
				a := decode(t, q)
				a.Selections = append(a.Selections, faketpm.Selection{Hash: tpm2.TPMAlgSHA384, Select: faketpm.SelectPCRs(0)})
				a.PCRDigest = faketpm.PCRDigest(crypto.SHA256, append(sha256Values(pcrs0to9...), sha384PCR0)...)
				q = soft.Resign(q, a)
				q.PCRs = append(q.PCRs, attest.PCR{Bank: "sha384", Index: 0, Digest: sha384PCR0})
				return q
			},
			want: []ear.Code{ear.CodeTPMPCRBank},
		},
		{
			name: "value for another bank",
			build: func(t *testing.T, q *attest.TPM, o *tpm.Options) *attest.TPM {
				q.PCRs = append(q.PCRs, attest.PCR{Bank: "sha384", Index: 0, Digest: sha384PCR0})
				return q
			},
			want: []ear.Code{ear.CodeTPMPCRBank},
		},
		{
			name: "policy bank sha1",
			build: func(t *testing.T, q *attest.TPM, o *tpm.Options) *attest.TPM {
				o.Bank = "sha1"
				return q
			},
			want: []ear.Code{ear.CodeTPMPCRBank},
		},
		{
			name: "policy on another bank than quoted",
			build: func(t *testing.T, q *attest.TPM, o *tpm.Options) *attest.TPM {
				o.Bank = "sha384"
				return q
			},
			want: []ear.Code{ear.CodeTPMPCRBank, ear.CodeTPMPCRSelection},
		},
		{
			name: "PCR value altered",
			build: func(t *testing.T, q *attest.TPM, o *tpm.Options) *attest.TPM {
				q.PCRs[3].Digest[0] ^= 1
				return q
			},
			want: []ear.Code{ear.CodeTPMPCRDigest},
		},
		{
			name: "PCR value missing",
			build: func(t *testing.T, q *attest.TPM, o *tpm.Options) *attest.TPM {
				q.PCRs = q.PCRs[1:]
				return q
			},
			want: []ear.Code{ear.CodeTPMPCRSelection},
		},
		{
			name: "PCR values out of order",
			build: func(t *testing.T, q *attest.TPM, o *tpm.Options) *attest.TPM {
				slices.Reverse(q.PCRs)
				return q
			},
			want: nil, // the envelope allows any order; the digest uses selection order
		},
		{
			name: "wrong AK",
			build: func(t *testing.T, q *attest.TPM, o *tpm.Options) *attest.TPM {
				q.AKPublic = slices.Clone(soft.Public)
				return q
			},
			want: []ear.Code{ear.CodeTPMSignature},
		},
		{
			name: "quote changed after signing",
			build: func(t *testing.T, q *attest.TPM, o *tpm.Options) *attest.TPM {
				a := decode(t, q)
				a.FirmwareVersion ^= 1
				q.Quote = a.Marshal()
				return q
			},
			want: []ear.Code{ear.CodeTPMSignature},
		},
		{
			name: "AK not restricted",
			build: func(t *testing.T, q *attest.TPM, o *tpm.Options) *attest.TPM {
				k := faketpm.NewSoftwareAK(t, func(p *tpm2.TPMTPublic) { p.ObjectAttributes.Restricted = false })
				return k.Resign(q, decode(t, q))
			},
			want: []ear.Code{ear.CodeTPMAKInvalid},
		},
		{
			name: "AK also a decryption key",
			build: func(t *testing.T, q *attest.TPM, o *tpm.Options) *attest.TPM {
				k := faketpm.NewSoftwareAK(t, func(p *tpm2.TPMTPublic) { p.ObjectAttributes.Decrypt = true })
				return k.Resign(q, decode(t, q))
			},
			want: []ear.Code{ear.CodeTPMAKInvalid},
		},
		{
			name: "AK not fixedTPM",
			build: func(t *testing.T, q *attest.TPM, o *tpm.Options) *attest.TPM {
				k := faketpm.NewSoftwareAK(t, func(p *tpm2.TPMTPublic) { p.ObjectAttributes.FixedTPM = false })
				return k.Resign(q, decode(t, q))
			},
			want: []ear.Code{ear.CodeTPMAKInvalid},
		},
		{
			name: "AK with a SHA-1 scheme",
			build: func(t *testing.T, q *attest.TPM, o *tpm.Options) *attest.TPM {
				k := faketpm.NewSoftwareAK(t, func(p *tpm2.TPMTPublic) {
					ecc, _ := p.Parameters.ECCDetail()
					ecc.Scheme.Details = tpm2.NewTPMUAsymScheme(tpm2.TPMAlgECDSA, &tpm2.TPMSSigSchemeECDSA{HashAlg: tpm2.TPMAlgSHA1})
				})
				return k.Resign(q, decode(t, q))
			},
			want: []ear.Code{ear.CodeTPMAKInvalid},
		},
		{
			name: "AK with trailing bytes",
			build: func(t *testing.T, q *attest.TPM, o *tpm.Options) *attest.TPM {
				q.AKPublic = append(q.AKPublic, 0)
				return q
			},
			want: []ear.Code{ear.CodeTPMQuoteMalformed},
		},
		{
			name: "magic altered",
			build: func(t *testing.T, q *attest.TPM, o *tpm.Options) *attest.TPM {
				a := decode(t, q)
				a.Magic ^= 0x01000000
				return soft.Resign(q, a)
			},
			want: []ear.Code{ear.CodeTPMMagic},
		},
		{
			name: "type altered",
			build: func(t *testing.T, q *attest.TPM, o *tpm.Options) *attest.TPM {
				a := decode(t, q)
				a.Type = faketpm.AttestCertify
				return soft.Resign(q, a)
			},
			want: []ear.Code{ear.CodeTPMAttestType},
		},
		{
			name: "trailing bytes after the quote",
			build: func(t *testing.T, q *attest.TPM, o *tpm.Options) *attest.TPM {
				a := decode(t, q)
				a.Trailing = []byte{0}
				return soft.Resign(q, a)
			},
			want: []ear.Code{ear.CodeTPMQuoteMalformed},
		},
		{
			name: "trailing bytes after the signature",
			build: func(t *testing.T, q *attest.TPM, o *tpm.Options) *attest.TPM {
				q.Signature = append(q.Signature, 0)
				return q
			},
			want: []ear.Code{ear.CodeTPMQuoteMalformed},
		},
		{
			name: "SHA-1 signature",
			build: func(t *testing.T, q *attest.TPM, o *tpm.Options) *attest.TPM {
				q = soft.Resign(q, decode(t, q))
				q.Signature = soft.SignWithHash(q.Quote, tpm2.TPMAlgSHA1)
				return q
			},
			want: []ear.Code{ear.CodeTPMSignature},
		},
		{
			name: "selection of 17 entries",
			build: func(t *testing.T, q *attest.TPM, o *tpm.Options) *attest.TPM {
				a := decode(t, q)
				for range 16 {
					a.Selections = append(a.Selections, a.Selections[0])
				}
				return soft.Resign(q, a)
			},
			want: []ear.Code{ear.CodeTPMQuoteMalformed},
		},
		{
			name: "selection above PCR 23",
			build: func(t *testing.T, q *attest.TPM, o *tpm.Options) *attest.TPM {
				a := decode(t, q)
				a.Selections[0].Select = append(a.Selections[0].Select, 1)
				return soft.Resign(q, a)
			},
			want: []ear.Code{ear.CodeTPMQuoteMalformed},
		},
		{
			name: "several defects at once",
			build: func(t *testing.T, q *attest.TPM, o *tpm.Options) *attest.TPM {
				a := decode(t, q)
				a.Magic = 0
				a.ExtraData = nil
				q = soft.Resign(q, a)
				q.PCRs[0].Digest[0] ^= 1
				q.Signature = faketpm.NewSoftwareAK(t, nil).Sign(q.Quote)
				return q
			},
			want: []ear.Code{ear.CodeTPMMagic, ear.CodeTPMNonceMismatch, ear.CodeTPMPCRDigest, ear.CodeTPMSignature},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			opts := options(nil)
			q := tc.build(t, faketpm.Clone(valid), &opts)
			var res ear.Result
			got := tpm.Verify(q, opts, &res)
			want := slices.Clone(tc.want)
			slices.Sort(want)
			if !slices.Equal(codes(&res), want) {
				t.Fatalf("failure codes = %v, want %v\nfailures: %+v", codes(&res), want, res.Failures)
			}
			for _, c := range tc.want {
				if !res.HasFailure(c) {
					t.Errorf("HasFailure(%s) = false", c)
				}
			}
			if (got != nil) != (len(want) == 0) {
				t.Errorf("Verify returned %v with %d failures; a quote is returned exactly when nothing failed", got, len(res.Failures))
			}
		})
	}
}

// TestVerifyBoundedSelections: a quote announcing 5,000 (duplicated) PCR selections is rejected
// when the count is read, before any entry, hash or signature check.
func TestVerifyBoundedSelections(t *testing.T) {
	soft := faketpm.NewSoftwareAK(t, nil)
	a := &faketpm.Attest{
		Magic:     faketpm.GeneratedValue,
		Type:      faketpm.AttestQuote,
		ExtraData: extraData(),
		PCRDigest: make([]byte, 32),
	}
	for range 5000 {
		a.Selections = append(a.Selections, faketpm.Selection{Hash: tpm2.TPMAlgSHA256, Select: faketpm.SelectPCRs(pcrs0to9...)})
	}
	raw := a.Marshal()
	if len(raw) > attest.MaxTPMStructSize {
		t.Fatalf("test quote is %d bytes, over the envelope's limit: it would not reach the parser", len(raw))
	}
	q := &attest.TPM{AKPublic: soft.Public, Quote: raw, Signature: soft.Sign(raw)}
	for _, i := range pcrs0to9 {
		q.PCRs = append(q.PCRs, attest.PCR{Bank: "sha256", Index: i, Digest: make([]byte, 32)})
	}
	var c tpm.Counter
	var res ear.Result
	if got := tpm.Verify(q, options(&c), &res); got != nil {
		t.Fatal("Verify accepted 5,000 selections")
	}
	if !slices.Equal(codes(&res), []ear.Code{ear.CodeTPMQuoteMalformed}) || res.Failures[0].Check != "tpm.3" {
		t.Fatalf("failures = %+v, want one tpm_quote_malformed of check tpm.3", res.Failures)
	}
	if c.SelectionEntries > 16 || c.Hashes != 0 || c.SignatureChecks != 0 || c.PCRValues != 0 {
		t.Errorf("counter = %+v: want at most 16 selection entries read and no hash, signature check or PCR value", c)
	}
}

// TestVerifyExtendedEventLog replays a real TCG event log into the simulator, quotes PCRs 0–9
// and verifies the quote; the verified PCR values are exactly what the log replays to.
func TestVerifyExtendedEventLog(t *testing.T) {
	f := faketpm.New(t)
	log := faketpm.UbuntuSEVSNPLog()
	if err := f.ExtendLog(log); err != nil {
		t.Fatal(err)
	}
	q := f.Quote("sha256", pcrs0to9, extraData())
	var res ear.Result
	got := tpm.Verify(q, options(nil), &res)
	if got == nil || len(res.Failures) != 0 {
		t.Fatalf("Verify = %v, failures %+v", got, res.Failures)
	}
	bank := register.PCRBank{TCGHashAlgo: state.HashAlgo_SHA256}
	for _, i := range pcrs0to9 {
		bank.PCRs = append(bank.PCRs, register.PCR{Index: i, Digest: got.PCRs[i], DigestAlg: crypto.SHA256})
	}
	events, err := tcg.ParseAndReplay(log, bank.MRs(), tcg.ParseOpts{})
	if err != nil {
		t.Fatalf("the log does not replay to the verified PCRs: %v", err)
	}
	if len(events) != 113 {
		t.Errorf("%d events replayed into PCRs 0–9, want 113 (every event of PCRs 0–9 in the log)", len(events))
	}
}
