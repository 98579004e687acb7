package taskbus

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// publish sends m to JetStream and returns the sequence its PubAck names.
// It is jetstream.PublishMsg without what that costs per call on the
// notification path: a context and timer of its own (nats' pooled request
// timer is used instead) and reflection to read the PubAck (about 3 µs of a
// notification's ~60). ctx's deadline, if sooner than the Bus timeout,
// bounds the wait; a cancellation is seen before the request, not during
// it, which costs at most one round trip.
func (b *Bus) publish(ctx context.Context, m *nats.Msg) (uint64, error) {
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	timeout := b.timeout
	if d, ok := ctx.Deadline(); ok {
		timeout = min(timeout, time.Until(d))
	}
	resp, err := b.nc.RequestMsg(m, timeout)
	if errors.Is(err, nats.ErrNoResponders) {
		// No stream listens on the subject: JetStream is down, a leader is
		// being elected, or the stream was deleted. All are retried.
		return 0, fmt.Errorf("no JetStream stream answered on %s: %w", m.Subject, err)
	}
	if err != nil {
		return 0, err
	}
	return parsePubAck(resp.Data)
}

var (
	pubAckStream = []byte(`{"stream":"`)
	pubAckSeq    = []byte(`","seq":`)
)

// parsePubAck reads a JetStream publish reply. A success reply without a
// domain is exactly {"stream":"NAME","seq":N}, and that shape is read by
// hand; anything else (an error reply, a domain, a shape not seen before)
// goes through encoding/json. An error reply comes back as
// *jetstream.APIError, so that classify can tell a moved head from a
// failure.
func parsePubAck(data []byte) (uint64, error) {
	if rest, ok := bytes.CutPrefix(data, pubAckStream); ok {
		name := 0
		for name < len(rest) && rest[name] != '"' && rest[name] != '\\' && rest[name] >= 0x20 {
			name++
		}
		if digits, ok := bytes.CutPrefix(rest[name:], pubAckSeq); ok && name > 0 && len(digits) > 1 && digits[len(digits)-1] == '}' {
			digits = digits[:len(digits)-1]
			if seq, err := strconv.ParseUint(string(digits), 10, 64); err == nil && seq > 0 && digits[0] != '+' && digits[0] != '0' {
				return seq, nil
			}
		}
	}
	var r struct {
		Error  *jetstream.APIError `json:"error"`
		Stream string              `json:"stream"`
		Seq    uint64              `json:"seq"`
	}
	if err := json.Unmarshal(data, &r); err != nil {
		return 0, fmt.Errorf("JetStream reply %.200q: %w", data, err)
	}
	if r.Error != nil {
		return 0, r.Error
	}
	if r.Stream == "" || r.Seq == 0 {
		return 0, fmt.Errorf("JetStream reply %.200q names no stream and sequence", data)
	}
	return r.Seq, nil
}
