package agent

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/proofline/proofline/attest"
	"github.com/proofline/proofline/verifier"
	"github.com/proofline/proofline/verifier/ear"
	"github.com/proofline/proofline/verifier/policy"
)

// clientEnv makes the test binary a local-API client (see TestMain): it asks GET /v1/token on
// the socket named by the variable and prints "status N" or "dial: error".
const clientEnv = "PROOFLINE_AGENT_TEST_SOCKET_CLIENT"

func TestMain(m *testing.M) {
	if path := os.Getenv(clientEnv); path != "" {
		status, err := getToken(path)
		if err != nil {
			fmt.Printf("dial: %v\n", err)
		} else {
			fmt.Printf("status %d\n", status)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

func getToken(path string) (int, error) {
	resp, err := unixClient(path).Get("http://agent/v1/token")
	if err != nil {
		return 0, err
	}
	resp.Body.Close()
	return resp.StatusCode, nil
}

func unixClient(path string) *http.Client {
	return &http.Client{Timeout: hangGuard, Transport: &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "unix", path)
		},
	}}
}

// fakeSource serves a fixed token and counts evidence requests.
type fakeSource struct {
	tok     *Token
	collect func(ctx context.Context, nonce, pub []byte) (*attest.Evidence, error)
}

func (f *fakeSource) Latest() *Token { return f.tok }

func (f *fakeSource) Evidence(ctx context.Context, nonce, pub []byte) (*attest.Evidence, error) {
	return f.collect(ctx, nonce, pub)
}

// publicDir returns a new directory that any uid may enter (mode 0755), removed at the end.
func publicDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "proofline-agent-socket")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

// serveSocket starts the local API with cfg (Path defaults to a fresh directory) until the test
// ends.
func serveSocket(t *testing.T, cfg SocketConfig, src Source, now func() time.Time) string {
	t.Helper()
	if cfg.Path == "" {
		cfg.Path = filepath.Join(publicDir(t), "agent.sock")
	}
	cfg = Config{Socket: cfg}.WithDefaults().Socket
	s, err := ListenSocket(cfg, src, SocketOptions{Now: now})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
		if _, err := os.Lstat(cfg.Path); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("the socket file is left behind: %v", err)
		}
	})
	return cfg.Path
}

// GET /v1/token answers the latest token with its verdict, 503 before the first and once it
// has expired.
func TestSocketToken(t *testing.T) {
	now := time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)
	src := &fakeSource{}
	path := serveSocket(t, SocketConfig{}, src, func() time.Time { return now })
	get := func() (int, map[string]any) {
		t.Helper()
		resp, err := unixClient(path).Get("http://agent/v1/token")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var body map[string]any
		if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
			t.Fatal(err)
		}
		return resp.StatusCode, body
	}
	if code, body := get(); code != http.StatusServiceUnavailable || body["code"] != "not_attested" {
		t.Fatalf("before the first result: %d %v", code, body)
	}
	src.tok = &Token{Result: Result{ID: "7", LogIndex: 7, Status: "affirming", Token: "a.b.c", RecordSHA256: "ab"}, Platform: attest.PlatformSNP,
		AttestedAt: now.Add(-time.Minute), IssuedAt: now.Add(-time.Minute), ExpiresAt: now.Add(9 * time.Minute)}
	if code, body := get(); code != http.StatusOK || body["token"] != "a.b.c" || body["status"] != "affirming" || body["log_index"] != 7.0 || body["platform"] != "sev-snp" {
		t.Fatalf("with a result: %d %v", code, body)
	}
	now = now.Add(10 * time.Minute)
	if code, body := get(); code != http.StatusServiceUnavailable || body["code"] != "expired" {
		t.Fatalf("after expiry: %d %v", code, body)
	}
	resp, err := unixClient(path).Post("http://agent/v1/token", "application/json", nil)
	if err != nil || resp.StatusCode != http.StatusMethodNotAllowed {
		t.Fatalf("POST /v1/token: %v %v", err, resp.Status)
	}
	resp, err = unixClient(path).Get("http://agent/v1/nothing")
	if err != nil || resp.StatusCode != http.StatusNotFound {
		t.Fatalf("GET /v1/nothing: %v %v", err, resp.Status)
	}
}

