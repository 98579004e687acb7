// Package worker assembles the labelsync worker: GCS notifications from a
// Pub/Sub subscription, through a Watermill handler behind the failure-path
// middleware (recover, retry, dead-letter), into the ingest pipeline and on to JetStream; plus its HTTP
// endpoints. cmd/worker is a thin main around New and Run.
package worker

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"time"

	"cloud.google.com/go/pubsub/v2"
	"cloud.google.com/go/storage"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"golang.org/x/sync/errgroup"

	"github.com/labelsync/labelsync/internal/catalog"
	"github.com/labelsync/labelsync/internal/connector"
	"github.com/labelsync/labelsync/internal/deadletter"
	"github.com/labelsync/labelsync/internal/export"
	"github.com/labelsync/labelsync/internal/fault"
	"github.com/labelsync/labelsync/internal/gcs"
	"github.com/labelsync/labelsync/internal/gpubsub"
	"github.com/labelsync/labelsync/internal/ingest"
	"github.com/labelsync/labelsync/internal/labelstudio"
	"github.com/labelsync/labelsync/internal/metrics"
	"github.com/labelsync/labelsync/internal/natsembed"
	"github.com/labelsync/labelsync/internal/secrets"
	"github.com/labelsync/labelsync/internal/storages"
	"github.com/labelsync/labelsync/internal/syncer"
	"github.com/labelsync/labelsync/internal/taskbus"
	"github.com/labelsync/labelsync/internal/taskfile"
	"github.com/labelsync/labelsync/internal/tracing"
)

// Component names the worker in dead letters and metrics.
const Component = "worker"

// Worker is a configured, connected worker, ready to Run.
type Worker struct {
	cfg    Config
	logger *slog.Logger
	reg    *prometheus.Registry
	m      *metrics.Metrics

	catalog     *catalog.Catalog
	secrets     *secrets.Box
	clients     *gcs.Clients
	syncer      *syncer.Syncer
	exportSyncs *export.Syncs
	// connector applies task events to Label Studio; nil without
	// LABELSYNC_LABEL_STUDIO_URL.
	connector *connector.Connector

	embedded *natsembed.Server
	nc       *nats.Conn
	bus      *taskbus.Bus
	letters  *deadletter.Writer
	psClient *pubsub.Client
	sub      *gpubsub.Subscriber
	handle   message.HandlerFunc
	listener net.Listener
	server   *http.Server
}

// Option adjusts a Worker, for tests.
type Option func(*options)

type options struct {
	ingest  []ingest.Option
	tracing *tracing.Provider
}

// WithTracing traces notifications, syncs and their appends with p
// (main builds it from the OTEL_* variables; default: no tracing).
func WithTracing(p *tracing.Provider) Option {
	return func(opts *options) { opts.tracing = p }
}

// WithIngestOptions passes options to the ingest pipeline (crash hooks).
func WithIngestOptions(o ...ingest.Option) Option {
	return func(opts *options) { opts.ingest = append(opts.ingest, o...) }
}

