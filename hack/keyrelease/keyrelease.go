package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync"

	"github.com/proofline/proofline/attest"
	"github.com/proofline/proofline/verifier/rp"
	"github.com/proofline/proofline/verifier/token"
)

// keyRelease is the example key-release service: a relying party of the Proofline verifier.
//
// It releases a secret only to a workload whose latest attestation the verifier affirmed, with a
// result token that is for this service (aud), signed by a key in the verifier's JWKS, and fresh:
// either bound to a nonce this service obtained for the request (background check), or issued
// less than MaxAge ago (passport). Every decision, release or deny, is first recorded by the
// verifier as a key_release evidence record (POST /v1/events); the secret leaves only once that
// record is durable, and a decision that cannot be recorded releases nothing.
type keyRelease struct {
	verifier string // base URL of the verifier
	token    string // this service's API token at the verifier (role relying-party)
	client   *http.Client
	opts     rp.Options
	secrets  map[string][]byte
	logger   *slog.Logger

	mu     sync.Mutex
	tokens *rp.Verifier // from the verifier's JWKS; refreshed when a token names an unknown key
}

// releaseRequest is the body of POST /release: a resource and either the evidence envelope (the
// service submits it to the verifier: background check) or a result token the workload obtained
// itself (passport).
type releaseRequest struct {
	Resource string          `json:"resource"`
	Evidence json.RawMessage `json:"evidence,omitempty"`
	Token    string          `json:"token,omitempty"`
}

type releaseResponse struct {
	Resource string `json:"resource"`
	Secret   []byte `json:"secret,omitempty"`
	Decision string `json:"decision"`
	Reason   string `json:"reason,omitempty"`
	// Record is the log index of the key_release record of this decision.
	Record uint64 `json:"record"`
}

func (k *keyRelease) routes() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /challenge", k.challenge)
	mux.HandleFunc("POST /release", k.release)
	return mux
}

