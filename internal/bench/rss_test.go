package bench

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/labelsync/labelsync/internal/natstest"
)

// BenchmarkWorkerRSS runs cmd/worker as its own process, so that the
// Pub/Sub server's backlog and the benchmark's own memory are not counted,
// and reports its resident set size when it has emitted 0, 1/4, 1/2, 3/4 and
// all of LABELSYNC_BENCH_RSS_N task events. Google's emulator only: it is a
// separate process too, and fast enough for a large run.
func BenchmarkWorkerRSS(b *testing.B) {
	n := envInt(b, "LABELSYNC_BENCH_RSS_N", 200_000)
	for _, be := range backends(b) {
		if be.name != "emulator" {
			continue
		}
		b.Run(be.name, func(b *testing.B) { benchWorkerRSS(b, be, n) })
	}
}

func benchWorkerRSS(b *testing.B, be backend, n int) {
	if runtime.GOOS != "linux" {
		b.Skip("reads /proc/<pid>/status: Linux only")
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	addr, stopPubsub := be.start(b)
	defer stopPubsub()
	bin := buildWorker(ctx, b)

	g := newNotifications(newID("rss"))
	checkNotifications(b, g)
	c := newClient(ctx, b, addr)
	topic, sub := newID("rss-topic"), newID("rss-sub")
	if err := createTopic(ctx, c, topic); err != nil {
		b.Fatal(err)
	}
	if err := createSubscription(ctx, c, sub, topic); err != nil {
		b.Fatal(err)
	}
	srv, stopNATS := startNATS(b)
	defer stopNATS()

	httpAddr := natstest.FreeAddr(b)
	dir := b.TempDir()
	logPath := filepath.Join(dir, "worker.log")
	logFile, err := os.Create(logPath)
	if err != nil {
		b.Fatal(err)
	}
	defer logFile.Close()
	cmd := exec.Command(bin)
	cmd.Env = append(cleanEnv(),
		"LABELSYNC_NATS_URL="+srv.URL(),
		"LABELSYNC_HTTP_ADDR="+httpAddr,
		"LABELSYNC_PUBSUB_PROJECT="+projectID,
		"LABELSYNC_PUBSUB_SUBSCRIPTION="+sub,
		"LABELSYNC_PUBSUB_TOPIC="+topic,
		"LABELSYNC_PUBSUB_STREAMS="+strconv.Itoa(be.recv.streams),
		"LABELSYNC_PUBSUB_MAX_OUTSTANDING="+strconv.Itoa(be.recv.maxOutstanding),
		"LABELSYNC_STORAGES_FILE="+writeStoragesFile(b),
		"LABELSYNC_LOG_LEVEL=info",
		"LABELSYNC_LOG_FORMAT=json",
		"PUBSUB_EMULATOR_HOST="+addr,
	)
	cmd.Stdout, cmd.Stderr = logFile, logFile
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	defer stopProcess(b, cmd, exited, logPath)
	pid := cmd.Process.Pid

	if err := waitReady(ctx, httpAddr, 60*time.Second); err != nil {
		b.Fatalf("%v\n--- worker log ---\n%s", err, readHead(logPath))
	}
	time.Sleep(time.Second) // let start-up garbage settle before the first sample
	rss0, _, err := procMemory(pid)
	if err != nil {
		b.Fatal(err)
	}
	b.Logf("worker pid %d ready, RSS %.1f MB before any notification", pid, mb(rss0))

	// Publish the whole run while the worker drains it; the backlog lives
	// in the emulator's process, not the worker's.
	seeded := make(chan error, 1)
	go func() {
		took, err := seed(ctx, c, topic, g, 0, n)
		if err == nil {
			b.Logf("published %d in %s", n, took.Round(time.Millisecond))
		}
		seeded <- err
	}()

	type point struct {
		emitted int
		rss     uint64
		at      time.Duration
	}
	points := []point{{0, rss0, 0}}
	next := 1
	var first time.Time
	start := time.Now()
	deadline := time.Now().Add(drainTimeout)
	for next <= 4 {
		if time.Now().After(deadline) {
			b.Fatalf("worker emitted fewer than %d task events within %s", next*n/4, drainTimeout)
		}
		select {
		case err := <-exited:
			b.Fatalf("worker exited: %v\n--- worker log ---\n%s", err, readHead(logPath))
		case err := <-seeded:
			if err != nil {
				b.Fatal(err)
			}
		case <-time.After(50 * time.Millisecond):
		}
		emitted, err := scrapeCounter(ctx, httpAddr, "labelsync_tasks_emitted_total")
		if err != nil {
			b.Fatal(err)
		}
		if emitted > 0 && first.IsZero() {
			first = time.Now()
		}
		for next <= 4 && emitted >= next*n/4 {
			rss, _, err := procMemory(pid)
			if err != nil {
				b.Fatal(err)
			}
			points = append(points, point{emitted, rss, time.Since(start)})
			next++
		}
	}
	elapsed := time.Since(first)
	_, hwm, err := procMemory(pid)
	if err != nil {
		b.Fatal(err)
	}

	b.ReportMetric(0, "ns/op")
	for i, p := range points {
		label := fmt.Sprintf("rss_%dk_MB", i*n/4/1000)
		b.ReportMetric(mb(p.rss), label)
		b.Logf("after %7d task events (%6s): RSS %.1f MB", p.emitted, p.at.Round(100*time.Millisecond), mb(p.rss))
	}
	b.ReportMetric(mb(hwm), "peak_rss_MB")
	b.ReportMetric(float64(n)/elapsed.Seconds(), "msgs/s")
	b.Logf("peak RSS (VmHWM) %.1f MB; %d task events in %s while publishing concurrently", mb(hwm), n, elapsed.Round(time.Millisecond))
}

// buildWorker builds cmd/worker into a temporary directory.
func buildWorker(ctx context.Context, b *testing.B) string {
	b.Helper()
	goBin, err := exec.LookPath("go")
	if err != nil {
		b.Skipf("go command not on PATH, cannot build cmd/worker: %v", err)
	}
	bin := filepath.Join(b.TempDir(), "worker")
	cmd := exec.CommandContext(ctx, goBin, "build", "-o", bin, "github.com/labelsync/labelsync/cmd/worker")
	if out, err := cmd.CombinedOutput(); err != nil {
		b.Fatalf("go build cmd/worker: %v\n%s", err, out)
	}
	return bin
}

// cleanEnv is the process environment without the variables the worker
// reads, so that only the benchmark's settings apply.
func cleanEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "LABELSYNC_") || strings.HasPrefix(kv, "PUBSUB_") ||
			strings.HasPrefix(kv, "STORAGE_EMULATOR_HOST=") || strings.HasPrefix(kv, "OTEL_") {
			continue
		}
		env = append(env, kv)
	}
	return env
}

