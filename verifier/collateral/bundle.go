package collateral

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/sha256"
	_ "crypto/sha512" // ES384 and ES512 hash through crypto.SHA384/SHA512, which must be linked in.
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/veraison/go-cose"

	"github.com/proofline/proofline/evidence"
)

// A collateral bundle carries every document a verifier's Store holds to another verifier,
// typically an air-gapped one (`proofline collateral export` and `import`). Its format (also in
// README.md) is a tagged COSE_Sign1 (RFC 9052 §4.2, https://www.rfc-editor.org/rfc/rfc9052#section-4.2):
//
//   - protected header: exactly alg (1: ES256, ES384, ES512 or EdDSA), content type (3:
//     BundleContentType) and kid (4: the SHA-256 of the signer's DER SubjectPublicKeyInfo, as
//     evidence.KeyID); the unprotected header is empty; the payload is attached;
//
//   - payload: the manifest, JSON exactly as encoding/json writes bundleJSON (no spaces, fields
//     in this order; a payload that re-encodes differently is refused, so a bundle has one
//     encoding):
//
//     {"format": "proofline-collateral-bundle/v1",
//     "exported_at": "2026-12-03T10:00:00Z",
//     "exporter": {"name": "host-or-verifier-name", "software": "proofline/v1.2.3",
//     "key_id": "<hex>", "alg": "ES256", "public_key": "<base64 DER SubjectPublicKeyInfo>"},
//     "entries": [{"url": "https://…", "sha256": "<hex>", "response": "<base64>"}, …]}
//
//     Entries are sorted by URL, each URL once; response is the canonical recorded response
//     (Response.Canonical: URL, status 200, headers, body) and sha256 its SHA-256 (the digest
//     evidence records name it by).
//
// The signature is made with the data directory's record signing key (the key that signs log
// records; its public key is in the key history, GET /v1/keys). OpenBundle checks it against keys
// the importer trusts, never against the public key the bundle carries; the carried key must be
// the trusted key with the bundle's kid, and exported_at must fall inside that key's validity
// period.
const (
	// BundleContentType is the COSE content type of a collateral bundle.
	BundleContentType = "application/vnd.proofline.collateral-bundle+json"
	// BundleFormat is the manifest's format field.
	BundleFormat = "proofline-collateral-bundle/v1"
	// MaxBundleSize bounds a bundle file.
	MaxBundleSize = 512 << 20
	// MaxBundleEntries bounds the documents of one bundle.
	MaxBundleEntries = 1 << 20
)

// ErrBundle is wrapped by OpenBundle for a bundle that is malformed or whose signature does not
// verify with a trusted key.
var ErrBundle = errors.New("collateral bundle refused")

// BundleSigner signs bundles: an evidence.Key (the record signing key) implements it. It is
// evidence.Signer's method set.
type BundleSigner interface {
	// Algorithm is ES256, ES384, ES512 or EdDSA.
	Algorithm() cose.Algorithm
	// Public is the public key: *ecdsa.PublicKey on the algorithm's curve, or ed25519.PublicKey.
	Public() crypto.PublicKey
	// Sign signs the COSE Sig_structure and returns the signature in COSE form.
	Sign(ctx context.Context, toBeSigned []byte) ([]byte, error)
}

// TrustedKey is a key the importer trusts to sign bundles, with its validity period (zero times:
// unbounded). Convert evidence.KeyInfo of a key history to it.
type TrustedKey struct {
	Algorithm cose.Algorithm
	Public    crypto.PublicKey
	NotBefore time.Time
	// NotAfter is exclusive; zero means no end.
	NotAfter time.Time
}

// Exporter identifies who made a bundle.
type Exporter struct {
	// Name is the exporting verifier's name (its host name unless configured).
	Name string
	// Software is the exporting software and version, e.g. "proofline/v1.2.3".
	Software string
	// KeyID is the signing key's id (SHA-256 of its DER SubjectPublicKeyInfo).
	KeyID []byte
	// Algorithm and Public are the signing key.
	Algorithm cose.Algorithm
	Public    crypto.PublicKey
}

// BundleEntry is one document of a bundle.
type BundleEntry struct {
	URL string
	// Digest is the SHA-256 of Canonical.
	Digest [32]byte
	// Canonical is the canonical recorded response (Response.Canonical).
	Canonical []byte
}

