package connector

import (
	"bytes"
	"context"
	"errors"
	"net/http"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/labelsync/labelsync/internal/fault"
	"github.com/labelsync/labelsync/internal/labelstudio"
)

// errSlowPath sends a task back from its batch to its own event: its entry
// needs a decision the batch does not make (the task is in Label Studio).
var errSlowPath = errors.New("connector: the task needs a decision of its own")

// item is one task of an import batch.
type item struct {
	e *event
	// ent is the task's entry; nil until the batch reads it.
	ent  *entry
	body []byte
	// lsID is the Label Studio task id once known.
	lsID int64
	done chan error
}

// finish hands the item's outcome to its event. Each item is finished
// once.
func (it *item) finish(err error) { it.done <- err }

func finishAll(items []*item, err error) {
	for _, it := range items {
		it.finish(err)
	}
}

// batcher groups created tasks by project into import requests.
type batcher struct {
	c        *Connector
	slots    chan struct{}
	sends    sync.WaitGroup
	mu       sync.Mutex
	open     map[int64]*batch
	stopping bool
}

type batch struct {
	project int64
	items   []*item
	bytes   int
	timer   *time.Timer
}

func newBatcher(c *Connector) *batcher {
	return &batcher{c: c, slots: make(chan struct{}, c.cfg.InFlight), open: map[int64]*batch{}}
}

// submit adds e's task to its project's open batch and waits for the
// outcome. ent is the task's entry, or nil for the batch to read it with
// the others'.
func (b *batcher) submit(ctx context.Context, e *event, ent *entry) error {
	body, err := labelstudio.ImportTask(e.ev.Task, meta(e))
	if err != nil {
		return err
	}
	it := &item{e: e, ent: ent, body: body, done: make(chan error, 1)}
	b.add(it)
	select {
	case err := <-it.done:
		return err
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (b *batcher) add(it *item) {
	cfg := b.c.cfg
	b.mu.Lock()
	defer b.mu.Unlock()
	p := it.e.ev.Project
	bt := b.open[p]
	if bt != nil && bt.bytes+len(it.body)+1 > cfg.BatchBytes {
		b.detach(bt)
		bt = nil
	}
	if bt == nil {
		bt = &batch{project: p, bytes: 2}
		b.open[p] = bt
		bt.timer = time.AfterFunc(cfg.FlushInterval, func() { b.flush(bt) })
	}
	bt.items = append(bt.items, it)
	bt.bytes += len(it.body) + 1
	if len(bt.items) >= cfg.BatchSize || b.stopping {
		b.detach(bt)
	}
}

func (b *batcher) flush(bt *batch) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.open[bt.project] == bt {
		b.detach(bt)
	}
}

// detach closes bt to new tasks and sends it. b.mu is held.
func (b *batcher) detach(bt *batch) {
	if b.open[bt.project] == bt {
		delete(b.open, bt.project)
	}
	bt.timer.Stop()
	b.sends.Add(1)
	go func() {
		defer b.sends.Done()
		b.send(bt)
	}()
}

// flushAll sends every open batch now, and every later task at once.
func (b *batcher) flushAll() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.stopping = true
	for _, bt := range b.open {
		b.detach(bt)
	}
}

func (b *batcher) wait() { b.sends.Wait() }

