package taskbus

import (
	"context"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// StreamConfigs are the streams labelsync owns. The task stream keeps
// everything: it is the import ledger, and a limit that dropped a key's head
// would let an old generation be imported again.
func StreamConfigs() map[string]jetstream.StreamConfig {
	return map[string]jetstream.StreamConfig{
		TasksStream: {
			Name:        TasksStream,
			Description: "labelsync task events; also the import ledger (do not add age or size limits)",
			Subjects:    []string{tasksRoot + ".>", ledgerRoot + ".>"},
			Storage:     jetstream.FileStorage,
			Retention:   jetstream.LimitsPolicy,
			Duplicates:  2 * time.Minute,
		},
		DeadLetterStream: {
			Name:        DeadLetterStream,
			Description: "labelsync inputs that can never succeed, with the reason",
			Subjects:    []string{"labelsync.deadletter.>"},
			Storage:     jetstream.FileStorage,
			Retention:   jetstream.LimitsPolicy,
			Duplicates:  2 * time.Minute,
		},
		AnnotationsStream: {
			Name:        AnnotationsStream,
			Description: "Label Studio annotation webhook payloads for the exporter",
			Subjects:    []string{"labelsync.annotations.>"},
			Storage:     jetstream.FileStorage,
			Retention:   jetstream.LimitsPolicy,
			Duplicates:  2 * time.Minute,
		},
	}
}

// EnsureStreams creates the named streams, or updates them to labelsync's
// configuration.
func (b *Bus) EnsureStreams(ctx context.Context, names ...string) error {
	cfgs := StreamConfigs()
	for _, name := range names {
		cfg, ok := cfgs[name]
		if !ok {
			return fmt.Errorf("taskbus: unknown stream %q", name)
		}
		if _, err := b.js.CreateOrUpdateStream(ctx, cfg); err != nil {
			return fmt.Errorf("taskbus: stream %s: %w", name, err)
		}
	}
	return nil
}

// StreamsExist reports whether every named stream exists, for readiness.
func (b *Bus) StreamsExist(ctx context.Context, names ...string) error {
	for _, name := range names {
		if _, err := b.js.Stream(ctx, name); err != nil {
			return fmt.Errorf("taskbus: stream %s: %w", name, err)
		}
	}
	return nil
}
