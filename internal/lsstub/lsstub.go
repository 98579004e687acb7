// Package lsstub is a stand-in for the part of Label Studio's REST API that
// labelsync uses, served by an httptest server, for tests and benchmarks
// (Label Studio itself cannot be installed where they run). It follows
// Label Studio's source (HumanSignal/label-studio) for request and answer
// shapes, status codes and pagination:
//
//   - POST /api/projects/{id}/import (data_import/api.py, ImportAPI): a
//     JSON array of tasks (an item without a "data" object is all data);
//     201 with task_count, annotation_count, prediction_count, duration,
//     file_upload_ids, could_be_tasks_list, found_formats, data_columns, and
//     task_ids with return_task_ids=true; commit_to_project=false parses and
//     creates nothing. The array is validated as a whole: one refused task
//     fails the request with 400 and creates nothing (the ids it would have
//     taken are used up, as a PostgreSQL sequence is). 404 for a project
//     that does not exist.
//   - GET /api/tasks/ (data_manager, TaskPagination): project, page,
//     page_size (default 100), fields (task_only or all: with annotations
//     and predictions) and query, the Data Manager's JSON {"filters":
//     {"conjunction", "items": [{"filter", "operator", "type", "value"}]},
//     "ordering": [...]}, with filter:tasks:id (equal, not_equal, less,
//     greater, less_or_equal, greater_or_equal) and filter:tasks:data.<key>
//     (equal, not_equal, contains, not_contains), ordering tasks:id or
//     -tasks:id. Answers {"tasks", "total", "total_annotations",
//     "total_predictions"}; a page past the last is 404 {"detail": "Invalid
//     page."}, as Django REST framework's PageNumberPagination answers.
//   - GET, PATCH (data, meta), DELETE /api/tasks/{id}/ (tasks/api.py,
//     TaskAPI): 200 with the task, 204 for a delete, 404 {"detail": "Not
//     found."}; GET /api/tasks/{id}/annotations/ lists a task's annotations.
//   - GET /api/projects/ (paginated {"count", "next", "previous",
//     "results"}) and GET /api/projects/{id}/.
//   - GET /api/webhooks/?project=, POST /api/webhooks/, GET, PATCH, DELETE
//     /api/webhooks/{id}/ (webhooks/api.py and serializers.py): a plain
//     list; fields id, organization, project, url, send_payload,
//     send_for_all_actions, headers, is_active, actions, created_at,
//     updated_at; a missing project is 404 "Project not found.", an unknown
//     action 400.
//   - POST /api/token/refresh (jwt_auth, simplejwt's TokenRefreshView):
//     {"refresh": <personal access token>} → {"access": <JWT>}; a bad
//     refresh token is 401 {"detail": "Token is invalid or expired", "code":
//     "token_not_valid"}. Requests authenticate with "Token <legacy token>"
//     or "Bearer <access token>"; an expired access token is 401.
//
// Annotations made with Annotate are sent to the project's webhooks the way
// Label Studio's webhooks/utils.py sends them (ANNOTATION_CREATED with the
// annotation, the task and the project, and the webhook's headers).
//
// Knobs make it misbehave on purpose: latency per request and per imported
// task (SetLatency), 429 with Retry-After and 5xx bursts (FailNext), an
// answer lost after the change was committed (CutAfterCommit: the
// connection is closed without an answer), a 5xx after the commit
// (Inject with AfterCommit), an import committed only after its answer
// was given up (Inject with LateCommit), and tasks it refuses (Reject).
// Task ids come from one sequence for all projects, as Label Studio's
// database gives them. A Server is safe for concurrent use.
package lsstub

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Options configure a Server.
type Options struct {
	// LegacyToken is accepted as "Authorization: Token <LegacyToken>".
	LegacyToken string
	// RefreshToken is the personal access token accepted at
	// /api/token/refresh (any JWT-looking string; see NewRefreshToken).
	RefreshToken string
	// AccessTTL is the lifetime of the access tokens it issues (default 5
	// minutes, Label Studio's).
	AccessTTL time.Duration
	// FirstTaskID is the first task id (default 1).
	FirstTaskID int64
}

// Fault is one misbehaviour for the next request of an op.
type Fault struct {
	// Op is the request kind: import, update, delete, get, list, refresh,
	// project, webhooks; "" matches any.
	Op string
	// Status is the answer (429, 500, 502, 503…); 0 with Cut.
	Status int
	// RetryAfter is sent with the answer when positive.
	RetryAfter time.Duration
	// AfterCommit applies the change first, then answers Status (or cuts).
	AfterCommit bool
	// Cut closes the connection without an answer.
	Cut bool
	// LateCommit, for an import, answers Status (or cuts) first and
	// creates the tasks LateCommit later: Label Studio still running an
	// import after the client, or a proxy in front of it, gave up on the
	// request.
	LateCommit time.Duration
}

// Task is a stored task.
type Task struct {
	ID          int64
	Project     int64
	Data        json.RawMessage
	Meta        json.RawMessage
	Annotations []json.RawMessage
	Predictions []json.RawMessage
	CreatedAt   time.Time
	UpdatedAt   time.Time
	InnerID     int64
}