// POST /v1/evidence collects fresh evidence through the agent for the caller's nonce and
// public key: the verifier affirms it for that nonce, and runtime_data carries that key. Bad
// requests get 400 or 413 with what to change, and nothing is collected.
func TestSocketEvidence(t *testing.T) {
	plat := simulated(t)
	a, err := New(Options{Verifier: &fakeVerifier{}, Collector: &Simulated{Platform: attest.PlatformSNP, Platforms: PlatformsFunc(plat)}, Key: newKey(t)})
	if err != nil {
		t.Fatal(err)
	}
	path := serveSocket(t, SocketConfig{MaxRequest: 4096}, a, nil)
	caller := newKey(t)
	pub, err := x509.MarshalPKIXPublicKey(&caller.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	nonce := bytes.Repeat([]byte{7}, attest.NonceSize)
	post := func(body string) (int, []byte) {
		t.Helper()
		resp, err := unixClient(path).Post("http://agent/v1/evidence", "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, b
	}
	b64 := base64.StdEncoding.EncodeToString
	code, body := post(fmt.Sprintf(`{"nonce":%q,"public_key":%q}`, b64(nonce), b64(pub)))
	if code != http.StatusOK {
		t.Fatalf("%d %s", code, body)
	}
	ev, err := attest.DecodeEvidence(body)
	if err != nil {
		t.Fatal(err)
	}
	rd, err := attest.ParseRuntimeData(ev.RuntimeData)
	if err != nil || !bytes.Equal(rd.PublicKey, pub) || !bytes.Equal(ev.Nonce, nonce) {
		t.Fatalf("runtime_data %s, nonce %x: %v", ev.RuntimeData, ev.Nonce, err)
	}
	pol, err := policy.Parse(plat.PolicyYAML)
	if err != nil {
		t.Fatal(err)
	}
	res := verifier.Verify(context.Background(), ev, verifier.Options{Policy: pol, Roots: plat.Roots, Collateral: plat.Collateral, Now: plat.Now.Add(time.Minute), Nonce: nonce})
	if res.Status != ear.StatusAffirming {
		t.Fatalf("the verifier says %s: %+v", res.Status, res.Failures)
	}

	for _, c := range []struct {
		name, body string
		code       int
		want       string
	}{
		{"short nonce", fmt.Sprintf(`{"nonce":%q,"public_key":%q}`, b64(nonce[:8]), b64(pub)), 400, "nonce is 8 bytes"},
		{"no key", fmt.Sprintf(`{"nonce":%q}`, b64(nonce)), 400, "public_key is required"},
		{"not a key", fmt.Sprintf(`{"nonce":%q,"public_key":%q}`, b64(nonce), b64([]byte("key"))), 400, "not a PKIX DER public key"},
		{"unknown field", fmt.Sprintf(`{"nonce":%q,"public_key":%q,"vmpl":1}`, b64(nonce), b64(pub)), 400, "unknown field"},
		{"two objects", fmt.Sprintf(`{"nonce":%q,"public_key":%q} {}`, b64(nonce), b64(pub)), 400, "one JSON object"},
		{"not JSON", `nonce=1`, 400, "the body must be"},
		{"too large", `{"nonce":"` + strings.Repeat("A", 5000) + `"}`, 413, "larger than 4096 bytes"},
	} {
		t.Run(c.name, func(t *testing.T) {
			code, body := post(c.body)
			if code != c.code || !strings.Contains(string(body), c.want) {
				t.Fatalf("%d %s; want %d with %q", code, body, c.code, c.want)
			}
		})
	}
}

// Acceptance 4: access to the socket is checked by the file's mode and by the caller's uid
// (SO_PEERCRED). The test binary runs a client as uid 65534 (nobody): with a mode that lets
// anyone connect, the agent itself refuses that uid (403) until it is listed in allow_uids (or
// its gid in allow_gids); with mode 0600 the kernel refuses the connection before the agent
// sees it.
func TestSocketPeerCredentials(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("switching to another uid needs root")
	}
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	// The test binary lives in a private build directory: copy it where nobody can run it.
	bin := filepath.Join(publicDir(t), "agent.test")
	data, err := os.ReadFile(exe)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bin, data, 0o755); err != nil {
		t.Fatal(err)
	}
	asNobody := func(path string) string {
		t.Helper()
		cmd := exec.Command(bin, "-test.run=^$")
		cmd.Env = []string{clientEnv + "=" + path}
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("client as uid 65534: %v\n%s", err, out)
		}
		return strings.TrimSpace(string(out))
	}
	src := &fakeSource{}
	for _, c := range []struct {
		name string
		cfg  SocketConfig
		want string
	}{
		{"mode lets it connect, uid refused", SocketConfig{Mode: "0666"}, "status 403"},
		{"uid allowed", SocketConfig{Mode: "0666", AllowUIDs: []uint32{65534}}, "status 503"}, // allowed: no token yet
		{"gid allowed", SocketConfig{Mode: "0666", AllowGIDs: []uint32{65534}}, "status 503"},
		{"mode refuses it", SocketConfig{Mode: "0600", AllowUIDs: []uint32{65534}}, "permission denied"},
	} {
		t.Run(c.name, func(t *testing.T) {
			path := serveSocket(t, c.cfg, src, nil)
			fi, err := os.Stat(path)
			if err != nil {
				t.Fatal(err)
			}
			if want, _ := (Config{Socket: c.cfg}.WithDefaults().Socket).FileMode(); fi.Mode().Perm() != want || fi.Mode().Type() != os.ModeSocket {
				t.Fatalf("socket mode %v, want %v", fi.Mode(), want)
			}
			if got := asNobody(path); !strings.Contains(got, c.want) {
				t.Fatalf("uid 65534 got %q, want %q", got, c.want)
			}
			// The agent's own uid is always allowed.
			if code, err := getToken(path); err != nil || code != http.StatusServiceUnavailable {
				t.Fatalf("own uid: %d %v", code, err)
			}
		})
	}
}

