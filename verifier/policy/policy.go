// Package policy is appraisal: it decides whether the claims that the authenticity checks
// established (measurements, attributes, TCB levels and statuses) are acceptable, using reference
// values and rules from a YAML policy. It never decides whether evidence is genuine; that is the
// job of verifier/tdx and verifier/snp.
//
// The policy format is documented in README.md, with a complete example; default.yaml is the
// policy applied when none is given.
package policy

import (
	"bytes"
	"crypto/sha256"
	_ "embed"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/proofline/proofline/verifier/ear"
	"github.com/proofline/proofline/verifier/tdx"
)

//go:embed default.yaml
var defaultYAML []byte

// MaxSize bounds a policy file.
const MaxSize = 1 << 20

// Policy is an appraisal policy. Build it with Parse, Load or Default: they apply defaults and
// validate, so every field below holds a usable value.
type Policy struct {
	// ID names the policy in results and evidence records. Required.
	ID string `yaml:"id"`
	// Description is free text for operators and auditors.
	Description string `yaml:"description,omitempty"`
	// TDX holds the rules for Intel TDX evidence; nil rejects TDX evidence.
	TDX *TDX `yaml:"tdx"`
	// SNP holds the rules for AMD SEV-SNP evidence; nil rejects SEV-SNP evidence.
	SNP *SNP `yaml:"sev_snp"`
	// TPM requires a vTPM quote over an exact PCR selection; nil leaves a quote in the evidence
	// unappraised (tpm_not_evaluated).
	TPM *TPM `yaml:"tpm"`
	// MeasuredBoot appraises the replayed event logs; nil appraises no event.
	MeasuredBoot *MeasuredBoot `yaml:"measured_boot"`

	digest string
}

