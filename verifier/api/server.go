// Package api is the verifier service's HTTP API on labstack/echo v4, the only package that
// imports echo. openapi.yaml (embedded, served at /v1/openapi.yaml) is its contract: every route,
// its request and response bodies, the auth schemes and the role matrix; a test checks that the
// routes served are exactly the ones it lists, with the same roles.
//
// Handlers bind, call verifier/service, encode and return; errors become HTTP statuses in one
// place, handleError. Every request gets a request id (X-Request-ID), one slog access-log line
// (never bodies, tokens or nonces) and Prometheus metrics; every answer under /v1/ is marked
// Cache-Control: no-store and X-Content-Type-Options: nosniff (apiHeaders).
package api

import (
	"context"
	"crypto/rand"
	_ "embed"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/labstack/echo/v4"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/proofline/proofline/verifier/service"
)

// OpenAPI is the API's OpenAPI 3.1 document.
//
//go:embed openapi.yaml
var OpenAPI []byte

// Server is the HTTP API of one service.
type Server struct {
	svc    *service.Service
	cfg    Config
	logger *slog.Logger
	auth   *authenticator
	e      *echo.Echo
	tls    bool

	gatherer prometheus.Gatherer
	requests *prometheus.CounterVec
	latency  *prometheus.HistogramVec
}

// Options are what New takes besides the service and the configuration.
type Options struct {
	Logger *slog.Logger
	// Registry receives the HTTP metrics and is served at /metrics (the service's metrics should
	// be registered with it too). Nil means a new, private registry.
	Registry *prometheus.Registry
}

// New builds the API server. It validates cfg.
func New(svc *service.Service, cfg Config, opts Options) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	reg := opts.Registry
	if reg == nil {
		reg = prometheus.NewRegistry()
	}
	s := &Server{
		svc: svc, cfg: cfg, logger: opts.Logger, auth: newAuthenticator(cfg.Tokens),
		tls: cfg.TLS.CertFile != "", gatherer: reg,
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "proofline_http_requests_total", Help: "HTTP requests, by method, route and status code.",
		}, []string{"method", "route", "code"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "proofline_http_request_duration_seconds", Help: "HTTP request latency, by method and route.",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
		}, []string{"method", "route"}),
	}
	if s.logger == nil {
		s.logger = slog.New(slog.DiscardHandler)
	}
	s.auth.store = svc // tokens created through the API, read on every request (tokens.go)
	// CreateToken refuses the configuration tokens' principals; clashes are logged (tokens.go).
	s.shareConfigPrincipals()
	if err := reg.Register(s.requests); err != nil {
		return nil, err
	}
	if err := reg.Register(s.latency); err != nil {
		return nil, err
	}
	e := echo.New()
	e.HideBanner, e.HidePort = true, true
	e.HTTPErrorHandler = s.handleError
	e.IPExtractor = echo.ExtractIPDirect() // never trust X-Forwarded-For from clients
	e.Use(s.requestID, s.observe, s.recover, apiHeaders)
	for _, rt := range routes {
		h := rt.handler
		e.Add(rt.method, rt.path, func(c echo.Context) error { return h(s, c) }, s.guard(rt))
	}
	s.e = e
	return s, nil
}

// Handler returns the API as an http.Handler (for tests and for embedding).
func (s *Server) Handler() http.Handler { return s.e }

// Serve serves the API on ln until ctx is done, then shuts down gracefully: /readyz turns 503,
// new connections are refused, and requests in flight get up to ShutdownTimeout to finish.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	tc, err := s.cfg.tlsConfig()
	if err != nil {
		return err
	}
	hs := &http.Server{
		Handler:           s.e,
		TLSConfig:         tc,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       s.cfg.ReadTimeout,
		WriteTimeout:      s.cfg.WriteTimeout,
		IdleTimeout:       s.cfg.IdleTimeout,
		MaxHeaderBytes:    64 << 10,
		ErrorLog:          slog.NewLogLogger(s.logger.Handler(), slog.LevelWarn),
		BaseContext:       func(net.Listener) context.Context { return context.WithoutCancel(ctx) },
	}
	errc := make(chan error, 1)
	go func() {
		if tc != nil {
			errc <- hs.ServeTLS(ln, "", "")
		} else {
			errc <- hs.Serve(ln)
		}
	}()
	s.logger.InfoContext(ctx, "serving", slog.String("address", ln.Addr().String()), slog.Bool("tls", tc != nil),
		slog.Bool("client_certificates", tc != nil && tc.ClientCAs != nil))
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	s.svc.Drain()
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.cfg.ShutdownTimeout)
	defer cancel()
	s.logger.InfoContext(ctx, "shutting down", slog.Duration("timeout", s.cfg.ShutdownTimeout))
	err = hs.Shutdown(sctx)
	if serr := <-errc; !errors.Is(serr, http.ErrServerClosed) {
		err = errors.Join(err, serr)
	}
	return err
}

