package fakeintel

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"strings"
	"testing"
	"time"

	"github.com/google/go-tdx-guest/abi"
	"github.com/google/go-tdx-guest/pcs"
	pb "github.com/google/go-tdx-guest/proto/tdx"
	"github.com/google/go-tdx-guest/validate"
	"github.com/google/go-tdx-guest/verify"
	"github.com/google/go-tdx-guest/verify/trust"

	"github.com/proofline/proofline/verifier/collateral"
)

// testNow is a fixed clock well inside every default validity window.
var testNow = time.Date(2026, 11, 3, 10, 0, 0, 0, time.UTC)

// replay serves recorded responses to go-tdx-guest by exact URL.
type replay map[string]*collateral.Response

var (
	_ trust.HTTPSGetter        = replay(nil)
	_ trust.ContextHTTPSGetter = replay(nil)
)

func (r replay) Get(u string) (map[string][]string, []byte, error) {
	return r.GetContext(context.Background(), u)
}

func (r replay) GetContext(_ context.Context, u string) (map[string][]string, []byte, error) {
	resp, ok := r[u]
	if !ok {
		return nil, nil, fmt.Errorf("404: %s", u)
	}
	return resp.Headers, resp.Body, nil
}

func newPKI(t *testing.T) *PKI {
	t.Helper()
	p, err := New(testNow)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func mustQuote(t *testing.T, p *PKI, o QuoteOptions) []byte {
	t.Helper()
	q, err := p.Quote(o)
	if err != nil {
		t.Fatal(err)
	}
	return q
}

func mustCollateral(t *testing.T, p *PKI, o CollateralOptions) replay {
	t.Helper()
	rs, err := p.Collateral(o)
	if err != nil {
		t.Fatal(err)
	}
	r := replay{}
	for _, resp := range rs {
		r[resp.URL] = resp
	}
	return r
}

// fullOptions are go-tdx-guest's strictest options: collateral and revocation checks on, the fake
// root as the only trusted root, every clock set. A fresh value per call (verify mutates it).
func fullOptions(p *PKI, getter trust.HTTPSGetter, now time.Time) *verify.Options {
	return &verify.Options{
		GetCollateral:    true,
		CheckRevocations: true,
		TrustedRoots:     p.RootPool(),
		Getter:           getter,
		Now:              &verify.TimeSet{PckCertChain: now, TcbInfo: now, QeIdentity: now, PckCrl: now, RootCaCrl: now},
	}
}

// verifyQuote parses raw with go-tdx-guest and verifies it fully; it also returns the TDX and QE
// TCB levels go-tdx-guest matched (which it reports even when it rejects the status).
func verifyQuote(t *testing.T, p *PKI, raw []byte, getter trust.HTTPSGetter, now time.Time) (tdx, qe pcs.TcbLevel, err error) {
	t.Helper()
	quote, err := abi.QuoteToProto(raw)
	if err != nil {
		t.Fatalf("abi.QuoteToProto: %v", err)
	}
	opts := fullOptions(p, getter, now)
	err = verify.TdxQuote(quote, opts)
	tdx, qe, _ = verify.SupportedTcbLevelsFromCollateral(quote, opts)
	return tdx, qe, err
}

func wantError(t *testing.T, err error, substr string) {
	t.Helper()
	if err == nil || !strings.Contains(err.Error(), substr) {
		t.Fatalf("error = %v, want one containing %q", err, substr)
	}
}

// Proof 1: the default v4 and v5 quotes with the default collateral pass go-tdx-guest's full
// verification, and every serialised field reads back through go-tdx-guest's parser.
func TestDefaultQuotesVerify(t *testing.T) {
	p := newPKI(t)
	getter := mustCollateral(t, p, DefaultCollateralOptions(testNow))
	for _, version := range []int{4, 5} {
		t.Run(fmt.Sprintf("v%d", version), func(t *testing.T) {
			o := DefaultQuoteOptions()
			o.Version = version
			raw := mustQuote(t, p, o)
			quote, err := abi.QuoteToProto(raw)
			if err != nil {
				t.Fatal(err)
			}
			checkFields(t, quote, o)
			tdx, qe, err := verifyQuote(t, p, raw, getter, testNow)
			if err != nil {
				t.Fatalf("verify.TdxQuote: %v", err)
			}
			if tdx.TcbStatus != pcs.TcbComponentStatusUpToDate || qe.TcbStatus != pcs.TcbComponentStatusUpToDate {
				t.Errorf("TCB status %q, QE status %q; want UpToDate", tdx.TcbStatus, qe.TcbStatus)
			}
			// The raw bytes round-trip through go-tdx-guest's serialiser.
			back, err := abi.QuoteToAbiBytes(quote)
			if err != nil || !bytes.Equal(back, raw) {
				t.Errorf("abi.QuoteToAbiBytes round trip differs (err %v)", err)
			}
		})
	}
}

// checkFields compares what go-tdx-guest parses with the options the quote was made from.
func checkFields(t *testing.T, quote any, o QuoteOptions) {
	t.Helper()
	type body interface {
		GetTeeTcbSvn() []byte
		GetMrSeam() []byte
		GetMrSignerSeam() []byte
		GetSeamAttributes() []byte
		GetTdAttributes() []byte
		GetXfam() []byte
		GetMrTd() []byte
		GetMrConfigId() []byte
		GetMrOwner() []byte
		GetMrOwnerConfig() []byte
		GetRtmrs() [][]byte
		GetReportData() []byte
	}
	var (
		b      body
		header *pb.Header
		signed *pb.Ecdsa256BitQuoteV4AuthData
	)
	switch q := quote.(type) {
	case *pb.QuoteV4:
		b, header, signed = q.GetTdQuoteBody(), q.GetHeader(), q.GetSignedData()
	case *pb.QuoteV5:
		d := q.GetTdQuoteBodyDescriptor()
		if d.GetTdQuoteBodyType() != 3 || d.GetTdQuoteBodySize() != 648 {
			t.Errorf("v5 body descriptor type %d size %d, want 3 and 648", d.GetTdQuoteBodyType(), d.GetTdQuoteBodySize())
		}
		v5 := d.GetTdQuoteBodyV5()
		if !bytes.Equal(v5.GetTeeTcbSvn2(), o.TeeTcbSvn2[:]) || !bytes.Equal(v5.GetMrServiceTd(), o.MrServiceTd[:]) {
			t.Errorf("v5 TEE_TCB_SVN2/MRSERVICETD differ")
		}
		b, header, signed = v5, q.GetHeader(), q.GetSignedData()
	default:
		t.Fatalf("unexpected quote type %T", quote)
	}
	if int(header.GetVersion()) != o.Version || header.GetAttestationKeyType() != 2 || header.GetTeeType() != 0x81 ||
		!bytes.Equal(header.GetQeVendorId(), IntelQEVendorID[:]) || !bytes.Equal(header.GetUserData(), o.UserData[:]) {
		t.Errorf("header = %v", header)
	}
	fields := []struct {
		name      string
		got, want []byte
	}{
		{"TEE_TCB_SVN", b.GetTeeTcbSvn(), o.TeeTcbSvn[:]},
		{"MRSEAM", b.GetMrSeam(), o.MrSeam[:]},
		{"MRSIGNERSEAM", b.GetMrSignerSeam(), o.MrSignerSeam[:]},
		{"SEAMATTRIBUTES", b.GetSeamAttributes(), o.SeamAttributes[:]},
		{"TDATTRIBUTES", b.GetTdAttributes(), o.TdAttributes[:]},
		{"XFAM", b.GetXfam(), o.Xfam[:]},
		{"MRTD", b.GetMrTd(), o.MrTd[:]},
		{"MRCONFIGID", b.GetMrConfigId(), o.MrConfigID[:]},
		{"MROWNER", b.GetMrOwner(), o.MrOwner[:]},
		{"MROWNERCONFIG", b.GetMrOwnerConfig(), o.MrOwnerConfig[:]},
		{"RTMR0", b.GetRtmrs()[0], o.Rtmrs[0][:]},
		{"RTMR3", b.GetRtmrs()[3], o.Rtmrs[3][:]},
		{"REPORTDATA", b.GetReportData(), o.ReportData[:]},
	}
	qe := signed.GetCertificationData().GetQeReportCertificationData()
	r := qe.GetQeReport()
	fields = append(fields, []struct {
		name      string
		got, want []byte
	}{
		{"QE CPUSVN", r.GetCpuSvn(), o.QECPUSVN[:]},
		{"QE ATTRIBUTES", r.GetAttributes(), o.QEAttributes[:]},
		{"QE MRENCLAVE", r.GetMrEnclave(), o.QEMrEnclave[:]},
		{"QE MRSIGNER", r.GetMrSigner(), o.QEMrSigner[:]},
		{"QE auth data", qe.GetQeAuthData().GetData(), o.QEAuthData},
	}...)
	for _, f := range fields {
		if !bytes.Equal(f.got, f.want) {
			t.Errorf("%s = %x, want %x", f.name, f.got, f.want)
		}
	}
	if r.GetMiscSelect() != o.QEMiscSelect || r.GetIsvProdId() != uint32(o.QEIsvProdID) || r.GetIsvSvn() != uint32(o.QEIsvSvn) {
		t.Errorf("QE report misc/prod/svn = %d/%d/%d", r.GetMiscSelect(), r.GetIsvProdId(), r.GetIsvSvn())
	}
}

// The PCK carries the SGX extensions go-tdx-guest reads, with the values exported by PKI, and
// the collateral is served at the URLs go-tdx-guest builds.
func TestPKIShape(t *testing.T) {
	p := newPKI(t)
	ext, err := pcs.PckCertificateExtensions(p.PCK)
	if err != nil {
		t.Fatal(err)
	}
	want := &pcs.PckExtensions{
		PPID:  hex.EncodeToString(DefaultPPID[:]),
		FMSPC: "50806ffa4e00",
		PCEID: "0000",
		TCB:   pcs.PckCertTCB{PCESvn: DefaultPCESVN, CPUSvn: DefaultCPUSVN[:], CPUSvnComponents: DefaultCPUSVN[:]},
	}
	if fmt.Sprint(ext) != fmt.Sprint(want) {
		t.Errorf("PCK extensions = %+v, want %+v", ext, want)
	}
	for _, c := range []struct {
		cert *x509.Certificate
		cn   string
	}{{p.Root, RootCN}, {p.PlatformCA, PlatformCACN}, {p.TCBSigning, TCBSigningCN}, {p.PCK, PCKCN}} {
		if c.cert.Subject.CommonName != c.cn || !c.cert.NotBefore.Equal(testNow.Add(-time.Hour)) {
			t.Errorf("certificate %q valid from %v", c.cert.Subject, c.cert.NotBefore)
		}
	}
	if got := p.Root.Subject.String(); got != "CN=Intel SGX Root CA,O=Intel Corporation,L=Santa Clara,ST=CA,C=US" {
		t.Errorf("root subject %q", got)
	}
	if !bytes.Contains(p.RootsPEM(), []byte("BEGIN CERTIFICATE")) {
		t.Error("RootsPEM is not PEM")
	}

	rs, err := p.Collateral(DefaultCollateralOptions(testNow))
	if err != nil {
		t.Fatal(err)
	}
	urls := []string{pcs.TcbInfoURL("50806ffa4e00"), pcs.QeIdentityURL(), pcs.PckCrlURL("platform"), p.Root.CRLDistributionPoints[0]}
	set := collateral.Set{}
	if err := set.Add(rs...); err != nil {
		t.Fatal(err)
	}
	if got := set.URLs(); len(got) != len(urls) {
		t.Fatalf("collateral URLs %v, want %v", got, urls)
	}
	for _, u := range urls {
		if _, err := set.Get(context.Background(), u); err != nil {
			t.Error(err)
		}
	}
	if !strings.HasPrefix(RootCRLURL, "https://certificates.trustedservices.intel.com/") {
		t.Errorf("root CRL URL %s", RootCRLURL)
	}
	// The issuer chain header is Intel's percent-encoding of two PEM certificates.
	chain := rs[0].Header("TCB-Info-Issuer-Chain")
	if len(chain) != 1 || !strings.HasPrefix(chain[0], "-----BEGIN%20CERTIFICATE-----%0A") {
		t.Fatalf("TCB-Info-Issuer-Chain = %q", chain)
	}
	// The tcbInfo value is byte-exact what was signed, and parses as go-tdx-guest's type.
	var body struct {
		TCBInfo   json.RawMessage `json:"tcbInfo"`
		Signature string          `json:"signature"`
	}
	if err := json.Unmarshal(rs[0].Body, &body); err != nil {
		t.Fatal(err)
	}
	var info pcs.TdxTcbInfo
	if err := json.Unmarshal(rs[0].Body, &info); err != nil {
		t.Fatal(err)
	}
	if info.TcbInfo.ID != "TDX" || info.TcbInfo.Version != 3 || len(info.TcbInfo.TcbLevels) != 7 || len(body.Signature) != 128 {
		t.Errorf("tcbInfo = %+v", info.TcbInfo)
	}
}

// Every default TCB level is reachable from the quote's TEE_TCB_SVN alone; go-tdx-guest accepts
// only UpToDate (proof 2 for OutOfDate), and no level matches TEE_TCB_SVN[0] = 0.
func TestTCBStatuses(t *testing.T) {
	p := newPKI(t)
	getter := mustCollateral(t, p, DefaultCollateralOptions(testNow))
	for _, l := range defaultLevelStatuses {
		t.Run(string(l.status), func(t *testing.T) {
			o := DefaultQuoteOptions()
			o.TeeTcbSvn = TeeTcbSvnFor(l.status)
			tdx, _, err := verifyQuote(t, p, mustQuote(t, p, o), getter, testNow)
			if tdx.TcbStatus != l.status {
				t.Errorf("matched TCB status %q, want %q", tdx.TcbStatus, l.status)
			}
			switch {
			case l.status == pcs.TcbComponentStatusUpToDate && err != nil:
				t.Errorf("UpToDate rejected: %v", err)
			case l.status == pcs.TcbComponentStatusOutOfDate && !errors.Is(err, verify.ErrTdxTcbStatus) && !strings.Contains(fmt.Sprint(err), verify.ErrTdxTcbStatus.Error()):
				t.Errorf("OutOfDate: error %v, want %v", err, verify.ErrTdxTcbStatus)
			case l.status != pcs.TcbComponentStatusUpToDate && err == nil:
				t.Errorf("status %q accepted", l.status)
			}
		})
	}
	t.Run("no level", func(t *testing.T) {
		o := DefaultQuoteOptions()
		o.TeeTcbSvn[0] = 0
		_, _, err := verifyQuote(t, p, mustQuote(t, p, o), getter, testNow)
		wantError(t, err, "no matching TCB level found")
	})
}

// Proof 2: revoking the PCK (or the Platform CA, or the TCB Signing certificate) makes
// go-tdx-guest reject the quote.
func TestRevocation(t *testing.T) {
	p := newPKI(t)
	raw := mustQuote(t, p, DefaultQuoteOptions())
	for _, tc := range []struct {
		name   string
		change func(*CollateralOptions)
		want   string
	}{
		{"PCK", func(o *CollateralOptions) { o.PCKCRL.Revoked = []*big.Int{big.NewInt(7), p.PCK.SerialNumber} },
			"PCK Leaf certificate in PCK certificate chain was revoked"},
		{"Platform CA", func(o *CollateralOptions) { o.RootCRL.Revoked = []*big.Int{p.PlatformCA.SerialNumber} },
			"intermediate certificate in PCK certificate chain was revoked"},
		{"TCB Signing", func(o *CollateralOptions) { o.RootCRL.Revoked = []*big.Int{p.TCBSigning.SerialNumber} },
			"signing certificate was revoked"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := DefaultCollateralOptions(testNow)
			tc.change(&o)
			_, _, err := verifyQuote(t, p, raw, mustCollateral(t, p, o), testNow)
			wantError(t, err, tc.want)
		})
	}
}

