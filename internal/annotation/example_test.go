package annotation_test

import (
	"errors"
	"fmt"

	"github.com/labelsync/labelsync/internal/annotation"
	"github.com/labelsync/labelsync/internal/fault"
)

func ExampleDecode() {
	// What Label Studio posts when annotation 101 is submitted on task 42
	// (task and project trimmed to a few of their fields).
	body := []byte(`{
	  "action": "ANNOTATION_CREATED",
	  "annotation": {"id": 101, "result": [{"value": {"choices": ["cat"]},
	    "from_name": "label", "to_name": "image", "type": "choices"}],
	    "created_at": "2026-11-27T14:31:10.123456Z",
	    "updated_at": "2026-11-27T14:31:10.123456Z", "task": 42, "project": 7},
	  "task": {"id": 42, "data": {"image": "gs://acme-raw/incoming/cat 1.jpg"}, "project": 7},
	  "project": {"id": 7, "title": "Cats"}}`)

	action, events, err := annotation.Decode(body)
	switch {
	case errors.Is(err, annotation.ErrSkipped):
		fmt.Println("not an annotation change:", action) // answer 200, count it
		return
	case fault.IsPermanent(err):
		fmt.Println("dead-letter:", err) // malformed: retrying cannot help
		return
	}
	for _, e := range events {
		fmt.Println(e.Action, "project", e.Project, "annotation", e.AnnotationID, "task", e.TaskID)
		fmt.Println("updated", e.UpdatedAt.Format("2006-01-02T15:04:05.000000Z07:00"))
		fmt.Println("subject", e.Subject())
		fmt.Printf("%s\n", e.Annotation)
	}

	_, _, err = annotation.Decode([]byte(`{"action": "ANNOTATION_UPDATED", "annotation": {"task": 42}, "project": {"id": 7}}`))
	fmt.Println(fault.CodeOf(err), err)
	// Output:
	// ANNOTATION_CREATED project 7 annotation 101 task 42
	// updated 2026-11-27T14:31:10.123456Z
	// subject labelsync.annotations.7.101
	// {"id":101,"result":[{"value":{"choices":["cat"]},"from_name":"label","to_name":"image","type":"choices"}],"created_at":"2026-11-27T14:31:10.123456Z","updated_at":"2026-11-27T14:31:10.123456Z","task":42,"project":7}
	// bad_input annotation: ANNOTATION_UPDATED without annotation.id
}
