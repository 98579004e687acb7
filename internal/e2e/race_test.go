package e2e

import (
	"fmt"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestStorageChangesRacingUploads: PATCHes that change a storage's prefix
// and data_key together, sent through two replicas while uploads flow, are
// never seen half-applied: every task of a key under "a/" carries data_key
// image_a and every one under "b/" image_b (a notification matched against
// one field's new value and the other's old one would mix them). A DELETE
// stops imports on every replica within a second.
func TestStorageChangesRacingUploads(t *testing.T) {
	t.Parallel()
	forEachBackend(t, func(t *testing.T, b backend) {
		h := newHarness(t, b, `{"import": [{"id": 1, "project": 7, "bucket": "acme-raw", "prefix": "a", "use_blob_urls": true, "data_key": "image_a"}]}`)
		cfg := h.config()
		cfg.APIToken = "s3cret"
		replicas := []*runningWorker{h.startWorkerWith(cfg), h.startWorkerWith(cfg)}

		var stop atomic.Bool
		var wg sync.WaitGroup
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; !stop.Load(); i++ {
				h.upload("acme-raw", fmt.Sprintf("a/%04d.jpg", i), "x")
				h.upload("acme-raw", fmt.Sprintf("b/%04d.jpg", i), "x")
				time.Sleep(5 * time.Millisecond)
			}
		}()
		states := []string{`{"prefix": "b", "data_key": "image_b"}`, `{"prefix": "a", "data_key": "image_a"}`}
		for i := range 20 {
			rw := replicas[i%2]
			if code, out := h.api(rw, "PATCH", "/api/storages/gcs/1", "s3cret", states[i%2]); code != http.StatusOK {
				t.Fatalf("patch %d: %d %v", i, code, out)
			}
			time.Sleep(40 * time.Millisecond)
		}
		stop.Store(true)
		wg.Wait()

		if code, out := h.api(replicas[0], "DELETE", "/api/storages/gcs/1", "s3cret", ""); code != http.StatusNoContent {
			t.Fatalf("delete: %d %v", code, out)
		}
		time.Sleep(time.Second) // SPEC: on every replica within a second
		for i := range 20 {
			h.upload("acme-raw", fmt.Sprintf("a/after-delete-%02d.jpg", i), "x")
			h.upload("acme-raw", fmt.Sprintf("b/after-delete-%02d.jpg", i), "x")
		}

		evs := h.settle()
		perPrefix := map[string]int{}
		for _, e := range evs {
			prefix, _, _ := strings.Cut(e.Key, "/")
			perPrefix[prefix]++
			if strings.Contains(e.Key, "after-delete") {
				t.Errorf("task after the delete: %s", e.Key)
			}
			if want := `"image_` + prefix + `"`; !strings.Contains(string(e.Task), want) {
				t.Errorf("task for %s has data %s, want the key %s: a half-applied change", e.Key, e.Task, want)
			}
		}
		// Both states were live long enough to import something.
		if perPrefix["a"] == 0 || perPrefix["b"] == 0 {
			t.Errorf("tasks per prefix %v, want some under both", perPrefix)
		}
		t.Logf("tasks per prefix: %v", perPrefix)
	})
}
