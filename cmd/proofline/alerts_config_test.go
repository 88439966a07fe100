package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
)

// The alerts and self_check sections of the serve configuration: a complete one validates; a
// misspelt key or a bad value is refused at start-up naming the field.
func TestServeAlertsConfig(t *testing.T) {
	good := "data_dir: /tmp/x\nalerts:\n  webhooks: [{url: https://soc.example.com/h, secret_file: /etc/s, min_severity: warning}]\n" +
		"  syslog: [{network: udp, address: 127.0.0.1:514, facility: local3, app_name: pl}]\n  expect_every: 1h\n" +
		"  expect: [{subject: \"agent:batch-*\", every: 24h}]\n  auth_failures: {threshold: 5, window: 1m}\nself_check: {every: 5m}\n"
	cfg, err := loadServeConfig(writeConfig(t, good))
	if err != nil {
		t.Fatal(err)
	}
	if err := cfg.validate(false); err != nil {
		t.Fatal(err)
	}
	if len(cfg.Alerts.Webhooks) != 1 || cfg.Alerts.Syslog[0].Facility != "local3" || cfg.SelfCheck.Every.String() != "5m0s" {
		t.Fatalf("%+v", cfg.Alerts)
	}
	for name, c := range map[string]struct{ yaml, want string }{
		"misspelt key":   {strings.Replace(good, "secret_file", "secret", 1), "field secret not found"},
		"no secret file": {strings.Replace(good, ", secret_file: /etc/s", "", 1), "alerts.webhooks[0].secret_file is required"},
		"bad network":    {strings.Replace(good, "network: udp", "network: tls", 1), "alerts.syslog[0]"},
		"self-check":     {strings.Replace(good, "every: 5m", "every: 1s", 1), "self_check.every"},
	} {
		t.Run(name, func(t *testing.T) {
			var out, errb bytes.Buffer
			if code := run(context.Background(), []string{"serve", "--config", writeConfig(t, c.yaml)}, &out, &errb); code != exitUsage {
				t.Fatalf("exit %d, stderr %s", code, errb.String())
			}
			if !strings.Contains(errb.String(), c.want) {
				t.Errorf("stderr lacks %q:\n%s", c.want, errb.String())
			}
		})
	}
}
