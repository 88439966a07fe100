package rp_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"strings"
	"time"

	"github.com/proofline/proofline/evidence"
	"github.com/proofline/proofline/verifier/ear"
	"github.com/proofline/proofline/verifier/rp"
	"github.com/proofline/proofline/verifier/token"
)

// A key-release service verifies the token an attested workload presents, and releases the key
// only if the verifier affirmed the workload, for this service, recently.
func ExampleVerifier_VerifyJWT() {
	now := time.Date(2026, 11, 2, 10, 0, 0, 0, time.UTC)

	// The verifier side (verifier/token): a signing key, the JWKS it publishes at
	// /.well-known/jwks.json, and a token for an appraisal logged as record 42.
	key, err := evidence.GenerateKey()
	if err != nil {
		log.Fatal(err)
	}
	issuer, err := token.NewIssuer("https://verifier.example", key)
	if err != nil {
		log.Fatal(err)
	}
	jwks, err := issuer.JWKS()
	if err != nil {
		log.Fatal(err)
	}
	res := &ear.Result{
		Platform: "tdx",
		Policy:   ear.PolicyRef{ID: "prod", Digest: "sha256:" + strings.Repeat("5a", 32)},
		Verifier: ear.VerifierID{Name: "proofline", Version: "v0.1.0"},
		TrustVector: ear.TrustVector{InstanceIdentity: 2, Configuration: 2, Executables: 2, Hardware: 2,
			RuntimeOpaque: 2, SourcedData: 2},
	}
	res.Finalize()
	nonce := []byte("a nonce the key-release service issued")
	jwt, err := issuer.IssueJWT(context.Background(), res,
		token.RecordRef{LogIndex: 42, SHA256: [32]byte{1}, Nonce: nonce},
		[]string{"kms.example"}, 5*time.Minute, now)
	if err != nil {
		log.Fatal(err)
	}

	// The key-release service: the JWKS (fetched with rp.FetchJWKS, or configured), its own
	// name as the audience, and its clock.
	v, err := rp.New(jwks, rp.Options{
		Audience: "kms.example",
		MaxAge:   5 * time.Minute,
		Leeway:   30 * time.Second,
		Now:      func() time.Time { return now.Add(time.Minute) },
	})
	if err != nil {
		log.Fatal(err)
	}
	claims, err := v.VerifyJWT(jwt)
	if err != nil {
		log.Fatal(err)
	}
	if err := claims.RequireNonce(nonce); err != nil {
		log.Fatal(err)
	}
	fmt.Println("status:", claims.Status)
	fmt.Println("platform:", claims.Platform)
	fmt.Println("policy:", claims.PolicyID)
	fmt.Println("evidence record:", claims.LogIndex)
	fmt.Println("expires:", claims.Expiry.Format(time.RFC3339))

	// Another service's audience: refused, and the reason is a decision errors.Is can sort.
	other, err := rp.New(jwks, rp.Options{Audience: "billing.example", Now: func() time.Time { return now }})
	if err != nil {
		log.Fatal(err)
	}
	_, err = other.VerifyJWT(jwt)
	fmt.Println("wrong audience refused:", errors.Is(err, rp.ErrAudience))
	// Output:
	// status: affirming
	// platform: tdx
	// policy: prod
	// evidence record: 42
	// expires: 2026-11-02T10:05:00Z
	// wrong audience refused: true
}
