package servicetest_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"strings"
	"testing"
	"time"

	"github.com/proofline/proofline/attest"
	"github.com/proofline/proofline/verifier"
	"github.com/proofline/proofline/verifier/ear"
	"github.com/proofline/proofline/verifier/policy"
	"github.com/proofline/proofline/verifier/service/servicetest"
)

// Platforms written by one process and read by another sign evidence that the first one's
// roots, collateral and policy affirm: what `proofline serve --test-mode` and
// `proofline-agent run --test-mode --sim-platforms` rely on.
func TestMarshalRoundTrip(t *testing.T) {
	orig, err := servicetest.New(time.Now())
	if err != nil {
		t.Fatal(err)
	}
	data, err := orig.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	loaded, err := servicetest.Unmarshal(data)
	if err != nil {
		t.Fatal(err)
	}
	if !loaded.Now.Equal(orig.Now) || !bytes.Equal(loaded.PolicyYAML, orig.PolicyYAML) || !loaded.Intel.Root.Equal(orig.Intel.Root) {
		t.Fatal("the loaded platforms differ from the written ones")
	}
	pol, err := policy.Parse(orig.PolicyYAML)
	if err != nil {
		t.Fatal(err)
	}
	for _, platform := range []attest.Platform{attest.PlatformTDX, attest.PlatformSNP} {
		nonce := make([]byte, attest.NonceSize)
		rand.Read(nonce)
		raw, err := loaded.Evidence(platform, nonce, servicetest.RuntimeData("vm"), servicetest.FaultNone)
		if err != nil {
			t.Fatal(err)
		}
		ev, err := attest.DecodeEvidence(raw)
		if err != nil {
			t.Fatal(err)
		}
		res := verifier.Verify(context.Background(), ev, verifier.Options{Policy: pol, Roots: orig.Roots, Collateral: orig.Collateral, Now: orig.Now.Add(time.Minute), Nonce: nonce})
		if res.Status != ear.StatusAffirming {
			t.Fatalf("%s evidence of the loaded platforms: %s %+v", platform, res.Status, res.Failures)
		}
	}
}

// Anything but Marshal's output is refused with a reason, never half-loaded.
func TestUnmarshalRefuses(t *testing.T) {
	orig, err := servicetest.New(time.Now())
	if err != nil {
		t.Fatal(err)
	}
	good, err := orig.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	other, err := servicetest.New(time.Now())
	if err != nil {
		t.Fatal(err)
	}
	otherData, _ := other.Marshal()
	// The PCK key of another run beside this run's PCK certificate.
	swapped := swapField(t, good, otherData, "pck_key")
	for _, c := range []struct {
		name string
		data []byte
		want string
	}{
		{"not JSON", []byte("roots"), "simulated platforms"},
		{"unknown field", bytes.Replace(good, []byte(`"now"`), []byte(`"extra": 1, "now"`), 1), "unknown field"},
		{"other format", bytes.Replace(good, []byte("platforms v1"), []byte("platforms v9"), 1), "format"},
		{"mismatched key", swapped, "is not the key of intel.pck"},
	} {
		t.Run(c.name, func(t *testing.T) {
			if _, err := servicetest.Unmarshal(c.data); err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("error %v, want one containing %q", err, c.want)
			}
		})
	}
}

// swapField returns a with the JSON line of field replaced by b's.
func swapField(t *testing.T, a, b []byte, field string) []byte {
	t.Helper()
	line := func(d []byte) []byte {
		for _, l := range bytes.Split(d, []byte("\n")) {
			if bytes.Contains(l, []byte(`"`+field+`"`)) {
				return l
			}
		}
		t.Fatalf("no %s", field)
		return nil
	}
	return bytes.Replace(a, line(a), line(b), 1)
}
