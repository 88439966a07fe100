package ear

import (
	"encoding/json"
	"os"
	"strings"
	"testing"
)

// Every code has a description and a row in verifier/README.md, and no row names an unknown code.
func TestCodesDocumented(t *testing.T) {
	readme, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	for code, desc := range Descriptions {
		if desc == "" {
			t.Errorf("%s has no description", code)
		}
		if !strings.Contains(string(readme), "| `"+string(code)+"` | "+desc+" |") {
			t.Errorf("verifier/README.md lacks the row for %s", code)
		}
	}
	_, table, _ := strings.Cut(string(readme), "## Codes")
	for _, line := range strings.Split(table, "\n") {
		if strings.HasPrefix(line, "| `") {
			code := Code(strings.SplitN(line, "`", 3)[1])
			if _, ok := Descriptions[code]; !ok {
				t.Errorf("README row for unknown code %s", code)
			}
		}
	}
}

func TestFinalize(t *testing.T) {
	var r Result
	r.Finalize()
	if r.Status != StatusAffirming || r.Failures == nil || r.Warnings == nil || r.Profile != Profile {
		t.Fatalf("%+v", r)
	}
	r.Warn(CodeNoReferenceValues, "tdx.7", "x")
	r.Finalize()
	if r.Status != StatusWarning {
		t.Fatal(r.Status)
	}
	r.Fail(CodeTDXDebug, "tdx.7", "x")
	r.Finalize()
	if r.Status != StatusContraindicated || !r.HasFailure(CodeTDXDebug) || r.HasFailure(CodeSNPDebug) || !r.HasWarning(CodeNoReferenceValues) {
		t.Fatal(r.Status)
	}
}

func TestHexJSON(t *testing.T) {
	b, _ := json.Marshal(Hex{0xAB, 0x01})
	if string(b) != `"ab01"` {
		t.Fatal(string(b))
	}
	// Empty and nil encode as "" (never null), in a struct too, and omitempty drops them.
	type s struct {
		A Hex `json:"a"`
		B Hex `json:"b"`
		C Hex `json:"c,omitempty"`
		D Hex `json:"d"`
	}
	if b, _ := json.Marshal(s{A: nil, B: Hex{}, D: Hex{0, 0xff}}); string(b) != `{"a":"","b":"","d":"00ff"}` {
		t.Fatal(string(b))
	}
	var h Hex
	if err := json.Unmarshal([]byte(`"AB01"`), &h); err != nil || len(h) != 2 {
		t.Fatal(err)
	}
	if err := json.Unmarshal([]byte(`"xyz"`), &h); err == nil {
		t.Fatal("accepted non-hex")
	}
}
