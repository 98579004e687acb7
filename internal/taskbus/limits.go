package taskbus

import (
	"fmt"

	"github.com/nats-io/nats.go"

	"github.com/labelsync/labelsync/internal/fault"
)

// MaxMessageBytes is the largest message (headers and body) that stream
// accepts through this connection: the server's max_payload, or the
// stream's max_msg_size when an operator set a smaller one. Servers and
// operators differ (1 MiB is only nats-server's default), so both are read
// from the server: max_payload from the connection's INFO, max_msg_size
// when EnsureStreams last looked at the stream.
func (b *Bus) MaxMessageBytes(stream string) int64 {
	limit := b.nc.MaxPayload()
	if v, ok := b.limits.Load(stream); ok {
		if s := v.(int64); s > 0 && (limit <= 0 || s < limit) {
			limit = s
		}
	}
	return limit
}

// fits refuses a message the server or the stream would refuse for its
// size, before it is sent, as a permanent fault.TooLarge. The server's own
// refusal (a limit lowered since it was read) is classified the same way by
// classify, so the check is a shortcut, not the only line of defence.
func (b *Bus) fits(stream string, m *nats.Msg) error {
	limit := b.MaxMessageBytes(stream)
	if limit <= 0 {
		return nil
	}
	if n := MessageSize(m); n > limit {
		return fault.Permanent(fault.TooLarge, fmt.Errorf("taskbus: a %d-byte message on %s is over the %d bytes stream %s accepts", n, m.Subject, limit, stream))
	}
	return nil
}

// MessageSize is what NATS counts against max_payload and JetStream against
// max_msg_size: the encoded headers plus the body.
func MessageSize(m *nats.Msg) int64 {
	n := int64(len(m.Data))
	if len(m.Header) > 0 {
		n += int64(len("NATS/1.0\r\n") + len("\r\n"))
		for k, vs := range m.Header {
			for _, v := range vs {
				n += int64(len(k) + len(": ") + len(v) + len("\r\n"))
			}
		}
	}
	return n
}
