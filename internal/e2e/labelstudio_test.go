package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/sethvargo/go-envconfig"

	"github.com/labelsync/labelsync/internal/connector"
	"github.com/labelsync/labelsync/internal/ctl"
	"github.com/labelsync/labelsync/internal/labelstudio"
	"github.com/labelsync/labelsync/internal/lsstub"
	"github.com/labelsync/labelsync/internal/natstest"
	"github.com/labelsync/labelsync/internal/taskbus"
	"github.com/labelsync/labelsync/internal/worker"
)

// The Label Studio connector's scenarios: uploads through the worker to
// tasks in a Label Studio stand-in (package lsstub), exactly once through
// lost answers, throttling, worker crashes and a NATS restart; the webhook
// wiring of lsctl labelstudio connect, and an annotation made in the
// stand-in landing in the target bucket.

// newLabelStudio starts a stand-in with projects 7 and 9 that accepts a
// personal access token, and returns it with the token.
func newLabelStudio(t *testing.T, opts lsstub.Options) (*lsstub.Server, string) {
	t.Helper()
	if opts.RefreshToken == "" && opts.LegacyToken == "" {
		opts.RefreshToken = lsstub.NewRefreshToken()
	}
	s := lsstub.New(opts)
	t.Cleanup(s.Close)
	s.AddProject(7, "raw images")
	s.AddProject(9, "task files")
	token := opts.RefreshToken
	if token == "" {
		token = opts.LegacyToken
	}
	return s, token
}

// lsTasks returns a project's tasks in the stand-in by labelsync task id,
// and an error if one is there twice.
func lsTasks(s *lsstub.Server, project int64) (map[string]lsstub.Task, error) {
	out := map[string]lsstub.Task{}
	for _, task := range s.Tasks(project) {
		var m labelstudio.Meta
		if err := json.Unmarshal(task.Meta, &m); err != nil || m.LabelsyncTaskID == "" {
			return nil, fmt.Errorf("task %d without labelsync meta: %s", task.ID, task.Meta)
		}
		if prev, dup := out[m.LabelsyncTaskID]; dup {
			return nil, fmt.Errorf("DUPLICATE: labelsync task %s (%s) is Label Studio tasks %d and %d", m.LabelsyncTaskID, m.Key, prev.ID, task.ID)
		}
		out[m.LabelsyncTaskID] = task
	}
	return out, nil
}

func metaOf(t *testing.T, task lsstub.Task) labelstudio.Meta {
	t.Helper()
	var m labelstudio.Meta
	if err := json.Unmarshal(task.Meta, &m); err != nil {
		t.Fatal(err)
	}
	return m
}

// connectorSettled waits until the connector's consumer has been handed
// every task event stored so far and acknowledged each.
func (h *harness) connectorSettled(within time.Duration) {
	h.t.Helper()
	eventually(h.t, within, "every task event applied to Label Studio", func() error {
		return natstest.CaughtUp(h.ctx, h.bus.JetStream(), taskbus.TasksStream, connector.ConsumerName, "labelsync.tasks.>")
	})
}

