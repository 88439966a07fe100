package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/proofline/proofline/internal/durable"
)

// proofline access: API token lifecycle and access reviews, against a running verifier's API
// (verifier/api: GET/POST /v1/tokens, DELETE /v1/tokens/{id}, GET /v1/access-review).
//
// The admin (or, for list and review, auditor) token comes from --token-file (a file private to
// its owner) or the PROOFLINE_TOKEN environment variable, never from the command line, where
// other users and shell histories would see it.

const accessUsage = `Usage: proofline access <command> [flags]

Commands:
  list                                   list every API token: configuration tokens, tokens
                                         created through the API, their last use and status
  token create --name N --role R [--expires-in 720h | --expires-at RFC3339]
                                         create an API token (admin); it is printed once
  token revoke ID                        revoke a token created through the API (admin)
  review [--from RFC3339] [--to RFC3339] --out FILE
                                         write the access review export (JSON) for auditors

Every command takes:
  --server URL       the verifier's API (default $PROOFLINE_SERVER, else http://127.0.0.1:8080)
  --token-file FILE  a file holding the API token (mode 0600); default $PROOFLINE_TOKEN
  --ca-file FILE     PEM CA certificates to trust for an HTTPS server, besides the system's
  --json             print the server's JSON answer instead of text

Every creation and revocation is an access_change record in the evidence log. Tokens from the
configuration file (http.tokens) are listed with source config and cannot be revoked here:
remove them from the file and restart every replica.
`

// EnvToken and EnvServer are the environment variables of the access commands.
const (
	EnvToken  = "PROOFLINE_TOKEN"
	EnvServer = "PROOFLINE_SERVER"
)

// maxAPIAnswer bounds an answer of the verifier read by the access commands.
const maxAPIAnswer = 64 << 20

func runAccess(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, accessUsage)
		return exitUsage
	}
	switch cmd := args[0]; cmd {
	case "list":
		return accessList(ctx, args[1:], stdout, stderr)
	case "token":
		if len(args) < 2 {
			fmt.Fprint(stderr, "proofline access token: give create or revoke\n\n"+accessUsage)
			return exitUsage
		}
		switch args[1] {
		case "create":
			return accessCreate(ctx, args[2:], stdout, stderr)
		case "revoke":
			return accessRevoke(ctx, args[2:], stdout, stderr)
		}
		fmt.Fprintf(stderr, "proofline access token: unknown command %q; give create or revoke\n", args[1])
		return exitUsage
	case "review":
		return accessReview(ctx, args[1:], stdout, stderr)
	case "help", "-h", "--help":
		fmt.Fprint(stdout, accessUsage)
		return exitOK
	default:
		fmt.Fprintf(stderr, "proofline access: unknown command %q\n\n%s", cmd, accessUsage)
		return exitUsage
	}
}

// apiClient is the verifier API as one principal.
type apiClient struct {
	base  *url.URL
	token string
	hc    *http.Client
}

// accessFlags are the flags every access command takes.
type accessFlags struct {
	server, tokenFile, caFile *string
	json                      *bool
}

func newAccessFlags(name string, stderr io.Writer) (*flag.FlagSet, *accessFlags) {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	def := os.Getenv(EnvServer)
	if def == "" {
		def = "http://127.0.0.1:8080"
	}
	return fs, &accessFlags{
		server:    fs.String("server", def, "the verifier's API base URL ($"+EnvServer+")"),
		tokenFile: fs.String("token-file", "", "file holding the API token, mode 0600 (default: $"+EnvToken+")"),
		caFile:    fs.String("ca-file", "", "PEM CA certificates to trust for an HTTPS server, besides the system roots"),
		json:      fs.Bool("json", false, "print the server's JSON answer"),
	}
}

