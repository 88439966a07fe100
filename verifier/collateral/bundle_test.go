package collateral_test

import (
	"bytes"
	"context"
	"crypto"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/proofline/proofline/attest/attesttest/fakeamd"
	"github.com/proofline/proofline/attest/attesttest/fakeintel"
	"github.com/proofline/proofline/evidence"
	"github.com/proofline/proofline/verifier/collateral"
)

// bundleFixture is a store holding the Intel and AMD documents of a TDX and an SNP verification,
// the key that signs its export, and that export.
type bundleFixture struct {
	docs    []*collateral.Response
	store   *collateral.MemoryStore
	key     *evidence.Key
	trusted []collateral.TrustedKey
	bundle  []byte
}

func newBundleFixture(t testing.TB) *bundleFixture {
	t.Helper()
	ip, err := fakeintel.New(start)
	if err != nil {
		t.Fatal(err)
	}
	intel, err := ip.Collateral(fakeintel.DefaultCollateralOptions(start))
	if err != nil {
		t.Fatal(err)
	}
	ap, err := fakeamd.New("Milan", start)
	if err != nil {
		t.Fatal(err)
	}
	amd, err := ap.Collateral(fakeamd.CRLOptions{})
	if err != nil {
		t.Fatal(err)
	}
	fx := &bundleFixture{docs: append(intel, amd...), store: collateral.NewMemoryStore()}
	ctx := context.Background()
	for _, d := range fx.docs {
		if err := fx.store.Put(ctx, d.URL, d.Canonical()); err != nil {
			t.Fatal(err)
		}
	}
	if fx.key, err = evidence.GenerateKey(); err != nil {
		t.Fatal(err)
	}
	fx.trusted = []collateral.TrustedKey{{Algorithm: fx.key.Algorithm(), Public: fx.key.Public(), NotBefore: start.Add(-time.Hour)}}
	fx.bundle = export(t, fx.store, fx.key)
	return fx
}

