package worker

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/sethvargo/go-envconfig"
)

func TestLoadConfigDefaults(t *testing.T) {
	t.Parallel()
	c, err := LoadConfig(context.Background(), nil, envconfig.MapLookuper(map[string]string{
		"LABELSYNC_PUBSUB_PROJECT":      "acme",
		"LABELSYNC_PUBSUB_SUBSCRIPTION": "gcs-uploads",
	}))
	if err != nil {
		t.Fatal(err)
	}
	if c.HTTPAddr != ":8080" || c.DataDir != "./data" || c.NATSURL != "" || c.PubsubMaxOutstanding != 1000 ||
		c.PubsubStreams < 2 || c.LogLevel != "info" || c.LogFormat != "json" || c.ShutdownTimeout != 30*time.Second ||
		c.EmbeddedNATSAddr != "127.0.0.1:4222" {
		t.Fatalf("defaults wrong: %+v", c)
	}
}

func TestLoadConfigFlagsWin(t *testing.T) {
	t.Parallel()
	c, err := LoadConfig(context.Background(),
		[]string{"--labelsync-http-addr", "127.0.0.1:9000", "--pubsub-streams=4"},
		envconfig.MapLookuper(map[string]string{
			"LABELSYNC_PUBSUB_PROJECT":      "acme",
			"LABELSYNC_PUBSUB_SUBSCRIPTION": "gcs-uploads",
			"LABELSYNC_HTTP_ADDR":           ":1234",
		}))
	if err != nil {
		t.Fatal(err)
	}
	if c.HTTPAddr != "127.0.0.1:9000" || c.PubsubStreams != 4 {
		t.Fatalf("got HTTPAddr %q streams %d, want flags to win", c.HTTPAddr, c.PubsubStreams)
	}
}

func TestLoadConfigErrorsNameTheVariable(t *testing.T) {
	t.Parallel()
	base := map[string]string{
		"LABELSYNC_PUBSUB_PROJECT":      "acme",
		"LABELSYNC_PUBSUB_SUBSCRIPTION": "gcs-uploads",
	}
	tests := []struct {
		key, value string
	}{
		{"LABELSYNC_PUBSUB_PROJECT", ""},
		{"LABELSYNC_PUBSUB_SUBSCRIPTION", ""},
		{"LABELSYNC_PUBSUB_SUBSCRIPTION", "a b"},
		{"LABELSYNC_PUBSUB_TOPIC", "x"},
		{"LABELSYNC_PUBSUB_STREAMS", "many"},
		{"LABELSYNC_PUBSUB_STREAMS", "0"},
		{"LABELSYNC_PUBSUB_MAX_OUTSTANDING", "-1"},
		{"LABELSYNC_HTTP_ADDR", "8080"},
		{"LABELSYNC_NATS_URL", "::nope"},
		{"LABELSYNC_SECRET_KEY", "c2hvcnQ="},
		{"LABELSYNC_LOG_LEVEL", "loud"},
		{"LABELSYNC_LOG_FORMAT", "xml"},
		{"LABELSYNC_SHUTDOWN_TIMEOUT", "soon"},
	}
	for _, tt := range tests {
		env := map[string]string{}
		for k, v := range base {
			env[k] = v
		}
		env[tt.key] = tt.value
		_, err := LoadConfig(context.Background(), nil, envconfig.MapLookuper(env))
		if err == nil {
			t.Errorf("%s=%q: no error", tt.key, tt.value)
			continue
		}
		if !strings.Contains(err.Error(), tt.key) || strings.Contains(err.Error(), "\n") {
			t.Errorf("%s=%q: error %q does not name the variable on one line", tt.key, tt.value, err)
		}
	}
}

// TestLoadToolConfig: the one-shot commands need no Pub/Sub variables, but
// a bad one given is still refused.
func TestLoadToolConfig(t *testing.T) {
	t.Parallel()
	if _, err := LoadToolConfig(context.Background(), nil, envconfig.MapLookuper(nil)); err != nil {
		t.Errorf("no Pub/Sub variables: %v", err)
	}
	_, err := LoadToolConfig(context.Background(), nil, envconfig.MapLookuper(map[string]string{
		"LABELSYNC_PUBSUB_PROJECT": "acme", "LABELSYNC_PUBSUB_SUBSCRIPTION": "a b",
	}))
	if err == nil || !strings.Contains(err.Error(), "LABELSYNC_PUBSUB_SUBSCRIPTION") {
		t.Errorf("bad subscription: %v", err)
	}
	if _, err := LoadConfig(context.Background(), nil, envconfig.MapLookuper(nil)); err == nil || !strings.Contains(err.Error(), "LABELSYNC_PUBSUB_PROJECT") {
		t.Errorf("serving without Pub/Sub variables: %v, want an error naming LABELSYNC_PUBSUB_PROJECT", err)
	}
}
