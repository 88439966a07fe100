// Package token issues attestation result tokens: the EAR claims (draft-ietf-rats-ear, profile
// "tag:github.com,2023:veraison/ear") of one ear.Result, with the reference of the evidence record
// it was logged as, signed for relying parties as a JWT (RFC 7519, JWS compact serialization,
// RFC 7515) or as a CWT (RFC 8392, COSE_Sign1, RFC 9052 §4.2), and the JWKS (RFC 7517 §5) that
// publishes the verification keys.
//
// README.md is the specification of the claim set, its JWT and CWT encodings and the headers. The
// relying-party side — strict verification against the JWKS — is package verifier/rp.
//
// The package never reads the clock: every issuing call is given the time.
package token
