// Command proofline-agent is the Proofline guest agent: it runs inside a confidential VM, proves
// it to the verifier on an interval and serves the result to the VM's workloads.
//
//	proofline-agent run --config FILE [--tee auto|tdx|sev-snp|sim-tdx|sim-snp]
//	                    [--test-mode --sim-platforms FILE] [--verbose]
//	proofline-agent collect --nonce B64 --out FILE [--runtime-data FILE | --key FILE]
//	                        [--tee auto|tdx|sev-snp|sim-tdx|sim-snp|replay:DIR] [--test-mode]
//	proofline-agent record --out DIR [--nonce B64] [--tee auto|tdx|sev-snp|sim-tdx|sim-snp]
//	                       [--pcs URL] [--intel-certs URL] [--kds URL] [--ca-file FILE]
//	proofline-agent detect
//
// run is the daemon (internal/agent): challenge, collect with REPORT_DATA bound to the nonce and
// the agent's public key, POST /v1/attest, keep the result token, again on an interval with
// backoff on errors; and the local API on a unix socket. collect writes one evidence envelope
// (attest.Evidence, JSON) whose hardware report binds the verifier's nonce:
// REPORT_DATA = attest.ReportData(nonce, runtime_data). record writes such an envelope plus the
// vendor collateral the verifier fetched to appraise it (a replay fixture). detect prints which
// guest interfaces this machine has. README.md describes them all, the configuration file and
// the deployment.
//
// Exit codes: 0 success (run: stopped by SIGTERM or SIGINT), 1 failed (no TEE, a device error, a
// replay for another nonce; record: incomplete collateral; run: could not start), 2 bad flags or
// configuration; the reason is on stderr.
package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/google/go-tpm/tpm2/transport"

	"github.com/proofline/proofline/attest/detect"
	"github.com/proofline/proofline/attest/snp"
	"github.com/proofline/proofline/attest/tdx"
	"github.com/proofline/proofline/internal/agent"
	"github.com/proofline/proofline/internal/buildinfo"
)

// Exit codes.
const (
	exitOK     = 0
	exitFailed = 1
	exitUsage  = 2
)

// env is what the agent touches outside its flags: the guest interfaces, the TPM and the clock.
// main uses the kernel's; tests substitute fakes.
type env struct {
	prober detect.Prober
	tdx    tdx.Collector
	snp    snp.Collector
	// openTPM opens the vTPM; nil means attest/tpm.Open (/dev/tpmrm0, else /dev/tpm0).
	openTPM func() (transport.TPMCloser, error)
	now     func() time.Time
	// clock paces `run`; nil means the system clock.
	clock agent.Clock
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr, &env{now: time.Now})
	stop()
	os.Exit(code)
}

const usage = `Usage: proofline-agent <command> [flags]

Commands:
  run       the daemon: attest to the verifier on an interval, keep the result token, serve the local API
  collect   collect evidence bound to a verifier nonce and write the envelope to a file
  record    collect evidence and the vendor collateral the verifier needs for it, into a directory
  detect    print the confidential-computing guest interfaces this machine has
  version   print the version

Run 'proofline-agent <command> -h' for the flags of a command.
`

func run(ctx context.Context, args []string, stdout, stderr io.Writer, e *env) (code int) {
	defer func() {
		// Every input is handled as an error message; reaching this is a bug.
		if r := recover(); r != nil {
			fmt.Fprintf(stderr, "proofline-agent: internal error: %v (please report this)\n", r)
			code = exitFailed
		}
	}()
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return exitUsage
	}
	switch args[0] {
	case "collect":
		return runCollect(ctx, args[1:], stderr, e)
	case "record":
		return runRecord(ctx, args[1:], stderr, e)
	case "run":
		return runRun(ctx, args[1:], stderr, e)
	case "detect":
		return runDetect(ctx, args[1:], stdout, stderr, e)
	case "version":
		fmt.Fprintln(stdout, "proofline-agent", buildinfo.Version())
		return exitOK
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return exitOK
	}
	fmt.Fprintf(stderr, "proofline-agent: unknown command %q\n%s", args[0], usage)
	return exitUsage
}
