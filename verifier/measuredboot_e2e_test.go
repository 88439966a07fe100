package verifier_test

import (
	"bytes"
	"context"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/sha512"
	"crypto/x509"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/proofline/proofline/attest"
	"github.com/proofline/proofline/attest/attesttest/fakeintel"
	"github.com/proofline/proofline/attest/attesttest/faketpm"
	"github.com/proofline/proofline/internal/fixture"
	"github.com/proofline/proofline/verifier"
	"github.com/proofline/proofline/verifier/collateral"
	"github.com/proofline/proofline/verifier/ear"
	"github.com/proofline/proofline/verifier/policy"
	"github.com/proofline/proofline/verifier/roots"
)

// The recorded GCP TDX quote's CCEL replays to its RTMRs and meets the fixture policy, which pins
// shim, GRUB, the kernel and the kernel command line (VERIFIER-CHECKS TDX 9). Each change to the
// log or to what it must contain is rejected with its own code.
func TestCCELRecordedGCP(t *testing.T) {
	ev := fixture.Evidence(t, "real/tdx-v4-gcp/evidence.json")
	polYAML, err := os.ReadFile(fixture.Path("real", "tdx-v4-gcp", "policy.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	at := time.Date(2026, 6, 1, 0, 0, 0, 0, time.UTC)
	verify := func(t *testing.T, ev *attest.Evidence, polYAML string) *ear.Result {
		t.Helper()
		pol, err := policy.Parse([]byte(polYAML))
		if err != nil {
			t.Fatal(err)
		}
		return verifier.Verify(context.Background(), ev, verifier.Options{Policy: pol, Roots: builtinRoots(t), Now: at})
	}
	r := verify(t, ev, string(polYAML))
	if len(r.Failures) != 0 {
		t.Fatalf("the recorded CCEL does not pass its policy: %s", describe(r))
	}
	logs := r.Claims.(*ear.TDXClaims).EventLogs
	if len(logs) != 1 || logs[0].Kind != "ccel" || logs[0].Events != 43 || len(logs[0].KernelCmdlines) != 1 {
		t.Fatalf("event log claims %+v", logs)
	}

	kernel, _ := hex.DecodeString("b1012372f421ad28c9f542e5a1b8c4d312a0d1c8637ffba5e52b632d4b632e504da1b73964f6e8ba047bcd4f1d5a1dfe")
	if bytes.Count(ev.EventLogs.CCEL, kernel) != 1 {
		t.Fatal("the kernel event's digest is not in the recorded CCEL once")
	}
	withCCEL := func(mutate func([]byte) []byte) *attest.Evidence {
		c := *ev
		c.EventLogs = &attest.EventLogs{CCEL: mutate(bytes.Clone(ev.EventLogs.CCEL))}
		return &c
	}
	for name, tc := range map[string]struct {
		ev     *attest.Evidence
		policy string
		code   ear.Code
	}{
		"kernel event digest changed": {withCCEL(func(b []byte) []byte {
			b[bytes.Index(b, kernel)] ^= 1
			return b
		}), string(polYAML), ear.CodeEventLogReplay},
		"kernel command line changed": {withCCEL(func(b []byte) []byte {
			i := bytes.Index(b, []byte("kernel_cmdline: /syslinux/vmlinuz.A init=/usr/lib/systemd/systemd"))
			b[i+len("kernel_cmdline: /syslinux/vmlinuz.A init=")] = 'X'
			return b
		}), string(polYAML), ear.CodeEventLogReplay},
		"log truncated":                       {withCCEL(func(b []byte) []byte { return b[:100] }), string(polYAML), ear.CodeEventLogMalformed},
		"no CCEL":                             {func() *attest.Evidence { c := *ev; c.EventLogs = nil; return &c }(), string(polYAML), ear.CodeEventLogMissing},
		"policy pins another kernel":          {ev, strings.Replace(string(polYAML), "b1012372f421", "b1012372f422", 1), ear.CodeEventLogEvent},
		"kernel pinned in the wrong RTMR":     {ev, strings.Replace(string(polYAML), "register: rtmr2", "register: rtmr3", 1), ear.CodeEventLogEvent},
		"policy expects another command line": {ev, strings.Replace(string(polYAML), "loglevel=7", "loglevel=3", 1), ear.CodeEventLogCmdline},
	} {
		t.Run(name, func(t *testing.T) {
			r := verify(t, tc.ev, tc.policy)
			if !r.HasFailure(tc.code) || r.Status != ear.StatusContraindicated {
				t.Fatalf("want %s, got %s", tc.code, describe(r))
			}
		})
	}
}

// vtpmScenario is a TDX VM with a vTPM: a TD quote from the fake Intel PKI whose runtime_data
// names the vTPM's attestation key, and a quote from the TPM simulator after the real event log of
// an Ubuntu 24.04 boot was extended into it.
type vtpmScenario struct {
	tdx   *tdxScenario
	tpm   *attest.TPM
	tcg   []byte
	rd    []byte
	extra string // appended to the policy
}

// ubuntuCmdline is the kernel command line GRUB measured in the Ubuntu log (go-tpm-tools'
// Ubuntu2404AmdSevSnpCmdline, without its NUL).
const ubuntuCmdline = "/vmlinuz-6.8.0-1010-gcp root=PARTUUID=8270f3c9-b4e4-4345-80ee-5a62db7ebf3f ro console=ttyS0,115200 panic=-1"

// ubuntuKernel is the SHA-256 digest GRUB extended into PCR 9 for /vmlinuz-6.8.0-1010-gcp.
const ubuntuKernel = "a6cdd6ff491ff19d4f940fa8123753b7d423421469001b5f81628323a81f287b"

var vtpmPCRs = []int{0, 1, 2, 3, 4, 5, 6, 7, 8, 9}

func newVTPMScenario(t *testing.T, f *faketpm.TPM) *vtpmScenario {
	t.Helper()
	s := &vtpmScenario{tdx: newTDXScenario(t, 4), tcg: faketpm.UbuntuSEVSNPLog()}
	if err := f.ExtendLog(s.tcg); err != nil {
		t.Fatal(err)
	}
	ak := sha256.Sum256(f.AK().Public)
	s.rd = (&attest.RuntimeData{PublicKey: []byte{1, 2, 3}, TPMAKDigest: hex.EncodeToString(ak[:])}).Encode()
	s.tdx.quote.ReportData = attest.ReportData(s.tdx.nonce, s.rd)
	extra := attest.TPMExtraData(s.tdx.nonce, s.rd)
	s.tpm = f.Quote("sha256", vtpmPCRs, extra[:])
	// PCR 8 (GRUB's commands and command lines) is pinned whole, as kernel_cmdlines requires.
	s.extra = fmt.Sprintf("tpm:\n  pcrs: %s\n  pcr_values: {8: [%x]}\nmeasured_boot:\n  tcg:\n    events: [{name: kernel, register: pcr9, digest: %s}]\n    kernel_cmdlines: [%q]\n",
		strings.ReplaceAll(fmt.Sprint(vtpmPCRs), " ", ", "), f.PCRs("sha256", []int{8})[8], ubuntuKernel, ubuntuCmdline)
	return s
}

func (s *vtpmScenario) evidence(t *testing.T) *attest.Evidence {
	t.Helper()
	raw, err := s.tdx.pki.Quote(s.tdx.quote)
	if err != nil {
		t.Fatal(err)
	}
	return &attest.Evidence{Version: 1, Platform: attest.PlatformTDX, Report: raw, Nonce: s.tdx.nonce, RuntimeData: s.rd,
		TPM: faketpm.Clone(s.tpm), EventLogs: &attest.EventLogs{TCG: bytes.Clone(s.tcg)}}
}

// rebind replaces ev's runtime_data and makes the TD quote and the vTPM quote bind the new one,
// as a VM would that attests with it.
func (s *vtpmScenario) rebind(t *testing.T, f *faketpm.TPM, ev *attest.Evidence, rd []byte) {
	t.Helper()
	q := s.tdx.quote
	q.ReportData = attest.ReportData(s.tdx.nonce, rd)
	raw, err := s.tdx.pki.Quote(q)
	if err != nil {
		t.Fatal(err)
	}
	extra := attest.TPMExtraData(s.tdx.nonce, rd)
	ev.Report, ev.RuntimeData, ev.TPM = raw, rd, f.Quote("sha256", vtpmPCRs, extra[:])
}

func (s *vtpmScenario) verify(t *testing.T, ev *attest.Evidence, opts verifier.Options) *ear.Result {
	t.Helper()
	pol, err := policy.Parse([]byte(s.tdx.policyYAML() + s.extra))
	if err != nil {
		t.Fatal(err)
	}
	rs, err := s.tdx.pki.Collateral(s.tdx.coll)
	if err != nil {
		t.Fatal(err)
	}
	set := collateral.Set{}
	if err := set.Add(rs...); err != nil {
		t.Fatal(err)
	}
	opts.Policy, opts.Roots, opts.Now = pol, &roots.Set{Intel: []*x509.Certificate{s.tdx.pki.Root}}, testNow
	if opts.Collateral == nil {
		opts.Collateral = set
	}
	if opts.Nonce == nil && opts.ReportData == nil {
		opts.Nonce = s.tdx.nonce
	}
	return verifier.Verify(context.Background(), ev, opts)
}

// A TDX VM with a vTPM: the simulator's quote over PCRs 0–9 after a real boot's event log, bound
// to the TD quote through runtime_data, verifies end to end with the log replayed and the kernel
// and command line pinned; every break in the chain from hardware to kernel is rejected.
// (The simulator is a process-wide singleton: these subtests run one after another.)
func TestVTPMEndToEnd(t *testing.T) {
	f := faketpm.New(t)
	s := newVTPMScenario(t, f)
	r := s.verify(t, s.evidence(t), verifier.Options{})
	if r.Status != ear.StatusAffirming {
		t.Fatalf("want affirming, got %s", describe(r))
	}
	c := r.Claims.(*ear.TDXClaims)
	if c.TPM == nil || !c.TPM.AKBound || len(c.TPM.PCRs) != len(vtpmPCRs) || len(c.EventLogs) != 1 || c.EventLogs[0].Kind != "tcg" ||
		len(c.EventLogs[0].KernelCmdlines) != 1 || c.EventLogs[0].KernelCmdlines[0] != ubuntuCmdline {
		t.Fatalf("claims: tpm %+v, event logs %+v", c.TPM, c.EventLogs)
	}

	kernel, _ := hex.DecodeString(ubuntuKernel)
	other := faketpm.NewSoftwareAK(t, nil)
	for name, tc := range map[string]struct {
		mutate func(*attest.Evidence)
		opts   verifier.Options
		policy string
		code   ear.Code
	}{
		// The TD quote and the vTPM quote both bind this runtime_data, but it names another key.
		"runtime_data names another key": {mutate: func(ev *attest.Evidence) {
			sum := sha256.Sum256(other.Public)
			s.rebind(t, f, ev, (&attest.RuntimeData{TPMAKDigest: hex.EncodeToString(sum[:])}).Encode())
		}, code: ear.CodeTPMAKNotBound},
		"runtime_data names no key":   {mutate: func(ev *attest.Evidence) { s.rebind(t, f, ev, []byte(`{"pub":"x"}`)) }, code: ear.CodeTPMAKNotBound},
		"no nonce, raw REPORT_DATA":   {opts: verifier.Options{ReportData: func() []byte { b := attest.ReportData(s.tdx.nonce, s.rd); return b[:] }()}, code: ear.CodeTPMAKNotBound},
		"another verifier nonce":      {opts: verifier.Options{Nonce: newNonce(t)}, code: ear.CodeTPMNonceMismatch},
		"the TD quote does not parse": {mutate: func(ev *attest.Evidence) { ev.Report[len(ev.Report)-1] ^= 1 }, code: ear.CodeTPMAKNotBound},
		// It parses and its REPORT_DATA binds the nonce and runtime_data, but its signature
		// fails: it vouches for nothing.
		"the TD quote's signature is broken": {mutate: func(ev *attest.Evidence) {
			l, err := fakeintel.ParseLayout(ev.Report)
			if err != nil {
				t.Fatal(err)
			}
			ev.Report[l.SignatureOffset+5] ^= 1
		}, code: ear.CodeTPMAKNotBound},
		"quote signed by another key": {mutate: func(ev *attest.Evidence) {
			ev.TPM.AKPublic = other.Public
			sum := sha256.Sum256(other.Public)
			ev.RuntimeData = (&attest.RuntimeData{TPMAKDigest: hex.EncodeToString(sum[:])}).Encode()
		}, code: ear.CodeTPMSignature},
		"a PCR value altered":         {mutate: func(ev *attest.Evidence) { ev.TPM.PCRs[3].Digest[0] ^= 1 }, code: ear.CodeTPMPCRDigest},
		"policy selects one more PCR": {policy: "tpm:\n  pcrs: [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10]\n", code: ear.CodeTPMPCRSelection},
		"no vTPM quote":               {mutate: func(ev *attest.Evidence) { ev.TPM = nil }, code: ear.CodeTPMMissing},
		"no TCG log":                  {mutate: func(ev *attest.Evidence) { ev.EventLogs = nil }, code: ear.CodeEventLogMissing},
		"kernel event digest changed": {mutate: func(ev *attest.Evidence) {
			ev.EventLogs.TCG[bytes.Index(ev.EventLogs.TCG, kernel)] ^= 1
		}, code: ear.CodeEventLogReplay},
		"policy pins another kernel":          {policy: strings.Replace(s.extra, ubuntuKernel[:8], "00000000", 1), code: ear.CodeEventLogEvent},
		"policy expects another command line": {policy: strings.Replace(s.extra, "panic=-1", "panic=0", 1), code: ear.CodeEventLogCmdline},
		"policy pins PCR 7":                   {policy: strings.Replace(s.extra, "pcr_values: {", "pcr_values: {7: ["+strings.Repeat("00", 32)+"], ", 1), code: ear.CodeTPMPCRValue},
		"closed PCR 9 lists only the kernel":  {policy: strings.Replace(s.extra, "    kernel_cmdlines:", "    closed_registers: [pcr9]\n    kernel_cmdlines:", 1), code: ear.CodeEventLogUnexpected},
		// A second, unlisted command line measured into PCR 8 after the good one, labelled as a
		// GRUB command so that no kernel_cmdline label reveals it: PCR 8 no longer has its value.
		"hidden second command line": {mutate: func(ev *attest.Evidence) {
			evil := []byte(ubuntuCmdline + " init=/bin/sh")
			for _, bank := range []struct {
				name string
				sum  []byte
			}{{"sha1", sum1(evil)}, {"sha256", sum256(evil)}, {"sha384", sum384(evil)}} {
				f.Extend(8, bank.name, bank.sum)
			}
			ev.EventLogs.TCG = append(ev.EventLogs.TCG, tcgEvent(8, 0x0D, evil, append([]byte("grub_cmd: "), evil...))...)
			s.rebind(t, f, ev, s.rd)
		}, code: ear.CodeTPMPCRValue},
		// The hardware report's collateral is missing: its authenticity is not established, so it
		// cannot vouch for the attestation key.
		"no collateral for the TD quote": {opts: verifier.Options{Collateral: collateral.Set{}}, code: ear.CodeTPMAKNotBound},
	} {
		t.Run(name, func(t *testing.T) {
			ev := s.evidence(t)
			if tc.mutate != nil {
				tc.mutate(ev)
			}
			saved := s.extra
			if tc.policy != "" {
				s.extra = tc.policy
				defer func() { s.extra = saved }()
			}
			r := s.verify(t, ev, tc.opts)
			if !r.HasFailure(tc.code) || r.Status != ear.StatusContraindicated {
				t.Fatalf("want %s, got %s", tc.code, describe(r))
			}
		})
	}
}

func sum1(b []byte) []byte   { d := sha1.Sum(b); return d[:] }
func sum256(b []byte) []byte { d := sha256.Sum256(b); return d[:] }
func sum384(b []byte) []byte { d := sha512.Sum384(b); return d[:] }

// tcgEvent encodes one crypto-agile TCG_PCR_EVENT2 (TCG PC Client PFP §10.2.2) with the three
// banks the Ubuntu log declares, each the digest of text, and the event data.
func tcgEvent(pcr, typ uint32, text, data []byte) []byte {
	le := binary.LittleEndian
	var b []byte
	b = le.AppendUint32(b, pcr)
	b = le.AppendUint32(b, typ)
	b = le.AppendUint32(b, 3)
	b = le.AppendUint16(b, 0x0004)
	b = append(b, sum1(text)...)
	b = le.AppendUint16(b, 0x000B)
	b = append(b, sum256(text)...)
	b = le.AppendUint16(b, 0x000C)
	b = append(b, sum384(text)...)
	b = le.AppendUint32(b, uint32(len(data)))
	return append(b, data...)
}

// The vTPM key is vouched for by the guest OS that wrote REPORT_DATA: without the hardware
// measurement of that OS pinned (RTMR1 and RTMR2), a bound quote cannot raise the result above
// warning.
func TestVTPMGuestAttested(t *testing.T) {
	f := faketpm.New(t)
	s := newVTPMScenario(t, f)
	pol := s.tdx.policyYAML()
	for _, reg := range []string{"rtmr1", "rtmr2"} {
		t.Run("without "+reg, func(t *testing.T) {
			// Drop the reference values of one RTMR from the policy.
			lines := strings.Split(pol, "\n")
			for i, l := range lines {
				if strings.HasPrefix(l, "  "+reg+":") {
					lines[i] = "  " + reg + ": []"
				}
			}
			p, err := policy.Parse([]byte(strings.Join(lines, "\n") + s.extra))
			if err != nil {
				t.Fatal(err)
			}
			rs, _ := s.tdx.pki.Collateral(s.tdx.coll)
			set := collateral.Set{}
			if err := set.Add(rs...); err != nil {
				t.Fatal(err)
			}
			r := verifier.Verify(context.Background(), s.evidence(t), verifier.Options{Policy: p, Roots: &roots.Set{Intel: []*x509.Certificate{s.tdx.pki.Root}}, Collateral: set, Now: testNow, Nonce: s.tdx.nonce})
			if r.Status != ear.StatusWarning || !r.HasWarning(ear.CodeTPMGuestAttested) || !r.Claims.(*ear.TDXClaims).TPM.AKBound {
				t.Fatalf("want warning with %s, got %s", ear.CodeTPMGuestAttested, describe(r))
			}
		})
	}
}
