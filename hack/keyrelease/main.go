// Command keyrelease is an EXAMPLE key-release service (not a product: read and adapt it): a
// relying party of the Proofline verifier that releases a secret only to a workload named in the
// secret's allow-list that the verifier affirmed, freshly, and records every decision — release
// or deny — as an evidence record at the verifier, with the attester's subject, before answering.
//
//	go run ./hack/keyrelease --verifier https://verifier.example --token-file rp.token \
//	    --secrets secrets.json [--audience proofline-relying-party] [--listen :9090] [--max-age 2m] \
//	    [--tls-cert cert.pem --tls-key key.pem]
//
// The verifier must know the API token in --token-file with the relying-party role, and list the
// audience in its tokens.audience. secrets.json maps resource names to a secret and the
// workloads it is released to:
//
//	{"db-password": {"secret": "s3cret", "subjects": ["agent:vm-1", "runtime:vm-1"],
//	                 "measurements": ["<MRTD or SNP MEASUREMENT, hex>"]}}
//
// subjects is required: a passport token's subject ("agent:<name>", as the verifier
// authenticated the agent) or, for a background check, "runtime:<name>", the "agent" the
// workload names in the runtime_data its report binds — the workload's own claim, so pin
// measurements (optional otherwise) for resources released that way. With --tls-cert and
// --tls-key the service serves HTTPS; without them plain HTTP (a laptop, or behind a proxy).
//
// API:
//
//	GET  /challenge  a verifier nonce bound to this service, for the workload to put in its
//	                 evidence (background-check model)
//	POST /release    {"resource": "db-password", "evidence": <envelope>}  (background check: the
//	                 service submits the evidence to the verifier and requires its nonce in the
//	                 result token), or {"resource": …, "token": <the workload's result JWT>}
//	                 (passport: the token must be younger than --max-age)
//
// 200 {"secret": …, "decision": "release", "record": N} releases; 403 {"decision": "deny",
// "reason": …, "record": N} denies; either way record N is the decision's key_release record in
// the verifier's evidence log. 503: the decision could not be recorded, and nothing is released.
//
// Only decisions are recorded, and a decision rests on a result the verifier signed (a token
// whose signature verified, even if it is then refused as expired, contraindicated, for
// another audience or for a workload not on the allow-list) or on evidence the verifier judged.
// Anything else is answered without a record, so that junk requests cannot fill the verifier's
// append-only log: 400 for a malformed request, evidence that is not an envelope or carries no
// nonce; 401 for a token that does not verify (not parseable, unknown key, bad signature); 404
// for an unknown resource; 502 when the verifier cannot be reached. /release itself has no
// authentication and no rate limit: put it behind a proxy that limits requests per client.
//
// A passport token is a bearer credential, across relying parties: every result token carries
// the same aud, and its eat_nonce is the verifier nonce the workload attested with, which this
// service did not issue and cannot check. Whoever sees a token (a proxy, another relying party)
// can present it until it expires. This service lets each passport token release a secret once
// (a replay cache keyed by jti, or record_sha256 for a token without one, kept in memory until
// the token no longer verifies, at most 100 000 tokens: beyond that, 503): presented again, it
// is a recorded denial ("the token already released a secret here"). That does not stop the
// first redemption by someone else, nor one per other service, and the cache does not survive a
// restart (--max-age bounds that window). Prefer the background check, whose nonce this service
// asks for and the verifier accepts once. A production design must also bind the secret to the
// workload: encrypt (wrap) it to the workload's public key that its runtime_data carries and its
// report binds (REPORT_DATA), so that only the attested workload can unwrap it. This example
// does not do that yet: it returns the secret in the clear to whoever presents the token.
//
// The service fetches the verifier's JWKS at the first request, and again when a token names a
// key it does not hold (the verifier rotated its key) — at most once per 30 s, whatever the
// number of such tokens, in one fetch shared by the requests that need it; requests whose token
// names a known key never wait for it.
package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/proofline/proofline/verifier/rp"
	"github.com/proofline/proofline/verifier/service"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "keyrelease:", err)
		os.Exit(1)
	}
}

