package tdx

import (
	"bytes"
	"encoding/binary"
	"errors"
	"os"
	"testing"

	"github.com/proofline/proofline/internal/fixture"
)

func realQuotes(t testing.TB) map[string][]byte {
	out := map[string][]byte{}
	for _, name := range []string{"tdx-v4-spr", "tdx-v5", "tdx-v4-gcp"} {
		out[name] = fixture.Evidence(t, "real/"+name+"/evidence.json").Report
	}
	return out
}

func TestParseRealQuotes(t *testing.T) {
	for name, raw := range realQuotes(t) {
		q, err := ParseQuote(raw)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if q.PCK.Subject.CommonName != "Intel SGX PCK Certificate" || q.Root.Subject.CommonName != "Intel SGX Root CA" {
			t.Errorf("%s: chain %q / %q", name, q.PCK.Subject.CommonName, q.Root.Subject.CommonName)
		}
		wantSigned := HeaderSize + BodySizeV4
		if q.Version == 5 {
			wantSigned = HeaderSize + 6 + BodySizeV15
		}
		if len(q.Signed) != wantSigned || !bytes.Equal(q.Signed, raw[:wantSigned]) {
			t.Errorf("%s: signed region is %d bytes, want the first %d", name, len(q.Signed), wantSigned)
		}
	}
}

// Each case breaks one rule of VERIFIER-CHECKS TDX 1 starting from a valid quote.
func TestParseRejects(t *testing.T) {
	quotes := realQuotes(t)
	v4, v5 := quotes["tdx-v4-spr"], quotes["tdx-v5"]
	put16 := func(b []byte, off int, v uint16) []byte {
		c := bytes.Clone(b)
		binary.LittleEndian.PutUint16(c[off:], v)
		return c
	}
	put32 := func(b []byte, off int, v uint32) []byte {
		c := bytes.Clone(b)
		binary.LittleEndian.PutUint32(c[off:], v)
		return c
	}
	sigLenOff := HeaderSize + BodySizeV4
	certTypeOff := sigLenOff + 4 + 128
	pckTypeOff := func(q []byte) int {
		authSize := int(binary.LittleEndian.Uint16(q[certTypeOff+6+QEReportSize+64:]))
		return certTypeOff + 6 + QEReportSize + 64 + 2 + authSize
	}
	upstream, err := os.ReadFile(fixture.Path("real", "tdx-v4-spr", "upstream-with-trailer.dat"))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		q    []byte
	}{
		{"empty", nil},
		{"header only", v4[:HeaderSize]},
		{"version 3", put16(v4, 0, 3)},
		{"version 6", put16(v4, 0, 6)},
		{"attestation key type 3", put16(v4, 2, 3)},
		{"TEE type SGX", put32(v4, 4, 0)},
		{"truncated body", v4[:HeaderSize+100]},
		{"signature data length too long", put32(v4, sigLenOff, uint32(len(v4)))},
		{"signature data length too short", put32(v4, sigLenOff, 100)},
		{"outer certification data type 5", put16(v4, certTypeOff, 5)},
		{"certification data size off by one", put32(v4, certTypeOff+2, binary.LittleEndian.Uint32(v4[certTypeOff+2:])+1)},
		{"PCK certification data type 4", put16(v4, pckTypeOff(v4), 4)},
		{"trailing non-zero bytes (upstream test trailer)", upstream},
		{"trailing byte", append(bytes.Clone(v4), 1)},
		{"v5 body type 2 with TDX 1.5 size", put16(v5, HeaderSize, 2)},
		{"v5 body size 0", put32(v5, HeaderSize+2, 0)},
		{"v5 body type 4", put16(v5, HeaderSize, 4)},
		{"valid quote zero-padded to one byte over the size bound", padTo(v4, maxQuoteSize+1)},
		{"text before the first PEM block", func() []byte {
			q, _ := ParseQuote(v4)
			c := bytes.Clone(v4)
			off := len(v4) - len(q.PCKChainPEM)
			c[off] = 'X' // "X----BEGIN …": pem.Decode alone would skip to the next block
			return c
		}()},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := ParseQuote(tc.q); !errors.Is(err, ErrMalformed) {
				t.Fatalf("ParseQuote = %v, want ErrMalformed", err)
			}
		})
	}
	// Zero padding after the quote (the legacy device's buffer) is tolerated and never used, up
	// to the size bound.
	if _, err := ParseQuote(append(bytes.Clone(v4), make([]byte, 100)...)); err != nil {
		t.Fatalf("zero padding rejected: %v", err)
	}
	if _, err := ParseQuote(padTo(v4, maxQuoteSize)); err != nil {
		t.Fatalf("zero padding up to the size bound rejected: %v", err)
	}
}

