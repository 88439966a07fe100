package alert

import (
	"context"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"
)

// The syslog message is written by hand: log/syslog (and the forks of it) speak the BSD format of
// RFC 3164 without RFC 6587 octet counting, and no maintained Go library formats RFC 5424 with a
// CEF message. The format is small and fully specified:
//
//   - RFC 5424 §6: <PRI>1 TIMESTAMP HOSTNAME APP-NAME PROCID MSGID STRUCTURED-DATA MSG, with
//     PRI = facility × 8 + severity, TIMESTAMP in RFC 3339 UTC, "-" for an empty field, no
//     structured data, and MSG the CEF event in UTF-8 without a BOM;
//   - over UDP (RFC 5426) one message per datagram; over TCP (RFC 6587 §3.4.1, octet counting)
//     each message is preceded by its length in decimal and a space;
//   - MSG is CEF:0|Proofline|proofline|<version>|<kind>|<name>|<severity 0-10>|<extensions>
//     (ArcSight CEF rev. 25): '\' and '|' escaped in the header, '\', '=' and line breaks in
//     extension values.

// Syslog facilities (RFC 5424 §6.2.1) accepted in configuration.
var Facilities = map[string]int{
	"kern": 0, "user": 1, "mail": 2, "daemon": 3, "auth": 4, "syslog": 5, "lpr": 6, "news": 7,
	"uucp": 8, "cron": 9, "authpriv": 10, "ftp": 11, "ntp": 12, "security": 13, "console": 14,
	"local0": 16, "local1": 17, "local2": 18, "local3": 19, "local4": 20, "local5": 21, "local6": 22, "local7": 23,
}

// SyslogConfig configures a Syslog destination.
type SyslogConfig struct {
	// Name is the collector's stable id (ValidName), the outbox key of its undelivered alerts.
	// Default: "<network>-<address>" with ':' kept (e.g. "tcp-siem.example.com:601").
	Name string
	// Network is "udp" or "tcp".
	Network string
	// Address is host:port of the collector.
	Address string
	// Facility names the facility (Facilities); default DefaultFacility.
	Facility string
	// AppName is RFC 5424's APP-NAME; default "proofline".
	AppName string
	// Version is the product version in the CEF header.
	Version string
	// Hostname is RFC 5424's HOSTNAME; default os.Hostname().
	Hostname string
	// Timeout bounds the dial and the write; default 10s.
	Timeout time.Duration
}

// DefaultFacility is the facility of alerts when none is configured: 4, "security/authorization
// messages" (RFC 5424 §6.2.1).
const DefaultFacility = "auth"

// Syslog sends alerts to a syslog collector: RFC 5424 with a CEF message.
type Syslog struct {
	cfg      SyslogConfig
	facility int
}

// NewSyslog checks cfg and returns the destination.
func NewSyslog(cfg SyslogConfig) (*Syslog, error) {
	if cfg.Network != "udp" && cfg.Network != "tcp" {
		return nil, fmt.Errorf("alert: syslog network %q: give udp or tcp", cfg.Network)
	}
	if _, _, err := net.SplitHostPort(cfg.Address); err != nil {
		return nil, fmt.Errorf("alert: syslog address %q: give host:port (%v)", cfg.Address, err)
	}
	if cfg.Name == "" {
		cfg.Name = strings.Map(func(r rune) rune {
			if nameChar(r) {
				return r
			}
			return '_'
		}, cfg.Network+"-"+cfg.Address)
		cfg.Name = cfg.Name[:min(len(cfg.Name), 64)]
	}
	if !ValidName(cfg.Name) {
		return nil, fmt.Errorf("alert: syslog %s: name %q: give 1 to 64 letters, digits, '.', '_', '-' or ':', starting with a letter or digit", cfg.Address, cfg.Name)
	}
	if cfg.Facility == "" {
		cfg.Facility = DefaultFacility
	}
	f, ok := Facilities[cfg.Facility]
	if !ok {
		return nil, fmt.Errorf("alert: syslog facility %q: give one of kern, user, daemon, auth, authpriv, security, local0…local7", cfg.Facility)
	}
	if cfg.AppName == "" {
		cfg.AppName = "proofline"
	}
	if cfg.Hostname == "" {
		cfg.Hostname, _ = os.Hostname()
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = 10 * time.Second
	}
	return &Syslog{cfg: cfg, facility: f}, nil
}

// Name is "syslog:<network>://<address>".
func (s *Syslog) Name() string { return "syslog:" + s.cfg.Name }

// Deliver sends one message over a new connection.
func (s *Syslog) Deliver(ctx context.Context, a *Alert, _ []byte) error {
	msg := s.Format(a)
	d := net.Dialer{Timeout: s.cfg.Timeout}
	c, err := d.DialContext(ctx, s.cfg.Network, s.cfg.Address)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetWriteDeadline(time.Now().Add(s.cfg.Timeout))
	frame := []byte(msg)
	if s.cfg.Network == "tcp" {
		frame = append([]byte(strconv.Itoa(len(msg))+" "), frame...)
	}
	if _, err := c.Write(frame); err != nil {
		return err
	}
	return c.Close()
}