// New loads storages, connects to (or starts) NATS, creates the streams,
// checks the subscription and binds the HTTP address. Nothing is received
// until Run. On error everything opened so far is closed.
func New(ctx context.Context, cfg Config, logger *slog.Logger, opts ...Option) (_ *Worker, err error) {
	var o options
	for _, opt := range opts {
		opt(&o)
	}
	w := &Worker{cfg: cfg, logger: logger, reg: prometheus.NewRegistry()}
	defer func() {
		if err != nil {
			w.close()
		}
	}()
	w.reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	w.m = metrics.New(w.reg)

	if err := w.prepare(ctx); err != nil {
		return nil, err
	}
	logger.Info("storages loaded", "import", w.catalog.Imports().Len(), "export", len(w.catalog.Exports()), "file", cfg.StoragesFile)

	if w.psClient, err = pubsub.NewClient(ctx, cfg.PubsubProject, gpubsub.ClientOptions(cfg.PubsubEmulatorHost)...); err != nil {
		return nil, fmt.Errorf("worker: pub/sub client: %w", err)
	}
	if err := gpubsub.EnsureSubscription(ctx, w.psClient, cfg.PubsubProject, cfg.PubsubSubscription, cfg.PubsubTopic); err != nil {
		return nil, err
	}
	w.sub = gpubsub.NewSubscriber(w.psClient, gpubsub.Config{
		Subscription:   cfg.PubsubSubscription,
		Streams:        cfg.PubsubStreams,
		MaxOutstanding: cfg.PubsubMaxOutstanding,
		DrainTimeout:   cfg.ShutdownTimeout,
	}, logger)

	tracer := o.tracing.Tracer()
	pipeline := w.pipeline(append([]ingest.Option{ingest.WithTracer(tracer)}, o.ingest...)...)
	if w.syncer, err = syncer.New(ctx, w.bus.JetStream(), pipeline, w.bus, w.clientFor, w.catalog.Imports, w.m, logger); err != nil {
		return nil, err
	}
	w.syncer.Tracer = tracer
	if w.exportSyncs, err = export.NewSyncs(ctx, w.bus.JetStream()); err != nil {
		return nil, err
	}
	if cfg.LabelStudioURL != "" {
		if w.connector, err = w.labelStudio(ctx); err != nil {
			return nil, err
		}
	}
	handler := ingest.NewNotifications(pipeline, w.catalog.Imports, w.m, logger)
	// The failure path around the handler (package deadletter): panics and
	// permanent failures are dead-lettered, then acked; transient ones
	// retried with backoff, then nacked for redelivery.
	failures, err := deadletter.Middleware(w.letters, deadletter.DefaultRetry(), logger)
	if err != nil {
		return nil, err
	}
	w.handle = failures(func(m *message.Message) ([]*message.Message, error) { return nil, handler.Handle(m) })

	routes, err := w.routes()
	if err != nil {
		return nil, err
	}
	if w.listener, err = net.Listen("tcp", cfg.HTTPAddr); err != nil {
		return nil, fmt.Errorf("LABELSYNC_HTTP_ADDR: listen on %s: %w", cfg.HTTPAddr, err)
	}
	w.server = &http.Server{Handler: routes, ReadHeaderTimeout: 10 * time.Second}
	return w, nil
}

// labelStudio builds the Label Studio connector (SPEC §8) on the worker's
// NATS connection and task stream; its consumer is shared by every replica.
func (w *Worker) labelStudio(ctx context.Context) (*connector.Connector, error) {
	client, err := labelstudio.New(w.cfg.LabelStudioURL, w.cfg.LabelStudioToken, labelstudio.WithObserver(connector.Observe(w.m)))
	if err != nil {
		return nil, fmt.Errorf("LABELSYNC_LABEL_STUDIO_URL: %w", err)
	}
	letters := deadletter.NewWriter(w.bus, connector.Component, w.m, w.logger)
	return connector.New(ctx, w.bus.JetStream(), client, letters, w.m, w.logger, connector.Config{
		BatchSize:     w.cfg.LabelStudioBatchSize,
		InFlight:      w.cfg.LabelStudioInFlight,
		FlushInterval: w.cfg.LabelStudioFlushInterval,
		AckWait:       w.cfg.LabelStudioAckWait,
		DrainTimeout:  w.cfg.ShutdownTimeout,
	})
}

// pipeline builds the ingest pipeline, with the Tasks import method.
func (w *Worker) pipeline(opts ...ingest.Option) *ingest.Pipeline {
	reader := ingest.NewGCSReader(w.clientFor, w.cfg.MaxObjectBytes, taskfile.Options{})
	opts = append([]ingest.Option{ingest.WithTasks(reader, w.bus)}, opts...)
	return ingest.New(w.bus, w.letters, w.m, w.logger, opts...)
}

