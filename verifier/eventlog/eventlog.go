package eventlog

import (
	"bytes"
	"crypto"
	_ "crypto/sha1" // the banks' hashes, for crypto.Hash.New
	_ "crypto/sha256"
	_ "crypto/sha512"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/google/go-eventlog/register"
	"github.com/google/go-eventlog/tcg"

	pb "github.com/google/go-eventlog/proto/state"

	"github.com/proofline/proofline/attest"
)

// Sentinel errors; every error ReplayTCG and ReplayCCEL return for a bad log wraps exactly one.
var (
	// ErrMalformed: the log does not parse, exceeds attest.MaxEventLogSize or MaxEvents, or has a
	// structure this package refuses. Maps to ear.CodeEventLogMalformed.
	ErrMalformed = errors.New("event log malformed")
	// ErrReplay: the log parses but does not prove the quoted register values. Maps to
	// ear.CodeEventLogReplay.
	ErrReplay = errors.New("event log does not replay to the quoted registers")
)

// Log kinds and banks.
const (
	KindTCG  = "tcg"
	KindCCEL = "ccel"

	BankSHA1   = "sha1"
	BankSHA256 = "sha256"
	BankSHA384 = "sha384"
)

// Event is one replayed event. Register, Digest and Seq are proven by the replay; Type is not.
type Event struct {
	// Register is "pcr0".."pcr23" (TCG) or "rtmr0".."rtmr3" (CCEL; CC MR index 1..4).
	Register string
	// Digest is the digest that was extended into Register, in the log's bank.
	Digest []byte
	// Type is the record's event type. It is covered by no digest and anyone who can write the
	// log can change it: informational only, never a basis for a decision.
	Type uint32
	// Seq is the record's position in the log, counting the header record as 0. Within one
	// register, order by Seq is extend order.
	Seq int
}

// Log is what a successful replay proves.
type Log struct {
	Kind string // KindTCG or KindCCEL
	Bank string // BankSHA1, BankSHA256 or BankSHA384 (a CCEL is always SHA-384)
	// Events are the extending events of the replayed registers, in log order. Events of other
	// registers and EV_NO_ACTION records are not here: nothing proves them.
	Events []Event
	// KernelCmdlines are the strings labelled as kernel command lines by GRUB in PCR8 (when
	// replayed) or RTMR2, in log order. Each string is proven to have been extended into that
	// register; the label is not (see the package documentation).
	KernelCmdlines []string
}

// Counter counts the work a replay did, for bounded-work tests and metrics.
type Counter struct {
	// Events counts log records the pre-scan started reading (at most MaxEvents+1).
	Events int
	// Hashes is an upper bound on hash computations: for each replay pass go-eventlog may make
	// (one, plus one per PCR5 workaround when PCR5 is replayed), one per record of a replayed
	// register; plus the hashes this package computes to check GRUB strings.
	Hashes int
}

// ReplayTCG replays a TCG PC Client event log (SHA-1 format or crypto-agile) against the PCR
// values of one bank, which the caller has taken from a verified TPM quote. pcrs maps PCR index
// (0–23) to value; only these PCRs are replayed, every one must replay, and only their events
// are returned. bank is BankSHA1, BankSHA256 or BankSHA384 (go-eventlog replays no other bank).
// c may be nil.
//
// Errors: ErrMalformed or ErrReplay for the log; any other error means the arguments broke this
// contract (unknown bank, index outside 0–23, value of the wrong size, no PCR).
func ReplayTCG(raw []byte, bank string, pcrs map[int][]byte, c *Counter) (*Log, error) {
	if c == nil {
		c = new(Counter)
	}
	if len(raw) > attest.MaxEventLogSize {
		return nil, fmt.Errorf("%w: %d bytes, over the %d-byte limit", ErrMalformed, len(raw), attest.MaxEventLogSize)
	}
	hash, algo, ok := tcgBank(bank)
	if !ok {
		return nil, fmt.Errorf("eventlog: bank %q is not one of sha1, sha256, sha384", bank)
	}
	if len(pcrs) == 0 {
		return nil, errors.New("eventlog: no PCR to replay against")
	}
	pcrBank := register.PCRBank{TCGHashAlgo: algo}
	regs := make([]reg, 0, len(pcrs))
	for _, i := range slices.Sorted(maps.Keys(pcrs)) {
		v := pcrs[i]
		if i < 0 || i > 23 {
			return nil, fmt.Errorf("eventlog: PCR index %d is outside 0–23", i)
		}
		if len(v) != hash.Size() {
			return nil, fmt.Errorf("eventlog: PCR%d value is %d bytes, want %d for %s", i, len(v), hash.Size(), bank)
		}
		pcrBank.PCRs = append(pcrBank.PCRs, register.PCR{Index: i, Digest: v, DigestAlg: hash})
		regs = append(regs, reg{idx: i, name: fmt.Sprintf("pcr%d", i), value: v, reset: pcrReset(i, hash.Size())})
	}
	if _, err := pcrBank.CryptoHash(); err != nil {
		return nil, fmt.Errorf("eventlog: %v", err)
	}
	return replay(raw, replayArgs{
		kind: KindTCG, bank: bank, hash: hash, mrs: pcrBank.MRs(), regs: regs,
		grubIdx: 8, workaroundsApply: pcrs[5] != nil,
	}, c)
}