// Proof 3: flipping a REPORT_DATA byte breaks the quote signature; ResignQuote repairs it and the
// flipped byte is what go-tdx-guest reads.
func TestResignQuote(t *testing.T) {
	p := newPKI(t)
	getter := mustCollateral(t, p, DefaultCollateralOptions(testNow))
	for _, version := range []int{4, 5} {
		t.Run(fmt.Sprintf("v%d", version), func(t *testing.T) {
			o := DefaultQuoteOptions()
			o.Version = version
			raw := mustQuote(t, p, o)
			l, err := ParseLayout(raw)
			if err != nil {
				t.Fatal(err)
			}
			mutated := append([]byte(nil), raw...)
			mutated[l.ReportDataOffset+5] ^= 0x80

			if _, _, err := verifyQuote(t, p, mutated, getter, testNow); !errors.Is(err, verify.ErrHashVerificationFail) {
				t.Fatalf("mutated quote: error %v, want %v", err, verify.ErrHashVerificationFail)
			}
			resigned, err := p.ResignQuote(mutated)
			if err != nil {
				t.Fatal(err)
			}
			if _, _, err := verifyQuote(t, p, resigned, getter, testNow); err != nil {
				t.Fatalf("re-signed quote: %v", err)
			}
			// Only the signature data changed, and go-tdx-guest reads the flipped byte.
			if !bytes.Equal(resigned[:l.SignedLen], mutated[:l.SignedLen]) {
				t.Error("re-signing changed the signed region")
			}
			quote, _ := abi.QuoteToProto(resigned)
			o.ReportData[5] ^= 0x80
			checkFields(t, quote, o)

			// Keeping the old QE report data leaves the new attestation key unbound.
			unbound, err := p.Resign(mutated, ResignOptions{KeepQEReportData: true})
			if err != nil {
				t.Fatal(err)
			}
			if _, _, err := verifyQuote(t, p, unbound, getter, testNow); err == nil || !strings.Contains(err.Error(), verify.ErrSHA56VerificationFail.Error()) {
				t.Errorf("unbound attestation key: error %v, want %v", err, verify.ErrSHA56VerificationFail)
			}
		})
	}
}

