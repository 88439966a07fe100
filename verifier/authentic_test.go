package verifier_test

import (
	"bytes"
	"crypto/x509"
	"encoding/hex"
	"maps"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/google/go-sev-guest/abi"
	"github.com/google/go-sev-guest/kds"
	sevtestdata "github.com/google/go-sev-guest/verify/testdata"
	"github.com/google/go-sev-guest/verify/trust"
	"github.com/google/go-tdx-guest/pcs"
	tdxtesting "github.com/google/go-tdx-guest/testing"
	"github.com/proofline/proofline/attest/attesttest/fakeamd"
	"github.com/proofline/proofline/attest/attesttest/fakeintel"
	"github.com/proofline/proofline/verifier"
	"github.com/proofline/proofline/verifier/collateral"
	"github.com/proofline/proofline/verifier/roots"
	"github.com/proofline/proofline/verifier/snp"
)

// authenticFixture is every document the fake PCS and KDS serve for one Intel PKI and the AMD
// PKIs of Milan, Genoa and Turin, the roots pinning them, and the same documents from look-alike
// PKIs (same names, other keys) dated fifty years on: what a forger on the route could serve.
type authenticFixture struct {
	roots           *roots.Set
	genuine, forged map[string]*collateral.Response // by URL
}

func newAuthenticFixture(t *testing.T) *authenticFixture {
	t.Helper()
	later := testNow.AddDate(50, 0, 0)
	f := &authenticFixture{genuine: map[string]*collateral.Response{}, forged: map[string]*collateral.Response{}}
	for i, at := range []time.Time{testNow, later} {
		intel, err := fakeintel.New(at)
		if err != nil {
			t.Fatal(err)
		}
		opts := fakeintel.DefaultCollateralOptions(at)
		opts.TCBInfo.EvaluationDataNumber += i * 1000
		rs, err := intel.Collateral(opts)
		if err != nil {
			t.Fatal(err)
		}
		into := f.genuine
		if i == 1 {
			into = f.forged
		} else {
			f.roots = &roots.Set{Intel: []*x509.Certificate{intel.Root}, Test: true, AMD: map[string]*roots.AMDProduct{}}
		}
		keys := fakeamd.DefaultKeys()
		if i == 1 {
			keys = fakeamd.AlternateKeys()
		}
		for _, line := range []string{"Milan", "Genoa", "Turin"} {
			amd, err := fakeamd.NewWithKeys(line, at, keys)
			if err != nil {
				t.Fatal(err)
			}
			ars, err := amd.Collateral(fakeamd.CRLOptions{})
			if err != nil {
				t.Fatal(err)
			}
			rs = append(rs, ars...)
			if i == 0 {
				f.roots.AMD[line] = &roots.AMDProduct{Line: line, ARK: amd.ARK, ASK: amd.ASK, ASVK: amd.ASVK}
			}
		}
		for _, r := range rs {
			into[r.URL] = r
		}
	}
	// Per vendor PKI: Intel's TCB info, QE identity and two CRLs; per AMD product line two CRLs,
	// two cert_chains and the VCEK.
	if len(f.genuine) != 19 || len(f.forged) != 19 {
		t.Fatalf("%d genuine and %d forged documents, want 19 of each (4 Intel, 5 for each of 3 AMD lines)", len(f.genuine), len(f.forged))
	}
	return f
}

func (f *authenticFixture) check(t *testing.T, r *collateral.Response) error {
	t.Helper()
	v, err := collateral.ValidityOf(r)
	if err != nil {
		t.Fatalf("%s: %v", r.URL, err)
	}
	return verifier.AuthenticCollateral(f.roots)(r, v)
}

