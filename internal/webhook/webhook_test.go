package webhook_test

import (
	"context"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/labelsync/labelsync/internal/metrics"
	"github.com/labelsync/labelsync/internal/natstest"
	"github.com/labelsync/labelsync/internal/taskbus"
	"github.com/labelsync/labelsync/internal/webhook"
)

const created = `{"action": "ANNOTATION_CREATED",
 "annotation": {"id": 17, "result": [], "updated_at": "2026-11-27T14:31:10.123456Z", "task": 4, "project": 7},
 "task": {"id": 4, "data": {"image": "gs://b/k.jpg"}}, "project": {"id": 7}}`

const bulk = `{"action": "ANNOTATIONS_CREATED",
 "annotations": [{"id": 18, "result": [], "updated_at": "2026-11-27T14:31:10Z", "task": 4, "project": 7},
                 {"id": 19, "result": [], "updated_at": "2026-11-27T14:31:11Z", "task": 5, "project": 7}],
 "project": {"id": 7}}`

func setup(t testing.TB) (http.Handler, jetstream.JetStream, *metrics.Metrics) {
	t.Helper()
	bus := natstest.NewBus(t)
	if err := bus.EnsureStreams(context.Background(), taskbus.AnnotationsStream); err != nil {
		t.Fatal(err)
	}
	m := metrics.New(prometheus.NewRegistry())
	h := webhook.New("s3cret", bus.JetStream(), func() int64 { return bus.MaxMessageBytes(taskbus.AnnotationsStream) }, m, slog.New(slog.DiscardHandler))
	return h, bus.JetStream(), m
}

func post(h http.Handler, token, body string) *httptest.ResponseRecorder {
	r := httptest.NewRequest("POST", webhook.Path, strings.NewReader(body))
	if token != "" {
		r.Header.Set("Authorization", "Bearer "+token)
	}
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	return w
}

func streamState(t *testing.T, js jetstream.JetStream) (msgs, lastSeq uint64) {
	t.Helper()
	s, err := js.Stream(context.Background(), taskbus.AnnotationsStream)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return info.State.Msgs, info.State.LastSeq
}

// The same webhook delivered twice is stored once; a bulk payload is one
// message per annotation; every answer is JSON; metrics count outcomes.
func TestWebhook(t *testing.T) {
	t.Parallel()
	h, js, m := setup(t)
	for i, tt := range []struct {
		token, body string
		want        int
		msgs, seq   uint64
	}{
		{"s3cret", created, http.StatusOK, 1, 1},
		{"s3cret", created, http.StatusOK, 1, 1}, // a retry: recognised
		{"S3CRET", created, http.StatusUnauthorized, 1, 1},
		{"", created, http.StatusUnauthorized, 1, 1},
		{"s3cret", bulk, http.StatusOK, 3, 3},
		{"s3cret", `{"action": "TASKS_CREATED", "tasks": [], "project": {"id": 7}}`, http.StatusOK, 3, 3},
		{"s3cret", `[]`, http.StatusBadRequest, 3, 3},
	} {
		w := post(h, tt.token, tt.body)
		if w.Code != tt.want || w.Header().Get("Content-Type") != "application/json" {
			t.Errorf("%d: %d %s %q, want %d and JSON", i, w.Code, w.Header().Get("Content-Type"), w.Body, tt.want)
		}
		if msgs, seq := streamState(t, js); msgs != tt.msgs || seq != tt.seq {
			t.Errorf("%d: stream holds %d messages, last seq %d; want %d, %d", i, msgs, seq, tt.msgs, tt.seq)
		}
	}
	for outcome, want := range map[string]float64{"accepted": 3, "unauthorized": 2, "skipped": 1, "invalid": 1} {
		if got := testutil.ToFloat64(m.WebhookRequests.WithLabelValues(outcome)); got != want {
			t.Errorf("labelsync_webhook_requests_total{%s} = %v, want %v", outcome, got, want)
		}
	}
}

// Without JetStream the request fails with 503 and Retry-After: Label
// Studio's delivery is not acknowledged.
func TestWebhookUnavailable(t *testing.T) {
	t.Parallel()
	h, js, _ := setup(t)
	if err := js.DeleteStream(context.Background(), taskbus.AnnotationsStream); err != nil {
		t.Fatal(err)
	}
	w := post(h, "s3cret", created)
	if w.Code != http.StatusServiceUnavailable || w.Header().Get("Retry-After") == "" {
		t.Fatalf("%d %q (Retry-After %q), want 503 with Retry-After", w.Code, w.Body, w.Header().Get("Retry-After"))
	}
}

