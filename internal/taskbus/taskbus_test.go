package taskbus_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/labelsync/labelsync/internal/ledger"
	"github.com/labelsync/labelsync/internal/natstest"
	"github.com/labelsync/labelsync/internal/taskbus"
)

func newBus(t *testing.T) *taskbus.Bus { return natstest.NewBus(t) }

func entry(k taskbus.Key, kind ledger.Kind, gen int64) taskbus.Entry {
	e := taskbus.Entry{Key: k, Kind: kind, Generation: gen}
	if kind != ledger.Tombstone {
		e.Event = &taskbus.Event{Event: kind, TaskID: taskbus.TaskID(k.Storage, k.Object, nil), Project: k.Project, StorageID: k.Storage, Key: k.Object}
	}
	return e
}

func TestAppendIsConditionalOnHead(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := newBus(t)
	k := taskbus.Key{Project: 7, Storage: 1, Object: "incoming/cat 1.jpg"}
	other := taskbus.Key{Project: 7, Storage: 1, Object: "incoming/cat 2.jpg"}

	h, err := b.Head(ctx, k)
	if err != nil || h.Exists() {
		t.Fatalf("ledger.Head of new key = %+v, %v; want none", h, err)
	}
	r1, err := b.Append(ctx, entry(k, ledger.Created, 10), 0)
	if err != nil {
		t.Fatalf("first Append = %+v, %v", r1, err)
	}
	// Another key's appends do not move this key's head.
	if _, err := b.Append(ctx, entry(other, ledger.Created, 5), 0); err != nil {
		t.Fatalf("Append other key: %v", err)
	}
	// A retry of the same entry (its ack lost) conflicts: the head moved.
	if _, err := b.Append(ctx, entry(k, ledger.Created, 10), 0); !errors.Is(err, taskbus.ErrConflict) {
		t.Fatalf("retried Append: err = %v, want taskbus.ErrConflict", err)
	}
	// A different entry on a stale head conflicts.
	if _, err := b.Append(ctx, entry(k, ledger.Updated, 11), 0); !errors.Is(err, taskbus.ErrConflict) {
		t.Fatalf("Append on stale head: err = %v, want taskbus.ErrConflict", err)
	}
	h, err = b.Head(ctx, k)
	if err != nil {
		t.Fatal(err)
	}
	if want := (ledger.Head{Seq: r1.Seq, Generation: 10, Kind: ledger.Created}); h != want {
		t.Fatalf("ledger.Head = %+v, want %+v", h, want)
	}
	// The head spans event kinds and the ledger-only tombstones.
	r2, err := b.Append(ctx, entry(k, ledger.Deleted, 10), h.Seq)
	if err != nil {
		t.Fatal(err)
	}
	r3, err := b.Append(ctx, entry(k, ledger.Tombstone, 12), r2.Seq)
	if err != nil {
		t.Fatal(err)
	}
	h, err = b.Head(ctx, k)
	if err != nil {
		t.Fatal(err)
	}
	if want := (ledger.Head{Seq: r3.Seq, Generation: 12, Kind: ledger.Tombstone}); h != want {
		t.Fatalf("ledger.Head after tombstone = %+v, want %+v", h, want)
	}
	if _, err := b.Append(ctx, entry(k, ledger.Created, 13), r2.Seq); !errors.Is(err, taskbus.ErrConflict) {
		t.Fatalf("Append behind a tombstone: err = %v, want taskbus.ErrConflict", err)
	}
}

func TestRowsAndRowHeads(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := newBus(t)
	k := taskbus.Key{Project: 7, Storage: 3, Object: "tasks/batch.jsonl"}
	heads, err := b.RowHeads(ctx, k)
	if err != nil || len(heads) != 0 {
		t.Fatalf("RowHeads of a new file = %v, %v", heads, err)
	}
	var results []error
	rows := b.NewRows(func(_ taskbus.RowEntry, err error) { results = append(results, err) })
	for i := range 1200 { // more than maxRowsInFlight: exercises settling mid-batch
		if err := rows.Add(ctx, taskbus.RowEntry{Key: k, Row: i, Kind: ledger.Created, Generation: 5, Hash: "h" + string(rune('a'+i%26)), Event: &taskbus.Event{Event: ledger.Created}}); err != nil {
			t.Fatal(err)
		}
	}
	// A second append on row 0 with a stale expectation conflicts.
	if err := rows.Add(ctx, taskbus.RowEntry{Key: k, Row: 0, Kind: ledger.Updated, Generation: 6, Event: &taskbus.Event{Event: ledger.Updated}}); err != nil {
		t.Fatal(err)
	}
	if err := rows.Wait(ctx); err != nil {
		t.Fatal(err)
	}
	if len(results) != 1201 {
		t.Fatalf("%d results, want 1201", len(results))
	}
	for i, err := range results[:1200] {
		if err != nil {
			t.Fatalf("row %d: %v", i, err)
		}
	}
	if !errors.Is(results[1200], taskbus.ErrConflict) {
		t.Fatalf("stale row append: %v, want taskbus.ErrConflict", results[1200])
	}
	heads, err = b.RowHeads(ctx, k)
	if err != nil {
		t.Fatal(err)
	}
	if len(heads) != 1200 || heads[27].Hash != "hb" || heads[27].Generation != 5 || !heads[27].Live() {
		t.Fatalf("RowHeads: %d rows, row 27 = %+v", len(heads), heads[27])
	}
	h0, err := b.RowHead(ctx, k, 0)
	if err != nil || h0 != heads[0] {
		t.Fatalf("RowHead(0) = %+v, %v; want %+v", h0, err, heads[0])
	}
	// A file's row events do not move its file-level head.
	if h, err := b.Head(ctx, k); err != nil || h.Exists() {
		t.Fatalf("file head = %+v, %v; want none", h, err)
	}
}

// An asynchronous publish whose acknowledgement never comes (here: a plain
// subscriber takes it and does not answer, as a stream leader that died
// after taking it) fails after the bus's timeout instead of waiting for a
// reconnect; the connector's entry writes and row appends rely on it.
func TestAsyncPublishWithoutAnswerTimesOut(t *testing.T) {
	t.Parallel()
	srv := natstest.Server(t)
	nc := natstest.Connect(t, srv.URL())
	sub, err := nc.SubscribeSync("lost.answer")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = sub.Unsubscribe() }()
	bus, err := taskbus.New(nc, 200*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	f, err := bus.JetStream().PublishMsgAsync(&nats.Msg{Subject: "lost.answer", Data: []byte("x")})
	if err != nil {
		t.Fatal(err)
	}
	select {
	case <-f.Ok():
		t.Fatal("acknowledged by nobody")
	case err := <-f.Err():
		if !errors.Is(err, jetstream.ErrAsyncPublishTimeout) {
			t.Fatalf("error %v, want jetstream.ErrAsyncPublishTimeout", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no answer and no timeout after 10 s")
	}
}
