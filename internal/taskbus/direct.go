package taskbus

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// MaxLastMsgs is the most subjects one LastMsgs call asks for: nats-server
// answers at most 1,024 messages per batched direct get.
const MaxLastMsgs = 1000

// LastMsgs reads the last message of each of subjects (at most
// MaxLastMsgs) from stream in one request: a JetStream batched direct get
// ("multi_last", nats-server 2.11 or later, on a stream with AllowDirect,
// as every key-value bucket has). It calls each with every message found,
// in the server's order; subjects without a message are not reported.
// A key-value entry's delete or purge marker is reported like any other
// message (its KV-Operation header says so).
//
// It is what a key-value Get does for one key, for many: one round trip
// and one answer per message instead of a request per key. Like a Get, it
// may be answered by any replica of the stream.
//
// Errors are classified as classify does; an error of each is returned as
// it is.
func LastMsgs(ctx context.Context, nc *nats.Conn, stream string, subjects []string, each func(m *nats.Msg, seq uint64) error) error {
	if len(subjects) == 0 {
		return nil
	}
	if len(subjects) > MaxLastMsgs {
		return fmt.Errorf("taskbus: last messages of %d subjects, over %d", len(subjects), MaxLastMsgs)
	}
	req, err := json.Marshal(struct {
		MultiLast []string `json:"multi_last"`
		Batch     int      `json:"batch"`
	}{subjects, len(subjects)})
	if err != nil {
		return fmt.Errorf("taskbus: last messages: %w", err)
	}
	// A channel of its own size: the answers are at most one message per
	// subject and the end-of-batch status. SubscribeSync would make one
	// of nats.go's default 65,536 pending messages for every call.
	answers := make(chan *nats.Msg, len(subjects)+1)
	inbox := nc.NewRespInbox()
	sub, err := nc.ChanSubscribe(inbox, answers)
	if err != nil {
		return classify("last messages", err)
	}
	defer func() { _ = sub.Unsubscribe() }()
	if err := nc.PublishRequest("$JS.API.DIRECT.GET."+stream, inbox, req); err != nil {
		return classify("last messages", err)
	}
	for {
		var m *nats.Msg
		select {
		case m = <-answers:
		case <-ctx.Done():
			return classify("last messages", ctx.Err())
		}
		switch status := m.Header.Get("Status"); status {
		case "":
		case "204": // end of the batch
			return nil
		case "404": // none of the subjects has a message
			return nil
		default:
			return classify("last messages", fmt.Errorf("direct get of %s answered %s %s", stream, status, m.Header.Get("Description")))
		}
		seq, err := strconv.ParseUint(m.Header.Get(jetstream.SequenceHeader), 10, 64)
		if err != nil {
			return fmt.Errorf("taskbus: last messages: direct get of %s answered sequence %q", stream, m.Header.Get(jetstream.SequenceHeader))
		}
		// The answer's subject is the inbox; the stored one is a header.
		m.Subject = m.Header.Get(jetstream.SubjectHeader)
		if err := each(m, seq); err != nil {
			return err
		}
	}
}
