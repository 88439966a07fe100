package api

import (
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/proofline/proofline/evidence"
	"github.com/proofline/proofline/evidence/index"
	"github.com/proofline/proofline/verifier/ear"
	"github.com/proofline/proofline/verifier/service"
)

// Response bodies (openapi.yaml, components/schemas).
type (
	challengeResponse struct {
		Nonce     []byte    `json:"nonce"`
		ExpiresAt time.Time `json:"expires_at"`
		Bound     bool      `json:"bound"`
	}
	attestationResponse struct {
		ID           string          `json:"id"`
		LogIndex     uint64          `json:"log_index"`
		RecordSHA256 string          `json:"record_sha256"`
		Status       ear.Status      `json:"status"`
		Result       json.RawMessage `json:"result"`
		Token        string          `json:"token,omitempty"`
		CWT          []byte          `json:"cwt,omitempty"`
	}
	storedResultResponse struct {
		ID           string          `json:"id"`
		LogIndex     uint64          `json:"log_index"`
		RecordSHA256 string          `json:"record_sha256"`
		Subject      string          `json:"subject"`
		Platform     string          `json:"platform"`
		Time         time.Time       `json:"time"`
		Result       json.RawMessage `json:"result"`
	}
	inclusionProofResponse struct {
		LogIndex   uint64   `json:"log_index"`
		TreeSize   uint64   `json:"tree_size"`
		Hashes     [][]byte `json:"hashes"`
		Checkpoint string   `json:"checkpoint,omitempty"`
	}
	consistencyProofResponse struct {
		From   uint64   `json:"from"`
		To     uint64   `json:"to"`
		Hashes [][]byte `json:"hashes"`
	}
	readyResponse struct {
		Status   string   `json:"status"`
		Warnings []string `json:"warnings,omitempty"`
		Error    string   `json:"error,omitempty"`
	}
	keyReleaseRequest struct {
		Subject     string `json:"subject"`
		Platform    string `json:"platform,omitempty"`
		Resource    string `json:"resource"`
		Decision    string `json:"decision"`
		Reason      string `json:"reason,omitempty"`
		Attestation string `json:"attestation_record_sha256,omitempty"`
		Policy      *struct {
			ID     string `json:"id"`
			Digest string `json:"digest"`
		} `json:"policy,omitempty"`
	}
	recordedResponse struct {
		LogIndex     uint64 `json:"log_index"`
		RecordSHA256 string `json:"record_sha256"`
	}
	policyResponse struct {
		Version         int64      `json:"version"`
		ID              string     `json:"id"`
		Digest          string     `json:"digest"`
		YAML            string     `json:"yaml,omitempty"`
		CreatedAt       time.Time  `json:"created_at"`
		CreatedBy       string     `json:"created_by"`
		CreatedRecord   uint64     `json:"created_record"`
		Active          bool       `json:"active"`
		ActivatedAt     *time.Time `json:"activated_at,omitempty"`
		ActivatedBy     string     `json:"activated_by,omitempty"`
		ActivatedRecord *uint64    `json:"activated_record,omitempty"`
	}
	recordEntry struct {
		LogIndex     uint64    `json:"log_index"`
		RecordSHA256 string    `json:"record_sha256"`
		Kind         string    `json:"kind"`
		Time         time.Time `json:"time"`
		Subject      string    `json:"subject,omitempty"`
		Platform     string    `json:"platform,omitempty"`
		Status       string    `json:"status,omitempty"`
		Policy       string    `json:"policy,omitempty"`
	}
	recordsResponse struct {
		Records []recordEntry `json:"records"`
		Next    *uint64       `json:"next,omitempty"`
	}
)

// writeJSON answers v encoded by encoding/json. Results are embedded as json.RawMessage, which
// encoding/json compacts: the service records them compact, so they are returned byte for byte.
func writeJSON(c echo.Context, status int, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return c.Blob(status, echo.MIMEApplicationJSON, b)
}

func (s *Server) healthz(c echo.Context) error {
	return writeJSON(c, http.StatusOK, map[string]string{"status": "ok"})
}

