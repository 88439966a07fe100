package collateral

import (
	"testing"
	"time"
)

// TestBudgetReserve: slots are handed out in arrival order, Burst at once then one per Every; a
// hold takes no slot; nothing is taken past the deadline.
func TestBudgetReserve(t *testing.T) {
	t0 := time.Date(2026, 3, 2, 12, 0, 0, 0, time.UTC)
	far := t0.Add(time.Hour)
	at := func(b *budget, now time.Time) time.Duration {
		t.Helper()
		a, held, ok := b.reserve(now, far)
		if held || !ok {
			t.Fatalf("reserve at %s: held %v ok %v", now, held, ok)
		}
		return a.Sub(t0)
	}
	b := newBudget(10*time.Second, 1)
	for i, want := range []time.Duration{0, 10 * time.Second, 20 * time.Second} {
		if got := at(b, t0); got != want {
			t.Errorf("request %d at t0: slot %s, want %s", i, got, want)
		}
	}
	// Idle time does not accumulate beyond the burst.
	if got := at(b, t0.Add(time.Minute)); got != time.Minute {
		t.Errorf("after idling: slot %s, want 1m", got)
	}
	if got := at(b, t0.Add(time.Minute)); got != time.Minute+10*time.Second {
		t.Errorf("second after idling: slot %s", got)
	}

	b = newBudget(time.Second, 3)
	for i, want := range []time.Duration{0, 0, 0, time.Second, 2 * time.Second} {
		if got := at(b, t0); got != want {
			t.Errorf("burst 3, request %d: slot %s, want %s", i, got, want)
		}
	}

	b = newBudget(time.Minute, 1)
	at(b, t0)
	if a, _, ok := b.reserve(t0, t0.Add(30*time.Second)); ok || a != t0.Add(time.Minute) {
		t.Errorf("past the deadline: %s, %v; want refused with the slot time", a, ok)
	}
	if got := at(b, t0); got != time.Minute {
		t.Errorf("a refused reservation took a slot: next slot %s", got)
	}

	b = newBudget(0, 0)
	b.holdUntil(t0.Add(5 * time.Second))
	b.holdUntil(t0.Add(2 * time.Second)) // an earlier hold does not shorten it
	if a, held, ok := b.reserve(t0, far); !held || !ok || a != t0.Add(5*time.Second) {
		t.Errorf("held: %s, %v, %v", a, held, ok)
	}
	if got := at(b, t0.Add(5*time.Second)); got != 5*time.Second {
		t.Errorf("after the hold: %s", got)
	}
}
