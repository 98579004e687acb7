// Command worker imports GCS objects into labelsync task events: it consumes
// GCS notifications from Pub/Sub and publishes tasks to NATS JetStream.
// Configuration is environment variables or flags (see README and SPEC §5).
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/sethvargo/go-envconfig"

	"github.com/labelsync/labelsync/internal/config"
	"github.com/labelsync/labelsync/internal/worker"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:])
	stop()
	os.Exit(config.Exit(err))
}

func run(ctx context.Context, args []string) error {
	cfg, err := worker.LoadConfig(ctx, args, envconfig.OsLookuper())
	if err != nil {
		return err
	}
	logger, err := cfg.Logger(os.Stderr)
	if err != nil {
		return err
	}
	w, err := worker.New(ctx, cfg, logger)
	if err != nil {
		return err
	}
	return w.Run(ctx)
}