type project struct {
	id         int64
	title      string
	nextInner  int64
	createdAt  time.Time
	taskNumber int
}

type webhook struct {
	ID                int64             `json:"id"`
	Organization      int64             `json:"organization"`
	Project           *int64            `json:"project"`
	URL               string            `json:"url"`
	SendPayload       bool              `json:"send_payload"`
	SendForAllActions bool              `json:"send_for_all_actions"`
	Headers           map[string]string `json:"headers"`
	IsActive          bool              `json:"is_active"`
	Actions           []string          `json:"actions"`
	CreatedAt         string            `json:"created_at"`
	UpdatedAt         string            `json:"updated_at"`
}

// Server is the stand-in.
type Server struct {
	// URL is the base URL, like http://127.0.0.1:PORT.
	URL  string
	srv  *httptest.Server
	opts Options
	hc   *http.Client

	mu       sync.Mutex
	projects map[int64]*project
	tasks    map[int64]*Task
	nextTask int64
	nextAnn  int64
	nextHook int64
	webhooks map[int64]*webhook
	access   map[string]time.Time
	latency  time.Duration
	perTask  time.Duration
	faults   []Fault
	reject   func(data json.RawMessage) string
	counts   map[string]int
}

// New starts a stand-in; Close stops it.
func New(opts Options) *Server {
	if opts.AccessTTL <= 0 {
		opts.AccessTTL = 5 * time.Minute
	}
	if opts.FirstTaskID <= 0 {
		opts.FirstTaskID = 1
	}
	s := &Server{
		opts:     opts,
		projects: map[int64]*project{},
		tasks:    map[int64]*Task{},
		nextTask: opts.FirstTaskID,
		nextAnn:  1,
		nextHook: 1,
		webhooks: map[int64]*webhook{},
		access:   map[string]time.Time{},
		counts:   map[string]int{},
		hc:       &http.Client{Timeout: 30 * time.Second},
	}
	s.srv = httptest.NewServer(s.routes())
	s.URL = s.srv.URL
	return s
}

// Close stops the server.
func (s *Server) Close() { s.srv.Close() }

// NewRefreshToken returns a JWT-shaped personal access token.
func NewRefreshToken() string {
	return jwt(map[string]any{"token_type": "refresh", "exp": time.Now().Add(24 * time.Hour).Unix(), "iat": time.Now().Unix(), "jti": randomHex(8)})
}

// AddProject creates a project.
func (s *Server) AddProject(id int64, title string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.projects[id] = &project{id: id, title: title, nextInner: 1, createdAt: time.Now()}
}

// SetLatency makes every request take perRequest, and an import perTask
// more per task.
func (s *Server) SetLatency(perRequest, perTask time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.latency, s.perTask = perRequest, perTask
}

// Inject queues n copies of f: the next n requests of f.Op misbehave.
func (s *Server) Inject(f Fault, n int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for range n {
		s.faults = append(s.faults, f)
	}
}

// FailNext makes the next n requests of op answer status (with
// Retry-After when retryAfter > 0) and change nothing.
func (s *Server) FailNext(op string, n, status int, retryAfter time.Duration) {
	s.Inject(Fault{Op: op, Status: status, RetryAfter: retryAfter}, n)
}

// CutAfterCommit makes the next n requests of op take effect, then lose
// their answer: the connection is closed.
func (s *Server) CutAfterCommit(op string, n int) {
	s.Inject(Fault{Op: op, Cut: true, AfterCommit: true}, n)
}

// ClearFaults drops the faults not yet used.
func (s *Server) ClearFaults() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.faults = nil
}

// Reject makes the import refuse any task for which f returns a reason
// (nil: accept all).
func (s *Server) Reject(f func(data json.RawMessage) string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.reject = f
}

// Requests is the number of requests of op served so far (faults
// included).
func (s *Server) Requests(op string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.counts[op]
}

// Tasks returns a copy of project's tasks in id order.
func (s *Server) Tasks(project int64) []Task {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []Task
	for _, t := range s.tasks {
		if t.Project == project {
			c := *t
			c.Annotations = slices.Clone(t.Annotations)
			out = append(out, c)
		}
	}
	slices.SortFunc(out, func(a, b Task) int { return int(a.ID - b.ID) })
	return out
}

// Webhooks returns the stored webhooks as JSON objects (for tests).
func (s *Server) Webhooks() []json.RawMessage {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []json.RawMessage
	for _, id := range sortedKeys(s.webhooks) {
		b, _ := json.Marshal(s.webhooks[id])
		out = append(out, b)
	}
	return out
}

// DeleteTask deletes a task as a user in Label Studio's UI would.
func (s *Server) DeleteTask(id int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.tasks, id)
}

// takeFault pops the first queued fault for op, if any, and counts the
// request.
func (s *Server) takeFault(op string) (Fault, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.counts[op]++
	for i, f := range s.faults {
		if f.Op == "" || f.Op == op {
			s.faults = slices.Delete(s.faults, i, i+1)
			return f, true
		}
	}
	return Fault{}, false
}

