// Package roots holds the vendor trust anchors: the pinned Intel SGX Root CA and AMD's ARK (with
// its ASK and ASVK) for each SEV-SNP product line, and the reader for a `--roots DIR` that
// replaces them in tests.
//
// The built-in certificates are embedded from pem/ (origins in testdata/README.md): Intel's
// root as published by Intel and shipped by go-tdx-guest, AMD's as served by AMD KDS
// (https://kdsintf.amd.com/{vcek,vlek}/v1/<line>/cert_chain) and shipped by go-sev-guest.
package roots

import (
	"crypto/x509"
	"embed"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

//go:embed pem/*.pem
var builtin embed.FS

// AMDProduct is the AMD certificate hierarchy for one product line.
type AMDProduct struct {
	Line string
	ARK  *x509.Certificate
	// ASK signs VCEKs; ASVK signs VLEKs. Either may be nil when not pinned; the verifier then
	// takes it from the evidence or the collateral and still verifies it against the ARK.
	ASK  *x509.Certificate
	ASVK *x509.Certificate
}

// Set is a set of trust anchors.
type Set struct {
	Intel []*x509.Certificate
	AMD   map[string]*AMDProduct
	// Test is true when the set did not come from the built-in vendor roots.
	Test bool
}

// Builtin returns the pinned vendor roots.
func Builtin() (*Set, error) {
	s := &Set{AMD: map[string]*AMDProduct{}}
	entries, err := builtin.ReadDir("pem")
	if err != nil {
		return nil, err
	}
	for _, e := range entries {
		data, err := builtin.ReadFile("pem/" + e.Name())
		if err != nil {
			return nil, err
		}
		if err := s.addPEM(data); err != nil {
			return nil, fmt.Errorf("built-in roots %s: %w", e.Name(), err)
		}
	}
	return s, nil
}

// ReadDir reads every *.pem file in dir: each self-signed certificate is a trust anchor (an
// Intel SGX Root CA, or an AMD ARK whose product line comes from its subject, e.g. ARK-Milan);
// other certificates (ASK, ASVK) are intermediates of the ARK that signed them. The result is
// marked Test.
func ReadDir(dir string) (*Set, error) {
	paths, err := filepath.Glob(filepath.Join(dir, "*.pem"))
	if err != nil {
		return nil, err
	}
	if len(paths) == 0 {
		return nil, fmt.Errorf("roots directory %s holds no *.pem file", dir)
	}
	sort.Strings(paths)
	s := &Set{AMD: map[string]*AMDProduct{}, Test: true}
	for _, p := range paths {
		data, err := os.ReadFile(p)
		if err != nil {
			return nil, err
		}
		if err := s.addPEM(data); err != nil {
			return nil, fmt.Errorf("%s: %w", p, err)
		}
	}
	return s, nil
}

// addPEM adds the certificates of one PEM file: anchors first, then intermediates, so that the
// order of certificates in the file does not matter.
func (s *Set) addPEM(data []byte) error {
	var certs []*x509.Certificate
	for {
		var block *pem.Block
		block, data = pem.Decode(data)
		if block == nil {
			break
		}
		if block.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return err
		}
		certs = append(certs, c)
	}
	if len(certs) == 0 {
		return errors.New("no PEM certificate")
	}
	var rest []*x509.Certificate
	arks := map[string]*AMDProduct{} // the ARKs of this file
	for _, c := range certs {
		if !selfSigned(c) {
			rest = append(rest, c)
			continue
		}
		cn := c.Subject.CommonName
		switch {
		case cn == "Intel SGX Root CA":
			s.Intel = append(s.Intel, c)
		case strings.HasPrefix(cn, "ARK-"):
			line := strings.TrimPrefix(cn, "ARK-")
			p := s.AMD[line]
			if p == nil {
				p = &AMDProduct{Line: line}
				s.AMD[line] = p
			}
			if p.ARK != nil && !p.ARK.Equal(c) {
				return fmt.Errorf("two different ARKs for product line %s", line)
			}
			p.ARK = c
			arks[line] = p
		default:
			return fmt.Errorf("self-signed certificate %q is neither an Intel SGX Root CA nor an AMD ARK-<line>", cn)
		}
	}
	for _, c := range rest {
		if err := addIntermediate(arks, c); err != nil {
			return err
		}
	}
	return nil
}

// addIntermediate attaches an ASK or ASVK to the ARK in the same file that signed it.
func addIntermediate(arks map[string]*AMDProduct, c *x509.Certificate) error {
	for _, p := range arks {
		if p.ARK == nil || c.CheckSignatureFrom(p.ARK) != nil {
			continue
		}
		switch c.Subject.CommonName {
		case "SEV-" + p.Line:
			p.ASK = c
		case "SEV-VLEK-" + p.Line:
			p.ASVK = c
		default:
			return fmt.Errorf("certificate %q signed by ARK-%s is neither SEV-%s nor SEV-VLEK-%s", c.Subject.CommonName, p.Line, p.Line, p.Line)
		}
		return nil
	}
	return fmt.Errorf("certificate %q is not self-signed and no ARK in the same file signed it", c.Subject.CommonName)
}

func selfSigned(c *x509.Certificate) bool {
	return c.Subject.String() == c.Issuer.String() && c.CheckSignatureFrom(c) == nil
}
