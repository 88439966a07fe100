package servicetest

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/proofline/proofline/attest/attesttest/fakeamd"
	"github.com/proofline/proofline/attest/attesttest/fakeintel"
)

// FileName is the file in its data directory where `proofline serve --test-mode` writes the
// simulated platforms it appraises (Marshal), so that a `proofline-agent run --test-mode` in
// another process signs with the same fake keys (`--sim-platforms DATA_DIR/` + FileName).
const FileName = "simulated-platforms.json"

// fileFormat names the JSON form of Marshal; Unmarshal refuses any other.
const fileFormat = "proofline simulated platforms v1"

// platformsFile is the JSON form of Platforms: everything needed to sign as the simulated VMs.
// The Intel PKI's keys are generated per run and stored here (PKCS #8, base64); the AMD PKI is
// rebuilt from Now and fakeamd's embedded default keys, which are public test keys anyway.
type platformsFile struct {
	Format  string    `json:"format"`
	Warning string    `json:"warning"`
	Now     time.Time `json:"now"`
	Intel   struct {
		Root          []byte `json:"root"`
		RootKey       []byte `json:"root_key"`
		PlatformCA    []byte `json:"platform_ca"`
		PlatformCAKey []byte `json:"platform_ca_key"`
		TCBSigning    []byte `json:"tcb_signing"`
		TCBSigningKey []byte `json:"tcb_signing_key"`
		PCK           []byte `json:"pck"`
		PCKKey        []byte `json:"pck_key"`
	} `json:"intel"`
	AMD struct {
		ProductLine string `json:"product_line"`
	} `json:"amd"`
}

// Marshal returns the platforms' fake keys and certificates as JSON, for Unmarshal in another
// process. It holds private keys (fake ones): write it with mode 0600. Only platforms built by
// New with the default PKI settings round-trip: changes a test made to the PKIs' fields (other
// than the Intel certificates and keys) are not kept.
func (p *Platforms) Marshal() ([]byte, error) {
	var f platformsFile
	f.Format = fileFormat
	f.Warning = "TEST MATERIAL: fake Intel and AMD keys of proofline serve --test-mode; nothing they sign proves anything"
	f.Now = p.Now
	f.AMD.ProductLine = p.AMD.ProductLine
	in := &f.Intel
	for _, c := range []struct {
		cert *x509.Certificate
		key  *ecdsa.PrivateKey
		dc   *[]byte
		dk   *[]byte
	}{
		{p.Intel.Root, p.Intel.RootKey, &in.Root, &in.RootKey},
		{p.Intel.PlatformCA, p.Intel.PlatformCAKey, &in.PlatformCA, &in.PlatformCAKey},
		{p.Intel.TCBSigning, p.Intel.TCBSigningKey, &in.TCBSigning, &in.TCBSigningKey},
		{p.Intel.PCK, p.Intel.PCKKey, &in.PCK, &in.PCKKey},
	} {
		der, err := x509.MarshalPKCS8PrivateKey(c.key)
		if err != nil {
			return nil, fmt.Errorf("servicetest: %w", err)
		}
		*c.dc, *c.dk = c.cert.Raw, der
	}
	b, err := json.MarshalIndent(&f, "", "  ")
	if err != nil {
		return nil, err
	}
	return append(b, '\n'), nil
}

// Unmarshal rebuilds the platforms Marshal wrote: the same fake keys and certificates, so the
// evidence it produces verifies against the roots of the process that wrote them; its
// collateral and policy are made again from them.
func Unmarshal(data []byte) (*Platforms, error) {
	var f platformsFile
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&f); err != nil {
		return nil, fmt.Errorf("servicetest: simulated platforms: %w", err)
	}
	if f.Format != fileFormat {
		return nil, fmt.Errorf("servicetest: simulated platforms: format %q, want %q (written by another version of proofline serve --test-mode?)", f.Format, fileFormat)
	}
	if f.Now.IsZero() {
		return nil, errors.New("servicetest: simulated platforms: no time")
	}
	if f.AMD.ProductLine != AMDProductLine {
		return nil, fmt.Errorf("servicetest: simulated platforms: AMD product line %q, want %q", f.AMD.ProductLine, AMDProductLine)
	}
	now := f.Now.UTC()
	intel := &fakeintel.PKI{FMSPC: fakeintel.DefaultFMSPC, PCEID: fakeintel.DefaultPCEID, CPUSVN: fakeintel.DefaultCPUSVN, PCESVN: fakeintel.DefaultPCESVN, PPID: fakeintel.DefaultPPID}
	in := &f.Intel
	for _, c := range []struct {
		name string
		dc   []byte
		dk   []byte
		cert **x509.Certificate
		key  **ecdsa.PrivateKey
	}{
		{"root", in.Root, in.RootKey, &intel.Root, &intel.RootKey},
		{"platform_ca", in.PlatformCA, in.PlatformCAKey, &intel.PlatformCA, &intel.PlatformCAKey},
		{"tcb_signing", in.TCBSigning, in.TCBSigningKey, &intel.TCBSigning, &intel.TCBSigningKey},
		{"pck", in.PCK, in.PCKKey, &intel.PCK, &intel.PCKKey},
	} {
		cert, err := x509.ParseCertificate(c.dc)
		if err != nil {
			return nil, fmt.Errorf("servicetest: simulated platforms: intel.%s: %w", c.name, err)
		}
		k, err := x509.ParsePKCS8PrivateKey(c.dk)
		if err != nil {
			return nil, fmt.Errorf("servicetest: simulated platforms: intel.%s_key: %w", c.name, err)
		}
		ek, ok := k.(*ecdsa.PrivateKey)
		if !ok || !ek.PublicKey.Equal(cert.PublicKey) {
			return nil, fmt.Errorf("servicetest: simulated platforms: intel.%s_key is not the key of intel.%s", c.name, c.name)
		}
		*c.cert, *c.key = cert, ek
	}
	amd, err := fakeamd.New(f.AMD.ProductLine, now)
	if err != nil {
		return nil, fmt.Errorf("servicetest: fake AMD PKI: %w", err)
	}
	return assemble(now, intel, amd)
}
