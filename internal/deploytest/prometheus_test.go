package deploytest

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sethvargo/go-envconfig"

	"github.com/labelsync/labelsync/internal/devstack"
	"github.com/labelsync/labelsync/internal/exporter"
	"github.com/labelsync/labelsync/internal/natstest"
	"github.com/labelsync/labelsync/internal/testlog"
	"github.com/labelsync/labelsync/internal/testwait"
	"github.com/labelsync/labelsync/internal/worker"
)

// The storages of the end-to-end run: make run's Files-mode storage and
// export storage, plus a Tasks-mode one for a dead letter.
const e2eStorages = `{"import": [
  {"id": 1, "project": 7, "bucket": "acme-raw", "prefix": "incoming", "regex_filter": ".*\\.(jpe?g|png)$",
   "use_blob_urls": true, "recursive_scan": true},
  {"id": 3, "project": 8, "bucket": "acme-raw", "prefix": "tasks", "use_blob_urls": false}],
 "export": [{"id": 2, "project": 7, "bucket": "acme-labels", "prefix": "annotations", "can_delete_objects": true}]}`

const (
	apiToken      = "deploytest-token"
	webhookSecret = "deploytest-hook"
	// window replaces Grafana's $__rate_interval, $__interval and $__range.
	window = "1m"
)

