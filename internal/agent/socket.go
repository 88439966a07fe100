package agent

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"time"

	"github.com/proofline/proofline/attest"
)

// The local API (HTTP/1.1 on the unix socket; README.md documents it for workload authors):
//
//	GET  /v1/token      the latest result token and its verdict; 503 before the first
//	POST /v1/evidence   {"nonce": B64, "public_key": B64} → an evidence envelope bound to both
//
// Every answer is JSON; errors are {"code", "message"}.

// Source is what the local API serves; *Agent implements it.
type Source interface {
	Latest() *Token
	Evidence(ctx context.Context, nonce, publicKey []byte) (*attest.Evidence, error)
}

// Peer is the process at the other end of a socket connection (SO_PEERCRED).
type Peer struct {
	PID      int32
	UID, GID uint32
}

// SocketOptions are what ListenSocket takes besides the configuration.
type SocketOptions struct {
	Logger *slog.Logger
	// Now is the clock that decides whether the latest token has expired; nil means time.Now.
	Now func() time.Time
}

// Socket is the local API for workloads on this VM.
type Socket struct {
	cfg     SocketConfig
	src     Source
	log     *slog.Logger
	now     func() time.Time
	ln      *net.UnixListener
	path    string
	uid     uint32
	waiting chan struct{} // evidence requests in progress or waiting for the collector
	creds   func(net.Conn) (*Peer, error)
	// grace is how long Serve waits, once stopped, for requests to end before closing their
	// connections.
	grace time.Duration
}

// shutdownGrace is Socket.grace.
const shutdownGrace = 5 * time.Second

// maxEvidenceWaiting bounds the evidence requests in progress or queued; more get 503.
const maxEvidenceWaiting = 4

// maxHeaderBytes bounds a request's header block.
const maxHeaderBytes = 8 << 10

type peerKey struct{}

// ListenSocket creates the socket at cfg.Path (after WithDefaults) with cfg's mode and group.
// A stale socket left by a crashed agent is replaced; a live one (another agent answers) or a
// file that is not a socket is an error.
func ListenSocket(cfg SocketConfig, src Source, o SocketOptions) (*Socket, error) {
	mode, err := cfg.FileMode()
	if err != nil {
		return nil, fmt.Errorf("socket.mode: %w", err)
	}
	gid := -1
	if cfg.Group != "" {
		if gid, err = lookupGroup(cfg.Group); err != nil {
			return nil, fmt.Errorf("socket.group: %w", err)
		}
	}
	s := &Socket{cfg: cfg, src: src, log: o.Logger, now: o.Now, path: cfg.Path, uid: uint32(os.Geteuid()), waiting: make(chan struct{}, maxEvidenceWaiting), creds: peerCred, grace: shutdownGrace}
	if s.log == nil {
		s.log = slog.New(slog.DiscardHandler)
	}
	if s.now == nil {
		s.now = time.Now
	}
	if s.ln, err = listenUnix(cfg.Path, mode, gid); err != nil {
		return nil, err
	}
	return s, nil
}

// listenUnix binds a socket at a temporary name beside path, sets its mode and group, and
// renames it into place, so that path never exists with other permissions.
func listenUnix(path string, mode os.FileMode, gid int) (*net.UnixListener, error) {
	if fi, err := os.Lstat(path); err == nil {
		if fi.Mode().Type() != fs.ModeSocket {
			return nil, fmt.Errorf("socket.path %s exists and is not a socket: remove it or choose another path", path)
		}
		if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
			c.Close()
			return nil, fmt.Errorf("socket.path %s: another process (another proofline-agent?) is serving it; stop it or choose another path", path)
		}
	}
	dir := filepath.Dir(path)
	if _, err := os.Stat(dir); err != nil {
		return nil, fmt.Errorf("socket.path: the directory %s: %w; create it (systemd's RuntimeDirectory=proofline-agent does)", dir, err)
	}
	tmp := filepath.Join(dir, "."+filepath.Base(path)+".tmp"+strconv.Itoa(os.Getpid()))
	if len(tmp) > 107 { // sun_path is 108 bytes with the NUL (unix(7))
		return nil, fmt.Errorf("socket.path %s is too long for a unix socket; give a path of at most about 90 bytes", path)
	}
	os.Remove(tmp)
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: tmp, Net: "unix"})
	if err != nil {
		return nil, fmt.Errorf("socket.path: %w", err)
	}
	ln.SetUnlinkOnClose(false)
	fail := func(err error) (*net.UnixListener, error) {
		ln.Close()
		os.Remove(tmp)
		return nil, fmt.Errorf("socket.path: %w", err)
	}
	if err := os.Chmod(tmp, mode); err != nil {
		return fail(err)
	}
	if gid >= 0 {
		if err := os.Chown(tmp, -1, gid); err != nil {
			return fail(err)
		}
	}
	if err := os.Rename(tmp, path); err != nil {
		return fail(err)
	}
	return ln, nil
}

// Path is the socket's path.
func (s *Socket) Path() string { return s.path }

