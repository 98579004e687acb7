package ingest

import (
	"testing"

	"github.com/labelsync/labelsync/internal/events"
	"github.com/labelsync/labelsync/internal/metrics"
	"github.com/labelsync/labelsync/internal/taskbus"
)

func TestDecide(t *testing.T) {
	t.Parallel()
	none := taskbus.Head{}
	live := func(g int64) taskbus.Head { return taskbus.Head{Seq: 9, Generation: g, Kind: taskbus.Updated} }
	deleted := func(g int64) taskbus.Head { return taskbus.Head{Seq: 9, Generation: g, Kind: taskbus.Deleted} }
	tomb := func(g int64) taskbus.Head { return taskbus.Head{Seq: 9, Generation: g, Kind: taskbus.Tombstone} }
	present := func(g int64) Observation { return Observation{Present: true, Generation: g} }
	gone := func(g int64) Observation { return Observation{Present: false, Generation: g} }
	emitted := func(k taskbus.Kind) Decision { return Decision{Kind: k, Outcome: metrics.OutcomeEmitted} }
	tests := []struct {
		name string
		head taskbus.Head
		obs  Observation
		want Decision
	}{
		{"first generation is created", none, present(5), emitted(taskbus.Created)},
		{"same generation again is a duplicate", live(5), present(5), Decision{Outcome: metrics.OutcomeDuplicate}},
		{"newer generation of a live key is updated", live(5), present(6), emitted(taskbus.Updated)},
		{"older generation is stale", live(6), present(5), Decision{Outcome: metrics.OutcomeStale}},
		{"delete of the imported generation", live(5), gone(5), emitted(taskbus.Deleted)},
		{"delete of an older generation is stale", live(6), gone(5), Decision{Outcome: metrics.OutcomeStale}},
		{"delete of a newer generation deletes the task", live(5), gone(6), emitted(taskbus.Deleted)},
		{"delete again is a duplicate", deleted(5), gone(5), Decision{Outcome: metrics.OutcomeDuplicate}},
		{"finalize after its delete is stale", deleted(5), present(5), Decision{Outcome: metrics.OutcomeStale}},
		{"re-upload after delete is created", deleted(5), present(7), emitted(taskbus.Created)},
		{"delete before any finalize leaves a tombstone", none, gone(5), Decision{Kind: taskbus.Tombstone, Outcome: metrics.OutcomeStale}},
		{"finalize behind a tombstone is stale", tomb(5), present(5), Decision{Outcome: metrics.OutcomeStale}},
		{"newer finalize after a tombstone is created", tomb(5), present(6), emitted(taskbus.Created)},
		{"newer delete of a deleted key moves the tombstone", deleted(5), gone(6), Decision{Kind: taskbus.Tombstone, Outcome: metrics.OutcomeStale}},
		{"duplicate delete behind a tombstone", tomb(5), gone(5), Decision{Outcome: metrics.OutcomeDuplicate}},
	}
	for _, tt := range tests {
		if got := Decide(tt.head, tt.obs); got != tt.want {
			t.Errorf("%s: Decide(%+v, %+v) = %+v, want %+v", tt.name, tt.head, tt.obs, got, tt.want)
		}
	}
}

func TestObservationOf(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		obj    events.Object
		want   Observation
		wantOK bool
	}{
		{"finalize", events.Object{EventType: events.Finalize, Generation: 2}, Observation{Present: true, Generation: 2, Source: SourceNotification}, true},
		{"finalize of an overwrite", events.Object{EventType: events.Finalize, Generation: 2, OverwroteGeneration: 1}, Observation{Present: true, Generation: 2, Source: SourceNotification, Overwrite: true}, true},
		{"delete of an overwrite names the new generation", events.Object{EventType: events.Delete, Generation: 1, OverwrittenByGeneration: 2}, Observation{Present: true, Generation: 2, Source: SourceNotification, Overwrite: true}, true},
		{"archive of an overwrite", events.Object{EventType: events.Archive, Generation: 1, OverwrittenByGeneration: 2}, Observation{Present: true, Generation: 2, Source: SourceNotification, Overwrite: true}, true},
		{"real delete", events.Object{EventType: events.Delete, Generation: 1}, Observation{Generation: 1, Source: SourceNotification}, true},
		{"real archive", events.Object{EventType: events.Archive, Generation: 1}, Observation{Generation: 1, Source: SourceNotification}, true},
		{"metadata update says nothing", events.Object{EventType: events.MetadataUpdate, Generation: 1}, Observation{}, false},
	}
	for _, tt := range tests {
		got, ok := ObservationOf(tt.obj)
		if got != tt.want || ok != tt.wantOK {
			t.Errorf("%s: ObservationOf = %+v, %v; want %+v, %v", tt.name, got, ok, tt.want, tt.wantOK)
		}
	}
}
