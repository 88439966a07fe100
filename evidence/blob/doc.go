// Package blob is Proofline's content-addressed store for the bytes that evidence records refer
// to by digest but do not embed: collateral responses (evidence.CollateralRef.Digest, the
// SHA-256 of collateral.Response's canonical JSON) and evidence envelopes or event logs too large
// to embed (evidence.Evidence.Digest, the SHA-256 of the envelope bytes).
//
// A blob's name is the SHA-256 of its bytes, computed by the store: the caller never chooses the
// name, so bytes can only ever be stored under their own digest. A caller that must store the
// bytes a record names compares the digest Put returns with the record's. Storing the same bytes
// twice stores them once.
//
// The evidence log (package evidence/log) is the source of truth: it commits to the digests, and
// this store keeps the preimages so that an auditor can re-perform a verdict. A blob that is lost
// or altered cannot be recomputed from the log, so the store is written durably and read
// suspiciously.
//
// # Contract
//
//   - Put(ctx, data) returns the SHA-256 of data. It MUST NOT return nil before data is durably
//     stored under that digest: after a crash or power loss, Get returns data. Put is idempotent
//     and safe for concurrent use, also by several processes (or, for a SQL table, replicas)
//     storing the same bytes at once. Put of bytes already stored re-reads and re-hashes the stored
//     copy, and replaces it when it does not match (a repair), so callers that store the same
//     artefact often should remember what they stored. Blobs larger than MaxSize are refused with
//     an error wrapping ErrTooLarge, before anything is written.
//   - Get(ctx, digest) returns the stored bytes only after checking that they hash to digest.
//     Tampering, bit rot or a torn copy MUST NOT return wrong bytes: Get fails with a
//     *CorruptError (wrapping ErrCorrupt) that names the digest. A missing blob is an error
//     wrapping ErrNotFound.
//   - Has(ctx, digest) reports whether a blob is stored, without reading or verifying it.
//
// There is no Delete: records are forever, and so are the blobs they name.
//
// # Backends
//
// [OpenDir] keeps each blob in a file under a directory (the default, in the data dir), fanned
// out by the first byte of the digest: DIR/ab/cdef… is the blob whose hex digest is abcdef….
// Put writes a temporary file DIR/ab/.cdef….<random>.tmp in the same directory (see
// internal/durable), fsyncs it, renames it into place and fsyncs DIR/ab and then DIR; a Put that
// finds the blob already stored fsyncs the file and both directories too, since the Put that wrote
// it may have crashed before doing so. A leftover .*.tmp file is an interrupted Put and is safe to
// delete. Blob files are plain bytes: `sha256sum` checks them.
//
// [OpenMySQL] and [OpenSQLite] keep blobs in two tables: proofline_blobs (digest, size) and
// proofline_blob_chunks (digest, seq, data), the bytes split in chunks of at most 1 MiB so that a
// blob of MaxSize fits the default max_allowed_packet of MySQL and MariaDB (16 MiB). A Put is one
// transaction, durable when it commits: with InnoDB only if innodb_flush_log_at_trx_commit=1 and,
// when the binary log is on, sync_binlog=1 (OpenMySQL refuses other settings, a
// max_allowed_packet under 2 MiB, and tables of another engine than InnoDB); OpenSQLite uses WAL
// with synchronous=FULL.
package blob
