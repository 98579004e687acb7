package syncer

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"cloud.google.com/go/storage"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/labelsync/labelsync/internal/deadletter"
	"github.com/labelsync/labelsync/internal/devstack"
	"github.com/labelsync/labelsync/internal/gcs"
	"github.com/labelsync/labelsync/internal/ingest"
	"github.com/labelsync/labelsync/internal/ledger"
	"github.com/labelsync/labelsync/internal/metrics"
	"github.com/labelsync/labelsync/internal/natstest"
	"github.com/labelsync/labelsync/internal/storages"
	"github.com/labelsync/labelsync/internal/taskbus"
)

type env struct {
	sc      *storage.Client
	bus     *taskbus.Bus
	set     *storages.Set
	clients *gcs.Clients
	m       *metrics.Metrics
}

func newEnv(t *testing.T, objects int) *env {
	t.Helper()
	ctx := context.Background()
	stack, err := devstack.Start(ctx, devstack.Options{PubsubAddr: "127.0.0.1:0", GCSAddr: "127.0.0.1:0", Topic: "sync-test", Buckets: []string{"acme-raw"}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = stack.Close() })
	sc, err := stack.StorageClient(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for i := range objects {
		w := sc.Bucket("acme-raw").Object(fmt.Sprintf("incoming/%04d.jpg", i)).NewWriter(ctx)
		_, _ = io.WriteString(w, "x")
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
	}
	bus := natstest.NewBus(t)
	st := storages.Import{ID: 1, Project: 7, Bucket: "acme-raw", Prefix: "incoming", UseBlobURLs: true}
	if err := st.Normalize(); err != nil {
		t.Fatal(err)
	}
	set, err := storages.NewSet([]storages.Import{st})
	if err != nil {
		t.Fatal(err)
	}
	clients := gcs.NewClients(gcs.Options{EmulatorHost: stack.GCSURL})
	t.Cleanup(func() { _ = clients.Close() })
	return &env{sc: sc, bus: bus, set: set, clients: clients, m: metrics.New(prometheus.NewRegistry())}
}

func (e *env) syncer(t *testing.T, p applier) *Syncer {
	t.Helper()
	s, err := New(context.Background(), e.bus.JetStream(), p, e.bus,
		func(ctx context.Context, _ *storages.Import) (*storage.Client, error) { return e.clients.For(ctx, nil) },
		func() *storages.Set { return e.set }, e.m, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	s.PageSize = 50
	return s
}

// cancelAfter cancels the sync's context after n applies, as a kill would.
type cancelAfter struct {
	p      *ingest.Pipeline
	n      int64
	done   atomic.Int64
	cancel context.CancelFunc
}

func (c *cancelAfter) Apply(ctx context.Context, st *storages.Import, obj ingest.Object, o ledger.Observation, counts *ingest.Counts) (ledger.Outcome, error) {
	if c.done.Add(1) == c.n {
		c.cancel()
	}
	return c.p.Apply(ctx, st, obj, o, counts)
}

func createdCount(t *testing.T, b *taskbus.Bus) (int, map[string]int) {
	t.Helper()
	ctx := context.Background()
	s, err := b.JetStream().Stream(ctx, taskbus.TasksStream)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	perSubject := map[string]int{}
	n := 0
	for seq := uint64(1); seq <= info.State.LastSeq; seq++ {
		m, err := s.GetMsg(ctx, seq)
		if err != nil {
			t.Fatal(err)
		}
		if strings.HasPrefix(m.Subject, "labelsync.tasks.7.created.") {
			n++
			perSubject[m.Subject]++
		}
	}
	return n, perSubject
}

func TestSyncKilledAndResumed(t *testing.T) {
	t.Parallel()
	e := newEnv(t, 400)
	pipeline := ingest.New(e.bus, deadletter.NewWriter(e.bus, "worker", e.m, slog.New(slog.DiscardHandler)), e.m, slog.New(slog.NewTextHandler(io.Discard, nil)))

	ctx, cancel := context.WithCancel(context.Background())
	first := e.syncer(t, &cancelAfter{p: pipeline, n: 170, cancel: cancel})
	if _, err := first.RunNow(ctx, 1, false, nil); !errors.Is(err, context.Canceled) {
		t.Fatalf("interrupted RunNow: %v, want context.Canceled", err)
	}
	st, err := first.Status(context.Background(), 1)
	if err != nil {
		t.Fatal(err)
	}
	if st.Status != StatusInProgress || st.PageToken == "" || st.Meta.Pages < 1 {
		t.Fatalf("status after the kill: %+v, want in_progress with a checkpoint", st)
	}
	// A graceful stop released the lock; a replica that died would not
	// have: while its lock lives, nobody else runs the sync.
	second := e.syncer(t, pipeline)
	if _, err := second.locks.Create(context.Background(), key(1), []byte("dead-replica")); err != nil {
		t.Fatal(err)
	}
	if _, err := second.RunNow(context.Background(), 1, false, nil); !errors.Is(err, ErrLocked) {
		t.Fatalf("RunNow while locked: %v, want ErrLocked", err)
	}
	if err := second.locks.Delete(context.Background(), key(1)); err != nil { // as the TTL would
		t.Fatal(err)
	}
	final, err := second.RunNow(context.Background(), 1, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	if final.Status != StatusCompleted || final.PageToken != "" || final.Meta.Pages < 8 {
		t.Fatalf("resumed sync: %+v", final)
	}
	n, per := createdCount(t, e.bus)
	if n != 400 {
		t.Fatalf("%d created events, want 400", n)
	}
	for subj, c := range per {
		if c != 1 {
			t.Errorf("%s created %d times", subj, c)
		}
	}
	// The resumed run counts what both runs created: the status is the
	// sync's, not the process's.
	if final.Meta.TasksCreated < 400-170-50 {
		t.Errorf("meta: %+v", final.Meta)
	}
}

func TestRequestWhileRunningReturnsIt(t *testing.T) {
	t.Parallel()
	e := newEnv(t, 10)
	s := e.syncer(t, ingest.New(e.bus, deadletter.NewWriter(e.bus, "worker", e.m, slog.New(slog.DiscardHandler)), e.m, slog.New(slog.NewTextHandler(io.Discard, nil))))
	first, err := s.Request(context.Background(), 1, false)
	if err != nil || first.Status != StatusQueued {
		t.Fatalf("first request: %+v, %v", first, err)
	}
	// Not running yet (Run not started): still queued, and a second
	// request does not queue another.
	again, err := s.Request(context.Background(), 1, false)
	if err != nil || again.Status != StatusQueued {
		t.Fatalf("second request: %+v, %v", again, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() { _ = s.Run(ctx) }()
	deadline := time.Now().Add(30 * time.Second)
	for {
		st, err := s.Status(context.Background(), 1)
		if err != nil {
			t.Fatal(err)
		}
		if st.Status == StatusCompleted {
			if *st.LastSyncCount != 10 {
				t.Fatalf("last_sync_count %d, want 10", *st.LastSyncCount)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("not completed: %+v", st)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestReconcileDeletesTasksOfMissingObjects(t *testing.T) {
	t.Parallel()
	e := newEnv(t, 20)
	s := e.syncer(t, ingest.New(e.bus, deadletter.NewWriter(e.bus, "worker", e.m, slog.New(slog.DiscardHandler)), e.m, slog.New(slog.NewTextHandler(io.Discard, nil))))
	ctx := context.Background()
	if _, err := s.RunNow(ctx, 1, false, nil); err != nil {
		t.Fatal(err)
	}
	// Five objects go while nobody listens to notifications.
	for i := range 5 {
		if err := e.sc.Bucket("acme-raw").Object(fmt.Sprintf("incoming/%04d.jpg", i)).Delete(ctx); err != nil {
			t.Fatal(err)
		}
	}
	// Without reconciliation a sync leaves their tasks alone, as Label
	// Studio does.
	st, err := s.RunNow(ctx, 1, false, nil)
	if err != nil || st.Meta.TasksDeleted != 0 {
		t.Fatalf("plain sync: %+v, %v", st.Meta, err)
	}
	st, err = s.RunNow(ctx, 1, true, nil)
	if err != nil {
		t.Fatal(err)
	}
	if st.Meta.TasksDeleted != 5 || st.Status != StatusCompleted {
		t.Fatalf("reconciling sync: %+v", st)
	}
	// Again: nothing more to delete.
	st, err = s.RunNow(ctx, 1, true, nil)
	if err != nil || st.Meta.TasksDeleted != 0 {
		t.Fatalf("second reconciling sync: %+v, %v", st.Meta, err)
	}
}

// slowApplier makes a sync last long enough to be asked about.
type slowApplier struct {
	p     *ingest.Pipeline
	calls atomic.Int64
}

func (a *slowApplier) Apply(ctx context.Context, st *storages.Import, obj ingest.Object, o ledger.Observation, counts *ingest.Counts) (ledger.Outcome, error) {
	a.calls.Add(1)
	time.Sleep(30 * time.Millisecond)
	return a.p.Apply(ctx, st, obj, o, counts)
}

func TestRequestWhileInProgressStartsNothing(t *testing.T) {
	t.Parallel()
	e := newEnv(t, 10)
	slow := &slowApplier{p: ingest.New(e.bus, deadletter.NewWriter(e.bus, "worker", e.m, slog.New(slog.DiscardHandler)), e.m, slog.New(slog.NewTextHandler(io.Discard, nil)))}
	s := e.syncer(t, slow)
	s.Concurrency = 1
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() { _ = s.Run(ctx) }()
	if _, err := s.Request(ctx, 1, false); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		st, err := s.Status(ctx, 1)
		if err != nil {
			t.Fatal(err)
		}
		if st.Status == StatusInProgress {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("never in progress: %+v", st)
		}
		time.Sleep(5 * time.Millisecond)
	}
	for range 3 {
		again, err := s.Request(ctx, 1, false)
		if err != nil || again.Status != StatusInProgress {
			t.Fatalf("request while running: %+v, %v; want the running one", again, err)
		}
	}
	for {
		st, err := s.Status(ctx, 1)
		if err != nil {
			t.Fatal(err)
		}
		if st.Status == StatusCompleted {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("not completed: %+v", st)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if n := slow.calls.Load(); n != 10 {
		t.Fatalf("%d applies, want 10: a second sync ran", n)
	}
}
