// Package natsembed runs a NATS server with JetStream inside the process, for
// the worker's zero-configuration mode (LABELSYNC_NATS_URL empty), make run
// and tests. It is a real nats-server, not a fake: clients connect to it over
// TCP exactly as they would to a separate one.
package natsembed

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"strconv"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// Options configures an embedded server.
type Options struct {
	// Addr is host:port to listen on; port 0 picks a free one.
	Addr string
	// StoreDir holds JetStream's file storage. Required: state must survive
	// a restart, because the task stream is also the import ledger.
	StoreDir string
	// SyncAlways makes JetStream fsync every write before acknowledging it,
	// so an acknowledged task survives power loss, not just a process crash.
	SyncAlways bool
	Logger     *slog.Logger `json:"-"`
	// Cluster, when set, makes the server one node of a JetStream cluster.
	Cluster *Cluster
}

// Cluster places a server in a JetStream cluster (tests of replicated
// streams; production runs nats-server itself).
type Cluster struct {
	Name       string   // the cluster's name, the same on every node
	ServerName string   // this node's name, unique in the cluster
	Addr       string   // host:port the node listens on for routes
	Routes     []string // every node's route URL, nats-route://host:port (its own is ignored)
}

// Server is a running embedded NATS server.
type Server struct {
	ns *server.Server
}

// Start starts the server and waits until it accepts connections.
func Start(opts Options) (*Server, error) {
	if opts.StoreDir == "" {
		return nil, errors.New("natsembed: StoreDir is required")
	}
	host, portStr, err := net.SplitHostPort(opts.Addr)
	if err != nil {
		return nil, fmt.Errorf("natsembed: address %q: %w", opts.Addr, err)
	}
	port, err := strconv.Atoi(portStr)
	if err != nil {
		return nil, fmt.Errorf("natsembed: address %q: bad port", opts.Addr)
	}
	if port == 0 {
		port = server.RANDOM_PORT
	}
	sopts := &server.Options{
		Host:      host,
		Port:      port,
		JetStream: true,
		StoreDir:  opts.StoreDir,
		NoSigs:    true,
		// Headers carry the ledger's generation; they are on by default, but
		// say so: the design depends on them.
		NoHeaderSupport: false,
	}
	if opts.SyncAlways {
		sopts.SyncAlways = true
	}
	if c := opts.Cluster; c != nil {
		if err := cluster(sopts, c); err != nil {
			return nil, err
		}
	}
	ns, err := server.NewServer(sopts)
	if err != nil {
		return nil, fmt.Errorf("natsembed: %w", err)
	}
	if opts.Logger != nil {
		ns.SetLoggerV2(&logAdapter{l: opts.Logger.With("component", "nats-server")}, false, false, false)
	}
	go ns.Start()
	if !ns.ReadyForConnections(30 * time.Second) {
		ns.Shutdown()
		return nil, fmt.Errorf("natsembed: server on %s not ready after 30s", opts.Addr)
	}
	return &Server{ns: ns}, nil
}

// URL is the client URL of the server.
func (s *Server) URL() string { return s.ns.ClientURL() }

// Shutdown stops the server and waits for it to finish.
func (s *Server) Shutdown() {
	s.ns.Shutdown()
	s.ns.WaitForShutdown()
}

func cluster(sopts *server.Options, c *Cluster) error {
	host, portStr, err := net.SplitHostPort(c.Addr)
	if err != nil {
		return fmt.Errorf("natsembed: cluster address %q: %w", c.Addr, err)
	}
	port, err := strconv.Atoi(portStr)
	if err != nil {
		return fmt.Errorf("natsembed: cluster address %q: bad port", c.Addr)
	}
	sopts.ServerName = c.ServerName
	sopts.Cluster = server.ClusterOpts{Name: c.Name, Host: host, Port: port}
	for _, r := range c.Routes {
		u, err := url.Parse(r)
		if err != nil {
			return fmt.Errorf("natsembed: route %q: %w", r, err)
		}
		sopts.Routes = append(sopts.Routes, u)
	}
	return nil
}

// logAdapter routes nats-server's logger into slog.
type logAdapter struct{ l *slog.Logger }

func (a *logAdapter) Noticef(format string, v ...any) { a.l.Info(fmt.Sprintf(format, v...)) }
func (a *logAdapter) Warnf(format string, v ...any)   { a.l.Warn(fmt.Sprintf(format, v...)) }
func (a *logAdapter) Fatalf(format string, v ...any)  { a.l.Error(fmt.Sprintf(format, v...)) }
func (a *logAdapter) Errorf(format string, v ...any)  { a.l.Error(fmt.Sprintf(format, v...)) }
func (a *logAdapter) Debugf(format string, v ...any)  { a.l.Debug(fmt.Sprintf(format, v...)) }
func (a *logAdapter) Tracef(format string, v ...any)  { a.l.Debug(fmt.Sprintf(format, v...)) }
