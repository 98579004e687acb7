package ingest

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/labelsync/labelsync/internal/events"
	"github.com/labelsync/labelsync/internal/fault"
	"github.com/labelsync/labelsync/internal/ledger"
	"github.com/labelsync/labelsync/internal/metrics"
	"github.com/labelsync/labelsync/internal/storages"
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
func (h *Notifications) Handle(msg *message.Message) error {
	obj, err := events.DecodeAttributes(msg.Metadata, msg.Payload)
	if err != nil {
		h.count(string(obj.EventType), ledger.DeadLetter)
		return fault.Permanent(fault.MalformedNotification, err)
	}
	outcome, err := h.handle(msg.Context(), obj)
	if err != nil {
		return err
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
	for _, st := range h.storages().Match(obj.Bucket, obj.Key) {
		// A failure part-way leaves earlier storages done; the redelivery
		// finds them duplicates in their ledgers.
		outcome, err := h.pipeline.Apply(ctx, st, Object{Bucket: obj.Bucket, Key: obj.Key}, o, nil)
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
