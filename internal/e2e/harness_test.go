package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"cloud.google.com/go/pubsub/v2"
	"cloud.google.com/go/storage"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/labelsync/labelsync/internal/config"
	"github.com/labelsync/labelsync/internal/devstack"
	"github.com/labelsync/labelsync/internal/natsembed"
	"github.com/labelsync/labelsync/internal/natstest"
	"github.com/labelsync/labelsync/internal/pubsubemu"
	"github.com/labelsync/labelsync/internal/taskbus"
	"github.com/labelsync/labelsync/internal/testlog"
	"github.com/labelsync/labelsync/internal/testwait"
	"github.com/labelsync/labelsync/internal/worker"
)

func TestMain(m *testing.M) {
	natstest.ServeIfChild() // a NATS node of TestClusterNodeLoss
	pubsubemu.Main(m)
}

// backend is one Pub/Sub implementation the scenarios run against: the same
// scenarios must pass on pstest and on Google's emulator.
type backend struct {
	name string
	// host returns an external emulator's host:port, or "" for pstest.
	host func(t testing.TB) string
}

var backends = []backend{
	{name: "pstest", host: func(testing.TB) string { return "" }},
	{name: "emulator", host: pubsubemu.Start},
}

// forEachBackend runs scenario as a subtest per backend.
func forEachBackend(t *testing.T, scenario func(t *testing.T, b backend)) {
	t.Helper()
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			t.Parallel()
			scenario(t, b)
		})
	}
}

var topicSeq atomic.Int64

// harness is one isolated stack: fake GCS publishing to its own topic, a
// restartable NATS server, and workers.
type harness struct {
	t       *testing.T
	ctx     context.Context
	stack   *devstack.Stack
	gcs     *storage.Client
	ps      *pubsub.Client
	sub     string
	natsDir string
	natsURL string
	nats    *natsembed.Server
	nc      *nats.Conn
	bus     *taskbus.Bus
	file    string
	log     *slog.Logger
}

func newHarness(t *testing.T, b backend, storagesJSON string) *harness {
	t.Helper()
	return newHarnessOn(t, b, storagesJSON, "")
}

// newHarnessOn is newHarness on the NATS servers at natsURL (a cluster's
// URLs), or on its own embedded server when natsURL is empty.
func newHarnessOn(t *testing.T, b backend, storagesJSON, natsURL string) *harness {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	n := topicSeq.Add(1)
	h := &harness{t: t, ctx: ctx, sub: fmt.Sprintf("labelsync-e2e-%d", n), log: testlog.Logger(t)}
	var err error
	h.stack, err = devstack.Start(ctx, devstack.Options{
		PubsubAddr:         "127.0.0.1:0",
		GCSAddr:            "127.0.0.1:0",
		Topic:              fmt.Sprintf("uploads-e2e-%d", n),
		PubsubEmulatorHost: b.host(t),
		Buckets:            []string{"acme-raw", "acme-other"},
		Logger:             h.log,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = h.stack.Close() })
	if h.gcs, err = h.stack.StorageClient(ctx); err != nil {
		t.Fatal(err)
	}
	if h.ps, err = h.stack.PubsubClient(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = h.ps.Close() })

	if h.natsURL = natsURL; natsURL == "" {
		h.natsDir = t.TempDir()
		h.natsURL = "nats://" + natstest.FreeAddr(t)
		h.startNATS()
		t.Cleanup(h.stopNATS)
	}
	h.nc = natstest.Connect(t, h.natsURL, nats.MaxReconnects(-1), nats.ReconnectWait(100*time.Millisecond))
	if h.bus, err = taskbus.New(h.nc, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	h.file = filepath.Join(t.TempDir(), "storages.json")
	if err := os.WriteFile(h.file, []byte(storagesJSON), 0o600); err != nil {
		t.Fatal(err)
	}
	return h
}

func (h *harness) startNATS() {
	h.t.Helper()
	srv, err := natsembed.Start(natsembed.Options{Addr: strings.TrimPrefix(h.natsURL, "nats://"), StoreDir: h.natsDir})
	if err != nil {
		h.t.Fatal(err)
	}
	h.nats = srv
}