// Each knob produces the failure it is meant for.
func TestNegativeKnobs(t *testing.T) {
	p := newPKI(t)
	defaultQuote := mustQuote(t, p, DefaultQuoteOptions())
	for _, tc := range []struct {
		name  string
		quote func(*QuoteOptions)
		coll  func(*CollateralOptions)
		now   time.Time
		want  string
	}{
		{name: "TCB info signature", coll: func(o *CollateralOptions) { o.TCBInfo.CorruptSignature = true },
			want: "tcbInfo response verification failed"},
		{name: "QE identity signature", coll: func(o *CollateralOptions) { o.QEIdentity.CorruptSignature = true },
			want: "QeIdentity response verification failed"},
		{name: "PCK CRL signature", coll: func(o *CollateralOptions) { o.PCKCRL.CorruptSignature = true },
			want: "PCK CRL verification failed"},
		{name: "root CRL signature", coll: func(o *CollateralOptions) { o.RootCRL.CorruptSignature = true },
			want: "root CA CRL verification failed"},
		{name: "TCB info expired", now: testNow.AddDate(0, 0, 31), want: verify.ErrTcbInfoExpired.Error()},
		{name: "PCK CRL expired", coll: func(o *CollateralOptions) { o.PCKCRL.NextUpdate = testNow.Add(-time.Minute) },
			want: verify.ErrPCKCrlExpired.Error()},
		{name: "FMSPC mismatch", coll: func(o *CollateralOptions) { o.TCBInfo.FMSPC = "00906ed50000" },
			want: "FMSPC from PCK Certificate"},
		{name: "tcbInfo version 2", coll: func(o *CollateralOptions) { o.TCBInfo.Version = 2 },
			want: "tcbInfo version 2 does not match"},
		{name: "MRSIGNERSEAM", quote: func(o *QuoteOptions) { o.MrSignerSeam[0] = 1 },
			want: "MRSIGNERSEAM value from TD Quote Body"},
		{name: "QE out of date", quote: func(o *QuoteOptions) { o.QEIsvSvn = 3 },
			want: verify.ErrEnclaveTcbStatus.Error()},
		{name: "QE mrsigner", quote: func(o *QuoteOptions) { o.QEMrSigner[0] ^= 1 },
			want: "MRSIGNER value"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			raw := defaultQuote
			if tc.quote != nil {
				o := DefaultQuoteOptions()
				tc.quote(&o)
				raw = mustQuote(t, p, o)
			}
			co := DefaultCollateralOptions(testNow)
			if tc.coll != nil {
				tc.coll(&co)
			}
			now := testNow
			if !tc.now.IsZero() {
				now = tc.now
			}
			_, _, err := verifyQuote(t, p, raw, mustCollateral(t, p, co), now)
			wantError(t, err, tc.want)
		})
	}
}

