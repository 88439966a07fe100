package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
)

// runDetect prints the guest interfaces found, one per line, and exits 1 with the reason when
// there is no TDX or SEV-SNP interface.
func runDetect(ctx context.Context, args []string, stdout, stderr io.Writer, e *env) int {
	flags := flag.NewFlagSet("proofline-agent detect", flag.ContinueOnError)
	flags.SetOutput(stderr)
	if err := flags.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return exitOK
		}
		return exitUsage
	}
	if flags.NArg() > 0 {
		fmt.Fprintf(stderr, "proofline-agent detect: unexpected argument %q\n", flags.Arg(0))
		return exitUsage
	}
	found, err := e.prober.Detect(ctx)
	if found != nil {
		fmt.Fprint(stdout, found)
	}
	if err != nil {
		fmt.Fprintf(stderr, "proofline-agent detect: %v\n", err)
		return exitFailed
	}
	return exitOK
}
