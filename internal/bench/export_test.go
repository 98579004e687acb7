package bench

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"runtime"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"cloud.google.com/go/storage"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/labelsync/labelsync/internal/annotation"
	"github.com/labelsync/labelsync/internal/deadletter"
	"github.com/labelsync/labelsync/internal/export"
	"github.com/labelsync/labelsync/internal/gcs"
	"github.com/labelsync/labelsync/internal/metrics"
	"github.com/labelsync/labelsync/internal/storages"
	"github.com/labelsync/labelsync/internal/taskbus"
	"github.com/labelsync/labelsync/internal/webhook"
)

// The exporter's benchmarks: annotation events from LABELSYNC_ANNOTATIONS
// into a target bucket (BenchmarkExportWrite), Label Studio's webhook onto
// that stream (BenchmarkWebhook), and an export sync of a whole project
// (BenchmarkExportSync). Each measures a raw baseline in the same run, on
// the same servers: the storage client writing the same objects, or a bare
// HTTP handler publishing the same bodies to JetStream.
//
// fake-gcs-server runs with its filesystem backend in an infra process of
// its own. Its memory backend compares every new object with the whole
// bucket (20,000 creates take minutes), and the filesystem backend creates
// one object at a time under one lock, with two fsyncs each: on this
// machine's disk that ran at 900–1,100 objects/s whoever wrote, with the
// CPUs half idle, a ceiling that measures the disk more than the client. Its
// root is therefore on tmpfs (/dev/shm) by default, where an fsync costs
// nothing and the server is CPU-bound like everything else on the machine;
// LABELSYNC_BENCH_EXPORT_GCS_DIR chooses another directory (a disk: the
// fsync-bound server).

const (
	exportBucket  = "bench-export"
	exportProject = 7
	exportStorage = 3
	// exportConcurrency is the exporter's default concurrency, given to
	// both the consumer and the raw writers.
	exportConcurrency = 32
	// exportTimeout bounds one contender's pass.
	exportTimeout = 20 * time.Minute
	webhookSecret = "bench-hook-secret"
	// webhookClients is how many requests are in flight in the webhook
	// throughput run.
	webhookClients = 32
)

// exportStoragesJSON is one annotation-keyed export storage of the
// benchmark project, writing under prefix.
func exportStoragesJSON(prefix string) string {
	return fmt.Sprintf(`{"export": [{"id": %d, "project": %d, "title": "bench", "bucket": %q, "prefix": %q}]}`,
		exportStorage, exportProject, exportBucket, prefix)
}

func benchExport(b *testing.B, prefix string) storages.Export {
	b.Helper()
	f, err := storages.Parse([]byte(exportStoragesJSON(prefix)), storages.ParseOptions{})
	if err != nil {
		b.Fatal(err)
	}
	if len(f.Export) != 1 {
		b.Fatalf("%d export storages parsed, want 1", len(f.Export))
	}
	return f.Export[0]
}

// annotationWebhook is a Label Studio ANNOTATION_UPDATED webhook body for
// annotation id (of task id+100000), in the shape of Label Studio's webhook
// reference (internal/e2e's annotationPayload): about 640 bytes.
func annotationWebhook(id int, at time.Time) []byte {
	task := 100_000 + id
	return fmt.Appendf(nil, `{"action": "ANNOTATION_UPDATED",
 "annotation": {"id": %d, "result": [{"id": "r%d", "type": "rectanglelabels", "value": {"x": 12.5, "y": 30.25, "width": 20, "height": 15.75, "rotation": 0, "rectanglelabels": ["cat"]}, "origin": "manual", "to_name": "image", "from_name": "label", "image_rotation": 0, "original_width": 1024, "original_height": 768}],
   "was_cancelled": false, "ground_truth": false, "created_at": "2026-11-27T14:31:10.123456Z", "updated_at": %q,
   "lead_time": 1.5, "task": %d, "completed_by": 3, "project": %d},
 "task": {"id": %d, "data": {"image": "gs://acme-raw/incoming/img-%08d.jpg"}, "meta": {}, "is_labeled": true, "project": %d},
 "project": {"id": %d, "title": "cats"}}`,
		id, id, at.UTC().Format("2006-01-02T15:04:05.000000Z"), task, exportProject, task, task, exportProject, exportProject)
}

// annotationEvent decodes annotationWebhook(id, at) as the webhook does.
func annotationEvent(id int, at time.Time) (annotation.Event, error) {
	_, evs, err := annotation.Decode(annotationWebhook(id, at))
	if err != nil {
		return annotation.Event{}, err
	}
	if len(evs) != 1 {
		return annotation.Event{}, fmt.Errorf("annotation %d: %d events, want 1", id, len(evs))
	}
	return evs[0], nil
}

// rawObject is an object the raw writer writes: what the exporter writes
// for one annotation, with the same name under another prefix.
type rawObject struct {
	name string
	body []byte
	md   map[string]string
}

// exportedObject builds what the exporter writes for ev under prefix (the
// body from export.AnnotationBody, checked against an object the exporter
// wrote, byte for byte, by checkSameBody), with the same content type and
// metadata.
func exportedObject(ev annotation.Event, prefix string) (rawObject, error) {
	body, err := export.AnnotationBody(ev)
	if err != nil {
		return rawObject{}, err
	}
	st := benchExportStatic(prefix)
	return rawObject{
		name: export.ObjectName(&st, ev.AnnotationID, ev.TaskID),
		body: body,
		md: map[string]string{
			"labelsync-updated-at":    ev.UpdatedAt.UTC().Format(time.RFC3339Nano),
			"labelsync-annotation-id": strconv.FormatInt(ev.AnnotationID, 10),
		},
	}, nil
}

// benchExportStatic is the export storage's naming, without parsing.
func benchExportStatic(prefix string) storages.Export {
	return storages.Export{ID: exportStorage, Project: exportProject, Bucket: exportBucket, Prefix: prefix}
}

