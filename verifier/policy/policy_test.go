package policy

import (
	"os"
	"regexp"
	"strings"
	"testing"
	"time"
)

func TestDefault(t *testing.T) {
	p := Default()
	if p.ID != "proofline-default" || p.TDX == nil || p.SNP == nil {
		t.Fatalf("default policy %+v", p)
	}
	if got := p.TDX.AcceptedTCBStatuses; len(got) != 1 || got[0] != "UpToDate" {
		t.Fatalf("default accepted statuses %v", got)
	}
	if p.TDX.AllowDebugUnsafe || p.TDX.AllowSeptVEUnsafe || p.TDX.SkipCollateralUnsafe || p.TDX.AllowMigratable ||
		p.SNP.AllowDebugUnsafe || p.SNP.SkipCollateralUnsafe || p.SNP.AllowMigrateMA || *p.SNP.VMPL != 0 || !*p.SNP.AllowSMT {
		t.Fatalf("default policy weakens a rule: %+v %+v", p.TDX, p.SNP)
	}
	if !strings.HasPrefix(p.Ref().Digest, "sha256:") {
		t.Fatalf("digest %q", p.Ref().Digest)
	}
}

// The complete example in README.md parses.
func TestREADMEExample(t *testing.T) {
	readme, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	blocks := regexp.MustCompile("(?s)```yaml\n(.*?)```").FindAllSubmatch(readme, -1)
	if len(blocks) != 2 {
		t.Fatalf("README.md has %d yaml examples, want 2 (measured boot, complete)", len(blocks))
	}
	mb, err := Parse(blocks[0][1])
	if err != nil {
		t.Fatal(err)
	}
	if len(mb.TPM.PCRs) != 10 || len(mb.MeasuredBoot.TCG.Events) != 1 || len(mb.MeasuredBoot.TCG.KernelCmdlines) != 1 || len(mb.MeasuredBoot.CCEL.Events) != 1 {
		t.Fatalf("measured-boot example parsed wrongly: %+v %+v", mb.TPM, mb.MeasuredBoot)
	}
	p, err := Parse(blocks[1][1])
	if err != nil {
		t.Fatal(err)
	}
	if len(p.TDX.RTMR1) != 2 || p.SNP.TCBFloors["Turin"].FMC != 1 || p.TDX.maxAge.Hours() != 720 {
		t.Fatalf("example parsed wrongly: %+v %+v", p.TDX, p.SNP)
	}
}

func TestParseRejects(t *testing.T) {
	for name, y := range map[string]string{
		"no id":               "tdx: {}\n",
		"no section":          "id: x\n",
		"unknown key":         "id: x\ntdx:\n  mrdt: []\n",
		"unknown section":     "id: x\nsgx: {}\n",
		"short mrtd":          "id: x\ntdx:\n  mrtd: [abcd]\n",
		"not hex":             "id: x\ntdx:\n  mrtd: [zz]\n",
		"revoked accepted":    "id: x\ntdx:\n  accepted_tcb_statuses: [UpToDate, Revoked]\n",
		"unknown status":      "id: x\ntdx:\n  accepted_tcb_statuses: [Fine]\n",
		"revoked QE":          "id: x\ntdx:\n  accepted_qe_tcb_statuses: [Revoked]\n",
		"bad attribute":       "id: x\ntdx:\n  allowed_attributes: [debug]\n",
		"bad xfam":            "id: x\ntdx:\n  xfam_allowed_mask: nope\n",
		"bad age":             "id: x\ntdx:\n  max_collateral_age: forever\n",
		"negative evaluation": "id: x\ntdx:\n  min_tcb_evaluation_data_number: -1\n",
		"vmpl 4":              "id: x\nsev_snp:\n  vmpl: 4\n",
		"bad abi":             "id: x\nsev_snp:\n  min_abi: one\n",
		"bad product line":    "id: x\nsev_snp:\n  tcb_floors: {Naples: {snp: 1}}\n",
		"short host data":     "id: x\nsev_snp:\n  host_data: [00]\n",
		"two documents":       "id: x\ntdx: {}\n---\nid: y\n",
		"not yaml":            "id: [\n",
		"tcb floor bad key":   "id: x\nsev_snp:\n  tcb_floors: {Milan: {spl: 1}}\n",
		"grace not duration":  "id: x\ntdx:\n  stale_grace_unsafe: a while\n",
		"grace negative":      "id: x\nsev_snp:\n  stale_grace_unsafe: -1h\n",
		"grace over a week":   "id: x\ntdx:\n  stale_grace_unsafe: 169h\n",
		"grace no unit":       "id: x\nsev_snp:\n  stale_grace_unsafe: 6\n",
	} {
		t.Run(name, func(t *testing.T) {
			if _, err := Parse([]byte(y)); err == nil {
				t.Fatal("accepted")
			} else if strings.Contains(err.Error(), "\n") {
				t.Fatalf("error is not one line: %q", err)
			}
		})
	}
}

// stale_grace_unsafe is per platform section, a duration, zero by default and at most a week.
func TestStaleGrace(t *testing.T) {
	if p := Default(); p.TDX.StaleGrace() != 0 || p.SNP.StaleGrace() != 0 {
		t.Fatalf("the default policy has a stale grace: %v %v", p.TDX.StaleGrace(), p.SNP.StaleGrace())
	}
	p, err := Parse([]byte("id: x\ntdx:\n  stale_grace_unsafe: 6h\nsev_snp:\n  stale_grace_unsafe: 0\n"))
	if err != nil {
		t.Fatal(err)
	}
	if p.TDX.StaleGrace() != 6*time.Hour || p.SNP.StaleGrace() != 0 {
		t.Fatalf("stale grace %v %v", p.TDX.StaleGrace(), p.SNP.StaleGrace())
	}
	if p, err = Parse([]byte("id: x\ntdx:\n  stale_grace_unsafe: 168h\n")); err != nil || p.TDX.StaleGrace() != MaxStaleGrace || p.SNP.StaleGrace() != 0 {
		t.Fatalf("a week: %v", err)
	}
}

