package annotation_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/labelsync/labelsync/internal/annotation"
	"github.com/labelsync/labelsync/internal/fault"
)

// The fixtures in testdata/ are modelled on what Label Studio sends; ids,
// texts and times are ours.
//
//   - annotation_created.json: the shape of emit_webhooks_for_instance for
//     WebhookAction.ANNOTATION_CREATED in HumanSignal/label-studio
//     label_studio/webhooks/models.py and utils.py: "annotation" is the
//     AnnotationWebhookSerializer (fields '__all__': "task" and "project"
//     are ids), "task" the TaskWebhookSerializer, "project" the
//     ProjectWebhookSerializer with its counters
//     (label_studio/webhooks/serializers_for_hooks.py).
//   - annotation_updated.json: the documented example's shape,
//     https://labelstud.io/guide/webhook_reference#Annotation-Updated
//     (docs/source/guide/webhook_reference.md): no "task" beside the
//     annotation, no annotation.project, project only as payload.project.
//   - annotations_created.json: WebhookAction.ANNOTATIONS_CREATED in
//     models.py ('key': 'annotation', 'many': True, nested 'task' many):
//     "annotation" is a list, "task" the list of their tasks. Emitted by
//     data_manager/actions/predictions_to_annotations.py.
//   - annotations_created_spec.json: SPEC §3's spelling, "annotations" and
//     "tasks", with annotation.task as an object and offsets in the times.
//   - annotations_deleted.json: the documented example,
//     https://labelstud.io/guide/webhook_reference#Annotation-Deleted, and
//     webhooks/utils.py api_webhook_for_delete ([{"id": pk}]).
//   - tasks_created.json, project_updated.json: actions this package skips
//     (same reference page).
func fixture(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func utc(s string) time.Time {
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		panic(err)
	}
	return t.UTC()
}