func (s *Server) sleep(ctx context.Context, tasks int) {
	s.mu.Lock()
	d := s.latency + time.Duration(tasks)*s.perTask
	s.mu.Unlock()
	if d <= 0 {
		return
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
}

// misbehave answers f, or cuts the connection.
func misbehave(w http.ResponseWriter, f Fault) {
	if f.Cut {
		hj, ok := w.(http.Hijacker)
		if !ok {
			panic("lsstub: cannot hijack the connection")
		}
		conn, _, err := hj.Hijack()
		if err == nil {
			_ = conn.Close()
		}
		return
	}
	if f.RetryAfter > 0 {
		secs := int((f.RetryAfter + time.Second - 1) / time.Second)
		w.Header().Set("Retry-After", strconv.Itoa(secs))
	}
	switch {
	case f.Status == http.StatusTooManyRequests:
		writeJSON(w, f.Status, map[string]any{"detail": "Request was throttled."})
	case f.Status >= 500:
		w.Header().Set("Content-Type", "text/html")
		w.WriteHeader(f.Status)
		fmt.Fprintf(w, "<h1>Server Error (%d)</h1>", f.Status)
	default:
		writeJSON(w, f.Status, map[string]any{"detail": http.StatusText(f.Status)})
	}
}

func (s *Server) routes() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /api/token/refresh", s.refresh)
	mux.HandleFunc("POST /api/token/refresh/", s.refresh)
	mux.HandleFunc("GET /api/projects/{$}", s.auth("project", s.listProjects))
	mux.HandleFunc("GET /api/projects/{id}/", s.auth("project", s.getProject))
	mux.HandleFunc("POST /api/projects/{id}/import", s.auth("import", s.importTasks))
	mux.HandleFunc("GET /api/tasks/{$}", s.auth("list", s.listTasks))
	mux.HandleFunc("GET /api/tasks/{id}/", s.auth("get", s.getTask))
	mux.HandleFunc("PATCH /api/tasks/{id}/", s.auth("update", s.patchTask))
	mux.HandleFunc("DELETE /api/tasks/{id}/", s.auth("delete", s.deleteTask))
	mux.HandleFunc("GET /api/tasks/{id}/annotations/", s.auth("get", s.taskAnnotations))
	mux.HandleFunc("GET /api/webhooks/{$}", s.auth("webhooks", s.listWebhooks))
	mux.HandleFunc("POST /api/webhooks/{$}", s.auth("webhooks", s.createWebhook))
	mux.HandleFunc("GET /api/webhooks/{id}/", s.auth("webhooks", s.getWebhook))
	mux.HandleFunc("PATCH /api/webhooks/{id}/", s.auth("webhooks", s.patchWebhook))
	mux.HandleFunc("DELETE /api/webhooks/{id}/", s.auth("webhooks", s.deleteWebhook))
	return mux
}

// handler is an authenticated endpoint. after, when not nil, is the fault
// to answer instead of the real answer once the change is committed.
type handler func(w http.ResponseWriter, r *http.Request, after *Fault)

// auth checks the Authorization header, applies the op's faults that come
// before any change, and runs h.
func (s *Server) auth(op string, h handler) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		authz := r.Header.Get("Authorization")
		scheme, token, _ := strings.Cut(authz, " ")
		switch {
		case authz == "":
			writeJSON(w, http.StatusUnauthorized, map[string]any{"detail": "Authentication credentials were not provided."})
			return
		case scheme == "Token" && s.opts.LegacyToken != "" && token == s.opts.LegacyToken:
		case scheme == "Bearer":
			s.mu.Lock()
			exp, ok := s.access[token]
			s.mu.Unlock()
			if !ok || time.Now().After(exp) {
				writeJSON(w, http.StatusUnauthorized, map[string]any{"detail": "Given token not valid for any token type", "code": "token_not_valid",
					"messages": []map[string]string{{"token_class": "AccessToken", "token_type": "access", "message": "Token is invalid or expired"}}})
				return
			}
		default:
			writeJSON(w, http.StatusUnauthorized, map[string]any{"detail": "Invalid token."})
			return
		}
		f, ok := s.takeFault(op)
		if ok && !f.AfterCommit && f.LateCommit == 0 {
			s.sleep(r.Context(), 0)
			misbehave(w, f)
			return
		}
		var after *Fault
		if ok {
			after = &f
		}
		h(w, r, after)
	}
}

func (s *Server) refresh(w http.ResponseWriter, r *http.Request) {
	if f, ok := s.takeFault("refresh"); ok {
		misbehave(w, f)
		return
	}
	var body struct {
		Refresh string `json:"refresh"`
	}
	if err := json.NewDecoder(r.Body).Decode(&body); err != nil || body.Refresh == "" {
		writeJSON(w, http.StatusBadRequest, map[string]any{"refresh": []string{"This field is required."}})
		return
	}
	if s.opts.RefreshToken == "" || body.Refresh != s.opts.RefreshToken {
		writeJSON(w, http.StatusUnauthorized, map[string]any{"detail": "Token is invalid or expired", "code": "token_not_valid"})
		return
	}
	now := time.Now()
	exp := now.Add(s.opts.AccessTTL)
	access := jwt(map[string]any{"token_type": "access", "exp": exp.Unix(), "iat": now.Unix(), "jti": randomHex(8)})
	s.mu.Lock()
	s.access[access] = exp
	s.mu.Unlock()
	writeJSON(w, http.StatusOK, map[string]any{"access": access})
}

