// Package ingest turns what labelsync learns about bucket objects — GCS
// notifications and sync listings — into task events on JetStream, exactly
// once per (storage, key, generation).
//
// Delivery semantics: Apply returns only after JetStream has acknowledged
// every event it appended, so the caller may acknowledge its input when Apply
// returns nil. Any error means "not done": a transient one should be retried
// and the input redelivered; a permanent one (fault.IsPermanent) should go to
// the dead-letter stream. Re-running Apply for the same input, after a crash
// between any two of its steps, appends nothing twice: each append is
// conditioned on the key's ledger head (see package taskbus).
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

	"github.com/labelsync/labelsync/internal/jsonstr"
	"github.com/labelsync/labelsync/internal/metrics"
	"github.com/labelsync/labelsync/internal/storages"
	"github.com/labelsync/labelsync/internal/taskbus"
)

// ledger is the part of taskbus.Bus the pipeline needs.
type ledger interface {
	Head(ctx context.Context, k taskbus.Key) (taskbus.Head, error)
	Append(ctx context.Context, e taskbus.Entry, expect uint64) (taskbus.Result, error)
}

// ErrUnsupported marks input labelsync cannot import (a file type, an
// import method); it is permanent.
var ErrUnsupported = errors.New("ingest: unsupported")

// maxConflicts bounds how often one observation re-reads a key's head after
// losing a race. Each loss means another writer made progress on the key,
// so hitting the bound means heavy contention: retry later.
const maxConflicts = 16

// Pipeline applies observations to the ledger.
type Pipeline struct {
	ledger  ledger
	metrics *metrics.Metrics
	logger  *slog.Logger
	// step, when set, is called between the pipeline's steps; an error
	// aborts there as a crash would. Tests use it to prove recovery.
	step func(ctx context.Context, name string) error

	// Tasks mode; nil until WithTasks.
	reader recordReader
	rows   rowLedger
}

// Option configures a Pipeline.
type Option func(*Pipeline)

// WithStepHook installs a hook called between steps: "head" (before reading
// a key's head), "append" (before appending), "appended" (after JetStream
// acknowledged, before the caller can ack its input). For crash tests.
func WithStepHook(f func(ctx context.Context, name string) error) Option {
	return func(p *Pipeline) { p.step = f }
}

// New builds a pipeline.
func New(l ledger, m *metrics.Metrics, logger *slog.Logger, opts ...Option) *Pipeline {
	p := &Pipeline{ledger: l, metrics: m, logger: logger}
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
// event SPEC §2 defines, if any, and returns the outcome to count (one of the
// metrics.Outcome* values).
//
// counts, if not nil, is incremented for every task event appended.
func (p *Pipeline) Apply(ctx context.Context, st *storages.Import, obj Object, o Observation, counts *Counts) (string, error) {
	if !st.UseBlobURLs {
		return p.applyTasks(ctx, st, obj, o, counts)
	}
	key := taskbus.Key{Project: st.Project, Storage: st.ID, Object: obj.Key}

	// A plain FINALIZE is almost always a new key: guess an empty head and
	// let the conditional append correct the guess, so that the common case
	// costs one JetStream round trip. Anything else reads the head first.
	var head taskbus.Head
	if !o.Present || o.Overwrite || (o.Source != SourceNotification && !o.AssumeNew) {
		if err := p.hook(ctx, "head"); err != nil {
			return "", err
		}
		var err error
		if head, err = p.ledger.Head(ctx, key); err != nil {
			return "", err
		}
	}
	for range maxConflicts {
		d := Decide(head, o)
		if d.Kind == "" {
			return d.Outcome, nil
		}
		if err := p.hook(ctx, "append"); err != nil {
			return "", err
		}
		entry, err := p.entry(st, obj, key, d.Kind, o)
		if err != nil {
			return "", err
		}
		if retry, err := p.appendAt(ctx, entry, &head); retry {
			continue
		} else if err != nil {
			return "", err
		}
		if err := p.hook(ctx, "appended"); err != nil {
			return "", err
		}
		if d.Kind != taskbus.Tombstone {
			p.metrics.TasksEmitted.WithLabelValues(strconv.FormatInt(st.Project, 10), string(d.Kind)).Inc()
			counts.add(d.Kind)
		}
		return d.Outcome, nil
	}
	return "", fmt.Errorf("ingest: storage %d key %q: ledger head kept moving", st.ID, obj.Key)
}

// appendAt appends e conditioned on *head. When the head moved it re-reads
// it into *head and reports retry: the caller decides again.
func (p *Pipeline) appendAt(ctx context.Context, e taskbus.Entry, head *taskbus.Head) (retry bool, err error) {
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
func (p *Pipeline) entry(st *storages.Import, obj Object, key taskbus.Key, kind taskbus.Kind, o Observation) (taskbus.Entry, error) {
	e := taskbus.Entry{Key: key, Kind: kind, Generation: o.Generation}
	if kind == taskbus.Tombstone {
		return e, nil
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
	if kind != taskbus.Deleted {
		ev.Task = filesTask(st.DataKey, "gs://"+obj.Bucket+"/"+obj.Key)
	}
	e.Event = ev
	return e, nil
}

// Counts tallies the task events an Apply appended, for sync statistics.
// Safe for concurrent use; a nil *Counts counts nothing.
type Counts struct {
	Created, Updated, Deleted atomic.Int64
}

func (c *Counts) add(k taskbus.Kind) {
	if c == nil {
		return
	}
	switch k {
	case taskbus.Created:
		c.Created.Add(1)
	case taskbus.Updated:
		c.Updated.Add(1)
	case taskbus.Deleted:
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
