package ingest

import (
	"time"

	"github.com/labelsync/labelsync/internal/events"
	"github.com/labelsync/labelsync/internal/metrics"
	"github.com/labelsync/labelsync/internal/taskbus"
)

// Sources of an observation, as the task event's "source" field names them.
const (
	SourceNotification = "notification"
	SourceSync         = "sync"
)

// Observation is what labelsync learned about one generation of one object,
// from a notification or a bucket listing.
type Observation struct {
	// Present is true when Generation exists (FINALIZE, an overwrite seen
	// from either side, a listing); false for a real delete.
	Present    bool
	Generation int64
	// EventTime is the notification's eventTime, or the object's updated
	// time for sync.
	EventTime time.Time
	Source    string
	// Overwrite is true when the notification says an older generation
	// existed: the key is probably imported already.
	Overwrite bool
	// AssumeNew lets a sync guess, like a plain FINALIZE does, that the key
	// is not imported yet, saving the head read when the guess is right
	// and costing a failed append when it is wrong.
	AssumeNew bool
}

// ObservationOf maps a notification to what it says about the object. ok is
// false for notifications that say nothing about which generation is current
// (METADATA_UPDATE).
//
// An overwrite is an update from either side: FINALIZE(g, overwrote f) says
// g exists, and DELETE/ARCHIVE(f, overwrittenBy g) says so too, so whichever
// of the pair arrives first imports g and the other is a duplicate.
func ObservationOf(obj events.Object) (o Observation, ok bool) {
	o = Observation{EventTime: obj.EventTime, Source: SourceNotification, Overwrite: obj.IsOverwrite()}
	switch {
	case obj.EventType == events.Finalize:
		o.Present, o.Generation = true, obj.Generation
	case obj.OverwrittenByGeneration > 0 && (obj.EventType == events.Delete || obj.EventType == events.Archive):
		o.Present, o.Generation = true, obj.OverwrittenByGeneration
	case obj.EventType == events.Delete || obj.EventType == events.Archive:
		o.Present, o.Generation = false, obj.Generation
	default:
		return Observation{}, false
	}
	return o, true
}

// Decision is what to append to a key's ledger, if anything, and the
// outcome to count.
type Decision struct {
	// Kind is empty when nothing is appended.
	Kind    taskbus.Kind
	Outcome string
}

// Decide applies SPEC §2 to one key: given its ledger head, what does this
// observation append? It is pure; the ledger's conditional append makes it
// safe under concurrency.
//
// Generations only move forward: an observation older than the head is
// stale. A real delete of a generation newer than the live one also deletes
// the task — the object is gone whatever generation it had — and leaves the
// FINALIZE of that generation stale; a delete of a key that is not live
// leaves a tombstone, so its late FINALIZE is stale too.
func Decide(h taskbus.Head, o Observation) Decision {
	emit := func(k taskbus.Kind) Decision { return Decision{Kind: k, Outcome: metrics.OutcomeEmitted} }
	switch {
	case !h.Exists():
		if o.Present {
			return emit(taskbus.Created)
		}
		return Decision{Kind: taskbus.Tombstone, Outcome: metrics.OutcomeStale}
	case o.Generation < h.Generation:
		return Decision{Outcome: metrics.OutcomeStale}
	case o.Generation == h.Generation:
		if o.Present == h.Live() {
			return Decision{Outcome: metrics.OutcomeDuplicate}
		}
		if o.Present {
			// Its delete (or tombstone) came first.
			return Decision{Outcome: metrics.OutcomeStale}
		}
		return emit(taskbus.Deleted)
	default: // a newer generation
		switch {
		case o.Present && h.Live():
			return emit(taskbus.Updated)
		case o.Present:
			return emit(taskbus.Created)
		case h.Live():
			return emit(taskbus.Deleted)
		default:
			return Decision{Kind: taskbus.Tombstone, Outcome: metrics.OutcomeStale}
		}
	}
}