// send imports a batch: it reads the entries the batch has to read,
// stores the intent, waits for a request slot, imports, records the ids,
// and deletes the intent once every task's outcome is recorded. Only the
// requests hold the slot: the next batches get ready meanwhile.
func (b *batcher) send(bt *batch) {
	c := b.c
	ctx := c.workCtx()
	items, err := c.resolve(ctx, bt.items)
	if err != nil {
		finishAll(items, err)
		return
	}
	if len(items) == 0 {
		return
	}
	var w int64
	var key string
	for attempt := 0; ; attempt++ {
		// W is read before the request is sent, and only grows: every
		// task the request creates gets a higher id.
		if w, err = c.watermark(ctx, bt.project); err == nil {
			in := intent{W: w, Tasks: make([]intentTask, len(items))}
			for i, it := range items {
				in.Tasks[i] = intentTask{TaskID: it.e.ev.TaskID, Seq: it.e.seq}
			}
			if key, err = c.state.putIntent(ctx, bt.project, in); err == nil {
				break
			}
		}
		c.warnRetry(ctx, attempt, "labelstudio: import intent not stored yet; retrying", "project", bt.project, "tasks", len(items), "err", err)
		if !c.sleep(ctx, c.backoff(attempt, labelstudio.RetryAfter(err))) {
			finishAll(items, ctx.Err())
			return
		}
	}
	select {
	case b.slots <- struct{}{}:
	case <-ctx.Done():
		finishAll(items, ctx.Err())
		return
	}
	held := true
	release := func() {
		if held {
			held = false
			<-b.slots
		}
	}
	ok := c.importItems(ctx, bt.project, w, items, release)
	release()
	if !ok {
		return // the intent stays: a redelivery recovers it
	}
	for attempt := 0; attempt < 5; attempt++ {
		if err = c.state.deleteIntent(ctx, key); err == nil || !c.sleep(ctx, c.backoff(attempt, 0)) {
			break
		}
	}
	if err != nil {
		c.log.Warn("labelstudio: an import intent is left open; a redelivery will look it up", "intent", key, "err", err)
	}
}

func (c *Connector) workCtx() context.Context {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.work
}

// resolve reads the entries of the items that have none and finishes
// those the batch must not import: applied already (nil) or in Label
// Studio (errSlowPath). It returns the items to import.
func (c *Connector) resolve(ctx context.Context, items []*item) ([]*item, error) {
	var ids []string
	for _, it := range items {
		if it.ent == nil {
			ids = append(ids, it.e.ev.TaskID)
		}
	}
	var got map[string]entry
	for attempt := 0; len(ids) > 0; attempt++ {
		var err error
		if got, err = c.state.getMany(ctx, ids); err == nil {
			break
		}
		c.warnRetry(ctx, attempt, "labelstudio: task entries of an import batch not read yet; retrying", "tasks", len(ids), "err", err)
		if !c.sleep(ctx, c.backoff(attempt, 0)) {
			return items, ctx.Err()
		}
	}
	keep := make([]*item, 0, len(items))
	var check []*item
	for _, it := range items {
		read := it.ent == nil
		if read {
			ent := got[it.e.ev.TaskID]
			it.ent = &ent
		}
		switch {
		case it.ent.applied(it.e.seq):
			it.finish(nil)
		case it.ent.present():
			it.finish(errSlowPath)
		case read && it.ent.rev != 0:
			// Deleted or refused before: an event between that and this
			// one may be in hand on another replica.
			check = append(check, it)
		default:
			keep = append(keep, it)
		}
	}
	// A task without an entry has had no event applied: an earlier one
	// would be a created and a deleted both still in hand on other
	// replicas (an object uploaded, deleted and uploaded again within
	// moments). The import goes ahead; whichever import records second
	// finds the other's entry and deletes its own copy, or the older one
	// (settle). Checking every new task's predecessors would cost a stream
	// read each, a third of the import rate (BenchmarkImport).
	next := make([]bool, len(check))
	var wg sync.WaitGroup
	sem := make(chan struct{}, 32)
	for i, it := range check {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			ok, err := c.inTurn(ctx, it.e, *it.ent)
			next[i] = ok && err == nil
		})
	}
	wg.Wait()
	for i, it := range check {
		if next[i] {
			keep = append(keep, it)
		} else {
			it.finish(errSlowPath)
		}
	}
	return keep, nil
}

