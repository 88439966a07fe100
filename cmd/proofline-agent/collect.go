package main

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"github.com/proofline/proofline/attest"
	"github.com/proofline/proofline/internal/agent"
	"github.com/proofline/proofline/internal/durable"
)

// tee values of --tee other than replay:DIR.
const (
	teeAuto   = "auto"
	teeTDX    = "tdx"
	teeSNP    = "sev-snp"
	teeSimTDX = "sim-tdx"
	teeSimSNP = "sim-snp"
	replayPfx = "replay:"
)

// collectFlags are collect's parsed flags.
type collectFlags struct {
	nonce           []byte
	out             string
	runtimeDataPath string
	keyPath         string
	tee             string
	testMode        bool
	eventLogs       bool
	// tpm is the vTPM mode (agent.TPMAuto, TPMOn, TPMOff) and tpmPCRs the quoted sha256 PCRs.
	tpm     string
	tpmPCRs []int
	// akDigest names the vTPM attestation key in runtime_data once collect has opened the vTPM.
	akDigest string
}

// errUsage marks an error caused by the flags (exit 2); every other error exits 1.
var errUsage = errors.New("usage")

type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }
func (e *usageError) Unwrap() error { return errUsage }

func usagef(format string, a ...any) error { return &usageError{msg: fmt.Sprintf(format, a...)} }

func runCollect(ctx context.Context, args []string, stderr io.Writer, e *env) int {
	flags := flag.NewFlagSet("proofline-agent collect", flag.ContinueOnError)
	flags.SetOutput(stderr)
	nonceB64 := flags.String("nonce", "", "the verifier's nonce, 32 bytes in standard base64; required")
	out := flags.String("out", "", "file to write the evidence envelope (JSON) to, replaced atomically, mode 0644; required")
	runtimeData := flags.String("runtime-data", "", "file whose exact bytes become runtime_data; default: the agent's JSON object with a new public key")
	key := flags.String("key", "", "the agent's private key (PKCS#8 PEM, ECDSA P-256): reused if the file exists, else created with mode 0600; default: a key that lives only for this command")
	tee := flags.String("tee", teeAuto, "where the report comes from: auto (detect), tdx, sev-snp, sim-tdx or sim-snp (fake vendor keys; needs --test-mode), or replay:DIR (re-emit DIR/evidence.json)")
	testMode := flags.Bool("test-mode", false, "allow --tee sim-tdx and sim-snp, which sign with the project's fake vendor keys; never use it on a real VM")
	eventLogs := flags.Bool("event-logs", true, "include the TDX CCEL event log when the firmware publishes one, and with a vTPM the TCG event log")
	tpmMode := flags.String("tpm", agent.TPMAuto, "add a vTPM quote: auto (when /dev/tpmrm0 or /dev/tpm0 exists), on (required) or off")
	tpmPCRs := flags.String("tpm-pcrs", "0,1,2,3,4,5,6,7,8,9", "the sha256 PCRs to quote; must equal the verifier policy's tpm.pcrs")
	verbose := flags.Bool("verbose", false, "log debug details")
	flags.Usage = func() {
		fmt.Fprintln(stderr, "Usage: proofline-agent collect --nonce B64 --out FILE [--runtime-data FILE | --key FILE] [--tee auto|tdx|sev-snp|sim-tdx|sim-snp|replay:DIR] [--test-mode]")
		flags.PrintDefaults()
	}
	if err := flags.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return exitOK
		}
		return exitUsage
	}
	level := slog.LevelInfo
	if *verbose {
		level = slog.LevelDebug
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))
	f, err := checkCollectFlags(flags, *nonceB64, *out, *runtimeData, *key, *tee, *testMode)
	if err == nil {
		f.eventLogs, f.tpm = *eventLogs, *tpmMode
		if f.tpm == agent.TPMOn && (*tee == teeSimTDX || *tee == teeSimSNP) {
			err = usagef("--tpm on requires a vTPM, but the simulated platforms (--tee %s) have none: use --tpm auto or off", *tee)
		} else if f.tpmPCRs, err = parsePCRList(*tpmPCRs); err == nil {
			err = collect(ctx, f, stderr, log, e)
		}
	}
	if err != nil {
		fmt.Fprintf(stderr, "proofline-agent collect: %v\n", err)
		if errors.Is(err, errUsage) {
			return exitUsage
		}
		return exitFailed
	}
	return exitOK
}

