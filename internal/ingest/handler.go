package ingest

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"

	"github.com/labelsync/labelsync/internal/events"
	"github.com/labelsync/labelsync/internal/fault"
	"github.com/labelsync/labelsync/internal/ledger"
	"github.com/labelsync/labelsync/internal/metrics"
	"github.com/labelsync/labelsync/internal/storages"
	"github.com/labelsync/labelsync/internal/tracing"
)

// Notifications handles GCS notifications delivered through Watermill.
// Returning nil acknowledges the message; a permanent error sends it to the
// dead-letter path (package deadletter); any other error is retried.
type Notifications struct {
	pipeline *Pipeline
	storages func() *storages.Set
	metrics  *metrics.Metrics
	logger   *slog.Logger
	now      func() time.Time
}

// NewNotifications builds the handler. current returns the storages in force;
// it is called once per message so storages can change at run time.
func NewNotifications(p *Pipeline, current func() *storages.Set, m *metrics.Metrics, logger *slog.Logger) *Notifications {
	return &Notifications{pipeline: p, storages: current, metrics: m, logger: logger, now: time.Now}
}

// Handle is the Watermill handler function. A notification it cannot
// decode is a permanent fault.MalformedNotification (the failure path
// dead-letters it). Each matching storage is applied in turn; a storage
// whose object generation can never be imported is dead-lettered by the
// pipeline and the others go on.
//
// Each attempt is a span, "notification", continuing the trace the Pub/Sub
// message carries (traceparent or googclient_traceparent attributes), with
// children "decode", "match" and one "append" per matching storage.
func (h *Notifications) Handle(msg *message.Message) (err error) {
	tracer := h.pipeline.tracer
	ctx := msg.Context()
	if tracer != nil {
		ctx = tracing.ExtractMap(ctx, msg.Metadata)
	}
	ctx, span := tracing.Start(ctx, tracer, "notification", trace.SpanKindConsumer)
	defer func() { tracing.End(span, err) }()
	_, decode := tracing.Start(ctx, tracer, "decode", trace.SpanKindInternal)
	obj, err := events.DecodeAttributes(msg.Metadata, msg.Payload)
	tracing.End(decode, err)
	if err != nil {
		h.count(string(obj.EventType), ledger.DeadLetter)
		return fault.Permanent(fault.MalformedNotification, err)
	}
	if span.IsRecording() {
		span.SetAttributes(attribute.String("gcs.bucket", obj.Bucket), attribute.String("gcs.object", obj.Key),
			attribute.Int64("gcs.generation", obj.Generation), attribute.String("gcs.event_type", string(obj.EventType)))
	}
	outcome, err := h.handle(ctx, obj)
	if err != nil {
		return err
	}
	if span.IsRecording() {
		span.SetAttributes(attribute.String("outcome", outcome.String()))
	}
	if outcome == ledger.Emitted {
		h.metrics.NotificationLag.Observe(h.now().Sub(obj.EventTime).Seconds())
	}
	h.count(string(obj.EventType), outcome)
	return nil
}

func (h *Notifications) handle(ctx context.Context, obj events.Object) (ledger.Outcome, error) {
	o, ok := ledger.ObservationOf(obj)
	if !ok {
		return ledger.Filtered, nil
	}
	best := ledger.Filtered
	tracer := h.pipeline.tracer
	_, match := tracing.Start(ctx, tracer, "match", trace.SpanKindInternal)
	matched := h.storages().Match(obj.Bucket, obj.Key)
	if match.IsRecording() {
		match.SetAttributes(attribute.Int64("storages", int64(len(matched))))
	}
	match.End()
	for _, st := range matched {
		// A failure part-way leaves earlier storages done; the redelivery
		// finds them duplicates in their ledgers.
		actx, span := tracing.Start(ctx, tracer, "append", trace.SpanKindInternal)
		outcome, err := h.pipeline.Apply(actx, st, Object{Bucket: obj.Bucket, Key: obj.Key}, o, nil)
		if span.IsRecording() {
			span.SetAttributes(attribute.Int64("labelsync.storage_id", st.ID), attribute.Int64("labelsync.project", st.Project), attribute.String("outcome", outcome.String()))
		}
		tracing.End(span, err)
		if err != nil {
			return 0, fmt.Errorf("ingest: gs://%s/%s generation %d for storage %d: %w", obj.Bucket, obj.Key, obj.Generation, st.ID, err)
		}
		best = max(best, outcome)
	}
	return best, nil
}

func (h *Notifications) count(eventType string, outcome ledger.Outcome) {
	if eventType == "" {
		eventType = "unknown"
	}
	h.metrics.Notifications.WithLabelValues(eventType, outcome.String()).Inc()
}
