// Package taskbus is labelsync's side of NATS JetStream: the streams, the
// task events, the dead-letter stream, and the import ledger.
//
// The ledger is the task stream itself. Every (project, storage, object key)
// has a head: the newest message whose subject matches
//
//	labelsync.*.<project>.*.<storage>.<keyhash>
//
// which covers the task events (labelsync.tasks.<project>.<event>.<storage>.<keyhash>)
// and the ledger-only tombstones (labelsync.ledger.<project>.tombstone.<storage>.<keyhash>)
// that a delete seen before its object's FINALIZE leaves behind. Append is a
// publish conditioned on that head (Nats-Expected-Last-Subject-Sequence with
// Nats-Expected-Last-Subject-Sequence-Subject), so the publish is the claim:
// a redelivery, a second worker or a sync racing a notification cannot both
// append on the same head, and the state outlives JetStream's duplicate window
// because it is the stream's own content. The stream therefore must not have
// an age or size limit that removes heads.
//
// Appends carry no Nats-Msg-Id: JetStream checks the expected head before
// the duplicate window, so a retried publish whose acknowledgement was lost
// comes back as ErrConflict, and the caller's next Head shows its own entry.
// Message ids would only fill the server's duplicate map.
//
// A Bus is safe for concurrent use.
package taskbus

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/labelsync/labelsync/internal/fault"
	"github.com/labelsync/labelsync/internal/ledger"
	"github.com/labelsync/labelsync/internal/tracing"
)

// Stream names and subject roots, fixed by SPEC §2 and §3.
const (
	TasksStream       = "LABELSYNC_TASKS"
	DeadLetterStream  = "LABELSYNC_DEADLETTER"
	AnnotationsStream = "LABELSYNC_ANNOTATIONS"

	tasksRoot  = "labelsync.tasks"
	ledgerRoot = "labelsync.ledger"
)

// Header names. The Labelsync-* ones let Head read a key's state without
// decoding the JSON body.
const (
	hdrGeneration = "Labelsync-Generation"
	hdrEvent      = "Labelsync-Event"
	hdrKey        = "Labelsync-Key"
	hdrExpectSeq  = "Nats-Expected-Last-Subject-Sequence"
	hdrExpectSubj = "Nats-Expected-Last-Subject-Sequence-Subject"
)

// ErrConflict means the key's head moved since it was read: read it again
// and decide again.
var ErrConflict = errors.New("taskbus: ledger head moved")

// Key names one object of one storage in the ledger.
type Key struct {
	Project int64
	Storage int64
	Object  string
}

// Hash is the subject token for the object key: object names may hold any
// character and be 1024 bytes long, subjects may not.
func (k Key) Hash() string {
	sum := sha256.Sum256([]byte(k.Object))
	return hex.EncodeToString(sum[:16])
}

// filter and subject take the key's hash so that a caller computes it once.
func (k Key) filter(hash string) string {
	return "labelsync.*." + strconv.FormatInt(k.Project, 10) + ".*." + strconv.FormatInt(k.Storage, 10) + "." + hash
}

func (k Key) subject(kind ledger.Kind, ledgerOnly bool, hash string) string {
	root := tasksRoot
	if ledgerOnly || kind == ledger.Tombstone {
		root = ledgerRoot
	}
	return root + "." + strconv.FormatInt(k.Project, 10) + "." + string(kind) + "." + strconv.FormatInt(k.Storage, 10) + "." + hash
}

// TaskSubjects is the filter a consumer of one project's task events uses.
func TaskSubjects(project int64) string { return fmt.Sprintf("%s.%d.>", tasksRoot, project) }

// Event is the body of a task event (SPEC §2).
type Event struct {
	Event      ledger.Kind     `json:"event"`
	TaskID     string          `json:"task_id"`
	Project    int64           `json:"project"`
	StorageID  int64           `json:"storage_id"`
	Bucket     string          `json:"bucket"`
	Key        string          `json:"key"`
	Generation string          `json:"generation"`
	RowIndex   *int            `json:"row_index"`
	Source     string          `json:"source"`
	EventTime  string          `json:"event_time"`
	Task       json.RawMessage `json:"task,omitempty"`
}

// Entry is one append to a key's ledger.
type Entry struct {
	Key        Key
	Kind       ledger.Kind
	Generation int64
	// Event is the task event body; nil for a Tombstone.
	Event *Event
	// Ledger makes the entry ledger-only (a Tasks-mode file's commit
	// record): consumers of task events do not see it.
	Ledger bool
	// Body, for ledger-only entries, is stored as the message data.
	Body []byte
}

// Result is the outcome of a successful Append.
type Result struct {
	Seq uint64
}

// Bus publishes to and reads from JetStream.
type Bus struct {
	nc *nats.Conn
	js jetstream.JetStream
	// Timeout bounds each JetStream round trip.
	timeout time.Duration
	// limits holds each stream's max_msg_size as EnsureStreams found it
	// (stream name → bytes; absent or <= 0: no stream limit).
	limits sync.Map
	// fault, when set, answers a publish instead of JetStream (tests).
	fault func(subject string) error
	// replicas of what the bus creates (WithReplicas); 0 means 1.
	replicas int
}