func TestLabelStudioUploadsBecomeTasks(t *testing.T) {
	t.Parallel()
	forEachBackend(t, func(t *testing.T, b backend) {
		ls, token := newLabelStudio(t, lsstub.Options{AccessTTL: 15 * time.Second})
		h := newHarness(t, b, tasksStorages)
		cfg := h.config()
		cfg.LabelStudioURL, cfg.LabelStudioToken = ls.URL, token
		rw := h.startWorkerWith(cfg)

		var keys []string
		for i := range 30 {
			key := fmt.Sprintf("incoming/img-%02d.jpg", i)
			keys = append(keys, key)
			h.upload("acme-raw", key, "jpeg")
		}
		h.upload("acme-raw", "tasks/rows.jsonl", "{\"text\": \"zero\"}\n{\"text\": \"one\"}\n{\"text\": \"two\"}\n")
		eventually(t, 60*time.Second, "30 image tasks and 3 row tasks in Label Studio", func() error {
			a, err := lsTasks(ls, 7)
			if err != nil {
				return err
			}
			c, err := lsTasks(ls, 9)
			if err != nil {
				return err
			}
			if len(a) != 30 || len(c) != 3 {
				return fmt.Errorf("%d and %d tasks", len(a), len(c))
			}
			return nil
		})

		// An overwrite, a delete, a new generation of the task file.
		gen := h.upload("acme-raw", keys[0], "jpeg v2")
		h.remove("acme-raw", keys[1])
		h.upload("acme-raw", "tasks/rows.jsonl", "{\"text\": \"zero\"}\n{\"text\": \"ONE\"}\n")
		row := func(i int) string { return taskbus.TaskID(3, "tasks/rows.jsonl", &i) }
		eventually(t, 60*time.Second, "the overwrite, the delete and the new rows in Label Studio", func() error {
			a, err := lsTasks(ls, 7)
			if err != nil {
				return err
			}
			c, err := lsTasks(ls, 9)
			if err != nil {
				return err
			}
			if len(a) != 29 || len(c) != 2 {
				return fmt.Errorf("%d and %d tasks", len(a), len(c))
			}
			if _, ok := a[taskbus.TaskID(1, keys[1], nil)]; ok {
				return fmt.Errorf("the deleted object's task is still there")
			}
			if g := metaOf(t, a[taskbus.TaskID(1, keys[0], nil)]).Generation; g != fmt.Sprint(gen) {
				return fmt.Errorf("overwritten task's generation %s, want %d", g, gen)
			}
			if d := string(c[row(1)].Data); d != `{"text":"ONE"}` {
				return fmt.Errorf("row 1 data %s", d)
			}
			return nil
		})
		h.connectorSettled(30 * time.Second)
		a, _ := lsTasks(ls, 7)
		task := a[taskbus.TaskID(1, keys[5], nil)]
		m := metaOf(t, task)
		if m.Bucket != "acme-raw" || m.Key != keys[5] || m.StorageID != 1 || m.RowIndex != nil || !bytes.Contains(task.Data, []byte("gs://acme-raw/"+keys[5])) {
			t.Errorf("task %d: data %s meta %s", task.ID, task.Data, task.Meta)
		}
		if n := counterSum(t, rw.w.Registry(), "labelsync_labelstudio_requests_total"); n == 0 {
			t.Error("labelsync_labelstudio_requests_total is 0")
		}
		if ls.Requests("import") > 10 {
			t.Errorf("%d import requests for 33 tasks", ls.Requests("import"))
		}
		if ls.Requests("refresh") == 0 {
			t.Error("the personal access token was never exchanged")
		}
	})
}

func TestLabelStudioExactlyOnceThroughFailures(t *testing.T) {
	t.Parallel()
	ls, token := newLabelStudio(t, lsstub.Options{LegacyToken: "0123456789abcdef0123456789abcdef01234567"})
	h := newHarness(t, backends[0], tasksStorages)
	cfg := h.config()
	cfg.LabelStudioURL, cfg.LabelStudioToken = ls.URL, token
	cfg.LabelStudioBatchSize, cfg.LabelStudioFlushInterval = 20, 50*time.Millisecond
	cfg.ShutdownTimeout = 300 * time.Millisecond
	cfg.LabelStudioAckWait = 3 * time.Second // a dead worker's events come back after it

	// Slow imports, so that the first worker dies with requests in flight
	// (Label Studio commits them anyway), lost answers after the commit,
	// and a burst of 429s.
	ls.SetLatency(400*time.Millisecond, time.Millisecond)
	ls.CutAfterCommit("import", 2)
	ls.Inject(lsstub.Fault{Op: "import", Status: http.StatusBadGateway, AfterCommit: true}, 1)
	ls.FailNext("import", 4, http.StatusTooManyRequests, time.Second)

	var keys []string
	upload := func(from, to int) {
		var wg sync.WaitGroup
		for i := from; i < to; i++ {
			key := fmt.Sprintf("incoming/burst-%03d.jpg", i)
			keys = append(keys, key)
			wg.Go(func() { h.upload("acme-raw", key, "jpeg") })
		}
		wg.Wait()
	}
	first := h.startWorkerWith(cfg)
	upload(0, 80)
	eventually(t, 30*time.Second, "the first imports in flight", func() error {
		if ls.Requests("import") < 3 {
			return fmt.Errorf("%d import requests", ls.Requests("import"))
		}
		return nil
	})
	first.stop(t) // drains for 300 ms only: imports in flight are abandoned, not undone
	t.Logf("%d tasks in Label Studio when the first worker stopped", len(ls.Tasks(7)))

	h.stopNATS()
	h.startNATS()
	ls.SetLatency(20*time.Millisecond, 100*time.Microsecond)
	second := h.startWorkerWith(cfg)
	upload(80, 160)
	// NATS goes away under the running worker, and comes back.
	h.stopNATS()
	time.Sleep(500 * time.Millisecond)
	h.startNATS()
	upload(160, 200)

	eventually(t, 120*time.Second, "200 tasks in Label Studio", func() error {
		got, err := lsTasks(ls, 7)
		if err != nil {
			t.Fatal(err) // a duplicate never goes away by itself
		}
		if len(got) != len(keys) {
			return fmt.Errorf("%d tasks, want %d", len(got), len(keys))
		}
		return nil
	})
	h.connectorSettled(60 * time.Second)
	got, err := lsTasks(ls, 7)
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range keys {
		if _, ok := got[taskbus.TaskID(1, k, nil)]; !ok {
			t.Errorf("%s has no task", k)
		}
	}
	if len(got) != len(keys) {
		t.Errorf("%d tasks, want %d", len(got), len(keys))
	}
	if n := counterWith(t, second.w.Registry(), "labelsync_labelstudio_requests_total", "op", "lookup"); n == 0 {
		t.Error("no lookup of an import of unknown outcome")
	}
}

