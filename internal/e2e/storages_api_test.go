package e2e

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/labelsync/labelsync/internal/config"
	"github.com/labelsync/labelsync/internal/exporter"
	"github.com/labelsync/labelsync/internal/ledger"
	"github.com/labelsync/labelsync/internal/taskbus"
	"github.com/labelsync/labelsync/internal/testlog"
)

// The storage API's writes, against running workers (SPEC §4, issue 11).

const secretKey = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=" // 32 bytes, base64

// leakMarker sits inside every credential these tests send: no answer, log
// line, metric or dead letter may ever show it.
const leakMarker = "LEAK-MARKER-9c1e"

// markedCreds is a service-account key with a real RSA key, the marker in
// its key id and e-mail.
var markedCreds = func() string {
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		panic(err)
	}
	der, _ := x509.MarshalPKCS8PrivateKey(k)
	b, _ := json.Marshal(map[string]string{
		"type": "service_account", "project_id": "acme", "private_key_id": leakMarker,
		"client_email": strings.ToLower(leakMarker) + "@acme.iam.gserviceaccount.com",
		"private_key":  string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})),
	})
	return string(b)
}()

// TestStorageAPILiveOnEveryReplica: a storage created through one worker's
// API imports uploads handled by another worker within a second; a PATCH
// and a DELETE reach every replica too; a replica restarted without the
// storages file has every storage.
func TestStorageAPILiveOnEveryReplica(t *testing.T) {
	t.Parallel()
	forEachBackend(t, func(t *testing.T, b backend) {
		h := newHarness(t, b, `{"import": [{"id": 1, "project": 7, "bucket": "acme-raw", "prefix": "declared", "use_blob_urls": true}]}`)
		var logs bytes.Buffer
		h.log = teeLogger(t, &logs)
		cfg := h.config()
		cfg.APIToken = "s3cret"
		cfg.SecretKey = secretKey
		a := h.startWorkerWith(cfg)
		b2 := h.startWorkerWith(cfg)

		code, created := h.api(a, "POST", "/api/storages/gcs", "s3cret",
			`{"project": "7", "title": "via API", "bucket": "acme-raw", "prefix": "api", "use_blob_urls": true, "recursive_scan": true, "presign_ttl": "30", "status": "completed", "type": "gcs"}`)
		if code != http.StatusCreated {
			t.Fatalf("create: %d %v", code, created)
		}
		id := int64(created["id"].(float64))
		if created["presign_ttl"] != float64(30) || created["project"] != float64(7) || created["status"] != "initialized" {
			t.Errorf("created: %v", created)
		}
		start := time.Now()
		eventually(t, time.Second, "storage on the other replica", func() error {
			if code, _ := h.api(b2, "GET", fmt.Sprintf("/api/storages/gcs/%d", id), "s3cret", ""); code != http.StatusOK {
				return fmt.Errorf("%d", code)
			}
			return nil
		})
		t.Logf("live on the other replica after %s", time.Since(start))
		// Uploads are handled by whichever replica Pub/Sub gives them to.
		for i := range 20 {
			h.upload("acme-raw", fmt.Sprintf("api/%02d.jpg", i), "x")
		}
		h.waitFor(func(evs []taskbus.Event) bool { return count(evs, ledger.Created) >= 20 })

		// PATCH changes only what it names.
		code, patched := h.api(b2, "PATCH", fmt.Sprintf("/api/storages/gcs/%d", id), "s3cret", `{"prefix": "api2", "id": 999}`)
		if code != http.StatusOK || patched["prefix"] != "api2" || patched["title"] != "via API" || patched["presign_ttl"] != float64(30) || patched["id"] != float64(id) {
			t.Fatalf("patch: %d %v", code, patched)
		}
		eventually(t, time.Second, "patch on the first replica", func() error {
			if _, st := h.api(a, "GET", fmt.Sprintf("/api/storages/gcs/%d", id), "s3cret", ""); st["prefix"] != "api2" {
				return fmt.Errorf("prefix %v", st["prefix"])
			}
			return nil
		})
		h.upload("acme-raw", "api/after-patch.jpg", "x") // no longer matches
		h.upload("acme-raw", "api2/after-patch.jpg", "x")
		h.waitFor(func(evs []taskbus.Event) bool { return count(evs, ledger.Created) >= 21 })

		// DELETE stops its imports at once, everywhere.
		if code, out := h.api(a, "DELETE", fmt.Sprintf("/api/storages/gcs/%d", id), "s3cret", ""); code != http.StatusNoContent {
			t.Fatalf("delete: %d %v", code, out)
		}
		eventually(t, time.Second, "delete on the other replica", func() error {
			if code, _ := h.api(b2, "GET", fmt.Sprintf("/api/storages/gcs/%d", id), "s3cret", ""); code != http.StatusNotFound {
				return fmt.Errorf("%d", code)
			}
			return nil
		})
		h.upload("acme-raw", "api2/after-delete.jpg", "x")
		evs := h.settle()
		for _, e := range evs {
			if e.Key == "api/after-patch.jpg" || e.Key == "api2/after-delete.jpg" {
				t.Errorf("unexpected task: %+v", e)
			}
		}

		// A replica restarted with no file has every storage: the declared
		// one and one created through the API.
		code, again := h.api(a, "POST", "/api/storages/gcs", "s3cret", `{"project": 8, "bucket": "acme-raw", "prefix": "again", "google_application_credentials": `+fmt.Sprintf("%q", markedCreds)+`}`)
		if code != http.StatusCreated {
			t.Fatalf("create with credentials: %d %v", code, again)
		}
		a.stop(t)
		nofile := cfg
		nofile.StoragesFile = ""
		c := h.startWorkerWith(nofile)
		_, list := h.apiList(c, "/api/storages/gcs")
		projects := map[float64]bool{}
		for _, st := range list {
			projects[st["project"].(float64)] = true
		}
		if !projects[7] || !projects[8] {
			t.Errorf("restarted without the file: storages %v, want the declared one and the created one", list)
		}

		// No credential ever shows.
		if strings.Contains(logs.String(), leakMarker) {
			t.Error("the credentials appear in the logs")
		}
		body, _ := httpGet("http://" + c.w.HTTPAddr() + "/metrics")
		if strings.Contains(body, leakMarker) {
			t.Error("the credentials appear in the metrics")
		}
		for _, d := range h.deadLetters() {
			if strings.Contains(fmt.Sprint(d), leakMarker) {
				t.Errorf("the credentials appear in a dead letter: %+v", d)
			}
		}
	})
}

