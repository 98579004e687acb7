package bench

import (
	"context"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"testing"
	"time"

	"cloud.google.com/go/storage"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/labelsync/labelsync/internal/deadletter"
	"github.com/labelsync/labelsync/internal/gcs"
	"github.com/labelsync/labelsync/internal/ingest"
	"github.com/labelsync/labelsync/internal/metrics"
	"github.com/labelsync/labelsync/internal/storages"
	"github.com/labelsync/labelsync/internal/syncer"
	"github.com/labelsync/labelsync/internal/taskbus"
)

// syncTimeout bounds one listing or one sync.
const syncTimeout = 20 * time.Minute

// BenchmarkSync syncs a bucket of N Files-mode objects (one storage,
// use_blob_urls true) with syncer.RunNow and reports objects listed,
// matched and emitted per second against the raw ceiling measured in the
// same run: listing the same prefix with the storage client (gcs.List, the
// syncer's page size). It also reports this process's peak RSS and Go heap
// during the sync, at each size in LABELSYNC_BENCH_SYNC_SIZES (default
// "10000,100000"), to show whether memory stays flat as the bucket grows.
func BenchmarkSync(b *testing.B) {
	for _, n := range envSizes(b, "LABELSYNC_BENCH_SYNC_SIZES", []int{10_000, 100_000}) {
		b.Run(strconv.Itoa(n), func(b *testing.B) { benchSync(b, n) })
	}
}

