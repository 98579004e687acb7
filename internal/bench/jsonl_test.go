package bench

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/labelsync/labelsync/internal/deadletter"
	"github.com/labelsync/labelsync/internal/ingest"
	"github.com/labelsync/labelsync/internal/ledger"
	"github.com/labelsync/labelsync/internal/metrics"
	"github.com/labelsync/labelsync/internal/storages"
	"github.com/labelsync/labelsync/internal/taskbus"
	"github.com/labelsync/labelsync/internal/taskfile"
	"github.com/labelsync/labelsync/internal/taskfile/taskfiletest"
)

// tasksStorageJSON is one Tasks-mode storage (use_blob_urls false): each
// record of a file under tasks/ becomes a task.
const tasksStorageJSON = `{"import": [{"id": 2, "project": 7, "title": "bench tasks", "bucket": "` + bucket + `", "prefix": "tasks/", "use_blob_urls": false}]}`

// jsonlKey is the benchmark file's object key.
const jsonlKey = "tasks/import.jsonl"

// BenchmarkJSONLImport imports a LABELSYNC_BENCH_JSONL_LINES-line JSONL
// task file (default 1,000,000) through the ingest pipeline, as a sync of a
// Tasks-mode storage would (Pipeline.Apply, one row event per line), and
// reports tasks/s and this process's peak RSS and Go heap. Two raw
// baselines run in the same process: taskfile.Read over the same file, and
// JetStream async publishing of as many messages of a row event's size on
// distinct subjects; whichever is slower bounds the import. The file is read
// from the local disk by a reader with the pipeline's reader method set
// (GCS is left out: BenchmarkSync covers it).
func BenchmarkJSONLImport(b *testing.B) {
	if runtime.GOOS != "linux" {
		b.Skip("reads /proc for memory and CPU: Linux only")
	}
	lines := envInt(b, "LABELSYNC_BENCH_JSONL_LINES", 1_000_000)
	ctx, cancel := context.WithTimeout(context.Background(), syncTimeout)
	defer cancel()
	st := benchStorage(b, tasksStorageJSON, 2)
	if !st.Matches(jsonlKey) || st.UseBlobURLs {
		b.Fatalf("benchmark storage %+v does not import %s as a Tasks file", st, jsonlKey)
	}

	path := filepath.Join(b.TempDir(), "import.jsonl")
	start := time.Now()
	size, err := taskfiletest.WriteJSONL(path, lines)
	if err != nil {
		b.Fatal(err)
	}
	b.Logf("generated %d lines, %.1f MB, in %s", lines, mb(uint64(size)), time.Since(start).Round(time.Millisecond))

	// Baseline 1: parse the file, nothing else.
	self0 := processCPU()
	start = time.Now()
	var bodyBytes int64
	n, err := readRecords(ctx, path, func(r taskfile.Record) { bodyBytes += int64(len(r.Task)) })
	readTook := time.Since(start)
	if err != nil {
		b.Fatal(err)
	}
	if n != lines {
		b.Fatalf("taskfile.Read yielded %d records, want %d", n, lines)
	}
	readRate := float64(n) / readTook.Seconds()
	b.Logf("raw read: taskfile.Read, %d records in %s: %.0f records/s, CPU %.2f µs/record", n, readTook.Round(time.Millisecond), readRate,
		float64(processCPU()-self0)/1e3/float64(n))

	// Baseline 2: publish as many row-event-sized messages, asynchronously,
	// on a NATS server of its own.
	sample := sampleRowEvent(st, bodyBytes/int64(lines))
	pub, err := rawPublish(ctx, b, lines, sample)
	if err != nil {
		b.Fatal(err)
	}
	pubSelf, pubOthers := pub.cpu.perItem(lines)
	b.Logf("raw publish: %d messages of %d bytes on distinct subjects in %s: %.0f msgs/s, CPU %.1f µs/msg here + %.1f in the NATS process, machine %.0f%% busy",
		lines, len(sample), pub.elapsed.Round(time.Millisecond), pub.rate(lines), pubSelf, pubOthers[0], pub.cpu.busyPct)

	// labelsync: the Tasks-mode pipeline, on a fresh NATS server.
	in := startInfra(b, infraOptions{natsDir: b.TempDir()})
	bus := newBus(ctx, b, in.natsURL, "labelsync-bench-jsonl")
	m := metrics.New(prometheus.NewRegistry())
	logger := slog.New(slog.DiscardHandler)
	p := ingest.New(bus, deadletter.NewWriter(bus, "worker", m, logger), m, logger, ingest.WithTasks(fileReader{path: path}, bus))
	obs := ledger.Observation{Present: true, Generation: 1, EventTime: time.Now(), Source: ledger.SourceSync}
	var counts ingest.Counts

	mw := watchMemory(50 * time.Millisecond)
	mark := markCPU(in.pid)
	start = time.Now()
	outcome, err := p.Apply(ctx, st, ingest.Object{Bucket: st.Bucket, Key: jsonlKey}, obs, &counts)
	took := time.Since(start)
	cpu := mark.since()
	mem := mw.stop()
	if err != nil {
		b.Fatalf("Apply: %v", err)
	}
	if outcome != ledger.Emitted || counts.Created.Load() != int64(lines) {
		b.Fatalf("Apply: outcome %s, %d created, want %s and %d", outcome, counts.Created.Load(), ledger.Emitted, lines)
	}
	rate := float64(lines) / took.Seconds()
	self, others := cpu.perItem(lines)
	infraCPU := others[0]
	b.Logf("labelsync: %d tasks in %s: %.0f tasks/s, CPU %.1f µs/task here + %.1f in the NATS process, machine %.0f%% busy",
		lines, took.Round(time.Millisecond), rate, self, infraCPU, cpu.busyPct)
	b.Logf("labelsync memory: %s", mem)

	// One created row event per line, plus the file's commit record.
	if err := checkStream(ctx, bus.JetStream(), lines, 1, "labelsync.tasks.7.created.>"); err != nil {
		b.Fatal(err)
	}
	infraRSS, infraHWM, _ := procMemory(in.pid)
	b.Logf("exactly one created row event per line: %d in %s plus the commit record; NATS process RSS %.1f MB (peak %.1f MB)",
		lines, taskbus.TasksStream, mb(infraRSS), mb(infraHWM))

	b.ReportMetric(0, "ns/op")
	b.ReportMetric(rate, "tasks/s")
	b.ReportMetric(readRate, "read_records/s")
	b.ReportMetric(pub.rate(lines), "publish_msgs/s")
	b.ReportMetric(100*rate/readRate, "pct_of_read")
	b.ReportMetric(100*rate/pub.rate(lines), "pct_of_publish")
	b.ReportMetric(self, "cpu_us/task")
	b.ReportMetric(infraCPU, "nats_cpu_us/task")
	b.ReportMetric(mb(mem.peakRSS), "peak_rss_MB")
	b.ReportMetric(mb(mem.peakRSS)-mb(mem.startRSS), "rss_growth_MB")
	b.ReportMetric(mb(mem.peakHeap), "peak_heap_MB")
	b.ReportMetric(mb(infraHWM), "nats_peak_rss_MB")
}