// TDX is the policy for Intel TDX quotes (VERIFIER-CHECKS "Intel TDX quote" 5–7).
type TDX struct {
	// Reference values: each list holds every allowed value (fleets roll images); an empty list
	// pins nothing. Values are lower- or upper-case hex of the field's exact size (48 bytes).
	MRTD          []Hex `yaml:"mrtd"`
	RTMR0         []Hex `yaml:"rtmr0"`
	RTMR1         []Hex `yaml:"rtmr1"`
	RTMR2         []Hex `yaml:"rtmr2"`
	RTMR3         []Hex `yaml:"rtmr3"`
	MRConfigID    []Hex `yaml:"mr_config_id"`
	MROwner       []Hex `yaml:"mr_owner"`
	MROwnerConfig []Hex `yaml:"mr_owner_config"`
	MRSeam        []Hex `yaml:"mr_seam"`
	// MRServiceTD lists allowed MRSERVICETD values (TDX 1.5 quotes). Default: only all-zero.
	MRServiceTD []Hex `yaml:"mr_service_td"`

	// AllowMigratable permits TDs with the MIGRATABLE attribute. Default false.
	AllowMigratable bool `yaml:"allow_migratable"`
	// AllowedAttributes names the TD_ATTRIBUTES feature bits a TD may set besides DEBUG,
	// MIGRATABLE and SEPT_VE_DISABLE: any of "lass", "pks", "kl", "perfmon". Default: all four.
	// Bits without a defined meaning are always rejected.
	AllowedAttributes []string `yaml:"allowed_attributes"`
	// XFAMAllowedMask is the set of XFAM bits a TD may enable, as hex. Default 0x6dbe7 (every
	// bit the TDX module can allow). The x87 and SSE bits are always required.
	XFAMAllowedMask string `yaml:"xfam_allowed_mask"`

	// AcceptedTCBStatuses lists the platform TCB statuses accepted. Default [UpToDate].
	// "Revoked" is never accepted and is refused at load time.
	AcceptedTCBStatuses []string `yaml:"accepted_tcb_statuses"`
	// AcceptedQETCBStatuses lists the QE identity TCB statuses accepted. Default [UpToDate].
	AcceptedQETCBStatuses []string `yaml:"accepted_qe_tcb_statuses"`
	// MinTCBEvaluationDataNumber rejects TCB info older than this Intel TCB recovery. Default 0.
	MinTCBEvaluationDataNumber int `yaml:"min_tcb_evaluation_data_number"`
	// MaxCollateralAge rejects TCB info and QE identity issued longer ago than this (a Go
	// duration such as "720h"). Default: no limit other than their nextUpdate.
	MaxCollateralAge string `yaml:"max_collateral_age"`

	// AllowDebugUnsafe accepts TDs with the DEBUG attribute. Caps the result at warning.
	AllowDebugUnsafe bool `yaml:"allow_debug_unsafe"`
	// AllowSeptVEUnsafe accepts TDs without SEPT_VE_DISABLE. Caps the result at warning.
	AllowSeptVEUnsafe bool `yaml:"allow_sept_ve_unsafe"`
	// SkipCollateralUnsafe skips TCB info, QE identity and CRL checks (the PCK chain and the
	// signatures are still checked). Caps the result at warning.
	SkipCollateralUnsafe bool `yaml:"skip_collateral_unsafe"`
	// StaleGraceUnsafe accepts a PCK or Root CA CRL, TCB info or QE identity up to this long past
	// its nextUpdate (a Go duration such as "6h", at most MaxStaleGrace), for riding out a vendor
	// outage. Default "0": none. Using it adds collateral_stale_accepted and unsafe_option, which
	// cap the result at warning.
	StaleGraceUnsafe string `yaml:"stale_grace_unsafe"`
	// TCBRecoveryGraceUnsafe accepts a platform or QE TCB level that is OutOfDate only because
	// of an Intel TCB recovery whose new TCB levels are dated less than this long ago (a Go
	// duration such as "720h", at most MaxTCBRecoveryGrace), as the status it had before the
	// recovery (tdx.GracedStatus), which must be accepted. The exact rule is in verifier/tdx
	// (tcb.go). Default "0": none. Using it adds tcb_recovery_grace and unsafe_option, which cap
	// the result at warning.
	TCBRecoveryGraceUnsafe string `yaml:"tcb_recovery_grace_unsafe"`

	xfamMask      uint64
	allowAttrs    tdx.TDAttributes
	maxAge        time.Duration
	staleGrace    time.Duration
	recoveryGrace time.Duration
}

// TCBRecoveryGrace returns the parsed tcb_recovery_grace_unsafe; 0 (none) for a nil section.
func (t *TDX) TCBRecoveryGrace() time.Duration {
	if t == nil {
		return 0
	}
	return t.recoveryGrace
}

// MaxTCBRecoveryGrace bounds tcb_recovery_grace_unsafe: a fleet still unpatched this long after a
// TCB recovery is out of date, not in transition.
const MaxTCBRecoveryGrace = 90 * 24 * time.Hour

// StaleGrace returns the parsed stale_grace_unsafe; 0 (none) for a nil section.
func (t *TDX) StaleGrace() time.Duration {
	if t == nil {
		return 0
	}
	return t.staleGrace
}

