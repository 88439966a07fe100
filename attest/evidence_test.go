package attest

import (
	"bytes"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"strings"
	"testing"
)

func TestDecodeEvidence(t *testing.T) {
	nonce := base64.StdEncoding.EncodeToString(make([]byte, 32))
	hdr := `{"version":1,"platform":"tdx","report":"AAEC",`
	d32 := nonce
	pcr0 := `{"bank":"sha256","index":0,"digest":"` + d32 + `"}`
	tpmBody := `"ak_public":"AAEC","quote":"AAEC","signature":"AAEC","pcrs":[` + pcr0 + `]`
	for _, tc := range []struct {
		name string
		in   string
		want error
	}{
		{"valid", `{"version":1,"platform":"tdx","report":"AAEC","nonce":"` + nonce + `"}`, nil},
		{"valid snp with certs", `{"version":1,"platform":"sev-snp","report":"AAEC","certificates":["AQI="]}`, nil},
		{"not json", `hello`, ErrNotJSON},
		{"json array", `[1,2]`, ErrNotJSON},
		{"empty", ``, ErrNotJSON},
		{"version 2", `{"version":2,"platform":"tdx","report":"AAEC"}`, ErrMalformed},
		{"unknown platform", `{"version":1,"platform":"sgx","report":"AAEC"}`, ErrMalformed},
		{"no report", `{"version":1,"platform":"tdx"}`, ErrMalformed},
		{"bad base64", `{"version":1,"platform":"tdx","report":"!!"}`, ErrMalformed},
		{"unpadded base64", `{"version":1,"platform":"tdx","report":"AAE"}`, ErrMalformed},
		{"short nonce", `{"version":1,"platform":"tdx","report":"AAEC","nonce":"AAEC"}`, ErrMalformed},
		{"unknown field", `{"version":1,"platform":"tdx","report":"AAEC","reprot":"AAEC"}`, ErrMalformed},
		{"empty certificate", `{"version":1,"platform":"sev-snp","report":"AAEC","certificates":[""]}`, ErrMalformed},
		{"key in another case", `{"version":1,"platform":"tdx","report":"AAEC","Nonce":"` + nonce + `"}`, ErrMalformed},
		{"duplicate key", `{"version":1,"platform":"tdx","report":"AAEC","runtime_data":"eA==","runtime_data":"eQ=="}`, ErrMalformed},
		{"duplicate key in another case", `{"version":1,"platform":"tdx","report":"AAEC","runtime_data":"eA==","RUNTIME_DATA":"eQ=="}`, ErrMalformed},
		{"tpm not an object", `{"version":1,"platform":"tdx","report":"AAEC","tpm":"x"}`, ErrMalformed},
		{"event_logs null", `{"version":1,"platform":"tdx","report":"AAEC","event_logs":null}`, ErrMalformed},
		{"tpm", hdr + `"tpm":{` + tpmBody + `}}`, nil},
		{"tpm without quote", hdr + `"tpm":{"ak_public":"AAEC","signature":"AAEC","pcrs":[` + pcr0 + `]}}`, ErrMalformed},
		{"tpm unknown key", hdr + `"tpm":{` + tpmBody + `,"extra":1}}`, ErrMalformed},
		{"tpm key in another case", hdr + `"tpm":{"AK_PUBLIC":"AAEC","quote":"AAEC","signature":"AAEC","pcrs":[` + pcr0 + `]}}`, ErrMalformed},
		{"tpm duplicate key", hdr + `"tpm":{` + tpmBody + `,"quote":"AAEC"}}`, ErrMalformed},
		{"tpm no pcrs", hdr + `"tpm":{"ak_public":"AAEC","quote":"AAEC","signature":"AAEC","pcrs":[]}}`, ErrMalformed},
		{"pcr duplicate key", hdr + `"tpm":{"ak_public":"AAEC","quote":"AAEC","signature":"AAEC","pcrs":[{"bank":"sha256","index":0,"index":1,"digest":"` + d32 + `"}]}}`, ErrMalformed},
		{"pcr unknown bank", hdr + `"tpm":{"ak_public":"AAEC","quote":"AAEC","signature":"AAEC","pcrs":[{"bank":"md5","index":0,"digest":"` + d32 + `"}]}}`, ErrMalformed},
		{"pcr wrong size", hdr + `"tpm":{"ak_public":"AAEC","quote":"AAEC","signature":"AAEC","pcrs":[{"bank":"sha1","index":0,"digest":"` + d32 + `"}]}}`, ErrMalformed},
		{"pcr index 24", hdr + `"tpm":{"ak_public":"AAEC","quote":"AAEC","signature":"AAEC","pcrs":[{"bank":"sha256","index":24,"digest":"` + d32 + `"}]}}`, ErrMalformed},
		{"5000 pcrs", hdr + `"tpm":{"ak_public":"AAEC","quote":"AAEC","signature":"AAEC","pcrs":[` + strings.Repeat(pcr0+",", 4999) + pcr0 + `]}}`, ErrMalformed},
		{"event logs", hdr + `"event_logs":{"tcg":"AAEC","ccel":"AAEC"}}`, nil},
		{"event logs empty", hdr + `"event_logs":{}}`, ErrMalformed},
		{"event logs unknown key", hdr + `"event_logs":{"tcg":"AAEC","ima":"AAEC"}}`, ErrMalformed},
		{"event log over the limit", hdr + `"event_logs":{"ccel":"` + base64.StdEncoding.EncodeToString(make([]byte, 10<<20)) + `"}}`, ErrMalformed},
		{"trailing data", `{"version":1,"platform":"tdx","report":"AAEC"} {}`, ErrNotJSON},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := DecodeEvidence([]byte(tc.in))
			if tc.want == nil && err != nil {
				t.Fatalf("unexpected error: %v", err)
			}
			if tc.want != nil && !errors.Is(err, tc.want) {
				t.Fatalf("error = %v, want %v", err, tc.want)
			}
		})
	}
}

