package taskbus

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/labelsync/labelsync/internal/natsembed"
)

func newBus(t *testing.T) *Bus {
	t.Helper()
	srv, err := natsembed.Start(natsembed.Options{Addr: "127.0.0.1:0", StoreDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Shutdown)
	nc, err := nats.Connect(srv.URL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	b, err := New(nc, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if err := b.EnsureStreams(context.Background(), TasksStream, DeadLetterStream); err != nil {
		t.Fatal(err)
	}
	return b
}

func entry(k Key, kind Kind, gen int64) Entry {
	e := Entry{Key: k, Kind: kind, Generation: gen}
	if kind != Tombstone {
		e.Event = &Event{Event: kind, TaskID: TaskID(k.Storage, k.Object, nil), Project: k.Project, StorageID: k.Storage, Key: k.Object}
	}
	return e
}

func TestAppendIsConditionalOnHead(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := newBus(t)
	k := Key{Project: 7, Storage: 1, Object: "incoming/cat 1.jpg"}
	other := Key{Project: 7, Storage: 1, Object: "incoming/cat 2.jpg"}

	h, err := b.Head(ctx, k)
	if err != nil || h.Exists() {
		t.Fatalf("Head of new key = %+v, %v; want none", h, err)
	}
	r1, err := b.Append(ctx, entry(k, Created, 10), 0)
	if err != nil {
		t.Fatalf("first Append = %+v, %v", r1, err)
	}
	// Another key's appends do not move this key's head.
	if _, err := b.Append(ctx, entry(other, Created, 5), 0); err != nil {
		t.Fatalf("Append other key: %v", err)
	}
	// A retry of the same entry (its ack lost) conflicts: the head moved.
	if _, err := b.Append(ctx, entry(k, Created, 10), 0); !errors.Is(err, ErrConflict) {
		t.Fatalf("retried Append: err = %v, want ErrConflict", err)
	}
	// A different entry on a stale head conflicts.
	if _, err := b.Append(ctx, entry(k, Updated, 11), 0); !errors.Is(err, ErrConflict) {
		t.Fatalf("Append on stale head: err = %v, want ErrConflict", err)
	}
	h, err = b.Head(ctx, k)
	if err != nil {
		t.Fatal(err)
	}
	if want := (Head{Seq: r1.Seq, Generation: 10, Kind: Created}); h != want {
		t.Fatalf("Head = %+v, want %+v", h, want)
	}
	// The head spans event kinds and the ledger-only tombstones.
	r2, err := b.Append(ctx, entry(k, Deleted, 10), h.Seq)
	if err != nil {
		t.Fatal(err)
	}
	r3, err := b.Append(ctx, entry(k, Tombstone, 12), r2.Seq)
	if err != nil {
		t.Fatal(err)
	}
	h, err = b.Head(ctx, k)
	if err != nil {
		t.Fatal(err)
	}
	if want := (Head{Seq: r3.Seq, Generation: 12, Kind: Tombstone}); h != want {
		t.Fatalf("Head after tombstone = %+v, want %+v", h, want)
	}
	if _, err := b.Append(ctx, entry(k, Created, 13), r2.Seq); !errors.Is(err, ErrConflict) {
		t.Fatalf("Append behind a tombstone: err = %v, want ErrConflict", err)
	}
}

func TestDeadLetterStoredOnce(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := newBus(t)
	l := Letter{Reason: "events: missing eventType", Code: "malformed_notification", Component: "worker",
		Source: Source{PubsubMessageID: "1"}, Attributes: map[string]string{"bucketId": "b"}, Data: []byte{0xff, 0x00}}
	for i := 0; i < 3; i++ {
		l.Source.PubsubMessageID = string(rune('1' + i))
		if err := b.DeadLetter(ctx, l); err != nil {
			t.Fatal(err)
		}
	}
	s, err := b.JetStream().Stream(ctx, DeadLetterStream)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.State.Msgs != 1 {
		t.Fatalf("dead-letter stream holds %d messages, want 1", info.State.Msgs)
	}
}

func TestRowsAndRowHeads(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := newBus(t)
	k := Key{Project: 7, Storage: 3, Object: "tasks/batch.jsonl"}
	heads, err := b.RowHeads(ctx, k)
	if err != nil || len(heads) != 0 {
		t.Fatalf("RowHeads of a new file = %v, %v", heads, err)
	}
	var results []error
	rows := b.NewRows(func(_ RowEntry, err error) { results = append(results, err) })
	for i := range 1200 { // more than maxRowsInFlight: exercises settling mid-batch
		if err := rows.Add(ctx, RowEntry{Key: k, Row: i, Kind: Created, Generation: 5, Hash: "h" + string(rune('a'+i%26)), Event: &Event{Event: Created}}); err != nil {
			t.Fatal(err)
		}
	}
	// A second append on row 0 with a stale expectation conflicts.
	if err := rows.Add(ctx, RowEntry{Key: k, Row: 0, Kind: Updated, Generation: 6, Event: &Event{Event: Updated}}); err != nil {
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
	if !errors.Is(results[1200], ErrConflict) {
		t.Fatalf("stale row append: %v, want ErrConflict", results[1200])
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
