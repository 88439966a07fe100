package api

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"math"
	"net/http"
	"strconv"

	"github.com/labstack/echo/v4"

	"github.com/proofline/proofline/verifier/service"
)

// errBadRequest is a request whose parameters do not parse: 400.
var errBadRequest = errors.New("api: bad request")

// statusClientClosedRequest is the (nginx) status of a request the client cancelled.
const statusClientClosedRequest = 499

// apiError is the JSON body of every error answer.
type apiError struct {
	Code      string `json:"code"`
	Message   string `json:"message"`
	RequestID string `json:"request_id,omitempty"`
}

// handleError is the one place where errors become HTTP statuses. Messages of client errors say
// what was wrong; server errors say only that something failed (details go to the log with the
// request id).
func (s *Server) handleError(err error, c echo.Context) {
	if c.Response().Committed {
		return
	}
	status, code, msg := http.StatusInternalServerError, "internal", "internal error; the request id names it in the verifier's log"
	var (
		he    *echo.HTTPError
		mbe   *http.MaxBytesError
		retry *service.RetryError
	)
	switch {
	case errors.Is(err, context.Canceled) && c.Request().Context().Err() != nil:
		// The client went away (e.g. while its attestation waited in the queue): nobody reads
		// the answer, and it is no server failure.
		status, code, msg = statusClientClosedRequest, "cancelled", "the request was cancelled by the client"
	case errors.Is(err, errUnauthenticated):
		status, code, msg = http.StatusUnauthorized, "unauthenticated", "this operation needs an API token (Authorization: Bearer …) or, for agents, a client certificate; the one given is missing or unknown"
		c.Response().Header().Set(echo.HeaderWWWAuthenticate, `Bearer realm="proofline"`)
	case errors.Is(err, service.ErrForbidden):
		status, code, msg = http.StatusForbidden, "forbidden", err.Error()
	case errors.As(err, &mbe):
		status, code, msg = http.StatusRequestEntityTooLarge, "payload_too_large", "the body is larger than "+strconv.FormatInt(mbe.Limit, 10)+" bytes"
	case errors.Is(err, service.ErrNotCovered):
		status, code, msg = http.StatusNotFound, "not_covered", err.Error()
	case errors.Is(err, service.ErrNotFound):
		status, code, msg = http.StatusNotFound, "not_found", err.Error()
	case errors.Is(err, service.ErrMalformed):
		status, code, msg = http.StatusBadRequest, "malformed", err.Error()
	case errors.Is(err, service.ErrInvalid), errors.Is(err, errBadRequest):
		status, code, msg = http.StatusBadRequest, "bad_request", err.Error()
	case errors.Is(err, service.ErrConflict):
		status, code, msg = http.StatusConflict, "conflict", err.Error()
	case errors.Is(err, service.ErrRevocationUnrecorded):
		// Before overloaded, which says that nothing was done: this revocation is in force.
		status, code, msg = http.StatusServiceUnavailable, "revocation_unrecorded", "the token is revoked and refused on every replica from now on, but the access_change record of its revocation could not be written yet (evidence log unavailable or overloaded): revoke it again once the log recovers to write it (a restarted verifier writes it too)"
	case errors.Is(err, service.ErrOverloaded):
		status, code, msg = http.StatusServiceUnavailable, "overloaded", "the verifier is overloaded; retry after the Retry-After delay"
	case errors.Is(err, service.ErrUnavailable) && errors.Is(err, service.ErrChallengeUsed):
		status, code, msg = http.StatusServiceUnavailable, "unavailable", "the verifier could not make the answer durable (evidence log or database unavailable or overloaded); nothing was answered, but the challenge nonce in the evidence was used: ask GET /v1/challenge for a new nonce and attest again"
	case errors.Is(err, service.ErrUnavailable):
		status, code, msg = http.StatusServiceUnavailable, "unavailable", "the verifier could not make the answer durable (evidence log or database unavailable); nothing was answered, retry later"
	case errors.As(err, &he):
		status = he.Code
		switch status {
		case http.StatusNotFound:
			code, msg = "not_found", "no such route"
		case http.StatusMethodNotAllowed:
			code, msg = "method_not_allowed", "method not allowed on this route"
		case http.StatusRequestEntityTooLarge:
			code, msg = "payload_too_large", "the body is too large"
		default:
			if status < 500 {
				code, msg = "bad_request", http.StatusText(status)
			}
		}
	}
	if errors.As(err, &retry) {
		c.Response().Header().Set("Retry-After", strconv.Itoa(int(math.Ceil(max(retry.After.Seconds(), 1)))))
	} else if status == http.StatusServiceUnavailable {
		c.Response().Header().Set("Retry-After", "1")
	}
	if status >= 500 {
		s.logger.ErrorContext(c.Request().Context(), "request failed", slog.String("request_id", requestIDOf(c)), slog.Any("error", err))
	}
	body, _ := json.Marshal(apiError{Code: code, Message: msg, RequestID: requestIDOf(c)})
	if c.Request().Method == http.MethodHead {
		c.NoContent(status)
		return
	}
	c.Blob(status, echo.MIMEApplicationJSON, body)
}

func requestIDOf(c echo.Context) string {
	id, _ := c.Get(keyRequestID).(string)
	return id
}
