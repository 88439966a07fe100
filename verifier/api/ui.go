package api

import (
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"mime"
	"net/http"
	"path"
	"time"

	"github.com/labstack/echo/v4"

	"github.com/proofline/proofline/evidence/audit"
	"github.com/proofline/proofline/verifier/service"
)

// The auditor web UI: static files embedded from ui/, served publicly under /ui/ — they hold no
// data — and a script that calls the read-only JSON routes with the auditor's token, which the
// routes check as for any client. The UI adds no credential, cookie or session of its own, so it
// cannot weaken the API's authentication. /ui/:file serves only the files embedded at build time,
// by exact name (echo's :file matches one path segment): nothing else on disk is reachable.

//go:embed ui
var uiFS embed.FS

// uiCSP is the Content-Security-Policy of the UI's files: scripts, styles and fetches from this
// origin only, no inline script or style, no framing, no forms posting elsewhere.
const uiCSP = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

type uiFile struct {
	contentType string
	body        []byte
}

// uiFiles are the embedded files by name, read once.
var uiFiles = func() map[string]uiFile {
	out := map[string]uiFile{}
	entries, err := fs.ReadDir(uiFS, "ui")
	if err != nil {
		panic(err) // the embedded directory is part of the build
	}
	for _, e := range entries {
		if e.IsDir() {
			continue
		}
		b, err := fs.ReadFile(uiFS, path.Join("ui", e.Name()))
		if err != nil {
			panic(err)
		}
		ct := mime.TypeByExtension(path.Ext(e.Name()))
		if ct == "" {
			ct = "application/octet-stream"
		}
		out[e.Name()] = uiFile{contentType: ct, body: b}
	}
	return out
}()

func (s *Server) uiIndex(c echo.Context) error { return serveUIFile(c, "index.html") }

func (s *Server) uiFile(c echo.Context) error { return serveUIFile(c, c.Param("file")) }

func serveUIFile(c echo.Context, name string) error {
	f, ok := uiFiles[name]
	if !ok {
		return fmt.Errorf("%w: no file %q in the auditor UI", service.ErrNotFound, name)
	}
	h := c.Response().Header()
	h.Set("Content-Security-Policy", uiCSP)
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("X-Frame-Options", "DENY")
	h.Set("Referrer-Policy", "no-referrer")
	h.Set("Cache-Control", "no-cache")
	return c.Blob(http.StatusOK, f.contentType, f.body)
}

// auditSummaryResponse is GET /v1/audit/summary: audit.Summary's figures and its charts as SVG,
// the very fragments `proofline audit report` embeds.
type auditSummaryResponse struct {
	*audit.Summary
	Charts map[string]string `json:"charts"`
}

func (s *Server) auditSummary(c echo.Context) error {
	var from, to time.Time
	for _, t := range []struct {
		name string
		dst  *time.Time
	}{{"from", &from}, {"to", &to}} {
		if v := c.QueryParam(t.name); v != "" {
			ts, err := time.Parse(time.RFC3339, v)
			if err != nil {
				return fmt.Errorf("%w: %s must be an RFC 3339 time such as 2026-01-02T15:04:05Z", errBadRequest, t.name)
			}
			*t.dst = ts
		}
	}
	sum, err := audit.SummarizeLog(c.Request().Context(), s.svc, from, to)
	if errors.Is(err, audit.ErrWindowTooLarge) || errors.Is(err, audit.ErrWindowInverted) {
		return fmt.Errorf("%w: %w", errBadRequest, err)
	}
	if err != nil {
		return err
	}
	return writeJSON(c, http.StatusOK, auditSummaryResponse{Summary: sum, Charts: sum.Charts()})
}
