// Package devstack runs the local emulator stack in-process: a Pub/Sub
// emulator (pstest, or an external one such as Google's) and a GCS emulator
// (fake-gcs-server) that publishes real-format object-change notifications
// for every bucket to one topic.
//
// cmd/devstack runs it on the fixed loopback ports of SPEC §7; tests run it on
// free ports ("127.0.0.1:0"), one Stack per test, in parallel.
//
// Delivery: fake-gcs-server publishes each notification from its own
// goroutine, so notifications arrive in no particular order, and an overwrite
// yields OBJECT_FINALIZE plus OBJECT_DELETE. A failed publish is not retried;
// it is logged at Error level through Options.Logger and the notification is
// lost. Notifications still in flight when Close is called may be lost
// silently.
//
// Concurrency: Start may be called from parallel tests. fake-gcs-server reads
// PUBSUB_EMULATOR_HOST from the process environment when the server is built,
// so Start sets it, builds the server and restores it under a package mutex;
// code elsewhere in the process that reads that variable at the same moment
// may see a Stack's emulator address. Per-bucket notification configs
// (bucket.AddNotification) are not covered: fake-gcs-server builds their
// Pub/Sub client on first use from whatever the environment holds then, and
// with the stack-wide config on the same topic every event would arrive twice.
package devstack

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"

	"cloud.google.com/go/pubsub/v2"
	"cloud.google.com/go/pubsub/v2/apiv1/pubsubpb"
	"cloud.google.com/go/pubsub/v2/pstest"
	"cloud.google.com/go/storage"
	"github.com/fsouza/fake-gcs-server/fakestorage"
	"google.golang.org/api/option"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
)

// Defaults of SPEC §7.
const (
	DefaultPubsubAddr = "127.0.0.1:8085"
	DefaultGCSAddr    = "127.0.0.1:4443"
	DefaultProjectID  = "labelsync-dev"
	DefaultTopic      = "labelsync-uploads"
)

const envPubsubEmulatorHost = "PUBSUB_EMULATOR_HOST"

// Options configures Start. The zero value runs the SPEC §7 stack.
type Options struct {
	// PubsubAddr is where pstest listens; "127.0.0.1:0" picks a free port.
	// Default DefaultPubsubAddr. Ignored when PubsubEmulatorHost is set.
	PubsubAddr string
	// GCSAddr is where fake-gcs-server listens; "127.0.0.1:0" picks a free
	// loopback port. Default DefaultGCSAddr.
	GCSAddr string
	// ProjectID owns the topic. Default DefaultProjectID.
	ProjectID string
	// Topic receives the notifications; it is created at start. Default
	// DefaultTopic.
	Topic string
	// PubsubEmulatorHost, when set, is an already running emulator (for
	// example Google's) used instead of starting pstest; the topic is
	// created there. Empty: start pstest.
	PubsubEmulatorHost string
	// Logger receives fake-gcs-server's request log (Debug) and its publish
	// failures (Error). Default: discard.
	Logger *slog.Logger
	// Buckets are created empty at start.
	Buckets []string
}