// Option adjusts a Bus.
type Option func(*Bus)

// WithPublishFault injects failures, for tests: f is called before every
// task-stream publish (Append, Rows.Add) with the message's subject, and a
// non-nil error is taken as JetStream's answer to that publish (a
// *jetstream.APIError, nats.ErrTimeout, nats.ErrMaxPayload…), classified
// as a real answer would be.
func WithPublishFault(f func(subject string) error) Option {
	return func(b *Bus) { b.fault = f }
}

// New wraps a connection. timeout bounds each JetStream request (0: 10s).
func New(nc *nats.Conn, timeout time.Duration, opts ...Option) (*Bus, error) {
	if timeout <= 0 {
		timeout = 10 * time.Second
	}
	// An asynchronous publish whose acknowledgement never comes (the
	// stream's leader died after taking it, while this connection, to
	// another server, stayed up) would hold one of the pending slots until
	// the next reconnect; after timeout its future fails with
	// ErrAsyncPublishTimeout and the slot is free.
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(4*maxRowsInFlight), jetstream.WithDefaultTimeout(timeout),
		jetstream.WithPublishAsyncTimeout(timeout))
	if err != nil {
		return nil, fmt.Errorf("taskbus: %w", err)
	}
	b := &Bus{nc: nc, js: js, timeout: timeout}
	for _, o := range opts {
		o(b)
	}
	switch {
	case b.replicas == 0:
		b.replicas = 1
	case b.replicas < 1 || b.replicas > MaxReplicas:
		return nil, fmt.Errorf("LABELSYNC_STREAM_REPLICAS: %d is outside 1..%d", b.replicas, MaxReplicas)
	}
	b.js = replicated{JetStream: js, replicas: b.replicas}
	return b, nil
}

// injected is the answer WithPublishFault gives for subject, if any.
func (b *Bus) injected(subject string) error {
	if b.fault == nil {
		return nil
	}
	return b.fault(subject)
}

// JetStream exposes the JetStream context. Streams and key-value buckets
// created or opened through it get the bus's replicas (WithReplicas).
func (b *Bus) JetStream() jetstream.JetStream { return b.js }

// Conn is the underlying connection.
func (b *Bus) Conn() *nats.Conn { return b.nc }

// Append publishes e if and only if the key's head is still at expect
// (0: the key has no entry). It returns ErrConflict when the head moved.
func (b *Bus) Append(ctx context.Context, e Entry, expect uint64) (Result, error) {
	m := appendPool.Get().(*appendMsg)
	defer m.release()
	m.msg.Data = e.Body
	if e.Body == nil {
		m.body = encodeEvent(m.body[:0], e.Event)
		m.msg.Data = m.body
	}
	hash := e.Key.Hash()
	m.msg.Subject = e.Key.subject(e.Kind, e.Ledger, hash)
	m.vals = [...]string{
		strconv.FormatUint(expect, 10),
		e.Key.filter(hash),
		strconv.FormatInt(e.Generation, 10),
		string(e.Kind),
		// The object's name, for reconciliation, which walks heads by
		// subject and has only the key's hash there.
		e.Key.Object,
	}
	// The trace of the notification travels with its task event (nothing
	// when tracing is off).
	tracing.Inject(ctx, m.msg.Header)
	if err := b.fits(TasksStream, &m.msg); err != nil {
		return Result{}, err
	}
	if err := b.injected(m.msg.Subject); err != nil {
		return Result{}, classify("append", err)
	}
	seq, err := b.publish(ctx, &m.msg)
	if err != nil {
		return Result{}, classify("append", err)
	}
	return Result{Seq: seq}, nil
}

// appendMsg is one Append's message. They are pooled, header map and body
// buffer included: a notification costs a dozen fewer allocations (about
// 1 KB, the cost of which is mostly the garbage collections it brings
// forward). The connection copies subject, headers and body into its write
// buffer before the request waits, so nothing refers to them once publish
// returned.
type appendMsg struct {
	msg nats.Msg
	// vals backs the five header values: the map's slices alias it, so
	// assigning vals rewrites the headers without touching the map.
	vals [5]string
	body []byte
}

var appendPool = sync.Pool{New: func() any {
	m := &appendMsg{body: make([]byte, 0, 1024)}
	// Header keys are already canonical: assign, skipping Header.Set's
	// canonicalisation.
	m.msg.Header = nats.Header{
		hdrExpectSeq:  m.vals[0:1:1],
		hdrExpectSubj: m.vals[1:2:2],
		hdrGeneration: m.vals[2:3:3],
		hdrEvent:      m.vals[3:4:4],
		hdrKey:        m.vals[4:5:5],
	}
	return m
}}

