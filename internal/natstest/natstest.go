// Package natstest is the NATS set-up tests share: an embedded nats-server
// with JetStream in a temporary directory, a connection to it, and
// labelsync's bus with its streams created. Everything started is stopped
// by the test's cleanup.
package natstest

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/labelsync/labelsync/internal/natsembed"
	"github.com/labelsync/labelsync/internal/taskbus"
)

// Server starts an embedded NATS server with JetStream on a free loopback
// port, storing in a temporary directory.
func Server(tb testing.TB) *natsembed.Server {
	tb.Helper()
	srv, err := natsembed.Start(natsembed.Options{Addr: "127.0.0.1:0", StoreDir: tb.TempDir()})
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(srv.Shutdown)
	return srv
}

// Connect connects to url.
func Connect(tb testing.TB, url string, opts ...nats.Option) *nats.Conn {
	tb.Helper()
	nc, err := nats.Connect(url, opts...)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(nc.Close)
	return nc
}

// Bus connects to url and returns labelsync's bus with the task and
// dead-letter streams created.
func Bus(tb testing.TB, url string, opts ...nats.Option) *taskbus.Bus {
	tb.Helper()
	b, err := taskbus.New(Connect(tb, url, opts...), 5*time.Second)
	if err != nil {
		tb.Fatal(err)
	}
	if err := b.EnsureStreams(context.Background(), taskbus.TasksStream, taskbus.DeadLetterStream); err != nil {
		tb.Fatal(err)
	}
	return b
}

// NewBus is Bus on a new embedded server.
func NewBus(tb testing.TB) *taskbus.Bus {
	tb.Helper()
	return Bus(tb, Server(tb).URL())
}

// Messages returns every message stored in stream, in order.
func Messages(tb testing.TB, js jetstream.JetStream, stream string) []*jetstream.RawStreamMsg {
	tb.Helper()
	ctx := context.Background()
	s, err := js.Stream(ctx, stream)
	if err != nil {
		tb.Fatal(err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		tb.Fatal(err)
	}
	var out []*jetstream.RawStreamMsg
	for seq := info.State.FirstSeq; info.State.Msgs > 0 && seq <= info.State.LastSeq; seq++ {
		m, err := s.GetMsg(ctx, seq)
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			continue // deleted
		}
		if err != nil {
			tb.Fatal(err)
		}
		out = append(out, m)
	}
	return out
}