func run() error {
	verifierURL := flag.String("verifier", "", "the verifier's base URL; required")
	tokenFile := flag.String("token-file", "", "file holding this service's API token at the verifier (relying-party role); required")
	secretsFile := flag.String("secrets", "", "JSON file mapping resource names to secrets; required")
	audience := flag.String("audience", service.DefaultAudience, "this service's name in result tokens' aud")
	issuer := flag.String("issuer", "", "the verifier's token issuer (iss), if it must be checked")
	listen := flag.String("listen", ":9090", "address to serve on")
	maxAge := flag.Duration("max-age", 2*time.Minute, "refuse result tokens issued longer ago than this")
	caFile := flag.String("ca-file", "", "CA certificates (PEM) for the verifier's TLS certificate")
	tlsCert := flag.String("tls-cert", "", "serve HTTPS with this certificate chain (PEM); needs --tls-key")
	tlsKey := flag.String("tls-key", "", "the key (PEM) of --tls-cert")
	allowTestRoots := flag.Bool("allow-test-roots-unsafe", false, "accept results of a verifier in test mode (fake vendor PKIs); never in production")
	flag.Parse()
	if *verifierURL == "" || *tokenFile == "" || *secretsFile == "" {
		flag.Usage()
		return errors.New("--verifier, --token-file and --secrets are required")
	}
	if (*tlsCert == "") != (*tlsKey == "") {
		return errors.New("give both --tls-cert and --tls-key, or neither")
	}
	tok, err := os.ReadFile(*tokenFile)
	if err != nil {
		return err
	}
	raw, err := os.ReadFile(*secretsFile)
	if err != nil {
		return err
	}
	secrets, err := parseSecrets(raw)
	if err != nil {
		return fmt.Errorf("%s: %w", *secretsFile, err)
	}
	client := &http.Client{Timeout: 30 * time.Second}
	if *caFile != "" {
		pem, err := os.ReadFile(*caFile)
		if err != nil {
			return err
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return fmt.Errorf("%s holds no PEM certificate", *caFile)
		}
		client.Transport = &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}}
	}
	logger := slog.New(slog.NewJSONHandler(os.Stderr, nil))
	if strings.HasPrefix(*verifierURL, "http://") {
		logger.Warn("the verifier is reached over plain HTTP: use HTTPS outside a laptop")
	}
	k := newKeyRelease(*verifierURL, strings.TrimSpace(string(tok)), client, rp.Options{
		Audience: *audience, Issuer: *issuer, MaxAge: *maxAge, Leeway: 30 * time.Second, AllowTestRootsUnsafe: *allowTestRoots,
	}, secrets, logger)
	srv := &http.Server{Addr: *listen, Handler: k.routes(), ReadHeaderTimeout: 10 * time.Second,
		TLSConfig: &tls.Config{MinVersion: tls.VersionTLS12}}
	if *tlsCert == "" {
		logger.Warn("serving plain HTTP: secrets cross the network in the clear; give --tls-cert and --tls-key outside a laptop")
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		srv.Shutdown(sctx)
	}()
	logger.Info("key-release service listening", slog.String("address", *listen), slog.Bool("tls", *tlsCert != ""), slog.String("verifier", *verifierURL))
	if *tlsCert != "" {
		err = srv.ListenAndServeTLS(*tlsCert, *tlsKey)
	} else {
		err = srv.ListenAndServe()
	}
	if !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

func newKeyRelease(verifier, token string, client *http.Client, opts rp.Options, secrets map[string]resource, logger *slog.Logger) *keyRelease {
	return &keyRelease{verifier: verifier, token: token, client: client, opts: opts, secrets: secrets, logger: logger,
		replays: newReplayCache(maxSpentTokens)}
}