// rawObjects builds the raw writer's objects for annotations from..from+n-1.
func rawObjects(n, from int, at time.Time, prefix string) ([]rawObject, error) {
	out := make([]rawObject, n)
	for i := range n {
		ev, err := annotationEvent(from+i, at)
		if err != nil {
			return nil, err
		}
		if out[i], err = exportedObject(ev, prefix); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// exportInfra is what the export benchmarks run against: fake-gcs-server
// (filesystem backend) and NATS, each in an infra process of its own, the
// storage client of gcs.Clients, and labelsync's bus with the annotation
// and dead-letter streams.
type exportInfra struct {
	gcs, nats *infra
	root      string
	clients   *gcs.Clients
	client    *storage.Client
	bus       *taskbus.Bus
}

func startExportInfra(ctx context.Context, b *testing.B) *exportInfra {
	b.Helper()
	root := exportGCSRoot(b)
	// layer: object listings (used only to check results, after each pass)
	// are cut from one whole listing; writes go to fake-gcs-server as is.
	gcsProc := startInfra(b, infraOptions{gcsRoot: root, paging: "layer"})
	natsProc := startInfra(b, infraOptions{natsDir: b.TempDir()})
	clients := gcs.NewClients(gcs.Options{EmulatorHost: gcsProc.gcsURL})
	b.Cleanup(func() { _ = clients.Close() })
	client, err := clients.For(ctx, nil)
	if err != nil {
		b.Fatal(err)
	}
	if err := client.Bucket(exportBucket).Create(ctx, projectID, nil); err != nil {
		b.Fatalf("create bucket %s: %v", exportBucket, err)
	}
	bus := newBus(ctx, b, natsProc.natsURL, "labelsync-bench-export")
	if err := bus.EnsureStreams(ctx, taskbus.AnnotationsStream, taskbus.DeadLetterStream); err != nil {
		b.Fatal(err)
	}
	return &exportInfra{gcs: gcsProc, nats: natsProc, root: root, clients: clients, client: client, bus: bus}
}

// exportGCSRoot is fake-gcs-server's storage root for one benchmark: a
// fresh directory under LABELSYNC_BENCH_EXPORT_GCS_DIR, else under
// /dev/shm when it is there, else a temporary directory. It is removed at
// cleanup.
func exportGCSRoot(b *testing.B) string {
	b.Helper()
	parent := os.Getenv("LABELSYNC_BENCH_EXPORT_GCS_DIR")
	if parent == "" {
		if st, err := os.Stat("/dev/shm"); err == nil && st.IsDir() {
			parent = "/dev/shm"
		}
	}
	if parent == "" {
		return b.TempDir()
	}
	dir, err := os.MkdirTemp(parent, "labelsync-bench-gcs-")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = os.RemoveAll(dir) })
	return dir
}

func (in *exportInfra) String() string {
	return fmt.Sprintf("fake-gcs-server (filesystem backend at %s) in infra process %d, NATS in %d", in.root, in.gcs.pid, in.nats.pid)
}

// seedAnnotations publishes annotations from..from+n-1 to
// LABELSYNC_ANNOTATIONS as the webhook stores them (subject and payload of
// annotation.Event), asynchronously, and waits for every
// acknowledgement and for the stream to hold them.
func seedAnnotations(ctx context.Context, js jetstream.JetStream, n, from int, at time.Time) (time.Duration, error) {
	start := time.Now()
	const window = 2_000
	for i := 0; i < n; i++ {
		ev, err := annotationEvent(from+i, at)
		if err != nil {
			return 0, err
		}
		m := &nats.Msg{Subject: ev.Subject(), Data: ev.Payload()}
		if _, err := js.PublishMsgAsync(m); err != nil {
			return 0, fmt.Errorf("seed annotation %d: %w", from+i, err)
		}
		if (i+1)%window == 0 || i == n-1 {
			select {
			case <-js.PublishAsyncComplete():
			case <-ctx.Done():
				return 0, ctx.Err()
			case <-time.After(time.Minute):
				return 0, errors.New("seed: acknowledgements not in within a minute")
			}
		}
	}
	took := time.Since(start)
	st, err := js.Stream(ctx, taskbus.AnnotationsStream)
	if err != nil {
		return 0, err
	}
	info, err := st.Info(ctx)
	if err != nil {
		return 0, err
	}
	if info.State.Msgs < uint64(n) {
		return 0, fmt.Errorf("%s holds %d messages after seeding %d", taskbus.AnnotationsStream, info.State.Msgs, n)
	}
	return took, nil
}

// totalPerItem is the CPU µs per item of this process and every infra
// process counted. With everything on the same cores and the machine
// saturated, rates follow its inverse, so the ratio of two contenders'
// totals is the rate ratio without the other load on the machine.
func (u cpuUse) totalPerItem(n int) float64 {
	self, others := u.perItem(n)
	for _, o := range others {
		self += o
	}
	return self
}

// asContender runs f with the profiler label contender=name, which the
// goroutines f starts inherit: `go tool pprof -tagfocus contender=raw` (or
// labelsync, bare) then shows one contender's CPU. Connections opened
// before (NATS read loops, the storage client's pool) are not labelled.
func asContender(name string, f func()) {
	pprof.Do(context.Background(), pprof.Labels("contender", name), func(context.Context) { f() })
}

// parallel runs f(0..n-1) on conc goroutines and times it; it stops at the
// first error.
func parallel(n, conc int, f func(i int) error) (time.Duration, error) {
	var next atomic.Int64
	var failed atomic.Bool
	var first error
	var once sync.Once
	var wg sync.WaitGroup
	start := time.Now()
	for range min(n, conc) {
		wg.Go(func() {
			for !failed.Load() {
				i := int(next.Add(1) - 1)
				if i >= n {
					return
				}
				if err := f(i); err != nil {
					once.Do(func() { first = err; failed.Store(true) })
					return
				}
			}
		})
	}
	wg.Wait()
	return time.Since(start), first
}

