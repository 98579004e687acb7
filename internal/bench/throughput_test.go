package bench

import (
	"context"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"cloud.google.com/go/pubsub/v2"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/labelsync/labelsync/internal/config"
	"github.com/labelsync/labelsync/internal/taskbus"
	"github.com/labelsync/labelsync/internal/worker"
)

// Contenders, in their default drain order. labelsync drains first: if the
// emulator gets faster as it warms up or as its backlog shrinks, the
// baselines, not labelsync, profit.
const (
	contLabelsync   = "labelsync"
	contRawPipeline = "raw_pipeline"
	contRawAck      = "raw_ack"
)

func contenders(b *testing.B) []string {
	v := os.Getenv("LABELSYNC_BENCH_CONTENDERS")
	if v == "" {
		return []string{contLabelsync, contRawPipeline, contRawAck}
	}
	var out []string
	for c := range strings.SplitSeq(v, ",") {
		c = strings.TrimSpace(c)
		switch c {
		case contLabelsync, contRawPipeline, contRawAck:
			out = append(out, c)
		default:
			b.Fatalf("LABELSYNC_BENCH_CONTENDERS: unknown contender %q (want %s, %s, %s)", c, contLabelsync, contRawPipeline, contRawAck)
		}
	}
	return out
}

// drainTimeout bounds one drain; a stuck drain fails instead of hanging.
const drainTimeout = 10 * time.Minute

// drain is one contender's result.
type drain struct {
	n       int
	elapsed time.Duration // first receive to the ack that completed the backlog
	// deliveries counts handler calls, so deliveries-n are redeliveries.
	deliveries int64
}

func (d drain) rate() float64 { return float64(d.n) / d.elapsed.Seconds() }

// BenchmarkThroughput drains the same backlog of notifications with
// labelsync and with two raw baselines, one at a time, and reports the rates
// and labelsync's share of each baseline.
func BenchmarkThroughput(b *testing.B) {
	n := envInt(b, "LABELSYNC_BENCH_N", 100_000)
	for _, be := range backends(b) {
		b.Run(be.name, func(b *testing.B) { benchThroughput(b, be, n) })
	}
}

func benchThroughput(b *testing.B, be backend, n int) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	conts := contenders(b)
	g := newNotifications(newID("run"))
	checkNotifications(b, g)
	storagesFile := writeStoragesFile(b)
	b.Logf("%s: backlog %d JSON_API_V1 OBJECT_FINALIZE notifications; receive settings for every contender: %s", be.name, n, be.recv)

	results := map[string]drain{}
	run := func(cont, addr, sub string) {
		d, err := drainWith(ctx, b, cont, addr, sub, be.recv, g, n, storagesFile)
		if err != nil {
			b.Fatalf("%s on %s: %v", cont, be.name, err)
		}
		results[cont] = d
		b.Logf("%s: %-12s drained %d in %s: %.0f msgs/s (%d redeliveries)",
			be.name, cont, d.n, d.elapsed.Round(time.Millisecond), d.rate(), d.deliveries-int64(d.n))
	}

	if be.perContender {
		for _, cont := range conts {
			addr, stop := be.start(b)
			c := newClient(ctx, b, addr)
			topic, sub := newID("topic"), newID("sub-"+cont)
			if err := createTopic(ctx, c, topic); err != nil {
				b.Fatal(err)
			}
			if err := createSubscription(ctx, c, sub, topic); err != nil {
				b.Fatal(err)
			}
			took, err := seed(ctx, c, topic, g, 0, n)
			if err != nil {
				b.Fatal(err)
			}
			b.Logf("%s: seeded %d for %s in %s (%.0f msgs/s)", be.name, n, cont, took.Round(time.Millisecond), float64(n)/took.Seconds())
			run(cont, addr, sub)
			_ = c.Close()
			stop()
		}
	} else {
		addr, stop := be.start(b)
		defer stop()
		c := newClient(ctx, b, addr)
		warmUp(ctx, b, c, addr, be.recv, min(20_000, n/5))
		topic := newID("topic")
		if err := createTopic(ctx, c, topic); err != nil {
			b.Fatal(err)
		}
		subs := map[string]string{}
		for _, cont := range conts {
			subs[cont] = newID("sub-" + cont)
			if err := createSubscription(ctx, c, subs[cont], topic); err != nil {
				b.Fatal(err)
			}
		}
		took, err := seed(ctx, c, topic, g, 0, n)
		if err != nil {
			b.Fatal(err)
		}
		b.Logf("%s: seeded %d to %d subscriptions in %s (%.0f msgs/s)", be.name, n, len(conts), took.Round(time.Millisecond), float64(n)/took.Seconds())
		for _, cont := range conts {
			run(cont, addr, subs[cont])
		}
	}

	b.ReportMetric(0, "ns/op")
	for _, cont := range conts {
		b.ReportMetric(results[cont].rate(), cont+"_msgs/s")
	}
	if ls, ok := results[contLabelsync]; ok {
		b.ReportMetric(float64(ls.deliveries-int64(ls.n)), "labelsync_redeliveries")
		if raw, ok := results[contRawPipeline]; ok {
			b.ReportMetric(100*ls.rate()/raw.rate(), "pct_of_raw_pipeline")
		}
		if raw, ok := results[contRawAck]; ok {
			b.ReportMetric(100*ls.rate()/raw.rate(), "pct_of_raw_ack")
		}
	}
}

