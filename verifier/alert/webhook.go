package alert

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"
)

// Webhook headers (README.md shows how a receiver checks them).
const (
	// HeaderSignature is "t=<unix seconds>,v1=<hex HMAC-SHA256(secret, t + "." + body)>".
	HeaderSignature = "Proofline-Signature"
	// HeaderAlertID is the alert's id, the same on every attempt: deduplicate on it.
	HeaderAlertID = "Proofline-Alert-Id"
)

// MinSecretSize is the shortest webhook secret accepted.
const MinSecretSize = 16

// Webhook POSTs alerts as JSON to a URL, signed with a shared secret. A 2xx answer is a
// delivery; anything else (a redirect included: it is not followed) is a failure to retry.
type Webhook struct {
	url    string
	secret []byte
	client *http.Client
	now    func() time.Time
}

// WebhookConfig configures a Webhook.
type WebhookConfig struct {
	// URL receives the POSTs: https, or http for a receiver on the same host or network.
	URL string
	// Secret is the HMAC key, at least MinSecretSize bytes. Never logged.
	Secret []byte
	// Client sends the requests; nil means one with a 10s timeout.
	Client *http.Client
	// Now stamps the signatures; nil means time.Now.
	Now func() time.Time
}

// ReadSecretFile reads a webhook secret file (surrounding white space removed).
func ReadSecretFile(path string) ([]byte, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	b = bytes.TrimSpace(b)
	if len(b) < MinSecretSize {
		return nil, fmt.Errorf("%s holds %d bytes; a webhook secret needs at least %d (e.g. `head -c 32 /dev/urandom | base64 > %s`)", path, len(b), MinSecretSize, path)
	}
	return b, nil
}

// NewWebhook checks cfg and returns the Webhook.
func NewWebhook(cfg WebhookConfig) (*Webhook, error) {
	u, err := url.Parse(cfg.URL)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		return nil, fmt.Errorf("alert: webhook URL %q: give an absolute http(s) URL", cfg.URL)
	}
	if len(cfg.Secret) < MinSecretSize {
		return nil, fmt.Errorf("alert: webhook %s: the secret has %d bytes, want at least %d", u.Redacted(), len(cfg.Secret), MinSecretSize)
	}
	w := &Webhook{url: cfg.URL, secret: cfg.Secret, client: cfg.Client, now: cfg.Now}
	if w.client == nil {
		w.client = &http.Client{Timeout: 10 * time.Second}
	}
	c := *w.client
	c.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	w.client = &c
	if w.now == nil {
		w.now = time.Now
	}
	return w, nil
}

// Name is "webhook:<url>" (without any password the URL may hold).
func (w *Webhook) Name() string {
	u, _ := url.Parse(w.url)
	return "webhook:" + u.Redacted()
}

// Sign returns the HeaderSignature value for body at time t.
func Sign(secret, body []byte, t time.Time) string {
	ts := strconv.FormatInt(t.Unix(), 10)
	m := hmac.New(sha256.New, secret)
	m.Write([]byte(ts))
	m.Write([]byte("."))
	m.Write(body)
	return "t=" + ts + ",v1=" + hex.EncodeToString(m.Sum(nil))
}

// ErrBadSignature is VerifySignature's error for a header that does not verify.
var ErrBadSignature = errors.New("alert: webhook signature does not verify")

// VerifySignature checks a HeaderSignature value against body, for receivers written in Go: the
// HMAC must match and its time be within tolerance of now (replay protection).
func VerifySignature(secret, body []byte, header string, now time.Time, tolerance time.Duration) error {
	var ts, sig string
	for part := range strings.SplitSeq(header, ",") {
		k, v, _ := strings.Cut(strings.TrimSpace(part), "=")
		switch k {
		case "t":
			ts = v
		case "v1":
			sig = v
		}
	}
	sec, err := strconv.ParseInt(ts, 10, 64)
	if err != nil || sig == "" {
		return fmt.Errorf("%w: malformed header", ErrBadSignature)
	}
	want := Sign(secret, body, time.Unix(sec, 0))
	if !hmac.Equal([]byte(want), []byte("t="+ts+",v1="+sig)) {
		return ErrBadSignature
	}
	if d := now.Sub(time.Unix(sec, 0)); d > tolerance || d < -tolerance {
		return fmt.Errorf("%w: signed at %s, outside %v of now", ErrBadSignature, time.Unix(sec, 0).UTC().Format(time.RFC3339), tolerance)
	}
	return nil
}

// Deliver POSTs body (the alert's JSON) with its signature and id.
func (w *Webhook) Deliver(ctx context.Context, a *Alert, body []byte) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, w.url, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "proofline-alerts")
	req.Header.Set(HeaderAlertID, a.ID)
	req.Header.Set(HeaderSignature, Sign(w.secret, body, w.now()))
	resp, err := w.client.Do(req)
	if err != nil {
		return err
	}
	io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return fmt.Errorf("the receiver answered %s", resp.Status)
	}
	return nil
}
