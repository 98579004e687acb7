// Package natstest is the NATS set-up tests share: an embedded nats-server
// with JetStream in a temporary directory, a connection to it, and
// labelsync's bus with its streams created. Everything started is stopped
// by the test's cleanup.
package natstest

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
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

// Node is one server of a Cluster; Stop and Start restart it on the same
// ports and storage.
type Node struct {
	tb   testing.TB
	opts natsembed.Options
	srv  *natsembed.Server
}

// URL is the node's client URL.
func (n *Node) URL() string { return "nats://" + n.opts.Addr }

// Stop shuts the node down (no-op if it is down).
func (n *Node) Stop() {
	if n.srv != nil {
		n.srv.Shutdown()
		n.srv = nil
	}
}

// Start starts a stopped node again with its storage.
func (n *Node) Start() {
	n.tb.Helper()
	srv, err := natsembed.Start(n.opts)
	if err != nil {
		n.tb.Fatal(err)
	}
	n.srv = srv
}

// Cluster starts a JetStream cluster of size nodes on loopback, each with
// its own storage, and waits until it has a meta leader. The returned URLs
// string lists every node, for a client that must survive losing one.
func Cluster(tb testing.TB, size int) ([]*Node, string) {
	tb.Helper()
	clients, routes := make([]string, size), make([]string, size)
	for i := range size {
		clients[i], routes[i] = freeAddr(tb), freeAddr(tb)
	}
	var urls []string
	nodes := make([]*Node, size)
	for i := range size {
		var routeURLs []string
		for j, r := range routes {
			if j != i {
				routeURLs = append(routeURLs, "nats-route://"+r)
			}
		}
		n := &Node{tb: tb, opts: natsembed.Options{
			Addr:     clients[i],
			StoreDir: tb.TempDir(),
			Cluster: &natsembed.Cluster{
				Name: "labelsync-test", ServerName: fmt.Sprintf("n%d", i+1), Addr: routes[i], Routes: routeURLs,
			},
		}}
		n.Start()
		tb.Cleanup(n.Stop)
		nodes[i] = n
		urls = append(urls, n.URL())
	}
	all := strings.Join(urls, ",")
	nc := Connect(tb, all)
	js, err := jetstream.New(nc)
	if err != nil {
		tb.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		_, err := js.AccountInfo(ctx)
		cancel()
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			tb.Fatalf("natstest: no JetStream meta leader after 30s: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	nc.Close()
	return nodes, all
}

func freeAddr(tb testing.TB) string {
	tb.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}