// client builds the API client from the flags, or says what to change.
func (f *accessFlags) client() (*apiClient, error) {
	u, err := url.Parse(*f.server)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, usageErr("--server %q is not an http(s) URL such as https://verifier.example.com", *f.server)
	}
	var tok string
	switch {
	case *f.tokenFile != "":
		b, err := durable.ReadPrivate(*f.tokenFile, 4096)
		if err != nil {
			return nil, usageErr("--token-file: %w", err)
		}
		tok = strings.TrimSpace(string(b))
	default:
		tok = strings.TrimSpace(os.Getenv(EnvToken))
	}
	if tok == "" {
		return nil, usageErr("no API token: give --token-file FILE (mode 0600) or set %s; tokens are never taken from the command line", EnvToken)
	}
	if strings.ContainsAny(tok, " \t\r\n") {
		return nil, usageErr("the API token holds spaces or line breaks: the token file must hold the token alone")
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	if *f.caFile != "" {
		pemData, err := durable.ReadLimited(*f.caFile, 1<<20)
		if err != nil {
			return nil, usageErr("--ca-file: %w", err)
		}
		pool, err := x509.SystemCertPool()
		if err != nil {
			pool = x509.NewCertPool()
		}
		if !pool.AppendCertsFromPEM(pemData) {
			return nil, usageErr("--ca-file %s holds no PEM certificate", *f.caFile)
		}
		tr.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	}
	if u.Scheme == "http" && u.Hostname() != "127.0.0.1" && u.Hostname() != "localhost" && u.Hostname() != "::1" {
		return nil, usageErr("--server %s sends the API token unencrypted over the network; use https:// (plain http only to localhost)", *f.server)
	}
	return &apiClient{base: u, token: tok, hc: &http.Client{Transport: tr, Timeout: 60 * time.Second}}, nil
}

// apiError is an error answer of the verifier.
type apiError struct {
	Status  int
	Code    string `json:"code"`
	Message string `json:"message"`
	ID      string `json:"request_id"`
}

func (e *apiError) Error() string {
	msg := fmt.Sprintf("the verifier answered %d %s: %s", e.Status, e.Code, e.Message)
	if e.ID != "" {
		msg += " (request " + e.ID + ")"
	}
	return msg
}

// do sends a request and returns the answer's body if its status is want.
func (c *apiClient) do(ctx context.Context, method, path string, query url.Values, body any, want int) ([]byte, error) {
	u := c.base.JoinPath(path)
	u.RawQuery = query.Encode()
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return nil, err
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, u.String(), rd)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+c.token)
	req.Header.Set("Accept", "application/json")
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxAPIAnswer+1))
	if err != nil {
		return nil, fmt.Errorf("%s %s: reading the answer: %w", method, path, err)
	}
	if len(data) > maxAPIAnswer {
		return nil, fmt.Errorf("%s %s: the answer is larger than %d bytes", method, path, maxAPIAnswer)
	}
	if resp.StatusCode != want {
		e := &apiError{Status: resp.StatusCode}
		if json.Unmarshal(data, e) != nil || e.Code == "" {
			e.Code, e.Message = http.StatusText(resp.StatusCode), strings.TrimSpace(string(data))
		}
		return nil, e
	}
	return data, nil
}

// token is one entry of GET /v1/tokens (verifier/api openapi.yaml, Token).
type token struct {
	ID           string     `json:"id"`
	Name         string     `json:"name"`
	Role         string     `json:"role"`
	Source       string     `json:"source"`
	Status       string     `json:"status"`
	CreatedAt    *time.Time `json:"created_at"`
	CreatedBy    string     `json:"created_by"`
	ExpiresAt    *time.Time `json:"expires_at"`
	RevokedAt    *time.Time `json:"revoked_at"`
	RevokedBy    string     `json:"revoked_by"`
	LastUsedAt   *time.Time `json:"last_used_at"`
	LastUsedFrom string     `json:"last_used_from"`
	Token        string     `json:"token"`
}

func orDash(t *time.Time) string {
	if t == nil {
		return "-"
	}
	return t.UTC().Format(time.RFC3339)
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// parseAccessFlags parses args; it returns a usage exit code, or -1 to go on.
func parseAccessFlags(fs *flag.FlagSet, args []string) int {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return exitOK
		}
		return exitUsage
	}
	return -1
}

// usageError is a mistake in the command line or the local setup (flags, token file): exit 2.
// Any other failure — the verifier refused, or could not be reached — exits 1.
type usageError struct{ error }

