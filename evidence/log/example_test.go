package log_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	"github.com/transparency-dev/merkle/proof"
	"github.com/transparency-dev/merkle/rfc6962"

	"github.com/proofline/proofline/evidence/log"
)

// A verifier appends a record, answers once Append returns (the record is durable), and later
// hands out a checkpoint and an inclusion proof that an auditor verifies offline.
func ExampleOpenPOSIX() {
	ctx := context.Background()
	dir, _ := os.MkdirTemp("", "evidence-log")
	defer os.RemoveAll(dir)

	l, err := log.OpenPOSIX(ctx, dir, log.Options{Origin: "proofline.example/log"})
	if err != nil {
		panic(err)
	}
	defer l.Close()

	record := []byte("COSE_Sign1 record bytes")
	index, err := l.Append(ctx, record)
	if err != nil {
		panic(err) // no acknowledgement: do not answer
	}
	cp, err := l.WaitCheckpoint(ctx, index+1)
	if err != nil {
		panic(err)
	}
	p, err := l.InclusionProof(ctx, index, cp.Size)
	if err != nil {
		panic(err)
	}
	err = proof.VerifyInclusion(rfc6962.DefaultHasher, index, cp.Size, rfc6962.DefaultHasher.HashLeaf(record), p, cp.Hash)
	fmt.Println(index, cp.Origin, err)

	// The auditor's side: the verifier key is DIR/note.pub, or derived from the key file.
	_, v, err := log.LoadOrGenerateKey(filepath.Join(dir, "note.key"), "")
	if err != nil {
		panic(err)
	}
	rep, err := log.Fsck(ctx, log.NewPOSIXReader(dir), v, nil)
	fmt.Println(rep.Leaves, err)
	// Output:
	// 0 proofline.example/log <nil>
	// 1 <nil>
}
