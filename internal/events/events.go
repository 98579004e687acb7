// Package events decodes Google Cloud Storage object-change notifications,
// as delivered through Cloud Pub/Sub, into typed object events.
//
// A notification is a set of message attributes plus an optional payload.
// Decode accepts what real GCS publishes (payloadFormat JSON_API_V1 or NONE)
// and what fake-gcs-server publishes (no notificationConfig attribute,
// eventTime to the second, possibly in a local time zone). Attributes are
// authoritative; the JSON payload only fills in bucket, key and generation
// when their attributes are missing, and supplies size, content type and
// update time. An empty value, in an attribute or in the payload, counts as
// absent. Times are returned in UTC. Object keys are returned verbatim: no
// URL decoding, no normalisation.
//
// Decode is pure: it does no I/O, keeps no state and does not retain its
// arguments, so it is safe for concurrent use.
//
// There is one class of error. Every error Decode returns wraps ErrMalformed:
// the notification can never decode, however often it is redelivered, so
// the caller should dead-letter it and acknowledge it rather than retry.
// Decode has no transient errors.
package events

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// EventType is the GCS notification eventType attribute.
type EventType string

// The event types GCS publishes. See
// https://cloud.google.com/storage/docs/pubsub-notifications#events.
const (
	Finalize       EventType = "OBJECT_FINALIZE"
	Delete         EventType = "OBJECT_DELETE"
	Archive        EventType = "OBJECT_ARCHIVE"
	MetadataUpdate EventType = "OBJECT_METADATA_UPDATE"
)

// Object is one decoded notification.
type Object struct {
	EventType               EventType
	Bucket                  string
	Key                     string    // objectId, verbatim
	Generation              int64     // objectGeneration, > 0
	OverwroteGeneration     int64     // 0 when absent
	OverwrittenByGeneration int64     // 0 when absent
	Size                    int64     // -1 when unknown (payloadFormat NONE, or no size in the payload)
	ContentType             string    // "" when unknown
	EventTime               time.Time // eventTime attribute, else payload updated, else timeCreated
	Updated                 time.Time // payload "updated", zero when absent
	NotificationConfig      string    // may be empty (fake-gcs-server omits it)
}

// IsRealDelete reports whether the object's generation is gone for good:
// OBJECT_DELETE, or OBJECT_ARCHIVE, without OverwrittenByGeneration. A
// delete or archive caused by an overwrite is the old half of an update.
func (o Object) IsRealDelete() bool {
	return (o.EventType == Delete || o.EventType == Archive) && o.OverwrittenByGeneration == 0
}

// IsOverwrite reports whether the event is one half of an overwrite:
// OBJECT_FINALIZE with OverwroteGeneration, or OBJECT_DELETE/OBJECT_ARCHIVE
// with OverwrittenByGeneration. It is never true together with IsRealDelete.
func (o Object) IsOverwrite() bool {
	switch o.EventType {
	case Finalize:
		return o.OverwroteGeneration != 0
	case Delete, Archive:
		return o.OverwrittenByGeneration != 0
	}
	return false
}

// ErrMalformed is wrapped by every error Decode returns: such input can
// never succeed (permanent).
var ErrMalformed = errors.New("events: malformed notification")

// MaxPayloadBytes bounds the payload Decode accepts. A storage#object
// resource is a few hundred bytes plus custom metadata, which GCS caps at
// 8 KiB, so anything larger is not a GCS notification.
const MaxPayloadBytes = 64 << 10

// maxKeyBytes is GCS's limit on object names, in UTF-8 bytes.
const maxKeyBytes = 1024

// Payload formats of the payloadFormat attribute.
const (
	formatJSON = "JSON_API_V1"
	formatNone = "NONE"
)

// resource is the part of the storage#object JSON resource that Decode
// uses. A struct rather than a map keeps decoding cheap: encoding/json
// skips the fields it does not name (metadata, hashes, links) without
// allocating.
type resource struct {
	Bucket      string  `json:"bucket"`
	Name        string  `json:"name"`
	Generation  jsonInt `json:"generation"`
	Size        jsonInt `json:"size"`
	ContentType string  `json:"contentType"`
	Updated     string  `json:"updated"`
	TimeCreated string  `json:"timeCreated"`
}

// jsonInt holds the text of a JSON value that should be an integer. GCS
// sends int64 fields as decimal strings (a JSON number would lose precision
// beyond 2^53) but other producers send numbers, so both are accepted.
// Checking the text is left to Decode, which knows the field's name and can
// say so in the error; any other JSON value is kept as its raw text and
// fails that check.
type jsonInt struct {
	text string
}

