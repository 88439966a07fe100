// Package nonce issues and consumes the verifier's challenge nonces (`GET /v1/challenge`,
// `POST /v1/attest`): 32 bytes ([attest.NonceSize]) that the agent binds into REPORT_DATA as
// the attest package documents, that expire after a short TTL, that are valid only for the
// binding they were issued to, and that are accepted at most once across every verifier
// replica sharing the store.
//
// Issuing is stateless: nothing is written when a challenge is handed out, so an
// unauthenticated client asking for challenges cannot fill the database. State is written
// only when a nonce is consumed.
//
// # Layout (version 1)
//
//	offset  size  field
//	 0       1    version, 0x01
//	 1       4    expiry: Unix seconds, big-endian uint32 (so at most 2106-02-07)
//	 5       7    random bytes from crypto/rand
//	12      16    tag   = HMAC-SHA256(K_tag,   nonce[0:12] ‖ binding)[:16]
//	28       4    check = HMAC-SHA256(K_check, nonce[0:28])[:4]
//
// K_tag and K_check are derived from the service secret with HKDF-SHA256 (RFC 5869; no salt,
// info "proofline/nonce/v1/tag" and "proofline/nonce/v1/check"). The binding is an opaque
// string chosen by the caller of [Issuer.Issue]: the authenticated agent identity, or the id of
// the request or session the challenge was issued to; "" means unbound. The nonce is opaque to
// agents; to them it is just 32 bytes.
//
// [Issuer.Consume] decides in this order, touching the store only in the last step:
//
//  1. wrong length, unknown version, or check ≠ HMAC(K_check, nonce[0:28]): [ErrUnknown];
//  2. tag ≠ HMAC(K_tag, nonce[0:12] ‖ binding): [ErrWrongBinding];
//  3. now ≥ expiry: [ErrExpired];
//  4. the nonce is already recorded as used: [ErrReplayed]; otherwise it is recorded, and
//  5. now ≥ expiry once the record is written: [ErrExpired] (see "Sweeping" for why).
//
// Steps 1–3 are [Issuer.Check] and steps 4–5 [Issuer.Record]: a caller may work on the evidence
// between the two (the verifier service verifies it while the use is being recorded), but a
// nonce is accepted only once Record has returned nil.
//
// # Security argument
//
// Unforgeability. A nonce is accepted for binding b only if its tag equals
// HMAC-SHA256(K_tag, nonce[0:12] ‖ b) truncated to 128 bits. Without the secret, HMAC is a
// pseudo-random function, so any nonce not issued for b (a guess, a bit flip, a nonce minted
// under another secret) is accepted with probability at most 2^-128 per attempt. The MAC input
// is a fixed-length prefix followed by the binding, so the encoding is injective: a nonce issued
// for one binding is never valid for another.
//
// Expiry and binding are authenticated: both are inputs of the tag. The expiry is readable by
// anyone (the API returns it anyway); the nonce reveals nothing else.
//
// The check only sorts rejections: it tells a nonce that this service minted but for another
// binding ([ErrWrongBinding]) from garbage ([ErrUnknown]). It is a MAC under an independent key
// and reveals nothing about K_tag. A random value passes it with probability 2^-32 and is then
// reported as ErrWrongBinding instead of ErrUnknown; it is still rejected.
//
// Non-malleability. Both MACs are checked and together cover all 32 bytes, so for each issuance
// and binding exactly one byte string is accepted. Single use keyed on the nonce's bytes is
// therefore single use of the issuance.
//
// Freshness. Until it is issued, a nonce is unpredictable (its tag is a PRF output), so evidence
// that binds it was produced after the challenge. The 56 random bits make nonces issued in the
// same second for the same binding distinct; if two ever collide (probability about n²/2^57 for
// n such nonces), the second consumer gets ErrReplayed: availability, never a second acceptance.
//
// Single use. Consume records the nonce with one INSERT into proofline_nonce_used, whose primary
// key is the nonce. The database's uniqueness constraint makes the insert atomic across every
// connection and replica: of any number of racing Consume calls for one nonce, exactly one
// succeeds and the others get ErrReplayed. A store error is returned as is (not one of the
// sentinel errors): the nonce is then not accepted, so an unreachable database fails closed.
//
// # Sweeping
//
// A used nonce MUST stay recorded until it has expired, or it could be consumed again.
// [Issuer.Sweep] deletes records whose nonce expired more than [SweepMargin] ago. Because
// Consume rejects an expired nonce before touching the store, and again after writing its
// record, deleting a record can never make its nonce acceptable again, provided the clocks of
// the replicas differ by less than SweepMargin: a Consume that checked expiry, stalled, and
// inserted only after a sweep removed another replica's record of the same nonce finds the nonce
// expired when its insert returns. Run Sweep periodically (every few minutes) on any replica;
// concurrent sweeps are harmless.
//
// # Storage and durability
//
// [OpenSQLite] keeps used nonces in a SQLite file (modernc.org/sqlite), by default
// [DBFileName] in the data dir; [OpenMySQL] in the MySQL or MariaDB database that replicas
// share. A record MUST survive a crash, or a nonce consumed just before it could be replayed
// after the restart: SQLite runs in WAL mode with synchronous=FULL, so a commit is on disk when
// Consume returns; on MySQL/MariaDB durability follows the server's
// innodb_flush_log_at_trx_commit (1, the default, is required for this guarantee).
//
// Callers consume a nonce exactly once per submission, before answering it. A consumed nonce is
// spent even if the evidence is then rejected; the agent asks for a new challenge.
//
// # The secret
//
// The secret is at least [SecretSize] random bytes. A single verifier keeps it in its data dir
// ([LoadOrCreateSecret]: created on first start, mode 0600). Replicas MUST share one secret: it
// comes from configuration (a file mounted from the secret store, read with [LoadSecret]), never
// from LoadOrCreateSecret on each replica's own disk, since a replica rejects nonces minted
// under another secret as ErrUnknown. Changing the secret invalidates only the outstanding
// challenges (ErrUnknown; agents ask again); records of used nonces stay valid. Never log the
// secret or nonces.
package nonce