// sub returns the compact JSON found at path in the fixture (names, or
// indexes into lists), read with the standard library alone.
func sub(t testing.TB, doc []byte, path ...any) json.RawMessage {
	t.Helper()
	raw := json.RawMessage(doc)
	for _, p := range path {
		switch p := p.(type) {
		case string:
			var m map[string]json.RawMessage
			if err := json.Unmarshal(raw, &m); err != nil {
				t.Fatal(err)
			}
			raw = m[p]
		case int:
			var l []json.RawMessage
			if err := json.Unmarshal(raw, &l); err != nil {
				t.Fatal(err)
			}
			raw = l[p]
		}
	}
	var buf bytes.Buffer
	if err := json.Compact(&buf, raw); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func TestDecodeFixtures(t *testing.T) {
	t.Parallel()
	created := fixture(t, "annotation_created.json")
	updated := fixture(t, "annotation_updated.json")
	bulk := fixture(t, "annotations_created.json")
	spec := fixture(t, "annotations_created_spec.json")
	deleted := fixture(t, "annotations_deleted.json")
	tests := []struct {
		file       string
		body       []byte
		wantAction string
		want       []annotation.Event
	}{{
		file: "annotation_created.json", body: created, wantAction: annotation.Created,
		want: []annotation.Event{{
			Action: annotation.Created, Project: 7, AnnotationID: 101, TaskID: 42,
			UpdatedAt:  utc("2026-11-27T14:31:10.123456Z"),
			Annotation: sub(t, created, "annotation"), Task: sub(t, created, "task"),
		}},
	}, {
		file: "annotation_updated.json", body: updated, wantAction: annotation.Updated,
		want: []annotation.Event{{
			Action: annotation.Updated, Project: 1, AnnotationID: 16, TaskID: 5,
			UpdatedAt:  utc("2021-08-17T13:37:25.805479Z"),
			Annotation: sub(t, updated, "annotation"),
		}},
	}, {
		file: "annotations_created.json", body: bulk, wantAction: annotation.BulkCreated,
		want: []annotation.Event{{
			Action: annotation.Created, Project: 7, AnnotationID: 201, TaskID: 51,
			UpdatedAt:  utc("2026-11-28T08:00:00.000123Z"),
			Annotation: sub(t, bulk, "annotation", 0), Task: sub(t, bulk, "task", 0),
		}, {
			Action: annotation.Created, Project: 7, AnnotationID: 202, TaskID: 52,
			UpdatedAt:  utc("2026-11-28T08:00:00.000456Z"),
			Annotation: sub(t, bulk, "annotation", 1), Task: sub(t, bulk, "task", 1),
		}},
	}, {
		file: "annotations_created_spec.json", body: spec, wantAction: annotation.BulkCreated,
		want: []annotation.Event{{
			Action: annotation.Created, Project: 8, AnnotationID: 301, TaskID: 61,
			UpdatedAt:  utc("2026-11-28T08:00:00Z"), // created_at, no updated_at
			Annotation: sub(t, spec, "annotations", 0), Task: sub(t, spec, "annotations", 0, "task"),
		}, {
			Action: annotation.Created, Project: 8, AnnotationID: 302, TaskID: 62,
			UpdatedAt:  utc("2026-11-28T08:00:01.5Z"), // updated_at null
			Annotation: sub(t, spec, "annotations", 1), Task: sub(t, spec, "tasks", 0),
		}},
	}, {
		file: "annotations_deleted.json", body: deleted, wantAction: annotation.Deleted,
		want: []annotation.Event{
			{Action: annotation.Deleted, Project: 2, AnnotationID: 17, Annotation: json.RawMessage(`{"id":17}`)},
			{Action: annotation.Deleted, Project: 2, AnnotationID: 18, Annotation: json.RawMessage(`{"id":18}`)},
		},
	}}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			t.Parallel()
			action, got, err := annotation.Decode(tt.body)
			if err != nil {
				t.Fatalf("Decode() error = %v, want nil", err)
			}
			if action != tt.wantAction {
				t.Errorf("Decode() action = %q, want %q", action, tt.wantAction)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("Decode() events mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

// The annotation is kept as sent: key order, number literals and fields
// this package does not know survive.
func TestDecodeKeepsBytes(t *testing.T) {
	t.Parallel()
	_, got, err := annotation.Decode(fixture(t, "annotation_created.json"))
	if err != nil {
		t.Fatal(err)
	}
	a := string(got[0].Annotation)
	for _, want := range []string{
		`{"id":101,"result":[{"original_width":1024,`,
		`"x":12.500000000000002,"y":30.0,"width":25.125,"height":1e1,`,
		`"lead_time":12.345,`,
		`"import_id":null,`,
		`"project":7}`,
	} {
		if !strings.Contains(a, want) {
			t.Errorf("Annotation = %s, want it to contain %s", a, want)
		}
	}
	if tk := string(got[0].Task); !strings.HasPrefix(tk, `{"id":42,"data":{"image":"gs://acme-raw/incoming/cat 1.jpg"},`) {
		t.Errorf("Task = %s, want the task as sent, compact", tk)
	}
}

// Label Studio may send ids, projects, tasks and times in several forms.
func TestDecodeLiberal(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		body string
		want annotation.Event
	}{{
		name: "project as an id, task as an id beside the annotation",
		body: `{"action":"ANNOTATION_CREATED","annotation":{"id":5,"updated_at":"2024-01-01T12:00:00Z"},"task":9,"project":3}`,
		want: annotation.Event{Action: annotation.Created, Project: 3, AnnotationID: 5, TaskID: 9,
			UpdatedAt: utc("2024-01-01T12:00:00Z"), Annotation: json.RawMessage(`{"id":5,"updated_at":"2024-01-01T12:00:00Z"}`)},
	}, {
		name: "project only in annotation.project",
		body: `{"action":"ANNOTATION_UPDATED","annotation":{"id":5,"task":9,"project":3}}`,
		want: annotation.Event{Action: annotation.Updated, Project: 3, AnnotationID: 5, TaskID: 9,
			Annotation: json.RawMessage(`{"id":5,"task":9,"project":3}`)},
	}, {
		name: "project only in task.project",
		body: `{"action":"ANNOTATION_UPDATED","annotation":{"id":5,"task":9},"task":{"id":9,"project":3}}`,
		want: annotation.Event{Action: annotation.Updated, Project: 3, AnnotationID: 5, TaskID: 9,
			Annotation: json.RawMessage(`{"id":5,"task":9}`), Task: json.RawMessage(`{"id":9,"project":3}`)},
	}, {
		name: "annotation.task as an object",
		body: `{"action":"ANNOTATION_UPDATED","annotation":{"id":5,"task":{"id":9,"project":3,"data":{}}},"project":{"id":3}}`,
		want: annotation.Event{Action: annotation.Updated, Project: 3, AnnotationID: 5, TaskID: 9,
			Annotation: json.RawMessage(`{"id":5,"task":{"id":9,"project":3,"data":{}}}`), Task: json.RawMessage(`{"id":9,"project":3,"data":{}}`)},
	}, {
		name: "null fields count as absent",
		body: `{"action":"ANNOTATION_UPDATED","annotation":{"id":5,"task":null,"project":null,"updated_at":null,"created_at":null},"task":null,"project":{"id":3,"title":"x"}}`,
		want: annotation.Event{Action: annotation.Updated, Project: 3, AnnotationID: 5,
			Annotation: json.RawMessage(`{"id":5,"task":null,"project":null,"updated_at":null,"created_at":null}`)},
	}, {
		name: "ids written as 17.0",
		body: `{"action":"ANNOTATION_UPDATED","annotation":{"id":5.0,"task":9.00},"project":{"id":3.0}}`,
		want: annotation.Event{Action: annotation.Updated, Project: 3, AnnotationID: 5, TaskID: 9,
			Annotation: json.RawMessage(`{"id":5.0,"task":9.00}`)},
	}, {
		name: "pretty-printed annotation is compacted",
		body: "{\n \"action\": \"ANNOTATION_UPDATED\",\n \"annotation\": {\n  \"id\": 5,\n  \"result\": [ 1, 2.50 ]\n },\n \"project\": { \"id\": 3 }\n}\n",
		want: annotation.Event{Action: annotation.Updated, Project: 3, AnnotationID: 5,
			Annotation: json.RawMessage(`{"id":5,"result":[1,2.50]}`)},
	}, {
		name: "bulk with a single object, tasks matched by id not position",
		body: `{"action":"ANNOTATIONS_CREATED","annotation":{"id":5,"task":9},"task":[{"id":8,"project":3},{"id":9,"project":3}]}`,
		want: annotation.Event{Action: annotation.Created, Project: 3, AnnotationID: 5, TaskID: 9,
			Annotation: json.RawMessage(`{"id":5,"task":9}`), Task: json.RawMessage(`{"id":9,"project":3}`)},
	}, {
		name: "delete with the project in the item",
		body: `{"action":"ANNOTATIONS_DELETED","annotations":[{"id":5,"project":3}]}`,
		want: annotation.Event{Action: annotation.Deleted, Project: 3, AnnotationID: 5, Annotation: json.RawMessage(`{"id":5}`)},
	}, {
		name: "delete under annotation, bare id",
		body: `{"action":"ANNOTATIONS_DELETED","annotation":[5],"project":3}`,
		want: annotation.Event{Action: annotation.Deleted, Project: 3, AnnotationID: 5, Annotation: json.RawMessage(`{"id":5}`)},
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, got, err := annotation.Decode([]byte(tt.body))
			if err != nil {
				t.Fatalf("Decode() error = %v, want nil", err)
			}
			if diff := cmp.Diff([]annotation.Event{tt.want}, got); diff != "" {
				t.Errorf("Decode() mismatch (-want +got):\n%s", diff)
			}
			checkRoundTrip(t, got)
		})
	}
}

func TestDecodeTimes(t *testing.T) {
	t.Parallel()
	tests := []struct {
		updatedAt, createdAt string // JSON values, "" for absent
		want                 time.Time
	}{
		{`"2024-01-01T12:00:00.123456Z"`, ``, utc("2024-01-01T12:00:00.123456Z")}, // Django REST framework's default
		{`"2024-01-01T12:00:00Z"`, ``, utc("2024-01-01T12:00:00Z")},               // no fraction (microsecond 0)
		{`"2024-01-01T12:00:00.5Z"`, ``, utc("2024-01-01T12:00:00.5Z")},
		{`"2024-01-01T14:00:00.123456+02:00"`, ``, utc("2024-01-01T12:00:00.123456Z")}, // TIME_ZONE other than UTC
		{`"2024-01-01T07:00:00-05:00"`, ``, utc("2024-01-01T12:00:00Z")},
		{`"2024-01-01T12:00:00.123456789Z"`, ``, utc("2024-01-01T12:00:00.123456789Z")},
		{`"2024-01-01 12:00:00.123456+00:00"`, ``, utc("2024-01-01T12:00:00.123456Z")}, // Python str(datetime)
		{``, `"2024-01-01T12:00:00.000001Z"`, utc("2024-01-01T12:00:00.000001Z")},      // updated_at missing: created_at
		{`null`, `"2024-01-01T12:00:00Z"`, utc("2024-01-01T12:00:00Z")},
		{`""`, `"2024-01-01T12:00:00Z"`, utc("2024-01-01T12:00:00Z")},
		{`"2024-02-01T00:00:00Z"`, `"2024-01-01T00:00:00Z"`, utc("2024-02-01T00:00:00Z")}, // updated_at wins
		{``, ``, time.Time{}},
	}
	for _, tt := range tests {
		t.Run(tt.updatedAt+"/"+tt.createdAt, func(t *testing.T) {
			t.Parallel()
			a := `{"id":5`
			if tt.updatedAt != "" {
				a += `,"updated_at":` + tt.updatedAt
			}
			if tt.createdAt != "" {
				a += `,"created_at":` + tt.createdAt
			}
			a += `}`
			_, got, err := annotation.Decode([]byte(`{"action":"ANNOTATION_UPDATED","annotation":` + a + `,"project":{"id":3}}`))
			if err != nil {
				t.Fatalf("Decode() error = %v, want nil", err)
			}
			if !got[0].UpdatedAt.Equal(tt.want) || got[0].UpdatedAt.Location() != time.UTC {
				t.Errorf("UpdatedAt = %v, want %v in UTC", got[0].UpdatedAt, tt.want)
			}
		})
	}
}

func TestDecodeMalformed(t *testing.T) {
	t.Parallel()
	const (
		ok      = `{"id":5,"task":9,"updated_at":"2024-01-01T12:00:00Z"}`
		project = `"project":{"id":3}`
	)
	tests := []struct {
		name, body string
		want       string // the whole message
	}{
		{"empty body", ``, "annotation: body is not JSON"},
		{"truncated", `{"action":"ANNOTATION_CREATED",`, "annotation: body is not JSON"},
		{"text", `annotation created`, "annotation: body is not JSON"},
		{"list", `[{"action":"ANNOTATION_CREATED"}]`, "annotation: body is not a JSON object"},
		{"string", `"ANNOTATION_CREATED"`, "annotation: body is not a JSON object"},
		{"null", `null`, "annotation: body is not a JSON object"},
		{"no action", `{"annotation":` + ok + `,` + project + `}`, "annotation: body without action"},
		{"null action", `{"action":null}`, "annotation: body without action"},
		{"empty action", `{"action":""}`, "annotation: body without action"},
		{"action not a string", `{"action":17}`, `annotation: action is "17", want a string`},

		{"created without annotation", `{"action":"ANNOTATION_CREATED",` + project + `}`, "annotation: ANNOTATION_CREATED without annotation"},
		{"send_payload false", `{"action":"ANNOTATION_UPDATED"}`, "annotation: ANNOTATION_UPDATED without annotation"},
		{"annotation not an object", `{"action":"ANNOTATION_CREATED","annotation":[` + ok + `],` + project + `}`,
			`annotation: ANNOTATION_CREATED annotation is "[{\"id\":5,\"task\":9,\"updated_at\":\"2024-01-…", want an annotation object`},
		{"no annotation id", `{"action":"ANNOTATION_UPDATED","annotation":{"task":9},` + project + `}`, "annotation: ANNOTATION_UPDATED without annotation.id"},
		{"null annotation id", `{"action":"ANNOTATION_UPDATED","annotation":{"id":null},` + project + `}`, "annotation: ANNOTATION_UPDATED without annotation.id"},
		{"id as a string", `{"action":"ANNOTATION_UPDATED","annotation":{"id":"5"},` + project + `}`, `annotation: ANNOTATION_UPDATED annotation.id is "\"5\"", want a positive integer`},
		{"id zero", `{"action":"ANNOTATION_UPDATED","annotation":{"id":0},` + project + `}`, `annotation: ANNOTATION_UPDATED annotation.id is "0", want a positive integer`},
		{"id negative", `{"action":"ANNOTATION_UPDATED","annotation":{"id":-5},` + project + `}`, `annotation: ANNOTATION_UPDATED annotation.id is "-5", want a positive integer`},
		{"id fraction", `{"action":"ANNOTATION_UPDATED","annotation":{"id":5.5},` + project + `}`, `annotation: ANNOTATION_UPDATED annotation.id is "5.5", want a positive integer`},
		{"id exponent", `{"action":"ANNOTATION_UPDATED","annotation":{"id":5e0},` + project + `}`, `annotation: ANNOTATION_UPDATED annotation.id is "5e0", want a positive integer`},
		{"id too large", `{"action":"ANNOTATION_UPDATED","annotation":{"id":9223372036854775808},` + project + `}`,
			`annotation: ANNOTATION_UPDATED annotation.id is "9223372036854775808", want a positive integer`},
		{"id bool", `{"action":"ANNOTATION_UPDATED","annotation":{"id":true},` + project + `}`, `annotation: ANNOTATION_UPDATED annotation.id is "true", want a positive integer`},

		{"no project anywhere", `{"action":"ANNOTATION_CREATED","annotation":` + ok + `,"task":{"id":9}}`,
			"annotation: ANNOTATION_CREATED annotation 5 without project id (project.id, annotation.project or task.project)"},
		{"project without id", `{"action":"ANNOTATION_CREATED","annotation":` + ok + `,"project":{"title":"x"}}`,
			"annotation: ANNOTATION_CREATED annotation 5 without project id (project.id, annotation.project or task.project)"},
		{"project id a string", `{"action":"ANNOTATION_CREATED","annotation":` + ok + `,"project":{"id":"3"}}`,
			`annotation: ANNOTATION_CREATED project is "{\"id\":\"3\"}", want a project object with a positive integer id`},
		{"project a string", `{"action":"ANNOTATION_CREATED","annotation":` + ok + `,"project":"3"}`,
			`annotation: ANNOTATION_CREATED project is "\"3\"", want a project object with a positive integer id`},
		{"annotation.project bad", `{"action":"ANNOTATION_CREATED","annotation":{"id":5,"project":0},` + project + `}`,
			`annotation: ANNOTATION_CREATED annotation 5 project is "0", want a positive integer`},
		{"task.project bad", `{"action":"ANNOTATION_CREATED","annotation":{"id":5},"task":{"id":9,"project":-1},` + project + `}`,
			`annotation: ANNOTATION_CREATED annotation 5 task.project is "-1", want a positive integer`},
		{"projects disagree", `{"action":"ANNOTATION_CREATED","annotation":{"id":5,"project":4},` + project + `}`,
			"annotation: ANNOTATION_CREATED annotation 5 project ids disagree: project.id 3, annotation.project 4, task.project 0"},
		{"task project disagrees", `{"action":"ANNOTATION_CREATED","annotation":{"id":5,"project":3},"task":{"id":9,"project":4}}`,
			"annotation: ANNOTATION_CREATED annotation 5 project ids disagree: project.id 0, annotation.project 3, task.project 4"},
		{"tasks disagree", `{"action":"ANNOTATION_CREATED","annotation":{"id":5,"task":8},"task":{"id":9},` + project + `}`,
			"annotation: ANNOTATION_CREATED annotation 5 is on task 8, task.id is 9"},
		{"task a string", `{"action":"ANNOTATION_CREATED","annotation":{"id":5},"task":"9",` + project + `}`,
			`annotation: ANNOTATION_CREATED task is "\"9\"", want a task object or a positive integer id`},
		{"annotation.task bad", `{"action":"ANNOTATION_CREATED","annotation":{"id":5,"task":[9]},` + project + `}`,
			`annotation: ANNOTATION_CREATED annotation 5 task is "[9]", want a positive integer id or a task object`},

		{"updated_at not a time", `{"action":"ANNOTATION_UPDATED","annotation":{"id":5,"updated_at":"yesterday"},` + project + `}`,
			`annotation: ANNOTATION_UPDATED annotation 5 updated_at is "\"yesterday\"", want an RFC 3339 time`},
		{"updated_at a number", `{"action":"ANNOTATION_UPDATED","annotation":{"id":5,"updated_at":1704110400},` + project + `}`,
			`annotation: ANNOTATION_UPDATED annotation 5 updated_at is "1704110400", want an RFC 3339 time`},
		{"updated_at without zone", `{"action":"ANNOTATION_UPDATED","annotation":{"id":5,"updated_at":"2024-01-01T12:00:00.123456"},` + project + `}`,
			`annotation: ANNOTATION_UPDATED annotation 5 updated_at is "\"2024-01-01T12:00:00.123456\"", want an RFC 3339 time`},
		{"created_at bad", `{"action":"ANNOTATION_CREATED","annotation":{"id":5,"created_at":"2024-13-01T00:00:00Z"},` + project + `}`,
			`annotation: ANNOTATION_CREATED annotation 5 created_at is "\"2024-13-01T00:00:00Z\"", want an RFC 3339 time`},

		{"bulk without annotations", `{"action":"ANNOTATIONS_CREATED",` + project + `}`, "annotation: ANNOTATIONS_CREATED without annotations"},
		{"bulk empty", `{"action":"ANNOTATIONS_CREATED","annotation":[],` + project + `}`, "annotation: ANNOTATIONS_CREATED without annotations"},
		{"bulk not a list", `{"action":"ANNOTATIONS_CREATED","annotation":5,` + project + `}`, `annotation: ANNOTATIONS_CREATED annotation is "5", want a list`},
		{"bulk both keys", `{"action":"ANNOTATIONS_CREATED","annotation":[` + ok + `],"annotations":[` + ok + `],` + project + `}`,
			"annotation: ANNOTATIONS_CREATED with both annotation and annotations"},
		{"bulk item without id", `{"action":"ANNOTATIONS_CREATED","annotation":[` + ok + `,{"task":9}],` + project + `}`,
			"annotation: ANNOTATIONS_CREATED without annotation[1].id"},
		{"bulk item id bad", `{"action":"ANNOTATIONS_CREATED","annotations":[{"id":-1}],` + project + `}`,
			`annotation: ANNOTATIONS_CREATED annotations[0].id is "-1", want a positive integer`},
		{"bulk task not an object", `{"action":"ANNOTATIONS_CREATED","annotation":[` + ok + `],"task":[9],` + project + `}`,
			`annotation: ANNOTATIONS_CREATED task[0] is "9", want a task object`},
		{"bulk task id bad", `{"action":"ANNOTATIONS_CREATED","annotation":[` + ok + `],"tasks":[{"id":"9"}],` + project + `}`,
			`annotation: ANNOTATIONS_CREATED tasks[0].id is "\"9\"", want a positive integer`},
		{"bulk without project", `{"action":"ANNOTATIONS_CREATED","annotation":[` + ok + `]}`,
			"annotation: ANNOTATIONS_CREATED annotation 5 without project id (project.id, annotation.project or task.project)"},

		// Label Studio's convert-to-draft path emits [pk] after the delete,
		// which serializes to nothing: the body is the action alone.
		{"delete without annotations", `{"action":"ANNOTATIONS_DELETED"}`, "annotation: ANNOTATIONS_DELETED without annotations"},
		{"delete empty", `{"action":"ANNOTATIONS_DELETED","annotations":[],` + project + `}`, "annotation: ANNOTATIONS_DELETED without annotations"},
		{"delete item without id", `{"action":"ANNOTATIONS_DELETED","annotations":[{}],` + project + `}`, "annotation: ANNOTATIONS_DELETED without annotations[0].id"},
		{"delete id zero", `{"action":"ANNOTATIONS_DELETED","annotations":[{"id":0}],` + project + `}`,
			`annotation: ANNOTATIONS_DELETED annotations[0].id is "0", want a positive integer`},
		{"delete item a string", `{"action":"ANNOTATIONS_DELETED","annotations":["17"],` + project + `}`,
			`annotation: ANNOTATIONS_DELETED annotations[0] is "\"17\"", want {"id": N}`},
		{"delete without project", `{"action":"ANNOTATIONS_DELETED","annotations":[{"id":17}]}`,
			"annotation: ANNOTATIONS_DELETED annotation 17 without project id (project.id, annotation.project or task.project)"},
		{"delete project bad", `{"action":"ANNOTATIONS_DELETED","annotations":[{"id":17}],"project":{"id":0}}`,
			`annotation: ANNOTATIONS_DELETED project is "{\"id\":0}", want a project object with a positive integer id`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, got, err := annotation.Decode([]byte(tt.body))
			if err == nil {
				t.Fatalf("Decode() = %+v, nil; want error %q", got, tt.want)
			}
			if got != nil {
				t.Errorf("Decode() events = %+v, want nil on error", got)
			}
			if err.Error() != tt.want {
				t.Errorf("Decode() error = %q, want %q", err, tt.want)
			}
			if code, class := fault.Of(err); code != fault.BadInput || class != fault.ClassPermanent {
				t.Errorf("fault.Of(err) = %v, %v; want %v, permanent", code, class, fault.BadInput)
			}
			if errors.Is(err, annotation.ErrSkipped) {
				t.Errorf("Decode() error %v is ErrSkipped, want a fault", err)
			}
		})
	}
}

func TestDecodeSkipped(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		body []byte
		want string
	}{
		{"tasks_created.json", fixture(t, "tasks_created.json"), "TASKS_CREATED"},
		{"project_updated.json", fixture(t, "project_updated.json"), "PROJECT_UPDATED"},
		{"tasks deleted", []byte(`{"action":"TASKS_DELETED","tasks":[{"id":1}],"project":{"id":2}}`), "TASKS_DELETED"},
		{"label link", []byte(`{"action":"LABEL_LINK_CREATED"}`), "LABEL_LINK_CREATED"},
		{"action alone", []byte(`{"action":"PROJECT_DELETED"}`), "PROJECT_DELETED"},
		{"case matters", []byte(`{"action":"annotation_created","annotation":{"id":5},"project":3}`), "annotation_created"},
		// Never emitted by Label Studio's source (only the docs name it).
		{"singular delete", []byte(`{"action":"ANNOTATION_DELETED","annotation":{"id":5},"project":3}`), "ANNOTATION_DELETED"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			action, got, err := annotation.Decode(tt.body)
			if !errors.Is(err, annotation.ErrSkipped) {
				t.Fatalf("Decode() error = %v, want ErrSkipped", err)
			}
			if action != tt.want || got != nil {
				t.Errorf("Decode() = %q, %+v; want %q, nil", action, got, tt.want)
			}
		})
	}
}

