package e2e

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/labelsync/labelsync/internal/ledger"
)

func (h *harness) api(rw *runningWorker, method, path, token, body string) (int, map[string]any) {
	h.t.Helper()
	req, err := http.NewRequestWithContext(h.ctx, method, "http://"+rw.w.HTTPAddr()+path, strings.NewReader(body))
	if err != nil {
		h.t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := httpClient.Do(req)
	if err != nil {
		h.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var out map[string]any
	_ = json.Unmarshal(b, &out)
	if out == nil {
		out = map[string]any{"_raw": string(b)}
	}
	return resp.StatusCode, out
}

// TestSyncBackfillRacingUploads: objects uploaded before the worker existed
// are imported by a sync, while live uploads race it; every object becomes
// exactly one task, and a second sync request returns the running one.
func TestSyncBackfillRacingUploads(t *testing.T) {
	t.Parallel()
	forEachBackend(t, func(t *testing.T, b backend) {
		h := newHarness(t, b, filesStorages)
		// No subscription yet: these notifications go nowhere, as for a
		// bucket that filled up before labelsync was set up.
		var keys []string
		var wg sync.WaitGroup
		var mu sync.Mutex
		for w := range 8 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := w; i < 1500; i += 8 {
					k := fmt.Sprintf("incoming/backfill/%04d.jpg", i)
					h.upload("acme-raw", k, "x")
					mu.Lock()
					keys = append(keys, k)
					mu.Unlock()
				}
			}()
		}
		wg.Wait()
		cfg := h.config()
		cfg.APIToken = "s3cret"
		rw := h.startWorkerWith(cfg)

		if code, _ := h.api(rw, "POST", "/api/storages/gcs/1/sync", "", ""); code != http.StatusUnauthorized {
			t.Fatalf("sync without token: %d, want 401", code)
		}
		if code, _ := h.api(rw, "POST", "/api/storages/gcs/1/sync", "wrong", ""); code != http.StatusUnauthorized {
			t.Fatalf("sync with wrong token: %d, want 401", code)
		}
		code, first := h.api(rw, "POST", "/api/storages/gcs/1/sync", "s3cret", "")
		if code != http.StatusOK || (first["status"] != "queued" && first["status"] != "in_progress") {
			t.Fatalf("sync: %d %v", code, first)
		}
		// (That a request while one is queued or running returns it and
		// starts nothing is tested in internal/syncer: here a sync of 1,500
		// objects can finish before a second request arrives.)
		// Live uploads race the sync.
		for i := range 100 {
			k := fmt.Sprintf("incoming/backfill/live-%03d.jpg", i)
			h.upload("acme-raw", k, "x")
			keys = append(keys, k)
		}
		var final map[string]any
		eventually(t, 120*time.Second, "sync completed", func() error {
			_, final = h.api(rw, "GET", "/api/storages/gcs/1", "s3cret", "")
			if final["status"] != "completed" {
				return fmt.Errorf("status %v", final["status"])
			}
			return nil
		})
		if _, ok := final["google_application_credentials"]; ok {
			t.Errorf("storage view shows credentials field: %v", final)
		}
		if final["type"] != "gcs" || final["last_sync"] == nil {
			t.Errorf("storage view: %v", final)
		}
		eventually(t, 60*time.Second, "all imported", func() error {
			if n := count(h.taskEvents(), ledger.Created); n < len(keys) {
				return fmt.Errorf("%d of %d", n, len(keys))
			}
			return nil
		})
		evs := h.settle()
		exactlyOnce(t, evs, keys)
		bySource := map[string]int{}
		for _, e := range evs {
			bySource[e.Source]++
		}
		if bySource["sync"] < 1400 || bySource["sync"]+bySource["notification"] != len(keys) {
			t.Errorf("sources: %v", bySource)
		}
		// last_sync_count is what this sync created, not what the
		// notifications created.
		if got := final["last_sync_count"].(float64); int(got) != bySource["sync"] {
			t.Errorf("last_sync_count %v, want %d", got, bySource["sync"])
		}
		// A second sync finds everything imported.
		h.api(rw, "POST", "/api/storages/gcs/1/sync", "s3cret", "")
		eventually(t, 60*time.Second, "second sync completed", func() error {
			_, st := h.api(rw, "GET", "/api/storages/gcs/1", "s3cret", "")
			if st["status"] != "completed" || st["last_sync_count"] != float64(0) {
				return fmt.Errorf("%v %v", st["status"], st["last_sync_count"])
			}
			return nil
		})
		if n := len(h.settle()); n != len(evs) {
			t.Fatalf("second sync emitted %d events", n-len(evs))
		}
	})
}

