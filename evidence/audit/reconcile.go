package audit

import (
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/proofline/proofline/internal/yamlstrict"
	"github.com/proofline/proofline/verifier/ear"
)

// Inventory is what an auditor expects to find attested: a list of subjects and the interval
// at which each must attest. Its file form is YAML (or JSON, which YAML reads):
//
//	interval: 10m            # every subject attests at least this often (Go duration)
//	grace: 1m                # lateness tolerated on top of the interval (default 0)
//	statuses: [affirming, warning]   # which verdicts count as attested (this default)
//	subjects:
//	  - id: agent:vm-01
//	  - id: agent:vm-02
//	    interval: 1h         # overrides interval for this subject
type Inventory struct {
	Interval time.Duration      `yaml:"interval"`
	Grace    time.Duration      `yaml:"grace"`
	Statuses []ear.Status       `yaml:"statuses"`
	Subjects []InventorySubject `yaml:"subjects"`
}

// InventorySubject is one expected subject.
type InventorySubject struct {
	// ID is the record subject, e.g. "agent:vm-01".
	ID string `yaml:"id"`
	// Interval, if set, replaces the inventory's.
	Interval time.Duration `yaml:"interval"`
}

// ParseInventory reads an inventory file: unknown fields, a subject listed twice or without an
// interval are errors.
func ParseInventory(data []byte) (*Inventory, error) {
	var inv Inventory
	if err := yamlstrict.Decode(data, &inv); err != nil {
		return nil, fmt.Errorf("inventory: %w", err)
	}
	if len(inv.Statuses) == 0 {
		inv.Statuses = []ear.Status{ear.StatusAffirming, ear.StatusWarning}
	}
	for _, s := range inv.Statuses {
		switch s {
		case ear.StatusAffirming, ear.StatusWarning, ear.StatusContraindicated:
		default:
			return nil, fmt.Errorf("inventory: unknown status %q", s)
		}
	}
	if inv.Grace < 0 || inv.Interval < 0 {
		return nil, errors.New("inventory: negative interval or grace")
	}
	if len(inv.Subjects) == 0 {
		return nil, errors.New("inventory: no subjects")
	}
	seen := map[string]bool{}
	for i, s := range inv.Subjects {
		switch {
		case s.ID == "":
			return nil, fmt.Errorf("inventory: subject %d has no id", i)
		case seen[s.ID]:
			return nil, fmt.Errorf("inventory: subject %q is listed twice", s.ID)
		case s.Interval <= 0 && inv.Interval <= 0:
			return nil, fmt.Errorf("inventory: subject %q has no interval, and the inventory none", s.ID)
		case s.Interval < 0:
			return nil, fmt.Errorf("inventory: subject %q has a negative interval", s.ID)
		}
		seen[s.ID] = true
	}
	return &inv, nil
}

// Gap is a period longer than the interval (plus grace) without an attestation that counts.
type Gap struct {
	From time.Time `json:"from"`
	To   time.Time `json:"to"`
}

// SubjectCoverage is one inventory subject's attestations in the window.
type SubjectCoverage struct {
	ID       string        `json:"id"`
	Interval time.Duration `json:"interval"`
	// Attested counts the verdicts that count (Inventory.Statuses), Other the others.
	Attested int `json:"attested"`
	Other    int `json:"other"`
	// Last is the time of the last verdict that counts; zero if none.
	Last time.Time `json:"last"`
	Gaps []Gap     `json:"gaps"`
	// Missing is the total length of the gaps.
	Missing time.Duration `json:"missing"`
}

// Coverage is the reconciliation of a verified bundle with an inventory.
type Coverage struct {
	// From and To are the window reconciled: the bundle's, or the times of its first and last
	// verdicts when it asked for none.
	From, To time.Time
	Subjects []SubjectCoverage `json:"subjects"`
	// Unlisted are subjects with verdicts in the bundle that the inventory does not list.
	Unlisted []string `json:"unlisted"`
}

// Gaps returns the number of gaps.
func (c *Coverage) Gaps() int {
	n := 0
	for _, s := range c.Subjects {
		n += len(s.Gaps)
	}
	return n
}

// Reconcile compares the attestation verdicts of a verified bundle with an inventory: for each
// subject, every period of the window longer than its interval plus grace with no verdict that
// counts is a gap — from the window's start (or the previous such verdict) to the next such
// verdict (or the window's end). Run it on a bundle that passed Verify: it trusts the report.
func Reconcile(rep *Report, inv *Inventory) *Coverage {
	c := &Coverage{Subjects: []SubjectCoverage{}, Unlisted: []string{}}
	var fromSet, toSet bool
	if m := rep.Manifest; m != nil {
		if m.From != nil {
			c.From, fromSet = *m.From, true
		}
		if m.To != nil {
			c.To, toSet = *m.To, true
		}
	}
	for _, v := range rep.Verdicts {
		if !fromSet && (c.From.IsZero() || v.Time.Before(c.From)) {
			c.From = v.Time
		}
		if !toSet && (c.To.IsZero() || v.Time.After(c.To)) {
			c.To = v.Time
		}
	}
	bySubject := map[string][]Verdict{}
	for _, v := range rep.Verdicts {
		bySubject[v.Subject] = append(bySubject[v.Subject], v)
	}
	listed := map[string]bool{}
	for _, s := range inv.Subjects {
		listed[s.ID] = true
		sc := SubjectCoverage{ID: s.ID, Interval: s.Interval, Gaps: []Gap{}}
		if sc.Interval <= 0 {
			sc.Interval = inv.Interval
		}
		var times []time.Time
		for _, v := range bySubject[s.ID] {
			if slices.Contains(inv.Statuses, v.Status) {
				sc.Attested++
				times = append(times, v.Time)
			} else {
				sc.Other++
			}
		}
		slices.SortFunc(times, func(a, b time.Time) int { return a.Compare(b) })
		if len(times) > 0 {
			sc.Last = times[len(times)-1]
		}
		prev := c.From
		limit := sc.Interval + inv.Grace
		for _, t := range append(times, c.To) {
			if t.Before(prev) {
				continue // outside the window (concurrent appends): it moves nothing back
			}
			if t.Sub(prev) > limit {
				sc.Gaps = append(sc.Gaps, Gap{From: prev, To: t})
				sc.Missing += t.Sub(prev)
			}
			prev = t
		}
		c.Subjects = append(c.Subjects, sc)
	}
	for id := range bySubject {
		if !listed[id] {
			c.Unlisted = append(c.Unlisted, id)
		}
	}
	slices.Sort(c.Unlisted)
	return c
}