func export(t testing.TB, s collateral.ListingStore, k collateral.BundleSigner) []byte {
	t.Helper()
	data, _, err := collateral.ExportBundle(context.Background(), s, collateral.ExportOptions{
		Signer: k, Name: "verifier-a", Software: "proofline/test", Now: start})
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// TestBundleRoundTrip: every stored document goes through export, signature check and import
// into an empty store byte for byte; importing again keeps them all; the bundle has one encoding.
func TestBundleRoundTrip(t *testing.T) {
	fx := newBundleFixture(t)
	b, err := collateral.OpenBundle(fx.bundle, fx.trusted)
	if err != nil {
		t.Fatal(err)
	}
	if len(b.Entries) != len(fx.docs) || !b.ExportedAt.Equal(start) || b.Exporter.Name != "verifier-a" ||
		!bytes.Equal(b.Exporter.KeyID, fx.key.KeyID()) {
		t.Fatalf("bundle: %d entries, exported %s by %q (key %x)", len(b.Entries), b.ExportedAt, b.Exporter.Name, b.Exporter.KeyID)
	}
	// ECDSA signatures are randomised: everything before the 64-byte signature is the same.
	if again := export(t, fx.store, fx.key); !bytes.Equal(again[:len(again)-64], fx.bundle[:len(fx.bundle)-64]) {
		t.Error("exporting the same store twice gave different payloads")
	}
	ctx := context.Background()
	dst, err := collateral.OpenDirStore(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	rep, err := collateral.ImportBundle(ctx, b, dst, collateral.ImportOptions{At: start})
	if err != nil || rep.Imported != len(fx.docs) || rep.Kept != 0 || rep.RefusedN != 0 {
		t.Fatalf("import: %+v, %v", rep, err)
	}
	for _, d := range fx.docs {
		got, err := dst.Get(ctx, d.URL)
		if err != nil || !bytes.Equal(got, d.Canonical()) {
			t.Errorf("%s: %v; not the exported document", d.URL, err)
		}
	}
	rep, err = collateral.ImportBundle(ctx, b, dst, collateral.ImportOptions{At: start})
	if err != nil || rep.Imported != 0 || rep.Kept != len(fx.docs) {
		t.Fatalf("second import: %+v, %v; want every document kept", rep, err)
	}
	// A Cache over the imported store with no upstream at all answers every document.
	cache, err := collateral.NewCache(collateral.CacheConfig{Upstream: collateral.Set{}, Store: dst, Clock: fixedClock(start)})
	if err != nil {
		t.Fatal(err)
	}
	defer cache.Close()
	for _, d := range fx.docs {
		if r, err := cache.Get(ctx, d.URL); err != nil || r.Digest() != d.Digest() {
			t.Errorf("offline cache: %s: %v", d.URL, err)
		}
	}
}

type fixedClock time.Time

func (c fixedClock) Now() time.Time                                   { return time.Time(c) }
func (c fixedClock) Sleep(ctx context.Context, _ time.Duration) error { return ctx.Err() }

// TestBundleRefused: bundles built from the valid one by a byte flip in an entry, a signature by
// another key (under its own kid, or under the trusted key's), truncation, or a key period that
// does not cover the export time are refused with a message that says which check failed.
func TestBundleRefused(t *testing.T) {
	fx := newBundleFixture(t)
	other, err := evidence.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	target := fx.docs[2] // the PCK CRL
	enc := base64.StdEncoding.EncodeToString(target.Canonical())
	i := bytes.Index(fx.bundle, []byte(enc))
	if i < 0 {
		t.Fatal("the PCK CRL is not in the bundle")
	}
	flipped := bytes.Clone(fx.bundle)
	flipped[i+100] ^= 'A' ^ 'B' // a base64 letter into another one
	if flipped[i+100] == fx.bundle[i+100] {
		t.Fatal("no flip")
	}

	// The trusted key's kid and public key in the manifest, another key's signature.
	forged := export(t, fx.store, &impostor{Key: other, claims: fx.key})

	for _, tc := range []struct {
		name    string
		data    []byte
		trusted []collateral.TrustedKey
		want    string
	}{
		{"flipped byte", flipped, fx.trusted, "entry " + target.URL + ": its response does not hash"},
		{"another key", export(t, fx.store, other), fx.trusted, "not a trusted key"},
		{"forged signature", forged, fx.trusted, "signature does not verify"},
		{"truncated", fx.bundle[:len(fx.bundle)/2], fx.trusted, "truncated"},
		{"empty", nil, fx.trusted, "not a COSE_Sign1"},
		{"key not yet valid", fx.bundle, []collateral.TrustedKey{{Algorithm: fx.key.Algorithm(), Public: fx.key.Public(), NotBefore: start.Add(time.Hour)}}, "outside the validity period"},
		{"no trusted key", fx.bundle, nil, "not a trusted key"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := collateral.OpenBundle(tc.data, tc.trusted)
			if !errors.Is(err, collateral.ErrBundle) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("OpenBundle: %v; want ErrBundle saying %q", err, tc.want)
			}
		})
	}
	// Every truncation is an error, never a panic.
	for n := range len(fx.bundle) {
		if _, err := collateral.OpenBundle(fx.bundle[:n], fx.trusted); err == nil {
			t.Fatalf("truncated to %d bytes: accepted", n)
		}
	}
}

// impostor signs with Key but claims to be claims: the manifest names claims' key.
type impostor struct {
	*evidence.Key
	claims *evidence.Key
}

func (i *impostor) Public() crypto.PublicKey { return i.claims.Public() }

