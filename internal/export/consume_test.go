package export_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/nats-io/nats.go"

	"github.com/labelsync/labelsync/internal/deadletter"
	"github.com/labelsync/labelsync/internal/export"
	"github.com/labelsync/labelsync/internal/natstest"
	"github.com/labelsync/labelsync/internal/taskbus"
	"github.com/labelsync/labelsync/internal/testlog"
	"github.com/labelsync/labelsync/internal/testwait"
)

// An exporter that stops finishes the events in hand and hands back at
// once every event it pulled but did not start, so that another replica
// takes them now rather than after AckWait; so do events that arrive
// after it stopped.
func TestConsumeHandsBackEventsNotStartedAtShutdown(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	bus := natstest.NewBus(t)
	js := bus.JetStream()
	if err := bus.EnsureStreams(ctx, taskbus.AnnotationsStream); err != nil {
		t.Fatal(err)
	}
	const n = 200
	for i := range n {
		if _, err := js.PublishMsg(ctx, &nats.Msg{Subject: "labelsync.annotations.7." + strconv.Itoa(i+1), Data: []byte(`{}`)}); err != nil {
			t.Fatal(err)
		}
	}
	cfg := export.ConsumeConfig{Concurrency: 2, AckWait: time.Minute}
	release := make(chan struct{})
	var started, done atomic.Int64
	slow := func(*message.Message) ([]*message.Message, error) {
		started.Add(1)
		<-release
		done.Add(1)
		return nil, nil
	}
	cctx, stop := context.WithCancel(ctx)
	consumed := make(chan error, 1)
	go func() { consumed <- export.Consume(cctx, js, cfg, slow, testlog.Logger(t)) }()
	testwait.Until(t, 10*time.Second, 5*time.Millisecond, "two handlers started", func() error {
		if got := started.Load(); got != 2 {
			return fmt.Errorf("%d started", got)
		}
		return nil
	})
	stop()
	close(release)
	if err := <-consumed; err != nil {
		t.Fatal(err)
	}
	if done.Load() != started.Load() {
		t.Fatalf("%d events started, %d finished", started.Load(), done.Load())
	}
	// Events that arrive after the shutdown, and every event not finished,
	// come to another replica well within AckWait.
	for i := range n {
		if _, err := js.PublishMsg(ctx, &nats.Msg{Subject: "labelsync.annotations.7." + strconv.Itoa(n+i+1), Data: []byte(`{}`)}); err != nil {
			t.Fatal(err)
		}
	}
	var next subjects
	cctx, stop = context.WithCancel(ctx)
	defer stop()
	go func() { consumed <- export.Consume(cctx, js, cfg, next.handle, testlog.Logger(t)) }()
	next.wait(t, 2*n-int(done.Load()), 10*time.Second, fmt.Sprintf("on the next replica (AckWait %s)", cfg.AckWait))
	stop()
	if err := <-consumed; err != nil {
		t.Fatal(err)
	}
}

// Consume keeps trying to create its consumer while JetStream cannot (here
// the stream is not there yet), says so, and reports ready only once it
// receives; then it consumes what was published meanwhile.
func TestConsumeWaitsForItsConsumer(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	bus := natstest.NewBus(t)
	js := bus.JetStream()
	var ready atomic.Bool
	var handled atomic.Int64
	var logs testlog.Buffer
	cfg := export.ConsumeConfig{Ready: func() { ready.Store(true) }}
	cctx, stop := context.WithCancel(ctx)
	defer stop()
	consumed := make(chan error, 1)
	go func() {
		consumed <- export.Consume(cctx, js, cfg, func(*message.Message) ([]*message.Message, error) {
			handled.Add(1)
			return nil, nil
		}, slog.New(slog.NewTextHandler(io.MultiWriter(&logs, testlog.Writer(t)), nil)))
	}()
	testwait.Until(t, 10*time.Second, 10*time.Millisecond, "a warning that the consumer is not created", func() error {
		if !strings.Contains(logs.String(), "export: consumer not created; retrying") {
			return errors.New("none yet")
		}
		return nil
	})
	if ready.Load() {
		t.Fatal("ready before the consumer exists")
	}
	if err := bus.EnsureStreams(ctx, taskbus.AnnotationsStream); err != nil {
		t.Fatal(err)
	}
	if _, err := js.PublishMsg(ctx, &nats.Msg{Subject: "labelsync.annotations.7.1", Data: []byte(`{}`)}); err != nil {
		t.Fatal(err)
	}
	testwait.Until(t, 20*time.Second, 10*time.Millisecond, "ready, and the event handled", func() error {
		if !ready.Load() || handled.Load() != 1 {
			return fmt.Errorf("ready %v, %d handled", ready.Load(), handled.Load())
		}
		return nil
	})
	stop()
	if err := <-consumed; err != nil {
		t.Fatal(err)
	}
}

// subjects records the distinct subjects a handler saw.
type subjects struct {
	mu   sync.Mutex
	seen map[string]bool
}

func (s *subjects) handle(m *message.Message) ([]*message.Message, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.seen == nil {
		s.seen = map[string]bool{}
	}
	s.seen[m.Metadata.Get(deadletter.SubjectKey)] = true
	return nil, nil
}

// wait fails t unless n distinct subjects are seen within d.
func (s *subjects) wait(t *testing.T, n int, d time.Duration, where string) {
	t.Helper()
	testwait.Until(t, d, 10*time.Millisecond, fmt.Sprintf("%d events handled %s", n, where), func() error {
		s.mu.Lock()
		defer s.mu.Unlock()
		if len(s.seen) < n {
			return fmt.Errorf("%d", len(s.seen))
		}
		return nil
	})
}
