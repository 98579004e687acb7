package bench

import (
	"context"
	"fmt"
	"io"
	"os"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"cloud.google.com/go/pubsub/v2"
	"cloud.google.com/go/pubsub/v2/apiv1/pubsubpb"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/labelsync/labelsync/internal/config"
	"github.com/labelsync/labelsync/internal/gpubsub"
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
	// early and late are the rates over the 10–50 % and 50–90 % stretches
	// of the drain: a falling rate means a cost that grows with the stream.
	early, late float64
	// cpu is the CPU time the subscriber or worker and its NATS server
	// spent during the drain, wherever the server ran (drainNATS); not
	// Google's emulator's.
	cpu time.Duration
	// windowCPU is this process's CPU time between the drain's first and
	// last message, as its rate is timed: cpu without the setting up and
	// tearing down around it (a worker's start and graceful stop, a NATS
	// server's shutdown writing its index), which costs labelsync more
	// than the raw contenders. Without an embedded NATS server's time when
	// that runs in a process of its own.
	windowCPU time.Duration
	// alloc is the bytes this process allocated during the drain (the NATS
	// server's too when it is embedded), gcs the garbage collections it ran.
	alloc uint64
	gcs   uint32
	// busy is the share of all the machine's CPUs in use during the drain
	// (Google's emulator included), in percent.
	busy float64
}

func (d drain) cpuPerMsg() time.Duration { return d.cpu / time.Duration(d.n) }

func (d drain) windowCPUPerMsg() time.Duration { return d.windowCPU / time.Duration(d.n) }

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
	rounds := envInt(b, "LABELSYNC_BENCH_ROUNDS", 2)
	g := newNotifications(newID("run"))
	checkNotifications(b, g)
	storagesFile := writeStoragesFile(b)
	b.Logf("%s: backlog %d JSON_API_V1 OBJECT_FINALIZE notifications; receive settings for every contender: %s; %d rounds", be.name, n, be.recv, rounds)

	if !be.perContender {
		addr, stop := be.start(b)
		defer stop()
		warmUp(ctx, b, newClient(ctx, b, addr), addr, be.recv, conts, min(50_000, n/2), storagesFile)
	}

	// Every contender drains the same notifications from a fresh topic and
	// subscription that holds nothing else, seeded just before its drain:
	// both servers slow down with the number of messages they hold, so a
	// backlog still waiting for a later contender would tax the one that
	// drains. Rounds alternate the order (A B C, C B A, ...) so that
	// whatever drifts during the run (a JVM's JIT, the Go heap) is shared.
	total := map[string]drain{}
	// rates[round][contender], for each round's share of the raw pipeline.
	rates := make([]map[string]float64, rounds)
	for round := range rounds {
		rates[round] = map[string]float64{}
		order := slices.Clone(conts)
		if round%2 == 1 {
			slices.Reverse(order)
		}
		for _, cont := range order {
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
			cpu0 := processCPU() + childrenCPU()
			busy0, total0 := machineCPU()
			var ms0, ms1 runtime.MemStats
			runtime.ReadMemStats(&ms0)
			d, err := drainWith(ctx, b, cont, addr, sub, be.recv, g, n, storagesFile)
			d.cpu = processCPU() + childrenCPU() - cpu0
			runtime.ReadMemStats(&ms1)
			d.alloc, d.gcs = ms1.TotalAlloc-ms0.TotalAlloc, ms1.NumGC-ms0.NumGC
			if busy1, total1 := machineCPU(); total1 > total0 {
				d.busy = 100 * float64(busy1-busy0) / float64(total1-total0)
			}
			if err != nil {
				b.Fatalf("%s on %s: %v", cont, be.name, err)
			}
			var trend string
			if d.early > 0 {
				trend = fmt.Sprintf("; %.0f msgs/s over 10–50 %%, %.0f over 50–90 %%", d.early, d.late)
			}
			b.Logf("%s: round %d %-12s seeded in %s, drained %d in %s: %.0f msgs/s, %.1f µs CPU/msg (process and NATS; %.1f in the drain window), %.1f KB allocated/msg, %d GCs, machine %.0f%% busy (%d redeliveries%s)",
				be.name, round+1, cont, took.Round(time.Millisecond), d.n, d.elapsed.Round(time.Millisecond), d.rate(),
				float64(d.cpuPerMsg())/1e3, float64(d.windowCPUPerMsg())/1e3, float64(d.alloc)/float64(d.n)/1e3, d.gcs, d.busy, d.deliveries-int64(d.n), trend)
			rates[round][cont] = d.rate()
			t := total[cont]
			t.n += d.n
			t.elapsed += d.elapsed
			t.deliveries += d.deliveries
			t.cpu += d.cpu
			t.windowCPU += d.windowCPU
			total[cont] = t
			deleteTopic(ctx, c, topic, sub)
			_ = c.Close()
			stop()
		}
	}

	b.ReportMetric(0, "ns/op")
	for _, cont := range conts {
		b.ReportMetric(total[cont].rate(), cont+"_msgs/s")
		b.ReportMetric(float64(total[cont].cpuPerMsg())/1e3, cont+"_cpu_us/msg")
		b.ReportMetric(float64(total[cont].windowCPUPerMsg())/1e3, cont+"_window_cpu_us/msg")
	}
	if ls, ok := total[contLabelsync]; ok {
		b.ReportMetric(float64(ls.deliveries-int64(ls.n)), "labelsync_redeliveries")
		if raw, ok := total[contRawPipeline]; ok {
			b.ReportMetric(100*ls.rate()/raw.rate(), "pct_of_raw_pipeline")
			b.ReportMetric(medianShare(rates, contLabelsync, contRawPipeline), "pct_of_raw_pipeline_round_median")
		}
		if raw, ok := total[contRawAck]; ok {
			b.ReportMetric(100*ls.rate()/raw.rate(), "pct_of_raw_ack")
		}
	}
}

