package api

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/proofline/proofline/verifier/service"
)

// Access management: GET/POST /v1/tokens, DELETE /v1/tokens/{id}, GET /v1/access-review.
//
// Tokens of the configuration file (http.tokens) are listed with source "config" and the id
// "config:<role>:<name>"; they cannot be revoked through the API (409): remove them from the file
// and restart every replica. Tokens created through the API (source "database") are checked
// against the state database on every request (service.AuthenticateToken), so a revocation or an
// expiry takes effect on the next request on every replica.

// accessStore is what the authenticator needs of the service for tokens created through the API.
type accessStore interface {
	AuthenticateToken(ctx context.Context, sum [32]byte, from string) (service.Principal, error)
	NotePrincipalUse(ctx context.Context, p service.Principal, from string)
}

// configPrincipalsTimeout bounds the start-up check of the configuration tokens against the
// database tokens (a warning only).
const configPrincipalsTimeout = 10 * time.Second

// shareConfigPrincipals gives the service the configuration tokens' principals: CreateToken
// refuses them for every caller, and a clash with an active database token is logged at start.
func (s *Server) shareConfigPrincipals() {
	ps := make([]service.Principal, 0, len(s.cfg.Tokens))
	for _, t := range s.cfg.Tokens {
		ps = append(ps, service.Principal{Name: t.Name, Role: t.Role})
	}
	ctx, cancel := context.WithTimeout(context.Background(), configPrincipalsTimeout)
	defer cancel()
	s.svc.SetConfigPrincipals(ctx, ps)
}

// databaseToken authenticates a bearer token that no configuration token matched: only a token
// with service.TokenPrefix is looked up. Unknown, revoked and expired are errUnauthenticated (401);
// a database that cannot be read is service.ErrUnavailable (503), never a pass.
func (a *authenticator) databaseToken(r *http.Request, tok string, sum [32]byte) (service.Principal, error) {
	if a.store == nil || !service.IsTokenCandidate(tok) {
		return service.Principal{}, errUnauthenticated
	}
	p, err := a.store.AuthenticateToken(r.Context(), sum, remoteIP(r))
	if errors.Is(err, service.ErrTokenRefused) {
		return service.Principal{}, fmt.Errorf("%w: %w", errUnauthenticated, err)
	}
	return p, err
}

// noteUse keeps the last use of a configuration-token or client-certificate principal.
func (a *authenticator) noteUse(r *http.Request, p service.Principal) {
	if a.store != nil {
		a.store.NotePrincipalUse(r.Context(), p, remoteIP(r))
	}
}

// remoteIP is the client's address as the access log has it (echo.ExtractIPDirect: never
// X-Forwarded-For).
func remoteIP(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}

// Bodies (openapi.yaml: TokenRequest, Token, CreatedToken, AccessReview).
type (
	tokenRequest struct {
		Name      string     `json:"name"`
		Role      string     `json:"role"`
		ExpiresIn string     `json:"expires_in,omitempty"`
		ExpiresAt *time.Time `json:"expires_at,omitempty"`
	}
	tokenEntry struct {
		ID            string     `json:"id"`
		Name          string     `json:"name"`
		Role          string     `json:"role"`
		Source        string     `json:"source"`
		Status        string     `json:"status"`
		Revocable     bool       `json:"revocable"`
		CreatedAt     *time.Time `json:"created_at,omitempty"`
		CreatedBy     string     `json:"created_by,omitempty"`
		CreatedRecord *uint64    `json:"created_record,omitempty"`
		ExpiresAt     *time.Time `json:"expires_at,omitempty"`
		RevokedAt     *time.Time `json:"revoked_at,omitempty"`
		RevokedBy     string     `json:"revoked_by,omitempty"`
		RevokedRecord *uint64    `json:"revoked_record,omitempty"`
		LastUsedAt    *time.Time `json:"last_used_at,omitempty"`
		LastUsedFrom  string     `json:"last_used_from,omitempty"`
	}
	createdTokenResponse struct {
		tokenEntry
		Token string `json:"token"`
	}
	accessChangeEntry struct {
		LogIndex     uint64    `json:"log_index"`
		RecordSHA256 string    `json:"record_sha256"`
		Time         time.Time `json:"time"`
		Action       string    `json:"action"`
		Actor        string    `json:"actor"`
		TokenID      string    `json:"token_id"`
		Name         string    `json:"name"`
		Role         string    `json:"role"`
		ExpiresAt    time.Time `json:"expires_at"`
	}
	accessReviewResponse struct {
		GeneratedAt time.Time           `json:"generated_at"`
		GeneratedBy string              `json:"generated_by"`
		From        *time.Time          `json:"from,omitempty"`
		To          *time.Time          `json:"to,omitempty"`
		Principals  []tokenEntry        `json:"principals"`
		Changes     []accessChangeEntry `json:"changes"`
		Notes       []string            `json:"notes"`
	}
)