// fileReader reads a Tasks-mode file from the local disk. It has the method
// set of the pipeline's (unexported) record reader, so ingest.WithTasks
// takes it in place of ingest.GCSReader.
type fileReader struct{ path string }

func (r fileReader) Records(_ context.Context, _ *storages.Import, _ ingest.Object, _ int64, yield func(taskfile.Record) bool) error {
	f, err := os.Open(r.path)
	if err != nil {
		return err
	}
	defer f.Close()
	return taskfile.Read(f, taskfile.JSONL, taskfile.Options{}, yield)
}

// readRecords reads every record of the file and fails on a bad one.
func readRecords(ctx context.Context, path string, each func(taskfile.Record)) (int, error) {
	n := 0
	var bad error
	err := fileReader{path: path}.Records(ctx, nil, ingest.Object{}, 0, func(r taskfile.Record) bool {
		if r.Err != nil {
			bad = fmt.Errorf("row %d: %w", r.Row, r.Err)
			return false
		}
		each(r)
		n++
		return true
	})
	if err == nil {
		err = bad
	}
	return n, err
}

// sampleRowEvent is the body of a created row event of the benchmark file
// whose task is taskBytes long: what the raw publish baseline sends.
func sampleRowEvent(st *storages.Import, taskBytes int64) []byte {
	row := 123456
	task := make([]byte, 0, taskBytes)
	task = append(task, `{"data":{"text":"`...)
	for int64(len(task)) < taskBytes-3 {
		task = append(task, 'x')
	}
	task = append(task, `"}}`...)
	ev := &taskbus.Event{
		Event: ledger.Created, TaskID: taskbus.TaskID(st.ID, jsonlKey, &row), Project: st.Project, StorageID: st.ID,
		Bucket: st.Bucket, Key: jsonlKey, Generation: "1", RowIndex: &row, Source: ledger.SourceSync,
		EventTime: time.Now().UTC().Format(time.RFC3339Nano), Task: task,
	}
	body, err := json.Marshal(ev)
	if err != nil {
		panic(err) // an Event always encodes
	}
	return body
}

