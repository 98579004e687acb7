// Package deadletter is the worker's failure path, one Watermill
// middleware: a handler that panics has failed permanently (the same input
// would panic again); a transient failure is retried in place with
// exponential backoff, then nacked for redelivery; a permanent failure is
// stored in the dead-letter stream with its reason and then acknowledged.
//
// The dead letter's source is the message's UUID, which subscribers set to
// the transport's message id (the Pub/Sub message id).
//
// The message is acknowledged only after JetStream stored the dead letter;
// if that fails, the message is nacked and comes back, so nothing is lost.
// One middleware instead of Watermill's Recoverer, Retry and PoisonQueue:
// the three cost more per message than the work of a notification.
package deadletter

import (
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"strings"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/labelsync/labelsync/internal/fault"
	"github.com/labelsync/labelsync/internal/metrics"
	"github.com/labelsync/labelsync/internal/taskbus"
)

type sink interface {
	DeadLetter(ctx context.Context, l taskbus.Letter) error
}

// Retry says how transient failures are retried before a nack.
type Retry struct {
	Attempts int           // including the first; 0 means 6
	Initial  time.Duration // first wait; 0 means 100ms
	Max      time.Duration // longest wait; 0 means 5s
}

// Middleware applies the failure path. code maps an error to a short,
// low-cardinality reason class for the labelsync_deadletter_total metric.
func Middleware(s sink, component string, code func(error) string, retry Retry, m *metrics.Metrics, logger *slog.Logger) message.HandlerMiddleware {
	if retry.Attempts <= 0 {
		retry.Attempts = 6
	}
	if retry.Initial <= 0 {
		retry.Initial = 100 * time.Millisecond
	}
	if retry.Max <= 0 {
		retry.Max = 5 * time.Second
	}
	return func(h message.HandlerFunc) message.HandlerFunc {
		return func(msg *message.Message) ([]*message.Message, error) {
			out, err := call(h, msg)
			wait := retry.Initial
			for attempt := 1; err != nil && !fault.IsPermanent(err) && attempt < retry.Attempts; attempt++ {
				logger.Warn("handler failed, retrying", "err", err, "attempt", attempt, "wait", wait)
				select {
				case <-msg.Context().Done():
					return nil, err
				case <-time.After(wait + time.Duration(rand.Int64N(int64(wait)/2+1))):
				}
				wait = min(2*wait, retry.Max)
				out, err = call(h, msg)
			}
			if err == nil || !fault.IsPermanent(err) {
				return out, err
			}
			l := taskbus.Letter{
				Reason:     taskbus.OneLine(err.Error()),
				Code:       code(err),
				Component:  component,
				Source:     taskbus.Source{PubsubMessageID: msg.UUID},
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

// call runs h, turning a panic into a permanent failure.
func call(h message.HandlerFunc, msg *message.Message) (out []*message.Message, err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fault.Permanent(fmt.Errorf("handler panicked: %v", p))
		}
	}()
	return h(msg)
}

// Attributes returns the original transport attributes, without the keys
// Watermill adds.
func Attributes(md message.Metadata) map[string]string {
	attrs := make(map[string]string, len(md))
	for k, v := range md {
		if strings.HasPrefix(k, "_watermill") {
			continue
		}
		attrs[k] = v
	}
	return attrs
}
