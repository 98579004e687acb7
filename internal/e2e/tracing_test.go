package e2e

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"

	"github.com/labelsync/labelsync/internal/exporter"
	"github.com/labelsync/labelsync/internal/natstest"
	"github.com/labelsync/labelsync/internal/taskbus"
	"github.com/labelsync/labelsync/internal/tracing"
	"github.com/labelsync/labelsync/internal/tracing/otlptest"
	"github.com/labelsync/labelsync/internal/worker"
)

// otlpProvider is a tracer provider exporting over OTLP/HTTP to r, as
// Setup builds one from OTEL_EXPORTER_OTLP_ENDPOINT.
func otlpProvider(t *testing.T, r *otlptest.Receiver, service string) *tracing.Provider {
	t.Helper()
	exp, err := otlptracehttp.New(t.Context(), otlptracehttp.WithEndpointURL(r.Endpoint()+"/v1/traces"))
	if err != nil {
		t.Fatal(err)
	}
	p, err := tracing.WithExporter(t.Context(), service, exp)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// spanTree indexes received spans.
type spanTree []otlptest.Span

func (s spanTree) named(name string, attrs ...string) []otlptest.Span {
	var out []otlptest.Span
next:
	for _, sp := range s {
		if sp.Name != name {
			continue
		}
		for i := 0; i+1 < len(attrs); i += 2 {
			if sp.Attrs[attrs[i]] != attrs[i+1] {
				continue next
			}
		}
		out = append(out, sp)
	}
	return out
}

func (s spanTree) children(parent otlptest.Span, name string) []otlptest.Span {
	var out []otlptest.Span
	for _, sp := range s.named(name) {
		if sp.ParentID == parent.SpanID && sp.TraceID == parent.TraceID {
			out = append(out, sp)
		}
	}
	return out
}

// TestTraceOfAnUpload: one Tasks-mode upload gives the span tree
// notification → decode, match, append → read, under labelsync-worker; its
// task events carry the trace in their traceparent header; a sync traces
// its pages.
func TestTraceOfAnUpload(t *testing.T) {
	t.Parallel()
	r := otlptest.Start(t)
	h := newHarness(t, backends[0], `{"import": [{"id": 3, "project": 9, "bucket": "acme-raw", "prefix": "tasks", "recursive_scan": true}]}`)
	p := otlpProvider(t, r, "labelsync-worker")
	cfg := h.config()
	cfg.APIToken = "s3cret"
	rw := h.startWorkerWith(cfg, worker.WithTracing(p))
	h.upload("acme-raw", "tasks/traced.json", `[{"text": "one"}, {"text": "two"}]`)
	h.waitFor(func(evs []taskbus.Event) bool { return len(evs) >= 2 })
	if code, out := h.api(rw, "POST", "/api/storages/gcs/3/sync", "s3cret", ""); code != http.StatusOK {
		t.Fatalf("sync: %d %v", code, out)
	}
	eventually(t, 30*time.Second, "sync completed", func() error {
		if _, st := h.api(rw, "GET", "/api/storages/gcs/3", "s3cret", ""); st["status"] != "completed" {
			return fmt.Errorf("status %v", st["status"])
		}
		return nil
	})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := p.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}

	spans := spanTree(r.Spans())
	notes := spans.named("notification", "gcs.object", "tasks/traced.json", "outcome", "emitted")
	if len(notes) != 1 {
		t.Fatalf("%d emitted notification spans for the upload, want 1; spans: %+v", len(notes), spans)
	}
	note := notes[0]
	if note.ParentID != "" || note.Service != "labelsync-worker" {
		t.Errorf("notification span %+v: want a root span of labelsync-worker", note)
	}
	for _, child := range []string{"decode", "match", "append"} {
		if n := len(spans.children(note, child)); n != 1 {
			t.Errorf("notification has %d %q children, want 1", n, child)
		}
	}
	appends := spans.children(note, "append")
	if len(appends) == 1 {
		if appends[0].Attrs["labelsync.storage_id"] != "3" {
			t.Errorf("append span attributes %v", appends[0].Attrs)
		}
		if reads := spans.children(appends[0], "read"); len(reads) != 1 || reads[0].Attrs["rows"] != "2" {
			t.Errorf("append's read spans: %+v, want one of 2 rows", reads)
		}
	}
	// The task events continue the upload's trace.
	for _, m := range natstest.Messages(t, h.bus.JetStream(), taskbus.TasksStream) {
		if !strings.HasPrefix(m.Subject, "labelsync.tasks.") {
			continue
		}
		if tp := m.Header.Get(tracing.Traceparent); !strings.HasPrefix(tp, "00-"+note.TraceID+"-") {
			t.Errorf("task event %s traceparent %q, want the notification's trace %s", m.Subject, tp, note.TraceID)
		}
	}
	if pages := spans.named("sync.page", "labelsync.storage_id", "3"); len(pages) == 0 {
		t.Error("no sync.page span")
	}
}

// TestTraceOfAnAnnotation: one trace runs from the webhook request to the
// object write: webhook → export → write.
func TestTraceOfAnAnnotation(t *testing.T) {
	t.Parallel()
	r := otlptest.Start(t)
	h := newXHarness(t, `{"export": [{"id": 2, "project": 7, "bucket": "acme-labels", "prefix": "annotations"}]}`)
	p := otlpProvider(t, r, "labelsync-exporter")
	x := h.startExporter(h.config(), exporter.WithTracing(p))
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	h.mustPost(x, annotationPayload("ANNOTATION_CREATED", 41, 9, "cat", time.Date(2026, 12, 2, 9, 0, 0, 0, time.UTC)))
	h.waitObjects("acme-labels", map[string]string{"annotations/41": "41:cat task 9"}, label)
	if err := p.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	spans := spanTree(r.Spans())
	hooks := spans.named("webhook", "labelsync.action", "ANNOTATION_CREATED")
	if len(hooks) != 1 {
		t.Fatalf("%d webhook spans, want 1: %+v", len(hooks), spans)
	}
	exports := spans.children(hooks[0], "export")
	if len(exports) != 1 || exports[0].Attrs["labelsync.annotation_id"] != "41" {
		t.Fatalf("export spans under the webhook: %+v; all spans %+v", exports, spans)
	}
	writes := spans.children(exports[0], "write")
	if len(writes) != 1 || writes[0].Attrs["gcs.bucket"] != "acme-labels" || writes[0].Attrs["written"] != "true" {
		t.Errorf("write spans under the export: %+v", writes)
	}
	for _, s := range append(append(hooks, exports...), writes...) {
		if s.Service != "labelsync-exporter" {
			t.Errorf("span %s service %q", s.Name, s.Service)
		}
	}
}
