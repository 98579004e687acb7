// Package exporter assembles the labelsync exporter: Label Studio's webhook
// onto LABELSYNC_ANNOTATIONS (package webhook), and the stream's shared
// durable consumer, behind the failure path (package deadletter), into
// target storages (package export); plus /metrics, /healthz and /readyz.
// cmd/exporter is a thin main around New and Run.
package exporter

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync/atomic"
	"time"

	"cloud.google.com/go/storage"
	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.opentelemetry.io/otel/trace"
	"golang.org/x/sync/errgroup"

	"github.com/labelsync/labelsync/internal/api"
	"github.com/labelsync/labelsync/internal/catalog"
	"github.com/labelsync/labelsync/internal/deadletter"
	"github.com/labelsync/labelsync/internal/export"
	"github.com/labelsync/labelsync/internal/fault"
	"github.com/labelsync/labelsync/internal/gcs"
	"github.com/labelsync/labelsync/internal/labelstudio"
	"github.com/labelsync/labelsync/internal/metrics"
	"github.com/labelsync/labelsync/internal/secrets"
	"github.com/labelsync/labelsync/internal/storages"
	"github.com/labelsync/labelsync/internal/taskbus"
	"github.com/labelsync/labelsync/internal/tracing"
	"github.com/labelsync/labelsync/internal/webhook"
)

// Component names the exporter in dead letters and metrics.
const Component = "exporter"

// Exporter is a configured, connected exporter, ready to Run.
type Exporter struct {
	cfg    Config
	logger *slog.Logger
	reg    *prometheus.Registry
	m      *metrics.Metrics

	catalog *catalog.Catalog
	secrets *secrets.Box
	clients *gcs.Clients

	nc        *nats.Conn
	bus       *taskbus.Bus
	export    *export.Exporter
	syncs     *export.Syncs
	handle    message.HandlerFunc
	consuming atomic.Bool
	listener  net.Listener
	server    *http.Server
	tracer    trace.Tracer
}

// Option adjusts an Exporter.
type Option func(*Exporter)

// WithTracing traces webhook requests and the writes and deletes of each
// event with p, in one trace per request (main builds p from the OTEL_*
// variables; default: no tracing).
func WithTracing(p *tracing.Provider) Option {
	return func(x *Exporter) { x.tracer = p.Tracer() }
}

// New loads storages, connects to NATS, creates what is missing (streams,
// the state bucket) and binds the HTTP address. Nothing is consumed until
// Run. On error everything opened so far is closed.
func New(ctx context.Context, cfg Config, logger *slog.Logger, opts ...Option) (_ *Exporter, err error) {
	x := &Exporter{cfg: cfg, logger: logger, reg: prometheus.NewRegistry()}
	for _, o := range opts {
		o(x)
	}
	defer func() {
		if err != nil {
			x.close()
		}
	}()
	x.reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	x.m = metrics.New(x.reg)

	if cfg.SecretKey != "" {
		if x.secrets, err = secrets.New(cfg.SecretKey); err != nil {
			return nil, err
		}
	}
	file, err := catalog.ReadFile(cfg.StoragesFile, x.secrets)
	if err != nil {
		return nil, err
	}
	x.clients = gcs.NewClients(gcs.Options{EmulatorHost: cfg.StorageEmulatorHost, Logger: logger})

	x.nc, err = nats.Connect(cfg.NATSURL,
		nats.Name("labelsync-exporter"),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(250*time.Millisecond),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) { logger.Warn("NATS disconnected", "err", err) }),
		nats.ReconnectHandler(func(nc *nats.Conn) { logger.Info("NATS reconnected", "url", nc.ConnectedUrlRedacted()) }),
	)
	if err != nil {
		return nil, fmt.Errorf("LABELSYNC_NATS_URL: connect to %s: %w", cfg.NATSURL, err)
	}
	if x.bus, err = taskbus.New(x.nc, 10*time.Second, taskbus.WithReplicas(cfg.StreamReplicas)); err != nil {
		return nil, err
	}
	if err := x.bus.EnsureStreams(ctx, taskbus.AnnotationsStream, taskbus.DeadLetterStream); err != nil {
		return nil, err
	}
	if x.catalog, err = catalog.Open(ctx, x.bus.JetStream(), x.secrets, logger); err != nil {
		return nil, err
	}
	if err := x.catalog.Declare(ctx, file); err != nil {
		return nil, fmt.Errorf("LABELSYNC_STORAGES_FILE: %w", err)
	}
	logger.Info("storages loaded", "export", len(x.catalog.Exports()), "file", cfg.StoragesFile)
	exportOpts := []export.Option{export.WithTracer(x.tracer)}
	if cfg.LabelStudioURL != "" {
		// Export sync reads Label Studio, the source of truth (SPEC §3).
		ls, err := labelstudio.New(cfg.LabelStudioURL, cfg.LabelStudioToken, labelstudio.WithObserver(func(op, outcome string) {
			x.m.LabelStudioRequests.WithLabelValues(op, outcome).Inc()
		}))
		if err != nil {
			return nil, fmt.Errorf("LABELSYNC_LABEL_STUDIO_URL: %w", err)
		}
		exportOpts = append(exportOpts, export.WithLabelStudio(ls))
	}
	if x.export, err = export.New(ctx, x.bus.JetStream(), x.Exports, x.clientFor, x.m, logger, exportOpts...); err != nil {
		return nil, err
	}
	if x.syncs, err = export.NewSyncs(ctx, x.bus.JetStream()); err != nil {
		return nil, err
	}
	letters := deadletter.NewWriter(x.bus, Component, x.m, logger)
	failures, err := deadletter.Middleware(letters, deadletter.DefaultRetry(), logger)
	if err != nil {
		return nil, err
	}
	x.handle = failures(x.export.Handler)

	if x.listener, err = net.Listen("tcp", cfg.HTTPAddr); err != nil {
		return nil, fmt.Errorf("LABELSYNC_HTTP_ADDR: listen on %s: %w", cfg.HTTPAddr, err)
	}
	x.server = &http.Server{Handler: x.routes(), ReadHeaderTimeout: 10 * time.Second}
	return x, nil
}

