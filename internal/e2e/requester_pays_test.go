package e2e

import (
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/labelsync/labelsync/internal/gcsfault"
)

// Requester-pays buckets refuse every request that does not name a project
// to bill (SPEC §1: google_project_id). A gcsfault proxy in front of
// fake-gcs-server plays such a bucket, since fake-gcs-server has none.

// TestRequesterPaysImport: the worker's reads (Tasks mode), listings (sync)
// and checks (API create, validate) on a requester-pays bucket name the
// storage's google_project_id; a storage without one is dead-lettered at its
// first refusal, and refused by the API with GCS's message.
func TestRequesterPaysImport(t *testing.T) {
	t.Parallel()
	forEachBackend(t, func(t *testing.T, b backend) {
		h := newHarness(t, b, `{"import": [
 {"id": 1, "project": 7, "bucket": "acme-raw", "prefix": "paid", "google_project_id": "billing-7"},
 {"id": 2, "project": 7, "bucket": "acme-raw", "prefix": "unpaid"}
]}`)
		proxy, err := gcsfault.New(h.stack.GCSURL)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = proxy.Close() })
		proxy.RequesterPays("acme-raw", "billing-7")
		cfg := h.config()
		cfg.StorageEmulatorHost = proxy.URL()
		cfg.APIToken = "s3cret"

		// Uploaded before the worker: only a sync (a listing) finds it.
		h.upload("acme-raw", "paid/before.json", `[{"text": "before"}]`)
		rw := h.startWorkerWith(cfg)
		h.upload("acme-raw", "paid/live.json", `[{"text": "live"}]`)
		if code, body := h.api(rw, "POST", "/api/storages/gcs/1/sync", "s3cret", ""); code != http.StatusOK {
			t.Fatalf("sync: %d %v", code, body)
		}
		eventually(t, 60*time.Second, "both files imported", func() error {
			keys := map[string]bool{}
			for _, ev := range h.taskEvents() {
				keys[ev.Key] = true
			}
			if !keys["paid/before.json"] || !keys["paid/live.json"] {
				return fmt.Errorf("task events for %v", keys)
			}
			return nil
		})

		// Without google_project_id GCS's refusal is final: one dead letter
		// at once, not a retry loop.
		h.upload("acme-raw", "unpaid/x.json", `[{"text": "x"}]`)
		eventually(t, 30*time.Second, "unpaid file dead-lettered", func() error {
			for _, d := range h.deadLetters() {
				if d.Code == "bad_input" && strings.Contains(d.Reason, "requester pays") {
					return nil
				}
			}
			return fmt.Errorf("dead letters: %v", h.deadLetters())
		})
		injected := proxy.Injected(gcsfault.Match{})

		// Through the API: with the project, create and validate pass the
		// bucket check; without it, GCS's refusal is the answer.
		paid := `{"project": 8, "bucket": "acme-raw", "prefix": "paid", "google_project_id": "billing-7"}`
		if code, body := h.api(rw, "POST", "/api/storages/gcs/validate", "s3cret", paid); code != http.StatusOK {
			t.Errorf("validate with google_project_id: %d %v", code, body)
		}
		if code, body := h.api(rw, "POST", "/api/storages/gcs", "s3cret", paid); code != http.StatusCreated {
			t.Errorf("create with google_project_id: %d %v", code, body)
		}
		if n := proxy.Injected(gcsfault.Match{}) - injected; n != 0 {
			t.Errorf("%d requests of the API on the requester-pays bucket named no project", n)
		}
		if injected != 1 {
			t.Errorf("%d requests refused for want of a project; want the unpaid storage's one read", injected)
		}
		unpaid := `{"project": 8, "bucket": "acme-raw", "prefix": "paid"}`
		code, body := h.api(rw, "POST", "/api/storages/gcs", "s3cret", unpaid)
		if code != http.StatusBadRequest || !strings.Contains(fmt.Sprint(body), "requester pays") {
			t.Errorf("create without google_project_id: %d %v, want 400 quoting GCS", code, body)
		}
	})
}

// TestRequesterPaysExport: the exporter's writes, reads and deletes on a
// requester-pays target bucket, for every object_key form, name the
// storage's google_project_id.
func TestRequesterPaysExport(t *testing.T) {
	t.Parallel()
	h := newXHarness(t, `{"export": [
 {"id": 2, "project": 7, "bucket": "acme-labels", "prefix": "annotations", "google_project_id": "billing-7", "can_delete_objects": true},
 {"id": 4, "project": 7, "bucket": "acme-labels", "prefix": "json", "object_key": "{annotation_id}.json", "google_project_id": "billing-7", "can_delete_objects": true},
 {"id": 5, "project": 7, "bucket": "acme-labels", "prefix": "tasks", "object_key": "{task_id}.json", "google_project_id": "billing-7", "can_delete_objects": true}
]}`)
	proxy, err := gcsfault.New(h.gcs.URL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = proxy.Close() })
	proxy.RequesterPays("acme-labels", "billing-7")
	h.gcsURL = proxy.URL()
	rx := h.startExporter(h.config())
	t0 := time.Date(2026, 12, 2, 9, 0, 0, 0, time.UTC)
	h.mustPost(rx, annotationPayload("ANNOTATION_CREATED", 1, 10, "cat", t0))
	h.mustPost(rx, annotationPayload("ANNOTATION_CREATED", 2, 10, "dog", t0))
	eventually(t, 30*time.Second, "objects written", func() error {
		objs := h.objects("acme-labels")
		for _, k := range []string{"annotations/1", "annotations/2", "json/1.json", "json/2.json", "tasks/10.json"} {
			if _, ok := objs[k]; !ok {
				return fmt.Errorf("no %s yet", k)
			}
		}
		return nil
	})
	h.mustPost(rx, deletePayload(2, 10))
	eventually(t, 30*time.Second, "annotation 2 deleted", func() error {
		objs := h.objects("acme-labels")
		for _, k := range []string{"annotations/2", "json/2.json"} {
			if _, ok := objs[k]; ok {
				return fmt.Errorf("%s still there", k)
			}
		}
		return nil
	})
	if n := proxy.Injected(gcsfault.Match{}); n != 0 {
		t.Errorf("%d requests on the requester-pays bucket named no project", n)
	}
	if proxy.Requests(gcsfault.Match{QueryContains: "userProject=billing-7"}) == 0 {
		t.Error("no request named the project")
	}
}