// medianShare is the median over rounds of a's rate as a percentage of
// b's in the same round. The pooled share weighs every drain by its
// length, so one round in which the emulator stalled (a drain at half its
// usual rate happens every few rounds, to either contender) moves it by
// points; the median of the paired rounds does not.
func medianShare(rates []map[string]float64, a, b string) float64 {
	var shares []float64
	for _, r := range rates {
		if r[a] > 0 && r[b] > 0 {
			shares = append(shares, 100*r[a]/r[b])
		}
	}
	if len(shares) == 0 {
		return 0
	}
	slices.Sort(shares)
	m := len(shares) / 2
	if len(shares)%2 == 0 {
		return (shares[m-1] + shares[m]) / 2
	}
	return shares[m]
}

// deleteTopic frees what a drained contender left on a long-lived server.
func deleteTopic(ctx context.Context, c *pubsub.Client, topic, sub string) {
	_ = c.SubscriptionAdminClient.DeleteSubscription(ctx, &pubsubpb.DeleteSubscriptionRequest{Subscription: "projects/" + projectID + "/subscriptions/" + sub})
	_ = c.TopicAdminClient.DeleteTopic(ctx, &pubsubpb.DeleteTopicRequest{Topic: topicName(topic)})
}

// warmUp has every contender drain a throwaway backlog of n before
// anything is measured. The emulator's JVM compiles its delivery and ack
// paths during the first drains, and the process, its NATS servers
// included, reaches its working size; until then every message costs more.
// With only a bare acker warming up, the first measured drain, always
// labelsync's, paid for the rest: in two 4-round runs it used 17–19 µs more
// CPU per message than labelsync's later drains.
func warmUp(ctx context.Context, b *testing.B, c *pubsub.Client, addr string, r receive, conts []string, n int, storagesFile string) {
	b.Helper()
	if n == 0 {
		return
	}
	for _, cont := range conts {
		topic, sub := newID("warmup"), newID("warmup-sub-"+cont)
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
		d, err := drainWith(ctx, b, cont, addr, sub, r, g, n, storagesFile)
		if err != nil {
			b.Fatalf("warm-up %s: %v", cont, err)
		}
		b.Logf("warm-up: %d drained by %s at %.0f msgs/s (not reported)", n, cont, d.rate())
		deleteTopic(ctx, c, topic, sub)
	}
}

