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

	"github.com/labelsync/labelsync/internal/fault"
	"github.com/labelsync/labelsync/internal/metrics"
	"github.com/labelsync/labelsync/internal/storages"
	"github.com/labelsync/labelsync/internal/taskbus"
	"github.com/labelsync/labelsync/internal/taskfile"
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
	RowHeads(ctx context.Context, k taskbus.Key) (map[int]taskbus.RowHead, error)
	RowHead(ctx context.Context, k taskbus.Key, row int) (taskbus.RowHead, error)
	NewRows(done func(taskbus.RowEntry, error)) *taskbus.Rows
	DeadLetter(ctx context.Context, l taskbus.Letter) error
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
func (p *Pipeline) applyTasks(ctx context.Context, st *storages.Import, obj Object, o Observation, counts *Counts) (string, error) {
	if p.reader == nil || p.rows == nil {
		return "", fault.Permanent(fmt.Errorf("ingest: storage %d: the Tasks import method is not configured: %w", st.ID, ErrUnsupported))
	}
	if _, err := taskfile.FormatOf(obj.Key); err != nil {
		return "", fault.Permanent(fmt.Errorf("ingest: gs://%s/%s: %w: %w", obj.Bucket, obj.Key, err, ErrUnsupported))
	}
	key := taskbus.Key{Project: st.Project, Storage: st.ID, Object: obj.Key}
	head, err := p.ledger.Head(ctx, key)
	if err != nil {
		return "", err
	}
	for range maxConflicts {
		d := Decide(head, o)
		if d.Kind == "" {
			return d.Outcome, nil
		}
		if d.Kind == taskbus.Tombstone {
			if retry, err := p.appendAt(ctx, taskbus.Entry{Key: key, Kind: d.Kind, Generation: o.Generation}, &head); retry {
				continue
			} else if err != nil {
				return "", err
			}
			return d.Outcome, nil
		}
		if err := p.hook(ctx, "head"); err != nil {
			return "", err
		}
		rows, emitted, err := p.applyRows(ctx, st, obj, key, d.Kind, o, counts)
		if errors.Is(err, ErrGone) {
			return metrics.OutcomeStale, nil
		}
		if err != nil {
			return "", err
		}
		if err := p.hook(ctx, "append"); err != nil {
			return "", err
		}
		body, _ := json.Marshal(fileRecord{Rows: rows})
		if retry, err := p.appendAt(ctx, taskbus.Entry{Key: key, Kind: d.Kind, Generation: o.Generation, Ledger: true, Body: body}, &head); retry {
			continue
		} else if err != nil {
			return "", err
		}
		if err := p.hook(ctx, "appended"); err != nil {
			return "", err
		}
		if emitted == 0 {
			// A new generation with the same records: nothing to tell.
			return metrics.OutcomeDuplicate, nil
		}
		return metrics.OutcomeEmitted, nil
	}
	return "", fmt.Errorf("ingest: storage %d key %q: ledger head kept moving", st.ID, obj.Key)
}