// warmUp drains a throwaway backlog with a bare acker, so that a JVM
// emulator has compiled its hot paths before the first measured drain.
func warmUp(ctx context.Context, b *testing.B, c *pubsub.Client, addr string, r receive, n int) {
	b.Helper()
	if n == 0 {
		return
	}
	topic, sub := newID("warmup"), newID("warmup-sub")
	if err := createTopic(ctx, c, topic); err != nil {
		b.Fatal(err)
	}
	if err := createSubscription(ctx, c, sub, topic); err != nil {
		b.Fatal(err)
	}
	g := newNotifications(newID("warmup"))
	if _, err := seed(ctx, c, topic, g, 0, n); err != nil {
		b.Fatal(err)
	}
	d, err := drainRaw(ctx, newClient(ctx, b, addr), sub, r, g, n, func(context.Context, *pubsub.Message) error { return nil })
	if err != nil {
		b.Fatalf("warm-up: %v", err)
	}
	b.Logf("warm-up: %d drained by a bare acker at %.0f msgs/s (not reported)", n, d.rate())
}

func drainWith(ctx context.Context, b *testing.B, cont, addr, sub string, r receive, g notifications, n int, storagesFile string) (drain, error) {
	ctx, cancel := context.WithTimeout(ctx, drainTimeout)
	defer cancel()
	switch cont {
	case contRawAck:
		return drainRaw(ctx, newClient(ctx, b, addr), sub, r, g, n, func(context.Context, *pubsub.Message) error { return nil })
	case contRawPipeline:
		srv, stop := startNATS(b)
		defer stop()
		nc, err := nats.Connect(srv.URL())
		if err != nil {
			return drain{}, err
		}
		defer nc.Close()
		js, err := jetstream.New(nc)
		if err != nil {
			return drain{}, err
		}
		// The same storage settings as labelsync's task stream, one subject.
		if _, err := js.CreateStream(ctx, jetstream.StreamConfig{
			Name:       "BENCH_RAW",
			Subjects:   []string{"bench.raw.>"},
			Storage:    jetstream.FileStorage,
			Retention:  jetstream.LimitsPolicy,
			Duplicates: 2 * time.Minute,
		}); err != nil {
			return drain{}, err
		}
		return drainRaw(ctx, newClient(ctx, b, addr), sub, r, g, n, func(ctx context.Context, m *pubsub.Message) error {
			_, err := js.Publish(ctx, "bench.raw.notifications", m.Data)
			return err
		})
	case contLabelsync:
		return drainLabelsync(ctx, b, addr, sub, r, n, storagesFile)
	}
	return drain{}, fmt.Errorf("unknown contender %q", cont)
}

// drainRaw drains sub with a bare pubsub/v2 subscriber that calls work on
// each message and then acks it (nacks it if work fails). It stops once
// every one of the n notifications was acked at least once, and times from
// the first receive to that ack.
func drainRaw(ctx context.Context, c *pubsub.Client, sub string, r receive, g notifications, n int, work func(context.Context, *pubsub.Message) error) (drain, error) {
	s := c.Subscriber(sub)
	s.ReceiveSettings.NumGoroutines = r.streams
	s.ReceiveSettings.MaxOutstandingMessages = r.maxOutstanding

	acked := make([]atomic.Bool, n)
	var unique, calls, failures atomic.Int64
	var first, last atomic.Int64 // nanoseconds since base, +1 so 0 means unset
	var lastErr atomic.Value
	base := time.Now()
	rctx, cancel := context.WithCancel(ctx)
	defer cancel()
	err := s.Receive(rctx, func(ctx context.Context, m *pubsub.Message) {
		first.CompareAndSwap(0, int64(time.Since(base))+1)
		calls.Add(1)
		if err := work(ctx, m); err != nil {
			failures.Add(1)
			lastErr.Store(err)
			m.Nack()
			return
		}
		m.Ack()
		i, ok := g.index(m.Attributes["objectId"])
		if !ok || i >= n || acked[i].Swap(true) {
			return
		}
		if unique.Add(1) == int64(n) {
			last.Store(int64(time.Since(base)) + 1)
			cancel()
		}
	})
	if err != nil {
		return drain{}, fmt.Errorf("receive: %w", err)
	}
	if got := unique.Load(); got != int64(n) {
		return drain{}, fmt.Errorf("drained %d of %d (%d failed work, last error: %v): %w", got, n, failures.Load(), lastErr.Load(), ctx.Err())
	}
	return drain{n: n, elapsed: time.Duration(last.Load() - first.Load()), deliveries: calls.Load()}, nil
}