func (e usageError) Unwrap() error { return e.error }

func usageErr(format string, args ...any) error { return usageError{fmt.Errorf(format, args...)} }

func accessFail(stderr io.Writer, cmd string, err error) int {
	fmt.Fprintf(stderr, "proofline %s: %v\n", cmd, err)
	if errors.As(err, new(usageError)) {
		return exitUsage
	}
	return 1
}

func accessList(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	const cmd = "access list"
	fs, af := newAccessFlags("proofline "+cmd, stderr)
	if code := parseAccessFlags(fs, args); code >= 0 {
		return code
	}
	if fs.NArg() > 0 {
		return accessFail(stderr, cmd, usageErr("unexpected argument %q", fs.Arg(0)))
	}
	c, err := af.client()
	if err != nil {
		return accessFail(stderr, cmd, err)
	}
	data, err := c.do(ctx, http.MethodGet, "/v1/tokens", nil, nil, http.StatusOK)
	if err != nil {
		return accessFail(stderr, cmd, err)
	}
	if *af.json {
		stdout.Write(append(bytes.TrimSpace(data), '\n'))
		return exitOK
	}
	var out struct {
		Tokens []token `json:"tokens"`
	}
	if err := json.Unmarshal(data, &out); err != nil {
		return accessFail(stderr, cmd, fmt.Errorf("the answer is not a token list: %w", err))
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tNAME\tROLE\tSOURCE\tCREATED\tBY\tEXPIRES\tLAST-USED\tSTATUS")
	for _, t := range out.Tokens {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", t.ID, t.Name, t.Role, t.Source, orDash(t.CreatedAt), dash(t.CreatedBy),
			orDash(t.ExpiresAt), orDash(t.LastUsedAt), t.Status)
	}
	tw.Flush()
	return exitOK
}

func accessCreate(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	const cmd = "access token create"
	fs, af := newAccessFlags("proofline "+cmd, stderr)
	name := fs.String("name", "", "the principal name the token authenticates (no ':', '/', spaces); required")
	role := fs.String("role", "", "agent, relying-party, admin or auditor; required")
	expiresIn := fs.Duration("expires-in", 0, "how long the token works, e.g. 720h (default 720h unless --expires-at)")
	expiresAt := fs.String("expires-at", "", "when the token stops working (RFC 3339), instead of --expires-in")
	if code := parseAccessFlags(fs, args); code >= 0 {
		return code
	}
	if fs.NArg() > 0 {
		return accessFail(stderr, cmd, usageErr("unexpected argument %q", fs.Arg(0)))
	}
	if *name == "" || *role == "" {
		return accessFail(stderr, cmd, usageErr("--name and --role are required"))
	}
	req := map[string]any{"name": *name, "role": *role}
	switch {
	case *expiresAt != "" && *expiresIn != 0:
		return accessFail(stderr, cmd, usageErr("give --expires-in or --expires-at, not both"))
	case *expiresAt != "":
		t, err := time.Parse(time.RFC3339, *expiresAt)
		if err != nil {
			return accessFail(stderr, cmd, usageErr("--expires-at %q is not an RFC 3339 time such as 2027-01-02T15:04:05Z", *expiresAt))
		}
		req["expires_at"] = t
	case *expiresIn < 0:
		return accessFail(stderr, cmd, usageErr("--expires-in %v is negative", *expiresIn))
	case *expiresIn > 0:
		req["expires_in"] = expiresIn.String()
	default:
		req["expires_in"] = (720 * time.Hour).String()
	}
	c, err := af.client()
	if err != nil {
		return accessFail(stderr, cmd, err)
	}
	data, err := c.do(ctx, http.MethodPost, "/v1/tokens", nil, req, http.StatusCreated)
	if err != nil {
		return accessFail(stderr, cmd, err)
	}
	if *af.json {
		stdout.Write(append(bytes.TrimSpace(data), '\n'))
		return exitOK
	}
	var t token
	if err := json.Unmarshal(data, &t); err != nil || t.Token == "" {
		return accessFail(stderr, cmd, fmt.Errorf("the answer holds no token: %v", err))
	}
	fmt.Fprintf(stderr, "created token %s for %s:%s, expires %s (recorded in the evidence log).\n"+
		"The token is printed once, on stdout: store it now; the verifier keeps only its SHA-256.\n",
		t.ID, t.Role, t.Name, orDash(t.ExpiresAt))
	fmt.Fprintln(stdout, t.Token)
	return exitOK
}