// readyz is public: it answers only the status and generic codes (service.Warn*; for not_ready,
// shutting_down or unavailable). The details — errors, paths, the policy, queue depths — go to
// the log.
func (s *Server) readyz(c echo.Context) error {
	ctx := c.Request().Context()
	warnings, err := s.svc.Ready(ctx)
	if err != nil {
		code := "unavailable"
		if errors.Is(err, service.ErrShuttingDown) {
			code = "shutting_down"
		}
		s.logger.WarnContext(ctx, "not ready", slog.String("request_id", requestIDOf(c)), slog.Any("error", err))
		return writeJSON(c, http.StatusServiceUnavailable, readyResponse{Status: "not_ready", Error: code})
	}
	status := "ready"
	codes := make([]string, 0, len(warnings))
	for _, w := range warnings {
		codes = append(codes, w.Code)
		s.logger.InfoContext(ctx, "degraded", slog.String("request_id", requestIDOf(c)), slog.String("warning", w.Code), slog.String("detail", w.Detail))
	}
	if len(codes) > 0 {
		status = "degraded"
	}
	return writeJSON(c, http.StatusOK, readyResponse{Status: status, Warnings: codes})
}

func (s *Server) metrics(c echo.Context) error {
	promhttp.HandlerFor(s.gatherer, promhttp.HandlerOpts{}).ServeHTTP(c.Response(), c.Request())
	return nil
}

func (s *Server) jwks(c echo.Context) error {
	b, err := s.svc.JWKS()
	if err != nil {
		return err
	}
	return c.Blob(http.StatusOK, "application/jwk-set+json", b)
}

func (s *Server) openapi(c echo.Context) error {
	return c.Blob(http.StatusOK, "application/yaml", OpenAPI)
}

func (s *Server) challenge(c echo.Context) error {
	p := principal(c)
	ch, err := s.svc.Challenge(c.Request().Context(), p)
	if err != nil {
		return err
	}
	c.Response().Header().Set("Cache-Control", "no-store")
	return writeJSON(c, http.StatusOK, challengeResponse{Nonce: ch.Nonce, ExpiresAt: ch.Expires, Bound: !p.Anonymous()})
}

func (s *Server) attest(c echo.Context) error {
	// The body is read only once the request has a place in the admission queue: past the
	// queue it is refused 503 unread, so bodies in memory are bounded by queue × max_attest_body.
	forms, err := tokenForms(c.QueryParam("tokens"))
	if err != nil {
		return err
	}
	a, err := s.svc.AttestWith(c.Request().Context(), principal(c), forms, func() ([]byte, error) {
		return io.ReadAll(c.Request().Body)
	})
	if err != nil {
		return err
	}
	c.Response().Header().Set("Cache-Control", "no-store")
	return c.Blob(http.StatusOK, echo.MIMEApplicationJSON, attestationResponse{
		ID: a.ID(), LogIndex: a.LogIndex, RecordSHA256: hex.EncodeToString(a.RecordSHA256[:]), Status: a.Result.Status,
		Result: a.ResultJSON, Token: a.JWT, CWT: a.CWT,
	}.encode())
}

// encode returns the bytes json.Marshal gives for r (TestAttestationResponseEncoding holds them
// equal), written directly: the answer to every attestation, whose reflective encoding
// re-validated and copied the result, already JSON, once more. The result is the service's
// json.Marshal output (compact, HTML-escaped) and is copied as it is.
func (r attestationResponse) encode() []byte {
	b := make([]byte, 0, 160+len(r.Result)+len(r.Token)+len(r.CWT)*4/3)
	b = append(b, `{"id":`...)
	b = appendJSONString(b, r.ID)
	b = append(b, `,"log_index":`...)
	b = strconv.AppendUint(b, r.LogIndex, 10)
	b = append(b, `,"record_sha256":`...)
	b = appendJSONString(b, r.RecordSHA256)
	b = append(b, `,"status":`...)
	b = appendJSONString(b, string(r.Status))
	b = append(b, `,"result":`...)
	if len(r.Result) == 0 {
		b = append(b, "null"...)
	} else {
		b = append(b, r.Result...)
	}
	if r.Token != "" {
		b = append(b, `,"token":`...)
		b = appendJSONString(b, r.Token)
	}
	if len(r.CWT) > 0 {
		b = append(b, `,"cwt":"`...)
		b = base64.StdEncoding.AppendEncode(b, r.CWT)
		b = append(b, '"')
	}
	return append(b, '}')
}

