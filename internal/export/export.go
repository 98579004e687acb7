// Package export writes annotation events into target (export) storages
// and deletes them from there (SPEC §1, §3).
//
// For every export storage of the event's project, an annotation is the
// object <prefix>/<annotation_id> (or <annotation_id>.json) holding the
// annotation's fields plus "task" (the task without its annotations), or,
// with object_key "{task_id}.json", the object <prefix>/<task_id>.json
// holding the whole task with all its current annotations. Objects are
// written with Content-Type application/json, with the storage's own
// credentials or Application Default Credentials.
//
// Newest wins, without locks: every write is conditioned on the generation
// it was decided from (GCS preconditions), and an annotation object records
// the annotation's updated_at in its metadata, so an older event never
// overwrites a newer object, also when two exporters race on one
// annotation. A plain create guesses that the object does not exist, which
// costs one request when the guess is right.
//
// Deletes are terminal (Label Studio never reuses an annotation id): a
// delete first records a tombstone in the JetStream key-value bucket
// labelsync_export_state, then removes the objects of storages with
// can_delete_objects. A write reads the tombstone before it writes where
// objects may not be deleted, and after it wrote where they may (removing
// what it wrote if the delete came in between), so a delete that arrives
// before its create leaves nothing behind.
//
// Delivery: Apply returns nil only after every write and delete the event
// needs has succeeded; a caller acknowledges the event then. Errors are
// classified (package fault): 429, 5xx and timeouts are transient, a
// missing bucket or refused credentials permanent. Apply may be called
// again for the same event at any time: it changes nothing the second time.
// An Exporter is safe for concurrent use.
package export

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"time"

	"cloud.google.com/go/storage"
	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"

	"github.com/labelsync/labelsync/internal/annotation"
	"github.com/labelsync/labelsync/internal/fault"
	"github.com/labelsync/labelsync/internal/gcs"
	"github.com/labelsync/labelsync/internal/metrics"
	"github.com/labelsync/labelsync/internal/storages"
	"github.com/labelsync/labelsync/internal/taskbus"
	"github.com/labelsync/labelsync/internal/tracing"
)

// StateBucket is the key-value bucket of annotation states: the task an
// annotation belongs to, and its tombstone once deleted.
const StateBucket = "labelsync_export_state"

// Metadata keys of annotation objects.
const (
	mdUpdatedAt    = "labelsync-updated-at"
	mdAnnotationID = "labelsync-annotation-id"
)

// Operation outcomes for labelsync_export_operations_total{op,outcome}.
const (
	opWrite  = "write"
	opDelete = "delete"
	opSkip   = "skip"

	outcomeOK         = "ok"
	outcomeError      = "error"
	outcomeStale      = "stale"       // an older event than the object holds
	outcomeDeleted    = "deleted"     // the annotation was deleted: no write
	outcomeNotAllowed = "not_allowed" // a delete where can_delete_objects is false
	outcomeNoStorage  = "no_storage"  // the project has no export storage
	outcomeUnknown    = "unknown"     // a delete of an annotation never seen, for a task-keyed storage
)

// maxConflicts bounds how often one write re-reads an object after losing
// a race; each loss means another writer made progress.
const maxConflicts = 16

// opTimeout bounds one storage's write or delete. The storage client
// retries conditional requests on 429, 5xx and timeouts until its context
// ends; this turns a long outage into a transient failure that goes back
// to JetStream (redelivered with a delay) instead of a handler held forever.
const opTimeout = 60 * time.Second

// stateTimeout bounds one batch of state reads.
const stateTimeout = 10 * time.Second

// maxTaskObjectBytes bounds a task object read back for a rewrite.
const maxTaskObjectBytes = 64 << 20

// ClientFor returns the storage client of a target storage.
type ClientFor func(ctx context.Context, st *storages.Export) (*storage.Client, error)

// Exporter applies annotation events to target storages.
type Exporter struct {
	js      jetstream.JetStream
	exports func() []storages.Export
	client  ClientFor
	state   jetstream.KeyValue
	reads   *stateReads
	metrics *metrics.Metrics
	logger  *slog.Logger
	tracer  trace.Tracer
	// labelStudio, when set, is read by export sync (WithLabelStudio).
	labelStudio TaskLister
}

