// Package connector applies labelsync's task events to Label Studio (SPEC
// §8): a durable JetStream consumer on LABELSYNC_TASKS, shared by every
// replica, imports created tasks in batches, replaces the data of updated
// ones and deletes deleted ones, in the Label Studio project whose id is
// the event's project.
//
// Delivery. A task event is acknowledged only after Label Studio
// acknowledged its effect and the connector recorded it in the key-value
// bucket labelsync_labelstudio (see Bucket): the entry of each task holds
// its Label Studio id and the stream sequence of the last event applied to
// it, so a redelivered event that is already applied changes nothing.
// Events that can never succeed (a task Label Studio refuses, a project
// that does not exist, an event that does not decode) are dead-lettered
// with component labelstudio and the answer's body, then acknowledged.
// Everything else (429, 5xx, timeouts, Label Studio or NATS down) is
// retried in place with backoff, honouring Retry-After, while the event is
// held (its ack deadline extended): a slow or absent Label Studio slows the
// consumer; the events in hand are bounded by MaxAckPending.
//
// Order. Events of one task are applied in stream order. Within a replica
// each task's events form a queue; across replicas, an event that finds its
// task in a state an earlier event has yet to change (an update before its
// import, an import while the task still exists) waits until the consumer
// has no unacknowledged event before it.
//
// Exactly once in Label Studio. Imports are batched (BatchSize tasks or
// BatchBytes, flushed after FlushInterval), at most InFlight requests at a
// time. Before a batch is sent, an intent naming its tasks and W, the
// highest Label Studio task id seen before the request (ids only grow), is
// stored. When an import's outcome is unknown (no answer, a 5xx), the
// connector lists the project's tasks with an id above W through the task
// list's Data Manager filter, finds those whose meta.labelsync_task_id is in
// the batch, records them, and sends only the rest; Label Studio may still
// be running an import whose answer was lost, so the tasks not found are
// looked for once more, as long after the lost answer as the request had
// run, before they are sent again. After a crash, the first redelivered
// event of a task in an open intent does the same for the whole intent. A
// second copy that could still appear (a replica that stalled past its ack
// deadline and whose import committed late) is found when its entry cannot
// be written, and deleted.
//
// A Connector is safe for concurrent use; Run is called once.
package connector

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/labelsync/labelsync/internal/deadletter"
	"github.com/labelsync/labelsync/internal/fault"
	"github.com/labelsync/labelsync/internal/labelstudio"
	"github.com/labelsync/labelsync/internal/ledger"
	"github.com/labelsync/labelsync/internal/metrics"
	"github.com/labelsync/labelsync/internal/taskbus"
)

// ConsumerName is the durable consumer every replica shares: each task
// event goes to one of them.
const ConsumerName = "labelsync-labelstudio"

// Component names the connector in dead letters.
const Component = "labelstudio"

// taskEvents is the consumer's filter.
const taskEvents = "labelsync.tasks.>"

// Config tunes a Connector. Zero values take the defaults.
type Config struct {
	// BatchSize is the most tasks per import request (default 500).
	BatchSize int
	// BatchBytes is the most bytes per import request body (default 8
	// MiB; a single larger task goes alone).
	BatchBytes int
	// FlushInterval is the longest a task waits for its batch to fill
	// (default 200 ms).
	FlushInterval time.Duration
	// InFlight is the most import requests at a time (default 4).
	InFlight int
	// Workers is the most update and delete requests at a time (default
	// 16).
	Workers int
	// AckWait is how soon an event held by a replica that died goes to
	// another one (default 60 s; held events are extended).
	AckWait time.Duration
	// MaxAckPending bounds the events in hand, all replicas together
	// (default 4 × BatchSize × InFlight, at least 1,000: the requests in
	// flight, and as many batches again filling and waiting for a slot;
	// half of it ran at 60–85 % of the raw import rate in BenchmarkImport,
	// this at 93–95 %).
	MaxAckPending int
	// DrainTimeout bounds how long events in hand may finish at shutdown
	// (default 30 s).
	DrainTimeout time.Duration
	// RetryMin and RetryMax bound the backoff between retries (default
	// 200 ms and 30 s); a longer Retry-After wins.
	RetryMin, RetryMax time.Duration
}

