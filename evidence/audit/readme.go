package audit

import (
	"fmt"
	"strings"
	"time"
)

// readme returns README.txt: what the bundle is and how to check it, for the auditor.
func readme(m *Manifest) []byte {
	var b strings.Builder
	p := func(format string, args ...any) { fmt.Fprintf(&b, format, args...) }
	p("Proofline audit bundle (%s)\n", Format)
	p("=============================================\n\n")
	p("Exported %s by %s from the evidence log %q.\n", m.Created.Format(time.RFC3339), m.Generator, m.Origin)
	window := "the whole log"
	switch {
	case m.From != nil && m.To != nil:
		window = fmt.Sprintf("records timed from %s to %s", m.From.Format(time.RFC3339), m.To.Format(time.RFC3339))
	case m.From != nil:
		window = fmt.Sprintf("records timed from %s on", m.From.Format(time.RFC3339))
	case m.To != nil:
		window = fmt.Sprintf("records timed up to %s", m.To.Format(time.RFC3339))
	}
	p("Window: %s", window)
	if m.Subject != "" {
		p(", about %q (other records present only by their leaf hash)", m.Subject)
	}
	p(".\nRecords [%d, %d) of the log, proven in its checkpoint of %d records.\n\n", m.First, m.End, m.CheckpointSize)
	p(`Check it offline, with no service:

    proofline audit verify THIS-FILE [--keys history.json] [--log-key note.pub] [--previous PREVIOUS-BUNDLE]

Give --keys and --log-key as you obtained them from the operator independently (GET /v1/keys):
without them the keys in this bundle are trusted, and the report says so. Give --previous with
the last bundle you verified, to check that the log still holds everything it held then.

What verify checks: the checkpoint's signature (note.pub), the consistency proof from the
previous checkpoint, that the records form the gap-free range [first, end) of manifest.json and
that the records just outside the window are outside it, every record's inclusion proof in the
checkpoint and signature against the key history, every blob against its SHA-256 name, and it
re-performs every attestation verdict with the recorded evidence, policy and collateral at the
record's own time. It exits 0 only if everything passed.

Contents:
  manifest.json            what the bundle holds and the window it was exported for
  note.pub                 the log's checkpoint verifier key (signed-note format)
  keys/history.json        the record signing keys and their validity periods
  checkpoint               the log's signed checkpoint (C2SP tlog-checkpoint)
  previous-checkpoint      the previous export's checkpoint, with proofs/consistency.json (optional)
  roots/*.pem              test vendor roots, for verdicts marked test_roots (optional)
  blobs/<sha256>           collateral responses, policies and large evidence, named by SHA-256
  records/<index>.cose     the signed records (COSE_Sign1, the log's leaves), by log index
  proofs/<index>.json      each record's RFC 6962 inclusion proof in the checkpoint

The formats are specified in the Proofline source: evidence/README.md (records, key history)
and evidence/audit/README.md (this bundle).
`)
	return []byte(b.String())
}
