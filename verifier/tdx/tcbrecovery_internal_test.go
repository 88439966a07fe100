package tdx

import (
	"testing"
	"time"

	"github.com/google/go-tdx-guest/pcs"
)

// The recovery date needs every date: a level above or the matched level without a usable
// tcbDate, or a level above that is not newer, gives none (and so no grace).
func TestRecoverySince(t *testing.T) {
	levels := func(dates ...string) []pcs.TcbLevel {
		out := make([]pcs.TcbLevel, len(dates))
		for i, d := range dates {
			out[i] = pcs.TcbLevel{TcbDate: d, TcbStatus: pcs.TcbComponentStatusOutOfDate}
		}
		return out
	}
	ok := recoveryPart{levels: levels("2026-11-10T00:00:00Z", "2026-11-01T00:00:00Z", "2026-01-01T00:00:00Z"), index: 2}
	if got, err := ok.since(); err != nil || !got.Equal(time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC)) {
		t.Fatalf("since = %v, %v", got, err)
	}
	for name, p := range map[string]recoveryPart{
		"top level":          {levels: levels("2026-11-10T00:00:00Z"), index: 0},
		"missing above":      {levels: levels("", "2026-01-01T00:00:00Z"), index: 1},
		"garbage above":      {levels: levels("10 Nov 2026", "2026-01-01T00:00:00Z"), index: 1},
		"missing own":        {levels: levels("2026-11-10T00:00:00Z", ""), index: 1},
		"above not newer":    {levels: levels("2026-01-01T00:00:00Z", "2026-01-01T00:00:00Z"), index: 1},
		"index out of range": {levels: levels("2026-11-10T00:00:00Z"), index: 3},
	} {
		if got, err := p.since(); err == nil {
			t.Errorf("%s: since = %v, want an error", name, got)
		}
	}
}
