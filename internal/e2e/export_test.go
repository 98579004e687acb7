package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"cloud.google.com/go/storage"
	"github.com/fsouza/fake-gcs-server/fakestorage"
	"google.golang.org/api/iterator"

	"github.com/labelsync/labelsync/internal/config"
	"github.com/labelsync/labelsync/internal/exporter"
	"github.com/labelsync/labelsync/internal/gcs"
	"github.com/labelsync/labelsync/internal/gcsfault"
	"github.com/labelsync/labelsync/internal/natstest"
	"github.com/labelsync/labelsync/internal/testlog"
)

// The exporter's scenarios need no Pub/Sub: Label Studio's webhook goes in,
// objects come out of a real fake-gcs-server, through a real NATS server.

const exportStorages = `{"export": [
 {"id": 2, "project": 7, "bucket": "acme-labels", "prefix": "annotations/", "can_delete_objects": true},
 {"id": 4, "project": 7, "bucket": "acme-labels", "prefix": "json", "object_key": "{annotation_id}.json", "can_delete_objects": true},
 {"id": 5, "project": 7, "bucket": "acme-labels", "prefix": "tasks", "object_key": "{task_id}.json", "can_delete_objects": true},
 {"id": 6, "project": 7, "bucket": "acme-keep", "object_key": "{annotation_id}.json"},
 {"id": 8, "project": 9, "bucket": "acme-missing"}
]}`

const webhookSecret = "hook-s3cret"

type xharness struct {
	t       *testing.T
	ctx     context.Context
	gcs     *fakestorage.Server
	client  *storage.Client
	gcsURL  string // what exporters use: the server, or a fault proxy
	natsURL string
	file    string
}

func newXHarness(t *testing.T, storagesJSON string) *xharness {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	srv, err := fakestorage.NewServerWithOptions(fakestorage.Options{Scheme: "http", Host: "127.0.0.1", Port: 0, NoListener: false})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Stop)
	for _, b := range []string{"acme-labels", "acme-keep"} {
		srv.CreateBucketWithOpts(fakestorage.CreateBucketOpts{Name: b, VersioningEnabled: false})
	}
	clients := gcs.NewClients(gcs.Options{EmulatorHost: srv.URL()})
	t.Cleanup(func() { _ = clients.Close() })
	client, err := clients.For(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	h := &xharness{t: t, ctx: ctx, gcs: srv, client: client, gcsURL: srv.URL(), natsURL: natstest.Server(t).URL()}
	h.file = filepath.Join(t.TempDir(), "storages.json")
	if err := os.WriteFile(h.file, []byte(storagesJSON), 0o600); err != nil {
		t.Fatal(err)
	}
	return h
}

func (h *xharness) config() exporter.Config {
	return exporter.Config{
		NATSURL:             h.natsURL,
		HTTPAddr:            "127.0.0.1:0",
		StoragesFile:        h.file,
		WebhookSecret:       webhookSecret,
		APIToken:            "s3cret",
		Concurrency:         8,
		ShutdownTimeout:     10 * time.Second,
		StorageEmulatorHost: h.gcsURL,
		Logging:             config.Logging{LogLevel: "warn", LogFormat: "text"},
	}
}

type runningExporter struct {
	x      *exporter.Exporter
	cancel context.CancelFunc
	done   chan error
}

func (h *xharness) startExporter(cfg exporter.Config, opts ...exporter.Option) *runningExporter {
	h.t.Helper()
	ctx, cancel := context.WithCancel(h.ctx)
	x, err := exporter.New(ctx, cfg, testlog.Logger(h.t), opts...)
	if err != nil {
		cancel()
		h.t.Fatal(err)
	}
	rx := &runningExporter{x: x, cancel: cancel, done: make(chan error, 1)}
	go func() { rx.done <- x.Run(ctx) }()
	h.t.Cleanup(func() { cancel(); <-rx.done })
	eventually(h.t, 30*time.Second, "exporter ready", func() error {
		body, err := httpGet("http://" + x.HTTPAddr() + "/readyz")
		if err != nil {
			return err
		}
		if !strings.HasPrefix(body, "ready") {
			return fmt.Errorf("%s", body)
		}
		return nil
	})
	return rx
}

func (rx *runningExporter) stop(t *testing.T) {
	t.Helper()
	rx.cancel()
	select {
	case err := <-rx.done:
		rx.done <- err // for the cleanup, which waits for it too
	case <-time.After(60 * time.Second):
		t.Fatal("exporter did not stop within 60s")
	}
}

