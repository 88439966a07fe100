package collateral_test

import (
	"crypto/x509"
	"net/http"
	"testing"
	"time"

	"github.com/proofline/proofline/attest/attesttest/fakeintel"
	"github.com/proofline/proofline/verifier/collateral"
)

// TestValidityOf: the validity of every kind of document the verifier fetches is read from the
// document; what cannot be dated is an error.
func TestValidityOf(t *testing.T) {
	f := newFleet(t)
	_, intel := intelDocs(t, func(o *fakeintel.CollateralOptions) {
		o.TCBInfo.NextUpdate = start.Add(time.Hour)
		o.QEIdentity.NextUpdate = start.Add(2 * time.Hour)
		o.PCKCRL.NextUpdate = start.Add(3 * time.Hour)
	})
	byURL := map[string]*collateral.Response{}
	for _, d := range append(intel, f.docs...) {
		byURL[d.URL] = d
	}
	hour := func(h int) time.Time { return start.Add(time.Duration(h) * time.Hour) }
	ark := f.pki.ARK
	for _, tc := range []struct {
		doc  *collateral.Response
		want collateral.Validity
	}{
		{intel[0], collateral.Validity{Kind: "tcb_info", IssuedAt: hour(-1), NextUpdate: hour(1)}},
		{intel[1], collateral.Validity{Kind: "qe_identity", IssuedAt: hour(-1), NextUpdate: hour(2)}},
		{intel[2], collateral.Validity{Kind: "crl", IssuedAt: hour(-1), NextUpdate: hour(3)}},
		{f.docs[0], collateral.Validity{Kind: "crl", IssuedAt: hour(-1), NextUpdate: start.Add(7 * 24 * time.Hour)}},
		{f.docs[1], collateral.Validity{Kind: "cert_chain", IssuedAt: ark.NotBefore, NextUpdate: ark.NotAfter}},
		{f.docs[len(f.docs)-1], collateral.Validity{Kind: "certificate", IssuedAt: f.pki.VCEK.NotBefore, Immutable: true}},
	} {
		got, err := collateral.ValidityOf(tc.doc)
		if err != nil || !got.IssuedAt.Equal(tc.want.IssuedAt) || !got.NextUpdate.Equal(tc.want.NextUpdate) ||
			got.Kind != tc.want.Kind || got.Immutable != tc.want.Immutable {
			t.Errorf("%s: %+v, %v; want %+v", tc.doc.URL, got, err, tc.want)
		}
	}
	if v := (collateral.Validity{NextUpdate: hour(1)}); !v.Fresh(hour(0)) || v.Fresh(hour(1)) || v.Fresh(hour(2)) {
		t.Error("Fresh is not strictly before NextUpdate")
	}
	if v := (collateral.Validity{Immutable: true}); !v.Fresh(hour(1 << 20)) {
		t.Error("an immutable document went stale")
	}
	for name, body := range map[string]string{
		"empty":          "  ",
		"json array":     `[1]`,
		"other json":     `{"pckCert": {}}`,
		"no nextUpdate":  `{"tcbInfo": {"issueDate": "2026-03-01T00:00:00Z"}}`,
		"bad date":       `{"enclaveIdentity": {"issueDate": "2026-03-01T00:00:00Z", "nextUpdate": "soon"}}`,
		"pem key":        "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
		"pem truncated":  "-----BEGIN CERTIFICATE-----\nAAAA",
		"bad cert":       "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
		"hex CRL (PCCS)": "308201",
		"garbage":        "\x30\x03\x02\x01\x01",
	} {
		if v, err := collateral.ValidityOf(&collateral.Response{Status: http.StatusOK, Body: []byte(body)}); err == nil {
			t.Errorf("%s: %+v, want an error", name, v)
		}
	}
}

func FuzzValidityOf(f *testing.F) {
	p, err := fakeintel.New(start)
	if err != nil {
		f.Fatal(err)
	}
	rs, err := p.Collateral(fakeintel.DefaultCollateralOptions(start))
	if err != nil {
		f.Fatal(err)
	}
	for _, r := range rs {
		f.Add(r.Body)
	}
	f.Add(p.Root.Raw)
	f.Add([]byte("-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----\n"))
	f.Fuzz(func(t *testing.T, body []byte) {
		v, err := collateral.ValidityOf(&collateral.Response{Body: body})
		if err == nil && !v.Immutable && v.NextUpdate.IsZero() {
			t.Fatalf("%+v: a mutable document without nextUpdate", v)
		}
		if err == nil && v.Immutable {
			if _, err := x509.ParseCertificate(body); err != nil {
				t.Fatalf("immutable but not a certificate: %v", err)
			}
		}
	})
}
