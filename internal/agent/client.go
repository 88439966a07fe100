package agent

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/proofline/proofline/attest"
	"github.com/proofline/proofline/internal/buildinfo"
)

// maxResponse bounds a verifier answer the client reads (a result and its tokens are a few KiB).
const maxResponse = 1 << 20

// maxRetryAfter caps a Retry-After the agent honours, so a bad header cannot park it for days.
const maxRetryAfter = time.Hour

// ErrOverloaded is wrapped by a *StatusError for a 503 with code "overloaded" on
// POST /v1/attest: the verifier did nothing and did not spend the nonce, so the same evidence
// may be sent again (verifier/api/openapi.yaml, "Errors").
var ErrOverloaded = errors.New("the verifier is overloaded")

// StatusError is a verifier answer other than 200.
type StatusError struct {
	// Op is the request, e.g. "POST /v1/attest".
	Op string
	// Status is the HTTP status; Code and Message come from the JSON error body, if any.
	Status  int
	Code    string
	Message string
	// RetryAfter is the Retry-After the verifier sent (0 when none).
	RetryAfter time.Duration
	// Location is where a 3xx answer redirects to; the client never follows it.
	Location string
}

func (e *StatusError) Error() string {
	if e.Status >= 300 && e.Status < 400 {
		loc := e.Location
		if loc == "" {
			loc = "nowhere (no Location header)"
		}
		return fmt.Sprintf("%s: %d %s: a redirect to %s, which the agent does not follow (the verifier API has no redirects, and following one could send the token elsewhere, even in clear): set verifier.url to the address the verifier itself answers on", e.Op, e.Status, http.StatusText(e.Status), loc)
	}
	msg := e.Message
	if msg == "" {
		msg = http.StatusText(e.Status)
	}
	s := fmt.Sprintf("%s: %d %s: %s", e.Op, e.Status, e.Code, msg)
	switch e.Status {
	case http.StatusUnauthorized:
		s += " (check verifier.token_file, or the client certificate: the verifier must list this agent's token with role agent)"
	case http.StatusForbidden:
		s += " (the credential is not of role agent: give the agent a token configured with role: agent)"
	}
	return s
}

// Is reports ErrOverloaded for a 503 "overloaded".
func (e *StatusError) Is(target error) bool {
	return target == ErrOverloaded && e.Status == http.StatusServiceUnavailable && e.Code == "overloaded"
}

// Challenge is a verifier nonce.
type Challenge struct {
	Nonce []byte `json:"nonce"`
	// Expires is when the nonce expires, on the verifier's clock.
	Expires time.Time `json:"expires_at"`
	// Lifetime is how long the nonce stays valid after the verifier answered, measured on the
	// verifier's clock alone: expires_at less the answer's Date header, less one second more
	// since Date has whole seconds (RFC 9110 §6.6.1). Zero when the answer has no valid Date.
	// Counted from the answer's arrival on the agent's own clock, it says when the nonce expires
	// whatever the skew between the two clocks.
	Lifetime time.Duration `json:"-"`
}

// Result is the verifier's answer to one attestation: the verdict, the signed result token and
// the record that holds it.
type Result struct {
	ID           string `json:"id"`
	LogIndex     uint64 `json:"log_index"`
	RecordSHA256 string `json:"record_sha256"`
	// Status is affirming, warning or contraindicated.
	Status string `json:"status"`
	// Token is the signed result token (JWT) for relying parties.
	Token string `json:"token"`
	// ResultJSON is the attestation result (verifier/README.md).
	ResultJSON json.RawMessage `json:"result"`
}

// Client calls the verifier's HTTP API (verifier/api/openapi.yaml).
type Client struct {
	// URL is the verifier's base URL.
	URL string
	// HTTP sends the requests; its Timeout bounds each. Nil means a client with a 30s timeout.
	// Its CheckRedirect is ignored: the client never follows a redirect (StatusError).
	HTTP *http.Client
	// Token is the agent's API token; empty means none (a TLS client certificate in HTTP).
	Token string
	// Now is the clock, for Retry-After dates; nil means time.Now.
	Now func() time.Time
}

