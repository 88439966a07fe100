package tpm

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/rsa"
	"crypto/sha256"
	_ "crypto/sha512" // SHA-384 and SHA-512 schemes and PCR digests
	"crypto/subtle"
	"errors"
	"fmt"
	"math/big"
	"slices"
	"strconv"
	"strings"

	"github.com/proofline/proofline/attest"
	"github.com/proofline/proofline/verifier/ear"
)

// Check references into VERIFIER-CHECKS.md, "vTPM quote".
const (
	checkQuote     = "tpm.2" // TPMS_ATTEST: structure, magic, type, extraData
	checkSelection = "tpm.3" // PCR selection and supplied values: exact, no duplicates, bounded
	checkSignature = "tpm.4" // PCR digest, AK, signature
)

// Options are the inputs of one verification.
type Options struct {
	// ExtraData is the expected TPMS_ATTEST.extraData, attest.TPMExtraData(nonce, runtimeData).
	// Nil means no nonce is available: extraData is then not checked and nothing is recorded
	// for it, and the caller MUST treat the quote as unbound (freshness not evaluated, AK binding
	// impossible). A non-nil empty slice expects an empty extraData.
	ExtraData []byte
	// Bank is the policy's PCR bank: "sha256", "sha384" or "sha512" (SHA-1 PCRs are refused:
	// SHA-1 is not collision resistant).
	Bank string
	// PCRs is the policy's exact PCR selection in Bank (0–23, no duplicates, any order).
	PCRs []int
	// Counter, when not nil, counts the work done (for bounded-work tests).
	Counter *Counter
}

// Counter counts the work one Verify call did. Counting operations, not time, lets tests prove
// that hostile input is rejected before the expensive steps.
type Counter struct {
	// SelectionEntries counts TPMS_PCR_SELECTION entries read from the quote.
	SelectionEntries int
	// PCRValues counts supplied PCR values examined.
	PCRValues int
	// Hashes counts hash computations (the AK digest, the PCR digest, the quote digest).
	Hashes int
	// SignatureChecks counts signature verifications.
	SignatureChecks int
}

// Quote is what a verified quote established.
type Quote struct {
	// AKDigest is the SHA-256 of attest.TPM.AKPublic exactly as carried; the caller compares it
	// with the digest bound into the hardware report (VERIFIER-CHECKS "vTPM quote" 1).
	AKDigest [32]byte
	// AKAlgorithm names the AK, e.g. "ecc-nist-p256" or "rsa-2048".
	AKAlgorithm string
	// Bank is the quoted PCR bank.
	Bank string
	// PCRs are the verified values of the quoted PCRs.
	PCRs map[int][]byte
	// QualifiedSigner is the AK's qualified name as the TPM reported it.
	QualifiedSigner []byte
	// Clock is TPMS_ATTEST.clockInfo: the TPM's clock and its reset and restart counts.
	Clock ClockInfo
	// FirmwareVersion is the TPM vendor's firmware version.
	FirmwareVersion uint64
}

// Claims returns the quote as result claims. AKBound is false: only the caller, which checks
// the binding to the hardware report, may set it.
func (q *Quote) Claims() *ear.TPMClaims {
	c := &ear.TPMClaims{
		AKDigest:        ear.Hex(slices.Clone(q.AKDigest[:])),
		AKAlgorithm:     q.AKAlgorithm,
		PCRBank:         q.Bank,
		PCRs:            make(map[string]ear.Hex, len(q.PCRs)),
		FirmwareVersion: fmt.Sprintf("%016x", q.FirmwareVersion),
		ResetCount:      q.Clock.ResetCount,
		RestartCount:    q.Clock.RestartCount,
	}
	for i, v := range q.PCRs {
		c.PCRs[strconv.Itoa(i)] = ear.Hex(slices.Clone(v))
	}
	return c
}

