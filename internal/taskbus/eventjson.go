package taskbus

import (
	"strconv"

	"github.com/labelsync/labelsync/internal/jsonstr"
)

// MarshalJSON writes the event without reflection: one is encoded per
// notification, and encoding/json's reflection was a visible share of it.
// The output is the same JSON encoding/json produces, minus its HTML
// escaping of <, > and &, which a JSON consumer does not need.
func (e *Event) MarshalJSON() ([]byte, error) {
	return e.AppendJSON(make([]byte, 0, 256+len(e.Key)+len(e.Task))), nil
}

// AppendJSON appends the event's JSON encoding to b.
func (e *Event) AppendJSON(b []byte) []byte {
	b = append(b, `{"event":`...)
	b = jsonstr.Append(b, string(e.Event))
	b = append(b, `,"task_id":`...)
	b = jsonstr.Append(b, e.TaskID)
	b = append(b, `,"project":`...)
	b = strconv.AppendInt(b, e.Project, 10)
	b = append(b, `,"storage_id":`...)
	b = strconv.AppendInt(b, e.StorageID, 10)
	b = append(b, `,"bucket":`...)
	b = jsonstr.Append(b, e.Bucket)
	b = append(b, `,"key":`...)
	b = jsonstr.Append(b, e.Key)
	b = append(b, `,"generation":`...)
	b = jsonstr.Append(b, e.Generation)
	b = append(b, `,"row_index":`...)
	if e.RowIndex == nil {
		b = append(b, "null"...)
	} else {
		b = strconv.AppendInt(b, int64(*e.RowIndex), 10)
	}
	b = append(b, `,"source":`...)
	b = jsonstr.Append(b, e.Source)
	b = append(b, `,"event_time":`...)
	b = jsonstr.Append(b, e.EventTime)
	if len(e.Task) > 0 {
		b = append(b, `,"task":`...)
		b = append(b, e.Task...)
	}
	return append(b, '}')
}
