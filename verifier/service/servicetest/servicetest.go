// Package servicetest gives tests, `proofline demo` and `proofline serve --test-mode` simulated
// confidential VMs: an Intel TDX platform and an AMD SEV-SNP platform (Genoa, VCEK) signing with
// the project's fake vendor PKIs (attest/attesttest/fakeintel, fakeamd), their recorded
// collateral, the test roots that trust them, and a policy that pins their measurements, so that
// the evidence they produce for a verifier nonce is affirming.
//
// Everything here is test material: the roots it returns are marked Test, and every result a
// verifier produces with them says test_roots: true. Never use it to appraise real evidence.
package servicetest

import (
	"crypto/x509"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/google/go-sev-guest/abi"

	"github.com/proofline/proofline/attest"
	"github.com/proofline/proofline/attest/attesttest/fakeamd"
	"github.com/proofline/proofline/attest/attesttest/fakeintel"
	"github.com/proofline/proofline/verifier/collateral"
	"github.com/proofline/proofline/verifier/roots"
	"github.com/proofline/proofline/verifier/snp"
)

// AMDProductLine is the product line of the simulated SEV-SNP platform.
const AMDProductLine = "Genoa"

// Fault is something wrong with the evidence a simulated VM produces.
type Fault string

// Faults, each of which makes a verifier contraindicate the evidence with the code named.
const (
	// FaultNone: valid evidence; affirming under Policy.
	FaultNone Fault = ""
	// FaultDebug: the TD or guest runs with DEBUG (host can read its memory): tdx_debug, snp_debug.
	FaultDebug Fault = "debug"
	// FaultMeasurement: an unexpected launch measurement (another image): tdx_mrtd, snp_measurement.
	FaultMeasurement Fault = "measurement"
	// FaultSignature: a report byte changed after signing: tdx_quote_signature_invalid,
	// snp_report_signature_invalid.
	FaultSignature Fault = "signature"
	// FaultNonceBinding: REPORT_DATA binds another nonce than the one in the envelope:
	// nonce_mismatch.
	FaultNonceBinding Fault = "nonce-binding"
)

// Platforms are one simulated TDX and one simulated SEV-SNP platform.
type Platforms struct {
	// Now is the clock the PKIs and their collateral were made for: certificates are valid from
	// Now-1h, SEV-SNP CRLs until Now+7d, Intel collateral until Now+30d.
	Now   time.Time
	Intel *fakeintel.PKI
	AMD   *fakeamd.PKI
	// Roots trust exactly the two fake PKIs; Test is set.
	Roots *roots.Set
	// Collateral answers every request a verifier makes for this evidence.
	Collateral collateral.Set
	// PolicyYAML pins the measurements of the evidence both platforms produce.
	PolicyYAML []byte
}

// New creates both fake PKIs and their collateral at now.
func New(now time.Time) (*Platforms, error) {
	now = now.UTC()
	intel, err := fakeintel.New(now)
	if err != nil {
		return nil, fmt.Errorf("servicetest: fake Intel PKI: %w", err)
	}
	amd, err := fakeamd.New(AMDProductLine, now)
	if err != nil {
		return nil, fmt.Errorf("servicetest: fake AMD PKI: %w", err)
	}
	return assemble(now, intel, amd)
}

// assemble builds the roots, collateral and policy of the two PKIs.
func assemble(now time.Time, intel *fakeintel.PKI, amd *fakeamd.PKI) (*Platforms, error) {
	p := &Platforms{
		Now:   now,
		Intel: intel,
		AMD:   amd,
		Roots: &roots.Set{
			Intel: []*x509.Certificate{intel.Root},
			AMD:   map[string]*roots.AMDProduct{AMDProductLine: {Line: AMDProductLine, ARK: amd.ARK, ASK: amd.ASK, ASVK: amd.ASVK}},
			Test:  true,
		},
		Collateral: collateral.Set{},
	}
	ic, err := intel.Collateral(fakeintel.DefaultCollateralOptions(now))
	if err != nil {
		return nil, fmt.Errorf("servicetest: Intel collateral: %w", err)
	}
	ac, err := amd.Collateral(fakeamd.CRLOptions{})
	if err != nil {
		return nil, fmt.Errorf("servicetest: AMD collateral: %w", err)
	}
	if err := p.Collateral.Add(append(ic, ac...)...); err != nil {
		return nil, err
	}
	p.PolicyYAML = p.policy()
	return p, nil
}

