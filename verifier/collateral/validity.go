package collateral

import (
	"bytes"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"time"
)

// Validity says how long a collateral document may be served from a cache. It is read from the
// document itself, never from HTTP caching headers, and it checks nothing: the verifier still
// checks every signature and every date against its own verification time.
type Validity struct {
	// Kind is "tcb_info", "qe_identity", "crl", "certificate" or "cert_chain".
	Kind string
	// IssuedAt is the document's issueDate or thisUpdate (certificates: the latest NotBefore).
	IssuedAt time.Time
	// NextUpdate is the document's nextUpdate (cert chains: the earliest NotAfter); a cache
	// serves it before this time only. Zero when Immutable.
	NextUpdate time.Time
	// Immutable is true for a single certificate (a VCEK, a PCK certificate): AMD KDS and Intel
	// PCS name it by everything it certifies (chip and TCB), so it never changes and is kept
	// forever.
	Immutable bool
}

// Fresh reports whether a cache may serve the document at now: an immutable one always, another
// strictly before its NextUpdate.
func (v Validity) Fresh(now time.Time) bool { return v.Immutable || now.Before(v.NextUpdate) }

// ValidityOf reads the validity of a 200 response from its body:
//   - Intel PCS v4 TCB info and QE/QVE identity, {"tcbInfo": {…}} or {"enclaveIdentity": {…}}
//     with RFC 3339 issueDate and nextUpdate ("Get TCB Info", "Get Quoting Enclave Identity",
//     https://api.portal.trustedservices.intel.com/content/documentation.html);
//   - a DER CRL (Intel PCK and Root CA CRLs, AMD KDS CRLs) with thisUpdate and nextUpdate (RFC
//     5280 §5.1.2.4–5); a CRL without nextUpdate has no validity;
//   - one DER certificate (AMD KDS VCEK, "Get VCEK Certificate" in AMD doc 57230): immutable;
//   - PEM certificates (AMD KDS cert_chain: ASK or ASVK, then ARK): until the earliest NotAfter.
//
// Anything else is an error: a cache does not keep what it cannot date.
func ValidityOf(r *Response) (Validity, error) {
	body := bytes.TrimSpace(r.Body)
	switch {
	case len(body) == 0:
		return Validity{}, errors.New("empty body")
	case body[0] == '{':
		return jsonValidity(body)
	case bytes.HasPrefix(body, []byte("-----BEGIN")):
		return pemValidity(body)
	}
	if c, err := x509.ParseCertificate(r.Body); err == nil {
		return Validity{Kind: "certificate", IssuedAt: c.NotBefore, Immutable: true}, nil
	}
	if crl, err := x509.ParseRevocationList(r.Body); err == nil {
		if crl.NextUpdate.IsZero() {
			return Validity{}, errors.New("the CRL has no nextUpdate")
		}
		return Validity{Kind: "crl", IssuedAt: crl.ThisUpdate, NextUpdate: crl.NextUpdate}, nil
	}
	return Validity{}, errors.New("the body is not PCS JSON, a DER CRL, or certificates")
}

func jsonValidity(body []byte) (Validity, error) {
	var doc map[string]json.RawMessage
	if err := json.Unmarshal(body, &doc); err != nil {
		return Validity{}, fmt.Errorf("not a JSON object: %w", err)
	}
	for _, k := range []struct{ field, kind string }{{"tcbInfo", "tcb_info"}, {"enclaveIdentity", "qe_identity"}} {
		raw, ok := doc[k.field]
		if !ok {
			continue
		}
		var dates struct {
			IssueDate  *time.Time `json:"issueDate"`
			NextUpdate *time.Time `json:"nextUpdate"`
		}
		if err := json.Unmarshal(raw, &dates); err != nil {
			return Validity{}, fmt.Errorf("%s: %w", k.field, err)
		}
		if dates.IssueDate == nil || dates.NextUpdate == nil {
			return Validity{}, fmt.Errorf("%s has no issueDate or nextUpdate", k.field)
		}
		return Validity{Kind: k.kind, IssuedAt: *dates.IssueDate, NextUpdate: *dates.NextUpdate}, nil
	}
	return Validity{}, errors.New("JSON object with neither tcbInfo nor enclaveIdentity")
}

func pemValidity(body []byte) (Validity, error) {
	v := Validity{Kind: "cert_chain"}
	n := 0
	for rest := body; len(bytes.TrimSpace(rest)) > 0; n++ {
		var block *pem.Block
		block, rest = pem.Decode(rest)
		if block == nil || block.Type != "CERTIFICATE" {
			return Validity{}, errors.New("PEM that is not only certificates")
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return Validity{}, fmt.Errorf("PEM certificate %d: %w", n, err)
		}
		if v.IssuedAt.IsZero() || c.NotBefore.After(v.IssuedAt) {
			v.IssuedAt = c.NotBefore
		}
		if v.NextUpdate.IsZero() || c.NotAfter.Before(v.NextUpdate) {
			v.NextUpdate = c.NotAfter
		}
	}
	if n == 0 {
		return Validity{}, errors.New("no PEM certificate")
	}
	return v, nil
}
