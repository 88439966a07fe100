package evidence

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/fxamacker/cbor/v2"
)

// exampleRecord is the worked example of README.md.
func exampleRecord() *Record {
	fill := func(b byte) Digest { return Digest(bytes.Repeat([]byte{b}, 32)) }
	return &Record{
		Version:    Version,
		Kind:       KindAttestation,
		Time:       time.Date(2026, 11, 2, 10, 0, 0, 0, time.UTC),
		Subject:    &Subject{ID: "vm-7f3a", Platform: "tdx"},
		Evidence:   &Evidence{Digest: ptr(fill(0x11))},
		Collateral: []CollateralRef{{Kind: "tcb_info", URL: "https://pcs.example/tcb", Digest: fill(0x22)}},
		Policy:     &PolicyRef{ID: "default", Digest: fill(0x33)},
		Result:     []byte(`{"status":"affirming"}`),
		Verifier:   Verifier{Name: "proofline", Version: "v0.1.0", Build: fill(0x44)},
	}
}

// readmeBlock returns the fenced code block that follows <!-- example: name --> in README.md.
func readmeBlock(t *testing.T, name string) string {
	t.Helper()
	readme, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	re := regexp.MustCompile("(?s)<!-- example: " + regexp.QuoteMeta(name) + " -->\\s*```[a-z]*\\n(.*?)```")
	m := re.FindSubmatch(readme)
	if m == nil {
		t.Fatalf("README.md has no example %q", name)
	}
	return string(m[1])
}

// TestREADMEExamples: the worked examples in README.md are what this code produces and accepts.
func TestREADMEExamples(t *testing.T) {
	b, err := exampleRecord().Marshal()
	if err != nil {
		t.Fatal(err)
	}
	wantHex := readmeBlock(t, "record-hex")
	gotHex := hex.EncodeToString(b)
	if strings.Join(strings.Fields(wantHex), "") != gotHex {
		t.Errorf("README record hex is stale; the record encodes to\n%s", wrap(gotHex, 64))
	}
	diag, err := cbor.Diagnose(b)
	if err != nil {
		t.Fatal(err)
	}
	if want := readmeBlock(t, "record-diag"); strings.Join(strings.Fields(want), "") != strings.Join(strings.Fields(diag), "") {
		t.Errorf("README diagnostic notation is stale; it is\n%s", diag)
	}

	var h KeyHistory
	if err := json.Unmarshal([]byte(readmeBlock(t, "key-history")), &h); err != nil {
		t.Fatalf("README key history: %v", err)
	}
	a, b2 := testKey(t, "test-key-a.pem"), testKey(t, "test-key-b.pem")
	var want KeyHistory
	if err := want.Add(a, t0); err != nil {
		t.Fatal(err)
	}
	if err := want.Rotate(b2, t0.Add(90*24*time.Hour)); err != nil {
		t.Fatal(err)
	}
	if got, wantJSON := mustJSON(t, &h), mustJSON(t, &want); got != wantJSON {
		var buf bytes.Buffer
		json.Indent(&buf, []byte(wantJSON), "", "  ")
		t.Errorf("README key history is stale; it is\n%s", buf.String())
	}
}

func mustJSON(t *testing.T, h *KeyHistory) string {
	b, err := h.MarshalJSON()
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func wrap(s string, n int) string {
	var lines []string
	for len(s) > n {
		lines = append(lines, s[:n])
		s = s[n:]
	}
	return strings.Join(append(lines, s), "\n")
}
