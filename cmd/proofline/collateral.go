package main

import (
	"context"
	"fmt"
	"io"
)

const collateralUsage = `Usage: proofline collateral <command> [flags]

Commands:
  export    write a signed bundle of every vendor collateral document the verifier holds
  import    load a collateral bundle into a data dir (signature and freshness checked; no network)
  impact    show which recent verdicts a new TCB evaluation (TCB recovery) changes

Run 'proofline collateral <command> -h' for the flags of a command.
`

func runCollateral(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, collateralUsage)
		return exitUsage
	}
	switch args[0] {
	case "export":
		return runCollateralExport(ctx, args[1:], stdout, stderr)
	case "import":
		return runCollateralImport(ctx, args[1:], stdout, stderr)
	case "impact":
		return runCollateralImpact(ctx, args[1:], stdout, stderr)
	case "help", "-h", "--help":
		fmt.Fprint(stdout, collateralUsage)
		return exitOK
	}
	fmt.Fprintf(stderr, "proofline collateral: unknown command %q\n%s", args[0], collateralUsage)
	return exitUsage
}
