package service

import (
	"fmt"

	"github.com/proofline/proofline/evidence/log"
)

// AuditSource is what an audit export (evidence/audit.Export) reads from this verifier: the log's
// storage, its checkpoint verifier key, the record key history as published (GET /v1/keys) and
// the blob store.
type AuditSource struct {
	Log        log.Reader
	LogKey     string
	KeyHistory []byte
	Blobs      Blobs
}

// AuditSource returns the verifier's AuditSource, or ErrUnavailable when it has no reader of its
// log's storage.
func (s *Service) AuditSource() (*AuditSource, error) {
	if s.d.LogReader == nil {
		return nil, fmt.Errorf("%w: this verifier cannot read its log's storage for an export", ErrUnavailable)
	}
	k, err := s.Keys() // exactly what GET /v1/keys publishes
	if err != nil {
		return nil, fmt.Errorf("service: encoding the key history: %w", err)
	}
	return &AuditSource{Log: s.d.LogReader, LogKey: k.LogKey, KeyHistory: k.RecordKeys, Blobs: s.d.Blobs}, nil
}
