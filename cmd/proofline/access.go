package main

import (
	"context"
	"fmt"
	"io"
)

// Placeholder while the access commands are being written; replaced by their implementation.
func runAccess(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fmt.Fprintln(stderr, "proofline access: not available in this build")
	return exitUsage
}