func (s *Server) listProjects(w http.ResponseWriter, r *http.Request, after *Fault) {
	s.mu.Lock()
	var results []map[string]any
	for _, id := range sortedKeys(s.projects) {
		results = append(results, s.projectJSON(s.projects[id]))
	}
	s.mu.Unlock()
	page, size, ok := paging(w, r, 30)
	if !ok {
		return
	}
	lo, hi := (page-1)*size, page*size
	if lo >= len(results) && page > 1 {
		writeJSON(w, http.StatusNotFound, map[string]any{"detail": "Invalid page."})
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"count": len(results), "next": nil, "previous": nil, "results": results[min(lo, len(results)):min(hi, len(results))]})
}

func (s *Server) projectJSON(p *project) map[string]any {
	n := 0
	for _, t := range s.tasks {
		if t.Project == p.id {
			n++
		}
	}
	return map[string]any{"id": p.id, "title": p.title, "description": "", "label_config": "<View></View>",
		"created_at": lsTime(p.createdAt), "task_number": n, "organization": 1}
}

func (s *Server) getProject(w http.ResponseWriter, r *http.Request, after *Fault) {
	id, ok := pathID(w, r)
	if !ok {
		return
	}
	s.mu.Lock()
	p := s.projects[id]
	var out map[string]any
	if p != nil {
		out = s.projectJSON(p)
	}
	s.mu.Unlock()
	if p == nil {
		notFound(w)
		return
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) importTasks(w http.ResponseWriter, r *http.Request, after *Fault) {
	start := time.Now()
	id, ok := pathID(w, r)
	if !ok {
		return
	}
	s.mu.Lock()
	_, exists := s.projects[id]
	s.mu.Unlock()
	if !exists {
		notFound(w)
		return
	}
	var raw json.RawMessage
	if err := json.NewDecoder(r.Body).Decode(&raw); err != nil {
		validationError(w, map[string]any{"non_field_errors": []string{"Can't parse JSON: " + err.Error()}})
		return
	}
	var items []json.RawMessage
	if raw = bytes.TrimSpace(raw); len(raw) > 0 && raw[0] == '{' {
		items = []json.RawMessage{raw}
	} else if err := json.Unmarshal(raw, &items); err != nil {
		validationError(w, map[string]any{"non_field_errors": []string{"Data should be a list of tasks or a task"}})
		return
	}
	if len(items) == 0 {
		validationError(w, map[string]any{"non_field_errors": []string{"No tasks found in uploaded data"}})
		return
	}
	type parsed struct {
		data, meta  json.RawMessage
		annotations []json.RawMessage
		predictions []json.RawMessage
	}
	tasks := make([]parsed, len(items))
	var reasons []map[string]any
	s.mu.Lock()
	reject := s.reject
	s.mu.Unlock()
	for i, item := range items {
		var fields map[string]json.RawMessage
		if err := json.Unmarshal(item, &fields); err != nil || fields == nil {
			reasons = append(reasons, map[string]any{"index": i, "error": "task is not a JSON object"})
			continue
		}
		p := parsed{data: item}
		if d, ok := fields["data"]; ok {
			if d = bytes.TrimSpace(d); len(d) == 0 || d[0] != '{' {
				reasons = append(reasons, map[string]any{"index": i, "data": []string{"Value must be valid JSON object."}})
				continue
			}
			p.data, p.meta = d, fields["meta"]
			_ = json.Unmarshal(fields["annotations"], &p.annotations)
			_ = json.Unmarshal(fields["predictions"], &p.predictions)
		}
		if m := bytes.TrimSpace(p.meta); len(m) > 0 && !bytes.Equal(m, []byte("null")) && m[0] != '{' {
			reasons = append(reasons, map[string]any{"index": i, "meta": []string{"Value must be valid JSON object."}})
			continue
		}
		if reject != nil {
			if why := reject(p.data); why != "" {
				reasons = append(reasons, map[string]any{"index": i, "data": []string{why}})
				continue
			}
		}
		tasks[i] = p
	}
	s.sleep(r.Context(), len(items))
	if len(reasons) > 0 {
		// The whole array is refused, and the ids the insert drew are
		// gone, as with a PostgreSQL sequence.
		s.mu.Lock()
		s.nextTask += int64(len(items))
		s.mu.Unlock()
		validationError(w, map[string]any{"tasks": reasons})
		return
	}
	commit := r.URL.Query().Get("commit_to_project") != "false" && r.URL.Query().Get("commit_to_project") != "0"
	var ids []int64
	annotations := 0
	create := func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		p := s.projects[id]
		now := time.Now().UTC()
		for _, t := range tasks {
			task := &Task{ID: s.nextTask, Project: id, Data: t.data, Meta: t.meta, CreatedAt: now, UpdatedAt: now, InnerID: p.nextInner}
			s.nextTask++
			p.nextInner++
			for _, a := range t.annotations {
				task.Annotations = append(task.Annotations, s.newAnnotation(a, task))
				annotations++
			}
			task.Predictions = t.predictions
			s.tasks[task.ID] = task
			ids = append(ids, task.ID)
		}
	}
	if after != nil && after.LateCommit > 0 {
		misbehave(w, *after)
		if commit {
			time.AfterFunc(after.LateCommit, create)
		}
		return
	}
	if commit {
		create()
	}
	if after != nil {
		misbehave(w, *after)
		return
	}
	out := map[string]any{
		"task_count": len(items), "annotation_count": annotations, "prediction_count": 0,
		"duration": time.Since(start).Seconds(), "file_upload_ids": []int{}, "could_be_tasks_list": false,
		"found_formats": []string{}, "data_columns": []string{},
	}
	if !commit {
		out["annotation_count"], out["prediction_count"] = nil, nil
	}
	if v := r.URL.Query().Get("return_task_ids"); commit && (v == "true" || v == "1" || v == "True") {
		if ids == nil {
			ids = []int64{}
		}
		out["task_ids"] = ids
	}
	writeJSON(w, http.StatusCreated, out)
}

