package vcache

import (
	"slices"

	"github.com/proofline/proofline/verifier/collateral"
)

// digests maps the key of a response's parts to its canonical Digest, which costs a JSON
// encoding of the whole response (base64 body included) on every call.
var digests = New[[32]byte](1024)

// ResponseDigest returns r.Digest(), computed once per distinct response. The key covers
// everything Canonical encodes — URL, status, every header name and value, body — so a response
// that differs in any of them is a miss.
func ResponseDigest(r *collateral.Response) [32]byte {
	names := make([]string, 0, 4)
	for k := range r.Headers {
		names = append(names, k)
	}
	slices.Sort(names)
	b := NewBuilder().String("response").String(r.URL).Uint(uint64(int64(r.Status))).Bytes(r.Body).Uint(uint64(len(names)))
	for _, k := range names {
		vals := r.Headers[k]
		b.String(k).Uint(uint64(len(vals)))
		for _, v := range vals {
			b.String(v)
		}
	}
	key := b.Key()
	if d, ok := digests.Get(key); ok {
		return d
	}
	d := r.Digest()
	digests.Add(key, d)
	return d
}