func accessRevoke(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	const cmd = "access token revoke"
	fs, af := newAccessFlags("proofline "+cmd, stderr)
	// The id may come before or after the flags.
	var id string
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		id, args = args[0], args[1:]
	}
	if code := parseAccessFlags(fs, args); code >= 0 {
		return code
	}
	if id == "" && fs.NArg() > 0 {
		id = fs.Arg(0)
	} else if fs.NArg() > 0 {
		return accessFail(stderr, cmd, usageErr("unexpected argument %q", fs.Arg(0)))
	}
	if id == "" {
		return accessFail(stderr, cmd, usageErr("give the token's ID (proofline access list shows it)"))
	}
	c, err := af.client()
	if err != nil {
		return accessFail(stderr, cmd, err)
	}
	data, err := c.do(ctx, http.MethodDelete, "/v1/tokens/"+url.PathEscape(id), nil, nil, http.StatusOK)
	if err != nil {
		return accessFail(stderr, cmd, err)
	}
	if *af.json {
		stdout.Write(append(bytes.TrimSpace(data), '\n'))
		return exitOK
	}
	var t token
	if err := json.Unmarshal(data, &t); err != nil {
		return accessFail(stderr, cmd, fmt.Errorf("the answer is not a token: %w", err))
	}
	fmt.Fprintf(stdout, "revoked token %s (%s:%s) at %s by %s; every replica refuses it from now on (recorded in the evidence log)\n",
		t.ID, t.Role, t.Name, orDash(t.RevokedAt), dash(t.RevokedBy))
	return exitOK
}

func accessReview(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	const cmd = "access review"
	fs, af := newAccessFlags("proofline "+cmd, stderr)
	from := fs.String("from", "", "start of the period of changes (RFC 3339); default: the beginning")
	to := fs.String("to", "", "end of the period of changes (RFC 3339); default: now")
	out := fs.String("out", "", "the JSON file to write; required")
	if code := parseAccessFlags(fs, args); code >= 0 {
		return code
	}
	if fs.NArg() > 0 {
		return accessFail(stderr, cmd, usageErr("unexpected argument %q", fs.Arg(0)))
	}
	if *out == "" {
		return accessFail(stderr, cmd, usageErr("--out FILE is required"))
	}
	q := url.Values{}
	for name, v := range map[string]string{"from": *from, "to": *to} {
		if v == "" {
			continue
		}
		if _, err := time.Parse(time.RFC3339, v); err != nil {
			return accessFail(stderr, cmd, usageErr("--%s %q is not an RFC 3339 time such as 2026-01-02T15:04:05Z", name, v))
		}
		q.Set(name, v)
	}
	c, err := af.client()
	if err != nil {
		return accessFail(stderr, cmd, err)
	}
	data, err := c.do(ctx, http.MethodGet, "/v1/access-review", q, nil, http.StatusOK)
	if err != nil {
		return accessFail(stderr, cmd, err)
	}
	var review struct {
		Principals []json.RawMessage `json:"principals"`
		Changes    []json.RawMessage `json:"changes"`
	}
	if err := json.Unmarshal(data, &review); err != nil {
		return accessFail(stderr, cmd, fmt.Errorf("the answer is not an access review: %w", err))
	}
	var pretty bytes.Buffer
	if err := json.Indent(&pretty, data, "", "  "); err != nil {
		return accessFail(stderr, cmd, err)
	}
	pretty.WriteByte('\n')
	if err := durable.Replace(*out, pretty.Bytes(), 0o644); err != nil {
		return accessFail(stderr, cmd, fmt.Errorf("writing %s: %w", *out, err))
	}
	fmt.Fprintf(stdout, "wrote %s: %d principals, %d access changes\n", *out, len(review.Principals), len(review.Changes))
	return exitOK
}
