package connector

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/labelsync/labelsync/internal/fault"
	"github.com/labelsync/labelsync/internal/labelstudio"
	"github.com/labelsync/labelsync/internal/ledger"
)

func jitter() float64 { return rand.Float64() }

// apply makes e's effect in Label Studio and records it. nil means done
// (also when it was done before); a permanent error is dead-lettered by the
// caller; anything else is retried.
func (c *Connector) apply(ctx context.Context, e *event) error {
	if e.bad != nil {
		return e.bad
	}
	switch e.ev.Event {
	case ledger.Created:
		return c.create(ctx, e)
	case ledger.Updated:
		return c.update(ctx, e)
	case ledger.Deleted:
		return c.remove(ctx, e)
	}
	return fault.Permanent(fault.BadInput, fmt.Errorf("labelstudio: event kind %q", e.ev.Event))
}

func meta(e *event) labelstudio.Meta {
	return labelstudio.Meta{LabelsyncTaskID: e.ev.TaskID, StorageID: e.ev.StorageID, Bucket: e.ev.Bucket, Key: e.ev.Key, Generation: e.ev.Generation, RowIndex: e.ev.RowIndex}
}

// create imports the task. The first delivery of a created event goes
// straight to a batch, which reads the entries of all its tasks at once;
// the batch sends back (errSlowPath) the few whose entry or order needs a
// decision of their own.
func (c *Connector) create(ctx context.Context, e *event) error {
	if e.delivered <= 1 && !e.slow {
		err := c.batches.submit(ctx, e, nil)
		if !errors.Is(err, errSlowPath) {
			return err
		}
		e.slow = true
	}
	ent, err := c.turn(ctx, e)
	if err != nil || ent.applied(e.seq) {
		return err
	}
	if ent.present() {
		// An update imported it (its created event was refused or never
		// seen): bring it up to date.
		return c.patch(ctx, e, ent)
	}
	return c.importTask(ctx, e, ent)
}

// update replaces the task's data (and meta, for the new generation); a
// task that is not in Label Studio (refused or never imported) is imported.
func (c *Connector) update(ctx context.Context, e *event) error {
	ent, err := c.turn(ctx, e)
	if err != nil || ent.applied(e.seq) {
		return err
	}
	if !ent.present() {
		return c.importTask(ctx, e, ent)
	}
	return c.patch(ctx, e, ent)
}

// remove deletes the task; a task already gone counts as done.
func (c *Connector) remove(ctx context.Context, e *event) error {
	ent, err := c.turn(ctx, e)
	if err != nil || ent.applied(e.seq) {
		return err
	}
	if ent.present() {
		if err := c.withWorker(ctx, func() error { return c.ls.DeleteTask(ctx, ent.ID) }); err != nil && fault.CodeOf(err) != fault.NotFound {
			return err
		}
	}
	// Recorded also when there was nothing to delete (never imported,
	// refused, deleted already): the task's next event sees it is next.
	next := ent
	next.Seq, next.State, next.Project = e.seq, stateDeleted, e.ev.Project
	_, err = c.state.put(ctx, e.ev.TaskID, next)
	return err
}

// patch applies e's task to the existing Label Studio task ent.ID. A task
// deleted in Label Studio meanwhile is imported again, as Label Studio's
// own storage sync would.
func (c *Connector) patch(ctx context.Context, e *event, ent entry) error {
	body, err := labelstudio.TaskUpdate(e.ev.Task, meta(e))
	if err != nil {
		return err
	}
	err = c.withWorker(ctx, func() error { return c.ls.UpdateTask(ctx, ent.ID, body) })
	if fault.CodeOf(err) == fault.NotFound {
		gone := ent
		gone.State = stateDeleted
		if e.reimports++; e.reimports > 2 {
			return c.batches.submit(ctx, e, &gone)
		}
		return c.importTask(ctx, e, gone)
	}
	if err != nil {
		return err
	}
	next := ent
	next.Seq, next.Project = e.seq, e.ev.Project
	_, err = c.state.put(ctx, e.ev.TaskID, next)
	return err
}

// importTask imports e's task whose entry is ent (not present). A
// redelivered event may belong to an import whose outcome nobody recorded:
// the open intents that name the task are recovered first.
func (c *Connector) importTask(ctx context.Context, e *event, ent entry) error {
	if e.delivered > 1 {
		if err := c.recover(ctx, e); err != nil {
			return err
		}
		now, err := c.state.get(ctx, e.ev.TaskID)
		if err != nil || now.applied(e.seq) {
			return err
		}
		if now.rev != ent.rev {
			// The recovery recorded the task (or another event moved it).
			if now.present() {
				return c.patch(ctx, e, now)
			}
			ent = now
		}
	}
	return c.batches.submit(ctx, e, &ent)
}

func (c *Connector) withWorker(ctx context.Context, f func() error) error {
	select {
	case c.workers <- struct{}{}:
	case <-ctx.Done():
		return ctx.Err()
	}
	defer func() { <-c.workers }()
	return f()
}

// errYield: an earlier event of the task came in here while e waited for
// its turn; e steps back for it (see event.yield).
var errYield = errors.New("connector: an earlier event of the task came in")

