package deadletter

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/labelsync/labelsync/internal/fault"
	"github.com/labelsync/labelsync/internal/metrics"
	"github.com/labelsync/labelsync/internal/taskbus"
)

// Letter is one dead-letter entry (SPEC §2): an input that can never
// succeed, kept with enough context for a person to act on it.
type Letter struct {
	// Reason is one line a person can act on (the Writer folds it to one).
	Reason string
	// Code is the failure's fault code, the metric's reason label.
	Code fault.Code
	// Source says what the input was. When it names an object (Bucket and
	// Key), the letter is written once per (storage, bucket, key,
	// generation, row), however often and however late the same input
	// fails again.
	Source     Source
	Attributes map[string]string
	Data       []byte
}

// Source says what a dead-lettered input was.
type Source struct {
	PubsubMessageID string `json:"pubsub_message_id,omitempty"`
	Subject         string `json:"subject,omitempty"`
	StorageID       int64  `json:"storage_id,omitempty"`
	Bucket          string `json:"bucket,omitempty"`
	Key             string `json:"key,omitempty"`
	Generation      string `json:"generation,omitempty"`
	Row             *int   `json:"row,omitempty"`
}

// keyed reports whether the source names an object: such letters are
// written once at any time, others once inside the duplicate window.
func (s Source) keyed() bool { return s.Bucket != "" && s.Key != "" }

type body struct {
	Reason        string            `json:"reason"`
	Code          fault.Code        `json:"code,omitempty"`
	Component     string            `json:"component"`
	Time          time.Time         `json:"time"`
	Source        Source            `json:"source"`
	Attributes    map[string]string `json:"attributes"`
	Data          *string           `json:"data,omitempty"`
	DataBase64    []byte            `json:"data_base64,omitempty"`
	DataTruncated bool              `json:"data_truncated,omitempty"`
	DataBytes     int               `json:"data_bytes,omitempty"`
}

// stream is what a Writer needs of the bus: JetStream, and how large a
// message the dead-letter stream takes.
type stream interface {
	JetStream() jetstream.JetStream
	MaxMessageBytes(stream string) int64
}

// Writer is the one way every component writes dead letters: the
// notification handler's failure path, Tasks-mode rows, sync, and the
// exporter. It is safe for concurrent use.
type Writer struct {
	s         stream
	component string
	metrics   *metrics.Metrics
	logger    *slog.Logger
	timeout   time.Duration
}

// NewWriter builds the writer of one component's dead letters (worker,
// exporter, labelstudio: the subject token and the "component" field).
func NewWriter(s stream, component string, m *metrics.Metrics, logger *slog.Logger) *Writer {
	return &Writer{s: s, component: component, metrics: m, logger: logger, timeout: 10 * time.Second}
}

// Component is the component the writer writes for.
func (w *Writer) Component() string { return w.component }

// maxReasonBytes bounds a reason: one line, not a stack trace or a file.
const maxReasonBytes = 4 << 10

// Write stores l in the dead-letter stream and waits for JetStream's
// acknowledgement. A letter about an object (Source.Bucket and Key) is
// stored once per (storage, bucket, key, generation, row) at any time: its
// subject ends in a hash of that identity and the publish expects the
// subject to be empty, so a second write of it is refused by JetStream and
// counts as done. Other letters (a malformed notification: no object to
// tie it to) are deduplicated on their content inside JetStream's
// duplicate window, which covers a redelivery of the same message.
//
// Data is cut to what the stream accepts (data_truncated and data_bytes
// say so), so that a letter about an oversize input is never oversize
// itself. An error means the letter is not stored: it is transient, and
// the caller must not acknowledge its input.
func (w *Writer) Write(ctx context.Context, l Letter) error {
	l.Reason = OneLine(l.Reason)
	if len(l.Reason) > maxReasonBytes {
		l.Reason = strings.ToValidUTF8(l.Reason[:maxReasonBytes], "") + "…"
	}
	if l.Code == "" {
		l.Code = fault.Unclassified
	}
	msg := &nats.Msg{Subject: DeadLetterSubject(w.component), Header: nats.Header{}}
	var opts []jetstream.PublishOpt
	if l.Source.keyed() {
		msg.Subject += "." + identity(w.component, l.Source)
		opts = append(opts, jetstream.WithExpectLastSequencePerSubject(0))
	} else {
		msg.Header.Set(jetstream.MsgIDHeader, contentID(w.component, l))
	}
	data, err := w.encode(l, msg)
	if err != nil {
		return err
	}
	msg.Data = data
	ctx, cancel := context.WithTimeout(ctx, w.timeout)
	defer cancel()
	ack, err := w.s.JetStream().PublishMsg(ctx, msg, opts...)
	var apiErr *jetstream.APIError
	switch {
	case errors.As(err, &apiErr) && (apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence || apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequenceConstant):
		w.logger.Debug("dead letter already stored", "reason", l.Reason, "code", l.Code, "subject", msg.Subject)
		return nil
	case err != nil:
		// Never permanent: a letter that cannot be stored must leave its
		// input unacknowledged, so that it comes back.
		return fault.Transient(fault.Unavailable, fmt.Errorf("deadletter: store %q: %w", l.Reason, err))
	case ack.Duplicate:
		return nil
	}
	w.metrics.DeadLetters.WithLabelValues(w.component, string(l.Code)).Inc()
	w.logger.Warn("dead-lettered", "reason", l.Reason, "code", l.Code, "source", l.Source)
	return nil
}