func TestLabelStudioConfigAndReadiness(t *testing.T) {
	t.Parallel()
	env := map[string]string{
		"LABELSYNC_PUBSUB_PROJECT": "proj-1", "LABELSYNC_PUBSUB_SUBSCRIPTION": "sub-1",
		"LABELSYNC_LABEL_STUDIO_URL": "http://localhost:8080",
	}
	_, err := worker.LoadConfig(context.Background(), nil, envconfig.MapLookuper(env))
	if err == nil || !strings.HasPrefix(err.Error(), "LABELSYNC_LABEL_STUDIO_TOKEN") {
		t.Errorf("URL without token: %v", err)
	}
	env["LABELSYNC_LABEL_STUDIO_TOKEN"] = "t"
	env["LABELSYNC_LABEL_STUDIO_URL"] = "localhost:8080"
	if _, err := worker.LoadConfig(context.Background(), nil, envconfig.MapLookuper(env)); err == nil || !strings.HasPrefix(err.Error(), "LABELSYNC_LABEL_STUDIO_URL") {
		t.Errorf("a URL without scheme: %v", err)
	}

	// A worker whose Label Studio is not there is not ready, and says why.
	h := newHarness(t, backends[0], tasksStorages)
	cfg := h.config()
	cfg.LabelStudioURL, cfg.LabelStudioToken = "http://"+natstest.FreeAddr(t), "0123456789abcdef0123456789abcdef01234567"
	ctx, cancel := context.WithCancel(h.ctx)
	w, err := worker.New(ctx, cfg, h.log)
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	eventually(t, 30*time.Second, "readyz names Label Studio", func() error {
		body, err := httpGet("http://" + w.HTTPAddr() + "/readyz")
		if err != nil {
			return err
		}
		if !strings.Contains(strings.ToLower(body), "label studio") {
			return fmt.Errorf("readyz: %q", body)
		}
		return nil
	})
}