// post sends a webhook body; token "" sends no Authorization header.
func (h *xharness) post(rx *runningExporter, token, body string) (int, map[string]any) {
	h.t.Helper()
	req, err := http.NewRequestWithContext(h.ctx, "POST", "http://"+rx.x.HTTPAddr()+"/webhooks/label-studio", strings.NewReader(body))
	if err != nil {
		h.t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
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
	if err := json.Unmarshal(b, &out); err != nil {
		out = map[string]any{"_raw": string(b)}
	}
	return resp.StatusCode, out
}

// mustAPI calls the exporter's storage API with the test token and no body,
// and fails the test unless it answers 200.
func (h *xharness) mustAPI(rx *runningExporter, method, path string) map[string]any {
	h.t.Helper()
	req, _ := http.NewRequestWithContext(h.ctx, method, "http://"+rx.x.HTTPAddr()+path, nil)
	req.Header.Set("Authorization", "Bearer s3cret")
	resp, err := httpClient.Do(req)
	if err != nil {
		h.t.Fatal(err)
	}
	defer resp.Body.Close()
	var out map[string]any
	_ = json.NewDecoder(resp.Body).Decode(&out)
	if resp.StatusCode != http.StatusOK {
		h.t.Fatalf("%s %s: %d %v", method, path, resp.StatusCode, out)
	}
	return out
}

func (h *xharness) mustPost(rx *runningExporter, body string) {
	h.t.Helper()
	if code, out := h.post(rx, webhookSecret, body); code != http.StatusOK {
		h.t.Fatalf("webhook: %d %v", code, out)
	}
}

// objects lists a bucket: name → body.
func (h *xharness) objects(bucket string) map[string]string {
	h.t.Helper()
	out := map[string]string{}
	it := h.client.Bucket(bucket).Objects(h.ctx, nil)
	for {
		a, err := it.Next()
		if err == iterator.Done {
			return out
		}
		if err != nil {
			h.t.Fatal(err)
		}
		r, err := h.client.Bucket(bucket).Object(a.Name).NewReader(h.ctx)
		if errors.Is(err, storage.ErrObjectNotExist) {
			continue // deleted since it was listed
		}
		if err != nil {
			h.t.Fatal(err)
		}
		b, _ := io.ReadAll(r)
		_ = r.Close()
		if a.ContentType != "application/json" {
			h.t.Errorf("gs://%s/%s has Content-Type %q", bucket, a.Name, a.ContentType)
		}
		out[a.Name] = string(b)
	}
}

// waitObjects waits until a bucket's objects, summarized by sum, are want.
func (h *xharness) waitObjects(bucket string, want map[string]string, sum func(body string) string) {
	h.t.Helper()
	eventually(h.t, 30*time.Second, "objects in "+bucket, func() error {
		got := map[string]string{}
		for k, v := range h.objects(bucket) {
			got[k] = sum(v)
		}
		if fmt.Sprint(got) != fmt.Sprint(want) {
			return fmt.Errorf("got %v\nwant %v", got, want)
		}
		return nil
	})
}

// annotationPayload is a Label Studio ANNOTATION_CREATED/UPDATED webhook
// body (shape from Label Studio's webhook reference; see
// internal/annotation/testdata).
func annotationPayload(action string, id, task int, label string, updated time.Time) string {
	return fmt.Sprintf(`{"action": %q,
 "annotation": {"id": %d, "result": [{"type": "choices", "value": {"choices": [%q]}, "from_name": "label", "to_name": "image"}],
   "was_cancelled": false, "ground_truth": false, "created_at": "2026-11-27T14:31:10.123456Z", "updated_at": %q,
   "lead_time": 1.5, "task": %d, "completed_by": 3, "project": 7},
 "task": {"id": %d, "data": {"image": "gs://acme-raw/incoming/cat %d.jpg"}, "meta": {}, "is_labeled": true, "project": 7},
 "project": {"id": 7, "title": "cats"}}`, action, id, label, updated.UTC().Format("2006-01-02T15:04:05.000000Z"), task, task, task)
}

func deletePayload(ids ...int) string {
	var anns []string
	for _, id := range ids {
		anns = append(anns, fmt.Sprintf(`{"id": %d}`, id))
	}
	return fmt.Sprintf(`{"action": "ANNOTATIONS_DELETED", "annotations": [%s], "project": {"id": 7, "title": "cats"}}`, strings.Join(anns, ", "))
}

// label summarizes an annotation object: its id, choice and task id; a
// task object ({task_id}.json) is summarized by its annotations.
func label(body string) string {
	var a struct {
		ID     int `json:"id"`
		Result []struct {
			Value struct {
				Choices []string `json:"choices"`
			} `json:"value"`
		} `json:"result"`
		Task        json.RawMessage   `json:"task"`
		Data        json.RawMessage   `json:"data"`
		Annotations []json.RawMessage `json:"annotations"`
	}
	if err := json.Unmarshal([]byte(body), &a); err != nil {
		return "unreadable: " + body
	}
	if a.Data != nil { // a task object
		var out []string
		for _, ann := range a.Annotations {
			out = append(out, strings.SplitN(label(string(ann)), " task", 2)[0])
		}
		return fmt.Sprintf("task %d: %s", a.ID, strings.Join(out, ","))
	}
	if len(a.Result) == 0 || len(a.Result[0].Value.Choices) == 0 {
		return "unreadable: " + body
	}
	var task struct {
		ID          int             `json:"id"`
		Annotations json.RawMessage `json:"annotations"`
	}
	if err := json.Unmarshal(a.Task, &task); err != nil {
		_ = json.Unmarshal(a.Task, &task.ID)
	}
	extra := ""
	if task.Annotations != nil {
		extra = " (task has annotations)"
	}
	return fmt.Sprintf("%d:%s task %d%s", a.ID, a.Result[0].Value.Choices[0], task.ID, extra)
}

// TestExportCreateUpdateDelete: each object_key form, several storages for
// one project, can_delete_objects off, updates out of order and repeated,
// a delete before its create.
func TestExportCreateUpdateDelete(t *testing.T) {
	t.Parallel()
	h := newXHarness(t, exportStorages)
	rx := h.startExporter(h.config())
	t0 := time.Date(2026, 11, 27, 14, 0, 0, 0, time.UTC)

	h.mustPost(rx, annotationPayload("ANNOTATION_CREATED", 101, 42, "cat", t0))
	h.mustPost(rx, annotationPayload("ANNOTATION_CREATED", 102, 42, "dog", t0))
	// Updates out of order and repeated: the newest (v3) wins.
	h.mustPost(rx, annotationPayload("ANNOTATION_UPDATED", 101, 42, "cat-v3", t0.Add(3*time.Minute)))
	h.mustPost(rx, annotationPayload("ANNOTATION_UPDATED", 101, 42, "cat-v2", t0.Add(2*time.Minute)))
	h.mustPost(rx, annotationPayload("ANNOTATION_UPDATED", 101, 42, "cat-v3", t0.Add(3*time.Minute)))
	// A delete that arrives before its create, then the late create.
	h.mustPost(rx, deletePayload(103))
	time.Sleep(500 * time.Millisecond)
	h.mustPost(rx, annotationPayload("ANNOTATION_CREATED", 103, 43, "late", t0))

	h.waitObjects("acme-labels", map[string]string{
		"annotations/101": "101:cat-v3 task 42",
		"annotations/102": "102:dog task 42",
		"json/101.json":   "101:cat-v3 task 42",
		"json/102.json":   "102:dog task 42",
		"tasks/42.json":   "task 42: 101:cat-v3,102:dog",
	}, label)
	h.waitObjects("acme-keep", map[string]string{"101.json": "101:cat-v3 task 42", "102.json": "102:dog task 42"}, label)

	// Deletes follow where allowed; acme-keep (can_delete_objects false)
	// keeps its objects.
	h.mustPost(rx, deletePayload(101))
	h.waitObjects("acme-labels", map[string]string{
		"annotations/102": "102:dog task 42",
		"json/102.json":   "102:dog task 42",
		"tasks/42.json":   "task 42: 102:dog",
	}, label)
	h.mustPost(rx, deletePayload(102))
	h.waitObjects("acme-labels", map[string]string{}, label)
	h.waitObjects("acme-keep", map[string]string{"101.json": "101:cat-v3 task 42", "102.json": "102:dog task 42"}, label)

	// An annotation object: the annotation's fields plus "task" without
	// its annotations.
	var obj map[string]any
	if err := json.Unmarshal([]byte(h.objects("acme-keep")["101.json"]), &obj); err != nil {
		t.Fatal(err)
	}
	task, _ := obj["task"].(map[string]any)
	if obj["lead_time"] != 1.5 || task["data"] == nil || task["annotations"] != nil {
		t.Errorf("annotation object: %v", obj)
	}
}

// TestExportWebhookRefusals: authentication, oversize, invalid and unknown
// bodies.
func TestExportWebhookRefusals(t *testing.T) {
	t.Parallel()
	h := newXHarness(t, exportStorages)
	rx := h.startExporter(h.config())
	good := annotationPayload("ANNOTATION_CREATED", 1, 1, "x", time.Now())
	tests := []struct {
		name  string
		token string
		body  string
		want  int
	}{
		{"no token", "", good, http.StatusUnauthorized},
		{"wrong token", "nope", good, http.StatusUnauthorized},
		{"token with a suffix", webhookSecret + "x", good, http.StatusUnauthorized},
		{"not JSON", webhookSecret, "{", http.StatusBadRequest},
		{"no annotation id", webhookSecret, `{"action": "ANNOTATION_CREATED", "annotation": {"task": 1}, "project": {"id": 7}}`, http.StatusBadRequest},
		{"unknown action", webhookSecret, `{"action": "PROJECT_UPDATED", "project": {"id": 7}}`, http.StatusOK},
		{"oversize", webhookSecret, `{"action": "ANNOTATION_CREATED", "pad": "` + strings.Repeat("x", 17<<20) + `"}`, http.StatusRequestEntityTooLarge},
		{"one annotation over the stream's limit", webhookSecret, strings.Replace(good, `"lead_time": 1.5`, `"lead_time": 1.5, "pad": "`+strings.Repeat("x", 2<<20)+`"`, 1), http.StatusRequestEntityTooLarge},
	}
	for _, tt := range tests {
		code, out := h.post(rx, tt.token, tt.body)
		if code != tt.want {
			t.Errorf("%s: %d %v, want %d", tt.name, code, out, tt.want)
		}
		if code != http.StatusOK {
			if _, ok := out["detail"]; !ok {
				t.Errorf("%s: no JSON detail: %v", tt.name, out)
			}
		}
	}
	if n := counterSum(t, rx.x.Registry(), "labelsync_webhook_requests_total"); n != float64(len(tests)) {
		t.Errorf("labelsync_webhook_requests_total = %v, want %d", n, len(tests))
	}
}

// TestExportRacingReplicas: two exporters share the work; many updates of
// the same annotations, delivered twice each in shuffled order, end with
// the newest version of each, written once per version at most.
func TestExportRacingReplicas(t *testing.T) {
	t.Parallel()
	h := newXHarness(t, `{"export": [{"id": 2, "project": 7, "bucket": "acme-labels", "prefix": "annotations", "can_delete_objects": true}]}`)
	a := h.startExporter(h.config())
	b := h.startExporter(h.config())
	t0 := time.Date(2026, 11, 27, 14, 0, 0, 0, time.UTC)
	var wg sync.WaitGroup
	for _, rx := range []*runningExporter{a, b} {
		wg.Go(func() {
			for v := 10; v >= 1; v-- { // newest first: every later one is stale
				for id := 1; id <= 10; id++ {
					if code, out := h.post(rx, webhookSecret, annotationPayload("ANNOTATION_UPDATED", id, id, fmt.Sprintf("v%d", v), t0.Add(time.Duration(v)*time.Minute))); code != http.StatusOK {
						t.Errorf("webhook: %d %v", code, out)
					}
				}
			}
		})
	}
	wg.Wait()
	want := map[string]string{}
	for id := 1; id <= 10; id++ {
		want[fmt.Sprintf("annotations/%d", id)] = fmt.Sprintf("%d:v10 task %d", id, id)
	}
	h.waitObjects("acme-labels", want, label)
}

// TestExportGCSFailures: 503s, 429s and stalls from GCS are retried; nothing
// is lost, nothing regresses.
func TestExportGCSFailures(t *testing.T) {
	t.Parallel()
	h := newXHarness(t, `{"export": [{"id": 2, "project": 7, "bucket": "acme-labels", "prefix": "annotations", "can_delete_objects": true}]}`)
	proxy, err := gcsfault.New(h.gcs.URL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = proxy.Close() })
	h.gcsURL = proxy.URL()
	rx := h.startExporter(h.config())
	t0 := time.Date(2026, 11, 27, 14, 0, 0, 0, time.UTC)
	uploads := gcsfault.Match{Method: "POST", PathContains: "/upload/"}
	proxy.Fail(uploads, http.StatusServiceUnavailable, 5)
	proxy.Fail(uploads, http.StatusTooManyRequests, 5)
	proxy.Stall(uploads, 3*time.Second, 2)
	for id := 1; id <= 20; id++ {
		h.mustPost(rx, annotationPayload("ANNOTATION_CREATED", id, id, "v1", t0))
	}
	for id := 1; id <= 20; id += 2 {
		h.mustPost(rx, annotationPayload("ANNOTATION_UPDATED", id, id, "v2", t0.Add(time.Minute)))
	}
	want := map[string]string{}
	for id := 1; id <= 20; id++ {
		v := "v1"
		if id%2 == 1 {
			v = "v2"
		}
		want[fmt.Sprintf("annotations/%d", id)] = fmt.Sprintf("%d:%s task %d", id, v, id)
	}
	h.waitObjects("acme-labels", want, label)
	if proxy.Injected(gcsfault.Match{}) == 0 {
		t.Error("no fault was injected")
	}
}

