package snp

import (
	"crypto/x509"
	"errors"
	"fmt"
	"sort"

	"github.com/google/go-sev-guest/abi"

	"github.com/proofline/proofline/attest"
)

// certGUIDs are the table entries that hold the certificates the envelope carries, by their
// GUID's canonical (lower-case) string: the VCEK or VLEK that signs reports, and the ASK (also
// used for the ASVK) and ARK above it, ranked in that order. Other entries (e.g.
// abi.ExtraPlatformInfoGUID) are not certificates and are skipped.
var certGUIDs = map[string]struct {
	name string
	rank int
}{
	abi.VcekGUID: {"VCEK", 0},
	abi.VlekGUID: {"VLEK", 0},
	abi.AskGUID:  {"ASK", 1},
	abi.ArkGUID:  {"ARK", 2},
}

// ErrCertTable is wrapped by ParseCertTable's errors.
var ErrCertTable = errors.New("malformed SEV-SNP certificate table")

// ParseCertTable returns the DER certificates of a host-provided certificate table (GHCB
// specification, AMD doc 56421, "SNP Extended Guest Request": entries of a 16-byte GUID, a
// 4-byte offset and a 4-byte length, little-endian, ended by an all-zero entry, each offset
// pointing into the same buffer after the entries). It keeps the VCEK, VLEK, ASK and ARK
// entries, the VCEK or VLEK first, then the ASK, then the ARK (the envelope allows any order;
// this one reads like a chain), and requires each to be one DER X.509 certificate. The host is not
// trusted: offsets and lengths are checked without overflow, and at most
// attest.MaxCertificates certificates are accepted.
func ParseCertTable(table []byte) ([][]byte, error) {
	headers, err := abi.ParseSnpCertTableHeader(table)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrCertTable, err)
	}
	type ranked struct {
		der  []byte
		rank int
	}
	var certs []ranked
	for i, h := range headers {
		kind, ok := certGUIDs[h.GUID.String()]
		if !ok {
			continue
		}
		name := kind.name
		end := uint64(h.Offset) + uint64(h.Length)
		if h.Length == 0 || end > uint64(len(table)) {
			return nil, fmt.Errorf("%w: entry %d (%s) spans bytes %d to %d of a %d-byte table", ErrCertTable, i, name, h.Offset, end, len(table))
		}
		der := table[h.Offset:end]
		if _, err := x509.ParseCertificate(der); err != nil {
			return nil, fmt.Errorf("%w: entry %d (%s) is not a DER certificate: %v", ErrCertTable, i, name, err)
		}
		if len(certs) == attest.MaxCertificates {
			return nil, fmt.Errorf("%w: more than %d certificates", ErrCertTable, attest.MaxCertificates)
		}
		certs = append(certs, ranked{append([]byte(nil), der...), kind.rank})
	}
	if len(certs) == 0 {
		return nil, fmt.Errorf("%w: no VCEK, VLEK, ASK or ARK entry", ErrCertTable)
	}
	sort.SliceStable(certs, func(i, j int) bool { return certs[i].rank < certs[j].rank })
	out := make([][]byte, len(certs))
	for i, c := range certs {
		out[i] = c.der
	}
	return out, nil
}
