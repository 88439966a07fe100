package attest

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"
)

// decodeReference is DecodeEvidence as it was before it read the envelope in one pass: validate
// the JSON, check the keys with a token stream, then decode the whole object. It is slow and
// obviously strict, and it is kept here as the specification the one-pass decoder is held to.
func decodeReference(data []byte) (*Evidence, error) {
	if len(data) > MaxEnvelopeSize {
		return nil, fmt.Errorf("%w: %d bytes exceeds the %d-byte limit", ErrMalformed, len(data), MaxEnvelopeSize)
	}
	trimmed := bytes.TrimSpace(data)
	if !json.Valid(trimmed) || len(trimmed) == 0 || trimmed[0] != '{' {
		return nil, ErrNotJSON
	}
	if err := referenceKeys(trimmed); err != nil {
		return nil, err
	}
	dec := json.NewDecoder(bytes.NewReader(trimmed))
	dec.DisallowUnknownFields()
	var ev Evidence
	if err := dec.Decode(&ev); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	if err := ev.Validate(); err != nil {
		return nil, err
	}
	return &ev, nil
}

var referenceFields = map[string]bool{
	"version": true, "platform": true, "report": true, "certificates": true,
	"nonce": true, "runtime_data": true, "tpm": true, "event_logs": true,
}

func referenceKeys(data []byte) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	if _, err := dec.Token(); err != nil {
		return fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	seen := map[string]bool{}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return fmt.Errorf("%w: %v", ErrMalformed, err)
		}
		key, _ := tok.(string)
		switch {
		case !referenceFields[key]:
			return fmt.Errorf("%w: unknown field %q", ErrMalformed, key)
		case seen[key]:
			return fmt.Errorf("%w: field %q appears twice", ErrMalformed, key)
		}
		seen[key] = true
		var raw json.RawMessage
		if err := dec.Decode(&raw); err != nil {
			return fmt.Errorf("%w: %v", ErrMalformed, err)
		}
		switch key {
		case "tpm":
			if err := checkObject(raw, "tpm", tpmFields); err != nil {
				return err
			}
			if err := checkPCRList(raw); err != nil {
				return err
			}
		case "event_logs":
			if err := checkObject(raw, "event_logs", eventLogFields); err != nil {
				return err
			}
		}
	}
	return nil
}

// sameDecoding fails t unless DecodeEvidence and decodeReference agree on data: both accept it
// with equal envelopes, or both refuse it with the same sentinel (ErrNotJSON or ErrMalformed).
func sameDecoding(t *testing.T, data []byte) {
	t.Helper()
	got, err := DecodeEvidence(data)
	want, wantErr := decodeReference(data)
	switch {
	case (err == nil) != (wantErr == nil):
		t.Fatalf("DecodeEvidence(%.200q) error = %v, the reference decoder's = %v", data, err, wantErr)
	case err != nil && errors.Is(err, ErrNotJSON) != errors.Is(wantErr, ErrNotJSON):
		t.Fatalf("DecodeEvidence(%.200q) error = %v, the reference decoder's = %v", data, err, wantErr)
	case err != nil && !errors.Is(err, ErrNotJSON) && !errors.Is(err, ErrMalformed):
		t.Fatalf("DecodeEvidence(%.200q) error %v wraps neither ErrMalformed nor ErrNotJSON", data, err)
	case err == nil && !reflect.DeepEqual(got, want):
		t.Fatalf("DecodeEvidence(%.200q) = %+v, the reference decoder's = %+v", data, got, want)
	}
}

var referenceSeeds = func() []string {
	n := base64.StdEncoding.EncodeToString(make([]byte, 32))
	hdr := `{"version":1,"platform":"tdx","report":"AAEC",`
	pcr := `{"bank":"sha256","index":0,"digest":"` + n + `"}`
	return []string{
		`{"version":1,"platform":"tdx","report":"AAEC","nonce":"` + n + `"}`,
		` {"version":1,"platform":"sev-snp","report":"AAEC","certificates":["AQI=","AQI="],"runtime_data":"eA=="} `,
		hdr + `"tpm":{"ak_public":"AAEC","quote":"AAEC","signature":"AAEC","pcrs":[` + pcr + `]}}`,
		hdr + `"tpm":{"ak_public":"AAEC","quote":"AAEC","signature":"AAEC","pcrs":[` + pcr + `],"Quote":"AAEC"}}`,
		hdr + `"event_logs":{"tcg":"AAEC"}}`,
		hdr + `"event_logs":{"tcg":"AAEC"}`,
		hdr + `"event_logs":null}`,
		hdr + `"nonce":null}`,
		hdr + `"certificates":null}`,
		hdr + `"certificates":[null]}`,
		hdr + `"version":1}`,
		hdr + `"Version":1}`,
		hdr + `"vers\u0069on":1}`,
		`{"version":1.0,"platform":"tdx","report":"AAEC"}`,
		`{"version":"1","platform":"tdx","report":"AAEC"}`,
		`{"version":1,"platform":"tdx","report":"AAEC"}{}`,
		`{"version":1,"platform":"tdx","report":"AAEC"}]`,
		`{"version":1,"platform":"tdx","report":"AAEC",}`,
		`{"version":1,"platform":"tdx","report":"AAEC"`,
		`{"version":1,"platform":"tdx","report":"AA` + "\xff" + `EC"}`,
		`{"version":1,"platform":"tdx","report":[1,2]}`,
		`{}`, `{`, `[]`, `null`, `"x"`, ``, `{"":1}`,
	}
}()

func TestDecodeMatchesReference(t *testing.T) {
	for _, s := range referenceSeeds {
		sameDecoding(t, []byte(s))
	}
}

func FuzzDecodeMatchesReference(f *testing.F) {
	for _, s := range referenceSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(sameDecoding)
}

func BenchmarkDecodeEvidence(b *testing.B) {
	report := make([]byte, 5<<10) // a TDX quote with its PCK chain is ~5 KiB
	ev := &Evidence{Version: 1, Platform: PlatformTDX, Report: report, Nonce: make([]byte, 32), RuntimeData: []byte(`{"tls_pubkey":"` + strings.Repeat("A", 120) + `"}`)}
	data, err := json.Marshal(ev)
	if err != nil {
		b.Fatal(err)
	}
	for _, d := range []struct {
		name   string
		decode func([]byte) (*Evidence, error)
	}{{"one-pass", DecodeEvidence}, {"reference", decodeReference}} {
		b.Run(d.name, func(b *testing.B) {
			b.SetBytes(int64(len(data)))
			for b.Loop() {
				if _, err := d.decode(data); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
