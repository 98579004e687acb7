// Package annotation decodes Label Studio's annotation webhooks into one
// Event per annotation, and renders an Event back as a webhook body of one
// annotation: the form the exporter keeps on the LABELSYNC_ANNOTATIONS
// stream (SPEC §3).
//
// What Label Studio sends (label_studio/webhooks/models.py,
// WebhookAction.ACTIONS, and utils.py, emit_webhooks_for_instance: the
// action, the serialized instances under the action's key, the nested
// fields, and "project" as the whole project object):
//
//   - ANNOTATION_CREATED, ANNOTATION_UPDATED: "annotation" (every field of
//     the annotation: "id", "task" and, in recent versions, "project" as
//     ids, "created_at", "updated_at", "result", …), "task" (the task
//     object) and "project".
//   - ANNOTATIONS_CREATED (bulk, e.g. predictions turned into annotations):
//     "annotation" holding a list of annotations and "task" the list of
//     their tasks. SPEC §3 spells them "annotations" and "tasks"; both
//     spellings are read (one object instead of a list is a list of one),
//     and a payload with both spellings of one list is malformed.
//   - ANNOTATIONS_DELETED: "annotations": [{"id": N}, …] and "project";
//     no task, no time. A bare id in the list is read too.
//
// A webhook registered with send_payload false sends the action alone,
// which is malformed here: there is nothing to export. ANNOTATION_DELETED,
// named in Label Studio's docs but emitted nowhere in its source, is skipped
// like any other action.
//
// Decode is liberal in what Label Studio may send and strict about what the
// exporter cannot act on:
//
//   - An id is a JSON number denoting a positive integer that fits an
//     int64 (17, also 17.0); a string, a fraction, an exponent form, zero
//     or a negative number is malformed. A reference to a project or a task
//     is such an id or an object with such an "id"; null counts as absent.
//   - The project is payload.project, else annotation.project, else
//     task.project; those given must agree, and one must be given. A delete
//     names it in payload.project (or in the deleted item's "project").
//   - The task id is annotation.task, else the task's "id"; when both are
//     given they must agree. It is 0 when neither is given, and always 0
//     for deletes. In a bulk payload each annotation is paired with the task
//     of the same id from the task list.
//   - UpdatedAt is the annotation's updated_at, else its created_at, in UTC;
//     zero when both are absent (missing, null or "") and always zero for
//     deletes. A time is RFC 3339, with or without fractional seconds, with
//     "Z" or an offset (Django REST framework writes
//     "2024-01-01T12:00:00.123456Z"); a space instead of the "T" is read
//     too. A time that is present but does not parse, or has no zone, is
//     malformed: newest-wins could not compare it.
//   - Event.Annotation and Event.Task are the objects as sent, compacted,
//     never re-encoded: numbers, key order and unknown fields survive. A
//     deleted annotation is always {"id":N}.
//
// Every malformed body (not JSON, not an object, no action, no annotation
// id, an id that is not a positive integer, no project, disagreeing ids, a
// bad time) returns a fault.Permanent(fault.BadInput, …) error whose
// message is one line naming the problem: redelivering it cannot help, so
// the caller dead-letters it and acknowledges it. A body whose action this
// package does not export (TASKS_CREATED, PROJECT_UPDATED, …) returns
// ErrSkipped, deliberately unclassified: it is no failure, and the caller
// answers 200 and counts it. Decode has no transient errors.
//
// Decode(e.Payload()) gives back exactly [e] for every event Decode
// returns. Everything here is pure: no I/O, no state, safe for concurrent
// use; Decode does not retain body.
package annotation

import (
	"bytes"
	"cmp"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/labelsync/labelsync/internal/fault"
	"github.com/labelsync/labelsync/internal/jsonstr"
)

// Action names (Label Studio's).
const (
	Created     = "ANNOTATION_CREATED"
	Updated     = "ANNOTATION_UPDATED"
	BulkCreated = "ANNOTATIONS_CREATED"
	Deleted     = "ANNOTATIONS_DELETED"
)

// ErrSkipped is returned, with the action, for a webhook whose action this
// package does not handle. It is not a failure: answer 200 and count it.
var ErrSkipped = errors.New("annotation: action not exported")

