package agent

import (
	"context"
	"crypto/x509"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/proofline/proofline/attest"
	"github.com/proofline/proofline/attest/attesttest/fakedevice"
	"github.com/proofline/proofline/attest/attesttest/faketpm"
	"github.com/proofline/proofline/attest/tdx"
	"github.com/proofline/proofline/verifier"
	"github.com/proofline/proofline/verifier/ear"
	"github.com/proofline/proofline/verifier/policy"
)

// A TDX VM with a vTPM: the agent names the attestation key in runtime_data, the TD quote binds
// it, the vTPM quote covers PCRs 0–9 with the TCG log of a real boot, and the verifier affirms it
// under a policy with a tpm section and the boot pinned. Without the key in runtime_data the
// agent refuses to collect rather than send a quote the verifier would reject.
func TestHardwareWithVTPM(t *testing.T) {
	plat := simulated(t)
	f := faketpm.New(t)
	bootLog := faketpm.UbuntuSEVSNPLog()
	if err := f.ExtendLog(bootLog); err != nil {
		t.Fatal(err)
	}
	vtpm, err := NewVTPM(f.Transport(), "", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer vtpm.Close()
	vtpm.LogPath = filepath.Join(t.TempDir(), "binary_bios_measurements")
	if err := os.WriteFile(vtpm.LogPath, bootLog, 0o444); err != nil {
		t.Fatal(err)
	}
	dev := fakedevice.NewTDX(plat.Intel)
	hw := &Hardware{Platform: attest.PlatformTDX, TDX: tdx.Collector{TSM: dev.TSM, OpenDevice: dev.OpenDevice}, EventLogs: true, VTPM: vtpm}

	key := newKey(t)
	pub, err := x509.MarshalPKIXPublicKey(&key.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	nonce := make([]byte, attest.NonceSize)
	nonce[0] = 7
	rd := (&attest.RuntimeData{PublicKey: pub, TPMAKDigest: vtpm.AKDigest()}).Encode()
	ev, err := hw.Collect(context.Background(), nonce, rd)
	if err != nil {
		t.Fatal(err)
	}
	if ev.TPM == nil || ev.EventLogs == nil || len(ev.EventLogs.TCG) != len(bootLog) {
		t.Fatalf("evidence lacks the vTPM quote or the TCG log: tpm %v, event logs %v", ev.TPM != nil, ev.EventLogs != nil)
	}
	// The envelope round-trips through the wire format the verifier reads.
	raw, err := ev.Encode()
	if err != nil {
		t.Fatal(err)
	}
	if ev, err = attest.DecodeEvidence(raw); err != nil {
		t.Fatal(err)
	}
	pol, err := policy.Parse(append(append([]byte{}, plat.PolicyYAML...), "tpm:\n  pcrs: [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]\nmeasured_boot:\n  tcg:\n    events: [{name: kernel, register: pcr9, digest: a6cdd6ff491ff19d4f940fa8123753b7d423421469001b5f81628323a81f287b}]\n"...))
	if err != nil {
		t.Fatal(err)
	}
	res := verifier.Verify(context.Background(), ev, verifier.Options{Policy: pol, Roots: plat.Roots, Collateral: plat.Collateral, Now: plat.Now.Add(time.Minute), Nonce: nonce})
	if res.Status != ear.StatusAffirming || res.Claims.(*ear.TDXClaims).TPM == nil || !res.Claims.(*ear.TDXClaims).TPM.AKBound {
		t.Fatalf("want affirming with a bound vTPM quote, got %s %+v %+v", res.Status, res.Failures, res.Warnings)
	}

	// runtime_data without the key: refused before anything is sent.
	if _, err := hw.Collect(context.Background(), nonce, (&attest.RuntimeData{PublicKey: pub}).Encode()); err == nil {
		t.Fatal("collected a vTPM quote whose key runtime_data does not name")
	}
}
