package deadletter_test

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/labelsync/labelsync/internal/deadletter"
	"github.com/labelsync/labelsync/internal/fault"
	"github.com/labelsync/labelsync/internal/metrics"
	"github.com/labelsync/labelsync/internal/natstest"
	"github.com/labelsync/labelsync/internal/taskbus"
)

// env is a real NATS server with labelsync's streams and a worker's
// dead-letter writer.
type env struct {
	bus *taskbus.Bus
	m   *metrics.Metrics
	w   *deadletter.Writer
}

func newEnv(t testing.TB) *env {
	t.Helper()
	bus := natstest.NewBus(t)
	m := metrics.New(prometheus.NewRegistry())
	return &env{bus: bus, m: m, w: deadletter.NewWriter(bus, "worker", m, slog.New(slog.DiscardHandler))}
}

type stored struct {
	Subject       string
	Reason        string            `json:"reason"`
	Code          string            `json:"code"`
	Component     string            `json:"component"`
	Source        map[string]any    `json:"source"`
	Attributes    map[string]string `json:"attributes"`
	Data          *string           `json:"data"`
	DataBase64    []byte            `json:"data_base64"`
	DataTruncated bool              `json:"data_truncated"`
	DataBytes     int               `json:"data_bytes"`
}

// letters reads every stored dead letter.
func (e *env) letters(t *testing.T) []stored {
	t.Helper()
	var out []stored
	for _, m := range natstest.Messages(t, e.bus.JetStream(), taskbus.DeadLetterStream) {
		var l stored
		if err := json.Unmarshal(m.Data, &l); err != nil {
			t.Fatalf("letter %d: %v", m.Sequence, err)
		}
		l.Subject = m.Subject
		out = append(out, l)
	}
	return out
}

func (e *env) counted(code fault.Code) float64 {
	return testutil.ToFloat64(e.m.DeadLetters.WithLabelValues("worker", string(code)))
}

// run passes one message through the failure path around h.
func (e *env) run(t *testing.T, h message.HandlerFunc) error {
	t.Helper()
	retry := deadletter.DefaultRetry()
	retry.InitialInterval, retry.MaxInterval, retry.MaxRetries = time.Millisecond, 2*time.Millisecond, 3
	mw, err := deadletter.Middleware(e.w, retry, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	msg := message.NewMessage("42", []byte("payload"))
	msg.Metadata.Set("bucketId", "b")
	msg.Metadata.Set("_watermill_x", "internal")
	msg.SetContext(context.Background())
	_, err = mw(h)(msg)
	return err
}

func failing(calls *atomic.Int32, errs ...error) message.HandlerFunc {
	return func(*message.Message) ([]*message.Message, error) {
		n := int(calls.Add(1)) - 1
		return nil, errs[min(n, len(errs)-1)]
	}
}

func TestFailurePath(t *testing.T) {
	t.Parallel()
	base := errors.New("events: bad\nthing")
	tests := []struct {
		name      string
		errs      []error // the handler's answer on each call; the last repeats
		wantErr   bool    // returned to the transport: nack, redelivery
		wantCalls int32
		wantCode  fault.Code // "" = no dead letter
		wantWhy   string
	}{
		{"permanent: stored once, acked", []error{fault.Permanent(fault.MalformedNotification, base)}, false, 1, fault.MalformedNotification, "events: bad thing"},
		{"transient always: retried, then handed back", []error{fault.Transient(fault.Unavailable, base)}, true, 4, "", ""},
		{"transient once: retried, then acked", []error{fault.Transient(fault.Unavailable, base), nil}, false, 2, "", ""},
		{"transient, then permanent: dead-lettered", []error{fault.Transient(fault.Unavailable, base), fault.Permanent(fault.TooLarge, base)}, false, 2, fault.TooLarge, "events: bad thing"},
		{"unclassified always: retried, then dead-lettered", []error{base}, false, 4, fault.Unclassified, "events: bad thing"},
		{"unclassified once: retried, then acked", []error{base, nil}, false, 2, "", ""},
		{"a shutdown is handed back, never dead-lettered", []error{context.Canceled}, true, 4, "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			e := newEnv(t)
			var calls atomic.Int32
			err := e.run(t, failing(&calls, tt.errs...))
			if (err != nil) != tt.wantErr || calls.Load() != tt.wantCalls {
				t.Fatalf("err %v after %d calls; want error %v after %d", err, calls.Load(), tt.wantErr, tt.wantCalls)
			}
			got := e.letters(t)
			if tt.wantCode == "" {
				if len(got) != 0 {
					t.Fatalf("%d dead letters, want none: %+v", len(got), got)
				}
				return
			}
			if len(got) != 1 {
				t.Fatalf("%d dead letters, want 1: %+v", len(got), got)
			}
			l := got[0]
			if l.Code != string(tt.wantCode) || l.Reason != tt.wantWhy || l.Component != "worker" || l.Subject != "labelsync.deadletter.worker" {
				t.Errorf("letter code %q reason %q component %q subject %q; want %q %q worker labelsync.deadletter.worker", l.Code, l.Reason, l.Component, l.Subject, tt.wantCode, tt.wantWhy)
			}
			if l.Source["pubsub_message_id"] != "42" || l.Data == nil || *l.Data != "payload" {
				t.Errorf("letter source %v data %v; want message 42 and the payload", l.Source, l.Data)
			}
			if len(l.Attributes) != 1 || l.Attributes["bucketId"] != "b" {
				t.Errorf("attributes %v, want only the original bucketId (no Watermill or poison-queue keys)", l.Attributes)
			}
			if n := e.counted(tt.wantCode); n != 1 {
				t.Errorf("labelsync_deadletter_total{worker,%s} = %v, want 1", tt.wantCode, n)
			}
		})
	}
}