// padTo returns q followed by zero bytes up to n bytes.
func padTo(q []byte, n int) []byte {
	return append(bytes.Clone(q), make([]byte, n-len(q))...)
}

func FuzzParseQuote(f *testing.F) {
	for _, q := range realQuotes(f) {
		f.Add(q)
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		q, err := ParseQuote(raw)
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("error %v does not wrap ErrMalformed", err)
			}
			return
		}
		if !bytes.Equal(q.Signed, raw[:len(q.Signed)]) || len(q.Signature) != 64 || len(q.AttestationKey) != 64 ||
			len(q.QEReport.Raw) != QEReportSize || len(q.Body.ReportData) != 64 || q.PCK == nil || q.Root == nil {
			t.Fatal("parsed quote breaks a structural invariant")
		}
	})
}

// A quote's PCK chain is parsed once per distinct chain that verified: parsing alone keeps
// nothing, a remembered chain answers the next quote with the same bytes with the same (shared,
// read-only) certificates, and a chain that differs in one byte, is too large or does not end
// in the root it verified to is parsed anew.
func TestPCKChainCached(t *testing.T) {
	v4 := realQuotes(t)["tdx-v4-spr"]
	parse := func(raw []byte) *Quote {
		t.Helper()
		q, err := ParseQuote(raw)
		if err != nil {
			t.Fatal(err)
		}
		return q
	}
	pckChainCache.Purge()
	q1, q2 := parse(v4), parse(bytes.Clone(v4))
	if q1.PCK == q2.PCK {
		t.Fatal("a chain that no verification vouched for was cached")
	}
	rememberPCKChain(q1, q2.Intermediate) // not the chain's root
	if parse(v4).PCK == q1.PCK {
		t.Fatal("a chain was cached for a root other than its own")
	}
	rememberPCKChain(q1, q1.Root)
	if q3 := parse(bytes.Clone(v4)); q3.PCK != q1.PCK || q3.Intermediate != q1.Intermediate || q3.Root != q1.Root {
		t.Fatal("the same PCK chain was parsed twice")
	}
	// Change one base64 character inside the PCK certificate's signature (its last DER bytes,
	// just before the first END line), so the PEM still decodes and the certificate still parses.
	c := bytes.Clone(v4)
	chainOff := len(v4) - len(q1.PCKChainPEM)
	end := chainOff + bytes.Index(q1.PCKChainPEM, []byte("-----END"))
	i := end - 10
	for c[i] == '\n' || c[i] == '=' || c[i] == '\r' {
		i--
	}
	if c[i] == 'A' {
		c[i] = 'B'
	} else {
		c[i] = 'A'
	}
	q4 := parse(c)
	if q4.PCK == q1.PCK || bytes.Equal(q4.PCK.Raw, q1.PCK.Raw) {
		t.Fatal("a PCK chain with another certificate was answered with the cached one")
	}
	if !bytes.Equal(q4.Intermediate.Raw, q1.Intermediate.Raw) {
		t.Fatal("the change reached the intermediate certificate; the test meant to change the PCK certificate only")
	}
	// The same chain in another encoding (two NULs of padding, CRLF line breaks) parses, but is
	// not kept: one genuine chain makes at most two cache entries (with and without one NUL).
	for name, pemChain := range map[string][]byte{
		"two NULs":  append(bytes.Clone(q1.PCKChainPEM), 0, 0),
		"CRLF":      bytes.ReplaceAll(bytes.TrimRight(q1.PCKChainPEM, "\x00"), []byte("\n"), []byte("\r\n")),
		"oversized": append(bytes.Clone(q1.PCKChainPEM), make([]byte, maxCachedPCKChain)...),
	} {
		other := *q1
		other.PCKChainPEM, other.pckChainKey, other.pckChainCached = pemChain, pckChainKey(pemChain), false
		rememberPCKChain(&other, q1.Root)
		if _, ok := pckChainCache.Get(other.pckChainKey); ok {
			t.Errorf("%s: a chain not in Intel's encoding was cached", name)
		}
	}
}
