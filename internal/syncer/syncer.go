// Package syncer runs Label Studio's "Sync" for source storages as a
// backfill: list the bucket under the storage's prefix, and feed every
// matching object to the same ingest pipeline the notifications use, so a
// sync racing live notifications still yields one event per generation.
//
// A sync's status (Label Studio's status fields) and its checkpoint — the
// page token of the next page to list — live in a JetStream KV bucket, so a
// worker killed mid-sync resumes from its last completed page after restart,
// and any replica can report it. A second KV bucket, whose entries expire
// unless their owner keeps refreshing them, is the lock that keeps two
// replicas from running the same storage's sync at once.
//
// Concurrency: Request, Status and RunNow are safe for concurrent use.
// Objects of one page are applied concurrently; the checkpoint moves only
// when a whole page is done.
package syncer

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"cloud.google.com/go/storage"
	"github.com/nats-io/nats.go/jetstream"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"
	"golang.org/x/sync/errgroup"

	"github.com/labelsync/labelsync/internal/gcs"
	"github.com/labelsync/labelsync/internal/ingest"
	"github.com/labelsync/labelsync/internal/ledger"
	"github.com/labelsync/labelsync/internal/metrics"
	"github.com/labelsync/labelsync/internal/storages"
	"github.com/labelsync/labelsync/internal/taskbus"
	"github.com/labelsync/labelsync/internal/tracing"
)

// Label Studio's status values.
const (
	StatusInitialized         = "initialized"
	StatusQueued              = "queued"
	StatusInProgress          = "in_progress"
	StatusFailed              = "failed"
	StatusCompleted           = "completed"
	StatusCompletedWithErrors = "completed_with_errors"
)

const (
	statusBucket = "labelsync_sync_status"
	lockBucket   = "labelsync_sync_locks"
	// lockTTL is how long a dead owner's lock outlives it.
	lockTTL = 30 * time.Second
)

// Status is a storage's sync state, with Label Studio's field names.
type Status struct {
	Status        string     `json:"status"`
	LastSync      *time.Time `json:"last_sync"`
	LastSyncCount *int64     `json:"last_sync_count"`
	Traceback     *string    `json:"traceback"`
	Meta          Meta       `json:"meta"`

	// Checkpoint: the page token of the next page to list ("" = start).
	PageToken string `json:"page_token,omitempty"`
	// Reconcile: after listing, delete the tasks of objects that no longer
	// exist. ReconcileSeq is the task stream's last sequence when the sync
	// started: only keys imported before it are candidates, so objects
	// uploaded during the sync are never mistaken for missing ones.
	Reconcile    bool   `json:"reconcile,omitempty"`
	ReconcileSeq uint64 `json:"reconcile_seq,omitempty"`
}

// Meta is the progress and result of a sync.
type Meta struct {
	ObjectsListed int64   `json:"objects_listed"`
	TasksCreated  int64   `json:"tasks_created"`
	TasksUpdated  int64   `json:"tasks_updated"`
	TasksDeleted  int64   `json:"tasks_deleted"`
	AlreadySynced int64   `json:"already_synced"`
	Errors        int64   `json:"errors"`
	Pages         int64   `json:"pages"`
	StartedAt     string  `json:"started_at,omitempty"`
	Duration      float64 `json:"duration"`
}

type applier interface {
	Apply(ctx context.Context, st *storages.Import, obj ingest.Object, o ledger.Observation, counts *ingest.Counts) (ledger.Outcome, error)
}

// bus is what the syncer needs of taskbus.Bus besides the pipeline.
type bus interface {
	LastSeq(ctx context.Context) (uint64, error)
	LiveHeads(ctx context.Context, project, storage int64, maxSeq uint64, fn func(object string, h ledger.Head) error) error
}

type clientFor func(ctx context.Context, st *storages.Import) (*storage.Client, error)