// TestPrometheus runs a real Prometheus (Debian's package) scraping an
// in-process worker and exporter that handle a little traffic, then
// evaluates every dashboard panel's and every alert's expression through
// its HTTP API: each parses, and the core panels return data.
func TestPrometheus(t *testing.T) {
	t.Parallel()
	prometheus := tool(t, "prometheus")
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	logger := testlog.Logger(t)

	stack, err := devstack.Start(ctx, devstack.Options{
		PubsubAddr: "127.0.0.1:0",
		GCSAddr:    "127.0.0.1:0",
		Topic:      "deploytest-uploads",
		Buckets:    []string{"acme-raw", "acme-labels"},
		Logger:     logger,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = stack.Close() })
	natsURL := natstest.Server(t).URL()
	storagesFile := filepath.Join(t.TempDir(), "storages.json")
	if err := os.WriteFile(storagesFile, []byte(e2eStorages), 0o600); err != nil {
		t.Fatal(err)
	}

	// The worker and the exporter, configured from variables as the binaries are.
	wcfg, err := worker.LoadConfig(ctx, nil, envconfig.MapLookuper(map[string]string{
		"LABELSYNC_NATS_URL":            natsURL,
		"LABELSYNC_HTTP_ADDR":           "127.0.0.1:0",
		"LABELSYNC_PUBSUB_PROJECT":      stack.ProjectID,
		"LABELSYNC_PUBSUB_SUBSCRIPTION": "labelsync-worker",
		"LABELSYNC_PUBSUB_TOPIC":        stack.Topic,
		"LABELSYNC_PUBSUB_STREAMS":      "4",
		"LABELSYNC_STORAGES_FILE":       storagesFile,
		"LABELSYNC_API_TOKEN":           apiToken,
		"LABELSYNC_SHUTDOWN_TIMEOUT":    "5s",
		"PUBSUB_EMULATOR_HOST":          stack.PubsubAddr,
		"STORAGE_EMULATOR_HOST":         stack.GCSURL,
	}))
	if err != nil {
		t.Fatal(err)
	}
	w, err := worker.New(ctx, wcfg, logger)
	if err != nil {
		t.Fatal(err)
	}
	workerAddr := w.HTTPAddr()
	serve(t, ctx, "worker", w.Run)

	xcfg, err := exporter.LoadConfig(ctx, nil, envconfig.MapLookuper(map[string]string{
		"LABELSYNC_NATS_URL":         natsURL,
		"LABELSYNC_HTTP_ADDR":        "127.0.0.1:0",
		"LABELSYNC_STORAGES_FILE":    storagesFile,
		"LABELSYNC_WEBHOOK_SECRET":   webhookSecret,
		"LABELSYNC_API_TOKEN":        apiToken,
		"LABELSYNC_SHUTDOWN_TIMEOUT": "5s",
		"STORAGE_EMULATOR_HOST":      stack.GCSURL,
	}))
	if err != nil {
		t.Fatal(err)
	}
	x, err := exporter.New(ctx, xcfg, logger)
	if err != nil {
		t.Fatal(err)
	}
	exporterAddr := x.HTTPAddr()
	serve(t, ctx, "exporter", x.Run)
	for _, addr := range []string{workerAddr, exporterAddr} {
		eventually(t, 30*time.Second, addr+" ready", func() error {
			code, body := request(ctx, "GET", "http://"+addr+"/readyz", "", "")
			if code != http.StatusOK {
				return fmt.Errorf("%d %s", code, body)
			}
			return nil
		})
	}

	prom := startPrometheus(t, prometheus, workerAddr, exporterAddr)
	eventually(t, 30*time.Second, "both targets scraped", func() error {
		res, err := prom.query(ctx, `count(up{job=~"labelsync-worker|labelsync-exporter"} == 1) == 2`)
		if err != nil || len(res) == 0 {
			return fmt.Errorf("not yet: %v", err)
		}
		return nil
	})

	// A little traffic, once Prometheus has seen the counters at rest:
	// a task, a filtered object, a dead letter, a sync, an annotation and
	// a refused webhook.
	gcs, err := stack.StorageClient(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for key, body := range map[string]string{
		"incoming/cat 1.jpg": "not really a jpeg",
		"incoming/notes.txt": "filtered by the storage's regex",
		"tasks/broken.json":  `{"data": {"text": "an unterminated record"`,
	} {
		wr := gcs.Bucket("acme-raw").Object(key).NewWriter(ctx)
		if _, err := io.WriteString(wr, body); err != nil {
			t.Fatal(err)
		}
		if err := wr.Close(); err != nil {
			t.Fatalf("upload %s: %v", key, err)
		}
	}
	if code, body := request(ctx, "POST", "http://"+workerAddr+"/api/storages/gcs/1/sync", apiToken, ""); code != http.StatusOK {
		t.Fatalf("sync: %d %s", code, body)
	}
	annotation := `{"action": "ANNOTATION_CREATED",
 "annotation": {"id": 1, "result": [{"type": "choices", "value": {"choices": ["cat"]}, "from_name": "label", "to_name": "image"}],
   "created_at": "2026-11-27T14:31:10.123456Z", "updated_at": "2026-11-27T14:31:10.123456Z", "task": 1, "project": 7},
 "task": {"id": 1, "data": {"image": "gs://acme-raw/incoming/cat 1.jpg"}, "project": 7},
 "project": {"id": 7, "title": "cats"}}`
	webhookURL := "http://" + exporterAddr + "/webhooks/label-studio"
	if code, body := request(ctx, "POST", webhookURL, webhookSecret, annotation); code != http.StatusOK {
		t.Fatalf("webhook: %d %s", code, body)
	}
	if code, _ := request(ctx, "POST", webhookURL, "wrong", annotation); code != http.StatusUnauthorized {
		t.Fatalf("webhook with a wrong secret: %d, want 401", code)
	}

	// Every dashboard expression parses; the core panels return data.
	d := loadDashboard(t)
	deadline := time.Now().Add(30 * time.Second)
	for _, p := range d.queryPanels() {
		core := slices.Contains(corePanels, p.Title)
		if !core && !slices.Contains(optionalPanels, p.Title) {
			t.Errorf("panel %q is neither core nor optional: add it to one list", p.Title)
		}
		for _, tg := range p.Targets {
			expr := grafanaExpr(tg.Expr)
			for {
				res, err := prom.query(ctx, expr)
				if err != nil {
					t.Errorf("panel %q target %s: %v\n  %s", p.Title, tg.RefID, err, expr)
					break
				}
				if len(res) > 0 || !core {
					break
				}
				if time.Now().After(deadline) {
					t.Errorf("panel %q target %s returns no data\n  %s", p.Title, tg.RefID, expr)
					break
				}
				time.Sleep(500 * time.Millisecond)
			}
		}
	}

	// Every alert expression parses, and Prometheus evaluates every rule
	// without error.
	for _, r := range loadAlerts(t) {
		if _, err := prom.query(ctx, r.Expr); err != nil {
			t.Errorf("alert %s: %v\n  %s", r.Alert, err, r.Expr)
		}
	}
	eventually(t, 15*time.Second, "every alert rule loaded and evaluated", func() error {
		health, err := prom.rules(ctx)
		if err != nil {
			return err
		}
		for _, name := range wantAlerts {
			switch h := health[name]; h {
			case "ok":
			case "":
				return fmt.Errorf("alert %s is not loaded (%v)", name, health)
			default:
				return fmt.Errorf("alert %s: health %s", name, h)
			}
		}
		return nil
	})
}

// grafanaExpr replaces Grafana's interval variables by a fixed window.
func grafanaExpr(expr string) string {
	return strings.NewReplacer("$__rate_interval", window, "${__rate_interval}", window,
		"$__interval", window, "${__interval}", window, "$__range", window, "${__range}", window).Replace(expr)
}

// serve runs a component until the test ends and waits for it then.
func serve(t *testing.T, ctx context.Context, name string, run func(context.Context) error) {
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("%s: %v", name, err)
			}
		case <-time.After(30 * time.Second):
			t.Errorf("%s did not stop within 30s", name)
		}
	})
}

