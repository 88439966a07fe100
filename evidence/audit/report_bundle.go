package audit

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"time"
)

// ErrBundleChanged: the bundle's bytes differed between the verification pass and the summary
// pass of VerifyAndSummarize (the file was replaced or is being written).
var ErrBundleChanged = errors.New("audit: the bundle changed while it was being read")

// VerifyAndSummarize verifies a bundle (Verify) and summarises the records of its window
// (Summarizer), with the gaps against inv when given (Reconcile, on the verified verdicts). It
// reads the bundle twice through open — to verify, then to summarise — and hashes both reads: if
// the bytes differ, it fails with ErrBundleChanged rather than summarise records it did not
// verify. The summary always comes with the verification report: when the report is not OK,
// the summary's figures rest on records that did not all verify, and must be presented so.
func VerifyAndSummarize(ctx context.Context, open func() (io.ReadCloser, error), opts VerifyOptions, inv *Inventory) (*Report, *Summary, error) {
	first, err := open()
	if err != nil {
		return nil, nil, err
	}
	h1 := sha256.New()
	rep, err := Verify(ctx, io.TeeReader(first, h1), opts)
	if err == nil {
		_, err = io.Copy(h1, first) // Verify may stop early on a fatal finding
	}
	first.Close()
	if err != nil {
		return nil, nil, err
	}

	var from, to time.Time
	if m := rep.Manifest; m != nil {
		if m.From != nil {
			from = *m.From
		}
		if m.To != nil {
			to = *m.To
		}
	}
	z := NewSummarizer(from, to)
	second, err := open()
	if err != nil {
		return nil, nil, err
	}
	defer second.Close()
	h2 := sha256.New()
	tee := io.TeeReader(second, h2)
	if rep.Manifest != nil { // else nothing verified: the summary stays empty
		br, err := newReader(tee)
		for err == nil {
			if err = ctx.Err(); err != nil {
				return nil, nil, err
			}
			var e *entry
			if e, err = br.next(); err != nil {
				break
			}
			if e.kind != kindRecord {
				continue
			}
			// Verify opened every record against the key history; one that does not decode
			// is a finding there, and left out here.
			if rec, perr := peek(e.data); perr == nil {
				z.Add(e.index, rec)
			}
		}
	}
	if _, err := io.Copy(h2, second); err != nil {
		return nil, nil, fmt.Errorf("audit: reading the bundle again: %w", err)
	}
	if string(h1.Sum(nil)) != string(h2.Sum(nil)) {
		return nil, nil, ErrBundleChanged
	}
	var cov *Coverage
	if inv != nil {
		cov = Reconcile(rep, inv)
	}
	return rep, z.Summary(cov), nil
}
