package taskbus

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/labelsync/labelsync/internal/fault"
	"github.com/labelsync/labelsync/internal/ledger"
	"github.com/labelsync/labelsync/internal/tracing"
)

// Tasks-mode files have two levels in the ledger. The file's head is a
// ledger-only record (labelsync.ledger.<project>.<kind>.<storage>.<keyhash>,
// Entry.Ledger true), appended last, as the commit of a generation. Each
// record of the file has its own head, its newest task event
// (labelsync.tasks.<project>.<event>.<storage>.<keyhash>.<row>), appended
// conditioned on that row's head before the commit. A crash before the
// commit leaves rows already at the new generation; the retry reads the row
// heads, skips them, and appends the rest, so each row event is appended once.

const hdrRowHash = "Labelsync-Row-Hash"

func (k Key) rowSubject(kind ledger.Kind, row int) string {
	return fmt.Sprintf("%s.%d.%s.%d.%s.%d", tasksRoot, k.Project, kind, k.Storage, k.Hash(), row)
}

func (k Key) rowFilter(row int) string {
	return fmt.Sprintf("%s.%d.*.%d.%s.%d", tasksRoot, k.Project, k.Storage, k.Hash(), row)
}

func (k Key) rowsFilter() string {
	return fmt.Sprintf("%s.%d.*.%d.%s.*", tasksRoot, k.Project, k.Storage, k.Hash())
}

// RowHeads returns the newest event of every row of k's file, by row index.
// It reads headers only, through an ordered consumer that starts at the last
// message of each subject.
func (b *Bus) RowHeads(ctx context.Context, k Key) (map[int]ledger.RowHead, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*b.timeout)
	defer cancel()
	cons, err := b.js.OrderedConsumer(ctx, TasksStream, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{k.rowsFilter()},
		DeliverPolicy:  jetstream.DeliverLastPerSubjectPolicy,
		HeadersOnly:    true,
	})
	if err != nil {
		return nil, classify("row heads", err)
	}
	info, err := cons.Info(ctx)
	if err != nil {
		return nil, classify("row heads", err)
	}
	heads := map[int]ledger.RowHead{}
	if info.NumPending == 0 {
		return heads, nil
	}
	it, err := cons.Messages()
	if err != nil {
		return nil, classify("row heads", err)
	}
	defer it.Stop()
	for {
		type next struct {
			msg jetstream.Msg
			err error
		}
		ch := make(chan next, 1)
		go func() { m, err := it.Next(); ch <- next{m, err} }()
		var n next
		select {
		case n = <-ch:
		case <-ctx.Done():
			it.Stop()
			return nil, fmt.Errorf("taskbus: row heads of %s: %w", k.rowsFilter(), ctx.Err())
		}
		if n.err != nil {
			return nil, classify("row heads", n.err)
		}
		md, err := n.msg.Metadata()
		if err != nil {
			return nil, fmt.Errorf("taskbus: row heads: %w", err)
		}
		row, h, err := parseRowHead(n.msg.Subject(), n.msg.Headers(), md.Sequence.Stream)
		if err != nil {
			return nil, err
		}
		if cur, ok := heads[row]; !ok || h.Seq > cur.Seq {
			heads[row] = h
		}
		if md.NumPending == 0 {
			return heads, nil
		}
	}
}

func parseRowHead(subject string, hdr nats.Header, seq uint64) (int, ledger.RowHead, error) {
	i := len(subject) - 1
	for i >= 0 && subject[i] != '.' {
		i--
	}
	row, err := strconv.Atoi(subject[i+1:])
	if err != nil {
		return 0, ledger.RowHead{}, fmt.Errorf("taskbus: row subject %s: %w", subject, err)
	}
	gen, err := strconv.ParseInt(hdr.Get(hdrGeneration), 10, 64)
	if err != nil {
		return 0, ledger.RowHead{}, fmt.Errorf("taskbus: row %s generation: %w", subject, err)
	}
	return row, ledger.RowHead{Seq: seq, Generation: gen, Kind: ledger.Kind(hdr.Get(hdrEvent)), Hash: hdr.Get(hdrRowHash)}, nil
}

// RowHead reads the newest event of one row.
func (b *Bus) RowHead(ctx context.Context, k Key, row int) (ledger.RowHead, error) {
	ctx, cancel := context.WithTimeout(ctx, b.timeout)
	defer cancel()
	m, err := b.lastMsg(ctx, k.rowFilter(row))
	if err != nil || m == nil {
		return ledger.RowHead{}, err
	}
	_, h, err := parseRowHead(m.subject, m.header, m.seq)
	return h, err
}

