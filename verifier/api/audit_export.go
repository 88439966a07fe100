package api

import (
	"errors"
	"fmt"
	"net/http"
	"os"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/proofline/proofline/evidence/audit"
	"github.com/proofline/proofline/verifier/service"
)

// auditExport is GET /v1/audit/export: the audit bundle of a window (evidence/audit/README.md),
// the same `proofline audit export` writes from a data directory, for the auditor to verify
// offline with `proofline audit verify`. The bundle is written to a temporary file first and
// sent only once complete, so that a failure is an error response, never a truncated download.
func (s *Server) auditExport(c echo.Context) error {
	var opts audit.ExportOptions
	for _, t := range []struct {
		name string
		dst  *time.Time
	}{{"from", &opts.From}, {"to", &opts.To}} {
		if v := c.QueryParam(t.name); v != "" {
			ts, err := time.Parse(time.RFC3339, v)
			if err != nil {
				return fmt.Errorf("%w: %s must be an RFC 3339 time such as 2026-01-02T15:04:05Z", errBadRequest, t.name)
			}
			*t.dst = ts
		}
	}
	if !opts.From.IsZero() && !opts.To.IsZero() && opts.To.Before(opts.From) {
		return fmt.Errorf("%w: the window ends (to) before it starts (from)", errBadRequest)
	}
	if v := c.QueryParam("subject"); v != "" {
		if len(v) > 256 {
			return fmt.Errorf("%w: subject is longer than 256 bytes", errBadRequest)
		}
		opts.Subject = v
	}
	src, err := s.svc.AuditSource()
	if err != nil {
		return err
	}
	f, err := os.CreateTemp("", "proofline-audit-*.tar.gz")
	if err != nil {
		return fmt.Errorf("%w: a temporary file for the bundle: %w", service.ErrUnavailable, err)
	}
	defer os.Remove(f.Name())
	defer f.Close()
	ctx := c.Request().Context()
	if _, err := audit.Export(ctx, f, audit.Source{Log: src.Log, LogKey: src.LogKey, KeyHistory: src.KeyHistory, Blobs: src.Blobs}, opts); err != nil {
		switch {
		case errors.Is(err, ctx.Err()):
			return err
		case errors.Is(err, audit.ErrEmpty), errors.Is(err, audit.ErrWindowOpen):
			// The window asked for, not the service: the message says what to change.
			return fmt.Errorf("%w: %w", errBadRequest, err)
		}
		return fmt.Errorf("%w: exporting the audit bundle: %w", service.ErrUnavailable, err)
	}
	if _, err := f.Seek(0, 0); err != nil {
		return fmt.Errorf("%w: %w", service.ErrUnavailable, err)
	}
	name := "proofline-audit-" + time.Now().UTC().Format("20060102T150405Z") + ".tar.gz"
	h := c.Response().Header()
	h.Set(echo.HeaderContentType, "application/gzip")
	h.Set(echo.HeaderContentDisposition, `attachment; filename="`+name+`"`)
	h.Set("Cache-Control", "no-store")
	http.ServeContent(c.Response(), c.Request(), name, time.Time{}, f)
	return nil
}
