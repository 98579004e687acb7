package connector

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/labelsync/labelsync/internal/fault"
	"github.com/labelsync/labelsync/internal/taskbus"
)

// Bucket is the JetStream key-value bucket of the connector's durable
// state: one entry per task (key t.<task_id>: its Label Studio task id, the
// stream sequence of the last task event applied to it, and whether it is
// in Label Studio) and one intent per import request whose outcome is not
// yet recorded (key i.<project>.<random>).
const Bucket = "labelsync_labelstudio"

// Task states.
const (
	statePresent = "present" // the task is in Label Studio as ID
	stateDeleted = "deleted" // deleted from Label Studio by a deleted event
	stateRefused = "refused" // Label Studio refused it; the event is dead-lettered
)

// entry is a task's durable state. rev is the entry's revision in the
// bucket (0: the task has no entry); writes are conditioned on it.
type entry struct {
	ID      int64  `json:"id,omitempty"`
	Seq     uint64 `json:"seq"`
	State   string `json:"state"`
	Project int64  `json:"project"`
	rev     uint64
}

// applied reports whether the event at stream sequence seq, or a later
// one, has been applied: its redelivery changes nothing.
func (e entry) applied(seq uint64) bool { return e.rev != 0 && e.Seq >= seq }

func (e entry) present() bool { return e.rev != 0 && e.State == statePresent }

// intent is written before an import request is sent and deleted once the
// outcome of every task in it is recorded: after a crash, it says which
// tasks may be in Label Studio without an entry, and from which task id on
// to look for them (every task Label Studio creates for the request gets an
// id above W, the highest id seen before it was sent).
type intent struct {
	W     int64        `json:"w"`
	Tasks []intentTask `json:"tasks"`
}

type intentTask struct {
	TaskID string `json:"t"`
	Seq    uint64 `json:"s"`
}

func (in intent) seqOf(taskID string) (uint64, bool) {
	for _, t := range in.Tasks {
		if t.TaskID == taskID {
			return t.Seq, true
		}
	}
	return 0, false
}

// store is the bucket.
type store struct {
	js jetstream.JetStream
	nc *nats.Conn
	kv jetstream.KeyValue
}

func openStore(ctx context.Context, js jetstream.JetStream) (*store, error) {
	kv, err := taskbus.OpenKeyValue(ctx, js, jetstream.KeyValueConfig{
		Bucket:      Bucket,
		Description: "labelsync Label Studio connector: labelsync task id → Label Studio task id, and import intents",
		Storage:     jetstream.FileStorage,
		History:     1,
	})
	if err != nil {
		return nil, fmt.Errorf("connector: bucket %s: %w", Bucket, err)
	}
	return &store{js: js, nc: js.Conn(), kv: kv}, nil
}

func taskKey(taskID string) string { return "t." + taskID }

// subjectPrefix starts the subject of every key of the bucket in its
// stream, for the writes and reads that go to the stream directly.
const subjectPrefix = "$KV." + Bucket + "."

// unavailable classifies a NATS or JetStream failure: transient, unless the
// context ended (a shutdown, which fault.Of reads by itself).
func unavailable(op string, err error) error {
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return fmt.Errorf("connector: %s: %w", op, err)
	}
	return fault.Transient(fault.Unavailable, fmt.Errorf("connector: %s: %w", op, err))
}

// errConflict: the entry changed since it was read.
var errConflict = fault.Transient(fault.Unavailable, errors.New("connector: the task's state changed meanwhile"))

func (s *store) get(ctx context.Context, taskID string) (entry, error) {
	kve, err := s.kv.Get(ctx, taskKey(taskID))
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return entry{}, nil
	}
	if err != nil {
		return entry{}, unavailable("read task "+taskID, err)
	}
	return decodeEntry(kve.Value(), kve.Revision())
}

func decodeEntry(v []byte, rev uint64) (entry, error) {
	var e entry
	if err := json.Unmarshal(v, &e); err != nil {
		return entry{}, fault.Transient(fault.Unavailable, fmt.Errorf("connector: a task entry that does not decode: %w", err))
	}
	e.rev = rev
	return e, nil
}

// put writes e for taskID if the entry is still at e.rev (0: absent), and
// returns the new revision. errConflict means it moved.
func (s *store) put(ctx context.Context, taskID string, e entry) (uint64, error) {
	v, _ := json.Marshal(e)
	var rev uint64
	var err error
	if e.rev == 0 {
		rev, err = s.kv.Create(ctx, taskKey(taskID), v)
	} else {
		rev, err = s.kv.Update(ctx, taskKey(taskID), v, e.rev)
	}
	if isConflict(err) {
		return 0, errConflict
	}
	if err != nil {
		return 0, unavailable("write task "+taskID, err)
	}
	return rev, nil
}

func isConflict(err error) bool {
	var apiErr *jetstream.APIError
	return errors.Is(err, jetstream.ErrKeyExists) ||
		(errors.As(err, &apiErr) && (apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence || apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequenceConstant))
}

// getMany reads the entries of many tasks in one round trip per
// taskbus.MaxLastMsgs (taskbus.LastMsgs). Tasks without an entry are
// absent from the map.
func (s *store) getMany(ctx context.Context, taskIDs []string) (map[string]entry, error) {
	out := make(map[string]entry, len(taskIDs))
	for start := 0; start < len(taskIDs); start += taskbus.MaxLastMsgs {
		chunk := taskIDs[start:min(start+taskbus.MaxLastMsgs, len(taskIDs))]
		if err := s.getChunk(ctx, chunk, out); err != nil {
			return nil, err
		}
	}
	return out, nil
}

