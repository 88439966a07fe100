// Command auditbench generates an evidence log through the real verifier service in simulated
// mode (evidence/audit/audittest: a fleet of simulated TDX and SEV-SNP VMs attesting in rounds,
// with bad reports, replays, a policy change and key-release decisions), for
// hack/auditbench/run.sh to export and verify with `proofline audit`.
//
//	auditbench -records 100000 -dir DIR
//
// It writes the service's data directory to DIR/data and the simulated platforms' test roots to
// DIR/data/test-roots, and prints the log's size and the time the generation took.
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"runtime/pprof"
	"time"

	"k8s.io/klog/v2"

	"github.com/proofline/proofline/evidence/audit/audittest"
)

func main() {
	records := flag.Int("records", 100000, "records the log holds at least")
	vms := flag.Int("vms", 64, "simulated VMs: each attests once per round, all at once")
	dir := flag.String("dir", "", "directory to write the data directory into; required")
	cpuProfile := flag.String("cpuprofile", "", "write a CPU profile of the generation to this file")
	flag.Parse()
	if *dir == "" {
		fmt.Fprintln(os.Stderr, "auditbench: -dir is required")
		os.Exit(2)
	}
	klog.SetSlogLogger(slog.New(slog.DiscardHandler)) // tessera's own progress lines
	if *cpuProfile != "" {
		f, err := os.Create(*cpuProfile)
		if err != nil {
			fmt.Fprintln(os.Stderr, "auditbench:", err)
			os.Exit(1)
		}
		pprof.StartCPUProfile(f)
		defer pprof.StopCPUProfile()
	}
	start := time.Now()
	last := start
	l, err := audittest.Generate(context.Background(), audittest.Options{
		Dir: filepath.Join(*dir, "data"), Records: *records, VMs: *vms,
		Offline: map[string][2]int{"vm-03": {10, 20}},
		Progress: func(n, want int) {
			if time.Since(last) > 5*time.Second {
				last = time.Now()
				fmt.Fprintf(os.Stderr, "generate: %d of %d records, %.0f/s\n", n, want, float64(n)/time.Since(start).Seconds())
			}
		},
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, "auditbench:", err)
		os.Exit(1)
	}
	el := time.Since(start)
	fmt.Printf("generated %d records (%d rounds of %d VMs, %s apart, from %s) in %.1fs: %.0f records/s\n",
		l.Size, l.Rounds, len(l.VMs), l.Step, l.Start.Format(time.RFC3339), el.Seconds(), float64(l.Size)/el.Seconds())
	fmt.Printf("data %s\nroots %s\nstep %s\nstart %s\nend %s\n", l.Dir, l.RootsDir, l.Step, l.Start.Format(time.RFC3339), l.RoundTime(l.Rounds-1).Format(time.RFC3339))
}
