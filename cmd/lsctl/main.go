// Command lsctl watches labelsync's streams, uploads, lists, prints and
// deletes objects, posts annotation webhooks to the exporter on the local
// stack, and signs resolver links. Run it without arguments for usage.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"

	"github.com/labelsync/labelsync/internal/ctl"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	err := ctl.Run(ctx, os.Args[1:], ctl.Env{
		NATSURL:             os.Getenv("LABELSYNC_NATS_URL"),
		StorageEmulatorHost: os.Getenv("STORAGE_EMULATOR_HOST"),
		WebhookSecret:       os.Getenv("LABELSYNC_WEBHOOK_SECRET"),
		SecretKey:           os.Getenv("LABELSYNC_SECRET_KEY"),
		LabelStudioURL:      os.Getenv("LABELSYNC_LABEL_STUDIO_URL"),
		LabelStudioToken:    os.Getenv("LABELSYNC_LABEL_STUDIO_TOKEN"),
	}, os.Stdin, os.Stdout)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}