// With TEE_TCB_SVN[1] > 0 (a TDX module with a major version, as on TDX 1.5 platforms),
// go-tdx-guest takes the status from tdxModuleIdentities "TDX_<major>" and returns it alone: the
// status of the matched platform TCB level is ignored. This pins that behaviour down so that the
// verifier knows go-tdx-guest's result is not Intel's combined status on this path.
func TestModuleIdentityPath(t *testing.T) {
	p := newPKI(t)
	o := DefaultQuoteOptions()
	o.Version = 5
	o.TeeTcbSvn[1] = 1
	raw := mustQuote(t, p, o)

	if _, _, err := verifyQuote(t, p, raw, mustCollateral(t, p, DefaultCollateralOptions(testNow)), testNow); err != nil {
		t.Fatalf("TDX_01 UpToDate: %v", err)
	}
	co := DefaultCollateralOptions(testNow)
	co.TCBInfo.ModuleIdentities[0].TCBLevels[0].Status = pcs.TcbComponentStatusOutOfDate
	if _, _, err := verifyQuote(t, p, raw, mustCollateral(t, p, co), testNow); err == nil {
		t.Error("TDX_01 OutOfDate accepted")
	}
	co = DefaultCollateralOptions(testNow)
	co.TCBInfo.TCBLevels[0].Status = pcs.TcbComponentStatusOutOfDate
	tdx, _, err := verifyQuote(t, p, raw, mustCollateral(t, p, co), testNow)
	if err != nil || tdx.TcbStatus != pcs.TcbComponentStatusUpToDate {
		t.Errorf("platform level OutOfDate, module UpToDate: go-tdx-guest now says %q, %v (behaviour changed)", tdx.TcbStatus, err)
	}
}

