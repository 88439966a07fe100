package collateral_test

import (
	"context"
	"crypto/sha256"
	"crypto/x509"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/proofline/proofline/attest/attesttest/fakeintel"
	"github.com/proofline/proofline/verifier/collateral"
	"github.com/proofline/proofline/verifier/tdx"
)

// TestCacheAuthenticate: a forged TCB info — a look-alike PKI's, claiming issue 50 years on and
// tcbEvaluationDataNumber 1000 — is answered to the Get that fetched it but, with
// CacheConfig.Authenticate, neither kept, stored nor counted in the URL's mark: the genuine
// document served next is kept, and Refetch refuses the forgery. The control run without
// Authenticate shows what the check prevents: the forgery is served from the cache and the
// genuine document is refused as a rollback.
func TestCacheAuthenticate(t *testing.T) {
	ctx := context.Background()
	p, genuine, forged := forgedTCBInfo(t)
	authentic := func(r *collateral.Response, v collateral.Validity) error {
		return tdx.Authentic(r, v, []*x509.Certificate{p.Root})
	}
	for _, check := range []bool{true, false} {
		name := map[bool]string{true: "authenticated", false: "control without the check"}[check]
		t.Run(name, func(t *testing.T) {
			store := collateral.NewMemoryStore()
			e := newEnv(t, pcsServer([]*collateral.Response{forged}), store, nil)
			var forgedURLs []string
			cfg := collateral.CacheConfig{Upstream: e.fetcher, Store: store, Clock: e.clock,
				OnNotAuthentic: func(u string) { forgedURLs = append(forgedURLs, u) }}
			if check {
				cfg.Authenticate = authentic
			}
			c, err := collateral.NewCache(cfg)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			if r, err := c.Get(ctx, forged.URL); err != nil || r.Digest() != forged.Digest() {
				t.Fatalf("Get of the forgery: %v; want it answered (the verification rejects it)", err)
			}
			_, stErr := store.Get(ctx, forged.URL)
			_, markErr := store.StoredMark(ctx, forged.URL)
			if err := e.srv.Replace(genuine); err != nil {
				t.Fatal(err)
			}
			r, getErr := c.Get(ctx, genuine.URL)
			_, refetchErr := c.Refetch(ctx, genuine.URL)
			if !check {
				// What Authenticate prevents.
				if stErr != nil || markErr != nil || getErr != nil || r.Digest() != forged.Digest() || !errors.Is(refetchErr, collateral.ErrOlder) {
					t.Fatalf("control: store %v, mark %v, Get %v (forgery served: %v), Refetch %v; want the forgery kept and the genuine document refused",
						stErr, markErr, getErr, getErr == nil && r.Digest() == forged.Digest(), refetchErr)
				}
				return
			}
			if !errors.Is(stErr, collateral.ErrNotStored) || !errors.Is(markErr, collateral.ErrNotStored) {
				t.Fatalf("after the forgery: store %v, mark %v; want neither written", stErr, markErr)
			}
			if st := c.Stats(); st.FetchErrors != 1 || len(forgedURLs) != 1 || forgedURLs[0] != forged.URL {
				t.Errorf("stats %+v, OnNotAuthentic %q; want the forgery counted once as a fetch error", st, forgedURLs)
			}
			if getErr != nil || r.Digest() != genuine.Digest() || refetchErr != nil {
				t.Fatalf("genuine document: Get %v, Refetch %v; want it fetched and kept", getErr, refetchErr)
			}
			if got, err := store.Get(ctx, genuine.URL); err != nil || string(got) != string(genuine.Canonical()) {
				t.Fatalf("the store does not hold the genuine document: %v", err)
			}
			// A later forgery is refused by Refetch and leaves the genuine document in place.
			if err := e.srv.Replace(forged); err != nil {
				t.Fatal(err)
			}
			e.clock.Advance(time.Minute)
			if _, err := c.Refetch(ctx, forged.URL); !errors.Is(err, collateral.ErrUnavailable) || !strings.Contains(err.Error(), "not signed by its vendor") {
				t.Fatalf("Refetch of the forgery: %v, want ErrUnavailable saying it is not signed by its vendor", err)
			}
			if len(forgedURLs) != 2 {
				t.Errorf("OnNotAuthentic called for %q; want the two fetched forgeries only (not the store reads)", forgedURLs)
			}
			if r, err := c.Get(ctx, genuine.URL); err != nil || r.Digest() != genuine.Digest() {
				t.Fatalf("after the refused Refetch: %v; want the genuine document served", err)
			}
		})
	}
}