type publishResult struct {
	elapsed time.Duration
	cpu     cpuUse
}

func (p publishResult) rate(n int) float64 { return float64(n) / p.elapsed.Seconds() }

// rawPublish publishes n copies of body with JetStream's async publish
// (the task bus's pending limit, no headers, no expected-sequence checks) to
// a stream configured like the task stream, each on its own subject shaped
// like a row event's, on a fresh NATS server, and waits for every ack.
func rawPublish(ctx context.Context, b *testing.B, n int, body []byte) (publishResult, error) {
	in := startInfra(b, infraOptions{natsDir: b.TempDir()})
	defer in.stop()
	nc, err := nats.Connect(in.natsURL, nats.Name("labelsync-bench-raw-publish"))
	if err != nil {
		return publishResult{}, err
	}
	defer nc.Close()
	var failed atomic.Int64
	js, err := jetstream.New(nc,
		jetstream.WithPublishAsyncMaxPending(2048),
		jetstream.WithPublishAsyncErrHandler(func(jetstream.JetStream, *nats.Msg, error) { failed.Add(1) }))
	if err != nil {
		return publishResult{}, err
	}
	cfg := taskbus.StreamConfigs()[taskbus.TasksStream]
	cfg.Name, cfg.Subjects, cfg.Description = "BENCH_RAW", []string{"bench.raw.>"}, ""
	if _, err := js.CreateStream(ctx, cfg); err != nil {
		return publishResult{}, err
	}
	sum := sha256.Sum256([]byte(jsonlKey))
	prefix := "bench.raw.7.created.2." + hex.EncodeToString(sum[:16]) + "."

	mark := markCPU(in.pid)
	start := time.Now()
	for i := range n {
		if _, err := js.PublishMsgAsync(&nats.Msg{Subject: prefix + strconv.Itoa(i), Data: body}); err != nil {
			return publishResult{}, fmt.Errorf("publish %d: %w", i, err)
		}
	}
	select {
	case <-js.PublishAsyncComplete():
	case <-ctx.Done():
		return publishResult{}, ctx.Err()
	}
	res := publishResult{elapsed: time.Since(start), cpu: mark.since()}
	if f := failed.Load(); f > 0 {
		return res, fmt.Errorf("%d of %d publishes failed", f, n)
	}
	s, err := js.Stream(ctx, "BENCH_RAW")
	if err != nil {
		return res, err
	}
	info, err := s.Info(ctx)
	if err != nil {
		return res, err
	}
	if info.State.Msgs != uint64(n) {
		return res, fmt.Errorf("BENCH_RAW holds %d messages, want %d", info.State.Msgs, n)
	}
	return res, nil
}
