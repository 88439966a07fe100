// Package collateral answers the verifier's requests for vendor collateral (Intel PCS TCB info,
// QE identity and CRLs; AMD KDS certificates and CRLs) by exact URL.
//
// Every answer is a Source, keyed by the exact URL the verifier asks for:
//   - Set and ReadDir: recorded vendor responses, offline and in tests;
//   - Fetcher: the vendors over HTTP (Intel PCS API v4, AMD KDS, CRL distribution points), each
//     canonical URL mapped by a Route to the vendor, a PCCS or a mirror, with a request budget
//     per host and Retry-After honoured;
//   - Cache: in front of a Fetcher, serving each document until its own nextUpdate (VCEKs
//     forever), coalescing concurrent misses, keeping responses in a Store (MemoryStore,
//     DirStore) across restarts;
//   - Refresher: refetches a Cache's dated documents ahead of their nextUpdate (Cache.Refetch),
//     and Cache's OnReplace hook lets a verifier service record every replacement as evidence.
//
// A Source never passes on an answer it does not have: a missing, failed or stale document is an
// error wrapping ErrUnavailable, which the verifier reports as collateral_unavailable.
package collateral

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

// ErrUnavailable is wrapped by Get when no response is known for a URL. A verifier treats it as
// "collateral unavailable": a failure, never a pass.
var ErrUnavailable = errors.New("collateral unavailable")

// MaxResponseSize bounds one recorded response body.
const MaxResponseSize = 8 << 20

// Response is one recorded vendor response. Its JSON form is the recorded collateral file format:
//
//	{"url": "https://…", "status": 200, "headers": {"Name": ["value"]}, "body": "<base64>"}
type Response struct {
	URL     string              `json:"url"`
	Status  int                 `json:"status"`
	Headers map[string][]string `json:"headers,omitempty"`
	Body    []byte              `json:"body"`
}

// checkHeaders refuses a response that names one header twice (e.g. "TCB-Info-Issuer-Chain" and
// "tcb-info-issuer-chain"): which one a lookup found would depend on map order, and verdicts and
// digests must not.
func (r *Response) checkHeaders() error {
	seen := map[string]string{}
	for k := range r.Headers {
		ck := http.CanonicalHeaderKey(k)
		if prev, dup := seen[ck]; dup {
			return fmt.Errorf("recorded response for %s names header %q twice (%q and %q)", r.URL, ck, prev, k)
		}
		seen[ck] = k
	}
	return nil
}

// Header returns the values of a header, matching its name case-insensitively as HTTP does.
func (r *Response) Header(name string) []string {
	for k, v := range r.Headers {
		if strings.EqualFold(k, name) {
			return v
		}
	}
	return nil
}

// Canonical returns the response in canonical JSON: URL, status, headers with canonical names
// and sorted keys, body. Evidence records refer to collateral by its SHA-256 (Digest), and the
// blob store keeps exactly these bytes, so issuer chains carried in headers are kept for
// re-performance.
func (r *Response) Canonical() []byte {
	canon := struct {
		URL     string              `json:"url"`
		Status  int                 `json:"status"`
		Headers map[string][]string `json:"headers"`
		Body    []byte              `json:"body"`
	}{URL: r.URL, Status: r.Status, Headers: map[string][]string{}, Body: r.Body}
	for k, v := range r.Headers {
		ck := http.CanonicalHeaderKey(k)
		canon.Headers[ck] = append(canon.Headers[ck], v...)
	}
	// encoding/json sorts map keys, which makes this encoding canonical; marshalling strings,
	// ints and byte slices cannot fail.
	b, _ := json.Marshal(canon)
	return b
}

// Digest is the SHA-256 of Canonical.
func (r *Response) Digest() [32]byte { return sha256.Sum256(r.Canonical()) }

// Source answers collateral requests by exact URL. Get returns an error wrapping ErrUnavailable
// when it has no answer. Implementations must be safe for concurrent use.
type Source interface {
	Get(ctx context.Context, url string) (*Response, error)
}

// Set is an in-memory Source keyed by exact URL.
type Set map[string]*Response

// Get implements Source. Only 200 responses count as an answer.
func (s Set) Get(_ context.Context, url string) (*Response, error) {
	r, ok := s[url]
	if !ok {
		return nil, fmt.Errorf("%w: no recorded response for %s", ErrUnavailable, url)
	}
	if r.Status != http.StatusOK {
		return nil, fmt.Errorf("%w: recorded response for %s has status %d", ErrUnavailable, url, r.Status)
	}
	return r, nil
}

// Add inserts responses, refusing a URL that is already present and a response that names one
// header twice.
func (s Set) Add(rs ...*Response) error {
	for _, r := range rs {
		if r.URL == "" {
			return errors.New("recorded response has no url")
		}
		if err := r.checkHeaders(); err != nil {
			return err
		}
		if _, dup := s[r.URL]; dup {
			return fmt.Errorf("recorded collateral holds %s twice", r.URL)
		}
		s[r.URL] = r
	}
	return nil
}

// URLs returns the recorded URLs in sorted order.
func (s Set) URLs() []string {
	out := make([]string, 0, len(s))
	for u := range s {
		out = append(out, u)
	}
	sort.Strings(out)
	return out
}

// ReadDir loads every *.json file in dir. Each file holds one Response or a JSON array of them;
// the same URL twice, in one file or across files, is an error.
func ReadDir(dir string) (Set, error) {
	paths, err := filepath.Glob(filepath.Join(dir, "*.json"))
	if err != nil {
		return nil, err
	}
	if _, err := os.Stat(dir); err != nil {
		return nil, fmt.Errorf("collateral directory: %w", err)
	}
	sort.Strings(paths)
	set := Set{}
	for _, p := range paths {
		data, err := os.ReadFile(p)
		if err != nil {
			return nil, err
		}
		rs, err := Parse(data)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", p, err)
		}
		if err := set.Add(rs...); err != nil {
			return nil, fmt.Errorf("%s: %w", p, err)
		}
	}
	return set, nil
}

// Parse reads one recorded response or a JSON array of them.
func Parse(data []byte) ([]*Response, error) {
	data = bytes.TrimSpace(data)
	var rs []*Response
	if len(data) > 0 && data[0] == '[' {
		if err := json.Unmarshal(data, &rs); err != nil {
			return nil, fmt.Errorf("not a recorded response array: %w", err)
		}
	} else {
		var r Response
		if err := json.Unmarshal(data, &r); err != nil {
			return nil, fmt.Errorf("not a recorded response: %w", err)
		}
		rs = []*Response{&r}
	}
	for _, r := range rs {
		if r == nil || r.URL == "" {
			return nil, errors.New("recorded response without url")
		}
		if len(r.Body) > MaxResponseSize {
			return nil, fmt.Errorf("recorded response for %s is over %d bytes", r.URL, MaxResponseSize)
		}
		if err := r.checkHeaders(); err != nil {
			return nil, err
		}
	}
	return rs, nil
}

// WriteFile writes responses as one recorded collateral file.
func WriteFile(path string, rs []*Response) error {
	b, err := json.MarshalIndent(rs, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(b, '\n'), 0o644)
}
