package policy

import (
	"bytes"
	"strings"
	"testing"

	"github.com/proofline/proofline/verifier/ear"
)

var (
	hex32 = strings.Repeat("ab", 32)
	hex48 = strings.Repeat("cd", 48)
)

func TestParseMeasuredBootRejects(t *testing.T) {
	for name, y := range map[string]string{
		"tpm without pcrs":      "tpm: {}\n",
		"tpm sha1 bank":         "tpm: {pcr_bank: sha1, pcrs: [0]}\n",
		"tpm unknown bank":      "tpm: {pcr_bank: md5, pcrs: [0]}\n",
		"tpm pcr 24":            "tpm: {pcrs: [24]}\n",
		"tpm pcr twice":         "tpm: {pcrs: [1, 1]}\n",
		"pcr value unquoted":    "tpm:\n  pcrs: [0]\n  pcr_values: {7: [" + hex32 + "]}\n",
		"pcr value wrong size":  "tpm:\n  pcrs: [7]\n  pcr_values: {7: [" + hex48 + "]}\n",
		"tcg without tpm":       "measured_boot:\n  tcg:\n    kernel_cmdlines: [x]\n",
		"tcg register unquoted": "tpm: {pcrs: [0]}\nmeasured_boot:\n  tcg:\n    events: [{name: k, register: pcr9, digest: " + hex32 + "}]\n",
		"tcg register rtmr":     "tpm: {pcrs: [1]}\nmeasured_boot:\n  tcg:\n    events: [{name: k, register: rtmr1, digest: " + hex32 + "}]\n",
		"tcg register padded":   "tpm: {pcrs: [1]}\nmeasured_boot:\n  tcg:\n    events: [{name: k, register: pcr01, digest: " + hex32 + "}]\n",
		"tcg digest size":       "tpm: {pcrs: [9]}\nmeasured_boot:\n  tcg:\n    events: [{name: k, register: pcr9, digest: " + hex48 + "}]\n",
		"ccel register 4":       "measured_boot:\n  ccel:\n    events: [{name: k, register: rtmr4, digest: " + hex48 + "}]\n",
		"ccel digest size":      "measured_boot:\n  ccel:\n    events: [{name: k, register: rtmr1, digest: " + hex32 + "}]\n",
		"log section pins none": "measured_boot:\n  ccel: {}\n",
		"unknown measured key":  "measured_boot:\n  ima: {}\n",
		"unknown event key":     "measured_boot:\n  ccel:\n    events: [{name: k, register: rtmr1, digest: " + hex48 + ", type: EV_IPL}]\n",
	} {
		if _, err := Parse([]byte("id: x\ntdx: {}\n" + y)); err == nil {
			t.Errorf("%s: parsed, want an error", name)
		} else {
			t.Logf("%s: %v", name, err)
		}
	}
}

