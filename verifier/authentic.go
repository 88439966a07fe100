package verifier

import (
	"fmt"

	"github.com/proofline/proofline/verifier/collateral"
	"github.com/proofline/proofline/verifier/roots"
	"github.com/proofline/proofline/verifier/snp"
	"github.com/proofline/proofline/verifier/tdx"
)

// AuthenticCollateral returns the check a collateral cache or import makes before it keeps or
// uses a document (collateral.CacheConfig.Authenticate, collateral.ImportOptions.Authenticate): that Intel or AMD signed it through a chain to
// one of rs's roots, and that it is the document its URL names (tdx.Authentic, snp.Authentic).
// Dates and revocation stay the verification's.
func AuthenticCollateral(rs *roots.Set) func(*collateral.Response, collateral.Validity) error {
	return func(r *collateral.Response, v collateral.Validity) error {
		if rs == nil {
			return fmt.Errorf("no roots to authenticate %s with", r.URL)
		}
		switch v.Kind {
		case "tcb_info", "qe_identity":
			return tdx.Authentic(r, v, rs.Intel)
		case "certificate", "cert_chain":
			return snp.Authentic(r, v, rs.AMD)
		case "crl":
			intel := tdx.Authentic(r, v, rs.Intel)
			if intel == nil {
				return nil
			}
			amd := snp.Authentic(r, v, rs.AMD)
			if amd == nil {
				return nil
			}
			return fmt.Errorf("as an Intel CRL: %w; as an AMD CRL: %w", intel, amd)
		}
		return fmt.Errorf("a collateral document of kind %q is neither Intel's nor AMD's", v.Kind)
	}
}