// Bundle is an opened collateral bundle.
type Bundle struct {
	ExportedAt time.Time
	Exporter   Exporter
	// Entries are sorted by URL, each URL once.
	Entries []BundleEntry
}

type bundleJSON struct {
	Format     string          `json:"format"`
	ExportedAt string          `json:"exported_at"`
	Exporter   exporterJSON    `json:"exporter"`
	Entries    []bundleEntryJS `json:"entries"`
}

type exporterJSON struct {
	Name      string `json:"name"`
	Software  string `json:"software"`
	KeyID     string `json:"key_id"`
	Alg       string `json:"alg"`
	PublicKey []byte `json:"public_key"`
}

type bundleEntryJS struct {
	URL      string `json:"url"`
	SHA256   string `json:"sha256"`
	Response []byte `json:"response"`
}

var bundleAlgorithms = []cose.Algorithm{cose.AlgorithmES256, cose.AlgorithmES384, cose.AlgorithmES512, cose.AlgorithmEdDSA}

// ExportOptions configures ExportBundle.
type ExportOptions struct {
	// Signer signs the bundle: the data directory's record signing key. Required.
	Signer BundleSigner
	// Name names the exporter (a host or verifier name). Required.
	Name string
	// Software is the exporting software and version.
	Software string
	// Now is the export time. Required.
	Now time.Time
}

// ListingStore is a Store that can list its URLs (MemoryStore, DirStore).
type ListingStore interface {
	Store
	URLLister
}

// ExportBundle reads every document store holds and returns them as a signed bundle, with the
// bundle's contents. A stored entry that does not read intact or is not a 200 response for its
// URL that ValidityOf can date is an error naming it: the store is damaged and should be
// refetched or repaired before exporting. Expired documents are exported (the importer refuses
// them, naming them).
func ExportBundle(ctx context.Context, store ListingStore, o ExportOptions) ([]byte, *Bundle, error) {
	if o.Signer == nil || o.Name == "" || o.Now.IsZero() {
		return nil, nil, errors.New("collateral: ExportOptions.Signer, Name and Now are required")
	}
	urls, err := store.URLs(ctx)
	if err != nil {
		return nil, nil, fmt.Errorf("collateral export: listing the store: %w", err)
	}
	if len(urls) > MaxBundleEntries {
		return nil, nil, fmt.Errorf("collateral export: the store holds %d documents, over the bundle limit of %d", len(urls), MaxBundleEntries)
	}
	b := &Bundle{ExportedAt: o.Now.UTC().Truncate(time.Second)}
	for _, u := range urls {
		data, err := store.Get(ctx, u)
		if err != nil {
			return nil, nil, fmt.Errorf("collateral export: %s: %w", u, err)
		}
		if _, _, err := checkDocument(u, data); err != nil {
			return nil, nil, fmt.Errorf("collateral export: the stored document for %s is unusable (%w); let the verifier refetch it, or remove it from the store", u, err)
		}
		b.Entries = append(b.Entries, BundleEntry{URL: u, Digest: sha256.Sum256(data), Canonical: data})
	}
	slices.SortFunc(b.Entries, func(x, y BundleEntry) int { return strings.Compare(x.URL, y.URL) })
	alg, pub := o.Signer.Algorithm(), o.Signer.Public()
	if err := evidence.CheckCOSEKey(alg, pub); err != nil {
		return nil, nil, fmt.Errorf("collateral export: signing key: %w", err)
	}
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return nil, nil, fmt.Errorf("collateral export: signing key: %w", err)
	}
	kid := sha256.Sum256(der)
	b.Exporter = Exporter{Name: o.Name, Software: o.Software, KeyID: kid[:], Algorithm: alg, Public: pub}
	payload, err := b.manifest(der)
	if err != nil {
		return nil, nil, err
	}
	msg := bundleEnvelope(alg, kid[:], payload, nil)
	if err := msg.Sign(rand.Reader, nil, evidence.COSESigner(ctx, o.Signer)); err != nil {
		return nil, nil, fmt.Errorf("collateral export: signing: %w", err)
	}
	if k, ok := pub.(*ecdsa.PublicKey); ok {
		evidence.LowS(k, msg.Signature)
	}
	out, err := msg.MarshalCBOR()
	if err != nil {
		return nil, nil, fmt.Errorf("collateral export: encoding: %w", err)
	}
	return out, b, nil
}