func (o Options) withDefaults() Options {
	if o.PubsubAddr == "" {
		o.PubsubAddr = DefaultPubsubAddr
	}
	if o.GCSAddr == "" {
		o.GCSAddr = DefaultGCSAddr
	}
	if o.ProjectID == "" {
		o.ProjectID = DefaultProjectID
	}
	if o.Topic == "" {
		o.Topic = DefaultTopic
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	return o
}

// Stack is a running emulator stack. Close it when done.
type Stack struct {
	// PubsubAddr is the host:port of the Pub/Sub emulator in use, the value
	// for PUBSUB_EMULATOR_HOST.
	PubsubAddr string
	// GCSURL is the fake GCS base URL, e.g. "http://127.0.0.1:4443", the
	// value for STORAGE_EMULATOR_HOST.
	GCSURL    string
	ProjectID string
	Topic     string
	// GCS lets tests create and delete objects and buckets directly; those
	// changes publish notifications too.
	GCS *fakestorage.Server
	// Pstest is the in-process Pub/Sub fake, nil when
	// Options.PubsubEmulatorHost was set.
	Pstest *pstest.Server

	gcsLog    *logWriter
	closeOnce sync.Once
	closeErr  error
}

// Start starts the stack and returns once the topic and buckets exist and
// both emulators accept connections.
func Start(ctx context.Context, opts Options) (_ *Stack, err error) {
	opts = opts.withDefaults()
	gcsHost, gcsPort, err := splitGCSAddr(opts.GCSAddr)
	if err != nil {
		return nil, err
	}
	s := &Stack{
		ProjectID: opts.ProjectID,
		Topic:     opts.Topic,
		gcsLog:    &logWriter{logger: opts.Logger},
	}
	defer func() {
		if err != nil {
			_ = s.Close()
		}
	}()

	if opts.PubsubEmulatorHost != "" {
		s.PubsubAddr = opts.PubsubEmulatorHost
	} else {
		if s.Pstest, err = startPstest(opts.PubsubAddr); err != nil {
			return nil, err
		}
		s.PubsubAddr = s.Pstest.Addr
	}

	// fake-gcs-server never creates the topic, and publishing to a missing
	// one fails for every event.
	if err := s.createTopic(ctx); err != nil {
		return nil, err
	}

	s.GCS, err = newGCSServer(s.PubsubAddr, fakestorage.Options{
		Scheme: "http",
		Host:   gcsHost,
		Port:   gcsPort,
		Writer: s.gcsLog,
		EventOptions: fakestorage.EventManagerOptions{
			ProjectID: s.ProjectID,
			TopicName: s.Topic,
			// Empty Bucket: notify for every bucket, as one GCS
			// notification config per bucket would.
			NotifyOn: fakestorage.EventNotificationOptions{
				Finalize:       true,
				Delete:         true,
				MetadataUpdate: true,
				Archive:        true,
			},
		},
	})
	if err != nil {
		return nil, fmt.Errorf("devstack: starting fake-gcs-server on %s: %w", opts.GCSAddr, err)
	}
	// With Port 0 fake-gcs-server ignores Host and lets httptest pick a
	// loopback port; only URL() knows which.
	s.GCSURL = s.GCS.URL()

	for _, b := range opts.Buckets {
		if err := createBucket(s.GCS, b); err != nil {
			return nil, err
		}
	}
	return s, nil
}

// TopicName is the topic's full resource name.
func (s *Stack) TopicName() string {
	return "projects/" + s.ProjectID + "/topics/" + s.Topic
}

// Close stops fake-gcs-server, then pstest if this Stack started it. It is
// safe to call more than once.
func (s *Stack) Close() error {
	s.closeOnce.Do(func() {
		var errs []error
		if s.GCS != nil {
			s.GCS.Stop()
		}
		// Publishes still in flight fail once the emulator is gone; the
		// caller's logger may already be unusable (a test's t.Output panics
		// after the test ends), so drop those lines.
		s.gcsLog.closed.Store(true)
		if s.Pstest != nil {
			if err := s.Pstest.Close(); err != nil {
				errs = append(errs, fmt.Errorf("devstack: closing pstest: %w", err))
			}
		}
		s.closeErr = errors.Join(errs...)
	})
	return s.closeErr
}

// StorageClient returns a storage client for the fake GCS. The caller closes
// it.
func (s *Stack) StorageClient(ctx context.Context) (*storage.Client, error) {
	c, err := storage.NewClient(ctx,
		option.WithEndpoint(s.GCSURL+"/storage/v1/"),
		option.WithoutAuthentication(),
		// fake-gcs-server serves XML-API reads only for its PublicHost.
		storage.WithJSONReads(),
	)
	if err != nil {
		return nil, fmt.Errorf("devstack: storage client: %w", err)
	}
	return c, nil
}

// PubsubClient returns a Pub/Sub client for the emulator in use, for project
// ProjectID. The caller closes it.
func (s *Stack) PubsubClient(ctx context.Context) (*pubsub.Client, error) {
	return NewPubsubClient(ctx, s.PubsubAddr, s.ProjectID)
}

// NewPubsubClient returns a Pub/Sub client for the emulator at addr. The
// address is passed explicitly rather than through PUBSUB_EMULATOR_HOST, so
// clients for different emulators can coexist in one process.
func NewPubsubClient(ctx context.Context, addr, projectID string) (*pubsub.Client, error) {
	c, err := pubsub.NewClient(ctx, projectID,
		option.WithEndpoint(addr),
		option.WithGRPCDialOption(grpc.WithTransportCredentials(insecure.NewCredentials())),
		option.WithoutAuthentication(),
		option.WithTelemetryDisabled(),
	)
	if err != nil {
		return nil, fmt.Errorf("devstack: pubsub client for %s: %w", addr, err)
	}
	return c, nil
}

func (s *Stack) createTopic(ctx context.Context) error {
	c, err := s.PubsubClient(ctx)
	if err != nil {
		return err
	}
	defer c.Close()
	_, err = c.TopicAdminClient.CreateTopic(ctx, &pubsubpb.Topic{Name: s.TopicName()})
	if err != nil && status.Code(err) != codes.AlreadyExists {
		return fmt.Errorf("devstack: creating topic %s on %s: %w", s.TopicName(), s.PubsubAddr, err)
	}
	return nil
}

// startPstest turns pstest's panic on a busy port into an error, so a second
// devstack on 8085 fails with a message instead of a stack trace.
func startPstest(addr string) (srv *pstest.Server, err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("devstack: starting pstest on %s: %v", addr, r)
		}
	}()
	return pstest.NewServerWithAddress(addr), nil
}