// rawPass is one raw ceiling: the objects written with the storage client.
type rawPass struct {
	n       int
	elapsed time.Duration
	cpu     cpuUse
}

func (r rawPass) rate() float64 { return float64(r.n) / r.elapsed.Seconds() }

// rawWrite writes objs with the storage client, exportConcurrency at a
// time: a storage.Writer each, the exporter's content type and metadata,
// one request per object (ChunkSize 0, as gcs.Put), no preconditions.
func rawWrite(ctx context.Context, c *storage.Client, objs []rawObject, pids ...int) (rawPass, error) {
	ctx, cancel := context.WithTimeout(ctx, exportTimeout)
	defer cancel()
	mark := markCPU(pids...)
	took, err := parallel(len(objs), exportConcurrency, func(i int) error {
		o := objs[i]
		w := c.Bucket(exportBucket).Object(o.name).NewWriter(ctx)
		w.ContentType = "application/json"
		w.Metadata = o.md
		w.ChunkSize = 0
		if _, err := w.Write(o.body); err != nil {
			_ = w.Close()
			return fmt.Errorf("raw write %s: %w", o.name, err)
		}
		if err := w.Close(); err != nil {
			return fmt.Errorf("raw write %s: %w", o.name, err)
		}
		return nil
	})
	return rawPass{n: len(objs), elapsed: took, cpu: mark.since()}, err
}

func (r rawPass) String() string {
	self, others := r.cpu.perItem(r.n)
	return fmt.Sprintf("%d objects in %s: %.0f objects/s; CPU µs/object: %.1f here, %.1f fake GCS; machine %.0f%% busy",
		r.n, r.elapsed.Round(time.Millisecond), r.rate(), self, others[0], r.cpu.busyPct)
}

// countObjects lists prefix in the export bucket and returns how many
// objects it holds. The paging layer caches a prefix's listing: list a
// prefix only once it is complete.
func countObjects(ctx context.Context, c *storage.Client, prefix string) (int, error) {
	got := 0
	err := gcs.List(ctx, c.Bucket(exportBucket), prefix, true, "", gcs.MaxPageSize, func(objs []gcs.Object, _ string) error {
		got += len(objs)
		return nil
	})
	return got, err
}

// checkSameBody fails unless the exporter's object and the raw writer's
// object for the same annotation have the same bytes: the raw ceiling
// writes what labelsync writes.
func checkSameBody(ctx context.Context, c *storage.Client, labelsyncName, rawName string) error {
	a, _, err := gcs.Get(ctx, c.Bucket(exportBucket), labelsyncName, 1<<20)
	if err != nil {
		return err
	}
	r, _, err := gcs.Get(ctx, c.Bucket(exportBucket), rawName, 1<<20)
	if err != nil {
		return err
	}
	if string(a) != string(r) {
		return fmt.Errorf("the raw writer's %s differs from the exporter's %s:\n%s\n%s", rawName, labelsyncName, r, a)
	}
	return nil
}

// counterValue reads one series of a counter.
func counterValue(c prometheus.Counter) float64 {
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		return 0
	}
	return m.GetCounter().GetValue()
}

// exportOps returns labelsync_export_operations_total by "op/outcome",
// leaving out series at zero.
func exportOps(reg *prometheus.Registry) (map[string]float64, error) {
	mfs, err := reg.Gather()
	if err != nil {
		return nil, err
	}
	out := map[string]float64{}
	for _, mf := range mfs {
		if mf.GetName() != "labelsync_export_operations_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			var op, outcome string
			for _, l := range m.GetLabel() {
				switch l.GetName() {
				case "op":
					op = l.GetValue()
				case "outcome":
					outcome = l.GetValue()
				}
			}
			if v := m.GetCounter().GetValue(); v != 0 {
				out[op+"/"+outcome] += v
			}
		}
	}
	return out, nil
}

// checkExported fails unless the exporter wrote exactly n objects (every
// operation a successful write), nothing was dead-lettered and prefix
// holds n objects.
func checkExported(ctx context.Context, in *exportInfra, reg *prometheus.Registry, prefix string, n int) error {
	ops, err := exportOps(reg)
	if err != nil {
		return err
	}
	if want := map[string]float64{"write/ok": float64(n)}; fmt.Sprint(ops) != fmt.Sprint(want) {
		return fmt.Errorf("export operations %v, want %v", ops, want)
	}
	dl, err := in.bus.JetStream().Stream(ctx, taskbus.DeadLetterStream)
	if err != nil {
		return err
	}
	info, err := dl.Info(ctx)
	if err != nil {
		return err
	}
	if info.State.Msgs != 0 {
		return fmt.Errorf("%d dead letters, want none", info.State.Msgs)
	}
	got, err := countObjects(ctx, in.client, prefix)
	if err != nil {
		return err
	}
	if got != n {
		return fmt.Errorf("gs://%s/%s holds %d objects, want %d", exportBucket, prefix, got, n)
	}
	return nil
}

// newExporter is export.New on the infra's bus, writing to target through
// the infra's storage client, with its own metrics.
func newExporter(ctx context.Context, b *testing.B, in *exportInfra, target storages.Export, logger *slog.Logger) (*export.Exporter, *metrics.Metrics, *prometheus.Registry) {
	b.Helper()
	reg := prometheus.NewRegistry()
	m := metrics.New(reg)
	targets := []storages.Export{target}
	x, err := export.New(ctx, in.bus.JetStream(), func() []storages.Export { return targets },
		func(ctx context.Context, _ *storages.Export) (*storage.Client, error) {
			return in.clients.For(ctx, nil)
		}, m, logger)
	if err != nil {
		b.Fatal(err)
	}
	return x, m, reg
}