// ReplayCCEL replays a TDX CCEL (the log area, 0xFF padding included) against RTMR0–3, which the
// caller has taken from a verified TD quote (TD report body, 48 bytes each). A nil entry means
// that RTMR is not replayed and its events are not returned (for an RTMR that software extends
// after boot with a log of its own, typically RTMR3); at least one must be given. CC MR index 0
// (MRTD) is never replayed: the TDX module builds MRTD from the TD's initial pages, not from
// extends, so no log can prove it. c may be nil.
//
// Errors: ErrMalformed or ErrReplay for the log; any other error means the arguments broke this
// contract (an RTMR not 48 bytes, or none given).
func ReplayCCEL(raw []byte, rtmrs [4][]byte, c *Counter) (*Log, error) {
	if c == nil {
		c = new(Counter)
	}
	if len(raw) > attest.MaxEventLogSize {
		return nil, fmt.Errorf("%w: %d bytes, over the %d-byte limit", ErrMalformed, len(raw), attest.MaxEventLogSize)
	}
	var bank register.RTMRBank
	var regs []reg
	for i, v := range rtmrs {
		if v == nil {
			continue
		}
		if len(v) != crypto.SHA384.Size() {
			return nil, fmt.Errorf("eventlog: RTMR%d value is %d bytes, want 48", i, len(v))
		}
		bank.RTMRs = append(bank.RTMRs, register.RTMR{Index: i, Digest: v})
		// go-eventlog's RTMR register answers Idx() with the CC MR index, RTMR index + 1.
		regs = append(regs, reg{idx: i + 1, name: fmt.Sprintf("rtmr%d", i), value: v, reset: make([]byte, 48)})
	}
	if len(regs) == 0 {
		return nil, errors.New("eventlog: no RTMR to replay against")
	}
	return replay(raw, replayArgs{
		kind: KindCCEL, bank: BankSHA384, hash: crypto.SHA384, mrs: bank.MRs(), regs: regs,
		ccel: true, grubIdx: 3, // RTMR2
	}, c)
}

// reg is one register to replay; idx is the log's register index (PCR index, or CC MR index).
type reg struct {
	idx   int
	name  string
	value []byte
	reset []byte
}

type replayArgs struct {
	kind, bank string
	hash       crypto.Hash
	mrs        []register.MR
	regs       []reg
	ccel       bool
	// grubIdx is the register index GRUB measures its strings into.
	grubIdx int
	// workaroundsApply is true when go-eventlog may retry PCR5 with injected events.
	workaroundsApply bool
}

// name is the register name of a log register index.
func (a replayArgs) name(idx int) string {
	for _, r := range a.regs {
		if r.idx == idx {
			return r.name
		}
	}
	return fmt.Sprintf("register index %d", idx)
}

// errPanic marks a panic recovered from go-eventlog; the fuzz tests fail on it.
var errPanic = errors.New("go-eventlog panicked")

