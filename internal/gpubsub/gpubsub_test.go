package gpubsub_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"sync"
	"testing"
	"time"

	"cloud.google.com/go/pubsub/v2"
	"cloud.google.com/go/pubsub/v2/pstest"
	"github.com/ThreeDotsLabs/watermill/message"

	"github.com/labelsync/labelsync/internal/gpubsub"
)

const project = "p"

// start returns a pstest server with topic "t" and subscription "s", a
// Subscriber on it, and a function that stops the server (also called when
// the test ends).
func start(t *testing.T, drain time.Duration) (*pstest.Server, *gpubsub.Subscriber, func() error) {
	t.Helper()
	srv := pstest.NewServer()
	stop := sync.OnceValue(srv.Close)
	t.Cleanup(func() { _ = stop() })
	c, err := pubsub.NewClient(t.Context(), project, gpubsub.ClientOptions(srv.Addr)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	if err := gpubsub.EnsureSubscription(t.Context(), c, project, "s", "t"); err != nil {
		t.Fatal(err)
	}
	sub := gpubsub.NewSubscriber(c, gpubsub.Config{Subscription: "s", Streams: 2, MaxOutstanding: 10, DrainTimeout: drain},
		slog.New(slog.NewTextHandler(io.Discard, nil)))
	return srv, sub, stop
}

// serve runs sub.Serve until the test ends and returns its error channel.
func serve(t *testing.T, sub *gpubsub.Subscriber, h message.HandlerFunc) <-chan error {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- sub.Serve(context.Background(), h) }()
	t.Cleanup(func() { _ = sub.Close() })
	return done
}

// acked waits until pstest has seen an ack for every message.
func acked(t *testing.T, srv *pstest.Server, n int) []*pstest.Message {
	t.Helper()
	for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		msgs := srv.Messages()
		done := 0
		for _, m := range msgs {
			if m.Acks > 0 {
				done++
			}
		}
		if len(msgs) == n && done == n {
			return msgs
		}
	}
	t.Fatalf("not every one of %d messages was acked: %+v", n, srv.Messages())
	return nil
}

func TestServeAcksByHandlerResult(t *testing.T) {
	t.Parallel()
	srv, sub, _ := start(t, 10*time.Second)
	ids := map[string]string{
		"ok":      srv.Publish("projects/p/topics/t", []byte("ok"), map[string]string{"k": "v"}),
		"fail":    srv.Publish("projects/p/topics/t", []byte("fail"), nil),
		"produce": srv.Publish("projects/p/topics/t", []byte("produce"), nil),
	}
	var mu sync.Mutex
	calls := map[string]int{}
	serve(t, sub, func(m *message.Message) ([]*message.Message, error) {
		mu.Lock()
		defer mu.Unlock()
		p := string(m.Payload)
		calls[p]++
		if m.UUID != ids[p] {
			t.Errorf("%s: UUID %q, want the Pub/Sub message id %q", p, m.UUID, ids[p])
		}
		switch {
		case p == "ok" && m.Metadata.Get("k") != "v":
			t.Errorf("ok: metadata %v, want the attributes", m.Metadata)
		case p == "fail" && calls[p] == 1:
			return nil, errors.New("transient") // nacked, so redelivered
		case p == "produce" && calls[p] == 1:
			// Nothing publishes produced messages: an error, so redelivered.
			return []*message.Message{message.NewMessage("x", nil)}, nil
		}
		return nil, nil
	})
	acked(t, srv, 3)
	mu.Lock()
	defer mu.Unlock()
	if calls["ok"] != 1 || calls["fail"] != 2 || calls["produce"] != 2 {
		t.Fatalf("handler calls %v, want ok 1, fail 2, produce 2", calls)
	}
}

// TestCloseDrainsInFlight: Close stops receiving but lets a handler in
// flight finish, and acks its message, before Serve returns.
func TestCloseDrainsInFlight(t *testing.T) {
	t.Parallel()
	srv, sub, _ := start(t, 10*time.Second)
	srv.Publish("projects/p/topics/t", []byte("slow"), nil)
	started, release := make(chan struct{}), make(chan struct{})
	var once sync.Once
	done := serve(t, sub, func(m *message.Message) ([]*message.Message, error) {
		once.Do(func() { close(started) })
		<-release
		if err := m.Context().Err(); err != nil {
			t.Errorf("handler context ended during the drain: %v", err)
		}
		return nil, nil
	})
	<-started
	closed := make(chan struct{})
	go func() { _ = sub.Close(); close(closed) }()
	select {
	case <-closed:
		t.Fatal("Close returned while a handler was still running")
	case <-time.After(200 * time.Millisecond):
	}
	close(release)
	<-closed
	if err := <-done; err != nil {
		t.Fatalf("Serve: %v", err)
	}
	acked(t, srv, 1)
	if sub.Receiving() {
		t.Fatal("Receiving after Serve returned")
	}
}

// TestDrainTimeoutEndsStuckHandlers: a handler that does not finish within
// DrainTimeout of Close sees its context end, and its message is not acked.
func TestDrainTimeoutEndsStuckHandlers(t *testing.T) {
	t.Parallel()
	srv, sub, _ := start(t, 300*time.Millisecond)
	srv.Publish("projects/p/topics/t", []byte("stuck"), nil)
	started := make(chan struct{})
	var once sync.Once
	done := serve(t, sub, func(m *message.Message) ([]*message.Message, error) {
		once.Do(func() { close(started) })
		<-m.Context().Done()
		return nil, m.Context().Err()
	})
	<-started
	begin := time.Now()
	_ = sub.Close()
	if err := <-done; err != nil {
		t.Fatalf("Serve: %v", err)
	}
	if took := time.Since(begin); took > 10*time.Second {
		t.Fatalf("shutdown took %s with a 300ms drain timeout", took)
	}
	if m := srv.Messages()[0]; m.Acks != 0 {
		t.Fatalf("stuck message acked %d times, want 0 (it is redelivered)", m.Acks)
	}
}

// TestDrainTimeoutBoundsAnUnreachableServer: when Pub/Sub is gone at
// shutdown, the acks of the drained handlers cannot be sent (the client
// retries them for a minute); Serve still returns within DrainTimeout.
func TestDrainTimeoutBoundsAnUnreachableServer(t *testing.T) {
	t.Parallel()
	srv, sub, stopServer := start(t, 500*time.Millisecond)
	srv.Publish("projects/p/topics/t", []byte("m"), nil)
	started, release := make(chan struct{}), make(chan struct{})
	var once sync.Once
	done := serve(t, sub, func(*message.Message) ([]*message.Message, error) {
		once.Do(func() { close(started) })
		<-release
		return nil, nil
	})
	<-started
	_ = stopServer()
	begin := time.Now()
	closed := make(chan struct{})
	go func() { _ = sub.Close(); close(closed) }()
	close(release)
	select {
	case <-closed:
	case <-time.After(20 * time.Second):
		t.Fatal("Close did not return 20s after the stop, with a 500ms drain timeout")
	}
	if err := <-done; err != nil {
		t.Fatalf("Serve: %v", err)
	}
	t.Logf("shutdown with the server gone took %s", time.Since(begin).Round(time.Millisecond))
}