func TestEncodeRoundTrip(t *testing.T) {
	ev := &Evidence{Version: 1, Platform: PlatformSNP, Report: []byte{1, 2, 3}, Certificates: [][]byte{{4}}, Nonce: make([]byte, 32), RuntimeData: []byte(`{"k":1}`)}
	b, err := ev.Encode()
	if err != nil {
		t.Fatal(err)
	}
	got, err := DecodeEvidence(b)
	if err != nil {
		t.Fatal(err)
	}
	b2, _ := got.Encode()
	if !bytes.Equal(b, b2) {
		t.Fatalf("round trip changed the envelope:\n%s\n%s", b, b2)
	}
}

// The binding is a public contract: these vectors pin it.
func TestReportDataVectors(t *testing.T) {
	nonce := bytes.Repeat([]byte{0x01}, 32)
	got := ReportData(nonce, []byte(`{"pub":"x"}`))
	// Computed independently: python3 hashlib.sha512(b"proofline/v1" + nonce + sha256(rd)).
	const want = "b379825372d52947a300c31ec62635a2ddc1a5690a03190419c0b1a2f552199a8e10ec7ba4caff02b3e82becdcca907d3aae17438271970885c4823b1e938f48"
	if hex.EncodeToString(got[:]) != want {
		t.Fatalf("ReportData = %x, want %s", got, want)
	}
	tpm := TPMExtraData(nonce, []byte(`{"pub":"x"}`))
	const wantTPM = "d8919f2f2edeb30bec314755b82b6379a24a9a07058921dbeb7ce44805216480"
	if hex.EncodeToString(tpm[:]) != wantTPM {
		t.Fatalf("TPMExtraData = %x, want %s", tpm, wantTPM)
	}
	// Changing any input changes the binding.
	if ReportData(nonce, nil) == got || ReportData(bytes.Repeat([]byte{2}, 32), []byte(`{"pub":"x"}`)) == got {
		t.Fatal("binding does not depend on all inputs")
	}
	// nil and empty runtime data are the same (absent = empty).
	if ReportData(nonce, nil) != ReportData(nonce, []byte{}) {
		t.Fatal("absent and empty runtime data differ")
	}
	if TPMExtraData(nonce, nil) == TPMExtraData(nonce, []byte{1}) {
		t.Fatal("TPM binding does not depend on runtime data")
	}
}

func FuzzDecodeEvidence(f *testing.F) {
	f.Add([]byte(`{"version":1,"platform":"tdx","report":"AAEC"}`))
	f.Add([]byte(`{"version":1,"platform":"sev-snp","report":"AAEC","certificates":["AQI="],"nonce":"` + base64.StdEncoding.EncodeToString(make([]byte, 32)) + `"}`))
	f.Add([]byte(`{"version":1,"platform":"tdx","report":"AAEC","tpm":{"a":[1,2,{}]},"event_logs":{}}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		ev, err := DecodeEvidence(data)
		if err != nil {
			if !errors.Is(err, ErrMalformed) && !errors.Is(err, ErrNotJSON) {
				t.Fatalf("error %v wraps neither ErrMalformed nor ErrNotJSON", err)
			}
			return
		}
		// A decoded envelope re-encodes and decodes to the same canonical form.
		b, err := ev.Encode()
		if err != nil {
			t.Fatalf("valid envelope does not encode: %v", err)
		}
		ev2, err := DecodeEvidence(b)
		if err != nil {
			t.Fatalf("canonical form does not decode: %v", err)
		}
		b2, _ := ev2.Encode()
		if !bytes.Equal(b, b2) {
			t.Fatal("canonical form is not stable")
		}
	})
}
