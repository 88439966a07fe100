// Package audit exports the evidence log for auditors and verifies what it exported, offline.
//
// [Export] writes an audit bundle — one gzip-compressed tar file — holding the records of a time
// window (optionally of one subject), the blobs they name (collateral responses, policies, large
// evidence), a signed checkpoint of the log covering them, each record's inclusion proof, a
// consistency proof from the previous export's checkpoint, the record key history, the log's note
// key, a manifest and a README for the auditor.
//
// [Verify] checks a bundle with no service and no network: the checkpoint's signature, the
// consistency proof, that the records form the gap-free index range the manifest names (a removed
// record is caught although the checkpoint still covers its index), that the records just outside
// the window are outside it (a bundle cut short is caught), every inclusion proof, every record's
// signature against the key history, every blob against its digest, and it re-performs every
// attestation verdict with verifier.Verify on the recorded evidence, policy and collateral at the
// record's own time, reporting each verdict that does not reproduce. Every failed check is a
// [Finding] naming the record (its log index). [Reconcile] compares the verified verdicts with an
// [Inventory] of expected subjects and reports the gaps in their attestations.
//
// README.md specifies the bundle format and the verification and re-performance rules; auditors
// rely on them, so they change only with a new Format.
package audit
