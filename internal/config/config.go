// Package config loads a binary's Config from the environment and from
// command-line flags of the same names, in one place. Each variable
// LABELSYNC_FOO_BAR is also the flag --labelsync-foo-bar (and the shorter
// --foo-bar); a flag wins over the environment. Tests build a Config from a
// map lookuper instead of the process environment.
package config

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"reflect"
	"strings"

	"github.com/sethvargo/go-envconfig"

	"github.com/labelsync/labelsync/internal/tracing"
)

// Load fills target (a pointer to a struct with `env` tags) from args and
// lookup. Errors are one line that names the variable.
func Load(ctx context.Context, name string, args []string, lookup envconfig.Lookuper, target any) error {
	flags, err := parseFlags(name, args, target)
	if err != nil {
		return err
	}
	err = envconfig.ProcessWith(ctx, &envconfig.Config{
		Target:   target,
		Lookuper: envconfig.MultiLookuper(envconfig.MapLookuper(flags), lookup),
	})
	if err != nil {
		// envconfig names parse failures by struct field; users know the
		// variable.
		msg := err.Error()
		for field, env := range fieldEnvs(reflect.TypeOf(target).Elem()) {
			if rest, ok := strings.CutPrefix(msg, field+": "); ok {
				return fmt.Errorf("%s: %s", env, rest)
			}
		}
		return fmt.Errorf("config: %w", err)
	}
	return nil
}

func fieldEnvs(t reflect.Type) map[string]string {
	out := map[string]string{}
	for i := range t.NumField() {
		f := t.Field(i)
		if f.Type.Kind() == reflect.Struct && f.Tag.Get("env") == "" {
			for k, v := range fieldEnvs(f.Type) {
				out[k] = v
			}
			continue
		}
		if tag := f.Tag.Get("env"); tag != "" {
			out[f.Name] = strings.TrimSpace(strings.SplitN(tag, ",", 2)[0])
		}
	}
	return out
}

// parseFlags registers one string flag per env variable of target and
// returns the ones set, keyed by variable.
func parseFlags(name string, args []string, target any) (map[string]string, error) {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	values := map[string]*string{}
	for _, env := range envNames(reflect.TypeOf(target).Elem()) {
		long := strings.ToLower(strings.ReplaceAll(env, "_", "-"))
		v := new(string)
		fs.StringVar(v, long, "", env)
		if short, ok := strings.CutPrefix(long, "labelsync-"); ok {
			fs.StringVar(v, short, "", env)
		}
		values[env] = v
	}
	if err := fs.Parse(args); err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("config: unexpected argument %q", fs.Arg(0))
	}
	set := map[string]string{}
	fs.Visit(func(f *flag.Flag) {
		for env, v := range values {
			if f.Usage == env {
				set[env] = *v
			}
		}
	})
	return set, nil
}

func envNames(t reflect.Type) []string {
	var names []string
	for _, env := range fieldEnvs(t) {
		names = append(names, env)
	}
	return names
}

// Logging is the logging part of every binary's Config.
type Logging struct {
	LogLevel  string `env:"LABELSYNC_LOG_LEVEL, default=info"`
	LogFormat string `env:"LABELSYNC_LOG_FORMAT, default=json"`
}

// Logger builds the slog logger Logging describes, writing to w.
func (l Logging) Logger(w io.Writer) (*slog.Logger, error) {
	var level slog.Level
	if err := level.UnmarshalText([]byte(l.LogLevel)); err != nil {
		return nil, fmt.Errorf("LABELSYNC_LOG_LEVEL: %q is not one of debug, info, warn, error", l.LogLevel)
	}
	opts := &slog.HandlerOptions{Level: level}
	switch strings.ToLower(l.LogFormat) {
	// Lines logged with a context that holds a span carry its trace and
	// span ids (tracing.LogHandler).
	case "json":
		return slog.New(tracing.LogHandler(slog.NewJSONHandler(w, opts))), nil
	case "text":
		return slog.New(tracing.LogHandler(slog.NewTextHandler(w, opts))), nil
	}
	return nil, fmt.Errorf("LABELSYNC_LOG_FORMAT: %q is not json or text", l.LogFormat)
}

// ErrHelp is returned by Load when -h or -help was given.
var ErrHelp = flag.ErrHelp

// Exit prints err the way every labelsync binary reports a fatal start-up
// error: one line on stderr. It returns the exit code.
func Exit(err error) int {
	if err == nil {
		return 0
	}
	if errors.Is(err, ErrHelp) {
		return 0
	}
	fmt.Fprintln(os.Stderr, strings.Join(strings.Fields(err.Error()), " "))
	return 1
}