func benchSync(b *testing.B, n int) {
	if runtime.GOOS != "linux" {
		b.Skip("seeds fake-gcs-server's filesystem backend directly and reads /proc: Linux only")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 3*syncTimeout)
	defer cancel()
	stor := benchStorage(b, storagesJSON, 1)

	root := b.TempDir()
	start := time.Now()
	if err := seedFakeGCS(root, stor.Bucket, stor.NormalizedPrefix(), n); err != nil {
		b.Fatal(err)
	}
	seeded := time.Since(start)
	b.Logf("seeded %d objects in %s (%.0f/s), written straight into fake-gcs-server's filesystem layout (empty file + metadata attribute each)",
		n, seeded.Round(time.Millisecond), float64(n)/seeded.Seconds())

	paging := os.Getenv("LABELSYNC_BENCH_SYNC_PAGING")
	switch paging {
	case "":
		paging = "layer"
	case "layer", "fake":
	default:
		b.Fatalf("LABELSYNC_BENCH_SYNC_PAGING=%q: want layer or fake", paging)
	}
	var delay time.Duration
	if v := os.Getenv("LABELSYNC_BENCH_SYNC_PAGE_DELAY"); v != "" {
		var err error
		if delay, err = time.ParseDuration(v); err != nil || delay < 0 || paging != "layer" {
			b.Fatalf("LABELSYNC_BENCH_SYNC_PAGE_DELAY=%q: want a duration such as 100ms, with the paging layer", v)
		}
	}
	gcsProc := startInfra(b, infraOptions{gcsRoot: root, paging: paging, pageDelay: delay})
	natsProc := startInfra(b, infraOptions{natsDir: b.TempDir()})
	clients := gcs.NewClients(gcs.Options{EmulatorHost: gcsProc.gcsURL})
	defer clients.Close()
	client, err := clients.For(ctx, nil)
	if err != nil {
		b.Fatal(err)
	}

	bus := newBus(ctx, b, natsProc.natsURL, "labelsync-bench-sync")
	logger := slog.New(slog.DiscardHandler)
	m := metrics.New(prometheus.NewRegistry())
	set, err := storages.NewSet([]storages.Import{*stor})
	if err != nil {
		b.Fatal(err)
	}
	s, err := syncer.New(ctx, bus.JetStream(), ingest.New(bus, deadletter.NewWriter(bus, "worker", m, logger), m, logger), bus,
		func(ctx context.Context, _ *storages.Import) (*storage.Client, error) { return clients.For(ctx, nil) },
		func() *storages.Set { return set }, m, logger)
	if err != nil {
		b.Fatal(err)
	}
	s.Concurrency = envInt(b, "LABELSYNC_BENCH_SYNC_CONCURRENCY", s.Concurrency)
	b.Logf("paging %s (%s per page); syncer page size %d, concurrency %d; fake-gcs-server in infra process %d, NATS in %d",
		paging, delay, s.PageSize, s.Concurrency, gcsProc.pid, natsProc.pid)

	// The first listing fills the paging layer (one whole listing from
	// fake-gcs-server) and opens the HTTP connection; it is not reported.
	warm, err := listPass(ctx, client, stor, s.PageSize, n, gcsProc.pid)
	if err != nil {
		b.Fatal(err)
	}
	b.Logf("warm-up listing: %d in %s (%.0f objects/s, not reported)", n, warm.elapsed.Round(time.Millisecond), warm.rate())

	// Baseline, contender, baseline: the ceiling is the faster listing, so
	// drift during the run does not flatter the sync.
	list1, err := listPass(ctx, client, stor, s.PageSize, n, gcsProc.pid)
	if err != nil {
		b.Fatal(err)
	}
	b.Logf("list 1: %d in %s: %.0f objects/s, %s", n, list1.elapsed.Round(time.Millisecond), list1.rate(), list1.cpuString())

	sctx, scancel := context.WithTimeout(ctx, syncTimeout)
	defer scancel()
	mw := watchMemory(50 * time.Millisecond)
	mark := markCPU(gcsProc.pid, natsProc.pid)
	start = time.Now()
	final, err := s.RunNow(sctx, stor.ID, false, nil)
	synced := time.Since(start)
	scpu := mark.since()
	mem := mw.stop()
	if err != nil {
		b.Fatalf("RunNow: %v (status %+v)", err, final)
	}
	syncRate := float64(n) / synced.Seconds()
	sself, sothers := scpu.perItem(n)
	b.Logf("sync: %d in %s: %.0f objects/s, CPU µs/object: %.1f here, %.1f fake GCS, %.1f NATS; machine %.0f%% busy",
		n, synced.Round(time.Millisecond), syncRate, sself, sothers[0], sothers[1], scpu.busyPct)
	b.Logf("sync memory: %s", mem)

	list2, err := listPass(ctx, client, stor, s.PageSize, n, gcsProc.pid)
	if err != nil {
		b.Fatal(err)
	}
	b.Logf("list 2: %d in %s: %.0f objects/s, %s", n, list2.elapsed.Round(time.Millisecond), list2.rate(), list2.cpuString())

	if err := checkSync(ctx, bus.JetStream(), final, n); err != nil {
		b.Fatal(err)
	}
	natsRSS, natsHWM, _ := procMemory(natsProc.pid)
	gcsRSS, gcsHWM, _ := procMemory(gcsProc.pid)
	b.Logf("exactly one created event per object: %d in %s, status %s, %d pages; NATS process RSS %.1f MB (peak %.1f MB), fake GCS process %.1f MB (peak %.1f MB)",
		n, taskbus.TasksStream, final.Status, final.Meta.Pages, mb(natsRSS), mb(natsHWM), mb(gcsRSS), mb(gcsHWM))

	ceiling := max(list1.rate(), list2.rate())
	b.ReportMetric(0, "ns/op")
	b.ReportMetric(syncRate, "sync_objects/s")
	b.ReportMetric(ceiling, "list_objects/s")
	b.ReportMetric(100*syncRate/ceiling, "pct_of_list")
	b.ReportMetric(sself, "sync_cpu_us/object")
	lself, _ := list1.cpu.perItem(n)
	b.ReportMetric(lself, "list_cpu_us/object")
	b.ReportMetric(sothers[1], "sync_nats_cpu_us/object")
	b.ReportMetric(mb(mem.peakRSS), "peak_rss_MB")
	b.ReportMetric(mb(mem.peakRSS)-mb(mem.startRSS), "rss_growth_MB")
	b.ReportMetric(mb(mem.peakHeap), "peak_heap_MB")
	b.ReportMetric(mb(mem.endHeap), "end_heap_MB")
	b.ReportMetric(mb(natsHWM), "nats_peak_rss_MB")
}

// benchStorage parses a storages file and returns storage id.
func benchStorage(b *testing.B, file string, id int64) *storages.Import {
	b.Helper()
	st, ok := benchSet(b, file).Get(id)
	if !ok {
		b.Fatalf("no storage %d in %s", id, file)
	}
	return st
}

// syncKey is the i-th seeded object's key.
func syncKey(prefix string, i int) string { return fmt.Sprintf("%simg-%08d.jpg", prefix, i) }

