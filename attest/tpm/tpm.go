// Package tpm collects a vTPM quote inside the confidential VM: it opens the TPM, creates the
// attestation key (AK) and quotes a PCR selection into an attest.TPM ready for the evidence
// envelope. It is device code: the verifier never imports it.
//
// Wire formats are those of the TPM 2.0 Library, Part 2 "Structures" and Part 3 "Commands"
// (https://trustedcomputinggroup.org/resource/tpm-library-specification/); every structure in
// the returned attest.TPM is carried exactly as the TPM marshalled it.
package tpm

import (
	"bytes"
	"crypto"
	_ "crypto/sha256" // the PCR digest check of Quote hashes with the AK's scheme hash
	_ "crypto/sha512"
	"errors"
	"fmt"
	"io/fs"
	"slices"

	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"
	"github.com/google/go-tpm/tpm2/transport/linuxtpm"
	"github.com/proofline/proofline/attest"
)

// ErrNoTPM is wrapped by Open when neither TPM device exists.
var ErrNoTPM = errors.New("no TPM device")

// Open opens the VM's TPM: the kernel's resource manager /dev/tpmrm0 (it lets the agent share
// the TPM with other users), else the raw device /dev/tpm0. A device that exists but cannot be
// opened is an error, never a silent fall-back.
func Open() (transport.TPMCloser, error) {
	return openFirst([]string{"/dev/tpmrm0", "/dev/tpm0"})
}

func openFirst(paths []string) (transport.TPMCloser, error) {
	var errs []error
	for _, p := range paths {
		t, err := linuxtpm.Open(p)
		if err == nil {
			return t, nil
		}
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		// The device exists but cannot be used: say so rather than falling back silently.
		errs = append(errs, fmt.Errorf("%s: %w", p, err))
	}
	if len(errs) == 0 {
		return nil, fmt.Errorf("%w: none of %v exists; enable the VM's vTPM (or run without one), and check that the tpm_crb/tpm_tis driver is loaded", ErrNoTPM, paths)
	}
	return nil, fmt.Errorf("cannot open the TPM (run the agent as a user with read-write access to the device, e.g. in group tss): %w", errors.Join(errs...))
}

// AK is an attestation key loaded in the TPM.
type AK struct {
	// Handle is the transient handle of the loaded key.
	Handle tpm2.TPMHandle
	// Name is the key's TPM name (nameAlg ‖ H(TPMT_PUBLIC)).
	Name tpm2.TPM2BName
	// Public is the key's TPMT_PUBLIC exactly as the TPM returned it; it goes into the envelope
	// as tpm.ak_public and its SHA-256 into runtime_data.
	Public []byte
}

// AKTemplate is the AK's public template: an ECC NIST P-256 restricted signing key with the
// ECDSA/SHA-256 scheme, fixedTPM and fixedParent, whose private part the TPM generated. It is
// go-tpm-tools' client.AKTemplateECC in go-tpm's tpm2 types. "restricted" is what makes a quote
// trustworthy: a restricted key signs only digests the TPM computed itself over data that does
// not start with TPM_GENERATED_VALUE, so it cannot sign a forged TPMS_ATTEST (Part 1, §25.2.3).
func AKTemplate() tpm2.TPMTPublic {
	return tpm2.TPMTPublic{
		Type:    tpm2.TPMAlgECC,
		NameAlg: tpm2.TPMAlgSHA256,
		ObjectAttributes: tpm2.TPMAObject{
			FixedTPM:            true,
			FixedParent:         true,
			SensitiveDataOrigin: true,
			UserWithAuth:        true,
			Restricted:          true,
			SignEncrypt:         true,
		},
		Parameters: tpm2.NewTPMUPublicParms(tpm2.TPMAlgECC, &tpm2.TPMSECCParms{
			Symmetric: tpm2.TPMTSymDefObject{Algorithm: tpm2.TPMAlgNull},
			Scheme: tpm2.TPMTECCScheme{
				Scheme:  tpm2.TPMAlgECDSA,
				Details: tpm2.NewTPMUAsymScheme(tpm2.TPMAlgECDSA, &tpm2.TPMSSigSchemeECDSA{HashAlg: tpm2.TPMAlgSHA256}),
			},
			CurveID: tpm2.TPMECCNistP256,
			KDF:     tpm2.TPMTKDFScheme{Scheme: tpm2.TPMAlgNull},
		}),
		Unique: tpm2.NewTPMUPublicID(tpm2.TPMAlgECC, &tpm2.TPMSECCPoint{
			X: tpm2.TPM2BECCParameter{Buffer: make([]byte, 32)},
			Y: tpm2.TPM2BECCParameter{Buffer: make([]byte, 32)},
		}),
	}
}

