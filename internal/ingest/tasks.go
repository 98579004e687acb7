package ingest

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"

	"github.com/labelsync/labelsync/internal/deadletter"
	"github.com/labelsync/labelsync/internal/fault"
	"github.com/labelsync/labelsync/internal/ledger"
	"github.com/labelsync/labelsync/internal/storages"
	"github.com/labelsync/labelsync/internal/taskbus"
	"github.com/labelsync/labelsync/internal/taskfile"
	"github.com/labelsync/labelsync/internal/tracing"
)

// recordReader reads the records of one generation of a Tasks-mode file.
// Errors wrapping ErrGone mean that generation no longer exists.
type recordReader interface {
	Records(ctx context.Context, st *storages.Import, obj Object, generation int64, yield func(taskfile.Record) bool) error
}

// ErrGone means the generation to import no longer exists: a newer
// generation or a delete replaced it, and its own notification will follow.
var ErrGone = errors.New("ingest: generation no longer exists")

// rowLedger is what Tasks mode needs of the ledger beyond Head and Append.
type rowLedger interface {
	RowHeads(ctx context.Context, k taskbus.Key) (map[int]ledger.RowHead, error)
	RowHead(ctx context.Context, k taskbus.Key, row int) (ledger.RowHead, error)
	NewRows(done func(taskbus.RowEntry, error)) *taskbus.Rows
}

// WithTasks enables the Tasks import method (use_blob_urls false), reading
// files through r and appending row events through rl.
func WithTasks(r recordReader, rl rowLedger) Option {
	return func(p *Pipeline) { p.reader, p.rows = r, rl }
}

// fileRecord is the body of a Tasks-mode file's commit record.
type fileRecord struct {
	Rows int `json:"rows"`
}

// applyTasks imports one observation of a Tasks-mode file: every record
// becomes a row event (created, updated or deleted by row index against the
// rows the ledger holds), bad records are dead-lettered alone, and a
// ledger-only commit record conditioned on the file's head closes the
// generation. See package taskbus for why a crash before the commit is safe.
func (p *Pipeline) applyTasks(ctx context.Context, st *storages.Import, obj Object, o ledger.Observation, counts *Counts) (ledger.Outcome, error) {
	if p.reader == nil || p.rows == nil {
		return 0, fault.Permanent(fault.Unsupported, fmt.Errorf("ingest: storage %d: the Tasks import method is not configured", st.ID))
	}
	if _, err := taskfile.FormatOf(obj.Key); err != nil {
		return 0, fault.Permanent(fault.Unsupported, fmt.Errorf("ingest: gs://%s/%s: %w", obj.Bucket, obj.Key, err))
	}
	key := taskbus.Key{Project: st.Project, Storage: st.ID, Object: obj.Key}
	head, err := p.ledger.Head(ctx, key)
	if err != nil {
		return 0, err
	}
	for range maxConflicts {
		d := ledger.Decide(head, o)
		if d.Kind == "" {
			return d.Outcome, nil
		}
		if d.Kind == ledger.Tombstone {
			if retry, err := p.appendAt(ctx, taskbus.Entry{Key: key, Kind: d.Kind, Generation: o.Generation}, &head); retry {
				continue
			} else if err != nil {
				return 0, err
			}
			return d.Outcome, nil
		}
		if err := p.hook(ctx, "head"); err != nil {
			return 0, err
		}
		f, err := p.applyRows(ctx, st, obj, key, d.Kind, o, counts)
		if errors.Is(err, ErrGone) {
			return ledger.Stale, nil
		}
		if err != nil {
			return 0, err
		}
		if err := p.hook(ctx, "append"); err != nil {
			return 0, err
		}
		body, _ := json.Marshal(fileRecord{Rows: f.rows})
		if retry, err := p.appendAt(ctx, taskbus.Entry{Key: key, Kind: d.Kind, Generation: o.Generation, Ledger: true, Body: body}, &head); retry {
			continue
		} else if err != nil {
			return 0, err
		}
		if err := p.hook(ctx, "appended"); err != nil {
			return 0, err
		}
		switch {
		case f.lettered > 0:
			return ledger.DeadLetter, nil
		case f.emitted > 0:
			return ledger.Emitted, nil
		}
		// A new generation with the same records: nothing to tell.
		return ledger.Duplicate, nil
	}
	return 0, errHeadMoving(st, obj)
}

// fileImport is one attempt at one generation of a Tasks-mode file: the
// rows it appends, and the decision on each row's outcome.
type fileImport struct {
	p      *Pipeline
	st     *storages.Import
	obj    Object
	key    taskbus.Key
	o      ledger.Observation
	counts *Counts

	rows      int // records read (the next row index)
	emitted   int // row events JetStream acknowledged
	lettered  int // rows dead-lettered
	conflicts []int
	// err is the first failure that leaves the file not done (a row not
	// appended for a reason a retry may fix, a dead letter not stored).
	err error
}