// TestCacheAuthenticateStored: a forged TCB info already in the Store (written by an earlier
// version, another replica or an import) is unusable with CacheConfig.Authenticate: Warm does
// not load it, a Get fetches the genuine document instead and replaces it, and it does not make
// the genuine document look older. The control run without the check serves the forgery from
// the Store without fetching.
func TestCacheAuthenticateStored(t *testing.T) {
	ctx := context.Background()
	p, genuine, forged := forgedTCBInfo(t)
	for _, check := range []bool{true, false} {
		t.Run(map[bool]string{true: "authenticated", false: "control without the check"}[check], func(t *testing.T) {
			store := collateral.NewMemoryStore()
			if err := store.Put(ctx, forged.URL, forged.Canonical()); err != nil {
				t.Fatal(err)
			}
			e := newEnv(t, pcsServer([]*collateral.Response{genuine}), store, nil)
			cfg := collateral.CacheConfig{Upstream: e.fetcher, Store: store, Clock: e.clock}
			if check {
				cfg.Authenticate = func(r *collateral.Response, v collateral.Validity) error {
					return tdx.Authentic(r, v, []*x509.Certificate{p.Root})
				}
			}
			c, err := collateral.NewCache(cfg)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			n, err := c.Warm(ctx)
			if err != nil {
				t.Fatal(err)
			}
			r, err := c.Get(ctx, genuine.URL)
			if err != nil {
				t.Fatal(err)
			}
			if !check {
				if n != 1 || r.Digest() != forged.Digest() || e.srv.Served(genuine.URL) != 0 {
					t.Fatalf("control: warmed %d, forgery served %v, fetched %d times; want the stored forgery served", n, r.Digest() == forged.Digest(), e.srv.Served(genuine.URL))
				}
				return
			}
			if n != 0 || r.Digest() != genuine.Digest() || e.srv.Served(genuine.URL) != 1 {
				t.Fatalf("warmed %d, genuine served %v, fetched %d times; want the forgery skipped and the genuine document fetched", n, r.Digest() == genuine.Digest(), e.srv.Served(genuine.URL))
			}
			if got, err := store.Get(ctx, genuine.URL); err != nil || string(got) != string(genuine.Canonical()) {
				t.Fatalf("the store still holds the forgery: %v", err)
			}
			if st := c.Stats(); st.StoreErrors == 0 {
				t.Errorf("stats %+v; want the unusable stored forgery counted", st)
			}
		})
	}
}

// forgedTCBInfo returns the fake PCS's PKI, its TCB info, and a forgery of it: a look-alike
// PKI's TCB info for the same URL, claiming issue 50 years on and tcbEvaluationDataNumber 1000.
func forgedTCBInfo(t *testing.T) (p *fakeintel.PKI, genuine, forged *collateral.Response) {
	t.Helper()
	p, docs := intelDocs(t, nil)
	forger, err := fakeintel.New(start)
	if err != nil {
		t.Fatal(err)
	}
	o := fakeintel.DefaultCollateralOptions(start.AddDate(50, 0, 0))
	o.TCBInfo.EvaluationDataNumber = 1000
	frs, err := forger.Collateral(o)
	if err != nil {
		t.Fatal(err)
	}
	if frs[0].URL != docs[0].URL {
		t.Fatalf("the forgery is for %s, not %s", frs[0].URL, docs[0].URL)
	}
	return p, docs[0], frs[0]
}

// TestImportAuthenticate: ImportBundle with ImportOptions.Authenticate refuses a forged document
// before it writes it or raises its URL's mark, and replaces a forgery the destination already
// holds (which would otherwise be kept as newer) with the genuine document.
func TestImportAuthenticate(t *testing.T) {
	ctx := context.Background()
	p, genuine, forged := forgedTCBInfo(t)
	opts := collateral.ImportOptions{At: start, Authenticate: func(r *collateral.Response, v collateral.Validity) error {
		return tdx.Authentic(r, v, []*x509.Certificate{p.Root})
	}}
	bundleOf := func(r *collateral.Response) *collateral.Bundle {
		c := r.Canonical()
		return &collateral.Bundle{Entries: []collateral.BundleEntry{{URL: r.URL, Digest: sha256.Sum256(c), Canonical: c}}}
	}

	store := collateral.NewMemoryStore()
	rep, err := collateral.ImportBundle(ctx, bundleOf(forged), store, opts)
	if err != nil || rep.RefusedN != 1 || !strings.Contains(rep.Results[0].Reason, "not signed by its vendor") {
		t.Fatalf("import of the forgery: %v, %+v; want it refused as not signed by its vendor", err, rep)
	}
	if _, err := store.Get(ctx, forged.URL); !errors.Is(err, collateral.ErrNotStored) {
		t.Fatalf("the forgery was written: %v", err)
	}
	if _, err := store.StoredMark(ctx, forged.URL); !errors.Is(err, collateral.ErrNotStored) {
		t.Fatalf("the forgery raised the mark: %v", err)
	}

	// A forgery already stored (no mark: written before these checks) is replaced.
	if err := store.Put(ctx, forged.URL, forged.Canonical()); err != nil {
		t.Fatal(err)
	}
	rep, err = collateral.ImportBundle(ctx, bundleOf(genuine), store, opts)
	if err != nil || rep.Imported != 1 {
		t.Fatalf("import of the genuine document over a stored forgery: %v, %+v; want it imported", err, rep)
	}
	if got, err := store.Get(ctx, genuine.URL); err != nil || string(got) != string(genuine.Canonical()) {
		t.Fatalf("the store does not hold the genuine document: %v", err)
	}
	// Without the check the stored forgery looks newer and is kept: what the check prevents.
	if err := store.Put(ctx, forged.URL, forged.Canonical()); err != nil {
		t.Fatal(err)
	}
	opts.Authenticate = nil
	if rep, err = collateral.ImportBundle(ctx, bundleOf(genuine), store, opts); err != nil || rep.Kept != 1 {
		t.Fatalf("control without the check: %v, %+v; want the stored forgery kept", err, rep)
	}
}
