package labelstudio

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strconv"

	"github.com/labelsync/labelsync/internal/fault"
)

// Import creates tasks in project through POST
// /api/projects/{project}/import?return_task_ids=true. body is a JSON array
// of n task objects; the answer's ids come back in the same order. Label
// Studio validates the whole array before it creates anything: a task it
// refuses fails the request (400) and nothing is created.
func (c *Client) Import(ctx context.Context, project int64, body []byte, n int) ([]int64, error) {
	path := "/api/projects/" + strconv.FormatInt(project, 10) + "/import?return_task_ids=true"
	_, out, err := c.do(ctx, request{op: "import", method: http.MethodPost, path: path, body: body, want: []int{http.StatusCreated, http.StatusOK}})
	if err != nil {
		return nil, err
	}
	ids, err := DecodeImport(out, n)
	if err != nil {
		// Label Studio answered 201, so the tasks exist; which ids they
		// got is unknown: the caller must look them up.
		return nil, fault.Transient(fault.Unavailable, &Error{Op: "import", Method: http.MethodPost, Path: pathOnly(path), Status: http.StatusCreated, Uncertain: true, Err: err, Body: string(out[:min(len(out), 4<<10)])})
	}
	return ids, nil
}

// CheckImport asks Label Studio to parse tasks for project without
// creating them (commit_to_project=false): it proves the project exists and
// the token may import into it, and changes nothing.
func (c *Client) CheckImport(ctx context.Context, project int64) error {
	path := "/api/projects/" + strconv.FormatInt(project, 10) + "/import?commit_to_project=false"
	_, _, err := c.do(ctx, request{op: "check_import", method: http.MethodPost, path: path, body: []byte(`[{"data":{"labelsync_check":"connect"}}]`), want: []int{http.StatusCreated, http.StatusOK}})
	if e := AsError(err); e != nil {
		e.Uncertain = false
	}
	return err
}

// UpdateTask changes a task through PATCH /api/tasks/{id}/ with body (a JSON
// object of the fields to change).
func (c *Client) UpdateTask(ctx context.Context, id int64, body []byte) error {
	_, _, err := c.do(ctx, request{op: "update", method: http.MethodPatch, path: "/api/tasks/" + strconv.FormatInt(id, 10) + "/", body: body})
	return err
}

// DeleteTask deletes a task through DELETE /api/tasks/{id}/. A task that
// does not exist is a fault.NotFound error: the caller decides whether gone
// is done.
func (c *Client) DeleteTask(ctx context.Context, id int64) error {
	_, _, err := c.do(ctx, request{op: "delete", method: http.MethodDelete, path: "/api/tasks/" + strconv.FormatInt(id, 10) + "/", want: []int{http.StatusNoContent, http.StatusOK}})
	return err
}

// Task reads one task (GET /api/tasks/{id}/).
func (c *Client) Task(ctx context.Context, id int64) (Task, error) {
	_, out, err := c.do(ctx, request{op: "get_task", method: http.MethodGet, path: "/api/tasks/" + strconv.FormatInt(id, 10) + "/"})
	if err != nil {
		return Task{}, err
	}
	t, err := DecodeTask(out)
	if err != nil {
		return Task{}, fault.Transient(fault.Unavailable, fmt.Errorf("labelstudio: %w", err))
	}
	return t, nil
}

// TaskQuery selects tasks of the task list (GET /api/tasks/).
type TaskQuery struct {
	Project int64
	// AfterID keeps tasks whose id is greater (a Data Manager filter on
	// filter:tasks:id); 0 keeps all.
	AfterID int64
	// Descending orders by id from the newest (default: oldest first).
	Descending bool
	// Annotations asks for each task's annotations (fields=all).
	Annotations bool
	// PageSize is the number of tasks per page (default 500).
	PageSize int
	// Op names the requests in metrics (default "lookup").
	Op string
}

// dmQuery is the Data Manager query of the task list's "query" parameter:
// {"filters": {"conjunction", "items": [{"filter", "operator", "type",
// "value"}]}, "ordering": [...]}.
type dmQuery struct {
	Filters  *dmFilters `json:"filters,omitempty"`
	Ordering []string   `json:"ordering,omitempty"`
}

