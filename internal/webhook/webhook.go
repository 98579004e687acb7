// Package webhook is the exporter's intake: Label Studio's webhook
// (POST /webhooks/label-studio, SPEC §3) puts each annotation change on
// LABELSYNC_ANNOTATIONS and answers 2xx only after JetStream acknowledged
// every one of them, so a request Label Studio sees succeed is never lost.
//
// Each annotation of a payload is one message, on
// labelsync.annotations.<project>.<annotation id>, in the shape of a
// one-annotation webhook payload (annotation.Event.Payload). The stream
// keeps one message per subject, and each is stored only if it is newer
// than the one there (its updated_at, in a header), conditioned on that
// message's sequence: a repeated or out-of-order webhook is answered 200
// and not stored, and nothing follows a delete.
//
// Requests need `Authorization: Bearer <LABELSYNC_WEBHOOK_SECRET>`
// (compared in constant time; 401 otherwise). Bodies over MaxBodyBytes are
// refused with 413, malformed ones with 400, both with a JSON
// {"detail": "..."}; actions the exporter does not handle are answered 200
// and counted as skipped. A Handler is safe for concurrent use.
package webhook

import (
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/labelsync/labelsync/internal/annotation"
	"github.com/labelsync/labelsync/internal/fault"
	"github.com/labelsync/labelsync/internal/metrics"
	"github.com/labelsync/labelsync/internal/taskbus"
	"github.com/labelsync/labelsync/internal/tracing"
)

// Path is the webhook's route.
const Path = "/webhooks/label-studio"

// MaxBodyBytes bounds a webhook body. Label Studio sends the task with an
// annotation; a bulk ANNOTATIONS_CREATED sends many.
const MaxBodyBytes = 16 << 20

// Outcomes for labelsync_webhook_requests_total{outcome}.
const (
	outcomeAccepted     = "accepted"
	outcomeSkipped      = "skipped"
	outcomeUnauthorized = "unauthorized"
	outcomeInvalid      = "invalid"
	outcomeTooLarge     = "too_large"
	outcomeUnavailable  = "unavailable"
)

// Handler serves the webhook.
type Handler struct {
	secret  []byte
	js      jetstream.JetStream
	maxMsg  func() int64
	timeout time.Duration
	metrics *metrics.Metrics
	logger  *slog.Logger
	tracer  trace.Tracer

	mu          sync.Mutex
	annotations jetstream.Stream
	hints       hints
}

// New builds the handler. secret empty refuses every request. maxMsg is
// the largest message LABELSYNC_ANNOTATIONS takes (taskbus.Bus.MaxMessageBytes).
func New(secret string, js jetstream.JetStream, maxMsg func() int64, m *metrics.Metrics, logger *slog.Logger) *Handler {
	return &Handler{secret: []byte(secret), js: js, maxMsg: maxMsg, timeout: 10 * time.Second, metrics: m, logger: logger}
}

// WithTracer traces each request ("webhook"); the trace travels on in the
// stored events' traceparent headers, to the exporter's writes.
func (h *Handler) WithTracer(t trace.Tracer) *Handler {
	h.tracer = t
	return h
}

func (h *Handler) authorized(r *http.Request) bool {
	if len(h.secret) == 0 {
		return false
	}
	scheme, token, ok := strings.Cut(r.Header.Get("Authorization"), " ")
	return ok && strings.EqualFold(scheme, "Bearer") && subtle.ConstantTimeCompare([]byte(token), h.secret) == 1
}

