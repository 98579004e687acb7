package exporter

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"time"

	"github.com/sethvargo/go-envconfig"

	"github.com/labelsync/labelsync/internal/config"
	"github.com/labelsync/labelsync/internal/secrets"
	"github.com/labelsync/labelsync/internal/taskbus"
)

// Config is the exporter's configuration (SPEC §5): the worker's NATS,
// storages and credentials variables, its own HTTP address and webhook
// secret. Every field is a variable and a flag; defaults sit next to the
// fields.
type Config struct {
	// NATSURL: the exporter embeds no NATS server. The default is where a
	// worker's embedded server listens.
	NATSURL  string `env:"LABELSYNC_NATS_URL, default=nats://127.0.0.1:4222"`
	HTTPAddr string `env:"LABELSYNC_HTTP_ADDR, default=:8081"`

	StoragesFile string `env:"LABELSYNC_STORAGES_FILE"`
	SecretKey    string `env:"LABELSYNC_SECRET_KEY"`
	// StreamReplicas: as the worker's (LABELSYNC_STREAM_REPLICAS).
	StreamReplicas int `env:"LABELSYNC_STREAM_REPLICAS, default=1"`
	// WebhookSecret is the bearer secret Label Studio's webhook sends. The
	// exporter refuses to start without it unless WebhookDisabled.
	WebhookSecret   string `env:"LABELSYNC_WEBHOOK_SECRET"`
	WebhookDisabled bool   `env:"LABELSYNC_WEBHOOK_DISABLED, default=false"`
	// APIToken guards the export sync endpoint, as the worker's API.
	APIToken string `env:"LABELSYNC_API_TOKEN"`

	// Concurrency: annotation events handled at once by this replica.
	Concurrency int `env:"LABELSYNC_EXPORT_CONCURRENCY, default=32"`
	// AckWait: how soon an event taken by a replica that died goes to
	// another one. Handlers that are still working extend it.
	AckWait time.Duration `env:"LABELSYNC_EXPORT_ACK_WAIT, default=30s"`
	// ShutdownTimeout bounds the drain of events in hand at shutdown.
	ShutdownTimeout time.Duration `env:"LABELSYNC_SHUTDOWN_TIMEOUT, default=30s"`

	// LabelStudioURL set makes export sync read every annotation of the
	// project from Label Studio (SPEC §3, §8), with LabelStudioToken (a
	// legacy token or a personal access token; never logged).
	LabelStudioURL   string `env:"LABELSYNC_LABEL_STUDIO_URL"`
	LabelStudioToken string `env:"LABELSYNC_LABEL_STUDIO_TOKEN"`

	config.Logging

	// Standard Google variable, read here so that nothing below main
	// touches the process environment.
	StorageEmulatorHost string `env:"STORAGE_EMULATOR_HOST"`
}

// LoadConfig reads the configuration from args and lookup and validates it.
func LoadConfig(ctx context.Context, args []string, lookup envconfig.Lookuper) (Config, error) {
	var c Config
	if err := config.Load(ctx, "exporter", args, lookup, &c); err != nil {
		return Config{}, err
	}
	if err := c.Validate(); err != nil {
		return Config{}, err
	}
	return c, nil
}

// Validate checks every field; the error names the variable.
func (c *Config) Validate() error {
	if u, err := url.Parse(c.NATSURL); err != nil || u.Host == "" {
		return fmt.Errorf("LABELSYNC_NATS_URL: %q is not a URL like nats://host:4222", c.NATSURL)
	}
	if _, _, err := net.SplitHostPort(c.HTTPAddr); err != nil {
		return fmt.Errorf("LABELSYNC_HTTP_ADDR: %q is not host:port (e.g. :8081)", c.HTTPAddr)
	}
	if c.StreamReplicas < 1 || c.StreamReplicas > taskbus.MaxReplicas {
		return fmt.Errorf("LABELSYNC_STREAM_REPLICAS: %d is outside 1..%d", c.StreamReplicas, taskbus.MaxReplicas)
	}
	if c.WebhookSecret == "" && !c.WebhookDisabled {
		return errors.New("LABELSYNC_WEBHOOK_SECRET: required (the bearer secret Label Studio's webhook sends); set LABELSYNC_WEBHOOK_DISABLED=true to run without the webhook")
	}
	if c.SecretKey != "" {
		if _, err := secrets.New(c.SecretKey); err != nil {
			return err
		}
	}
	if c.Concurrency < 1 || c.Concurrency > 4096 {
		return fmt.Errorf("LABELSYNC_EXPORT_CONCURRENCY: %d is outside 1..4096", c.Concurrency)
	}
	if c.AckWait < time.Second {
		return fmt.Errorf("LABELSYNC_EXPORT_ACK_WAIT: %s is under 1s", c.AckWait)
	}
	if c.ShutdownTimeout <= 0 {
		return fmt.Errorf("LABELSYNC_SHUTDOWN_TIMEOUT: %s must be positive", c.ShutdownTimeout)
	}
	if c.LabelStudioURL != "" {
		if u, err := url.Parse(c.LabelStudioURL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return fmt.Errorf("LABELSYNC_LABEL_STUDIO_URL: %q is not an http(s) URL like http://localhost:8080", c.LabelStudioURL)
		}
		if c.LabelStudioToken == "" {
			return errors.New("LABELSYNC_LABEL_STUDIO_TOKEN: required with LABELSYNC_LABEL_STUDIO_URL (a Label Studio legacy token or personal access token)")
		}
	}
	if _, err := c.Logging.Logger(nil); err != nil {
		return err
	}
	return nil
}