// reviewNotes say what an auditor needs to read the review right.
var reviewNotes = []string{
	"Every creation and revocation of an API token is an access_change record in the evidence log (changes); its log_index and record_sha256 name it for GET /v1/records/{index} and the audit bundle.",
	"A token passing its expiry is refused from then on without a record of its own: its expiry is in its creation record.",
	"Tokens with source config come from the configuration file (http.tokens): they are not created, revoked or expired through the API, and their changes are not records; review the file's history.",
	"Principals with source certificate are agents seen with a TLS client certificate from the configured client CAs; they are listed once seen.",
	"Last use is kept to the minute and is the last authenticated request on any replica.",
}

func ptrTime(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	return &t
}

func ptrUint(v uint64) *uint64 { return &v }

func configTokenID(t TokenConfig) string { return "config:" + string(t.Role) + ":" + t.Name }

// principals lists every principal: configuration tokens, tokens created through the API and,
// with certificates, agents seen; each with its last use.
func (s *Server) principals(ctx context.Context, withCertificates bool) ([]tokenEntry, error) {
	dbTokens, err := s.svc.Tokens(ctx)
	if err != nil {
		return nil, err
	}
	uses, err := s.svc.PrincipalUses(ctx)
	if err != nil {
		return nil, err
	}
	used := map[string]service.PrincipalUse{}
	for _, u := range uses {
		used[u.Principal] = u
	}
	now := s.svc.Now()
	out := []tokenEntry{}
	for _, t := range s.cfg.Tokens {
		e := tokenEntry{ID: configTokenID(t), Name: t.Name, Role: string(t.Role), Source: service.SourceConfig, Status: "active"}
		if u, ok := used[service.Principal{Name: t.Name, Role: t.Role}.String()]; ok {
			e.LastUsedAt, e.LastUsedFrom = ptrTime(u.LastUsedAt), u.LastUsedFrom
		}
		out = append(out, e)
	}
	for _, t := range dbTokens {
		out = append(out, dbTokenEntry(t, now))
	}
	if withCertificates {
		for _, u := range uses {
			rest, ok := strings.CutPrefix(u.Principal, string(service.RoleAgent)+":mtls:")
			if !ok {
				continue
			}
			out = append(out, tokenEntry{
				ID: "certificate:" + rest, Name: "mtls:" + rest, Role: string(service.RoleAgent), Source: service.SourceCertificate,
				Status: "seen", LastUsedAt: ptrTime(u.LastUsedAt), LastUsedFrom: u.LastUsedFrom,
			})
		}
	}
	return out, nil
}

func dbTokenEntry(t service.APIToken, now time.Time) tokenEntry {
	e := tokenEntry{
		ID: t.ID, Name: t.Name, Role: string(t.Role), Source: service.SourceDatabase, Status: t.Status(now),
		CreatedAt: ptrTime(t.CreatedAt), CreatedBy: t.CreatedBy, CreatedRecord: ptrUint(t.CreatedRecord),
		ExpiresAt: ptrTime(t.ExpiresAt), LastUsedAt: ptrTime(t.LastUsedAt), LastUsedFrom: t.LastUsedFrom,
	}
	e.Revocable = e.Status != "revoked"
	if !t.RevokedAt.IsZero() {
		e.RevokedAt, e.RevokedBy = ptrTime(t.RevokedAt), t.RevokedBy
		if !t.RevocationUnrecorded { // else the record is still to be written: no index yet
			e.RevokedRecord = ptrUint(t.RevokedRecord)
		}
	}
	return e
}