func (s *store) getChunk(ctx context.Context, taskIDs []string, out map[string]entry) error {
	subjects := make([]string, len(taskIDs))
	for i, id := range taskIDs {
		subjects[i] = subjectPrefix + taskKey(id)
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	return taskbus.LastMsgs(ctx, s.nc, "KV_"+Bucket, subjects, func(m *nats.Msg, seq uint64) error {
		if !strings.HasPrefix(m.Subject, subjectPrefix+"t.") {
			return unavailable("read tasks", fmt.Errorf("direct get answered subject %q", m.Subject))
		}
		if op := m.Header.Get("KV-Operation"); op == "DEL" || op == "PURGE" {
			return nil
		}
		e, err := decodeEntry(m.Data, seq)
		if err != nil {
			return err
		}
		out[strings.TrimPrefix(m.Subject, subjectPrefix+"t.")] = e
		return nil
	})
}

// write is one conditional entry write of putMany.
type write struct {
	taskID string
	e      entry
}

// putMany writes many entries, each conditioned on its own revision,
// pipelined (asynchronous publishes to the bucket's subjects, then one wait
// for all acknowledgements). errs[i] is write i's outcome: nil,
// errConflict or a transient error.
//
// An acknowledgement can be lost for good (the bucket's stream leader dies
// after it took the message and before it answered, and the connection, to
// another server, stays up); the futures then fail with
// jetstream.ErrAsyncPublishTimeout after the JetStream context's async
// publish timeout, which taskbus.New sets to the request timeout. Such a
// write may have been stored or not: retried on the same revision, it
// conflicts if it was.
func (s *store) putMany(ctx context.Context, ws []write) []error {
	errs := make([]error, len(ws))
	futures := make([]jetstream.PubAckFuture, len(ws))
	for i, w := range ws {
		v, _ := json.Marshal(w.e)
		msg := &nats.Msg{Subject: subjectPrefix + taskKey(w.taskID), Data: v}
		f, err := s.js.PublishMsgAsync(msg, jetstream.WithExpectLastSequencePerSubject(w.e.rev))
		if err != nil {
			errs[i] = unavailable("write task "+w.taskID, err)
			continue
		}
		futures[i] = f
	}
	for i, f := range futures {
		if f == nil {
			continue
		}
		select {
		case <-f.Ok():
		case err := <-f.Err():
			if isConflict(err) {
				errs[i] = errConflict
			} else {
				errs[i] = unavailable("write task "+ws[i].taskID, err)
			}
		case <-ctx.Done():
			errs[i] = unavailable("write task "+ws[i].taskID, ctx.Err())
		}
	}
	return errs
}

// putIntent stores in for project under a new key and returns the key.
func (s *store) putIntent(ctx context.Context, project int64, in intent) (string, error) {
	var b [8]byte
	_, _ = rand.Read(b[:])
	key := "i." + strconv.FormatInt(project, 10) + "." + hex.EncodeToString(b[:])
	v, _ := json.Marshal(in)
	if _, err := s.kv.Put(ctx, key, v); err != nil {
		return "", unavailable("write import intent", err)
	}
	return key, nil
}

func (s *store) deleteIntent(ctx context.Context, key string) error {
	if err := s.kv.Purge(ctx, key); err != nil && !errors.Is(err, jetstream.ErrKeyNotFound) {
		return unavailable("delete import intent", err)
	}
	return nil
}

// intents reads every open intent of project.
func (s *store) intents(ctx context.Context, project int64) (map[string]intent, error) {
	lister, err := s.kv.ListKeysFiltered(ctx, "i."+strconv.FormatInt(project, 10)+".*")
	if err != nil {
		return nil, unavailable("list import intents", err)
	}
	var keys []string
	for k := range lister.Keys() {
		keys = append(keys, k)
	}
	_ = lister.Stop()
	out := make(map[string]intent, len(keys))
	for _, k := range keys {
		kve, err := s.kv.Get(ctx, k)
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			continue // resolved meanwhile
		}
		if err != nil {
			return nil, unavailable("read import intent", err)
		}
		var in intent
		if err := json.Unmarshal(kve.Value(), &in); err != nil {
			return nil, fault.Transient(fault.Unavailable, fmt.Errorf("connector: intent %s does not decode: %w", k, err))
		}
		out[k] = in
	}
	return out, nil
}

// purgeMarkers removes the purge markers that closed intents leave, those
// older than age: every batch writes an intent under a key of its own and
// purges it, so without this the bucket would keep one marker per batch
// for ever. An intent key is never used again, so its subject can go
// whole. It returns how many it removed.
func (s *store) purgeMarkers(ctx context.Context, age time.Duration) (int, error) {
	w, err := s.kv.Watch(ctx, "i.>", jetstream.MetaOnly())
	if err != nil {
		return 0, unavailable("list closed import intents", err)
	}
	defer func() { _ = w.Stop() }()
	var old []string
	for e := range w.Updates() {
		if e == nil {
			break // the current state is read
		}
		if op := e.Operation(); (op == jetstream.KeyValuePurge || op == jetstream.KeyValueDelete) && time.Since(e.Created()) >= age {
			old = append(old, e.Key())
		}
	}
	if len(old) == 0 {
		return 0, nil
	}
	st, err := s.js.Stream(ctx, "KV_"+Bucket)
	if err != nil {
		return 0, unavailable("open the bucket's stream", err)
	}
	for i, key := range old {
		if err := st.Purge(ctx, jetstream.WithPurgeSubject(subjectPrefix+key)); err != nil {
			return i, unavailable("remove a closed intent's marker", err)
		}
	}
	return len(old), nil
}
