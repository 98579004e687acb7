package ctl

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"github.com/labelsync/labelsync/internal/resolve"
)

const testSecretKey = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=" // 32 bytes, base64

// TestSign: lsctl sign prints the worker's link for the object, under the
// base URL; the worker's end is tested in internal/e2e (TestResolver).
func TestSign(t *testing.T) {
	t.Parallel()
	now := time.Unix(1_800_000_000, 0)
	links, err := resolve.NewLinks(testSecretKey)
	if err != nil {
		t.Fatal(err)
	}
	env := Env{SecretKey: testSecretKey}
	for _, c := range []struct {
		args    []string
		base    string
		expires time.Time
	}{
		{[]string{"--project", "7", "--fileuri", "gs://acme-raw/incoming/cat 1.jpg"}, "http://localhost:8080", time.Time{}},
		{[]string{"--project=7", "--fileuri=gs://acme-raw/incoming/cat 1.jpg", "--ttl", "24h", "--base-url", "https://ls.example/labelsync/"}, "https://ls.example/labelsync", now.Add(24 * time.Hour)},
	} {
		var out bytes.Buffer
		if err := sign(c.args, env, now, &out); err != nil {
			t.Fatalf("%v: %v", c.args, err)
		}
		path, err := links.Path(7, "gs://acme-raw/incoming/cat 1.jpg", c.expires)
		if err != nil {
			t.Fatal(err)
		}
		if got, want := out.String(), c.base+path+"\n"; got != want {
			t.Errorf("%v printed %q, want %q", c.args, got, want)
		}
	}
	for _, c := range []struct {
		args []string
		env  Env
		want string
	}{
		{[]string{"--fileuri", "gs://acme-raw/x"}, env, "--project"},
		{[]string{"--project", "7"}, env, "--fileuri"},
		{[]string{"--project", "7", "--fileuri", "gs://acme-raw/../x"}, env, "--fileuri"},
		{[]string{"--project", "7", "--fileuri", "s3://acme-raw/x"}, env, "--fileuri"},
		{[]string{"--project", "7", "--fileuri", "gs://acme-raw/x", "--ttl", "-1h"}, env, "--ttl"},
		{[]string{"--project", "7", "--fileuri", "gs://acme-raw/x", "--base-url", "localhost:8080"}, env, "--base-url"},
		{[]string{"--project", "7", "--fileuri", "gs://acme-raw/x"}, Env{}, "LABELSYNC_SECRET_KEY"},
	} {
		err := sign(c.args, c.env, now, &bytes.Buffer{})
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%v: %v, want an error naming %s", c.args, err, c.want)
		}
		if err != nil && strings.Contains(err.Error(), testSecretKey) {
			t.Errorf("%v: the error shows the key", c.args)
		}
	}
}