// ListenAndServe listens on Config.Listen and serves until ctx is done.
func (s *Server) ListenAndServe(ctx context.Context) error {
	ln, err := (&net.ListenConfig{}).Listen(ctx, "tcp", s.cfg.Listen)
	if err != nil {
		return fmt.Errorf("http.listen: %w", err)
	}
	return s.Serve(ctx, ln)
}

// Context keys.
const (
	keyPrincipal = "proofline.principal"
	keyRequestID = "proofline.request_id"
)

// public marks a route that needs no role (it may still be called with credentials).
const public service.Role = "public"

// route is one API operation: its method, echo path, the roles that may call it, its body
// limit and its handler.
type route struct {
	method, path string
	roles        []service.Role
	attestBody   bool // the body limit is MaxAttestBody rather than MaxBody
	handler      func(*Server, echo.Context) error
}

var (
	everyone = []service.Role{service.RoleAgent, service.RoleRelyingParty, service.RoleAdmin, service.RoleAuditor}
	readers  = []service.Role{service.RoleAdmin, service.RoleAuditor}
)

// routes is the API. openapi.yaml lists the same paths, methods and roles (x-roles).
var routes = []route{
	{method: http.MethodGet, path: "/healthz", roles: []service.Role{public}, handler: (*Server).healthz},
	{method: http.MethodGet, path: "/readyz", roles: []service.Role{public}, handler: (*Server).readyz},
	{method: http.MethodGet, path: "/metrics", roles: readers, handler: (*Server).metrics},
	{method: http.MethodGet, path: "/.well-known/jwks.json", roles: []service.Role{public}, handler: (*Server).jwks},
	{method: http.MethodGet, path: "/v1/openapi.yaml", roles: everyone, handler: (*Server).openapi},
	{method: http.MethodGet, path: "/v1/challenge", roles: []service.Role{public}, handler: (*Server).challenge},
	{method: http.MethodPost, path: "/v1/attest", roles: []service.Role{service.RoleAgent, service.RoleRelyingParty}, attestBody: true, handler: (*Server).attest},
	{method: http.MethodGet, path: "/v1/results/:id", roles: everyone, handler: (*Server).result},
	{method: http.MethodGet, path: "/v1/log/checkpoint", roles: everyone, handler: (*Server).checkpoint},
	{method: http.MethodGet, path: "/v1/log/proofs/inclusion/:index", roles: everyone, handler: (*Server).inclusionProof},
	{method: http.MethodGet, path: "/v1/log/proofs/consistency", roles: everyone, handler: (*Server).consistencyProof},
	{method: http.MethodPost, path: "/v1/events", roles: []service.Role{service.RoleRelyingParty}, handler: (*Server).recordEvent},
	{method: http.MethodGet, path: "/v1/policies", roles: readers, handler: (*Server).listPolicies},
	{method: http.MethodPost, path: "/v1/policies", roles: []service.Role{service.RoleAdmin}, handler: (*Server).createPolicy},
	{method: http.MethodGet, path: "/v1/policies/:version", roles: readers, handler: (*Server).getPolicy},
	{method: http.MethodPost, path: "/v1/policies/:version/activate", roles: []service.Role{service.RoleAdmin}, handler: (*Server).activatePolicy},
	{method: http.MethodGet, path: "/v1/records", roles: readers, handler: (*Server).queryRecords},
	{method: http.MethodGet, path: "/v1/records/:index", roles: readers, handler: (*Server).getRecord},
	{method: http.MethodGet, path: "/v1/blobs/:digest", roles: readers, handler: (*Server).getBlob},
	{method: http.MethodGet, path: "/v1/keys", roles: readers, handler: (*Server).getKeys},
	// The auditor web UI (ui.go): its summary, and its static files (public: they hold no data).
	{method: http.MethodGet, path: "/v1/audit/summary", roles: readers, handler: (*Server).auditSummary},
	{method: http.MethodGet, path: "/v1/audit/export", roles: readers, handler: (*Server).auditExport},
	{method: http.MethodGet, path: "/ui/", roles: []service.Role{public}, handler: (*Server).uiIndex},
	{method: http.MethodGet, path: "/ui/:file", roles: []service.Role{public}, handler: (*Server).uiFile},
	// Access management (tokens.go).
	{method: http.MethodGet, path: "/v1/tokens", roles: readers, handler: (*Server).listTokens},
	{method: http.MethodPost, path: "/v1/tokens", roles: []service.Role{service.RoleAdmin}, handler: (*Server).createToken},
	{method: http.MethodDelete, path: "/v1/tokens/:id", roles: []service.Role{service.RoleAdmin}, handler: (*Server).revokeToken},
	{method: http.MethodGet, path: "/v1/access-review", roles: readers, handler: (*Server).accessReview},
}

