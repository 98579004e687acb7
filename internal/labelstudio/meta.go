package labelstudio

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/labelsync/labelsync/internal/fault"
)

// Meta is what labelsync writes into a task's meta (SPEC §8): its own ids,
// so that a task in Label Studio can be traced back to its object and
// found again after a lost answer.
type Meta struct {
	LabelsyncTaskID string `json:"labelsync_task_id"`
	StorageID       int64  `json:"storage_id"`
	Bucket          string `json:"bucket"`
	Key             string `json:"key"`
	Generation      string `json:"generation"`
	RowIndex        *int   `json:"row_index"`
}

// ImportTask is the task object to import: task (a task event's "task":
// an object with a "data" object, and perhaps "annotations", "predictions"
// or "meta") with labelsync's ids merged into its meta. A task that is not
// such an object is a permanent fault.BadInput.
func ImportTask(task json.RawMessage, m Meta) ([]byte, error) {
	if out, ok := appendMeta(task, m); ok {
		return out, nil
	}
	fields, err := taskFields(task)
	if err != nil {
		return nil, err
	}
	if fields["meta"], err = mergeMeta(fields["meta"], m); err != nil {
		return nil, err
	}
	return json.Marshal(fields)
}

// TaskUpdate is the body of the PATCH that applies an updated task event:
// the new "data" and the meta with the new generation.
func TaskUpdate(task json.RawMessage, m Meta) ([]byte, error) {
	fields, err := taskFields(task)
	if err != nil {
		return nil, err
	}
	meta, err := mergeMeta(fields["meta"], m)
	if err != nil {
		return nil, err
	}
	return json.Marshal(map[string]json.RawMessage{"data": fields["data"], "meta": meta})
}

// appendMeta is ImportTask for the common task, {"data":{…}…} without a
// "meta" anywhere: meta is appended as the last member, without decoding
// the task (a fifth of the connector's CPU per task otherwise). It reports
// false for anything else, which the general path handles.
func appendMeta(task json.RawMessage, m Meta) ([]byte, bool) {
	task = bytes.TrimSpace(task)
	if !bytes.HasPrefix(task, []byte(`{"data":{`)) || task[len(task)-1] != '}' || bytes.Contains(task, []byte(`"meta"`)) || !json.Valid(task) {
		return nil, false
	}
	meta, err := json.Marshal(m)
	if err != nil {
		return nil, false
	}
	out := make([]byte, 0, len(task)+len(meta)+9)
	out = append(out, task[:len(task)-1]...)
	out = append(out, `,"meta":`...)
	out = append(out, meta...)
	return append(out, '}'), true
}

func taskFields(task json.RawMessage) (map[string]json.RawMessage, error) {
	var fields map[string]json.RawMessage
	if err := json.Unmarshal(task, &fields); err != nil || fields == nil {
		return nil, fault.Permanent(fault.BadInput, errors.New(`labelstudio: the event's task is not a JSON object`))
	}
	data := bytes.TrimSpace(fields["data"])
	if len(data) == 0 || data[0] != '{' {
		return nil, fault.Permanent(fault.BadInput, errors.New(`labelstudio: the event's task has no "data" object`))
	}
	return fields, nil
}

// mergeMeta sets labelsync's keys in the task's own meta (an object, or
// absent), keeping the others.
func mergeMeta(own json.RawMessage, m Meta) (json.RawMessage, error) {
	merged := map[string]json.RawMessage{}
	if own = bytes.TrimSpace(own); len(own) > 0 && !bytes.Equal(own, []byte("null")) {
		if err := json.Unmarshal(own, &merged); err != nil {
			return nil, fault.Permanent(fault.BadInput, fmt.Errorf(`labelstudio: the task's "meta" is not a JSON object: %w`, err))
		}
	}
	ours, _ := json.Marshal(m)
	var add map[string]json.RawMessage
	_ = json.Unmarshal(ours, &add)
	for k, v := range add {
		merged[k] = v
	}
	out, err := json.Marshal(merged)
	if err != nil {
		return nil, fault.Permanent(fault.BadInput, fmt.Errorf("labelstudio: meta: %w", err))
	}
	return out, nil
}