// settled decides on every outcome a row append can have (see
// taskbus.NewRows): appended, lost a race, refused for good (that row
// alone is dead-lettered, the rest go on), or not appended (the file is
// retried; rows already appended are skipped then).
func (f *fileImport) settled(ctx context.Context, e taskbus.RowEntry, err error) {
	switch {
	case err == nil:
		f.emitted++
		f.p.metrics.TasksEmitted.WithLabelValues(strconv.FormatInt(f.st.Project, 10), string(e.Kind)).Inc()
		f.counts.add(e.Kind)
	case errors.Is(err, taskbus.ErrConflict):
		f.conflicts = append(f.conflicts, e.Row)
	case fault.IsPermanent(err):
		var data []byte
		if e.Event != nil {
			data = e.Event.Task
		}
		f.letter(ctx, e.Row, fault.CodeOf(err), fmt.Errorf("%s event: %w", e.Kind, err), data)
	case f.err == nil:
		f.err = err
	}
}

// letter dead-letters one row; the row keeps its previous task.
func (f *fileImport) letter(ctx context.Context, row int, code fault.Code, cause error, data []byte) {
	l := deadletter.Letter{
		Reason: fmt.Sprintf("gs://%s/%s generation %d row %d: %v", f.obj.Bucket, f.obj.Key, f.o.Generation, row, cause),
		Code:   code,
		Source: deadletter.Source{StorageID: f.st.ID, Bucket: f.obj.Bucket, Key: f.obj.Key, Generation: strconv.FormatInt(f.o.Generation, 10), Row: &row},
		Data:   data,
	}
	if err := f.p.letters.Write(ctx, l); err != nil {
		if f.err == nil {
			f.err = err
		}
		return
	}
	f.lettered++
}

// event builds a row's task event.
func (f *fileImport) event(k ledger.Kind, row int, task json.RawMessage) *taskbus.Event {
	ev := &taskbus.Event{
		Event: k, TaskID: taskbus.TaskID(f.st.ID, f.obj.Key, &row), Project: f.st.Project, StorageID: f.st.ID,
		Bucket: f.obj.Bucket, Key: f.obj.Key, Generation: strconv.FormatInt(f.o.Generation, 10), RowIndex: &row,
		Source: f.o.Source, EventTime: f.o.EventTime.UTC().Format(time.RFC3339Nano),
	}
	if k != ledger.Deleted {
		ev.Task = task
	}
	return ev
}

// applyRows appends the row events of one file-level decision. It returns
// an error when the file is not done: then nothing may be committed.
func (p *Pipeline) applyRows(ctx context.Context, st *storages.Import, obj Object, key taskbus.Key, kind ledger.Kind, o ledger.Observation, counts *Counts) (*fileImport, error) {
	heads, err := p.rows.RowHeads(ctx, key)
	if err != nil {
		return nil, err
	}
	f := &fileImport{p: p, st: st, obj: obj, key: key, o: o, counts: counts}
	batch := p.rows.NewRows(func(e taskbus.RowEntry, err error) { f.settled(ctx, e, err) })
	// add reports whether reading may go on.
	var batchErr error
	add := func(row int, k ledger.Kind, hash string, task json.RawMessage) bool {
		e := taskbus.RowEntry{Key: key, Row: row, Kind: k, Generation: o.Generation, Hash: hash, Event: f.event(k, row, task), Expect: heads[row].Seq}
		if err := batch.Add(ctx, e); err != nil {
			batchErr = err
		}
		return batchErr == nil && f.err == nil
	}
	if kind != ledger.Deleted {
		rctx, span := tracing.Start(ctx, p.tracer, "read", trace.SpanKindInternal)
		err := p.reader.Records(rctx, st, obj, o.Generation, func(r taskfile.Record) bool {
			f.rows = r.Row + 1
			if r.Err != nil {
				code := fault.BadRecord
				if errors.Is(r.Err, taskfile.ErrTooLarge) {
					code = fault.TooLarge
				}
				f.letter(ctx, r.Row, code, r.Err, r.Raw)
				return f.err == nil
			}
			hash := rowHash(r.Task)
			k := ledger.DecideRow(heads[r.Row], o.Generation, hash)
			return k == "" || add(r.Row, k, hash, r.Task)
		})
		if span.IsRecording() {
			span.SetAttributes(attribute.String("gcs.bucket", obj.Bucket), attribute.String("gcs.object", obj.Key),
				attribute.Int64("gcs.generation", o.Generation), attribute.Int64("rows", int64(f.rows)))
		}
		tracing.End(span, err)
		if err != nil {
			return nil, err
		}
	}
	if batchErr == nil && f.err == nil {
		for _, row := range ledger.VanishedRows(heads, f.rows) {
			if !add(row, ledger.Deleted, "", nil) {
				break
			}
		}
	}
	if batchErr != nil {
		return nil, batchErr
	}
	if err := batch.Wait(ctx); err != nil {
		return nil, err
	}
	if f.err != nil {
		return nil, f.err
	}
	// A conflicting row was appended by someone else since the heads were
	// read (a concurrent or crashed attempt). If it already holds this
	// generation the work is done; otherwise retry the whole file.
	for _, row := range f.conflicts {
		h, err := p.rows.RowHead(ctx, key, row)
		if err != nil {
			return nil, err
		}
		if h.Generation != o.Generation {
			return nil, fault.Transient(fault.Unavailable, fmt.Errorf("ingest: gs://%s/%s row %d changed under us: %w", obj.Bucket, obj.Key, row, taskbus.ErrConflict))
		}
	}
	return f, nil
}

func rowHash(task []byte) string {
	sum := sha256.Sum256(task)
	return hex.EncodeToString(sum[:12])
}