// Bank names and TPM_ALG_IDs. PCR values in the envelope may name sha1; the policy may not.
var (
	bankAlgs   = map[string]uint16{"sha1": algSHA1, "sha256": algSHA256, "sha384": algSHA384, "sha512": algSHA512}
	bankSizes  = map[string]int{"sha1": 20, "sha256": 32, "sha384": 48, "sha512": 64}
	algHashes  = map[uint16]crypto.Hash{algSHA256: crypto.SHA256, algSHA384: crypto.SHA384, algSHA512: crypto.SHA512}
	policyBank = map[string]bool{"sha256": true, "sha384": true, "sha512": true}
)

func algName(alg uint16) string {
	for name, a := range bankAlgs {
		if a == alg {
			return name
		}
	}
	return fmt.Sprintf("alg 0x%04x", alg)
}

// Verify checks the authenticity of a vTPM quote (VERIFIER-CHECKS "vTPM quote" 2–4) and records
// every failed check it can evaluate in res. It returns the verified quote only when nothing
// failed; otherwise nil. Binding the AK to the hardware report (item 1) is the caller's: compare
// Quote.AKDigest with the digest the report vouches for. Every input is bounded before it is
// used: a malformed quote is rejected before any hash or signature is computed.
func Verify(t *attest.TPM, opts Options, res *ear.Result) *Quote {
	c := opts.Counter
	if c == nil {
		c = &Counter{}
	}
	v := &verification{opts: opts, res: res, c: c, t: t}
	before := len(res.Failures)
	q := v.run()
	if q == nil || len(res.Failures) != before {
		return nil
	}
	return q
}

type verification struct {
	opts Options
	res  *ear.Result
	c    *Counter
	t    *attest.TPM

	bankAlg uint16            // the policy's bank; 0 when the policy's bank is unusable
	want    []int             // the policy's selection, sorted; nil when unusable
	a       *Attest           // the parsed quote
	ak      *AK               // the parsed AK; nil when malformed
	values  map[pcrKey][]byte // supplied values by (bank, index), first occurrence
}

type pcrKey struct {
	alg   uint16
	index int
}

func (v *verification) fail(code ear.Code, check, format string, args ...any) {
	v.res.Fail(code, check, fmt.Sprintf(format, args...))
}

