package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"cloud.google.com/go/pubsub/v2"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/labelsync/labelsync/internal/config"
	"github.com/labelsync/labelsync/internal/gpubsub"
	"github.com/labelsync/labelsync/internal/taskbus"
	"github.com/labelsync/labelsync/internal/worker"
)

// BenchmarkLatency publishes notifications at a steady rate and reports the
// time from each Publish call to the arrival of the resulting JetStream
// message on an ordered consumer in the same process: for labelsync's
// worker, and for the raw pipeline (bare subscriber, sync JetStream publish,
// ack) on the same Pub/Sub server, so that the server's own delivery latency
// can be told apart from labelsync's.
func BenchmarkLatency(b *testing.B) {
	secs := envInt(b, "LABELSYNC_BENCH_LATENCY_SECONDS", 20)
	warm := envInt(b, "LABELSYNC_BENCH_LATENCY_WARMUP_SECONDS", 5)
	rate := envInt(b, "LABELSYNC_BENCH_LATENCY_RATE", 1000)
	for _, be := range backends(b) {
		b.Run(be.name, func(b *testing.B) {
			benchLatency(b, be, latencyPlan{rate: rate, warm: warm * rate, total: (warm + secs) * rate})
		})
	}
}

// latencyPlan: publish total notifications at rate per second; the first
// warm are left out of the percentiles (connections, pools and the
// emulator's JIT settle there).
type latencyPlan struct {
	rate, warm, total int
}

func benchLatency(b *testing.B, be backend, plan latencyPlan) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	addr, stopPubsub := be.start(b)
	defer stopPubsub()
	c := newClient(ctx, b, addr)
	storagesFile := writeStoragesFile(b)

	b.ReportMetric(0, "ns/op")
	for _, cont := range []string{contLabelsync, contRawPipeline} {
		g := newNotifications(newID("lat"))
		checkNotifications(b, g)
		topic, sub := newID("lat-topic"), newID("lat-sub")
		if err := createTopic(ctx, c, topic); err != nil {
			b.Fatal(err)
		}
		if err := createSubscription(ctx, c, sub, topic); err != nil {
			b.Fatal(err)
		}
		srv, stopNATS := startNATS(b)
		nc, err := nats.Connect(srv.URL())
		if err != nil {
			b.Fatal(err)
		}
		js, err := jetstream.New(nc)
		if err != nil {
			b.Fatal(err)
		}

		var (
			stopContender func() error
			stream        string
			filter        string
			keyOf         func([]byte) string
		)
		switch cont {
		case contLabelsync:
			stopContender = startLatencyWorker(ctx, b, addr, sub, be.recv, srv.URL(), storagesFile)
			stream, filter = taskbus.TasksStream, "labelsync.tasks.>"
			keyOf = func(data []byte) string {
				var ev struct {
					Key string `json:"key"`
				}
				_ = json.Unmarshal(data, &ev)
				return ev.Key
			}
		case contRawPipeline:
			stopContender = startRawPipeline(ctx, b, newClient(ctx, b, addr), sub, be.recv, js)
			stream, filter = "BENCH_RAW", "bench.raw.>"
			keyOf = func(data []byte) string {
				var o struct {
					Name string `json:"name"`
				}
				_ = json.Unmarshal(data, &o)
				return o.Name
			}
		}

		res, err := measureLatency(ctx, c, topic, g, plan, js, stream, filter, keyOf)
		if stopErr := stopContender(); stopErr != nil && err == nil {
			err = stopErr
		}
		nc.Close()
		stopNATS()
		if err != nil {
			b.Fatalf("%s on %s: %v", cont, be.name, err)
		}

		lat := res.lat
		q := func(p float64) time.Duration { return lat[int(p*float64(len(lat)-1))] }
		ms := func(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
		var sum time.Duration
		for _, d := range lat {
			sum += d
		}
		b.ReportMetric(ms(q(0.50)), cont+"_p50_ms")
		b.ReportMetric(ms(q(0.99)), cont+"_p99_ms")
		if cont == contLabelsync {
			b.ReportMetric(ms(q(0.90)), cont+"_p90_ms")
			b.ReportMetric(ms(lat[len(lat)-1]), cont+"_max_ms")
		}
		r := func(d time.Duration) time.Duration { return d.Round(10 * time.Microsecond) }
		b.Logf("%s: %-12s %d at %.0f/s (first %d left out, %d measured; %s): p50 %s, p90 %s, p99 %s, max %s, mean %s",
			be.name, cont, plan.total, res.pubRate, plan.warm, len(lat), be.recv,
			r(q(0.5)), r(q(0.9)), r(q(0.99)), r(lat[len(lat)-1]), r(sum/time.Duration(len(lat))))
	}
}

