// Command exporter writes Label Studio annotations into target GCS
// storages: it takes Label Studio's webhook onto NATS JetStream and
// consumes it into each export storage of the annotation's project.
// Configuration is environment variables or flags (see README and SPEC §5).
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"github.com/sethvargo/go-envconfig"

	"github.com/labelsync/labelsync/internal/config"
	"github.com/labelsync/labelsync/internal/exporter"
	"github.com/labelsync/labelsync/internal/tracing"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:])
	stop()
	os.Exit(config.Exit(err))
}

func run(ctx context.Context, args []string) error {
	cfg, err := exporter.LoadConfig(ctx, args, envconfig.OsLookuper())
	if err != nil {
		return err
	}
	logger, err := cfg.Logger(os.Stderr)
	if err != nil {
		return err
	}
	// Traces: only the standard OTEL_* variables; off when none is set.
	tp, err := tracing.Setup(ctx, "labelsync-exporter", os.LookupEnv)
	if err != nil {
		return err
	}
	defer tp.Close(logger)
	x, err := exporter.New(ctx, cfg, logger, exporter.WithTracing(tp))
	if err != nil {
		return err
	}
	return x.Run(ctx)
}
