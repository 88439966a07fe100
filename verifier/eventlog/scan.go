package eventlog

import (
	"bytes"
	"encoding/binary"
	"fmt"
)

// MaxEvents bounds the records of one log, its header record included. Real logs hold 50–300
// records (a CCEL fewer than 100); 20,000 leaves room for any firmware while capping the work a
// hostile log can cause.
const MaxEvents = 20000

// maxAlgorithms bounds the digest algorithms a crypto-agile log may declare. A TPM has a handful
// of PCR banks; go-eventlog loops over every declared algorithm for every digest it reads, so
// this bound keeps its parse linear.
const maxAlgorithms = 16

const (
	evNoAction = 0x03 // EV_NO_ACTION

	// sha1RecordHeader is a TCG_PCClientPCREvent without its event data: PCRIndex, EventType,
	// a SHA-1 digest and EventSize (PFP §10).
	sha1RecordHeader = 4 + 4 + 20 + 4
	// specIDHeader is TCG_EfiSpecIDEvent up to and including numberOfAlgorithms, the size at
	// which go-eventlog starts reading the first record as a Spec ID event.
	specIDHeader = 16 + 4 + 1 + 1 + 1 + 1 + 4
	// paddingIndex marks the start of a CCEL's unused log area, which TDVF fills with 0xFF.
	paddingIndex = 0xFFFFFFFF
)

// specIDSignature opens a TCG_EfiSpecIDEvent of a crypto-agile log (PFP §10).
var specIDSignature = []byte("Spec ID Event03\x00")

// digestSizes are the digest sizes of the TPM algorithms (TCG Algorithm Registry) a log may
// declare; a declared size must match. Other algorithm IDs are accepted with any size up to 64:
// go-eventlog carries their digests without using them.
var digestSizes = map[uint16]uint16{
	0x0004: 20, // SHA-1
	0x000B: 32, // SHA-256
	0x000C: 48, // SHA-384
	0x000D: 64, // SHA-512
	0x0012: 32, // SM3-256
	0x0027: 32, // SHA3-256
	0x0028: 48, // SHA3-384
	0x0029: 64, // SHA3-512
}

// layout is what the pre-scan learns about a log's structure.
type layout struct {
	// records is the number of records, the header record included. go-eventlog numbers records
	// from 0 (SHA-1 format) or 1 (crypto-agile, after the Spec ID record), so every real event's
	// sequence number is below records and anything at or above it was not in the log.
	records int
	// perRegister counts records per register index below 32; it feeds Counter.Hashes only.
	perRegister [32]int
}

// scan walks the record structure of raw without interpreting any record (the one type it reads
// is the first record's, which marks a crypto-agile log, PFP §10), so that the work
// go-eventlog does afterwards is bounded. It exists because go-eventlog cannot be bounded from
// outside: tcg.ParseEventLog materialises every record however many there are, and its digest
// loop runs over every algorithm the log declares. scan rejects, as ErrMalformed:
//
//   - more than MaxEvents records;
//   - a Spec ID event with no algorithm, more than maxAlgorithms, an algorithm ID above 0xFF
//     (go-eventlog truncates IDs to 8 bits, so 0x010B would alias SHA-256), a repeated ID, a size
//     that does not match the algorithm or exceeds 64 bytes, or vendor data of the wrong size;
//   - a crypto-agile record with no digest, more digests than declared algorithms, an undeclared
//     or repeated algorithm, or any field running past the end;
//   - for a TCG log: a record with index 0xFFFFFFFF (go-eventlog's padding marker);
//   - for a CCEL (ccel true): a log that is not crypto-agile (UEFI §38.1 requires the TCG2 format),
//     or anything but 0xFF bytes after the first record whose index is 0xFFFFFFFF.
//
// scan counts every record it starts reading in c.Events, and stops as soon as the count exceeds
// MaxEvents, so c.Events never exceeds MaxEvents+1.
func scan(raw []byte, ccel bool, c *Counter) (layout, error) {
	var l layout
	r := reader{b: raw}

	// The first record is always in the SHA-1 format.
	if err := l.count(c); err != nil {
		return l, err
	}
	index, _ := r.u32()
	typ, _ := r.u32()
	r.skip(20)
	size, ok := r.u32()
	if !ok {
		return l, fmt.Errorf("%w: first record: header is truncated", ErrMalformed)
	}
	data, ok := r.take(size)
	if !ok {
		return l, fmt.Errorf("%w: first record: %d bytes of event data, %d left", ErrMalformed, size, r.left())
	}
	l.perRegister[index%32]++

	// go-eventlog reads the first record as a Spec ID event exactly when this holds.
	if typ != evNoAction || len(data) < specIDHeader {
		if ccel {
			return l, fmt.Errorf("%w: a CCEL must be a crypto-agile log with a Spec ID event", ErrMalformed)
		}
		for r.left() > 0 {
			if err := l.count(c); err != nil {
				return l, err
			}
			index, _ := r.u32()
			r.skip(4 + 20)
			size, ok := r.u32()
			if !ok {
				return l, fmt.Errorf("%w: record %d: header is truncated", ErrMalformed, l.records-1)
			}
			if _, ok := r.take(size); !ok {
				return l, fmt.Errorf("%w: record %d: %d bytes of event data, %d left", ErrMalformed, l.records-1, size, r.left())
			}
			l.perRegister[index%32]++
		}
		return l, nil
	}

	algs, err := parseSpecID(data)
	if err != nil {
		return l, err
	}
	for r.left() > 0 {
		// go-eventlog recognises padding by a whole 8-byte record header whose index is
		// 0xFFFFFFFF and ignores everything after it; requiring the rest to be 0xFF means no
		// byte of the log area goes unaccounted for.
		if ccel && len(r.b) >= 8 && binary.LittleEndian.Uint32(r.b) == paddingIndex {
			if !allFF(r.b) {
				return l, fmt.Errorf("%w: bytes other than 0xFF in the padding after record %d", ErrMalformed, l.records-1)
			}
			return l, nil
		}
		if err := l.count(c); err != nil {
			return l, err
		}
		n := l.records - 1
		index, _ := r.u32()
		r.skip(4)
		count, ok := r.u32()
		if !ok {
			return l, fmt.Errorf("%w: record %d: header is truncated", ErrMalformed, n)
		}
		if index == paddingIndex {
			return l, fmt.Errorf("%w: record %d: register index 0xFFFFFFFF (padding) in a TCG log", ErrMalformed, n)
		}
		if count == 0 || count > uint32(len(algs)) {
			return l, fmt.Errorf("%w: record %d: %d digests, the log declares %d algorithms", ErrMalformed, n, count, len(algs))
		}
		var seen [maxAlgorithms]bool
		for range count {
			id, ok := r.u16()
			if !ok {
				return l, fmt.Errorf("%w: record %d: digest list is truncated", ErrMalformed, n)
			}
			i := algIndex(algs, id)
			switch {
			case i < 0:
				return l, fmt.Errorf("%w: record %d: digest algorithm %#04x is not declared in the Spec ID event", ErrMalformed, n, id)
			case seen[i]:
				return l, fmt.Errorf("%w: record %d: two digests of algorithm %#04x", ErrMalformed, n, id)
			}
			seen[i] = true
			if _, ok := r.take(uint32(algs[i].size)); !ok {
				return l, fmt.Errorf("%w: record %d: digest is truncated", ErrMalformed, n)
			}
		}
		size, ok := r.u32()
		if !ok {
			return l, fmt.Errorf("%w: record %d: event size is truncated", ErrMalformed, n)
		}
		if _, ok := r.take(size); !ok {
			return l, fmt.Errorf("%w: record %d: %d bytes of event data, %d left", ErrMalformed, n, size, r.left())
		}
		l.perRegister[index%32]++
	}
	return l, nil
}