func TestLabelStudioWebhookToTargetBucket(t *testing.T) {
	t.Parallel()
	ls, token := newLabelStudio(t, lsstub.Options{})
	h := newXHarness(t, exportStorages)
	rx := h.startExporter(h.config())
	env := ctl.Env{LabelStudioURL: ls.URL, LabelStudioToken: token, WebhookSecret: webhookSecret}
	connect := func() string {
		t.Helper()
		var out bytes.Buffer
		if err := ctl.Run(h.ctx, []string{"labelstudio", "connect", "--project", "7", "--exporter-url", "http://" + rx.x.HTTPAddr()}, env, nil, &out); err != nil {
			t.Fatalf("lsctl labelstudio connect: %v\n%s", err, out.String())
		}
		return out.String()
	}
	if out := connect(); !strings.Contains(out, "created") {
		t.Errorf("first connect:\n%s", out)
	}
	if out := connect(); !strings.Contains(out, "unchanged") {
		t.Errorf("second connect:\n%s", out)
	}

	// A task in Label Studio, annotated there: the webhook brings the
	// annotation to the exporter, which writes it to the target bucket.
	client, err := labelstudio.New(ls.URL, token)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := labelstudio.ImportTask(json.RawMessage(`{"data":{"image":"gs://acme-raw/incoming/cat.jpg"}}`), labelstudio.Meta{LabelsyncTaskID: "t1", StorageID: 1, Bucket: "acme-raw", Key: "incoming/cat.jpg", Generation: "1"})
	ids, err := client.Import(h.ctx, 7, append(append([]byte("["), body...), ']'), 1)
	if err != nil {
		t.Fatal(err)
	}
	annID, err := ls.Annotate(h.ctx, ids[0], json.RawMessage(`[{"type":"choices","value":{"choices":["cat"]},"from_name":"label","to_name":"image"}]`))
	if err != nil {
		t.Fatal(err)
	}
	want := fmt.Sprintf("%d:cat task %d", annID, ids[0])
	eventually(t, 30*time.Second, "the annotation in the target bucket", func() error {
		objs := h.objects("acme-labels")
		got, ok := objs[fmt.Sprintf("annotations/%d", annID)]
		if !ok {
			return fmt.Errorf("objects %v", keysOf(objs))
		}
		if label(got) != want {
			return fmt.Errorf("object %s, want %s", label(got), want)
		}
		return nil
	})
}

// counterWith sums a counter's series whose label has value.
func counterWith(t *testing.T, reg *prometheus.Registry, name, label, value string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var sum float64
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == label && l.GetValue() == value {
					sum += m.GetCounter().GetValue()
				}
			}
		}
	}
	return sum
}

func keysOf(m map[string]string) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}

// TestLabelStudioExportSyncReadsLabelStudio: annotations that never came
// through the webhook (made before it was connected) are in Label Studio
// only; an export sync of an exporter connected to Label Studio writes
// them, with those it has seen, newest-wins.
func TestLabelStudioExportSyncReadsLabelStudio(t *testing.T) {
	t.Parallel()
	ls, token := newLabelStudio(t, lsstub.Options{})
	h := newXHarness(t, exportStorages)
	cfg := h.config()
	cfg.LabelStudioURL, cfg.LabelStudioToken = ls.URL, token
	rx := h.startExporter(cfg)

	client, err := labelstudio.New(ls.URL, token)
	if err != nil {
		t.Fatal(err)
	}
	var tasks []json.RawMessage
	for i := range 250 {
		b, _ := labelstudio.ImportTask(json.RawMessage(fmt.Sprintf(`{"data":{"image":"gs://acme-raw/incoming/%d.jpg"}}`, i)), labelstudio.Meta{LabelsyncTaskID: fmt.Sprint(i)})
		tasks = append(tasks, b)
	}
	body, _ := json.Marshal(tasks)
	ids, err := client.Import(h.ctx, 7, body, len(tasks))
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{}
	for i, id := range ids {
		if i%2 == 1 {
			continue // half the tasks are not annotated
		}
		ann, err := ls.Annotate(h.ctx, id, json.RawMessage(`[{"type":"choices","value":{"choices":["cat"]},"from_name":"label","to_name":"image"}]`))
		if err != nil {
			t.Fatal(err)
		}
		want[fmt.Sprintf("%d.json", ann)] = fmt.Sprintf("%d:cat task %d", ann, id)
	}

	api := func(method, path string) map[string]any { return h.mustAPI(rx, method, path) }
	api("POST", "/api/storages/export/gcs/6/sync")
	var final map[string]any
	eventually(t, 60*time.Second, "export sync completed", func() error {
		final = api("GET", "/api/storages/export/gcs/6")
		if final["status"] != "completed" {
			return fmt.Errorf("status %v %v", final["status"], final["traceback"])
		}
		return nil
	})
	h.waitObjects("acme-keep", want, label)
	if c, _ := final["last_sync_count"].(float64); int(c) != len(want) {
		t.Errorf("last_sync_count %v, want %d", final["last_sync_count"], len(want))
	}
	if n := counterWith(t, rx.x.Registry(), "labelsync_labelstudio_requests_total", "op", "export_sync"); n < 2 {
		t.Errorf("%v task list requests for 250 tasks in pages of 100", n)
	}
}
