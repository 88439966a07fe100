package verifier_test

import (
	"context"
	"crypto/rand"
	"crypto/x509"
	"encoding/binary"
	"fmt"
	"math/big"
	"strings"
	"testing"
	"time"

	"github.com/google/go-tdx-guest/pcs"
	"github.com/proofline/proofline/attest"
	"github.com/proofline/proofline/attest/attesttest/fakeintel"
	"github.com/proofline/proofline/verifier"
	"github.com/proofline/proofline/verifier/collateral"
	"github.com/proofline/proofline/verifier/ear"
	"github.com/proofline/proofline/verifier/policy"
	"github.com/proofline/proofline/verifier/roots"
	"github.com/proofline/proofline/verifier/tdx"
)

// testNow is the injected clock of the end-to-end tests: every fixture is generated relative to
// it, so the suite never ages into failure.
var testNow = time.Now().UTC().Truncate(time.Second)

var runtimeData = []byte(`{"pub":"test-agent-key"}`)

func newNonce(t testing.TB) []byte {
	n := make([]byte, attest.NonceSize)
	if _, err := rand.Read(n); err != nil {
		t.Fatal(err)
	}
	return n
}

// tdxScenario is one valid TDX attestation and the knobs that break it.
type tdxScenario struct {
	pki     *fakeintel.PKI
	quote   fakeintel.QuoteOptions
	coll    fakeintel.CollateralOptions
	nonce   []byte
	policy  string // extra lines for the tdx section of the policy
	mutate  func(t *testing.T, s *tdxScenario, q []byte) []byte
	editSet func(collateral.Set)
	opts    func(*verifier.Options)
	served  collateral.Set // the collateral the last run served
}

func newTDXScenario(t *testing.T, version int) *tdxScenario {
	t.Helper()
	pki, err := fakeintel.New(testNow)
	if err != nil {
		t.Fatal(err)
	}
	s := &tdxScenario{pki: pki, quote: fakeintel.DefaultQuoteOptions(), coll: fakeintel.DefaultCollateralOptions(testNow), nonce: newNonce(t)}
	s.quote.Version = version
	s.quote.ReportData = attest.ReportData(s.nonce, runtimeData)
	return s
}

func (s *tdxScenario) policyYAML() string {
	q := s.quote
	return fmt.Sprintf(`id: test-tdx
tdx:
  mrtd: [%x]
  rtmr0: [%x]
  rtmr1: [%x]
  rtmr2: [%x, %s]
  rtmr3: [%x]
  mr_config_id: [%x]
  mr_owner: [%x]
  mr_owner_config: [%x]
%s`, q.MrTd, q.Rtmrs[0], q.Rtmrs[1], q.Rtmrs[2], strings.Repeat("ab", 48), q.Rtmrs[3], q.MrConfigID, q.MrOwner, q.MrOwnerConfig, s.policy)
}

// inputs are the scenario's quote (mutated as it says), the collateral it serves (edited as it
// says, and remembered in s.served) and its policy.
func (s *tdxScenario) inputs(t *testing.T) ([]byte, collateral.Set, *policy.Policy) {
	t.Helper()
	raw, err := s.pki.Quote(s.quote)
	if err != nil {
		t.Fatal(err)
	}
	if s.mutate != nil {
		raw = s.mutate(t, s, raw)
	}
	rs, err := s.pki.Collateral(s.coll)
	if err != nil {
		t.Fatal(err)
	}
	set := collateral.Set{}
	if err := set.Add(rs...); err != nil {
		t.Fatal(err)
	}
	if s.editSet != nil {
		s.editSet(set)
	}
	s.served = set
	pol, err := policy.Parse([]byte(s.policyYAML()))
	if err != nil {
		t.Fatalf("policy: %v\n%s", err, s.policyYAML())
	}
	return raw, set, pol
}

func (s *tdxScenario) run(t *testing.T) *ear.Result {
	t.Helper()
	raw, set, pol := s.inputs(t)
	opts := verifier.Options{
		Policy:     pol,
		Roots:      &roots.Set{Intel: []*x509.Certificate{s.pki.Root}, Test: true},
		Collateral: set,
		Now:        testNow,
		Nonce:      s.nonce, // the verifier issued it
	}
	if s.opts != nil {
		s.opts(&opts)
	}
	ev := &attest.Evidence{Version: 1, Platform: attest.PlatformTDX, Report: raw, Nonce: s.nonce, RuntimeData: runtimeData}
	return verifier.Verify(context.Background(), ev, opts)
}

func describe(r *ear.Result) string {
	var b strings.Builder
	fmt.Fprintf(&b, "status %s", r.Status)
	for _, f := range r.Failures {
		fmt.Fprintf(&b, "\n  failure %s (%s): %s", f.Code, f.Check, f.Message)
	}
	for _, f := range r.Warnings {
		fmt.Fprintf(&b, "\n  warning %s (%s): %s", f.Code, f.Check, f.Message)
	}
	return b.String()
}

func TestTDXFullPathAffirming(t *testing.T) {
	for _, version := range []int{4, 5} {
		t.Run(fmt.Sprintf("v%d", version), func(t *testing.T) {
			s := newTDXScenario(t, version)
			r := s.run(t)
			if r.Status != ear.StatusAffirming {
				t.Fatalf("want affirming, got %s", describe(r))
			}
			c := r.Claims.(*ear.TDXClaims)
			if c.TCB == nil || c.TCB.Status != tdx.StatusUpToDate || c.QE.TCBStatus != tdx.StatusUpToDate {
				t.Fatalf("TCB claims = %+v, QE = %+v", c.TCB, c.QE)
			}
			if len(c.Collateral) != 4 {
				t.Fatalf("collateral claims = %+v, want root CRL, PCK CRL, QE identity, TCB info", c.Collateral)
			}
			if c.QuoteVersion != version || c.FMSPC != s.pki.FMSPCHex() {
				t.Fatalf("claims: version %d fmspc %s", c.QuoteVersion, c.FMSPC)
			}
			if !r.TestRoots {
				t.Fatal("test roots not marked")
			}
		})
	}
}

