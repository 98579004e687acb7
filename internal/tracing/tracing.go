// Package tracing sets up OpenTelemetry tracing from the standard OTEL_*
// variables, carries trace context through NATS message headers (W3C
// traceparent and tracestate), and puts trace and span ids on log lines.
//
// Off unless the variables ask for it: with no OTEL_TRACES_EXPORTER (or
// "none") and no OTLP endpoint, Setup returns a no-op provider, whose spans
// cost a context lookup and record nothing (BenchmarkNotificationPath
// measures both). On, the exporter and its protocol are whatever the
// variables say (autoexport: OTLP over http/protobuf by default), the
// sampler is OTEL_TRACES_SAMPLER's, and the resource is the service's name
// overridden by OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES.
package tracing

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"go.opentelemetry.io/contrib/exporters/autoexport"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.37.0"
	"go.opentelemetry.io/otel/trace"
)

// Name is the instrumentation scope of labelsync's spans.
const Name = "github.com/labelsync/labelsync"

// Enabled reports whether the OTEL_* variables (read through lookup) ask
// for traces: OTEL_TRACES_EXPORTER set to an exporter other than "none",
// or an OTLP endpoint set, and OTEL_SDK_DISABLED not "true".
func Enabled(lookup func(string) (string, bool)) bool {
	if v, _ := lookup("OTEL_SDK_DISABLED"); strings.EqualFold(strings.TrimSpace(v), "true") {
		return false
	}
	if v, ok := lookup("OTEL_TRACES_EXPORTER"); ok && strings.TrimSpace(v) != "" {
		return strings.TrimSpace(v) != "none"
	}
	for _, k := range []string{"OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"} {
		if v, _ := lookup(k); strings.TrimSpace(v) != "" {
			return true
		}
	}
	return false
}

// Provider is a process's tracer provider. The zero value is unusable; a
// nil *Provider traces nothing.
type Provider struct {
	tp       trace.TracerProvider // nil: tracing off
	shutdown func(context.Context) error
}

// Noop traces nothing.
func Noop() *Provider {
	return &Provider{shutdown: func(context.Context) error { return nil }}
}

// Setup builds the provider the OTEL_* variables describe (see Enabled),
// for service (the default service.name). lookup reads the variables that
// decide whether tracing is on; the exporter itself reads the process
// environment, as OpenTelemetry defines. Errors name the variable.
func Setup(ctx context.Context, service string, lookup func(string) (string, bool)) (*Provider, error) {
	if !Enabled(lookup) {
		return Noop(), nil
	}
	exp, err := autoexport.NewSpanExporter(ctx)
	if err != nil {
		return nil, fmt.Errorf("OTEL_TRACES_EXPORTER / OTEL_EXPORTER_OTLP_*: %w", err)
	}
	return WithExporter(ctx, service, exp)
}

// WithExporter is Setup with a given exporter (tests: an OTLP exporter
// pointed at a receiver of their own).
func WithExporter(ctx context.Context, service string, exp sdktrace.SpanExporter) (*Provider, error) {
	// Later options win: the service's name is the default that
	// OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES override.
	res, err := resource.New(ctx,
		resource.WithTelemetrySDK(),
		resource.WithAttributes(semconv.ServiceName(service)),
		resource.WithFromEnv(),
	)
	if err != nil && !errors.Is(err, resource.ErrPartialResource) {
		return nil, fmt.Errorf("OTEL_RESOURCE_ATTRIBUTES: %w", err)
	}
	tp := sdktrace.NewTracerProvider(sdktrace.WithBatcher(exp), sdktrace.WithResource(res))
	return &Provider{tp: tp, shutdown: tp.Shutdown}, nil
}

// Tracer returns labelsync's tracer, or nil when tracing is off (a nil or
// no-op Provider). Components take a nil tracer as "off" and start their
// spans with Start.
func (p *Provider) Tracer() trace.Tracer {
	if p == nil || p.tp == nil {
		return nil
	}
	return p.tp.Tracer(Name)
}

// Shutdown flushes the spans not yet exported and stops the exporter.
func (p *Provider) Shutdown(ctx context.Context) error {
	if p == nil {
		return nil
	}
	return p.shutdown(ctx)
}