// Exports returns the export storages in force.
func (x *Exporter) Exports() []storages.Export { return x.catalog.Exports() }

// clientFor is the storage client of a target storage: its own
// credentials, or Application Default Credentials.
func (x *Exporter) clientFor(ctx context.Context, st *storages.Export) (*storage.Client, error) {
	creds, err := st.Credentials(x.secrets)
	if err != nil {
		return nil, fault.Permanent(fault.BadCredentials, fmt.Errorf("exporter: storage %d credentials: %w", st.ID, err))
	}
	c, err := x.clients.For(ctx, creds)
	if err != nil {
		return nil, gcs.Fault(err)
	}
	return c, nil
}

func (x *Exporter) routes() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(x.reg, promhttp.HandlerOpts{Registry: x.reg}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		if err := x.ready(r.Context()); err != nil {
			w.WriteHeader(http.StatusServiceUnavailable)
			fmt.Fprintln(w, err)
			return
		}
		fmt.Fprintln(w, "ready")
	})
	// Export storages and their sync, as on the worker's storage API.
	api.New(x.cfg.APIToken, nil, x.Exports, nil, x.clients.For, nil, x.logger).WithExportSyncs(x.syncs).WithCatalog(x.catalog, x.secrets).RegisterExports(mux)
	if !x.cfg.WebhookDisabled {
		mux.Handle(webhook.Path, webhook.New(x.cfg.WebhookSecret, x.bus.JetStream(),
			func() int64 { return x.bus.MaxMessageBytes(taskbus.AnnotationsStream) }, x.m, x.logger).WithTracer(x.tracer))
	}
	return mux
}

// ready is nil once NATS is connected, the streams exist and the consumer
// is receiving.
func (x *Exporter) ready(ctx context.Context) error {
	if !x.nc.IsConnected() {
		return fmt.Errorf("NATS not connected (status %s)", x.nc.Status())
	}
	if !x.consuming.Load() {
		return errors.New("not consuming annotation events yet")
	}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	return x.bus.StreamsExist(ctx, taskbus.AnnotationsStream, taskbus.DeadLetterStream)
}

// HTTPAddr is the address the HTTP server listens on.
func (x *Exporter) HTTPAddr() string { return x.listener.Addr().String() }

// Registry is the exporter's Prometheus registry.
func (x *Exporter) Registry() *prometheus.Registry { return x.reg }

// Run consumes until ctx is done, then drains: it stops taking events,
// lets those in hand finish (up to ShutdownTimeout) and closes connections.
func (x *Exporter) Run(ctx context.Context) error {
	defer x.close()
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		if err := x.server.Serve(x.listener); err != nil && !errors.Is(err, http.ErrServerClosed) {
			return fmt.Errorf("exporter: http: %w", err)
		}
		return nil
	})
	g.Go(func() error {
		defer x.consuming.Store(false)
		return export.Consume(gctx, x.bus.JetStream(), export.ConsumeConfig{
			Concurrency:  x.cfg.Concurrency,
			AckWait:      x.cfg.AckWait,
			DrainTimeout: x.cfg.ShutdownTimeout,
			Ready:        func() { x.consuming.Store(true) },
		}, x.handle, x.logger)
	})
	g.Go(func() error { return x.export.RunSyncs(gctx, x.syncs, x.logger) })
	g.Go(func() error {
		<-gctx.Done()
		x.logger.Info("shutting down: draining events in hand")
		shutdownCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		return x.server.Shutdown(shutdownCtx)
	})
	x.logger.Info("exporter started", "http", x.HTTPAddr(), "nats", x.nc.ConnectedUrlRedacted(), "webhook", !x.cfg.WebhookDisabled)
	return g.Wait()
}

// close releases what New opened, in reverse order.
func (x *Exporter) close() {
	if x.listener != nil && x.server == nil {
		_ = x.listener.Close()
	}
	if x.catalog != nil {
		x.catalog.Close()
	}
	if x.nc != nil {
		_ = x.nc.Drain()
		for i := 0; i < 100 && !x.nc.IsClosed(); i++ {
			time.Sleep(20 * time.Millisecond)
		}
		x.nc.Close()
	}
	if x.clients != nil {
		_ = x.clients.Close()
	}
}