// seedFakeGCS writes n empty objects under prefix into bucket, in the
// layout of fake-gcs-server's filesystem backend at root: one file per
// object (bucket directory, then the key's path) and its attributes as JSON
// in the user.metadata extended attribute, or in a ".metadata" side file
// where the filesystem has no user attributes. Going through the server
// instead costs two fsyncs per object (~220 objects/s here), and its memory
// backend compares every new object with every stored one (5,000 took 14 s).
func seedFakeGCS(root, bucket, prefix string, n int) error {
	dir := filepath.Join(root, url.PathEscape(bucket))
	if err := os.MkdirAll(filepath.Join(dir, filepath.FromSlash(prefix)), 0o700); err != nil {
		return err
	}
	if err := os.WriteFile(dir+".bucketMetadata", []byte(`{"DefaultEventBasedHold":false,"VersioningEnabled":false}`), 0o600); err != nil {
		return err
	}
	useXattr := xattrSupported(root)
	now := time.Now().UTC()
	ts := now.Format("2006-01-02T15:04:05.999999Z07:00")
	gen0 := now.UnixMicro()
	for i := range n {
		path := filepath.Join(dir, filepath.FromSlash(syncKey(prefix, i)))
		if err := os.WriteFile(path, nil, 0o600); err != nil {
			return err
		}
		meta := fmt.Appendf(nil, `{"ContentType":"image/jpeg","StorageClass":"STANDARD","Created":%q,"Updated":%q,"Generation":%d}`, ts, ts, gen0+int64(i))
		var err error
		if useXattr {
			err = setXattr(path, meta)
		} else {
			err = os.WriteFile(path+".metadata", meta, 0o600)
		}
		if err != nil {
			return fmt.Errorf("seed %s: %w", path, err)
		}
	}
	return nil
}

// listPass lists the storage's prefix as the syncer does (gcs.List, same
// bucket, prefix, recursion and page size) and fails unless it sees the n
// seeded objects.
func listPass(ctx context.Context, c *storage.Client, st *storages.Import, pageSize, n, gcsPID int) (listPassResult, error) {
	ctx, cancel := context.WithTimeout(ctx, syncTimeout)
	defer cancel()
	got := 0
	mark := markCPU(gcsPID)
	start := time.Now()
	err := gcs.List(ctx, c.Bucket(st.Bucket), st.NormalizedPrefix(), st.RecursiveScan, "", pageSize, func(objs []gcs.Object, _ string) error {
		got += len(objs)
		return nil
	})
	r := listPassResult{n: n, elapsed: time.Since(start), cpu: mark.since()}
	if err != nil {
		return r, err
	}
	if got != n {
		return r, fmt.Errorf("listed %d objects, want %d", got, n)
	}
	return r, nil
}

// listPassResult is one listing of the benchmark prefix: its duration and
// the CPU it used here and in the fake GCS process.
type listPassResult struct {
	n       int
	elapsed time.Duration
	cpu     cpuUse
}

func (r listPassResult) rate() float64 { return float64(r.n) / r.elapsed.Seconds() }

func (r listPassResult) cpuString() string {
	self, others := r.cpu.perItem(r.n)
	return fmt.Sprintf("CPU µs/object: %.1f here, %.1f fake GCS; machine %.0f%% busy", self, others[0], r.cpu.busyPct)
}

// checkSync fails unless the sync completed and the task stream holds
// exactly one created event per object: n messages on n distinct subjects
// (one per key), all created events, and nothing dead-lettered.
func checkSync(ctx context.Context, js jetstream.JetStream, final syncer.Status, n int) error {
	if final.Status != syncer.StatusCompleted || final.Meta.ObjectsListed != int64(n) || final.Meta.TasksCreated != int64(n) || final.Meta.Errors != 0 {
		return fmt.Errorf("sync status %s, meta %+v: want completed, %d listed and created, no errors", final.Status, final.Meta, n)
	}
	return checkStream(ctx, js, n, 0, "labelsync.tasks.7.created.>")
}

// checkStream fails unless the task stream holds want messages matching
// created plus extra others, on as many distinct subjects, and the
// dead-letter stream is empty.
func checkStream(ctx context.Context, js jetstream.JetStream, want, extra int, created string) error {
	st, err := js.Stream(ctx, taskbus.TasksStream)
	if err != nil {
		return err
	}
	info, err := st.Info(ctx)
	if err != nil {
		return err
	}
	total := uint64(want + extra)
	if info.State.Msgs != total || info.State.NumSubjects != total {
		return fmt.Errorf("%s holds %d messages on %d subjects, want %d on %d", taskbus.TasksStream, info.State.Msgs, info.State.NumSubjects, total, total)
	}
	c, err := st.CreateConsumer(ctx, jetstream.ConsumerConfig{
		FilterSubject:     created,
		AckPolicy:         jetstream.AckNonePolicy,
		InactiveThreshold: time.Minute,
	})
	if err != nil {
		return err
	}
	ci := c.CachedInfo()
	_ = st.DeleteConsumer(ctx, ci.Name)
	if ci.NumPending != uint64(want) {
		return fmt.Errorf("%s holds %d messages on %s, want %d", taskbus.TasksStream, ci.NumPending, created, want)
	}
	dl, err := js.Stream(ctx, taskbus.DeadLetterStream)
	if err != nil {
		return err
	}
	dlInfo, err := dl.Info(ctx)
	if err != nil {
		return err
	}
	if dlInfo.State.Msgs != 0 {
		return fmt.Errorf("%d dead letters, want none", dlInfo.State.Msgs)
	}
	return nil
}
