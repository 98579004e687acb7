// Package deadletter is the router-level dead-letter path: a Watermill
// middleware that sends a message whose handler failed permanently to the
// dead-letter stream, with the reason, and then acknowledges it. Transient
// failures pass through untouched, to be retried.
//
// The message is acknowledged only after JetStream stored the dead letter;
// if that fails, the message is nacked and comes back, so nothing is lost.
package deadletter

import (
	"context"
	"fmt"
	"log/slog"
	"strings"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/labelsync/labelsync/internal/fault"
	"github.com/labelsync/labelsync/internal/metrics"
	"github.com/labelsync/labelsync/internal/taskbus"
)

// MessageIDKey is the metadata key under which subscribers store the
// transport's message id (the Pub/Sub message id).
const MessageIDKey = "labelsync-message-id"

type sink interface {
	DeadLetter(ctx context.Context, l taskbus.Letter) error
}

// Middleware dead-letters permanent failures. code maps an error to a short,
// low-cardinality reason class for the labelsync_deadletter_total metric.
func Middleware(s sink, component string, code func(error) string, m *metrics.Metrics, logger *slog.Logger) message.HandlerMiddleware {
	return func(h message.HandlerFunc) message.HandlerFunc {
		return func(msg *message.Message) ([]*message.Message, error) {
			out, err := h(msg)
			if err == nil || !fault.IsPermanent(err) {
				return out, err
			}
			l := taskbus.Letter{
				Reason:     oneLine(err.Error()),
				Code:       code(err),
				Component:  component,
				Source:     taskbus.Source{PubsubMessageID: msg.Metadata.Get(MessageIDKey)},
				Attributes: Attributes(msg.Metadata),
				Data:       msg.Payload,
			}
			if dlErr := s.DeadLetter(msg.Context(), l); dlErr != nil {
				return nil, fmt.Errorf("deadletter: store %q: %w", l.Reason, dlErr)
			}
			m.DeadLetters.WithLabelValues(component, l.Code).Inc()
			logger.Warn("dead-lettered", "reason", l.Reason, "code", l.Code, "source", l.Source.PubsubMessageID)
			return nil, nil
		}
	}
}

// Attributes returns the original transport attributes, without the keys
// labelsync and Watermill add.
func Attributes(md message.Metadata) map[string]string {
	attrs := make(map[string]string, len(md))
	for k, v := range md {
		if k == MessageIDKey || strings.HasPrefix(k, "_watermill") {
			continue
		}
		attrs[k] = v
	}
	return attrs
}

func oneLine(s string) string {
	return strings.Join(strings.Fields(s), " ")
}
