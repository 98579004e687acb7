package export

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"

	"github.com/labelsync/labelsync/internal/annotation"
	"github.com/labelsync/labelsync/internal/deadletter"
	"github.com/labelsync/labelsync/internal/fault"
	"github.com/labelsync/labelsync/internal/taskbus"
	"github.com/labelsync/labelsync/internal/tracing"
)

// ConsumerName is the durable consumer every exporter replica shares: each
// annotation message goes to one of them (work split, no double work).
const ConsumerName = "labelsync-exporter"

// ConsumeConfig tunes Consume.
type ConsumeConfig struct {
	// Concurrency is how many messages are handled at once (default 32).
	Concurrency int
	// AckWait is how long a message may be in hand before JetStream
	// redelivers it to a replica (default 30s; handlers extend it while
	// they work).
	AckWait time.Duration
	// DrainTimeout bounds how long messages in hand may finish after ctx
	// ends (default 30s); after it their handlers' contexts end too, and
	// the messages are redelivered later.
	DrainTimeout time.Duration
	// Ready, if set, is called once the consumer exists and messages are
	// being pulled (what /readyz reports).
	Ready func()
}

func (c *ConsumeConfig) defaults() {
	if c.Concurrency <= 0 {
		c.Concurrency = 32
	}
	if c.AckWait <= 0 {
		c.AckWait = 30 * time.Second
	}
	if c.DrainTimeout <= 0 {
		c.DrainTimeout = 30 * time.Second
	}
}

// maxAckPending is the consumer's limit of events in hand, all replicas
// together (four per handler of one replica), and how many a replica pulls
// at once.
func (c *ConsumeConfig) maxAckPending() int { return 4 * c.Concurrency }

// Handler is the Watermill handler of one annotation message: it decodes
// the event and applies it. Wrap it in the failure path (package
// deadletter) before Consume.
//
// Each attempt is a span, "export", in the trace of the webhook request
// that stored the event (its traceparent header).
func (x *Exporter) Handler(msg *message.Message) (_ []*message.Message, err error) {
	ctx, span := tracing.Start(msg.Context(), x.tracer, "export", trace.SpanKindConsumer)
	defer func() { tracing.End(span, err) }()
	_, events, err := annotation.Decode(msg.Payload)
	if errors.Is(err, annotation.ErrSkipped) {
		return nil, fault.Permanent(fault.BadInput, fmt.Errorf("export: %s is not an annotation change", msg.Metadata.Get(deadletter.SubjectKey)))
	}
	if err != nil {
		return nil, err
	}
	if len(events) != 1 {
		return nil, fault.Permanent(fault.BadInput, fmt.Errorf("export: a stored annotation message holds %d annotations, want 1", len(events)))
	}
	if span.IsRecording() {
		span.SetAttributes(attribute.String("labelsync.action", events[0].Action), attribute.Int64("labelsync.project", events[0].Project),
			attribute.Int64("labelsync.annotation_id", events[0].AnnotationID))
	}
	return nil, x.Apply(ctx, events[0])
}

// Consume receives annotation messages through the shared durable consumer
// and runs handle on each, Concurrency at a time. A message is acknowledged
// when handle returns nil (the failure path has returned nil for a
// dead-lettered one too) and negatively acknowledged with a growing delay
// otherwise, so JetStream redelivers it. Consume returns when ctx ends,
// once the messages in hand finished or DrainTimeout passed.
func Consume(ctx context.Context, js jetstream.JetStream, cfg ConsumeConfig, handle message.HandlerFunc, logger *slog.Logger) error {
	cfg.defaults()
	cons, ok := createConsumer(ctx, js, cfg, logger)
	if !ok {
		return nil // ctx ended first
	}
	// Handlers outlive ctx by up to DrainTimeout: work in hand finishes.
	work, stopWork := context.WithCancel(context.WithoutCancel(ctx))
	defer stopWork()
	msgs := make(chan jetstream.Msg)
	// Consume pulls as many events as may be unacknowledged (MaxAckPending),
	// so that a handler finds the next one here rather than waits for a
	// pull: BenchmarkExportWrite ran 2–3 points faster than with
	// Concurrency, within its noise.
	cc, err := cons.Consume(func(m jetstream.Msg) {
		select {
		case msgs <- m:
		case <-ctx.Done():
			// Not taken: handed back, for another replica now rather
			// than after AckWait.
			if err := m.Nak(); err != nil {
				logger.Warn("export: handing back an event not started", "subject", m.Subject(), "err", err)
			}
		}
	}, jetstream.PullMaxMessages(cfg.maxAckPending()), jetstream.ConsumeErrHandler(func(_ jetstream.ConsumeContext, err error) {
		if !errors.Is(err, jetstream.ErrNoHeartbeat) {
			logger.Warn("export: consumer", "err", err)
		}
	}))
	if err != nil {
		return fmt.Errorf("export: consume: %w", err)
	}
	if cfg.Ready != nil {
		cfg.Ready()
	}
	var wg sync.WaitGroup
	for range cfg.Concurrency {
		wg.Go(func() {
			for {
				select {
				case m := <-msgs:
					handleOne(work, m, cfg.AckWait, handle, logger)
				case <-ctx.Done():
					return
				}
			}
		})
	}
	<-ctx.Done()
	// Drain, not Stop: the events pulled but not yet given to the callback
	// pass through it and are handed back now. After Stop, those the
	// subscription still held when it unsubscribed were dropped, to come
	// back only after AckWait: restarting Consume between the rounds of
	// BenchmarkExportWrite stalled 2 restarts in 35 for 30 s with Stop,
	// none in 56 with Drain. One DrainTimeout bounds both waits.
	drain, endDrain := context.WithTimeout(context.Background(), cfg.DrainTimeout)
	defer endDrain()
	cc.Drain()
	select {
	case <-cc.Closed():
	case <-drain.Done():
		logger.Warn("export: handing back the events pulled timed out; they will be redelivered after AckWait")
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-drain.Done():
		logger.Warn("export: drain timed out; messages in hand will be redelivered")
		stopWork()
		<-done
	}
	return nil
}