func TestAppraiseTPMAndMeasuredBoot(t *testing.T) {
	p, err := Parse([]byte("id: x\ntdx: {}\ntpm:\n  pcrs: [9, 0, 8, 7]\n  pcr_values: {7: [" + hex32 + "]}\n" +
		"measured_boot:\n  tcg:\n    events: [{name: kernel, register: pcr9, digest: " + hex32 + "}]\n    closed_registers: [pcr8]\n    kernel_cmdlines: [\"ro quiet\"]\n" +
		"  ccel:\n    events: [{name: kernel, register: rtmr1, digest: " + hex48 + "}]\n"))
	if err != nil {
		t.Fatal(err)
	}
	if got := p.TPM.PCRs; got[0] != 0 || got[1] != 7 || got[2] != 8 || got[3] != 9 || p.TPM.PCRBank != "sha256" {
		t.Fatalf("tpm section not normalised: %+v", p.TPM)
	}
	d32 := bytes.Repeat([]byte{0xab}, 32)
	d48 := bytes.Repeat([]byte{0xcd}, 48)

	res := &ear.Result{}
	p.AppraiseTPM(map[int][]byte{0: make([]byte, 32), 7: d32, 9: d32}, res)
	p.AppraiseMeasuredBoot("tcg", []MeasuredEvent{{"pcr0", d32}, {"pcr9", d32}}, []string{"ro quiet"}, res)
	p.AppraiseMeasuredBoot("ccel", []MeasuredEvent{{"rtmr1", d48}}, nil, res)
	if len(res.Failures) != 0 {
		t.Fatalf("valid values rejected: %+v", res.Failures)
	}

	for name, tc := range map[string]struct {
		run  func(*ear.Result)
		code ear.Code
	}{
		"pcr 7 altered": {func(r *ear.Result) { p.AppraiseTPM(map[int][]byte{7: make([]byte, 32)}, r) }, ear.CodeTPMPCRValue},
		"kernel digest in pcr8": {func(r *ear.Result) {
			p.AppraiseMeasuredBoot("tcg", []MeasuredEvent{{"pcr8", d32}}, []string{"ro quiet"}, r)
		}, ear.CodeEventLogEvent},
		"kernel digest altered": {func(r *ear.Result) {
			p.AppraiseMeasuredBoot("tcg", []MeasuredEvent{{"pcr9", d48[:32]}}, []string{"ro quiet"}, r)
		}, ear.CodeEventLogEvent},
		"other cmdline": {func(r *ear.Result) {
			p.AppraiseMeasuredBoot("tcg", []MeasuredEvent{{"pcr9", d32}}, []string{"ro quiet init=/bin/sh"}, r)
		}, ear.CodeEventLogCmdline},
		"a second cmdline": {func(r *ear.Result) {
			p.AppraiseMeasuredBoot("tcg", []MeasuredEvent{{"pcr9", d32}}, []string{"ro quiet", "single"}, r)
		}, ear.CodeEventLogCmdline},
		"no cmdline measured":       {func(r *ear.Result) { p.AppraiseMeasuredBoot("tcg", []MeasuredEvent{{"pcr9", d32}}, nil, r) }, ear.CodeEventLogCmdline},
		"ccel kernel in other rtmr": {func(r *ear.Result) { p.AppraiseMeasuredBoot("ccel", []MeasuredEvent{{"rtmr2", d48}}, nil, r) }, ear.CodeEventLogEvent},
		"unlisted event in closed pcr8": {func(r *ear.Result) {
			p.AppraiseMeasuredBoot("tcg", []MeasuredEvent{{"pcr9", d32}, {"pcr8", d32}}, []string{"ro quiet"}, r)
		}, ear.CodeEventLogUnexpected},
	} {
		r := &ear.Result{}
		tc.run(r)
		if !r.HasFailure(tc.code) {
			t.Errorf("%s: want %s, got %+v", name, tc.code, r.Failures)
		}
	}
}

func TestGuestOSPinned(t *testing.T) {
	for name, tc := range map[string]struct {
		yaml, platform string
		want           bool
	}{
		"tdx rtmr1+2 pinned":       {"tdx:\n  rtmr1: [" + hex48 + "]\n  rtmr2: [" + hex48 + "]\n", "tdx", true},
		"tdx rtmr2 only":           {"tdx:\n  rtmr2: [" + hex48 + "]\n", "tdx", false},
		"tdx closed in the ccel":   {"tdx: {}\nmeasured_boot:\n  ccel:\n    events: [{name: k, register: rtmr2, digest: " + hex48 + "}]\n    closed_registers: [rtmr1, rtmr2]\n", "tdx", true},
		"tdx nothing":              {"tdx: {}\n", "tdx", false},
		"snp measurement declared": {"sev_snp:\n  measurement: [" + hex48 + "]\n  measurement_covers_kernel: true\n", "sev-snp", true},
		"snp measurement only":     {"sev_snp:\n  measurement: [" + hex48 + "]\n", "sev-snp", false},
		"snp declared, not pinned": {"sev_snp:\n  measurement_covers_kernel: true\n", "sev-snp", false},
		"other platform's section": {"tdx:\n  rtmr1: [" + hex48 + "]\n  rtmr2: [" + hex48 + "]\n", "sev-snp", false},
	} {
		p, err := Parse([]byte("id: x\n" + tc.yaml))
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if got := p.GuestOSPinned(tc.platform); got != tc.want {
			t.Errorf("%s: GuestOSPinned = %v, want %v", name, got, tc.want)
		}
	}
}
