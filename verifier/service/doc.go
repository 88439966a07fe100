// Package service is the verifier service without its HTTP layer (verifier/api): it composes the
// verification core (verifier), challenge nonces (verifier/nonce), the evidence records (evidence)
// and their log (evidence/log), the query index (evidence/index), the blob store (evidence/blob),
// result tokens (verifier/token) and a policy store, and states the order in which they are used.
//
// # Principles it implements
//
//   - No result leaves the service unless its signed record is durably in the log: Attest signs
//     the record, opens it against the key history (I5), appends it and waits for the log's
//     acknowledgement before it issues tokens or answers. A log that cannot append is
//     ErrUnavailable (HTTP 503) and nothing — no result, no token — is returned.
//   - The log is the truth: the index is written after the append, best effort, and caught up
//     from the log at start-up and in the background; an index failure never fails a verdict.
//   - Freshness comes only from a nonce this service issued and consumed: the envelope's nonce is
//     spent (single use across replicas sharing the store) before appraisal, and passed to
//     verifier.Verify as Options.Nonce. A refused nonce — unknown, expired, already used, issued
//     to another principal, or missing — is a contraindicated verdict (nonce_mismatch, with the
//     reason in the message) given without further appraisal, and, like every verdict, recorded
//     and answered with a token. An evidence envelope that is not valid JSON or breaks the schema
//     is not a verdict: it is ErrMalformed (HTTP 400), not recorded, and spends no nonce.
//   - Fail closed under load: a bounded queue sits in front of verification; past it, Attest
//     fails at once with ErrOverloaded (HTTP 503 + Retry-After) before spending the nonce, and
//     before reading the request body (verifier/api admits first, then reads). A failure after
//     the nonce was spent (the log overloaded or unavailable) is never ErrOverloaded: it is
//     ErrUnavailable with ErrChallengeUsed, telling the caller to ask for a new challenge.
//   - Every policy change (creating a version, activating one) and every relying-party decision
//     (POST /v1/events) is an evidence record too, written before the change is committed or the
//     decision acknowledged. So is every replacement of a cached vendor collateral document with
//     live collateral (collateral_update, written before the cache keeps the new document).
//   - Live collateral (Config.Collateral.Fetch) is refreshed in the background ahead of expiry; a
//     fetch failure is logged and counted (proofline_collateral_fetch_errors_total), never fatal,
//     and /readyz reports collateral_expiring while a document nears or passes its nextUpdate
//     unrefreshed. A stale document is never used unless the active policy's stale_grace_unsafe
//     allows it, and then the verdict is at best warning.
//
// # Principals and subjects
//
// A Principal is a role and a name. Names from API tokens are plain (ValidName: no ':' or '/');
// names from TLS client certificates are "mtls:<issuer>/<common name>" (CertificateName), where
// <issuer> names the issuing CA's public key, so the two namespaces cannot collide and the same
// common name from two client CAs is two agents. Principal.String, "<role>:<name>", is the one
// string used as the subject of the attestation records a principal submits
// ("agent:<name>", "relying-party:<name>": no agent's subject can equal a relying party's), as
// the binding of the nonces it is issued, and in logs and policy change records. An agent reads
// only results whose subject is its own.
//
// # Data directory
//
// With the embedded defaults (Config.Database empty) everything lives in Config.DataDir:
//
//	log/              the evidence log (evidence/log, POSIX tlog-tiles: log/tlog/…, served-checkpoint, lock)
//	log/note.key      the log's Ed25519 checkpoint (note) signing key, mode 0600
//	log/note.pub      its note verifier key, for auditors (also GET /v1/keys); `proofline log fsck
//	                  --log DATA/log --keys DATA/keys/history.json` checks the whole log with it
//	keys/signing-key.pem   the record signing key (ECDSA P-256, PKCS #8, mode 0600)
//	keys/history.json      the record key history (evidence.KeyHistory; GET /v1/keys)
//	token-key.pem     the result token signing key (ECDSA P-256, separate from the record key)
//	nonce-secret      the nonce HMAC secret (32 random bytes, mode 0600), unless nonce.secret_file
//	nonces.db         used nonces (SQLite)
//	index.db          the query index (SQLite), rebuildable from the log
//	blobs/            collateral responses (canonical JSON), policies and large evidence, by SHA-256
//	policies.db       policy versions and the active one (SQLite)
//	tokens.db         API tokens created at runtime (hashes only) and the last use of every principal
//	alerts.db         the alert outbox (verifier/alert) and the log self-check's state
//	collateral-cache/ with collateral.fetch or offline: the vendor collateral cache
//	                  (collateral.DirStore), unless collateral.cache_dir says otherwise; with a
//	                  database (and no cache_dir) it is in the database instead, shared by replicas
//
// With Config.Database set, the log, the index, used nonces, blobs, policies, tokens, the alert
// outbox and the collateral cache are tables in that MySQL/MariaDB database
// (proofline_policy_versions and proofline_policy_active for policies, proofline_api_tokens and
// proofline_principal_use for tokens; the others are their packages'), and DataDir keeps only
// the keys (log-key and log-key.pub for checkpoints, keys/, token-key.pem) and the nonce secret.
// Replicas share the database, the nonce secret (nonce.secret_file) and the
// keys: mount the same keys/ directory, token key and log key on every replica, so that each
// opens the records the others append.
//
// All keys are created at the first start; a later start reuses them. The record key is added
// to the key history, valid from its first start.
package service