// TestAuthenticCollateral: every genuine document is authentic; each forgery, built from a
// genuine document, is not.
func TestAuthenticCollateral(t *testing.T) {
	f := newAuthenticFixture(t)
	for u, r := range f.genuine {
		if err := f.check(t, r); err != nil {
			t.Errorf("genuine %s: %v", u, err)
		}
	}
	// A look-alike PKI's documents: the same URLs, names and headers' shape, other keys.
	for u, r := range f.forged {
		if err := f.check(t, r); err == nil {
			t.Errorf("forged %s (look-alike PKI, 50 years on) passed", u)
		}
	}
	var tcbInfo *collateral.Response
	for u, r := range f.genuine {
		if strings.Contains(u, "/tcb?") {
			tcbInfo = r
		}
	}
	qeID := f.genuine[pcs.QeIdentityURL()]
	pckCRL := f.genuine[pcs.PckCrlURL("platform")]
	forgedPCKCRL := f.forged[pcs.PckCrlURL("platform")]
	amdCRL := f.genuine[kds.CrlLinkByKey("Milan", abi.VcekReportSigner)]
	var rootCRL, vcek *collateral.Response
	for u, r := range f.genuine {
		switch {
		case strings.HasSuffix(u, ".der") || strings.HasSuffix(u, ".crl"):
			rootCRL = r
		case strings.Contains(u, "/vcek/v1/Milan/01"):
			vcek = r
		}
	}
	if rootCRL == nil || vcek == nil {
		t.Fatalf("the Root CA CRL or the VCEK is missing from %v", maps.Keys(f.genuine))
	}
	chain := f.genuine[kds.ProductCertChainURL(abi.VcekReportSigner, "Milan")]
	forgedChain := f.forged[kds.ProductCertChainURL(abi.VcekReportSigner, "Milan")]
	edit := func(r *collateral.Response, change func(*collateral.Response)) *collateral.Response {
		c := &collateral.Response{URL: r.URL, Status: http.StatusOK, Body: bytes.Clone(r.Body), Headers: map[string][]string{}}
		for k, v := range r.Headers {
			c.Headers[k] = append([]string(nil), v...)
		}
		change(c)
		return c
	}
	forgedTCB := f.forged[tcbInfo.URL]
	for name, r := range map[string]*collateral.Response{
		"TCB info with a changed TCB level": edit(tcbInfo, func(c *collateral.Response) {
			c.Body = bytes.Replace(c.Body, []byte(`"UpToDate"`), []byte(`"Revoked!"`), 1)
		}),
		"TCB info without its issuer chain": edit(tcbInfo, func(c *collateral.Response) { delete(c.Headers, pcs.TcbInfoIssuerChainPhrase) }),
		"TCB info signed by a look-alike, with the genuine issuer chain": edit(forgedTCB, func(c *collateral.Response) {
			c.Headers[pcs.TcbInfoIssuerChainPhrase] = tcbInfo.Headers[pcs.TcbInfoIssuerChainPhrase]
		}),
		"QE identity with a changed signature": edit(qeID, func(c *collateral.Response) {
			i := bytes.Index(c.Body, []byte(`"signature":"`)) + len(`"signature":"`)
			sig, err := hex.DecodeString(string(c.Body[i : i+128]))
			if err != nil {
				t.Fatal(err)
			}
			sig[0] ^= 1
			copy(c.Body[i:], hex.EncodeToString(sig))
		}),
		"QE identity under the TCB info's field and header": edit(qeID, func(c *collateral.Response) {
			c.Body = bytes.Replace(c.Body, []byte(`"enclaveIdentity"`), []byte(`"tcbInfo"`), 1)
			c.Headers[pcs.TcbInfoIssuerChainPhrase] = c.Headers[pcs.SgxQeIdentityIssuerChainPhrase]
		}),
		"QE identity served at the TCB info's URL":  edit(qeID, func(c *collateral.Response) { c.URL = tcbInfo.URL }),
		"TCB info served at another FMSPC's URL":    edit(tcbInfo, func(c *collateral.Response) { c.URL = pcs.TcbInfoURL("00906ed50000") }),
		"the Root CA CRL served at the PCK CRL URL": edit(rootCRL, func(c *collateral.Response) { c.URL = pckCRL.URL }),
		"the Platform CA's CRL served at the Processor CA's URL": edit(pckCRL, func(c *collateral.Response) {
			c.URL = pcs.PckCrlURL("processor")
		}),
		"the VCEK served at another chip's URL": edit(vcek, func(c *collateral.Response) {
			c.URL = strings.Replace(c.URL, "/Milan/01", "/Milan/ff", 1)
		}),
		"the VCEK served at another TCB's URL": edit(vcek, func(c *collateral.Response) {
			c.URL = strings.Replace(c.URL, "snpSPL=", "snpSPL=1", 1)
		}),
		"the Milan CRL served at Genoa's URL": edit(amdCRL, func(c *collateral.Response) {
			c.URL = kds.CrlLinkByKey("Genoa", abi.VcekReportSigner)
		}),
		"the VCEK cert_chain served at the VLEK cert_chain URL": edit(chain, func(c *collateral.Response) {
			c.URL = kds.ProductCertChainURL(abi.VlekReportSigner, "Milan")
		}),
		"a look-alike PCK CRL with the genuine issuer chain": edit(forgedPCKCRL, func(c *collateral.Response) {
			c.Headers[pcs.SgxPckCrlIssuerChainPhrase] = pckCRL.Headers[pcs.SgxPckCrlIssuerChainPhrase]
		}),
		"the genuine PCK CRL with a look-alike's issuer chain": edit(pckCRL, func(c *collateral.Response) {
			c.Headers[pcs.SgxPckCrlIssuerChainPhrase] = forgedPCKCRL.Headers[pcs.SgxPckCrlIssuerChainPhrase]
		}),
		"the genuine PCK CRL without its issuer chain": edit(pckCRL, func(c *collateral.Response) { delete(c.Headers, pcs.SgxPckCrlIssuerChainPhrase) }),
		"the AMD CRL with a flipped signature bit":     edit(amdCRL, func(c *collateral.Response) { c.Body[len(c.Body)-1] ^= 1 }),
		"a cert_chain of a look-alike ASK under the genuine ARK": edit(chain, func(c *collateral.Response) {
			ask := forgedChain.Body[:bytes.Index(forgedChain.Body[1:], []byte("-----BEGIN"))+1]
			ark := chain.Body[bytes.Index(chain.Body[1:], []byte("-----BEGIN"))+1:]
			c.Body = append(bytes.Clone(ask), ark...)
		}),
		"a cert_chain of the ARK alone": edit(chain, func(c *collateral.Response) {
			c.Body = c.Body[bytes.Index(c.Body[1:], []byte("-----BEGIN"))+1:]
		}),
	} {
		if err := f.check(t, r); err == nil {
			t.Errorf("%s passed", name)
		} else {
			t.Logf("%s: %v", name, err)
		}
	}
	// A kind that neither vendor serves.
	if err := verifier.AuthenticCollateral(f.roots)(tcbInfo, collateral.Validity{Kind: "something"}); err == nil || !strings.Contains(err.Error(), "neither") {
		t.Errorf("unknown kind: %v", err)
	}
}

