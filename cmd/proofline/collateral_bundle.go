package main

import (
	"context"
	"fmt"
	"io"
)

// Placeholder while the bundle commands are being written; replaced by their implementation.
func runCollateralExport(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fmt.Fprintln(stderr, "proofline collateral export: not available in this build")
	return exitUsage
}

func runCollateralImport(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fmt.Fprintln(stderr, "proofline collateral import: not available in this build")
	return exitUsage
}
