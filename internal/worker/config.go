package worker

import (
	"context"
	"fmt"
	"net"
	"net/url"
	"regexp"
	"time"

	"github.com/sethvargo/go-envconfig"

	"github.com/labelsync/labelsync/internal/config"
	"github.com/labelsync/labelsync/internal/secrets"
	"github.com/labelsync/labelsync/internal/taskbus"
)

// Config is the worker's configuration (SPEC §5). Every field is a
// variable and a flag; defaults sit next to the fields.
type Config struct {
	// NATSURL empty starts an embedded NATS server with JetStream on
	// EmbeddedNATSAddr, storing in DataDir.
	NATSURL          string `env:"LABELSYNC_NATS_URL"`
	DataDir          string `env:"LABELSYNC_DATA_DIR, default=./data"`
	EmbeddedNATSAddr string `env:"LABELSYNC_EMBEDDED_NATS_ADDR, default=127.0.0.1:4222"`
	HTTPAddr         string `env:"LABELSYNC_HTTP_ADDR, default=:8080"`

	// Required to serve (LoadConfig); the one-shot commands (sync, secrets
	// rotate, gcs cors) use no Pub/Sub and load with LoadToolConfig.
	PubsubProject      string `env:"LABELSYNC_PUBSUB_PROJECT"`
	PubsubSubscription string `env:"LABELSYNC_PUBSUB_SUBSCRIPTION"`
	// PubsubTopic set: create the subscription on it when it is missing.
	PubsubTopic string `env:"LABELSYNC_PUBSUB_TOPIC"`
	// PubsubStreams: streaming-pull streams. The client's default of 1
	// delivers ~2k msgs/s from Google's emulator and ~80 from pstest; 32
	// keeps the pipeline, not the pull, the limit.
	PubsubStreams        int `env:"LABELSYNC_PUBSUB_STREAMS, default=32"`
	PubsubMaxOutstanding int `env:"LABELSYNC_PUBSUB_MAX_OUTSTANDING, default=1000"`

	StoragesFile string `env:"LABELSYNC_STORAGES_FILE"`
	// MaxObjectBytes caps the size of a Tasks-mode file; bigger ones are
	// dead-lettered. Reading streams, so the cap is about time, not memory.
	MaxObjectBytes int64  `env:"LABELSYNC_MAX_OBJECT_BYTES, default=4294967296"`
	APIToken       string `env:"LABELSYNC_API_TOKEN"`
	// APIRate and APIInFlight bound the storage API (all clients
	// together) so that it cannot starve the notification path: requests
	// per second, and handlers at once (BenchmarkAPIPressure).
	APIRate     float64 `env:"LABELSYNC_API_RATE, default=20"`
	APIInFlight int     `env:"LABELSYNC_API_IN_FLIGHT, default=2"`
	SecretKey   string  `env:"LABELSYNC_SECRET_KEY"`
	// StreamReplicas: replicas of every stream and key-value bucket
	// labelsync creates; existing ones are raised to it, never lowered.
	StreamReplicas int `env:"LABELSYNC_STREAM_REPLICAS, default=1"`

	// ShutdownTimeout bounds the drain of in-flight messages at shutdown.
	ShutdownTimeout time.Duration `env:"LABELSYNC_SHUTDOWN_TIMEOUT, default=30s"`

	// LabelStudioURL set runs the Label Studio connector (SPEC §8) with
	// LabelStudioToken: a legacy token, or a personal access token (a
	// JWT). The token is never logged.
	LabelStudioURL   string `env:"LABELSYNC_LABEL_STUDIO_URL"`
	LabelStudioToken string `env:"LABELSYNC_LABEL_STUDIO_TOKEN"`
	// Imports into Label Studio: tasks per request, requests at once, and
	// the longest a task waits for its batch to fill.
	LabelStudioBatchSize     int           `env:"LABELSYNC_LABEL_STUDIO_BATCH_SIZE, default=500"`
	LabelStudioInFlight      int           `env:"LABELSYNC_LABEL_STUDIO_IN_FLIGHT, default=4"`
	LabelStudioFlushInterval time.Duration `env:"LABELSYNC_LABEL_STUDIO_FLUSH_INTERVAL, default=200ms"`
	// LabelStudioAckWait: how soon a task event held by a replica that
	// died goes to another one (events in hand are extended).
	LabelStudioAckWait time.Duration `env:"LABELSYNC_LABEL_STUDIO_ACK_WAIT, default=60s"`

	config.Logging

	// Standard Google variables, read here so that nothing below main
	// touches the process environment.
	PubsubEmulatorHost  string `env:"PUBSUB_EMULATOR_HOST"`
	StorageEmulatorHost string `env:"STORAGE_EMULATOR_HOST"`
}