// apiList GETs a list.
func (h *harness) apiList(rw *runningWorker, path string) (int, []map[string]any) {
	h.t.Helper()
	req, _ := http.NewRequestWithContext(h.ctx, "GET", "http://"+rw.w.HTTPAddr()+path, nil)
	req.Header.Set("Authorization", "Bearer s3cret")
	resp, err := httpClient.Do(req)
	if err != nil {
		h.t.Fatal(err)
	}
	defer resp.Body.Close()
	var out []map[string]any
	b, _ := io.ReadAll(resp.Body)
	if err := jsonUnmarshal(b, &out); err != nil {
		h.t.Fatalf("list %s: %v: %s", path, err, b)
	}
	return resp.StatusCode, out
}

// teeLogger logs at debug level into buf (for leak checks) and at warn
// level to the test log.
func teeLogger(t *testing.T, buf *bytes.Buffer) *slog.Logger {
	var mu sync.Mutex
	w := writerFunc(func(p []byte) (int, error) {
		mu.Lock()
		defer mu.Unlock()
		return buf.Write(p)
	})
	return slog.New(teeHandler{slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug}), testlog.Logger(t).Handler()})
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }

type teeHandler struct{ a, b slog.Handler }

func (h teeHandler) Enabled(ctx context.Context, l slog.Level) bool {
	return h.a.Enabled(ctx, l) || h.b.Enabled(ctx, l)
}

