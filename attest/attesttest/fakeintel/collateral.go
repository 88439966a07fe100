package fakeintel

import (
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"math/big"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/google/go-tdx-guest/pcs"

	"github.com/proofline/proofline/verifier/collateral"
)

// The collateral follows Intel's "Intel SGX and Intel TDX Provisioning Certification Service
// (PCS) API" version 4: "Get TDX TCB Information" (tcbInfo version 3, id "TDX"), "Get TDX
// Quoting Enclave Identity" (enclaveIdentity version 2, id "TD_QE"), "Get PCK Certificate
// Revocation List" (ca=platform, DER) and the Root CA CRL at the root's CRL distribution point.
// TCB info and QE identity bodies are {"<name>":{…},"signature":"<hex r‖s>"}, where the ECDSA
// P-256/SHA-256 signature by the TCB Signing key covers the exact bytes of the {…} value.

// TDX module SVNs (TEE_TCB_SVN byte 0) that select each level of the default TCB info. Every
// default level has the platform's SGX components and PCE SVN, TDX module major version 0 and
// TDX late microcode SVN 3, so byte 0 alone decides the status. Byte 0 = 0 matches no level.
const (
	ModuleSVNUpToDate                          = 7
	ModuleSVNSWHardeningNeeded                 = 6
	ModuleSVNConfigurationNeeded               = 5
	ModuleSVNConfigurationAndSWHardeningNeeded = 4
	ModuleSVNOutOfDate                         = 3
	ModuleSVNOutOfDateConfigurationNeeded      = 2
	ModuleSVNRevoked                           = 1
)

// TeeTcbSvnFor returns DefaultTeeTcbSvn with byte 0 set so that, against the default TCB info,
// the quote's TDX TCB maps to status. It panics on a status that has no default level.
func TeeTcbSvnFor(status pcs.TcbComponentStatus) [16]byte {
	svn := DefaultTeeTcbSvn
	for _, l := range defaultLevelStatuses {
		if l.status == status {
			svn[0] = l.moduleSVN
			return svn
		}
	}
	panic("fakeintel: no default TCB level with status " + string(status))
}

var defaultLevelStatuses = []struct {
	moduleSVN byte
	status    pcs.TcbComponentStatus
	advisory  []string
}{
	{ModuleSVNUpToDate, pcs.TcbComponentStatusUpToDate, nil},
	{ModuleSVNSWHardeningNeeded, pcs.TcbComponentStatusSwHardeningNeeded, []string{"INTEL-SA-00615"}},
	{ModuleSVNConfigurationNeeded, pcs.TcbComponentStatusConfigurationNeeded, []string{"INTEL-SA-00767"}},
	{ModuleSVNConfigurationAndSWHardeningNeeded, pcs.TcbComponentStatusConfigurationAndSWHardeningNeeded, []string{"INTEL-SA-00615", "INTEL-SA-00767"}},
	{ModuleSVNOutOfDate, pcs.TcbComponentStatusOutOfDate, []string{"INTEL-SA-00837", "INTEL-SA-01036"}},
	{ModuleSVNOutOfDateConfigurationNeeded, pcs.TcbComponentStatusOutOfDateConfigurationNeeded, []string{"INTEL-SA-00837", "INTEL-SA-01036", "INTEL-SA-00767"}},
	{ModuleSVNRevoked, pcs.TcbComponentStatusRevoked, []string{"INTEL-SA-00106"}},
}

// TCBLevel is one entry of tcbInfo.tcbLevels. A quote matches the first level (levels are in
// descending order) whose SGX components and PCE SVN are ≤ the PCK's and whose TDX components are
// ≤ the quote's TEE_TCB_SVN (from index 2 when TEE_TCB_SVN[1] > 0).
type TCBLevel struct {
	SGXComponents [16]byte // sgxtcbcomponents[i].svn
	PCESVN        uint16
	TDXComponents [16]byte // tdxtcbcomponents[i].svn
	Date          time.Time
	Status        pcs.TcbComponentStatus // "" omits tcbStatus (a malformed level)
	AdvisoryIDs   []string
}