func TestPanicIsPermanent(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	var calls atomic.Int32
	err := e.run(t, func(*message.Message) ([]*message.Message, error) {
		calls.Add(1)
		panic("boom")
	})
	if err != nil || calls.Load() != 1 {
		t.Fatalf("err %v after %d calls; want nil (acked) after 1 (a panic is not retried)", err, calls.Load())
	}
	got := e.letters(t)
	if len(got) != 1 || got[0].Code != "panic" || got[0].Reason != "handler panicked: boom" {
		t.Fatalf("letters %+v, want one with code panic and reason %q (no stack)", got, "handler panicked: boom")
	}
}

// The dead-letter stream unavailable: the message must come back, not be
// acknowledged.
func TestUnavailableDeadLetterStreamNacks(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	if err := e.bus.JetStream().DeleteStream(context.Background(), taskbus.DeadLetterStream); err != nil {
		t.Fatal(err)
	}
	var calls atomic.Int32
	err := e.run(t, failing(&calls, fault.Permanent(fault.BadInput, errors.New("bad"))))
	if err == nil {
		t.Fatal("acked although the dead letter could not be stored")
	}
	if _, class := fault.Of(err); class != fault.ClassTransient {
		t.Errorf("the failure to store is %v, want transient", class)
	}
	if n := e.counted(fault.BadInput); n != 0 {
		t.Errorf("counted %v dead letters, want 0", n)
	}
}