// TestBundleImportFreshness: a document past its nextUpdate at import time is refused, naming it
// and its nextUpdate, and written only with an explicit grace; a newer document in the
// destination is never replaced by an older one, an older one is.
func TestBundleImportFreshness(t *testing.T) {
	fx := newBundleFixture(t)
	ctx := context.Background()
	b, err := collateral.OpenBundle(fx.bundle, fx.trusted)
	if err != nil {
		t.Fatal(err)
	}
	const crlURL = "https://kdsintf.amd.com/vcek/v1/Milan/crl" // next update start+7d, like the VLEK CRL
	at := start.Add(8 * 24 * time.Hour)
	dst := collateral.NewMemoryStore()
	rep, err := collateral.ImportBundle(ctx, b, dst, collateral.ImportOptions{At: at})
	if err != nil {
		t.Fatal(err)
	}
	if rep.RefusedN != 2 || rep.Imported != len(fx.docs)-2 {
		t.Fatalf("%+v; want the two AMD CRLs refused", rep)
	}
	var found bool
	for _, r := range rep.Results {
		if r.URL == crlURL {
			found = true
			want := "nextUpdate is " + start.AddDate(0, 0, 7).Format(time.RFC3339)
			if r.Outcome != collateral.Refused || !strings.Contains(r.Reason, want) {
				t.Errorf("VCEK CRL: %+v; want refused saying %q", r, want)
			}
		}
	}
	if !found {
		t.Fatal("no result for the VCEK CRL")
	}
	if _, err := dst.Get(ctx, crlURL); !errors.Is(err, collateral.ErrNotStored) {
		t.Errorf("a refused document was written: %v", err)
	}
	rep, err = collateral.ImportBundle(ctx, b, dst, collateral.ImportOptions{At: at, StaleGraceUnsafe: 2 * 24 * time.Hour})
	if err != nil || rep.Imported != 2 || rep.RefusedN != 0 {
		t.Fatalf("with a grace: %+v, %v; want the two stale CRLs imported", rep, err)
	}

	// The destination holds a newer TCB info (issued a day later): it is kept. Then it holds an
	// older one: the bundle's replaces it.
	_, newer := intelDocs(t, func(o *fakeintel.CollateralOptions) {
		o.TCBInfo.IssueDate = o.TCBInfo.IssueDate.Add(24 * time.Hour)
	})
	_, older := intelDocs(t, func(o *fakeintel.CollateralOptions) {
		o.TCBInfo.IssueDate = o.TCBInfo.IssueDate.Add(-24 * time.Hour)
	})
	tcb := fx.docs[0].URL
	for _, tc := range []struct {
		name    string
		held    *collateral.Response
		outcome string
		want    []byte
	}{
		{"newer held", newer[0], collateral.KeptNewer, newer[0].Canonical()},
		{"older held", older[0], collateral.Imported, fx.docs[0].Canonical()},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dst := collateral.NewMemoryStore()
			if err := dst.Put(ctx, tcb, tc.held.Canonical()); err != nil {
				t.Fatal(err)
			}
			rep, err := collateral.ImportBundle(ctx, b, dst, collateral.ImportOptions{At: start})
			if err != nil {
				t.Fatal(err)
			}
			for _, r := range rep.Results {
				if r.URL == tcb && r.Outcome != tc.outcome {
					t.Errorf("TCB info: %+v, want %s", r, tc.outcome)
				}
			}
			if got, _ := dst.Get(ctx, tcb); !bytes.Equal(got, tc.want) {
				t.Error("the store holds the wrong TCB info")
			}
		})
	}
}

// FuzzOpenBundle: the bundle parser never panics, and the only input OpenBundle accepts with
// the signer's key is the exported bundle itself (one encoding, nothing malleable). The seed is a
// small bundle (one AMD CRL) so that mutations stay cheap.
func FuzzOpenBundle(f *testing.F) {
	fx := newBundleFixture(f)
	small := collateral.NewMemoryStore()
	for _, d := range []*collateral.Response{fx.docs[4]} {
		if err := small.Put(context.Background(), d.URL, d.Canonical()); err != nil {
			f.Fatal(err)
		}
	}
	seed := export(f, small, fx.key)
	f.Add(seed)
	f.Add(seed[:len(seed)-1])
	f.Add([]byte{0xd2, 0x84, 0x40, 0xa0, 0xf6, 0x40})
	f.Fuzz(func(t *testing.T, data []byte) {
		b, err := collateral.OpenBundle(data, fx.trusted)
		if err == nil && !bytes.Equal(data, seed) {
			t.Fatalf("accepted a bundle other than the signed one (%d entries)", len(b.Entries))
		}
	})
}