// applyRows appends the row events of one file-level decision and returns
// the file's record count and how many row events were appended.
func (p *Pipeline) applyRows(ctx context.Context, st *storages.Import, obj Object, key taskbus.Key, kind taskbus.Kind, o Observation, counts *Counts) (int, int, error) {
	heads, err := p.rows.RowHeads(ctx, key)
	if err != nil {
		return 0, 0, err
	}
	project := strconv.FormatInt(st.Project, 10)
	emitted := 0
	var conflicts []taskbus.RowEntry
	batch := p.rows.NewRows(func(e taskbus.RowEntry, err error) {
		switch {
		case err == nil:
			emitted++
			p.metrics.TasksEmitted.WithLabelValues(project, string(e.Kind)).Inc()
			counts.add(e.Kind)
		case errors.Is(err, taskbus.ErrConflict):
			conflicts = append(conflicts, e)
		}
	})
	var firstErr error
	add := func(e taskbus.RowEntry) bool {
		if err := batch.Add(ctx, e); err != nil {
			firstErr = err
			return false
		}
		return true
	}
	event := func(k taskbus.Kind, row int, task json.RawMessage) *taskbus.Event {
		r := row
		ev := &taskbus.Event{
			Event: k, TaskID: taskbus.TaskID(st.ID, obj.Key, &r), Project: st.Project, StorageID: st.ID,
			Bucket: obj.Bucket, Key: obj.Key, Generation: strconv.FormatInt(o.Generation, 10), RowIndex: &r,
			Source: o.Source, EventTime: o.EventTime.UTC().Format(time.RFC3339Nano),
		}
		if k != taskbus.Deleted {
			ev.Task = task
		}
		return ev
	}
	deleteRow := func(row int, h taskbus.RowHead) bool {
		return add(taskbus.RowEntry{Key: key, Row: row, Kind: taskbus.Deleted, Generation: o.Generation, Event: event(taskbus.Deleted, row, nil), Expect: h.Seq})
	}

	rows := 0
	if kind == taskbus.Deleted {
		for row, h := range heads {
			if h.Live() && !deleteRow(row, h) {
				break
			}
		}
	} else {
		var badRows []taskbus.Letter
		err := p.reader.Records(ctx, st, obj, o.Generation, func(r taskfile.Record) bool {
			rows = r.Row + 1
			if r.Err != nil {
				row := r.Row
				badRows = append(badRows, taskbus.Letter{
					Reason: fmt.Sprintf("gs://%s/%s generation %d row %d: %v", obj.Bucket, obj.Key, o.Generation, r.Row, r.Err),
					Code:   "bad_record", Component: "worker",
					Source: taskbus.Source{Bucket: obj.Bucket, Key: obj.Key, Generation: strconv.FormatInt(o.Generation, 10), Row: &row},
					Data:   r.Raw,
				})
				return true
			}
			hash := rowHash(r.Task)
			h, seen := heads[r.Row]
			delete(heads, r.Row)
			switch {
			case seen && h.Generation == o.Generation:
				return true // done by an earlier attempt at this generation
			case seen && h.Live() && h.Hash == hash:
				return true // unchanged
			case seen && h.Live():
				return add(taskbus.RowEntry{Key: key, Row: r.Row, Kind: taskbus.Updated, Generation: o.Generation, Hash: hash, Event: event(taskbus.Updated, r.Row, r.Task), Expect: h.Seq})
			default:
				return add(taskbus.RowEntry{Key: key, Row: r.Row, Kind: taskbus.Created, Generation: o.Generation, Hash: hash, Event: event(taskbus.Created, r.Row, r.Task), Expect: h.Seq})
			}
		})
		if err != nil {
			return 0, 0, err
		}
		if firstErr == nil {
			// Rows the new generation no longer has.
			for row, h := range heads {
				if row >= rows && h.Live() && h.Generation != o.Generation && !deleteRow(row, h) {
					break
				}
			}
		}
		for _, l := range badRows {
			if err := p.rows.DeadLetter(ctx, l); err != nil {
				return 0, 0, err
			}
			p.metrics.DeadLetters.WithLabelValues("worker", l.Code).Inc()
		}
	}
	if firstErr != nil {
		return 0, 0, firstErr
	}
	if err := batch.Wait(ctx); err != nil {
		return 0, 0, err
	}
	// A conflicting row was appended by someone else since the heads were
	// read (a concurrent or crashed attempt). If it already holds this
	// generation the work is done; otherwise retry the whole file.
	for _, e := range conflicts {
		h, err := p.rows.RowHead(ctx, e.Key, e.Row)
		if err != nil {
			return 0, 0, err
		}
		if h.Generation != o.Generation {
			return 0, 0, fmt.Errorf("ingest: gs://%s/%s row %d changed under us: %w", obj.Bucket, obj.Key, e.Row, taskbus.ErrConflict)
		}
	}
	return rows, emitted, nil
}

func rowHash(task []byte) string {
	sum := sha256.Sum256(task)
	return hex.EncodeToString(sum[:12])
}