// Syncer runs syncs.
type Syncer struct {
	status   jetstream.KeyValue
	locks    jetstream.KeyValue
	pipeline applier
	dl       bus
	client   clientFor
	current  func() *storages.Set
	metrics  *metrics.Metrics
	logger   *slog.Logger
	owner    string

	// Concurrency is how many objects of a page are applied at once.
	Concurrency int
	// PageSize is the listing page size (and checkpoint granularity).
	PageSize int
	// Tracer traces each page ("sync.page"); nil: no tracing.
	Tracer trace.Tracer

	mu      sync.Mutex
	running map[int64]bool
	wg      sync.WaitGroup
	// runCtx is Run's context, under which background syncs run.
	runCtx atomic.Pointer[context.Context]
}

// New opens (creating if needed) the status and lock buckets.
func New(ctx context.Context, js jetstream.JetStream, pipeline applier, dl bus, client clientFor, current func() *storages.Set, m *metrics.Metrics, logger *slog.Logger) (*Syncer, error) {
	status, err := taskbus.OpenKeyValue(ctx, js, jetstream.KeyValueConfig{Bucket: statusBucket, Description: "labelsync sync status and checkpoints", Storage: jetstream.FileStorage})
	if err != nil {
		return nil, fmt.Errorf("syncer: status bucket: %w", err)
	}
	locks, err := taskbus.OpenKeyValue(ctx, js, jetstream.KeyValueConfig{Bucket: lockBucket, Description: "labelsync sync locks", TTL: lockTTL, Storage: jetstream.FileStorage})
	if err != nil {
		return nil, fmt.Errorf("syncer: lock bucket: %w", err)
	}
	b := make([]byte, 8)
	_, _ = rand.Read(b)
	return &Syncer{
		status: status, locks: locks, pipeline: pipeline, dl: dl, client: client, current: current,
		metrics: m, logger: logger, owner: hex.EncodeToString(b),
		Concurrency: 256, PageSize: 1000, running: map[int64]bool{},
	}, nil
}

func key(id int64) string { return "import." + strconv.FormatInt(id, 10) }

// Status returns a storage's sync status; initialized if it never synced.
func (s *Syncer) Status(ctx context.Context, id int64) (Status, error) {
	st, _, err := s.load(ctx, id)
	return st, err
}

func (s *Syncer) load(ctx context.Context, id int64) (Status, uint64, error) {
	e, err := s.status.Get(ctx, key(id))
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return Status{Status: StatusInitialized}, 0, nil
	}
	if err != nil {
		return Status{}, 0, fmt.Errorf("syncer: status of storage %d: %w", id, err)
	}
	var st Status
	if err := json.Unmarshal(e.Value(), &st); err != nil {
		return Status{}, 0, fmt.Errorf("syncer: status of storage %d: %w", id, err)
	}
	return st, e.Revision(), nil
}

// save writes st if the stored revision is still rev (0: absent).
func (s *Syncer) save(ctx context.Context, id int64, st Status, rev uint64) (uint64, error) {
	b, _ := json.Marshal(st)
	if rev == 0 {
		return s.status.Create(ctx, key(id), b)
	}
	return s.status.Update(ctx, key(id), b, rev)
}

// Request queues a sync of storage id and starts it in the background,
// unless one is already queued or running (here or on another replica):
// then it returns that one's status and starts nothing.
func (s *Syncer) Request(ctx context.Context, id int64, reconcile bool) (Status, error) {
	for range 10 {
		st, rev, err := s.load(ctx, id)
		if err != nil {
			return Status{}, err
		}
		if st.Status == StatusQueued || st.Status == StatusInProgress {
			return st, nil
		}
		st = Status{Status: StatusQueued, LastSync: st.LastSync, LastSyncCount: st.LastSyncCount, Reconcile: reconcile}
		if _, err := s.save(ctx, id, st, rev); err != nil {
			if errors.Is(err, jetstream.ErrKeyExists) || errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
				continue // someone else changed it: look again
			}
			return Status{}, fmt.Errorf("syncer: queue storage %d: %w", id, err)
		}
		s.start(id)
		return st, nil
	}
	return Status{}, fmt.Errorf("syncer: storage %d: status keeps changing", id)
}