func (n *jsonInt) UnmarshalJSON(b []byte) error {
	switch {
	case string(b) == "null":
		n.text = ""
	case len(b) >= 2 && b[0] == '"' && bytes.IndexByte(b, '\\') < 0:
		n.text = string(b[1 : len(b)-1])
	case b[0] == '"':
		return json.Unmarshal(b, &n.text)
	default:
		n.text = string(b)
	}
	return nil
}

// Decode decodes one GCS notification from its Pub/Sub attributes and
// payload. On error the returned Object is the zero value and the error
// wraps ErrMalformed.
func Decode(attrs map[string]string, payload []byte) (Object, error) {
	if len(payload) > MaxPayloadBytes {
		return Object{}, malformed("payload is %d bytes, more than the %d allowed", len(payload), MaxPayloadBytes)
	}

	o := Object{Size: -1, NotificationConfig: attrs["notificationConfig"]}

	switch t := EventType(attrs["eventType"]); t {
	case Finalize, Delete, Archive, MetadataUpdate:
		o.EventType = t
	case "":
		return Object{}, malformed("missing eventType attribute")
	default:
		return Object{}, malformed("unknown eventType %s", quote(string(t)))
	}

	var hasJSON bool
	switch f := attrs["payloadFormat"]; f {
	case formatJSON, "":
		// A missing format is inferred from the payload (fake-gcs-server
		// leaves it empty when its notification config does not set one).
		// An empty JSON_API_V1 payload just means nothing beyond the
		// attributes is known.
		hasJSON = len(payload) > 0
	case formatNone:
		// The format says there is no payload; whatever came with the
		// message is not something GCS describes, so it is ignored.
	default:
		return Object{}, malformed("unknown payloadFormat %s", quote(f))
	}

	var r resource
	var err error
	if hasJSON {
		if r, err = decodeResource(payload); err != nil {
			return Object{}, err
		}
	}

	if o.Bucket, err = pick("bucketId", attrs["bucketId"], "bucket", r.Bucket); err != nil {
		return Object{}, err
	}
	if o.Key, err = pick("objectId", attrs["objectId"], "name", r.Name); err != nil {
		return Object{}, err
	}
	if err := checkKey(o.Key); err != nil {
		return Object{}, err
	}
	if o.Generation, err = generation(attrs["objectGeneration"], r.Generation.text); err != nil {
		return Object{}, err
	}
	if o.OverwroteGeneration, err = optionalGeneration("overwroteGeneration", attrs["overwroteGeneration"]); err != nil {
		return Object{}, err
	}
	if o.OverwrittenByGeneration, err = optionalGeneration("overwrittenByGeneration", attrs["overwrittenByGeneration"]); err != nil {
		return Object{}, err
	}

	if s := r.Size.text; s != "" {
		n, ok := parseDigits(s)
		if !ok {
			return Object{}, malformed("payload size %s is not a non-negative integer", quote(s))
		}
		o.Size = n
	}
	o.ContentType = r.ContentType

	if r.Updated != "" {
		if o.Updated, err = parseTime("payload updated", r.Updated); err != nil {
			return Object{}, err
		}
	}

	// fake-gcs-server and hand-made messages may lack eventTime; the
	// object's own times are the closest stand-in for when it changed.
	switch {
	case attrs["eventTime"] != "":
		o.EventTime, err = parseTime("eventTime", attrs["eventTime"])
	case !o.Updated.IsZero():
		o.EventTime = o.Updated
	case r.TimeCreated != "":
		o.EventTime, err = parseTime("payload timeCreated", r.TimeCreated)
	default:
		err = malformed("missing eventTime attribute, and no payload updated or timeCreated")
	}
	if err != nil {
		return Object{}, err
	}
	return o, nil
}

// pick returns the attribute value, or the payload value when the attribute
// is absent. Both present and different means the message contradicts
// itself, and there is no telling which one to trust.
func pick(attrName, attr, fieldName, field string) (string, error) {
	switch {
	case attr == "" && field == "":
		return "", malformed("missing %s attribute (and no payload %s)", attrName, fieldName)
	case attr == "":
		return field, nil
	case field != "" && field != attr:
		return "", malformed("%s attribute %s disagrees with payload %s %s", attrName, quote(attr), fieldName, quote(field))
	}
	return attr, nil
}

// checkKey enforces GCS's object naming rules that a downstream consumer
// could trip over: a key GCS would never accept cannot name a real object.
func checkKey(key string) error {
	switch {
	case len(key) > maxKeyBytes:
		return malformed("objectId is %d bytes, longer than %d", len(key), maxKeyBytes)
	case !utf8.ValidString(key):
		return malformed("objectId %s is not valid UTF-8", quote(key))
	case strings.ContainsAny(key, "\r\n"):
		return malformed("objectId %s contains a carriage return or line feed", quote(key))
	}
	return nil
}

