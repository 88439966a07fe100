package service

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/proofline/proofline/evidence"
	"github.com/proofline/proofline/evidence/log"
)

// KeyRelease is a relying party's key-release decision (POST /v1/events), recorded as a
// key_release evidence record whose relying party is the authenticated caller.
type KeyRelease struct {
	// Subject is the VM or workload that asked for the key (the result token's sub). Required.
	Subject string
	// Platform is "tdx", "sev-snp" or empty.
	Platform string
	// Resource names the key or secret requested. Required.
	Resource string
	Decision evidence.Decision
	// Reason explains a denial.
	Reason string
	// Attestation is the SHA-256 of the attestation record the decision relied on (the result
	// token's record_sha256), if any.
	Attestation *evidence.Digest
	// Policy names the release policy, if the relying party has one.
	Policy *evidence.PolicyRef
}

// Bounds of a key-release event's text, which keep its record well below the size of a log leaf
// (a record still too big for a log configured with smaller leaves is ErrInvalid as well). The
// subject has the bound of the audit export's subject filter; a policy id has the policy store's.
const (
	maxEventSubject = 256
	maxEventText    = 4 << 10 // resource, reason
)

// Recorded names a record once it is durably in the log.
type Recorded struct {
	LogIndex     uint64
	RecordSHA256 [32]byte
}

// RecordKeyRelease records a relying party's decision. It returns once the record is durable;
// the relying party releases the key only then.
func (s *Service) RecordKeyRelease(ctx context.Context, p Principal, kr KeyRelease) (*Recorded, error) {
	if p.Role != RoleRelyingParty {
		return nil, fmt.Errorf("%w: only relying parties record key-release decisions", ErrForbidden)
	}
	for _, f := range []struct {
		name, v string
		max     int
	}{
		{"subject", kr.Subject, maxEventSubject},
		{"resource", kr.Resource, maxEventText},
		{"reason", kr.Reason, maxEventText},
		{"policy.id", policyID(kr.Policy), maxPolicyName},
	} {
		if len(f.v) > f.max {
			return nil, fmt.Errorf("%w: %s is %d bytes, longer than %d: shorten it", ErrInvalid, f.name, len(f.v), f.max)
		}
	}
	rec := &evidence.Record{
		Version:  evidence.Version,
		Kind:     evidence.KindKeyRelease,
		Time:     s.now().UTC().Truncate(time.Second),
		Subject:  &evidence.Subject{ID: kr.Subject, Platform: kr.Platform},
		Policy:   kr.Policy,
		Verifier: s.verifier,
		KeyRelease: &evidence.KeyRelease{
			RelyingParty: p.Name, Resource: kr.Resource, Decision: kr.Decision, Reason: kr.Reason, Attestation: kr.Attestation,
		},
	}
	if err := rec.Validate(); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	leaf, idx, err := s.appendRecord(ctx, rec)
	if errors.Is(err, log.ErrLeafSize) {
		return nil, fmt.Errorf("%w: the key-release record does not fit the evidence log (%w): shorten resource or reason", ErrInvalid, err)
	}
	if err != nil {
		return nil, err
	}
	r := &Recorded{LogIndex: idx, RecordSHA256: sha256.Sum256(leaf)}
	s.logger.InfoContext(ctx, "key-release decision recorded", slog.String("principal", p.String()),
		slog.String("decision", string(kr.Decision)), slog.Uint64("log_index", idx))
	return r, nil
}

func policyID(p *evidence.PolicyRef) string {
	if p == nil {
		return ""
	}
	return p.ID
}