// TestExportMissingBucketIsDeadLettered: an event that can never succeed
// goes to the dead-letter stream, and the next one is still exported.
func TestExportMissingBucketIsDeadLettered(t *testing.T) {
	t.Parallel()
	h := newXHarness(t, exportStorages)
	rx := h.startExporter(h.config())
	body := strings.ReplaceAll(annotationPayload("ANNOTATION_CREATED", 5, 5, "x", time.Now()), `"project": 7`, `"project": 9`)
	body = strings.Replace(body, `"project": {"id": 7`, `"project": {"id": 9`, 1)
	h.mustPost(rx, body)
	// A message on the stream that is not an annotation change (published
	// around the webhook).
	js := natstest.Bus(t, h.natsURL).JetStream()
	if _, err := js.Publish(h.ctx, "labelsync.annotations.7.999", []byte("not json")); err != nil {
		t.Fatal(err)
	}
	h.mustPost(rx, annotationPayload("ANNOTATION_CREATED", 6, 6, "ok", time.Now()))
	eventually(t, 30*time.Second, "dead letters", func() error {
		codes := map[string]bool{}
		for _, m := range natstest.Messages(t, js, "LABELSYNC_DEADLETTER") {
			var d deadLetter
			_ = json.Unmarshal(m.Data, &d)
			if d.Component == "exporter" && strings.HasPrefix(m.Subject, "labelsync.deadletter.exporter") {
				codes[d.Code] = true
			}
		}
		if !codes["not_found"] || !codes["bad_input"] {
			return fmt.Errorf("exporter dead letters with codes %v, want not_found and bad_input", codes)
		}
		return nil
	})
	eventually(t, 30*time.Second, "the next event exported", func() error {
		if _, ok := h.objects("acme-labels")["annotations/6"]; !ok {
			return fmt.Errorf("annotations/6 missing")
		}
		return nil
	})
}