// TestTDXNegative builds each failure of VERIFIER-CHECKS TDX 1–8 from a valid v4 and v5 quote
// and asserts its specific code.
func TestTDXNegative(t *testing.T) {
	flip := func(off func(l fakeintel.Layout) int) func(*testing.T, *tdxScenario, []byte) []byte {
		return func(t *testing.T, s *tdxScenario, q []byte) []byte {
			l, err := fakeintel.ParseLayout(q)
			if err != nil {
				t.Fatal(err)
			}
			q = append([]byte(nil), q...)
			q[off(l)] ^= 0x01
			return q
		}
	}
	otherPKI := func(t *testing.T) *fakeintel.PKI {
		p, err := fakeintel.New(testNow)
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	// signedByOther serves the document at url as another fake Intel PKI (an independent root)
	// signs it, with the same contents.
	signedByOther := func(url func(s *tdxScenario) string) func(*tdxScenario) {
		return func(s *tdxScenario) {
			other := otherPKI(t)
			rs, err := other.Collateral(s.coll)
			if err != nil {
				t.Fatal(err)
			}
			s.editSet = func(set collateral.Set) {
				for _, r := range rs {
					if r.URL == url(s) {
						set[r.URL] = r
						return
					}
				}
				t.Fatalf("the other PKI serves nothing at %s", url(s))
			}
		}
	}
	setAttr := func(bit uint) func(*tdxScenario) {
		return func(s *tdxScenario) {
			v := binary.LittleEndian.Uint64(s.quote.TdAttributes[:]) | 1<<bit
			binary.LittleEndian.PutUint64(s.quote.TdAttributes[:], v)
		}
	}
	cases := []struct {
		name  string
		setup func(*tdxScenario)
		want  ear.Code
	}{
		// 1. Strict parse.
		{"version byte flipped", func(s *tdxScenario) {
			s.mutate = func(t *testing.T, s *tdxScenario, q []byte) []byte { q = append([]byte(nil), q...); q[0] = 3; return q }
		}, ear.CodeTDXQuoteMalformed},
		{"TEE type SGX", func(s *tdxScenario) {
			s.mutate = func(t *testing.T, s *tdxScenario, q []byte) []byte { q = append([]byte(nil), q...); q[4] = 0; return q }
		}, ear.CodeTDXQuoteMalformed},
		{"trailing bytes", func(s *tdxScenario) {
			s.mutate = func(t *testing.T, s *tdxScenario, q []byte) []byte { return append(append([]byte(nil), q...), 'x') }
		}, ear.CodeTDXQuoteMalformed},
		// 2. PCK chain, validity, CRLs.
		{"PCK chain from an untrusted root", func(s *tdxScenario) {
			trusted := s.pki.Root
			s.pki = otherPKI(t)
			s.opts = func(o *verifier.Options) { o.Roots.Intel = []*x509.Certificate{trusted} }
		}, ear.CodeTDXPCKChainInvalid},
		{"PCK not yet valid at the verification time", func(s *tdxScenario) {
			s.opts = func(o *verifier.Options) { o.Now = testNow.Add(-2 * time.Hour) }
		}, ear.CodeTDXCertExpired},
		{"PCK chain expired", func(s *tdxScenario) {
			s.opts = func(o *verifier.Options) { o.Now = testNow.AddDate(8, 0, 0) }
		}, ear.CodeTDXCertExpired},
		{"PCK revoked", func(s *tdxScenario) { s.coll.PCKCRL.Revoked = []*big.Int{s.pki.PCK.SerialNumber} }, ear.CodeTDXCertRevoked},
		{"PCK CA revoked", func(s *tdxScenario) { s.coll.RootCRL.Revoked = []*big.Int{s.pki.PlatformCA.SerialNumber} }, ear.CodeTDXCertRevoked},
		{"TCB signing certificate revoked", func(s *tdxScenario) { s.coll.RootCRL.Revoked = []*big.Int{s.pki.TCBSigning.SerialNumber} }, ear.CodeTDXCertRevoked},
		{"PCK CRL stale", func(s *tdxScenario) { s.coll.PCKCRL.NextUpdate = testNow.Add(-time.Minute) }, ear.CodeTDXCRLStale},
		{"Root CA CRL stale", func(s *tdxScenario) { s.coll.RootCRL.NextUpdate = testNow.Add(-time.Minute) }, ear.CodeTDXCRLStale},
		{"PCK CRL from the future", func(s *tdxScenario) { s.coll.PCKCRL.ThisUpdate = testNow.Add(time.Hour) }, ear.CodeTDXCRLStale},
		{"PCK CRL signature corrupt", func(s *tdxScenario) { s.coll.PCKCRL.CorruptSignature = true }, ear.CodeTDXCRLInvalid},
		{"PCK CRL validly signed by the Root CA, not the PCK CA", func(s *tdxScenario) {
			s.editSet = func(set collateral.Set) {
				o := s.coll.PCKCRL
				der, err := x509.CreateRevocationList(rand.Reader, &x509.RevocationList{
					Number: big.NewInt(o.Number), ThisUpdate: o.ThisUpdate, NextUpdate: o.NextUpdate,
				}, s.pki.Root, s.pki.RootKey)
				if err != nil {
					t.Fatal(err)
				}
				set[pcs.PckCrlURL("platform")].Body = der
			}
		}, ear.CodeTDXCRLInvalid},
		{"TCB signing certificate expired", func(s *tdxScenario) {
			tmpl := *s.pki.TCBSigning
			tmpl.NotBefore, tmpl.NotAfter = testNow.AddDate(-1, 0, 0), testNow.Add(-time.Minute)
			der, err := x509.CreateCertificate(rand.Reader, &tmpl, s.pki.Root, &s.pki.TCBSigningKey.PublicKey, s.pki.RootKey)
			if err != nil {
				t.Fatal(err)
			}
			if s.pki.TCBSigning, err = x509.ParseCertificate(der); err != nil {
				t.Fatal(err)
			}
		}, ear.CodeTDXCertExpired},
		{"Root CA CRL signature corrupt", func(s *tdxScenario) { s.coll.RootCRL.CorruptSignature = true }, ear.CodeTDXCRLInvalid},
		{"PCK CRL missing", func(s *tdxScenario) {
			s.editSet = func(set collateral.Set) { delete(set, pcs.PckCrlURL("platform")) }
		}, ear.CodeCollateralUnavailable},
		{"Root CA CRL missing", func(s *tdxScenario) {
			s.editSet = func(set collateral.Set) { delete(set, fakeintel.RootCRLURL) }
		}, ear.CodeCollateralUnavailable},
		{"no collateral at all", func(s *tdxScenario) {
			s.opts = func(o *verifier.Options) { o.Collateral = nil }
		}, ear.CodeCollateralUnavailable},
		{"QE vendor ID is not Intel's", func(s *tdxScenario) {
			s.mutate = func(t *testing.T, s *tdxScenario, q []byte) []byte {
				q = append([]byte(nil), q...)
				q[12] ^= 0xff
				out, err := s.pki.ResignQuote(q)
				if err != nil {
					t.Fatal(err)
				}
				return out
			}
		}, ear.CodeTDXQEIdentityMismatch},
		// 3. QE report.
		{"QE report byte flipped", func(s *tdxScenario) {
			s.mutate = flip(func(l fakeintel.Layout) int { return l.QEReportOffset + 20 })
		}, ear.CodeTDXQEReportSignature},
		{"QE report signed by another key", func(s *tdxScenario) {
			s.mutate = func(t *testing.T, s *tdxScenario, q []byte) []byte {
				out, err := s.pki.Resign(q, fakeintel.ResignOptions{QEReportKey: otherPKI(t).PCKKey})
				if err != nil {
					t.Fatal(err)
				}
				return out
			}
		}, ear.CodeTDXQEReportSignature},
		{"QE report data does not bind the attestation key", func(s *tdxScenario) {
			s.mutate = func(t *testing.T, s *tdxScenario, q []byte) []byte {
				out, err := s.pki.Resign(q, fakeintel.ResignOptions{KeepQEReportData: true})
				if err != nil {
					t.Fatal(err)
				}
				return out
			}
		}, ear.CodeTDXQEReportData},
		// 4. Quote signature.
		{"body byte flipped", func(s *tdxScenario) {
			s.mutate = flip(func(l fakeintel.Layout) int { return l.BodyOffset + 200 })
		}, ear.CodeTDXQuoteSignature},
		{"header byte flipped", func(s *tdxScenario) {
			s.mutate = flip(func(l fakeintel.Layout) int { return 30 })
		}, ear.CodeTDXQuoteSignature},
		{"signature byte flipped", func(s *tdxScenario) {
			s.mutate = flip(func(l fakeintel.Layout) int { return l.SignatureOffset + 5 })
		}, ear.CodeTDXQuoteSignature},
		// 5. QE identity.
		{"QE identity signature corrupt", func(s *tdxScenario) { s.coll.QEIdentity.CorruptSignature = true }, ear.CodeTDXQEIdentityInvalid},
		{"QE identity signed under another Intel root", signedByOther(func(*tdxScenario) string { return pcs.QeIdentityURL() }), ear.CodeTDXQEIdentityInvalid},
		{"QE identity expired", func(s *tdxScenario) { s.coll.QEIdentity.NextUpdate = testNow.Add(-time.Minute) }, ear.CodeTDXQEIdentityExpired},
		{"QE identity not yet issued", func(s *tdxScenario) { s.coll.QEIdentity.IssueDate = testNow.Add(time.Hour) }, ear.CodeTDXQEIdentityExpired},
		{"QE identity older than max_collateral_age", func(s *tdxScenario) {
			s.coll.QEIdentity.IssueDate = testNow.Add(-48 * time.Hour)
			s.policy = "  max_collateral_age: 24h\n"
		}, ear.CodeTDXQEIdentityExpired},
		{"QE MRSIGNER differs", func(s *tdxScenario) { s.quote.QEMrSigner[0] ^= 1 }, ear.CodeTDXQEIdentityMismatch},
		{"QE ISVPRODID differs", func(s *tdxScenario) { s.quote.QEIsvProdID = 9 }, ear.CodeTDXQEIdentityMismatch},
		{"QE MISCSELECT differs", func(s *tdxScenario) { s.quote.QEMiscSelect = 1 }, ear.CodeTDXQEIdentityMismatch},
		{"QE ATTRIBUTES differ", func(s *tdxScenario) { s.quote.QEAttributes[0] ^= 0x02 }, ear.CodeTDXQEIdentityMismatch},
		// A level or a date missing from the signed JSON is not a status or a date: go-tdx-guest
		// leaves it empty or zero, and the document is invalid (re-signed with the TCB signing key).
		{"QE identity: the matched level has no tcbStatus", func(s *tdxScenario) { s.coll.QEIdentity.TCBLevels[0].Status = "" }, ear.CodeTDXQEIdentityInvalid},
		{"QE identity: another level has no tcbStatus", func(s *tdxScenario) { s.coll.QEIdentity.TCBLevels[1].Status = "" }, ear.CodeTDXQEIdentityInvalid},
		{"QE identity without issueDate", func(s *tdxScenario) { s.coll.QEIdentity.IssueDate = time.Time{} }, ear.CodeTDXQEIdentityInvalid},
		{"QE identity without nextUpdate", func(s *tdxScenario) { s.coll.QEIdentity.NextUpdate = time.Time{} }, ear.CodeTDXQEIdentityInvalid},
		{"QE out of date", func(s *tdxScenario) { s.quote.QEIsvSvn = 3 }, ear.CodeTDXQETCBStatus},
		{"QE matches no TCB level", func(s *tdxScenario) { s.quote.QEIsvSvn = 1 }, ear.CodeTDXQETCBStatus},
		// 6. TCB info.
		{"TCB info signature corrupt", func(s *tdxScenario) { s.coll.TCBInfo.CorruptSignature = true }, ear.CodeTDXTCBInfoInvalid},
		{"TCB info signed under another Intel root", signedByOther(func(s *tdxScenario) string { return pcs.TcbInfoURL(s.pki.FMSPCHex()) }), ear.CodeTDXTCBInfoInvalid},
		{"TCB info version 2", func(s *tdxScenario) { s.coll.TCBInfo.Version = 2 }, ear.CodeTDXTCBInfoInvalid},
		{"TCB info: the matched level has no tcbStatus", func(s *tdxScenario) { s.coll.TCBInfo.TCBLevels[0].Status = "" }, ear.CodeTDXTCBInfoInvalid},
		{"TCB info: another level has no tcbStatus", func(s *tdxScenario) { s.coll.TCBInfo.TCBLevels[3].Status = "" }, ear.CodeTDXTCBInfoInvalid},
		{"TCB info: the matched TDX module level has no tcbStatus", func(s *tdxScenario) {
			s.quote.TeeTcbSvn[1] = 1
			s.quote.TeeTcbSvn2 = s.quote.TeeTcbSvn
			s.coll.TCBInfo.ModuleIdentities[0].TCBLevels[0].Status = ""
		}, ear.CodeTDXTCBInfoInvalid},
		{"TCB info without issueDate", func(s *tdxScenario) { s.coll.TCBInfo.IssueDate = time.Time{} }, ear.CodeTDXTCBInfoInvalid},
		{"TCB info without nextUpdate", func(s *tdxScenario) { s.coll.TCBInfo.NextUpdate = time.Time{} }, ear.CodeTDXTCBInfoInvalid},
		{"TCB info expired", func(s *tdxScenario) { s.coll.TCBInfo.NextUpdate = testNow.Add(-time.Minute) }, ear.CodeTDXTCBInfoExpired},
		{"TCB info older than max_collateral_age", func(s *tdxScenario) {
			s.coll.TCBInfo.IssueDate = testNow.Add(-48 * time.Hour)
			s.policy = "  max_collateral_age: 24h\n"
		}, ear.CodeTDXTCBInfoExpired},
		{"TCB info for another FMSPC", func(s *tdxScenario) { s.coll.TCBInfo.FMSPC = "00906ed50000" }, ear.CodeTDXTCBInfoMismatch},
		{"TCB info for another PCEID", func(s *tdxScenario) { s.coll.TCBInfo.PCEID = "0100" }, ear.CodeTDXTCBInfoMismatch},
		{"no TCB level matches", func(s *tdxScenario) { s.quote.TeeTcbSvn[0], s.quote.TeeTcbSvn2[0] = 0, 0 }, ear.CodeTDXTCBLevelUnmatched},
		{"TCB out of date", func(s *tdxScenario) {
			s.quote.TeeTcbSvn = fakeintel.TeeTcbSvnFor(pcs.TcbComponentStatusOutOfDate)
			s.quote.TeeTcbSvn2 = s.quote.TeeTcbSvn
		}, ear.CodeTDXTCBStatus},
		{"TCB revoked even when the policy accepts everything else", func(s *tdxScenario) {
			s.quote.TeeTcbSvn = fakeintel.TeeTcbSvnFor(pcs.TcbComponentStatusRevoked)
			s.quote.TeeTcbSvn2 = s.quote.TeeTcbSvn
			s.policy = "  accepted_tcb_statuses: [UpToDate, SWHardeningNeeded, ConfigurationNeeded, ConfigurationAndSWHardeningNeeded, OutOfDate, OutOfDateConfigurationNeeded]\n"
		}, ear.CodeTDXTCBStatus},
		{"SWHardeningNeeded under the default policy", func(s *tdxScenario) {
			s.quote.TeeTcbSvn = fakeintel.TeeTcbSvnFor(pcs.TcbComponentStatusSwHardeningNeeded)
			s.quote.TeeTcbSvn2 = s.quote.TeeTcbSvn
		}, ear.CodeTDXTCBStatus},
		{"TDX module signer differs", func(s *tdxScenario) { s.quote.MrSignerSeam[0] = 1 }, ear.CodeTDXModuleMismatch},
		{"TDX module attributes differ", func(s *tdxScenario) { s.quote.SeamAttributes[0] = 1 }, ear.CodeTDXModuleMismatch},
		{"TDX module identity out of date", func(s *tdxScenario) {
			s.quote.TeeTcbSvn[0], s.quote.TeeTcbSvn[1] = 3, 1
			s.quote.TeeTcbSvn2 = s.quote.TeeTcbSvn
		}, ear.CodeTDXTCBStatus},
		{"TDX module identity signer differs", func(s *tdxScenario) {
			s.quote.TeeTcbSvn[1] = 1
			s.quote.TeeTcbSvn2 = s.quote.TeeTcbSvn
			s.coll.TCBInfo.ModuleIdentities[0].MrSigner[0] = 1
		}, ear.CodeTDXModuleMismatch},
		{"TDX module identity missing", func(s *tdxScenario) {
			s.quote.TeeTcbSvn[1] = 2
			s.quote.TeeTcbSvn2 = s.quote.TeeTcbSvn
		}, ear.CodeTDXModuleMismatch},
		{"tcbEvaluationDataNumber below the policy minimum", func(s *tdxScenario) {
			s.policy = "  min_tcb_evaluation_data_number: 19\n"
		}, ear.CodeTDXTCBEvaluationNumber},
		// 7. TD body.
		{"DEBUG", func(s *tdxScenario) { setAttr(0)(s) }, ear.CodeTDXDebug},
		{"SEPT_VE_DISABLE clear", func(s *tdxScenario) { s.quote.TdAttributes[3] = 0 }, ear.CodeTDXSeptVEDisable},
		{"unknown attribute bit", func(s *tdxScenario) { setAttr(5)(s) }, ear.CodeTDXAttributesUnknown},
		{"feature bit not allowed", func(s *tdxScenario) {
			setAttr(30)(s)
			s.policy = "  allowed_attributes: [perfmon]\n"
		}, ear.CodeTDXAttributesUnknown},
		{"MIGRATABLE", func(s *tdxScenario) { setAttr(29)(s) }, ear.CodeTDXMigratable},
		{"XFAM outside the mask", func(s *tdxScenario) { s.quote.Xfam[2] |= 0x80 }, ear.CodeTDXXFAM},
		{"XFAM without x87", func(s *tdxScenario) { s.quote.Xfam[0] &^= 0x01 }, ear.CodeTDXXFAM},
		{"MRTD", func(s *tdxScenario) {
			s.mutate = func(t *testing.T, s *tdxScenario, q []byte) []byte {
				q2, err := s.pki.Quote(func() fakeintel.QuoteOptions { o := s.quote; o.MrTd[0] ^= 1; return o }())
				if err != nil {
					t.Fatal(err)
				}
				return q2
			}
		}, ear.CodeTDXMRTD},
		{"RTMR2", func(s *tdxScenario) {
			s.mutate = func(t *testing.T, s *tdxScenario, q []byte) []byte {
				q2, _ := s.pki.Quote(func() fakeintel.QuoteOptions { o := s.quote; o.Rtmrs[2][47] ^= 1; return o }())
				return q2
			}
		}, ear.CodeTDXRTMR},
		{"MRCONFIGID", func(s *tdxScenario) {
			s.mutate = func(t *testing.T, s *tdxScenario, q []byte) []byte {
				q2, _ := s.pki.Quote(func() fakeintel.QuoteOptions { o := s.quote; o.MrConfigID[0] = 1; return o }())
				return q2
			}
		}, ear.CodeTDXMRConfigID},
		{"MROWNER", func(s *tdxScenario) {
			s.mutate = func(t *testing.T, s *tdxScenario, q []byte) []byte {
				q2, _ := s.pki.Quote(func() fakeintel.QuoteOptions { o := s.quote; o.MrOwner[0] = 1; return o }())
				return q2
			}
		}, ear.CodeTDXMROwner},
		{"MROWNERCONFIG", func(s *tdxScenario) {
			s.mutate = func(t *testing.T, s *tdxScenario, q []byte) []byte {
				q2, _ := s.pki.Quote(func() fakeintel.QuoteOptions { o := s.quote; o.MrOwnerConfig[0] = 1; return o }())
				return q2
			}
		}, ear.CodeTDXMROwnerConfig},
		{"MRSEAM not a reference value", func(s *tdxScenario) {
			s.policy = "  mr_seam: [" + strings.Repeat("00", 48) + "]\n"
		}, ear.CodeTDXMRSeam},
		// 8. Nonce binding.
		{"another nonce", func(s *tdxScenario) { s.opts = func(o *verifier.Options) { o.Nonce = newNonce(t) } }, ear.CodeNonceMismatch},
		{"REPORT_DATA byte flipped and re-signed", func(s *tdxScenario) { s.quote.ReportData[63] ^= 1 }, ear.CodeNonceMismatch},
		{"unexpected --report-data", func(s *tdxScenario) {
			s.opts = func(o *verifier.Options) { o.ReportData = make([]byte, 64) }
		}, ear.CodeReportDataMismatch},
	}
	for _, version := range []int{4, 5} {
		for _, tc := range cases {
			t.Run(fmt.Sprintf("v%d/%s", version, tc.name), func(t *testing.T) {
				t.Parallel()
				s := newTDXScenario(t, version)
				tc.setup(s)
				r := s.run(t)
				if r.Status != ear.StatusContraindicated || !r.HasFailure(tc.want) {
					t.Fatalf("want contraindicated with %s, got %s", tc.want, describe(r))
				}
			})
		}
	}
}

func TestTDXMRServiceTD(t *testing.T) {
	s := newTDXScenario(t, 5)
	s.quote.MrServiceTd[0] = 1
	if r := s.run(t); !r.HasFailure(ear.CodeTDXMRServiceTD) {
		t.Fatalf("want %s, got %s", ear.CodeTDXMRServiceTD, describe(r))
	}
	s.policy = "  mr_service_td: [01" + strings.Repeat("00", 47) + "]\n"
	if r := s.run(t); r.Status != ear.StatusAffirming {
		t.Fatalf("allowed MRSERVICETD: %s", describe(r))
	}
}

// Accepted statuses are a policy choice: a SWHardeningNeeded platform passes when the policy lists
// it, and the status and Intel's advisories are in the claims.
func TestTDXAcceptedStatusPolicy(t *testing.T) {
	s := newTDXScenario(t, 4)
	s.quote.TeeTcbSvn = fakeintel.TeeTcbSvnFor(pcs.TcbComponentStatusSwHardeningNeeded)
	s.policy = "  accepted_tcb_statuses: [UpToDate, SWHardeningNeeded]\n"
	r := s.run(t)
	if r.Status != ear.StatusAffirming {
		t.Fatalf("want affirming, got %s", describe(r))
	}
	c := r.Claims.(*ear.TDXClaims)
	if c.TCB.Status != tdx.StatusSWHardeningNeeded || len(c.TCB.AdvisoryIDs) == 0 {
		t.Fatalf("TCB claims %+v", c.TCB)
	}
}

// An OutOfDate QE the policy accepts caps the result at warning, as an accepted OutOfDate
// platform does: the quoting enclave lacks published security fixes.
func TestTDXAcceptedOutOfDateQE(t *testing.T) {
	s := newTDXScenario(t, 4)
	s.quote.QEIsvSvn = 3
	s.policy = "  accepted_qe_tcb_statuses: [UpToDate, OutOfDate]\n"
	r := s.run(t)
	if r.Status != ear.StatusWarning || !r.HasWarning(ear.CodeTCBOutOfDateAccepted) || len(r.Failures) != 0 {
		t.Fatalf("want warning with %s, got %s", ear.CodeTCBOutOfDateAccepted, describe(r))
	}
	if c := r.Claims.(*ear.TDXClaims); c.QE == nil || c.QE.TCBStatus != tdx.StatusOutOfDate {
		t.Fatalf("QE claims %+v", c.QE)
	}
}

// A TDX module the TCB info does not rate (no identity for its version, or no level for its SVN)
// leaves the TCB claim without a status: the platform level's status alone is not the TCB's.
func TestTDXUnratedModuleHasNoTCBStatus(t *testing.T) {
	for _, c := range []struct {
		name     string
		svn, ver byte
		code     ear.Code
	}{
		{"no module identity", 2, 2, ear.CodeTDXModuleMismatch},
		{"no module level", 0, 1, ear.CodeTDXTCBLevelUnmatched},
	} {
		t.Run(c.name, func(t *testing.T) {
			s := newTDXScenario(t, 4)
			s.quote.TeeTcbSvn[0], s.quote.TeeTcbSvn[1] = c.svn, c.ver
			s.quote.TeeTcbSvn2 = s.quote.TeeTcbSvn
			r := s.run(t)
			if r.Status != ear.StatusContraindicated || !r.HasFailure(c.code) {
				t.Fatalf("want contraindicated with %s, got %s", c.code, describe(r))
			}
			if tcb := r.Claims.(*ear.TDXClaims).TCB; tcb == nil || tcb.Status != "" || tcb.TDXModuleIdentity == "" {
				t.Fatalf("TCB claims %+v, want the module identity named and no status", tcb)
			}
		})
	}
}

func TestTDXFreshnessNotEvaluated(t *testing.T) {
	s := newTDXScenario(t, 4)
	s.nonce = nil
	r := s.run(t)
	if r.Status != ear.StatusWarning || !r.HasWarning(ear.CodeFreshnessNotEvaluated) {
		t.Fatalf("want warning with %s, got %s", ear.CodeFreshnessNotEvaluated, describe(r))
	}
}

// A nonce carried only in the evidence is checked, but proves nothing about freshness: whoever
// produced the evidence chose it.
func TestTDXEnvelopeNonceOnly(t *testing.T) {
	s := newTDXScenario(t, 4)
	s.opts = func(o *verifier.Options) { o.Nonce = nil }
	if r := s.run(t); r.Status != ear.StatusWarning || !r.HasWarning(ear.CodeFreshnessNotEvaluated) {
		t.Fatalf("envelope nonce only: want warning with %s, got %s", ear.CodeFreshnessNotEvaluated, describe(r))
	}
	s.quote.ReportData[0] ^= 1
	if r := s.run(t); !r.HasFailure(ear.CodeNonceMismatch) {
		t.Fatalf("envelope nonce not bound: want %s, got %s", ear.CodeNonceMismatch, describe(r))
	}
}

// Evidence the policy does not appraise is never silently taken as checked, and a CCEL is always
// replayed against the RTMRs.
func TestTDXUnevaluatedEvidence(t *testing.T) {
	s := newTDXScenario(t, 4)
	r := s.run(t)
	if r.Status != ear.StatusAffirming {
		t.Fatal(describe(r))
	}
	raw, set, pol := s.inputs(t)
	verify := func(ev *attest.Evidence) *ear.Result {
		ev.Version, ev.Platform, ev.Report, ev.Nonce, ev.RuntimeData = 1, attest.PlatformTDX, raw, s.nonce, runtimeData
		return verifier.Verify(context.Background(), ev, verifier.Options{Policy: pol, Roots: &roots.Set{Intel: []*x509.Certificate{s.pki.Root}}, Collateral: set, Now: testNow, Nonce: s.nonce})
	}
	// A vTPM quote and a TCG log without a tpm section in the policy: flagged, not checked.
	r = verify(&attest.Evidence{TPM: &attest.TPM{Quote: []byte("x")}, EventLogs: &attest.EventLogs{TCG: []byte("y")}})
	if r.Status != ear.StatusWarning || !r.HasWarning(ear.CodeTPMNotEvaluated) || !r.HasWarning(ear.CodeEventLogNotEvaluated) {
		t.Fatalf("want warnings for the unevaluated vTPM quote and event log, got %s", describe(r))
	}
	// A CCEL is replayed even when the policy pins no event: one that does not parse is rejected.
	r = verify(&attest.Evidence{EventLogs: &attest.EventLogs{CCEL: []byte("y")}})
	if !r.HasFailure(ear.CodeEventLogMalformed) {
		t.Fatalf("want %s for a CCEL that does not parse, got %s", ear.CodeEventLogMalformed, describe(r))
	}
}

// Accepting an OutOfDate TCB is a policy choice that caps the result at warning.
func TestTDXOutOfDateAccepted(t *testing.T) {
	s := newTDXScenario(t, 4)
	s.quote.TeeTcbSvn = fakeintel.TeeTcbSvnFor(pcs.TcbComponentStatusOutOfDate)
	s.policy = "  accepted_tcb_statuses: [UpToDate, OutOfDate]\n"
	if r := s.run(t); r.Status != ear.StatusWarning || !r.HasWarning(ear.CodeTCBOutOfDateAccepted) {
		t.Fatalf("want warning with %s, got %s", ear.CodeTCBOutOfDateAccepted, describe(r))
	}
}

func TestTDXSkipCollateralUnsafe(t *testing.T) {
	s := newTDXScenario(t, 4)
	s.policy = "  skip_collateral_unsafe: true\n"
	s.opts = func(o *verifier.Options) { o.Collateral = nil }
	r := s.run(t)
	if r.Status != ear.StatusWarning || !r.HasWarning(ear.CodeUnsafeOption) {
		t.Fatalf("want warning with %s, got %s", ear.CodeUnsafeOption, describe(r))
	}
	// Waiving collateral never waives the signatures.
	for _, tc := range []struct {
		name string
		off  func(l fakeintel.Layout) int
		want ear.Code
	}{
		{"body", func(l fakeintel.Layout) int { return l.BodyOffset + 300 }, ear.CodeTDXQuoteSignature},
		{"QE report", func(l fakeintel.Layout) int { return l.QEReportOffset + 40 }, ear.CodeTDXQEReportSignature},
		{"QE report signature", func(l fakeintel.Layout) int { return l.QEReportSignatureOffset + 3 }, ear.CodeTDXQEReportSignature},
	} {
		s.mutate = func(t *testing.T, s *tdxScenario, q []byte) []byte {
			l, err := fakeintel.ParseLayout(q)
			if err != nil {
				t.Fatal(err)
			}
			q = append([]byte(nil), q...)
			q[tc.off(l)] ^= 1
			return q
		}
		if r := s.run(t); r.Status != ear.StatusContraindicated || !r.HasFailure(tc.want) {
			t.Fatalf("%s flipped with collateral waived: want %s, got %s", tc.name, tc.want, describe(r))
		}
	}
}

// Appraisal reports every failed check it could evaluate, not just the first.
func TestTDXReportsEveryFailure(t *testing.T) {
	s := newTDXScenario(t, 4)
	s.quote.TdAttributes[0] |= 1 // DEBUG
	s.mutate = func(t *testing.T, s *tdxScenario, q []byte) []byte {
		o := s.quote
		o.MrTd[0] ^= 1 // the policy pins the original MRTD
		q2, err := s.pki.Quote(o)
		if err != nil {
			t.Fatal(err)
		}
		return q2
	}
	s.coll.PCKCRL.NextUpdate = testNow.Add(-time.Minute)
	s.opts = func(o *verifier.Options) { o.Nonce = newNonce(t) }
	r := s.run(t)
	for _, c := range []ear.Code{ear.CodeTDXDebug, ear.CodeTDXMRTD, ear.CodeTDXCRLStale, ear.CodeNonceMismatch} {
		if !r.HasFailure(c) {
			t.Errorf("missing %s in %s", c, describe(r))
		}
	}
}

// stale_grace_unsafe, built from the valid case: each CRL, the QE identity and the TCB info an
// hour past its nextUpdate is rejected with its own code without a grace and beyond one, and
// accepted within one as warning — collateral_stale_accepted naming the document, unsafe_option
// naming the option — never affirming. A document not yet valid is never accepted.
func TestTDXStaleGraceUnsafe(t *testing.T) {
	past := testNow.Add(-time.Hour)
	docs := []struct {
		name  string
		stale func(s *tdxScenario)
		code  ear.Code
		check string
	}{
		{"the PCK CRL", func(s *tdxScenario) { s.coll.PCKCRL.NextUpdate = past }, ear.CodeTDXCRLStale, "tdx.2"},
		{"the Root CA CRL", func(s *tdxScenario) { s.coll.RootCRL.NextUpdate = past }, ear.CodeTDXCRLStale, "tdx.2"},
		{"QE identity", func(s *tdxScenario) { s.coll.QEIdentity.NextUpdate = past }, ear.CodeTDXQEIdentityExpired, "tdx.5"},
		{"TCB info", func(s *tdxScenario) { s.coll.TCBInfo.NextUpdate = past }, ear.CodeTDXTCBInfoExpired, "tdx.6"},
	}
	for _, d := range docs {
		for _, g := range []struct {
			grace string
			ok    bool
		}{{"", false}, {"0", false}, {"59m", false}, {"1h", true}, {"6h", true}} {
			t.Run(d.name+"/grace "+g.grace, func(t *testing.T) {
				s := newTDXScenario(t, 4)
				d.stale(s)
				if g.grace != "" {
					s.policy = "  stale_grace_unsafe: " + g.grace + "\n"
				}
				r := s.run(t)
				if !g.ok {
					if r.Status != ear.StatusContraindicated || !r.HasFailure(d.code) || r.HasWarning(ear.CodeCollateralStaleAccepted) {
						t.Fatalf("want %s, got %s", d.code, describe(r))
					}
					if g.grace == "59m" && !strings.Contains(describe(r), "beyond stale_grace_unsafe of 59m") {
						t.Fatalf("the failure does not say the grace was exceeded: %s", describe(r))
					}
					return
				}
				if r.Status != ear.StatusWarning || !r.HasWarning(ear.CodeCollateralStaleAccepted) || !r.HasWarning(ear.CodeUnsafeOption) {
					t.Fatalf("want warning with %s and %s, got %s", ear.CodeCollateralStaleAccepted, ear.CodeUnsafeOption, describe(r))
				}
				for _, w := range r.Warnings {
					switch w.Code {
					case ear.CodeCollateralStaleAccepted:
						if w.Check != d.check || !strings.Contains(w.Message, d.name+" expired at "+past.Format(time.RFC3339)+", 1h0m0s before") {
							t.Errorf("the warning does not say which document is how stale: %+v", w)
						}
					case ear.CodeUnsafeOption:
						if !strings.Contains(w.Message, "tdx.stale_grace_unsafe") {
							t.Errorf("unsafe_option does not name the option: %+v", w)
						}
					}
				}
				if tv := r.TrustVector; tv.SourcedData != ear.UntrustworthySources {
					t.Errorf("sourced data %d, want %d", tv.SourcedData, ear.UntrustworthySources)
				}
			})
		}
	}
	// A grace is no licence for collateral from the future, nor for anything else.
	s := newTDXScenario(t, 4)
	s.policy = "  stale_grace_unsafe: 6h\n"
	s.coll.PCKCRL.ThisUpdate = testNow.Add(time.Hour)
	if r := s.run(t); !r.HasFailure(ear.CodeTDXCRLStale) {
		t.Fatalf("a PCK CRL from the future with a grace: %s", describe(r))
	}
	s = newTDXScenario(t, 4)
	s.policy = "  stale_grace_unsafe: 6h\n"
	s.coll.TCBInfo.NextUpdate = past
	s.coll.PCKCRL.Revoked = []*big.Int{s.pki.PCK.SerialNumber}
	if r := s.run(t); r.Status != ear.StatusContraindicated || !r.HasFailure(ear.CodeTDXCertRevoked) {
		t.Fatalf("a revoked PCK with stale TCB info in grace: %s", describe(r))
	}
	// Unused, the option changes nothing.
	s = newTDXScenario(t, 4)
	s.policy = "  stale_grace_unsafe: 6h\n"
	if r := s.run(t); r.Status != ear.StatusAffirming {
		t.Fatalf("fresh collateral with a grace set: %s", describe(r))
	}
}

// Checks 5 and 6, defence in depth: the policy never accepts a platform or QE that authenticity
// checks which recorded no failure left unrated. From a valid verification, one claim is emptied.
func TestTDXPolicyRefusesUnratedTCB(t *testing.T) {
	s := newTDXScenario(t, 4)
	raw, set, pol := s.inputs(t)
	for _, tc := range []struct {
		name string
		edit func(*ear.TDXClaims)
		want ear.Code
	}{
		{"valid", func(*ear.TDXClaims) {}, ""},
		{"platform TCB status empty", func(c *ear.TDXClaims) { c.TCB.Status = "" }, ear.CodeTDXTCBStatus},
		{"no TCB claims", func(c *ear.TDXClaims) { c.TCB = nil }, ear.CodeTDXTCBStatus},
		{"QE TCB status empty", func(c *ear.TDXClaims) { c.QE.TCBStatus = "" }, ear.CodeTDXQETCBStatus},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res := &ear.Result{VerifiedAt: testNow}
			q, c := tdx.Verify(context.Background(), raw, tdx.Options{Now: testNow, Roots: []*x509.Certificate{s.pki.Root}, Collateral: set}, res)
			if q == nil || len(res.Failures) != 0 {
				t.Fatalf("the valid quote fails authenticity: %s", describe(res))
			}
			tc.edit(c)
			pol.AppraiseTDX(q, c, res)
			switch {
			case tc.want == "" && len(res.Failures) != 0:
				t.Fatalf("valid claims rejected: %s", describe(res))
			case tc.want != "" && (len(res.Failures) != 1 || !res.HasFailure(tc.want)):
				t.Fatalf("want exactly %s, got %s", tc.want, describe(res))
			}
		})
	}
}
