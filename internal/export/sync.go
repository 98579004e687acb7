package export

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"golang.org/x/sync/errgroup"

	"github.com/labelsync/labelsync/internal/annotation"
	"github.com/labelsync/labelsync/internal/fault"
	"github.com/labelsync/labelsync/internal/storages"
	"github.com/labelsync/labelsync/internal/taskbus"
)

// Export sync (POST /api/storages/export/gcs/{id}/sync) writes every
// annotation labelsync knows for the storage's project to that storage,
// with the same newest-wins rule as live events, so it is safe while they
// flow. What labelsync knows is LABELSYNC_ANNOTATIONS: it keeps the newest
// change of each annotation (one subject per annotation, one message per
// subject).
//
// Requests and status live in the key-value bucket labelsync_export_sync
// (key: storage id), so that the worker's storage API can queue a sync and
// show its status while an exporter replica runs it. Replicas claim a
// queued sync by compare-and-set; the one running it refreshes a heartbeat,
// and a sync whose heartbeat is older than staleAfter is taken over and
// started again (writes are idempotent).

// SyncBucket holds export syncs' requests and status.
const SyncBucket = "labelsync_export_sync"

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
	heartbeatEvery = 5 * time.Second
	staleAfter     = 30 * time.Second
)

// Status is an export storage's sync state, with Label Studio's field
// names. LastSyncCount is the number of objects the last sync wrote.
type Status struct {
	Status        string     `json:"status"`
	LastSync      *time.Time `json:"last_sync"`
	LastSyncCount *int64     `json:"last_sync_count"`
	Traceback     *string    `json:"traceback"`
	Meta          SyncMeta   `json:"meta"`
}

// SyncMeta is a sync's progress.
type SyncMeta struct {
	Annotations int64     `json:"annotations"`
	Written     int64     `json:"written"`
	Errors      int64     `json:"errors"`
	StartedAt   string    `json:"started_at,omitempty"`
	Duration    float64   `json:"duration"`
	Owner       string    `json:"owner,omitempty"`
	Heartbeat   time.Time `json:"heartbeat,omitzero"`
}

// Syncs queues export syncs and reads their status. Safe for concurrent use.
type Syncs struct {
	kv jetstream.KeyValue
}

// NewSyncs opens (or creates) the sync bucket.
func NewSyncs(ctx context.Context, js jetstream.JetStream) (*Syncs, error) {
	kv, err := taskbus.OpenKeyValue(ctx, js, jetstream.KeyValueConfig{Bucket: SyncBucket, Description: "labelsync export syncs: requests and status", Storage: jetstream.FileStorage})
	if err != nil {
		return nil, fmt.Errorf("export: sync bucket: %w", err)
	}
	return &Syncs{kv: kv}, nil
}

func syncKey(id int64) string { return strconv.FormatInt(id, 10) }

func (s *Syncs) get(ctx context.Context, id int64) (Status, uint64, error) {
	e, err := s.kv.Get(ctx, syncKey(id))
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return Status{Status: StatusInitialized}, 0, nil
	}
	if err != nil {
		return Status{}, 0, fmt.Errorf("export: sync %d status: %w", id, err)
	}
	var st Status
	if err := json.Unmarshal(e.Value(), &st); err != nil {
		return Status{}, 0, fmt.Errorf("export: sync %d status: %w", id, err)
	}
	return st, e.Revision(), nil
}

// put stores st if the entry is still at rev (0: absent).
func (s *Syncs) put(ctx context.Context, id int64, st Status, rev uint64) (uint64, error) {
	v, _ := json.Marshal(st)
	if rev == 0 {
		return s.kv.Create(ctx, syncKey(id), v)
	}
	return s.kv.Update(ctx, syncKey(id), v, rev)
}

// Status returns an export storage's sync status (initialized when it
// never synced).
func (s *Syncs) Status(ctx context.Context, id int64) (Status, error) {
	st, _, err := s.get(ctx, id)
	return st, err
}