func (b *Bundle) manifest(der []byte) ([]byte, error) {
	m := bundleJSON{
		Format:     BundleFormat,
		ExportedAt: b.ExportedAt.UTC().Format(time.RFC3339),
		Exporter: exporterJSON{Name: b.Exporter.Name, Software: b.Exporter.Software, KeyID: hex.EncodeToString(b.Exporter.KeyID),
			Alg: b.Exporter.Algorithm.String(), PublicKey: der},
		Entries: make([]bundleEntryJS, 0, len(b.Entries)),
	}
	for _, e := range b.Entries {
		m.Entries = append(m.Entries, bundleEntryJS{URL: e.URL, SHA256: hex.EncodeToString(e.Digest[:]), Response: e.Canonical})
	}
	out, err := json.Marshal(m)
	if err != nil {
		return nil, fmt.Errorf("collateral bundle: encoding the manifest: %w", err)
	}
	return out, nil
}

func bundleEnvelope(alg cose.Algorithm, kid, payload, sig []byte) *cose.Sign1Message {
	return &cose.Sign1Message{
		Headers: cose.Headers{
			Protected: cose.ProtectedHeader{
				cose.HeaderLabelAlgorithm:   alg,
				cose.HeaderLabelContentType: BundleContentType,
				cose.HeaderLabelKeyID:       kid,
			},
			Unprotected: cose.UnprotectedHeader{},
		},
		Payload:   payload,
		Signature: sig,
	}
}

// ParseBundle decodes a bundle without checking its signature: the structure, the manifest's
// single encoding, each entry's digest and that each entry is the canonical 200 response for its
// URL. Use OpenBundle to import; ParseBundle alone says nothing about who made the bundle.
func ParseBundle(data []byte) (*Bundle, error) {
	b, _, err := parseBundle(data)
	return b, err
}

// OpenBundle parses a bundle (ParseBundle) and verifies its signature with the trusted key whose
// id is the bundle's kid. It refuses, wrapping ErrBundle: a kid no trusted key has, a carried
// public key other than that trusted key, a signature that does not verify, an exported_at
// outside the key's validity period.
func OpenBundle(data []byte, trusted []TrustedKey) (*Bundle, error) {
	b, msg, err := parseBundle(data)
	if err != nil {
		return nil, err
	}
	var key *TrustedKey
	for i := range trusted {
		der, err := x509.MarshalPKIXPublicKey(trusted[i].Public)
		if err != nil {
			continue
		}
		if kid := sha256.Sum256(der); bytes.Equal(kid[:], b.Exporter.KeyID) {
			key = &trusted[i]
			break
		}
	}
	if key == nil {
		return nil, fmt.Errorf("%w: it is signed by key %x (exporter %q), which is not a trusted key; pass the exporter's key history (GET /v1/keys, keys/history.json) with --trusted-key",
			ErrBundle, b.Exporter.KeyID, b.Exporter.Name)
	}
	if key.Algorithm != b.Exporter.Algorithm {
		return nil, fmt.Errorf("%w: it is signed with %v, but the trusted key %x is %v", ErrBundle, b.Exporter.Algorithm, b.Exporter.KeyID, key.Algorithm)
	}
	if err := evidence.CheckCOSEKey(key.Algorithm, key.Public); err != nil {
		return nil, fmt.Errorf("%w: trusted key %x: %w", ErrBundle, b.Exporter.KeyID, err)
	}
	if k, ok := key.Public.(*ecdsa.PublicKey); ok && !evidence.IsLowS(k, msg.Signature) {
		return nil, fmt.Errorf("%w: ECDSA signature with high S (not the one encoding this format allows)", ErrBundle)
	}
	v, err := cose.NewVerifier(key.Algorithm, key.Public)
	if err != nil {
		return nil, fmt.Errorf("%w: trusted key %x: %w", ErrBundle, b.Exporter.KeyID, err)
	}
	if err := msg.Verify(nil, v); err != nil {
		return nil, fmt.Errorf("%w: the signature does not verify with trusted key %x: the bundle was altered or not made with that key", ErrBundle, b.Exporter.KeyID)
	}
	if (!key.NotBefore.IsZero() && b.ExportedAt.Before(key.NotBefore.Truncate(time.Second))) || (!key.NotAfter.IsZero() && !b.ExportedAt.Before(key.NotAfter)) {
		return nil, fmt.Errorf("%w: exported at %s, outside the validity period of key %x (%s to %s)", ErrBundle,
			bundleTime(b.ExportedAt), b.Exporter.KeyID, bundleTime(key.NotBefore), bundleTime(key.NotAfter))
	}
	return b, nil
}

