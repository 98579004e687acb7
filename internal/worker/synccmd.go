package worker

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/labelsync/labelsync/internal/catalog"
	"github.com/labelsync/labelsync/internal/deadletter"
	"github.com/labelsync/labelsync/internal/gcs"
	"github.com/labelsync/labelsync/internal/metrics"
	"github.com/labelsync/labelsync/internal/secrets"
	"github.com/labelsync/labelsync/internal/syncer"
	"github.com/labelsync/labelsync/internal/taskbus"
)

// RunSync is `worker sync --storage ID`: one sync (backfill) of one source
// storage, in this process, printing progress to out. It uses the same
// ledger, status and lock as the running workers, so it is safe beside
// them: if one of them runs this storage's sync, RunSync says so and stops.
// With LABELSYNC_NATS_URL empty it connects to the embedded server of a
// running worker (LABELSYNC_EMBEDDED_NATS_ADDR) rather than starting one.
func RunSync(ctx context.Context, cfg Config, logger *slog.Logger, id int64, reconcile bool, out io.Writer) error {
	w := &Worker{cfg: cfg, logger: logger, reg: prometheus.NewRegistry()}
	defer w.close()
	w.m = metrics.New(w.reg)
	if cfg.NATSURL == "" {
		host, port, _ := net.SplitHostPort(cfg.EmbeddedNATSAddr)
		w.cfg.NATSURL = "nats://" + net.JoinHostPort(host, port)
	}
	if err := w.prepare(ctx); err != nil {
		return err
	}
	if _, ok := w.catalog.Imports().Get(id); !ok {
		return fmt.Errorf("worker sync: no import storage with id %d in LABELSYNC_STORAGES_FILE", id)
	}
	s, err := syncer.New(ctx, w.bus.JetStream(), w.pipeline(), w.bus, w.clientFor, w.catalog.Imports, w.m, logger)
	if err != nil {
		return err
	}
	started := time.Now()
	st, err := s.RunNow(ctx, id, reconcile, func(st syncer.Status) {
		fmt.Fprintf(out, "storage %d: %s: %d objects, %d created, %d updated, %d deleted, %d already synced, %d errors (%.1fs)\n",
			id, st.Status, st.Meta.ObjectsListed, st.Meta.TasksCreated, st.Meta.TasksUpdated, st.Meta.TasksDeleted, st.Meta.AlreadySynced, st.Meta.Errors, time.Since(started).Seconds())
	})
	if err != nil {
		return fmt.Errorf("worker sync: storage %d: %w", id, err)
	}
	fmt.Fprintf(out, "storage %d: %s, last_sync_count %d\n", id, st.Status, *st.LastSyncCount)
	return nil
}

// prepare loads storages and connects to NATS: what both the service and
// the sync command need.
func (w *Worker) prepare(ctx context.Context) error {
	if w.cfg.SecretKey != "" {
		box, err := secrets.New(w.cfg.SecretKey)
		if err != nil {
			return err
		}
		w.secrets = box
	}
	// Read the file before connecting: a bad one stops the process at once.
	file, err := catalog.ReadFile(w.cfg.StoragesFile, w.secrets)
	if err != nil {
		return err
	}
	w.clients = gcs.NewClients(gcs.Options{EmulatorHost: w.cfg.StorageEmulatorHost, Logger: w.logger})
	if err := w.connectNATS(ctx); err != nil {
		return err
	}
	if w.bus, err = taskbus.New(w.nc, 10*time.Second, taskbus.WithReplicas(w.cfg.StreamReplicas)); err != nil {
		return err
	}
	w.letters = deadletter.NewWriter(w.bus, Component, w.m, w.logger)
	if err := w.bus.EnsureStreams(ctx, taskbus.TasksStream, taskbus.DeadLetterStream); err != nil {
		return err
	}
	if w.catalog, err = catalog.Open(ctx, w.bus.JetStream(), w.secrets, w.logger); err != nil {
		return err
	}
	if err := w.catalog.Declare(ctx, file); err != nil {
		return fmt.Errorf("LABELSYNC_STORAGES_FILE: %w", err)
	}
	return nil
}
