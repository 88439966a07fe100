package audit

import (
	"bytes"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/proofline/proofline/attest"
	"github.com/proofline/proofline/evidence"
	"github.com/proofline/proofline/verifier"
	"github.com/proofline/proofline/verifier/collateral"
	"github.com/proofline/proofline/verifier/ear"
)

// storedResult is what re-performance reads of a recorded result.
type storedResult struct {
	Status     ear.Status      `json:"status"`
	TestRoots  bool            `json:"test_roots"`
	Claims     json.RawMessage `json:"claims"`
	Failures   []ear.Finding   `json:"failures"`
	VerifiedAt string          `json:"verified_at"`
	Policy     ear.PolicyRef   `json:"policy"`
}

// nonceRefusedPrefix starts the message of the verdict the service gives on evidence whose nonce
// it refuses (verifier/service: unknown, expired, replayed, another caller's, or none), before
// appraising it or, for a replay found while the evidence was verified, discarding the appraisal.
const nonceRefusedPrefix = "nonce refused: "

// reperform re-performs the attestation verdict of rec (README.md, "Re-performance"). It also
// returns the nonce the verdict rests on, when the evidence decodes and the verdict is not a
// nonce refusal.
func (b *bundleVerifier) reperform(i uint64, rec *evidence.Record, findings []Finding) (outcome, []byte, []Finding) {
	fail := func(check, format string, args ...any) { findings = append(findings, at(i, check, format, args...)) }
	var stored storedResult
	if err := json.Unmarshal(rec.Result, &stored); err != nil {
		fail("reperform", "the recorded result is not a result: %v", err)
		return notReperformed, nil, findings
	}
	wantPolicy := "sha256:" + rec.Policy.Digest.String()
	if stored.Policy.ID != rec.Policy.ID || stored.Policy.Digest != wantPolicy {
		fail("reperform", "the recorded result names policy %q (%s), the record %q (%s)", stored.Policy.ID, stored.Policy.Digest, rec.Policy.ID, wantPolicy)
		return notReproduced, nil, findings
	}
	if isNonceRefusal(&stored) {
		// The service refused the nonce, not the evidence: whether a nonce was issued and unused is
		// the nonce store's, not the log's, so the refusal cannot be re-performed. It is
		// contraindicated, the safe side; check that it is the refusal and nothing else.
		if stored.VerifiedAt != rec.Time.Format(time.RFC3339) {
			fail("reperform", "the recorded nonce refusal is timed %s, the record %s", stored.VerifiedAt, rec.Time.Format(time.RFC3339))
			return notReproduced, nil, findings
		}
		if _, msg := b.policy(rec.Policy); msg != "" {
			fail("reference", "the policy of the nonce refusal: %s", msg)
		}
		return nonceRefused, nil, findings
	}

	// The inputs.
	var raw []byte
	var missing []string
	switch {
	case rec.Evidence.Raw != nil:
		raw = rec.Evidence.Raw
	default:
		var msg string
		if raw, msg = b.blob(*rec.Evidence.Digest); msg != "" {
			missing = append(missing, "the evidence: "+msg)
		}
	}
	pol, msg := b.policy(rec.Policy)
	if msg != "" {
		missing = append(missing, msg)
	}
	set := collateral.Set{}
	for _, ref := range rec.Collateral {
		resp, msg := b.response(ref)
		if msg != "" {
			missing = append(missing, fmt.Sprintf("collateral %s %s: %s", ref.Kind, ref.URL, msg))
			continue
		}
		if err := set.Add(resp); err != nil {
			missing = append(missing, fmt.Sprintf("collateral %s: %v", ref.URL, err))
		}
	}
	rs := b.builtin
	if stored.TestRoots {
		rs = b.test
		if rs == nil {
			missing = append(missing, "the verdict used test vendor roots, and neither the bundle nor the auditor gave them (--roots DIR)")
		}
	} else if rs == nil {
		missing = append(missing, "the built-in vendor roots are unavailable")
	}
	if len(missing) > 0 {
		fail("reperform", "cannot re-perform the verdict: %s", strings.Join(missing, "; "))
		return notReperformed, nil, findings
	}
	ev, err := attest.DecodeEvidence(raw)
	if err != nil {
		fail("reperform", "the recorded evidence does not decode (the service never records such evidence): %v", err)
		return notReperformed, nil, findings
	}

	// The verdict, as the service gave it: the envelope's nonce is the one the service consumed
	// (it records a refusal otherwise), at the record's time.
	res := verifier.Verify(b.ctx, ev, verifier.Options{Policy: pol, Roots: rs, Collateral: set, Now: rec.Time, Nonce: ev.Nonce})
	got, err := json.Marshal(res)
	if err != nil {
		fail("reperform", "encoding the re-performed result: %v", err)
		return notReperformed, nil, findings
	}
	if bytes.Equal(got, rec.Result) {
		return reproduced, ev.Nonce, findings
	}
	diff, err := compareResults(rec.Result, got)
	if err != nil {
		fail("reperform", "comparing results: %v", err)
		return notReproduced, ev.Nonce, findings
	}
	if len(diff) == 0 {
		return normalised, ev.Nonce, findings
	}
	fail("reperform", "the verdict does not reproduce: recorded %s %v, re-performed %s %v (they differ in %s)",
		stored.Status, codes(stored.Failures), res.Status, codes(res.Failures), strings.Join(diff, ", "))
	return notReproduced, ev.Nonce, findings
}

