// Package agent is the Proofline guest agent's daemon (`proofline-agent run`): the attestation
// loop, the verifier client, the evidence sources and the local API for workloads.
//
// The loop (Agent.Run) repeats: GET /v1/challenge → collect evidence whose REPORT_DATA binds the
// nonce and runtime_data (attest.RuntimeData with the agent's public key; DESIGN.md, "Nonce
// binding") → POST /v1/attest → keep the result token. After a result it waits the interval
// less jitter (and no later than 80% into the token's lifetime); after a failure it backs off
// exponentially with full jitter on top of the verifier's Retry-After (Backoff). Evidence the
// verifier refused as overloaded is re-sent unchanged (the nonce was not spent); after any other
// failure the agent MUST NOT re-send it, since the nonce may have been spent and a replay would be
// recorded as a nonce_mismatch verdict.
//
// The local API (Socket) is HTTP on a unix socket guarded by the file's mode and group and by the
// caller's SO_PEERCRED uid/gid: GET /v1/token returns the latest result token, POST /v1/evidence
// collects fresh evidence bound to the caller's own nonce and public key.
//
// Config is the daemon's YAML configuration, documented field by field; flags live in
// cmd/proofline-agent only. Time and randomness are injected (Clock, Options.Rand) so tests
// observe the schedule without sleeping. Logs carry SHA-256 digests of tokens, nonces, keys and
// evidence, never the values.
//
// With a vTPM (VTPM, opened once at start-up by OpenVTPM), Hardware.Collect adds a vTPM quote
// (attest/tpm) to every evidence, and runtime_data names its attestation key
// (Options.TPMAKDigest), so that REPORT_DATA binds the key the verifier checks the quote with.
package agent