func (c *Config) defaults() {
	if c.BatchSize <= 0 {
		c.BatchSize = 500
	}
	if c.BatchBytes <= 0 {
		c.BatchBytes = 8 << 20
	}
	if c.FlushInterval <= 0 {
		c.FlushInterval = 200 * time.Millisecond
	}
	if c.InFlight <= 0 {
		c.InFlight = 4
	}
	if c.Workers <= 0 {
		c.Workers = 16
	}
	if c.AckWait <= 0 {
		c.AckWait = 60 * time.Second
	}
	if c.MaxAckPending <= 0 {
		c.MaxAckPending = max(1000, 4*c.BatchSize*c.InFlight)
	}
	if c.DrainTimeout <= 0 {
		c.DrainTimeout = 30 * time.Second
	}
	if c.RetryMin <= 0 {
		c.RetryMin = 200 * time.Millisecond
	}
	if c.RetryMax <= 0 {
		c.RetryMax = 30 * time.Second
	}
}

// Connector is the consumer.
type Connector struct {
	cfg     Config
	js      jetstream.JetStream
	ls      *labelstudio.Client
	letters *deadletter.Writer
	m       *metrics.Metrics
	log     *slog.Logger
	state   *store
	cons    jetstream.Consumer
	stream  jetstream.Stream
	batches *batcher
	workers chan struct{}

	// work is the context of everything in hand; it outlives Run's
	// context by up to DrainTimeout.
	work     context.Context
	inHand   sync.WaitGroup
	mu       sync.Mutex
	chains   map[string]*chain
	stopping bool
	marks    map[int64]int64
	// progress is closed when an event is acknowledged while events wait
	// for their turn (waiting > 0).
	progress chan struct{}
	waiting  int

	floor    floorCache
	intents  intentCache
	ready    readyCache
	recovery sync.Map // intent key → *sync.Mutex: one recovery of an intent at a time

	// afterImport, for tests, runs between a successful import request
	// and the recording of its ids (a crash there is what intents are
	// for).
	afterImport func(ctx context.Context)
}

// New opens the state bucket and creates (or updates) the durable consumer.
// Nothing is consumed until Run.
func New(ctx context.Context, js jetstream.JetStream, ls *labelstudio.Client, letters *deadletter.Writer, m *metrics.Metrics, logger *slog.Logger, cfg Config) (*Connector, error) {
	cfg.defaults()
	c := &Connector{
		cfg: cfg, js: js, ls: ls, letters: letters, m: m, log: logger,
		workers: make(chan struct{}, cfg.Workers),
		chains:  map[string]*chain{},
		marks:   map[int64]int64{},
		work:    context.Background(),
	}
	var err error
	if c.state, err = openStore(ctx, js); err != nil {
		return nil, err
	}
	if c.stream, err = js.Stream(ctx, taskbus.TasksStream); err != nil {
		return nil, fmt.Errorf("connector: stream %s: %w", taskbus.TasksStream, err)
	}
	c.cons, err = js.CreateOrUpdateConsumer(ctx, taskbus.TasksStream, jetstream.ConsumerConfig{
		Durable:       ConsumerName,
		Description:   "labelsync: task events to Label Studio",
		FilterSubject: taskEvents,
		AckPolicy:     jetstream.AckExplicitPolicy,
		AckWait:       cfg.AckWait,
		MaxAckPending: cfg.MaxAckPending,
		DeliverPolicy: jetstream.DeliverAllPolicy,
		MaxDeliver:    -1,
	})
	if err != nil {
		return nil, fmt.Errorf("connector: consumer %s: %w", ConsumerName, err)
	}
	c.batches = newBatcher(c)
	return c, nil
}

// Observe counts Label Studio requests in m: a labelstudio.Observer.
func Observe(m *metrics.Metrics) labelstudio.Observer {
	return func(op, outcome string) { m.LabelStudioRequests.WithLabelValues(op, outcome).Inc() }
}

// event is one task event in hand.
type event struct {
	msg       jetstream.Msg // the newest delivery; guarded by Connector.mu
	seq       uint64
	delivered uint64
	published time.Time
	received  time.Time
	subject   string
	data      []byte
	ev        taskbus.Event
	// bad is set when the event cannot be decoded: it is dead-lettered.
	bad error
	// slow: the batched import found the task in a state that needs a
	// decision of its own.
	slow bool
	// reimports counts imports after an update found the task deleted in
	// Label Studio.
	reimports int
	// yield is set when an earlier event of the same task arrives while
	// this one waits for its turn (a replica handed it back): waiting
	// would then be forever, as the earlier one is queued behind it.
	yield atomic.Bool
}