// run returns the quote's claims, or nil when a check could not be completed; Verify also
// returns nil when any failure was recorded.
func (v *verification) run() *Quote {
	t := v.t
	if t == nil {
		v.fail(ear.CodeTPMMissing, checkQuote, "no vTPM quote was supplied")
		return nil
	}
	for _, f := range []struct {
		name string
		b    []byte
	}{{"ak_public", t.AKPublic}, {"quote", t.Quote}, {"signature", t.Signature}} {
		if len(f.b) == 0 || len(f.b) > attest.MaxTPMStructSize {
			v.fail(ear.CodeTPMQuoteMalformed, checkQuote, "tpm.%s is %d bytes, not 1 to %d", f.name, len(f.b), attest.MaxTPMStructSize)
			return nil
		}
	}
	if len(t.PCRs) > attest.MaxPCRs {
		v.fail(ear.CodeTPMQuoteMalformed, checkSelection, "%d PCR values supplied, over the limit of %d", len(t.PCRs), attest.MaxPCRs)
		return nil
	}
	v.checkPolicy()

	// The quote first: nothing else is worth computing if it does not parse.
	a, err := parseAttest(t.Quote, v.c)
	notQuote := errors.Is(err, ErrNotQuote)
	if err != nil && !notQuote {
		check := checkQuote
		var pe *ParseError
		if errors.As(err, &pe) && strings.HasPrefix(pe.Field, "attested.pcrSelect") {
			check = checkSelection
		}
		v.fail(ear.CodeTPMQuoteMalformed, check, "the quote (TPMS_ATTEST) does not parse: %v", err)
		return nil
	}
	v.a = a
	if a.Magic != generatedValue {
		v.fail(ear.CodeTPMMagic, checkQuote, "TPMS_ATTEST.magic is 0x%08x, not TPM_GENERATED_VALUE (0x%08x): a TPM did not produce this structure", a.Magic, generatedValue)
	}
	if notQuote {
		v.fail(ear.CodeTPMAttestType, checkQuote, "TPMS_ATTEST.type is 0x%04x, not TPM_ST_ATTEST_QUOTE (0x%04x): the agent must send a TPM2_Quote", a.Type, stAttestQuote)
	}
	if v.opts.ExtraData != nil && subtle.ConstantTimeCompare(a.ExtraData, v.opts.ExtraData) != 1 {
		v.fail(ear.CodeTPMNonceMismatch, checkQuote, "the quote's extraData does not equal SHA-256(\"proofline/v1/tpm\" ‖ nonce ‖ SHA-256(runtime_data)): the quote was not made for this nonce and runtime data")
	}

	ak, err := ParseAK(t.AKPublic)
	if err != nil {
		v.fail(ear.CodeTPMQuoteMalformed, checkSignature, "the attestation key (ak_public): %v", err)
	} else {
		v.ak = ak
		if len(ak.Problems) > 0 {
			v.fail(ear.CodeTPMAKInvalid, checkSignature, "the attestation key is not a valid AK: %s", strings.Join(ak.Problems, "; "))
		}
	}
	sig, err := ParseSignature(t.Signature)
	if err != nil {
		v.fail(ear.CodeTPMQuoteMalformed, checkSignature, "the quote signature: %v", err)
	}

	v.checkValues()
	digestOK := false
	if !notQuote {
		v.checkSelection()
		digestOK = v.checkDigest(sig)
	}
	sigOK := sig != nil && v.checkSignature(sig)
	if notQuote || !digestOK || !sigOK {
		return nil
	}

	q := &Quote{
		AKAlgorithm:     v.ak.Algorithm,
		Bank:            v.opts.Bank,
		PCRs:            make(map[int][]byte, len(v.want)),
		QualifiedSigner: slices.Clone(a.QualifiedSigner),
		Clock:           a.Clock,
		FirmwareVersion: a.FirmwareVersion,
	}
	v.c.Hashes++
	q.AKDigest = sha256.Sum256(t.AKPublic)
	for _, i := range v.want {
		d, ok := v.values[pcrKey{v.bankAlg, i}]
		if !ok {
			return nil
		}
		q.PCRs[i] = slices.Clone(d)
	}
	return q
}

// checkPolicy validates the caller's bank and selection; a bad one is recorded (fail closed).
func (v *verification) checkPolicy() {
	bank := v.opts.Bank
	if !policyBank[bank] {
		v.fail(ear.CodeTPMPCRBank, checkSelection, "the policy's PCR bank %q is not sha256, sha384 or sha512; fix the policy's tpm.pcr_bank", bank)
	} else {
		v.bankAlg = bankAlgs[bank]
	}
	want := slices.Clone(v.opts.PCRs)
	slices.Sort(want)
	for k, i := range want {
		if i < 0 || i > maxPCR || (k > 0 && want[k-1] == i) {
			v.fail(ear.CodeTPMPCRSelection, checkSelection, "the policy's PCR selection %v is not a set of PCR indices 0–23; fix the policy's tpm.pcrs", v.opts.PCRs)
			return
		}
	}
	if len(want) == 0 {
		v.fail(ear.CodeTPMPCRSelection, checkSelection, "the policy selects no PCR; fix the policy's tpm.pcrs")
		return
	}
	v.want = want
}

