package connector

import (
	"context"
	"testing"
	"time"

	"github.com/labelsync/labelsync/internal/natstest"
)

// Closed intents leave purge markers; purgeMarkers removes those old
// enough, and leaves open intents and task entries alone.
func TestPurgeMarkersOfClosedIntents(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	js := natstest.NewBus(t).JetStream()
	s, err := openStore(ctx, js)
	if err != nil {
		t.Fatal(err)
	}
	open, err := s.putIntent(ctx, 7, intent{Tasks: []intentTask{{TaskID: "a", Seq: 1}}})
	if err != nil {
		t.Fatal(err)
	}
	for range 5 {
		key, err := s.putIntent(ctx, 7, intent{Tasks: []intentTask{{TaskID: "b", Seq: 2}}})
		if err != nil {
			t.Fatal(err)
		}
		if err := s.deleteIntent(ctx, key); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := s.put(ctx, "a", entry{ID: 41, Seq: 1, State: statePresent, Project: 7}); err != nil {
		t.Fatal(err)
	}
	subjects := func() uint64 {
		t.Helper()
		st, err := js.Stream(ctx, "KV_"+Bucket)
		if err != nil {
			t.Fatal(err)
		}
		info, err := st.Info(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return info.State.NumSubjects
	}
	if n, err := s.purgeMarkers(ctx, time.Hour); err != nil || n != 0 {
		t.Fatalf("purgeMarkers(an hour) = %d, %v; want none: the markers are new", n, err)
	}
	if got := subjects(); got != 7 {
		t.Fatalf("%d subjects before the sweep, want 7 (an open intent, 5 markers, a task)", got)
	}
	if n, err := s.purgeMarkers(ctx, 0); err != nil || n != 5 {
		t.Fatalf("purgeMarkers(0) = %d, %v; want the 5 markers", n, err)
	}
	if got := subjects(); got != 2 {
		t.Errorf("%d subjects after the sweep, want 2 (the open intent and the task)", got)
	}
	in, err := s.intents(ctx, 7)
	if err != nil || len(in) != 1 || in[open].Tasks[0].TaskID != "a" {
		t.Errorf("open intents after the sweep: %v, %v; want only %s", in, err, open)
	}
	if e, err := s.get(ctx, "a"); err != nil || e.ID != 41 {
		t.Errorf("task entry after the sweep: %+v, %v", e, err)
	}
}