// policy pins every TD measurement of the default quote and the SEV-SNP measurement, host data
// and TCB floor of the default report; every other rule stays at its default.
func (p *Platforms) policy() []byte {
	q := fakeintel.DefaultQuoteOptions()
	r := p.AMD.DefaultReportOptions()
	tcb := snp.DecomposeTCB(uint64(p.AMD.TCB), AMDProductLine)
	var b strings.Builder
	b.WriteString("# The policy of the simulated platforms (test mode): pins the measurements of the\n")
	b.WriteString("# fake-PKI TDX quote and SEV-SNP report; every other rule is at its default.\n")
	b.WriteString("id: simulated-fleet\n")
	b.WriteString("description: Simulated TDX and SEV-SNP VMs signing with the project's fake vendor PKIs.\n")
	b.WriteString("tdx:\n")
	for _, v := range []struct {
		key string
		val []byte
	}{
		{"mrtd", q.MrTd[:]},
		{"rtmr0", q.Rtmrs[0][:]}, {"rtmr1", q.Rtmrs[1][:]}, {"rtmr2", q.Rtmrs[2][:]}, {"rtmr3", q.Rtmrs[3][:]},
		{"mr_config_id", q.MrConfigID[:]}, {"mr_owner", q.MrOwner[:]}, {"mr_owner_config", q.MrOwnerConfig[:]},
	} {
		fmt.Fprintf(&b, "  %s: [%x]\n", v.key, v.val)
	}
	b.WriteString("sev_snp:\n")
	fmt.Fprintf(&b, "  measurement: [%x]\n", r.Measurement)
	fmt.Fprintf(&b, "  host_data: [%x]\n", r.HostData)
	fmt.Fprintf(&b, "  tcb_floors:\n    %s: {fmc: %d, bootloader: %d, tee: %d, snp: %d, microcode: %d}\n",
		AMDProductLine, tcb.FMC, tcb.Bootloader, tcb.TEE, tcb.SNP, tcb.Microcode)
	return []byte(b.String())
}

// RuntimeData is the runtime_data a simulated agent sends: a small JSON object naming it.
func RuntimeData(agent string) []byte {
	b, _ := json.Marshal(map[string]string{"agent": agent})
	return b
}

// Evidence returns the JSON evidence envelope a simulated VM of platform sends for the verifier
// nonce, with the given runtime data and fault.
func (p *Platforms) Evidence(platform attest.Platform, nonce, runtimeData []byte, fault Fault) ([]byte, error) {
	bound := nonce
	if fault == FaultNonceBinding {
		bound = make([]byte, len(nonce))
		copy(bound, nonce)
		bound[len(bound)-1] ^= 0xff
	}
	reportData := attest.ReportData(bound, runtimeData)
	var report []byte
	var certs [][]byte
	switch platform {
	case attest.PlatformTDX:
		o := fakeintel.DefaultQuoteOptions()
		o.ReportData = reportData
		switch fault {
		case FaultDebug:
			o.TdAttributes[0] |= 1
		case FaultMeasurement:
			o.MrTd[0] ^= 0xff
		}
		q, err := p.Intel.Quote(o)
		if err != nil {
			return nil, err
		}
		if fault == FaultSignature {
			q[48+0x20] ^= 1 // a byte of the TD quote body (MRSEAM), after signing
		}
		report = q
	case attest.PlatformSNP:
		o := p.AMD.DefaultReportOptions()
		o.ReportData = reportData
		switch fault {
		case FaultDebug:
			o.Policy |= fakeamd.PolicyDebug
		case FaultMeasurement:
			o.Measurement[0] ^= 0xff
		}
		r, err := p.AMD.Report(o)
		if err != nil {
			return nil, err
		}
		if fault == FaultSignature {
			r[0x90] ^= 1 // MEASUREMENT, after signing
		}
		report, certs = r, p.AMD.Certificates(abi.VcekReportSigner)
	default:
		return nil, fmt.Errorf("servicetest: unknown platform %q", platform)
	}
	ev := &attest.Evidence{Version: attest.Version, Platform: platform, Report: report, Certificates: certs, Nonce: nonce, RuntimeData: runtimeData}
	return ev.Encode()
}
