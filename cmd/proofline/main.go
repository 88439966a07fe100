// Command proofline is the operator and auditor CLI of Proofline.
//
//	proofline verify --evidence FILE [--policy FILE] [--collateral DIR] [--at RFC3339]
//	                 [--nonce B64] [--report-data HEX] [--roots DIR]
//
// verify appraises one evidence envelope offline and prints one JSON result on stdout. It exits
// 0 for affirming or warning, 1 for contraindicated, and 2 when it could not appraise at all
// (unreadable file, an envelope that is not JSON, bad flags), with a one-line error on stderr.
package main

import (
	"context"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/proofline/proofline/attest"
	"github.com/proofline/proofline/internal/buildinfo"
	"github.com/proofline/proofline/internal/durable"
	"github.com/proofline/proofline/verifier"
	"github.com/proofline/proofline/verifier/collateral"
	"github.com/proofline/proofline/verifier/ear"
	"github.com/proofline/proofline/verifier/policy"
	"github.com/proofline/proofline/verifier/roots"
)

// Exit codes of proofline verify.
const (
	exitOK              = 0
	exitContraindicated = 1
	exitUsage           = 2
)

func main() {
	os.Exit(run(context.Background(), os.Args[1:], os.Stdout, os.Stderr))
}

const usage = `Usage: proofline <command> [flags]

Commands:
  demo      run a verifier and simulated TDX and SEV-SNP VMs on this machine, and explain what happens
  serve     run the verifier service (HTTP API, evidence log)
  verify    appraise one evidence envelope offline and print the result as JSON
  log       check the evidence log (fsck) or rebuild its query index (reindex)
  audit     export an audit bundle of the evidence log, verify one offline, or write its report
  collateral export or import vendor collateral (air-gapped verifiers), or show a TCB recovery's impact
  access    list, create and revoke API tokens; export an access review
  version   print the version

Run 'proofline <command> -h' for the flags of a command.
`

func run(ctx context.Context, args []string, stdout, stderr io.Writer) (code int) {
	defer func() {
		// Every input is handled as a verdict or a usage error; reaching this is a bug.
		if r := recover(); r != nil {
			fmt.Fprintf(stderr, "proofline: internal error: %v (please report this)\n", r)
			code = exitUsage
		}
	}()
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return exitUsage
	}
	switch args[0] {
	case "verify":
		return runVerify(ctx, args[1:], stdout, stderr)
	case "serve":
		return runServe(ctx, args[1:], stdout, stderr)
	case "demo":
		return runDemo(ctx, args[1:], stdout, stderr)
	case "log":
		return runLog(ctx, args[1:], stdout, stderr)
	case "audit":
		return runAudit(ctx, args[1:], stdout, stderr)
	case "collateral":
		return runCollateral(ctx, args[1:], stdout, stderr)
	case "access":
		return runAccess(ctx, args[1:], stdout, stderr)
	case "version":
		fmt.Fprintln(stdout, "proofline", buildinfo.Version())
		return exitOK
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return exitOK
	}
	fmt.Fprintf(stderr, "proofline: unknown command %q\n%s", args[0], usage)
	return exitUsage
}

func runVerify(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("proofline verify", flag.ContinueOnError)
	fs.SetOutput(stderr)
	evidencePath := fs.String("evidence", "", "evidence envelope (JSON) to appraise; required")
	policyPath := fs.String("policy", "", "appraisal policy (YAML); default: the built-in default policy")
	collateralDir := fs.String("collateral", "", "directory of recorded vendor collateral (*.json); the network is never used")
	at := fs.String("at", "", "verification time (RFC 3339) for every certificate, CRL and collateral check; default: now")
	nonceB64 := fs.String("nonce", "", "verifier nonce (standard base64), overriding the envelope's")
	reportDataHex := fs.String("report-data", "", "expected raw REPORT_DATA (128 hex digits), compared instead of the nonce binding")
	rootsDir := fs.String("roots", "", "directory of *.pem trust anchors replacing the built-in vendor roots (marks the result test_roots)")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "Usage: proofline verify --evidence FILE [--policy FILE] [--collateral DIR] [--at RFC3339] [--nonce B64] [--report-data HEX] [--roots DIR]")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return exitOK
		}
		return exitUsage
	}
	fail := func(format string, a ...any) int {
		fmt.Fprintf(stderr, "proofline verify: "+format+"\n", a...)
		return exitUsage
	}
	if fs.NArg() > 0 {
		return fail("unexpected argument %q", fs.Arg(0))
	}
	if *evidencePath == "" {
		return fail("--evidence FILE is required")
	}
	if *nonceB64 != "" && *reportDataHex != "" {
		return fail("give --nonce or --report-data, not both")
	}
	opts := verifier.Options{Now: time.Now()}
	if *at != "" {
		t, err := time.Parse(time.RFC3339, *at)
		if err != nil {
			return fail("--at %q is not an RFC 3339 time such as 2026-01-02T15:04:05Z", *at)
		}
		opts.Now = t
	}
	if *nonceB64 != "" {
		n, err := base64.StdEncoding.DecodeString(*nonceB64)
		if err != nil || len(n) != attest.NonceSize {
			return fail("--nonce must be %d bytes in standard base64 with padding", attest.NonceSize)
		}
		opts.Nonce = n
	}
	if *reportDataHex != "" {
		rd, err := hex.DecodeString(*reportDataHex)
		if err != nil || len(rd) != 64 {
			return fail("--report-data must be 64 bytes as 128 hex digits")
		}
		opts.ReportData = rd
	}
	var err error
	if *policyPath != "" {
		if opts.Policy, err = policy.Load(*policyPath); err != nil {
			return fail("%v", err)
		}
	} else {
		opts.Policy = policy.Default()
	}
	if *rootsDir != "" {
		opts.Roots, err = roots.ReadDir(*rootsDir)
	} else {
		opts.Roots, err = roots.Builtin()
	}
	if err != nil {
		return fail("roots: %v", err)
	}
	if *collateralDir != "" {
		set, err := collateral.ReadDir(*collateralDir)
		if err != nil {
			return fail("%v", err)
		}
		opts.Collateral = set
	}
	data, err := readLimited(*evidencePath, attest.MaxEnvelopeSize)
	if err != nil {
		return fail("%v", err)
	}
	ev, err := attest.DecodeEvidence(data)
	var res *ear.Result
	switch {
	case errors.Is(err, attest.ErrNotJSON):
		return fail("%s: %v", *evidencePath, err)
	case err != nil:
		res = verifier.MalformedEvidence(err, opts)
	default:
		res = verifier.Verify(ctx, ev, opts)
	}
	out, err := res.MarshalIndent()
	if err != nil {
		return fail("encoding the result: %v", err)
	}
	fmt.Fprintf(stdout, "%s\n", out)
	if res.Status == ear.StatusContraindicated {
		return exitContraindicated
	}
	return exitOK
}

func readLimited(path string, limit int64) ([]byte, error) { return durable.ReadLimited(path, limit) }
