// Package log is Proofline's evidence log: an append-only, tamper-evident Merkle log whose leaves
// are the COSE_Sign1 record bytes built by package evidence.
//
// The log is a C2SP tlog-tiles log (https://c2sp.org/tlog-tiles) written by
// github.com/transparency-dev/tessera, with RFC 6962 hashing, checkpoints in the C2SP
// tlog-checkpoint format (https://c2sp.org/tlog-checkpoint) signed as signed notes
// (https://c2sp.org/signed-note, golang.org/x/mod/sumdb/note), and inclusion and consistency
// proofs built from the stored tiles.
//
// # Backends
//
// [OpenPOSIX] keeps the log in a directory (the default, in the data dir):
//
//	DIR/tlog/               tessera's tlog-tiles tree: checkpoint, tile/…, tile/entries/…, .state/
//	                        (DIR/tlog minus .state may be served as static files)
//	DIR/note.key            Ed25519 note signing key, mode 0600, when Options.Signer is nil
//	DIR/note.pub            its verifier key, for auditors
//	DIR/served-checkpoint   the largest checkpoint this log has ever served (the I6 floor)
//	DIR/lock                held (flock) by the one Log that may write DIR
//
// [OpenMySQL] keeps the log in tessera's MySQL schema (tables Tessera, Checkpoint, TreeState,
// Subtree, TiledLeaves) plus ProoflineServedCheckpoint, in the database the caller's *sql.DB
// names. Several replicas may open the same database: tessera serialises sequencing with a row
// lock on TreeState. It is tested against MariaDB 10.11.
//
// # Durability
//
// [Log.Append] returns an index only after tessera's index future resolved, and both drivers
// resolve it only after the whole batch — entry bundles, hash tiles and the new tree state — is
// durable: the POSIX driver writes every file with O_SYNC to a temporary name, renames it and
// fsyncs the directory, and writes the tree state last; the MySQL driver does it all in one InnoDB
// transaction and resolves after COMMIT returns, which is durable only with
// innodb_flush_log_at_trx_commit=1 and, when the binary log is on, sync_binlog=1 (OpenMySQL
// refuses any other settings). Appends are batched
// (group commit): one batch is written at a time, and the appends that arrive while it is being
// written, or within Options.BatchMaxAge of the next batch's first, share the next durable write.
// A caller that knows appends are on their way says so with [Log.Expecting]: a batch then waits
// for them (up to a longer bound) and is written as soon as none is left.
// A checkpoint committing to an acknowledged entry is published later (within about two
// Options.CheckpointInterval); [Log.WaitCheckpoint] waits for it.
//
// # Invariants
//
// [Fsck] checks, from storage alone, the invariants of VERIFIER-CHECKS.md:
//
//   - I1 the root recomputed from the stored leaves equals the latest checkpoint (and every stored
//     hash tile equals the one recomputed from the leaves);
//   - I2/I3 every leaf in [0, size) is present exactly once, contiguous from 0;
//   - I4 every earlier checkpoint it can find (the served floor) or is given commits to a prefix
//     of the same leaves;
//   - I5 is the caller's: Fsck calls checkLeaf for every leaf (the CLI checks the COSE signature
//     against the key history there);
//   - I6 no checkpoint it can find or is given is larger than the latest.
//
// I2 — every acknowledged record present at its index, byte for byte — needs the acknowledgements,
// which only the caller has: the crash and fault-injection tests check it with [Log.Entry].
package log