func drainWith(ctx context.Context, b *testing.B, cont, addr, sub string, r receive, g notifications, n int, storagesFile string) (drain, error) {
	ctx, cancel := context.WithTimeout(ctx, drainTimeout)
	defer cancel()
	switch cont {
	case contRawAck:
		return drainRaw(ctx, newClient(ctx, b, addr), sub, r, g, n, func(context.Context, *pubsub.Message) error { return nil })
	case contRawPipeline:
		url, stop := drainNATS(b)
		defer stop()
		js, closeRaw, err := rawJetStream(ctx, url)
		if err != nil {
			return drain{}, err
		}
		defer closeRaw()
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
	gpubsub.ApplyReceiveSettings(s, r.streams, r.maxOutstanding)

	acked := make([]atomic.Bool, n)
	var unique, calls, failures atomic.Int64
	var first, last atomic.Int64       // nanoseconds since base, +1 so 0 means unset
	var cpuFirst, cpuLast atomic.Int64 // processCPU at the first and the completing callback
	var lastErr atomic.Value
	var marks [3]atomic.Int64 // when 10 %, 50 %, 90 % were acked
	base := time.Now()
	rctx, cancel := context.WithCancel(ctx)
	defer cancel()
	err := s.Receive(rctx, func(ctx context.Context, m *pubsub.Message) {
		if first.CompareAndSwap(0, int64(time.Since(base))+1) {
			cpuFirst.Store(int64(processCPU()))
		}
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
		switch unique.Add(1) {
		case int64(n) / 10:
			marks[0].Store(int64(time.Since(base)))
		case int64(n) / 2:
			marks[1].Store(int64(time.Since(base)))
		case int64(n) * 9 / 10:
			marks[2].Store(int64(time.Since(base)))
		case int64(n):
			last.Store(int64(time.Since(base)) + 1)
			cpuLast.Store(int64(processCPU()))
			cancel()
		}
	})
	if err != nil {
		return drain{}, fmt.Errorf("receive: %w", err)
	}
	if got := unique.Load(); got != int64(n) {
		return drain{}, fmt.Errorf("drained %d of %d (%d failed work, last error: %v): %w", got, n, failures.Load(), lastErr.Load(), ctx.Err())
	}
	m := func(i int) time.Duration { return time.Duration(marks[i].Load()) }
	return drain{
		n: n, elapsed: time.Duration(last.Load() - first.Load()), deliveries: calls.Load(),
		windowCPU: time.Duration(cpuLast.Load() - cpuFirst.Load()),
		early:     0.4 * float64(n) / (m(1) - m(0)).Seconds(),
		late:      0.4 * float64(n) / (m(2) - m(1)).Seconds(),
	}, nil
}

// drainLabelsync runs a worker in-process against sub, with its own NATS
// server, and times from the first task event stored in LABELSYNC_TASKS to
// the n-th. It then checks exactly-once: n notifications handled, n task
// events emitted, n messages in the stream.
func drainLabelsync(ctx context.Context, b *testing.B, addr, sub string, r receive, n int, storagesFile string) (drain, error) {
	url, stopNATS := drainNATS(b)
	defer stopNATS()
	logger, err := config.Logging{LogLevel: "info", LogFormat: "json"}.Logger(io.Discard)
	if err != nil {
		return drain{}, err
	}
	cfg := workerConfig(url, addr, sub, r, storagesFile)
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

	nc, err := nats.Connect(url)
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
	// 10 ms (well under 1 % of the CPU). The first stored event trails the
	// first receive by one pipeline latency (about a millisecond), and each
	// end of the interval is known to within 10 ms: under 0.5 % of a
	// multi-second drain.
	base := time.Now()
	first := time.Duration(-1)
	var cpuFirst, cpuLast time.Duration // processCPU when first and last were seen
	var elapsed time.Duration
	var marks [3]time.Duration // when 10 %, 50 %, 90 % were stored
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		info, err := stream.Info(ctx)
		if err != nil {
			return drain{}, fmt.Errorf("stream info: %w", err)
		}
		now := time.Since(base)
		if info.State.Msgs > 0 && first < 0 {
			first = now
			cpuFirst = processCPU()
		}
		for i, frac := range []float64{0.1, 0.5, 0.9} {
			if marks[i] == 0 && float64(info.State.Msgs) >= frac*float64(n) {
				marks[i] = now
			}
		}
		if info.State.Msgs >= uint64(n) {
			elapsed = now - first
			cpuLast = processCPU()
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
	return drain{
		n: n, elapsed: elapsed, deliveries: int64(handled), windowCPU: cpuLast - cpuFirst,
		early: 0.4 * float64(n) / (marks[1] - marks[0]).Seconds(),
		late:  0.4 * float64(n) / (marks[2] - marks[1]).Seconds(),
	}, nil
}

func mapKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	return out
}