func parseBundle(data []byte) (*Bundle, *cose.Sign1Message, error) {
	bad := func(format string, a ...any) (*Bundle, *cose.Sign1Message, error) {
		return nil, nil, fmt.Errorf("%w: %s", ErrBundle, fmt.Sprintf(format, a...))
	}
	if len(data) > MaxBundleSize {
		return bad("%d bytes, over the limit of %d", len(data), MaxBundleSize)
	}
	var msg cose.Sign1Message
	if err := msg.UnmarshalCBOR(data); err != nil {
		return bad("not a COSE_Sign1 collateral bundle (truncated or another file?): %v", err)
	}
	if len(msg.Headers.Unprotected) != 0 {
		return bad("the unprotected header must be empty")
	}
	h := msg.Headers.Protected
	if _, ok := h[cose.HeaderLabelCritical]; ok {
		return bad("critical header parameters are not understood (RFC 9052 §3.1)")
	}
	for l := range h {
		switch l {
		case cose.HeaderLabelAlgorithm, cose.HeaderLabelContentType, cose.HeaderLabelKeyID:
		default:
			return bad("unexpected protected header parameter %v", l)
		}
	}
	alg, err := h.Algorithm()
	if err != nil || !slices.Contains(bundleAlgorithms, alg) {
		return bad("algorithm: not one of ES256, ES384, ES512, EdDSA")
	}
	if ct, ok := h[cose.HeaderLabelContentType].(string); !ok || ct != BundleContentType {
		return bad("content type is not %q: not a collateral bundle", BundleContentType)
	}
	kid, ok := h[cose.HeaderLabelKeyID].([]byte)
	if !ok || len(kid) != sha256.Size {
		return bad("no 32-byte key id")
	}
	if msg.Payload == nil {
		return bad("detached payload")
	}
	// The library keeps the protected header's raw bytes; compare with a message built from the
	// parsed values so that a bundle has one encoding.
	canon, err := bundleEnvelope(alg, kid, msg.Payload, msg.Signature).MarshalCBOR()
	if err != nil || !bytes.Equal(canon, data) {
		return bad("COSE_Sign1 not in deterministic encoding")
	}
	dec := json.NewDecoder(bytes.NewReader(msg.Payload))
	dec.DisallowUnknownFields()
	var m bundleJSON
	if err := dec.Decode(&m); err != nil {
		return bad("manifest: %v", err)
	}
	if m.Format != BundleFormat {
		return bad("manifest format %q, want %q", m.Format, BundleFormat)
	}
	at, err := time.Parse(time.RFC3339, m.ExportedAt)
	if err != nil || at.UTC().Format(time.RFC3339) != m.ExportedAt {
		return bad("exported_at %q is not an RFC 3339 UTC time in whole seconds", m.ExportedAt)
	}
	ai := slices.IndexFunc(bundleAlgorithms, func(a cose.Algorithm) bool { return a.String() == m.Exporter.Alg })
	if ai < 0 || bundleAlgorithms[ai] != alg {
		return bad("exporter alg %q is not the header's %v", m.Exporter.Alg, alg)
	}
	pub, err := x509.ParsePKIXPublicKey(m.Exporter.PublicKey)
	if err != nil {
		return bad("exporter public key: %v", err)
	}
	if err := evidence.CheckCOSEKey(alg, pub); err != nil {
		return bad("exporter public key: %v", err)
	}
	if sum := sha256.Sum256(m.Exporter.PublicKey); !bytes.Equal(sum[:], kid) || m.Exporter.KeyID != hex.EncodeToString(kid) {
		return bad("the key id is not the SHA-256 of the exporter's public key")
	}
	if m.Exporter.Name == "" {
		return bad("no exporter name")
	}
	if len(m.Entries) > MaxBundleEntries {
		return bad("%d entries, over the limit of %d", len(m.Entries), MaxBundleEntries)
	}
	b := &Bundle{ExportedAt: at.UTC(), Exporter: Exporter{Name: m.Exporter.Name, Software: m.Exporter.Software, KeyID: kid, Algorithm: alg, Public: pub}}
	for i, e := range m.Entries {
		if i > 0 && e.URL <= m.Entries[i-1].URL {
			return bad("entries are not sorted by URL or name %s twice", e.URL)
		}
		sum := sha256.Sum256(e.Response)
		if e.SHA256 != hex.EncodeToString(sum[:]) {
			return bad("entry %s: its response does not hash to its sha256 %s: the bundle is corrupt", e.URL, e.SHA256)
		}
		if _, _, err := checkDocument(e.URL, e.Response); err != nil {
			return bad("entry %s: %v", e.URL, err)
		}
		b.Entries = append(b.Entries, BundleEntry{URL: e.URL, Digest: sum, Canonical: e.Response})
	}
	// One encoding: the manifest must be exactly what ExportBundle writes for these contents.
	if again, err := b.manifest(m.Exporter.PublicKey); err != nil || !bytes.Equal(again, msg.Payload) {
		return bad("manifest not in its canonical encoding")
	}
	return b, &msg, nil
}

