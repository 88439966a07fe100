package audit

import (
	"bytes"
	"context"
	"encoding/json"
	"path/filepath"
	"testing"

	"github.com/proofline/proofline/evidence/audit/audittest"
)

// FuzzVerify feeds Verify's reader hostile bundles (uncompressed tar, the format under the gzip
// layer): whatever the bytes, it returns a report and never panics or hangs.
func FuzzVerify(f *testing.F) {
	ctx := context.Background()
	l, err := audittest.Generate(ctx, audittest.Options{Dir: filepath.Join(f.TempDir(), "data"), Records: 12, VMs: 2})
	if err != nil {
		f.Fatal(err)
	}
	var buf bytes.Buffer
	if _, err := Export(ctx, &buf, source(f, l.Dir), ExportOptions{}); err != nil {
		f.Fatal(err)
	}
	es := unpack(f, buf.Bytes())
	opts := VerifyOptions{TestRoots: l.Platforms.Roots, Workers: 2}
	good := pack(f, es, true)
	if rep, _ := verifyBundle(ctx, newTarReader(bytes.NewReader(good)), opts); !rep.OK() {
		f.Fatalf("the seed bundle fails: %v", rep.Failures)
	}
	f.Add(good)
	f.Add(pack(f, es[:len(es)/2], true))
	f.Add(pack(f, append([]tarEntry{es[0]}, es[len(es)-3:]...), true))
	redacted := append([]tarEntry(nil), es...)
	for i, e := range redacted {
		if k, _, _ := classify(e.name); k == kindProof {
			var p inclusionProof
			json.Unmarshal(e.data, &p)
			p.LeafHash = make([]byte, 32)
			redacted[i].data, _ = json.Marshal(p)
		}
	}
	f.Add(pack(f, redacted, true))
	f.Fuzz(func(t *testing.T, data []byte) {
		rep, err := verifyBundle(ctx, newTarReader(bytes.NewReader(data)), opts)
		if err != nil || rep == nil {
			t.Fatalf("Verify returned %v, %v", rep, err)
		}
	})
}