// isNonceRefusal reports whether a result is the service's refusal of a nonce: contraindicated,
// no claims, exactly one failure, nonce_mismatch, with the refusal's message.
func isNonceRefusal(r *storedResult) bool {
	return r.Status == ear.StatusContraindicated && (len(r.Claims) == 0 || string(r.Claims) == "null") &&
		len(r.Failures) == 1 && r.Failures[0].Code == ear.CodeNonceMismatch && strings.HasPrefix(r.Failures[0].Message, nonceRefusedPrefix)
}

func codes(fs []ear.Finding) []string {
	out := []string{}
	for _, f := range fs {
		if !slices.Contains(out, string(f.Code)) {
			out = append(out, string(f.Code))
		}
	}
	return out
}

// compareResults compares a recorded and a re-performed result and returns the top-level
// members that differ, ignoring what is not a function of the recorded inputs: the verifier's
// identity (another version may re-perform), and the message of a collateral_unavailable
// finding (it carries the original source's error, e.g. a network failure, while re-performance
// can only say the response is not in the record).
func compareResults(stored, got []byte) ([]string, error) {
	a, err := normalise(stored)
	if err != nil {
		return nil, fmt.Errorf("the recorded result: %w", err)
	}
	b, err := normalise(got)
	if err != nil {
		return nil, err
	}
	var diff []string
	for k := range a {
		if _, ok := b[k]; !ok {
			diff = append(diff, k)
		}
	}
	for k, v := range b {
		if w, ok := a[k]; !ok || !bytes.Equal(v, w) {
			diff = append(diff, k)
		}
	}
	slices.Sort(diff)
	return slices.Compact(diff), nil
}

// normalise decodes a result into its top-level members, re-encoded canonically, without the
// parts compareResults ignores.
func normalise(data []byte) (map[string][]byte, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	var m map[string]any
	if err := dec.Decode(&m); err != nil {
		return nil, err
	}
	delete(m, "verifier")
	for _, list := range []string{"failures", "warnings"} {
		fs, _ := m[list].([]any)
		for _, f := range fs {
			if f, ok := f.(map[string]any); ok && f["code"] == string(ear.CodeCollateralUnavailable) {
				f["message"] = ""
			}
		}
	}
	out := map[string][]byte{}
	for k, v := range m {
		b, err := json.Marshal(v)
		if err != nil {
			return nil, err
		}
		out[k] = b
	}
	return out, nil
}

// parsedResponse is a collateral blob parsed once.
type parsedResponse struct {
	r   *collateral.Response
	err error
}

// response returns the collateral response a record names, or why it cannot: the blob must be
// a recorded response in canonical form for the named URL.
func (b *bundleVerifier) response(ref evidence.CollateralRef) (*collateral.Response, string) {
	data, msg := b.blob(ref.Digest)
	if msg != "" {
		return nil, msg
	}
	b.mu.Lock()
	pr := b.responses[ref.Digest]
	if pr == nil {
		pr = &parsedResponse{}
		var rs []*collateral.Response
		if rs, pr.err = collateral.Parse(data); pr.err == nil && len(rs) != 1 {
			pr.err = fmt.Errorf("%d responses in one blob", len(rs))
		} else if pr.err == nil {
			pr.r = rs[0]
		}
		b.responses[ref.Digest] = pr
	}
	b.mu.Unlock()
	switch {
	case pr.err != nil:
		return nil, fmt.Sprintf("blob %s is not a recorded collateral response: %v", ref.Digest, pr.err)
	case pr.r.URL != ref.URL:
		return nil, fmt.Sprintf("blob %s answers %s, not this URL", ref.Digest, pr.r.URL)
	case evidence.Digest(pr.r.Digest()) != ref.Digest:
		return nil, fmt.Sprintf("blob %s is not in canonical form", ref.Digest)
	}
	return pr.r, ""
}

// verdictOf returns an attestation record's verdict as recorded.
func verdictOf(i uint64, rec *evidence.Record) *Verdict {
	var r struct {
		Status ear.Status `json:"status"`
	}
	_ = json.Unmarshal(rec.Result, &r) // a result that does not parse is a finding of reperform
	return &Verdict{Index: i, Time: rec.Time, Subject: rec.Subject.ID, Status: r.Status}
}