// importItems imports items into project until each is recorded or
// refused. w is the highest task id seen before the first attempt. A
// request whose outcome is unknown is followed by a lookup of the tasks
// after w, and only the tasks not found are sent again: those the first
// lookup misses are looked for once more as long after the lost answer as
// the request had run, since Label Studio may still be running an import
// whose request timed out. A refused request is split in halves until the
// refused task is alone. It returns false when the work ended first (the
// intent must stay). release gives the request slot back as soon as no
// more request will be sent.
func (c *Connector) importItems(ctx context.Context, project, w int64, items []*item, release func()) bool {
	pending := items
	uncertain := false
	// lookAgain is when the tasks of the last import of unknown outcome
	// are looked for a second time, if the first lookup missed some.
	var lookAgain time.Time
	for attempt := 0; len(pending) > 0; attempt++ {
		var err error
		if uncertain {
			var found map[string]int64
			looked := time.Now()
			if found, err = c.lookup(ctx, project, w, pending); err == nil {
				var got, rest []*item
				for _, it := range pending {
					if id, ok := found[it.e.ev.TaskID]; ok {
						it.lsID = id
						got = append(got, it)
					} else {
						rest = append(rest, it)
					}
				}
				c.log.Info("labelstudio: looked up an import of unknown outcome", "project", project, "tasks", len(pending), "found", len(got))
				if !c.commit(ctx, project, got) {
					finishAll(rest, ctx.Err())
					return false
				}
				pending = rest
				if len(rest) > 0 && looked.Before(lookAgain) {
					c.log.Info("labelstudio: tasks of an import of unknown outcome not found yet; looking again before sending them", "project", project, "tasks", len(rest), "in", time.Until(lookAgain).Round(time.Millisecond))
					if !c.sleep(ctx, time.Until(lookAgain)) {
						finishAll(rest, ctx.Err())
						return false
					}
					continue
				}
				uncertain = false
				continue
			}
		} else {
			body := joinTasks(pending)
			c.m.LabelStudioBatchSize.Observe(float64(len(pending)))
			var ids []int64
			sent := time.Now()
			if ids, err = c.ls.Import(ctx, project, body, len(pending)); err == nil {
				if c.afterImport != nil {
					c.afterImport(ctx)
				}
				c.noteIDs(project, ids)
				release()
				for i, it := range pending {
					it.lsID = ids[i]
				}
				return c.commit(ctx, project, pending)
			}
			switch {
			case ctx.Err() != nil:
			case labelstudio.StatusOf(err) == http.StatusNotFound:
				missing, perr := c.projectMissing(ctx, project)
				if missing {
					finishAll(pending, err)
					return true
				}
				if perr != nil {
					err = perr
				} else {
					c.log.Error("labelstudio: the import endpoint answered 404 for a project that exists; is LABELSYNC_LABEL_STUDIO_URL right?", "project", project, "err", err)
				}
			case fault.IsPermanent(err):
				if len(pending) == 1 {
					pending[0].finish(err)
					return true
				}
				half := len(pending) / 2
				first := c.importItems(ctx, project, w, pending[:half], func() {})
				return c.importItems(ctx, project, w, pending[half:], func() {}) && first
			case labelstudio.Uncertain(err):
				// Label Studio may still be running it (the request
				// timed out, a proxy gave up on it). The wait is at most
				// the client's request timeout.
				uncertain = true
				lookAgain = time.Now().Add(time.Since(sent))
			}
		}
		if ctx.Err() != nil {
			finishAll(pending, ctx.Err())
			return false
		}
		c.warnRetry(ctx, attempt, "labelstudio: import not done yet; retrying", "project", project, "tasks", len(pending), "uncertain", uncertain, "err", err)
		if !c.sleep(ctx, c.backoff(attempt, labelstudio.RetryAfter(err))) {
			finishAll(pending, ctx.Err())
			return false
		}
	}
	return true
}

// projectMissing reports whether the project does not exist, as opposed
// to a wrong base URL answering 404 for everything: Label Studio must
// answer the project list, and 404 for the project.
func (c *Connector) projectMissing(ctx context.Context, project int64) (bool, error) {
	if err := c.ls.Ping(ctx); err != nil {
		return false, err
	}
	_, err := c.ls.Project(ctx, project)
	if fault.CodeOf(err) == fault.NotFound {
		return true, nil
	}
	return false, err
}

func joinTasks(items []*item) []byte {
	n := 2
	for _, it := range items {
		n += len(it.body) + 1
	}
	var buf bytes.Buffer
	buf.Grow(n)
	buf.WriteByte('[')
	for i, it := range items {
		if i > 0 {
			buf.WriteByte(',')
		}
		buf.Write(it.body)
	}
	buf.WriteByte(']')
	return buf.Bytes()
}