func (s *Server) listTokens(c echo.Context) error {
	ps, err := s.principals(c.Request().Context(), false)
	if err != nil {
		return err
	}
	return writeJSON(c, http.StatusOK, struct {
		Tokens []tokenEntry `json:"tokens"`
	}{ps})
}

func (s *Server) createToken(c echo.Context) error {
	var req tokenRequest
	if err := decodeBody(c, &req, "a token request {name, role, expires_in | expires_at}"); err != nil {
		return err
	}
	tr := service.TokenRequest{Name: req.Name, Role: service.Role(req.Role)}
	switch {
	case req.ExpiresIn != "" && req.ExpiresAt != nil:
		return fmt.Errorf("%w: give expires_in or expires_at, not both", errBadRequest)
	case req.ExpiresIn != "":
		d, err := time.ParseDuration(req.ExpiresIn)
		if err != nil || d <= 0 {
			return fmt.Errorf("%w: expires_in %q is not a positive duration such as 720h", errBadRequest, req.ExpiresIn)
		}
		tr.ExpiresAt = s.svc.Now().Add(d)
	case req.ExpiresAt != nil:
		tr.ExpiresAt = *req.ExpiresAt
	}
	ct, err := s.svc.CreateToken(c.Request().Context(), principal(c), tr)
	if err != nil {
		return err
	}
	c.Response().Header().Set("Cache-Control", "no-store")
	return writeJSON(c, http.StatusCreated, createdTokenResponse{tokenEntry: dbTokenEntry(ct.APIToken, s.svc.Now()), Token: ct.Secret})
}

func (s *Server) revokeToken(c echo.Context) error {
	id := c.Param("id")
	if strings.HasPrefix(id, "config:") {
		return fmt.Errorf("%w: %s is a token of the configuration file, which the API cannot revoke: remove it from http.tokens and restart every replica", service.ErrConflict, id)
	}
	t, err := s.svc.RevokeToken(c.Request().Context(), principal(c), id)
	if err != nil {
		return err
	}
	return writeJSON(c, http.StatusOK, dbTokenEntry(t, s.svc.Now()))
}

func (s *Server) accessReview(c echo.Context) error {
	ctx := c.Request().Context()
	out := accessReviewResponse{GeneratedAt: s.svc.Now().UTC().Truncate(time.Second), GeneratedBy: principal(c).String(), Notes: reviewNotes}
	var from, to time.Time
	for _, q := range []struct {
		name string
		dst  *time.Time
		out  **time.Time
	}{{"from", &from, &out.From}, {"to", &to, &out.To}} {
		if v := c.QueryParam(q.name); v != "" {
			t, err := time.Parse(time.RFC3339, v)
			if err != nil {
				return fmt.Errorf("%w: %s must be an RFC 3339 time such as 2026-01-02T15:04:05Z", errBadRequest, q.name)
			}
			*q.dst, *q.out = t.UTC(), ptrTime(t.UTC())
		}
	}
	if !from.IsZero() && !to.IsZero() && to.Before(from) {
		return fmt.Errorf("%w: to is before from", errBadRequest)
	}
	var err error
	if out.Principals, err = s.principals(ctx, true); err != nil {
		return err
	}
	changes, err := s.svc.AccessChanges(ctx, from, to)
	if err != nil {
		return err
	}
	out.Changes = []accessChangeEntry{}
	for _, ch := range changes {
		out.Changes = append(out.Changes, accessChangeEntry{
			LogIndex: ch.LogIndex, RecordSHA256: hex.EncodeToString(ch.RecordSHA256[:]), Time: ch.Time,
			Action: string(ch.Change.Action), Actor: ch.Change.Actor, TokenID: ch.Change.TokenID,
			Name: ch.Change.Name, Role: ch.Change.Role, ExpiresAt: ch.Change.ExpiresAt,
		})
	}
	return writeJSON(c, http.StatusOK, out)
}