// TestExportSyncRacingLiveEvents: a target bucket emptied behind the
// exporter's back is written again by an export sync, while live updates
// flow; the newest version of every annotation ends up there, and a second
// request while one runs returns it.
func TestExportSyncRacingLiveEvents(t *testing.T) {
	t.Parallel()
	h := newXHarness(t, `{"export": [{"id": 6, "project": 7, "bucket": "acme-keep", "object_key": "{annotation_id}.json"}]}`)
	rx := h.startExporter(h.config())
	t0 := time.Date(2026, 11, 27, 14, 0, 0, 0, time.UTC)
	const n = 300
	want := map[string]string{}
	for id := 1; id <= n; id++ {
		h.mustPost(rx, annotationPayload("ANNOTATION_CREATED", id, id, "v1", t0))
		want[fmt.Sprintf("%d.json", id)] = fmt.Sprintf("%d:v1 task %d", id, id)
	}
	h.waitObjects("acme-keep", want, label)
	for name := range want {
		if err := h.client.Bucket("acme-keep").Object(name).Delete(h.ctx); err != nil {
			t.Fatal(err)
		}
	}
	api := func(method, path string) map[string]any { return h.mustAPI(rx, method, path) }
	if st := api("GET", "/api/storages/export/gcs/6"); st["status"] != "initialized" || st["type"] != "gcs" {
		t.Fatalf("before any sync: %v", st)
	}
	first := api("POST", "/api/storages/export/gcs/6/sync")
	if first["status"] != "queued" && first["status"] != "in_progress" {
		t.Fatalf("sync: %v", first)
	}
	if again := api("POST", "/api/storages/export/gcs/6/sync"); again["status"] != "queued" && again["status"] != "in_progress" {
		t.Fatalf("second request: %v, want the running one", again)
	}
	// Live updates race the sync.
	for id := 1; id <= n; id += 3 {
		h.mustPost(rx, annotationPayload("ANNOTATION_UPDATED", id, id, "v2", t0.Add(time.Minute)))
		want[fmt.Sprintf("%d.json", id)] = fmt.Sprintf("%d:v2 task %d", id, id)
	}
	var final map[string]any
	eventually(t, 60*time.Second, "export sync completed", func() error {
		final = api("GET", "/api/storages/export/gcs/6")
		if final["status"] != "completed" {
			return fmt.Errorf("status %v %v", final["status"], final["traceback"])
		}
		return nil
	})
	h.waitObjects("acme-keep", want, label)
	if c, _ := final["last_sync_count"].(float64); c < 1 || c > n || final["last_sync"] == nil {
		t.Errorf("last_sync_count %v, last_sync %v; want 1..%d and a time", final["last_sync_count"], final["last_sync"], n)
	}
	// The sync writes the state the stream held when it started; an
	// annotation updated live while it ran may be left to the consumer.
	updated := (n + 2) / 3
	if meta, _ := final["meta"].(map[string]any); meta["annotations"].(float64) < n-float64(updated) || meta["annotations"].(float64) > n {
		t.Errorf("meta %v, want %d to %d annotations seen", meta, n-updated, n)
	}
}