// Resume starts every queued or interrupted sync whose lock is free. Call
// it at start and periodically: a replica that died mid-sync leaves its
// sync in_progress with an expiring lock.
func (s *Syncer) Resume(ctx context.Context) error {
	keys, err := s.status.Keys(ctx)
	if errors.Is(err, jetstream.ErrNoKeysFound) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("syncer: resume: %w", err)
	}
	for _, k := range keys {
		id, err := strconv.ParseInt(k[len("import."):], 10, 64)
		if err != nil {
			continue
		}
		st, _, err := s.load(ctx, id)
		if err != nil {
			return err
		}
		if st.Status == StatusQueued || st.Status == StatusInProgress {
			s.start(id)
		}
	}
	return nil
}

// Close waits for background syncs, which stop at their next page when
// the context given to Run is cancelled.
func (s *Syncer) Close() { s.wg.Wait() }

// Run keeps resuming interrupted syncs until ctx is done; background syncs
// run under ctx.
func (s *Syncer) Run(ctx context.Context) error {
	s.runCtx.Store(&ctx)
	t := time.NewTicker(lockTTL / 2)
	defer t.Stop()
	for {
		if err := s.Resume(ctx); err != nil && ctx.Err() == nil {
			s.logger.Warn("sync resume", "err", err)
		}
		select {
		case <-ctx.Done():
			s.wg.Wait()
			return nil
		case <-t.C:
		}
	}
}

func (s *Syncer) start(id int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.running[id] {
		return
	}
	ctxp := s.runCtx.Load()
	if ctxp == nil {
		return // not running yet; Run's first Resume picks it up
	}
	s.running[id] = true
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		defer func() { s.mu.Lock(); delete(s.running, id); s.mu.Unlock() }()
		if _, err := s.RunNow(*ctxp, id, false, nil); err != nil && !errors.Is(err, ErrLocked) && (*ctxp).Err() == nil {
			s.logger.Error("sync failed", "storage", id, "err", err)
		}
	}()
}

// ErrLocked means another replica runs this storage's sync.
var ErrLocked = errors.New("syncer: sync running elsewhere")

// RunNow runs (or resumes) storage id's sync in the calling goroutine and
// returns its final status. progress, if set, is called after each page.
// reconcile asks for reconciliation in addition to what the queued
// request asked.
func (s *Syncer) RunNow(ctx context.Context, id int64, reconcile bool, progress func(Status)) (Status, error) {
	lockRev, err := s.locks.Create(ctx, key(id), []byte(s.owner))
	if err != nil {
		if errors.Is(err, jetstream.ErrKeyExists) {
			return Status{}, ErrLocked
		}
		return Status{}, fmt.Errorf("syncer: lock storage %d: %w", id, err)
	}
	lockCtx, stopLock := context.WithCancel(ctx)
	lockLost := make(chan struct{})
	go s.holdLock(lockCtx, id, lockRev, lockLost)
	defer func() {
		stopLock()
		_ = s.locks.Delete(context.WithoutCancel(ctx), key(id))
	}()

	st, rev, err := s.load(ctx, id)
	if err != nil {
		return Status{}, err
	}
	if st.Status != StatusInProgress {
		// A fresh sync (queued, or run from the CLI): no checkpoint.
		st = Status{Status: StatusInProgress, LastSync: st.LastSync, LastSyncCount: st.LastSyncCount, Reconcile: st.Reconcile || reconcile}
		st.Meta.StartedAt = time.Now().UTC().Format(time.RFC3339Nano)
		if st.Reconcile {
			if st.ReconcileSeq, err = s.dl.LastSeq(ctx); err != nil {
				return Status{}, err
			}
		}
	}
	if rev, err = s.save(ctx, id, st, rev); err != nil {
		return Status{}, fmt.Errorf("syncer: storage %d: %w", id, err)
	}
	final, err := s.scan(ctx, id, st, rev, lockLost, progress)
	return final, err
}

func (s *Syncer) holdLock(ctx context.Context, id int64, rev uint64, lost chan<- struct{}) {
	t := time.NewTicker(lockTTL / 3)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		var err error
		if rev, err = s.locks.Update(ctx, key(id), []byte(s.owner), rev); err != nil && ctx.Err() == nil {
			s.logger.Error("sync lock lost", "storage", id, "err", err)
			close(lost)
			return
		}
	}
}