// A secret left empty refuses everything.
func TestWebhookWithoutSecret(t *testing.T) {
	t.Parallel()
	bus := natstest.NewBus(t)
	h := webhook.New("", bus.JetStream(), func() int64 { return 1 << 20 }, metrics.New(prometheus.NewRegistry()), slog.New(slog.DiscardHandler))
	for _, token := range []string{"", " "} {
		if w := post(h, token, created); w.Code != http.StatusUnauthorized {
			t.Errorf("token %q: %d, want 401", token, w.Code)
		}
	}
}

// An older change arriving after a newer one does not replace it in the
// stream (which keeps one message per annotation): before, the newer one
// could be gone before the exporter read it. Nothing follows a delete.
func TestWebhookKeepsTheNewestState(t *testing.T) {
	t.Parallel()
	h, js, _ := setup(t)
	body := func(action, updated string) string {
		return `{"action": "` + action + `", "annotation": {"id": 5, "result": [], "updated_at": "` + updated + `", "task": 4, "project": 7}, "project": {"id": 7}}`
	}
	s, err := js.Stream(context.Background(), taskbus.AnnotationsStream)
	if err != nil {
		t.Fatal(err)
	}
	stored := func() string {
		t.Helper()
		m, err := s.GetLastMsgForSubject(context.Background(), "labelsync.annotations.7.5")
		if err != nil {
			t.Fatal(err)
		}
		return string(m.Data)
	}
	for i, step := range []struct{ body, want string }{
		{body("ANNOTATION_UPDATED", "2026-11-27T14:10:00Z"), "14:10:00"},
		{body("ANNOTATION_UPDATED", "2026-11-27T14:08:00Z"), "14:10:00"}, // older: not stored
		{body("ANNOTATION_CREATED", "2026-11-27T14:01:00Z"), "14:10:00"},
		{body("ANNOTATION_UPDATED", "2026-11-27T14:12:00Z"), "14:12:00"},
		{`{"action": "ANNOTATIONS_DELETED", "annotations": [{"id": 5}], "project": {"id": 7}}`, "ANNOTATIONS_DELETED"},
		{body("ANNOTATION_UPDATED", "2026-11-27T14:30:00Z"), "ANNOTATIONS_DELETED"}, // after the delete: not stored
	} {
		if w := post(h, "s3cret", step.body); w.Code != http.StatusOK {
			t.Fatalf("%d: %d %s", i, w.Code, w.Body)
		}
		if got := stored(); !strings.Contains(got, step.want) {
			t.Errorf("%d: the stream holds %s, want the change with %s", i, got, step.want)
		}
	}
}

// Label Studio's retry of a webhook may reach another exporter replica,
// which has never seen the annotation, or several at once: the publish
// conditioned on the subject's last message stores it once all the same
// (no Nats-Msg-Id is involved).
func TestWebhookRetryOnOtherReplicas(t *testing.T) {
	t.Parallel()
	bus := natstest.NewBus(t)
	if err := bus.EnsureStreams(context.Background(), taskbus.AnnotationsStream); err != nil {
		t.Fatal(err)
	}
	replica := func() http.Handler {
		return webhook.New("s3cret", bus.JetStream(), func() int64 { return bus.MaxMessageBytes(taskbus.AnnotationsStream) },
			metrics.New(prometheus.NewRegistry()), slog.New(slog.DiscardHandler))
	}
	if w := post(replica(), "s3cret", created); w.Code != http.StatusOK {
		t.Fatalf("first delivery: %d %s", w.Code, w.Body)
	}
	if w := post(replica(), "s3cret", created); w.Code != http.StatusOK {
		t.Fatalf("retry on another replica: %d %s", w.Code, w.Body)
	}
	var wg sync.WaitGroup
	codes := make([]int, 8)
	for i := range codes {
		wg.Go(func() { codes[i] = post(replica(), "s3cret", bulk).Code })
	}
	wg.Wait()
	for i, code := range codes {
		if code != http.StatusOK {
			t.Errorf("bulk delivery %d at once: %d", i, code)
		}
	}
	if msgs, seq := streamState(t, bus.JetStream()); msgs != 3 || seq != 3 {
		t.Errorf("stream holds %d messages, last seq %d; want 3, 3 (one per annotation)", msgs, seq)
	}
}

// BenchmarkServeHTTP is the handler's own cost per new annotation, with
// JetStream's round trip (an embedded server) and without HTTP's: what
// BenchmarkWebhook in internal/bench compares with a bare handler.
func BenchmarkServeHTTP(b *testing.B) {
	h, _, _ := setup(b)
	bodies := make([]string, 0, b.N)
	for i := range b.N {
		bodies = append(bodies, strings.Replace(created, `"id": 17`, `"id": `+strconv.Itoa(i+100), 1))
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := range b.N {
		if w := post(h, "s3cret", bodies[i]); w.Code != http.StatusOK {
			b.Fatalf("answered %d %s", w.Code, w.Body)
		}
	}
}