// guard authenticates the caller, checks its role against the route's, and bounds the body.
func (s *Server) guard(rt route) echo.MiddlewareFunc {
	limit := s.cfg.MaxBody
	if rt.attestBody {
		limit = s.cfg.MaxAttestBody
	}
	isPublic := slices.Contains(rt.roles, public)
	return func(next echo.HandlerFunc) echo.HandlerFunc {
		return func(c echo.Context) error {
			p, err := s.auth.authenticate(c.Request())
			if err != nil {
				if errors.Is(err, errUnauthenticated) {
					// Repeated failures from one address raise an auth_failures alert.
					s.svc.AuthFailed(c.Request().Context(), c.RealIP())
				}
				return err
			}
			c.Set(keyPrincipal, p)
			if !isPublic {
				if p.Anonymous() {
					return errUnauthenticated
				}
				if !slices.Contains(rt.roles, p.Role) {
					return fmt.Errorf("%w: the %s role may not call %s %s", service.ErrForbidden, p.Role, rt.method, rt.path)
				}
			}
			r := c.Request()
			if r.ContentLength > limit {
				return &http.MaxBytesError{Limit: limit}
			}
			r.Body = http.MaxBytesReader(c.Response(), r.Body, limit)
			return next(c)
		}
	}
}

func principal(c echo.Context) service.Principal {
	p, _ := c.Get(keyPrincipal).(service.Principal)
	return p
}

// requestIDPattern is what an X-Request-ID from the client must look like to be kept.
var requestIDPattern = regexp.MustCompile(`^[A-Za-z0-9._:-]{1,64}$`)

// requestID gives every request an id: the client's X-Request-ID if it is short and plain,
// otherwise a new random one. It is echoed in the response and in every log line.
func (s *Server) requestID(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		id := c.Request().Header.Get(echo.HeaderXRequestID)
		if !requestIDPattern.MatchString(id) {
			var b [12]byte
			rand.Read(b[:])
			id = hex.EncodeToString(b[:])
		}
		c.Set(keyRequestID, id)
		c.Response().Header().Set(echo.HeaderXRequestID, id)
		return next(c)
	}
}

// observe writes the access log line and the HTTP metrics of every request. It sends errors to
// the error handler itself, so that it sees the final status.
func (s *Server) observe(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		start := time.Now()
		err := next(c)
		if err != nil {
			c.Error(err)
		}
		r, w := c.Request(), c.Response()
		routePath := c.Path()
		if !knownRoute(routePath) {
			routePath = "unmatched"
		}
		d := time.Since(start)
		method := methodLabel(r.Method)
		s.requests.WithLabelValues(method, routePath, strconv.Itoa(w.Status)).Inc()
		s.latency.WithLabelValues(method, routePath).Observe(d.Seconds())
		attrs := []slog.Attr{
			slog.String("request_id", c.Get(keyRequestID).(string)),
			slog.String("method", method),
			slog.String("route", routePath),
			slog.Int("status", w.Status),
			slog.Duration("latency", d),
			slog.Int64("bytes_out", w.Size),
			slog.String("remote_ip", c.RealIP()),
			slog.String("principal", principal(c).String()),
		}
		level := slog.LevelInfo
		if w.Status >= 500 {
			level = slog.LevelError
			if err != nil {
				attrs = append(attrs, slog.Any("error", err))
			}
		}
		s.logger.LogAttrs(r.Context(), level, "http request", attrs...)
		return nil
	}
}

// methodLabel is the method of a request as the metrics and the access log name it: one of a
// fixed set, or "other". A client may send any method token, and each one would otherwise be a
// new metric series kept for the life of the process.
func methodLabel(m string) string {
	switch m {
	case http.MethodGet, http.MethodPost, http.MethodPut, http.MethodPatch, http.MethodDelete, http.MethodHead, http.MethodOptions:
		return m
	}
	return "other"
}

func knownRoute(path string) bool {
	for _, rt := range routes {
		if rt.path == path {
			return true
		}
	}
	return false
}

// apiHeaders marks every answer under /v1/ — records, results, tokens, errors, unknown routes —
// as not to be stored by a browser or a proxy (Cache-Control: no-store), and its content type as
// the one to use (X-Content-Type-Options: nosniff). A handler that sets its own Cache-Control
// replaces this one. Routes outside /v1/ keep their own: the public JWKS stays cacheable, the
// UI's files say no-cache (ui.go).
func apiHeaders(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) error {
		if strings.HasPrefix(c.Request().URL.Path, "/v1/") {
			h := c.Response().Header()
			h.Set("Cache-Control", "no-store")
			h.Set("X-Content-Type-Options", "nosniff")
		}
		return next(c)
	}
}

// recover turns a handler panic into a 500 (logged with the request id), never a dropped
// connection or a crashed verifier.
func (s *Server) recover(next echo.HandlerFunc) echo.HandlerFunc {
	return func(c echo.Context) (err error) {
		defer func() {
			if r := recover(); r != nil {
				if r == http.ErrAbortHandler {
					panic(r)
				}
				err = fmt.Errorf("api: panic in handler: %v", r)
			}
		}()
		return next(c)
	}
}
