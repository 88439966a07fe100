// Package buildinfo reports the version of the running Proofline binary, as recorded in results
// and evidence records.
package buildinfo

import (
	"runtime/debug"
	"sync"
)

// version is set at link time with -ldflags "-X github.com/proofline/proofline/internal/buildinfo.version=v1.2.3".
var version = ""

// Version returns the release version, or the module version Go recorded, or "devel". It is
// worked out once: every verdict names it, and reading the build information parses it anew.
func Version() string { return versionOnce() }

var versionOnce = sync.OnceValue(func() string {
	if version != "" {
		return version
	}
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		return bi.Main.Version
	}
	return "devel"
})