// ISVSVNLevel is a TCB level keyed by a single ISV SVN: an entry of enclaveIdentity.tcbLevels
// (QE ISVSVN) or of tdxModuleIdentities[].tcbLevels (TDX module SVN, TEE_TCB_SVN[0]). The first
// level whose ISVSVN is ≤ the reported SVN applies.
type ISVSVNLevel struct {
	ISVSVN      uint16
	Date        time.Time
	Status      pcs.TcbComponentStatus // "" omits tcbStatus (a malformed level)
	AdvisoryIDs []string
}

// TDXModuleIdentity is an entry of tcbInfo.tdxModuleIdentities. It is used when TEE_TCB_SVN[1]
// (the TDX module major version) is not zero: ID "TDX_<hex of TEE_TCB_SVN[1]>", e.g. "TDX_01".
type TDXModuleIdentity struct {
	ID             string
	MrSigner       [48]byte
	Attributes     [8]byte
	AttributesMask [8]byte
	TCBLevels      []ISVSVNLevel
}

// TCBInfoOptions are the contents of the TDX TCB info.
type TCBInfoOptions struct {
	ID                   string    // "TDX"
	Version              int       // 3
	IssueDate            time.Time // the zero time omits issueDate (a malformed document)
	NextUpdate           time.Time // the zero time omits nextUpdate (a malformed document)
	FMSPC                string    // lower-case hex; "" means the PCK's. The URL always uses the PCK's.
	PCEID                string    // hex; "" means the PCK's
	TCBType              int
	EvaluationDataNumber int
	// tdxModule: a quote's MRSIGNERSEAM must equal ModuleMrSigner and its SEAMATTRIBUTES &
	// ModuleAttributesMask must equal ModuleAttributes.
	ModuleMrSigner       [48]byte
	ModuleAttributes     [8]byte
	ModuleAttributesMask [8]byte
	ModuleIdentities     []TDXModuleIdentity
	TCBLevels            []TCBLevel
	// CorruptSignature flips a bit of the signature.
	CorruptSignature bool
}

// QEIdentityOptions are the contents of the TD QE identity.
type QEIdentityOptions struct {
	ID                   string    // "TD_QE"
	Version              int       // 2
	IssueDate            time.Time // the zero time omits issueDate (a malformed document)
	NextUpdate           time.Time // the zero time omits nextUpdate (a malformed document)
	EvaluationDataNumber int
	// MiscSelect and MiscSelectMask are the JSON hex bytes (go-tdx-guest reads them as a
	// little-endian uint32 and compares MISCSELECT & mask with MiscSelect).
	MiscSelect     [4]byte
	MiscSelectMask [4]byte
	Attributes     [16]byte
	AttributesMask [16]byte
	MrSigner       [32]byte
	IsvProdID      uint16
	TCBLevels      []ISVSVNLevel
	// CorruptSignature flips a bit of the signature.
	CorruptSignature bool
}

// CRLOptions are the contents of a CRL.
type CRLOptions struct {
	ThisUpdate time.Time
	NextUpdate time.Time
	Number     int64
	// Revoked lists serial numbers to revoke (e.g. PKI.PCK.SerialNumber in the PCK CRL, or
	// PKI.PlatformCA.SerialNumber or PKI.TCBSigning.SerialNumber in the Root CA CRL).
	Revoked []*big.Int
	// CorruptSignature flips a bit of the signature (the CRL still parses).
	CorruptSignature bool
}

// CollateralOptions are the contents of all four collateral responses.
type CollateralOptions struct {
	TCBInfo    TCBInfoOptions
	QEIdentity QEIdentityOptions
	PCKCRL     CRLOptions // issued by the Platform CA
	RootCRL    CRLOptions // issued by the Root CA
}

