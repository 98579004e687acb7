package worker

import (
	"context"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"cloud.google.com/go/pubsub/v2/pstest"

	"github.com/labelsync/labelsync/internal/config"
	"github.com/labelsync/labelsync/internal/natstest"
)

func testConfig(t *testing.T) Config {
	t.Helper()
	ps := pstest.NewServer()
	t.Cleanup(func() { _ = ps.Close() })
	ns := natstest.Server(t)
	return Config{
		NATSURL: ns.URL(), HTTPAddr: "127.0.0.1:0", PubsubProject: "acme", PubsubSubscription: "gcs-uploads",
		PubsubStreams: 2, PubsubMaxOutstanding: 10, ShutdownTimeout: 5 * time.Second,
		Logging: config.Logging{LogLevel: "info", LogFormat: "json"}, PubsubEmulatorHost: ps.Addr,
	}
}

func TestMissingSubscriptionIsNamed(t *testing.T) {
	t.Parallel()
	cfg := testConfig(t)
	_, err := New(context.Background(), cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err == nil || !strings.Contains(err.Error(), "projects/acme/subscriptions/gcs-uploads") || !strings.Contains(err.Error(), "LABELSYNC_PUBSUB_TOPIC") {
		t.Fatalf("New without subscription or topic: err = %v, want it to name the subscription and LABELSYNC_PUBSUB_TOPIC", err)
	}
}

func TestCreatesSubscriptionOnTopicAndShutsDown(t *testing.T) {
	t.Parallel()
	cfg := testConfig(t)
	cfg.PubsubTopic = "uploads"
	ctx, cancel := context.WithCancel(context.Background())
	w, err := New(ctx, cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	deadline := time.Now().Add(10 * time.Second)
	for w.ready(ctx) != nil {
		if time.Now().After(deadline) {
			t.Fatalf("not ready: %v", w.ready(ctx))
		}
		time.Sleep(20 * time.Millisecond)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Run after shutdown: %v", err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("Run did not return after cancel")
	}
}

func TestBadStoragesFileStopsStart(t *testing.T) {
	t.Parallel()
	cfg := testConfig(t)
	cfg.PubsubTopic = "uploads"
	cfg.StoragesFile = t.TempDir() + "/missing.json"
	_, err := New(context.Background(), cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err == nil || !strings.Contains(err.Error(), "LABELSYNC_STORAGES_FILE") {
		t.Fatalf("err = %v, want it to name LABELSYNC_STORAGES_FILE", err)
	}
}

// A STORAGE_EMULATOR_HOST the resolver cannot use stops the start instead
// of leaving a worker without /api/resolve.
func TestBadStorageEmulatorHostStopsStart(t *testing.T) {
	t.Parallel()
	cfg := testConfig(t)
	cfg.PubsubTopic = "uploads"
	cfg.StorageEmulatorHost = "ftp://fake-gcs:4443"
	_, err := New(context.Background(), cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err == nil || !strings.Contains(err.Error(), "STORAGE_EMULATOR_HOST") {
		t.Fatalf("err = %v, want it to name STORAGE_EMULATOR_HOST", err)
	}
}