// Option configures an Exporter.
type Option func(*Exporter)

// WithTracer traces each event ("export", continuing the trace of the
// webhook request that stored it) and each write and delete (default: no
// tracing).
func WithTracer(t trace.Tracer) Option { return func(x *Exporter) { x.tracer = t } }

// New builds an Exporter, creating the state bucket if it is missing.
// exports returns the export storages in force; it is called once per event.
func New(ctx context.Context, js jetstream.JetStream, exports func() []storages.Export, client ClientFor, m *metrics.Metrics, logger *slog.Logger, opts ...Option) (*Exporter, error) {
	kv, err := taskbus.OpenKeyValue(ctx, js, jetstream.KeyValueConfig{
		Bucket:      StateBucket,
		Description: "labelsync exporter: each annotation's task, and its tombstone once deleted",
		Storage:     jetstream.FileStorage,
	})
	if err != nil {
		return nil, fmt.Errorf("export: state bucket %s: %w", StateBucket, err)
	}
	x := &Exporter{js: js, exports: exports, client: client, state: kv, reads: newStateReads(js.Conn(), StateBucket, stateTimeout), metrics: m, logger: logger}
	for _, o := range opts {
		o(x)
	}
	return x, nil
}

// Targets returns the export storages of project.
func (x *Exporter) Targets(project int64) []storages.Export {
	var out []storages.Export
	for _, st := range x.exports() {
		if st.Project == project {
			out = append(out, st)
		}
	}
	return out
}

// Apply applies ev to every export storage of its project.
func (x *Exporter) Apply(ctx context.Context, ev annotation.Event) error {
	targets := x.Targets(ev.Project)
	if len(targets) == 0 {
		x.count(opSkip, outcomeNoStorage)
		return nil
	}
	_, err := x.ApplyTo(ctx, ev, targets)
	return err
}

// ApplyTo applies ev to the given storages only (export sync) and returns
// how many objects it wrote or deleted.
func (x *Exporter) ApplyTo(ctx context.Context, ev annotation.Event, targets []storages.Export) (int, error) {
	if ev.Action == annotation.Deleted {
		return x.remove(ctx, ev, targets)
	}
	return x.write(ctx, ev, targets)
}

// state is what labelsync_export_state holds for one annotation.
type state struct {
	Task    int64 `json:"task,omitempty"`
	Deleted bool  `json:"deleted,omitempty"`
}

func stateKey(project, id int64) string {
	return strconv.FormatInt(project, 10) + "." + strconv.FormatInt(id, 10)
}

// getState reads an annotation's state and its revision (0: none),
// batched with the reads of other events in hand (stateReads).
func (x *Exporter) getState(ev annotation.Event) (state, uint64, error) {
	return x.reads.get(stateKey(ev.Project, ev.AnnotationID))
}

// updateState changes an annotation's state with f, compare-and-set on its
// revision, and returns the state stored.
func (x *Exporter) updateState(ctx context.Context, ev annotation.Event, f func(*state) bool) (state, error) {
	key := stateKey(ev.Project, ev.AnnotationID)
	for range maxConflicts {
		s, rev, err := x.getState(ev)
		if err != nil {
			return state{}, err
		}
		if !f(&s) {
			return s, nil
		}
		value, _ := json.Marshal(s)
		if rev == 0 {
			_, err = x.state.Create(ctx, key, value)
		} else {
			_, err = x.state.Update(ctx, key, value, rev)
		}
		switch {
		case err == nil:
			return s, nil
		case errors.Is(err, jetstream.ErrKeyExists):
			continue // someone else changed it: read again
		default:
			var apiErr *jetstream.APIError
			if errors.As(err, &apiErr) && (apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence || apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequenceConstant) {
				continue
			}
			return state{}, fault.Transient(fault.Unavailable, fmt.Errorf("export: annotation %d state: %w", ev.AnnotationID, err))
		}
	}
	return state{}, fault.Transient(fault.Unavailable, fmt.Errorf("export: annotation %d state kept changing", ev.AnnotationID))
}