func replay(raw []byte, a replayArgs, c *Counter) (*Log, error) {
	if len(raw) == 0 {
		// go-eventlog replays an empty log to "no events, no error" against any values.
		return nil, fmt.Errorf("%w: empty log", ErrMalformed)
	}
	lay, err := scan(raw, a.ccel, c)
	if err != nil {
		return nil, err
	}
	passes := 1
	if a.workaroundsApply {
		passes += len(tcg.EventlogWorkarounds)
	}
	for _, r := range a.regs {
		c.Hashes += passes * lay.perRegister[r.idx]
	}

	events, err := parseAndVerify(raw, a)
	if err != nil {
		return nil, err
	}

	byIdx := make(map[int]*reg, len(a.regs))
	for i := range a.regs {
		byIdx[a.regs[i].idx] = &a.regs[i]
	}
	extended := make(map[int]bool, len(a.regs))
	out := &Log{Kind: a.kind, Bank: a.bank, Events: make([]Event, 0, len(events))}
	for _, e := range events {
		r := byIdx[e.Index]
		switch {
		case r == nil:
			// Verify returns only the registers it was given; this guards that contract.
			return nil, fmt.Errorf("%w: go-eventlog returned an event of %s, which was not replayed", ErrReplay, a.name(e.Index))
		case int(e.Num()) >= lay.records:
			return nil, fmt.Errorf("%w: %s replays only with events go-eventlog injects for firmware that does not log ExitBootServices; the log as submitted does not replay", ErrReplay, r.name)
		case len(e.Digest) != a.hash.Size():
			return nil, fmt.Errorf("%w: %s: replayed digest of %d bytes", ErrReplay, r.name, len(e.Digest))
		}
		extended[e.Index] = true
		out.Events = append(out.Events, Event{
			Register: r.name,
			Digest:   bytes.Clone(e.Digest),
			Type:     uint32(e.Type),
			Seq:      int(e.Num()),
		})
		if e.Index == a.grubIdx {
			cmdline, isCmdline, err := grubString(e.Data, e.Digest, a.hash, c)
			if err != nil {
				return nil, fmt.Errorf("%w: %s record %d: %v", ErrReplay, r.name, e.Num(), err)
			}
			if isCmdline {
				out.KernelCmdlines = append(out.KernelCmdlines, cmdline)
			}
		}
	}
	// go-eventlog reports a register with no extending event as replayed whatever its value.
	for _, r := range a.regs {
		if !extended[r.idx] && !bytes.Equal(r.value, r.reset) {
			return nil, fmt.Errorf("%w: %s has no event in the log but is not at its reset value", ErrReplay, r.name)
		}
	}
	if !slices.IsSortedFunc(out.Events, func(x, y Event) int { return x.Seq - y.Seq }) {
		return nil, fmt.Errorf("%w: go-eventlog returned events out of log order", ErrReplay)
	}
	return out, nil
}

// parseAndVerify is tcg.ParseAndReplay split in two, so that a parse failure and a replay
// failure map to different sentinels (ParseAndReplay flattens both with %v). A panic inside
// go-eventlog is returned as ErrMalformed: the scan should make it impossible, and a verifier
// must answer a hostile log with a verdict, not a crash.
func parseAndVerify(raw []byte, a replayArgs) (events []tcg.Event, err error) {
	defer func() {
		if p := recover(); p != nil {
			events, err = nil, fmt.Errorf("%w: %w: %v", ErrMalformed, errPanic, p)
		}
	}()
	el, err := tcg.ParseEventLog(raw, tcg.ParseOpts{AllowPadding: a.ccel})
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	events, err = el.Verify(a.mrs)
	if err != nil {
		var re tcg.ReplayError
		if errors.As(err, &re) {
			var names []string
			for _, idx := range slices.Sorted(slices.Values(re.InvalidMRs)) {
				names = append(names, a.name(idx))
			}
			return nil, fmt.Errorf("%w: %s (%s bank)", ErrReplay, strings.Join(names, ", "), a.bank)
		}
		return nil, fmt.Errorf("%w: %v", ErrReplay, err)
	}
	return events, nil
}

func tcgBank(bank string) (crypto.Hash, pb.HashAlgo, bool) {
	switch bank {
	case BankSHA1:
		return crypto.SHA1, pb.HashAlgo_SHA1, true
	case BankSHA256:
		return crypto.SHA256, pb.HashAlgo_SHA256, true
	case BankSHA384:
		return crypto.SHA384, pb.HashAlgo_SHA384, true
	}
	return 0, 0, false
}

// pcrReset is a PCR's value after TPM2_Startup with nothing extended: all ones for the DRTM
// PCRs 17–22, zero for the others (TCG PC Client Platform TPM Profile, PCR attributes).
func pcrReset(i, size int) []byte {
	b := make([]byte, size)
	if i >= 17 && i <= 22 {
		for j := range b {
			b[j] = 0xFF
		}
	}
	return b
}