func TestStorageAPIPreviewAndValidate(t *testing.T) {
	t.Parallel()
	h := newHarness(t, backends[0], filesStorages)
	for _, k := range []string{"incoming/a.jpg", "incoming/b.png", "incoming/sub/c.png", "incoming/", "other/d.png"} {
		h.upload("acme-raw", k, "x")
	}
	cfg := h.config()
	cfg.APIToken = "tok"
	rw := h.startWorkerWith(cfg)

	code, out := h.api(rw, "POST", "/api/storages/gcs/files", "tok", `{"project": 7, "bucket": "acme-raw", "prefix": "incoming", "regex_filter": ".*png"}`)
	if code != http.StatusOK {
		t.Fatalf("preview: %d %v", code, out)
	}
	files, _ := out["files"].([]any)
	if len(files) != 1 || files[0].(map[string]any)["key"] != "incoming/b.png" {
		t.Fatalf("preview files: %v", out)
	}
	f := files[0].(map[string]any)
	if f["size"] != float64(1) || f["last_modified"] == nil {
		t.Errorf("preview entry: %v", f)
	}
	// A saved storage named by id, with its own (here: default) credentials.
	code, out = h.api(rw, "POST", "/api/storages/gcs/files", "tok", `{"id": 1}`)
	if files, _ := out["files"].([]any); code != http.StatusOK || len(files) != 3 {
		t.Fatalf("preview of storage 1: %d %v", code, out)
	}
	code, out = h.api(rw, "POST", "/api/storages/gcs/validate", "tok", `{"project": 7, "bucket": "acme-raw", "prefix": "nothing-here"}`)
	if code != http.StatusBadRequest || !strings.Contains(fmt.Sprint(out["detail"]), "No blobs found in acme-raw/nothing-here or prefix doesn't exist") {
		t.Fatalf("validate empty prefix: %d %v", code, out)
	}
	code, out = h.api(rw, "POST", "/api/storages/gcs/validate", "tok", `{"project": 7, "bucket": "no-such-bucket"}`)
	if code != http.StatusBadRequest || !strings.Contains(strings.ToLower(fmt.Sprint(out["detail"])), "no-such-bucket") {
		t.Fatalf("validate missing bucket: %d %v", code, out)
	}
	code, out = h.api(rw, "POST", "/api/storages/gcs/validate", "tok", `{"project": 7, "bucket": "acme-raw", "prefix": "incoming"}`)
	if code != http.StatusOK {
		t.Fatalf("validate good storage: %d %v", code, out)
	}
	code, out = h.api(rw, "POST", "/api/storages/gcs/validate", "tok", `{"project": 7, "bucket": "acme-raw", "regex_filter": "(["}`)
	if code != http.StatusBadRequest || out["validation_errors"] == nil {
		t.Fatalf("validate bad regex: %d %v", code, out)
	}
	code, out = h.api(rw, "POST", "/api/storages/export/gcs/validate", "tok", `{"project": 7, "bucket": "acme-raw"}`)
	if code != http.StatusOK {
		t.Fatalf("validate export: %d %v", code, out)
	}
	code, _ = h.api(rw, "POST", "/api/storages/gcs/validate", "tok", "{"+strings.Repeat(" ", 2<<20)+"}")
	if code != http.StatusRequestEntityTooLarge {
		t.Fatalf("oversize body: %d", code)
	}
	if code, _ := h.api(rw, "GET", "/api/storages/gcs", "", ""); code != http.StatusUnauthorized {
		t.Fatalf("list without token: %d", code)
	}
	code, out = h.api(rw, "GET", "/api/storages/gcs/2", "tok", "")
	if code != http.StatusOK || out["status"] != "initialized" {
		t.Fatalf("get storage 2: %d %v", code, out)
	}
}
