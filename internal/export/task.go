package export

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"time"

	"cloud.google.com/go/storage"

	"github.com/labelsync/labelsync/internal/annotation"
	"github.com/labelsync/labelsync/internal/fault"
	"github.com/labelsync/labelsync/internal/gcs"
	"github.com/labelsync/labelsync/internal/storages"
)

// Object bodies are built from the JSON Label Studio sent, member by member
// (json.RawMessage), so numbers and nested values keep their exact text.

// annotationBody is an annotation object's body: the annotation's fields
// plus "task", the task without its annotations (SPEC §3). Without a task
// object in the event, the annotation's own "task" member (its id) stays.
func annotationBody(ev annotation.Event) ([]byte, error) {
	ann, err := members(ev.Annotation, "annotation")
	if err != nil {
		return nil, err
	}
	if task := taskWithout(ev.Task); task != nil {
		ann["task"] = task
	}
	return json.Marshal(ann)
}

// taskWithout returns the task object without its annotations, or nil when
// the event carries no task object.
func taskWithout(task json.RawMessage) json.RawMessage {
	t, err := members(task, "task")
	if err != nil || t == nil {
		return nil
	}
	delete(t, "annotations")
	out, _ := json.Marshal(t)
	return out
}

// members splits a JSON object into its members; nil for null or absent.
func members(raw json.RawMessage, what string) (map[string]json.RawMessage, error) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || bytes.Equal(raw, []byte("null")) || raw[0] != '{' {
		if what == "annotation" {
			return nil, fault.Permanent(fault.BadInput, fmt.Errorf("export: the %s is not a JSON object", what))
		}
		return nil, nil
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal(raw, &m); err != nil {
		return nil, fault.Permanent(fault.BadInput, fmt.Errorf("export: the %s: %w", what, err))
	}
	return m, nil
}

// taskDoc is a task object: the task's members, with "annotations" apart.
type taskDoc struct {
	task        map[string]json.RawMessage
	annotations []json.RawMessage
}

func readTaskDoc(body []byte) (*taskDoc, error) {
	m, err := members(body, "task")
	if err != nil {
		return nil, err
	}
	if m == nil {
		return nil, fault.Permanent(fault.BadInput, errors.New("export: the task object in the bucket is not a JSON object"))
	}
	d := &taskDoc{task: m}
	if raw, ok := m["annotations"]; ok {
		if err := json.Unmarshal(raw, &d.annotations); err != nil {
			return nil, fault.Permanent(fault.BadInput, fmt.Errorf("export: the task object's annotations: %w", err))
		}
		delete(m, "annotations")
	}
	return d, nil
}

func (d *taskDoc) body() []byte {
	out := make(map[string]json.RawMessage, len(d.task)+1)
	for k, v := range d.task {
		out[k] = v
	}
	anns := d.annotations
	if anns == nil {
		anns = []json.RawMessage{}
	}
	out["annotations"], _ = json.Marshal(anns)
	b, _ := json.Marshal(out)
	return b
}

func annotationID(raw json.RawMessage) int64 {
	var a struct {
		ID int64 `json:"id"`
	}
	_ = json.Unmarshal(raw, &a)
	return a.ID
}

// find returns the index of annotation id and its updated_at.
func (d *taskDoc) find(id int64) (int, time.Time) {
	for i, raw := range d.annotations {
		var a struct {
			ID        int64     `json:"id"`
			UpdatedAt time.Time `json:"updated_at"`
		}
		if json.Unmarshal(raw, &a) == nil && a.ID == id {
			return i, a.UpdatedAt
		}
	}
	return -1, time.Time{}
}

// writeTask puts ev's annotation into its task object: read, merge, write
// conditioned on the generation read.
func (x *Exporter) writeTask(ctx context.Context, c *storage.Client, ev annotation.Event, st *storages.Export) (bool, error) {
	if ev.TaskID == 0 {
		return false, fault.Permanent(fault.BadInput, fmt.Errorf("export: annotation %d names no task, and storage %d writes {task_id}.json", ev.AnnotationID, st.ID))
	}
	name := ObjectName(st, ev.AnnotationID, ev.TaskID)
	for range maxConflicts {
		body, gen, err := gcs.Get(ctx, bucketOf(c, st), name, maxTaskObjectBytes)
		var d *taskDoc
		switch {
		case errors.Is(err, gcs.ErrNotFound):
			d = &taskDoc{task: map[string]json.RawMessage{"id": json.RawMessage(strconv.FormatInt(ev.TaskID, 10))}}
			gen = 0
		case err != nil:
			return false, gcs.Fault(err)
		default:
			if d, err = readTaskDoc(body); err != nil {
				return false, err
			}
		}
		i, updated := d.find(ev.AnnotationID)
		if i >= 0 && !ev.UpdatedAt.After(updated) {
			x.count(opSkip, outcomeStale)
			return false, nil
		}
		if t, _ := members(taskWithout(ev.Task), "task"); t != nil {
			d.task = t
		}
		ann := compact(ev.Annotation)
		if i >= 0 {
			d.annotations[i] = ann
		} else {
			// In id order, so the object does not depend on arrival order.
			at := len(d.annotations)
			for j, raw := range d.annotations {
				if annotationID(raw) > ev.AnnotationID {
					at = j
					break
				}
			}
			d.annotations = slices.Insert(d.annotations, at, ann)
		}
		_, err = gcs.Put(ctx, bucketOf(c, st), name, d.body(), "application/json", nil, gen)
		switch {
		case err == nil:
			x.count(opWrite, outcomeOK)
			return true, nil
		case !errors.Is(err, gcs.ErrPrecondition):
			return false, gcs.Fault(err)
		}
	}
	return false, fault.Transient(fault.Unavailable, fmt.Errorf("gs://%s/%s kept changing", st.Bucket, name))
}

// removeFromTask takes an annotation out of its task object, and removes
// the object when no annotation is left.
func (x *Exporter) removeFromTask(ctx context.Context, c *storage.Client, ev annotation.Event, task int64, st *storages.Export) error {
	name := ObjectName(st, ev.AnnotationID, task)
	for range maxConflicts {
		body, gen, err := gcs.Get(ctx, bucketOf(c, st), name, maxTaskObjectBytes)
		if errors.Is(err, gcs.ErrNotFound) {
			x.count(opDelete, outcomeOK)
			return nil
		}
		if err != nil {
			return gcs.Fault(err)
		}
		d, err := readTaskDoc(body)
		if err != nil {
			return err
		}
		i, _ := d.find(ev.AnnotationID)
		if i < 0 {
			x.count(opDelete, outcomeOK)
			return nil
		}
		d.annotations = append(d.annotations[:i], d.annotations[i+1:]...)
		if len(d.annotations) == 0 {
			err = gcs.Remove(ctx, bucketOf(c, st), name, gen)
		} else {
			_, err = gcs.Put(ctx, bucketOf(c, st), name, d.body(), "application/json", nil, gen)
		}
		switch {
		case err == nil:
			x.count(opDelete, outcomeOK)
			return nil
		case !errors.Is(err, gcs.ErrPrecondition):
			return gcs.Fault(err)
		}
	}
	return fault.Transient(fault.Unavailable, fmt.Errorf("gs://%s/%s kept changing", st.Bucket, name))
}

func compact(raw json.RawMessage) json.RawMessage {
	var b bytes.Buffer
	if json.Compact(&b, raw) != nil {
		return raw
	}
	return b.Bytes()
}
