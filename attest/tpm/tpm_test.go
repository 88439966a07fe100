package tpm_test

// The tests share the process-wide TPM simulator (faketpm.New): none may call t.Parallel.

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-tpm/tpm2"
	"github.com/google/go-tpm/tpm2/transport"
	"github.com/proofline/proofline/attest"
	"github.com/proofline/proofline/attest/attesttest/faketpm"
	"github.com/proofline/proofline/attest/tpm"
	"github.com/proofline/proofline/verifier/ear"
	vtpm "github.com/proofline/proofline/verifier/tpm"
)

var allPCRs = func() []int {
	var out []int
	for i := range 24 {
		out = append(out, i)
	}
	return out
}()

func TestCreateAK(t *testing.T) {
	f := faketpm.New(t)
	ak, err := tpm.CreateAK(f.Transport())
	if err != nil {
		t.Fatal(err)
	}
	pub, err := tpm2.Unmarshal[tpm2.TPMTPublic](ak.Public)
	if err != nil {
		t.Fatal(err)
	}
	name, err := tpm2.ObjectName(pub)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(name.Buffer, ak.Name.Buffer) {
		t.Errorf("AK name %x is not the name of its public area %x", ak.Name.Buffer, name.Buffer)
	}
	a := pub.ObjectAttributes
	if !a.Restricted || !a.SignEncrypt || a.Decrypt || !a.FixedTPM || !a.FixedParent || !a.SensitiveDataOrigin {
		t.Errorf("AK attributes %+v: want a restricted, fixed, TPM-generated signing key", a)
	}
	parsed, err := vtpm.ParseAK(ak.Public)
	if err != nil || len(parsed.Problems) != 0 || parsed.Algorithm != "ecc-nist-p256" {
		t.Errorf("the verifier judges the AK: %v, %+v", err, parsed)
	}

	// A primary key is derived from the hierarchy seed: creating it again gives the same key.
	again, err := tpm.CreateAK(f.Transport())
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(again.Public, ak.Public) {
		t.Error("a second CreateAK on the same TPM gave a different key")
	}
	for _, k := range []*tpm.AK{ak, again} {
		if err := k.Close(f.Transport()); err != nil {
			t.Error(err)
		}
	}
	if err := ak.Close(f.Transport()); err == nil {
		t.Error("closing a flushed AK succeeded")
	}
}

// TestQuoteAllPCRs quotes 24 PCRs, which takes three TPM2_PCR_Read calls, and checks the values
// against an independent computation and the quote with the verifier.
func TestQuoteAllPCRs(t *testing.T) {
	f := faketpm.New(t)
	want := map[int][]byte{}
	for _, i := range []int{0, 7, 8, 15, 16, 23} {
		d := sha256.Sum256([]byte{byte(i)})
		f.Extend(i, "sha256", d[:])
		v := sha256.Sum256(append(make([]byte, 32), d[:]...)) // PCR = H(0…0 ‖ digest)
		want[i] = v[:]
	}
	counting := &commandCounter{tpm: f.Transport()}
	ak, err := tpm.CreateAK(counting)
	if err != nil {
		t.Fatal(err)
	}
	defer ak.Close(counting)
	ed := attest.TPMExtraData(make([]byte, 32), nil)
	descending := slices.Clone(allPCRs)
	slices.Reverse(descending)
	q, err := tpm.Quote(counting, ak, "sha256", descending, ed[:])
	if err != nil {
		t.Fatal(err)
	}
	if n := counting.count[tpm2.TPMCCPCRRead]; n != 3 {
		t.Errorf("%d TPM2_PCR_Read calls for 24 PCRs, want 3 (at most 8 per call)", n)
	}
	if len(q.PCRs) != 24 {
		t.Fatalf("%d PCR values, want 24", len(q.PCRs))
	}
	for k, p := range q.PCRs {
		if p.Index != k || p.Bank != "sha256" || len(p.Digest) != 32 {
			t.Errorf("PCR value %d = %s PCR %d (%d bytes); want sha256 PCR %d, ascending", k, p.Bank, p.Index, len(p.Digest), k)
		}
		if w, ok := want[p.Index]; ok && !bytes.Equal(p.Digest, w) {
			t.Errorf("PCR %d = %x, want %x", p.Index, p.Digest, w)
		}
	}
	if !bytes.Equal(q.AKPublic, ak.Public) {
		t.Error("ak_public is not the AK's public area")
	}
	var res ear.Result
	if got := vtpm.Verify(q, vtpm.Options{ExtraData: ed[:], Bank: "sha256", PCRs: allPCRs}, &res); got == nil {
		t.Fatalf("the verifier rejects the quote: %+v", res.Failures)
	}
}

