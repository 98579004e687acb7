package ledger

import (
	"slices"
	"testing"

	"github.com/labelsync/labelsync/internal/events"
)

func TestDecide(t *testing.T) {
	t.Parallel()
	none := Head{}
	live := func(g int64) Head { return Head{Seq: 9, Generation: g, Kind: Updated} }
	deleted := func(g int64) Head { return Head{Seq: 9, Generation: g, Kind: Deleted} }
	tomb := func(g int64) Head { return Head{Seq: 9, Generation: g, Kind: Tombstone} }
	present := func(g int64) Observation { return Observation{Present: true, Generation: g} }
	gone := func(g int64) Observation { return Observation{Present: false, Generation: g} }
	emitted := func(k Kind) Decision { return Decision{Kind: k, Outcome: Emitted} }
	tests := []struct {
		name string
		head Head
		obs  Observation
		want Decision
	}{
		{"first generation is created", none, present(5), emitted(Created)},
		{"same generation again is a duplicate", live(5), present(5), Decision{Outcome: Duplicate}},
		{"newer generation of a live key is updated", live(5), present(6), emitted(Updated)},
		{"older generation is stale", live(6), present(5), Decision{Outcome: Stale}},
		{"delete of the imported generation", live(5), gone(5), emitted(Deleted)},
		{"delete of an older generation is stale", live(6), gone(5), Decision{Outcome: Stale}},
		{"delete of a newer generation deletes the task", live(5), gone(6), emitted(Deleted)},
		{"delete again is a duplicate", deleted(5), gone(5), Decision{Outcome: Duplicate}},
		{"finalize after its delete is stale", deleted(5), present(5), Decision{Outcome: Stale}},
		{"re-upload after delete is created", deleted(5), present(7), emitted(Created)},
		{"delete before any finalize leaves a tombstone", none, gone(5), Decision{Kind: Tombstone, Outcome: Stale}},
		{"finalize behind a tombstone is stale", tomb(5), present(5), Decision{Outcome: Stale}},
		{"newer finalize after a tombstone is created", tomb(5), present(6), emitted(Created)},
		{"newer delete of a deleted key moves the tombstone", deleted(5), gone(6), Decision{Kind: Tombstone, Outcome: Stale}},
		{"duplicate delete behind a tombstone", tomb(5), gone(5), Decision{Outcome: Duplicate}},
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

func TestDecideRow(t *testing.T) {
	t.Parallel()
	const gen = 7
	tests := []struct {
		name string
		head RowHead
		hash string
		want Kind
	}{
		{"a row that never had a task is created", RowHead{}, "h1", Created},
		{"a live row with the same task is unchanged", RowHead{Seq: 3, Generation: 5, Kind: Created, Hash: "h1"}, "h1", ""},
		{"a live row with another task is updated", RowHead{Seq: 3, Generation: 5, Kind: Updated, Hash: "h0"}, "h1", Updated},
		{"a deleted row comes back as created", RowHead{Seq: 3, Generation: 5, Kind: Deleted}, "h1", Created},
		{"a row an earlier attempt already appended is done", RowHead{Seq: 3, Generation: gen, Kind: Created, Hash: "h1"}, "h1", ""},
		{"done even if the earlier attempt saw other bytes", RowHead{Seq: 3, Generation: gen, Kind: Updated, Hash: "h0"}, "h1", ""},
		{"a row deleted at this generation stays done", RowHead{Seq: 3, Generation: gen, Kind: Deleted}, "h1", ""},
	}
	for _, tt := range tests {
		if got := DecideRow(tt.head, gen, tt.hash); got != tt.want {
			t.Errorf("%s: DecideRow(%+v, %d, %q) = %q, want %q", tt.name, tt.head, gen, tt.hash, got, tt.want)
		}
	}
}

func TestVanishedRows(t *testing.T) {
	t.Parallel()
	live := func(g int64) RowHead { return RowHead{Seq: 1, Generation: g, Kind: Created} }
	gone := RowHead{Seq: 1, Generation: 4, Kind: Deleted}
	tests := []struct {
		name  string
		heads map[int]RowHead
		rows  int
		want  []int
	}{
		{"no heads", nil, 3, nil},
		{"every row still has a record", map[int]RowHead{0: live(4), 1: live(4)}, 2, nil},
		{"rows past the end are deleted, in order", map[int]RowHead{0: live(4), 3: live(4), 2: live(4)}, 1, []int{2, 3}},
		{"already deleted rows are not deleted again", map[int]RowHead{0: live(4), 1: gone}, 1, nil},
		{"a deleted file deletes every live row", map[int]RowHead{0: live(4), 1: live(4), 2: gone}, 0, []int{0, 1}},
		{"a delete of the imported generation deletes its rows", map[int]RowHead{0: live(7), 1: live(7)}, 0, []int{0, 1}},
	}
	for _, tt := range tests {
		if got := VanishedRows(tt.heads, tt.rows); !slices.Equal(got, tt.want) {
			t.Errorf("%s: VanishedRows = %v, want %v", tt.name, got, tt.want)
		}
	}
}

func TestOutcomeOrder(t *testing.T) {
	t.Parallel()
	// SPEC §6: the first of deadletter, emitted, duplicate, stale, filtered
	// that applies; max picks it.
	order := []Outcome{DeadLetter, Emitted, Duplicate, Stale, Filtered}
	labels := []string{"deadletter", "emitted", "duplicate", "stale", "filtered"}
	for i, o := range order {
		if o.String() != labels[i] {
			t.Errorf("%d: label %q, want %q", i, o.String(), labels[i])
		}
		for _, later := range order[i+1:] {
			if max(o, later) != o {
				t.Errorf("max(%s, %s) = %s, want %s", o, later, max(o, later), o)
			}
		}
	}
	var zero Outcome
	if zero != Filtered {
		t.Errorf("zero Outcome is %s, want filtered", zero)
	}
}
