// Package ingest turns what labelsync learns about bucket objects — GCS
// notifications and sync listings — into task events on JetStream, exactly
// once per (storage, key, generation).
//
// Delivery semantics: Apply returns only after JetStream has acknowledged
// every event it appended and every dead letter it wrote, so the caller may
// acknowledge its input when Apply returns nil. A failure that concerns one
// object generation (or one record of it) for one storage and can never
// succeed is dead-lettered by Apply itself, once per (storage, key,
// generation, row), and reported as the outcome ledger.DeadLetter: the
// other storages and records go on. Any error Apply returns means "not
// done, retry": the input must be redelivered. Re-running Apply for the same
// input, after a crash between any two of its steps, appends nothing twice:
// each append is conditioned on the key's ledger head (see package taskbus).
//
// A Pipeline is safe for concurrent use; concurrent observations of one key
// are serialised by the ledger, not by locks.
package ingest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/trace"

	"github.com/labelsync/labelsync/internal/deadletter"
	"github.com/labelsync/labelsync/internal/fault"
	"github.com/labelsync/labelsync/internal/jsonstr"
	"github.com/labelsync/labelsync/internal/ledger"
	"github.com/labelsync/labelsync/internal/metrics"
	"github.com/labelsync/labelsync/internal/storages"
	"github.com/labelsync/labelsync/internal/taskbus"
)

// heads is the part of taskbus.Bus the pipeline needs for a key.
type heads interface {
	Head(ctx context.Context, k taskbus.Key) (ledger.Head, error)
	Append(ctx context.Context, e taskbus.Entry, expect uint64) (taskbus.Result, error)
}

// letters stores dead letters (a *deadletter.Writer).
type letters interface {
	Write(ctx context.Context, l deadletter.Letter) error
}

// maxConflicts bounds how often one observation re-reads a key's head after
// losing a race. Each loss means another writer made progress on the key,
// so hitting the bound means heavy contention: retry later.
const maxConflicts = 16

// Pipeline applies observations to the ledger.
type Pipeline struct {
	ledger  heads
	letters letters
	metrics *metrics.Metrics
	logger  *slog.Logger
	// step, when set, is called between the pipeline's steps; an error
	// aborts there as a crash would. Tests use it to prove recovery.
	step func(ctx context.Context, name string) error

	// Tasks mode; nil until WithTasks.
	reader recordReader
	rows   rowLedger

	tracer trace.Tracer // nil: no tracing
}

// Option configures a Pipeline.
type Option func(*Pipeline)

// WithStepHook installs a hook called between steps: "head" (before reading
// a key's head), "append" (before appending), "appended" (after JetStream
// acknowledged, before the caller can ack its input). For crash tests.
func WithStepHook(f func(ctx context.Context, name string) error) Option {
	return func(p *Pipeline) { p.step = f }
}

// WithTracer traces notifications, their storages' appends and the
// Tasks-mode reads (default: no tracing).
func WithTracer(t trace.Tracer) Option {
	return func(p *Pipeline) { p.tracer = t }
}

// New builds a pipeline that appends through l and dead-letters through d.
func New(l heads, d letters, m *metrics.Metrics, logger *slog.Logger, opts ...Option) *Pipeline {
	p := &Pipeline{ledger: l, letters: d, metrics: m, logger: logger}
	for _, o := range opts {
		o(p)
	}
	return p
}

// Object identifies the object an observation is about.
type Object struct {
	Bucket string
	Key    string
}

// Apply records one observation of obj for storage st, appending the task
// event SPEC §2 defines, if any, and returns the outcome to count. A
// permanent failure is dead-lettered here (see the package doc).
//
// counts, if not nil, is incremented for every task event appended.
func (p *Pipeline) Apply(ctx context.Context, st *storages.Import, obj Object, o ledger.Observation, counts *Counts) (ledger.Outcome, error) {
	var outcome ledger.Outcome
	var err error
	if st.UseBlobURLs {
		outcome, err = p.applyFiles(ctx, st, obj, o, counts)
	} else {
		outcome, err = p.applyTasks(ctx, st, obj, o, counts)
	}
	if err == nil || !fault.IsPermanent(err) {
		return outcome, err
	}
	l := deadletter.Letter{
		Reason: fmt.Sprintf("gs://%s/%s generation %d for storage %d: %v", obj.Bucket, obj.Key, o.Generation, st.ID, err),
		Code:   fault.CodeOf(err),
		Source: deadletter.Source{StorageID: st.ID, Bucket: obj.Bucket, Key: obj.Key, Generation: strconv.FormatInt(o.Generation, 10)},
	}
	if err := p.letters.Write(ctx, l); err != nil {
		return 0, err
	}
	return ledger.DeadLetter, nil
}

