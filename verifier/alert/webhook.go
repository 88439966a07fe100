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
	// HeaderAlertID is the alert's id, the same on every attempt, for logging. It is outside the
	// signature: receivers deduplicate on the id in the verified body, never on this header.
	HeaderAlertID = "Proofline-Alert-Id"
)

// MinSecretSize is the shortest webhook secret accepted.
const MinSecretSize = 16

// Webhook POSTs alerts as JSON to a URL, signed with a shared secret. A 2xx answer is a
// delivery; anything else (a redirect included: it is not followed) is a failure to retry.
type Webhook struct {
	url    string
	origin string // scheme://host of url: all of it that is ever logged or stored
	name   string
	secret []byte
	client *http.Client
	now    func() time.Time
}

// WebhookConfig configures a Webhook.
type WebhookConfig struct {
	// URL receives the POSTs: https, or http for a receiver on the same host or network. It may
	// carry a secret in its path or query: only its scheme and host are ever logged or stored.
	URL string
	// Name is the webhook's stable id (ValidName): the outbox keys undelivered alerts by it, so
	// alerts pending for a webhook survive a change of its URL. Default: DefaultWebhookName(URL),
	// which changes with the URL.
	Name string
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
		// The URL is not echoed: it may hold a secret.
		return nil, errors.New("alert: webhook url: give an absolute http(s) URL such as https://soc.example.com/hooks/proofline")
	}
	origin := u.Scheme + "://" + u.Host
	if len(cfg.Secret) < MinSecretSize {
		return nil, fmt.Errorf("alert: webhook %s: the secret has %d bytes, want at least %d", origin, len(cfg.Secret), MinSecretSize)
	}
	name := cfg.Name
	if name == "" {
		name = DefaultWebhookName(cfg.URL)
	} else if !ValidName(name) {
		return nil, fmt.Errorf("alert: webhook %s: name %q: give 1 to 64 letters, digits, '.', '_', '-' or ':', starting with a letter or digit", origin, name)
	}
	w := &Webhook{url: cfg.URL, origin: origin, name: name, secret: cfg.Secret, client: cfg.Client, now: cfg.Now}
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

// Name is "webhook:<name>": the destination id in the outbox and in logs.
func (w *Webhook) Name() string { return "webhook:" + w.name }

// Origin is the scheme://host of the webhook's URL, the only part of it that is logged.
func (w *Webhook) Origin() string { return w.origin }

// DefaultWebhookName is the name of a webhook configured without one: its host and the first 8
// hex digits of the SHA-256 of its URL (e.g. "soc.example.com-1a2b3c4d"), so that two webhooks
// on one host differ and the URL's path and query (which may hold a secret) are not shown.
func DefaultWebhookName(rawURL string) string {
	host := "webhook"
	if u, err := url.Parse(rawURL); err == nil && u.Hostname() != "" {
		host = u.Hostname()
	}
	sum := sha256.Sum256([]byte(rawURL))
	name := strings.Map(func(r rune) rune {
		if nameChar(r) {
			return r
		}
		return '_'
	}, host)
	return name[:min(len(name), 55)] + "-" + hex.EncodeToString(sum[:4])
}

// ValidName reports whether name can name a destination: 1 to 64 letters, digits, '.', '_', '-'
// or ':', starting with a letter or digit (the outbox stores "webhook:"/"syslog:" + name).
func ValidName(name string) bool {
	if len(name) == 0 || len(name) > 64 || !nameChar(rune(name[0])) || strings.ContainsAny(name[:1], "._-:") {
		return false
	}
	for _, r := range name {
		if !nameChar(r) {
			return false
		}
	}
	return true
}

func nameChar(r rune) bool {
	return r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("._-:", r)
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
		// *url.Error names the whole URL; the error is logged and stored: keep scheme://host.
		var ue *url.Error
		if errors.As(err, &ue) {
			return fmt.Errorf("POST %s: %w", w.origin, ue.Err)
		}
		return err
	}
	io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return fmt.Errorf("the receiver answered %s", resp.Status)
	}
	return nil
}
