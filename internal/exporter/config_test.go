package exporter

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/sethvargo/go-envconfig"
)

func TestLoadConfigDefaults(t *testing.T) {
	t.Parallel()
	c, err := LoadConfig(context.Background(), nil, envconfig.MapLookuper(map[string]string{"LABELSYNC_WEBHOOK_SECRET": "s"}))
	if err != nil {
		t.Fatal(err)
	}
	if c.HTTPAddr != ":8081" || c.NATSURL != "nats://127.0.0.1:4222" || c.Concurrency != 32 || c.AckWait != 30*time.Second ||
		c.ShutdownTimeout != 30*time.Second || c.LogLevel != "info" || c.LogFormat != "json" || c.WebhookDisabled {
		t.Fatalf("defaults wrong: %+v", c)
	}
}

func TestLoadConfigErrorsNameTheVariable(t *testing.T) {
	t.Parallel()
	tests := []struct {
		env  map[string]string
		want string
	}{
		{map[string]string{}, "LABELSYNC_WEBHOOK_SECRET"},
		{map[string]string{"LABELSYNC_WEBHOOK_DISABLED": "maybe"}, "LABELSYNC_WEBHOOK_DISABLED"},
		{map[string]string{"LABELSYNC_WEBHOOK_SECRET": "s", "LABELSYNC_NATS_URL": "not a url"}, "LABELSYNC_NATS_URL"},
		{map[string]string{"LABELSYNC_WEBHOOK_SECRET": "s", "LABELSYNC_HTTP_ADDR": "8081"}, "LABELSYNC_HTTP_ADDR"},
		{map[string]string{"LABELSYNC_WEBHOOK_SECRET": "s", "LABELSYNC_EXPORT_CONCURRENCY": "0"}, "LABELSYNC_EXPORT_CONCURRENCY"},
		{map[string]string{"LABELSYNC_WEBHOOK_SECRET": "s", "LABELSYNC_EXPORT_ACK_WAIT": "10ms"}, "LABELSYNC_EXPORT_ACK_WAIT"},
		{map[string]string{"LABELSYNC_WEBHOOK_SECRET": "s", "LABELSYNC_SECRET_KEY": "short"}, "LABELSYNC_SECRET_KEY"},
		{map[string]string{"LABELSYNC_WEBHOOK_SECRET": "s", "LABELSYNC_LOG_LEVEL": "loud"}, "LABELSYNC_LOG_LEVEL"},
	}
	for _, tt := range tests {
		_, err := LoadConfig(context.Background(), nil, envconfig.MapLookuper(tt.env))
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%v: err %v, want one naming %s", tt.env, err, tt.want)
		}
	}
	// Explicitly disabled, no secret is needed.
	if _, err := LoadConfig(context.Background(), nil, envconfig.MapLookuper(map[string]string{"LABELSYNC_WEBHOOK_DISABLED": "true"})); err != nil {
		t.Errorf("webhook disabled: %v", err)
	}
}