// newAnnotation stores an imported annotation's fields with an id.
func (s *Server) newAnnotation(raw json.RawMessage, t *Task) json.RawMessage {
	fields := map[string]any{}
	_ = json.Unmarshal(raw, &fields)
	now := lsTime(time.Now())
	fields["id"] = s.nextAnn
	s.nextAnn++
	fields["task"], fields["project"] = t.ID, t.Project
	if _, ok := fields["created_at"]; !ok {
		fields["created_at"] = now
	}
	if _, ok := fields["updated_at"]; !ok {
		fields["updated_at"] = now
	}
	b, _ := json.Marshal(fields)
	return b
}

func (s *Server) listTasks(w http.ResponseWriter, r *http.Request, after *Fault) {
	page, size, ok := paging(w, r, 100)
	if !ok {
		return
	}
	q := r.URL.Query()
	var project int64
	if v := q.Get("project"); v != "" {
		var err error
		if project, err = strconv.ParseInt(v, 10, 64); err != nil {
			writeJSON(w, http.StatusBadRequest, map[string]any{"detail": "project must be an integer"})
			return
		}
	}
	var dq struct {
		Filters *struct {
			Conjunction string `json:"conjunction"`
			Items       []struct {
				Filter   string          `json:"filter"`
				Operator string          `json:"operator"`
				Type     string          `json:"type"`
				Value    json.RawMessage `json:"value"`
			} `json:"items"`
		} `json:"filters"`
		Ordering []string `json:"ordering"`
	}
	if v := q.Get("query"); v != "" {
		if err := json.Unmarshal([]byte(v), &dq); err != nil {
			writeJSON(w, http.StatusBadRequest, map[string]any{"detail": "query: " + err.Error()})
			return
		}
	}
	all := q.Get("fields") == "all"
	s.mu.Lock()
	var sel []*Task
	for _, t := range s.tasks {
		if project != 0 && t.Project != project {
			continue
		}
		keep := true
		if dq.Filters != nil && len(dq.Filters.Items) > 0 {
			or := dq.Filters.Conjunction == "or"
			keep = !or
			for _, f := range dq.Filters.Items {
				m, err := match(t, f.Filter, f.Operator, f.Value)
				if err != nil {
					s.mu.Unlock()
					writeJSON(w, http.StatusBadRequest, map[string]any{"detail": err.Error()})
					return
				}
				if or {
					keep = keep || m
				} else {
					keep = keep && m
				}
			}
		}
		if keep {
			sel = append(sel, t)
		}
	}
	desc := len(dq.Ordering) > 0 && dq.Ordering[0] == "-tasks:id"
	slices.SortFunc(sel, func(a, b *Task) int {
		if desc {
			return int(b.ID - a.ID)
		}
		return int(a.ID - b.ID)
	})
	lo := (page - 1) * size
	if lo >= len(sel) && page > 1 {
		s.mu.Unlock()
		writeJSON(w, http.StatusNotFound, map[string]any{"detail": "Invalid page."})
		return
	}
	totalAnn, totalPred := 0, 0
	for _, t := range sel {
		totalAnn += len(t.Annotations)
		totalPred += len(t.Predictions)
	}
	out := make([]map[string]any, 0, size)
	for _, t := range sel[min(lo, len(sel)):min(lo+size, len(sel))] {
		out = append(out, taskJSON(t, all))
	}
	total := len(sel)
	s.mu.Unlock()
	s.sleep(r.Context(), 0)
	writeJSON(w, http.StatusOK, map[string]any{"tasks": out, "total": total, "total_annotations": totalAnn, "total_predictions": totalPred})
}