// Event is one annotation's change: what the exporter stores per annotation
// and acts on.
type Event struct {
	Action       string          // Created, Updated or Deleted (a BulkCreated payload becomes one Created event per annotation)
	Project      int64           // > 0
	AnnotationID int64           // > 0
	TaskID       int64           // 0 when the payload does not say (deletes)
	UpdatedAt    time.Time       // the annotation's updated_at, else created_at, in UTC; zero for deletes or when absent
	Annotation   json.RawMessage // the annotation object as Label Studio sent it (compact); for a delete, {"id":N}
	Task         json.RawMessage // the task object as sent (compact), or nil
}

// Decode parses one webhook body. It returns the action as sent and the
// per-annotation events, in the order of the payload. A body with an action
// this package does not handle returns (action, nil, ErrSkipped). Anything
// malformed returns a permanent fault.BadInput error (see the package doc)
// and no events; the action is returned when it could be read.
func Decode(body []byte) (action string, events []Event, err error) {
	if !json.Valid(body) {
		return "", nil, malformed("body is not JSON")
	}
	top, ok := object(body)
	if !ok {
		return "", nil, malformed("body is not a JSON object")
	}
	raw, ok := present(top, "action")
	if !ok {
		return "", nil, malformed("body without action")
	}
	if err := json.Unmarshal(raw, &action); err != nil {
		return "", nil, malformed("action is %s, want a string", excerpt(raw))
	}
	if action == "" {
		return "", nil, malformed("body without action")
	}
	switch action {
	case Created, Updated:
		events, err = decodeOne(action, top)
	case BulkCreated:
		events, err = decodeBulk(top)
	case Deleted:
		events, err = decodeDeleted(top)
	default:
		return action, nil, ErrSkipped
	}
	if err != nil {
		return action, nil, err
	}
	return action, events, nil
}

// decodeOne decodes ANNOTATION_CREATED and ANNOTATION_UPDATED.
func decodeOne(action string, top map[string]json.RawMessage) ([]Event, error) {
	project, err := payloadProject(action, top)
	if err != nil {
		return nil, err
	}
	raw, ok := present(top, "annotation")
	if !ok {
		return nil, malformed("%s without annotation", action)
	}
	var t pairedTask
	if raw, ok := present(top, "task"); ok {
		id, obj, state := ref(raw)
		if state == bad {
			return nil, malformed("%s task is %s, want a task object or a positive integer id", action, excerpt(raw))
		}
		t = pairedTask{id: id, obj: obj}
	}
	e, err := decodeAnnotation(action, action, "annotation", raw, project, t, nil)
	if err != nil {
		return nil, err
	}
	return []Event{e}, nil
}

// decodeBulk decodes ANNOTATIONS_CREATED: a list of annotations under
// "annotation" (Label Studio) or "annotations" (SPEC §3), their tasks under
// "task" or "tasks".
func decodeBulk(top map[string]json.RawMessage) ([]Event, error) {
	const action = BulkCreated
	project, err := payloadProject(action, top)
	if err != nil {
		return nil, err
	}
	key, items, err := list(action, top, "annotation", "annotations")
	if err != nil {
		return nil, err
	}
	if len(items) == 0 {
		return nil, malformed("%s without annotations", action)
	}
	tkey, tasks, err := list(action, top, "task", "tasks")
	if err != nil {
		return nil, err
	}
	byID := make(map[int64]json.RawMessage, len(tasks))
	for i, raw := range tasks {
		if isNull(raw) {
			continue
		}
		fields, ok := object(raw)
		if !ok {
			return nil, malformed("%s %s[%d] is %s, want a task object", action, tkey, i, excerpt(raw))
		}
		idRaw, ok := present(fields, "id")
		if !ok {
			continue // nothing to pair it with
		}
		id, ok := positiveInt(idRaw)
		if !ok {
			return nil, malformed("%s %s[%d].id is %s, want a positive integer", action, tkey, i, excerpt(idRaw))
		}
		if _, dup := byID[id]; !dup {
			byID[id] = compact(raw)
		}
	}
	events := make([]Event, 0, len(items))
	for i, raw := range items {
		e, err := decodeAnnotation(action, Created, fmt.Sprintf("%s[%d]", key, i), raw, project, pairedTask{}, byID)
		if err != nil {
			return nil, err
		}
		events = append(events, e)
	}
	return events, nil
}

