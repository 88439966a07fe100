// Package tpm checks the authenticity of a vTPM quote: that a TPMS_ATTEST of type quote was
// signed by the attestation key (AK) carried with it, that the AK is a restricted signing key
// that never leaves its TPM, that the quote covers exactly the policy's PCR selection, that the
// supplied PCR values are the quoted ones, and that its extraData is the nonce binding
// (VERIFIER-CHECKS.md, "vTPM quote", items 2–4). Whether the PCR values are acceptable is the
// policy package's decision; whether the event log replays to them is the eventlog package's.
//
// # Contract
//
// Verify(t, opts, res) records every failed check it can evaluate in res, with these codes and
// check names, and returns a *Quote only when none failed:
//
//	tpm.2  tpm_quote_malformed    a structure breaks strict parsing (TPMS_ATTEST, TPMT_SIGNATURE, TPMT_PUBLIC)
//	tpm.2  tpm_magic              TPMS_ATTEST.magic is not TPM_GENERATED_VALUE (0xff544347)
//	tpm.2  tpm_attest_type        TPMS_ATTEST.type is not TPM_ST_ATTEST_QUOTE (0x8018)
//	tpm.2  tpm_nonce_mismatch     extraData is not opts.ExtraData (not checked when opts.ExtraData is nil)
//	tpm.3  tpm_pcr_duplicate      a bank twice in the selection; a (bank, PCR) twice in the values
//	tpm.3  tpm_pcr_bank           the selection or the values name a bank other than the policy's
//	tpm.3  tpm_pcr_selection      a PCR missing or extra: in the selection (vs the policy), in the values (vs the quote)
//	tpm.4  tpm_pcr_digest         pcrDigest is not H(values in selection order), H the AK scheme's hash
//	tpm.4  tpm_ak_invalid         the AK is not a restricted, fixedTPM, fixedParent, TPM-generated signing key
//	                              (or is also a decryption key, or of an unsupported algorithm)
//	tpm.4  tpm_signature_invalid  the signature does not verify with the AK, is SHA-1, or is not the AK's scheme
//
// Binding the AK to the hardware report (item 1) is the caller's: it compares Quote.AKDigest,
// the SHA-256 of ak_public exactly as carried, with the digest that runtime_data names and
// REPORT_DATA vouches for (tpm_ak_not_bound). Until then a verified quote proves only that some
// TPM holding that AK signed it. Likewise a nil opts.ExtraData leaves freshness to the caller.
//
// # Bounded work
//
// Inputs are bounded before use (each structure at most attest.MaxTPMStructSize bytes, at most
// attest.MaxPCRs values). TPMS_ATTEST is parsed first, and a quote that does not parse costs no
// hash and no signature check; its PCR selection count is checked against HASH_COUNT (16) before
// any entry is read, so a quote announcing thousands of selections costs O(1). Options.Counter
// lets tests prove it by counting operations.
//
// # Formats
//
// All structures are big-endian as in the TPM 2.0 Library specification,
// https://trustedcomputinggroup.org/resource/tpm-library-specification/ (Part 2 "Structures"):
// TPMS_ATTEST §10.12.12, TPMS_QUOTE_INFO §10.12.4, TPML_PCR_SELECTION §10.9.7,
// TPMS_PCR_SELECTION §10.6.2, TPMS_CLOCK_INFO §10.11.1, TPMT_SIGNATURE §11.3.4, TPMT_PUBLIC
// §12.2.4, TPMA_OBJECT §8.3; Part 3 "Commands" §18.4 TPM2_Quote. Each is carried in the envelope
// without its TPM2B size (attest/README.md). PCR selection bitmaps follow the PC Client Platform
// TPM Profile: 24 PCRs, at least 3 bytes.
package tpm
