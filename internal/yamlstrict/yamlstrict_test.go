package yamlstrict

import (
	"errors"
	"io"
	"strings"
	"testing"
)

type conf struct {
	A int `yaml:"a"`
	B struct {
		C string `yaml:"c"`
	} `yaml:"b"`
}

func TestDecode(t *testing.T) {
	for _, c := range []struct {
		name, in, err string
	}{
		{"one document", "a: 1\nb: {c: x}\n", ""},
		{"one document after ---", "---\na: 1\n", ""},
		{"empty", "", "EOF"},
		{"unknown key", "a: 1\nd: 2\n", "field d not found"},
		{"second document", "a: 1\n---\nb: {c: x}\n", "more than one YAML document (the second starts at line 2)"},
		{"empty second document", "a: 1\n---\n", "more than one YAML document"},
		{"malformed second document", "a: 1\n---\n[unclosed\n", "after the first YAML document"},
	} {
		t.Run(c.name, func(t *testing.T) {
			var v conf
			err := Decode([]byte(c.in), &v)
			switch {
			case c.err == "" && err != nil:
				t.Fatalf("%q: %v", c.in, err)
			case c.err == "EOF" && !errors.Is(err, io.EOF):
				t.Fatalf("%q: %v, want io.EOF", c.in, err)
			case c.err != "" && c.err != "EOF" && (err == nil || !strings.Contains(err.Error(), c.err)):
				t.Fatalf("%q: %v, want an error with %q", c.in, err, c.err)
			}
		})
	}
}