// TestQuoteRetriesWhenPCRsChange extends a PCR between the read and the quote: the first quote's
// digest disagrees with the values read, and Quote must read and quote again.
func TestQuoteRetriesWhenPCRsChange(t *testing.T) {
	f := faketpm.New(t)
	ak := f.AK()
	pcrs := []int{0, 1, 2, 3, 4, 5, 6, 7, 8, 9}

	racing := &racer{tpm: f.Transport(), f: f, extendBefore: 1}
	q, err := tpm.Quote(racing, ak, "sha256", pcrs, nil)
	if err != nil {
		t.Fatal(err)
	}
	if racing.quotes != 2 {
		t.Errorf("%d TPM2_Quote calls, want 2 (one retry)", racing.quotes)
	}
	var res ear.Result
	if got := vtpm.Verify(q, vtpm.Options{ExtraData: []byte{}, Bank: "sha256", PCRs: pcrs}, &res); got == nil {
		t.Fatalf("the verifier rejects the retried quote: %+v", res.Failures)
	}

	always := &racer{tpm: f.Transport(), f: f, extendBefore: 1000}
	if _, err := tpm.Quote(always, ak, "sha256", pcrs, nil); !errors.Is(err, tpm.ErrPCRsChanging) {
		t.Fatalf("Quote with PCRs always changing = %v, want ErrPCRsChanging", err)
	}
}

func TestQuoteArguments(t *testing.T) {
	f := faketpm.New(t)
	ak := f.AK()
	for _, tc := range []struct {
		name      string
		bank      string
		pcrs      []int
		extraData []byte
		want      string
	}{
		{"unknown bank", "md5", []int{0}, nil, "not one of"},
		{"no PCRs", "sha256", nil, nil, "no PCRs"},
		{"PCR out of range", "sha256", []int{24}, nil, "not a PCR index"},
		{"negative PCR", "sha256", []int{-1}, nil, "not a PCR index"},
		{"PCR twice", "sha256", []int{1, 1}, nil, "twice"},
		{"extraData too long", "sha256", []int{0}, make([]byte, 65), "at most 64"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := tpm.Quote(f.Transport(), ak, tc.bank, tc.pcrs, tc.extraData)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Quote = %v, want an error containing %q", err, tc.want)
			}
		})
	}
}

func TestOpenErrors(t *testing.T) {
	dir := t.TempDir()
	missing := []string{filepath.Join(dir, "tpmrm0"), filepath.Join(dir, "tpm0")}
	_, err := tpm.OpenPaths(missing)
	if !errors.Is(err, tpm.ErrNoTPM) {
		t.Fatalf("OpenPaths of missing devices = %v, want ErrNoTPM", err)
	}
	for _, p := range missing {
		if !strings.Contains(err.Error(), p) {
			t.Errorf("error %q does not name %s", err, p)
		}
	}

	regular := filepath.Join(dir, "tpm0")
	if err := os.WriteFile(regular, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	_, err = tpm.OpenPaths([]string{missing[0], regular})
	if err == nil || errors.Is(err, tpm.ErrNoTPM) || !strings.Contains(err.Error(), regular) {
		t.Fatalf("OpenPaths of a regular file = %v, want an error naming it, not ErrNoTPM", err)
	}
}

// commandCounter counts TPM commands by command code.
type commandCounter struct {
	tpm   transport.TPM
	count map[tpm2.TPMCC]int
}

func (c *commandCounter) Send(cmd []byte) ([]byte, error) {
	if c.count == nil {
		c.count = map[tpm2.TPMCC]int{}
	}
	c.count[commandCode(cmd)]++
	return c.tpm.Send(cmd)
}

// racer extends PCR 5 just before each of the first extendBefore TPM2_Quote commands, as another
// process measuring something would.
type racer struct {
	tpm          transport.TPM
	f            *faketpm.TPM
	extendBefore int
	quotes       int
}

func (r *racer) Send(cmd []byte) ([]byte, error) {
	if commandCode(cmd) == tpm2.TPMCCQuote {
		r.quotes++
		if r.quotes <= r.extendBefore {
			r.f.Extend(5, "sha256", bytes.Repeat([]byte{byte(r.quotes)}, 32))
		}
	}
	return r.tpm.Send(cmd)
}

// commandCode reads the command code of a TPM command (tag u16, size u32, code u32; Part 1 §18).
func commandCode(cmd []byte) tpm2.TPMCC {
	if len(cmd) < 10 {
		return 0
	}
	return tpm2.TPMCC(binary.BigEndian.Uint32(cmd[6:10]))
}
