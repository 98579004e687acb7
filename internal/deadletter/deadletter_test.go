package deadletter

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/labelsync/labelsync/internal/fault"
	"github.com/labelsync/labelsync/internal/metrics"
	"github.com/labelsync/labelsync/internal/taskbus"
)

// sink is a hand-written stand-in for the dead-letter stream: the
// middleware's contract with it is one method.
type fakeSink struct {
	letters []taskbus.Letter
	err     error
}

func (s *fakeSink) DeadLetter(_ context.Context, l taskbus.Letter) error {
	if s.err != nil {
		return s.err
	}
	s.letters = append(s.letters, l)
	return nil
}

func run(t *testing.T, s *fakeSink, h message.HandlerFunc) error {
	t.Helper()
	mw := Middleware(s, "worker", func(error) string { return "c" }, Retry{Attempts: 3, Initial: time.Millisecond, Max: 2 * time.Millisecond},
		metrics.New(prometheus.NewRegistry()), slog.New(slog.NewTextHandler(io.Discard, nil)))
	msg := message.NewMessage("42", []byte("payload"))
	msg.Metadata.Set("bucketId", "b")
	msg.Metadata.Set("_watermill_x", "internal")
	msg.SetContext(context.Background())
	_, err := mw(h)(msg)
	return err
}

func TestFailurePath(t *testing.T) {
	t.Parallel()
	t.Run("permanent failure is stored once, then acked", func(t *testing.T) {
		t.Parallel()
		s := &fakeSink{}
		calls := 0
		err := run(t, s, func(*message.Message) ([]*message.Message, error) {
			calls++
			return nil, fault.Permanent(errors.New("events: bad\nthing"))
		})
		if err != nil || calls != 1 || len(s.letters) != 1 {
			t.Fatalf("err %v, calls %d, letters %d; want nil, 1, 1", err, calls, len(s.letters))
		}
		l := s.letters[0]
		if l.Reason != "events: bad thing" || l.Source.PubsubMessageID != "42" || string(l.Data) != "payload" ||
			l.Attributes["bucketId"] != "b" || len(l.Attributes) != 1 {
			t.Fatalf("letter = %+v", l)
		}
	})
	t.Run("transient failure is retried then nacked", func(t *testing.T) {
		t.Parallel()
		s := &fakeSink{}
		calls := 0
		err := run(t, s, func(*message.Message) ([]*message.Message, error) {
			calls++
			return nil, errors.New("nats: timeout")
		})
		if err == nil || calls != 3 || len(s.letters) != 0 {
			t.Fatalf("err %v, calls %d, letters %d; want error, 3, 0", err, calls, len(s.letters))
		}
	})
	t.Run("transient then success", func(t *testing.T) {
		t.Parallel()
		calls := 0
		err := run(t, &fakeSink{}, func(*message.Message) ([]*message.Message, error) {
			calls++
			if calls < 2 {
				return nil, errors.New("flaky")
			}
			return nil, nil
		})
		if err != nil || calls != 2 {
			t.Fatalf("err %v, calls %d", err, calls)
		}
	})
	t.Run("panic is dead-lettered", func(t *testing.T) {
		t.Parallel()
		s := &fakeSink{}
		err := run(t, s, func(*message.Message) ([]*message.Message, error) { panic("boom") })
		if err != nil || len(s.letters) != 1 || !strings.Contains(s.letters[0].Reason, "boom") {
			t.Fatalf("err %v, letters %+v", err, s.letters)
		}
	})
	t.Run("dead-letter store down: nacked, not lost", func(t *testing.T) {
		t.Parallel()
		s := &fakeSink{err: errors.New("nats: no responders")}
		err := run(t, s, func(*message.Message) ([]*message.Message, error) {
			return nil, fault.Permanent(errors.New("bad"))
		})
		if err == nil {
			t.Fatal("want an error (nack) when the dead letter cannot be stored")
		}
	})
}