// appendJSONString appends s as encoding/json writes a string: as it is when no byte of it
// needs escaping (ids, hex, JWTs), through json.Marshal otherwise.
func appendJSONString(b []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c >= 0x7f || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&' {
			q, _ := json.Marshal(s)
			return append(b, q...)
		}
	}
	b = append(b, '"')
	b = append(b, s...)
	return append(b, '"')
}

// tokenForms parses POST /v1/attest's tokens parameter: "jwt", "cwt" or both, comma-separated;
// empty means both.
func tokenForms(q string) (service.TokenForms, error) {
	switch q {
	case "", "jwt,cwt", "cwt,jwt":
		return service.TokenJWT | service.TokenCWT, nil
	case "jwt":
		return service.TokenJWT, nil
	case "cwt":
		return service.TokenCWT, nil
	}
	return 0, fmt.Errorf("%w: tokens=%q: name the token forms to issue, jwt, cwt or jwt,cwt", service.ErrMalformed, q)
}

func (s *Server) result(c echo.Context) error {
	r, err := s.svc.Result(c.Request().Context(), principal(c), c.Param("id"))
	if err != nil {
		return err
	}
	return writeJSON(c, http.StatusOK, storedResultResponse{
		ID: strconv.FormatUint(r.LogIndex, 10), LogIndex: r.LogIndex, RecordSHA256: hex.EncodeToString(r.RecordSHA256[:]),
		Subject: r.Subject, Platform: r.Platform, Time: r.Time, Result: r.ResultJSON,
	})
}

func (s *Server) checkpoint(c echo.Context) error {
	cp, err := s.svc.Checkpoint(c.Request().Context())
	if err != nil {
		return err
	}
	return c.Blob(http.StatusOK, "text/plain; charset=utf-8", cp.Note)
}

// uintParam parses a non-negative integer parameter; missing is 0 unless required.
func uintParam(name, v string, required bool) (uint64, error) {
	if v == "" && !required {
		return 0, nil
	}
	n, err := strconv.ParseUint(v, 10, 63)
	if err != nil {
		return 0, fmt.Errorf("%w: %s must be a non-negative integer, got %q", errBadRequest, name, v)
	}
	return n, nil
}

func (s *Server) inclusionProof(c echo.Context) error {
	idx, err := strconv.ParseUint(c.Param("index"), 10, 63)
	if err != nil {
		return fmt.Errorf("%w: no record %q", service.ErrNotFound, c.Param("index"))
	}
	size, err := uintParam("tree_size", c.QueryParam("tree_size"), false)
	if err != nil {
		return err
	}
	p, err := s.svc.InclusionProof(c.Request().Context(), idx, size)
	if err != nil {
		return err
	}
	return writeJSON(c, http.StatusOK, inclusionProofResponse{LogIndex: p.LogIndex, TreeSize: p.TreeSize, Hashes: nonNil(p.Hashes), Checkpoint: string(p.Checkpoint)})
}

func nonNil(h [][]byte) [][]byte {
	if h == nil {
		return [][]byte{}
	}
	return h
}

func (s *Server) consistencyProof(c echo.Context) error {
	from, err := uintParam("from", c.QueryParam("from"), true)
	if err != nil {
		return err
	}
	to, err := uintParam("to", c.QueryParam("to"), true)
	if err != nil {
		return err
	}
	h, err := s.svc.ConsistencyProof(c.Request().Context(), from, to)
	if err != nil {
		return err
	}
	return writeJSON(c, http.StatusOK, consistencyProofResponse{From: from, To: to, Hashes: nonNil(h)})
}

