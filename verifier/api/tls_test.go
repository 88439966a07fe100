package api

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/proofline/proofline/attest"
	"github.com/proofline/proofline/verifier/ear"
	"github.com/proofline/proofline/verifier/service/servicetest"
)

// testCA issues certificates for the TLS test.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
}

func newTestCA(t *testing.T, name string) *testCA {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	return &testCA{cert: cert, key: key}
}

func (ca *testCA) issue(t *testing.T, cn string, server bool) tls.Certificate {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	if server {
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
		tmpl.IPAddresses = []net.IP{net.ParseIP("127.0.0.1")}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

func writePEM(t *testing.T, path, typ string, der []byte) {
	t.Helper()
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
}

// Agents may authenticate with a client certificate from the configured CA: its common name is
// the agent. A certificate from another CA fails the handshake; no certificate is anonymous.
func TestMutualTLS(t *testing.T) {
	dir := t.TempDir()
	serverCA, clientCA, otherCA := newTestCA(t, "server CA"), newTestCA(t, "agents CA"), newTestCA(t, "other CA")
	sc := serverCA.issue(t, "verifier", true)
	writePEM(t, filepath.Join(dir, "server.pem"), "CERTIFICATE", sc.Certificate[0])
	kd, _ := x509.MarshalPKCS8PrivateKey(sc.PrivateKey)
	writePEM(t, filepath.Join(dir, "server.key"), "PRIVATE KEY", kd)
	writePEM(t, filepath.Join(dir, "agents-ca.pem"), "CERTIFICATE", clientCA.cert.Raw)

	f := newFixture(t, options{})
	srv, err := New(f.svc, Config{
		Tokens: tokenConfig(),
		TLS:    TLSConfig{CertFile: filepath.Join(dir, "server.pem"), KeyFile: filepath.Join(dir, "server.key"), ClientCAFile: filepath.Join(dir, "agents-ca.pem")},
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
	client := func(cert *tls.Certificate) *http.Client {
		tc := &tls.Config{RootCAs: roots}
		if cert != nil {
			tc.Certificates = []tls.Certificate{*cert}
		}
		return &http.Client{Transport: &http.Transport{TLSClientConfig: tc}}
	}
	base := "https://" + ln.Addr().String()
	do := func(c *http.Client, method, path string, body []byte) (int, []byte, error) {
		req, _ := http.NewRequest(method, base+path, bytesReader(body))
		resp, err := c.Do(req)
		if err != nil {
			return 0, nil, err
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, b, nil
	}

	agentCert := clientCA.issue(t, "vm-mtls", false)
	agent := client(&agentCert)
	code, b, err := do(agent, http.MethodGet, "/v1/challenge", nil)
	if err != nil || code != http.StatusOK {
		t.Fatalf("challenge over mTLS: %v %d %s", err, code, b)
	}
	var ch challengeResponse
	if err := json.Unmarshal(b, &ch); err != nil || !ch.Bound {
		t.Fatalf("challenge: %s", b)
	}
	code, b, err = do(agent, http.MethodPost, "/v1/attest", f.evidence(attest.PlatformTDX, "vm-mtls", ch.Nonce, servicetest.FaultNone))
	var a attestResult
	if err != nil || code != http.StatusOK || json.Unmarshal(b, &a) != nil || a.Status != ear.StatusAffirming {
		t.Fatalf("attest over mTLS: %v %d %s", err, code, b)
	}
	if code, b, _ := do(agent, http.MethodGet, "/v1/results/"+a.ID, nil); code != http.StatusOK {
		t.Fatalf("own result: %d %s", code, b)
	}
	// A client certificate makes an agent, never an auditor.
	if code, _, _ := do(agent, http.MethodGet, "/v1/keys", nil); code != http.StatusForbidden {
		t.Fatalf("agent certificate on an auditor route: %d", code)
	}
	if code, _, err := do(client(nil), http.MethodPost, "/v1/attest", []byte("{}")); err != nil || code != http.StatusUnauthorized {
		t.Fatalf("no certificate: %v %d", err, code)
	}
	// A certificate from another CA never authenticates (Go's client does not even offer it, as
	// the server names its acceptable CAs; a client that forces it fails the handshake).
	otherCert := otherCA.issue(t, "vm-mtls", false)
	if code, _, err := do(client(&otherCert), http.MethodGet, "/v1/results/"+a.ID, nil); err == nil && code != http.StatusUnauthorized {
		t.Fatalf("a certificate from another CA: %d", code)
	}
	forced := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots,
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &otherCert, nil }}}}
	if code, _, err := do(forced, http.MethodGet, "/v1/results/"+a.ID, nil); err == nil {
		t.Fatalf("a forced certificate from another CA got an answer: %d", code)
	}
}

func bytesReader(b []byte) io.Reader {
	if b == nil {
		return http.NoBody
	}
	return bytes.NewReader(b)
}