// TestExportKilledMidStream: the exporter binary, SIGKILLed while it works
// through a burst and started again, loses nothing: every event the webhook
// acknowledged ends up in the bucket.
func TestExportKilledMidStream(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("builds and runs the exporter binary")
	}
	bin := filepath.Join(t.TempDir(), "exporter")
	if out, err := exec.Command("go", "build", "-o", bin, "github.com/labelsync/labelsync/cmd/exporter").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	h := newXHarness(t, `{"export": [{"id": 2, "project": 7, "bucket": "acme-labels", "prefix": "annotations"}]}`)
	// A slow bucket, so that the kill lands mid-stream.
	proxy, err := gcsfault.New(h.gcs.URL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = proxy.Close() })
	proxy.Stall(gcsfault.Match{Method: "POST", PathContains: "/upload/"}, 100*time.Millisecond, -1)
	h.gcsURL = proxy.URL()
	addr := natstest.FreeAddr(t)
	start := func() *exec.Cmd {
		cmd := exec.Command(bin)
		cmd.Env = append(os.Environ(),
			"LABELSYNC_NATS_URL="+h.natsURL, "LABELSYNC_HTTP_ADDR="+addr, "LABELSYNC_STORAGES_FILE="+h.file,
			"LABELSYNC_WEBHOOK_SECRET="+webhookSecret, "STORAGE_EMULATOR_HOST="+h.gcsURL,
			"LABELSYNC_EXPORT_ACK_WAIT=2s", "LABELSYNC_LOG_LEVEL=warn")
		cmd.Stderr = testlog.Writer(t)
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
		eventually(t, 30*time.Second, "exporter ready", func() error {
			_, err := httpGet("http://" + addr + "/readyz")
			return err
		})
		return cmd
	}
	post := func(body string) {
		t.Helper()
		req, _ := http.NewRequestWithContext(h.ctx, "POST", "http://"+addr+"/webhooks/label-studio", strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+webhookSecret)
		resp, err := httpClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		_ = resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("webhook: %d", resp.StatusCode)
		}
	}
	cmd := start()
	t0 := time.Date(2026, 11, 27, 14, 0, 0, 0, time.UTC)
	const n = 1000
	want := map[string]string{}
	for id := 1; id <= n; id++ {
		post(annotationPayload("ANNOTATION_CREATED", id, id, "v1", t0))
		want[fmt.Sprintf("annotations/%d", id)] = fmt.Sprintf("%d:v1 task %d", id, id)
	}
	// Kill it while it works through the burst.
	eventually(t, 30*time.Second, "some objects written", func() error {
		if got := len(h.objects("acme-labels")); got < 20 {
			return fmt.Errorf("%d", got)
		}
		return nil
	})
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Wait()
	written := len(h.objects("acme-labels"))
	if written == n {
		t.Log("the kill came after every object was written: the test proved less than it should")
	}
	start()
	h.waitObjects("acme-labels", want, label)
	t.Logf("killed after %d of %d objects; all %d there after the restart", written, n, n)
}