type dmFilters struct {
	Conjunction string     `json:"conjunction"`
	Items       []dmFilter `json:"items"`
}

type dmFilter struct {
	Filter   string `json:"filter"`
	Operator string `json:"operator"`
	Type     string `json:"type"`
	Value    any    `json:"value"`
}

func (q TaskQuery) values(page int) url.Values {
	v := url.Values{}
	v.Set("project", strconv.FormatInt(q.Project, 10))
	v.Set("page", strconv.Itoa(page))
	v.Set("page_size", strconv.Itoa(q.pageSize()))
	if q.Annotations {
		v.Set("fields", "all")
	} else {
		v.Set("fields", "task_only")
	}
	dq := dmQuery{Ordering: []string{"tasks:id"}}
	if q.Descending {
		dq.Ordering = []string{"-tasks:id"}
	}
	if q.AfterID > 0 {
		dq.Filters = &dmFilters{Conjunction: "and", Items: []dmFilter{{Filter: "filter:tasks:id", Operator: "greater", Type: "Number", Value: q.AfterID}}}
	}
	b, _ := json.Marshal(dq)
	v.Set("query", string(b))
	return v
}

func (q TaskQuery) pageSize() int {
	if q.PageSize <= 0 {
		return 500
	}
	return q.PageSize
}

// Tasks reads one page (from 1) of the task list.
func (c *Client) Tasks(ctx context.Context, q TaskQuery, page int) (TaskPage, error) {
	op := q.Op
	if op == "" {
		op = "lookup"
	}
	_, out, err := c.do(ctx, request{op: op, method: http.MethodGet, path: "/api/tasks/?" + q.values(page).Encode()})
	if err != nil {
		return TaskPage{}, err
	}
	p, err := DecodeTaskPage(out)
	if err != nil {
		return TaskPage{}, fault.Transient(fault.Unavailable, fmt.Errorf("labelstudio: %w", err))
	}
	return p, nil
}

// EachTask calls fn for every task q selects, in id order, a page at a
// time. Pages are keyed on the last id seen (each request asks for tasks
// after it, page 1), not numbered: tasks created or deleted during the walk
// cannot shift a page. fn's error stops the walk and is returned.
func (c *Client) EachTask(ctx context.Context, q TaskQuery, fn func(Task) error) error {
	q.Descending = false
	for {
		p, err := c.Tasks(ctx, q, 1)
		if err != nil {
			return err
		}
		for _, t := range p.Tasks {
			if t.ID <= q.AfterID {
				return fault.Transient(fault.Unavailable, fmt.Errorf("labelstudio: the task list answered task %d for tasks after %d: is the filter:tasks:id filter supported?", t.ID, q.AfterID))
			}
			if err := fn(t); err != nil {
				return err
			}
			q.AfterID = t.ID
		}
		if len(p.Tasks) < q.pageSize() {
			return nil
		}
	}
}

// MaxTaskID is the highest task id in project (0 when it has none).
func (c *Client) MaxTaskID(ctx context.Context, project int64) (int64, error) {
	p, err := c.Tasks(ctx, TaskQuery{Project: project, Descending: true, PageSize: 1, Op: "watermark"}, 1)
	if err != nil {
		return 0, err
	}
	if len(p.Tasks) == 0 {
		return 0, nil
	}
	return p.Tasks[0].ID, nil
}

// Project reads a project (GET /api/projects/{id}/).
func (c *Client) Project(ctx context.Context, id int64) (Project, error) {
	_, out, err := c.do(ctx, request{op: "project", method: http.MethodGet, path: "/api/projects/" + strconv.FormatInt(id, 10) + "/"})
	if err != nil {
		return Project{}, err
	}
	p, err := DecodeProject(out)
	if err != nil {
		return Project{}, fault.Transient(fault.Unavailable, fmt.Errorf("labelstudio: %w", err))
	}
	return p, nil
}

// Ping checks that Label Studio answers and accepts the token (GET
// /api/projects/ with one result).
func (c *Client) Ping(ctx context.Context) error {
	_, _, err := c.do(ctx, request{op: "ping", method: http.MethodGet, path: "/api/projects/?page=1&page_size=1"})
	return err
}