// CreateAK creates the AK (AKTemplate) as a primary key of the endorsement hierarchy. A primary
// key is derived from the hierarchy's seed and the template, so the same TPM always yields the
// same AK until its endorsement seed changes. The caller must Close the AK.
func CreateAK(t transport.TPM) (*AK, error) {
	rsp, err := tpm2.CreatePrimary{
		PrimaryHandle: tpm2.AuthHandle{Handle: tpm2.TPMRHEndorsement, Auth: tpm2.PasswordAuth(nil)},
		InPublic:      tpm2.New2B(AKTemplate()),
	}.Execute(t)
	if err != nil {
		return nil, fmt.Errorf("creating the attestation key under the endorsement hierarchy (TPM2_CreatePrimary): %w", err)
	}
	return &AK{Handle: rsp.ObjectHandle, Name: rsp.Name, Public: slices.Clone(rsp.OutPublic.Bytes())}, nil
}

// Close flushes the AK from the TPM.
func (ak *AK) Close(t transport.TPM) error {
	if _, err := (tpm2.FlushContext{FlushHandle: ak.Handle}).Execute(t); err != nil {
		return fmt.Errorf("flushing the attestation key 0x%08x: %w", uint32(ak.Handle), err)
	}
	return nil
}

// banks maps the envelope's PCR bank names to TPM hash algorithms.
var banks = map[string]tpm2.TPMAlgID{
	"sha1":   tpm2.TPMAlgSHA1,
	"sha256": tpm2.TPMAlgSHA256,
	"sha384": tpm2.TPMAlgSHA384,
	"sha512": tpm2.TPMAlgSHA512,
}

// BankAlg returns the TPM hash algorithm of a PCR bank name ("sha256" …).
func BankAlg(bank string) (tpm2.TPMAlgID, bool) {
	alg, ok := banks[bank]
	return alg, ok
}

// maxQuoteAttempts bounds how often Quote re-reads the PCRs when one changed between the read
// and the quote.
const maxQuoteAttempts = 4

// ErrPCRsChanging is wrapped by Quote when the quoted PCRs kept changing between reading them
// and quoting them.
var ErrPCRsChanging = errors.New("PCRs changed while being quoted")