func (s *Server) recordEvent(c echo.Context) error {
	var req keyReleaseRequest
	if err := decodeBody(c, &req, "a key-release event"); err != nil {
		return err
	}
	kr := service.KeyRelease{Subject: req.Subject, Platform: req.Platform, Resource: req.Resource, Decision: evidence.Decision(req.Decision), Reason: req.Reason}
	if req.Attestation != "" {
		b, err := hex.DecodeString(req.Attestation)
		if err != nil || len(b) != 32 {
			return fmt.Errorf("%w: attestation_record_sha256 must be 64 hex digits", errBadRequest)
		}
		d := evidence.Digest(b)
		kr.Attestation = &d
	}
	if req.Policy != nil {
		d, err := digestParam(req.Policy.Digest, "sha256:")
		if err != nil {
			return err
		}
		kr.Policy = &evidence.PolicyRef{ID: req.Policy.ID, Digest: d}
	}
	r, err := s.svc.RecordKeyRelease(c.Request().Context(), principal(c), kr)
	if err != nil {
		return err
	}
	return writeJSON(c, http.StatusCreated, recordedResponse{LogIndex: r.LogIndex, RecordSHA256: hex.EncodeToString(r.RecordSHA256[:])})
}

// decodeBody decodes the request's JSON body into v, refusing unknown fields. A body past the
// route's limit (one sent without a length, cut off while it is read) is the
// *http.MaxBytesError itself, so that the answer is 413 as for a body whose length is given;
// anything else is errBadRequest saying that the body is not what (e.g. "a key-release event").
func decodeBody(c echo.Context, v any, what string) error {
	dec := json.NewDecoder(c.Request().Body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		if mbe := (*http.MaxBytesError)(nil); errors.As(err, &mbe) {
			return mbe
		}
		return fmt.Errorf("%w: the body is not %s: %v", errBadRequest, what, err)
	}
	return nil
}

// digestParam parses prefix + 64 hex digits.
func digestParam(v, prefix string) (evidence.Digest, error) {
	var d evidence.Digest
	if len(v) != len(prefix)+64 || v[:len(prefix)] != prefix {
		return d, fmt.Errorf("%w: digest %q is not %s<64 hex digits>", errBadRequest, v, prefix)
	}
	b, err := hex.DecodeString(v[len(prefix):])
	if err != nil {
		return d, fmt.Errorf("%w: digest %q is not %s<64 hex digits>", errBadRequest, v, prefix)
	}
	return evidence.Digest(b), nil
}

func policyOf(v service.PolicyVersion, withYAML bool) policyResponse {
	r := policyResponse{
		Version: v.Version, ID: v.ID, Digest: v.Digest, CreatedAt: v.CreatedAt, CreatedBy: v.CreatedBy,
		CreatedRecord: v.CreatedRecord, Active: v.Active,
	}
	if withYAML {
		r.YAML = string(v.Body)
	}
	if v.Active {
		at, rec := v.ActivatedAt, v.ActivatedRecord
		r.ActivatedAt, r.ActivatedBy, r.ActivatedRecord = &at, v.ActivatedBy, &rec
	}
	return r
}

func (s *Server) listPolicies(c echo.Context) error {
	vs, err := s.svc.ListPolicies(c.Request().Context())
	if err != nil {
		return err
	}
	out := struct {
		Policies []policyResponse `json:"policies"`
	}{Policies: []policyResponse{}}
	for _, v := range vs {
		out.Policies = append(out.Policies, policyOf(v, false))
	}
	return writeJSON(c, http.StatusOK, out)
}

func (s *Server) createPolicy(c echo.Context) error {
	activate := false
	if v := c.QueryParam("activate"); v != "" {
		var err error
		if activate, err = strconv.ParseBool(v); err != nil {
			return fmt.Errorf("%w: activate must be true or false", errBadRequest)
		}
	}
	body, err := io.ReadAll(c.Request().Body)
	if err != nil {
		return err
	}
	v, err := s.svc.CreatePolicy(c.Request().Context(), principal(c), body, activate)
	if err != nil {
		return err
	}
	return writeJSON(c, http.StatusCreated, policyOf(v, false))
}