// BenchmarkExportWrite measures the exporter's live path: annotation
// events on LABELSYNC_ANNOTATIONS, one subject each, consumed by
// export.Consume with the failure path around Exporter.Handler,
// concurrency 32, into one annotation-keyed export storage. The raw
// ceiling writes the same objects (same bodies, content type and metadata,
// under another prefix) with the storage client, 32 at a time, without
// preconditions, to the same fake-gcs-server.
//
// The two take turns over LABELSYNC_BENCH_EXPORT_ROUNDS (default 8)
// rounds, the order alternating, each pass writing the next slice of
// LABELSYNC_BENCH_EXPORT_N (default 20,000) objects; the figure is the
// pooled rate, with the median of the rounds' ratios beside it. One
// Consume runs throughout, its consumer paused between labelsync passes;
// a pass seeds its events (untimed), then is timed from resuming the
// consumer until the exporter counted the pass's writes.
func BenchmarkExportWrite(b *testing.B) {
	if runtime.GOOS != "linux" {
		b.Skip("reads /proc for CPU time: Linux only")
	}
	n := envInt(b, "LABELSYNC_BENCH_EXPORT_N", 20_000)
	rounds := envInt(b, "LABELSYNC_BENCH_EXPORT_ROUNDS", 8)
	if rounds < 1 || n < rounds {
		b.Fatalf("%d objects in %d rounds", n, rounds)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 4*exportTimeout)
	defer cancel()
	logger := slog.New(slog.DiscardHandler)
	in := startExportInfra(ctx, b)
	at := time.Now().UTC()
	b.Logf("%s", in)

	const rawPrefix = "raw/"
	target := benchExport(b, "labelsync/")
	x, m, reg := newExporter(ctx, b, in, target, logger)
	failures, err := deadletter.Middleware(deadletter.NewWriter(in.bus, "exporter", m, logger), deadletter.DefaultRetry(), logger)
	if err != nil {
		b.Fatal(err)
	}
	handle := failures(x.Handler)
	written := m.ExportOps.WithLabelValues("write", "ok")
	errs := m.ExportOps.WithLabelValues("write", "error")

	per := n / rounds
	slice := func(r int) (from, count int) {
		from = r*per + 1
		if r == rounds-1 {
			return from, n - r*per
		}
		return from, per
	}
	rawRound := func(r int) rawPass {
		from, count := slice(r)
		objs, err := rawObjects(count, from, at, rawPrefix)
		if err != nil {
			b.Fatal(err)
		}
		var p rawPass
		asContender("raw", func() { p, err = rawWrite(ctx, in.client, objs, in.gcs.pid, in.nats.pid) })
		if err != nil {
			b.Fatal(err)
		}
		return p
	}
	// One Consume for every round, its consumer paused while a round's
	// events are seeded and while raw writes: stopping and restarting it
	// left messages in the stopped pull, back only after AckWait.
	js := in.bus.JetStream()
	cctx, stop := context.WithCancel(ctx)
	defer stop()
	consumed := make(chan error, 1)
	asContender("labelsync", func() {
		go func() {
			consumed <- export.Consume(cctx, js, export.ConsumeConfig{Concurrency: exportConcurrency}, handle, logger)
		}()
	})
	for {
		if _, err := js.Consumer(ctx, taskbus.AnnotationsStream, export.ConsumerName); err == nil {
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	pause := func() {
		if _, err := js.PauseConsumer(ctx, taskbus.AnnotationsStream, export.ConsumerName, time.Now().Add(time.Hour)); err != nil {
			b.Fatal(err)
		}
	}
	pause()
	lsPass := func(r int) rawPass {
		from, count := slice(r)
		if _, err := seedAnnotations(ctx, js, count, from, at); err != nil {
			b.Fatal(err)
		}
		want := counterValue(written) + float64(count)
		mark := markCPU(in.gcs.pid, in.nats.pid)
		start := time.Now()
		if _, err := js.ResumeConsumer(ctx, taskbus.AnnotationsStream, export.ConsumerName); err != nil {
			b.Fatal(err)
		}
		deadline := time.Now().Add(exportTimeout)
		for counterValue(written) < want {
			if time.Now().After(deadline) {
				b.Fatalf("round %d: %.0f of %.0f objects written within %s", r, counterValue(written), want, exportTimeout)
			}
			time.Sleep(2 * time.Millisecond)
		}
		p := rawPass{n: count, elapsed: time.Since(start), cpu: mark.since()}
		pause()
		return p
	}

	// The sums are raw's [0] and labelsync's [1].
	var sums [2]struct {
		n       int
		elapsed time.Duration
		self    time.Duration
		gcs     time.Duration
		nats    time.Duration
	}
	var ratios []float64
	for r := range rounds {
		var rates [2]float64
		for _, ls := range []bool{r%2 == 1, r%2 == 0} {
			var p rawPass
			i := 0
			if ls {
				p, i = lsPass(r), 1
			} else {
				p = rawRound(r)
			}
			sums[i].n += p.n
			sums[i].elapsed += p.elapsed
			sums[i].self += p.cpu.self
			sums[i].gcs += p.cpu.others[0]
			sums[i].nats += p.cpu.others[1]
			rates[i] = p.rate()
		}
		ratios = append(ratios, 100*rates[1]/rates[0])
	}

	stop()
	if err := <-consumed; err != nil {
		b.Fatal(err)
	}
	if e := counterValue(errs); e != 0 {
		b.Fatalf("%.0f failed writes (retried)", e)
	}
	if err := checkExported(ctx, in, reg, target.Prefix, n); err != nil {
		b.Fatal(err)
	}
	if got, err := countObjects(ctx, in.client, rawPrefix); err != nil || got != n {
		b.Fatalf("gs://%s/%s holds %d objects (%v), want %d", exportBucket, rawPrefix, got, err, n)
	}
	ev, err := annotationEvent(n/2+1, at)
	if err != nil {
		b.Fatal(err)
	}
	raw0, _ := exportedObject(ev, rawPrefix)
	if err := checkSameBody(ctx, in.client, export.ObjectName(&target, ev.AnnotationID, ev.TaskID), raw0.name); err != nil {
		b.Fatal(err)
	}

	median := medianOf(ratios)
	rawRate := float64(sums[0].n) / sums[0].elapsed.Seconds()
	lsRate := float64(sums[1].n) / sums[1].elapsed.Seconds()
	rawCPU := us(sums[0].self+sums[0].gcs+sums[0].nats, sums[0].n)
	lsCPU := us(sums[1].self+sums[1].gcs+sums[1].nats, sums[1].n)
	b.Logf("%d rounds of %d objects each: labelsync %.0f objects/s, raw %.0f: %.1f %% pooled, round ratios %.1f–%.1f %% (median %.1f)",
		rounds, per, lsRate, rawRate, 100*lsRate/rawRate, ratios[0], ratios[len(ratios)-1], median)
	b.Logf("CPU µs/object: labelsync %.1f here, %.1f fake GCS, %.1f NATS; raw %.1f here, %.1f fake GCS, %.1f NATS; all processes %.1f vs %.1f (%.1f %%)",
		us(sums[1].self, sums[1].n), us(sums[1].gcs, sums[1].n), us(sums[1].nats, sums[1].n),
		us(sums[0].self, sums[0].n), us(sums[0].gcs, sums[0].n), us(sums[0].nats, sums[0].n), lsCPU, rawCPU, 100*rawCPU/lsCPU)
	b.Logf("labelsync wrote exactly %d objects, the same bytes as the raw writer's", n)
	b.ReportMetric(0, "ns/op")
	b.ReportMetric(lsRate, "export_objects/s")
	b.ReportMetric(rawRate, "raw_objects/s")
	b.ReportMetric(100*lsRate/rawRate, "pct_of_raw_write")
	b.ReportMetric(median, "pct_of_raw_write_median")
	b.ReportMetric(100*rawCPU/lsCPU, "pct_of_raw_cpu")
	b.ReportMetric(us(sums[1].self, sums[1].n), "export_cpu_us/object")
	b.ReportMetric(us(sums[1].nats, sums[1].n), "export_nats_cpu_us/object")
	b.ReportMetric(us(sums[1].gcs, sums[1].n), "export_gcs_cpu_us/object")
	b.ReportMetric(us(sums[0].self, sums[0].n), "raw_cpu_us/object")
	b.ReportMetric(us(sums[0].gcs, sums[0].n), "raw_gcs_cpu_us/object")
}

// BenchmarkExportSync measures an export sync of an empty target at each
// size in LABELSYNC_BENCH_EXPORT_SYNC_SIZES (default "10000,100000"): that
// many annotations on LABELSYNC_ANNOTATIONS (seeded untimed), then
// Syncs.Request with Exporter.RunSyncs running, timed until the status is
// completed (RunSyncs looks for requests once a second: the wait is part of
// the figure). The raw ceiling writes the same objects with the storage
// client, 32 at a time, to the same server, just before, on the first
// LABELSYNC_BENCH_EXPORT_SYNC_RAW_N of them (default: all). It reports this
// process's peak RSS and Go heap during the sync, to compare sizes.
func BenchmarkExportSync(b *testing.B) {
	for _, n := range envSizes(b, "LABELSYNC_BENCH_EXPORT_SYNC_SIZES", []int{10_000, 100_000}) {
		b.Run(strconv.Itoa(n), func(b *testing.B) { benchExportSync(b, n) })
	}
}

func benchExportSync(b *testing.B, n int) {
	if runtime.GOOS != "linux" {
		b.Skip("reads /proc for memory and CPU time: Linux only")
	}
	rawN := min(n, envInt(b, "LABELSYNC_BENCH_EXPORT_SYNC_RAW_N", n))
	ctx, cancel := context.WithTimeout(context.Background(), 3*exportTimeout)
	defer cancel()
	logger := slog.New(slog.DiscardHandler)
	in := startExportInfra(ctx, b)
	at := time.Now().UTC()

	seeded, err := seedAnnotations(ctx, in.bus.JetStream(), n, 1, at)
	if err != nil {
		b.Fatal(err)
	}
	b.Logf("%s; seeded %d annotation events on %s in %s (untimed)", in, n, taskbus.AnnotationsStream, seeded.Round(time.Millisecond))

	// The objects are built before the raw pass, and dropped before the
	// sync: they must not count in its memory.
	raw := func() rawPass {
		objs, err := rawObjects(rawN, 1, at, "raw/")
		if err != nil {
			b.Fatal(err)
		}
		var raw rawPass
		asContender("raw", func() { raw, err = rawWrite(ctx, in.client, objs, in.gcs.pid) })
		if err != nil {
			b.Fatal(err)
		}
		return raw
	}()
	sample := ""
	if rawN < n {
		sample = fmt.Sprintf(" (a sample: the first %d of the %d objects, LABELSYNC_BENCH_EXPORT_SYNC_RAW_N)", rawN, n)
	}
	b.Logf("raw write%s: %s", sample, raw)

	target := benchExport(b, "sync/")
	x, _, reg := newExporter(ctx, b, in, target, logger)
	syncs, err := export.NewSyncs(ctx, in.bus.JetStream())
	if err != nil {
		b.Fatal(err)
	}
	rctx, stopSyncs := context.WithCancel(ctx)
	ran := make(chan error, 1)
	asContender("labelsync", func() {
		go func() { ran <- x.RunSyncs(rctx, syncs, logger) }()
	})
	defer func() { stopSyncs(); <-ran }()

	mw := watchMemory(50 * time.Millisecond)
	mark := markCPU(in.gcs.pid, in.nats.pid)
	start := time.Now()
	if _, err := syncs.Request(ctx, exportStorage); err != nil {
		b.Fatal(err)
	}
	var st export.Status
	for deadline := time.Now().Add(exportTimeout); ; {
		if st, err = syncs.Status(ctx, exportStorage); err != nil {
			b.Fatal(err)
		}
		if st.Status != export.StatusQueued && st.Status != export.StatusInProgress {
			break
		}
		if time.Now().After(deadline) {
			b.Fatalf("sync not finished within %s: %+v", exportTimeout, st)
		}
		time.Sleep(20 * time.Millisecond)
	}
	took := time.Since(start)
	cpu := mark.since()
	mem := mw.stop()
	if st.Status != export.StatusCompleted || st.LastSyncCount == nil || *st.LastSyncCount != int64(n) || st.Meta.Annotations != int64(n) || st.Meta.Errors != 0 {
		b.Fatalf("sync status %s, %v written, meta %+v: want completed, %d annotations written, no errors", st.Status, st.LastSyncCount, st.Meta, n)
	}
	rate := float64(n) / took.Seconds()
	self, others := cpu.perItem(n)
	b.Logf("sync: %d objects in %s from the request (the sync's own duration %.3f s): %.0f objects/s; CPU µs/object: %.1f here, %.1f fake GCS, %.1f NATS; machine %.0f%% busy",
		n, took.Round(time.Millisecond), st.Meta.Duration, rate, self, others[0], others[1], cpu.busyPct)
	b.Logf("sync memory: %s", mem)
	if err := checkExported(ctx, in, reg, target.Prefix, n); err != nil {
		b.Fatal(err)
	}
	ev, err := annotationEvent(1, at)
	if err != nil {
		b.Fatal(err)
	}
	raw0, _ := exportedObject(ev, "raw/")
	if err := checkSameBody(ctx, in.client, export.ObjectName(&target, ev.AnnotationID, ev.TaskID), raw0.name); err != nil {
		b.Fatal(err)
	}
	natsRSS, natsHWM, _ := procMemory(in.nats.pid)
	b.Logf("synced exactly %d objects, same bytes as the raw writer's; %.1f %% of the raw write%s; NATS process RSS %.1f MB (peak %.1f MB)",
		n, 100*rate/raw.rate(), sample, mb(natsRSS), mb(natsHWM))

	rself, _ := raw.cpu.perItem(raw.n)
	rawCPU, syncCPU := raw.cpu.totalPerItem(raw.n), cpu.totalPerItem(n)
	b.ReportMetric(0, "ns/op")
	b.ReportMetric(rate, "sync_objects/s")
	b.ReportMetric(raw.rate(), "raw_objects/s")
	b.ReportMetric(100*rate/raw.rate(), "pct_of_raw_write")
	b.ReportMetric(100*rawCPU/syncCPU, "pct_of_raw_cpu")
	b.ReportMetric(self, "sync_cpu_us/object")
	b.ReportMetric(rself, "raw_cpu_us/object")
	b.ReportMetric(others[1], "sync_nats_cpu_us/object")
	b.ReportMetric(mb(mem.peakRSS), "peak_rss_MB")
	b.ReportMetric(mb(mem.peakRSS)-mb(mem.startRSS), "rss_growth_MB")
	b.ReportMetric(mb(mem.peakHeap), "peak_heap_MB")
	b.ReportMetric(mb(mem.endHeap), "end_heap_MB")
}

// BenchmarkWebhook measures Label Studio's webhook (webhook.Handler behind
// a net/http server on loopback) against a bare handler that reads the
// same body and publishes it unchanged to JetStream (PublishMsg, waiting
// for the acknowledgement), each with a NATS server of its own in an infra
// process. throughput: LABELSYNC_BENCH_WEBHOOK_N (default 40,000)
// ANNOTATION_UPDATED requests for distinct annotations from 32 clients, in
// LABELSYNC_BENCH_WEBHOOK_ROUNDS (default 10) rounds of both;
// latency: LABELSYNC_BENCH_WEBHOOK_RATE (default 500) requests/s for
// LABELSYNC_BENCH_WEBHOOK_SECONDS (default 10) after one unmeasured
// second.
func BenchmarkWebhook(b *testing.B) {
	n := envInt(b, "LABELSYNC_BENCH_WEBHOOK_N", 40_000)
	secs := envInt(b, "LABELSYNC_BENCH_WEBHOOK_SECONDS", 10)
	rate := envInt(b, "LABELSYNC_BENCH_WEBHOOK_RATE", 500)
	rounds := envInt(b, "LABELSYNC_BENCH_WEBHOOK_ROUNDS", 10)
	b.Run("throughput", func(b *testing.B) { benchWebhookThroughput(b, n, rounds) })
	b.Run("latency", func(b *testing.B) { benchWebhookLatency(b, rate, secs) })
}

const (
	contWebhook = "labelsync"
	contBare    = "bare"
)

// webhookTarget is one contender's HTTP server and its NATS server.
type webhookTarget struct {
	url     string
	natsPID int
	reg     *prometheus.Registry // labelsync only
	js      jetstream.JetStream
	stream  string
	stop    func()
}

// bareWebhook reads the body and publishes it unchanged to the raw stream,
// waiting for JetStream's acknowledgement.
type bareWebhook struct{ js jetstream.JetStream }

func (h bareWebhook) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, webhook.MaxBodyBytes))
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	if _, err := h.js.PublishMsg(r.Context(), &nats.Msg{Subject: "bench.raw.webhook", Data: body}); err != nil {
		http.Error(w, err.Error(), http.StatusServiceUnavailable)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_, _ = io.WriteString(w, `{"accepted": 1}`+"\n")
}