// Quote quotes PCRs of one bank with the AK, binding extraData (at most 64 bytes; the agent
// passes attest.TPMExtraData). TPM2_PCR_Read returns at most 8 PCRs per call, so the values are
// read in several calls; a PCR extended between those reads and TPM2_Quote would make the values
// disagree with the quote's pcrDigest, so Quote recomputes the digest from the values read and
// retries when it differs.
func Quote(t transport.TPM, ak *AK, bank string, pcrs []int, extraData []byte) (*attest.TPM, error) {
	alg, ok := banks[bank]
	if !ok {
		return nil, fmt.Errorf("PCR bank %q is not one of sha1, sha256, sha384, sha512", bank)
	}
	if len(extraData) > 64 {
		return nil, fmt.Errorf("extraData is %d bytes; TPM2_Quote takes at most 64 (TPM2B_DATA)", len(extraData))
	}
	sel, err := sortedSelection(pcrs)
	if err != nil {
		return nil, err
	}
	akPub, err := tpm2.Unmarshal[tpm2.TPMTPublic](ak.Public)
	if err != nil {
		return nil, fmt.Errorf("the AK's public area does not parse: %w", err)
	}
	schemeHash, err := signingHash(akPub)
	if err != nil {
		return nil, err
	}
	for range maxQuoteAttempts {
		values, err := ReadPCRs(t, bank, sel)
		if err != nil {
			return nil, err
		}
		rsp, err := tpm2.Quote{
			SignHandle:     tpm2.AuthHandle{Handle: ak.Handle, Name: ak.Name, Auth: tpm2.PasswordAuth(nil)},
			QualifyingData: tpm2.TPM2BData{Buffer: extraData},
			InScheme:       tpm2.TPMTSigScheme{Scheme: tpm2.TPMAlgNull},
			PCRSelect:      selection(alg, sel),
		}.Execute(t)
		if err != nil {
			return nil, fmt.Errorf("TPM2_Quote: %w", err)
		}
		quoted := rsp.Quoted.Bytes()
		att, err := rsp.Quoted.Contents()
		if err != nil {
			return nil, fmt.Errorf("the TPM returned a TPMS_ATTEST that does not parse: %w", err)
		}
		info, err := att.Attested.Quote()
		if err != nil {
			return nil, fmt.Errorf("the TPM returned a TPMS_ATTEST that is not a quote: %w", err)
		}
		// TPM2_Quote hashes the selected PCRs with the signing scheme's hash (Part 3, §18.4).
		h := schemeHash.New()
		for _, i := range sel {
			h.Write(values[i])
		}
		if !bytes.Equal(h.Sum(nil), info.PCRDigest.Buffer) {
			continue // a PCR was extended between the read and the quote
		}
		out := &attest.TPM{
			AKPublic:  slices.Clone(ak.Public),
			Quote:     slices.Clone(quoted),
			Signature: tpm2.Marshal(rsp.Signature),
		}
		for _, i := range sel {
			out.PCRs = append(out.PCRs, attest.PCR{Bank: bank, Index: i, Digest: values[i]})
		}
		return out, nil
	}
	return nil, fmt.Errorf("%w: the %s PCRs %v changed between reading and quoting %d times in a row; retry once measured boot has settled", ErrPCRsChanging, bank, sel, maxQuoteAttempts)
}

// ReadPCRs reads PCRs of one bank, looping because TPM2_PCR_Read returns at most 8 digests per
// call (Part 3, §22.4: the TPM returns a prefix of the selection that fits its response).
func ReadPCRs(t transport.TPM, bank string, pcrs []int) (map[int][]byte, error) {
	alg, ok := banks[bank]
	if !ok {
		return nil, fmt.Errorf("PCR bank %q is not one of sha1, sha256, sha384, sha512", bank)
	}
	want, err := sortedSelection(pcrs)
	if err != nil {
		return nil, err
	}
	size, _ := hashSize(alg)
	values := make(map[int][]byte, len(want))
	remaining := want
	for len(remaining) > 0 {
		rsp, err := tpm2.PCRRead{PCRSelectionIn: selection(alg, remaining)}.Execute(t)
		if err != nil {
			return nil, fmt.Errorf("TPM2_PCR_Read of %s PCRs %v: %w", bank, remaining, err)
		}
		got, err := selected(rsp.PCRSelectionOut, alg)
		if err != nil {
			return nil, err
		}
		if len(got) != len(rsp.PCRValues.Digests) {
			return nil, fmt.Errorf("TPM2_PCR_Read returned %d digests for %d selected PCRs", len(rsp.PCRValues.Digests), len(got))
		}
		if len(got) == 0 {
			return nil, fmt.Errorf("the TPM returned no value for %s PCRs %v: is the %s bank allocated? (tpm2_getcap pcrs)", bank, remaining, bank)
		}
		for k, i := range got {
			if !slices.Contains(remaining, i) {
				return nil, fmt.Errorf("TPM2_PCR_Read returned PCR %d, which was not asked for", i)
			}
			d := rsp.PCRValues.Digests[k].Buffer
			if len(d) != size {
				return nil, fmt.Errorf("TPM2_PCR_Read returned a %d-byte value for %s PCR %d", len(d), bank, i)
			}
			values[i] = slices.Clone(d)
		}
		remaining = slices.DeleteFunc(remaining, func(i int) bool { return values[i] != nil })
	}
	return values, nil
}