func taskKeyed(targets []storages.Export) bool {
	for _, t := range targets {
		if t.ObjectKey == storages.TaskObjectKey {
			return true
		}
	}
	return false
}

// write applies a create or update.
//
// A delete must not be undone by a write, and which read of the
// annotation's state prevents it depends on the storages: one that may
// delete objects has the object removed again if the state says deleted
// after the write (a delete that came in while we wrote removed the
// objects before ours landed); one that may not is not written once the
// state says deleted, and a task-keyed one needs the state anyway, to
// record the annotation's task. Most events so need one read of the state,
// not two: BenchmarkExportWrite's storage, which may delete, reads only
// after the write.
func (x *Exporter) write(ctx context.Context, ev annotation.Event, targets []storages.Export) (int, error) {
	before, after := taskKeyed(targets), false
	for i := range targets {
		before = before || !targets[i].CanDeleteObjects
		after = after || targets[i].CanDeleteObjects
	}
	if before {
		s, err := x.updateState(ctx, ev, func(s *state) bool {
			// The task of an annotation is needed to find its task object
			// when it is deleted (a delete names the annotation only).
			if s.Deleted || s.Task != 0 || ev.TaskID == 0 || !taskKeyed(targets) {
				return false
			}
			s.Task = ev.TaskID
			return true
		})
		if err != nil {
			return 0, err
		}
		if s.Deleted {
			for range targets {
				x.count(opSkip, outcomeDeleted)
			}
			return 0, nil
		}
	}
	var first error
	n := 0
	for i := range targets {
		wctx, span := x.span(ctx, "write", &targets[i])
		wrote, err := x.writeOne(wctx, ev, &targets[i])
		if span.IsRecording() {
			span.SetAttributes(attribute.Bool("written", wrote))
		}
		tracing.End(span, err)
		if err != nil {
			x.count(opWrite, outcomeError)
			// The others are still tried: a retry finds them done.
			first = cmpErr(first, fmt.Errorf("export: storage %d gs://%s: annotation %d: %w", targets[i].ID, targets[i].Bucket, ev.AnnotationID, err))
		}
		if wrote {
			n++
		}
	}
	if first != nil || !after {
		return n, first
	}
	s, _, err := x.getState(ev)
	if err != nil {
		return n, err
	}
	if s.Deleted {
		_, err := x.remove(ctx, annotation.Event{Action: annotation.Deleted, Project: ev.Project, AnnotationID: ev.AnnotationID}, targets)
		return 0, err
	}
	return n, nil
}

// cmpErr keeps the first error, but a transient one over a permanent one:
// the event must be retried if any storage may still succeed.
func cmpErr(first, err error) error {
	if first == nil || (fault.IsPermanent(first) && !fault.IsPermanent(err)) {
		return err
	}
	return first
}

// writeOne writes ev to one storage and reports whether it wrote.
func (x *Exporter) writeOne(ctx context.Context, ev annotation.Event, st *storages.Export) (bool, error) {
	ctx, cancel := context.WithTimeout(ctx, opTimeout)
	defer cancel()
	c, err := x.client(ctx, st)
	if err != nil {
		return false, err
	}
	if st.ObjectKey == storages.TaskObjectKey {
		return x.writeTask(ctx, c, ev, st)
	}
	name := ObjectName(st, ev.AnnotationID, ev.TaskID)
	body, err := AnnotationBody(ev)
	if err != nil {
		return false, err
	}
	md := map[string]string{
		mdUpdatedAt:    ev.UpdatedAt.UTC().Format(time.RFC3339Nano),
		mdAnnotationID: strconv.FormatInt(ev.AnnotationID, 10),
	}
	var gen int64 // guess: the object does not exist yet
	for range maxConflicts {
		_, err := gcs.Put(ctx, bucketOf(c, st), name, body, "application/json", md, gen)
		if err == nil {
			x.count(opWrite, outcomeOK)
			return true, nil
		}
		if !errors.Is(err, gcs.ErrPrecondition) {
			return false, gcs.Fault(err)
		}
		cur, curMD, err := gcs.Stat(ctx, bucketOf(c, st), name)
		switch {
		case errors.Is(err, gcs.ErrNotFound):
			gen = 0
			continue
		case err != nil:
			return false, gcs.Fault(err)
		}
		if !newer(ev.UpdatedAt, curMD[mdUpdatedAt]) {
			x.count(opSkip, outcomeStale)
			return false, nil
		}
		gen = cur
	}
	return false, fault.Transient(fault.Unavailable, fmt.Errorf("gs://%s/%s kept changing", st.Bucket, name))
}