func startWebhookTarget(ctx context.Context, b *testing.B, cont string) *webhookTarget {
	b.Helper()
	dir := b.TempDir()
	natsProc := startInfra(b, infraOptions{natsDir: dir})
	t := &webhookTarget{natsPID: natsProc.pid}
	var h http.Handler
	var closeConn func()
	switch cont {
	case contWebhook:
		nc, err := nats.Connect(natsProc.natsURL, nats.Name("labelsync-bench-webhook"))
		if err != nil {
			b.Fatal(err)
		}
		closeConn = nc.Close
		bus, err := taskbus.New(nc, 10*time.Second)
		if err != nil {
			b.Fatal(err)
		}
		if err := bus.EnsureStreams(ctx, taskbus.AnnotationsStream, taskbus.DeadLetterStream); err != nil {
			b.Fatal(err)
		}
		t.reg = prometheus.NewRegistry()
		h = webhook.New(webhookSecret, bus.JetStream(), func() int64 { return bus.MaxMessageBytes(taskbus.AnnotationsStream) },
			metrics.New(t.reg), slog.New(slog.DiscardHandler))
		t.js, t.stream = bus.JetStream(), taskbus.AnnotationsStream
	case contBare:
		js, closeRaw, err := rawJetStream(ctx, natsProc.natsURL)
		if err != nil {
			b.Fatal(err)
		}
		closeConn = closeRaw
		h = bareWebhook{js: js}
		t.js, t.stream = js, "BENCH_RAW"
	}
	mux := http.NewServeMux()
	mux.Handle(webhook.Path, h)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	asContender(cont, func() {
		go func() { _ = srv.Serve(l) }()
	})
	t.url = "http://" + l.Addr().String() + webhook.Path
	t.stop = sync.OnceFunc(func() {
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
		closeConn()
		_ = natsProc.stop()
		removeStore(dir)
	})
	b.Cleanup(t.stop)
	return t
}