// syslogSeverity maps an alert severity to RFC 5424's: critical 2, warning 4, info 6.
func syslogSeverity(s Severity) int {
	switch s {
	case SeverityCritical:
		return 2
	case SeverityWarning:
		return 4
	}
	return 6
}

// Format returns the RFC 5424 message (without TCP framing) for a.
func (s *Syslog) Format(a *Alert) string {
	pri := s.facility*8 + syslogSeverity(a.Severity)
	ts := a.Time.UTC().Format("2006-01-02T15:04:05.000000Z")
	return fmt.Sprintf("<%d>1 %s %s %s %d %s - %s", pri, ts, headerField(s.cfg.Hostname, 255),
		headerField(s.cfg.AppName, 48), os.Getpid(), headerField(string(a.Kind), 32), CEF(a, s.cfg.Version))
}

// headerField is an RFC 5424 header field: printable US-ASCII without spaces, at most max
// characters, "-" when empty.
func headerField(v string, max int) string {
	var b strings.Builder
	for _, r := range v {
		if r > 32 && r < 127 && b.Len() < max {
			b.WriteRune(r)
		}
	}
	if b.Len() == 0 {
		return "-"
	}
	return b.String()
}

// CEF formats a as a CEF:0 event. Extensions: rt (ms since the epoch), externalId (the alert
// id), msg, cs1 subject, cs2 reason, cs3 log origin, cn1 record index, each cs/cn with its Label.
func CEF(a *Alert, version string) string {
	if version == "" {
		version = "unknown"
	}
	var b strings.Builder
	b.WriteString("CEF:0|Proofline|proofline|")
	b.WriteString(cefHeader(version))
	b.WriteString("|" + cefHeader(string(a.Kind)) + "|" + cefHeader(kindName(a.Kind)) + "|" + strconv.Itoa(a.Severity.CEF()) + "|")
	ext := [][2]string{
		{"rt", strconv.FormatInt(a.Time.UnixMilli(), 10)},
		{"externalId", a.ID},
		{"cs1Label", "subject"}, {"cs1", a.Subject},
		{"cs2Label", "reason"}, {"cs2", a.Reason},
	}
	if a.RecordIndex != nil {
		ext = append(ext, [2]string{"cs3Label", "logOrigin"}, [2]string{"cs3", a.LogOrigin},
			[2]string{"cn1Label", "recordIndex"}, [2]string{"cn1", strconv.FormatUint(*a.RecordIndex, 10)})
	}
	ext = append(ext, [2]string{"msg", a.Message})
	for i, kv := range ext {
		if i > 0 {
			b.WriteByte(' ')
		}
		b.WriteString(kv[0] + "=" + cefValue(kv[1]))
	}
	return b.String()
}

// cefHeader escapes a CEF header field: `\` and `|` are escaped with `\`; every control character
// (C0, DEL, C1, line breaks included) and U+2028/U+2029 become a space, and invalid UTF-8 becomes
// U+FFFD, so that no field can break the syslog frame or forge another field.
func cefHeader(s string) string {
	var b strings.Builder
	for _, r := range strings.ToValidUTF8(s, "\uFFFD") {
		switch {
		case r == '\\' || r == '|':
			b.WriteByte('\\')
			b.WriteRune(r)
		case cefControl(r):
			b.WriteByte(' ')
		default:
			b.WriteRune(r)
		}
	}
	return b.String()
}

// cefValue escapes a CEF extension value: `\`, `=` and the line breaks \n and \r are escaped as
// the CEF specification says; every other control character (C0, DEL, C1) and U+2028/U+2029
// become U+FFFD, and invalid UTF-8 becomes U+FFFD.
func cefValue(s string) string {
	var b strings.Builder
	for _, r := range strings.ToValidUTF8(s, "\uFFFD") {
		switch {
		case r == '\\' || r == '=':
			b.WriteByte('\\')
			b.WriteRune(r)
		case r == '\n':
			b.WriteString(`\n`)
		case r == '\r':
			b.WriteString(`\r`)
		case cefControl(r):
			b.WriteRune(utf8.RuneError)
		default:
			b.WriteRune(r)
		}
	}
	return b.String()
}

// cefControl reports whether r must not appear in a CEF message as it is: a control character
// (C0, DEL, C1) or a Unicode line or paragraph separator.
func cefControl(r rune) bool {
	return unicode.IsControl(r) || r == '\u2028' || r == '\u2029'
}

// kindName is the human name of a kind (the CEF Name field).
func kindName(k Kind) string {
	switch k {
	case KindContraindicated:
		return "Attestation verdict contraindicated"
	case KindAttestationMissed:
		return "VM missed its attestation interval"
	case KindLogIntegrity:
		return "Evidence log integrity failure"
	case KindCollateralExpiring:
		return "Vendor collateral about to expire"
	case KindTCBRecovery:
		return "TCB recovery detected"
	case KindPolicyChanged:
		return "Appraisal policy changed"
	case KindSigningKeyRotated:
		return "Record signing key rotated"
	case KindAuthFailures:
		return "Repeated authentication failures"
	}
	return string(k)
}
