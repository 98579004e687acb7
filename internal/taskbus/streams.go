package taskbus

import (
	"context"
	"errors"
	"fmt"
	"slices"
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
		// One subject per annotation, keeping its newest change only: the
		// stream is the exporter's record of every annotation it knows,
		// which an export sync writes out again.
		AnnotationsStream: {
			Name:              AnnotationsStream,
			Description:       "Label Studio annotation changes for the exporter, the newest per annotation",
			Subjects:          []string{"labelsync.annotations.>"},
			Storage:           jetstream.FileStorage,
			Retention:         jetstream.LimitsPolicy,
			MaxMsgsPerSubject: 1,
			Duplicates:        2 * time.Minute,
		},
	}
}

// EnsureStreams creates the named streams that are missing, with
// labelsync's configuration and the bus's replicas. A stream that exists
// keeps what an operator set (size caps, placement, limits that keep every
// head, more replicas): only subjects labelsync needs and the stream lacks
// are added, and replicas are raised to the bus's when it has fewer, never
// lowered. It also reads each stream's max_msg_size, for MaxMessageBytes.
func (b *Bus) EnsureStreams(ctx context.Context, names ...string) error {
	cfgs := StreamConfigs()
	for _, name := range names {
		want, ok := cfgs[name]
		if !ok {
			return fmt.Errorf("taskbus: unknown stream %q", name)
		}
		s, err := b.js.Stream(ctx, name)
		if errors.Is(err, jetstream.ErrStreamNotFound) {
			s, err = b.js.CreateStream(ctx, want)
			if errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) {
				// Another process created it first.
				s, err = b.js.Stream(ctx, name)
			}
		}
		if err != nil {
			return fmt.Errorf("taskbus: stream %s: %w", name, err)
		}
		cfg := s.CachedInfo().Config
		if missing := missingSubjects(cfg.Subjects, want.Subjects); len(missing) > 0 {
			cfg.Subjects = append(cfg.Subjects, missing...)
			if s, err = b.js.UpdateStream(ctx, cfg); err != nil {
				return fmt.Errorf("taskbus: stream %s: add subjects %v: %w", name, missing, err)
			}
		}
		if err := raiseReplicas(ctx, b.js, s, b.replicas); err != nil {
			return err
		}
		b.limits.Store(name, int64(s.CachedInfo().Config.MaxMsgSize))
	}
	return nil
}

func missingSubjects(have, want []string) []string {
	var missing []string
	for _, w := range want {
		if !slices.Contains(have, w) {
			missing = append(missing, w)
		}
	}
	return missing
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
