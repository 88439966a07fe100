package eventlog

import (
	"bytes"
	"errors"
	"testing"

	"github.com/google/go-eventlog/register"
)

// checkResult holds for every input: no panic (go-eventlog's included), exactly one sentinel
// on failure, bounded work, and on success only events of replayed registers.
func checkResult(t *testing.T, log *Log, err error, c Counter, replayed map[string]bool) {
	t.Helper()
	if c.Events > MaxEvents+1 {
		t.Fatalf("Counter.Events = %d", c.Events)
	}
	if err != nil {
		if errors.Is(err, errPanic) {
			t.Fatalf("go-eventlog panicked: %v", err)
		}
		if log != nil || errors.Is(err, ErrMalformed) == errors.Is(err, ErrReplay) {
			t.Fatalf("log %v, err %v", log, err)
		}
		return
	}
	for _, e := range log.Events {
		if !replayed[e.Register] {
			t.Fatalf("event of unreplayed register %q", e.Register)
		}
	}
}

// FuzzReplayTCG replays mutated logs against fixed PCR values and, when self is set, against
// the values the mutated log itself folds to, so that the success path is fuzzed too.
func FuzzReplayTCG(f *testing.F) {
	ubuntu := readTestdata(f, "ubuntu-2404-amd-sevsnp.bin")
	arch := readTestdata(f, "arch-linux-workstation.bin")
	fixed := allPCRs(f, ubuntu, register.HashSHA256)
	f.Add(ubuntu, true, uint8(1))
	f.Add(ubuntu, false, uint8(1))
	f.Add(arch, true, uint8(0))
	f.Add(sha1Log(3, 8, [20]byte{7}), true, uint8(0))
	f.Fuzz(func(t *testing.T, raw []byte, self bool, bankSel uint8) {
		banks := []struct {
			name string
			alg  register.HashAlg
		}{{BankSHA1, register.HashSHA1}, {BankSHA256, register.HashSHA256}, {BankSHA384, register.HashSHA384}}
		b := banks[int(bankSel)%len(banks)]
		pcrs := map[int][]byte{}
		if self {
			vals, ok := selfReplay(raw, b.alg, false)
			if !ok || len(vals) == 0 {
				return
			}
			pcrs = vals
		} else {
			for i, v := range fixed {
				if len(v) == b.alg.CryptoHash().Size() {
					pcrs[i] = v
				} else {
					pcrs[i] = pcrReset(i, b.alg.CryptoHash().Size())
				}
			}
		}
		replayed := map[string]bool{}
		for i := range pcrs {
			replayed[registerName("pcr", i)] = true
		}
		var c Counter
		log, err := ReplayTCG(raw, b.name, pcrs, &c)
		checkResult(t, log, err, c, replayed)
	})
}

// FuzzReplayCCEL does the same for CCELs against RTMR values.
func FuzzReplayCCEL(f *testing.F) {
	ccel := readTestdata(f, "ccel_data.dat")
	rtmrs := quoteRTMRs(f)
	end := len(bytes.TrimRight(ccel, "\xff"))
	f.Add(ccel[:end], true)
	f.Add(ccel[:end+64], false)
	f.Add(ccel, false)
	f.Fuzz(func(t *testing.T, raw []byte, self bool) {
		r := rtmrs
		if self {
			vals, ok := selfReplay(raw, register.HashSHA384, true)
			if !ok {
				return
			}
			r = [4][]byte{}
			for i := range 4 {
				r[i] = vals[i+1]
				if r[i] == nil {
					r[i] = make([]byte, 48)
				}
			}
		}
		replayed := map[string]bool{"rtmr0": true, "rtmr1": true, "rtmr2": true, "rtmr3": true}
		var c Counter
		log, err := ReplayCCEL(raw, r, &c)
		checkResult(t, log, err, c, replayed)
	})
}