// stopProcess sends SIGTERM, waits for the graceful drain, and kills the
// process if it does not exit.
func stopProcess(b *testing.B, cmd *exec.Cmd, exited <-chan error, logPath string) {
	b.Helper()
	if cmd.ProcessState != nil {
		return
	}
	_ = cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-exited:
		if err != nil {
			b.Errorf("worker exit after SIGTERM: %v\n--- worker log ---\n%s", err, readHead(logPath))
		}
	case <-time.After(45 * time.Second):
		_ = cmd.Process.Kill()
		<-exited
		b.Errorf("worker did not exit within 45 s of SIGTERM; killed")
	}
}

// procMemory returns VmRSS and VmHWM of pid, in bytes.
func procMemory(pid int) (rss, hwm uint64, err error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, 0, err
	}
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 2 {
			continue
		}
		kb, err := strconv.ParseUint(f[1], 10, 64)
		if err != nil {
			continue
		}
		switch f[0] {
		case "VmRSS:":
			rss = kb << 10
		case "VmHWM:":
			hwm = kb << 10
		}
	}
	if rss == 0 {
		return 0, 0, errors.New("no VmRSS in /proc/" + strconv.Itoa(pid) + "/status")
	}
	return rss, hwm, nil
}

func mb(bytes uint64) float64 { return float64(bytes) / (1 << 20) }

// scrapeCounter sums every series of a counter on a worker's /metrics.
func scrapeCounter(ctx context.Context, httpAddr, name string) (int, error) {
	body, err := httpGet(ctx, "http://"+httpAddr+"/metrics")
	if err != nil {
		return 0, err
	}
	var sum float64
	for line := range strings.Lines(body) {
		if !strings.HasPrefix(line, name+"{") && !strings.HasPrefix(line, name+" ") {
			continue
		}
		f := strings.Fields(line)
		v, err := strconv.ParseFloat(f[len(f)-1], 64)
		if err != nil {
			return 0, fmt.Errorf("metrics line %q: %w", line, err)
		}
		sum += v
	}
	return int(sum), nil
}

func readHead(path string) string {
	data, _ := os.ReadFile(path)
	if len(data) > 4096 {
		data = data[:4096]
	}
	return string(data)
}
