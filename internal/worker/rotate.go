package worker

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"time"

	"github.com/labelsync/labelsync/internal/catalog"
	"github.com/labelsync/labelsync/internal/secrets"
	"github.com/labelsync/labelsync/internal/taskbus"
)

// RunRotate is `worker secrets rotate`: it seals every stored credential
// again with newKey (LABELSYNC_NEW_SECRET_KEY), opening them with the
// current LABELSYNC_SECRET_KEY. Afterwards every replica must run with the
// new key: until it restarts with it, a replica keeps the storages as it
// had them (it cannot read the re-sealed ones) and logs so.
func RunRotate(ctx context.Context, cfg Config, logger *slog.Logger, newKey string, out io.Writer) error {
	if cfg.SecretKey == "" {
		return errors.New("LABELSYNC_SECRET_KEY: the current key is needed to open the stored credentials")
	}
	next, err := secrets.New(newKey)
	if err != nil {
		return fmt.Errorf("LABELSYNC_NEW_SECRET_KEY: %w", err)
	}
	current, err := secrets.New(cfg.SecretKey)
	if err != nil {
		return err
	}
	if cfg.NATSURL == "" {
		host, port, _ := net.SplitHostPort(cfg.EmbeddedNATSAddr)
		cfg.NATSURL = "nats://" + net.JoinHostPort(host, port)
	}
	w := &Worker{cfg: cfg, logger: logger}
	defer w.close()
	if err := w.connectNATS(ctx); err != nil {
		return err
	}
	bus, err := taskbus.New(w.nc, 10*time.Second, taskbus.WithReplicas(cfg.StreamReplicas))
	if err != nil {
		return err
	}
	c, err := catalog.Open(ctx, bus.JetStream(), current, logger)
	if err != nil {
		return err
	}
	defer c.Close()
	n, err := c.Reseal(ctx, next)
	if err != nil {
		return fmt.Errorf("worker secrets rotate: %d re-sealed before: %w", n, err)
	}
	fmt.Fprintf(out, "re-sealed the credentials of %d storages; now run every worker and exporter with LABELSYNC_SECRET_KEY set to the new key\n", n)
	return nil
}