// encode builds the body, cutting Data (then attributes) until the message
// fits the dead-letter stream.
func (w *Writer) encode(l Letter, msg *nats.Msg) ([]byte, error) {
	b := body{
		Reason:     l.Reason,
		Code:       l.Code,
		Component:  w.component,
		Time:       time.Now().UTC(),
		Source:     l.Source,
		Attributes: l.Attributes,
	}
	if b.Attributes == nil {
		b.Attributes = map[string]string{}
	}
	limit := w.s.MaxMessageBytes(taskbus.DeadLetterStream)
	data := l.Data
	for attempt := 0; ; attempt++ {
		b.Data, b.DataBase64 = nil, nil
		if utf8.Valid(data) {
			s := string(data)
			b.Data = &s
		} else {
			b.DataBase64 = data
		}
		out, err := json.Marshal(b)
		if err != nil {
			return nil, fault.Permanent(fault.BadInput, fmt.Errorf("deadletter: encode: %w", err))
		}
		msg.Data = out
		over := taskbus.MessageSize(msg) - limit
		if limit <= 0 || over <= 0 {
			return out, nil
		}
		switch {
		case len(data) > 0 && attempt < 3:
			// JSON escaping or base64 can make data grow: cut with a margin.
			keep := max(0, len(data)-int(over)*2-1024)
			for keep > 0 && keep < len(data) && !utf8.RuneStart(data[keep]) {
				keep--
			}
			data = data[:keep]
		case len(data) > 0:
			data = nil
		case len(b.Attributes) > 0:
			b.Attributes = map[string]string{"labelsync_attributes_dropped": strconv.Itoa(len(l.Attributes))}
			if attempt > 6 {
				b.Attributes = map[string]string{}
			}
		default:
			return nil, fault.Permanent(fault.TooLarge, fmt.Errorf("deadletter: a letter without data is %d bytes over the dead-letter stream's limit of %d", over, limit))
		}
		b.DataTruncated, b.DataBytes = true, len(l.Data)
	}
}

// OneLine folds runs of white space, newlines included, into single
// spaces: a dead letter's reason is one line a person can act on.
func OneLine(s string) string { return strings.Join(strings.Fields(s), " ") }

// DeadLetterSubject is the subject root of a component's dead letters
// (SPEC §2): labelsync.deadletter.<component>, optionally followed by an
// identity token.
func DeadLetterSubject(component string) string { return "labelsync.deadletter." + component }

// identity is the subject token of a letter about an object.
func identity(component string, s Source) string {
	h := sha256.New()
	row := ""
	if s.Row != nil {
		row = strconv.Itoa(*s.Row)
	}
	for _, part := range []string{component, strconv.FormatInt(s.StorageID, 10), s.Bucket, s.Key, s.Generation, row} {
		fmt.Fprintf(h, "%d:%s", len(part), part)
	}
	return hex.EncodeToString(h.Sum(nil)[:16])
}

// contentID identifies an input without an object, so that duplicates of
// one bad input collapse inside the duplicate window. The Pub/Sub message
// id is left out on purpose: the same malformed notification published
// twice is one problem.
func contentID(component string, l Letter) string {
	h := sha256.New()
	src, _ := json.Marshal(Source{Subject: l.Source.Subject})
	attrs, _ := json.Marshal(l.Attributes) // map keys are sorted: stable
	for _, part := range [][]byte{[]byte(component), []byte(l.Reason), src, attrs, l.Data} {
		fmt.Fprintf(h, "%d:", len(part))
		h.Write(part)
	}
	return hex.EncodeToString(h.Sum(nil)[:16])
}