// commit records the Label Studio ids of imported items and finishes them.
// Every write is conditioned on the entry the import was decided on, the
// retries too: an entry that moved meanwhile is settled one by one, and so
// is one whose failed write was stored all the same (its acknowledgement
// lost with the bucket's leader), perhaps with a later event applied on
// top of it since. It returns false when the work ended before every entry
// was written.
func (c *Connector) commit(ctx context.Context, project int64, items []*item) bool {
	for attempt := 0; len(items) > 0; attempt++ {
		ws := make([]write, len(items))
		for i, it := range items {
			ws[i] = write{taskID: it.e.ev.TaskID, e: entry{ID: it.lsID, Seq: it.e.seq, State: statePresent, Project: project, rev: it.ent.rev}}
		}
		errs := c.state.putMany(ctx, ws)
		var retry []*item
		var last error
		for i, err := range errs {
			it := items[i]
			if errors.Is(err, errConflict) {
				err = c.settle(ctx, it.e.ev.TaskID, it.lsID, it.e.seq, project)
			}
			if err != nil {
				retry, last = append(retry, it), err
				continue
			}
			it.finish(nil)
		}
		items = retry
		if len(items) == 0 {
			return true
		}
		c.warnRetry(ctx, attempt, "labelstudio: imported tasks not recorded yet; retrying", "project", project, "tasks", len(items), "err", last)
		if !c.sleep(ctx, c.backoff(attempt, 0)) {
			finishAll(items, ctx.Err())
			return false
		}
	}
	return true
}

// settle records that Label Studio task lsID holds labelsync task taskID
// as of the event at seq, when the entry changed since it was read: if the
// entry already names that task, or an older state, ours is written; if it
// names another Label Studio task, or a later event, lsID is a second copy
// and is deleted from Label Studio (an older copy is deleted instead when
// ours is newer).
func (c *Connector) settle(ctx context.Context, taskID string, lsID int64, seq uint64, project int64) error {
	for {
		ent, err := c.state.get(ctx, taskID)
		if err != nil {
			return err
		}
		switch {
		case ent.present() && ent.ID == lsID:
			return nil
		case ent.rev == 0 || ent.Seq < seq:
			next := entry{ID: lsID, Seq: seq, State: statePresent, Project: project, rev: ent.rev}
			if _, err := c.state.put(ctx, taskID, next); errors.Is(err, errConflict) {
				continue
			} else if err != nil {
				return err
			}
			if ent.present() {
				c.log.Warn("labelstudio: deleting an older second copy of a task", "task_id", taskID, "kept", lsID, "deleted", ent.ID)
				return c.deleteCopy(ctx, ent.ID)
			}
			return nil
		default:
			c.log.Warn("labelstudio: deleting a second copy of a task", "task_id", taskID, "kept", ent.ID, "deleted", lsID, "state", ent.State)
			return c.deleteCopy(ctx, lsID)
		}
	}
}

func (c *Connector) deleteCopy(ctx context.Context, id int64) error {
	err := c.withWorker(ctx, func() error { return c.ls.DeleteTask(ctx, id) })
	if fault.CodeOf(err) == fault.NotFound {
		return nil
	}
	return err
}

// lookup finds which of items Label Studio has among project's tasks with
// an id above w, by their meta.labelsync_task_id.
func (c *Connector) lookup(ctx context.Context, project, w int64, items []*item) (map[string]int64, error) {
	want := make(map[string]bool, len(items))
	for _, it := range items {
		want[it.e.ev.TaskID] = true
	}
	return c.lookupIDs(ctx, project, w, want)
}

