package webhook

import (
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/labelsync/labelsync/internal/annotation"
)

// A hint decides as the stored headers say: nothing replaces a delete, a
// delete replaces anything else, and a change replaces an older one (to
// the nanosecond) or one whose time cannot be read. A hint made from the
// event publish stored equals the one read back from its headers.
func TestSubjectHint(t *testing.T) {
	at := time.Date(2026, 11, 27, 14, 31, 10, 123456000, time.UTC)
	change := func(action string, t time.Time) annotation.Event {
		return annotation.Event{Action: action, Project: 7, AnnotationID: 17, UpdatedAt: t}
	}
	header := func(kv ...string) nats.Header {
		h := nats.Header{}
		for i := 0; i < len(kv); i += 2 {
			h.Set(kv[i], kv[i+1])
		}
		return h
	}
	stored := header(hdrUpdatedAt, at.Format(time.RFC3339Nano))
	for _, tt := range []struct {
		name string
		hdr  nats.Header
		ev   annotation.Event
		want bool
	}{
		{"newer by a microsecond", stored, change(annotation.Updated, at.Add(time.Microsecond)), true},
		{"as old", stored, change(annotation.Updated, at), false},
		{"older", stored, change(annotation.Updated, at.Add(-time.Second)), false},
		{"a delete", stored, change(annotation.Deleted, time.Time{}), true},
		{"after a delete", header(hdrDeleted, "true"), change(annotation.Updated, at.Add(time.Hour)), false},
		{"a delete after a delete", header(hdrDeleted, "true"), change(annotation.Deleted, time.Time{}), false},
		{"unreadable time", header(hdrUpdatedAt, "yesterday"), change(annotation.Updated, at.Add(-time.Hour)), true},
		{"no headers", nats.Header{}, change(annotation.Created, time.Time{}), true},
		{"no time over a zero time", header(hdrUpdatedAt, time.Time{}.Format(time.RFC3339Nano)), change(annotation.Created, time.Time{}), false},
	} {
		if got := hintOf(5, tt.hdr).replacedBy(tt.ev); got != tt.want {
			t.Errorf("%s: replacedBy = %v, want %v", tt.name, got, tt.want)
		}
	}
	for _, ev := range []annotation.Event{change(annotation.Created, at), change(annotation.Deleted, time.Time{}), change(annotation.Updated, time.Time{})} {
		hdr := nats.Header{}
		if ev.Action == annotation.Deleted {
			hdr.Set(hdrDeleted, "true")
		} else {
			hdr.Set(hdrUpdatedAt, ev.UpdatedAt.UTC().Format(time.RFC3339Nano))
		}
		if got, want := hintFor(9, ev), hintOf(9, hdr); got != want {
			t.Errorf("hintFor(%s at %v) = %+v, read back %+v", ev.Action, ev.UpdatedAt, got, want)
		}
	}
}
