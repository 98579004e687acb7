package export_test

import (
	"encoding/json"
	"os"
	"testing"

	"github.com/labelsync/labelsync/internal/annotation"
	"github.com/labelsync/labelsync/internal/export"
)

func TestAnnotationBody(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name             string
		annotation, task string
		want             string
	}{
		{"task replaces the id, in place", `{"id":1,"task":9,"result":[]}`, `{"id":9,"data":{"a":1},"annotations":[{"id":1}]}`,
			`{"id":1,"task":{"id":9,"data":{"a":1}},"result":[]}`},
		{"task added when the annotation has none", `{"id":1,"result":[1.50]}`, `{"id":9}`, `{"id":1,"result":[1.50],"task":{"id":9}}`},
		{"no task object: the id stays", `{"id":1,"task":9}`, ``, `{"id":1,"task":9}`},
		{"a task that is not an object is ignored", `{"id":1,"task":9}`, `9`, `{"id":1,"task":9}`},
		{"duplicates: the last wins", `{"id":1,"x":1,"x":2}`, ``, `{"id":1,"x":2}`},
		{"escaped keys and values kept as sent", `{"id":1,"caf\u00e9":"\u003c"}`, ``, `{"id":1,"caf\u00e9":"\u003c"}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			ev := annotation.Event{Annotation: json.RawMessage(tt.annotation)}
			if tt.task != "" {
				ev.Task = json.RawMessage(tt.task)
			}
			got, err := export.AnnotationBody(ev)
			if err != nil {
				t.Fatal(err)
			}
			if string(got) != tt.want {
				t.Errorf("AnnotationBody = %s, want %s", got, tt.want)
			}
			if !json.Valid(got) {
				t.Errorf("AnnotationBody = %s, not JSON", got)
			}
		})
	}
	for _, bad := range []string{``, `[]`, `"x"`, `{"id":1`} {
		if _, err := export.AnnotationBody(annotation.Event{Annotation: json.RawMessage(bad)}); err == nil {
			t.Errorf("AnnotationBody(%q): no error", bad)
		}
	}
}

// BenchmarkAnnotationBody builds the object body of Label Studio's
// ANNOTATION_UPDATED fixture.
func BenchmarkAnnotationBody(b *testing.B) {
	body, err := os.ReadFile("../annotation/testdata/annotation_updated.json")
	if err != nil {
		b.Fatal(err)
	}
	_, evs, err := annotation.Decode(body)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := export.AnnotationBody(evs[0]); err != nil {
			b.Fatal(err)
		}
	}
}