// Slow clients are disconnected after read_timeout, whether they stall in the headers or in the
// body; headers are bounded too. Nothing here measures time: the guard only stops a hang.
func TestSocketBoundsClients(t *testing.T) {
	started := make(chan struct{}, 1)
	src := &fakeSource{collect: func(ctx context.Context, nonce, pub []byte) (*attest.Evidence, error) {
		started <- struct{}{}
		return nil, errors.New("unreachable")
	}}
	path := serveSocket(t, SocketConfig{ReadTimeout: 200 * time.Millisecond}, src, nil)
	dial := func() net.Conn {
		t.Helper()
		c, err := net.Dial("unix", path)
		if err != nil {
			t.Fatal(err)
		}
		c.SetDeadline(time.Now().Add(hangGuard))
		return c
	}
	for _, c := range []struct {
		name, send string
		want       string // a prefix of what the server answers before closing; "" for nothing
	}{
		{"stalls in the headers", "GET /v1/token HTTP/1.1\r\nHost: agent\r\n", ""},
		{"stalls in the body", "POST /v1/evidence HTTP/1.1\r\nHost: agent\r\nContent-Length: 100\r\n\r\n{\"nonce\":", "HTTP/1.1 408"},
		{"huge headers", "GET /v1/token HTTP/1.1\r\nHost: agent\r\nX-Pad: " + strings.Repeat("a", 2*maxHeaderBytes) + "\r\n\r\n", "HTTP/1.1 431"},
	} {
		t.Run(c.name, func(t *testing.T) {
			conn := dial()
			defer conn.Close()
			if _, err := io.WriteString(conn, c.send); err != nil {
				t.Fatal(err)
			}
			got, err := io.ReadAll(conn) // returns when the server closes the connection
			if err != nil {
				t.Fatalf("the server did not close the connection: %v", err)
			}
			if !strings.HasPrefix(string(got), c.want) {
				t.Fatalf("answer %q, want %q", got, c.want)
			}
		})
	}
	select {
	case <-started:
		t.Fatal("a partial request reached the collector")
	default:
	}
}

// A stale socket left by a crashed agent is replaced; a live one, a file that is not a socket,
// an unknown group or a missing directory is refused with what to do.
func TestSocketPath(t *testing.T) {
	dir := publicDir(t)
	stale := filepath.Join(dir, "stale.sock")
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: stale, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	ln.SetUnlinkOnClose(false)
	ln.Close()
	serveSocket(t, SocketConfig{Path: stale}, &fakeSource{}, nil)
	if code, err := getToken(stale); err != nil || code != http.StatusServiceUnavailable {
		t.Fatalf("after replacing a stale socket: %d %v", code, err)
	}
	cfg := Config{Socket: SocketConfig{Path: stale}}.WithDefaults().Socket
	if _, err := ListenSocket(cfg, &fakeSource{}, SocketOptions{}); err == nil || !strings.Contains(err.Error(), "another process") {
		t.Fatalf("a live socket: %v", err)
	}
	file := filepath.Join(dir, "file")
	os.WriteFile(file, nil, 0o600)
	cfg.Path = file
	if _, err := ListenSocket(cfg, &fakeSource{}, SocketOptions{}); err == nil || !strings.Contains(err.Error(), "not a socket") {
		t.Fatalf("a regular file: %v", err)
	}
	cfg.Path = filepath.Join(dir, "grouped.sock")
	cfg.Group = "no-such-group-xyz"
	if _, err := ListenSocket(cfg, &fakeSource{}, SocketOptions{}); err == nil || !strings.Contains(err.Error(), "no group") {
		t.Fatalf("an unknown group: %v", err)
	}
	cfg.Group = ""
	cfg.Path = filepath.Join(dir, "missing", "agent.sock")
	if _, err := ListenSocket(cfg, &fakeSource{}, SocketOptions{}); err == nil || !strings.Contains(err.Error(), "RuntimeDirectory") {
		t.Fatalf("a missing directory: %v", err)
	}
}