// DefaultCollateralOptions returns collateral under which the default quote (v4 or v5) is fully
// valid and UpToDate at now:
//   - TCB info and QE identity issued now-1h, next update now+30d, evaluation data number 18;
//   - TCB info for the PCK's FMSPC and PCEID, tdxModule mrsigner zero, attributes zero, mask
//     FFFFFFFFFFFFFFFF; one module identity "TDX_01" (same signer and attributes) with levels
//     ISVSVN 7 UpToDate and 3 OutOfDate;
//   - seven TCB levels, one per status, selected by TEE_TCB_SVN[0] (see ModuleSVNUpToDate…);
//   - QE identity of Intel's TD QE: mrsigner DefaultQEMrSigner, isvprodid 2, miscselect 0 with
//     mask FFFFFFFF, attributes 11000000000000000000000000000000 with mask
//     FBFFFFFFFFFFFFFF0000000000000000, levels ISVSVN 4 UpToDate and 2 OutOfDate;
//   - both CRLs issued now-1h, empty, number 1; PCK CRL next update now+30d, Root CA CRL now+1y.
func DefaultCollateralOptions(now time.Time) CollateralOptions {
	now = now.UTC()
	day := now.Truncate(24 * time.Hour)
	levelDate := func(i int) time.Time { return day.AddDate(0, -1-3*i, 0) }
	var ones8 [8]byte
	fill(ones8[:], 0xff)

	o := CollateralOptions{
		TCBInfo: TCBInfoOptions{
			ID:                   "TDX",
			Version:              3,
			IssueDate:            now.Add(-time.Hour),
			NextUpdate:           now.AddDate(0, 0, 30),
			EvaluationDataNumber: 18,
			ModuleAttributesMask: ones8,
			ModuleIdentities: []TDXModuleIdentity{{
				ID:             "TDX_01",
				AttributesMask: ones8,
				TCBLevels: []ISVSVNLevel{
					{ISVSVN: ModuleSVNUpToDate, Date: levelDate(0), Status: pcs.TcbComponentStatusUpToDate},
					{ISVSVN: ModuleSVNOutOfDate, Date: levelDate(1), Status: pcs.TcbComponentStatusOutOfDate, AdvisoryIDs: []string{"INTEL-SA-01036"}},
				},
			}},
		},
		QEIdentity: QEIdentityOptions{
			ID:                   "TD_QE",
			Version:              2,
			IssueDate:            now.Add(-time.Hour),
			NextUpdate:           now.AddDate(0, 0, 30),
			EvaluationDataNumber: 18,
			MiscSelectMask:       [4]byte{0xff, 0xff, 0xff, 0xff},
			Attributes:           [16]byte{0x11},
			AttributesMask:       [16]byte{0xfb, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff},
			MrSigner:             DefaultQEMrSigner,
			IsvProdID:            DefaultQEIsvProdID,
			TCBLevels: []ISVSVNLevel{
				{ISVSVN: DefaultQEIsvSvn, Date: levelDate(0), Status: pcs.TcbComponentStatusUpToDate},
				{ISVSVN: 2, Date: levelDate(2), Status: pcs.TcbComponentStatusOutOfDate, AdvisoryIDs: []string{"INTEL-SA-00615"}},
			},
		},
		PCKCRL:  CRLOptions{ThisUpdate: now.Add(-time.Hour), NextUpdate: now.AddDate(0, 0, 30), Number: 1},
		RootCRL: CRLOptions{ThisUpdate: now.Add(-time.Hour), NextUpdate: now.AddDate(1, 0, 0), Number: 1},
	}
	for i, l := range defaultLevelStatuses {
		tdx := DefaultTeeTcbSvn
		tdx[0] = l.moduleSVN
		o.TCBInfo.TCBLevels = append(o.TCBInfo.TCBLevels, TCBLevel{
			SGXComponents: DefaultCPUSVN,
			PCESVN:        DefaultPCESVN,
			TDXComponents: tdx,
			Date:          levelDate(i),
			Status:        l.status,
			AdvisoryIDs:   l.advisory,
		})
	}
	return o
}

