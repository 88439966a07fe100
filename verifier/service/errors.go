package service

import (
	"errors"
	"fmt"
	"time"
)

// Errors that are part of the contract (use errors.Is). verifier/api maps each to one HTTP status
// in its single error handler; the comment names it.
var (
	// ErrMalformed: the request body is not what the operation takes (an evidence envelope that
	// is not valid JSON or breaks the schema, a policy that does not parse). No result is given
	// and nothing is recorded. 400.
	ErrMalformed = errors.New("service: malformed request")
	// ErrInvalid: a parameter is out of range or inconsistent. 400.
	ErrInvalid = errors.New("service: invalid request")
	// ErrNotFound: no such result, record, policy version or proof. 404.
	ErrNotFound = errors.New("service: not found")
	// ErrNotCovered: the record is in the log but no published checkpoint covers it yet; ask
	// again after the checkpoint interval. 404 with Retry-After.
	ErrNotCovered = errors.New("service: not covered by a checkpoint yet")
	// ErrOverloaded: the verification queue is full (or the log's); nothing was done and no
	// nonce was spent. 503 with Retry-After. Attest never returns it once it has spent the
	// evidence's nonce: an overloaded log after that is ErrUnavailable with ErrChallengeUsed.
	ErrOverloaded = errors.New("service: overloaded, retry later")
	// ErrUnavailable: a dependency failed (the evidence log, the nonce store, the policy store,
	// the blob store): the answer could not be made durable, so none is given. 503.
	ErrUnavailable = errors.New("service: unavailable")
	// ErrChallengeUsed accompanies ErrUnavailable (never alone) when Attest failed after it had
	// spent the evidence's nonce: the same evidence would now be a replay, so the caller must ask
	// GET /v1/challenge for a new nonce and attest again. 503, whose message says so.
	ErrChallengeUsed = errors.New("service: the challenge nonce was used; ask for a new challenge")
	// ErrRevocationUnrecorded is wrapped, with ErrUnavailable and never with ErrOverloaded, when
	// an API token's revocation is in force but its access_change record is not written yet
	// (revoking it again writes it). 503 revocation_unrecorded.
	ErrRevocationUnrecorded = errors.New("service: the token is revoked, its record is not written yet")
	// ErrConflict: the change conflicts with the current state (e.g. activating the policy
	// version that is already active). 409.
	ErrConflict = errors.New("service: conflict")
	// ErrForbidden: the principal's role may not do this. 403.
	ErrForbidden = errors.New("service: forbidden")
)

// RetryError is an error after which the caller may try again later. It wraps ErrOverloaded,
// ErrNotCovered or ErrUnavailable.
type RetryError struct {
	Err   error
	After time.Duration
}

func (e *RetryError) Error() string { return e.Err.Error() }

// Unwrap returns the wrapped error.
func (e *RetryError) Unwrap() error { return e.Err }

func retryAfter(d time.Duration, sentinel error, format string, args ...any) error {
	return &RetryError{Err: fmt.Errorf("%w: %s", sentinel, fmt.Sprintf(format, args...)), After: d}
}
