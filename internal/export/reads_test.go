package export

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/labelsync/labelsync/internal/fault"
	"github.com/labelsync/labelsync/internal/natstest"
	"github.com/labelsync/labelsync/internal/taskbus"
)

// Concurrent reads share requests, and each gets its own key's state and
// revision: written, deleted (a delete marker reads as none) or never
// written.
func TestStateReadsBatch(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	bus := natstest.NewBus(t)
	kv, err := taskbus.OpenKeyValue(ctx, bus.JetStream(), jetstream.KeyValueConfig{Bucket: StateBucket})
	if err != nil {
		t.Fatal(err)
	}
	const n = 300
	want := make(map[string]uint64, n)
	for i := range n {
		key := stateKey(7, int64(i+1))
		switch i % 3 {
		case 0:
			rev, err := kv.Put(ctx, key, fmt.Appendf(nil, `{"task":%d}`, i+1))
			if err != nil {
				t.Fatal(err)
			}
			want[key] = rev
		case 1:
			if _, err := kv.Put(ctx, key, []byte(`{"deleted":true}`)); err != nil {
				t.Fatal(err)
			}
			if err := kv.Delete(ctx, key); err != nil {
				t.Fatal(err)
			}
		}
	}
	reads := newStateReads(bus.Conn(), StateBucket, 10*time.Second)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			key := stateKey(7, int64(i+1))
			s, rev, err := reads.get(key)
			switch {
			case err != nil:
				t.Errorf("get(%s) = %v", key, err)
			case i%3 == 0 && (s.Task != int64(i+1) || rev != want[key]):
				t.Errorf("get(%s) = %+v at %d, want task %d at %d", key, s, rev, i+1, want[key])
			case i%3 != 0 && (s != state{} || rev != 0):
				t.Errorf("get(%s) = %+v at %d, want none", key, s, rev)
			}
		})
	}
	wg.Wait()
	if b := reads.batches.Load(); b >= n {
		t.Errorf("%d reads took %d requests, want fewer", n, b)
	} else {
		t.Logf("%d concurrent reads took %d requests", n, b)
	}
	// Once idle, a lone read is a request of its own.
	before := reads.batches.Load()
	if _, _, err := reads.get(stateKey(7, 1)); err != nil || reads.batches.Load() != before+1 {
		t.Errorf("a lone read: %v, %d requests", err, reads.batches.Load()-before)
	}
}

// A bucket NATS cannot answer for fails every read of the batch, as a
// transient fault, and the next read is sent again.
func TestStateReadsUnavailable(t *testing.T) {
	t.Parallel()
	bus := natstest.NewBus(t)
	reads := newStateReads(bus.Conn(), "no_such_bucket", time.Second)
	for range 2 {
		if _, _, err := reads.get("7.1"); err == nil || fault.CodeOf(err) != fault.Unavailable || fault.IsPermanent(err) {
			t.Fatalf("get on a missing bucket = %v, want a transient fault", err)
		}
	}
}