// decodeDeleted decodes ANNOTATIONS_DELETED: "annotations" (or "annotation")
// is a list of {"id": N}; a bare id is read too.
func decodeDeleted(top map[string]json.RawMessage) ([]Event, error) {
	const action = Deleted
	project, err := payloadProject(action, top)
	if err != nil {
		return nil, err
	}
	key, items, err := list(action, top, "annotations", "annotation")
	if err != nil {
		return nil, err
	}
	if len(items) == 0 {
		return nil, malformed("%s without annotations", action)
	}
	events := make([]Event, 0, len(items))
	for i, raw := range items {
		where := fmt.Sprintf("%s[%d]", key, i)
		var id, itemProject int64
		if fields, ok := object(raw); ok {
			idRaw, ok := present(fields, "id")
			if !ok {
				return nil, malformed("%s without %s.id", action, where)
			}
			if id, ok = positiveInt(idRaw); !ok {
				return nil, malformed("%s %s.id is %s, want a positive integer", action, where, excerpt(idRaw))
			}
			if p, ok := present(fields, "project"); ok {
				var state refState
				if itemProject, _, state = ref(p); state == bad {
					return nil, malformed("%s %s.project is %s, want a positive integer", action, where, excerpt(p))
				}
			}
		} else if id, ok = positiveInt(raw); !ok {
			return nil, malformed("%s %s is %s, want {\"id\": N}", action, where, excerpt(raw))
		}
		p, err := agree(action, id, project, itemProject, 0)
		if err != nil {
			return nil, err
		}
		events = append(events, Event{
			Action:       Deleted,
			Project:      p,
			AnnotationID: id,
			Annotation:   deletedAnnotation(id),
		})
	}
	return events, nil
}

// pairedTask is the task a payload gives beside an annotation: an id, an
// object (compact), or both.
type pairedTask struct {
	id  int64
	obj json.RawMessage
}

// decodeAnnotation builds the event for one annotation object. sent is the
// payload's action (for messages), action the event's; where names the
// annotation in messages ("annotation", "annotation[2]"). t is the task the
// payload pairs with it; byID, in a bulk payload, the tasks by id.
func decodeAnnotation(sent, action, where string, raw json.RawMessage, project int64, t pairedTask, byID map[int64]json.RawMessage) (Event, error) {
	fields, ok := object(raw)
	if !ok {
		return Event{}, malformed("%s %s is %s, want an annotation object", sent, where, excerpt(raw))
	}
	idRaw, ok := present(fields, "id")
	if !ok {
		return Event{}, malformed("%s without %s.id", sent, where)
	}
	id, ok := positiveInt(idRaw)
	if !ok {
		return Event{}, malformed("%s %s.id is %s, want a positive integer", sent, where, excerpt(idRaw))
	}
	e := Event{Action: action, AnnotationID: id, Annotation: compact(raw)}

	// The task: annotation.task (id or object) and the paired task must agree.
	var own pairedTask
	if r, ok := present(fields, "task"); ok {
		var state refState
		if own.id, own.obj, state = ref(r); state == bad {
			return Event{}, malformed("%s annotation %d task is %s, want a positive integer id or a task object", sent, id, excerpt(r))
		}
	}
	if own.id != 0 && t.id != 0 && own.id != t.id {
		return Event{}, malformed("%s annotation %d is on task %d, task.id is %d", sent, id, own.id, t.id)
	}
	e.TaskID = cmp.Or(own.id, t.id)
	e.Task = t.obj
	if e.Task == nil {
		e.Task = own.obj
	}
	if e.Task == nil && e.TaskID != 0 {
		e.Task = byID[e.TaskID]
	}

	// The project: payload, annotation and task must agree.
	var annotationProject, taskProject int64
	if r, ok := present(fields, "project"); ok {
		var state refState
		if annotationProject, _, state = ref(r); state == bad {
			return Event{}, malformed("%s annotation %d project is %s, want a positive integer", sent, id, excerpt(r))
		}
	}
	if e.Task != nil {
		tf, _ := object(e.Task)
		if r, ok := present(tf, "project"); ok {
			var state refState
			if taskProject, _, state = ref(r); state == bad {
				return Event{}, malformed("%s annotation %d task.project is %s, want a positive integer", sent, id, excerpt(r))
			}
		}
	}
	p, err := agree(sent, id, project, annotationProject, taskProject)
	if err != nil {
		return Event{}, err
	}
	e.Project = p

	// The time: updated_at, else created_at.
	for _, name := range [...]string{"updated_at", "created_at"} {
		r, ok := present(fields, name)
		if !ok {
			continue
		}
		var s string
		if err := json.Unmarshal(r, &s); err != nil {
			return Event{}, malformed("%s annotation %d %s is %s, want an RFC 3339 time", sent, id, name, excerpt(r))
		}
		if s == "" {
			continue
		}
		ts, ok := parseTime(s)
		if !ok {
			return Event{}, malformed("%s annotation %d %s is %s, want an RFC 3339 time", sent, id, name, excerpt(r))
		}
		e.UpdatedAt = ts
		break
	}
	return e, nil
}

