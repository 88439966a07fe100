package api

import (
	"bytes"
	"encoding/json"
	"testing"

	"github.com/proofline/proofline/verifier/ear"
)

// The answer to POST /v1/attest is written by hand (attestationResponse.encode); it must be
// byte for byte what encoding/json writes, for any strings and with or without tokens.
func TestAttestationResponseEncoding(t *testing.T) {
	result, err := json.Marshal(map[string]any{"status": "contraindicated", "failures": []string{"<script>&", "é\u2028\x01"}})
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range []attestationResponse{
		{ID: "0", LogIndex: 0, RecordSHA256: "00ff", Status: ear.StatusAffirming, Result: []byte(`{"status":"affirming"}`)},
		{ID: "18446744073709551615", LogIndex: 1<<64 - 1, RecordSHA256: "ab", Status: ear.StatusContraindicated, Result: result,
			Token: "eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJ2bSJ9.c2ln-_", CWT: []byte{0xd2, 0x84, 0x43, 0xa1, 0x01, 0x26, 0xff}},
		{ID: "7", LogIndex: 7, Status: "a \"quoted\" <status> & \\ \x7f é\u2029\n", Result: nil, Token: "<&>", CWT: []byte{}},
		{ID: "", Result: result, CWT: []byte{1}},
	} {
		want, err := json.Marshal(r)
		if err != nil {
			t.Fatal(err)
		}
		if got := r.encode(); !bytes.Equal(got, want) {
			t.Errorf("encode:\n got %s\nwant %s", got, want)
		}
	}
}

func BenchmarkAttestationResponse(b *testing.B) {
	result := bytes.Repeat([]byte(`{"a":"0123456789abcdef0123456789abcdef"},`), 60)
	result = append(append([]byte(`[`), result[:len(result)-1]...), ']')
	r := attestationResponse{ID: "123456", LogIndex: 123456, RecordSHA256: "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff",
		Status: ear.StatusAffirming, Result: result, Token: string(bytes.Repeat([]byte("eyJhbGciOiJFUzI1NiJ9"), 60))}
	b.Run("encode", func(b *testing.B) {
		for b.Loop() {
			r.encode()
		}
	})
	b.Run("json.Marshal", func(b *testing.B) {
		for b.Loop() {
			if _, err := json.Marshal(r); err != nil {
				b.Fatal(err)
			}
		}
	})
}
