package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
)

// Acceptance 6 (the part a test can check): proofline demo runs the service on embedded defaults
// with simulated TDX and SEV-SNP VMs, catches every bad case, and explains what it did.
func TestDemo(t *testing.T) {
	var out, errb bytes.Buffer
	if code := run(context.Background(), []string{"demo"}, &out, &errb); code != 0 {
		t.Fatalf("exit %d\nstdout:\n%s\nstderr:\n%s", code, out.String(), errb.String())
	}
	for _, want := range []string{
		"Every bad case was caught and no genuine VM was refused.",
		"DEBUG enabled", "✓ caught", "tdx_debug", "snp_debug", "nonce_mismatch",
		"token: accepted", "outside test mode: refused", "key_release record",
		"inclusion proof", "verified",
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("the demo's output lacks %q", want)
		}
	}
	if strings.Contains(out.String(), "UNEXPECTED") || errb.Len() != 0 {
		t.Errorf("stdout:\n%s\nstderr:\n%s", out.String(), errb.String())
	}
	if testing.Verbose() {
		t.Log("\n" + out.String())
	}
}