// sortedSelection checks PCR indices (0–23, no duplicates, at least one) and returns them sorted.
func sortedSelection(pcrs []int) ([]int, error) {
	if len(pcrs) == 0 {
		return nil, errors.New("no PCRs to quote: give the policy's PCR selection")
	}
	sel := slices.Clone(pcrs)
	slices.Sort(sel)
	for k, i := range sel {
		if i < 0 || i > 23 {
			return nil, fmt.Errorf("%d is not a PCR index (0–23)", i)
		}
		if k > 0 && sel[k-1] == i {
			return nil, fmt.Errorf("PCR %d is listed twice", i)
		}
	}
	return sel, nil
}

func selection(alg tpm2.TPMAlgID, pcrs []int) tpm2.TPMLPCRSelection {
	u := make([]uint, len(pcrs))
	for k, i := range pcrs {
		u[k] = uint(i)
	}
	return tpm2.TPMLPCRSelection{PCRSelections: []tpm2.TPMSPCRSelection{{Hash: alg, PCRSelect: tpm2.PCClientCompatible.PCRs(u...)}}}
}

// selected returns the PCR indices a TPML_PCR_SELECTION selects in one bank, ascending.
func selected(sel tpm2.TPMLPCRSelection, alg tpm2.TPMAlgID) ([]int, error) {
	var out []int
	for _, s := range sel.PCRSelections {
		if s.Hash != alg {
			if !allZero(s.PCRSelect) {
				return nil, fmt.Errorf("TPM2_PCR_Read returned PCRs of bank 0x%04x, which was not asked for", uint16(s.Hash))
			}
			continue
		}
		for byteIdx, b := range s.PCRSelect {
			for bit := range 8 {
				if b&(1<<bit) != 0 {
					out = append(out, byteIdx*8+bit)
				}
			}
		}
	}
	return out, nil
}

func allZero(b []byte) bool {
	for _, x := range b {
		if x != 0 {
			return false
		}
	}
	return true
}

func hashSize(alg tpm2.TPMAlgID) (int, bool) {
	h, err := alg.Hash()
	if err != nil {
		return 0, false
	}
	return h.Size(), true
}

// signingHash returns the hash of a signing key's scheme, which TPM2_Quote also uses for the
// PCR digest.
func signingHash(pub *tpm2.TPMTPublic) (crypto.Hash, error) {
	var hashAlg tpm2.TPMAlgID
	switch pub.Type {
	case tpm2.TPMAlgECC:
		p, err := pub.Parameters.ECCDetail()
		if err != nil {
			return 0, fmt.Errorf("the AK's ECC parameters: %w", err)
		}
		s, err := p.Scheme.Details.ECDSA()
		if err != nil {
			return 0, fmt.Errorf("the AK has no ECDSA scheme: %w", err)
		}
		hashAlg = s.HashAlg
	case tpm2.TPMAlgRSA:
		p, err := pub.Parameters.RSADetail()
		if err != nil {
			return 0, fmt.Errorf("the AK's RSA parameters: %w", err)
		}
		switch p.Scheme.Scheme {
		case tpm2.TPMAlgRSASSA:
			s, err := p.Scheme.Details.RSASSA()
			if err != nil {
				return 0, err
			}
			hashAlg = s.HashAlg
		case tpm2.TPMAlgRSAPSS:
			s, err := p.Scheme.Details.RSAPSS()
			if err != nil {
				return 0, err
			}
			hashAlg = s.HashAlg
		default:
			return 0, fmt.Errorf("the AK's RSA scheme 0x%04x is neither RSASSA nor RSAPSS", uint16(p.Scheme.Scheme))
		}
	default:
		return 0, fmt.Errorf("the AK's type 0x%04x is neither ECC nor RSA", uint16(pub.Type))
	}
	h, err := hashAlg.Hash()
	if err != nil {
		return 0, fmt.Errorf("the AK's scheme hash 0x%04x: %w", uint16(hashAlg), err)
	}
	return h, nil
}