// createConsumer creates or updates the shared consumer, retrying until
// ctx ends: while a cluster elects leaders (a node lost, a restart) the
// request times out, and an exporter that gave up then stopped for good
// while its webhook had stored events (the likely cause of a
// TestClusterNodeLoss/exporter failure in CI, where no object was written
// in 40 s). It reports false when ctx ended first.
func createConsumer(ctx context.Context, js jetstream.JetStream, cfg ConsumeConfig, logger *slog.Logger) (jetstream.Consumer, bool) {
	for attempt := 0; ; attempt++ {
		cons, err := js.CreateOrUpdateConsumer(ctx, taskbus.AnnotationsStream, jetstream.ConsumerConfig{
			Durable:       ConsumerName,
			Description:   "labelsync exporters: annotation events to target storages",
			AckPolicy:     jetstream.AckExplicitPolicy,
			AckWait:       cfg.AckWait,
			MaxAckPending: cfg.maxAckPending(),
			DeliverPolicy: jetstream.DeliverAllPolicy,
		})
		if err == nil {
			return cons, true
		}
		if ctx.Err() != nil {
			return nil, false
		}
		delay := min(5*time.Second, 100*time.Millisecond<<min(attempt, 6))
		logger.Warn("export: consumer not created; retrying", "consumer", ConsumerName, "attempt", attempt+1, "in", delay, "err", err)
		select {
		case <-time.After(delay):
		case <-ctx.Done():
			return nil, false
		}
	}
}

// handleOne runs handle on m and acknowledges it or hands it back.
func handleOne(ctx context.Context, m jetstream.Msg, ackWait time.Duration, handle message.HandlerFunc, logger *slog.Logger) {
	md, err := m.Metadata()
	if err != nil {
		logger.Error("export: message without metadata", "subject", m.Subject(), "err", err)
		return
	}
	msg := message.NewMessage(strconv.FormatUint(md.Sequence.Stream, 10), m.Data())
	for k, vs := range m.Headers() {
		if len(vs) > 0 {
			msg.Metadata.Set(k, vs[0])
		}
	}
	msg.Metadata.Set(deadletter.SubjectKey, m.Subject())
	// Keep the message ours while a slow target storage is retried.
	hctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		t := time.NewTicker(ackWait / 3)
		defer t.Stop()
		for {
			select {
			case <-hctx.Done():
				return
			case <-t.C:
				if err := m.InProgress(); err != nil {
					// The message may go to another replica after AckWait;
					// newest-wins makes a second application harmless.
					logger.Warn("export: extending the ack deadline", "subject", m.Subject(), "err", err)
				}
			}
		}
	}()
	msg.SetContext(tracing.Extract(hctx, m.Headers()))
	if _, err := handle(msg); err != nil {
		delay := min(30*time.Second, time.Second<<min(md.NumDelivered, 5))
		logger.Warn("export: event not applied; redelivering", "subject", m.Subject(), "delivery", md.NumDelivered, "in", delay, "err", err)
		if nakErr := m.NakWithDelay(delay); nakErr != nil {
			logger.Warn("export: nak", "subject", m.Subject(), "err", nakErr)
		}
		return
	}
	// A plain ack, not a double one: the effect is durable already, and an
	// ack that gets lost only brings the event back after AckWait, to be
	// found done (a stale skip). Waiting for the server's confirmation
	// would hold a handler slot for a round trip per event.
	if err := m.Ack(); err != nil {
		logger.Warn("export: ack", "subject", m.Subject(), "err", err)
	}
}