func (h *harness) stopNATS() {
	if h.nats != nil {
		h.nats.Shutdown()
		h.nats = nil
	}
}

// runningWorker is a worker started by the harness.
type runningWorker struct {
	w      *worker.Worker
	cancel context.CancelFunc
	done   chan error
}

// stop shuts the worker down gracefully and waits.
func (rw *runningWorker) stop(t *testing.T) {
	t.Helper()
	rw.cancel()
	select {
	case err := <-rw.done:
		rw.done <- err // for the cleanup, which waits for it too
		if err != nil {
			t.Errorf("worker Run: %v", err)
		}
	case <-time.After(60 * time.Second):
		t.Fatal("worker did not stop within 60s")
	}
}

func (h *harness) config() worker.Config {
	return worker.Config{
		NATSURL:              h.natsURL,
		HTTPAddr:             "127.0.0.1:0",
		PubsubProject:        h.stack.ProjectID,
		PubsubSubscription:   h.sub,
		PubsubTopic:          h.stack.Topic,
		PubsubStreams:        16,
		PubsubMaxOutstanding: 200,
		StoragesFile:         h.file,
		ShutdownTimeout:      10 * time.Second,
		MaxObjectBytes:       1 << 30,
		StorageEmulatorHost:  h.stack.GCSURL,
		Logging:              config.Logging{LogLevel: "warn", LogFormat: "text"},
		PubsubEmulatorHost:   h.stack.PubsubAddr,
	}
}

func (h *harness) startWorker(opts ...worker.Option) *runningWorker {
	h.t.Helper()
	return h.startWorkerWith(h.config(), opts...)
}

func (h *harness) startWorkerWith(cfg worker.Config, opts ...worker.Option) *runningWorker {
	h.t.Helper()
	ctx, cancel := context.WithCancel(h.ctx)
	w, err := worker.New(ctx, cfg, h.log, opts...)
	if err != nil {
		cancel()
		h.t.Fatal(err)
	}
	rw := &runningWorker{w: w, cancel: cancel, done: make(chan error, 1)}
	go func() { rw.done <- w.Run(ctx) }()
	h.t.Cleanup(func() {
		cancel()
		<-rw.done
	})
	h.waitReady(w)
	return rw
}

func (h *harness) waitReady(w *worker.Worker) {
	h.t.Helper()
	eventually(h.t, 30*time.Second, "worker ready", func() error {
		resp, err := httpGet("http://" + w.HTTPAddr() + "/readyz")
		if err != nil {
			return err
		}
		if resp != "ready\n" {
			return fmt.Errorf("readyz: %q", resp)
		}
		return nil
	})
}

// upload writes an object to fake GCS, which publishes its notification.
func (h *harness) upload(bucket, key, body string) int64 {
	h.t.Helper()
	w := h.gcs.Bucket(bucket).Object(key).NewWriter(h.ctx)
	if _, err := io.WriteString(w, body); err != nil {
		h.t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		h.t.Fatalf("upload gs://%s/%s: %v", bucket, key, err)
	}
	return w.Attrs().Generation
}

func (h *harness) remove(bucket, key string) {
	h.t.Helper()
	if err := h.gcs.Bucket(bucket).Object(key).Delete(h.ctx); err != nil {
		h.t.Fatalf("delete gs://%s/%s: %v", bucket, key, err)
	}
}

// publish sends a crafted notification straight to the topic.
func (h *harness) publish(attrs map[string]string, data []byte) {
	h.t.Helper()
	res := h.ps.Publisher(h.stack.Topic).Publish(h.ctx, &pubsub.Message{Attributes: attrs, Data: data})
	if _, err := res.Get(h.ctx); err != nil {
		h.t.Fatal(err)
	}
}