// checkSelection requires the quote's TPML_PCR_SELECTION to be exactly one entry, for the
// policy's bank, selecting exactly the policy's PCRs.
func (v *verification) checkSelection() {
	var same []PCRSelection
	var others []string
	for _, s := range v.a.PCRSelections {
		if v.bankAlg != 0 && s.Hash == v.bankAlg {
			same = append(same, s)
		} else {
			others = append(others, algName(s.Hash))
		}
	}
	if len(others) > 0 && v.bankAlg != 0 {
		v.fail(ear.CodeTPMPCRBank, checkSelection, "the quote selects PCRs in bank(s) %s; the policy requires exactly one bank, %s: quote only the policy's bank", strings.Join(others, ", "), v.opts.Bank)
	}
	if v.bankAlg == 0 || v.want == nil {
		return
	}
	if len(same) == 0 {
		v.fail(ear.CodeTPMPCRBank, checkSelection, "the quote selects no PCR in bank %s, which the policy requires", v.opts.Bank)
		return
	}
	union := map[int]int{}
	for _, s := range same {
		for _, i := range s.PCRs() {
			union[i]++
		}
	}
	if len(same) > 1 {
		var twice []int
		for i, n := range union {
			if n > 1 {
				twice = append(twice, i)
			}
		}
		slices.Sort(twice)
		v.fail(ear.CodeTPMPCRDuplicate, checkSelection, "bank %s appears %d times in the quote's PCR selection (PCRs selected more than once: %v); a TPM lists each bank once", v.opts.Bank, len(same), twice)
	}
	got := make([]int, 0, len(union))
	for i := range union {
		got = append(got, i)
	}
	slices.Sort(got)
	if missing, extra := diff(v.want, got); len(missing)+len(extra) > 0 {
		v.fail(ear.CodeTPMPCRSelection, checkSelection, "the quote selects %s PCRs %v; the policy requires exactly %v (missing %v, extra %v): quote exactly the policy's PCRs", v.opts.Bank, got, v.want, missing, extra)
	}
}

// checkValues checks the supplied PCR values: each (bank, index) once, only the policy's bank,
// and exactly the PCRs the quote covers in that bank.
func (v *verification) checkValues() {
	v.values = make(map[pcrKey][]byte, len(v.t.PCRs))
	var dups []string
	otherBanks := map[string]bool{}
	for k, p := range v.t.PCRs {
		v.c.PCRValues++
		alg, known := bankAlgs[p.Bank]
		switch {
		case !known:
			otherBanks[fmt.Sprintf("%q", p.Bank)] = true
			continue
		case p.Index < 0 || p.Index > maxPCR:
			v.fail(ear.CodeTPMQuoteMalformed, checkSelection, "PCR value %d has index %d, not 0–23", k, p.Index)
			continue
		case len(p.Digest) != bankSizes[p.Bank]:
			v.fail(ear.CodeTPMQuoteMalformed, checkSelection, "PCR value %d (%s PCR %d) is %d bytes, not %d", k, p.Bank, p.Index, len(p.Digest), bankSizes[p.Bank])
			continue
		}
		if alg != v.bankAlg {
			otherBanks[p.Bank] = true
		}
		key := pcrKey{alg, p.Index}
		if _, seen := v.values[key]; seen {
			dups = append(dups, fmt.Sprintf("%s PCR %d", p.Bank, p.Index))
			continue
		}
		v.values[key] = p.Digest
	}
	if len(dups) > 0 {
		v.fail(ear.CodeTPMPCRDuplicate, checkSelection, "PCR values are supplied more than once for %s: send each PCR once", strings.Join(dups, ", "))
	}
	if len(otherBanks) > 0 && v.bankAlg != 0 {
		names := make([]string, 0, len(otherBanks))
		for b := range otherBanks {
			names = append(names, b)
		}
		slices.Sort(names)
		v.fail(ear.CodeTPMPCRBank, checkSelection, "PCR values are supplied for bank(s) %s; the policy's bank is %s: send only its values", strings.Join(names, ", "), v.opts.Bank)
	}
	if v.bankAlg == 0 {
		return
	}
	// The reference is the quote's selection in the policy's bank when it has exactly one,
	// since the PCR digest covers that; otherwise the policy's selection.
	ref := v.want
	if v.a != nil {
		var same []PCRSelection
		for _, s := range v.a.PCRSelections {
			if s.Hash == v.bankAlg {
				same = append(same, s)
			}
		}
		if len(same) == 1 {
			ref = same[0].PCRs()
		}
	}
	if ref == nil {
		return
	}
	var got []int
	for key := range v.values {
		if key.alg == v.bankAlg {
			got = append(got, key.index)
		}
	}
	slices.Sort(got)
	if missing, extra := diff(ref, got); len(missing)+len(extra) > 0 {
		v.fail(ear.CodeTPMPCRSelection, checkSelection, "PCR values are supplied for %s PCRs %v, the quote covers %v (missing %v, extra %v): send exactly the quoted PCRs' values", v.opts.Bank, got, ref, missing, extra)
	}
}