// payloadProject reads payload.project: an object with an id, or an id.
// It returns 0 when the payload does not say.
func payloadProject(action string, top map[string]json.RawMessage) (int64, error) {
	raw, ok := present(top, "project")
	if !ok {
		return 0, nil
	}
	id, _, state := ref(raw)
	if state == bad {
		return 0, malformed("%s project is %s, want a project object with a positive integer id", action, excerpt(raw))
	}
	return id, nil
}

// agree returns the first non-zero of the project ids the payload gave for
// an annotation, and an error when there is none or they differ.
func agree(action string, annotationID, payload, annotation, task int64) (int64, error) {
	p := cmp.Or(payload, annotation, task)
	if p == 0 {
		return 0, malformed("%s annotation %d without project id (project.id, annotation.project or task.project)", action, annotationID)
	}
	if (annotation != 0 && annotation != p) || (task != 0 && task != p) {
		return 0, malformed("%s annotation %d project ids disagree: project.id %d, annotation.project %d, task.project %d",
			action, annotationID, payload, annotation, task)
	}
	return p, nil
}

// list reads the list under the first of two keys that is present (an
// object there is a list of one). Both present is ambiguous, hence
// malformed. It returns the key read.
func list(action string, top map[string]json.RawMessage, key, alt string) (string, []json.RawMessage, error) {
	raw, ok := present(top, key)
	if altRaw, altOK := present(top, alt); altOK {
		if ok {
			return "", nil, malformed("%s with both %s and %s", action, key, alt)
		}
		key, raw, ok = alt, altRaw, true
	}
	if !ok {
		return key, nil, nil
	}
	if _, isObject := object(raw); isObject {
		return key, []json.RawMessage{raw}, nil
	}
	var items []json.RawMessage
	if err := json.Unmarshal(raw, &items); err != nil {
		return "", nil, malformed("%s %s is %s, want a list", action, key, excerpt(raw))
	}
	return key, items, nil
}

// Payload renders the event as a Label Studio webhook body of one
// annotation:
//
//	{"action":"ANNOTATION_CREATED"|"ANNOTATION_UPDATED","annotation":{…},"task":{…},"project":{"id":N}}
//	{"action":"ANNOTATIONS_DELETED","annotations":[{"id":N}],"project":{"id":N}}
//
// "task" is the task object, or the task id when the event has only that,
// and is left out when it has neither. For every event Decode returns,
// Decode(e.Payload()) returns [e].
func (e Event) Payload() []byte {
	b := make([]byte, 0, 64+len(e.Annotation)+len(e.Task))
	b = append(b, `{"action":`...)
	b = jsonstr.Append(b, e.Action)
	if e.Action == Deleted {
		b = append(b, `,"annotations":[`...)
		b = append(b, deletedAnnotation(e.AnnotationID)...)
		b = append(b, ']')
	} else {
		b = append(b, `,"annotation":`...)
		if len(e.Annotation) > 0 {
			b = append(b, e.Annotation...)
		} else {
			b = append(b, deletedAnnotation(e.AnnotationID)...)
		}
		switch {
		case len(e.Task) > 0:
			b = append(b, `,"task":`...)
			b = append(b, e.Task...)
		case e.TaskID != 0:
			b = append(b, `,"task":`...)
			b = strconv.AppendInt(b, e.TaskID, 10)
		}
	}
	b = append(b, `,"project":{"id":`...)
	b = strconv.AppendInt(b, e.Project, 10)
	return append(b, "}}"...)
}

