package ledger

import "sort"

// Decision is what to append to a key's ledger, if anything, and the
// outcome to count.
type Decision struct {
	// Kind is empty when nothing is appended.
	Kind    Kind
	Outcome Outcome
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
func Decide(h Head, o Observation) Decision {
	emit := func(k Kind) Decision { return Decision{Kind: k, Outcome: Emitted} }
	switch {
	case !h.Exists():
		if o.Present {
			return emit(Created)
		}
		return Decision{Kind: Tombstone, Outcome: Stale}
	case o.Generation < h.Generation:
		return Decision{Outcome: Stale}
	case o.Generation == h.Generation:
		if o.Present == h.Live() {
			return Decision{Outcome: Duplicate}
		}
		if o.Present {
			// Its delete (or tombstone) came first.
			return Decision{Outcome: Stale}
		}
		return emit(Deleted)
	default: // a newer generation
		switch {
		case o.Present && h.Live():
			return emit(Updated)
		case o.Present:
			return emit(Created)
		case h.Live():
			return emit(Deleted)
		default:
			return Decision{Kind: Tombstone, Outcome: Stale}
		}
	}
}

// DecideRow is the row diff of SPEC §2 for one record of a generation being
// imported: given the row's head (the zero RowHead if the row never had a
// task) and the hash of the record's task, what does the row append? Kind
// is empty when nothing is appended.
//
// A row already at this generation was appended by an earlier attempt at
// it (a crash, a lost race) and is done; a live row with the same task is
// unchanged; a live row with another task is updated; anything else (no
// task yet, or deleted) is created.
func DecideRow(h RowHead, generation int64, hash string) Kind {
	switch {
	case h.Seq != 0 && h.Generation == generation:
		return ""
	case h.Live() && h.Hash == hash:
		return ""
	case h.Live():
		return Updated
	default:
		return Created
	}
}

// VanishedRows returns, in row order, the live rows at index rows or
// beyond: the tasks a generation of rows records deletes. A deleted file is
// a generation of no rows. Rows already deleted (by an earlier attempt)
// are not live and are not returned again.
//
// Rows below rows are not here: each has a record, good or bad, and a bad
// record keeps its row's previous task (it is dead-lettered alone).
func VanishedRows(heads map[int]RowHead, rows int) []int {
	var out []int
	for row, h := range heads {
		if row >= rows && h.Live() {
			out = append(out, row)
		}
	}
	sort.Ints(out)
	return out
}
