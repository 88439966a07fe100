// Package buildinfo reports the version of the running Proofline binary, as recorded in results
// and evidence records.
package buildinfo

import "runtime/debug"

// version is set at link time with -ldflags "-X github.com/proofline/proofline/internal/buildinfo.version=v1.2.3".
var version = ""

// Version returns the release version, or the module version Go recorded, or "devel".
func Version() string {
	if version != "" {
		return version
	}
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		return bi.Main.Version
	}
	return "devel"
}