// scan lists pages from the checkpoint and applies their objects.
func (s *Syncer) scan(ctx context.Context, id int64, st Status, rev uint64, lockLost <-chan struct{}, progress func(Status)) (Status, error) {
	started := time.Now()
	storageLabel := strconv.FormatInt(id, 10)
	running, moved := s.metrics.SyncRunning.WithLabelValues("import", storageLabel), s.metrics.SyncProgress.WithLabelValues("import", storageLabel)
	running.Set(1)
	moved.SetToCurrentTime()
	defer running.Set(0)
	prior := st.Meta.Duration
	fail := func(err error) (Status, error) {
		if ctx.Err() != nil {
			// Shutdown: stay in_progress; the checkpoint resumes it.
			return st, ctx.Err()
		}
		msg := err.Error()
		st.Status, st.Traceback = StatusFailed, &msg
		now := time.Now().UTC()
		st.LastSync = &now
		st.Meta.Duration = prior + time.Since(started).Seconds()
		_, _ = s.save(context.WithoutCancel(ctx), id, st, rev)
		return st, err
	}
	stor, ok := s.current().Get(id)
	if !ok {
		return fail(fmt.Errorf("syncer: storage %d does not exist", id))
	}
	client, err := s.client(ctx, stor)
	if err != nil {
		return fail(err)
	}
	var counts ingest.Counts
	var listed, already, errs atomic.Int64
	// A first sync finds every key new, a re-sync finds every key imported:
	// guess from the page before whether reading each key's head first pays.
	assumeNew := true
	var seenMu sync.Mutex
	seen := map[string]struct{}{} // keys listed by this run, for reconciliation
	process := func(objs []gcs.Object, next string) (err error) {
		select {
		case <-lockLost:
			return ErrLocked
		default:
		}
		pctx, span := tracing.Start(ctx, s.Tracer, "sync.page", trace.SpanKindInternal)
		if span.IsRecording() {
			span.SetAttributes(attribute.Int64("labelsync.storage_id", id), attribute.Int("objects", len(objs)), attribute.Int64("page", st.Meta.Pages+1))
		}
		defer func() { tracing.End(span, err) }()
		g, gctx := errgroup.WithContext(pctx)
		g.SetLimit(s.Concurrency)
		pageNew := assumeNew
		var pageApplied, pageDup atomic.Int64
		for _, o := range objs {
			if !stor.Matches(o.Key) {
				continue
			}
			listed.Add(1)
			if st.Reconcile {
				seenMu.Lock()
				seen[o.Key] = struct{}{}
				seenMu.Unlock()
			}
			g.Go(func() error {
				outcome, err := s.apply(gctx, stor, o, pageNew, &counts)
				if err != nil {
					return err
				}
				pageApplied.Add(1)
				switch outcome {
				case ledger.Duplicate:
					already.Add(1)
					pageDup.Add(1)
				case ledger.Stale:
					pageDup.Add(1)
				case ledger.DeadLetter:
					// The pipeline stored it, once per generation.
					errs.Add(1)
				}
				s.metrics.SyncObjects.WithLabelValues(storageLabel, outcome.String()).Inc()
				return nil
			})
		}
		if err := g.Wait(); err != nil {
			return err
		}
		assumeNew = pageDup.Load()*10 < pageApplied.Load()
		st.PageToken = next
		st.Meta.Pages++
		st.Meta.ObjectsListed = listed.Load()
		st.Meta.TasksCreated, st.Meta.TasksUpdated, st.Meta.TasksDeleted = counts.Created.Load(), counts.Updated.Load(), counts.Deleted.Load()
		st.Meta.AlreadySynced, st.Meta.Errors = already.Load(), errs.Load()
		st.Meta.Duration = prior + time.Since(started).Seconds()
		if rev, err = s.save(ctx, id, st, rev); err != nil {
			return fmt.Errorf("syncer: checkpoint: %w", err)
		}
		moved.SetToCurrentTime()
		if progress != nil {
			progress(st)
		}
		return nil
	}

	// List one page ahead of the one being applied: listing and applying
	// overlap, and the checkpoint still only moves past applied pages.
	type page struct {
		objs []gcs.Object
		next string
	}
	pages := make(chan page, 1)
	listCtx, stopListing := context.WithCancel(ctx)
	defer stopListing()
	var listErr error
	go func() {
		defer close(pages)
		listErr = gcs.List(listCtx, gcs.Bucket(client, stor.Bucket, stor.GoogleProjectID), stor.NormalizedPrefix(), stor.RecursiveScan, st.PageToken, s.PageSize, func(objs []gcs.Object, next string) error {
			select {
			case pages <- page{objs, next}:
				return nil
			case <-listCtx.Done():
				return listCtx.Err()
			}
		})
	}()
	for p := range pages {
		if err = process(p.objs, p.next); err != nil {
			stopListing()
			for range pages {
			}
			break
		}
	}
	if err == nil {
		err = listErr
	}
	if err != nil {
		return fail(fmt.Errorf("syncer: storage %d gs://%s/%s: %w", id, stor.Bucket, stor.NormalizedPrefix(), err))
	}
	if st.Reconcile {
		if err := s.reconcile(ctx, stor, client, st.ReconcileSeq, seen, &counts); err != nil {
			return fail(err)
		}
		st.Meta.TasksDeleted = counts.Deleted.Load()
	}
	now := time.Now().UTC()
	created := counts.Created.Load()
	st.Status, st.LastSync, st.LastSyncCount, st.Traceback, st.PageToken = StatusCompleted, &now, &created, nil, ""
	if errs.Load() > 0 {
		st.Status = StatusCompletedWithErrors
	}
	st.Meta.Duration = prior + time.Since(started).Seconds()
	if _, err := s.save(context.WithoutCancel(ctx), id, st, rev); err != nil {
		return st, fmt.Errorf("syncer: storage %d: %w", id, err)
	}
	if progress != nil {
		progress(st)
	}
	return st, nil
}