func FuzzParse(f *testing.F) {
	f.Add([]byte("id: x\ntdx:\n  mrtd: [" + strings.Repeat("00", 48) + "]\n"))
	f.Add([]byte("id: x\nsev_snp:\n  tcb_floors: {Milan: {snp: 1}}\n  min_abi: \"1.2\"\n"))
	f.Add([]byte("id: &a x\nsev_snp: *a\n"))
	f.Add([]byte("id: x\ntdx: {}\ntpm:\n  pcrs: [8]\n  pcr_values: {8: [" + strings.Repeat("ab", 32) + "], 0x8: []}\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		p, err := Parse(data)
		if err != nil {
			return
		}
		if p.ID == "" || (p.TDX == nil && p.SNP == nil) || p.Ref().Digest == "" {
			t.Fatalf("accepted an invalid policy: %+v", p)
		}
		if p.TDX != nil {
			for _, s := range p.TDX.AcceptedTCBStatuses {
				if s == "Revoked" {
					t.Fatal("accepted Revoked")
				}
			}
		}
		if p.TPM != nil {
			for i, vals := range p.TPM.PCRValues {
				if len(vals) == 0 {
					t.Fatalf("accepted PCR %d in pcr_values with no allowed value", i)
				}
			}
		}
	})
}

// A PCR index spelt another way (+8, 08, 010, 0x8, 8.0 all decode to 8) must not replace an
// earlier entry and unpin the PCR: indices are decimal, each listed once.
func TestPCRValuesKeys(t *testing.T) {
	const head = "id: x\ntdx: {}\ntpm:\n  pcrs: [8, 9, 10]\n  pcr_values:\n"
	good := "[" + hex32 + "]"
	for name, entries := range map[string]string{
		"0x8 after 8":     "    8: " + good + "\n    0x8: " + good + "\n",
		"+8 after 8":      "    8: " + good + "\n    +8: " + good + "\n",
		"08 after 8":      "    8: " + good + "\n    08: " + good + "\n",
		"8 twice":         "    8: " + good + "\n    8: " + good + "\n",
		"tagged 8 twice":  "    8: " + good + "\n    !!int 8: " + good + "\n",
		"octal 010":       "    010: " + good + "\n",
		"hex 0x8":         "    0x8: " + good + "\n",
		"float 8.0":       "    8.0: " + good + "\n",
		"underscored 1_0": "    1_0: " + good + "\n",
		"quoted":          "    \"8\": " + good + "\n",
		"not a mapping":   "    - " + hex32 + "\n",
	} {
		t.Run(name, func(t *testing.T) {
			_, err := Parse([]byte(head + entries))
			if err == nil {
				t.Fatal("accepted")
			}
			if !strings.Contains(err.Error(), "pcr_values") || strings.Contains(err.Error(), "\n") {
				t.Fatalf("error %q does not name pcr_values on one line", err)
			}
		})
	}
	p, err := Parse([]byte(head + "    8: " + good + "\n    10: [" + hex32 + ", " + strings.Repeat("00", 32) + "]\n"))
	if err != nil {
		t.Fatal(err)
	}
	if len(p.TPM.PCRValues) != 2 || len(p.TPM.PCRValues[8]) != 1 || len(p.TPM.PCRValues[10]) != 2 {
		t.Fatalf("pcr_values parsed wrongly: %v", p.TPM.PCRValues)
	}
}

// A PCR listed in pcr_values needs at least one allowed value: an empty (or null) list would
// pin nothing.
func TestPCRValuesEmpty(t *testing.T) {
	for name, entries := range map[string]string{
		"[]":   "{8: []}",
		"null": "{8: }",
		"~":    "{9: [" + hex32 + "], 8: ~}",
	} {
		t.Run(name, func(t *testing.T) {
			if _, err := Parse([]byte("id: x\ntdx: {}\ntpm:\n  pcrs: [8, 9]\n  pcr_values: " + entries + "\n")); err == nil {
				t.Fatal("accepted")
			} else if !strings.Contains(err.Error(), "PCR 8 lists no allowed value") {
				t.Fatalf("error %q does not name PCR 8", err)
			}
		})
	}
}

// Whatever follows the first document is refused, even when it does not parse: the digest covers
// the whole file.
func TestParseTrailingDocument(t *testing.T) {
	for name, y := range map[string]string{
		"second policy":       "id: x\ntdx: {}\n---\nid: y\ntdx: {}\n",
		"malformed second":    "id: x\ntdx: {}\n---\n[unclosed\n",
		"malformed mapping":   "id: x\ntdx: {}\n---\nmrtd: [\n  - a\n",
		"empty second":        "id: x\ntdx: {}\n---\n",
		"second after ending": "id: x\ntdx: {}\n...\n--- [\n",
	} {
		t.Run(name, func(t *testing.T) {
			if _, err := Parse([]byte(y)); err == nil {
				t.Fatal("accepted")
			} else if strings.Contains(err.Error(), "\n") {
				t.Fatalf("error is not one line: %q", err)
			}
		})
	}
	if _, err := Parse([]byte("id: x\ntdx: {}\n...\n")); err != nil {
		t.Fatalf("a document end marker alone: %v", err)
	}
}