// webhookClient posts webhook bodies over keep-alive connections.
type webhookClient struct {
	c   *http.Client
	url string
}

func newWebhookClient(url string) *webhookClient {
	return &webhookClient{url: url, c: &http.Client{
		Timeout: 30 * time.Second,
		Transport: &http.Transport{
			Proxy:               nil,
			MaxIdleConns:        256,
			MaxIdleConnsPerHost: 256,
			IdleConnTimeout:     time.Minute,
			DisableCompression:  true,
		},
	}}
}

// post sends one body and fails unless the answer is 2xx.
func (w *webhookClient) post(ctx context.Context, body []byte) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, w.url, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+webhookSecret)
	resp, err := w.c.Do(req)
	if err != nil {
		return err
	}
	out, err := io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	if err != nil {
		return err
	}
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("POST %s: %s %s", w.url, resp.Status, strings.TrimSpace(string(out)))
	}
	return nil
}

func (w *webhookClient) close() { w.c.CloseIdleConnections() }

// checkStored fails unless t's stream holds n messages; on labelsync's, on
// n subjects, with n requests counted accepted.
func (t *webhookTarget) checkStored(ctx context.Context, n int) error {
	st, err := t.js.Stream(ctx, t.stream)
	if err != nil {
		return err
	}
	info, err := st.Info(ctx)
	if err != nil {
		return err
	}
	if info.State.Msgs != uint64(n) {
		return fmt.Errorf("%s holds %d messages, want %d", t.stream, info.State.Msgs, n)
	}
	if t.reg == nil {
		return nil
	}
	if info.State.NumSubjects != uint64(n) {
		return fmt.Errorf("%s holds %d subjects, want %d", t.stream, info.State.NumSubjects, n)
	}
	accepted, err := counterSum(t.reg, "labelsync_webhook_requests_total")
	if err != nil {
		return err
	}
	if accepted != float64(n) {
		return fmt.Errorf("%.0f webhook requests counted, want %d accepted", accepted, n)
	}
	return nil
}