// SNP is the policy for AMD SEV-SNP reports (VERIFIER-CHECKS "AMD SEV-SNP report" 5–10).
type SNP struct {
	// Reference values, each a list of allowed hex values of the field's exact size.
	Measurement     []Hex `yaml:"measurement"`       // 48 bytes
	HostData        []Hex `yaml:"host_data"`         // 32 bytes
	IDKeyDigest     []Hex `yaml:"id_key_digest"`     // 48 bytes
	AuthorKeyDigest []Hex `yaml:"author_key_digest"` // 48 bytes
	FamilyID        []Hex `yaml:"family_id"`         // 16 bytes
	ImageID         []Hex `yaml:"image_id"`          // 16 bytes
	// MinGuestSVN rejects reports with a lower GUEST_SVN. Default 0.
	MinGuestSVN uint32 `yaml:"min_guest_svn"`

	// VMPL is the VM privilege level the report must come from. Default 0.
	VMPL *uint32 `yaml:"vmpl"`
	// AllowMigrateMA permits a migration agent. Default false.
	AllowMigrateMA bool `yaml:"allow_migrate_ma"`
	// AllowSMT permits guest policies that allow SMT, and platforms with SMT enabled. Default true.
	AllowSMT *bool `yaml:"allow_smt"`
	// RequireTSME requires PLATFORM_INFO.TSME_EN. Default false.
	RequireTSME bool `yaml:"require_tsme"`
	// MinABI is the lowest guest-policy ABI version accepted, "major.minor". Default "0.0".
	MinABI string `yaml:"min_abi"`
	// TCBFloors sets, per product line (Milan, Genoa, Turin), the lowest REPORTED_TCB accepted.
	TCBFloors map[string]TCBFloor `yaml:"tcb_floors"`
	// RequireCommittedTCB requires COMMITTED_TCB to equal CURRENT_TCB (no pending rollback).
	RequireCommittedTCB bool `yaml:"require_committed_tcb"`

	// MeasurementCoversKernel says that the launch MEASUREMENT covers the guest kernel, initrd
	// and command line (measured direct boot, or an IGVM image with their hashes), so pinning
	// measurement pins the OS that writes REPORT_DATA and can vouch for a vTPM key. Default false.
	MeasurementCoversKernel bool `yaml:"measurement_covers_kernel"`

	// AllowDebugUnsafe accepts guests whose policy allows DEBUG. Caps the result at warning.
	AllowDebugUnsafe bool `yaml:"allow_debug_unsafe"`
	// SkipCollateralUnsafe skips the AMD CRL checks. Caps the result at warning.
	SkipCollateralUnsafe bool `yaml:"skip_collateral_unsafe"`
	// StaleGraceUnsafe accepts the AMD CRL up to this long past its nextUpdate (a Go duration
	// such as "6h", at most MaxStaleGrace). Default "0": none. Using it adds
	// collateral_stale_accepted and unsafe_option, which cap the result at warning.
	StaleGraceUnsafe string `yaml:"stale_grace_unsafe"`

	minABI     [2]uint8
	staleGrace time.Duration
}

// StaleGrace returns the parsed stale_grace_unsafe; 0 (none) for a nil section.
func (s *SNP) StaleGrace() time.Duration {
	if s == nil {
		return 0
	}
	return s.staleGrace
}

// MaxStaleGrace bounds stale_grace_unsafe: a vendor outage longer than this calls for collateral
// imported from elsewhere, not for trusting revocation lists and TCB statuses a week out of date.
const MaxStaleGrace = 7 * 24 * time.Hour

// parseStaleGrace reads a stale_grace_unsafe value.
func parseStaleGrace(v string) (time.Duration, error) {
	if v == "" {
		return 0, nil
	}
	d, err := time.ParseDuration(v)
	if err != nil || d < 0 {
		return 0, fmt.Errorf("stale_grace_unsafe %q is not a duration such as \"6h\" (or 0 for none)", v)
	}
	if d > MaxStaleGrace {
		return 0, fmt.Errorf("stale_grace_unsafe %s is more than %s: import fresh collateral instead of accepting collateral that stale", v, MaxStaleGrace)
	}
	return d, nil
}

// TPM is the policy for vTPM quotes (VERIFIER-CHECKS "vTPM quote" 3).
type TPM struct {
	// PCRBank is the PCR bank the quote must cover: sha1 is refused; default sha256.
	PCRBank string `yaml:"pcr_bank"`
	// PCRs is the exact PCR selection the quote must cover, no more and no fewer. Required.
	PCRs []int `yaml:"pcrs"`
	// PCRValues pins whole PCRs: for each index (which must be in PCRs), the allowed values, at
	// least one.
	PCRValues PCRValues `yaml:"pcr_values"`
}

// PCRValues maps PCR indices to their allowed whole values.
type PCRValues map[int][]Hex