// TestAuthenticCollateralNilRoots: nil entries in a hand-built root set are skipped, not
// dereferenced.
func TestAuthenticCollateralNilRoots(t *testing.T) {
	f := newAuthenticFixture(t)
	f.roots.Intel = append([]*x509.Certificate{nil}, f.roots.Intel...)
	f.roots.AMD["Bergamo"] = nil
	f.roots.AMD["Siena"] = &roots.AMDProduct{Line: "Siena"}
	for u, r := range f.genuine {
		if err := f.check(t, r); err != nil {
			t.Errorf("genuine %s: %v", u, err)
		}
	}
	for u, r := range f.forged {
		if err := f.check(t, r); err == nil {
			t.Errorf("forged %s passed", u)
		}
	}
}

// TestAuthenticCollateralReal: Intel's own PCS responses (TCB info v4 and v5, QE identity, the
// PCK CRL with its issuer-chain header, the Root CA CRL, as go-tdx-guest records them) and AMD's
// own Milan VCEK and cert_chains (go-sev-guest's test data) authenticate against the built-in vendor roots at
// the URLs a verifier asks for them; the real encodings (percent-encoded headers, Intel's names
// and CRLs, AMD's RSA-PSS signatures and KDS extensions) pass, not only the fake PKIs'.
func TestAuthenticCollateralReal(t *testing.T) {
	check := verifier.AuthenticCollateral(builtinRoots(t))
	fake := verifier.AuthenticCollateral(newAuthenticFixture(t).roots)
	var docs []*collateral.Response
	for u, r := range tdxtesting.TestGetter.Responses {
		docs = append(docs, &collateral.Response{URL: u, Status: http.StatusOK, Headers: r.Header, Body: r.Body})
	}
	c, err := x509.ParseCertificate(sevtestdata.VcekBytes)
	if err != nil {
		t.Fatal(err)
	}
	ext, err := snp.ParseCertExtensions(c.Extensions, abi.VcekReportSigner, "Milan")
	if err != nil {
		t.Fatal(err)
	}
	tcb, err := kds.ComposeTCBParts(kds.TCBParts{BlSpl: ext.BlSPL, TeeSpl: ext.TeeSPL, Spl4: ext.Spl4, Spl5: ext.Spl5,
		Spl6: ext.Spl6, Spl7: ext.Spl7, SnpSpl: ext.SNPSPL, UcodeSpl: ext.UcodeSPL})
	if err != nil {
		t.Fatal(err)
	}
	docs = append(docs,
		&collateral.Response{URL: snp.VCEKURL("Milan", ext.HWID, uint64(tcb)), Status: http.StatusOK, Body: sevtestdata.VcekBytes},
		&collateral.Response{URL: kds.ProductCertChainURL(abi.VcekReportSigner, "Milan"), Status: http.StatusOK, Body: trust.AskArkMilanVcekBytes},
		&collateral.Response{URL: kds.ProductCertChainURL(abi.VlekReportSigner, "Milan"), Status: http.StatusOK, Body: trust.AskArkMilanVlekBytes})
	if len(docs) != 8 {
		t.Fatalf("%d real documents, want 8 (5 Intel, 3 AMD)", len(docs))
	}
	for _, r := range docs {
		v, err := collateral.ValidityOf(r)
		if err != nil {
			t.Fatalf("%s: %v", r.URL, err)
		}
		if err := check(r, v); err != nil {
			t.Errorf("real %s (%s): %v", v.Kind, r.URL, err)
		}
		// The same document under the fake roots of a test-mode verifier is refused.
		if err := fake(r, v); err == nil {
			t.Errorf("real %s (%s) passed against the fake roots", v.Kind, r.URL)
		}
	}
}