// Serve answers on the socket until ctx is done, then stops and removes the socket file. Stopping
// is not a failure: requests in progress see their context cancelled (an evidence request
// answers 503 "stopping"), and the connections of those that have not ended 5 s later are
// closed.
func (s *Socket) Serve(ctx context.Context) error {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/token", s.token)
	mux.HandleFunc("POST /v1/evidence", s.evidence)
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		if allow, ok := map[string]string{"/v1/token": "GET, HEAD", "/v1/evidence": "POST"}[r.URL.Path]; ok {
			w.Header().Set("Allow", allow)
			writeError(w, http.StatusMethodNotAllowed, "method_not_allowed", r.URL.Path+" takes "+allow)
			return
		}
		writeError(w, http.StatusNotFound, "not_found", "no such operation: use GET /v1/token or POST /v1/evidence")
	})
	hs := &http.Server{
		Handler:           s.guard(mux),
		ReadHeaderTimeout: s.cfg.ReadTimeout,
		ReadTimeout:       s.cfg.ReadTimeout,
		WriteTimeout:      s.cfg.WriteTimeout,
		IdleTimeout:       30 * time.Second,
		MaxHeaderBytes:    maxHeaderBytes,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelDebug),
		// Requests end with ctx: an evidence request must not hold the agent's stop while it
		// waits for the collection turn or for the device.
		BaseContext: func(net.Listener) context.Context { return ctx },
		ConnContext: func(ctx context.Context, c net.Conn) context.Context {
			p, err := s.creds(c)
			if err != nil {
				s.log.Warn("local API: no peer credentials; refusing the connection's requests", "error", err)
				return ctx
			}
			return context.WithValue(ctx, peerKey{}, p)
		},
	}
	s.log.Info("local API listening", "socket", s.path, "mode", s.cfg.Mode, "group", s.cfg.Group, "allow_uids", s.cfg.AllowUIDs, "allow_gids", s.cfg.AllowGIDs)
	errc := make(chan error, 1)
	go func() { errc <- hs.Serve(s.ln) }()
	var err error
	select {
	case err = <-errc:
	case <-ctx.Done():
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.grace)
		err = hs.Shutdown(sctx)
		cancel()
		if errors.Is(err, context.DeadlineExceeded) {
			// A collection that ignores cancellation (a device call in progress): its caller
			// gets a closed connection, and the agent stops anyway.
			s.log.Warn("local API: requests still in progress when stopping; closing their connections", "grace", s.grace)
			hs.Close() // the listener is closed already: only the connections are left to close
			err = nil
		}
		if serr := <-errc; !errors.Is(serr, http.ErrServerClosed) {
			err = errors.Join(err, serr)
		}
	}
	if rerr := os.Remove(s.path); rerr != nil && !errors.Is(rerr, fs.ErrNotExist) {
		err = errors.Join(err, rerr)
	}
	return err
}

// allowed reports whether a peer may use the API: the agent's own uid, a listed uid or gid.
func (s *Socket) allowed(p *Peer) bool {
	return p.UID == s.uid || slices.Contains(s.cfg.AllowUIDs, p.UID) || slices.Contains(s.cfg.AllowGIDs, p.GID)
}

// guard refuses peers that may not use the API and bounds request bodies.
func (s *Socket) guard(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p, _ := r.Context().Value(peerKey{}).(*Peer)
		if p == nil {
			w.Header().Set("Connection", "close")
			writeError(w, http.StatusForbidden, "forbidden", "the agent could not read this connection's peer credentials (SO_PEERCRED), so it refuses it")
			return
		}
		if !s.allowed(p) {
			s.log.Warn("local API: caller refused", "uid", p.UID, "gid", p.GID, "pid", p.PID, "path", r.URL.Path)
			w.Header().Set("Connection", "close")
			writeError(w, http.StatusForbidden, "forbidden", fmt.Sprintf("uid %d (gid %d) may not use the proofline-agent socket: add the uid to socket.allow_uids, or the gid to socket.allow_gids, in the agent's configuration", p.UID, p.GID))
			return
		}
		r.Body = http.MaxBytesReader(w, r.Body, s.cfg.MaxRequest)
		next.ServeHTTP(w, r)
	})
}

// tokenResponse is the answer of GET /v1/token.
type tokenResponse struct {
	// Token is the signed result token (JWT) to hand to relying parties.
	Token        string          `json:"token"`
	Status       string          `json:"status"`
	Platform     string          `json:"platform"`
	ID           string          `json:"id"`
	LogIndex     uint64          `json:"log_index"`
	RecordSHA256 string          `json:"record_sha256"`
	AttestedAt   time.Time       `json:"attested_at"`
	ExpiresAt    *time.Time      `json:"expires_at,omitempty"`
	Failures     []string        `json:"failures,omitempty"`
	Result       json.RawMessage `json:"result,omitempty"`
}