// go-tdx-guest's validate package handles only v4 quotes (verify handles both).
func TestValidateRejectsV5(t *testing.T) {
	p := newPKI(t)
	o := DefaultQuoteOptions()
	o.Version = 5
	quote, err := abi.QuoteToProto(mustQuote(t, p, o))
	if err != nil {
		t.Fatal(err)
	}
	wantError(t, validate.TdxQuote(quote, &validate.Options{}), "unsupported quote type")
}

// ParseLayout and Resign refuse what they cannot locate.
func TestLayoutErrors(t *testing.T) {
	p := newPKI(t)
	raw := mustQuote(t, p, DefaultQuoteOptions())
	for _, bad := range [][]byte{nil, raw[:100], raw[:len(raw)-1], append([]byte{6, 0}, raw[2:]...)} {
		if _, err := p.ResignQuote(bad); err == nil {
			t.Errorf("ResignQuote accepted %d bytes", len(bad))
		}
	}
	if _, err := p.Quote(QuoteOptions{Version: 3}); err == nil {
		t.Error("Quote accepted version 3")
	}
}

// IssuePCK models another platform: a lower SGX TCB component matches no default level, and the
// TCB info moves to the new FMSPC's URL.
func TestIssuePCK(t *testing.T) {
	p := newPKI(t)
	p.CPUSVN[0] = 3
	p.FMSPC = [6]byte{0x00, 0x90, 0x6e, 0xd5, 0x00, 0x00}
	pck, err := p.IssuePCK(&p.PCKKey.PublicKey, testNow)
	if err != nil {
		t.Fatal(err)
	}
	p.PCK = pck
	getter := mustCollateral(t, p, DefaultCollateralOptions(testNow))
	if _, ok := getter[pcs.TcbInfoURL("00906ed50000")]; !ok {
		t.Fatal("TCB info not served at the new FMSPC")
	}
	_, _, err = verifyQuote(t, p, mustQuote(t, p, DefaultQuoteOptions()), getter, testNow)
	wantError(t, err, "no matching TCB level found")
}