// webhookPass is one contender's throughput run.
type webhookPass struct {
	cont    string
	n       int
	elapsed time.Duration
	cpu     cpuUse
}

func (p webhookPass) rate() float64 { return float64(p.n) / p.elapsed.Seconds() }

func (p webhookPass) String() string {
	self, others := p.cpu.perItem(p.n)
	return fmt.Sprintf("%-9s %d requests answered 2xx in %s: %.0f requests/s; CPU µs/request: %.1f here (server and clients), %.1f NATS; machine %.0f%% busy",
		p.cont, p.n, p.elapsed.Round(time.Millisecond), p.rate(), self, others[0], p.cpu.busyPct)
}

func benchWebhookThroughput(b *testing.B, n, rounds int) {
	ctx, cancel := context.WithTimeout(context.Background(), exportTimeout)
	defer cancel()
	if rounds < 1 || n < rounds {
		b.Fatalf("%d requests in %d rounds", n, rounds)
	}
	at := time.Now().UTC()
	bodies := make([][]byte, n)
	for i := range n {
		bodies[i] = annotationWebhook(i+1, at)
	}
	// Both contenders run side by side and take turns: each pass posts the
	// next slice of the same bodies (new annotations for labelsync).
	type contender struct {
		t *webhookTarget
		c *webhookClient
	}
	conts := map[string]contender{}
	for _, cont := range []string{contBare, contWebhook} {
		t := startWebhookTarget(ctx, b, cont)
		c := newWebhookClient(t.url)
		defer c.close()
		conts[cont] = contender{t, c}
	}
	per := n / rounds
	pass := func(cont string, r int) webhookPass {
		k := conts[cont]
		mark := markCPU(k.t.natsPID)
		from, to := r*per, (r+1)*per
		if r == rounds-1 {
			to = n
		}
		took, err := parallel(to-from, webhookClients, func(i int) error { return k.c.post(ctx, bodies[from+i]) })
		p := webhookPass{cont: cont, n: to - from, elapsed: took, cpu: mark.since()}
		if err != nil {
			b.Fatalf("%s: %v", cont, err)
		}
		return p
	}
	// Rounds of both, the order alternating (bare first, then labelsync
	// first), so that the machine's drift falls on both alike; the figure
	// is the pooled rate, with the median of the rounds' ratios beside it.
	// Passes of 20,000 requests (2 s each, a new NATS server each) ran
	// from 84 to 102 % of the bare handler within one hour here: the
	// machine's speed drifts over seconds.
	var sums [2]struct {
		n       int
		elapsed time.Duration
		cpu     time.Duration // all processes
		self    time.Duration
		nats    time.Duration
	}
	var ratios []float64
	for r := range rounds {
		order := []string{contBare, contWebhook}
		if r%2 == 1 {
			order = []string{contWebhook, contBare}
		}
		var rates [2]float64
		for _, cont := range order {
			p := pass(cont, r)
			i := 0
			if cont == contWebhook {
				i = 1
			}
			sums[i].n += p.n
			sums[i].elapsed += p.elapsed
			sums[i].self += p.cpu.self
			sums[i].nats += p.cpu.others[0]
			sums[i].cpu += p.cpu.self + p.cpu.others[0]
			rates[i] = p.rate()
		}
		ratios = append(ratios, 100*rates[1]/rates[0])
	}
	for _, cont := range []string{contBare, contWebhook} {
		if err := conts[cont].t.checkStored(ctx, n); err != nil {
			b.Fatalf("%s: %v", cont, err)
		}
	}
	median := medianOf(ratios)
	bareRate := float64(sums[0].n) / sums[0].elapsed.Seconds()
	lsRate := float64(sums[1].n) / sums[1].elapsed.Seconds()
	bareCPU, lsCPU := us(sums[0].cpu, sums[0].n), us(sums[1].cpu, sums[1].n)
	b.Logf("%d rounds of %d requests each: labelsync %.0f requests/s, bare %.0f: %.1f %% pooled, round ratios %.1f–%.1f %% (median %.1f); CPU µs/request in all processes %.1f vs %.1f (%.1f %%)",
		rounds, per, lsRate, bareRate, 100*lsRate/bareRate, ratios[0], ratios[len(ratios)-1], median, lsCPU, bareCPU, 100*bareCPU/lsCPU)
	b.ReportMetric(0, "ns/op")
	b.ReportMetric(lsRate, "webhook_requests/s")
	b.ReportMetric(bareRate, "bare_requests/s")
	b.ReportMetric(100*lsRate/bareRate, "pct_of_bare")
	b.ReportMetric(median, "pct_of_bare_median")
	b.ReportMetric(100*bareCPU/lsCPU, "pct_of_bare_cpu")
	b.ReportMetric(us(sums[1].self, sums[1].n), "webhook_cpu_us/request")
	b.ReportMetric(us(sums[1].nats, sums[1].n), "webhook_nats_cpu_us/request")
	b.ReportMetric(us(sums[0].self, sums[0].n), "bare_cpu_us/request")
	b.ReportMetric(us(sums[0].nats, sums[0].n), "bare_nats_cpu_us/request")
}

