package labelstudio

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
)

// The decoders read Label Studio's answers. They are pure, never panic on
// any input (FuzzDecoders), and keep unknown fields out of the way: Label
// Studio adds fields between versions.

// DecodeImport reads the answer of POST /api/projects/{id}/import with
// return_task_ids=true (data_import/api.py, ImportAPI.create): a JSON
// object whose "task_ids" lists the new tasks' ids in the order of the
// imported array. n is how many tasks were sent; an answer that names a
// different number, or an id that is not a positive integer, is an error.
func DecodeImport(body []byte, n int) ([]int64, error) {
	var r struct {
		TaskCount *int64          `json:"task_count"`
		TaskIDs   json.RawMessage `json:"task_ids"`
	}
	if err := json.Unmarshal(body, &r); err != nil {
		return nil, fmt.Errorf("import answer: %w", err)
	}
	if len(r.TaskIDs) == 0 || bytes.Equal(r.TaskIDs, []byte("null")) {
		return nil, errors.New("import answer without task_ids (is return_task_ids supported by this Label Studio?)")
	}
	ids, err := decodeIDs(r.TaskIDs)
	if err != nil {
		return nil, fmt.Errorf("import answer: task_ids: %w", err)
	}
	if len(ids) != n {
		return nil, fmt.Errorf("import answer: %d task_ids for %d tasks", len(ids), n)
	}
	if r.TaskCount != nil && *r.TaskCount != int64(n) {
		return nil, fmt.Errorf("import answer: task_count %d for %d tasks", *r.TaskCount, n)
	}
	return ids, nil
}

// decodeIDs reads a JSON array of positive integer ids.
func decodeIDs(raw json.RawMessage) ([]int64, error) {
	var nums []json.Number
	d := json.NewDecoder(bytes.NewReader(raw))
	d.UseNumber()
	if err := d.Decode(&nums); err != nil {
		return nil, err
	}
	ids := make([]int64, len(nums))
	for i, n := range nums {
		id, err := positiveID(n)
		if err != nil {
			return nil, fmt.Errorf("[%d]: %w", i, err)
		}
		ids[i] = id
	}
	return ids, nil
}

// positiveID accepts a JSON number that denotes a positive integer
// fitting an int64 (17 or 17.0).
func positiveID(n json.Number) (int64, error) {
	if id, err := n.Int64(); err == nil {
		if id <= 0 {
			return 0, fmt.Errorf("id %s is not positive", n)
		}
		return id, nil
	}
	f, err := n.Float64()
	if err != nil || f != math.Trunc(f) || f <= 0 || f >= 1<<63 {
		return 0, fmt.Errorf("id %q is not a positive integer", n.String())
	}
	return int64(f), nil
}

// Task is a task as the task list returns it.
type Task struct {
	ID      int64
	Project int64
	Data    json.RawMessage
	Meta    json.RawMessage
	// Annotations are the task's annotations, when the list was asked
	// for them (fields=all), each as Label Studio sent it.
	Annotations []json.RawMessage
	// Raw is the whole task object as sent.
	Raw json.RawMessage
}

// LabelsyncTaskID is meta.labelsync_task_id, or "".
func (t Task) LabelsyncTaskID() string {
	var m struct {
		ID string `json:"labelsync_task_id"`
	}
	if len(t.Meta) == 0 || json.Unmarshal(t.Meta, &m) != nil {
		return ""
	}
	return m.ID
}

// TaskPage is one page of the task list.
type TaskPage struct {
	Tasks []Task
	// Total is the number of tasks the query matches, on every page.
	Total int64
}

