package taskfile

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/labelsync/labelsync/internal/taskfile/taskfiletest"
)

func TestMain(m *testing.M) {
	code := m.Run()
	if benchFile.dir != "" {
		_ = os.RemoveAll(benchFile.dir)
	}
	os.Exit(code)
}

// benchFile is the JSONL file BenchmarkReadJSONL reads, written once per
// test binary run: generating a million lines takes longer than reading them.
var benchFile struct {
	once  sync.Once
	dir   string
	path  string
	lines int
	size  int64
	err   error
}

func benchJSONL(b *testing.B) (path string, lines int, size int64) {
	b.Helper()
	benchFile.once.Do(func() {
		lines := 1_000_000
		if s := os.Getenv("LABELSYNC_BENCH_JSONL_LINES"); s != "" {
			n, err := strconv.Atoi(s)
			if err != nil || n <= 0 {
				benchFile.err = fmt.Errorf("LABELSYNC_BENCH_JSONL_LINES=%q: want a positive integer", s)
				return
			}
			lines = n
		}
		benchFile.dir, benchFile.err = os.MkdirTemp("", "taskfile-bench-")
		if benchFile.err != nil {
			return
		}
		benchFile.path = filepath.Join(benchFile.dir, "tasks.jsonl")
		benchFile.lines = lines
		benchFile.size, benchFile.err = taskfiletest.WriteJSONL(benchFile.path, lines)
	})
	if benchFile.err != nil {
		b.Fatalf("bench file: %v", benchFile.err)
	}
	return benchFile.path, benchFile.lines, benchFile.size
}

// BenchmarkReadJSONL reads a large JSONL file and reports tasks/s and the
// peak heap, next to a raw baseline measured in the same run: counting the
// file's lines with bufio.Scanner, the least any line reader must do.
func BenchmarkReadJSONL(b *testing.B) {
	path, lines, size := benchJSONL(b)
	b.SetBytes(size)

	var baseline, read time.Duration
	var peakHeap uint64
	var ms runtime.MemStats
	sample := func() {
		runtime.ReadMemStats(&ms)
		peakHeap = max(peakHeap, ms.HeapInuse)
	}
	runtime.GC()
	runtime.ReadMemStats(&ms)
	allocBefore := ms.TotalAlloc

	for b.Loop() {
		b.StopTimer()
		start := time.Now()
		if n := countLines(b, path); n != lines {
			b.Fatalf("baseline counted %d lines, want %d", n, lines)
		}
		baseline += time.Since(start)
		b.StartTimer()

		start = time.Now()
		f, err := os.Open(path)
		if err != nil {
			b.Fatal(err)
		}
		n := 0
		err = Read(f, JSONL, Options{}, func(rec Record) bool {
			if rec.Err != nil {
				b.Fatalf("row %d: %v", rec.Row, rec.Err)
			}
			n++
			if n%16384 == 0 {
				sample()
			}
			return true
		})
		f.Close()
		if err != nil {
			b.Fatal(err)
		}
		if n != lines {
			b.Fatalf("read %d records, want %d", n, lines)
		}
		read += time.Since(start)
	}
	sample()

	total := float64(lines) * float64(b.N)
	b.ReportMetric(total/read.Seconds(), "tasks/s")
	b.ReportMetric(total/baseline.Seconds(), "baseline-lines/s")
	b.ReportMetric(read.Seconds()/baseline.Seconds(), "time/baseline")
	b.ReportMetric(float64(peakHeap)/(1<<20), "peak-heap-MiB")
	// Includes the baseline's one scanner buffer per pass: negligible.
	b.ReportMetric(float64(ms.TotalAlloc-allocBefore)/total, "alloc-B/task")
}

func countLines(b *testing.B, path string) int {
	f, err := os.Open(path)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	n := 0
	for s.Scan() {
		n++
	}
	if err := s.Err(); err != nil {
		b.Fatal(err)
	}
	return n
}
