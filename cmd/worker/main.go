// Command worker imports GCS objects into labelsync task events: it consumes
// GCS notifications from Pub/Sub and publishes tasks to NATS JetStream.
// `worker sync --storage ID` runs one sync (backfill) of a source storage;
// `worker secrets rotate` re-seals stored credentials with a new key;
// `worker gcs cors --bucket B --origin O` sets a bucket's CORS policy for
// Label Studio.
// Configuration is environment variables or flags (see README and SPEC §5).
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"

	"github.com/sethvargo/go-envconfig"

	"github.com/labelsync/labelsync/internal/config"
	"github.com/labelsync/labelsync/internal/gcs"
	"github.com/labelsync/labelsync/internal/tracing"
	"github.com/labelsync/labelsync/internal/worker"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:])
	stop()
	os.Exit(config.Exit(err))
}

func run(ctx context.Context, args []string) error {
	if len(args) > 0 && args[0] == "sync" {
		return runSync(ctx, args[1:])
	}
	if len(args) > 1 && args[0] == "secrets" && args[1] == "rotate" {
		return runRotate(ctx, args[2:])
	}
	if len(args) > 1 && args[0] == "gcs" && args[1] == "cors" {
		return runCORS(ctx, args[2:])
	}
	cfg, err := worker.LoadConfig(ctx, args, envconfig.OsLookuper())
	if err != nil {
		return err
	}
	logger, err := cfg.Logger(os.Stderr)
	if err != nil {
		return err
	}
	// Traces: only the standard OTEL_* variables; off when none is set.
	tp, err := tracing.Setup(ctx, "labelsync-worker", os.LookupEnv)
	if err != nil {
		return err
	}
	defer tp.Close(logger)
	w, err := worker.New(ctx, cfg, logger, worker.WithTracing(tp))
	if err != nil {
		return err
	}
	return w.Run(ctx)
}

func runSync(ctx context.Context, args []string) error {
	id, reconcile, cfgArgs, err := syncFlags(args)
	if err != nil {
		return err
	}
	cfg, err := worker.LoadToolConfig(ctx, cfgArgs, envconfig.OsLookuper())
	if err != nil {
		return err
	}
	logger, err := cfg.Logger(os.Stderr)
	if err != nil {
		return err
	}
	return worker.RunSync(ctx, cfg, logger, id, reconcile, os.Stdout)
}

// runRotate is `worker secrets rotate`: LABELSYNC_SECRET_KEY is the
// current key, LABELSYNC_NEW_SECRET_KEY the next one.
func runRotate(ctx context.Context, args []string) error {
	cfg, err := worker.LoadToolConfig(ctx, args, envconfig.OsLookuper())
	if err != nil {
		return err
	}
	logger, err := cfg.Logger(os.Stderr)
	if err != nil {
		return err
	}
	return worker.RunRotate(ctx, cfg, logger, os.Getenv("LABELSYNC_NEW_SECRET_KEY"), os.Stdout)
}

// runCORS is `worker gcs cors --bucket B --origin O [--origin O2…]
// [--dry-run]`: Label Studio's CORS rule for the origins, other origins'
// rules kept, printed as JSON. It needs GCS access only
// (STORAGE_EMULATOR_HOST or Application Default Credentials).
func runCORS(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("worker gcs cors", flag.ContinueOnError)
	bucket := fs.String("bucket", "", "bucket whose CORS policy to set (required)")
	var origins []string
	fs.Func("origin", "origin Label Studio is served from, e.g. http://localhost:8080 (repeatable, required)", func(v string) error {
		origins = append(origins, v)
		return nil
	})
	dryRun := fs.Bool("dry-run", false, "print the policy without setting it")
	if err := fs.Parse(args); err != nil {
		return err // -h: config.ErrHelp, which exits 0
	}
	if *bucket == "" || len(origins) == 0 || fs.NArg() > 0 {
		return errors.New("worker gcs cors: --bucket B and at least one --origin O are required")
	}
	clients := gcs.NewClients(gcs.Options{EmulatorHost: os.Getenv("STORAGE_EMULATOR_HOST")})
	defer func() { _ = clients.Close() }()
	c, err := clients.For(ctx, nil)
	if err != nil {
		return fmt.Errorf("worker gcs cors: %w", err)
	}
	rules, err := gcs.SetCORS(ctx, c.Bucket(*bucket), origins, *dryRun)
	if err != nil {
		return fmt.Errorf("worker gcs cors: %w", err)
	}
	out, err := json.MarshalIndent(rules, "", "  ")
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(os.Stdout, "%s\n", out)
	return err
}

// syncFlags takes --storage ID and --reconcile out of args; the rest are
// the worker's configuration flags.
func syncFlags(args []string) (id int64, reconcile bool, rest []string, err error) {
	var value string
	for i := 0; i < len(args); i++ {
		name, v, hasValue := strings.Cut(strings.TrimLeft(args[i], "-"), "=")
		switch {
		case !strings.HasPrefix(args[i], "-"):
			rest = append(rest, args[i])
		case name == "reconcile":
			reconcile = !hasValue || v == "true"
		case name == "storage":
			if !hasValue && i+1 < len(args) {
				i++
				v = args[i]
			}
			value = v
		default:
			rest = append(rest, args[i])
		}
	}
	id, err = strconv.ParseInt(value, 10, 64)
	if err != nil || id <= 0 {
		return 0, false, nil, errors.New("worker sync: --storage ID (a positive integer) is required")
	}
	return id, reconcile, rest, nil
}
