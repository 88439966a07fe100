package api

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"testing"
	"time"

	"github.com/transparency-dev/formats/log"
	"github.com/transparency-dev/merkle/proof"
	"github.com/transparency-dev/merkle/rfc6962"
	"golang.org/x/mod/sumdb/note"

	"github.com/proofline/proofline/attest"
	"github.com/proofline/proofline/evidence"
	"github.com/proofline/proofline/verifier/ear"
	"github.com/proofline/proofline/verifier/rp"
	"github.com/proofline/proofline/verifier/service"
	"github.com/proofline/proofline/verifier/service/servicetest"
)

// Acceptance 1: over real HTTP, challenge → attest with TDX and SEV-SNP fake-PKI evidence → an
// affirming token that verifier/rp accepts (JWT and CWT); the record is in the log at the
// returned index, byte for byte, with a valid inclusion proof against a signed checkpoint.
func TestEndToEnd(t *testing.T) {
	f := newFixture(t, options{})
	relyingParty := f.rpVerifier()
	var keys service.Keys
	f.getJSON("/v1/keys", "audrey", &keys)
	var history evidence.KeyHistory
	if err := history.UnmarshalJSON(keys.RecordKeys); err != nil {
		t.Fatal(err)
	}
	logVerifier, err := note.NewVerifier(keys.LogKey)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		agent    string
		platform attest.Platform
	}{{"vm-tdx", attest.PlatformTDX}, {"vm-snp", attest.PlatformSNP}} {
		t.Run(string(c.platform), func(t *testing.T) {
			nonce := f.challenge(c.agent)
			a := f.attest(c.agent, f.evidence(c.platform, c.agent, nonce, servicetest.FaultNone))
			res := a.decoded(t)
			if a.Status != ear.StatusAffirming || res.Status != ear.StatusAffirming || !res.TestRoots || res.Platform != string(c.platform) {
				t.Fatalf("status %s, result %s", a.Status, a.Result)
			}
			if a.ID != fmt.Sprint(a.LogIndex) {
				t.Fatalf("id %q for log index %d", a.ID, a.LogIndex)
			}

			// The relying party accepts the token, in both forms, and it names the record.
			for form, verify := range map[string]func() (*rp.Claims, error){
				"JWT": func() (*rp.Claims, error) { return relyingParty.VerifyJWT(a.Token) },
				"CWT": func() (*rp.Claims, error) { return relyingParty.VerifyCWT(a.CWT) },
			} {
				cl, err := verify()
				if err != nil {
					t.Fatalf("%s: relying party refuses the token: %v", form, err)
				}
				if cl.LogIndex != a.LogIndex || hex.EncodeToString(cl.RecordSHA256[:]) != a.RecordSHA256 || cl.Subject != "agent:"+c.agent ||
					cl.Status != ear.StatusAffirming || !cl.TestRoots {
					t.Fatalf("%s claims %+v do not match the answer %+v", form, cl, a)
				}
				if err := cl.RequireNonce(nonce); err != nil {
					t.Fatalf("%s: %v", form, err)
				}
				if cl.PolicyID != res.Policy.ID || cl.PolicyDigest != res.Policy.Digest {
					t.Fatalf("%s names policy %s@%s, the result %s@%s", form, cl.PolicyID, cl.PolicyDigest, res.Policy.ID, res.Policy.Digest)
				}
			}

			// The result reads back byte for byte.
			var stored storedResultResponse
			f.getJSON("/v1/results/"+a.ID, c.agent, &stored)
			if !bytes.Equal(stored.Result, a.Result) || stored.LogIndex != a.LogIndex || stored.Subject != "agent:"+c.agent {
				t.Fatalf("stored result differs:\n%s\n%s", stored.Result, a.Result)
			}

			// The record is the log leaf at the index: it opens with the published key history
			// and holds the evidence and the result exactly.
			code, _, leaf := f.do(http.MethodGet, fmt.Sprintf("/v1/records/%d", a.LogIndex), "audrey", nil)
			if code != http.StatusOK {
				t.Fatalf("record: %d %s", code, leaf)
			}
			if sum := sha256.Sum256(leaf); hex.EncodeToString(sum[:]) != a.RecordSHA256 {
				t.Fatalf("leaf SHA-256 %x, answer says %s", sum, a.RecordSHA256)
			}
			rec, _, err := evidence.Open(leaf, &history)
			if err != nil {
				t.Fatal(err)
			}
			if rec.Kind != evidence.KindAttestation || !bytes.Equal(rec.Result, a.Result) || rec.Subject.ID != "agent:"+c.agent ||
				rec.Subject.Platform != string(c.platform) || len(rec.Collateral) == 0 || rec.Evidence.Raw == nil {
				t.Fatalf("record: %+v", rec)
			}
			// Every collateral response the record names is in the blob store.
			for _, cr := range rec.Collateral {
				code, _, b := f.do(http.MethodGet, "/v1/blobs/"+cr.Digest.String(), "audrey", nil)
				if code != http.StatusOK || sha256.Sum256(b) != cr.Digest {
					t.Fatalf("collateral blob %s: %d", cr.URL, code)
				}
			}

			// Once a checkpoint covers it, the inclusion proof verifies against the signed root.
			p := waitProof(t, f, a.LogIndex)
			cp, _, _, err := log.ParseCheckpoint([]byte(p.Checkpoint), logVerifier.Name(), logVerifier)
			if err != nil {
				t.Fatalf("checkpoint: %v", err)
			}
			if cp.Size != p.TreeSize {
				t.Fatalf("proof for size %d, checkpoint size %d", p.TreeSize, cp.Size)
			}
			if err := proof.VerifyInclusion(rfc6962.DefaultHasher, a.LogIndex, cp.Size, rfc6962.DefaultHasher.HashLeaf(leaf), p.Hashes, cp.Hash); err != nil {
				t.Fatalf("inclusion proof: %v", err)
			}
		})
	}
}

// waitProof polls for the inclusion proof of idx until a checkpoint covers it (the log publishes
// one every 100 ms in tests).
func waitProof(t *testing.T, f *fixture, idx uint64) inclusionProofResponse {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		code, hdr, body := f.do(http.MethodGet, fmt.Sprintf("/v1/log/proofs/inclusion/%d", idx), "vm-tdx", nil)
		switch {
		case code == http.StatusOK:
			var p inclusionProofResponse
			if err := json.Unmarshal(body, &p); err != nil {
				t.Fatal(err)
			}
			return p
		case code == http.StatusNotFound && hdr.Get("Retry-After") != "" && bytes.Contains(body, []byte("not_covered")):
		default:
			t.Fatalf("proof: %d %s", code, body)
		}
		if time.Now().After(deadline) {
			t.Fatalf("no checkpoint covers record %d", idx)
		}
		<-tick.C
	}
}
