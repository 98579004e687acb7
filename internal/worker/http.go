package worker

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/labelsync/labelsync/internal/api"
	"github.com/labelsync/labelsync/internal/resolve"
	"github.com/labelsync/labelsync/internal/taskbus"
)

func (w *Worker) routes() (http.Handler, error) {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(w.reg, promhttp.HandlerOpts{Registry: w.reg}))
	mux.HandleFunc("GET /healthz", func(rw http.ResponseWriter, _ *http.Request) {
		rw.Header().Set("Content-Type", "text/plain; charset=utf-8")
		fmt.Fprintln(rw, "ok")
	})
	api.New(w.cfg.APIToken, w.catalog.Imports, w.catalog.Exports, w.syncer, w.clients.For, w.clientFor, w.logger).
		WithExportSyncs(w.exportSyncs).WithCatalog(w.catalog, w.secrets).
		WithLimits(api.Limits{PerSecond: w.cfg.APIRate, InFlight: w.cfg.APIInFlight}).Register(mux)
	// The resolver (package resolve) is not behind the API's limits: a
	// gallery opens many files at once.
	res, err := resolve.New(resolve.Config{
		Token:        w.cfg.APIToken,
		SecretKey:    w.cfg.SecretKey,
		Storages:     w.catalog.Imports,
		ClientFor:    w.clientFor,
		Secrets:      w.secrets,
		EmulatorHost: w.cfg.StorageEmulatorHost,
		Logger:       w.logger,
	})
	if err != nil {
		// Validate has checked the secret key; what is left is a malformed
		// STORAGE_EMULATOR_HOST, which would break every storage client
		// as well: the worker does not start without its resolver.
		return nil, fmt.Errorf("resolver: %w", err)
	}
	res.Register(mux)
	mux.HandleFunc("GET /readyz", func(rw http.ResponseWriter, r *http.Request) {
		rw.Header().Set("Content-Type", "text/plain; charset=utf-8")
		if err := w.ready(r.Context()); err != nil {
			rw.WriteHeader(http.StatusServiceUnavailable)
			fmt.Fprintln(rw, err)
			return
		}
		fmt.Fprintln(rw, "ready")
	})
	return mux, nil
}

// ready is nil once the subscription is being received, NATS is connected,
// the streams exist and the storages are loaded (SPEC §4).
func (w *Worker) ready(ctx context.Context) error {
	if w.catalog == nil {
		return errors.New("storages not loaded")
	}
	if !w.nc.IsConnected() {
		return fmt.Errorf("NATS not connected (status %s)", w.nc.Status())
	}
	if !w.sub.Receiving() {
		return errors.New("subscription " + w.cfg.PubsubSubscription + " not being received")
	}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	if err := w.bus.StreamsExist(ctx, taskbus.TasksStream, taskbus.DeadLetterStream); err != nil {
		return err
	}
	if w.connector != nil {
		if err := w.connector.Ready(ctx); err != nil {
			return err
		}
	}
	return nil
}