func (h teeHandler) Handle(ctx context.Context, r slog.Record) error {
	if h.a.Enabled(ctx, r.Level) {
		_ = h.a.Handle(ctx, r.Clone())
	}
	if h.b.Enabled(ctx, r.Level) {
		return h.b.Handle(ctx, r)
	}
	return nil
}

func (h teeHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return teeHandler{h.a.WithAttrs(as), h.b.WithAttrs(as)}
}

func (h teeHandler) WithGroup(g string) slog.Handler {
	return teeHandler{h.a.WithGroup(g), h.b.WithGroup(g)}
}

func jsonUnmarshal(b []byte, v any) error { return json.Unmarshal(b, v) }

// TestStorageAPIErrors drives every error path of create, PATCH and DELETE,
// each with credentials that carry the leak marker, and checks Label
// Studio's error shape and that nothing shows the credentials.
func TestStorageAPIErrors(t *testing.T) {
	t.Parallel()
	h := newHarness(t, backends[0], `{"import": [{"id": 1, "project": 7, "bucket": "acme-raw", "prefix": "declared", "use_blob_urls": true}],
	  "export": [{"id": 2, "project": 7, "bucket": "acme-raw"}]}`)
	var logs bytes.Buffer
	h.log = teeLogger(t, &logs)
	cfg := h.config()
	cfg.APIToken = "s3cret"
	cfg.SecretKey = secretKey
	rw := h.startWorkerWith(cfg)
	noKey := cfg
	noKey.SecretKey = ""
	rwNoKey := h.startWorkerWith(noKey)
	creds := fmt.Sprintf("%q", markedCreds)
	tests := []struct {
		name         string
		rw           *runningWorker
		method, path string
		token, body  string
		want         int
		field        string // a validation_errors key, or "" for none
		detail       string // a substring of detail
	}{
		{"create without token", rw, "POST", "/api/storages/gcs", "", `{"project": 7, "bucket": "acme-raw"}`, 401, "", ""},
		{"patch without token", rw, "PATCH", "/api/storages/gcs/1", "", `{"prefix": "x"}`, 401, "", ""},
		{"delete with a wrong token", rw, "DELETE", "/api/storages/gcs/1", "nope", ``, 401, "", ""},
		{"unknown fields are named", rw, "POST", "/api/storages/gcs", "s3cret", `{"project": 7, "bucket": "acme-raw", "colour": "red", "aws_region": "x", "google_application_credentials": ` + creds + `}`, 400, "", "aws_region"},
		{"presign_ttl 0", rw, "POST", "/api/storages/gcs", "s3cret", `{"project": 7, "bucket": "acme-raw", "presign_ttl": 0}`, 400, "presign_ttl", ""},
		{"presign_ttl over a week", rw, "POST", "/api/storages/gcs", "s3cret", `{"project": 7, "bucket": "acme-raw", "presign_ttl": 10081}`, 400, "presign_ttl", ""},
		{"bad regex", rw, "POST", "/api/storages/gcs", "s3cret", `{"project": 7, "bucket": "acme-raw", "regex_filter": "(["}`, 400, "regex_filter", ""},
		{"no bucket", rw, "POST", "/api/storages/gcs", "s3cret", `{"project": 7}`, 400, "bucket", ""},
		{"no project", rw, "POST", "/api/storages/gcs", "s3cret", `{"bucket": "acme-raw"}`, 400, "project", ""},
		{"credentials not JSON", rw, "POST", "/api/storages/gcs", "s3cret", `{"project": 7, "bucket": "acme-raw", "google_application_credentials": "not json ` + leakMarker + `"}`, 400, "google_application_credentials", "Google Application Credentials must be valid JSON string"},
		{"credentials of another type", rw, "POST", "/api/storages/gcs", "s3cret", `{"project": 7, "bucket": "acme-raw", "google_application_credentials": "{\"type\": \"authorized_user\", \"refresh_token\": \"` + leakMarker + `\"}"}`, 400, "google_application_credentials", ""},
		{"a bucket that does not exist", rw, "POST", "/api/storages/gcs", "s3cret", `{"project": 7, "bucket": "acme-nope"}`, 400, "bucket", "acme-nope"},
		{"inline credentials without LABELSYNC_SECRET_KEY", rwNoKey, "POST", "/api/storages/gcs", "s3cret", `{"project": 7, "bucket": "acme-raw", "google_application_credentials": ` + creds + `}`, 400, "google_application_credentials", "LABELSYNC_SECRET_KEY"},
		{"a taken id", rw, "POST", "/api/storages/gcs", "s3cret", `{"id": 1, "project": 7, "bucket": "acme-raw"}`, 400, "id", ""},
		{"patch of an unknown storage", rw, "PATCH", "/api/storages/gcs/4242", "s3cret", `{"prefix": "x"}`, 404, "", ""},
		{"patch with a bad value", rw, "PATCH", "/api/storages/gcs/1", "s3cret", `{"presign_ttl": -1, "google_application_credentials": ` + creds + `}`, 400, "presign_ttl", ""},
		{"patch to a bucket that does not exist", rw, "PATCH", "/api/storages/gcs/1", "s3cret", `{"bucket": "acme-nope"}`, 400, "bucket", ""},
		{"delete of an unknown storage", rw, "DELETE", "/api/storages/gcs/4242", "s3cret", ``, 404, "", ""},
		{"oversize body", rw, "POST", "/api/storages/gcs", "s3cret", `{"title": "` + strings.Repeat("x", 2<<20) + `"}`, 413, "", ""},
		{"export: a template it does not know", rw, "POST", "/api/storages/export/gcs", "s3cret", `{"project": 7, "bucket": "acme-raw", "object_key": "{task_id}/{annotation_id}"}`, 400, "object_key", ""},
		{"export: unknown storage", rw, "PATCH", "/api/storages/export/gcs/4242", "s3cret", `{"prefix": "x"}`, 404, "", ""},
		{"export: created", rw, "POST", "/api/storages/export/gcs", "s3cret", `{"project": 7, "bucket": "acme-raw", "prefix": "more", "object_key": "{annotation_id}.json", "can_delete_objects": "true", "google_application_credentials": ` + creds + `}`, 201, "", ""},
		{"export: patched", rw, "PATCH", "/api/storages/export/gcs/2", "s3cret", `{"can_delete_objects": true, "title": "labels"}`, 200, "", ""},
		{"export: deleted", rw, "DELETE", "/api/storages/export/gcs/2", "s3cret", ``, 204, "", ""},
	}
	for _, tt := range tests {
		req, _ := http.NewRequestWithContext(h.ctx, tt.method, "http://"+tt.rw.w.HTTPAddr()+tt.path, strings.NewReader(tt.body))
		if tt.token != "" {
			req.Header.Set("Authorization", "Bearer "+tt.token)
		}
		resp, err := httpClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		_ = resp.Body.Close()
		if resp.StatusCode != tt.want {
			t.Errorf("%s: %d %s, want %d", tt.name, resp.StatusCode, b, tt.want)
			continue
		}
		if strings.Contains(string(b), leakMarker) {
			t.Errorf("%s: the answer shows the credentials: %s", tt.name, b)
		}
		if tt.want == 204 {
			continue
		}
		var out map[string]any
		if err := json.Unmarshal(b, &out); err != nil {
			t.Errorf("%s: not JSON: %s", tt.name, b)
			continue
		}
		if tt.want >= 400 {
			detail, _ := out["detail"].(string)
			if detail == "" || !strings.Contains(detail+fmt.Sprint(out["validation_errors"]), tt.detail) {
				t.Errorf("%s: detail %q (%v), want it to mention %q", tt.name, detail, out["validation_errors"], tt.detail)
			}
			if tt.field != "" {
				if errs, _ := out["validation_errors"].(map[string]any); errs[tt.field] == nil {
					t.Errorf("%s: validation_errors %v, want one on %s", tt.name, out["validation_errors"], tt.field)
				}
			}
		}
		if _, ok := out["google_application_credentials"]; ok {
			t.Errorf("%s: the answer has a credentials field: %v", tt.name, out)
		}
	}
	if strings.Contains(logs.String(), leakMarker) {
		t.Error("the credentials appear in the logs")
	}
	body, _ := httpGet("http://" + rw.w.HTTPAddr() + "/metrics")
	if strings.Contains(body, leakMarker) {
		t.Error("the credentials appear in the metrics")
	}
}

