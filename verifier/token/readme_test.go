package token

import (
	"bytes"
	"crypto/elliptic"
	"encoding/json"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/fxamacker/cbor/v2"
	"github.com/proofline/proofline/verifier/ear"
)

// exampleClaims is the worked example of README.md: a warning result for a TDX guest.
func exampleClaims(t *testing.T) *Claims {
	t.Helper()
	i, err := NewIssuer("https://verifier.example", newECSigner(t, elliptic.P256()))
	if err != nil {
		t.Fatal(err)
	}
	i.rand = repeatReader(0x11)
	res := testResult("tdx", ear.StatusWarning)
	ref := testRef()
	ref.Nonce = bytes.Repeat([]byte{0x4e}, 32)
	c, err := i.Claims(res, ref, []string{"kms.example"}, 5*time.Minute, testNow)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// readmeBlock returns the fenced code block that follows <!-- example: name --> in README.md.
func readmeBlock(t *testing.T, name string) string {
	t.Helper()
	readme, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	re := regexp.MustCompile("(?s)<!-- example: " + regexp.QuoteMeta(name) + " -->\\s*```[a-z-]*\\n(.*?)```")
	m := re.FindSubmatch(readme)
	if m == nil {
		t.Fatalf("README.md has no example %q", name)
	}
	return string(m[1])
}

// TestREADMEExamples: the payloads in README.md are what this code produces and accepts.
func TestREADMEExamples(t *testing.T) {
	c := exampleClaims(t)
	b, err := c.marshalJWT()
	if err != nil {
		t.Fatal(err)
	}
	var indented bytes.Buffer
	if err := json.Indent(&indented, b, "", "  "); err != nil {
		t.Fatal(err)
	}
	if want := readmeBlock(t, "jwt-payload"); strings.TrimSpace(want) != indented.String() {
		t.Errorf("README JWT payload is stale; the claims encode to\n%s", indented.String())
	}
	if got, err := ParseJWTPayload([]byte(readmeBlock(t, "jwt-payload"))); err != nil || !got.Equal(c) {
		t.Errorf("README JWT payload does not parse to the claims: %v", err)
	}

	cb, err := c.marshalCWT()
	if err != nil {
		t.Fatal(err)
	}
	diag, err := cbor.Diagnose(cb)
	if err != nil {
		t.Fatal(err)
	}
	if want := readmeBlock(t, "cwt-payload"); strings.Join(strings.Fields(want), "") != strings.Join(strings.Fields(diag), "") {
		t.Errorf("README CWT payload is stale; the claims encode to\n%s", diag)
	}
}
