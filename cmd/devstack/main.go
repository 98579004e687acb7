// Command devstack runs the local emulator stack of SPEC §7 in one process:
// a Pub/Sub emulator (pstest) on 127.0.0.1:8085 and a GCS emulator
// (fake-gcs-server) on http://127.0.0.1:4443 that publishes notifications
// for every bucket to topic labelsync-uploads of project labelsync-dev.
//
// When ready it prints one line to stdout with the environment to export;
// logs go to stderr. SIGINT or SIGTERM stops it; a second signal kills it.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"

	"github.com/sethvargo/go-envconfig"

	"github.com/labelsync/labelsync/internal/devstack"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	// Restore default signal handling once shutdown starts, so a second
	// Ctrl-C ends a shutdown that hangs.
	context.AfterFunc(ctx, stop)
	err := run(ctx, os.Args[1:], envconfig.OsLookuper(), os.Stdout, os.Stderr)
	stop()
	if err != nil && !errors.Is(err, flag.ErrHelp) {
		fmt.Fprintln(os.Stderr, "devstack:", err)
		os.Exit(1)
	}
}

// run starts the stack, announces it on stdout and serves until ctx ends.
func run(ctx context.Context, args []string, env envconfig.Lookuper, stdout, stderr io.Writer) (err error) {
	cfg, err := loadConfig(ctx, args, env, stderr)
	if err != nil {
		return err
	}
	logger := cfg.logger(stderr)

	stack, err := devstack.Start(ctx, cfg.options(logger))
	if err != nil {
		return err
	}
	defer func() {
		if cerr := stack.Close(); cerr != nil && err == nil {
			err = cerr
		}
	}()

	pubsubKind := "pstest"
	if stack.Pstest == nil {
		pubsubKind = "external emulator"
	}
	logger.Info("devstack ready",
		"pubsub_addr", stack.PubsubAddr,
		"pubsub", pubsubKind,
		"gcs_url", stack.GCSURL,
		"topic", stack.TopicName(),
		"buckets", cfg.Buckets,
	)
	// Scripts wait for this line, so it is the only thing on stdout.
	if _, err := fmt.Fprintf(stdout, "devstack ready: pubsub (%s) %s, gcs %s, notifications of every bucket to %s, buckets [%s]; export PUBSUB_EMULATOR_HOST=%s STORAGE_EMULATOR_HOST=%s\n",
		pubsubKind, stack.PubsubAddr, stack.GCSURL, stack.TopicName(), strings.Join(cfg.Buckets, " "),
		stack.PubsubAddr, stack.GCSURL); err != nil {
		return fmt.Errorf("writing ready line: %w", err)
	}

	<-ctx.Done()
	logger.Info("devstack shutting down", "cause", context.Cause(ctx))
	return nil
}