// RowEntry is one row event to append.
type RowEntry struct {
	Key        Key
	Row        int
	Kind       ledger.Kind
	Generation int64
	Hash       string
	Event      *Event
	// Expect is the row's head sequence the append is conditioned on.
	Expect uint64
}

// Rows appends row events concurrently (asynchronous publishes, bounded in
// flight) and reports each one's outcome. Not safe for concurrent use; use
// one per file.
type Rows struct {
	b       *Bus
	pending []rowPending
	done    func(RowEntry, error)
}

type rowPending struct {
	e   RowEntry
	fut jetstream.PubAckFuture
}

// maxRowsInFlight bounds unacknowledged row publishes per file: enough to
// keep JetStream busy, small enough to bound memory.
const maxRowsInFlight = 512

// NewRows starts a batch of row appends. done is called exactly once per
// entry, on the goroutine calling Add or Wait, with the entry's own
// outcome, which the caller must decide on:
//
//   - nil: the row event is in the stream;
//   - ErrConflict: the row's head moved (someone else appended);
//   - a permanent fault (fault.TooLarge: the event is over what the server
//     or the stream accepts): this row can never be appended, the others
//     are unaffected;
//   - any other error: the row was not appended and may be on a retry.
//
// An entry whose outcome is not known yet when Add or Wait fail for the
// batch as a whole gets no call: the batch's error says the file is not done.
func (b *Bus) NewRows(done func(RowEntry, error)) *Rows {
	return &Rows{b: b, done: done}
}

// Add publishes e without waiting for its acknowledgement. It returns an
// error only when the batch cannot go on (the context ended, JetStream did
// not acknowledge in time, the connection refused the publish); a refusal
// of e alone goes to done.
func (r *Rows) Add(ctx context.Context, e RowEntry) error {
	if len(r.pending) >= maxRowsInFlight {
		if err := r.settle(ctx, len(r.pending)/2); err != nil {
			return err
		}
	}
	msg := &nats.Msg{Subject: e.Key.rowSubject(e.Kind, e.Row), Data: encodeEvent(nil, e.Event), Header: nats.Header{}}
	gen := strconv.FormatInt(e.Generation, 10)
	msg.Header.Set(hdrExpectSeq, strconv.FormatUint(e.Expect, 10))
	msg.Header.Set(hdrExpectSubj, e.Key.rowFilter(e.Row))
	msg.Header.Set(hdrGeneration, gen)
	msg.Header.Set(hdrEvent, string(e.Kind))
	tracing.Inject(ctx, msg.Header)
	if e.Hash != "" {
		msg.Header.Set(hdrRowHash, e.Hash)
	}
	if err := r.b.fits(TasksStream, msg); err != nil {
		r.done(e, err)
		return nil
	}
	if err := r.b.injected(msg.Subject); err != nil {
		// As if the asynchronous publish had failed with err.
		r.done(e, classify("row append", err))
		return nil
	}
	fut, err := r.b.js.PublishMsgAsync(msg)
	if err != nil {
		if err = classify("row append", err); fault.IsPermanent(err) {
			r.done(e, err)
			return nil
		}
		return err
	}
	r.pending = append(r.pending, rowPending{e: e, fut: fut})
	return nil
}

// Wait waits for every row added so far.
func (r *Rows) Wait(ctx context.Context) error { return r.settle(ctx, len(r.pending)) }

func (r *Rows) settle(ctx context.Context, n int) error {
	timeout := time.NewTimer(r.b.timeout)
	defer timeout.Stop()
	for i, p := range r.pending[:n] {
		select {
		case <-p.fut.Ok():
			r.done(p.e, nil)
		case err := <-p.fut.Err():
			r.done(p.e, classify("row append", err))
		case <-ctx.Done():
			r.pending = r.pending[i:]
			return ctx.Err()
		case <-timeout.C:
			r.pending = r.pending[i:]
			return fault.Transient(fault.Unavailable, fmt.Errorf("taskbus: row append: %w", jetstream.ErrAsyncPublishTimeout))
		}
	}
	r.pending = append(r.pending[:0], r.pending[n:]...)
	return nil
}

// encodeEvent appends ev's body to b: directly, not through json.Marshal,
// which would re-scan the output.
func encodeEvent(b []byte, ev *Event) []byte {
	if ev == nil {
		return append(b, `{}`...)
	}
	return ev.AppendJSON(b)
}