// checkDigest requires pcrDigest = H(supplied values of the quote's selection, in selection
// order), H being the signing scheme's hash (TPM 2.0 Library Part 3 §18.4, TPM2_Quote: "digest of
// the selected PCR using the hash of the signing key"). It reports whether the digest was
// evaluated and matched.
func (v *verification) checkDigest(sig *Signature) bool {
	var h crypto.Hash
	switch {
	case v.ak != nil && v.ak.SchemeHash != 0:
		h = v.ak.SchemeHash
	case sig != nil && algHashes[sig.Hash] != 0:
		h = algHashes[sig.Hash]
	default:
		return false // no usable hash: the AK or signature failure is already recorded
	}
	var concat []byte
	for _, s := range v.a.PCRSelections {
		for _, i := range s.PCRs() {
			d, ok := v.values[pcrKey{s.Hash, i}]
			if !ok {
				// Not evaluable; the missing value was recorded as a selection or bank failure.
				return false
			}
			concat = append(concat, d...)
		}
	}
	v.c.Hashes++
	w := h.New()
	w.Write(concat)
	if subtle.ConstantTimeCompare(w.Sum(nil), v.a.PCRDigest) != 1 {
		v.fail(ear.CodeTPMPCRDigest, checkSignature, "the quote's pcrDigest is not the %v of the supplied PCR values in selection order: the supplied values are not the quoted ones", h)
		return false
	}
	return true
}

// checkSignature verifies the TPMT_SIGNATURE over the quote bytes with the AK, whose scheme the
// signature must use (a restricted key always signs with its own scheme).
func (v *verification) checkSignature(sig *Signature) bool {
	if sig.Hash == algSHA1 {
		v.fail(ear.CodeTPMSignature, checkSignature, "the quote is signed with SHA-1, which is not accepted: use an AK whose scheme hash is SHA-256 or stronger")
		return false
	}
	h, ok := algHashes[sig.Hash]
	if !ok {
		v.fail(ear.CodeTPMSignature, checkSignature, "the quote signature's hash %s is not SHA-256, SHA-384 or SHA-512", algName(sig.Hash))
		return false
	}
	ak := v.ak
	if ak == nil || ak.Key == nil {
		return false // the AK failure is already recorded
	}
	if sig.Alg != ak.Scheme || h != ak.SchemeHash {
		v.fail(ear.CodeTPMSignature, checkSignature, "the signature's scheme (0x%04x, %v) is not the AK's (0x%04x, %v)", sig.Alg, h, ak.Scheme, ak.SchemeHash)
		return false
	}
	v.c.Hashes++
	w := h.New()
	w.Write(v.t.Quote)
	digest := w.Sum(nil)
	v.c.SignatureChecks++
	var ok2 bool
	switch key := ak.Key.(type) {
	case *ecdsa.PublicKey:
		r, s := new(big.Int).SetBytes(sig.R), new(big.Int).SetBytes(sig.S)
		ok2 = ecdsa.Verify(key, digest, r, s)
	case *rsa.PublicKey:
		var err error
		if sig.Alg == algRSASSA {
			err = rsa.VerifyPKCS1v15(key, h, digest, sig.RSA)
		} else {
			err = rsa.VerifyPSS(key, h, digest, sig.RSA, &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthAuto})
		}
		ok2 = err == nil
	}
	if !ok2 {
		v.fail(ear.CodeTPMSignature, checkSignature, "the quote signature does not verify with the attestation key (%s) in ak_public: the quote was signed by another key, or changed after signing", ak.Algorithm)
		return false
	}
	return true
}

// diff returns the elements of want not in got and of got not in want; both are sorted sets.
func diff(want, got []int) (missing, extra []int) {
	for _, i := range want {
		if _, found := slices.BinarySearch(got, i); !found {
			missing = append(missing, i)
		}
	}
	for _, i := range got {
		if _, found := slices.BinarySearch(want, i); !found {
			extra = append(extra, i)
		}
	}
	return missing, extra
}
