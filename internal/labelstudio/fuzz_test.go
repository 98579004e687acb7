package labelstudio_test

import (
	"encoding/json"
	"testing"

	"github.com/labelsync/labelsync/internal/labelstudio"
)

// FuzzDecoders feeds every response decoder the same bytes: none may
// panic, and what one accepts must be consistent with what it promises.
func FuzzDecoders(f *testing.F) {
	for _, seed := range []string{
		`{"task_count":2,"annotation_count":0,"prediction_count":0,"duration":0.01,"file_upload_ids":[],"could_be_tasks_list":false,"found_formats":[],"data_columns":[],"task_ids":[17,18]}`,
		`{"task_count":1,"task_ids":[1.0]}`,
		`{"task_ids":[-1]}`,
		`{"tasks":[{"id":3,"data":{"image":"gs://b/k"},"meta":{"labelsync_task_id":"ab"},"project":7,"annotations":[{"id":1}]}],"total":1,"total_annotations":1,"total_predictions":0}`,
		`[{"id":3,"data":null,"meta":null}]`,
		`{"tasks":[{"id":"3"}]}`,
		`{"id":7,"title":"raw"}`,
		`[{"id":1,"organization":1,"project":7,"url":"http://x/","send_payload":true,"send_for_all_actions":false,"headers":{"Authorization":"Bearer s"},"is_active":true,"actions":["ANNOTATION_CREATED"]}]`,
		`{"count":1,"results":[{"id":1,"project":null,"headers":{"n":1}}]}`,
		`{"access":"a.b.c"}`,
		`null`, `[]`, `{}`, `"x"`, `1e400`,
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		if ids, err := labelstudio.DecodeImport(body, 2); err == nil {
			if len(ids) != 2 {
				t.Fatalf("DecodeImport accepted %d ids for 2 tasks", len(ids))
			}
			for _, id := range ids {
				if id <= 0 {
					t.Fatalf("DecodeImport accepted id %d", id)
				}
			}
		}
		if page, err := labelstudio.DecodeTaskPage(body); err == nil {
			for _, task := range page.Tasks {
				if task.ID <= 0 {
					t.Fatalf("DecodeTaskPage accepted id %d", task.ID)
				}
				for _, v := range []json.RawMessage{task.Data, task.Meta} {
					if v != nil && v[0] != '{' {
						t.Fatalf("DecodeTaskPage accepted data or meta %s", v)
					}
				}
				_ = task.LabelsyncTaskID()
			}
		}
		if _, err := labelstudio.DecodeTask(body); err != nil {
			_ = err
		}
		if p, err := labelstudio.DecodeProject(body); err == nil && p.ID <= 0 {
			t.Fatalf("DecodeProject accepted id %d", p.ID)
		}
		if hooks, err := labelstudio.DecodeWebhooks(body); err == nil {
			for _, h := range hooks {
				if h.ID <= 0 || h.Project < 0 {
					t.Fatalf("DecodeWebhooks accepted %+v", h)
				}
			}
		}
		if _, err := labelstudio.DecodeWebhook(body); err != nil {
			_ = err
		}
		if a, err := labelstudio.DecodeAccess(body); err == nil && a == "" {
			t.Fatal("DecodeAccess accepted an empty token")
		}
	})
}

// FuzzImportTask: whatever a task event carries, the import body is a JSON
// object whose meta holds labelsync's ids, or a permanent error.
func FuzzImportTask(f *testing.F) {
	for _, seed := range []string{`{"data":{"a":1}}`, `{"data":{"a":1},"meta":{"x":2}}`, `{"data":{},"meta":[]}`, `{"data":1}`, `[]`, `{"data":{"a":1},"annotations":[{"result":[]}]}`} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, task []byte) {
		out, err := labelstudio.ImportTask(task, labelstudio.Meta{LabelsyncTaskID: "t1", Bucket: "b", Key: "k"})
		if err != nil {
			return
		}
		var got struct {
			Data map[string]json.RawMessage `json:"data"`
			Meta struct {
				ID string `json:"labelsync_task_id"`
			} `json:"meta"`
		}
		if err := json.Unmarshal(out, &got); err != nil || got.Data == nil || got.Meta.ID != "t1" {
			t.Fatalf("ImportTask(%s) = %s (%v)", task, out, err)
		}
	})
}