// promServer is a running Prometheus.
type promServer struct{ url string }

func startPrometheus(t *testing.T, bin, workerAddr, exporterAddr string) *promServer {
	t.Helper()
	dir := t.TempDir()
	cfg := fmt.Sprintf(`global:
  scrape_interval: 1s
  scrape_timeout: 1s
  evaluation_interval: 1s
rule_files:
  - %q
scrape_configs:
  - job_name: labelsync-worker
    static_configs:
      - targets: [%q]
  - job_name: labelsync-exporter
    static_configs:
      - targets: [%q]
`, path(t, "deploy/prometheus/alerts.yml"), workerAddr, exporterAddr)
	cfgFile := filepath.Join(dir, "prometheus.yml")
	if err := os.WriteFile(cfgFile, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	addr := natstest.FreeAddr(t)
	var out testlog.Buffer
	cmd := exec.Command(bin,
		"--config.file="+cfgFile,
		"--storage.tsdb.path="+filepath.Join(dir, "data"),
		"--web.listen-address="+addr,
		"--log.level=warn",
	)
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", bin, err)
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
		}
		if t.Failed() {
			t.Logf("prometheus output:\n%s", out.String())
		}
	})
	p := &promServer{url: "http://" + addr}
	eventually(t, 30*time.Second, "prometheus ready", func() error {
		select {
		case <-exited:
			t.Fatalf("prometheus exited:\n%s", out.String())
		default:
		}
		code, body := request(context.Background(), "GET", p.url+"/-/ready", "", "")
		if code != http.StatusOK {
			return fmt.Errorf("%d %s", code, body)
		}
		return nil
	})
	return p
}

// query evaluates expr now; an error is a refused query (HTTP status or
// Prometheus status other than success), the result its series.
func (p *promServer) query(ctx context.Context, expr string) ([]json.RawMessage, error) {
	code, body := request(ctx, "GET", p.url+"/api/v1/query?query="+url.QueryEscape(expr), "", "")
	var r struct {
		Status string `json:"status"`
		Error  string `json:"error"`
		Data   struct {
			ResultType string            `json:"resultType"`
			Result     []json.RawMessage `json:"result"`
		} `json:"data"`
	}
	if err := json.Unmarshal([]byte(body), &r); err != nil || code != http.StatusOK || r.Status != "success" {
		return nil, fmt.Errorf("HTTP %d, status %q: %s", code, r.Status, r.Error)
	}
	if r.Data.ResultType == "scalar" {
		return []json.RawMessage{json.RawMessage(body)}, nil
	}
	return r.Data.Result, nil
}

// rules is the health of every alerting rule Prometheus loaded, by name.
func (p *promServer) rules(ctx context.Context) (map[string]string, error) {
	code, body := request(ctx, "GET", p.url+"/api/v1/rules?type=alert", "", "")
	var r struct {
		Status string `json:"status"`
		Data   struct {
			Groups []struct {
				Rules []struct {
					Name      string `json:"name"`
					Health    string `json:"health"`
					LastError string `json:"lastError"`
				} `json:"rules"`
			} `json:"groups"`
		} `json:"data"`
	}
	if err := json.Unmarshal([]byte(body), &r); err != nil || code != http.StatusOK || r.Status != "success" {
		return nil, fmt.Errorf("/api/v1/rules: HTTP %d: %s", code, body)
	}
	out := map[string]string{}
	for _, g := range r.Data.Groups {
		for _, rule := range g.Rules {
			out[rule.Name] = rule.Health
			if rule.LastError != "" {
				out[rule.Name] += ": " + rule.LastError
			}
		}
	}
	return out, nil
}

func request(ctx context.Context, method, url, token, body string) (int, string) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, url, strings.NewReader(body))
	if err != nil {
		return 0, err.Error()
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	return resp.StatusCode, string(b)
}

func eventually(t *testing.T, within time.Duration, what string, check func() error) {
	t.Helper()
	testwait.Until(t, within, 100*time.Millisecond, what, check)
}
