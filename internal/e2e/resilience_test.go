package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/labelsync/labelsync/internal/ledger"
	"github.com/labelsync/labelsync/internal/natstest"
	"github.com/labelsync/labelsync/internal/taskbus"
)

// exactlyOnce fails t unless evs hold one created event for each key of
// storage 1 and nothing else.
func exactlyOnce(t *testing.T, evs []taskbus.Event, keys []string) {
	t.Helper()
	got := map[string]int{}
	for _, e := range evs {
		if e.StorageID == 1 {
			got[e.Key+" "+string(e.Event)]++
		}
	}
	for _, k := range keys {
		if n := got[k+" created"]; n != 1 {
			t.Errorf("%s: %d created events, want 1", k, n)
		}
		delete(got, k+" created")
	}
	for k, n := range got {
		t.Errorf("unexpected event %s (x%d)", k, n)
	}
}

// TestNATSRestart stops NATS while uploads keep coming, then starts it
// again: nothing is lost, nothing is duplicated.
func TestNATSRestart(t *testing.T) {
	t.Parallel()
	forEachBackend(t, func(t *testing.T, b backend) {
		h := newHarness(t, b, filesStorages)
		rw := h.startWorker()
		var keys []string
		for i := range 60 {
			key := fmt.Sprintf("incoming/nats-restart/%03d.jpg", i)
			keys = append(keys, key)
			h.upload("acme-raw", key, "x")
			if i == 20 {
				h.stopNATS()
			}
			if i == 40 {
				time.Sleep(time.Second) // let handlers fail and retry against the dead server
				h.startNATS()
			}
		}
		eventually(t, 90*time.Second, "all keys imported", func() error {
			if n := count(h.taskEvents(), ledger.Created); n < len(keys) {
				return fmt.Errorf("%d of %d", n, len(keys))
			}
			return nil
		})
		_ = rw
		exactlyOnce(t, h.settle(), keys)
	})
}

// TestWorkerKilledMidStream runs the worker binary, configured only by the
// environment variables SPEC §5 names, kills it with SIGKILL while a backlog
// drains, and starts it again: every upload becomes exactly one task.
func TestWorkerKilledMidStream(t *testing.T) {
	t.Parallel()
	bin := buildWorker(t)
	forEachBackend(t, func(t *testing.T, b backend) {
		h := newHarness(t, b, filesStorages)
		// Create the subscription before the uploads so the backlog waits.
		env := []string{
			"LABELSYNC_NATS_URL=" + h.natsURL,
			"LABELSYNC_HTTP_ADDR=" + natstest.FreeAddr(t),
			"LABELSYNC_PUBSUB_PROJECT=" + h.stack.ProjectID,
			"LABELSYNC_PUBSUB_SUBSCRIPTION=" + h.sub,
			"LABELSYNC_PUBSUB_TOPIC=" + h.stack.Topic,
			"LABELSYNC_STORAGES_FILE=" + h.file,
			"LABELSYNC_LOG_LEVEL=warn",
			"PUBSUB_EMULATOR_HOST=" + h.stack.PubsubAddr,
		}
		first := startBinary(t, bin, env)
		waitHTTP(t, env, "/readyz")

		var keys []string
		var wg sync.WaitGroup
		for w := range 4 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := w; i < 300; i += 4 {
					h.upload("acme-raw", fmt.Sprintf("incoming/kill/%03d.jpg", i), "x")
				}
			}()
		}
		for i := range 300 {
			keys = append(keys, fmt.Sprintf("incoming/kill/%03d.jpg", i))
		}
		// Kill once part of the backlog is through.
		eventually(t, 60*time.Second, "some tasks", func() error {
			if n := count(h.taskEvents(), ledger.Created); n < 30 {
				return fmt.Errorf("%d created", n)
			}
			return nil
		})
		if err := first.Process.Signal(syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		_ = first.Wait()
		wg.Wait()

		second := startBinary(t, bin, env)
		defer func() {
			_ = second.Process.Signal(syscall.SIGTERM)
			_ = second.Wait()
		}()
		eventually(t, 120*time.Second, "all keys imported after restart", func() error {
			evs := h.taskEvents()
			if n := count(evs, ledger.Created); n < len(keys) {
				return fmt.Errorf("%d of %d; missing %v", n, len(keys), missing(evs, keys))
			}
			return nil
		})
		exactlyOnce(t, h.settle(), keys)
	})
}

func buildWorker(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "worker")
	cmd := exec.Command("go", "build", "-o", bin, "github.com/labelsync/labelsync/cmd/worker")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build ./cmd/worker: %v\n%s", err, out)
	}
	return bin
}

func startBinary(t *testing.T, bin string, env []string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(bin)
	// Only the variables given, plus PATH and HOME: the binary must need
	// nothing else.
	cmd.Env = append([]string{"PATH=" + os.Getenv("PATH"), "HOME=" + os.Getenv("HOME")}, env...)
	cmd.Dir = t.TempDir()
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_, _ = cmd.Process.Wait()
		if t.Failed() {
			t.Logf("%s output:\n%s", bin, out.String())
		}
	})
	return cmd
}

func waitHTTP(t *testing.T, env []string, path string) {
	t.Helper()
	var addr string
	for _, e := range env {
		if v, ok := strings.CutPrefix(e, "LABELSYNC_HTTP_ADDR="); ok {
			addr = v
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	for ctx.Err() == nil {
		if body, err := httpGet("http://" + addr + path); err == nil && body == "ready\n" {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("%s on %s not ready within 60s", path, addr)
}

func missing(evs []taskbus.Event, keys []string) []string {
	have := map[string]bool{}
	for _, e := range evs {
		have[e.Key] = true
	}
	var out []string
	for _, k := range keys {
		if !have[k] {
			out = append(out, k)
		}
	}
	return out
}