func generation(attr, field string) (int64, error) {
	var a, f int64
	var ok bool
	if attr != "" {
		if a, ok = parseDigits(attr); !ok || a == 0 {
			return 0, malformed("objectGeneration %s is not a positive integer", quote(attr))
		}
	}
	if field != "" {
		if f, ok = parseDigits(field); !ok || f == 0 {
			return 0, malformed("payload generation %s is not a positive integer", quote(field))
		}
	}
	switch {
	case attr == "" && field == "":
		return 0, malformed("missing objectGeneration attribute (and no payload generation)")
	case attr == "":
		return f, nil
	case field != "" && f != a:
		return 0, malformed("objectGeneration attribute %s disagrees with payload generation %s", quote(attr), quote(field))
	}
	return a, nil
}

func optionalGeneration(name, s string) (int64, error) {
	if s == "" {
		return 0, nil
	}
	n, ok := parseDigits(s)
	if !ok || n == 0 {
		return 0, malformed("%s %s is not a positive integer", name, quote(s))
	}
	return n, nil
}

// parseDigits parses a non-negative decimal int64. Unlike strconv.ParseInt
// it refuses a sign, so "+5" and "-0" are not generations.
func parseDigits(s string) (int64, bool) {
	if s == "" {
		return 0, false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return 0, false
		}
	}
	n, err := strconv.ParseInt(s, 10, 64)
	return n, err == nil
}

func parseTime(name, s string) (time.Time, error) {
	// RFC3339Nano parses any number of fractional digits, including none:
	// GCS sends microseconds, fake-gcs-server whole seconds.
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return time.Time{}, malformed("%s %s is not an RFC 3339 time", name, quote(s))
	}
	return t.UTC(), nil
}

// decodeResource decodes a JSON_API_V1 payload. It is a function of its
// own so that only a decoded resource goes to the heap (json.Unmarshal
// takes its address), not every Decode's: DecodeAttributes calls Decode
// without a payload on every notification.
func decodeResource(payload []byte) (resource, error) {
	// json.Unmarshal accepts null, and a struct target would silently
	// take it as an empty object.
	if p := bytes.TrimLeft(payload, " \t\r\n"); len(p) == 0 || p[0] != '{' {
		return resource{}, malformed("payload is not a JSON object")
	}
	var r resource
	if err := json.Unmarshal(payload, &r); err != nil {
		// encoding/json names our Go type in this error; say it in the
		// payload's terms instead.
		if te, ok := errors.AsType[*json.UnmarshalTypeError](err); ok && te.Field != "" {
			return resource{}, malformed("payload %s is a JSON %s, not a string", te.Field, te.Value)
		}
		return resource{}, malformed("payload is not a JSON storage object: %v", err)
	}
	return r, nil
}

func malformed(format string, args ...any) error {
	return fmt.Errorf("events: "+format+": %w", append(args, ErrMalformed)...)
}

// quote keeps error messages on one line and short: the values come from
// the network, and a dead-letter reason is read by a person.
func quote(s string) string {
	const limit = 64
	if len(s) <= limit {
		return strconv.Quote(s)
	}
	n := limit
	for n > 0 && !utf8.RuneStart(s[n]) {
		n--
	}
	return strconv.Quote(s[:n]) + "…"
}

// DecodeAttributes is Decode for the hot path: when the attributes alone
// name the event type, bucket, key, generation and event time — as real GCS
// and fake-gcs-server always do — the JSON payload is only checked to be a
// JSON object within MaxPayloadBytes, not decoded, so Size is -1 and
// ContentType and Updated are empty, and a payload that disagrees with the
// attributes is not noticed (attributes are authoritative anyway). Without
// those attributes it is Decode.
func DecodeAttributes(attrs map[string]string, payload []byte) (Object, error) {
	for _, k := range [...]string{"eventType", "bucketId", "objectId", "objectGeneration", "eventTime"} {
		if attrs[k] == "" {
			return Decode(attrs, payload)
		}
	}
	if len(payload) > MaxPayloadBytes {
		return Object{}, malformed("payload is %d bytes, over the %d-byte limit", len(payload), MaxPayloadBytes)
	}
	if attrs["payloadFormat"] != "NONE" {
		if t := bytes.TrimSpace(payload); len(t) > 0 && !validObject(t) {
			return Object{}, malformed("payload is not a JSON object")
		}
	}
	return Decode(attrs, nil)
}
