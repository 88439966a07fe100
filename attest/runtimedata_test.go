package attest

import (
	"bytes"
	"errors"
	"strings"
	"testing"
)

func TestParseRuntimeData(t *testing.T) {
	ak := strings.Repeat("ab", 32)
	for _, tc := range []struct {
		name, in string
		wantAK   string
		wantErr  bool
	}{
		{"agent object", `{"public_key":"AQID","tpm_ak_sha256":"` + ak + `"}`, ak, false},
		{"own keys allowed", `{"pub":"x","tpm_ak_sha256":"` + ak + `","n":[1,{}]}`, ak, false},
		{"no ak", `{"pub":"x"}`, "", false},
		{"not an object", `"x"`, "", true},
		{"not json", `hello`, "", true},
		{"empty", ``, "", true},
		{"duplicate ak", `{"tpm_ak_sha256":"` + ak + `","tpm_ak_sha256":"` + strings.Repeat("cd", 32) + `"}`, "", true},
		{"duplicate other key", `{"a":1,"a":2}`, "", true},
		{"ak in another case", `{"TPM_AK_SHA256":"` + ak + `"}`, "", true},
		{"ak upper-case hex", `{"tpm_ak_sha256":"` + strings.ToUpper(ak) + `"}`, "", true},
		{"ak short", `{"tpm_ak_sha256":"abcd"}`, "", true},
		{"ak not a string", `{"tpm_ak_sha256":1}`, "", true},
		{"public key not base64", `{"public_key":"!!"}`, "", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rd, err := ParseRuntimeData([]byte(tc.in))
			if tc.wantErr {
				if !errors.Is(err, ErrRuntimeData) {
					t.Fatalf("err = %v, want ErrRuntimeData", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if rd.TPMAKDigest != tc.wantAK {
				t.Fatalf("TPMAKDigest = %q, want %q", rd.TPMAKDigest, tc.wantAK)
			}
		})
	}
}

func TestRuntimeDataRoundTrip(t *testing.T) {
	in := &RuntimeData{PublicKey: []byte{1, 2, 3}, TPMAKDigest: strings.Repeat("0f", 32)}
	got, err := ParseRuntimeData(in.Encode())
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got.PublicKey, in.PublicKey) || got.TPMAKDigest != in.TPMAKDigest {
		t.Fatalf("round trip: got %+v, want %+v", got, in)
	}
}