// reconcile deletes the tasks of keys imported before the sync started
// that no longer exist. A key this run did not list is checked with GCS
// before it is deleted: it may have been listed before a resume.
func (s *Syncer) reconcile(ctx context.Context, stor *storages.Import, client *storage.Client, maxSeq uint64, seen map[string]struct{}, counts *ingest.Counts) error {
	return s.dl.LiveHeads(ctx, stor.Project, stor.ID, maxSeq, func(object string, h ledger.Head) error {
		if _, ok := seen[object]; ok || !stor.Matches(object) {
			return nil
		}
		_, err := gcs.Bucket(client, stor.Bucket, stor.GoogleProjectID).Object(object).Attrs(ctx)
		if err == nil {
			return nil
		}
		if !errors.Is(err, storage.ErrObjectNotExist) {
			return fmt.Errorf("syncer: reconcile gs://%s/%s: %w", stor.Bucket, object, gcs.Classify(err))
		}
		obs := ledger.Observation{Present: false, Generation: h.Generation, EventTime: time.Now(), Source: ledger.SourceSync}
		_, err = s.pipeline.Apply(ctx, stor, ingest.Object{Bucket: stor.Bucket, Key: object}, obs, counts)
		return err
	})
}

// apply retries transient failures of one object a few times: one flaky
// object should not fail a long sync (the checkpoint would resume it, but
// from the page start). A permanent failure never reaches here: the
// pipeline dead-letters it and reports ledger.DeadLetter.
func (s *Syncer) apply(ctx context.Context, st *storages.Import, o gcs.Object, assumeNew bool, counts *ingest.Counts) (ledger.Outcome, error) {
	obs := ledger.Observation{Present: true, Generation: o.Generation, EventTime: o.Updated, Source: ledger.SourceSync, AssumeNew: assumeNew}
	var err error
	for attempt := range 5 {
		var outcome ledger.Outcome
		outcome, err = s.pipeline.Apply(ctx, st, ingest.Object{Bucket: st.Bucket, Key: o.Key}, obs, counts)
		if err == nil {
			return outcome, nil
		}
		select {
		case <-ctx.Done():
			return 0, ctx.Err()
		case <-time.After(time.Duration(100<<attempt) * time.Millisecond):
		}
	}
	return 0, err
}