// ServeHTTP handles one webhook request.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		h.answer(w, http.StatusMethodNotAllowed, "", reply{Detail: "use POST"})
		return
	}
	if !h.authorized(r) {
		w.Header().Set("WWW-Authenticate", `Bearer realm="labelsync"`)
		h.answer(w, http.StatusUnauthorized, outcomeUnauthorized, reply{Detail: "Authorization: Bearer <LABELSYNC_WEBHOOK_SECRET> is required"})
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, MaxBodyBytes))
	var tooBig *http.MaxBytesError
	switch {
	case errors.As(err, &tooBig):
		h.answer(w, http.StatusRequestEntityTooLarge, outcomeTooLarge, reply{Detail: fmt.Sprintf("the body is over %d bytes", MaxBodyBytes)})
		return
	case err != nil:
		h.answer(w, http.StatusBadRequest, outcomeInvalid, reply{Detail: "the body could not be read"})
		return
	}
	ctx := r.Context()
	if h.tracer != nil {
		ctx = tracing.ExtractHTTP(ctx, r.Header)
	}
	ctx, span := tracing.Start(ctx, h.tracer, "webhook", trace.SpanKindServer)
	defer span.End()
	action, events, err := annotation.Decode(body)
	if span.IsRecording() {
		span.SetAttributes(attribute.String("labelsync.action", action), attribute.Int("labelsync.annotations", len(events)))
	}
	switch {
	case errors.Is(err, annotation.ErrSkipped):
		h.answer(w, http.StatusOK, outcomeSkipped, reply{Action: action, Skipped: true})
		return
	case err != nil:
		span.SetStatus(codes.Error, err.Error())
		h.answer(w, http.StatusBadRequest, outcomeInvalid, reply{Detail: err.Error()})
		return
	}
	if err := h.publish(ctx, events); err != nil {
		span.SetStatus(codes.Error, err.Error())
		if code, class := fault.Of(err); class == fault.ClassPermanent && code == fault.TooLarge {
			h.answer(w, http.StatusRequestEntityTooLarge, outcomeTooLarge, reply{Detail: err.Error()})
			return
		}
		h.logger.WarnContext(ctx, "webhook: events not stored", "action", action, "err", err)
		w.Header().Set("Retry-After", "5")
		h.answer(w, http.StatusServiceUnavailable, outcomeUnavailable, reply{Detail: "the events could not be stored; retry"})
		return
	}
	h.answer(w, http.StatusOK, outcomeAccepted, reply{Action: action, Accepted: len(events)})
}

// Headers of a stored annotation message: what the intake compares a new
// change with, without decoding the stored payload.
const (
	hdrUpdatedAt = "Labelsync-Updated-At"
	hdrDeleted   = "Labelsync-Deleted"
)

// publish stores every event: each one conditioned on its subject's last
// message, so that the stream keeps the newest state of each annotation
// (it keeps one message per subject). A change older than, or as old as,
// the stored one is not stored (Label Studio's retries and out-of-order
// deliveries), and nothing follows a delete (Label Studio never reuses an
// annotation id). Without the condition, an older change arriving after a
// newer one would replace it in the stream before the exporter read it:
// the newer change would be lost.
func (h *Handler) publish(ctx context.Context, events []annotation.Event) error {
	ctx, cancel := context.WithTimeout(ctx, h.timeout)
	defer cancel()
	limit := h.maxMsg()
	for _, ev := range events {
		m := &nats.Msg{Subject: ev.Subject(), Data: ev.Payload(), Header: nats.Header{}}
		if ev.Action == annotation.Deleted {
			m.Header.Set(hdrDeleted, "true")
		} else {
			m.Header.Set(hdrUpdatedAt, ev.UpdatedAt.UTC().Format(time.RFC3339Nano))
		}
		tracing.Inject(ctx, m.Header)
		if n := int64(len(m.Data)) + 256; limit > 0 && n > limit {
			return fault.Permanent(fault.TooLarge, fmt.Errorf("webhook: annotation %d is %d bytes, over the %d bytes LABELSYNC_ANNOTATIONS accepts", ev.AnnotationID, len(m.Data), limit))
		}
		if err := h.store(ctx, ev, m); err != nil {
			return err
		}
	}
	return nil
}

// store appends m if it is newer than its subject's last message. What
// this handler last stored or read of each annotation is remembered (a
// hint): a change not newer than that is known stale at once, since a
// stored message is only ever replaced by a newer one; otherwise the
// publish is conditioned on the remembered sequence, or on an empty
// subject for an annotation not seen yet (a guess that is right for new
// annotations), and a lost guess reads the subject and decides again.
// With the hint, BenchmarkWebhook's intake needs no read for most requests.
func (h *Handler) store(ctx context.Context, ev annotation.Event, m *nats.Msg) error {
	key := hintKey{project: ev.Project, annotation: ev.AnnotationID}
	hint, known := h.hints.get(key)
	for range 16 {
		if known && !hint.replacedBy(ev) {
			return nil // as old as what is stored, or after a delete
		}
		ack, err := h.js.PublishMsg(ctx, m, jetstream.WithExpectLastSequencePerSubject(hint.seq))
		var apiErr *jetstream.APIError
		if errors.As(err, &apiErr) && (apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence || apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequenceConstant) {
			// The guess was wrong: read what the subject holds.
			s, err := h.stream(ctx)
			if err != nil {
				return err
			}
			stored, err := s.GetLastMsgForSubject(ctx, m.Subject)
			switch {
			case errors.Is(err, jetstream.ErrMsgNotFound):
				hint, known = subjectHint{}, false
			case err != nil:
				return fmt.Errorf("webhook: read %s: %w", m.Subject, err)
			default:
				hint, known = hintOf(stored.Sequence, stored.Header), true
				h.hints.put(key, hint)
			}
			continue
		}
		if err != nil {
			return fmt.Errorf("webhook: %w", err)
		}
		h.hints.put(key, hintFor(ack.Sequence, ev))
		return nil
	}
	return fmt.Errorf("webhook: annotation %d kept changing", ev.AnnotationID)
}

