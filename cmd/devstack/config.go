package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"

	"github.com/sethvargo/go-envconfig"

	"github.com/labelsync/labelsync/internal/devstack"
)

// Config is devstack's configuration: environment first, flags override.
// Defaults are the fixed ports and names of SPEC §7.
type Config struct {
	// PubsubAddr is where pstest listens (flag -pubsub-addr).
	PubsubAddr string `env:"LABELSYNC_DEVSTACK_PUBSUB_ADDR, default=127.0.0.1:8085"`
	// GCSAddr is where fake-gcs-server listens (flag -gcs-addr).
	GCSAddr string `env:"LABELSYNC_DEVSTACK_GCS_ADDR, default=127.0.0.1:4443"`
	// Project owns the topic (flag -project).
	Project string `env:"LABELSYNC_DEVSTACK_PROJECT, default=labelsync-dev"`
	// Topic receives every bucket's notifications (flag -topic).
	Topic string `env:"LABELSYNC_DEVSTACK_TOPIC, default=labelsync-uploads"`
	// Buckets are created empty at start; comma-separated in the
	// environment, repeatable flag -bucket (flags replace the env list).
	Buckets []string `env:"LABELSYNC_DEVSTACK_BUCKETS"`
	// PubsubEmulatorHost, if set, is a running emulator (e.g. Google's) used
	// instead of pstest (flag -pubsub-emulator-host). Deliberately not
	// PUBSUB_EMULATOR_HOST: a shell that exported devstack's own address
	// would make it wait on itself.
	PubsubEmulatorHost string `env:"LABELSYNC_DEVSTACK_PUBSUB_EMULATOR_HOST"`
	// LogLevel and LogFormat are shared with the other binaries (SPEC §5).
	// LogLevel is a string so that a bad value is reported under the
	// variable's name; envconfig would name the Go field.
	LogLevel  string `env:"LABELSYNC_LOG_LEVEL, default=info"`
	LogFormat string `env:"LABELSYNC_LOG_FORMAT, default=json"`
}

// loadConfig reads env through lookup, then args. Usage and flag errors go to
// stderr; -h yields flag.ErrHelp.
func loadConfig(ctx context.Context, args []string, lookup envconfig.Lookuper, stderr io.Writer) (Config, error) {
	var cfg Config
	if err := envconfig.ProcessWith(ctx, &envconfig.Config{Target: &cfg, Lookuper: lookup}); err != nil {
		return Config{}, err
	}

	fs := flag.NewFlagSet("devstack", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&cfg.PubsubAddr, "pubsub-addr", cfg.PubsubAddr, "pstest listen address; port 0 picks a free port (env LABELSYNC_DEVSTACK_PUBSUB_ADDR)")
	fs.StringVar(&cfg.GCSAddr, "gcs-addr", cfg.GCSAddr, "fake-gcs-server listen address; port 0 picks a free port (env LABELSYNC_DEVSTACK_GCS_ADDR)")
	fs.StringVar(&cfg.Project, "project", cfg.Project, "project of the notification topic (env LABELSYNC_DEVSTACK_PROJECT)")
	fs.StringVar(&cfg.Topic, "topic", cfg.Topic, "topic that receives every bucket's notifications (env LABELSYNC_DEVSTACK_TOPIC)")
	fs.Var(&bucketsFlag{dst: &cfg.Buckets}, "bucket", "bucket to create at start; repeatable (env LABELSYNC_DEVSTACK_BUCKETS, comma-separated)")
	fs.StringVar(&cfg.PubsubEmulatorHost, "pubsub-emulator-host", cfg.PubsubEmulatorHost, "use this running Pub/Sub emulator instead of pstest (env LABELSYNC_DEVSTACK_PUBSUB_EMULATOR_HOST)")
	if err := fs.Parse(args); err != nil {
		return Config{}, err
	}
	if fs.NArg() > 0 {
		return Config{}, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	return cfg, cfg.validate()
}

func (c Config) validate() error {
	var errs []error
	for _, a := range []struct{ name, addr string }{
		{"-pubsub-addr / LABELSYNC_DEVSTACK_PUBSUB_ADDR", c.PubsubAddr},
		{"-gcs-addr / LABELSYNC_DEVSTACK_GCS_ADDR", c.GCSAddr},
	} {
		if _, _, err := net.SplitHostPort(a.addr); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", a.name, err))
		}
	}
	if c.Project == "" {
		errs = append(errs, errors.New("-project / LABELSYNC_DEVSTACK_PROJECT: empty"))
	}
	if c.Topic == "" {
		errs = append(errs, errors.New("-topic / LABELSYNC_DEVSTACK_TOPIC: empty"))
	}
	for _, b := range c.Buckets {
		if b == "" {
			errs = append(errs, errors.New("-bucket / LABELSYNC_DEVSTACK_BUCKETS: empty bucket name"))
		}
	}
	if _, err := c.level(); err != nil {
		errs = append(errs, fmt.Errorf("LABELSYNC_LOG_LEVEL: %w", err))
	}
	if c.LogFormat != "json" && c.LogFormat != "text" {
		errs = append(errs, fmt.Errorf("LABELSYNC_LOG_FORMAT: %q is neither json nor text", c.LogFormat))
	}
	return errors.Join(errs...)
}

func (c Config) level() (slog.Level, error) {
	var l slog.Level
	err := l.UnmarshalText([]byte(c.LogLevel))
	return l, err
}

func (c Config) logger(w io.Writer) *slog.Logger {
	level, _ := c.level() // validated
	opts := &slog.HandlerOptions{Level: level}
	if c.LogFormat == "text" {
		return slog.New(slog.NewTextHandler(w, opts))
	}
	return slog.New(slog.NewJSONHandler(w, opts))
}

func (c Config) options(logger *slog.Logger) devstack.Options {
	return devstack.Options{
		PubsubAddr:         c.PubsubAddr,
		GCSAddr:            c.GCSAddr,
		ProjectID:          c.Project,
		Topic:              c.Topic,
		PubsubEmulatorHost: c.PubsubEmulatorHost,
		Logger:             logger,
		Buckets:            c.Buckets,
	}
}

// bucketsFlag collects repeated -bucket flags. The first one replaces the
// list from the environment rather than adding to it, as every other flag
// replaces its variable.
type bucketsFlag struct {
	dst *[]string
	set bool
}

func (f *bucketsFlag) String() string {
	if f.dst == nil {
		return ""
	}
	return strings.Join(*f.dst, ",")
}

func (f *bucketsFlag) Set(v string) error {
	if !f.set {
		*f.dst = nil
		f.set = true
	}
	*f.dst = append(*f.dst, v)
	return nil
}