// UnmarshalYAML implements yaml.Unmarshaler. yaml.v3 finds duplicate keys by their text, but 8,
// +8, 08, 010, 0x8 and 8.0 all decode to the integer 8, and the later entry would silently
// replace the earlier one (unpinning the PCR with `8: [<good>], 0x8: []`). So each index must be
// written in decimal, and listed once.
func (v *PCRValues) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.MappingNode {
		return fmt.Errorf("line %d: pcr_values must map PCR indices to lists of allowed values, e.g. {8: [<hex>]}", n.Line)
	}
	out := make(PCRValues, len(n.Content)/2)
	lines := map[int]int{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, val := n.Content[i], n.Content[i+1]
		var idx int
		if err := k.Decode(&idx); err != nil || k.Kind != yaml.ScalarNode || k.Value != strconv.Itoa(idx) {
			return fmt.Errorf("line %d: pcr_values: key %q is not a PCR index: write each index as an unquoted decimal number, such as 8", k.Line, k.Value)
		}
		if first, dup := lines[idx]; dup {
			return fmt.Errorf("line %d: pcr_values: PCR %d is already listed at line %d: give all its allowed values in one list", k.Line, idx, first)
		}
		lines[idx] = k.Line
		var vals []Hex
		if err := val.Decode(&vals); err != nil {
			return err
		}
		out[idx] = vals
	}
	*v = out
	return nil
}

// MeasuredBoot appraises the events of the replayed measured-boot logs. Each present section
// requires its log in the evidence.
type MeasuredBoot struct {
	// TCG appraises the TCG PC Client log of the vTPM PCRs; it requires the tpm section.
	TCG *LogRules `yaml:"tcg"`
	// CCEL appraises the TDX CCEL of RTMR0–3.
	CCEL *LogRules `yaml:"ccel"`
}

// LogRules are the rules for one replayed event log. Rules use what the replay proves — the
// register an event was extended into and its digest, and event data only where the digest
// covers it — never the event type, which no digest covers.
type LogRules struct {
	// Events must each appear in the replayed log: an event extended into Register with Digest.
	Events []PinnedEvent `yaml:"events"`
	// ClosedRegisters lists registers whose every event must be one of Events (by digest): an
	// event the policy does not list — another kernel, a second command line, anything the OS
	// extended after boot — is rejected. A pinned event only proves that something was measured;
	// a closed register also proves that nothing else was.
	ClosedRegisters []string `yaml:"closed_registers"`
	// KernelCmdlines, when non-empty, lists the accepted kernel command lines: every command line
	// measured in the log must be one of them, and at least one must be measured. GRUB's
	// "kernel_cmdline: " label is not covered by the event digest, so the register GRUB measures
	// command lines into (pcr8, rtmr2) must be closed or pinned as a whole value too.
	KernelCmdlines []string `yaml:"kernel_cmdlines"`
}

// PinnedEvent is one event a policy requires.
type PinnedEvent struct {
	// Name says what the event is (kernel, initrd, shim…) in results; free text.
	Name string `yaml:"name"`
	// Register is "pcr0"–"pcr23" in the tcg section, "rtmr0"–"rtmr3" in the ccel section.
	Register string `yaml:"register"`
	// Digest is the event digest in the log's bank (tcg: the tpm pcr_bank; ccel: SHA-384).
	Digest Hex `yaml:"digest"`
}

// TCBFloor is the lowest acceptable SPL per component.
type TCBFloor struct {
	FMC        uint8 `yaml:"fmc"`
	Bootloader uint8 `yaml:"bootloader"`
	TEE        uint8 `yaml:"tee"`
	SNP        uint8 `yaml:"snp"`
	Microcode  uint8 `yaml:"microcode"`
}

// Hex is a byte string written as hex in the policy.
type Hex []byte

// UnmarshalYAML implements yaml.Unmarshaler.
func (h *Hex) UnmarshalYAML(n *yaml.Node) error {
	var s string
	if err := n.Decode(&s); err != nil {
		return err
	}
	b, err := hex.DecodeString(strings.TrimPrefix(strings.TrimSpace(s), "0x"))
	if err != nil {
		return fmt.Errorf("line %d: %q is not hex", n.Line, s)
	}
	*h = b
	return nil
}