// Request queues a sync of storage id, or returns the one queued or
// running: it never starts a second.
func (s *Syncs) Request(ctx context.Context, id int64) (Status, error) {
	for range maxConflicts {
		st, rev, err := s.get(ctx, id)
		if err != nil {
			return Status{}, err
		}
		if st.Status == StatusQueued || st.Status == StatusInProgress {
			return st, nil
		}
		st.Status, st.Traceback = StatusQueued, nil
		st.Meta = SyncMeta{}
		if _, err := s.put(ctx, id, st, rev); err == nil {
			return st, nil
		}
	}
	return Status{}, fmt.Errorf("export: sync %d: status kept changing", id)
}

// RunSyncs runs queued export syncs (and takes over stale ones) until ctx
// ends. Every replica runs it; each sync runs on one.
func (x *Exporter) RunSyncs(ctx context.Context, s *Syncs, logger *slog.Logger) error {
	host, _ := os.Hostname()
	owner := fmt.Sprintf("%s/%d/%d", host, os.Getpid(), time.Now().UnixNano())
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
		keys, err := s.kv.Keys(ctx)
		if err != nil {
			if !errors.Is(err, jetstream.ErrNoKeysFound) && ctx.Err() == nil {
				logger.Warn("export sync: list requests", "err", err)
			}
			continue
		}
		for _, k := range keys {
			id, err := strconv.ParseInt(k, 10, 64)
			if err != nil {
				logger.Warn("export sync: a key that names no storage", "key", k)
				continue
			}
			st, rev, err := s.get(ctx, id)
			if err != nil {
				logger.Warn("export sync: read a request", "storage", id, "err", err)
				continue // the next tick tries again
			}
			stale := st.Status == StatusInProgress && time.Since(st.Meta.Heartbeat) > staleAfter
			if st.Status != StatusQueued && !stale {
				continue
			}
			st.Status = StatusInProgress
			st.Meta = SyncMeta{StartedAt: time.Now().UTC().Format(time.RFC3339), Owner: owner, Heartbeat: time.Now()}
			rev, err = s.put(ctx, id, st, rev)
			if err != nil {
				var apiErr *jetstream.APIError
				lost := errors.Is(err, jetstream.ErrKeyExists) || (errors.As(err, &apiErr) && apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence)
				if !lost {
					logger.Warn("export sync: claim", "storage", id, "err", err)
				}
				continue // another replica claimed it, or the next tick tries again
			}
			x.runSync(ctx, s, id, st, rev, logger)
		}
	}
}

// runSync runs one claimed sync and records its outcome.
func (x *Exporter) runSync(ctx context.Context, s *Syncs, id int64, st Status, rev uint64, logger *slog.Logger) {
	started := time.Now()
	var seen, written, failed atomic.Int64
	storageLabel := strconv.FormatInt(id, 10)
	running, moved := x.metrics.SyncRunning.WithLabelValues("export", storageLabel), x.metrics.SyncProgress.WithLabelValues("export", storageLabel)
	running.Set(1)
	moved.SetToCurrentTime()
	defer running.Set(0)
	var lastSeen int64
	progress := func() {
		if n := seen.Load(); n != lastSeen {
			lastSeen = n
			moved.SetToCurrentTime()
		}
		st.Meta.Annotations, st.Meta.Written, st.Meta.Errors = seen.Load(), written.Load(), failed.Load()
		st.Meta.Duration = time.Since(started).Seconds()
		st.Meta.Heartbeat = time.Now()
	}
	hctx, stop := context.WithCancel(ctx)
	defer stop()
	lost := make(chan struct{})
	beating := make(chan struct{})
	go func() {
		defer close(beating)
		t := time.NewTicker(heartbeatEvery)
		defer t.Stop()
		for {
			select {
			case <-hctx.Done():
				return
			case <-t.C:
				progress()
				r, err := s.put(hctx, id, st, rev)
				if err != nil {
					if hctx.Err() == nil {
						logger.Warn("export sync: lost the claim", "storage", id, "err", err)
						close(lost)
						stop()
					}
					return
				}
				rev = r
			}
		}
	}()
	err := x.sync(hctx, id, &seen, &written, &failed)
	stop()
	<-beating // st and the progress figures are ours alone from here
	select {
	case <-lost:
		return // another replica runs it now
	default:
	}
	if ctx.Err() != nil {
		return // shutting down: the heartbeat goes stale and a replica takes over
	}
	progress()
	now := time.Now().UTC()
	n := written.Load()
	st.LastSync, st.LastSyncCount, st.Traceback = &now, &n, nil
	switch {
	case err != nil:
		st.Status = StatusFailed
		tb := err.Error()
		st.Traceback = &tb
	case failed.Load() > 0:
		st.Status = StatusCompletedWithErrors
	default:
		st.Status = StatusCompleted
	}
	// The claim is ours: the revision the heartbeat last wrote.
	for range 3 {
		if _, perr := s.put(context.WithoutCancel(ctx), id, st, rev); perr == nil {
			break
		}
		_, r, gerr := s.get(context.WithoutCancel(ctx), id)
		if gerr != nil {
			break
		}
		rev = r
	}
	logger.Info("export sync finished", "storage", id, "status", st.Status, "written", n, "annotations", seen.Load(), "errors", failed.Load())
}