// checkDocument checks, as the Cache does for what it loads from a Store, that data is the
// canonical recorded 200 response for url and that its validity can be read.
func checkDocument(url string, data []byte) (*Response, Validity, error) {
	rs, err := Parse(data)
	if err != nil {
		return nil, Validity{}, err
	}
	if len(rs) != 1 || rs[0].URL != url || rs[0].Status != http.StatusOK {
		return nil, Validity{}, errors.New("not the 200 response for this URL")
	}
	if !bytes.Equal(rs[0].Canonical(), data) {
		return nil, Validity{}, errors.New("not in canonical form")
	}
	v, err := ValidityOf(rs[0])
	if err != nil {
		return nil, Validity{}, fmt.Errorf("its validity cannot be read: %w", err)
	}
	return rs[0], v, nil
}

// ImportOptions configures ImportBundle.
type ImportOptions struct {
	// At is the time freshness is judged at: normally now. Required.
	At time.Time
	// StaleGraceUnsafe accepts documents up to this long past their nextUpdate. A verifier still
	// reports such a document stale unless its policy accepts the grace (stale_grace_unsafe).
	StaleGraceUnsafe time.Duration
	// Authenticate, when set, refuses a document that its vendor did not sign through a pinned
	// root or that is not the document its URL names (verifier.AuthenticCollateral), as the
	// Cache's check does, before anything is written or the URL's mark raised.
	Authenticate func(*Response, Validity) error
}

// Import outcomes of one document.
const (
	Imported = "imported"
	// KeptNewer: the destination holds a newer document (or the same one) for the URL.
	KeptNewer = "kept"
	Refused   = "refused"
)

// ImportResult is the outcome for one document of a bundle.
type ImportResult struct {
	URL     string
	Outcome string // Imported, KeptNewer or Refused
	// Reason says why a document was kept or refused.
	Reason   string
	Validity Validity
}

// ImportReport sums up an import.
type ImportReport struct {
	Results                  []ImportResult
	Imported, Kept, RefusedN int
}