// checkRoundTrip checks that each event's payload decodes to the event alone.
func checkRoundTrip(t *testing.T, events []annotation.Event) {
	t.Helper()
	for _, e := range events {
		p := e.Payload()
		action, got, err := annotation.Decode(p)
		if err != nil {
			t.Fatalf("Decode(%s) error = %v, want nil", p, err)
		}
		if action != e.Action {
			t.Errorf("Decode(%s) action = %q, want %q", p, action, e.Action)
		}
		if diff := cmp.Diff([]annotation.Event{e}, got); diff != "" {
			t.Errorf("Decode(%s) mismatch (-want +got):\n%s", p, diff)
		}
	}
}

func TestRoundTrip(t *testing.T) {
	t.Parallel()
	for _, name := range []string{
		"annotation_created.json", "annotation_updated.json", "annotations_created.json",
		"annotations_created_spec.json", "annotations_deleted.json",
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			_, events, err := annotation.Decode(fixture(t, name))
			if err != nil {
				t.Fatal(err)
			}
			checkRoundTrip(t, events)
		})
	}
}

func TestPayload(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		e    annotation.Event
		want string
	}{{
		name: "created with task",
		e: annotation.Event{Action: annotation.Created, Project: 7, AnnotationID: 101, TaskID: 42,
			Annotation: json.RawMessage(`{"id":101,"task":42}`), Task: json.RawMessage(`{"id":42,"data":{}}`)},
		want: `{"action":"ANNOTATION_CREATED","annotation":{"id":101,"task":42},"task":{"id":42,"data":{}},"project":{"id":7}}`,
	}, {
		name: "updated with a task id only",
		e: annotation.Event{Action: annotation.Updated, Project: 7, AnnotationID: 101, TaskID: 42,
			Annotation: json.RawMessage(`{"id":101}`)},
		want: `{"action":"ANNOTATION_UPDATED","annotation":{"id":101},"task":42,"project":{"id":7}}`,
	}, {
		name: "updated without task",
		e:    annotation.Event{Action: annotation.Updated, Project: 7, AnnotationID: 101, Annotation: json.RawMessage(`{"id":101}`)},
		want: `{"action":"ANNOTATION_UPDATED","annotation":{"id":101},"project":{"id":7}}`,
	}, {
		name: "deleted",
		e:    annotation.Event{Action: annotation.Deleted, Project: 2, AnnotationID: 17, Annotation: json.RawMessage(`{"id":17}`)},
		want: `{"action":"ANNOTATIONS_DELETED","annotations":[{"id":17}],"project":{"id":2}}`,
	}}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if got := string(tt.e.Payload()); got != tt.want {
				t.Errorf("Payload() = %s, want %s", got, tt.want)
			}
		})
	}
}

func TestSubject(t *testing.T) {
	t.Parallel()
	e := annotation.Event{Action: annotation.Created, Project: 7, AnnotationID: 101}
	if got, want := e.Subject(), "labelsync.annotations.7.101"; got != want {
		t.Errorf("Subject() = %q, want %q", got, want)
	}
}
