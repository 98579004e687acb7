// Package natstest is the NATS set-up tests share: an embedded nats-server
// with JetStream in a temporary directory, a connection to it, and
// labelsync's bus with its streams created. Everything started is stopped
// by the test's cleanup.
package natstest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
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

// CaughtUp returns nil once consumer has been handed every message stored
// so far in stream on subjects (a filter) and each was acknowledged, and
// otherwise an error saying what is outstanding, for a test that waits.
//
// A consumer's NumPending alone cannot say that: the server counts a
// message as pending only when its stream signals it to the consumers,
// which is after the publisher got its acknowledgement. Right after a
// publish, or a burst of them under load, a consumer can report nothing
// pending and nothing unacknowledged while messages are stored that it has
// not delivered yet.
func CaughtUp(ctx context.Context, js jetstream.JetStream, stream, consumer, subjects string) error {
	s, err := js.Stream(ctx, stream)
	if err != nil {
		return err
	}
	last, err := s.GetLastMsgForSubject(ctx, subjects)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	c, err := s.Consumer(ctx, consumer)
	if err != nil {
		return err
	}
	info, err := c.Info(ctx)
	if err != nil {
		return err
	}
	if info.Delivered.Stream < last.Sequence || info.NumAckPending > 0 {
		return fmt.Errorf("%s delivered up to %d of %d, %d unacknowledged", consumer, info.Delivered.Stream, last.Sequence, info.NumAckPending)
	}
	return nil
}

// Node is one server of a Cluster: in this process, or a child process
// (ProcessCluster) that Stop kills with SIGKILL, as a crashed machine goes.
// Start starts a stopped node again on the same ports and storage.
type Node struct {
	tb   testing.TB
	opts natsembed.Options
	name string
	srv  *natsembed.Server // in-process
	proc bool
	cmd  *exec.Cmd // a child process
}

// Name is the node's server name, as JetStream reports a leader.
func (n *Node) Name() string { return n.name }

// URL is the node's client URL.
func (n *Node) URL() string { return "nats://" + n.opts.Addr }

// Stop shuts an in-process node down, or kills a child process (no-op if
// the node is down).
func (n *Node) Stop() {
	if n.srv != nil {
		n.srv.Shutdown()
		n.srv = nil
	}
	if n.cmd != nil {
		_ = n.cmd.Process.Kill()
		_ = n.cmd.Wait()
		n.cmd = nil
	}
}

// Start starts a stopped node again with its storage.
func (n *Node) Start() {
	n.tb.Helper()
	if !n.proc {
		srv, err := natsembed.Start(n.opts)
		if err != nil {
			n.tb.Fatal(err)
		}
		n.srv = srv
		return
	}
	spec, err := json.Marshal(n.opts)
	if err != nil {
		n.tb.Fatal(err)
	}
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), childEnv+"="+string(spec))
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Start(); err != nil {
		n.tb.Fatal(err)
	}
	n.cmd = cmd
	deadline := time.Now().Add(30 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", n.opts.Addr, time.Second)
		if err == nil {
			c.Close()
			return
		}
		if time.Now().After(deadline) {
			n.tb.Fatalf("natstest: node %s not listening after 30s: %v", n.name, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// childEnv carries a node's options to a test binary started as that node.
const childEnv = "LABELSYNC_NATSTEST_NODE"

// ServeIfChild must be the first call of TestMain in a package that uses
// ProcessCluster: in a process started as a node it runs the server until
// the process is killed, and never returns; elsewhere it returns at once.
func ServeIfChild() {
	spec := os.Getenv(childEnv)
	if spec == "" {
		return
	}
	var opts natsembed.Options
	if err := json.Unmarshal([]byte(spec), &opts); err != nil {
		fmt.Fprintln(os.Stderr, "natstest: node options:", err)
		os.Exit(2)
	}
	// Warnings and errors go to the test's output, so that a cluster
	// misbehaving in a test can be read.
	opts.Logger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn})).With("node", opts.Cluster.ServerName)
	if _, err := natsembed.Start(opts); err != nil {
		fmt.Fprintln(os.Stderr, "natstest:", err)
		os.Exit(1)
	}
	select {}
}

// ProcessCluster is Cluster with every node a child process running this
// test binary (whose TestMain calls ServeIfChild), so that Stop kills a
// node the way a crash does: no goodbye to its peers, nothing flushed.
func ProcessCluster(tb testing.TB, size int) ([]*Node, string) {
	tb.Helper()
	return cluster(tb, size, true)
}

// Cluster starts a JetStream cluster of size nodes on loopback, each with
// its own storage, and waits until it has a meta leader. The returned URLs
// string lists every node, for a client that must survive losing one.
func Cluster(tb testing.TB, size int) ([]*Node, string) {
	tb.Helper()
	return cluster(tb, size, false)
}

func cluster(tb testing.TB, size int, proc bool) ([]*Node, string) {
	tb.Helper()
	clients, routes := make([]string, size), make([]string, size)
	for i := range size {
		clients[i], routes[i] = FreeAddr(tb), FreeAddr(tb)
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
		n := &Node{tb: tb, name: fmt.Sprintf("n%d", i+1), proc: proc, opts: natsembed.Options{
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
	// Ready when a stream with a replica on every node can be placed: a meta
	// leader alone is not enough, the other nodes must have joined it.
	deadline := time.Now().Add(30 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		_, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "natstest_ready", Subjects: []string{"natstest.ready"}, Replicas: size, Storage: jetstream.MemoryStorage})
		if err == nil {
			err = js.DeleteStream(ctx, "natstest_ready")
		}
		cancel()
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			tb.Fatalf("natstest: cluster of %d not formed after 30s: %v", size, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
	nc.Close()
	return nodes, all
}

// FreeAddr returns a loopback host:port nothing listens on at the moment.
func FreeAddr(tb testing.TB) string {
	tb.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}