// Challenge asks GET /v1/challenge for a nonce bound to this agent.
func (c *Client) Challenge(ctx context.Context) (*Challenge, error) {
	body, header, err := c.do(ctx, http.MethodGet, "/v1/challenge", nil)
	if err != nil {
		return nil, err
	}
	var ch Challenge
	if err := json.Unmarshal(body, &ch); err != nil {
		return nil, fmt.Errorf("GET /v1/challenge: the answer is not a challenge: %w", err)
	}
	if len(ch.Nonce) != attest.NonceSize {
		return nil, fmt.Errorf("GET /v1/challenge: the nonce is %d bytes, want %d; is verifier.url a Proofline verifier?", len(ch.Nonce), attest.NonceSize)
	}
	if date, err := http.ParseTime(header.Get("Date")); err == nil {
		ch.Lifetime = max(ch.Expires.Sub(date)-time.Second, 0)
	}
	return &ch, nil
}

// Attest sends an evidence envelope to POST /v1/attest and returns the recorded result.
func (c *Client) Attest(ctx context.Context, envelope []byte) (*Result, error) {
	// The agent uses the JWT only; each token form costs the verifier a signature.
	body, _, err := c.do(ctx, http.MethodPost, "/v1/attest?tokens=jwt", envelope)
	if err != nil {
		return nil, err
	}
	var r Result
	if err := json.Unmarshal(body, &r); err != nil {
		return nil, fmt.Errorf("POST /v1/attest: the answer is not a result: %w", err)
	}
	if r.Token == "" || r.Status == "" {
		return nil, errors.New("POST /v1/attest: the answer has no status or token")
	}
	return &r, nil
}

// do sends one request and returns the body and headers of a 200 answer.
func (c *Client) do(ctx context.Context, method, path string, body []byte) ([]byte, http.Header, error) {
	op := method + " " + path
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequestWithContext(ctx, method, strings.TrimSuffix(c.URL, "/")+path, rd)
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w", op, err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if c.Token != "" {
		req.Header.Set("Authorization", "Bearer "+c.Token)
	}
	req.Header.Set("User-Agent", "proofline-agent/"+buildinfo.Version())
	hc := http.Client{Timeout: 30 * time.Second}
	if c.HTTP != nil {
		hc = *c.HTTP
	}
	// Go re-sends the Authorization header to a redirect target on the same host whatever its
	// scheme or port, so following a redirect could put the token on the wire in clear.
	hc.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	resp, err := hc.Do(req)
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w", op, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxResponse+1))
	if err != nil {
		return nil, nil, fmt.Errorf("%s: reading the answer: %w", op, err)
	}
	if len(data) > maxResponse {
		return nil, nil, fmt.Errorf("%s: the answer is larger than %d bytes", op, maxResponse)
	}
	if resp.StatusCode == http.StatusOK {
		return data, resp.Header, nil
	}
	se := &StatusError{Op: op, Status: resp.StatusCode, RetryAfter: c.retryAfter(resp.Header.Get("Retry-After")), Location: resp.Header.Get("Location")}
	var apiErr struct {
		Code    string `json:"code"`
		Message string `json:"message"`
	}
	if json.Unmarshal(data, &apiErr) == nil {
		se.Code, se.Message = apiErr.Code, apiErr.Message
	}
	return nil, nil, se
}

// retryAfter parses a Retry-After header: delay-seconds or an HTTP date (RFC 9110 §10.2.3).
func (c *Client) retryAfter(h string) time.Duration {
	if h == "" {
		return 0
	}
	var d time.Duration
	if n, err := strconv.ParseUint(h, 10, 32); err == nil {
		d = time.Duration(n) * time.Second
	} else if t, err := http.ParseTime(h); err == nil {
		now := time.Now
		if c.Now != nil {
			now = c.Now
		}
		d = t.Sub(now())
	}
	return min(max(d, 0), maxRetryAfter)
}
