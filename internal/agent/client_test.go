package agent

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// Verifier answers other than 200 become *StatusError with the JSON code, the Retry-After
// (seconds or an HTTP date, capped) and, for credential problems, what to change.
func TestClientErrors(t *testing.T) {
	now := time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)
	for _, c := range []struct {
		name           string
		status         int
		retryAfter     string
		body           string
		wantCode       string
		wantRetry      time.Duration
		wantOverloaded bool
		wantText       string
	}{
		{"overloaded", 503, "2", `{"code":"overloaded","message":"the verifier is overloaded"}`, "overloaded", 2 * time.Second, true, "overloaded"},
		{"unavailable", 503, "1", `{"code":"unavailable","message":"ask for a new challenge"}`, "unavailable", time.Second, false, "new challenge"},
		{"HTTP date", 503, now.Add(30 * time.Second).Format(http.TimeFormat), `{"code":"overloaded"}`, "overloaded", 30 * time.Second, true, ""},
		{"absurd delay", 503, "999999", `{"code":"overloaded"}`, "overloaded", time.Hour, true, ""},
		{"garbage delay", 503, "soon", `{"code":"overloaded"}`, "overloaded", 0, true, ""},
		{"unauthorized", 401, "", `{"code":"unauthenticated"}`, "unauthenticated", 0, false, "verifier.token_file"},
		{"not JSON", 502, "", `<html>bad gateway</html>`, "", 0, false, "502"},
	} {
		t.Run(c.name, func(t *testing.T) {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if r.Header.Get("Authorization") != "Bearer tok" {
					t.Errorf("Authorization %q", r.Header.Get("Authorization"))
				}
				if c.retryAfter != "" {
					w.Header().Set("Retry-After", c.retryAfter)
				}
				w.WriteHeader(c.status)
				w.Write([]byte(c.body))
			}))
			defer srv.Close()
			cl := &Client{URL: srv.URL + "/", Token: "tok", Now: func() time.Time { return now }}
			_, err := cl.Attest(context.Background(), []byte("{}"))
			var se *StatusError
			if !errors.As(err, &se) {
				t.Fatalf("error %v is no *StatusError", err)
			}
			if se.Status != c.status || se.Code != c.wantCode || se.RetryAfter != c.wantRetry || errors.Is(err, ErrOverloaded) != c.wantOverloaded {
				t.Fatalf("%+v, overloaded %v", se, errors.Is(err, ErrOverloaded))
			}
			if !strings.Contains(err.Error(), c.wantText) {
				t.Fatalf("%q lacks %q", err, c.wantText)
			}
		})
	}
}

// Answers that are not what the API promises are errors, and an endless body is not read
// past the bound.
func TestClientMalformedAnswers(t *testing.T) {
	for _, c := range []struct {
		name, body string
		challenge  bool
		want       string
	}{
		{"short nonce", `{"nonce":"AAAA","expires_at":"2026-01-01T00:00:00Z"}`, true, "a Proofline verifier?"},
		{"not JSON", `nonce`, true, "not a challenge"},
		{"no token", `{"status":"affirming"}`, false, "no status or token"},
		{"huge", `{"token":"` + strings.Repeat("a", maxResponse) + `"}`, false, "larger than"},
	} {
		t.Run(c.name, func(t *testing.T) {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write([]byte(c.body)) }))
			defer srv.Close()
			cl := &Client{URL: srv.URL}
			var err error
			if c.challenge {
				_, err = cl.Challenge(context.Background())
			} else {
				_, err = cl.Attest(context.Background(), []byte("{}"))
			}
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("error %v, want %q", err, c.want)
			}
		})
	}
}

// The client follows no redirect: Go would re-send the Authorization header to a target on the
// same host whatever its scheme or port, so a redirect from the https verifier to plain http
// would put the token on the wire in clear. A 3xx is an error that names the Location and what
// to change; the plain listener never sees a request.
func TestClientRefusesRedirects(t *testing.T) {
	plainRequests := make(chan string, 10)
	plain := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		plainRequests <- r.Method + " " + r.URL.Path + " Authorization: " + r.Header.Get("Authorization")
		w.Write([]byte(`{}`))
	}))
	defer plain.Close()
	for _, c := range []struct {
		name   string
		status int
		call   func(*Client) error
	}{
		{"challenge, 302", http.StatusFound, func(c *Client) error { _, err := c.Challenge(context.Background()); return err }},
		{"attest, 307", http.StatusTemporaryRedirect, func(c *Client) error { _, err := c.Attest(context.Background(), []byte("{}")); return err }},
		{"attest, 308", http.StatusPermanentRedirect, func(c *Client) error { _, err := c.Attest(context.Background(), []byte("{}")); return err }},
	} {
		t.Run(c.name, func(t *testing.T) {
			srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				http.Redirect(w, r, plain.URL+r.URL.RequestURI(), c.status)
			}))
			defer srv.Close()
			// srv.Client() trusts the server's certificate and, like the client run builds,
			// sets no CheckRedirect.
			cl := &Client{URL: srv.URL, Token: "secret-token", HTTP: srv.Client()}
			err := c.call(cl)
			select {
			case req := <-plainRequests:
				t.Fatalf("the plain-http listener got %s", req)
			default:
			}
			var se *StatusError
			if !errors.As(err, &se) || se.Status != c.status || !strings.HasPrefix(se.Location, plain.URL+"/v1/") {
				t.Fatalf("error %v, want a *StatusError %d naming the Location", err, c.status)
			}
			for _, want := range []string{plain.URL, "does not follow", "verifier.url"} {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("%q lacks %q", err, want)
				}
			}
		})
	}
}

// A challenge's lifetime is measured on the verifier's clock alone: expires_at less the answer's
// Date, less the second Date cannot express; unknown (zero) without a Date.
func TestClientChallengeLifetime(t *testing.T) {
	date := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC) // far from the test machine's clock
	for _, c := range []struct {
		name string
		date []string
		want time.Duration
	}{
		{"Date", []string{date.Format(http.TimeFormat)}, 29 * time.Second},
		{"no Date", nil, 0},
		{"bad Date", []string{"yesterday"}, 0},
	} {
		t.Run(c.name, func(t *testing.T) {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				w.Header()["Date"] = c.date // nil: the server sends no Date
				fmt.Fprintf(w, `{"nonce":"%s","expires_at":"%s"}`, strings.Repeat("A", 43)+"=", date.Add(30*time.Second).Format(time.RFC3339))
			}))
			defer srv.Close()
			ch, err := (&Client{URL: srv.URL}).Challenge(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			if ch.Lifetime != c.want {
				t.Fatalf("lifetime %v, want %v", ch.Lifetime, c.want)
			}
		})
	}
}