// TestBundleImportRollback: a replayed older bundle signed by a trusted key cannot roll back a URL
// whose document the destination lost. A bundle with a TCB info of tcbEvaluationDataNumber 19 is
// imported into a DirStore, whose document is then lost; the old bundle (number 18) is refused
// for that URL, naming it and both numbers, and nothing is written, while the same old bundle
// imports into a fresh store. A document of the same number issued later still imports.
func TestBundleImportRollback(t *testing.T) {
	fx := newBundleFixture(t)
	ctx := context.Background()
	tcb := fx.docs[0].URL
	importInto := func(dst collateral.Store, bundle []byte) *collateral.ImportReport {
		t.Helper()
		b, err := collateral.OpenBundle(bundle, fx.trusted)
		if err != nil {
			t.Fatal(err)
		}
		rep, err := collateral.ImportBundle(ctx, b, dst, collateral.ImportOptions{At: start})
		if err != nil {
			t.Fatal(err)
		}
		return rep
	}
	outcome := func(rep *collateral.ImportReport) collateral.ImportResult {
		for _, r := range rep.Results {
			if r.URL == tcb {
				return r
			}
		}
		t.Fatal("no result for the TCB info")
		return collateral.ImportResult{}
	}
	bundleWith := func(edit func(*fakeintel.CollateralOptions)) []byte {
		t.Helper()
		_, docs := intelDocs(t, edit)
		s := collateral.NewMemoryStore()
		if err := s.Put(ctx, tcb, docs[0].Canonical()); err != nil {
			t.Fatal(err)
		}
		return export(t, s, fx.key)
	}

	// The valid case: the old bundle imports into a fresh store.
	if r := outcome(importInto(collateral.NewMemoryStore(), fx.bundle)); r.Outcome != collateral.Imported {
		t.Fatalf("old bundle into a fresh store: %+v", r)
	}

	dir := t.TempDir()
	dst, err := collateral.OpenDirStore(dir)
	if err != nil {
		t.Fatal(err)
	}
	if r := outcome(importInto(dst, bundleWith(func(o *fakeintel.CollateralOptions) { o.TCBInfo.EvaluationDataNumber = 19 }))); r.Outcome != collateral.Imported {
		t.Fatalf("bundle with 19: %+v", r)
	}
	h := sha256.Sum256([]byte(tcb))
	if err := os.Remove(filepath.Join(dir, "urls", hex.EncodeToString(h[:]))); err != nil {
		t.Fatal(err) // the document is lost
	}
	r := outcome(importInto(dst, fx.bundle))
	if r.Outcome != collateral.Refused || !strings.Contains(r.Reason, tcb) || !strings.Contains(r.Reason, "tcbEvaluationDataNumber 18") ||
		!strings.Contains(r.Reason, "19") {
		t.Fatalf("replayed old bundle: %+v; want refused naming the URL and both numbers", r)
	}
	if _, err := dst.Get(ctx, tcb); !errors.Is(err, collateral.ErrNotStored) {
		t.Fatalf("the refused document was written: %v", err)
	}

	// Number 19 again, issued later: imported.
	later := bundleWith(func(o *fakeintel.CollateralOptions) {
		o.TCBInfo.EvaluationDataNumber = 19
		o.TCBInfo.IssueDate = o.TCBInfo.IssueDate.Add(30 * time.Minute)
	})
	if r := outcome(importInto(dst, later)); r.Outcome != collateral.Imported {
		t.Fatalf("same number, issued later: %+v", r)
	}
}
