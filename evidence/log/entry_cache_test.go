package log

import (
	"bytes"
	"context"
	"fmt"
	"testing"
	"time"
)

// TestEntryAfterGrowth reads leaves as the partial entry bundle they sit in grows: Entry keeps
// the bundle it parsed last, and must never answer from it once the stored bundle has changed
// (a new leaf in the same bundle) or for another bundle.
func TestEntryAfterGrowth(t *testing.T) {
	f := newPOSIXFixture(t)
	l := f.openLog(t, Options{})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	leaves := map[uint64][]byte{}
	appendAndRead := func(n int) {
		t.Helper()
		for range n {
			leaf := fmt.Appendf(nil, "leaf %d", len(leaves))
			idx, err := l.Append(ctx, leaf)
			if err != nil {
				t.Fatal(err)
			}
			leaves[idx] = leaf
			// The newest leaf, then an older one of the same bundle, then the newest again.
			for _, j := range []uint64{idx, idx - idx%256 + (idx%256)/2, idx} {
				got, err := l.Entry(ctx, j)
				if err != nil || !bytes.Equal(got, leaves[j]) {
					t.Fatalf("log of %d leaves: Entry(%d) = %q, %v; want %q", idx+1, j, got, err, leaves[j])
				}
			}
		}
	}
	appendAndRead(5) // the first partial bundle grows
	for i, leaf := range appendConcurrently(t, l, 247, 16) {
		leaves[i] = leaf
	}
	appendAndRead(8) // the last leaves of bundle 0, then bundle 1 (index 256 onwards)
	if len(leaves) != 260 {
		t.Fatalf("%d leaves", len(leaves))
	}
	if _, err := l.Entry(ctx, 260); err == nil {
		t.Fatal("Entry beyond the log answered")
	}
}
