package tracing_test

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"go.opentelemetry.io/otel/trace"

	"github.com/labelsync/labelsync/internal/tracing"
	"github.com/labelsync/labelsync/internal/tracing/otlptest"
)

func TestEnabled(t *testing.T) {
	t.Parallel()
	tests := []struct {
		env  map[string]string
		want bool
	}{
		{nil, false},
		{map[string]string{"OTEL_SERVICE_NAME": "x"}, false},
		{map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}, true},
		{map[string]string{"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://collector:4318/v1/traces"}, true},
		{map[string]string{"OTEL_TRACES_EXPORTER": "otlp"}, true},
		{map[string]string{"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"}, false},
		{map[string]string{"OTEL_SDK_DISABLED": "true", "OTEL_TRACES_EXPORTER": "otlp"}, false},
	}
	for _, tt := range tests {
		lookup := func(k string) (string, bool) { v, ok := tt.env[k]; return v, ok }
		if got := tracing.Enabled(lookup); got != tt.want {
			t.Errorf("Enabled(%v) = %v, want %v", tt.env, got, tt.want)
		}
	}
}

// TestSetupExportsOverOTLP: with only the standard variables, spans reach
// an OTLP/HTTP receiver, under OTEL_SERVICE_NAME, and travel through NATS
// headers as W3C traceparent; log lines logged in a span carry its ids.
func TestSetupExportsOverOTLP(t *testing.T) {
	r := otlptest.Start(t)
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", r.Endpoint())
	t.Setenv("OTEL_SERVICE_NAME", "labelsync-test")
	ctx := context.Background()
	p, err := tracing.Setup(ctx, "labelsync-worker", func(k string) (string, bool) {
		return map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": r.Endpoint()}[k], k == "OTEL_EXPORTER_OTLP_ENDPOINT"
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, span := p.Tracer().Start(ctx, "parent")
	h := nats.Header{}
	tracing.Inject(ctx, h)
	if got := h.Get(tracing.Traceparent); !strings.HasPrefix(got, "00-"+span.SpanContext().TraceID().String()+"-") {
		t.Errorf("traceparent %q, want the span's trace", got)
	}
	var logs bytes.Buffer
	logger := slog.New(tracing.LogHandler(slog.NewJSONHandler(&logs, nil)))
	logger.InfoContext(ctx, "in a span")
	if !strings.Contains(logs.String(), `"trace_id":"`+span.SpanContext().TraceID().String()+`"`) ||
		!strings.Contains(logs.String(), `"span_id":"`+span.SpanContext().SpanID().String()+`"`) {
		t.Errorf("log line without the span's ids: %s", logs.String())
	}
	_, child := p.Tracer().Start(tracing.Extract(context.Background(), h), "child")
	child.End()
	span.End()
	if err := p.Shutdown(ctx); err != nil {
		t.Fatal(err)
	}
	spans := r.Spans()
	if len(spans) != 2 {
		t.Fatalf("received %d spans, want 2: %+v", len(spans), spans)
	}
	byName := map[string]otlptest.Span{}
	for _, s := range spans {
		byName[s.Name] = s
		if s.Service != "labelsync-test" {
			t.Errorf("span %s has service %q, want OTEL_SERVICE_NAME's", s.Name, s.Service)
		}
	}
	if byName["child"].ParentID != byName["parent"].SpanID || byName["child"].TraceID != byName["parent"].TraceID {
		t.Errorf("child %+v is not parent %+v's child", byName["child"], byName["parent"])
	}
}

// TestOff: without the variables nothing is injected or logged.
func TestOff(t *testing.T) { // not parallel: AllocsPerRun
	p, err := tracing.Setup(context.Background(), "x", func(string) (string, bool) { return "", false })
	if err != nil {
		t.Fatal(err)
	}
	if p.Tracer() != nil {
		t.Error("a tracer with tracing off")
	}
	ctx, span := tracing.Start(context.Background(), p.Tracer(), "nothing", trace.SpanKindInternal)
	defer span.End()
	if span.IsRecording() || ctx != context.Background() {
		t.Error("Start with tracing off records or changes the context")
	}
	if n := testing.AllocsPerRun(100, func() {
		_, s := tracing.Start(ctx, nil, "x", trace.SpanKindInternal)
		s.End()
	}); n != 0 {
		t.Errorf("Start with tracing off allocates %v times", n)
	}
	h := nats.Header{}
	tracing.Inject(ctx, h)
	if len(h) != 0 {
		t.Errorf("headers %v with tracing off", h)
	}
	var logs bytes.Buffer
	slog.New(tracing.LogHandler(slog.NewJSONHandler(&logs, nil))).InfoContext(ctx, "x")
	if strings.Contains(logs.String(), "trace_id") {
		t.Errorf("trace id logged with tracing off: %s", logs.String())
	}
	ctx2, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	if err := p.Shutdown(ctx2); err != nil {
		t.Error(err)
	}
}