// count adds one record, failing once the log has more than MaxEvents.
func (l *layout) count(c *Counter) error {
	l.records++
	c.Events++
	if l.records > MaxEvents {
		return fmt.Errorf("%w: more than %d records", ErrMalformed, MaxEvents)
	}
	return nil
}

type specAlg struct{ id, size uint16 }

// parseSpecID reads the algorithm list of a TCG_EfiSpecIDEvent (PFP §10). go-eventlog
// checks the signature, version and vendor data again; the checks here are the ones that bound
// its work or that it does not make.
func parseSpecID(data []byte) ([]specAlg, error) {
	if !bytes.Equal(data[:16], specIDSignature) {
		return nil, fmt.Errorf("%w: first record is EV_NO_ACTION but not a Spec ID Event03", ErrMalformed)
	}
	r := reader{b: data[24:]}
	n, _ := r.u32()
	if n == 0 || n > maxAlgorithms {
		return nil, fmt.Errorf("%w: Spec ID event declares %d algorithms (1–%d accepted)", ErrMalformed, n, maxAlgorithms)
	}
	algs := make([]specAlg, 0, n)
	for range n {
		id, ok1 := r.u16()
		size, ok2 := r.u16()
		if !ok1 || !ok2 {
			return nil, fmt.Errorf("%w: Spec ID event: algorithm list is truncated", ErrMalformed)
		}
		want, known := digestSizes[id]
		switch {
		case id > 0xFF:
			return nil, fmt.Errorf("%w: Spec ID event: algorithm ID %#04x is above 0xFF (go-eventlog truncates IDs to 8 bits)", ErrMalformed, id)
		case algIndex(algs, id) >= 0:
			return nil, fmt.Errorf("%w: Spec ID event: algorithm %#04x declared twice", ErrMalformed, id)
		case known && size != want, size == 0, size > 64:
			return nil, fmt.Errorf("%w: Spec ID event: algorithm %#04x with digest size %d", ErrMalformed, id, size)
		}
		algs = append(algs, specAlg{id, size})
	}
	vendor, ok := r.take(1)
	if !ok || r.left() != int(vendor[0]) {
		return nil, fmt.Errorf("%w: Spec ID event: vendor info size does not match the event size", ErrMalformed)
	}
	return algs, nil
}

func algIndex(algs []specAlg, id uint16) int {
	for i, a := range algs {
		if a.id == id {
			return i
		}
	}
	return -1
}

func allFF(b []byte) bool {
	for _, x := range b {
		if x != 0xFF {
			return false
		}
	}
	return true
}

// reader reads little-endian fields; after a short read every later read fails too.
type reader struct{ b []byte }

func (r *reader) left() int { return len(r.b) }

func (r *reader) take(n uint32) ([]byte, bool) {
	if uint64(n) > uint64(len(r.b)) {
		r.b = nil
		return nil, false
	}
	out := r.b[:n]
	r.b = r.b[n:]
	return out, true
}

func (r *reader) skip(n uint32) { r.take(n) }

func (r *reader) u16() (uint16, bool) {
	b, ok := r.take(2)
	if !ok {
		return 0, false
	}
	return binary.LittleEndian.Uint16(b), true
}

func (r *reader) u32() (uint32, bool) {
	b, ok := r.take(4)
	if !ok {
		return 0, false
	}
	return binary.LittleEndian.Uint32(b), true
}