// notification builds real-GCS-format attributes for a crafted message.
func notification(eventType, bucket, key string, gen int64, extra ...string) map[string]string {
	a := map[string]string{
		"notificationConfig": "projects/_/buckets/" + bucket + "/notificationConfigs/1",
		"eventType":          eventType,
		"payloadFormat":      "NONE",
		"bucketId":           bucket,
		"objectId":           key,
		"objectGeneration":   strconv.FormatInt(gen, 10),
		"eventTime":          time.Now().UTC().Format("2006-01-02T15:04:05.000000Z"),
	}
	for i := 0; i+1 < len(extra); i += 2 {
		a[extra[i]] = extra[i+1]
	}
	return a
}

// taskEvents returns every task event in the stream, in stream order.
func (h *harness) taskEvents() []taskbus.Event {
	h.t.Helper()
	var out []taskbus.Event
	for _, m := range h.streamMsgs(taskbus.TasksStream) {
		if !strings.HasPrefix(m.Subject, "labelsync.tasks.") {
			continue
		}
		var ev taskbus.Event
		if err := json.Unmarshal(m.Data, &ev); err != nil {
			h.t.Fatalf("task event %s: %v", m.Subject, err)
		}
		if !strings.HasPrefix(m.Subject, fmt.Sprintf("labelsync.tasks.%d.%s.", ev.Project, ev.Event)) {
			h.t.Errorf("subject %s does not match body project %d event %s", m.Subject, ev.Project, ev.Event)
		}
		out = append(out, ev)
	}
	return out
}

type deadLetter struct {
	Reason     string            `json:"reason"`
	Code       string            `json:"code"`
	Component  string            `json:"component"`
	Time       time.Time         `json:"time"`
	Source     map[string]any    `json:"source"`
	Attributes map[string]string `json:"attributes"`
	Data       *string           `json:"data"`
	DataBase64 []byte            `json:"data_base64"`
}

func (h *harness) deadLetters() []deadLetter {
	h.t.Helper()
	var out []deadLetter
	for _, m := range h.streamMsgs(taskbus.DeadLetterStream) {
		var d deadLetter
		if err := json.Unmarshal(m.Data, &d); err != nil {
			h.t.Fatalf("dead letter: %v", err)
		}
		out = append(out, d)
	}
	return out
}

type rawMsg struct {
	Subject string
	Data    []byte
}

func (h *harness) streamMsgs(stream string) []rawMsg {
	h.t.Helper()
	ctx, cancel := context.WithTimeout(h.ctx, 30*time.Second)
	defer cancel()
	s, err := h.bus.JetStream().Stream(ctx, stream)
	if err != nil {
		if strings.Contains(err.Error(), "not found") {
			return nil
		}
		h.t.Fatal(err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		h.t.Fatal(err)
	}
	var out []rawMsg
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq && info.State.Msgs > 0; seq++ {
		m, err := s.GetMsg(ctx, seq)
		// A stream whose node came back a moment ago answers 503 ("JetStream
		// system temporarily unavailable") for a while: read again.
		for isTemporarilyUnavailable(err) {
			if ctx.Err() != nil {
				break
			}
			time.Sleep(100 * time.Millisecond)
			m, err = s.GetMsg(ctx, seq)
		}
		if err != nil {
			h.t.Fatalf("get %s seq %d: %v", stream, seq, err)
		}
		out = append(out, rawMsg{Subject: m.Subject, Data: m.Data})
	}
	return out
}

// notificationsHandled sums labelsync_notifications_total of a worker.
func notificationsHandled(t *testing.T, reg *prometheus.Registry) float64 {
	t.Helper()
	return counterSum(t, reg, "labelsync_notifications_total")
}

func counterSum(t *testing.T, reg *prometheus.Registry, name string) float64 {
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
			sum += m.GetCounter().GetValue()
		}
	}
	return sum
}

func eventually(t *testing.T, within time.Duration, what string, check func() error) {
	t.Helper()
	testwait.Until(t, within, 50*time.Millisecond, what, check)
}

func httpGet(url string) (string, error) {
	c := &httpClient
	resp, err := c.Get(url)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return string(b), err
}

// isTemporarilyUnavailable reports a JetStream 503: a clustered stream
// without a leader yet.
func isTemporarilyUnavailable(err error) bool {
	var apiErr *jetstream.APIError
	return errors.As(err, &apiErr) && apiErr.Code == 503
}