// Collateral signs the collateral described by o and returns it as recorded PCS responses, in
// this order: TCB info at pcs.TcbInfoURL(PCK FMSPC), QE identity at pcs.QeIdentityURL(), PCK CRL
// at pcs.PckCrlURL("platform"), Root CA CRL at the root's CRL distribution point. All have status
// 200 and Intel's headers; header names are in Go's canonical form (as net/http records them,
// and as go-tdx-guest looks them up), issuer chains URL-escaped PEM of signer then root.
func (p *PKI) Collateral(o CollateralOptions) ([]*collateral.Response, error) {
	tcbInfo, err := p.tcbInfo(o.TCBInfo)
	if err != nil {
		return nil, err
	}
	qeIdentity, err := p.qeIdentity(o.QEIdentity)
	if err != nil {
		return nil, err
	}
	pckCRL, err := crl(o.PCKCRL, p.PlatformCA, p.PlatformCAKey)
	if err != nil {
		return nil, fmt.Errorf("fakeintel: PCK CRL: %w", err)
	}
	rootCRL, err := crl(o.RootCRL, p.Root, p.RootKey)
	if err != nil {
		return nil, fmt.Errorf("fakeintel: root CA CRL: %w", err)
	}
	rootCRLURL := RootCRLURL
	if len(p.Root.CRLDistributionPoints) > 0 {
		rootCRLURL = p.Root.CRLDistributionPoints[0]
	}
	tcbChain := issuerChain(p.TCBSigning, p.Root)
	return []*collateral.Response{
		{URL: pcs.TcbInfoURL(p.FMSPCHex()), Status: http.StatusOK, Body: tcbInfo, Headers: map[string][]string{
			pcs.TcbInfoIssuerChainPhrase: {tcbChain}, "Content-Type": {"application/json"}}},
		{URL: pcs.QeIdentityURL(), Status: http.StatusOK, Body: qeIdentity, Headers: map[string][]string{
			pcs.SgxQeIdentityIssuerChainPhrase: {tcbChain}, "Content-Type": {"application/json"}}},
		{URL: pcs.PckCrlURL("platform"), Status: http.StatusOK, Body: pckCRL, Headers: map[string][]string{
			pcs.SgxPckCrlIssuerChainPhrase: {issuerChain(p.PlatformCA, p.Root)}, "Content-Type": {"application/pkix-crl"}}},
		{URL: rootCRLURL, Status: http.StatusOK, Body: rootCRL, Headers: map[string][]string{
			"Content-Type": {"application/pkix-crl"}}},
	}, nil
}

// issuerChain is the value of an *-Issuer-Chain header: the PEM of the signing certificate then
// of the root, percent-encoded as Intel PCS does (spaces as %20).
func issuerChain(signer, root *x509.Certificate) string {
	pemChain := string(pemCert(signer)) + string(pemCert(root))
	return strings.ReplaceAll(url.QueryEscape(pemChain), "+", "%20")
}

// upperHex marshals bytes as an upper-case hex JSON string, as Intel writes masks and signers.
type upperHex []byte

func (h upperHex) MarshalJSON() ([]byte, error) {
	return []byte(strconv.Quote(strings.ToUpper(hex.EncodeToString(h)))), nil
}