// match applies one Data Manager filter to t.
func match(t *Task, filter, op string, value json.RawMessage) (bool, error) {
	field, ok := strings.CutPrefix(filter, "filter:tasks:")
	if !ok {
		return true, nil // annotation filters: not modelled, match all
	}
	if key, ok := strings.CutPrefix(field, "data."); ok {
		var data map[string]json.RawMessage
		_ = json.Unmarshal(t.Data, &data)
		got, present := data[key]
		var want, have any
		_ = json.Unmarshal(value, &want)
		_ = json.Unmarshal(got, &have)
		switch op {
		case "equal":
			return present && fmt.Sprint(have) == fmt.Sprint(want), nil
		case "not_equal":
			return !present || fmt.Sprint(have) != fmt.Sprint(want), nil
		case "contains":
			return present && strings.Contains(strings.ToLower(fmt.Sprint(have)), strings.ToLower(fmt.Sprint(want))), nil
		case "not_contains":
			return !present || !strings.Contains(strings.ToLower(fmt.Sprint(have)), strings.ToLower(fmt.Sprint(want))), nil
		}
		return false, fmt.Errorf("operator %q is not supported on %s", op, filter)
	}
	if field != "id" {
		return false, fmt.Errorf("filter %s is not supported by the stand-in", filter)
	}
	var v float64
	if err := json.Unmarshal(value, &v); err != nil {
		return false, fmt.Errorf("filter %s: value %s is not a number", filter, value)
	}
	id := float64(t.ID)
	switch op {
	case "equal":
		return id == v, nil
	case "not_equal":
		return id != v, nil
	case "less":
		return id < v, nil
	case "greater":
		return id > v, nil
	case "less_or_equal":
		return id <= v, nil
	case "greater_or_equal":
		return id >= v, nil
	}
	return false, fmt.Errorf("operator %q is not supported on %s", op, filter)
}

func taskJSON(t *Task, withAnnotations bool) map[string]any {
	meta := t.Meta
	if len(meta) == 0 || bytes.Equal(meta, []byte("null")) {
		meta = json.RawMessage(`{}`)
	}
	out := map[string]any{
		"id": t.ID, "data": t.Data, "meta": meta, "project": t.Project, "inner_id": t.InnerID,
		"created_at": lsTime(t.CreatedAt), "updated_at": lsTime(t.UpdatedAt), "is_labeled": len(t.Annotations) > 0,
		"overlap": 1, "file_upload": nil, "total_annotations": len(t.Annotations), "cancelled_annotations": 0,
		"total_predictions": len(t.Predictions),
	}
	if withAnnotations {
		out["annotations"] = orEmpty(t.Annotations)
		out["predictions"] = orEmpty(t.Predictions)
	}
	return out
}

func orEmpty(v []json.RawMessage) []json.RawMessage {
	if v == nil {
		return []json.RawMessage{}
	}
	return v
}

func (s *Server) task(w http.ResponseWriter, r *http.Request) (*Task, bool) {
	id, ok := pathID(w, r)
	if !ok {
		return nil, false
	}
	s.mu.Lock()
	t := s.tasks[id]
	s.mu.Unlock()
	if t == nil {
		notFound(w)
		return nil, false
	}
	return t, true
}

