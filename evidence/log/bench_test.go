package log

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
)

// Durable appends per second; see hack/bench/README.md for the method and the numbers.
//
//	go test -run '^$' -bench . -benchtime 3000x ./evidence/log/

var benchWriters = []int{1, 16, 128}

const benchLeafSize = 1024

// BenchmarkAppend measures Log.Append (durable, group commit) under N concurrent writers.
func BenchmarkAppend(b *testing.B) {
	for _, be := range backends {
		for _, w := range benchWriters {
			b.Run(fmt.Sprintf("%s/writers=%d", be.name, w), func(b *testing.B) {
				f := be.new(b)
				l := f.openLog(b, Options{})
				leaf := randomLeaf(benchLeafSize, benchLeafSize)
				ctx := context.Background()
				b.SetBytes(benchLeafSize)
				b.ResetTimer()
				runWriters(b, w, func() error {
					_, err := l.Append(ctx, leaf)
					return err
				})
				b.StopTimer()
				b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "appends/s")
			})
		}
	}
}

// BenchmarkFsyncBaseline is the no-batching floor: every record is appended to a plain file and
// made durable with its own fdatasync before the next one (writers queue on a mutex), which is
// what a durable append costs without group commit.
func BenchmarkFsyncBaseline(b *testing.B) {
	for _, w := range benchWriters {
		b.Run(fmt.Sprintf("writers=%d", w), func(b *testing.B) {
			f, err := os.OpenFile(filepath.Join(b.TempDir(), "records"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
			if err != nil {
				b.Fatal(err)
			}
			defer f.Close()
			rec := randomLeaf(benchLeafSize+2, benchLeafSize+2) // the same bytes a bundle holds
			var mu sync.Mutex
			b.SetBytes(benchLeafSize)
			b.ResetTimer()
			runWriters(b, w, func() error {
				mu.Lock()
				defer mu.Unlock()
				if _, err := f.Write(rec); err != nil {
					return err
				}
				return syscall.Fdatasync(int(f.Fd()))
			})
			b.StopTimer()
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "appends/s")
		})
	}
}

// runWriters calls op b.N times in total from w goroutines.
func runWriters(b *testing.B, w int, op func() error) {
	var next atomic.Int64
	var wg sync.WaitGroup
	for range w {
		wg.Go(func() {
			for next.Add(1) <= int64(b.N) {
				if err := op(); err != nil {
					b.Error(err)
					return
				}
			}
		})
	}
	wg.Wait()
}
