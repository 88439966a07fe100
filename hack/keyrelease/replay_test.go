package main

import (
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/proofline/proofline/evidence"
)

// A passport token releases a secret once per service; presented again it is a recorded denial.
func TestPassportReplay(t *testing.T) {
	s := newSetup(t)
	tok := s.attestSelf()
	if code, r := s.release(map[string]any{"resource": "db-password", "token": tok}); code != http.StatusOK {
		t.Fatalf("first: %d %+v", code, r)
	}
	for _, resource := range []string{"db-password", "pinned"} {
		code, r := s.release(map[string]any{"resource": resource, "token": tok})
		if code != http.StatusForbidden || r.Secret != nil || !strings.Contains(r.Reason, "already released") {
			t.Fatalf("replay for %s: %d %+v", resource, code, r)
		}
		if kr, subj := s.recordSubject(r.Record); kr.Decision != evidence.DecisionDeny || subj != "agent:vm-1" || !strings.Contains(kr.Reason, "already released") {
			t.Fatalf("replay record: %+v subject %q", kr, subj)
		}
	}
	// A new token of the same workload releases.
	if code, r := s.release(map[string]any{"resource": "db-password", "token": s.attestSelf()}); code != http.StatusOK {
		t.Fatalf("new token: %d %+v", code, r)
	}
	// A release that could not be recorded spends nothing.
	tok = s.attestSelf()
	s.failEvents.Store(true)
	if code, r := s.release(map[string]any{"resource": "db-password", "token": tok}); code != http.StatusServiceUnavailable || r.Secret != nil {
		t.Fatalf("unrecorded: %d %+v", code, r)
	}
	s.failEvents.Store(false)
	if code, r := s.release(map[string]any{"resource": "db-password", "token": tok}); code != http.StatusOK {
		t.Fatalf("after an unrecorded release: %d %+v", code, r)
	}
}

// The replay cache is bounded: full of live tokens it refuses (503, fail closed); entries of
// tokens that no longer verify make room.
func TestReplayCacheBound(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	r := newReplayCache(2)
	if r.spend("a", now.Add(time.Minute), now) != nil || r.spend("b", now.Add(2*time.Minute), now) != nil {
		t.Fatal("spend")
	}
	if err := r.spend("a", now.Add(time.Minute), now); !errors.Is(err, errReplay) {
		t.Fatalf("replay: %v", err)
	}
	var refused *refusal
	if err := r.spend("c", now.Add(time.Minute), now); !errors.As(err, &refused) || refused.status != http.StatusServiceUnavailable {
		t.Fatalf("full: %v", err)
	}
	now = now.Add(time.Minute)
	if err := r.spend("c", now.Add(time.Minute), now); err != nil {
		t.Fatalf("after a's expiry: %v", err)
	}
	if err := r.spend("b", now.Add(time.Minute), now); !errors.Is(err, errReplay) {
		t.Fatalf("b, still live: %v", err)
	}
	if len(r.until) != 2 {
		t.Fatalf("%d entries", len(r.until))
	}
}