// clientFor is the storage client of a source storage: its own
// credentials, or Application Default Credentials.
func (w *Worker) clientFor(ctx context.Context, st *storages.Import) (*storage.Client, error) {
	creds, err := st.Credentials(w.secrets)
	if err != nil {
		return nil, fault.Permanent(fault.BadCredentials, fmt.Errorf("worker: storage %d credentials: %w", st.ID, err))
	}
	return w.clients.For(ctx, creds)
}

func (w *Worker) connectNATS(ctx context.Context) error {
	url := w.cfg.NATSURL
	if url == "" {
		var err error
		w.embedded, err = natsembed.Start(natsembed.Options{
			Addr:     w.cfg.EmbeddedNATSAddr,
			StoreDir: filepath.Join(w.cfg.DataDir, "nats"),
			Logger:   w.logger,
		})
		if err != nil {
			return fmt.Errorf("worker: embedded NATS (LABELSYNC_NATS_URL is empty): %w", err)
		}
		url = w.embedded.URL()
		w.logger.Info("embedded NATS started", "url", url, "dir", filepath.Join(w.cfg.DataDir, "nats"))
	}
	var err error
	w.nc, err = nats.Connect(url,
		nats.Name("labelsync-worker"),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(250*time.Millisecond),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) { w.logger.Warn("NATS disconnected", "err", err) }),
		nats.ReconnectHandler(func(nc *nats.Conn) { w.logger.Info("NATS reconnected", "url", nc.ConnectedUrlRedacted()) }),
	)
	if err != nil {
		return fmt.Errorf("LABELSYNC_NATS_URL: connect to %s: %w", url, err)
	}
	return nil
}

// HTTPAddr is the address the HTTP server listens on.
func (w *Worker) HTTPAddr() string { return w.listener.Addr().String() }

// NATSURL is the URL of the NATS server in use (the embedded one's, if so).
func (w *Worker) NATSURL() string { return w.nc.ConnectedUrl() }

// Registry is the worker's Prometheus registry.
func (w *Worker) Registry() *prometheus.Registry { return w.reg }

// Run receives until ctx is done, then drains: it stops pulling, waits for
// in-flight messages to finish and be acked (up to ShutdownTimeout), and
// closes connections. It returns a non-nil error if receiving failed.
func (w *Worker) Run(ctx context.Context) error {
	defer w.close()
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		if err := w.server.Serve(w.listener); err != nil && !errors.Is(err, http.ErrServerClosed) {
			return fmt.Errorf("worker: http: %w", err)
		}
		return nil
	})
	g.Go(func() error {
		// Serve returns once every handler stopped: after Close, or when
		// the subscription can no longer be received.
		if err := w.sub.Serve(context.WithoutCancel(gctx), w.handle); err != nil {
			return err
		}
		if ctx.Err() == nil {
			return errors.New("worker: receiving stopped")
		}
		return nil
	})
	g.Go(func() error { return w.syncer.Run(gctx) })
	if w.connector != nil {
		g.Go(func() error { return w.connector.Run(gctx) })
	}
	g.Go(func() error {
		<-gctx.Done()
		w.logger.Info("shutting down: draining in-flight messages")
		_ = w.sub.Close()
		shutdownCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		return w.server.Shutdown(shutdownCtx)
	})
	w.logger.Info("worker started", "http", w.HTTPAddr(), "subscription", w.cfg.PubsubSubscription, "nats", w.NATSURL())
	return g.Wait()
}

// close releases what New opened, in reverse order.
func (w *Worker) close() {
	if w.sub != nil {
		_ = w.sub.Close()
	}
	if w.psClient != nil {
		_ = w.psClient.Close()
	}
	if w.listener != nil && w.server == nil {
		_ = w.listener.Close()
	}
	if w.catalog != nil {
		w.catalog.Close()
	}
	if w.nc != nil {
		_ = w.nc.Drain()
		for i := 0; i < 100 && !w.nc.IsClosed(); i++ {
			time.Sleep(20 * time.Millisecond)
		}
		w.nc.Close()
	}
	if w.embedded != nil {
		w.embedded.Shutdown()
	}
	if w.clients != nil {
		_ = w.clients.Close()
	}
}