func checkCollectFlags(flags *flag.FlagSet, nonceB64, out, runtimeData, key, tee string, testMode bool) (*collectFlags, error) {
	if flags.NArg() > 0 {
		return nil, usagef("unexpected argument %q", flags.Arg(0))
	}
	if nonceB64 == "" || out == "" {
		return nil, usagef("--nonce B64 and --out FILE are required")
	}
	nonce, err := base64.StdEncoding.DecodeString(nonceB64)
	if err != nil || len(nonce) != attest.NonceSize {
		return nil, usagef("--nonce must be the verifier's %d-byte nonce in standard base64 with padding (as GET /v1/challenge returns it)", attest.NonceSize)
	}
	if runtimeData != "" && key != "" {
		return nil, usagef("give --runtime-data or --key, not both: --key puts the key's public key in runtime_data")
	}
	switch {
	case tee == teeAuto || tee == teeTDX || tee == teeSNP:
	case tee == teeSimTDX || tee == teeSimSNP:
		if !testMode {
			return nil, usagef("--tee %s signs with the project's fake vendor keys and proves nothing about this machine; add --test-mode to use it (tests and demos only)", tee)
		}
	case strings.HasPrefix(tee, replayPfx):
		if strings.TrimPrefix(tee, replayPfx) == "" {
			return nil, usagef("--tee replay:DIR needs the directory that holds evidence.json")
		}
		if runtimeData != "" || key != "" {
			return nil, usagef("--tee %s re-emits the recorded runtime_data (the report binds it); drop --runtime-data and --key", tee)
		}
	default:
		return nil, usagef("--tee %q is not one of auto, tdx, sev-snp, sim-tdx, sim-snp, replay:DIR", tee)
	}
	return &collectFlags{nonce: nonce, out: out, runtimeDataPath: runtimeData, keyPath: key, tee: tee, testMode: testMode}, nil
}

// collect builds the envelope and writes it to f.out. The platform is settled before the
// runtime data so that a machine without a TEE gets no --key file.
func collect(ctx context.Context, f *collectFlags, stderr io.Writer, log *slog.Logger, e *env) error {
	if dir, ok := strings.CutPrefix(f.tee, replayPfx); ok {
		return replay(f, dir, stderr, log)
	}
	var platform attest.Platform
	switch f.tee {
	case teeAuto:
		found, err := e.prober.Detect(ctx)
		if err != nil {
			return err
		}
		log.Info("detected", "platform", found.Platform, "configfs_tsm_provider", found.TSMProvider, "vtpm", found.TPMDevice)
		platform = found.Platform
	case teeTDX:
		platform = attest.PlatformTDX
	case teeSNP:
		platform = attest.PlatformSNP
	}
	var vt *agent.VTPM
	if f.tee != teeSimTDX && f.tee != teeSimSNP {
		var err error
		if vt, err = agent.OpenVTPM(f.tpm, "sha256", f.tpmPCRs, e.openTPM); err != nil {
			return fmt.Errorf("--tpm %s: %w", f.tpm, err)
		}
		if vt != nil {
			defer vt.Close()
			f.akDigest = vt.AKDigest()
			log.Info("vTPM quote included", "pcrs", vt.PCRs, "ak_sha256", f.akDigest)
		}
	}
	rt, err := runtimeData(f, log)
	if err != nil {
		return err
	}
	if f.tee == teeSimTDX || f.tee == teeSimSNP {
		return simulate(ctx, f, rt, stderr, log, e)
	}
	hw := &agent.Hardware{Platform: platform, TDX: e.tdx, SNP: e.snp, EventLogs: f.eventLogs, Logger: log, VTPM: vt}
	ev, err := hw.Collect(ctx, f.nonce, rt)
	if err != nil {
		return err
	}
	return writeEvidence(f.out, ev, log)
}

// runtimeData returns the exact runtime_data bytes: the --runtime-data file, or the agent's
// RuntimeData object with the public key of --key or of a key made for this command only.
func runtimeData(f *collectFlags, log *slog.Logger) ([]byte, error) {
	if f.runtimeDataPath != "" {
		b, err := readLimited(f.runtimeDataPath, attest.MaxRuntimeDataSize)
		if err != nil {
			return nil, fmt.Errorf("--runtime-data: %w", err)
		}
		return b, nil
	}
	var k *ecdsa.PrivateKey
	var err error
	if f.keyPath != "" {
		if k, err = agent.LoadOrCreateKey(f.keyPath, log); err != nil {
			err = fmt.Errorf("--key: %w", err)
		}
	} else {
		k, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	}
	if err != nil {
		return nil, err
	}
	pub, err := x509.MarshalPKIXPublicKey(&k.PublicKey)
	if err != nil {
		return nil, err
	}
	sum := sha256.Sum256(pub)
	log.Debug("agent key", "public_key_sha256", hex.EncodeToString(sum[:]), "kept", f.keyPath != "")
	return (&attest.RuntimeData{PublicKey: pub, TPMAKDigest: f.akDigest}).Encode(), nil
}