// chain is one task's events in hand, in stream order; the first is being
// applied.
type chain struct {
	queue []*event
}

// Run consumes until ctx ends, then stops taking events, lets those in hand
// finish (up to DrainTimeout) and returns. Events not finished are
// redelivered, to this or another replica.
func (c *Connector) Run(ctx context.Context) error {
	work, stop := context.WithCancel(context.WithoutCancel(ctx))
	defer stop()
	c.mu.Lock()
	c.work = work
	c.mu.Unlock()
	cc, err := c.cons.Consume(c.dispatch,
		jetstream.PullMaxMessages(min(c.cfg.MaxAckPending, 1000)),
		jetstream.ConsumeErrHandler(func(_ jetstream.ConsumeContext, err error) {
			if !errors.Is(err, jetstream.ErrNoHeartbeat) && ctx.Err() == nil {
				c.log.Warn("labelstudio: consumer", "err", err)
			}
		}))
	if err != nil {
		return fmt.Errorf("connector: consume: %w", err)
	}
	hb := make(chan struct{})
	go func() { defer close(hb); c.heartbeat(ctx) }()
	sweep := make(chan struct{})
	go func() { defer close(sweep); c.sweepIntents(ctx) }()
	c.log.Info("Label Studio connector started", "url", c.ls.BaseURL(), "consumer", ConsumerName,
		"batch_size", c.cfg.BatchSize, "in_flight", c.cfg.InFlight, "personal_access_token", c.ls.PersonalAccessToken())
	<-ctx.Done()
	// Events pulled but not dispatched yet are handed back at once (the
	// dispatcher naks them while stopping), not left to their ack
	// deadline.
	c.mu.Lock()
	c.stopping = true
	c.mu.Unlock()
	cc.Drain()
	select {
	case <-cc.Closed():
	case <-time.After(5 * time.Second):
		cc.Stop()
	}
	c.batches.flushAll()

	done := make(chan struct{})
	go func() { c.inHand.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(c.cfg.DrainTimeout):
		c.log.Warn("labelstudio: drain timed out; events in hand will be redelivered")
		stop()
		<-done
	}
	stop()
	<-hb
	<-sweep
	c.batches.wait()
	return nil
}

// markerAge is how long the marker of a closed import intent is kept (an
// hour, far longer than any batch is in flight), and how often the old
// ones are removed.
const markerAge = time.Hour

// sweepIntents removes the markers of closed intents every markerAge until
// ctx ends. Every replica sweeps; removing a subject twice is harmless.
func (c *Connector) sweepIntents(ctx context.Context) {
	t := time.NewTicker(markerAge)
	defer t.Stop()
	for {
		select {
		case <-t.C:
		case <-ctx.Done():
			return
		}
		n, err := c.state.purgeMarkers(ctx, markerAge)
		switch {
		case err != nil && ctx.Err() == nil:
			c.log.Warn("labelstudio: removing the markers of closed import intents; trying again in an hour", "removed", n, "err", err)
		case n > 0:
			c.log.Info("labelstudio: removed the markers of closed import intents", "removed", n)
		}
	}
}

// dispatch receives the consumer's messages, in stream order for first
// deliveries, and queues each on its task's chain.
func (c *Connector) dispatch(m jetstream.Msg) {
	md, err := m.Metadata()
	if err != nil {
		c.log.Error("labelstudio: message without metadata", "subject", m.Subject(), "err", err)
		_ = m.Nak()
		return
	}
	e := &event{msg: m, seq: md.Sequence.Stream, delivered: md.NumDelivered, published: md.Timestamp,
		received: time.Now(), subject: m.Subject(), data: m.Data()}
	key := decode(e)
	c.mu.Lock()
	if c.stopping {
		c.mu.Unlock()
		_ = m.Nak()
		return
	}
	if ch := c.chains[key]; ch != nil {
		for _, q := range ch.queue {
			if q.seq == e.seq {
				// A redelivery of an event in hand (its ack deadline
				// passed while NATS was away): ack the newest delivery.
				q.msg, q.delivered = m, max(q.delivered, e.delivered)
				c.mu.Unlock()
				return
			}
		}
		// In stream order: redeliveries can come after later events.
		ch.queue = append(ch.queue, e)
		slices.SortFunc(ch.queue[1:], bySeq)
		if e.seq < ch.queue[0].seq {
			ch.queue[0].yield.Store(true)
		}
		c.mu.Unlock()
		return
	}
	ch := &chain{queue: []*event{e}}
	c.chains[key] = ch
	c.inHand.Add(1)
	c.mu.Unlock()
	go c.runChain(key, ch)
}

