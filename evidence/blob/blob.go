package blob

import (
	"crypto/sha256"
	"errors"
	"fmt"

	"github.com/proofline/proofline/evidence"
)

// MaxSize bounds a blob: collateral responses are kilobytes, event logs and evidence envelopes
// at most a few megabytes. The bound keeps a corrupt or hostile store from making Get allocate
// without limit.
const MaxSize = 64 << 20

// Errors that are part of the contract (use errors.Is).
var (
	// ErrNotFound: no blob is stored under the digest.
	ErrNotFound = errors.New("blob: not found")
	// ErrTooLarge: the blob is larger than MaxSize; nothing was stored.
	ErrTooLarge = errors.New("blob: too large")
	// ErrCorrupt: the stored bytes do not hash to their digest. Errors that wrap it are
	// *CorruptError.
	ErrCorrupt = errors.New("blob: corrupt")
)

// CorruptError says which blob failed verification and how. It unwraps to ErrCorrupt.
type CorruptError struct {
	// Digest is the blob that was asked for.
	Digest evidence.Digest
	// Reason says what is wrong, e.g. the digest the stored bytes have instead.
	Reason string
}

func (e *CorruptError) Error() string {
	return fmt.Sprintf("blob %s is corrupt: %s", e.Digest, e.Reason)
}

// Unwrap returns ErrCorrupt.
func (e *CorruptError) Unwrap() error { return ErrCorrupt }

func notFound(d evidence.Digest) error { return fmt.Errorf("%w: %s", ErrNotFound, d) }

func tooLarge(n int) error {
	return fmt.Errorf("%w: %d bytes, more than %d", ErrTooLarge, n, MaxSize)
}

// verify returns data when it hashes to d, and a *CorruptError naming d otherwise.
func verify(d evidence.Digest, data []byte) ([]byte, error) {
	if got := evidence.Digest(sha256.Sum256(data)); got != d {
		return nil, &CorruptError{Digest: d, Reason: fmt.Sprintf("the stored %d bytes hash to %s", len(data), got)}
	}
	return data, nil
}