// LoadConfig reads the configuration of the serving worker from args and
// lookup and validates it.
func LoadConfig(ctx context.Context, args []string, lookup envconfig.Lookuper) (Config, error) {
	c, err := LoadToolConfig(ctx, args, lookup)
	if err != nil {
		return Config{}, err
	}
	if err := c.validatePubsub(); err != nil {
		return Config{}, err
	}
	return c, nil
}

// LoadToolConfig is LoadConfig for the one-shot commands (`worker sync`,
// `worker secrets rotate`, `worker gcs cors`), which receive nothing from
// Pub/Sub: its variables are checked only when set.
func LoadToolConfig(ctx context.Context, args []string, lookup envconfig.Lookuper) (Config, error) {
	var c Config
	if err := config.Load(ctx, "worker", args, lookup, &c); err != nil {
		return Config{}, err
	}
	if err := c.validateCommon(); err != nil {
		return Config{}, err
	}
	if c.PubsubProject != "" || c.PubsubSubscription != "" {
		if err := c.validatePubsub(); err != nil {
			return Config{}, err
		}
	}
	return c, nil
}

// Pub/Sub resource IDs: a letter, then 2–254 of letters, digits and - _ . ~ + %.
var pubsubID = regexp.MustCompile(`^[A-Za-z][A-Za-z0-9\-_.~+%]{2,254}$`)

// Validate checks every field; the error names the variable.
func (c *Config) Validate() error {
	if err := c.validateCommon(); err != nil {
		return err
	}
	return c.validatePubsub()
}

func (c *Config) validatePubsub() error {
	if c.PubsubProject == "" {
		return fmt.Errorf("LABELSYNC_PUBSUB_PROJECT: required (the project of the subscription to consume)")
	}
	if !pubsubID.MatchString(c.PubsubProject) && !regexp.MustCompile(`^[a-z][a-z0-9\-.:]{2,}$`).MatchString(c.PubsubProject) {
		return fmt.Errorf("LABELSYNC_PUBSUB_PROJECT: %q is not a project ID", c.PubsubProject)
	}
	if c.PubsubSubscription == "" {
		return fmt.Errorf("LABELSYNC_PUBSUB_SUBSCRIPTION: required (the subscription to consume)")
	}
	if !pubsubID.MatchString(c.PubsubSubscription) {
		return fmt.Errorf("LABELSYNC_PUBSUB_SUBSCRIPTION: %q is not a subscription ID (3–255 letters, digits, - _ . ~ + %%, starting with a letter)", c.PubsubSubscription)
	}
	return nil
}