// ImportBundle writes the documents of an opened bundle (OpenBundle) into dst, one Put each. It
// refuses (and does not write) a document o.Authenticate refuses, one already past its nextUpdate at o.At (beyond
// o.StaleGraceUnsafe), and keeps the destination's copy when it is the same document, issued at
// the same time with a nextUpdate as late or later, or when the bundle's is older by the Cache's
// rule (olderThan: a lower Intel tcbEvaluationDataNumber, which never goes backwards, or an
// earlier issue date; a destination copy o.Authenticate refuses is replaced). When dst is a MarkStore it also refuses, wrapping ErrOlder in the reason, a
// document below the URL's Mark (belowMark), so that a replayed old bundle signed by a trusted key
// cannot roll back a URL whose document the destination lost, and it raises the Mark of every
// document it writes before writing it. A destination copy that cannot be read is replaced. It
// returns an error only when dst fails; refusals are in the report.
func ImportBundle(ctx context.Context, b *Bundle, dst Store, o ImportOptions) (*ImportReport, error) {
	if o.At.IsZero() {
		return nil, errors.New("collateral: ImportOptions.At is required")
	}
	rep := &ImportReport{}
	add := func(r ImportResult) {
		rep.Results = append(rep.Results, r)
		switch r.Outcome {
		case Imported:
			rep.Imported++
		case KeptNewer:
			rep.Kept++
		default:
			rep.RefusedN++
		}
	}
	for _, e := range b.Entries {
		if err := ctx.Err(); err != nil {
			return rep, err
		}
		resp, v, err := checkDocument(e.URL, e.Canonical)
		if err != nil {
			add(ImportResult{URL: e.URL, Outcome: Refused, Reason: err.Error()})
			continue
		}
		if o.Authenticate != nil {
			if err := o.Authenticate(resp, v); err != nil {
				add(ImportResult{URL: e.URL, Outcome: Refused, Validity: v,
					Reason: fmt.Sprintf("not signed by its vendor through a pinned root: %v; check that the importer trusts the vendor roots the exporter verifies with", err)})
				continue
			}
		}
		if !v.Immutable && !o.At.Before(v.NextUpdate.Add(o.StaleGraceUnsafe)) {
			reason := fmt.Sprintf("expired: its nextUpdate is %s, before the import time %s", bundleTime(v.NextUpdate), bundleTime(o.At))
			if o.StaleGraceUnsafe > 0 {
				reason += fmt.Sprintf(" by more than the grace of %s", o.StaleGraceUnsafe)
			}
			add(ImportResult{URL: e.URL, Outcome: Refused, Reason: reason + "; export a fresh bundle", Validity: v})
			continue
		}
		if why := keepExisting(ctx, dst, e, resp, v, o.Authenticate); why != "" {
			add(ImportResult{URL: e.URL, Outcome: KeptNewer, Reason: why, Validity: v})
			continue
		}
		ms, marked := dst.(MarkStore)
		if marked {
			m, err := ms.StoredMark(ctx, e.URL)
			if err != nil && !errors.Is(err, ErrNotStored) {
				return rep, fmt.Errorf("collateral import: %s: reading the mark of the documents kept: %w", e.URL, err)
			}
			if why := belowMark(resp, v, m); why != "" {
				add(ImportResult{URL: e.URL, Outcome: Refused, Validity: v,
					Reason: fmt.Sprintf("%v: %s: %s (a replayed older bundle?); export a fresh bundle", ErrOlder, e.URL, why)})
				continue
			}
			if err := ms.RaiseMark(ctx, e.URL, MarkOf(resp, v)); err != nil {
				return rep, fmt.Errorf("collateral import: %s: %w", e.URL, err)
			}
		}
		if err := dst.Put(ctx, e.URL, e.Canonical); err != nil {
			return rep, fmt.Errorf("collateral import: writing %s: %w", e.URL, err)
		}
		add(ImportResult{URL: e.URL, Outcome: Imported, Validity: v})
	}
	return rep, nil
}

// keepExisting returns why dst's copy of e.URL is kept instead of the bundle's, or "".
func keepExisting(ctx context.Context, dst Store, e BundleEntry, resp *Response, v Validity, authentic func(*Response, Validity) error) string {
	data, err := dst.Get(ctx, e.URL)
	if err != nil {
		return "" // nothing stored, or nothing usable: import
	}
	if sha256.Sum256(data) == e.Digest {
		return "the destination holds the same document"
	}
	old, ov, err := checkDocument(e.URL, data)
	if err == nil && authentic != nil {
		err = authentic(old, ov) // a stored forgery is replaced, as the Cache would not use it
	}
	if err != nil {
		return ""
	}
	if why := olderThan(resp, v, old, ov); why != "" {
		return "the destination's document is newer: the bundle's has " + why
	}
	if sameIssueNoLater(v, ov) {
		return fmt.Sprintf("the destination's document is as new or newer (issued %s, next update %s; the bundle's next update %s)",
			bundleTime(ov.IssuedAt), bundleTime(ov.NextUpdate), bundleTime(v.NextUpdate))
	}
	return ""
}

func bundleTime(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.UTC().Format(time.RFC3339)
}
