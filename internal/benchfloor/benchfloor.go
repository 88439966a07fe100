// Package benchfloor is the cryptographic floor of one attestation, for the benchmarks that
// compare the verifier with it (verifier BenchmarkFloor and BenchmarkVerify, verifier/api
// BenchmarkAttestHTTP; hack/bench/README.md): the work the product cannot avoid. That is the
// evidence's signature checks — TDX: the quote signature and the QE report signature, ECDSA
// P-256; SEV-SNP: the report signature, ECDSA P-384 — plus one record signature and one
// result-token signature, ECDSA P-256 each. Everything else (chains, CRLs, TCB info, QE
// identity) is verified once per distinct artefact and cached.
package benchfloor

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/sha512"
	"sync/atomic"
	"testing"
	"time"

	"github.com/proofline/proofline/attest"
)

// Op returns one attestation's floor for platform: a function that makes its signature checks
// and signatures once, and reports whether every one of them succeeded.
func Op(platform attest.Platform) func() bool {
	p256, err256 := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	p384, err384 := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	if err256 != nil || err384 != nil {
		return func() bool { return false } // no key, no floor: every op fails
	}
	msg := make([]byte, 1024)
	d256, d384 := sha256.Sum256(msg), sha512.Sum384(msg)
	sig256, _ := ecdsa.SignASN1(rand.Reader, p256, d256[:])
	sig384, _ := ecdsa.SignASN1(rand.Reader, p384, d384[:])
	return func() bool {
		ok := true
		if platform == attest.PlatformTDX {
			// the quote signature and the QE report signature
			ok = ecdsa.VerifyASN1(&p256.PublicKey, d256[:], sig256) && ecdsa.VerifyASN1(&p256.PublicKey, d256[:], sig256)
		} else {
			ok = ecdsa.VerifyASN1(&p384.PublicKey, d384[:], sig384) // the report signature
		}
		for range 2 { // the record and the result token
			_, err := ecdsa.SignASN1(rand.Reader, p256, d256[:])
			ok = ok && err == nil
		}
		return ok
	}
}

// Ns measures the floor of platform in ns per attestation: n attestations' floors shared by
// goroutines goroutines (the parallelism of the benchmark it is compared with). It fails tb if a
// signature check or a signature failed.
func Ns(tb testing.TB, platform attest.Platform, goroutines, n int) float64 {
	tb.Helper()
	op := Op(platform)
	var next atomic.Int64
	done := make(chan bool, goroutines)
	start := time.Now()
	for range goroutines {
		go func() {
			ok := true
			for next.Add(1) <= int64(n) {
				ok = op() && ok
			}
			done <- ok
		}()
	}
	ok := true
	for range goroutines {
		ok = <-done && ok
	}
	if !ok {
		tb.Fatal("benchfloor: a signature check or a signature failed")
	}
	return float64(time.Since(start).Nanoseconds()) / float64(n)
}