func (s *Server) getTask(w http.ResponseWriter, r *http.Request, after *Fault) {
	t, ok := s.task(w, r)
	if !ok {
		return
	}
	s.mu.Lock()
	out := taskJSON(t, true)
	s.mu.Unlock()
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) taskAnnotations(w http.ResponseWriter, r *http.Request, after *Fault) {
	t, ok := s.task(w, r)
	if !ok {
		return
	}
	s.mu.Lock()
	out := orEmpty(slices.Clone(t.Annotations))
	s.mu.Unlock()
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) patchTask(w http.ResponseWriter, r *http.Request, after *Fault) {
	var body map[string]json.RawMessage
	if err := json.NewDecoder(r.Body).Decode(&body); err != nil {
		validationError(w, map[string]any{"non_field_errors": []string{"Invalid data. Expected a dictionary."}})
		return
	}
	for _, k := range []string{"data", "meta"} {
		if v, ok := body[k]; ok {
			if v = bytes.TrimSpace(v); len(v) == 0 || v[0] != '{' {
				validationError(w, map[string]any{k: []string{"Value must be valid JSON object."}})
				return
			}
		}
	}
	s.mu.Lock()
	reject := s.reject
	s.mu.Unlock()
	if d, ok := body["data"]; ok && reject != nil {
		if why := reject(d); why != "" {
			validationError(w, map[string]any{"data": []string{why}})
			return
		}
	}
	s.sleep(r.Context(), 0)
	t, ok := s.task(w, r)
	if !ok {
		return
	}
	s.mu.Lock()
	if d, ok := body["data"]; ok {
		t.Data = d
	}
	if m, ok := body["meta"]; ok {
		t.Meta = m
	}
	t.UpdatedAt = time.Now().UTC()
	out := taskJSON(t, false)
	s.mu.Unlock()
	if after != nil {
		misbehave(w, *after)
		return
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) deleteTask(w http.ResponseWriter, r *http.Request, after *Fault) {
	s.sleep(r.Context(), 0)
	t, ok := s.task(w, r)
	if !ok {
		return
	}
	s.mu.Lock()
	delete(s.tasks, t.ID)
	s.mu.Unlock()
	if after != nil {
		misbehave(w, *after)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// webhookActions are Label Studio's WebhookAction.ACTIONS keys.
var webhookActions = []string{
	"PROJECT_CREATED", "PROJECT_UPDATED", "PROJECT_DELETED", "TASKS_CREATED", "TASKS_DELETED",
	"ANNOTATION_CREATED", "ANNOTATIONS_CREATED", "ANNOTATION_UPDATED", "ANNOTATIONS_DELETED",
	"LABEL_LINK_CREATED", "LABEL_LINK_UPDATED", "LABEL_LINK_DELETED", "REVIEW_CREATED", "REVIEW_UPDATED", "REVIEWS_DELETED",
}

func (s *Server) listWebhooks(w http.ResponseWriter, r *http.Request, after *Fault) {
	var project int64
	if v := r.URL.Query().Get("project"); v != "" {
		var err error
		if project, err = strconv.ParseInt(v, 10, 64); err != nil {
			writeJSON(w, http.StatusBadRequest, map[string]any{"project": []string{"Select a valid choice. That choice is not one of the available choices."}})
			return
		}
	}
	s.mu.Lock()
	out := []*webhook{}
	for _, id := range sortedKeys(s.webhooks) {
		h := s.webhooks[id]
		if project == 0 || (h.Project != nil && *h.Project == project) {
			c := *h
			out = append(out, &c)
		}
	}
	s.mu.Unlock()
	writeJSON(w, http.StatusOK, out)
}

// webhookFields is a create or PATCH body.
type webhookFields struct {
	Project           *int64             `json:"project"`
	URL               *string            `json:"url"`
	SendPayload       *bool              `json:"send_payload"`
	SendForAllActions *bool              `json:"send_for_all_actions"`
	Headers           *map[string]string `json:"headers"`
	IsActive          *bool              `json:"is_active"`
	Actions           *[]string          `json:"actions"`
}

func (s *Server) validWebhook(w http.ResponseWriter, f webhookFields) bool {
	if f.URL != nil && !strings.HasPrefix(*f.URL, "http://") && !strings.HasPrefix(*f.URL, "https://") {
		validationError(w, map[string]any{"url": []string{"Enter a valid URL."}})
		return false
	}
	if f.Actions != nil {
		for _, a := range *f.Actions {
			if !slices.Contains(webhookActions, a) {
				validationError(w, map[string]any{"actions": map[string][]string{"0": {fmt.Sprintf("%q is not a valid choice.", a)}}})
				return false
			}
		}
	}
	return true
}

func (s *Server) createWebhook(w http.ResponseWriter, r *http.Request, after *Fault) {
	var f webhookFields
	if err := json.NewDecoder(r.Body).Decode(&f); err != nil {
		validationError(w, map[string]any{"non_field_errors": []string{err.Error()}})
		return
	}
	if f.URL == nil || *f.URL == "" {
		validationError(w, map[string]any{"url": []string{"This field is required."}})
		return
	}
	if !s.validWebhook(w, f) {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if f.Project == nil || s.projects[*f.Project] == nil {
		writeJSON(w, http.StatusNotFound, map[string]any{"detail": "Project not found."})
		return
	}
	now := lsTime(time.Now())
	h := &webhook{ID: s.nextHook, Organization: 1, Project: f.Project, URL: *f.URL, SendPayload: true, IsActive: true,
		Headers: map[string]string{}, Actions: []string{}, CreatedAt: now, UpdatedAt: now}
	s.nextHook++
	applyWebhook(h, f)
	s.webhooks[h.ID] = h
	writeJSON(w, http.StatusCreated, h)
}

func applyWebhook(h *webhook, f webhookFields) {
	if f.URL != nil {
		h.URL = *f.URL
	}
	if f.SendPayload != nil {
		h.SendPayload = *f.SendPayload
	}
	if f.SendForAllActions != nil {
		h.SendForAllActions = *f.SendForAllActions
	}
	if f.Headers != nil {
		h.Headers = *f.Headers
	}
	if f.IsActive != nil {
		h.IsActive = *f.IsActive
	}
	if f.Actions != nil {
		h.Actions = *f.Actions
	}
	h.UpdatedAt = lsTime(time.Now())
}

func (s *Server) getWebhook(w http.ResponseWriter, r *http.Request, after *Fault) {
	id, ok := pathID(w, r)
	if !ok {
		return
	}
	s.mu.Lock()
	h := s.webhooks[id]
	s.mu.Unlock()
	if h == nil {
		notFound(w)
		return
	}
	writeJSON(w, http.StatusOK, h)
}

func (s *Server) patchWebhook(w http.ResponseWriter, r *http.Request, after *Fault) {
	id, ok := pathID(w, r)
	if !ok {
		return
	}
	var f webhookFields
	if err := json.NewDecoder(r.Body).Decode(&f); err != nil {
		validationError(w, map[string]any{"non_field_errors": []string{err.Error()}})
		return
	}
	if !s.validWebhook(w, f) {
		return
	}
	f.Project = nil // read-only on update (WebhookSerializerForUpdate)
	s.mu.Lock()
	defer s.mu.Unlock()
	h := s.webhooks[id]
	if h == nil {
		notFound(w)
		return
	}
	applyWebhook(h, f)
	writeJSON(w, http.StatusOK, h)
}

func (s *Server) deleteWebhook(w http.ResponseWriter, r *http.Request, after *Fault) {
	id, ok := pathID(w, r)
	if !ok {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.webhooks[id] == nil {
		notFound(w)
		return
	}
	delete(s.webhooks, id)
	w.WriteHeader(http.StatusNoContent)
}

// Annotate adds an annotation with result (a JSON list of regions) to a
// task, as an annotator submitting it in Label Studio, and sends
// ANNOTATION_CREATED to the project's active webhooks that ask for it. It
// returns the annotation's id, and an error if a webhook did not answer
// 2xx.
func (s *Server) Annotate(ctx context.Context, taskID int64, result json.RawMessage) (int64, error) {
	s.mu.Lock()
	t := s.tasks[taskID]
	if t == nil {
		s.mu.Unlock()
		return 0, fmt.Errorf("lsstub: task %d does not exist", taskID)
	}
	now := time.Now().UTC()
	id := s.nextAnn
	s.nextAnn++
	ann, _ := json.Marshal(map[string]any{
		"id": id, "result": result, "was_cancelled": false, "ground_truth": false,
		"created_at": lsTime(now), "updated_at": lsTime(now), "lead_time": 1.5, "last_action": "submitted",
		"task": t.ID, "project": t.Project, "completed_by": 1, "updated_by": 1,
	})
	t.Annotations = append(t.Annotations, ann)
	t.UpdatedAt = now
	task, _ := json.Marshal(taskJSON(t, false))
	proj, _ := json.Marshal(s.projectJSON(s.projects[t.Project]))
	var hooks []webhook
	for _, hid := range sortedKeys(s.webhooks) {
		h := s.webhooks[hid]
		if h.IsActive && h.Project != nil && *h.Project == t.Project && (h.SendForAllActions || slices.Contains(h.Actions, "ANNOTATION_CREATED")) {
			hooks = append(hooks, *h)
		}
	}
	s.mu.Unlock()
	for _, h := range hooks {
		payload := []byte(`{"action":"ANNOTATION_CREATED"}`)
		if h.SendPayload {
			payload, _ = json.Marshal(map[string]json.RawMessage{"action": json.RawMessage(`"ANNOTATION_CREATED"`), "annotation": ann, "task": task, "project": proj})
		}
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, h.URL, bytes.NewReader(payload))
		if err != nil {
			return id, err
		}
		req.Header.Set("Content-Type", "application/json")
		for k, v := range h.Headers {
			req.Header.Set(k, v)
		}
		resp, err := s.hc.Do(req)
		if err != nil {
			return id, fmt.Errorf("lsstub: webhook %d: %w", h.ID, err)
		}
		_ = resp.Body.Close()
		if resp.StatusCode < 200 || resp.StatusCode > 299 {
			return id, fmt.Errorf("lsstub: webhook %d: %s answered %s", h.ID, h.URL, resp.Status)
		}
	}
	return id, nil
}

func paging(w http.ResponseWriter, r *http.Request, defaultSize int) (page, size int, ok bool) {
	page, size = 1, defaultSize
	q := r.URL.Query()
	var err error
	if v := q.Get("page"); v != "" {
		if page, err = strconv.Atoi(v); err != nil || page < 1 {
			writeJSON(w, http.StatusNotFound, map[string]any{"detail": "Invalid page."})
			return 0, 0, false
		}
	}
	if v := q.Get("page_size"); v != "" {
		if n, err := strconv.Atoi(v); err == nil && n > 0 {
			size = n
		}
	}
	return page, size, true
}

func pathID(w http.ResponseWriter, r *http.Request) (int64, bool) {
	id, err := strconv.ParseInt(r.PathValue("id"), 10, 64)
	if err != nil || id <= 0 {
		notFound(w)
		return 0, false
	}
	return id, true
}

func notFound(w http.ResponseWriter) {
	writeJSON(w, http.StatusNotFound, map[string]any{"detail": "Not found."})
}

// validationError answers 400 the way Label Studio's exception handler
// does.
func validationError(w http.ResponseWriter, errs map[string]any) {
	writeJSON(w, http.StatusBadRequest, map[string]any{
		"id": randomHex(16), "status_code": 400, "version": "lsstub", "detail": "Validation error",
		"exc_info": nil, "validation_errors": errs,
	})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// lsTime is how Django REST framework writes times.
func lsTime(t time.Time) string { return t.UTC().Format("2006-01-02T15:04:05.000000Z") }

func jwt(claims map[string]any) string {
	enc := base64.RawURLEncoding
	head, _ := json.Marshal(map[string]string{"alg": "HS256", "typ": "JWT"})
	body, _ := json.Marshal(claims)
	return enc.EncodeToString(head) + "." + enc.EncodeToString(body) + "." + enc.EncodeToString([]byte(randomHex(16)))
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

func sortedKeys[V any](m map[int64]V) []int64 {
	keys := make([]int64, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