// challenge hands the workload a verifier nonce bound to this service: only this service can
// spend it, once, before it expires.
func (k *keyRelease) challenge(w http.ResponseWriter, r *http.Request) {
	b, err := k.call(r.Context(), http.MethodGet, "/v1/challenge", nil)
	if err != nil {
		k.fail(w, r, http.StatusBadGateway, err)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.Write(b)
}

func (k *keyRelease) release(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	var req releaseRequest
	dec := json.NewDecoder(io.LimitReader(r.Body, 1<<20))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil || req.Resource == "" || (req.Evidence == nil) == (req.Token == "") {
		k.fail(w, r, http.StatusBadRequest, errors.New(`want {"resource": …, and one of "evidence" (an envelope) or "token"}`))
		return
	}
	secret, ok := k.secrets[req.Resource]
	if !ok {
		k.fail(w, r, http.StatusNotFound, fmt.Errorf("no resource %q", req.Resource))
		return
	}
	var (
		claims  *rp.Claims
		subject string
		why     error
	)
	if req.Evidence != nil {
		claims, subject, why = k.backgroundCheck(ctx, req.Evidence)
	} else {
		claims, why = k.verifyToken(ctx, req.Token, nil)
	}
	var upstream *upstreamError
	if errors.As(why, &upstream) {
		k.fail(w, r, http.StatusBadGateway, why) // the verifier could not answer: no decision
		return
	}
	decision := "release"
	ev := map[string]any{"resource": req.Resource}
	if claims != nil {
		subject = claims.Subject
		ev["platform"] = claims.Platform
		ev["attestation_record_sha256"] = hex.EncodeToString(claims.RecordSHA256[:])
	}
	if subject == "" {
		subject = "unknown"
	}
	if why != nil {
		decision = "deny"
		ev["reason"] = why.Error()
	}
	ev["subject"], ev["decision"] = subject, decision
	body, _ := json.Marshal(ev)
	b, err := k.call(ctx, http.MethodPost, "/v1/events", body)
	if err != nil {
		// Nothing is released unless the decision is on the record.
		k.fail(w, r, http.StatusServiceUnavailable, fmt.Errorf("recording the decision: %w", err))
		return
	}
	var rec struct {
		LogIndex uint64 `json:"log_index"`
	}
	if err := json.Unmarshal(b, &rec); err != nil {
		k.fail(w, r, http.StatusServiceUnavailable, fmt.Errorf("recording the decision: %w", err))
		return
	}
	resp := releaseResponse{Resource: req.Resource, Decision: decision, Record: rec.LogIndex}
	status := http.StatusOK
	if why != nil {
		resp.Reason, status = why.Error(), http.StatusForbidden
	} else {
		resp.Secret = secret
	}
	k.logger.InfoContext(ctx, "key-release decision", slog.String("resource", req.Resource), slog.String("subject", subject),
		slog.String("decision", decision), slog.Uint64("record", rec.LogIndex))
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(resp)
}

// backgroundCheck submits the workload's evidence to the verifier as this relying party and
// verifies the token it answers with, requiring the nonce the evidence carries: a nonce the
// verifier issued to this service (GET /challenge) and accepted exactly once.
func (k *keyRelease) backgroundCheck(ctx context.Context, envelope []byte) (*rp.Claims, string, error) {
	ev, err := attest.DecodeEvidence(envelope)
	if err != nil {
		return nil, "", fmt.Errorf("the evidence is not an envelope: %w", err)
	}
	if ev.Nonce == nil {
		return nil, "", errors.New("the evidence carries no nonce: ask GET /challenge first")
	}
	b, err := k.call(ctx, http.MethodPost, "/v1/attest", envelope)
	if err != nil {
		return nil, "", &upstreamError{err}
	}
	var a struct {
		Token string `json:"token"`
	}
	if err := json.Unmarshal(b, &a); err != nil {
		return nil, "", &upstreamError{err}
	}
	c, err := k.verifyToken(ctx, a.Token, ev.Nonce)
	return c, "", err
}

// verifyToken checks a result token against the verifier's JWKS (refetched once if the token
// names a key it does not hold: the verifier rotated) and, if nonce is set, requires it.
func (k *keyRelease) verifyToken(ctx context.Context, tok string, nonce []byte) (*rp.Claims, error) {
	v, err := k.verifierKeys(ctx, false)
	if err != nil {
		return nil, &upstreamError{err}
	}
	c, err := v.VerifyJWT(tok)
	if errors.Is(err, rp.ErrUnknownKey) {
		if v, err = k.verifierKeys(ctx, true); err != nil {
			return nil, &upstreamError{err}
		}
		c, err = v.VerifyJWT(tok)
	}
	if err != nil {
		// rp checks the signature before the decision rules (status, age, test roots): when only
		// those refused the token, its claims are the verifier's, and the denial record names them.
		if errors.Is(err, rp.ErrStatus) || errors.Is(err, rp.ErrExpired) || errors.Is(err, rp.ErrTestRoots) {
			if c2, perr := signedClaims(tok); perr == nil {
				return c2, err
			}
		}
		return nil, err
	}
	if nonce != nil {
		if err := c.RequireNonce(nonce); err != nil {
			return c, err
		}
	}
	return c, nil
}

// signedClaims decodes the claims of a JWT whose signature rp already verified.
func signedClaims(tok string) (*rp.Claims, error) {
	parts := strings.Split(tok, ".")
	if len(parts) != 3 {
		return nil, errors.New("not a JWS")
	}
	payload, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return nil, err
	}
	c, err := token.ParseJWTPayload(payload)
	if err != nil {
		return nil, err
	}
	return &rp.Claims{Claims: *c}, nil
}

func (k *keyRelease) verifierKeys(ctx context.Context, refresh bool) (*rp.Verifier, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.tokens != nil && !refresh {
		return k.tokens, nil
	}
	jwks, err := k.call(ctx, http.MethodGet, "/.well-known/jwks.json", nil)
	if err != nil {
		return nil, fmt.Errorf("fetching the verifier's JWKS: %w", err)
	}
	v, err := rp.New(jwks, k.opts)
	if err != nil {
		return nil, err
	}
	k.tokens = v
	return v, nil
}

// upstreamError is a failure to talk to the verifier: no decision can be made.
type upstreamError struct{ err error }

func (e *upstreamError) Error() string { return "the verifier did not answer: " + e.err.Error() }
func (e *upstreamError) Unwrap() error { return e.err }

// call sends a request to the verifier with this service's API token and returns a 2xx body.
func (k *keyRelease) call(ctx context.Context, method, path string, body []byte) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, method, strings.TrimSuffix(k.verifier, "/")+path, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+k.token)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := k.client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return nil, err
	}
	if resp.StatusCode/100 != 2 {
		return nil, fmt.Errorf("%s %s: %s %s", method, path, resp.Status, bytes.TrimSpace(b))
	}
	return b, nil
}

func (k *keyRelease) fail(w http.ResponseWriter, r *http.Request, status int, err error) {
	k.logger.WarnContext(r.Context(), "key-release request failed", slog.Int("status", status), slog.Any("error", err))
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(map[string]string{"error": err.Error()})
}