// envMu serialises the set-construct-restore of PUBSUB_EMULATOR_HOST, so
// stacks started in parallel each capture their own emulator address.
var envMu sync.Mutex

// newGCSServer builds fake-gcs-server while PUBSUB_EMULATOR_HOST names
// pubsubAddr: its notifier creates its Pub/Sub client from that variable at
// construction and offers no other way to point it at an emulator.
func newGCSServer(pubsubAddr string, o fakestorage.Options) (*fakestorage.Server, error) {
	envMu.Lock()
	defer envMu.Unlock()
	prev, had := os.LookupEnv(envPubsubEmulatorHost)
	if err := os.Setenv(envPubsubEmulatorHost, pubsubAddr); err != nil {
		return nil, err
	}
	defer func() {
		if had {
			_ = os.Setenv(envPubsubEmulatorHost, prev)
		} else {
			_ = os.Unsetenv(envPubsubEmulatorHost)
		}
	}()
	return fakestorage.NewServerWithOptions(o)
}

// createBucket turns fake-gcs-server's panic on a backend error into an
// error.
func createBucket(srv *fakestorage.Server, name string) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("devstack: creating bucket %q: %v", name, r)
		}
	}()
	srv.CreateBucketWithOpts(fakestorage.CreateBucketOpts{Name: name})
	return nil
}

func splitGCSAddr(addr string) (string, uint16, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return "", 0, fmt.Errorf("devstack: GCS address %q: %w", addr, err)
	}
	p, err := strconv.ParseUint(port, 10, 16)
	if err != nil {
		return "", 0, fmt.Errorf("devstack: GCS address %q: bad port: %w", addr, err)
	}
	return host, uint16(p), nil
}

// logWriter receives fake-gcs-server's Options.Writer output, which mixes an
// Apache-style request log with notifier results. Publish failures appear
// only there, so they are raised to Error; the rest is Debug noise.
type logWriter struct {
	logger *slog.Logger
	closed atomic.Bool
}

func (w *logWriter) Write(p []byte) (int, error) {
	if w.closed.Load() {
		return len(p), nil
	}
	// One Write is one Fprintf; the notifier's error line has no trailing
	// newline, so lines are not reassembled across writes.
	for line := range strings.SplitSeq(string(p), "\n") {
		line = strings.TrimSpace(line)
		switch {
		case line == "":
		case strings.HasPrefix(line, "error publishing"):
			w.logger.Error("devstack: fake-gcs-server failed to publish a notification", "error", line)
		case strings.HasPrefix(line, "sent event"):
			w.logger.Debug("devstack: fake-gcs-server published a notification", "detail", line)
		default:
			w.logger.Debug("devstack: fake-gcs-server request", "line", line)
		}
	}
	return len(p), nil
}