// drainLabelsync runs a worker in-process against sub, with its own NATS
// server, and times from the first task event stored in LABELSYNC_TASKS to
// the n-th. It then checks exactly-once: n notifications handled, n task
// events emitted, n messages in the stream.
func drainLabelsync(ctx context.Context, b *testing.B, addr, sub string, r receive, n int, storagesFile string) (drain, error) {
	srv, stopNATS := startNATS(b)
	defer stopNATS()
	logger, err := config.Logging{LogLevel: "info", LogFormat: "json"}.Logger(io.Discard)
	if err != nil {
		return drain{}, err
	}
	cfg := worker.Config{
		NATSURL:              srv.URL(),
		HTTPAddr:             "127.0.0.1:0",
		PubsubProject:        projectID,
		PubsubSubscription:   sub,
		PubsubStreams:        r.streams,
		PubsubMaxOutstanding: r.maxOutstanding,
		StoragesFile:         storagesFile,
		ShutdownTimeout:      30 * time.Second,
		Logging:              config.Logging{LogLevel: "info", LogFormat: "json"},
		PubsubEmulatorHost:   addr,
	}
	if err := cfg.Validate(); err != nil {
		return drain{}, err
	}
	w, err := worker.New(ctx, cfg, logger)
	if err != nil {
		return drain{}, err
	}
	runCtx, stop := context.WithCancel(ctx)
	defer stop()
	finished := make(chan struct{})
	var runErr error
	go func() {
		runErr = w.Run(runCtx)
		close(finished)
	}()
	stopWorker := sync.OnceValue(func() error {
		stop()
		select {
		case <-finished:
			return runErr
		case <-time.After(time.Minute):
			return fmt.Errorf("worker did not stop within a minute")
		}
	})
	defer stopWorker()

	nc, err := nats.Connect(srv.URL())
	if err != nil {
		return drain{}, err
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return drain{}, err
	}
	stream, err := js.Stream(ctx, taskbus.TasksStream)
	if err != nil {
		return drain{}, err
	}

	// Poll the stream's message count: one JetStream API round trip every
	// 5 ms, negligible next to the drain.
	base := time.Now()
	first := time.Duration(-1)
	var elapsed time.Duration
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for {
		info, err := stream.Info(ctx)
		if err != nil {
			return drain{}, fmt.Errorf("stream info: %w", err)
		}
		now := time.Since(base)
		if info.State.Msgs > 0 && first < 0 {
			first = now
		}
		if info.State.Msgs >= uint64(n) {
			elapsed = now - first
			break
		}
		select {
		case <-tick.C:
		case <-finished:
			return drain{}, fmt.Errorf("worker stopped after %d task events: %v", info.State.Msgs, runErr)
		case <-ctx.Done():
			return drain{}, fmt.Errorf("%d of %d task events: %w", info.State.Msgs, n, ctx.Err())
		}
	}

	// Every notification is acked once its event is stored; wait for the
	// counters to catch up, then check nothing was emitted twice.
	var handled, emitted float64
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if handled, err = counterSum(w.Registry(), "labelsync_notifications_total"); err != nil {
			return drain{}, err
		}
		if emitted, err = counterSum(w.Registry(), "labelsync_tasks_emitted_total"); err != nil {
			return drain{}, err
		}
		if handled >= float64(n) && emitted >= float64(n) {
			break
		}
	}
	byOutcome, err := outcomes(w.Registry())
	if err != nil {
		return drain{}, err
	}
	if err := stopWorker(); err != nil {
		return drain{}, fmt.Errorf("worker Run: %w", err)
	}
	info, err := stream.Info(ctx)
	if err != nil {
		return drain{}, err
	}
	if emitted != float64(n) || info.State.Msgs != uint64(n) || handled < float64(n) {
		return drain{}, fmt.Errorf("exactly-once violated or incomplete: %v handled, %v emitted, %d in stream, want %d (outcomes %v)", handled, emitted, info.State.Msgs, n, byOutcome)
	}
	if others := slices.DeleteFunc(mapKeys(byOutcome), func(k string) bool { return k == "emitted" || k == "duplicate" }); len(others) > 0 {
		return drain{}, fmt.Errorf("unexpected outcomes %v", byOutcome)
	}
	return drain{n: n, elapsed: elapsed, deliveries: int64(handled)}, nil
}

func mapKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	return out
}