// JSON shapes of the PCS bodies, fields in Intel's order.
type (
	jsonComponent struct {
		SVN      byte   `json:"svn"`
		Category string `json:"category,omitempty"`
		Type     string `json:"type,omitempty"`
	}
	jsonPlatformTCB struct {
		SGX    []jsonComponent `json:"sgxtcbcomponents"`
		PCESVN uint16          `json:"pcesvn"`
		TDX    []jsonComponent `json:"tdxtcbcomponents"`
	}
	jsonISVSVNTCB struct {
		ISVSVN uint16 `json:"isvsvn"`
	}
	jsonLevel struct {
		TCB         any      `json:"tcb"`
		Date        string   `json:"tcbDate"`
		Status      string   `json:"tcbStatus,omitempty"`
		AdvisoryIDs []string `json:"advisoryIDs,omitempty"`
	}
	jsonModule struct {
		ID             string      `json:"id,omitempty"`
		MrSigner       upperHex    `json:"mrsigner"`
		Attributes     upperHex    `json:"attributes"`
		AttributesMask upperHex    `json:"attributesMask"`
		TCBLevels      []jsonLevel `json:"tcbLevels,omitempty"`
	}
	jsonTCBInfo struct {
		ID                   string       `json:"id"`
		Version              int          `json:"version"`
		IssueDate            string       `json:"issueDate,omitempty"`
		NextUpdate           string       `json:"nextUpdate,omitempty"`
		FMSPC                string       `json:"fmspc"`
		PCEID                string       `json:"pceId"`
		TCBType              int          `json:"tcbType"`
		EvaluationDataNumber int          `json:"tcbEvaluationDataNumber"`
		Module               jsonModule   `json:"tdxModule"`
		ModuleIdentities     []jsonModule `json:"tdxModuleIdentities,omitempty"`
		TCBLevels            []jsonLevel  `json:"tcbLevels"`
	}
	jsonQEIdentity struct {
		ID                   string      `json:"id"`
		Version              int         `json:"version"`
		IssueDate            string      `json:"issueDate,omitempty"`
		NextUpdate           string      `json:"nextUpdate,omitempty"`
		EvaluationDataNumber int         `json:"tcbEvaluationDataNumber"`
		MiscSelect           upperHex    `json:"miscselect"`
		MiscSelectMask       upperHex    `json:"miscselectMask"`
		Attributes           upperHex    `json:"attributes"`
		AttributesMask       upperHex    `json:"attributesMask"`
		MrSigner             upperHex    `json:"mrsigner"`
		IsvProdID            uint16      `json:"isvprodid"`
		TCBLevels            []jsonLevel `json:"tcbLevels"`
	}
)

// Labels Intel gives the TCB components of a TDX platform (from real TCB info).
var (
	sgxComponentLabels = map[int][2]string{
		0: {"BIOS", "Early Microcode Update"}, 1: {"OS/VMM", "SGX Late Microcode Update"},
		2: {"OS/VMM", "TXT SINIT"}, 3: {"BIOS"}, 4: {"BIOS"}, 5: {"BIOS"}, 7: {"OS/VMM", "SEAMLDR ACM"},
	}
	tdxComponentLabels = map[int][2]string{
		0: {"OS/VMM", "TDX Module"}, 1: {"OS/VMM", "TDX Module"}, 2: {"OS/VMM", "TDX Late Microcode Update"},
	}
)

func components(svns [16]byte, labels map[int][2]string) []jsonComponent {
	out := make([]jsonComponent, len(svns))
	for i, svn := range svns {
		out[i] = jsonComponent{SVN: svn, Category: labels[i][0], Type: labels[i][1]}
	}
	return out
}

func isvsvnLevels(levels []ISVSVNLevel) []jsonLevel {
	out := make([]jsonLevel, len(levels))
	for i, l := range levels {
		out[i] = jsonLevel{TCB: jsonISVSVNTCB{l.ISVSVN}, Date: pcsTime(l.Date), Status: string(l.Status), AdvisoryIDs: l.AdvisoryIDs}
	}
	return out
}

// pcsTime formats a time as PCS does: UTC, seconds precision, "Z".
func pcsTime(t time.Time) string { return t.UTC().Format("2006-01-02T15:04:05Z") }

// pcsTimeOrOmit is pcsTime, or "" (an omitted field) for the zero time.
func pcsTimeOrOmit(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	return pcsTime(t)
}

