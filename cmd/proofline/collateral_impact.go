package main

import (
	"context"
	"fmt"
	"io"
)

// Placeholder while the impact command is being written; replaced by its implementation.
func runCollateralImpact(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fmt.Fprintln(stderr, "proofline collateral impact: not available in this build")
	return exitUsage
}