// decode reads the event's body and returns its chain key (the task id).
func decode(e *event) string {
	err := json.Unmarshal(e.data, &e.ev)
	switch {
	case err != nil:
		e.bad = fmt.Errorf("labelstudio: the task event does not decode: %w", err)
	case e.ev.TaskID == "":
		e.bad = errors.New("labelstudio: a task event without task_id")
	case e.ev.Project <= 0:
		e.bad = fmt.Errorf("labelstudio: task event %s without a positive project", e.ev.TaskID)
	case e.ev.Event != ledger.Created && e.ev.Event != ledger.Updated && e.ev.Event != ledger.Deleted:
		e.bad = fmt.Errorf("labelstudio: task event %s of kind %q", e.ev.TaskID, e.ev.Event)
	case e.ev.Event != ledger.Deleted && len(e.ev.Task) == 0:
		e.bad = fmt.Errorf("labelstudio: %s task event %s without a task", e.ev.Event, e.ev.TaskID)
	}
	if e.bad != nil {
		e.bad = fault.Permanent(fault.BadInput, e.bad)
		return fmt.Sprintf("bad.%d", e.seq)
	}
	return e.ev.TaskID
}

// runChain applies a task's events one after the other until its queue is
// empty. When the connector stops, events not yet started are handed back.
func (c *Connector) runChain(key string, ch *chain) {
	defer c.inHand.Done()
	for {
		c.mu.Lock()
		e := ch.queue[0]
		if c.stopping {
			c.handBack(key, ch, ch.queue)
			return
		}
		c.mu.Unlock()
		yielded := c.process(e)
		c.mu.Lock()
		if c.work.Err() != nil {
			c.handBack(key, ch, ch.queue)
			return
		}
		if yielded {
			// An earlier event of the task came in: it goes first.
			e.yield.Store(false)
			slices.SortFunc(ch.queue, bySeq)
			c.mu.Unlock()
			continue
		}
		ch.queue = ch.queue[1:]
		if len(ch.queue) == 0 {
			delete(c.chains, key)
			c.mu.Unlock()
			return
		}
		c.mu.Unlock()
	}
}

func bySeq(a, b *event) int { return cmp.Compare(a.seq, b.seq) }

// handBack drops a chain and negatively acknowledges its events, so that
// they are redelivered at once (an event already acknowledged ignores it).
// It is called with c.mu held, and releases it.
func (c *Connector) handBack(key string, ch *chain, events []*event) {
	delete(c.chains, key)
	msgs := make([]jetstream.Msg, len(events))
	for i, e := range events {
		msgs[i] = e.msg
	}
	c.mu.Unlock()
	for _, m := range msgs {
		_ = m.Nak()
	}
}

func (c *Connector) msgOf(e *event) jetstream.Msg {
	c.mu.Lock()
	defer c.mu.Unlock()
	return e.msg
}

// process applies e until it is done or dead-lettered, then acknowledges
// it. It returns without acknowledging when the work context ends.
//
// It reports whether e yielded to an earlier event of its task (then it is
// neither acknowledged nor done, and goes after that event).
func (c *Connector) process(e *event) (yielded bool) {
	ctx := c.work
	for attempt := 0; ; attempt++ {
		err := c.apply(ctx, e)
		if err == nil {
			c.ack(e)
			return false
		}
		if errors.Is(err, errYield) {
			return true
		}
		if ctx.Err() != nil {
			return false
		}
		_, class := fault.Of(err)
		if class == fault.ClassPermanent || (class == fault.ClassUnknown && attempt >= 5) {
			err = fault.Exhausted(err)
			if err = c.refuse(ctx, e, err); err == nil {
				c.ack(e)
				return false
			}
		}
		c.warnRetry(ctx, attempt, "labelstudio: task event not applied yet; retrying", "task_id", e.ev.TaskID, "event", e.ev.Event,
			"project", e.ev.Project, "seq", e.seq, "err", err)
		if !c.sleep(ctx, c.backoff(attempt, labelstudio.RetryAfter(err))) {
			return false
		}
	}
}

func (c *Connector) ack(e *event) {
	if err := c.msgOf(e).Ack(); err != nil {
		// The effect is recorded: a redelivery finds it applied.
		c.log.Debug("labelstudio: ack", "seq", e.seq, "err", err)
	}
	c.m.LabelStudioLag.Observe(time.Since(e.published).Seconds())
	c.progressed()
}

