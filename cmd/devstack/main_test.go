package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"io"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/sethvargo/go-envconfig"
)

func TestLoadConfig(t *testing.T) {
	t.Parallel()
	defaults := Config{
		PubsubAddr: "127.0.0.1:8085",
		GCSAddr:    "127.0.0.1:4443",
		Project:    "labelsync-dev",
		Topic:      "labelsync-uploads",
		LogLevel:   "info",
		LogFormat:  "json",
	}
	tests := []struct {
		name    string
		env     map[string]string
		args    []string
		want    func(*Config)
		wantErr string
	}{
		{name: "defaults are SPEC §7", want: func(*Config) {}},
		{
			name: "env",
			env: map[string]string{
				"LABELSYNC_DEVSTACK_PUBSUB_ADDR": "127.0.0.1:0",
				"LABELSYNC_DEVSTACK_BUCKETS":     "a,b",
				"LABELSYNC_LOG_LEVEL":            "debug",
			},
			want: func(c *Config) {
				c.PubsubAddr = "127.0.0.1:0"
				c.Buckets = []string{"a", "b"}
				c.LogLevel = "debug"
			},
		},
		{
			name: "flags override env; -bucket replaces the env list",
			env:  map[string]string{"LABELSYNC_DEVSTACK_TOPIC": "from-env", "LABELSYNC_DEVSTACK_BUCKETS": "a,b"},
			args: []string{"-topic", "from-flag", "-bucket", "c", "-bucket", "d", "-gcs-addr", "127.0.0.1:0", "-project", "p1", "-pubsub-emulator-host", "127.0.0.1:9999"},
			want: func(c *Config) {
				c.Topic = "from-flag"
				c.Buckets = []string{"c", "d"}
				c.GCSAddr = "127.0.0.1:0"
				c.Project = "p1"
				c.PubsubEmulatorHost = "127.0.0.1:9999"
			},
		},
		{name: "bad level names the variable", env: map[string]string{"LABELSYNC_LOG_LEVEL": "loud"}, wantErr: "LABELSYNC_LOG_LEVEL"},
		{name: "bad format", env: map[string]string{"LABELSYNC_LOG_FORMAT": "xml"}, wantErr: "LABELSYNC_LOG_FORMAT"},
		{name: "bad address", args: []string{"-gcs-addr", "4443"}, wantErr: "-gcs-addr"},
		{name: "empty topic", args: []string{"-topic", ""}, wantErr: "-topic"},
		{name: "stray argument", args: []string{"extra"}, wantErr: "unexpected arguments"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, err := loadConfig(t.Context(), tt.args, envconfig.MapLookuper(tt.env), io.Discard)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("loadConfig error = %v, want one mentioning %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			want := defaults
			tt.want(&want)
			if got.PubsubAddr != want.PubsubAddr || got.GCSAddr != want.GCSAddr || got.Project != want.Project ||
				got.Topic != want.Topic || !slices.Equal(got.Buckets, want.Buckets) ||
				got.PubsubEmulatorHost != want.PubsubEmulatorHost || got.LogLevel != want.LogLevel || got.LogFormat != want.LogFormat {
				t.Errorf("loadConfig = %+v, want %+v", got, want)
			}
		})
	}
}

func TestHelp(t *testing.T) {
	t.Parallel()
	err := run(t.Context(), []string{"-h"}, envconfig.MapLookuper(nil), io.Discard, io.Discard)
	if !errors.Is(err, flag.ErrHelp) {
		t.Errorf("run -h = %v, want flag.ErrHelp", err)
	}
}

// TestRun starts the command on free ports, waits for the ready line, checks
// the advertised GCS answers with the requested bucket, and stops it the way
// a signal would.
func TestRun(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	env := envconfig.MapLookuper(map[string]string{
		"LABELSYNC_DEVSTACK_PUBSUB_ADDR": "127.0.0.1:0",
		"LABELSYNC_DEVSTACK_GCS_ADDR":    "127.0.0.1:0",
	})
	pr, pw := io.Pipe()
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"-bucket", "demo-source"}, env, pw, t.Output())
		pw.Close()
	}()

	lines := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(pr)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
		io.Copy(io.Discard, pr)
	}()
	var line string
	select {
	case line = <-lines:
	case err := <-done:
		t.Fatalf("run ended before ready: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("no ready line")
	}

	exports := map[string]string{}
	_, after, ok := strings.Cut(line, "; export ")
	if !ok {
		t.Fatalf("ready line %q has no export", line)
	}
	for kv := range strings.FieldsSeq(after) {
		k, v, _ := strings.Cut(kv, "=")
		exports[k] = v
	}
	if exports["PUBSUB_EMULATOR_HOST"] == "" || !strings.HasPrefix(exports["STORAGE_EMULATOR_HOST"], "http://127.0.0.1:") {
		t.Fatalf("ready line %q: exports %v", line, exports)
	}

	resp, err := http.Get(exports["STORAGE_EMULATOR_HOST"] + "/storage/v1/b?project=labelsync-dev")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var list struct {
		Items []struct{ Name string } `json:"items"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&list); err != nil {
		t.Fatal(err)
	}
	if len(list.Items) != 1 || list.Items[0].Name != "demo-source" {
		t.Errorf("buckets = %+v, want only demo-source", list.Items)
	}

	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("run after cancel = %v, want nil", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("run did not return after cancel")
	}
	if extra, ok := <-lines; ok {
		t.Errorf("second stdout line %q, want only the ready line", extra)
	}
}