// DecodeTaskPage reads an answer of GET /api/tasks/ (data_manager's
// TaskPagination: {"tasks": [...], "total": N, "total_annotations": …,
// "total_predictions": …}). A bare array of tasks (the older
// /api/projects/{id}/tasks/) is read too. Every task must be an object
// with a positive integer "id"; "data" and "meta" must be objects or
// null; "annotations" a list or null.
func DecodeTaskPage(body []byte) (TaskPage, error) {
	body = bytes.TrimSpace(body)
	var page TaskPage
	var items []json.RawMessage
	switch {
	case len(body) > 0 && body[0] == '[':
		if err := json.Unmarshal(body, &items); err != nil {
			return TaskPage{}, fmt.Errorf("task list: %w", err)
		}
		page.Total = int64(len(items))
	default:
		var r struct {
			Tasks *[]json.RawMessage `json:"tasks"`
			Total *int64             `json:"total"`
		}
		if err := json.Unmarshal(body, &r); err != nil {
			return TaskPage{}, fmt.Errorf("task list: %w", err)
		}
		if r.Tasks == nil {
			return TaskPage{}, errors.New(`task list: no "tasks"`)
		}
		items = *r.Tasks
		if r.Total != nil {
			page.Total = *r.Total
		}
	}
	page.Tasks = make([]Task, 0, len(items))
	for i, raw := range items {
		t, err := decodeTask(raw)
		if err != nil {
			return TaskPage{}, fmt.Errorf("task list: tasks[%d]: %w", i, err)
		}
		page.Tasks = append(page.Tasks, t)
	}
	return page, nil
}

// DecodeTask reads one task object (GET, PATCH /api/tasks/{id}/).
func DecodeTask(body []byte) (Task, error) {
	t, err := decodeTask(body)
	if err != nil {
		return Task{}, fmt.Errorf("task: %w", err)
	}
	return t, nil
}

func decodeTask(raw json.RawMessage) (Task, error) {
	var t struct {
		ID          json.Number       `json:"id"`
		Project     *json.Number      `json:"project"`
		Data        json.RawMessage   `json:"data"`
		Meta        json.RawMessage   `json:"meta"`
		Annotations []json.RawMessage `json:"annotations"`
	}
	d := json.NewDecoder(bytes.NewReader(raw))
	d.UseNumber()
	if err := d.Decode(&t); err != nil {
		return Task{}, err
	}
	id, err := positiveID(t.ID)
	if err != nil {
		return Task{}, err
	}
	out := Task{ID: id, Data: nullable(t.Data), Meta: nullable(t.Meta), Annotations: t.Annotations, Raw: raw}
	if t.Project != nil {
		if out.Project, err = positiveID(*t.Project); err != nil {
			return Task{}, fmt.Errorf("project: %w", err)
		}
	}
	for what, v := range map[string]json.RawMessage{"data": out.Data, "meta": out.Meta} {
		if v != nil && v[0] != '{' {
			return Task{}, fmt.Errorf("%s is not an object", what)
		}
	}
	for i, a := range out.Annotations {
		if a = bytes.TrimSpace(a); len(a) == 0 || a[0] != '{' {
			return Task{}, fmt.Errorf("annotations[%d] is not an object", i)
		}
	}
	return out, nil
}

// nullable returns nil for an absent or null value, else the value
// trimmed.
func nullable(v json.RawMessage) json.RawMessage {
	v = bytes.TrimSpace(v)
	if len(v) == 0 || bytes.Equal(v, []byte("null")) {
		return nil
	}
	return v
}

// Project is what labelsync reads of a project.
type Project struct {
	ID    int64
	Title string
}

// DecodeProject reads GET /api/projects/{id}/.
func DecodeProject(body []byte) (Project, error) {
	var p struct {
		ID    json.Number `json:"id"`
		Title *string     `json:"title"`
	}
	d := json.NewDecoder(bytes.NewReader(body))
	d.UseNumber()
	if err := d.Decode(&p); err != nil {
		return Project{}, fmt.Errorf("project: %w", err)
	}
	id, err := positiveID(p.ID)
	if err != nil {
		return Project{}, fmt.Errorf("project: %w", err)
	}
	out := Project{ID: id}
	if p.Title != nil {
		out.Title = *p.Title
	}
	return out, nil
}

// Webhook is a Label Studio webhook (webhooks/serializers.py,
// WebhookSerializer), with the fields labelsync sets.
type Webhook struct {
	ID                int64             `json:"id,omitempty"`
	Project           int64             `json:"project"`
	URL               string            `json:"url"`
	SendPayload       bool              `json:"send_payload"`
	SendForAllActions bool              `json:"send_for_all_actions"`
	Headers           map[string]string `json:"headers"`
	IsActive          bool              `json:"is_active"`
	Actions           []string          `json:"actions"`
}