func (s *Socket) token(w http.ResponseWriter, r *http.Request) {
	t := s.src.Latest()
	if t == nil {
		w.Header().Set("Retry-After", "5")
		writeError(w, http.StatusServiceUnavailable, "not_attested", "this VM has no attestation result yet: the agent is still trying (its log says why); retry later")
		return
	}
	if !t.ExpiresAt.IsZero() && !s.now().Before(t.ExpiresAt) {
		w.Header().Set("Retry-After", "5")
		writeError(w, http.StatusServiceUnavailable, "expired", "the latest result token has expired and the agent has not attested again yet (its log says why); retry later")
		return
	}
	resp := tokenResponse{Token: t.Token, Status: t.Status, Platform: string(t.Platform), ID: t.ID, LogIndex: t.LogIndex, RecordSHA256: t.RecordSHA256,
		AttestedAt: t.AttestedAt, Failures: t.Failures, Result: t.ResultJSON}
	if !t.ExpiresAt.IsZero() {
		resp.ExpiresAt = &t.ExpiresAt
	}
	writeJSON(w, http.StatusOK, resp)
}

// evidenceRequest is the body of POST /v1/evidence.
type evidenceRequest struct {
	// Nonce is the caller's 32-byte nonce (e.g. from its relying party, or the verifier's
	// GET /v1/challenge), standard base64.
	Nonce []byte `json:"nonce"`
	// PublicKey is the caller's public key, PKIX DER in standard base64: it goes in runtime_data
	// (attest.RuntimeData.PublicKey), so that a relying party can wrap secrets to the caller.
	PublicKey []byte `json:"public_key"`
}

func (s *Socket) evidence(w http.ResponseWriter, r *http.Request) {
	p, _ := r.Context().Value(peerKey{}).(*Peer)
	data, err := io.ReadAll(r.Body)
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			writeError(w, http.StatusRequestEntityTooLarge, "too_large", fmt.Sprintf("the request is larger than %d bytes (socket.max_request)", mbe.Limit))
			return
		}
		writeError(w, http.StatusRequestTimeout, "timeout", "reading the request failed: "+err.Error())
		return
	}
	var req evidenceRequest
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		writeError(w, http.StatusBadRequest, "bad_request", `the body must be {"nonce": "<32 bytes, base64>", "public_key": "<PKIX DER, base64>"}: `+err.Error())
		return
	}
	if _, err := dec.Token(); err != io.EOF {
		writeError(w, http.StatusBadRequest, "bad_request", "the body must hold one JSON object and nothing else")
		return
	}
	if len(req.Nonce) != attest.NonceSize {
		writeError(w, http.StatusBadRequest, "bad_request", fmt.Sprintf("nonce is %d bytes; give exactly %d random bytes in standard base64", len(req.Nonce), attest.NonceSize))
		return
	}
	if len(req.PublicKey) == 0 || len(req.PublicKey) > attest.MaxRuntimeDataSize/2 {
		writeError(w, http.StatusBadRequest, "bad_request", "public_key is required: the caller's public key, PKIX DER (x509.MarshalPKIXPublicKey, openssl pkey -pubout -outform DER), standard base64")
		return
	}
	if _, err := x509.ParsePKIXPublicKey(req.PublicKey); err != nil {
		writeError(w, http.StatusBadRequest, "bad_request", "public_key is not a PKIX DER public key: "+err.Error())
		return
	}
	select {
	case s.waiting <- struct{}{}:
		defer func() { <-s.waiting }()
	default:
		w.Header().Set("Retry-After", "1")
		writeError(w, http.StatusServiceUnavailable, "busy", fmt.Sprintf("%d evidence requests are already in progress; retry after the Retry-After delay", maxEvidenceWaiting))
		return
	}
	ev, err := s.src.Evidence(r.Context(), req.Nonce, req.PublicKey)
	if err != nil && r.Context().Err() != nil {
		w.Header().Set("Retry-After", "5")
		writeError(w, http.StatusServiceUnavailable, "stopping", "the agent is stopping, so the evidence was not collected; retry once it is back")
		return
	}
	if err != nil {
		s.log.Error("local API: collecting evidence failed", "uid", p.UID, "pid", p.PID, "error", err)
		writeError(w, http.StatusInternalServerError, "collection_failed", "collecting evidence failed: "+err.Error())
		return
	}
	body, err := ev.Encode()
	if err != nil {
		writeError(w, http.StatusInternalServerError, "collection_failed", "the collected evidence does not fit the envelope: "+err.Error())
		return
	}
	s.log.Info("local API: evidence collected for a workload", "uid", p.UID, "pid", p.PID, "platform", ev.Platform,
		"nonce_sha256", digest(req.Nonce), "public_key_sha256", digest(req.PublicKey), "evidence_sha256", digest(body))
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusOK)
	w.Write(append(body, '\n'))
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	var b bytes.Buffer
	json.NewEncoder(&b).Encode(v)
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	w.Write(b.Bytes())
}

func writeError(w http.ResponseWriter, status int, code, msg string) {
	writeJSON(w, status, struct {
		Code    string `json:"code"`
		Message string `json:"message"`
	}{code, msg})
}
