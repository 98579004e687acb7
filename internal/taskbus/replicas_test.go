package taskbus_test

import (
	"context"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/labelsync/labelsync/internal/natstest"
	"github.com/labelsync/labelsync/internal/taskbus"
)

// TestReplicas, on a three-node JetStream cluster: streams and key-value
// buckets are created with LABELSYNC_STREAM_REPLICAS; a restart with the
// default of 1 keeps an operator's 3 replicas and size cap (the reported
// regression); a restart with 3 raises what has 1.
func TestReplicas(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("starts a three-node cluster")
	}
	_, urls := natstest.Cluster(t, 3)
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	bus := func(replicas int) *taskbus.Bus {
		b, err := taskbus.New(natstest.Connect(t, urls), 10*time.Second, taskbus.WithReplicas(replicas))
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	replicasOf := func(js jetstream.JetStream, stream string) jetstream.StreamConfig {
		s, err := js.Stream(ctx, stream)
		if err != nil {
			t.Fatal(err)
		}
		info, err := s.Info(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return info.Config
	}

	// Created with 3.
	three := bus(3)
	if err := three.EnsureStreams(ctx, taskbus.TasksStream); err != nil {
		t.Fatal(err)
	}
	if _, err := three.JetStream().CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: "made_with_three"}); err != nil {
		t.Fatal(err)
	}
	if got := replicasOf(three.JetStream(), taskbus.TasksStream).Replicas; got != 3 {
		t.Errorf("tasks stream created with %d replicas, want 3", got)
	}
	if got := replicasOf(three.JetStream(), "KV_made_with_three").Replicas; got != 3 {
		t.Errorf("bucket created with %d replicas, want 3", got)
	}

	// An operator caps the dead-letter stream's size; a restart with the
	// default keeps its replicas and the cap, and opening or
	// "create-or-updating" the bucket keeps its replicas.
	if err := three.EnsureStreams(ctx, taskbus.DeadLetterStream); err != nil {
		t.Fatal(err)
	}
	cfg := replicasOf(three.JetStream(), taskbus.DeadLetterStream)
	cfg.MaxBytes = 64 << 20
	if _, err := three.JetStream().UpdateStream(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	one := bus(1)
	if err := one.EnsureStreams(ctx, taskbus.TasksStream, taskbus.DeadLetterStream); err != nil {
		t.Fatal(err)
	}
	if _, err := one.JetStream().CreateOrUpdateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: "made_with_three"}); err != nil {
		t.Fatal(err)
	}
	for _, stream := range []string{taskbus.TasksStream, taskbus.DeadLetterStream, "KV_made_with_three"} {
		if got := replicasOf(one.JetStream(), stream).Replicas; got != 3 {
			t.Errorf("%s has %d replicas after a restart with the default, want 3 kept", stream, got)
		}
	}
	if got := replicasOf(one.JetStream(), taskbus.DeadLetterStream).MaxBytes; got != 64<<20 {
		t.Errorf("dead-letter stream MaxBytes %d after a restart, want the operator's cap kept", got)
	}

	// Made with 1, raised by a process configured with 3.
	if err := one.EnsureStreams(ctx, taskbus.AnnotationsStream); err != nil {
		t.Fatal(err)
	}
	if _, err := one.JetStream().CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: "made_with_one"}); err != nil {
		t.Fatal(err)
	}
	if err := three.EnsureStreams(ctx, taskbus.AnnotationsStream); err != nil {
		t.Fatal(err)
	}
	if _, err := three.JetStream().KeyValue(ctx, "made_with_one"); err != nil {
		t.Fatal(err)
	}
	for _, stream := range []string{taskbus.AnnotationsStream, "KV_made_with_one"} {
		if got := replicasOf(three.JetStream(), stream).Replicas; got != 3 {
			t.Errorf("%s has %d replicas after a start with 3, want raised to 3", stream, got)
		}
	}
	if got := replicasOf(three.JetStream(), taskbus.AnnotationsStream).MaxMsgsPerSubject; got != 1 {
		t.Errorf("annotations stream MaxMsgsPerSubject %d after raising replicas, want 1 kept", got)
	}

	if _, err := taskbus.New(natstest.Connect(t, urls), time.Second, taskbus.WithReplicas(6)); err == nil {
		t.Error("6 replicas accepted")
	}
}