// sync writes the newest state of every annotation of the storage's
// project to it: those labelsync has seen, then, with WithLabelStudio,
// those Label Studio has.
func (x *Exporter) sync(ctx context.Context, id int64, seen, written, failed *atomic.Int64) error {
	var target *storages.Export
	for _, st := range x.exports() {
		if st.ID == id {
			target = &st
			break
		}
	}
	if target == nil {
		return fmt.Errorf("export storage %d does not exist", id)
	}
	if err := x.syncStream(ctx, target, seen, written, failed); err != nil {
		return err
	}
	if x.labelStudio != nil {
		return x.syncLabelStudio(ctx, target, seen, written, failed)
	}
	return nil
}

// syncStream writes the annotations of LABELSYNC_ANNOTATIONS.
func (x *Exporter) syncStream(ctx context.Context, target *storages.Export, seen, written, failed *atomic.Int64) error {
	// The sync writes the state the stream held when it started: changes
	// that arrive meanwhile are live events, which the consumer writes.
	stream, err := x.js.Stream(ctx, taskbus.AnnotationsStream)
	if err != nil {
		return fmt.Errorf("export sync: %w", err)
	}
	sinfo, err := stream.Info(ctx)
	if err != nil {
		return fmt.Errorf("export sync: %w", err)
	}
	lastSeq := sinfo.State.LastSeq
	cons, err := x.js.OrderedConsumer(ctx, taskbus.AnnotationsStream, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{fmt.Sprintf("labelsync.annotations.%d.>", target.Project)},
		DeliverPolicy:  jetstream.DeliverLastPerSubjectPolicy,
	})
	if err != nil {
		return fmt.Errorf("export sync: %w", err)
	}
	info, err := cons.Info(ctx)
	if err != nil {
		return fmt.Errorf("export sync: %w", err)
	}
	if info.NumPending == 0 {
		return nil
	}
	it, err := cons.Messages()
	if err != nil {
		return fmt.Errorf("export sync: %w", err)
	}
	defer it.Stop()
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(32)
	for {
		m, err := it.Next()
		if err != nil {
			_ = g.Wait()
			return fmt.Errorf("export sync: %w", err)
		}
		md, err := m.Metadata()
		if err != nil {
			_ = g.Wait()
			return fmt.Errorf("export sync: %w", err)
		}
		if md.Sequence.Stream > lastSeq {
			break // newer than the sync: the live consumer has it
		}
		seen.Add(1)
		data := m.Data()
		g.Go(func() error { return x.syncOne(gctx, data, target, written, failed) })
		if md.NumPending == 0 {
			break
		}
	}
	return g.Wait()
}

// syncOne applies one stored (or Label Studio's) annotation payload to the
// target for an export sync: a payload that does not decode to one
// annotation, or a permanent failure, counts as failed and the sync goes
// on; a transient failure is returned, and fails the sync, which can be
// requested again.
func (x *Exporter) syncOne(ctx context.Context, body []byte, target *storages.Export, written, failed *atomic.Int64) error {
	_, events, err := annotation.Decode(body)
	if err != nil || len(events) != 1 {
		failed.Add(1)
		return nil
	}
	n, err := x.ApplyTo(ctx, events[0], []storages.Export{*target})
	switch {
	case err == nil:
		written.Add(int64(n))
	case fault.IsPermanent(err):
		failed.Add(1)
	default:
		return err
	}
	return nil
}
