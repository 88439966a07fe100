package api

import (
	"bytes"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/proofline/proofline/attest/attesttest/fakeamd"
	"github.com/proofline/proofline/attest/attesttest/fakeintel"
	"github.com/proofline/proofline/verifier/collateral"
	"github.com/proofline/proofline/verifier/service"
)

// /readyz reports degraded with collateral_expiring while collateral the verifier holds expires
// within the warning threshold and cannot be refreshed (here a recorded AMD CRL two hours from
// its nextUpdate) — and, being public, names only the code, never the URL; /metrics shows the
// time to expiry per kind.
func TestReadyzCollateralExpiring(t *testing.T) {
	plat := simulated(t)
	ic, err := plat.Intel.Collateral(fakeintel.DefaultCollateralOptions(plat.Now))
	if err != nil {
		t.Fatal(err)
	}
	ac, err := plat.AMD.Collateral(fakeamd.CRLOptions{NextUpdate: plat.Now.Add(2 * time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	set := collateral.Set{}
	if err := set.Add(append(ic, ac...)...); err != nil {
		t.Fatal(err)
	}
	f := newFixture(t, options{settings: func(d *service.Deps) { d.Collateral = set }})
	var ready readyResponse
	f.getJSON("/readyz", "", &ready)
	if ready.Status != "degraded" || !slices.Contains(ready.Warnings, service.WarnCollateralExpiring) {
		t.Fatalf("readyz: %+v", ready)
	}
	code, _, body := f.do(http.MethodGet, "/readyz", "", nil)
	if code != http.StatusOK || bytes.Contains(body, []byte("kdsintf")) || bytes.Contains(body, []byte("http")) {
		t.Fatalf("readyz says more than codes: %d %s", code, body)
	}
	code, _, body = f.do(http.MethodGet, "/metrics", "audrey", nil)
	if code != http.StatusOK || !bytes.Contains(body, []byte(`proofline_collateral_expiry_seconds{kind="crl"} `)) {
		t.Fatalf("metrics: %d %s", code, body)
	}
	for _, line := range strings.Split(string(body), "\n") {
		if strings.HasPrefix(line, `proofline_collateral_expiry_seconds{kind="crl"} `) && !strings.HasSuffix(line, " 7140") {
			t.Errorf("CRL expiry %q, want 7140 s (two hours minus the fixture's minute)", line)
		}
	}

	// With fresh collateral, no such warning (the default fixture's CRL is valid for a week).
	f = newFixture(t, options{})
	f.getJSON("/readyz", "", &ready)
	if slices.Contains(ready.Warnings, service.WarnCollateralExpiring) {
		t.Fatalf("readyz with fresh collateral: %+v", ready)
	}
}