func (c *Connector) lookupIDs(ctx context.Context, project, w int64, want map[string]bool) (map[string]int64, error) {
	found := map[string]int64{}
	err := c.ls.EachTask(ctx, labelstudio.TaskQuery{Project: project, AfterID: w, PageSize: 500}, func(t labelstudio.Task) error {
		if id := t.LabelsyncTaskID(); want[id] {
			if prev, dup := found[id]; !dup || t.ID < prev {
				found[id] = t.ID
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	ids := make([]int64, 0, len(found))
	for _, id := range found {
		ids = append(ids, id)
	}
	c.noteIDs(project, ids)
	return found, nil
}

// watermark is the highest Label Studio task id of project seen so far (a
// lower bound of every id Label Studio gives from now on); the first time,
// it asks Label Studio.
func (c *Connector) watermark(ctx context.Context, project int64) (int64, error) {
	c.mu.Lock()
	w, ok := c.marks[project]
	c.mu.Unlock()
	if ok {
		return w, nil
	}
	highest, err := c.ls.MaxTaskID(ctx, project)
	if err != nil && fault.CodeOf(err) != fault.NotFound {
		return 0, err
	}
	c.noteIDs(project, []int64{highest})
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.marks[project], nil
}

func (c *Connector) noteIDs(project int64, ids []int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	w := c.marks[project]
	for _, id := range ids {
		w = max(w, id)
	}
	c.marks[project] = w
}

// recover settles every open intent that names e's task: the tasks of the
// intent that Label Studio has are recorded, second copies deleted, and the
// intent is deleted. An intent is recovered once at a time.
func (c *Connector) recover(ctx context.Context, e *event) error {
	open, err := c.intents.get(ctx, c.state, e.ev.Project, e.received)
	if err != nil {
		return err
	}
	for key, in := range open {
		if _, ok := in.seqOf(e.ev.TaskID); ok {
			if err := c.recoverIntent(ctx, e.ev.Project, key, in); err != nil {
				return err
			}
		}
	}
	return nil
}

func (c *Connector) recoverIntent(ctx context.Context, project int64, key string, in intent) error {
	muAny, _ := c.recovery.LoadOrStore(key, &sync.Mutex{})
	mu := muAny.(*sync.Mutex)
	mu.Lock()
	defer mu.Unlock()
	if _, err := c.state.kv.Get(ctx, key); errors.Is(err, jetstream.ErrKeyNotFound) {
		return nil // recovered meanwhile
	} else if err != nil {
		return unavailable("read import intent", err)
	}
	want := make(map[string]bool, len(in.Tasks))
	for _, t := range in.Tasks {
		want[t.TaskID] = true
	}
	found, err := c.lookupIDs(ctx, project, in.W, want)
	if err != nil {
		return err
	}
	for taskID, lsID := range found {
		seq, _ := in.seqOf(taskID)
		if err := c.settle(ctx, taskID, lsID, seq, project); err != nil {
			return err
		}
	}
	if err := c.state.deleteIntent(ctx, key); err != nil {
		return err
	}
	c.recovery.Delete(key)
	c.log.Info("labelstudio: recovered an import of unknown outcome", "project", project, "intent", key, "tasks", len(in.Tasks), "found", len(found))
	return nil
}

// intentCache holds the latest read of each project's open intents, so
// that a burst of redelivered events reads them once. A read serves an
// event only if it started after the event was received: every intent that
// can name the event's task was written before.
type intentCache struct {
	mu    sync.Mutex
	snaps map[int64]*intentSnap
}

type intentSnap struct {
	at      time.Time
	ready   chan struct{}
	intents map[string]intent
	err     error
}

func (s *intentSnap) failed() bool {
	select {
	case <-s.ready:
		return s.err != nil
	default:
		return false
	}
}

func (ic *intentCache) get(ctx context.Context, st *store, project int64, after time.Time) (map[string]intent, error) {
	ic.mu.Lock()
	if ic.snaps == nil {
		ic.snaps = map[int64]*intentSnap{}
	}
	sn := ic.snaps[project]
	if sn == nil || sn.at.Before(after) || sn.failed() {
		sn = &intentSnap{at: time.Now(), ready: make(chan struct{})}
		ic.snaps[project] = sn
		ic.mu.Unlock()
		sn.intents, sn.err = st.intents(ctx, project)
		close(sn.ready)
	} else {
		ic.mu.Unlock()
	}
	select {
	case <-sn.ready:
		return sn.intents, sn.err
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}
