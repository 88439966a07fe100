package api

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/proofline/proofline/evidence"
	"github.com/proofline/proofline/internal/mysqltest"
	"github.com/proofline/proofline/verifier/service"
)

// What the access routes answer an allowed role's empty request in TestAuthorization (:id is
// "2", no token's id).
func init() {
	allowedStatus["GET /v1/tokens"] = http.StatusOK
	allowedStatus["POST /v1/tokens"] = http.StatusBadRequest // an empty body is no token request
	allowedStatus["DELETE /v1/tokens/:id"] = http.StatusNotFound
	allowedStatus["GET /v1/access-review"] = http.StatusOK
}

// doToken sends a request with a raw bearer token ("" for none).
func (f *fixture) doToken(method, path, token string, body []byte) (int, []byte) {
	f.t.Helper()
	req, err := http.NewRequest(method, f.srv.URL+path, bytes.NewReader(body))
	if err != nil {
		f.t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := f.srv.Client().Do(req)
	if err != nil {
		f.t.Fatal(err)
	}
	defer resp.Body.Close()
	var buf bytes.Buffer
	buf.ReadFrom(resp.Body)
	return resp.StatusCode, buf.Bytes()
}

// createToken creates a token as alice (admin) and wants 201.
func (f *fixture) createToken(body string) createdTokenResponse {
	f.t.Helper()
	code, _, b := f.do(http.MethodPost, "/v1/tokens", "alice", []byte(body))
	if code != http.StatusCreated {
		f.t.Fatalf("POST /v1/tokens %s: %d %s", body, code, b)
	}
	var ct createdTokenResponse
	if err := json.Unmarshal(b, &ct); err != nil {
		f.t.Fatal(err)
	}
	if !strings.HasPrefix(ct.Token, service.TokenPrefix) || len(ct.Token) != len(service.TokenPrefix)+43 || ct.ID == "" {
		f.t.Fatalf("created token: %s", b)
	}
	return ct
}

// tokenList is GET /v1/tokens as the principal, by id.
func (f *fixture) tokenList(as string) map[string]tokenEntry {
	f.t.Helper()
	var out struct {
		Tokens []tokenEntry `json:"tokens"`
	}
	f.getJSON("/v1/tokens", as, &out)
	m := map[string]tokenEntry{}
	for _, e := range out.Tokens {
		m[e.ID] = e
	}
	return m
}

// wantStatus asserts that a raw token gets code on a route every role may call.
func (f *fixture) wantStatus(token string, code int) {
	f.t.Helper()
	if got, b := f.doToken(http.MethodGet, "/v1/openapi.yaml", token, nil); got != code {
		f.t.Fatalf("GET /v1/openapi.yaml with the token: %d, want %d: %.200s", got, code, b)
	}
}

// accessRecord reads the access_change record at idx back from the log.
func (f *fixture) accessRecord(idx uint64) *evidence.AccessChange {
	f.t.Helper()
	_, rec, err := f.svc.Record(context.Background(), idx)
	if err != nil {
		f.t.Fatal(err)
	}
	if rec.Kind != evidence.KindAccessChange || rec.AccessChange == nil {
		f.t.Fatalf("record %d is a %s record", idx, rec.Kind)
	}
	return rec.AccessChange
}

// Acceptance 4: create → use → the list shows the use → revoke → refused (401) at once; every
// change is an access_change record with the right fields; configuration tokens are listed but
// not revocable.
func TestTokenLifecycle(t *testing.T) {
	f := newFixture(t, options{})
	ct := f.createToken(`{"name":"vm-new","role":"agent","expires_in":"720h"}`)
	if ct.Source != "database" || ct.Status != "active" || ct.CreatedBy != "admin:alice" || ct.Role != "agent" || ct.LastUsedAt != nil ||
		!ct.ExpiresAt.Equal(f.clock.Now().Truncate(time.Second).Add(720*time.Hour)) || !ct.Revocable {
		t.Fatalf("created: %+v", ct)
	}

	// Use it: the agent may call what agents may, and nothing else.
	f.wantStatus(ct.Token, http.StatusOK)
	if code, _ := f.doToken(http.MethodGet, "/v1/tokens", ct.Token, nil); code != http.StatusForbidden {
		t.Fatalf("the agent token listed tokens: %d", code)
	}
	ch, code := challengeWith(f, ct.Token)
	if code != http.StatusOK || !ch.Bound {
		t.Fatalf("challenge with the created token: %d %+v", code, ch)
	}

	list := f.tokenList("audrey")
	got, ok := list[ct.ID]
	if !ok || got.LastUsedAt == nil || !got.LastUsedAt.Equal(f.clock.Now().Truncate(time.Second)) || got.LastUsedFrom != "127.0.0.1" || got.Status != "active" {
		t.Fatalf("listed after use: %+v", got)
	}
	for _, p := range principals {
		e, ok := list["config:"+string(p.Role)+":"+p.Name]
		if !ok || e.Source != "config" || e.Revocable || e.Status != "active" {
			t.Fatalf("configuration token %s: %+v", p, e)
		}
	}
	if e := list["config:auditor:audrey"]; e.LastUsedAt == nil {
		t.Fatalf("audrey's own use of her configuration token is not listed: %+v", e)
	}
	if bytes.Contains(mustJSON(t, list), []byte(ct.Token)) || bytes.Contains(mustJSON(t, list), []byte("sha256")) {
		t.Fatal("the list holds the token or its hash")
	}

	// Revoke: refused on the very next request.
	code, _, b := f.do(http.MethodDelete, "/v1/tokens/"+ct.ID, "alice", nil)
	if code != http.StatusOK {
		t.Fatalf("revoke: %d %s", code, b)
	}
	var revoked tokenEntry
	if err := json.Unmarshal(b, &revoked); err != nil || revoked.Status != "revoked" || revoked.RevokedBy != "admin:alice" || revoked.RevokedRecord == nil || revoked.Revocable {
		t.Fatalf("revoked: %v %s", err, b)
	}
	f.wantStatus(ct.Token, http.StatusUnauthorized)
	if _, code := challengeWith(f, ct.Token); code != http.StatusUnauthorized {
		t.Fatalf("challenge with the revoked token: %d, want 401 (never anonymous)", code)
	}
	if code, _, b := f.do(http.MethodDelete, "/v1/tokens/"+ct.ID, "alice", nil); code != http.StatusConflict {
		t.Fatalf("second revoke: %d %s", code, b)
	}
	if e := f.tokenList("alice")[ct.ID]; e.Status != "revoked" || e.RevokedAt == nil {
		t.Fatalf("listed after revocation: %+v", e)
	}

	// The records: one create, one revoke, found through /v1/records and read from the log.
	var recs recordsResponse
	f.getJSON("/v1/records?kind=access_change", "audrey", &recs)
	if len(recs.Records) != 2 || *ct.CreatedRecord != recs.Records[0].LogIndex || *revoked.RevokedRecord != recs.Records[1].LogIndex {
		t.Fatalf("access_change records: %+v (created %d, revoked %v)", recs.Records, *ct.CreatedRecord, revoked.RevokedRecord)
	}
	for i, want := range []evidence.AccessAction{evidence.AccessCreate, evidence.AccessRevoke} {
		ac := f.accessRecord(recs.Records[i].LogIndex)
		if ac.Action != want || ac.Actor != "admin:alice" || ac.TokenID != ct.ID || ac.Name != "vm-new" || ac.Role != "agent" || !ac.ExpiresAt.Equal(*ct.ExpiresAt) {
			t.Fatalf("record %d: %+v", recs.Records[i].LogIndex, ac)
		}
	}

	// Configuration tokens are not revocable through the API.
	code, _, b = f.do(http.MethodDelete, "/v1/tokens/config:admin:alice", "alice", nil)
	if code != http.StatusConflict || !bytes.Contains(b, []byte("http.tokens")) {
		t.Fatalf("revoking a configuration token: %d %s", code, b)
	}
	f.wantStatus(tokenFor("alice"), http.StatusOK)
}

func challengeWith(f *fixture, token string) (challengeResponse, int) {
	code, b := f.doToken(http.MethodGet, "/v1/challenge", token, nil)
	var ch challengeResponse
	json.Unmarshal(b, &ch)
	return ch, code
}

func mustJSON(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// An expired token is refused at the request time of the injected clock: still valid one second
// before its expiry, refused from the expiry on, with no record needed.
func TestTokenExpiry(t *testing.T) {
	f := newFixture(t, options{})
	ct := f.createToken(`{"name":"short","role":"auditor","expires_in":"1h"}`)
	f.wantStatus(ct.Token, http.StatusOK)
	f.clock.Advance(time.Hour - time.Second)
	f.wantStatus(ct.Token, http.StatusOK)
	f.clock.Advance(time.Second)
	f.wantStatus(ct.Token, http.StatusUnauthorized)
	if e := f.tokenList("alice")[ct.ID]; e.Status != "expired" || !e.Revocable {
		t.Fatalf("listed after expiry: %+v", e)
	}

	at := f.clock.Now().Add(2 * time.Hour).UTC().Format(time.RFC3339)
	ct2 := f.createToken(`{"name":"until","role":"relying-party","expires_at":"` + at + `"}`)
	f.wantStatus(ct2.Token, http.StatusOK)
	f.clock.Advance(2 * time.Hour)
	f.wantStatus(ct2.Token, http.StatusUnauthorized)
}

// Last use is written at most once per minute per token: a use within the minute does not move it.
func TestTokenLastUseGranularity(t *testing.T) {
	f := newFixture(t, options{})
	ct := f.createToken(`{"name":"busy","role":"agent","expires_in":"24h"}`)
	first := f.clock.Now().Truncate(time.Second)
	f.wantStatus(ct.Token, http.StatusOK)
	f.clock.Advance(30 * time.Second)
	f.wantStatus(ct.Token, http.StatusOK)
	if e := f.tokenList("alice")[ct.ID]; e.LastUsedAt == nil || !e.LastUsedAt.Equal(first) {
		t.Fatalf("after a use within the minute: %+v, want %v", e.LastUsedAt, first)
	}
	f.clock.Advance(31 * time.Second)
	f.wantStatus(ct.Token, http.StatusOK)
	if e := f.tokenList("alice")[ct.ID]; e.LastUsedAt == nil || !e.LastUsedAt.Equal(first.Add(61*time.Second)) {
		t.Fatalf("after a use past the minute: %+v", e.LastUsedAt)
	}
}

// Roles: auditors and everyone else but admins may not create or revoke (403); agents and relying
// parties may not read the list or the review (403); no credential is 401.
func TestTokenRoles(t *testing.T) {
	f := newFixture(t, options{})
	ct := f.createToken(`{"name":"target","role":"agent","expires_in":"1h"}`)
	for _, as := range []string{"audrey", "vm-tdx", "key-release"} {
		if code, _, b := f.do(http.MethodPost, "/v1/tokens", as, []byte(`{"name":"x","role":"admin","expires_in":"1h"}`)); code != http.StatusForbidden {
			t.Errorf("%s creating: %d %s", as, code, b)
		}
		if code, _, b := f.do(http.MethodDelete, "/v1/tokens/"+ct.ID, as, nil); code != http.StatusForbidden {
			t.Errorf("%s revoking: %d %s", as, code, b)
		}
	}
	for _, as := range []string{"vm-tdx", "key-release"} {
		for _, path := range []string{"/v1/tokens", "/v1/access-review"} {
			if code, _, _ := f.do(http.MethodGet, path, as, nil); code != http.StatusForbidden {
				t.Errorf("%s GET %s: %d", as, path, code)
			}
		}
	}
	for _, path := range []string{"/v1/tokens", "/v1/access-review"} {
		if code, _, _ := f.do(http.MethodGet, path, "", nil); code != http.StatusUnauthorized {
			t.Errorf("anonymous GET %s: %d", path, code)
		}
	}
	f.wantStatus(ct.Token, http.StatusOK) // nobody but an admin revoked it
	// An admin created through the API can manage tokens too, and its changes name it.
	admin := f.createToken(`{"name":"bob","role":"admin","expires_in":"1h"}`)
	code, b := f.doToken(http.MethodDelete, "/v1/tokens/"+ct.ID, admin.Token, nil)
	var e tokenEntry
	if code != http.StatusOK || json.Unmarshal(b, &e) != nil || e.RevokedBy != "admin:bob" {
		t.Fatalf("revoke by a created admin: %d %s", code, b)
	}
}

// Requests the API refuses, each built from a valid one, and tokens that authenticate no one.
func TestTokenRequestsRefused(t *testing.T) {
	f := newFixture(t, options{})
	tooFar := f.clock.Now().Add(service.MaxTokenLifetime + time.Hour).UTC().Format(time.RFC3339)
	past := f.clock.Now().Add(-time.Hour).UTC().Format(time.RFC3339)
	for _, c := range []struct {
		name, body string
		code       int
	}{
		{"no expiry", `{"name":"a","role":"agent"}`, http.StatusBadRequest},
		{"both expiries", `{"name":"a","role":"agent","expires_in":"1h","expires_at":"` + tooFar + `"}`, http.StatusBadRequest},
		{"expiry too far", `{"name":"a","role":"agent","expires_at":"` + tooFar + `"}`, http.StatusBadRequest},
		{"expiry in the past", `{"name":"a","role":"agent","expires_at":"` + past + `"}`, http.StatusBadRequest},
		{"negative duration", `{"name":"a","role":"agent","expires_in":"-1h"}`, http.StatusBadRequest},
		{"bad duration", `{"name":"a","role":"agent","expires_in":"a month"}`, http.StatusBadRequest},
		{"unknown role", `{"name":"a","role":"root","expires_in":"1h"}`, http.StatusBadRequest},
		{"no name", `{"role":"agent","expires_in":"1h"}`, http.StatusBadRequest},
		{"reserved name", `{"name":"mtls:x/y","role":"agent","expires_in":"1h"}`, http.StatusBadRequest},
		{"name with a space", `{"name":"a b","role":"agent","expires_in":"1h"}`, http.StatusBadRequest},
		{"unknown field", `{"name":"a","role":"agent","expires_in":"1h","token":"pl_mine"}`, http.StatusBadRequest},
		{"not JSON", `name=a`, http.StatusBadRequest},
		{"a configuration principal", `{"name":"alice","role":"admin","expires_in":"1h"}`, http.StatusConflict},
	} {
		t.Run(c.name, func(t *testing.T) {
			if code, _, b := f.do(http.MethodPost, "/v1/tokens", "alice", []byte(c.body)); code != c.code {
				t.Fatalf("%d %s, want %d", code, b, c.code)
			}
		})
	}
	// The valid request the cases were built from.
	f.createToken(`{"name":"a","role":"agent","expires_in":"1h"}`)
	var recs recordsResponse
	f.getJSON("/v1/records?kind=access_change", "alice", &recs)
	if len(recs.Records) != 1 {
		t.Fatalf("refused requests were recorded: %+v", recs.Records)
	}
	if code, _, _ := f.do(http.MethodDelete, "/v1/tokens/0123456789abcdef", "alice", nil); code != http.StatusNotFound {
		t.Fatalf("revoking an unknown id: %d", code)
	}
	for name, tok := range map[string]string{
		"unknown with the prefix":    service.TokenPrefix + strings.Repeat("A", 43),
		"unknown without the prefix": strings.Repeat("A", 43),
		"the prefix alone":           service.TokenPrefix,
	} {
		if code, _ := f.doToken(http.MethodGet, "/v1/openapi.yaml", tok, nil); code != http.StatusUnauthorized {
			t.Errorf("%s: %d", name, code)
		}
	}
}

// A revocation whose record meets an overloaded log is in force all the same: the answer is 503
// revocation_unrecorded with Retry-After, never "overloaded" (which says that nothing was done),
// and the token is refused at once; revoking it again once the log takes records writes it.
func TestTokenRevocationLogOverloaded(t *testing.T) {
	var ol *overloadedLog
	f := newFixture(t, options{wrapLog: func(l service.Log) service.Log { ol = &overloadedLog{Log: l}; return ol }})
	ct := f.createToken(`{"name":"vm-1","role":"agent","expires_in":"1h"}`)
	f.wantStatus(ct.Token, http.StatusOK)
	ol.overloaded.Store(true)
	code, hdr, b := f.do(http.MethodDelete, "/v1/tokens/"+ct.ID, "alice", nil)
	var e apiError
	if code != http.StatusServiceUnavailable || hdr.Get("Retry-After") == "" || json.Unmarshal(b, &e) != nil || e.Code != "revocation_unrecorded" {
		t.Fatalf("revoke with the log overloaded: %d %s, want 503 revocation_unrecorded", code, b)
	}
	f.wantStatus(ct.Token, http.StatusUnauthorized)
	ol.overloaded.Store(false)
	code, _, b = f.do(http.MethodDelete, "/v1/tokens/"+ct.ID, "alice", nil)
	var te tokenEntry
	if err := json.Unmarshal(b, &te); code != http.StatusOK || err != nil || te.Status != "revoked" || te.RevokedRecord == nil {
		t.Fatalf("revoking again once the log takes records: %d %s", code, b)
	}
}

// A token is created only once its record is durable: with the log failing, the answer is 503,
// and no token was stored. A revocation is in force before its record is written: with the log
// failing, the answer is 503 and the token is refused at once; once the log recovers, revoking
// it again writes the record, exactly once.
func TestTokenCreateNeedsTheRecord(t *testing.T) {
	var fl *faultyLog
	f := newFixture(t, options{wrapLog: func(l service.Log) service.Log { fl = &faultyLog{Log: l}; return fl }})
	fl.failing.Store(true)
	code, _, b := f.do(http.MethodPost, "/v1/tokens", "alice", []byte(`{"name":"lost","role":"agent","expires_in":"1h"}`))
	if code != http.StatusServiceUnavailable || bytes.Contains(b, []byte(service.TokenPrefix)) {
		t.Fatalf("create with the log failing: %d %s", code, b)
	}
	fl.failing.Store(false)
	ct := f.createToken(`{"name":"kept","role":"agent","expires_in":"1h"}`) // the log recovered
	f.wantStatus(ct.Token, http.StatusOK)
	fl.failing.Store(true)
	if code, hdr, b := f.do(http.MethodDelete, "/v1/tokens/"+ct.ID, "alice", nil); code != http.StatusServiceUnavailable || hdr.Get("Retry-After") == "" ||
		!bytes.Contains(b, []byte(`"revocation_unrecorded"`)) || !bytes.Contains(b, []byte("revoke it again")) {
		t.Fatalf("revoke with the log failing: %d %s", code, b)
	}
	f.wantStatus(ct.Token, http.StatusUnauthorized)
	list := f.tokenList("alice")
	for _, e := range list {
		if e.Name == "lost" {
			t.Fatalf("a token whose record failed was stored: %+v", e)
		}
	}
	if e := list[ct.ID]; e.Status != "revoked" || e.RevokedAt == nil || e.RevokedRecord != nil {
		t.Fatalf("a revocation whose record failed: %+v, want revoked without a record", e)
	}
	fl.failing.Store(false)
	code, _, b = f.do(http.MethodDelete, "/v1/tokens/"+ct.ID, "alice", nil)
	var e tokenEntry
	if err := json.Unmarshal(b, &e); code != http.StatusOK || err != nil || e.Status != "revoked" || e.RevokedRecord == nil {
		t.Fatalf("revoking again once the log recovered: %d %s", code, b)
	}
	if ch := f.accessRecord(*e.RevokedRecord); ch.Action != evidence.AccessRevoke || ch.TokenID != ct.ID {
		t.Fatalf("record %d: %+v", *e.RevokedRecord, ch)
	}
	if code, _, b := f.do(http.MethodDelete, "/v1/tokens/"+ct.ID, "alice", nil); code != http.StatusConflict {
		t.Fatalf("revoking a third time: %d %s", code, b)
	}
	var r accessReviewResponse
	f.getJSON("/v1/access-review", "alice", &r)
	revokes := 0
	for _, ch := range r.Changes {
		if ch.Action == string(evidence.AccessRevoke) && ch.TokenID == ct.ID {
			revokes++
		}
	}
	if revokes != 1 {
		t.Fatalf("%d revocation records of %s, want 1: %+v", revokes, ct.ID, r.Changes)
	}
	f.wantStatus(ct.Token, http.StatusUnauthorized)
}

// A configuration token with the principal of an active database token (added to http.tokens
// after the token was created) is logged when the API starts: revoking the database token would
// not cut the principal off. Creating a token for a configuration principal is refused by the
// service, whoever calls it.
func TestTokenConfigPrincipalClash(t *testing.T) {
	var logs syncLogs
	f := newFixture(t, options{settings: func(d *service.Deps) { d.Logger = slog.New(slog.NewTextHandler(&logs, nil)) }})
	ct := f.createToken(`{"name":"ops-bot","role":"admin","expires_in":"1h"}`)
	other := f.createToken(`{"name":"ci","role":"agent","expires_in":"1h"}`)
	start := func(extra ...TokenConfig) string {
		logs.reset()
		cfg := Config{Tokens: append(tokenConfig(), extra...)}
		if _, err := New(f.svc, cfg, Options{}); err != nil {
			t.Fatal(err)
		}
		return logs.String()
	}
	sum := sha256.Sum256([]byte("ops-bot's configuration token"))
	if l := start(); strings.Contains(l, "level=WARN") { // the valid case
		t.Fatalf("warned without a clash: %s", l)
	}
	l := start(TokenConfig{Name: "ops-bot", Role: service.RoleAdmin, SHA256: hex.EncodeToString(sum[:])})
	if !strings.Contains(l, "level=WARN") || !strings.Contains(l, "token_id="+ct.ID) || strings.Contains(l, other.ID) {
		t.Fatalf("logs: %s", l)
	}
	tr := service.TokenRequest{Name: "ops-bot", Role: service.RoleAdmin, ExpiresAt: f.clock.Now().Add(time.Hour)}
	if _, err := f.svc.CreateToken(context.Background(), service.Principal{Name: "alice", Role: service.RoleAdmin}, tr); !errors.Is(err, service.ErrConflict) {
		t.Fatalf("the service created a token for a configuration principal: %v", err)
	}
}

// The access review export: every principal (configuration, created, agents seen with a client
// certificate) and the access_change records of the period, each read back from the log.
func TestAccessReview(t *testing.T) {
	f := newFixture(t, options{})
	start := f.clock.Now().UTC().Truncate(time.Second)
	a := f.createToken(`{"name":"vm-a","role":"agent","expires_in":"24h"}`)
	f.clock.Advance(time.Hour)
	b := f.createToken(`{"name":"rp-b","role":"relying-party","expires_in":"24h"}`)
	f.clock.Advance(time.Hour)
	if code, _, body := f.do(http.MethodDelete, "/v1/tokens/"+a.ID, "alice", nil); code != http.StatusOK {
		t.Fatalf("revoke: %d %s", code, body)
	}
	f.svc.NotePrincipalUse(context.Background(), service.Principal{Name: "mtls:0123456789abcdef/vm-cert", Role: service.RoleAgent}, "10.0.0.7")

	review := func(q url.Values) accessReviewResponse {
		t.Helper()
		var r accessReviewResponse
		f.getJSON("/v1/access-review?"+q.Encode(), "audrey", &r)
		return r
	}
	all := review(nil)
	if all.GeneratedBy != "auditor:audrey" || len(all.Notes) == 0 || len(all.Changes) != 3 {
		t.Fatalf("review: %+v", all)
	}
	sources := map[string]int{}
	for _, p := range all.Principals {
		sources[p.Source]++
		if p.Source == "certificate" && (p.Name != "mtls:0123456789abcdef/vm-cert" || p.LastUsedFrom != "10.0.0.7") {
			t.Fatalf("certificate principal: %+v", p)
		}
	}
	if sources["config"] != len(principals) || sources["database"] != 2 || sources["certificate"] != 1 {
		t.Fatalf("principals by source: %v", sources)
	}
	wantActions := []string{"create:" + a.ID, "create:" + b.ID, "revoke:" + a.ID}
	for i, ch := range all.Changes {
		if got := ch.Action + ":" + ch.TokenID; got != wantActions[i] || ch.Actor != "admin:alice" || len(ch.RecordSHA256) != 64 {
			t.Fatalf("change %d: %+v, want %s", i, ch, wantActions[i])
		}
	}
	// A period holds only its changes.
	mid := review(url.Values{"from": {start.Add(30 * time.Minute).Format(time.RFC3339)}, "to": {start.Add(90 * time.Minute).Format(time.RFC3339)}})
	if len(mid.Changes) != 1 || mid.Changes[0].TokenID != b.ID || mid.From == nil || mid.To == nil {
		t.Fatalf("review of the middle hour: %+v", mid.Changes)
	}
	if before := review(url.Values{"to": {start.Add(-time.Second).Format(time.RFC3339)}}); len(before.Changes) != 0 {
		t.Fatalf("review before the first change: %+v", before.Changes)
	}
	for _, q := range []string{"from=yesterday", "to=2026-13-01T00:00:00Z", "from=" + start.Format(time.RFC3339) + "&to=" + start.Add(-time.Hour).Format(time.RFC3339)} {
		if code, _, body := f.do(http.MethodGet, "/v1/access-review?"+q, "alice", nil); code != http.StatusBadRequest {
			t.Errorf("%s: %d %s", q, code, body)
		}
	}
}

// An agent authenticated by a client certificate is in the access review once seen.
func TestAccessReviewListsCertificateAgents(t *testing.T) {
	ca := newTestCA(t, "agents CA")
	tf := newTLSFixture(t, ca)
	cert := ca.issue(t, "vm-cert", false)
	if code, b := tf.call(t, &cert, "", http.MethodGet, "/v1/challenge", nil); code != http.StatusOK {
		t.Fatalf("challenge: %d %s", code, b)
	}
	code, b := tf.call(t, nil, "audrey", http.MethodGet, "/v1/access-review", nil)
	var r accessReviewResponse
	if code != http.StatusOK || json.Unmarshal(b, &r) != nil {
		t.Fatalf("review: %d %s", code, b)
	}
	for _, p := range r.Principals {
		if p.Source == "certificate" && strings.HasSuffix(p.Name, "/vm-cert") && strings.HasPrefix(p.Name, "mtls:") && p.LastUsedAt != nil {
			return
		}
	}
	t.Fatalf("the certificate agent is not in the review: %s", b)
}

// Acceptance 4 across replicas: two API servers sharing one MariaDB state database. A token created
// on A works on B at once; revoked on B, it is refused by A on the very next request; B's use
// shows in A's list once B has written it (within a second).
func TestTokenRevocationAcrossReplicas(t *testing.T) {
	dsn := mysqltest.NewDatabase(t)
	dir := t.TempDir()
	c := &clock{now: simulated(t).Now.Add(time.Minute).Truncate(time.Second)}
	a := newFixture(t, options{dataDir: dir, database: dsn, clock: c})
	b := newFixture(t, options{dataDir: dir, database: dsn, clock: c})
	ct := a.createToken(`{"name":"fleet-agent","role":"agent","expires_in":"24h"}`)
	b.wantStatus(ct.Token, http.StatusOK)
	// B writes its last uses within a second (queued off the request path).
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		e := a.tokenList("audrey")[ct.ID]
		if e.LastUsedAt != nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("A does not see B's use after 10s: %+v", e)
		}
	}
	a.wantStatus(ct.Token, http.StatusOK)
	if code, _, body := b.do(http.MethodDelete, "/v1/tokens/"+ct.ID, "alice", nil); code != http.StatusOK {
		t.Fatalf("revoke on B: %d %s", code, body)
	}
	a.wantStatus(ct.Token, http.StatusUnauthorized)
	b.wantStatus(ct.Token, http.StatusUnauthorized)
	if code, _, _ := a.do(http.MethodDelete, "/v1/tokens/"+ct.ID, "alice", nil); code != http.StatusConflict {
		t.Fatalf("revoking again on A: %d", code)
	}

	// Expiry is the request time's on either replica.
	short := b.createToken(`{"name":"fleet-short","role":"auditor","expires_in":"10m"}`)
	a.wantStatus(short.Token, http.StatusOK)
	c.Advance(10 * time.Minute)
	a.wantStatus(short.Token, http.StatusUnauthorized)
	b.wantStatus(short.Token, http.StatusUnauthorized)

	var r accessReviewResponse
	a.getJSON("/v1/access-review", "alice", &r)
	if len(r.Changes) != 3 {
		t.Fatalf("the review on A holds %d changes, want 3 (two creations, one revocation): %+v", len(r.Changes), r.Changes)
	}
	for _, ch := range r.Changes {
		if _, err := strconv.ParseUint(ch.TokenID, 16, 64); err != nil {
			t.Fatalf("change: %+v", ch)
		}
	}
}

// syncLogs is a log destination safe for concurrent writes.
type syncLogs struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *syncLogs) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *syncLogs) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func (l *syncLogs) reset() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.b.Reset()
}
