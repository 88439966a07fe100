package roots

import (
	"bytes"
	"os"
	"path/filepath"
	"testing"
)

func TestBuiltin(t *testing.T) {
	s, err := Builtin()
	if err != nil {
		t.Fatal(err)
	}
	if s.Test {
		t.Error("built-in roots are marked Test")
	}
	if len(s.Intel) != 1 || s.Intel[0].Subject.CommonName != "Intel SGX Root CA" {
		t.Errorf("Intel roots = %v", s.Intel)
	}
	for _, line := range []string{"Milan", "Genoa", "Turin"} {
		p := s.AMD[line]
		if p == nil || p.ARK == nil || p.ASK == nil || p.ASVK == nil {
			t.Errorf("%s: incomplete AMD hierarchy %+v", line, p)
			continue
		}
		if err := p.ASK.CheckSignatureFrom(p.ARK); err != nil {
			t.Errorf("%s ASK not signed by ARK: %v", line, err)
		}
		if err := p.ASVK.CheckSignatureFrom(p.ARK); err != nil {
			t.Errorf("%s ASVK not signed by ARK: %v", line, err)
		}
	}
}

func TestReadDirRejects(t *testing.T) {
	dir := t.TempDir()
	if _, err := ReadDir(dir); err == nil {
		t.Error("empty directory accepted")
	}
	// An ASK without its ARK in the same file has no anchor to hang from.
	data, err := builtin.ReadFile("pem/amd_ask_ark_milan.pem")
	if err != nil {
		t.Fatal(err)
	}
	end := []byte("-----END CERTIFICATE-----\n")
	i := bytes.Index(data, end)
	if err := os.WriteFile(filepath.Join(dir, "ask.pem"), data[:i+len(end)], 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := ReadDir(dir); err == nil {
		t.Error("an intermediate without its ARK was accepted")
	}
}

func TestReadDirMarksTest(t *testing.T) {
	dir := t.TempDir()
	data, _ := builtin.ReadFile("pem/amd_ask_ark_genoa.pem")
	if err := os.WriteFile(filepath.Join(dir, "genoa.pem"), data, 0o644); err != nil {
		t.Fatal(err)
	}
	s, err := ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if !s.Test || s.AMD["Genoa"] == nil || s.AMD["Genoa"].ASK == nil {
		t.Errorf("got %+v", s)
	}
}
