package bench

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"

	"github.com/labelsync/labelsync/internal/deadletter"
	"github.com/labelsync/labelsync/internal/ingest"
	"github.com/labelsync/labelsync/internal/metrics"
	"github.com/labelsync/labelsync/internal/storages"
	"github.com/labelsync/labelsync/internal/tracing"
	"github.com/labelsync/labelsync/internal/tracing/otlptest"
)

// pathConcurrency is how many notifications are in flight at once in
// BenchmarkNotificationPath: about what the worker's 1,000 outstanding
// messages keep busy on two cores.
const pathConcurrency = 256

// BenchmarkNotificationPath measures labelsync's own per-notification cost
// without Pub/Sub: the worker's handler (decode, match, ledger-conditioned
// append with the failure-path middleware around it) against an embedded
// NATS server, next to a raw JetStream publish of the same payload on a
// server of its own, both with pathConcurrency notifications in flight.
// The emulator drains of BenchmarkThroughput scatter by ±15 % between runs;
// this one moves by a few percent, so it is the one to compare changes to
// the handler path with. It handles LABELSYNC_BENCH_PATH_N notifications
// (default 50,000) per iteration and reports per-notification figures.
//
// Sub-benchmarks: tracing_off (no OTEL_* variables: the no-op provider) and
// tracing_on (every notification sampled and exported over OTLP/HTTP to an
// in-process receiver).
func BenchmarkNotificationPath(b *testing.B) {
	b.Run("tracing_off", func(b *testing.B) { notificationPath(b, tracing.Noop()) })
	b.Run("tracing_on", func(b *testing.B) {
		r := otlptest.Start(b)
		exp, err := otlptracehttp.New(context.Background(), otlptracehttp.WithEndpointURL(r.Endpoint()+"/v1/traces"))
		if err != nil {
			b.Fatal(err)
		}
		p, err := tracing.WithExporter(context.Background(), "labelsync-bench", exp)
		if err != nil {
			b.Fatal(err)
		}
		defer p.Close(slog.New(slog.DiscardHandler))
		notificationPath(b, p)
	})
}

func notificationPath(b *testing.B, tp *tracing.Provider) {
	n := envInt(b, "LABELSYNC_BENCH_PATH_N", 50_000)
	ctx := context.Background()
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))

	srv, _ := startNATS(b)
	bus := newBus(ctx, b, srv.URL(), "labelsync-bench-path")
	set := benchSet(b, storagesJSON)
	reg := prometheus.NewRegistry()
	m := metrics.New(reg)
	letters := deadletter.NewWriter(bus, "worker", m, logger)
	h := ingest.NewNotifications(ingest.New(bus, letters, m, logger, ingest.WithTracer(tp.Tracer())), func() *storages.Set { return set }, m, logger)
	failures, err := deadletter.Middleware(letters, deadletter.DefaultRetry(), logger)
	if err != nil {
		b.Fatal(err)
	}
	handle := failures(func(msg *message.Message) ([]*message.Message, error) { return nil, h.Handle(msg) })

	rawSrv, _ := startNATS(b)
	js, closeRaw, err := rawJetStream(ctx, rawSrv.URL())
	if err != nil {
		b.Fatal(err)
	}
	defer closeRaw()

	var ls, rawRun parallelRun
	var allocs, bytes uint64
	for range b.N {
		r, a, by := pathOnce(ctx, b, n, handle, js, reg)
		ls.took += r[0].took
		rawRun.took += r[1].took
		allocs += a
		bytes += by
	}
	total := float64(n * b.N)
	b.ReportMetric(0, "ns/op")
	b.ReportMetric(float64(ls.took.Nanoseconds())/total, "ns/notification")
	b.ReportMetric(float64(rawRun.took.Nanoseconds())/total, "raw_ns/notification")
	b.ReportMetric(float64(ls.took)/float64(rawRun.took), "x_raw")
	b.ReportMetric(float64(allocs)/total, "allocs/notification")
	b.ReportMetric(float64(bytes)/total, "B/notification")
}

// pathOnce handles n new keys with handle, then publishes their payloads
// raw with js, and returns both runs and the allocations of the first
// (NATS server included).
func pathOnce(ctx context.Context, b *testing.B, n int, handle message.HandlerFunc, js jetstream.JetStream, reg *prometheus.Registry) ([2]parallelRun, uint64, uint64) {
	// Every call gets keys of its own, so that each notification is a new
	// key, as in a drain.
	g := newNotifications(newID("path"))
	checkNotifications(b, g)
	msgs := make([]*message.Message, n)
	raw := make([][]byte, n)
	for i := range n {
		pm := g.message(i)
		msgs[i] = &message.Message{UUID: pm.ID, Metadata: pm.Attributes, Payload: pm.Data}
		msgs[i].SetContext(ctx)
		raw[i] = pm.Data
	}
	before, err := counterSum(reg, "labelsync_tasks_emitted_total")
	if err != nil {
		b.Fatal(err)
	}

	var m0, m1 runtime.MemStats
	runtime.ReadMemStats(&m0)
	ls := inParallel(n, func(i int) error { _, err := handle(msgs[i]); return err })
	runtime.ReadMemStats(&m1)
	if ls.err != nil {
		b.Fatal(ls.err)
	}
	rawRun := inParallel(n, func(i int) error {
		_, err := js.Publish(ctx, "bench.raw.notifications", raw[i])
		return err
	})
	if rawRun.err != nil {
		b.Fatal(rawRun.err)
	}
	after, err := counterSum(reg, "labelsync_tasks_emitted_total")
	if err != nil {
		b.Fatal(err)
	}
	if got := int(after - before); got != n {
		b.Fatalf("%d task events emitted for %d new keys", got, n)
	}
	return [2]parallelRun{ls, rawRun}, m1.Mallocs - m0.Mallocs, m1.TotalAlloc - m0.TotalAlloc
}

type parallelRun struct {
	took time.Duration
	err  error
}

// inParallel runs f(0..n-1) on pathConcurrency goroutines and times it.
func inParallel(n int, f func(i int) error) parallelRun {
	var next atomic.Int64
	var firstErr error
	var once sync.Once
	var wg sync.WaitGroup
	start := time.Now()
	for range min(n, pathConcurrency) {
		wg.Go(func() {
			for {
				i := int(next.Add(1) - 1)
				if i >= n {
					return
				}
				if err := f(i); err != nil {
					once.Do(func() { firstErr = errors.Join(err) })
					return
				}
			}
		})
	}
	wg.Wait()
	return parallelRun{took: time.Since(start), err: firstErr}
}
