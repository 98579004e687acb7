package taskbus

import (
	"context"
	"fmt"
	"strconv"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/labelsync/labelsync/internal/ledger"
)

// LastSeq is the task stream's last sequence: heads at or below it existed
// when it was read.
func (b *Bus) LastSeq(ctx context.Context) (uint64, error) {
	s, err := b.js.Stream(ctx, TasksStream)
	if err != nil {
		return 0, classify("last seq", err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		return 0, classify("last seq", err)
	}
	return info.State.LastSeq, nil
}

// LiveHeads calls fn for every key of (project, storage) whose head is live
// and at or below maxSeq, with the key's object name. It reads headers only.
func (b *Bus) LiveHeads(ctx context.Context, project, storage int64, maxSeq uint64, fn func(object string, h ledger.Head) error) error {
	filter := "labelsync.*." + strconv.FormatInt(project, 10) + ".*." + strconv.FormatInt(storage, 10) + ".*"
	cons, err := b.js.OrderedConsumer(ctx, TasksStream, jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{filter},
		DeliverPolicy:  jetstream.DeliverLastPerSubjectPolicy,
		HeadersOnly:    true,
	})
	if err != nil {
		return classify("live heads", err)
	}
	info, err := cons.Info(ctx)
	if err != nil {
		return classify("live heads", err)
	}
	if info.NumPending == 0 {
		return nil
	}
	// Per-subject lasts arrive per event kind; the key's head is the
	// newest of them.
	type last struct {
		object string
		head   ledger.Head
	}
	heads := map[string]last{}
	it, err := cons.Messages()
	if err != nil {
		return classify("live heads", err)
	}
	for {
		m, err := it.Next()
		if err != nil {
			it.Stop()
			return classify("live heads", err)
		}
		md, err := m.Metadata()
		if err != nil {
			it.Stop()
			return fmt.Errorf("taskbus: live heads: %w", err)
		}
		subj := m.Subject()
		hash := subj[len(subj)-32:]
		gen, _ := strconv.ParseInt(m.Headers().Get(hdrGeneration), 10, 64)
		h := ledger.Head{Seq: md.Sequence.Stream, Generation: gen, Kind: ledger.Kind(m.Headers().Get(hdrEvent))}
		if cur, ok := heads[hash]; !ok || h.Seq > cur.head.Seq {
			heads[hash] = last{object: m.Headers().Get(hdrKey), head: h}
		}
		if md.NumPending == 0 {
			break
		}
	}
	it.Stop()
	for _, l := range heads {
		if l.head.Live() && l.head.Seq <= maxSeq && l.object != "" {
			if err := fn(l.object, l.head); err != nil {
				return err
			}
		}
	}
	return nil
}
