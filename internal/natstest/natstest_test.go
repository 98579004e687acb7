package natstest_test

import (
	"context"
	"testing"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/labelsync/labelsync/internal/natstest"
	"github.com/labelsync/labelsync/internal/taskbus"
)

func TestCaughtUp(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	js := natstest.NewBus(t).JetStream()
	caughtUp := func() error {
		return natstest.CaughtUp(ctx, js, taskbus.TasksStream, "c", "labelsync.tasks.>")
	}
	if err := caughtUp(); err != nil {
		t.Fatalf("nothing stored: %v", err)
	}
	for _, subject := range []string{"labelsync.tasks.7.created.1.a", "labelsync.tasks.7.created.1.b", "labelsync.ledger.7.created.1.b"} {
		if _, err := js.Publish(ctx, subject, []byte("{}")); err != nil {
			t.Fatal(err)
		}
	}
	c, err := js.CreateOrUpdateConsumer(ctx, taskbus.TasksStream, jetstream.ConsumerConfig{
		Durable: "c", FilterSubject: "labelsync.tasks.>", AckPolicy: jetstream.AckExplicitPolicy,
	})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 2 {
		if err := caughtUp(); err == nil {
			t.Fatalf("%d of 2 messages delivered: caught up", i)
		}
		batch, err := c.Fetch(1)
		if err != nil {
			t.Fatal(err)
		}
		for m := range batch.Messages() {
			if err := caughtUp(); err == nil {
				t.Fatalf("message %d delivered, not acknowledged: caught up", i+1)
			}
			if err := m.DoubleAck(ctx); err != nil {
				t.Fatal(err)
			}
		}
	}
	// The ledger message is not on the filter: nothing is left.
	if err := caughtUp(); err != nil {
		t.Fatalf("both messages acknowledged: %v", err)
	}
}