// Subject is the event's subject on the annotations stream:
// labelsync.annotations.<project>.<annotation id>, so that the stream can
// keep the newest state of each annotation.
func (e Event) Subject() string {
	return "labelsync.annotations." + strconv.FormatInt(e.Project, 10) + "." + strconv.FormatInt(e.AnnotationID, 10)
}

// MsgID identifies the change for JetStream's duplicate window
// (Nats-Msg-Id): a hash of action, project, annotation id and updated_at.
// A retry of the same webhook is one message; a later update is another.
func (e Event) MsgID() string {
	var ts string
	if !e.UpdatedAt.IsZero() {
		ts = e.UpdatedAt.UTC().Format(time.RFC3339Nano)
	}
	h := sha256.Sum256(fmt.Appendf(nil, "%s\x00%d\x00%d\x00%s", e.Action, e.Project, e.AnnotationID, ts))
	return hex.EncodeToString(h[:])
}

// timeLayouts are the forms of updated_at read: RFC 3339 (fractional
// seconds optional when parsing) and Python's str(datetime), with a space.
var timeLayouts = [...]string{
	time.RFC3339Nano,
	"2006-01-02 15:04:05.999999999Z07:00",
}

func parseTime(s string) (time.Time, bool) {
	for _, layout := range timeLayouts {
		if t, err := time.Parse(layout, s); err == nil {
			return t.UTC(), true
		}
	}
	return time.Time{}, false
}

type refState int

const (
	absent refState = iota
	given
	bad
)

// ref reads a reference to a project or a task: a positive integer id, or
// an object (returned compact) whose "id", if present, is one. null is
// absent.
func ref(raw json.RawMessage) (int64, json.RawMessage, refState) {
	if isNull(raw) {
		return 0, nil, absent
	}
	if fields, ok := object(raw); ok {
		idRaw, ok := present(fields, "id")
		if !ok {
			return 0, compact(raw), given
		}
		id, ok := positiveInt(idRaw)
		if !ok {
			return 0, nil, bad
		}
		return id, compact(raw), given
	}
	id, ok := positiveInt(raw)
	if !ok {
		return 0, nil, bad
	}
	return id, nil, given
}

// positiveInt reads a JSON number that denotes a positive integer that
// fits an int64: an integer literal, or one with a fraction of zeros only
// ("17.0"). Exponent forms are refused: no encoder writes an id that way,
// and their value is not exact.
func positiveInt(raw json.RawMessage) (int64, bool) {
	s := string(bytes.TrimSpace(raw))
	if i := strings.IndexByte(s, '.'); i > 0 && strings.Trim(s[i+1:], "0") == "" {
		s = s[:i]
	}
	n, err := strconv.ParseInt(s, 10, 64)
	return n, err == nil && n > 0
}

// object parses raw as a JSON object, field by exact name (the last of
// duplicates wins, as in encoding/json).
func object(raw json.RawMessage) (map[string]json.RawMessage, bool) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || raw[0] != '{' {
		return nil, false
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal(raw, &m); err != nil {
		return nil, false
	}
	return m, true
}

// present returns the field's value unless it is missing or null.
func present(fields map[string]json.RawMessage, name string) (json.RawMessage, bool) {
	raw, ok := fields[name]
	if !ok || isNull(raw) {
		return nil, false
	}
	return raw, true
}

func isNull(raw json.RawMessage) bool {
	return string(bytes.TrimSpace(raw)) == "null"
}

// compact returns raw without insignificant whitespace, in a new slice.
func compact(raw json.RawMessage) json.RawMessage {
	var buf bytes.Buffer
	buf.Grow(len(raw))
	if err := json.Compact(&buf, raw); err != nil {
		// raw came out of a valid document; keep it as it is.
		return append(json.RawMessage(nil), raw...)
	}
	return buf.Bytes()
}

func deletedAnnotation(id int64) json.RawMessage {
	return append(strconv.AppendInt([]byte(`{"id":`), id, 10), '}')
}

// excerpt quotes the start of a JSON value for a one-line message.
func excerpt(raw json.RawMessage) string {
	const max = 40
	s := string(compact(raw))
	if len(s) > max {
		s = s[:max] + "…"
	}
	return strconv.Quote(s)
}

func malformed(format string, args ...any) error {
	return fault.Permanent(fault.BadInput, fmt.Errorf("annotation: "+format, args...))
}