// startLatencyWorker runs a worker in-process on sub and returns a function
// that stops it and returns Run's error.
func startLatencyWorker(ctx context.Context, b *testing.B, addr, sub string, r receive, natsURL, storagesFile string) func() error {
	b.Helper()
	logger, err := config.Logging{LogLevel: "info", LogFormat: "json"}.Logger(io.Discard)
	if err != nil {
		b.Fatal(err)
	}
	w, err := worker.New(ctx, workerConfig(natsURL, addr, sub, r, storagesFile), logger)
	if err != nil {
		b.Fatal(err)
	}
	runCtx, stop := context.WithCancel(ctx)
	finished := make(chan error, 1)
	go func() { finished <- w.Run(runCtx) }()
	if err := waitReady(ctx, w.HTTPAddr(), 30*time.Second); err != nil {
		stop()
		<-finished
		b.Fatal(err)
	}
	return func() error {
		stop()
		return <-finished
	}
}

// startRawPipeline receives sub with a bare subscriber that publishes each
// message's payload to the BENCH_RAW stream, waits for the PubAck and acks.
func startRawPipeline(ctx context.Context, b *testing.B, c *pubsub.Client, sub string, r receive, js jetstream.JetStream) func() error {
	b.Helper()
	if err := createRawStream(ctx, js); err != nil {
		b.Fatal(err)
	}
	s := c.Subscriber(sub)
	gpubsub.ApplyReceiveSettings(s, r.streams, r.maxOutstanding)
	rctx, stop := context.WithCancel(ctx)
	finished := make(chan error, 1)
	go func() {
		finished <- s.Receive(rctx, func(ctx context.Context, m *pubsub.Message) {
			if _, err := js.Publish(ctx, "bench.raw.notifications", m.Data); err != nil {
				m.Nack()
				return
			}
			m.Ack()
		})
	}()
	return func() error {
		stop()
		return <-finished
	}
}

type latencyResult struct {
	lat     []time.Duration // sorted
	pubRate float64
}

// measureLatency publishes plan.total notifications to topic at plan.rate,
// one Publish RPC each (no batching delay between the timestamp and the
// wire), and times each one to the arrival of its message in stream on an
// ordered consumer (a stored message: a core subscription would also see
// publishes JetStream then rejects). keyOf extracts the object key from the
// stored message.
func measureLatency(ctx context.Context, c *pubsub.Client, topic string, g notifications, plan latencyPlan, js jetstream.JetStream, stream, filter string, keyOf func([]byte) string) (latencyResult, error) {
	// Nanoseconds since base, +1 so that 0 means "not yet".
	published := make([]atomic.Int64, plan.total)
	arrived := make([]atomic.Int64, plan.total)
	var arrivals, strays atomic.Int64
	base := time.Now()

	cons, err := js.OrderedConsumer(ctx, stream, jetstream.OrderedConsumerConfig{FilterSubjects: []string{filter}})
	if err != nil {
		return latencyResult{}, err
	}
	cc, err := cons.Consume(func(m jetstream.Msg) {
		at := int64(time.Since(base)) + 1
		i, ok := g.index(keyOf(m.Data()))
		if !ok || i >= plan.total || !arrived[i].CompareAndSwap(0, at) {
			strays.Add(1)
			return
		}
		arrivals.Add(1)
	})
	if err != nil {
		return latencyResult{}, err
	}
	defer cc.Stop()

	p := c.Publisher(topic)
	p.PublishSettings.CountThreshold = 1
	p.PublishSettings.DelayThreshold = time.Millisecond
	defer p.Stop()
	results := make([]*pubsub.PublishResult, plan.total)
	interval := time.Second / time.Duration(plan.rate)
	start := time.Now()
	for i := range plan.total {
		m := g.message(i)
		if d := time.Until(start.Add(time.Duration(i) * interval)); d > 0 {
			time.Sleep(d)
		}
		published[i].Store(int64(time.Since(base)) + 1)
		results[i] = p.Publish(ctx, m)
	}
	pubRate := float64(plan.total) / time.Since(start).Seconds()
	for i, r := range results {
		if _, err := r.Get(ctx); err != nil {
			return latencyResult{}, fmt.Errorf("publish %d: %w", i, err)
		}
	}
	for deadline := time.Now().Add(30 * time.Second); arrivals.Load() < int64(plan.total) && time.Now().Before(deadline); {
		time.Sleep(20 * time.Millisecond)
	}
	if got := arrivals.Load(); got != int64(plan.total) {
		return latencyResult{}, fmt.Errorf("%d of %d arrived within 30 s of the last publish (%d strays)", got, plan.total, strays.Load())
	}
	if s := strays.Load(); s != 0 {
		return latencyResult{}, fmt.Errorf("%d stored messages were duplicates or not ours", s)
	}
	lat := make([]time.Duration, 0, plan.total-plan.warm)
	for i := plan.warm; i < plan.total; i++ {
		lat = append(lat, time.Duration(arrived[i].Load()-published[i].Load()))
	}
	slices.Sort(lat)
	return latencyResult{lat: lat, pubRate: pubRate}, nil
}