// A letter about an object is stored once per (storage, key, generation,
// row), also after JetStream's duplicate window has passed.
func TestKeyedLettersOncePerIdentityAtAnyTime(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	srv := natstest.Server(t)
	js, err := jetstream.New(natstest.Connect(t, srv.URL()))
	if err != nil {
		t.Fatal(err)
	}
	// An operator's stream with a short duplicate window; EnsureStreams
	// keeps it.
	cfg := taskbus.StreamConfigs()[taskbus.DeadLetterStream]
	cfg.Duplicates = 100 * time.Millisecond
	if _, err := js.CreateStream(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	bus := natstest.Bus(t, srv.URL())
	m := metrics.New(prometheus.NewRegistry())
	e := &env{bus: bus, m: m, w: deadletter.NewWriter(bus, "worker", m, slog.New(slog.DiscardHandler))}

	row := func(i int) *int { return &i }
	letter := func(gen string, r *int) deadletter.Letter {
		return deadletter.Letter{Reason: "bad row", Code: fault.BadRecord, Source: deadletter.Source{StorageID: 1, Bucket: "b", Key: "tasks.jsonl", Generation: gen, Row: r}, Data: []byte("{")}
	}
	for _, l := range []deadletter.Letter{letter("5", row(1)), letter("5", row(1)), letter("5", row(2)), letter("6", row(1)), letter("5", nil)} {
		if err := e.w.Write(ctx, l); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(300 * time.Millisecond) // past the duplicate window
	again := letter("5", row(1))
	again.Reason = "bad row, seen again by a sync"
	if err := e.w.Write(ctx, again); err != nil {
		t.Fatal(err)
	}
	got := e.letters(t)
	if len(got) != 4 {
		t.Fatalf("%d letters, want 4 (gen 5 rows 1 and 2, gen 6 row 1, gen 5 file): %+v", len(got), got)
	}
	if got[0].Reason != "bad row" {
		t.Errorf("first letter's reason %q: the later write replaced it", got[0].Reason)
	}
	for _, l := range got {
		if !strings.HasPrefix(l.Subject, "labelsync.deadletter.worker.") {
			t.Errorf("subject %q, want labelsync.deadletter.worker.<identity>", l.Subject)
		}
	}
	if n := e.counted(fault.BadRecord); n != 4 {
		t.Errorf("counted %v, want 4: a letter already stored is not counted again", n)
	}
}

// A malformed notification has no object: it is deduplicated on its
// content inside the duplicate window.
func TestUnkeyedLettersDeduplicatedInWindow(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	e := newEnv(t)
	l := deadletter.Letter{Reason: "events: no objectId", Code: fault.MalformedNotification, Source: deadletter.Source{PubsubMessageID: "1"}, Attributes: map[string]string{"a": "b"}, Data: []byte("x")}
	redelivered := l
	redelivered.Source.PubsubMessageID = "2"
	other := l
	other.Data = []byte("y")
	for _, l := range []deadletter.Letter{l, redelivered, other} {
		if err := e.w.Write(ctx, l); err != nil {
			t.Fatal(err)
		}
	}
	if got := e.letters(t); len(got) != 2 {
		t.Fatalf("%d letters, want 2 (the same content twice is one entry): %+v", len(got), got)
	}
}

// A letter about an oversize input is never oversize itself: its data is
// cut to what the dead-letter stream accepts.
func TestOversizeDataIsCut(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	srv := natstest.Server(t)
	js, err := jetstream.New(natstest.Connect(t, srv.URL()))
	if err != nil {
		t.Fatal(err)
	}
	cfg := taskbus.StreamConfigs()[taskbus.DeadLetterStream]
	cfg.MaxMsgSize = 16 << 10
	if _, err := js.CreateStream(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	bus := natstest.Bus(t, srv.URL())
	m := metrics.New(prometheus.NewRegistry())
	e := &env{bus: bus, m: m, w: deadletter.NewWriter(bus, "worker", m, slog.New(slog.DiscardHandler))}
	for i, data := range [][]byte{
		[]byte(strings.Repeat(`"\u00e9"`, 20<<10)), // escaping grows it
		[]byte(strings.Repeat("\xff", 64<<10)),     // base64 grows it
		[]byte(strings.Repeat("a", 3<<20)),         // over NATS's max_payload too
	} {
		row := i
		l := deadletter.Letter{Reason: "too large", Code: fault.TooLarge, Source: deadletter.Source{Bucket: "b", Key: "k", Generation: "1", Row: &row}, Data: data}
		if err := e.w.Write(ctx, l); err != nil {
			t.Fatalf("data %d: %v", i, err)
		}
	}
	got := e.letters(t)
	if len(got) != 3 {
		t.Fatalf("%d letters, want 3", len(got))
	}
	for i, l := range got {
		if !l.DataTruncated || l.DataBytes == 0 {
			t.Errorf("letter %d: data_truncated %v data_bytes %d, want true and the original size", i, l.DataTruncated, l.DataBytes)
		}
	}
}
