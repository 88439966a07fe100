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
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/proofline/proofline/attest"
	"github.com/proofline/proofline/verifier/rp"
	"github.com/proofline/proofline/verifier/token"
)

// keyRelease is the example key-release service: a relying party of the Proofline verifier. It
// is an example, not a hardened product: read it, adapt it.
//
// It releases a secret only to a workload named in the secret's allow-list (resource.Subjects,
// and resource.Measurements when given) whose latest attestation the verifier affirmed, with a
// result token that is for this service (aud), signed by a key in the verifier's JWKS, and fresh:
// either bound to a nonce this service obtained for the request (background check), or issued
// less than MaxAge ago (passport). Every decision, release or deny, is first recorded by the
// verifier as a key_release evidence record (POST /v1/events); the secret leaves only once that
// record is durable, and a decision that cannot be recorded releases nothing. A request that
// carries no result the verifier signed or judged (malformed, a token that does not verify) is
// no decision: it is refused (a refusal) and not recorded. A passport token releases once
// (replayCache): it is a bearer credential, and the secret is not yet wrapped to the workload's
// key (see the package documentation).
type keyRelease struct {
	verifier string // base URL of the verifier
	token    string // this service's API token at the verifier (role relying-party)
	client   *http.Client
	opts     rp.Options
	secrets  map[string]resource
	logger   *slog.Logger
	replays  *replayCache // passport tokens that released a secret here

	// mu guards the fields below; it is never held during a network call.
	mu        sync.Mutex
	tokens    *rp.Verifier  // from the verifier's JWKS; refreshed when a token names an unknown key
	fetchedAt time.Time     // when the last JWKS fetch started
	fetching  chan struct{} // closed when the JWKS fetch in flight ends; nil when none is
	fetchErr  error         // the last JWKS fetch's error
}

// jwksRefreshInterval is the least time between two fetches of the verifier's JWKS: anyone can
// present a token naming an unknown key, and each must not cost a fetch.
const jwksRefreshInterval = 30 * time.Second

// resource is one secret of the secrets file and the workloads it is released to.
type resource struct {
	Secret string `json:"secret"`
	// Subjects are the attester subjects the secret may be released to (required): a passport's
	// token subject, "agent:<name>" as the verifier authenticated the agent (token principals),
	// or "agent:mtls:<issuer>/<cn>" (client certificates); or, for a background check, the
	// workload's own claim "runtime:<name>", the "agent" of the runtime_data its report binds.
	// A runtime: subject is what the attested workload says it is, not an authenticated
	// identity: pin Measurements for resources released by background check.
	Subjects []string `json:"subjects"`
	// Measurements, if given, are the launch measurements (hex: TDX MRTD, SNP MEASUREMENT) the
	// secret may be released to, read from the verifier's recorded result.
	Measurements []string `json:"measurements,omitempty"`
}

