package api

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/proofline/proofline/attest"
	"github.com/proofline/proofline/verifier/ear"
	"github.com/proofline/proofline/verifier/service"
	"github.com/proofline/proofline/verifier/service/servicetest"
)

// tlsFixture serves f's service over HTTPS, with client certificates from any CA of clientCAs.
type tlsFixture struct {
	*fixture
	base  string
	roots *x509.CertPool
}

func newTLSFixture(t *testing.T, clientCAs ...*testCA) *tlsFixture {
	t.Helper()
	dir := t.TempDir()
	serverCA := newTestCA(t, "server CA")
	sc := serverCA.issue(t, "verifier", true)
	writePEM(t, filepath.Join(dir, "server.pem"), "CERTIFICATE", sc.Certificate[0])
	kd, _ := x509.MarshalPKCS8PrivateKey(sc.PrivateKey)
	writePEM(t, filepath.Join(dir, "server.key"), "PRIVATE KEY", kd)
	var bundle []byte
	for _, ca := range clientCAs {
		bundle = append(bundle, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ca.cert.Raw})...)
	}
	if err := os.WriteFile(filepath.Join(dir, "client-cas.pem"), bundle, 0o600); err != nil {
		t.Fatal(err)
	}
	f := newFixture(t, options{})
	srv, err := New(f.svc, Config{
		Tokens: tokenConfig(),
		TLS:    TLSConfig{CertFile: filepath.Join(dir, "server.pem"), KeyFile: filepath.Join(dir, "server.key"), ClientCAFile: filepath.Join(dir, "client-cas.pem")},
	}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ctx, ln) }()
	t.Cleanup(func() {
		cancel()
		if err := <-served; err != nil {
			t.Errorf("serve: %v", err)
		}
	})
	roots := x509.NewCertPool()
	roots.AddCert(serverCA.cert)
	return &tlsFixture{fixture: f, base: "https://" + ln.Addr().String(), roots: roots}
}

