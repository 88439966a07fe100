package eventlog

import (
	"bytes"
	"crypto"
	"encoding/binary"
	"os"
	"path/filepath"
	"testing"

	"github.com/google/go-eventlog/register"
	"github.com/google/go-eventlog/tcg"
	"github.com/google/go-tdx-guest/abi"
	tdxpb "github.com/google/go-tdx-guest/proto/tdx"
)

func readTestdata(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("..", "..", "testdata", "eventlogs", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// quoteRTMRs returns RTMR0–3 of the recorded GCP TDX quote, read through go-tdx-guest's parser
// and checked against the TD report body offsets (quote v4 header 48 bytes, RTMRs at body
// offset 328, Intel TDX DCAP Quote Library API, "TD Quote Body").
func quoteRTMRs(t testing.TB) [4][]byte {
	t.Helper()
	raw := readTestdata(t, "cos-113-tdx-quote.dat")
	q, err := abi.QuoteToProto(raw)
	if err != nil {
		t.Fatal(err)
	}
	v4, ok := q.(*tdxpb.QuoteV4)
	if !ok {
		t.Fatalf("quote is %T, want a v4 quote", q)
	}
	var out [4][]byte
	for i, r := range v4.GetTdQuoteBody().GetRtmrs() {
		off := 48 + 328 + 48*i
		if !bytes.Equal(r, raw[off:off+48]) {
			t.Fatalf("RTMR%d from go-tdx-guest differs from the bytes at offset %d", i, off)
		}
		out[i] = r
	}
	return out
}

// selfReplay folds a log's own digests, unverified, the way a TPM or the TDX module that
// measured this boot would have: R := H(R ‖ digest) from the reset value, skipping EV_NO_ACTION.
// It returns the value of every register the log extends, keyed by the log's register index.
// ok is false when the log does not parse or uses an initial value this helper does not model
// (H-CRTM, a StartupLocality event).
func selfReplay(raw []byte, alg register.HashAlg, padding bool) (map[int][]byte, bool) {
	el, err := tcg.ParseEventLog(raw, tcg.ParseOpts{AllowPadding: padding})
	if err != nil {
		return nil, false
	}
	h := alg.CryptoHash()
	vals := map[int][]byte{}
	for _, e := range el.Events(alg) {
		if e.Type == tcg.NoAction {
			if bytes.HasPrefix(e.Data, []byte("StartupLocality")) {
				return nil, false
			}
			continue
		}
		if e.Type == tcg.EFIHCRTMEvent || len(e.Digest) != h.Size() || e.Index < 0 || e.Index > 23 {
			return nil, false
		}
		v, ok := vals[e.Index]
		if !ok {
			v = pcrReset(e.Index, h.Size())
		}
		vals[e.Index] = sum(h, append(bytes.Clone(v), e.Digest...))
	}
	return vals, true
}

// allPCRs is what a quote of all 24 PCRs of one bank would carry for this log.
func allPCRs(t testing.TB, raw []byte, alg register.HashAlg) map[int][]byte {
	t.Helper()
	vals, ok := selfReplay(raw, alg, false)
	if !ok {
		t.Fatal("log cannot be self-replayed")
	}
	for i := range 24 {
		if _, ok := vals[i]; !ok {
			vals[i] = pcrReset(i, alg.CryptoHash().Size())
		}
	}
	return vals
}

// record locates one crypto-agile record (TCG_PCR_EVENT2) in a raw log.
type record struct {
	start, typeOff, digestOff, dataOff, dataLen int
	index                                       uint32
}

// agileRecords walks a well-formed crypto-agile log (test data only) and returns its records
// after the Spec ID record, stopping at CCEL padding. digestOff is the first digest's bytes.
func agileRecords(t testing.TB, raw []byte, sizes map[uint16]int) []record {
	t.Helper()
	le := binary.LittleEndian
	off := 32 + int(le.Uint32(raw[28:]))
	var out []record
	for off+8 <= len(raw) && le.Uint32(raw[off:]) != 0xFFFFFFFF {
		r := record{start: off, typeOff: off + 4, index: le.Uint32(raw[off:])}
		n := int(le.Uint32(raw[off+8:]))
		p := off + 12
		for i := range n {
			size := sizes[le.Uint16(raw[p:])]
			if size == 0 {
				t.Fatalf("record at %d: unknown algorithm %#x", off, le.Uint16(raw[p:]))
			}
			if i == 0 {
				r.digestOff = p + 2
			}
			p += 2 + size
		}
		r.dataLen = int(le.Uint32(raw[p:]))
		r.dataOff = p + 4
		off = r.dataOff + r.dataLen
		out = append(out, r)
	}
	return out
}

func findRecord(t testing.TB, raw []byte, recs []record, index uint32, dataPrefix string) record {
	t.Helper()
	for _, r := range recs {
		if r.index == index && bytes.HasPrefix(raw[r.dataOff:r.dataOff+r.dataLen], []byte(dataPrefix)) {
			return r
		}
	}
	t.Fatalf("no record of register index %d with data %q…", index, dataPrefix)
	return record{}
}

// sha1Log is a SHA-1 format log (TCG_PCClientPCREvent records) of n records extending digest d
// into PCR index, each with no event data.
func sha1Log(n int, index uint32, d [20]byte) []byte {
	le := binary.LittleEndian
	out := make([]byte, 0, n*32)
	for range n {
		out = le.AppendUint32(out, index)
		out = le.AppendUint32(out, 0x0D) // EV_IPL; any type but EV_NO_ACTION
		out = append(out, d[:]...)
		out = le.AppendUint32(out, 0)
	}
	return out
}

// fold extends digests into a register from its reset value.
func fold(h crypto.Hash, reset []byte, digests ...[]byte) []byte {
	v := bytes.Clone(reset)
	for _, d := range digests {
		v = sum(h, append(v, d...))
	}
	return v
}

func clone4(in [4][]byte) [4][]byte {
	var out [4][]byte
	for i, v := range in {
		out[i] = bytes.Clone(v)
	}
	return out
}