// turn reads e's task entry and returns it once e is next: every earlier
// event of the task has been applied, by whichever replica held it. That
// is known at once when the first event of e's object after the entry's
// event is e itself; otherwise it waits until the entry changes (an earlier
// event was applied: look again) or until no event before e is left
// unacknowledged on the consumer, or returns errYield when an earlier
// event of the task is handed to this replica meanwhile. A wait past
// turnWarn is logged, and again every turnWarnEvery.
func (c *Connector) turn(ctx context.Context, e *event) (entry, error) {
	ent, err := c.state.get(ctx, e.ev.TaskID)
	if err != nil || ent.applied(e.seq) {
		return ent, err
	}
	start := time.Now()
	warn := start.Add(turnWarn)
	for delay := 20 * time.Millisecond; ; delay = min(2*delay, 250*time.Millisecond) {
		if now := time.Now(); now.After(warn) {
			warn = now.Add(turnWarnEvery)
			c.log.Warn("labelstudio: task event still waiting for an earlier event of its task", "task_id", e.ev.TaskID, "event", e.ev.Event,
				"project", e.ev.Project, "seq", e.seq, "applied_seq", ent.Seq, "waited", now.Sub(start).Round(time.Second))
		}
		if e.yield.Load() {
			return entry{}, errYield
		}
		next, err := c.inTurn(ctx, e, ent)
		if err != nil || next {
			return ent, err
		}
		clear, err := c.nothingBefore(ctx, e.seq)
		if err != nil {
			return entry{}, err
		}
		if clear {
			return c.state.get(ctx, e.ev.TaskID)
		}
		if !c.waitProgress(ctx, delay) {
			return entry{}, ctx.Err()
		}
		if ent, err = c.state.get(ctx, e.ev.TaskID); err != nil || ent.applied(e.seq) {
			return ent, err
		}
	}
}

// turnWarn is how long an event may wait for its turn before the wait is
// logged; turnWarnEvery is how often it is logged again.
const (
	turnWarn      = 30 * time.Second
	turnWarnEvery = 5 * time.Minute
)

// waitProgress waits d, or less if this replica acknowledges an event
// meanwhile (the event waited for may be it). It reports whether the work
// goes on.
func (c *Connector) waitProgress(ctx context.Context, d time.Duration) bool {
	c.mu.Lock()
	if c.progress == nil {
		c.progress = make(chan struct{})
	}
	ch := c.progress
	c.waiting++
	c.mu.Unlock()
	defer func() {
		c.mu.Lock()
		c.waiting--
		c.mu.Unlock()
	}()
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ch:
	case <-ctx.Done():
		return false
	}
	return true
}

// progressed wakes the events waiting for their turn.
func (c *Connector) progressed() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.waiting > 0 && c.progress != nil {
		close(c.progress)
		c.progress = nil
	}
}

// inTurn reports whether no event of e's task lies between the task's
// last applied event and e. The worker's subjects name a task (Files mode:
// project, storage and key hash; a task file's row adds the row), so the
// events on e's subject with any event kind are the task's. A subject that
// names less (several tasks) only makes the wait longer.
func (c *Connector) inTurn(ctx context.Context, e *event, ent entry) (bool, error) {
	from := uint64(1)
	if ent.rev != 0 {
		from = ent.Seq + 1
	}
	if from >= e.seq {
		return true, nil
	}
	m, err := c.stream.GetMsg(ctx, from, jetstream.WithGetMsgSubject(objectEvents(e.subject)))
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return true, nil
	}
	if err != nil {
		return false, unavailable("read the stream", err)
	}
	return m.Sequence >= e.seq, nil
}

// objectEvents is the filter of every event of what a task event's subject
// names: labelsync.tasks.<project>.<event>.<rest> with any event.
func objectEvents(subject string) string {
	tokens := strings.Split(subject, ".")
	if len(tokens) < 4 {
		return taskEvents
	}
	tokens[3] = "*"
	return strings.Join(tokens, ".")
}

// nothingBefore reports whether every task event before stream sequence
// seq is acknowledged: the first task event after the consumer's ack floor
// is seq or later.
func (c *Connector) nothingBefore(ctx context.Context, seq uint64) (bool, error) {
	floor, err := c.floor.get(ctx, c.cons)
	if err != nil {
		return false, err
	}
	if floor+1 >= seq {
		return true, nil
	}
	m, err := c.stream.GetMsg(ctx, floor+1, jetstream.WithGetMsgSubject(taskEvents))
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return true, nil
	}
	if err != nil {
		return false, unavailable("read the stream", err)
	}
	return m.Sequence >= seq, nil
}

// floorCache is the consumer's ack floor, read at most every 100 ms.
type floorCache struct {
	mu    sync.Mutex
	at    time.Time
	floor uint64
}

func (f *floorCache) get(ctx context.Context, cons jetstream.Consumer) (uint64, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if time.Since(f.at) < 100*time.Millisecond {
		return f.floor, nil
	}
	info, err := cons.Info(ctx)
	if err != nil {
		return 0, unavailable("read the consumer's ack floor", err)
	}
	f.floor, f.at = info.AckFloor.Stream, time.Now()
	return f.floor, nil
}
