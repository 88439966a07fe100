package collateral

import (
	"encoding/json"
	"time"
)

// TCBRecovery is an Intel TCB recovery reaching the verifier: a TDX TCB info or QE identity
// replaced by one with a higher tcbEvaluationDataNumber ("TCB Recovery" in Intel's PCS API
// documentation, https://api.portal.trustedservices.intel.com/content/documentation.html). From
// then on, platforms and quoting enclaves that have not been updated evaluate to OutOfDate.
type TCBRecovery struct {
	// URL is the document's URL; Kind its validity kind, "tcb_info" or "qe_identity".
	URL, Kind string
	// Previous and New are the tcbEvaluationDataNumbers of the replaced and the new document;
	// New > Previous.
	Previous, New uint64
	// TCBDate is the newest tcbDate of the new document's TCB levels (the date of the levels
	// the recovery added); zero when none can be read.
	TCBDate time.Time
	// IssuedAt is the new document's issueDate.
	IssuedAt time.Time
	// Update is the replacement itself.
	Update Update
}

// RecoveryOf reports whether u replaced an Intel TCB info or QE identity by one with a higher
// tcbEvaluationDataNumber, and describes the recovery.
func RecoveryOf(u Update) (TCBRecovery, bool) {
	if u.Old == nil || u.New == nil {
		return TCBRecovery{}, false
	}
	prev, ok1 := TCBEvaluationDataNumber(u.Old)
	next, ok2 := TCBEvaluationDataNumber(u.New)
	if !ok1 || !ok2 || next <= prev {
		return TCBRecovery{}, false
	}
	r := TCBRecovery{URL: u.URL, Kind: u.NewValidity.Kind, Previous: prev, New: next, IssuedAt: u.NewValidity.IssuedAt.UTC(), Update: u}
	if d, ok := LatestTCBDate(u.New); ok {
		r.TCBDate = d
	}
	return r, true
}

// LatestTCBDate returns the newest tcbDate (RFC 3339) among the TCB levels of an Intel PCS TCB
// info ({"tcbInfo": {"tcbLevels": […]}}, including its TDX module identities' levels) or QE
// identity ({"enclaveIdentity": {"tcbLevels": […]}}). It reports false when there is none
// readable; unreadable dates are skipped.
func LatestTCBDate(r *Response) (time.Time, bool) {
	type level struct {
		TCBDate string `json:"tcbDate"`
	}
	var doc struct {
		TCBInfo *struct {
			Levels  []level `json:"tcbLevels"`
			Modules []struct {
				Levels []level `json:"tcbLevels"`
			} `json:"tdxModuleIdentities"`
		} `json:"tcbInfo"`
		EnclaveIdentity *struct {
			Levels []level `json:"tcbLevels"`
		} `json:"enclaveIdentity"`
	}
	if r == nil || json.Unmarshal(r.Body, &doc) != nil {
		return time.Time{}, false
	}
	var levels []level
	switch {
	case doc.TCBInfo != nil:
		levels = doc.TCBInfo.Levels
		for _, m := range doc.TCBInfo.Modules {
			levels = append(levels, m.Levels...)
		}
	case doc.EnclaveIdentity != nil:
		levels = doc.EnclaveIdentity.Levels
	}
	var latest time.Time
	for _, l := range levels {
		if d, err := time.Parse(time.RFC3339, l.TCBDate); err == nil && d.After(latest) {
			latest = d
		}
	}
	return latest.UTC(), !latest.IsZero()
}