// writeEvidence encodes ev and replaces out with it durably (mode 0644): a crash leaves the old
// file or the new one, never a torn envelope.
func writeEvidence(out string, ev *attest.Evidence, log *slog.Logger) error {
	data, err := ev.Encode()
	if err != nil {
		return fmt.Errorf("the collected evidence does not fit the envelope: %w", err)
	}
	data = append(data, '\n')
	if err := durable.Replace(out, data, 0o644); err != nil {
		return fmt.Errorf("writing the evidence: %w", err)
	}
	sum := sha256.Sum256(data)
	log.Info("wrote the evidence", "path", out, "platform", ev.Platform, "bytes", len(data), "sha256", hex.EncodeToString(sum[:]))
	return nil
}

// replay re-emits DIR/evidence.json (the layout of `proofline-agent record`). A recorded report
// binds the nonce it was recorded for, so only that nonce is accepted.
func replay(f *collectFlags, dir string, stderr io.Writer, log *slog.Logger) error {
	path := filepath.Join(dir, "evidence.json")
	data, err := readLimited(path, attest.MaxEnvelopeSize)
	if err != nil {
		return fmt.Errorf("replay: %w", err)
	}
	ev, err := attest.DecodeEvidence(data)
	if err != nil {
		return fmt.Errorf("replay: %s: %w", path, err)
	}
	if ev.Nonce == nil {
		return fmt.Errorf("replay: %s carries no nonce, so it cannot answer the nonce %s: a recorded report cannot be bound to a new nonce; collect on the VM instead", path, base64.StdEncoding.EncodeToString(f.nonce))
	}
	if !bytes.Equal(ev.Nonce, f.nonce) {
		return fmt.Errorf("replay: %s was recorded for the nonce %s, not %s: a recorded report cannot be bound to a new nonce (the hardware signed its REPORT_DATA); pass --nonce %s to re-emit it, or collect on the VM for a fresh nonce",
			path, base64.StdEncoding.EncodeToString(ev.Nonce), base64.StdEncoding.EncodeToString(f.nonce), base64.StdEncoding.EncodeToString(ev.Nonce))
	}
	if err := writeEvidence(f.out, ev, log); err != nil {
		return err
	}
	cmd := []string{"proofline", "verify", "--evidence", f.out, "--nonce", base64.StdEncoding.EncodeToString(f.nonce)}
	for _, o := range []struct{ flag, name string }{{"--policy", "policy.yaml"}, {"--roots", "roots"}, {"--collateral", "collateral"}} {
		if _, err := os.Stat(filepath.Join(dir, o.name)); err == nil {
			cmd = append(cmd, o.flag, filepath.Join(dir, o.name))
		}
	}
	fmt.Fprintf(stderr, "proofline-agent: replayed %s; it is only as fresh as its recorded nonce. Verify it with (add --at if its collateral has expired since):\n%s\n", path, shellJoin(cmd))
	return nil
}

func readLimited(path string, limit int64) ([]byte, error) { return durable.ReadLimited(path, limit) }

var shellSafe = regexp.MustCompile(`^[A-Za-z0-9_./:=@%+,-]+$`)

// shellJoin joins args into a line a POSIX shell reads back as args.
func shellJoin(args []string) string {
	q := make([]string, len(args))
	for i, a := range args {
		if shellSafe.MatchString(a) {
			q[i] = a
		} else {
			q[i] = "'" + strings.ReplaceAll(a, "'", `'\''`) + "'"
		}
	}
	return strings.Join(q, " ")
}

// parsePCRList parses "0,1,2" into sorted, distinct PCR indices.
func parsePCRList(s string) ([]int, error) {
	var out []int
	seen := map[int]bool{}
	for _, part := range strings.Split(s, ",") {
		i, err := strconv.Atoi(strings.TrimSpace(part))
		if err != nil || i < 0 || i > 23 || seen[i] {
			return nil, usagef("--tpm-pcrs %q: want distinct PCR indices 0–23 separated by commas", s)
		}
		seen[i] = true
		out = append(out, i)
	}
	slices.Sort(out)
	return out, nil
}