// newer reports whether updated is newer than the updated_at an object
// records. An object without one (written by someone else) is older.
func newer(updated time.Time, recorded string) bool {
	t, err := time.Parse(time.RFC3339Nano, recorded)
	return err != nil || updated.After(t)
}

// remove applies a delete: tombstone first, then the objects.
func (x *Exporter) remove(ctx context.Context, ev annotation.Event, targets []storages.Export) (int, error) {
	s, err := x.updateState(ctx, ev, func(s *state) bool {
		if s.Deleted {
			return false
		}
		s.Deleted = true
		return true
	})
	if err != nil {
		return 0, err
	}
	var first error
	n := 0
	for i := range targets {
		st := &targets[i]
		if !st.CanDeleteObjects {
			x.count(opSkip, outcomeNotAllowed)
			continue
		}
		dctx, span := x.span(ctx, "delete", st)
		err := x.removeOne(dctx, ev, s.Task, st)
		tracing.End(span, err)
		if err != nil {
			x.count(opDelete, outcomeError)
			first = cmpErr(first, fmt.Errorf("export: storage %d gs://%s: delete annotation %d: %w", st.ID, st.Bucket, ev.AnnotationID, err))
			continue
		}
		n++
	}
	return n, first
}

func (x *Exporter) removeOne(ctx context.Context, ev annotation.Event, task int64, st *storages.Export) error {
	ctx, cancel := context.WithTimeout(ctx, opTimeout)
	defer cancel()
	c, err := x.client(ctx, st)
	if err != nil {
		return err
	}
	if st.ObjectKey == storages.TaskObjectKey {
		if task == 0 {
			x.count(opSkip, outcomeUnknown)
			return nil
		}
		return x.removeFromTask(ctx, c, ev, task, st)
	}
	if err := gcs.Remove(ctx, bucketOf(c, st), ObjectName(st, ev.AnnotationID, 0), 0); err != nil {
		return gcs.Fault(err)
	}
	x.count(opDelete, outcomeOK)
	return nil
}

// ObjectName is the object an annotation (or, with object_key
// "{task_id}.json", its task) is written to: the storage's prefix with one
// trailing "/" removed, "/", and the rendered object_key.
func ObjectName(st *storages.Export, annotationID, taskID int64) string {
	var name string
	switch st.ObjectKey {
	case storages.TaskObjectKey:
		name = strconv.FormatInt(taskID, 10) + ".json"
	case storages.AnnotationJSONObjectKey:
		name = strconv.FormatInt(annotationID, 10) + ".json"
	default:
		name = strconv.FormatInt(annotationID, 10)
	}
	prefix := strings.TrimSuffix(st.Prefix, "/")
	if prefix == "" {
		return name
	}
	return prefix + "/" + name
}

func (x *Exporter) count(op, outcome string) {
	x.metrics.ExportOps.WithLabelValues(op, outcome).Inc()
}

// bucketOf is the storage's bucket, billed to its google_project_id when it
// has one (requester-pays buckets).
func bucketOf(c *storage.Client, st *storages.Export) *storage.BucketHandle {
	return gcs.Bucket(c, st.Bucket, st.GoogleProjectID)
}

// span starts the span of one write or delete on st.
func (x *Exporter) span(ctx context.Context, name string, st *storages.Export) (context.Context, trace.Span) {
	ctx, span := tracing.Start(ctx, x.tracer, name, trace.SpanKindInternal)
	if span.IsRecording() {
		span.SetAttributes(attribute.Int64("labelsync.storage_id", st.ID), attribute.String("gcs.bucket", st.Bucket))
	}
	return ctx, span
}
