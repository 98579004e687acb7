// Package ledger is SPEC §2's import rules as pure functions, next to the
// state they read: a key's head (the newest ledger entry of one object of
// one storage), a row's head (the newest event of one record of a
// Tasks-mode file), what a notification or a listing observed, and the
// outcome to count.
//
// Nothing here does I/O. Package taskbus stores heads in JetStream and makes
// each decision's append conditional on the head it was decided from;
// package ingest reads heads, calls these rules and appends.
package ledger

import (
	"time"

	"github.com/labelsync/labelsync/internal/events"
)

// Kind is what an entry records for a key or a row.
type Kind string

// The kinds. Created, Updated and Deleted are task events consumers see;
// Tombstone is ledger-only.
const (
	Created   Kind = "created"
	Updated   Kind = "updated"
	Deleted   Kind = "deleted"
	Tombstone Kind = "tombstone"
)

// Head is the newest ledger entry of a key. The zero Head means the key was
// never seen.
type Head struct {
	Seq        uint64
	Generation int64
	Kind       Kind
}

// Exists reports whether the key has any entry.
func (h Head) Exists() bool { return h.Seq != 0 }

// Live reports whether the key's newest entry is an imported generation.
func (h Head) Live() bool { return h.Kind == Created || h.Kind == Updated }

// RowHead is the newest event of one record of a Tasks-mode file. The zero
// RowHead means the row never had a task.
type RowHead struct {
	Seq        uint64
	Generation int64
	Kind       Kind
	// Hash is the content hash of the task the row holds (empty after a
	// delete), to tell changed rows from unchanged ones.
	Hash string
}

// Live reports whether the row's task exists.
func (h RowHead) Live() bool { return h.Kind == Created || h.Kind == Updated }

// Outcome is what handling an observation came to, for metrics (SPEC §6's
// outcome label) and sync statistics. The zero Outcome is Filtered.
type Outcome uint8

// Outcomes, from the least to the most telling: a notification that
// matched several storages counts once, with the largest (SPEC §6: "the
// first of deadletter, emitted, duplicate, stale, filtered that applies").
const (
	Filtered Outcome = iota
	Stale
	Duplicate
	Emitted
	DeadLetter
)

// String is the outcome's metric label.
func (o Outcome) String() string {
	switch o {
	case Stale:
		return "stale"
	case Duplicate:
		return "duplicate"
	case Emitted:
		return "emitted"
	case DeadLetter:
		return "deadletter"
	}
	return "filtered"
}

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
