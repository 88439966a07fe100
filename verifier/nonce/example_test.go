package nonce_test

import (
	"context"
	"errors"
	"fmt"
	"log"
	"os"
	"path/filepath"
	"time"

	"github.com/proofline/proofline/verifier/nonce"
)

// A single verifier keeps the secret and the used nonces in its data dir. Replicas would use
// nonce.LoadSecret on the shared secret from their configuration and nonce.OpenMySQL.
func Example() {
	ctx := context.Background()
	dataDir, err := os.MkdirTemp("", "proofline-data-")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dataDir)

	secret, err := nonce.LoadOrCreateSecret(dataDir)
	if err != nil {
		log.Fatal(err)
	}
	store, err := nonce.OpenSQLite(ctx, filepath.Join(dataDir, nonce.DBFileName))
	if err != nil {
		log.Fatal(err)
	}
	defer store.Close()
	issuer, err := nonce.New(secret, store, 5*time.Minute, time.Now)
	if err != nil {
		log.Fatal(err)
	}

	// GET /v1/challenge, by an agent authenticated as vm-1.
	n, _, err := issuer.Issue(ctx, "vm-1")
	if err != nil {
		log.Fatal(err)
	}
	// POST /v1/attest with evidence whose REPORT_DATA binds n.
	fmt.Println(issuer.Consume(ctx, n, "vm-1"))
	fmt.Println(errors.Is(issuer.Consume(ctx, n, "vm-1"), nonce.ErrReplayed))
	fmt.Println(errors.Is(issuer.Consume(ctx, n, "vm-2"), nonce.ErrWrongBinding))
	// Output:
	// <nil>
	// true
	// true
}
