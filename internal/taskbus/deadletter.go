package taskbus

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Letter is one dead-letter entry (SPEC §2): an input that can never succeed,
// kept with enough context for a person to act on it.
type Letter struct {
	// Reason is one line a person can act on.
	Reason string
	// Code is a short, low-cardinality class of Reason, for metrics.
	Code       string
	Component  string
	Source     Source
	Attributes map[string]string
	Data       []byte
}

// Source says what a dead-lettered input was.
type Source struct {
	PubsubMessageID string `json:"pubsub_message_id,omitempty"`
	Subject         string `json:"subject,omitempty"`
	Bucket          string `json:"bucket,omitempty"`
	Key             string `json:"key,omitempty"`
	Generation      string `json:"generation,omitempty"`
	Row             *int   `json:"row,omitempty"`
}

type letterBody struct {
	Reason     string            `json:"reason"`
	Code       string            `json:"code,omitempty"`
	Component  string            `json:"component"`
	Time       time.Time         `json:"time"`
	Source     Source            `json:"source"`
	Attributes map[string]string `json:"attributes"`
	Data       *string           `json:"data,omitempty"`
	DataBase64 []byte            `json:"data_base64,omitempty"`
}

// OneLine folds runs of white space, newlines included, into single
// spaces: a dead letter's reason is one line a person can act on.
func OneLine(s string) string { return strings.Join(strings.Fields(s), " ") }

// DeadLetterSubject is the subject of a component's dead letters.
func DeadLetterSubject(component string) string { return "labelsync.deadletter." + component }

// DeadLetter appends l to the dead-letter stream and waits for JetStream's
// acknowledgement. The same input dead-lettered again inside the duplicate
// window (a redelivery after a lost ack, the same bad message published
// twice) is stored once.
func (b *Bus) DeadLetter(ctx context.Context, l Letter) error {
	l.Reason = OneLine(l.Reason)
	body := letterBody{
		Reason:     l.Reason,
		Code:       l.Code,
		Component:  l.Component,
		Time:       time.Now().UTC(),
		Source:     l.Source,
		Attributes: l.Attributes,
	}
	if body.Attributes == nil {
		body.Attributes = map[string]string{}
	}
	if utf8.Valid(l.Data) {
		s := string(l.Data)
		body.Data = &s
	} else {
		body.DataBase64 = l.Data
	}
	data, err := json.Marshal(body)
	if err != nil {
		return fmt.Errorf("taskbus: encode dead letter: %w", err)
	}
	msg := &nats.Msg{Subject: DeadLetterSubject(l.Component), Data: data, Header: nats.Header{}}
	msg.Header.Set(jetstream.MsgIDHeader, letterID(l))
	ctx, cancel := context.WithTimeout(ctx, b.timeout)
	defer cancel()
	if _, err := b.js.PublishMsg(ctx, msg); err != nil {
		return classify("dead letter", err)
	}
	return nil
}

// letterID identifies the input, not the delivery, so that duplicates of one
// bad input collapse. The Pub/Sub message id is left out on purpose: the same
// malformed notification published twice is one problem.
func letterID(l Letter) string {
	h := sha256.New()
	src, _ := json.Marshal(Source{Subject: l.Source.Subject, Bucket: l.Source.Bucket, Key: l.Source.Key, Generation: l.Source.Generation, Row: l.Source.Row})
	attrs, _ := json.Marshal(l.Attributes) // map keys are sorted: stable
	for _, part := range [][]byte{[]byte(l.Component), []byte(l.Reason), src, attrs, l.Data} {
		fmt.Fprintf(h, "%d:", len(part))
		h.Write(part)
	}
	return hex.EncodeToString(h.Sum(nil)[:16])
}
