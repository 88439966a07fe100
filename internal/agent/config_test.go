package agent

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func readConfig(t *testing.T, yaml string) (*Config, error) {
	t.Helper()
	p := filepath.Join(t.TempDir(), "agent.yaml")
	if err := os.WriteFile(p, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	return ReadConfig(p)
}

// The documented example configuration is valid, and defaults fill what a minimal one omits.
func TestConfigDefaults(t *testing.T) {
	c, err := readConfig(t, "verifier: {url: https://verifier.example.com, token_file: /etc/proofline-agent/token}\n")
	if err != nil {
		t.Fatal(err)
	}
	d := c.WithDefaults()
	if err := d.Validate(false); err != nil {
		t.Fatal(err)
	}
	if d.TEE != TEEAuto || d.KeyFile != DefaultKeyFile || d.Interval != DefaultInterval || *d.Jitter != DefaultJitter || d.Socket.Path != DefaultSocketPath ||
		d.Socket.Mode != "0600" || d.Backoff.Initial != time.Second || d.Backoff.Max != 5*time.Minute || !*d.EventLogs {
		t.Fatalf("defaults: %+v", d)
	}
}

// A configuration that needs changes is refused with a message naming each field to change.
func TestConfigErrors(t *testing.T) {
	const base = "verifier: {url: https://v.example.com, token_file: /t}\n"
	for _, c := range []struct {
		name, yaml string
		testMode   bool
		want       []string
	}{
		{name: "no verifier", yaml: "tee: tdx\n", want: []string{"verifier.url is required", "token_file"}},
		{name: "plain http to a remote verifier", yaml: "verifier: {url: http://v.example.com, token_file: /t}\n", want: []string{"use https://"}},
		{name: "replay", yaml: base + "tee: replay:/var/lib/rec\n", want: []string{"cannot answer the verifier's fresh nonce", "use auto, tdx or sev-snp"}},
		{name: "simulation without test mode", yaml: base + "tee: sim-snp\n", want: []string{"needs --test-mode"}},
		{name: "unknown tee", yaml: base + "tee: sgx\n", want: []string{`tee "sgx"`}},
		{name: "short interval", yaml: base + "interval: 1s\n", want: []string{"interval is 1s"}},
		{name: "jitter", yaml: base + "jitter: 2\n", want: []string{"jitter is 2"}},
		{name: "backoff", yaml: base + "backoff: {initial: 10s, max: 1s}\n", want: []string{"backoff"}},
		{name: "socket", yaml: base + "socket: {mode: \"rw\", max_request: 99999999}\n", want: []string{"socket.mode", "socket.max_request"}},
		{name: "half a client certificate", yaml: "verifier: {url: https://v.example.com, client_cert_file: /c}\n", want: []string{"client_key_file"}},
		{name: "log", yaml: base + "log_level: loud\nlog_format: xml\n", want: []string{"log_level", "log_format"}},
	} {
		t.Run(c.name, func(t *testing.T) {
			cfg, err := readConfig(t, c.yaml)
			if err != nil {
				t.Fatal(err)
			}
			d := cfg.WithDefaults()
			err = d.Validate(c.testMode)
			if err == nil {
				t.Fatal("accepted")
			}
			for _, w := range c.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("%q lacks %q", err, w)
				}
			}
		})
	}
	if _, err := readConfig(t, base+"intervall: 5m\n"); err == nil || !strings.Contains(err.Error(), "intervall") {
		t.Errorf("an unknown key: %v", err)
	}
	// Test mode allows the simulations and plain http.
	cfg, _ := readConfig(t, "verifier: {url: http://verifier:8080, token_file: /t}\ntee: sim-tdx\n")
	if d := cfg.WithDefaults(); d.Validate(true) != nil {
		t.Errorf("test mode: %v", d.Validate(true))
	}
}