// Default returns the policy applied when none is given: every security rule at its default,
// no reference values (so the best result is warning with no_reference_values).
func Default() *Policy {
	p, err := Parse(defaultYAML)
	if err != nil {
		// default.yaml is embedded and covered by tests; it cannot fail to parse.
		panic("embedded default policy: " + err.Error())
	}
	return p
}

// Load reads and parses a policy file.
func Load(path string) (*Policy, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	return Parse(data)
}

// Parse parses a YAML policy strictly (unknown keys are errors), applies defaults and validates.
// Its digest is the SHA-256 of the exact bytes given.
func Parse(data []byte) (*Policy, error) {
	if len(data) > MaxSize {
		return nil, fmt.Errorf("policy is %d bytes, over the %d-byte limit", len(data), MaxSize)
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	var p Policy
	if err := dec.Decode(&p); err != nil {
		return nil, fmt.Errorf("policy: %s", yamlMessage(err))
	}
	// Anything after the first document, even a malformed one, is refused: the digest covers the
	// whole file, so the file must be exactly the policy that is applied.
	var extra yaml.Node
	switch err := dec.Decode(&extra); {
	case err == nil:
		return nil, errors.New("policy: the file holds more than one YAML document; keep only the policy")
	case !errors.Is(err, io.EOF):
		return nil, fmt.Errorf("policy: after the first YAML document: %s; keep only the policy", yamlMessage(err))
	}
	if err := p.validate(); err != nil {
		return nil, fmt.Errorf("policy %q: %w", p.ID, err)
	}
	sum := sha256.Sum256(data)
	p.digest = "sha256:" + hex.EncodeToString(sum[:])
	return &p, nil
}

// sections maps the Go types of the policy to the YAML section names operators see.
var sections = strings.NewReplacer("type policy.TDX", "section tdx", "type policy.SNP", "section sev_snp",
	"type policy.Policy", "top level", "type policy.TCBFloor", "a tcb_floors entry",
	"type policy.TPM", "section tpm", "type policy.MeasuredBoot", "section measured_boot",
	"type policy.LogRules", "a measured_boot log section", "type policy.PinnedEvent", "a measured_boot event")

// yamlMessage turns a YAML decoding error into one line that names keys as the operator wrote
// them, e.g. `line 3: unknown key "mrdt" in section tdx`.
func yamlMessage(err error) string {
	var te *yaml.TypeError
	if !errors.As(err, &te) {
		return err.Error()
	}
	msgs := make([]string, len(te.Errors))
	for i, m := range te.Errors {
		m = strings.Replace(m, "field ", "unknown key \"", 1)
		m = strings.Replace(m, " not found in ", "\" in ", 1)
		msgs[i] = sections.Replace(m)
	}
	return strings.Join(msgs, "; ")
}

// Ref names the policy in results.
func (p *Policy) Ref() ear.PolicyRef { return ear.PolicyRef{ID: p.ID, Digest: p.digest} }

func (p *Policy) validate() error {
	if strings.TrimSpace(p.ID) == "" {
		return errors.New("id is required")
	}
	if p.TDX == nil && p.SNP == nil {
		return errors.New("the policy has neither a tdx nor a sev_snp section")
	}
	if p.TDX != nil {
		if err := p.TDX.validate(); err != nil {
			return fmt.Errorf("tdx: %w", err)
		}
	}
	if p.SNP != nil {
		if err := p.SNP.validate(); err != nil {
			return fmt.Errorf("sev_snp: %w", err)
		}
	}
	if p.TPM != nil {
		if err := p.TPM.validate(); err != nil {
			return fmt.Errorf("tpm: %w", err)
		}
	}
	if p.MeasuredBoot != nil {
		if err := p.MeasuredBoot.validate(p.TPM, p.TDX); err != nil {
			return fmt.Errorf("measured_boot: %w", err)
		}
	}
	return nil
}

// PCRBankSizes are the digest sizes of the PCR banks a policy may name.
var PCRBankSizes = map[string]int{"sha256": 32, "sha384": 48, "sha512": 64}

func (t *TPM) validate() error {
	if t.PCRBank == "" {
		t.PCRBank = "sha256"
	}
	size, ok := PCRBankSizes[t.PCRBank]
	if !ok {
		return fmt.Errorf("pcr_bank %q is not one of sha256, sha384, sha512 (SHA-1 PCRs are not collision resistant)", t.PCRBank)
	}
	if len(t.PCRs) == 0 {
		return errors.New("pcrs is required: list the PCR indices the quote must cover, e.g. [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]")
	}
	seen := map[int]bool{}
	for _, i := range t.PCRs {
		if i < 0 || i > 23 {
			return fmt.Errorf("pcrs: %d is not a PCR index (0–23)", i)
		}
		if seen[i] {
			return fmt.Errorf("pcrs: %d is listed twice", i)
		}
		seen[i] = true
	}
	slices.Sort(t.PCRs)
	for _, i := range slices.Sorted(maps.Keys(t.PCRValues)) {
		vals := t.PCRValues[i]
		if !seen[i] {
			return fmt.Errorf("pcr_values: PCR %d is not in pcrs, so the quote would not cover it", i)
		}
		if len(vals) == 0 {
			return fmt.Errorf("pcr_values: PCR %d lists no allowed value, which would pin nothing: list at least one, or remove PCR %d from pcr_values", i, i)
		}
		if err := checkSizes(fmt.Sprintf("pcr_values %d", i), vals, size); err != nil {
			return err
		}
	}
	return nil
}

func (m *MeasuredBoot) validate(t *TPM, tdx *TDX) error {
	if m.TCG != nil {
		if t == nil {
			return errors.New("tcg: the TCG log replays against vTPM PCRs, so it needs a tpm section")
		}
		if t.PCRBank == "sha512" {
			return errors.New("tcg: TCG event logs carry SHA-1, SHA-256 and SHA-384 digests; set tpm.pcr_bank to sha256 or sha384")
		}
		if err := m.TCG.validate("tcg", "pcr", t.PCRs, PCRBankSizes[t.PCRBank]); err != nil {
			return err
		}
		if len(m.TCG.KernelCmdlines) > 0 && !slices.Contains(m.TCG.ClosedRegisters, "pcr8") && len(t.PCRValues[8]) == 0 {
			return errors.New("tcg: kernel_cmdlines needs pcr8 in closed_registers or pinned in tpm.pcr_values: GRUB's command-line label is not covered by the event digest, so without that a log can hide a second command line")
		}
	}
	if m.CCEL != nil {
		if err := m.CCEL.validate("ccel", "rtmr", []int{0, 1, 2, 3}, 48); err != nil {
			return err
		}
		if len(m.CCEL.KernelCmdlines) > 0 && !slices.Contains(m.CCEL.ClosedRegisters, "rtmr2") && (tdx == nil || len(tdx.RTMR2) == 0) {
			return errors.New("ccel: kernel_cmdlines needs rtmr2 in closed_registers or pinned in tdx.rtmr2: GRUB's command-line label is not covered by the event digest, so without that a log can hide a second command line")
		}
	}
	return nil
}

func (l *LogRules) validate(section, prefix string, registers []int, size int) error {
	for i, e := range l.Events {
		if !validRegister(e.Register, prefix, registers) {
			hint := ""
			if section == "tcg" {
				hint = " (a tcg event's PCR must be in tpm.pcrs, so that the quote covers it)"
			}
			return fmt.Errorf("%s: event %d (%s): register %q is not one of %s%v%s", section, i, e.Name, e.Register, prefix, registers, hint)
		}
		if len(e.Digest) != size {
			return fmt.Errorf("%s: event %d (%s): digest is %d bytes, want %d", section, i, e.Name, len(e.Digest), size)
		}
	}
	for _, r := range l.ClosedRegisters {
		if !validRegister(r, prefix, registers) {
			return fmt.Errorf("%s: closed_registers: %q is not one of %s%v", section, r, prefix, registers)
		}
	}
	if len(l.Events) == 0 && len(l.KernelCmdlines) == 0 {
		return fmt.Errorf("%s: pins nothing: list events or kernel_cmdlines, or remove the section", section)
	}
	return nil
}

// validRegister reports whether reg is prefix followed by one of registers in canonical decimal
// ("pcr9", not "pcr09").
func validRegister(reg, prefix string, registers []int) bool {
	n, err := strconv.Atoi(strings.TrimPrefix(reg, prefix))
	return strings.HasPrefix(reg, prefix) && err == nil && slices.Contains(registers, n) && reg == fmt.Sprintf("%s%d", prefix, n)
}

// GuestOSPinned reports whether the policy pins, through the hardware measurement, the guest
// OS that writes REPORT_DATA for the platform ("tdx" or "sev-snp"): only then does REPORT_DATA
// vouch for a vTPM attestation key named in runtime_data. For TDX, RTMR1 and RTMR2 (bootloader,
// kernel, command line) must be pinned as whole values or closed in measured_boot.ccel; for
// SEV-SNP, the launch measurement must be pinned and declared to cover the kernel.
func (p *Policy) GuestOSPinned(platform string) bool {
	switch platform {
	case "tdx":
		if p.TDX == nil {
			return false
		}
		var closed []string
		if p.MeasuredBoot != nil && p.MeasuredBoot.CCEL != nil {
			closed = p.MeasuredBoot.CCEL.ClosedRegisters
		}
		pinned := func(vals []Hex, reg string) bool { return len(vals) > 0 || slices.Contains(closed, reg) }
		return pinned(p.TDX.RTMR1, "rtmr1") && pinned(p.TDX.RTMR2, "rtmr2")
	case "sev-snp":
		return p.SNP != nil && p.SNP.MeasurementCoversKernel && len(p.SNP.Measurement) > 0
	}
	return false
}

func checkSizes(name string, vals []Hex, size int) error {
	for _, v := range vals {
		if len(v) != size {
			return fmt.Errorf("%s value %x is %d bytes, want %d", name, []byte(v), len(v), size)
		}
	}
	return nil
}

var tdxFeatureBits = map[string]tdx.TDAttributes{
	"lass": tdx.AttrLASS, "pks": tdx.AttrPKS, "kl": tdx.AttrKL, "perfmon": tdx.AttrPerfmon,
}

func (t *TDX) validate() error {
	for name, vals := range map[string][]Hex{
		"mrtd": t.MRTD, "rtmr0": t.RTMR0, "rtmr1": t.RTMR1, "rtmr2": t.RTMR2, "rtmr3": t.RTMR3,
		"mr_config_id": t.MRConfigID, "mr_owner": t.MROwner, "mr_owner_config": t.MROwnerConfig,
		"mr_seam": t.MRSeam, "mr_service_td": t.MRServiceTD,
	} {
		if err := checkSizes(name, vals, 48); err != nil {
			return err
		}
	}
	if t.AllowedAttributes == nil {
		t.AllowedAttributes = []string{"lass", "pks", "kl", "perfmon"}
	}
	for _, a := range t.AllowedAttributes {
		bit, ok := tdxFeatureBits[a]
		if !ok {
			return fmt.Errorf("allowed_attributes: %q is not one of lass, pks, kl, perfmon (DEBUG, MIGRATABLE and SEPT_VE_DISABLE have their own options)", a)
		}
		t.allowAttrs |= bit
	}
	if t.XFAMAllowedMask == "" {
		t.XFAMAllowedMask = fmt.Sprintf("0x%x", tdx.XFAMFixed0)
	}
	m, err := strconv.ParseUint(strings.TrimPrefix(t.XFAMAllowedMask, "0x"), 16, 64)
	if err != nil {
		return fmt.Errorf("xfam_allowed_mask %q is not a hex number", t.XFAMAllowedMask)
	}
	t.xfamMask = m
	if t.AcceptedTCBStatuses == nil {
		t.AcceptedTCBStatuses = []string{tdx.StatusUpToDate}
	}
	if t.AcceptedQETCBStatuses == nil {
		t.AcceptedQETCBStatuses = []string{tdx.StatusUpToDate}
	}
	for _, list := range [][]string{t.AcceptedTCBStatuses, t.AcceptedQETCBStatuses} {
		for _, s := range list {
			if s == tdx.StatusRevoked {
				return errors.New("a Revoked TCB is never accepted: remove it from the accepted statuses")
			}
			if !slices.Contains(tdx.KnownStatuses, s) {
				return fmt.Errorf("TCB status %q is not one Intel defines (%s)", s, strings.Join(tdx.KnownStatuses, ", "))
			}
		}
	}
	if t.MinTCBEvaluationDataNumber < 0 {
		return errors.New("min_tcb_evaluation_data_number is negative")
	}
	if t.MaxCollateralAge != "" {
		d, err := time.ParseDuration(t.MaxCollateralAge)
		if err != nil || d <= 0 {
			return fmt.Errorf("max_collateral_age %q is not a positive duration such as \"720h\"", t.MaxCollateralAge)
		}
		t.maxAge = d
	}
	g, err := parseStaleGrace(t.StaleGraceUnsafe)
	if err != nil {
		return err
	}
	t.staleGrace = g
	if v := t.TCBRecoveryGraceUnsafe; v != "" {
		d, err := time.ParseDuration(v)
		switch {
		case err != nil || d < 0:
			return fmt.Errorf("tcb_recovery_grace_unsafe %q is not a duration such as \"720h\" (or 0 for none)", v)
		case d > MaxTCBRecoveryGrace:
			return fmt.Errorf("tcb_recovery_grace_unsafe %s is more than %s: update the platforms, or accept OutOfDate explicitly in accepted_tcb_statuses", v, MaxTCBRecoveryGrace)
		}
		t.recoveryGrace = d
	}
	return nil
}

func (s *SNP) validate() error {
	for _, c := range []struct {
		name string
		vals []Hex
		size int
	}{
		{"measurement", s.Measurement, 48}, {"host_data", s.HostData, 32}, {"id_key_digest", s.IDKeyDigest, 48},
		{"author_key_digest", s.AuthorKeyDigest, 48}, {"family_id", s.FamilyID, 16}, {"image_id", s.ImageID, 16},
	} {
		if err := checkSizes(c.name, c.vals, c.size); err != nil {
			return err
		}
	}
	if s.VMPL == nil {
		s.VMPL = new(uint32)
	}
	if *s.VMPL > 3 {
		return fmt.Errorf("vmpl %d is not 0–3", *s.VMPL)
	}
	if s.AllowSMT == nil {
		t := true
		s.AllowSMT = &t
	}
	if s.MinABI == "" {
		s.MinABI = "0.0"
	}
	major, minor, ok := strings.Cut(s.MinABI, ".")
	ma, err1 := strconv.ParseUint(major, 10, 8)
	mi, err2 := strconv.ParseUint(minor, 10, 8)
	if !ok || err1 != nil || err2 != nil {
		return fmt.Errorf("min_abi %q is not \"major.minor\"", s.MinABI)
	}
	s.minABI = [2]uint8{uint8(ma), uint8(mi)}
	for line, f := range s.TCBFloors {
		if line != "Milan" && line != "Genoa" && line != "Turin" {
			return fmt.Errorf("tcb_floors: %q is not a product line (Milan, Genoa, Turin)", line)
		}
		if f.FMC != 0 && line != "Turin" {
			return fmt.Errorf("tcb_floors: %s has no FMC component (only Turin does)", line)
		}
	}
	g, err := parseStaleGrace(s.StaleGraceUnsafe)
	if err != nil {
		return err
	}
	s.staleGrace = g
	return nil
}