// refuse dead-letters e, then records in its task's entry that e is done,
// so that later events of the task know. An error means neither can be
// relied on: e must be tried again.
func (c *Connector) refuse(ctx context.Context, e *event, cause error) error {
	attrs := map[string]string{"stream_seq": fmt.Sprint(e.seq)}
	if e.bad == nil {
		attrs["event"], attrs["task_id"], attrs["project"] = string(e.ev.Event), e.ev.TaskID, fmt.Sprint(e.ev.Project)
	}
	if le := labelstudio.AsError(cause); le != nil {
		attrs["status"] = fmt.Sprint(le.Status)
		attrs["response_body"] = le.Body
	}
	l := deadletter.Letter{
		Reason:     cause.Error(),
		Code:       fault.CodeOf(cause),
		Source:     deadletter.Source{Subject: e.subject},
		Attributes: attrs,
		Data:       e.data,
	}
	if e.bad == nil {
		l.Source = deadletter.Source{Subject: e.subject, StorageID: e.ev.StorageID, Bucket: e.ev.Bucket, Key: e.ev.Key, Generation: e.ev.Generation, Row: e.ev.RowIndex}
	}
	if err := c.letters.Write(ctx, l); err != nil {
		return err
	}
	if e.bad != nil {
		return nil
	}
	for {
		ent, err := c.state.get(ctx, e.ev.TaskID)
		if err != nil {
			return err
		}
		if ent.applied(e.seq) {
			return nil
		}
		next := ent
		next.Seq, next.Project = e.seq, e.ev.Project
		if !ent.present() {
			next.State = stateRefused
		}
		if _, err := c.state.put(ctx, e.ev.TaskID, next); !errors.Is(err, errConflict) {
			return err
		}
	}
}

// warnRetry logs that attempt failed and another follows, on the first
// attempt and every tenth: a long outage shows without a line per attempt,
// and a shutdown (ctx ended) is not reported as one.
func (c *Connector) warnRetry(ctx context.Context, attempt int, msg string, args ...any) {
	if ctx.Err() == nil && (attempt == 0 || attempt%10 == 9) {
		c.log.Warn(msg, append(args, "attempt", attempt+1)...)
	}
}

// backoff is the wait before retry attempt+1: exponential from RetryMin to
// RetryMax with ±25 % jitter, or Label Studio's Retry-After if longer.
func (c *Connector) backoff(attempt int, retryAfter time.Duration) time.Duration {
	d := c.cfg.RetryMin << min(attempt, 20)
	d = min(d, c.cfg.RetryMax)
	d = time.Duration(float64(d) * (0.75 + 0.5*jitter()))
	return max(d, retryAfter)
}

// sleep waits d or until ctx ends; it reports whether d passed.
func (c *Connector) sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// heartbeat extends the ack deadline of every event in hand, every third
// of AckWait, until the work ends.
func (c *Connector) heartbeat(ctx context.Context) {
	t := time.NewTicker(c.cfg.AckWait / 3)
	defer t.Stop()
	for {
		select {
		case <-t.C:
		case <-c.workDone():
			return
		}
		c.mu.Lock()
		var msgs []jetstream.Msg
		for _, ch := range c.chains {
			for _, e := range ch.queue {
				msgs = append(msgs, e.msg)
			}
		}
		c.mu.Unlock()
		for _, m := range msgs {
			if err := m.InProgress(); err != nil && ctx.Err() == nil {
				c.log.Debug("labelstudio: extending an ack deadline", "subject", m.Subject(), "err", err)
			}
		}
	}
}

func (c *Connector) workDone() <-chan struct{} {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.work.Done()
}

// Ready is nil when Label Studio answers and accepts the token; the answer
// is cached for 5 seconds.
func (c *Connector) Ready(ctx context.Context) error {
	return c.ready.check(ctx, func(ctx context.Context) error {
		ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
		defer cancel()
		if err := c.ls.Ping(ctx); err != nil {
			return fmt.Errorf("label studio at %s unreachable or refusing the token: %w", c.ls.BaseURL(), err)
		}
		return nil
	})
}

type readyCache struct {
	mu  sync.Mutex
	at  time.Time
	err error
}

func (r *readyCache) check(ctx context.Context, f func(context.Context) error) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.at.IsZero() && time.Since(r.at) < 5*time.Second {
		return r.err
	}
	r.err, r.at = f(ctx), time.Now()
	return r.err
}