// release returns m to the pool, dropping what it refers to.
func (m *appendMsg) release() {
	m.msg.Subject, m.msg.Data = "", nil
	m.vals = [5]string{}
	delete(m.msg.Header, tracing.Traceparent)
	delete(m.msg.Header, tracing.Tracestate)
	if cap(m.body) > 64<<10 {
		// Do not keep an outsized task's buffer for every later append.
		m.body = make([]byte, 0, 1024)
	}
	appendPool.Put(m)
}

// Head reads the newest ledger entry of k.
func (b *Bus) Head(ctx context.Context, k Key) (ledger.Head, error) {
	ctx, cancel := context.WithTimeout(ctx, b.timeout)
	defer cancel()
	m, err := b.lastMsg(ctx, k.filter(k.Hash()))
	if err != nil || m == nil {
		return ledger.Head{}, err
	}
	h := ledger.Head{Seq: m.seq, Kind: ledger.Kind(m.header.Get(hdrEvent))}
	if h.Generation, err = strconv.ParseInt(m.header.Get(hdrGeneration), 10, 64); err != nil {
		return ledger.Head{}, fmt.Errorf("taskbus: head %s: generation: %w", m.subject, err)
	}
	return h, nil
}

type storedMsg struct {
	subject string
	seq     uint64
	header  nats.Header
}

// lastMsg returns the newest message matching filter, or nil. It uses
// STREAM.MSG.GET, not DIRECT.GET: only the former takes a wildcard
// last_by_subj, and heads span event kinds.
func (b *Bus) lastMsg(ctx context.Context, filter string) (*storedMsg, error) {
	req, _ := json.Marshal(map[string]string{"last_by_subj": filter})
	resp, err := b.nc.RequestWithContext(ctx, "$JS.API.STREAM.MSG.GET."+TasksStream, req)
	if err != nil {
		return nil, classify("head", err)
	}
	var r struct {
		Message *struct {
			Subject string `json:"subject"`
			Seq     uint64 `json:"seq"`
			Hdrs    []byte `json:"hdrs"`
		} `json:"message"`
		Error *jetstream.APIError `json:"error"`
	}
	if err := json.Unmarshal(resp.Data, &r); err != nil {
		return nil, fmt.Errorf("taskbus: head: decode reply: %w", err)
	}
	if r.Error != nil {
		if r.Error.ErrorCode == jetstream.JSErrCodeMessageNotFound {
			return nil, nil
		}
		return nil, fmt.Errorf("taskbus: head of %s: %w", filter, r.Error)
	}
	if r.Message == nil {
		return nil, nil
	}
	hdr, err := nats.DecodeHeadersMsg(r.Message.Hdrs)
	if err != nil {
		return nil, fmt.Errorf("taskbus: head %s: headers: %w", r.Message.Subject, err)
	}
	return &storedMsg{subject: r.Message.Subject, seq: r.Message.Seq, header: hdr}, nil
}

// classify maps a NATS or JetStream error to ErrConflict (the head moved),
// a permanent fault.TooLarge (the message is over the server's max_payload
// or the stream's max_msg_size or header limit: it never fits), or a
// transient fault.Unavailable (everything else: no responders, timeouts, a
// closed connection, a stream being recreated). A context that ended is
// left for fault.Of to read as a shutdown.
func classify(op string, err error) error {
	var apiErr *jetstream.APIError
	if errors.As(err, &apiErr) {
		switch apiErr.ErrorCode {
		case jetstream.JSErrCodeStreamWrongLastSequence, jetstream.JSErrCodeStreamWrongLastSequenceConstant:
			return ErrConflict
		case jetstream.JSErrCodeStreamMessageExceedsMaximum, jsErrCodeHeaderExceedsMaximum:
			return fault.Permanent(fault.TooLarge, fmt.Errorf("taskbus: %s: %w", op, err))
		}
	}
	switch {
	case errors.Is(err, nats.ErrMaxPayload):
		return fault.Permanent(fault.TooLarge, fmt.Errorf("taskbus: %s: %w", op, err))
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return fmt.Errorf("taskbus: %s: %w", op, err)
	}
	return fault.Transient(fault.Unavailable, fmt.Errorf("taskbus: %s: %w", op, err))
}

// jsErrCodeHeaderExceedsMaximum is nats-server's JSStreamHeaderExceedsMaximumErr
// (headers over 64 KiB), which nats.go does not name.
const jsErrCodeHeaderExceedsMaximum jetstream.ErrorCode = 10097

// TaskID is the stable id of a task: the same for every generation of the
// object and after a delete and re-upload, so consumers can update in place.
// row is nil in Files mode.
func TaskID(storage int64, key string, row *int) string {
	var buf [128]byte // most keys fit: no allocation
	b := strconv.AppendInt(buf[:0], storage, 10)
	b = append(b, 0)
	b = append(b, key...)
	b = append(b, 0)
	if row != nil {
		b = strconv.AppendInt(b, int64(*row), 10)
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:16])
}