// hintKey names an annotation's subject.
type hintKey struct{ project, annotation int64 }

// subjectHint is what the handler last knew of one annotation's subject:
// its sequence and what its headers say. It holds no pointers, so the
// garbage collector does not scan the hints: keeping the headers
// themselves made every collection walk up to 100,000 maps.
type subjectHint struct {
	seq     uint64
	deleted bool
	timed   bool  // updated_at was readable
	sec     int64 // updated_at, when timed
	nsec    int32
}

func hintOf(seq uint64, hdr nats.Header) subjectHint {
	h := subjectHint{seq: seq, deleted: hdr.Get(hdrDeleted) != ""}
	if t, err := time.Parse(time.RFC3339Nano, hdr.Get(hdrUpdatedAt)); err == nil {
		h.timed, h.sec, h.nsec = true, t.Unix(), int32(t.Nanosecond())
	}
	return h
}

// hintFor is hintOf the message publish made of ev, without reading its
// headers back.
func hintFor(seq uint64, ev annotation.Event) subjectHint {
	if ev.Action == annotation.Deleted {
		return subjectHint{seq: seq, deleted: true}
	}
	return subjectHint{seq: seq, timed: true, sec: ev.UpdatedAt.Unix(), nsec: int32(ev.UpdatedAt.Nanosecond())}
}

// replacedBy reports whether ev should replace the stored message: not
// after a delete, always for a delete, and otherwise when ev is newer (or
// the stored time cannot be read).
func (h subjectHint) replacedBy(ev annotation.Event) bool {
	switch {
	case h.deleted:
		return false
	case ev.Action == annotation.Deleted, !h.timed:
		return true
	}
	sec, nsec := ev.UpdatedAt.Unix(), int32(ev.UpdatedAt.Nanosecond())
	return sec > h.sec || (sec == h.sec && nsec > h.nsec)
}

// hints is a bounded map of subject hints, cleared when full.
type hints struct {
	mu sync.Mutex
	m  map[hintKey]subjectHint
}

const maxHints = 100_000

func (hs *hints) get(k hintKey) (subjectHint, bool) {
	hs.mu.Lock()
	defer hs.mu.Unlock()
	h, ok := hs.m[k]
	return h, ok
}

func (hs *hints) put(k hintKey, h subjectHint) {
	hs.mu.Lock()
	defer hs.mu.Unlock()
	if hs.m == nil || len(hs.m) >= maxHints {
		hs.m = make(map[hintKey]subjectHint)
	}
	if cur, ok := hs.m[k]; ok && cur.seq > h.seq {
		return
	}
	hs.m[k] = h
}

// stream returns the annotations stream handle, looked up once.
func (h *Handler) stream(ctx context.Context) (jetstream.Stream, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.annotations == nil {
		s, err := h.js.Stream(ctx, taskbus.AnnotationsStream)
		if err != nil {
			return nil, fmt.Errorf("webhook: stream %s: %w", taskbus.AnnotationsStream, err)
		}
		h.annotations = s
	}
	return h.annotations, nil
}

// reply is an answer's body: {"detail": …} for a refusal, else the action
// with how many annotations were accepted, or that it was skipped. A
// struct, not a map: encoding/json sorts a map's keys on every answer.
type reply struct {
	Accepted int    `json:"accepted,omitempty"`
	Action   string `json:"action,omitempty"`
	Detail   string `json:"detail,omitempty"`
	Skipped  bool   `json:"skipped,omitempty"`
}

func (h *Handler) answer(w http.ResponseWriter, status int, outcome string, body reply) {
	if outcome != "" {
		h.metrics.WebhookRequests.WithLabelValues(outcome).Inc()
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(body)
}