func (p *PKI) tcbInfo(o TCBInfoOptions) ([]byte, error) {
	info := jsonTCBInfo{
		ID:                   o.ID,
		Version:              o.Version,
		IssueDate:            pcsTimeOrOmit(o.IssueDate),
		NextUpdate:           pcsTimeOrOmit(o.NextUpdate),
		FMSPC:                o.FMSPC,
		PCEID:                o.PCEID,
		TCBType:              o.TCBType,
		EvaluationDataNumber: o.EvaluationDataNumber,
		Module:               jsonModule{MrSigner: o.ModuleMrSigner[:], Attributes: o.ModuleAttributes[:], AttributesMask: o.ModuleAttributesMask[:]},
		TCBLevels:            []jsonLevel{},
	}
	if info.FMSPC == "" {
		info.FMSPC = p.FMSPCHex()
	}
	if info.PCEID == "" {
		info.PCEID = hex.EncodeToString(p.PCEID[:])
	}
	for _, m := range o.ModuleIdentities {
		info.ModuleIdentities = append(info.ModuleIdentities, jsonModule{
			ID: m.ID, MrSigner: m.MrSigner[:], Attributes: m.Attributes[:], AttributesMask: m.AttributesMask[:],
			TCBLevels: isvsvnLevels(m.TCBLevels),
		})
	}
	for _, l := range o.TCBLevels {
		info.TCBLevels = append(info.TCBLevels, jsonLevel{
			TCB: jsonPlatformTCB{
				SGX:    components(l.SGXComponents, sgxComponentLabels),
				PCESVN: l.PCESVN,
				TDX:    components(l.TDXComponents, tdxComponentLabels),
			},
			Date: pcsTime(l.Date), Status: string(l.Status), AdvisoryIDs: l.AdvisoryIDs,
		})
	}
	return p.signedBody("tcbInfo", info, o.CorruptSignature)
}

func (p *PKI) qeIdentity(o QEIdentityOptions) ([]byte, error) {
	id := jsonQEIdentity{
		ID:                   o.ID,
		Version:              o.Version,
		IssueDate:            pcsTimeOrOmit(o.IssueDate),
		NextUpdate:           pcsTimeOrOmit(o.NextUpdate),
		EvaluationDataNumber: o.EvaluationDataNumber,
		MiscSelect:           o.MiscSelect[:],
		MiscSelectMask:       o.MiscSelectMask[:],
		Attributes:           o.Attributes[:],
		AttributesMask:       o.AttributesMask[:],
		MrSigner:             o.MrSigner[:],
		IsvProdID:            o.IsvProdID,
		TCBLevels:            isvsvnLevels(o.TCBLevels),
	}
	return p.signedBody("enclaveIdentity", id, o.CorruptSignature)
}

// signedBody builds {"<name>":<value>,"signature":"<hex>"}, signing the exact bytes of <value>
// with the TCB Signing key.
func (p *PKI) signedBody(name string, v any, corrupt bool) ([]byte, error) {
	value, err := json.Marshal(v)
	if err != nil {
		return nil, fmt.Errorf("fakeintel: %s: %w", name, err)
	}
	sig, err := signRaw(p.TCBSigningKey, value)
	if err != nil {
		return nil, fmt.Errorf("fakeintel: signing %s: %w", name, err)
	}
	if corrupt {
		sig[0] ^= 0x01
	}
	body := `{"` + name + `":` + string(value) + `,"signature":"` + hex.EncodeToString(sig) + `"}`
	return []byte(body), nil
}

// crl issues a DER CRL signed by issuer with its key.
func crl(o CRLOptions, issuer *x509.Certificate, key *ecdsa.PrivateKey) ([]byte, error) {
	list := &x509.RevocationList{
		Number:             big.NewInt(o.Number),
		ThisUpdate:         o.ThisUpdate,
		NextUpdate:         o.NextUpdate,
		SignatureAlgorithm: x509.ECDSAWithSHA256,
	}
	for _, serial := range o.Revoked {
		list.RevokedCertificateEntries = append(list.RevokedCertificateEntries,
			x509.RevocationListEntry{SerialNumber: serial, RevocationTime: o.ThisUpdate})
	}
	der, err := x509.CreateRevocationList(rand.Reader, list, issuer, key)
	if err != nil {
		return nil, err
	}
	if o.CorruptSignature {
		// The last byte belongs to the signature's s value: the CRL parses but does not verify.
		der[len(der)-1] ^= 0x01
	}
	return der, nil
}