// call sends a request with the client certificate cert (nil: none) and the token of the named
// principal ("" for none).
func (tf *tlsFixture) call(t *testing.T, cert *tls.Certificate, as, method, path string, body []byte) (int, []byte) {
	t.Helper()
	tc := &tls.Config{RootCAs: tf.roots}
	if cert != nil {
		tc.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return cert, nil }
	}
	c := &http.Client{Transport: &http.Transport{TLSClientConfig: tc}}
	defer c.CloseIdleConnections()
	req, _ := http.NewRequest(method, tf.base+path, bytesReader(body))
	if as != "" {
		req.Header.Set("Authorization", "Bearer "+tokenFor(as))
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

func (tf *tlsFixture) nonce(t *testing.T, cert *tls.Certificate, as string) []byte {
	t.Helper()
	code, b := tf.call(t, cert, as, http.MethodGet, "/v1/challenge", nil)
	var ch challengeResponse
	if code != http.StatusOK || json.Unmarshal(b, &ch) != nil || !ch.Bound {
		t.Fatalf("challenge: %d %s", code, b)
	}
	return ch.Nonce
}

func (tf *tlsFixture) attestAs(t *testing.T, cert *tls.Certificate, as string, ev []byte) *attestResult {
	t.Helper()
	code, b := tf.call(t, cert, as, http.MethodPost, "/v1/attest", ev)
	var a attestResult
	if code != http.StatusOK || json.Unmarshal(b, &a) != nil {
		t.Fatalf("attest: %d %s", code, b)
	}
	return &a
}

// The reviewer's scenario: client_ca_file holds two CAs. A certificate's common name never
// borrows the identity of a token principal, of a relying party, or of a certificate from the
// other CA: it cannot read their results nor spend the nonces issued to them, and a common name
// holding ':' or '/' authenticates no one.
func TestMutualTLSIdentityNamespaces(t *testing.T) {
	caA, caB := newTestCA(t, "agents CA A"), newTestCA(t, "agents CA B")
	tf := newTLSFixture(t, caA, caB)
	tdx := attest.PlatformTDX
	certA, certB := caA.issue(t, "vm-tdx", false), caB.issue(t, "vm-tdx", false)

	// The token agent vm-tdx attests; its nonce is bound to it.
	tokenResult := tf.attestAs(t, nil, "vm-tdx", tf.evidence(tdx, "vm-tdx", tf.nonce(t, nil, "vm-tdx"), servicetest.FaultNone))
	if tokenResult.Status != ear.StatusAffirming {
		t.Fatalf("token agent: %s", tokenResult.Result)
	}
	// CA A's vm-tdx attests with its own nonce.
	resA := tf.attestAs(t, &certA, "", tf.evidence(tdx, "vm-tdx", tf.nonce(t, &certA, ""), servicetest.FaultNone))
	if resA.Status != ear.StatusAffirming {
		t.Fatalf("certificate agent: %s", resA.Result)
	}
	code, b := tf.call(t, &certA, "", http.MethodGet, "/v1/results/"+resA.ID, nil)
	var stored storedResultResponse
	if code != http.StatusOK || json.Unmarshal(b, &stored) != nil || !strings.HasPrefix(stored.Subject, "agent:mtls:") || !strings.HasSuffix(stored.Subject, "/vm-tdx") {
		t.Fatalf("own result over mTLS: %d %s", code, b)
	}
	// A relying party submits evidence on an attester's behalf.
	rpResult := tf.attestAs(t, nil, "key-release", tf.evidence(tdx, "vm-tdx", tf.nonce(t, nil, "key-release"), servicetest.FaultNone))

	// CN vm-tdx from CA B is neither the token agent vm-tdx nor CA A's vm-tdx.
	for _, id := range []string{tokenResult.ID, resA.ID, rpResult.ID} {
		if code, b := tf.call(t, &certB, "", http.MethodGet, "/v1/results/"+id, nil); code != http.StatusNotFound {
			t.Errorf("CA B's vm-tdx reads result %s: %d %s", id, code, b)
		}
	}
	// Nor the token agent's (nor CA A's) results to the token agent.
	if code, b := tf.call(t, nil, "vm-tdx", http.MethodGet, "/v1/results/"+resA.ID, nil); code != http.StatusNotFound {
		t.Errorf("token vm-tdx reads CA A's vm-tdx result: %d %s", code, b)
	}
	// A certificate agent with the relying party's name is an agent, not the relying party.
	certKR := caA.issue(t, "key-release", false)
	if code, b := tf.call(t, &certKR, "", http.MethodGet, "/v1/results/"+rpResult.ID, nil); code != http.StatusNotFound {
		t.Errorf("certificate CN key-release reads the relying party's submission: %d %s", code, b)
	}
	if code, b := tf.call(t, &certKR, "", http.MethodPost, "/v1/events", []byte("{}")); code != http.StatusForbidden {
		t.Errorf("certificate CN key-release records an event: %d %s", code, b)
	}

	// Nonces issued to the token agent vm-tdx, or to CA A's vm-tdx, are refused to CA B's.
	for name, n := range map[string][]byte{"token vm-tdx": tf.nonce(t, nil, "vm-tdx"), "CA A's vm-tdx": tf.nonce(t, &certA, "")} {
		a := tf.attestAs(t, &certB, "", tf.evidence(tdx, "vm-tdx", n, servicetest.FaultNone))
		if a.Status != ear.StatusContraindicated || !strings.Contains(string(a.Result), "issued to another caller") {
			t.Errorf("CA B's vm-tdx spent the nonce of %s: %s %s", name, a.Status, a.Result)
		}
	}

	// Common names that try to write another namespace authenticate no one.
	for _, cn := range []string{"relying-party:key-release", "agent:vm-tdx", "mtls:0011223344556677/vm-tdx", "a/b", ""} {
		c := caA.issue(t, cn, false)
		if code, b := tf.call(t, &c, "", http.MethodGet, "/v1/challenge", nil); code != http.StatusUnauthorized {
			t.Errorf("CN %q: %d %s", cn, code, b)
		}
		if code, b := tf.call(t, &c, "", http.MethodGet, "/v1/results/"+rpResult.ID, nil); code != http.StatusUnauthorized {
			t.Errorf("CN %q reads a result: %d %s", cn, code, b)
		}
	}
}

// Token names cannot enter the certificate or role namespaces.
func TestTokenNamesReserved(t *testing.T) {
	for _, name := range []string{"relying-party:key-release", "mtls:0011223344556677/vm-tdx", "a/b", "vm tdx", "agent:vm-tdx"} {
		c := Config{Tokens: []TokenConfig{{Name: name, Role: service.RoleAgent, SHA256: strings.Repeat("ab", 32)}}}
		if err := c.Validate(); err == nil {
			t.Errorf("token name %q accepted", name)
		}
	}
	c := Config{Tokens: []TokenConfig{{Name: "vm-tdx.prod_1", Role: service.RoleAgent, SHA256: strings.Repeat("ab", 32)}}}
	if err := c.Validate(); err != nil {
		t.Errorf("plain token name refused: %v", err)
	}
}