// parseSecrets reads the secrets file: {"<resource>": {"secret": …, "subjects": […],
// "measurements": […]}}. Every resource must name its subjects.
func parseSecrets(raw []byte) (map[string]resource, error) {
	var rs map[string]resource
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&rs); err != nil {
		return nil, fmt.Errorf(`want {"<resource>": {"secret": "…", "subjects": ["agent:<name>", …], "measurements": ["<hex>", …]}}: %w`, err)
	}
	for name, r := range rs {
		if r.Secret == "" || len(r.Subjects) == 0 {
			return nil, fmt.Errorf("resource %q: give its secret and the subjects it is released to", name)
		}
		for i, m := range r.Measurements {
			if _, err := hex.DecodeString(m); err != nil || m == "" {
				return nil, fmt.Errorf("resource %q: measurements[%d] is not hex", name, i)
			}
			r.Measurements[i] = strings.ToLower(m)
		}
	}
	return rs, nil
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
	res, ok := k.secrets[req.Resource]
	if !ok {
		k.fail(w, r, http.StatusNotFound, fmt.Errorf("no resource %q", req.Resource))
		return
	}
	var (
		claims  *rp.Claims
		subject string // the attester's, never this service's
		result  []byte // the verifier's result JSON, when at hand
		why     error
	)
	if req.Evidence != nil {
		claims, subject, result, why = k.backgroundCheck(ctx, req.Evidence)
	} else {
		claims, why = k.verifyToken(ctx, req.Token, nil)
		if claims != nil {
			subject = claims.Subject
			if why == nil && !strings.HasPrefix(subject, "agent:") {
				// A token some relying party obtained in a background check names that relying
				// party, not the attester: it is no passport.
				why = fmt.Errorf("the token's subject %q is not an agent: present a token the workload obtained itself", subject)
			}
		}
	}
	if why == nil {
		why = k.allowed(ctx, req.Resource, res, subject, claims, result)
	}
	spent := "" // the passport token this release spends
	if why == nil && req.Token != "" {
		// A background check's token is bound to a single-use nonce this service asked for; a
		// passport token is not, and releases once.
		name := tokenName(claims)
		if why = k.replays.spend(name, k.tokenUntil(claims), k.now()); why == nil {
			spent = name
		}
	}
	var (
		upstream *upstreamError
		refused  *refusal
	)
	switch {
	case errors.As(why, &upstream):
		k.fail(w, r, http.StatusBadGateway, why) // the verifier could not answer: no decision
		return
	case errors.As(why, &refused):
		k.fail(w, r, refused.status, refused.err)
		return
	case claims == nil:
		// Only a decision that rests on a result the verifier signed is recorded.
		k.fail(w, r, http.StatusUnauthorized, fmt.Errorf("no verified attestation result: %w", why))
		return
	}
	decision := "release"
	ev := map[string]any{"resource": req.Resource}
	ev["platform"] = claims.Platform
	ev["attestation_record_sha256"] = hex.EncodeToString(claims.RecordSHA256[:])
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
	var rec struct {
		LogIndex uint64 `json:"log_index"`
	}
	if err == nil {
		err = json.Unmarshal(b, &rec)
	}
	if err != nil {
		// Nothing is released unless the decision is on the record: the token is not spent.
		if spent != "" {
			k.replays.unspend(spent)
		}
		k.fail(w, r, http.StatusServiceUnavailable, fmt.Errorf("recording the decision: %w", err))
		return
	}
	resp := releaseResponse{Resource: req.Resource, Decision: decision, Record: rec.LogIndex}
	status := http.StatusOK
	if why != nil {
		resp.Reason, status = why.Error(), http.StatusForbidden
	} else {
		resp.Secret = []byte(res.Secret)
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
// verifier issued to this service (GET /challenge) and accepted exactly once. The token's subject
// is this service; the attester's subject is the workload's own claim, "runtime:<agent>" from the
// runtime_data its report binds. It also returns the verifier's result JSON.
func (k *keyRelease) backgroundCheck(ctx context.Context, envelope []byte) (*rp.Claims, string, []byte, error) {
	ev, err := attest.DecodeEvidence(envelope)
	if err != nil {
		return nil, "", nil, &refusal{http.StatusBadRequest, fmt.Errorf("the evidence is not an envelope: %w", err)}
	}
	subject := ""
	var rd struct {
		Agent string `json:"agent"`
	}
	if json.Unmarshal(ev.RuntimeData, &rd) == nil && rd.Agent != "" {
		subject = "runtime:" + rd.Agent
	}
	if ev.Nonce == nil {
		return nil, subject, nil, &refusal{http.StatusBadRequest, errors.New("the evidence carries no nonce: ask GET /challenge first")}
	}
	b, err := k.call(ctx, http.MethodPost, "/v1/attest", envelope)
	if err != nil {
		return nil, subject, nil, &upstreamError{err}
	}
	var a struct {
		Token  string          `json:"token"`
		Result json.RawMessage `json:"result"`
	}
	if err := json.Unmarshal(b, &a); err != nil {
		return nil, subject, nil, &upstreamError{err}
	}
	c, err := k.verifyToken(ctx, a.Token, ev.Nonce)
	var refused *refusal
	if errors.As(err, &refused) {
		// The verifier's own answer does not verify: it is the verifier that failed.
		return nil, subject, nil, &upstreamError{err}
	}
	return c, subject, a.Result, err
}

// allowed checks the resource's allow-list: the attester's subject, and, if the resource pins
// measurements, the launch measurement of the verifier's recorded result (read from the
// verifier when result is nil, and checked to be the token's record).
func (k *keyRelease) allowed(ctx context.Context, name string, res resource, subject string, c *rp.Claims, result []byte) error {
	if !slices.Contains(res.Subjects, subject) {
		return fmt.Errorf("%q is not among the workloads resource %q is released to", subject, name)
	}
	if len(res.Measurements) == 0 {
		return nil
	}
	if result == nil {
		b, err := k.call(ctx, http.MethodGet, "/v1/results/"+strconv.FormatUint(c.LogIndex, 10), nil)
		if err != nil {
			return &upstreamError{err}
		}
		var stored struct {
			RecordSHA256 string          `json:"record_sha256"`
			Result       json.RawMessage `json:"result"`
		}
		if err := json.Unmarshal(b, &stored); err != nil {
			return &upstreamError{err}
		}
		if stored.RecordSHA256 != hex.EncodeToString(c.RecordSHA256[:]) {
			return fmt.Errorf("the verifier's record %d is not the token's", c.LogIndex)
		}
		result = stored.Result
	}
	var r struct {
		Claims struct {
			MRTD        string `json:"mr_td"`
			Measurement string `json:"measurement"`
		} `json:"claims"`
	}
	if err := json.Unmarshal(result, &r); err != nil {
		return fmt.Errorf("the verifier's result: %w", err)
	}
	m := strings.ToLower(r.Claims.MRTD + r.Claims.Measurement)
	if m == "" || !slices.Contains(res.Measurements, m) {
		return fmt.Errorf("launch measurement %q is not among those resource %q is released to", m, name)
	}
	return nil
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
		// rp checks the signature before the decision rules (issuer, audience, time, test roots,
		// status): when only those refused the token, its claims are the verifier's, and the
		// denial is recorded naming them. A token that does not verify (malformed, unknown key,
		// bad signature) is refused unrecorded: anyone can make one, and the log is append-only.
		if errors.Is(err, rp.ErrIssuer) || errors.Is(err, rp.ErrAudience) || errors.Is(err, rp.ErrExpired) ||
			errors.Is(err, rp.ErrNotYetValid) || errors.Is(err, rp.ErrTestRoots) || errors.Is(err, rp.ErrStatus) {
			if c2, perr := signedClaims(tok); perr == nil {
				return c2, err
			}
		}
		return nil, &refusal{http.StatusUnauthorized, fmt.Errorf("the token does not verify: %w", err)}
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

// verifierKeys returns the verifier's keys, fetching its JWKS first if none is held or, when
// refresh is set (a token named an unknown key: the verifier may have rotated), if the last
// fetch started jwksRefreshInterval ago or more. Concurrent callers share one fetch.
func (k *keyRelease) verifierKeys(ctx context.Context, refresh bool) (*rp.Verifier, error) {
	k.mu.Lock()
	now := k.now()
	recent := !k.fetchedAt.IsZero() && now.Sub(k.fetchedAt) < jwksRefreshInterval
	if (k.tokens != nil && !refresh) || (k.fetching == nil && recent) {
		v, err := k.tokens, k.fetchErr
		k.mu.Unlock()
		if v == nil {
			return nil, err
		}
		return v, nil
	}
	done := k.fetching
	if done == nil {
		done = make(chan struct{})
		k.fetching, k.fetchedAt = done, now
		// The fetch serves every caller waiting for it: one caller's cancellation must not end
		// it (the client's timeout does).
		go k.fetchKeys(context.WithoutCancel(ctx), done)
	}
	k.mu.Unlock()
	select {
	case <-done:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.tokens == nil {
		return nil, k.fetchErr
	}
	return k.tokens, nil
}

// fetchKeys fetches the verifier's JWKS and, if it is a usable key set, keeps it; then closes done.
func (k *keyRelease) fetchKeys(ctx context.Context, done chan struct{}) {
	var v *rp.Verifier
	jwks, err := k.call(ctx, http.MethodGet, "/.well-known/jwks.json", nil)
	if err != nil {
		err = fmt.Errorf("fetching the verifier's JWKS: %w", err)
	} else {
		v, err = rp.New(jwks, k.opts)
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	if err == nil {
		k.tokens = v
	}
	k.fetchErr, k.fetching = err, nil
	close(done)
}

// tokenUntil is when a token stops verifying here: its exp, or iat + MaxAge if earlier, plus
// the leeway.
func (k *keyRelease) tokenUntil(c *rp.Claims) time.Time {
	until := c.Expiry
	if k.opts.MaxAge > 0 && c.IssuedAt.Add(k.opts.MaxAge).Before(until) {
		until = c.IssuedAt.Add(k.opts.MaxAge)
	}
	return until.Add(k.opts.Leeway)
}

func (k *keyRelease) now() time.Time {
	if k.opts.Now != nil {
		return k.opts.Now()
	}
	return time.Now()
}

// refusal is a request refused before any decision, answered with status and not recorded:
// malformed, or carrying no result the verifier signed or judged.
type refusal struct {
	status int
	err    error
}

func (e *refusal) Error() string { return e.err.Error() }
func (e *refusal) Unwrap() error { return e.err }

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