// applyFiles is Apply for the Files import method: one task per object.
func (p *Pipeline) applyFiles(ctx context.Context, st *storages.Import, obj Object, o ledger.Observation, counts *Counts) (ledger.Outcome, error) {
	key := taskbus.Key{Project: st.Project, Storage: st.ID, Object: obj.Key}
	// A plain FINALIZE is almost always a new key: guess an empty head and
	// let the conditional append correct the guess, so that the common case
	// costs one JetStream round trip. Anything else reads the head first.
	var head ledger.Head
	if !o.Present || o.Overwrite || (o.Source != ledger.SourceNotification && !o.AssumeNew) {
		if err := p.hook(ctx, "head"); err != nil {
			return 0, err
		}
		var err error
		if head, err = p.ledger.Head(ctx, key); err != nil {
			return 0, err
		}
	}
	for range maxConflicts {
		d := ledger.Decide(head, o)
		if d.Kind == "" {
			return d.Outcome, nil
		}
		if err := p.hook(ctx, "append"); err != nil {
			return 0, err
		}
		entry := p.entry(st, obj, key, d.Kind, o)
		if retry, err := p.appendAt(ctx, entry, &head); retry {
			continue
		} else if err != nil {
			return 0, err
		}
		if err := p.hook(ctx, "appended"); err != nil {
			return 0, err
		}
		if d.Kind != ledger.Tombstone {
			p.metrics.TasksEmitted.WithLabelValues(strconv.FormatInt(st.Project, 10), string(d.Kind)).Inc()
			counts.add(d.Kind)
		}
		return d.Outcome, nil
	}
	return 0, errHeadMoving(st, obj)
}

// errHeadMoving: the key's head kept moving. Each move means another
// writer made progress on the key; retry later.
func errHeadMoving(st *storages.Import, obj Object) error {
	return fault.Transient(fault.Unavailable, fmt.Errorf("ingest: storage %d key %q: ledger head kept moving", st.ID, obj.Key))
}

// appendAt appends e conditioned on *head. When the head moved it re-reads
// it into *head and reports retry: the caller decides again.
func (p *Pipeline) appendAt(ctx context.Context, e taskbus.Entry, head *ledger.Head) (retry bool, err error) {
	_, err = p.ledger.Append(ctx, e, head.Seq)
	if errors.Is(err, taskbus.ErrConflict) {
		*head, err = p.ledger.Head(ctx, e.Key)
		return err == nil, err
	}
	return false, err
}

func (p *Pipeline) hook(ctx context.Context, name string) error {
	if p.step == nil {
		return nil
	}
	return p.step(ctx, name)
}

// entry builds the ledger entry, with its task event, for a Files-mode key.
func (p *Pipeline) entry(st *storages.Import, obj Object, key taskbus.Key, kind ledger.Kind, o ledger.Observation) taskbus.Entry {
	e := taskbus.Entry{Key: key, Kind: kind, Generation: o.Generation}
	if kind == ledger.Tombstone {
		return e
	}
	ev := &taskbus.Event{
		Event:      kind,
		TaskID:     taskbus.TaskID(st.ID, obj.Key, nil),
		Project:    st.Project,
		StorageID:  st.ID,
		Bucket:     obj.Bucket,
		Key:        obj.Key,
		Generation: strconv.FormatInt(o.Generation, 10),
		Source:     o.Source,
		EventTime:  o.EventTime.UTC().Format(time.RFC3339Nano),
	}
	if kind != ledger.Deleted {
		ev.Task = filesTask(st.DataKey, "gs://"+obj.Bucket+"/"+obj.Key)
	}
	e.Event = ev
	return e
}

// Counts tallies the task events an Apply appended, for sync statistics.
// Safe for concurrent use; a nil *Counts counts nothing.
type Counts struct {
	Created, Updated, Deleted atomic.Int64
}

func (c *Counts) add(k ledger.Kind) {
	if c == nil {
		return
	}
	switch k {
	case ledger.Created:
		c.Created.Add(1)
	case ledger.Updated:
		c.Updated.Add(1)
	case ledger.Deleted:
		c.Deleted.Add(1)
	}
}

// filesTask is {"data": {dataKey: url}}, built without reflection: it is on
// every notification's path.
func filesTask(dataKey, url string) json.RawMessage {
	b := make([]byte, 0, len(dataKey)+len(url)+24)
	b = append(b, `{"data":{`...)
	b = jsonstr.Append(b, dataKey)
	b = append(b, ':')
	b = jsonstr.Append(b, url)
	return append(b, "}}"...)
}
