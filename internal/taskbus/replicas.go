package taskbus

import (
	"context"
	"errors"
	"fmt"

	"github.com/nats-io/nats.go/jetstream"
)

// MaxReplicas is the most replicas JetStream keeps of a stream.
const MaxReplicas = 5

// WithReplicas sets how many replicas every stream and key-value bucket
// labelsync creates gets (LABELSYNC_STREAM_REPLICAS; default 1). A stream or
// bucket that exists with fewer is raised to n when it is opened; one with
// more keeps them, and nothing else an operator set (size caps, placement,
// limits) is changed: a routine restart must never weaken what an operator
// made durable.
func WithReplicas(n int) Option {
	return func(b *Bus) { b.replicas = n }
}

// replicated is the JetStream context the bus hands out (JetStream()), so
// that every package creating its own key-value bucket gets the replicas
// without knowing about them.
type replicated struct {
	jetstream.JetStream
	replicas int
}

func (r replicated) CreateStream(ctx context.Context, cfg jetstream.StreamConfig) (jetstream.Stream, error) {
	if cfg.Replicas == 0 {
		cfg.Replicas = r.replicas
	}
	return r.JetStream.CreateStream(ctx, cfg)
}

func (r replicated) CreateKeyValue(ctx context.Context, cfg jetstream.KeyValueConfig) (jetstream.KeyValue, error) {
	if cfg.Replicas == 0 {
		cfg.Replicas = r.replicas
	}
	return r.JetStream.CreateKeyValue(ctx, cfg)
}

// CreateOrUpdateKeyValue is OpenKeyValue: an update would put back
// whatever cfg says over what the operator set.
func (r replicated) CreateOrUpdateKeyValue(ctx context.Context, cfg jetstream.KeyValueConfig) (jetstream.KeyValue, error) {
	return OpenKeyValue(ctx, r, cfg)
}

// OpenKeyValue opens the bucket cfg names, creating it with cfg when it is
// missing (another process creating it at the same time is fine). An
// existing bucket is opened as it is, never updated. Through the bus's
// JetStream() it gets the bus's replicas.
func OpenKeyValue(ctx context.Context, js jetstream.JetStream, cfg jetstream.KeyValueConfig) (jetstream.KeyValue, error) {
	kv, err := js.KeyValue(ctx, cfg.Bucket)
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		kv, err = js.CreateKeyValue(ctx, cfg)
		if errors.Is(err, jetstream.ErrBucketExists) {
			kv, err = js.KeyValue(ctx, cfg.Bucket)
		}
	}
	return kv, err
}

// KeyValue opens a bucket and raises its replicas when it has fewer.
func (r replicated) KeyValue(ctx context.Context, bucket string) (jetstream.KeyValue, error) {
	kv, err := r.JetStream.KeyValue(ctx, bucket)
	if err != nil || r.replicas <= 1 {
		return kv, err
	}
	s, err := r.JetStream.Stream(ctx, "KV_"+bucket)
	if err != nil {
		return nil, fmt.Errorf("taskbus: key-value bucket %s: %w", bucket, err)
	}
	if err := raiseReplicas(ctx, r.JetStream, s, r.replicas); err != nil {
		return nil, err
	}
	return kv, nil
}

// raiseReplicas updates the stream to n replicas if it has fewer, keeping
// the rest of its configuration.
func raiseReplicas(ctx context.Context, js jetstream.JetStream, s jetstream.Stream, n int) error {
	cfg := s.CachedInfo().Config
	if cfg.Replicas >= n {
		return nil
	}
	from := cfg.Replicas
	cfg.Replicas = n
	if _, err := js.UpdateStream(ctx, cfg); err != nil {
		return fmt.Errorf("LABELSYNC_STREAM_REPLICAS: raising stream %s from %d to %d replicas: %w", cfg.Name, from, n, err)
	}
	return nil
}
