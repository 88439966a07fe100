// Package index is Proofline's query index over the evidence log: which records concern a
// subject, a platform, a status, a policy, a record kind or a time range, in log order.
//
// The evidence log (package evidence/log) is the truth; the index is derived from it and holds
// nothing the log does not. It can be dropped and rebuilt from the log alone at any time
// ([Rebuild], `proofline log reindex`), and a lost or stale index is repaired by [Catchup]. A
// verdict MUST NOT depend on the index: an index write that fails never fails an attestation,
// since the record is already durable in the log.
//
// # Model
//
// The index holds one entry per log leaf: its log index, the SHA-256 of the leaf (the signed
// record's COSE_Sign1 bytes, the same digest KeyRelease.Attestation uses), the record's kind,
// time, subject id and platform, its status and its policy id. Status is the "status" member of
// an attestation's result JSON (affirming, warning or contraindicated), the decision of a
// key-release record (release or deny), and empty otherwise; a result that is not a JSON object
// with a string status indexes as empty. Policy is the record's PolicyRef id, if any.
//
// The entries are always a prefix of the log, entries [0, Next()) with no gap:
//
//   - [Index.Add] of index n requires n == 0 or entry n-1 present, and fails with an error
//     wrapping ErrGap otherwise. Callers that race the log (a verifier indexing right after
//     its append, while another append's index write is still in flight) get ErrGap and leave
//     the entry to the next Catchup.
//   - Add of an entry already present with the same leaf is a no-op; with a different leaf it
//     fails with an error wrapping ErrConflict and changes nothing: the index never silently
//     overwrites, because a different leaf at an index means the index was built from another
//     log (or the log was rewritten, which Fsck reports).
//   - Rebuild empties the index first, then adds every leaf in order; while it runs, queries see
//     a growing prefix.
//
// # Durability
//
// When Add returns nil the entry is committed. The index is derived, so commits are not forced
// to disk one by one: SQLite runs in WAL mode with synchronous=NORMAL, where a power loss can
// lose the last commits but never reorders them, so what survives is still a prefix of the log;
// on MySQL/MariaDB durability follows the server's innodb_flush_log_at_trx_commit (and, with the
// binary log on, sync_binlog). Either way the caller MUST run Catchup at start-up: it indexes
// whatever the log holds beyond Next(), whether the index lost it or the process stopped between
// a log append and its Add.
//
// # Storage
//
// [OpenSQLite] keeps the index in a SQLite file (modernc.org/sqlite, the default, in the data
// dir); [OpenMySQL] in the MySQL or MariaDB database the caller's *sql.DB names, alongside the
// log's tables. Tables: proofline_index_schema (the schema version, one row) and
// proofline_index_entries. Strings are stored as bytes (VARBINARY/BLOB on MySQL, so that a
// case-insensitive server collation cannot make "VM-1" match "vm-1"), times as Unix seconds
// (records have second precision; no DATETIME time-zone or range questions). The free-form
// strings (subject, status, policy) are looked up through an indexed 64-bit key, the first eight
// bytes of their SHA-256, and then compared in full: that keeps index keys small whatever a
// record's strings hold (InnoDB limits an index key to 3072 bytes) and never returns a false match.
//
// A newer binary migrates the schema at open; an index whose schema version is newer than the
// binary's is refused (rebuild it, or upgrade the binary).
package index
