package e2e

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/labelsync/labelsync/internal/taskbus"
	"github.com/labelsync/labelsync/internal/worker"
)

const nextSecretKey = "ZmVkY2JhOTg3NjU0MzIxMGZlZGNiYTk4NzY1NDMyMTA=" // 32 bytes, base64

// TestSecretKeyRotation: `worker secrets rotate` re-seals stored credentials
// while a worker runs; that worker keeps importing with the credentials it
// had, a worker started with the new key opens the re-sealed ones, and a
// process with the old key, or none, refuses to start, naming the variable.
// No output shows the credentials.
func TestSecretKeyRotation(t *testing.T) {
	t.Parallel()
	forEachBackend(t, func(t *testing.T, b backend) {
		h := newHarness(t, b, `{}`)
		var logs bytes.Buffer
		h.log = teeLogger(t, &logs)
		cfg := h.config()
		cfg.APIToken = "s3cret"
		cfg.SecretKey = secretKey
		old := h.startWorkerWith(cfg)

		// Tasks mode: every upload is read with the storage's credentials,
		// so each task below proves they were opened.
		code, created := h.api(old, "POST", "/api/storages/gcs", "s3cret",
			`{"project": 7, "bucket": "acme-raw", "prefix": "rot", "google_application_credentials": `+fmt.Sprintf("%q", markedCreds)+`}`)
		if code != http.StatusCreated {
			t.Fatalf("create: %d %v", code, created)
		}
		h.upload("acme-raw", "rot/1.json", `[{"text": "one"}]`)
		h.waitFor(func(evs []taskbus.Event) bool { return hasKey(evs, "rot/1.json") })

		var out bytes.Buffer
		if err := worker.RunRotate(h.ctx, cfg, h.log, nextSecretKey, &out); err != nil {
			t.Fatalf("rotate: %v", err)
		}
		if !strings.Contains(out.String(), "re-sealed the credentials of 1 storages") {
			t.Errorf("rotate printed %q", out.String())
		}
		// The running worker cannot read the re-sealed form; it keeps what
		// it had and goes on importing.
		h.upload("acme-raw", "rot/2.json", `[{"text": "two"}]`)
		h.waitFor(func(evs []taskbus.Event) bool { return hasKey(evs, "rot/2.json") })

		next := cfg
		next.SecretKey = nextSecretKey
		rotated := h.startWorkerWith(next)
		old.stop(t)
		h.upload("acme-raw", "rot/3.json", `[{"text": "three"}]`)
		h.waitFor(func(evs []taskbus.Event) bool { return hasKey(evs, "rot/3.json") })
		if code, st := h.api(rotated, "GET", fmt.Sprintf("/api/storages/gcs/%v", created["id"]), "s3cret", ""); code != http.StatusOK || st["prefix"] != "rot" {
			t.Errorf("storage after rotation: %d %v", code, st)
		}
		for _, d := range h.deadLetters() {
			t.Errorf("dead letter: %+v", d)
		}

		// The old key, or none, no longer opens the stored credentials.
		for name, key := range map[string]string{"the old key": secretKey, "no key": ""} {
			c := cfg
			c.SecretKey = key
			w, err := worker.New(h.ctx, c, h.log)
			if err == nil {
				t.Errorf("a worker with %s started", name)
				ctx, cancel := context.WithCancel(h.ctx)
				cancel()
				_ = w.Run(ctx) // closes it
				continue
			}
			if !strings.Contains(err.Error(), "LABELSYNC_SECRET_KEY") {
				t.Errorf("a worker with %s: %v, want an error naming LABELSYNC_SECRET_KEY", name, err)
			}
		}
		// Rotating again from the old key fails before changing anything.
		if err := worker.RunRotate(h.ctx, cfg, h.log, nextSecretKey, &out); err == nil {
			t.Error("a rotation from the old key succeeded")
		}

		if strings.Contains(logs.String()+out.String(), leakMarker) {
			t.Error("the credentials appear in the logs or the command's output")
		}
	})
}

func hasKey(evs []taskbus.Event, key string) bool {
	for _, e := range evs {
		if e.Key == key {
			return true
		}
	}
	return false
}
