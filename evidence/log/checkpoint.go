package log

import (
	"errors"
	"fmt"

	f_log "github.com/transparency-dev/formats/log"
	"golang.org/x/mod/sumdb/note"
)

// Checkpoint is a signed commitment to the first Size leaves of the log
// (https://c2sp.org/tlog-checkpoint).
type Checkpoint struct {
	// Origin is the log's identity, the checkpoint's first line and its signer's key name.
	Origin string
	// Size is the number of leaves the checkpoint commits to.
	Size uint64
	// Hash is the RFC 6962 root hash of the first Size leaves.
	Hash []byte
	// Note is the signed note exactly as stored; hand these bytes to clients and auditors.
	Note []byte
}

// ErrCorrupt is the sentinel for every integrity failure: storage that contradicts itself, a
// checkpoint already served, or a leaf check. Errors that wrap it are [*CorruptError]s.
var ErrCorrupt = errors.New("log corrupt")

// CorruptError says which invariant failed and, when it can be pinned down, the first leaf index
// involved.
type CorruptError struct {
	// Invariant is the broken invariant of VERIFIER-CHECKS.md, "I1" to "I6".
	Invariant string
	// Index is the first bad (missing, altered, unverifiable) leaf index when HasIndex is set.
	Index    uint64
	HasIndex bool
	// Reason says what was found.
	Reason string
	// Err is the underlying error, if any (for I5, the one checkLeaf returned).
	Err error
}

func (e *CorruptError) Error() string {
	s := "log corrupt (" + e.Invariant + ")"
	if e.HasIndex {
		s += fmt.Sprintf(" at leaf index %d", e.Index)
	}
	s += ": " + e.Reason
	if e.Err != nil {
		s += ": " + e.Err.Error()
	}
	return s
}

func (e *CorruptError) Unwrap() []error {
	if e.Err == nil {
		return []error{ErrCorrupt}
	}
	return []error{ErrCorrupt, e.Err}
}

func corruptAt(inv string, index uint64, format string, args ...any) *CorruptError {
	return &CorruptError{Invariant: inv, Index: index, HasIndex: true, Reason: fmt.Sprintf(format, args...)}
}

func corrupt(inv string, format string, args ...any) *CorruptError {
	return &CorruptError{Invariant: inv, Reason: fmt.Sprintf(format, args...)}
}

// openCheckpoint verifies a signed checkpoint note with v (whose name is the origin) and parses it.
func openCheckpoint(raw []byte, v note.Verifier) (Checkpoint, error) {
	cp, _, _, err := f_log.ParseCheckpoint(raw, v.Name(), v)
	if err != nil {
		return Checkpoint{}, err
	}
	return Checkpoint{Origin: cp.Origin, Size: cp.Size, Hash: cp.Hash, Note: raw}, nil
}