// TestExportStorageCreatedThroughTheWorker: an export storage created
// through the worker's API is live in a running exporter, which writes the
// next annotation to it; deleted, it gets nothing more.
func TestExportStorageCreatedThroughTheWorker(t *testing.T) {
	t.Parallel()
	h := newHarness(t, backends[0], `{"import": [{"id": 1, "project": 7, "bucket": "acme-raw", "prefix": "incoming", "use_blob_urls": true}]}`)
	cfg := h.config()
	cfg.APIToken = "s3cret"
	rw := h.startWorkerWith(cfg)
	x, err := exporter.New(h.ctx, exporter.Config{
		NATSURL: h.natsURL, HTTPAddr: "127.0.0.1:0", WebhookSecret: webhookSecret, APIToken: "s3cret",
		Concurrency: 4, AckWait: 30 * time.Second, ShutdownTimeout: 5 * time.Second, StorageEmulatorHost: h.stack.GCSURL,
		Logging: config.Logging{LogLevel: "warn", LogFormat: "text"},
	}, h.log)
	if err != nil {
		t.Fatal(err)
	}
	xctx, cancel := context.WithCancel(h.ctx)
	done := make(chan error, 1)
	go func() { done <- x.Run(xctx) }()
	t.Cleanup(func() { cancel(); <-done })
	rx := &runningExporter{x: x, cancel: cancel, done: done}
	xh := &xharness{t: t, ctx: h.ctx}
	eventually(t, 30*time.Second, "exporter ready", func() error {
		_, err := httpGet("http://" + x.HTTPAddr() + "/readyz")
		return err
	})

	code, created := h.api(rw, "POST", "/api/storages/export/gcs", "s3cret", `{"project": 7, "bucket": "acme-raw", "prefix": "labels", "can_delete_objects": true}`)
	if code != http.StatusCreated {
		t.Fatalf("create export storage: %d %v", code, created)
	}
	id := int64(created["id"].(float64))
	eventually(t, time.Second, "the exporter has the storage", func() error {
		req, _ := http.NewRequestWithContext(h.ctx, "GET", fmt.Sprintf("http://%s/api/storages/export/gcs/%d", x.HTTPAddr(), id), nil)
		req.Header.Set("Authorization", "Bearer s3cret")
		resp, err := httpClient.Do(req)
		if err != nil {
			return err
		}
		_ = resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("%d", resp.StatusCode)
		}
		return nil
	})
	xh.mustPost(rx, annotationPayload("ANNOTATION_CREATED", 77, 5, "cat", time.Now()))
	eventually(t, 30*time.Second, "the annotation in the new storage", func() error {
		if _, err := h.gcs.Bucket("acme-raw").Object("labels/77").Attrs(h.ctx); err != nil {
			return err
		}
		return nil
	})
	if code, out := h.api(rw, "DELETE", fmt.Sprintf("/api/storages/export/gcs/%d", id), "s3cret", ""); code != http.StatusNoContent {
		t.Fatalf("delete: %d %v", code, out)
	}
	time.Sleep(300 * time.Millisecond)
	xh.mustPost(rx, annotationPayload("ANNOTATION_CREATED", 78, 5, "dog", time.Now()))
	time.Sleep(time.Second)
	if _, err := h.gcs.Bucket("acme-raw").Object("labels/78").Attrs(h.ctx); err == nil {
		t.Error("an annotation was written to a deleted export storage")
	}
}