// Stopping the agent while a workload's evidence request is in progress is not a failure, so
// run exits 0 on SIGTERM: a request waiting for the collection turn (held here as by the
// periodic attestation) stops waiting and answers 503 "stopping"; a collection that ignores
// cancellation (a device call) has its connection closed after the grace period. Either way
// Serve returns nil and removes the socket.
func TestSocketStopsDuringEvidence(t *testing.T) {
	caller := newKey(t)
	pub, err := x509.MarshalPKIXPublicKey(&caller.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	b64 := base64.StdEncoding.EncodeToString
	body := fmt.Sprintf(`{"nonce":%q,"public_key":%q}`, b64(bytes.Repeat([]byte{7}, attest.NonceSize)), b64(pub))
	for _, c := range []struct {
		name string
		// src signals arrived once the request reached it; release ends a collection that
		// ignores cancellation.
		src      func(t *testing.T, arrived chan<- struct{}, release <-chan struct{}) Source
		grace    time.Duration
		wantCode int // 0: the connection is closed without an answer
	}{
		{
			name: "waiting for the collection turn",
			src: func(t *testing.T, arrived chan<- struct{}, _ <-chan struct{}) Source {
				a, err := New(Options{Verifier: &fakeVerifier{}, Collector: fakeCollector{}, Key: newKey(t)})
				if err != nil {
					t.Fatal(err)
				}
				a.collecting <- struct{}{} // a slow periodic collection holds the turn
				return &fakeSource{collect: func(ctx context.Context, nonce, pub []byte) (*attest.Evidence, error) {
					close(arrived)
					return a.Evidence(ctx, nonce, pub)
				}}
			},
			grace:    shutdownGrace,
			wantCode: http.StatusServiceUnavailable,
		},
		{
			name: "a collection that ignores cancellation",
			src: func(t *testing.T, arrived chan<- struct{}, release <-chan struct{}) Source {
				return &fakeSource{collect: func(context.Context, []byte, []byte) (*attest.Evidence, error) {
					close(arrived)
					<-release
					return nil, errors.New("the device answered too late")
				}}
			},
			grace: 50 * time.Millisecond,
		},
	} {
		t.Run(c.name, func(t *testing.T) {
			arrived, release := make(chan struct{}), make(chan struct{})
			defer close(release)
			path := filepath.Join(publicDir(t), "agent.sock")
			s, err := ListenSocket(Config{Socket: SocketConfig{Path: path}}.WithDefaults().Socket, c.src(t, arrived, release), SocketOptions{})
			if err != nil {
				t.Fatal(err)
			}
			s.grace = c.grace
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			served := make(chan error, 1)
			go func() { served <- s.Serve(ctx) }()
			type answer struct {
				code int
				body string
				err  error
			}
			answered := make(chan answer, 1)
			go func() {
				resp, err := unixClient(path).Post("http://agent/v1/evidence", "application/json", strings.NewReader(body))
				if err != nil {
					answered <- answer{err: err}
					return
				}
				defer resp.Body.Close()
				b, _ := io.ReadAll(resp.Body)
				answered <- answer{code: resp.StatusCode, body: string(b)}
			}()
			select {
			case <-arrived:
			case <-time.After(hangGuard):
				t.Fatal("the evidence request did not reach the source")
			}
			cancel() // SIGTERM
			select {
			case err := <-served:
				if err != nil {
					t.Fatalf("Serve: %v; stopping must not be a failure", err)
				}
			case <-time.After(hangGuard):
				t.Fatal("Serve did not return")
			}
			if _, err := os.Lstat(path); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("the socket file is left behind: %v", err)
			}
			a := <-answered
			if a.code != c.wantCode || (c.wantCode == 0) != (a.err != nil) || (c.wantCode != 0 && !strings.Contains(a.body, `"stopping"`)) {
				t.Fatalf("answer %d %s (error %v); want %d", a.code, a.body, a.err, c.wantCode)
			}
		})
	}
}