func (c *Config) validateCommon() error {
	if c.NATSURL != "" {
		if u, err := url.Parse(c.NATSURL); err != nil || u.Host == "" {
			return fmt.Errorf("LABELSYNC_NATS_URL: %q is not a URL like nats://host:4222", c.NATSURL)
		}
	} else {
		if _, _, err := net.SplitHostPort(c.EmbeddedNATSAddr); err != nil {
			return fmt.Errorf("LABELSYNC_EMBEDDED_NATS_ADDR: %q is not host:port", c.EmbeddedNATSAddr)
		}
		if c.DataDir == "" {
			return fmt.Errorf("LABELSYNC_DATA_DIR: must not be empty with the embedded NATS server")
		}
	}
	if _, _, err := net.SplitHostPort(c.HTTPAddr); err != nil {
		return fmt.Errorf("LABELSYNC_HTTP_ADDR: %q is not host:port (e.g. :8080)", c.HTTPAddr)
	}
	if c.PubsubTopic != "" && !pubsubID.MatchString(c.PubsubTopic) && !regexp.MustCompile(`^projects/[^/]+/topics/[A-Za-z][A-Za-z0-9\-_.~+%]{2,254}$`).MatchString(c.PubsubTopic) {
		return fmt.Errorf("LABELSYNC_PUBSUB_TOPIC: %q is not a topic ID", c.PubsubTopic)
	}
	if c.PubsubStreams < 1 || c.PubsubStreams > 256 {
		return fmt.Errorf("LABELSYNC_PUBSUB_STREAMS: %d is outside 1..256", c.PubsubStreams)
	}
	if c.PubsubMaxOutstanding < 1 || c.PubsubMaxOutstanding > 1_000_000 {
		return fmt.Errorf("LABELSYNC_PUBSUB_MAX_OUTSTANDING: %d is outside 1..1000000", c.PubsubMaxOutstanding)
	}
	if c.SecretKey != "" {
		if _, err := secrets.New(c.SecretKey); err != nil {
			return err
		}
	}
	if c.StreamReplicas < 1 || c.StreamReplicas > taskbus.MaxReplicas {
		return fmt.Errorf("LABELSYNC_STREAM_REPLICAS: %d is outside 1..%d", c.StreamReplicas, taskbus.MaxReplicas)
	}
	if c.APIRate <= 0 {
		return fmt.Errorf("LABELSYNC_API_RATE: %g must be positive", c.APIRate)
	}
	if c.APIInFlight < 1 {
		return fmt.Errorf("LABELSYNC_API_IN_FLIGHT: %d must be at least 1", c.APIInFlight)
	}
	if c.MaxObjectBytes < 1 {
		return fmt.Errorf("LABELSYNC_MAX_OBJECT_BYTES: %d must be positive", c.MaxObjectBytes)
	}
	if c.ShutdownTimeout <= 0 {
		return fmt.Errorf("LABELSYNC_SHUTDOWN_TIMEOUT: %s must be positive", c.ShutdownTimeout)
	}
	if err := c.validateLabelStudio(); err != nil {
		return err
	}
	if _, err := c.Logging.Logger(nil); err != nil {
		return err
	}
	return nil
}

// validateLabelStudio checks the connector's variables (SPEC §8).
func (c *Config) validateLabelStudio() error {
	if c.LabelStudioURL == "" {
		return nil
	}
	if u, err := url.Parse(c.LabelStudioURL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("LABELSYNC_LABEL_STUDIO_URL: %q is not an http(s) URL like http://localhost:8080", c.LabelStudioURL)
	}
	if c.LabelStudioToken == "" {
		return fmt.Errorf("LABELSYNC_LABEL_STUDIO_TOKEN: required with LABELSYNC_LABEL_STUDIO_URL (a Label Studio legacy token or personal access token)")
	}
	if c.LabelStudioBatchSize < 1 || c.LabelStudioBatchSize > 100_000 {
		return fmt.Errorf("LABELSYNC_LABEL_STUDIO_BATCH_SIZE: %d is outside 1..100000", c.LabelStudioBatchSize)
	}
	if c.LabelStudioInFlight < 1 || c.LabelStudioInFlight > 256 {
		return fmt.Errorf("LABELSYNC_LABEL_STUDIO_IN_FLIGHT: %d is outside 1..256", c.LabelStudioInFlight)
	}
	if c.LabelStudioFlushInterval < time.Millisecond || c.LabelStudioFlushInterval > time.Minute {
		return fmt.Errorf("LABELSYNC_LABEL_STUDIO_FLUSH_INTERVAL: %s is outside 1ms..1m", c.LabelStudioFlushInterval)
	}
	if c.LabelStudioAckWait < time.Second {
		return fmt.Errorf("LABELSYNC_LABEL_STUDIO_ACK_WAIT: %s is under 1s", c.LabelStudioAckWait)
	}
	return nil
}
