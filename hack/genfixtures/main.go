// Command genfixtures regenerates the recorded fixtures under testdata/:
//
//	go run ./hack/genfixtures -real   # envelopes around the real reports the libraries ship
//	go run ./hack/genfixtures -fake   # fake-PKI evidence, collateral and roots at a fixed time
//
// Run from the repository root. testdata/README.md says where every file comes from.
package main

import (
	"flag"
	"fmt"
	"os"
)

func main() {
	real := flag.Bool("real", false, "regenerate testdata/real from the libraries' recorded reports")
	fake := flag.Bool("fake", false, "regenerate testdata/fake from the project's fake vendor PKIs")
	out := flag.String("out", "testdata", "output directory")
	flag.Parse()
	if !*real && !*fake {
		fmt.Fprintln(os.Stderr, "genfixtures: give -real, -fake or both")
		os.Exit(2)
	}
	if *real {
		if err := writeReal(*out + "/real"); err != nil {
			fmt.Fprintln(os.Stderr, "genfixtures:", err)
			os.Exit(1)
		}
	}
	if *fake {
		if err := writeFake(*out + "/fake"); err != nil {
			fmt.Fprintln(os.Stderr, "genfixtures:", err)
			os.Exit(1)
		}
	}
}