// webhookJSON is the decoding side: project may be null (an
// organization-wide webhook), headers any JSON object.
type webhookJSON struct {
	ID                json.Number     `json:"id"`
	Project           *json.Number    `json:"project"`
	URL               string          `json:"url"`
	SendPayload       bool            `json:"send_payload"`
	SendForAllActions bool            `json:"send_for_all_actions"`
	Headers           json.RawMessage `json:"headers"`
	IsActive          bool            `json:"is_active"`
	Actions           []string        `json:"actions"`
}

func (w webhookJSON) webhook() (Webhook, error) {
	id, err := positiveID(w.ID)
	if err != nil {
		return Webhook{}, err
	}
	out := Webhook{ID: id, URL: w.URL, SendPayload: w.SendPayload, SendForAllActions: w.SendForAllActions, IsActive: w.IsActive, Actions: w.Actions}
	if w.Project != nil {
		if out.Project, err = positiveID(*w.Project); err != nil {
			return Webhook{}, fmt.Errorf("project: %w", err)
		}
	}
	if h := nullable(w.Headers); h != nil {
		// Header values Label Studio stores are strings; anything else is
		// kept as its JSON text, so that a comparison sees a difference.
		var m map[string]json.RawMessage
		if err := json.Unmarshal(h, &m); err != nil {
			return Webhook{}, fmt.Errorf("headers: %w", err)
		}
		out.Headers = make(map[string]string, len(m))
		for k, v := range m {
			var s string
			if json.Unmarshal(v, &s) != nil {
				s = string(v)
			}
			out.Headers[k] = s
		}
	}
	return out, nil
}

// DecodeWebhooks reads GET /api/webhooks/ (a JSON array; a paginated
// {"results": [...]} is read too).
func DecodeWebhooks(body []byte) ([]Webhook, error) {
	body = bytes.TrimSpace(body)
	var items []webhookJSON
	if len(body) > 0 && body[0] == '{' {
		var page struct {
			Results *[]webhookJSON `json:"results"`
		}
		if err := decodeNumbers(body, &page); err != nil {
			return nil, fmt.Errorf("webhooks: %w", err)
		}
		if page.Results == nil {
			return nil, errors.New(`webhooks: an object without "results"`)
		}
		items = *page.Results
	} else if err := decodeNumbers(body, &items); err != nil {
		return nil, fmt.Errorf("webhooks: %w", err)
	}
	out := make([]Webhook, 0, len(items))
	for i, w := range items {
		h, err := w.webhook()
		if err != nil {
			return nil, fmt.Errorf("webhooks[%d]: %w", i, err)
		}
		out = append(out, h)
	}
	return out, nil
}

// DecodeWebhook reads one webhook (POST, PATCH /api/webhooks/…).
func DecodeWebhook(body []byte) (Webhook, error) {
	var w webhookJSON
	if err := decodeNumbers(body, &w); err != nil {
		return Webhook{}, fmt.Errorf("webhook: %w", err)
	}
	out, err := w.webhook()
	if err != nil {
		return Webhook{}, fmt.Errorf("webhook: %w", err)
	}
	return out, nil
}

// DecodeAccess reads the answer of POST /api/token/refresh:
// {"access": "<JWT>"}.
func DecodeAccess(body []byte) (string, error) {
	var r struct {
		Access *string `json:"access"`
	}
	if err := json.Unmarshal(body, &r); err != nil {
		return "", fmt.Errorf("token refresh answer: %w", err)
	}
	if r.Access == nil || *r.Access == "" {
		return "", errors.New(`token refresh answer without "access"`)
	}
	return *r.Access, nil
}

func decodeNumbers(body []byte, v any) error {
	d := json.NewDecoder(bytes.NewReader(body))
	d.UseNumber()
	if err := d.Decode(v); err != nil {
		return err
	}
	if d.More() {
		return errors.New("data after the JSON value")
	}
	return nil
}