// Close is Shutdown within five seconds, for a main's defer; a failure is
// logged (spans still buffered are lost, nothing else).
func (p *Provider) Close(logger *slog.Logger) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := p.Shutdown(ctx); err != nil {
		logger.Warn("tracing: spans not flushed at exit", "err", err)
	}
}

// off is the span Start returns with tracing off: it records nothing, and
// ending it does nothing.
var off = trace.SpanFromContext(context.Background())

// Start starts a span named name with t, a child of the span in ctx. With
// t nil (tracing off) it returns ctx itself and a span that records
// nothing, without allocating: even OpenTelemetry's no-op tracer allocates
// a context per span, and the worker starts four per notification (14
// allocations and 700 B per notification with the no-op tracer, none with
// nil; BenchmarkNotificationPath). Set attributes under span.IsRecording().
func Start(ctx context.Context, t trace.Tracer, name string, kind trace.SpanKind) (context.Context, trace.Span) {
	if t == nil {
		return ctx, off
	}
	return t.Start(ctx, name, trace.WithSpanKind(kind))
}

// propagator is W3C Trace Context: traceparent and tracestate.
var propagator propagation.TraceContext

// headerCarrier reads and writes NATS headers by their exact, lower-case
// W3C names (nats.Header does not canonicalise keys, unlike http.Header).
type headerCarrier nats.Header

func (c headerCarrier) Get(key string) string {
	if v := c[key]; len(v) > 0 {
		return v[0]
	}
	return ""
}

func (c headerCarrier) Set(key, value string) { c[key] = []string{value} }

func (c headerCarrier) Keys() []string {
	keys := make([]string, 0, len(c))
	for k := range c {
		keys = append(keys, k)
	}
	return keys
}

// Header names Inject writes.
const (
	Traceparent = "traceparent"
	Tracestate  = "tracestate"
)

// Inject writes the span context of ctx into h (nothing when ctx holds no
// valid span, as with tracing off). h must not be nil.
func Inject(ctx context.Context, h nats.Header) {
	if !trace.SpanContextFromContext(ctx).IsValid() {
		return
	}
	propagator.Inject(ctx, headerCarrier(h))
}

// Extract returns ctx with the remote span context h carries, if any.
func Extract(ctx context.Context, h nats.Header) context.Context {
	if len(h) == 0 {
		return ctx
	}
	return propagator.Extract(ctx, headerCarrier(h))
}

// ExtractHTTP is Extract for an HTTP request's headers.
func ExtractHTTP(ctx context.Context, h http.Header) context.Context {
	return propagator.Extract(ctx, propagation.HeaderCarrier(h))
}

// ExtractMap is Extract for string attributes (Pub/Sub message attributes:
// "traceparent", or "googclient_traceparent" as Google's client libraries
// write it).
func ExtractMap(ctx context.Context, attrs map[string]string) context.Context {
	if attrs["traceparent"] == "" && attrs["googclient_traceparent"] != "" {
		return propagator.Extract(ctx, propagation.MapCarrier{"traceparent": attrs["googclient_traceparent"], "tracestate": attrs["googclient_tracestate"]})
	}
	return propagator.Extract(ctx, propagation.MapCarrier(attrs))
}

// End ends span, recording err as its status when not nil.
func End(span trace.Span, err error) {
	if err != nil && span.IsRecording() {
		span.RecordError(err)
		span.SetStatus(codes.Error, err.Error())
	}
	span.End()
}

// LogHandler wraps h so that records logged with a context that holds a
// span (logger.InfoContext(ctx, …)) carry its trace_id and span_id.
func LogHandler(h slog.Handler) slog.Handler { return logHandler{h} }

type logHandler struct{ slog.Handler }

func (h logHandler) Handle(ctx context.Context, r slog.Record) error {
	if sc := trace.SpanContextFromContext(ctx); sc.IsValid() {
		r = r.Clone()
		r.AddAttrs(slog.String("trace_id", sc.TraceID().String()), slog.String("span_id", sc.SpanID().String()))
	}
	return h.Handler.Handle(ctx, r)
}

func (h logHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return logHandler{h.Handler.WithAttrs(as)}
}

func (h logHandler) WithGroup(name string) slog.Handler {
	return logHandler{h.Handler.WithGroup(name)}
}
