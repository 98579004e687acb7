package annotation_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/labelsync/labelsync/internal/annotation"
	"github.com/labelsync/labelsync/internal/fault"
)

func FuzzDecode(f *testing.F) {
	annotation.AddFixtures(f)
	for _, s := range []string{
		`{"action":"ANNOTATION_UPDATED","annotation":{"id":5,"task":{"id":9,"project":3}},"task":9}`,
		`{"action":"ANNOTATIONS_CREATED","annotations":{"id":5.0,"created_at":"2024-01-01 12:00:00+01:00"},"tasks":[null,{"id":5,"project":2}],"project":2}`,
		`{"action":"ANNOTATIONS_DELETED","annotation":[5,{"id":6,"project":3}],"project":{"id":3}}`,
		`{"action":"ANNOTATION_CREATED","annotation":{"id":5,"id":6},"project":{"id":1},"project":{"id":2}}`,
		`{"action":"TASKS_CREATED"}`,
		`[]`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		action, events, err := annotation.Decode(body)
		if err != nil {
			if events != nil {
				t.Fatalf("Decode() = %+v, %v; want no events with an error", events, err)
			}
			if errors.Is(err, annotation.ErrSkipped) {
				switch action {
				case "", annotation.Created, annotation.Updated, annotation.BulkCreated, annotation.Deleted:
					t.Fatalf("Decode() skipped action %q", action)
				}
				return
			}
			// A fault whose message becomes a dead letter's reason.
			if code, class := fault.Of(err); code != fault.BadInput || class != fault.ClassPermanent {
				t.Fatalf("Decode() error %v is (%v, %v), want (bad_input, permanent)", err, code, class)
			}
			if msg := err.Error(); !strings.HasPrefix(msg, "annotation: ") || strings.ContainsAny(msg, "\r\n") {
				t.Fatalf("Decode() error = %q, want one line starting with \"annotation: \"", msg)
			}
			return
		}
		if len(events) == 0 {
			t.Fatalf("Decode() = %q, no events, nil error", action)
		}
		for i, e := range events {
			if e.Project <= 0 || e.AnnotationID <= 0 || e.TaskID < 0 {
				t.Fatalf("event %d = %+v, want positive ids", i, e)
			}
			if e.UpdatedAt.Location() != time.UTC {
				t.Fatalf("event %d UpdatedAt = %v, want UTC", i, e.UpdatedAt)
			}
			if !json.Valid(e.Annotation) || (e.Task != nil && !json.Valid(e.Task)) {
				t.Fatalf("event %d = %+v, want JSON annotation and task", i, e)
			}
			for _, raw := range []json.RawMessage{e.Annotation, e.Task} {
				var c bytes.Buffer
				if err := json.Compact(&c, raw); err == nil && !bytes.Equal(c.Bytes(), raw) {
					t.Fatalf("event %d holds %s, want it compact: %s", i, raw, c.Bytes())
				}
			}
			wantAction := action
			if action == annotation.BulkCreated {
				wantAction = annotation.Created
			}
			if e.Action != wantAction {
				t.Fatalf("event %d Action = %q, want %q", i, e.Action, wantAction)
			}
			if e.Action == annotation.Deleted {
				want := annotation.Event{Action: annotation.Deleted, Project: e.Project, AnnotationID: e.AnnotationID,
					Annotation: json.RawMessage(fmt.Sprintf(`{"id":%d}`, e.AnnotationID))}
				if diff := cmp.Diff(want, e); diff != "" {
					t.Fatalf("event %d, a delete, mismatch (-want +got):\n%s", i, diff)
				}
			}
			if got, want := e.Subject(), fmt.Sprintf("labelsync.annotations.%d.%d", e.Project, e.AnnotationID); got != want {
				t.Fatalf("event %d Subject() = %q, want %q", i, got, want)
			}
			p := e.Payload()
			again, got, err := annotation.Decode(p)
			if err != nil {
				t.Fatalf("Decode(Payload()) of event %d = %v; payload %s", i, err, p)
			}
			if again != e.Action {
				t.Fatalf("Decode(%s) action = %q, want %q", p, again, e.Action)
			}
			if diff := cmp.Diff([]annotation.Event{e}, got); diff != "" {
				t.Fatalf("Decode(%s) mismatch (-want +got):\n%s", p, diff)
			}
		}
	})
}