// medianOf sorts xs (the rounds' ratios) and returns their median.
func medianOf(xs []float64) float64 {
	slices.Sort(xs)
	m := xs[len(xs)/2]
	if len(xs)%2 == 0 {
		m = (xs[len(xs)/2-1] + m) / 2
	}
	return m
}

// us is d in µs per item.
func us(d time.Duration, n int) float64 { return float64(d.Microseconds()) / float64(n) }

func benchWebhookLatency(b *testing.B, rate, secs int) {
	ctx, cancel := context.WithTimeout(context.Background(), exportTimeout)
	defer cancel()
	warm, total := rate, (1+secs)*rate
	at := time.Now().UTC()
	bodies := make([][]byte, total)
	for i := range total {
		bodies[i] = annotationWebhook(i+1, at)
	}
	b.ReportMetric(0, "ns/op")
	for _, cont := range []string{contWebhook, contBare} {
		t := startWebhookTarget(ctx, b, cont)
		c := newWebhookClient(t.url)
		lat := make([]time.Duration, total)
		errs := make([]error, total)
		var wg sync.WaitGroup
		interval := time.Second / time.Duration(rate)
		start := time.Now()
		// Open loop: every request starts on its schedule in a goroutine
		// of its own, whatever the earlier ones are doing, and is timed
		// from just before it is sent to its answer's last byte.
		for i := range total {
			if d := time.Until(start.Add(time.Duration(i) * interval)); d > 0 {
				time.Sleep(d)
			}
			wg.Go(func() {
				t0 := time.Now()
				errs[i] = c.post(ctx, bodies[i])
				lat[i] = time.Since(t0)
			})
		}
		sent := time.Since(start)
		wg.Wait()
		if err := errors.Join(errs...); err != nil {
			b.Fatalf("%s: %v", cont, err)
		}
		if err := t.checkStored(ctx, total); err != nil {
			b.Fatalf("%s: %v", cont, err)
		}
		c.close()
		t.stop()
		m := slices.Clone(lat[warm:])
		slices.Sort(m)
		q := func(p float64) time.Duration { return m[int(p*float64(len(m)-1))] }
		ms := func(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
		r := func(d time.Duration) time.Duration { return d.Round(10 * time.Microsecond) }
		b.Logf("%-9s %d requests at %.0f/s (first %d left out, %d measured): p50 %s, p90 %s, p99 %s, max %s",
			cont, total, float64(total)/sent.Seconds(), warm, len(m), r(q(0.5)), r(q(0.9)), r(q(0.99)), r(m[len(m)-1]))
		b.ReportMetric(ms(q(0.50)), cont+"_p50_ms")
		b.ReportMetric(ms(q(0.99)), cont+"_p99_ms")
		if cont == contWebhook {
			b.ReportMetric(ms(m[len(m)-1]), cont+"_max_ms")
		}
	}
}
