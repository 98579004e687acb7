package taskbus_test

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/labelsync/labelsync/internal/taskbus"
)

// LastMsgs gives a key-value bucket's newest message of each subject asked
// for, delete markers included, and nothing for keys never written.
func TestLastMsgs(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	b := newBus(t)
	kv, err := taskbus.OpenKeyValue(ctx, b.JetStream(), jetstream.KeyValueConfig{Bucket: "lastmsgs"})
	if err != nil {
		t.Fatal(err)
	}
	for _, kv1 := range [][2]string{{"a", "1"}, {"a", "2"}, {"b", "1"}, {"c", "1"}} {
		if _, err := kv.PutString(ctx, kv1[0], kv1[1]); err != nil {
			t.Fatal(err)
		}
	}
	if err := kv.Delete(ctx, "c"); err != nil {
		t.Fatal(err)
	}
	read := func(keys ...string) (map[string]string, error) {
		subjects := make([]string, len(keys))
		for i, k := range keys {
			subjects[i] = "$KV.lastmsgs." + k
		}
		got := map[string]string{}
		err := taskbus.LastMsgs(ctx, b.Conn(), "KV_lastmsgs", subjects, func(m *nats.Msg, seq uint64) error {
			got[m.Subject] = fmt.Sprintf("%s@%d%s", m.Data, seq, m.Header.Get("KV-Operation"))
			return nil
		})
		return got, err
	}
	got, err := read("a", "b", "c", "never")
	want := map[string]string{"$KV.lastmsgs.a": "2@2", "$KV.lastmsgs.b": "1@3", "$KV.lastmsgs.c": "@5DEL"}
	if err != nil || fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("LastMsgs(a, b, c, never) = %v, %v; want %v", got, err, want)
	}
	if got, err := read("never", "nor"); err != nil || len(got) != 0 {
		t.Errorf("LastMsgs of keys never written = %v, %v; want none", got, err)
	}
	if got, err := read(); err != nil || len(got) != 0 {
		t.Errorf("LastMsgs() = %v, %v; want none", got, err)
	}
	if _, err := read(make([]string, taskbus.MaxLastMsgs+1)...); err == nil {
		t.Errorf("LastMsgs of %d subjects: no error", taskbus.MaxLastMsgs+1)
	}
	sentinel := errors.New("stop")
	err = taskbus.LastMsgs(ctx, b.Conn(), "KV_lastmsgs", []string{"$KV.lastmsgs.a"}, func(*nats.Msg, uint64) error { return sentinel })
	if !errors.Is(err, sentinel) {
		t.Errorf("LastMsgs with a failing callback = %v, want its error", err)
	}
	err = taskbus.LastMsgs(ctx, b.Conn(), "NO_SUCH_STREAM", []string{"x"}, func(*nats.Msg, uint64) error { return nil })
	if err == nil {
		t.Errorf("LastMsgs on a missing stream: no error")
	}
}