func policyVersionParam(c echo.Context) (int64, error) {
	n, err := strconv.ParseInt(c.Param("version"), 10, 64)
	if err != nil || n < 1 {
		return 0, fmt.Errorf("%w: no policy version %q", service.ErrNotFound, c.Param("version"))
	}
	return n, nil
}

func (s *Server) getPolicy(c echo.Context) error {
	n, err := policyVersionParam(c)
	if err != nil {
		return err
	}
	v, err := s.svc.Policy(c.Request().Context(), n)
	if err != nil {
		return err
	}
	return writeJSON(c, http.StatusOK, policyOf(v, true))
}

func (s *Server) activatePolicy(c echo.Context) error {
	n, err := policyVersionParam(c)
	if err != nil {
		return err
	}
	v, err := s.svc.ActivatePolicy(c.Request().Context(), principal(c), n)
	if err != nil {
		return err
	}
	return writeJSON(c, http.StatusOK, policyOf(v, false))
}

func (s *Server) queryRecords(c echo.Context) error {
	q := index.Query{
		Subject: c.QueryParam("subject"), Platform: c.QueryParam("platform"), Status: c.QueryParam("status"),
		Kind: evidence.Kind(c.QueryParam("kind")), Policy: c.QueryParam("policy"),
	}
	for _, t := range []struct {
		name string
		dst  *time.Time
	}{{"from", &q.From}, {"to", &q.To}} {
		if v := c.QueryParam(t.name); v != "" {
			ts, err := time.Parse(time.RFC3339, v)
			if err != nil {
				return fmt.Errorf("%w: %s must be an RFC 3339 time", errBadRequest, t.name)
			}
			*t.dst = ts
		}
	}
	var err error
	if q.Start, err = uintParam("start", c.QueryParam("start"), false); err != nil {
		return err
	}
	limit, err := uintParam("limit", c.QueryParam("limit"), false)
	if err != nil {
		return err
	}
	if limit > index.MaxLimit {
		return fmt.Errorf("%w: limit is at most %d", errBadRequest, index.MaxLimit)
	}
	q.Limit = int(limit)
	es, err := s.svc.Records(c.Request().Context(), q)
	if err != nil {
		return err
	}
	out := recordsResponse{Records: []recordEntry{}}
	for _, e := range es {
		out.Records = append(out.Records, recordEntry{
			LogIndex: e.LogIndex, RecordSHA256: e.LeafHash.String(), Kind: string(e.Kind), Time: e.Time,
			Subject: e.Subject, Platform: e.Platform, Status: e.Status, Policy: e.Policy,
		})
	}
	want := q.Limit
	if want == 0 {
		want = index.DefaultLimit
	}
	if len(es) == want {
		next := es[len(es)-1].LogIndex + 1
		out.Next = &next
	}
	return writeJSON(c, http.StatusOK, out)
}

func (s *Server) getRecord(c echo.Context) error {
	idx, err := strconv.ParseUint(c.Param("index"), 10, 63)
	if err != nil {
		return fmt.Errorf("%w: no record %q", service.ErrNotFound, c.Param("index"))
	}
	leaf, _, err := s.svc.Record(c.Request().Context(), idx)
	if err != nil {
		return err
	}
	return c.Blob(http.StatusOK, `application/cose; cose-type="cose-sign1"`, leaf)
}

func (s *Server) getBlob(c echo.Context) error {
	d, err := digestParam(c.Param("digest"), "")
	if err != nil {
		return err
	}
	b, err := s.svc.Blob(c.Request().Context(), d)
	if err != nil {
		return err
	}
	return c.Blob(http.StatusOK, "application/octet-stream", b)
}

func (s *Server) getKeys(c echo.Context) error {
	k, err := s.svc.Keys()
	if err != nil {
		return err
	}
	return writeJSON(c, http.StatusOK, k)
}
