package events_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/google/go-cmp/cmp"

	"github.com/labelsync/labelsync/internal/events"
)

// Times and generations of a made-up upload of incoming/cat 1.jpg to
// acme-raw. Real GCS generations are the upload time in microseconds.
const (
	gen      = "1795789803098123"
	gen2     = "1795789741532210" // the generation gen overwrote
	gen3     = "1795789867000042" // the generation that overwrote gen
	gcsTime  = "2026-11-27T14:30:03.098123Z"
	fakeTime = "2026-11-27T14:30:03Z"
	key      = "incoming/cat 1.jpg"
	bucket   = "acme-raw"
	config   = "projects/_/buckets/acme-raw/notificationConfigs/7"
	absent   = "\x00absent" // value that makes with() delete an attribute
)

var (
	eventTime = time.Date(2026, 11, 27, 14, 30, 3, 98123000, time.UTC)
	updated   = time.Date(2026, 11, 27, 14, 30, 3, 98000000, time.UTC)
	created   = time.Date(2026, 11, 27, 14, 29, 1, 532000000, time.UTC)
)

// gcsAttrs returns the attributes real GCS sets on a JSON_API_V1
// notification for key at generation g.
func gcsAttrs(eventType, key, g string) map[string]string {
	return map[string]string{
		"notificationConfig": config,
		"eventType":          eventType,
		"payloadFormat":      "JSON_API_V1",
		"bucketId":           bucket,
		"objectId":           key,
		"objectGeneration":   g,
		"eventTime":          gcsTime,
	}
}

// gcsPayload returns the storage#object resource real GCS sends for key
// at generation g.
func gcsPayload(key, g string) string {
	esc := url.PathEscape(key)
	return `{
  "kind": "storage#object",
  "id": ` + jsonString(bucket+"/"+key+"/"+g) + `,
  "selfLink": "https://www.googleapis.com/storage/v1/b/acme-raw/o/` + esc + `",
  "mediaLink": "https://storage.googleapis.com/download/storage/v1/b/acme-raw/o/` + esc + `?generation=` + g + `&alt=media",
  "name": ` + jsonString(key) + `,
  "bucket": "acme-raw",
  "generation": "` + g + `",
  "metageneration": "1",
  "contentType": "image/jpeg",
  "timeCreated": "2026-11-27T14:29:01.532Z",
  "updated": "2026-11-27T14:30:03.098Z",
  "storageClass": "STANDARD",
  "timeStorageClassUpdated": "2026-11-27T14:29:01.532Z",
  "size": "48213",
  "md5Hash": "XrY7u+Ae7tCTyyK7j1rNww==",
  "crc32c": "yZRlqg==",
  "etag": "CIu/2ZHLr5EDEAE=",
  "metadata": {"camera": "3", "note": "a \"quoted\" value"}
}`
}

// fakeAttrs and fakePayload are what fake-gcs-server publishes: no
// notificationConfig, eventTime to the second, an id with '#', no
// metageneration or links.
func fakeAttrs(eventType, key, g string) map[string]string {
	return map[string]string{
		"eventType":        eventType,
		"payloadFormat":    "JSON_API_V1",
		"bucketId":         bucket,
		"objectId":         key,
		"objectGeneration": g,
		"eventTime":        fakeTime,
	}
}

func fakePayload(key, g, size string) string {
	return `{"kind":"storage#object","id":` + jsonString(bucket+"/"+key+"#"+g) +
		`,"name":` + jsonString(key) + `,"bucket":"acme-raw","generation":"` + g +
		`","contentType":"image/jpeg","timeCreated":"2026-11-27T14:29:01.532Z","updated":"2026-11-27T14:30:03.098Z",` +
		`"storageClass":"STANDARD","size":"` + size + `","md5Hash":"XrY7u+Ae7tCTyyK7j1rNww==","crc32c":"yZRlqg=="}`
}

func jsonString(s string) string {
	b, err := json.Marshal(s)
	if err != nil {
		panic(err)
	}
	return string(b)
}

// with returns a copy of m with the given key/value pairs set, or deleted
// when the value is absent.
func with(m map[string]string, kv ...string) map[string]string {
	c := make(map[string]string, len(m)+len(kv)/2)
	for k, v := range m {
		c[k] = v
	}
	for i := 0; i < len(kv); i += 2 {
		if kv[i+1] == absent {
			delete(c, kv[i])
		} else {
			c[kv[i]] = kv[i+1]
		}
	}
	return c
}

// replace returns the payload with one field's text swapped, failing
// loudly when the fixture does not contain it.
func replace(payload, old, new string) string {
	if !strings.Contains(payload, old) {
		panic(fmt.Sprintf("fixture has no %q", old))
	}
	return strings.Replace(payload, old, new, 1)
}

// gcsObject is what gcsAttrs+gcsPayload decode to.
func gcsObject(t events.EventType, key string) events.Object {
	return events.Object{
		EventType:          t,
		Bucket:             bucket,
		Key:                key,
		Generation:         1795789803098123,
		Size:               48213,
		ContentType:        "image/jpeg",
		EventTime:          eventTime,
		Updated:            updated,
		NotificationConfig: config,
	}
}

func withObj(o events.Object, f func(*events.Object)) events.Object {
	f(&o)
	return o
}

type decodeTest struct {
	name    string
	attrs   map[string]string
	payload string
	want    events.Object
	wantErr string // text the error must contain, naming the field; "" for success
}

var (
	key1024    = strings.Repeat("é", 511) + "ab" // 1024 bytes, multi-byte runes
	keyOddity  = "folder/my file #1?v=2 100%25 done%.jpg"
	keyUnicode = "données/日本語/🐈 ünïcödé.png"
	// maxPayload is the real payload padded with trailing spaces to exactly
	// MaxPayloadBytes.
	maxPayload = gcsPayload(key, gen) + strings.Repeat(" ", events.MaxPayloadBytes-len(gcsPayload(key, gen)))
)

var decodeTests = []decodeTest{
	// Real GCS, one per event type.
	{
		name:    "gcs finalize",
		attrs:   gcsAttrs("OBJECT_FINALIZE", key, gen),
		payload: gcsPayload(key, gen),
		want:    gcsObject(events.Finalize, key),
	},
	{
		name:    "gcs finalize overwrote",
		attrs:   with(gcsAttrs("OBJECT_FINALIZE", key, gen), "overwroteGeneration", gen2),
		payload: gcsPayload(key, gen),
		want: withObj(gcsObject(events.Finalize, key), func(o *events.Object) {
			o.OverwroteGeneration = 1795789741532210
		}),
	},
	{
		name:    "gcs delete overwritten",
		attrs:   with(gcsAttrs("OBJECT_DELETE", key, gen), "overwrittenByGeneration", gen3),
		payload: gcsPayload(key, gen),
		want: withObj(gcsObject(events.Delete, key), func(o *events.Object) {
			o.OverwrittenByGeneration = 1795789867000042
		}),
	},
	{
		name:    "gcs delete",
		attrs:   gcsAttrs("OBJECT_DELETE", key, gen),
		payload: gcsPayload(key, gen),
		want:    gcsObject(events.Delete, key),
	},
	{
		name:    "gcs archive",
		attrs:   gcsAttrs("OBJECT_ARCHIVE", key, gen),
		payload: gcsPayload(key, gen),
		want:    gcsObject(events.Archive, key),
	},
	{
		name:    "gcs archive overwritten",
		attrs:   with(gcsAttrs("OBJECT_ARCHIVE", key, gen), "overwrittenByGeneration", gen3),
		payload: gcsPayload(key, gen),
		want: withObj(gcsObject(events.Archive, key), func(o *events.Object) {
			o.OverwrittenByGeneration = 1795789867000042
		}),
	},
	{
		name:    "gcs metadata update",
		attrs:   gcsAttrs("OBJECT_METADATA_UPDATE", key, gen),
		payload: replace(gcsPayload(key, gen), `"metageneration": "1"`, `"metageneration": "2"`),
		want:    gcsObject(events.MetadataUpdate, key),
	},

	// payloadFormat NONE and its inference.
	{
		name:  "gcs none",
		attrs: with(gcsAttrs("OBJECT_FINALIZE", key, gen), "payloadFormat", "NONE"),
		want: events.Object{
			EventType: events.Finalize, Bucket: bucket, Key: key, Generation: 1795789803098123,
			Size: -1, EventTime: eventTime, NotificationConfig: config,
		},
	},
	{
		name:    "none ignores a stray payload",
		attrs:   with(gcsAttrs("OBJECT_DELETE", key, gen), "payloadFormat", "NONE"),
		payload: "not json at all",
		want: events.Object{
			EventType: events.Delete, Bucket: bucket, Key: key, Generation: 1795789803098123,
			Size: -1, EventTime: eventTime, NotificationConfig: config,
		},
	},
	{
		name:  "missing payloadFormat, empty payload is none",
		attrs: with(gcsAttrs("OBJECT_FINALIZE", key, gen), "payloadFormat", absent),
		want: events.Object{
			EventType: events.Finalize, Bucket: bucket, Key: key, Generation: 1795789803098123,
			Size: -1, EventTime: eventTime, NotificationConfig: config,
		},
	},
	{
		name:    "missing payloadFormat, payload is json",
		attrs:   with(gcsAttrs("OBJECT_FINALIZE", key, gen), "payloadFormat", absent),
		payload: gcsPayload(key, gen),
		want:    gcsObject(events.Finalize, key),
	},
	{
		name:  "json format with empty payload",
		attrs: gcsAttrs("OBJECT_FINALIZE", key, gen),
		want: events.Object{
			EventType: events.Finalize, Bucket: bucket, Key: key, Generation: 1795789803098123,
			Size: -1, EventTime: eventTime, NotificationConfig: config,
		},
	},

	// fake-gcs-server.
	{
		name:    "fake finalize",
		attrs:   fakeAttrs("OBJECT_FINALIZE", key, "3"),
		payload: fakePayload(key, "3", "48213"),
		want: events.Object{
			EventType: events.Finalize, Bucket: bucket, Key: key, Generation: 3, Size: 48213,
			ContentType: "image/jpeg", EventTime: time.Date(2026, 11, 27, 14, 30, 3, 0, time.UTC), Updated: updated,
		},
	},
	{
		name:    "fake finalize overwrote, local time zone",
		attrs:   with(fakeAttrs("OBJECT_FINALIZE", key, "4"), "overwroteGeneration", "3", "eventTime", "2026-11-27T15:30:03+01:00"),
		payload: fakePayload(key, "4", "10"),
		want: events.Object{
			EventType: events.Finalize, Bucket: bucket, Key: key, Generation: 4, OverwroteGeneration: 3, Size: 10,
			ContentType: "image/jpeg", EventTime: time.Date(2026, 11, 27, 14, 30, 3, 0, time.UTC), Updated: updated,
		},
	},
	{
		name:    "fake final delete has size 0",
		attrs:   fakeAttrs("OBJECT_DELETE", key, "3"),
		payload: fakePayload(key, "3", "0"),
		want: events.Object{
			EventType: events.Delete, Bucket: bucket, Key: key, Generation: 3, Size: 0,
			ContentType: "image/jpeg", EventTime: time.Date(2026, 11, 27, 14, 30, 3, 0, time.UTC), Updated: updated,
		},
	},
	{
		name:    "fake notification config without payload format",
		attrs:   with(fakeAttrs("OBJECT_FINALIZE", key, "3"), "payloadFormat", ""),
		payload: fakePayload(key, "3", "48213"),
		want: events.Object{
			EventType: events.Finalize, Bucket: bucket, Key: key, Generation: 3, Size: 48213,
			ContentType: "image/jpeg", EventTime: time.Date(2026, 11, 27, 14, 30, 3, 0, time.UTC), Updated: updated,
		},
	},

	// Fallbacks to the payload.
	{
		name:    "bucket, key and generation from payload",
		attrs:   with(gcsAttrs("OBJECT_FINALIZE", key, gen), "bucketId", absent, "objectId", absent, "objectGeneration", absent),
		payload: gcsPayload(key, gen),
		want:    gcsObject(events.Finalize, key),
	},
	{
		name:    "empty attributes count as absent",
		attrs:   with(gcsAttrs("OBJECT_FINALIZE", key, gen), "bucketId", "", "objectId", "", "objectGeneration", ""),
		payload: gcsPayload(key, gen),
		want:    gcsObject(events.Finalize, key),
	},
	{
		name:    "json numbers",
		attrs:   gcsAttrs("OBJECT_FINALIZE", key, gen),
		payload: replace(replace(gcsPayload(key, gen), `"size": "48213"`, `"size": 48213`), `"generation": "`+gen+`"`, `"generation": `+gen),
		want:    gcsObject(events.Finalize, key),
	},
	{
		name:    "null generation and size",
		attrs:   gcsAttrs("OBJECT_FINALIZE", key, gen),
		payload: replace(replace(gcsPayload(key, gen), `"size": "48213"`, `"size": null`), `"generation": "`+gen+`"`, `"generation": null`),
		want:    withObj(gcsObject(events.Finalize, key), func(o *events.Object) { o.Size = -1 }),
	},
	{
		name:    "eventTime from updated",
		attrs:   with(gcsAttrs("OBJECT_FINALIZE", key, gen), "eventTime", absent),
		payload: gcsPayload(key, gen),
		want:    withObj(gcsObject(events.Finalize, key), func(o *events.Object) { o.EventTime = updated }),
	},
	{
		name:    "eventTime from timeCreated",
		attrs:   with(gcsAttrs("OBJECT_FINALIZE", key, gen), "eventTime", absent),
		payload: replace(gcsPayload(key, gen), `"updated": "2026-11-27T14:30:03.098Z",`, ``),
		want: withObj(gcsObject(events.Finalize, key), func(o *events.Object) {
			o.EventTime = created
			o.Updated = time.Time{}
		}),
	},
	{
		name:    "payload with leading whitespace",
		attrs:   gcsAttrs("OBJECT_FINALIZE", key, gen),
		payload: "\n\t " + gcsPayload(key, gen) + "\n",
		want:    gcsObject(events.Finalize, key),
	},

	{
		name:    "payload of MaxPayloadBytes",
		attrs:   gcsAttrs("OBJECT_FINALIZE", key, gen),
		payload: maxPayload,
		want:    gcsObject(events.Finalize, key),
	},

	// Keys are kept verbatim.
	{
		name:    "key with spaces, #, ?, %",
		attrs:   gcsAttrs("OBJECT_FINALIZE", keyOddity, gen),
		payload: gcsPayload(keyOddity, gen),
		want:    gcsObject(events.Finalize, keyOddity),
	},
	{
		name:    "unicode key",
		attrs:   gcsAttrs("OBJECT_FINALIZE", keyUnicode, gen),
		payload: gcsPayload(keyUnicode, gen),
		want:    gcsObject(events.Finalize, keyUnicode),
	},
	{
		name:    "1024-byte key",
		attrs:   gcsAttrs("OBJECT_FINALIZE", key1024, gen),
		payload: gcsPayload(key1024, gen),
		want:    gcsObject(events.Finalize, key1024),
	},
	{
		name:    "folder placeholder key",
		attrs:   gcsAttrs("OBJECT_FINALIZE", "incoming/", gen),
		payload: gcsPayload("incoming/", gen),
		want:    gcsObject(events.Finalize, "incoming/"),
	},

	// Malformed.
	{
		name:    "payload too large",
		attrs:   gcsAttrs("OBJECT_FINALIZE", key, gen),
		payload: maxPayload + " ",
		wantErr: "payload is 65537 bytes, more than the 65536 allowed",
	},
	{
		name:    "missing eventType",
		attrs:   with(gcsAttrs("", key, gen), "eventType", absent),
		payload: gcsPayload(key, gen),
		wantErr: "missing eventType attribute",
	},
	{
		name:    "unknown eventType",
		attrs:   gcsAttrs("OBJECT_RESTORE", key, gen),
		payload: gcsPayload(key, gen),
		wantErr: `unknown eventType "OBJECT_RESTORE"`,
	},
	{
		name:    "unknown payloadFormat",
		attrs:   with(gcsAttrs("OBJECT_FINALIZE", key, gen), "payloadFormat", "JSON_API_V2"),
		payload: gcsPayload(key, gen),
		wantErr: `unknown payloadFormat "JSON_API_V2"`,
	},
	{
		name:    "payload is an array",
		attrs:   gcsAttrs("OBJECT_FINALIZE", key, gen),
		payload: `[{"name":"a"}]`,
		wantErr: "payload is not a JSON object",
	},
	{
		name:    "payload is null",
		attrs:   gcsAttrs("OBJECT_FINALIZE", key, gen),
		payload: `null`,
		wantErr: "payload is not a JSON object",
	},
	{
		name:    "payload is blank",
		attrs:   gcsAttrs("OBJECT_FINALIZE", key, gen),
		payload: " \n",
		wantErr: "payload is not a JSON object",
	},
	{
		name:    "payload is truncated",
		attrs:   gcsAttrs("OBJECT_FINALIZE", key, gen),
		payload: gcsPayload(key, gen)[:100],
		wantErr: "payload is not a JSON storage object",
	},
	{
		name:    "payload has trailing garbage",
		attrs:   gcsAttrs("OBJECT_FINALIZE", key, gen),
		payload: gcsPayload(key, gen) + "}",
		wantErr: "payload is not a JSON storage object",
	},
	{
		name:    "payload name is a number",
		attrs:   gcsAttrs("OBJECT_FINALIZE", key, gen),
		payload: replace(gcsPayload(key, gen), `"name": "incoming/cat 1.jpg"`, `"name": 5`),
		wantErr: "payload name is a JSON number, not a string",
	},
	{
		name:    "payload contentType is an object",
		attrs:   gcsAttrs("OBJECT_FINALIZE", key, gen),
		payload: replace(gcsPayload(key, gen), `"contentType": "image/jpeg"`, `"contentType": {"a": 1}`),
		wantErr: "payload contentType is a JSON object, not a string",
	},
	{
		name:    "missing bucket",
		attrs:   with(gcsAttrs("OBJECT_FINALIZE", key, gen), "payloadFormat", "NONE", "bucketId", absent),
		wantErr: "missing bucketId attribute",
	},
	{
		name:    "empty bucket",
		attrs:   with(gcsAttrs("OBJECT_FINALIZE", key, gen), "bucketId", ""),
		payload: replace(gcsPayload(key, gen), `"bucket": "acme-raw"`, `"bucket": ""`),
		wantErr: "missing bucketId attribute",
	},
	{
		name:    "bucket disagrees",
		attrs:   with(gcsAttrs("OBJECT_FINALIZE", key, gen), "bucketId", "acme-other"),
		payload: gcsPayload(key, gen),
		wantErr: `bucketId attribute "acme-other" disagrees with payload bucket "acme-raw"`,
	},
	{
		name:    "missing key",
		attrs:   with(gcsAttrs("OBJECT_FINALIZE", key, gen), "payloadFormat", "NONE", "objectId", absent),
		wantErr: "missing objectId attribute",
	},
	{
		name:    "empty key",
		attrs:   gcsAttrs("OBJECT_FINALIZE", "", gen),
		payload: gcsPayload("", gen),
		wantErr: "missing objectId attribute",
	},
	{
		name:    "key disagrees",
		attrs:   gcsAttrs("OBJECT_FINALIZE", "incoming/dog.jpg", gen),
		payload: gcsPayload(key, gen),
		wantErr: `objectId attribute "incoming/dog.jpg" disagrees with payload name "incoming/cat 1.jpg"`,
	},
	{
		name:    "key too long",
		attrs:   gcsAttrs("OBJECT_FINALIZE", key1024+"x", gen),
		payload: gcsPayload(key1024+"x", gen),
		wantErr: "objectId is 1025 bytes, longer than 1024",
	},
	{
		name:    "key not utf-8",
		attrs:   with(gcsAttrs("OBJECT_FINALIZE", "bad\xff.jpg", gen), "payloadFormat", "NONE"),
		wantErr: `objectId "bad\xff.jpg" is not valid UTF-8`,
	},
	{
		name:    "key with line feed",
		attrs:   gcsAttrs("OBJECT_FINALIZE", "a\nb.jpg", gen),
		payload: gcsPayload("a\nb.jpg", gen),
		wantErr: `objectId "a\nb.jpg" contains a carriage return or line feed`,
	},
	{
		name:    "key with carriage return",
		attrs:   with(gcsAttrs("OBJECT_FINALIZE", "a\rb.jpg", gen), "payloadFormat", "NONE"),
		wantErr: `objectId "a\rb.jpg" contains a carriage return or line feed`,
	},
	{
		name:    "missing generation",
		attrs:   with(gcsAttrs("OBJECT_FINALIZE", key, gen), "payloadFormat", "NONE", "objectGeneration", absent),
		wantErr: "missing objectGeneration attribute",
	},
	{
		name:    "zero generation",
		attrs:   gcsAttrs("OBJECT_FINALIZE", key, "0"),
		payload: gcsPayload(key, gen),
		wantErr: `objectGeneration "0" is not a positive integer`,
	},
	{
		name:    "negative generation",
		attrs:   gcsAttrs("OBJECT_FINALIZE", key, "-5"),
		payload: gcsPayload(key, gen),
		wantErr: `objectGeneration "-5" is not a positive integer`,
	},
	{
		name:    "signed generation",
		attrs:   gcsAttrs("OBJECT_FINALIZE", key, "+5"),
		payload: gcsPayload(key, gen),
		wantErr: `objectGeneration "+5" is not a positive integer`,
	},
	{
		name:    "non-numeric generation",
		attrs:   gcsAttrs("OBJECT_FINALIZE", key, "abc"),
		payload: gcsPayload(key, gen),
		wantErr: `objectGeneration "abc" is not a positive integer`,
	},
	{
		name:    "generation overflows int64",
		attrs:   with(gcsAttrs("OBJECT_FINALIZE", key, "9223372036854775808"), "payloadFormat", "NONE"),
		wantErr: `objectGeneration "9223372036854775808" is not a positive integer`,
	},
	{
		name:    "generation disagrees",
		attrs:   gcsAttrs("OBJECT_FINALIZE", key, gen2),
		payload: gcsPayload(key, gen),
		wantErr: `objectGeneration attribute "` + gen2 + `" disagrees with payload generation "` + gen + `"`,
	},
	{
		name:    "payload generation not numeric",
		attrs:   with(gcsAttrs("OBJECT_FINALIZE", key, gen), "objectGeneration", absent),
		payload: replace(gcsPayload(key, gen), `"generation": "`+gen+`"`, `"generation": "12ab"`),
		wantErr: `payload generation "12ab" is not a positive integer`,
	},
	{
		name:    "payload generation fractional",
		attrs:   gcsAttrs("OBJECT_FINALIZE", key, gen),
		payload: replace(gcsPayload(key, gen), `"generation": "`+gen+`"`, `"generation": 1.5`),
		wantErr: `payload generation "1.5" is not a positive integer`,
	},
	{
		name:    "payload generation boolean",
		attrs:   gcsAttrs("OBJECT_FINALIZE", key, gen),
		payload: replace(gcsPayload(key, gen), `"generation": "`+gen+`"`, `"generation": true`),
		wantErr: `payload generation "true" is not a positive integer`,
	},
	{
		name:    "zero overwroteGeneration",
		attrs:   with(gcsAttrs("OBJECT_FINALIZE", key, gen), "overwroteGeneration", "0"),
		payload: gcsPayload(key, gen),
		wantErr: `overwroteGeneration "0" is not a positive integer`,
	},
	{
		name:    "non-numeric overwroteGeneration",
		attrs:   with(gcsAttrs("OBJECT_FINALIZE", key, gen), "overwroteGeneration", "latest"),
		payload: gcsPayload(key, gen),
		wantErr: `overwroteGeneration "latest" is not a positive integer`,
	},
	{
		name:    "negative overwrittenByGeneration",
		attrs:   with(gcsAttrs("OBJECT_DELETE", key, gen), "overwrittenByGeneration", "-3"),
		payload: gcsPayload(key, gen),
		wantErr: `overwrittenByGeneration "-3" is not a positive integer`,
	},
	{
		name:    "negative size",
		attrs:   gcsAttrs("OBJECT_FINALIZE", key, gen),
		payload: replace(gcsPayload(key, gen), `"size": "48213"`, `"size": "-1"`),
		wantErr: `payload size "-1" is not a non-negative integer`,
	},
	{
		name:    "non-numeric size",
		attrs:   gcsAttrs("OBJECT_FINALIZE", key, gen),
		payload: replace(gcsPayload(key, gen), `"size": "48213"`, `"size": "48 kB"`),
		wantErr: `payload size "48 kB" is not a non-negative integer`,
	},
	{
		name:    "fractional size",
		attrs:   gcsAttrs("OBJECT_FINALIZE", key, gen),
		payload: replace(gcsPayload(key, gen), `"size": "48213"`, `"size": 4.8e4`),
		wantErr: `payload size "4.8e4" is not a non-negative integer`,
	},
	{
		name:    "unparsable eventTime",
		attrs:   with(gcsAttrs("OBJECT_FINALIZE", key, gen), "eventTime", "2026-11-27 14:30:03"),
		payload: gcsPayload(key, gen),
		wantErr: `eventTime "2026-11-27 14:30:03" is not an RFC 3339 time`,
	},
	{
		name:    "missing eventTime without payload",
		attrs:   with(gcsAttrs("OBJECT_FINALIZE", key, gen), "payloadFormat", "NONE", "eventTime", absent),
		wantErr: "missing eventTime attribute",
	},
	{
		name:    "missing eventTime, payload without times",
		attrs:   with(fakeAttrs("OBJECT_FINALIZE", key, "3"), "eventTime", absent),
		payload: `{"name":"incoming/cat 1.jpg","bucket":"acme-raw","generation":"3"}`,
		wantErr: "missing eventTime attribute",
	},
	{
		name:    "unparsable updated",
		attrs:   gcsAttrs("OBJECT_FINALIZE", key, gen),
		payload: replace(gcsPayload(key, gen), `"updated": "2026-11-27T14:30:03.098Z"`, `"updated": "yesterday"`),
		wantErr: `payload updated "yesterday" is not an RFC 3339 time`,
	},
	{
		name:    "unparsable timeCreated when needed",
		attrs:   with(gcsAttrs("OBJECT_FINALIZE", key, gen), "eventTime", absent),
		payload: replace(replace(gcsPayload(key, gen), `"updated": "2026-11-27T14:30:03.098Z",`, ``), `"timeCreated": "2026-11-27T14:29:01.532Z"`, `"timeCreated": "1764253803"`),
		wantErr: `payload timeCreated "1764253803" is not an RFC 3339 time`,
	},
}

func TestDecode(t *testing.T) {
	t.Parallel()
	for _, tt := range decodeTests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			got, err := events.Decode(tt.attrs, []byte(tt.payload))
			if tt.wantErr != "" {
				if !errors.Is(err, events.ErrMalformed) {
					t.Fatalf("Decode() error = %v, want one wrapping ErrMalformed", err)
				}
				if !strings.Contains(err.Error(), tt.wantErr) {
					t.Errorf("Decode() error = %q, want it to contain %q", err, tt.wantErr)
				}
				if !strings.HasPrefix(err.Error(), "events: ") || strings.ContainsAny(err.Error(), "\r\n") {
					t.Errorf("Decode() error = %q, want one line starting with %q", err, "events: ")
				}
				if got != (events.Object{}) {
					t.Errorf("Decode() on error = %+v, want the zero Object", got)
				}
				return
			}
			if err != nil {
				t.Fatalf("Decode() error = %v, want nil", err)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("Decode() mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

func TestDecodeLongValuesAreCutInErrors(t *testing.T) {
	t.Parallel()
	long := strings.Repeat("日", 500)
	_, err := events.Decode(gcsAttrs("OBJECT_FINALIZE", key, long), nil)
	if !errors.Is(err, events.ErrMalformed) {
		t.Fatalf("Decode() error = %v, want one wrapping ErrMalformed", err)
	}
	if got, max := len(err.Error()), 200; got > max {
		t.Errorf("len(Decode() error) = %d, want at most %d: %q", got, max, err)
	}
}

func TestObjectPredicates(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name                   string
		obj                    events.Object
		realDelete, overwrites bool
	}{
		{"finalize", events.Object{EventType: events.Finalize}, false, false},
		{"finalize overwrote", events.Object{EventType: events.Finalize, OverwroteGeneration: 1}, false, true},
		{"delete", events.Object{EventType: events.Delete}, true, false},
		{"delete overwritten", events.Object{EventType: events.Delete, OverwrittenByGeneration: 2}, false, true},
		{"archive", events.Object{EventType: events.Archive}, true, false},
		{"archive overwritten", events.Object{EventType: events.Archive, OverwrittenByGeneration: 2}, false, true},
		{"metadata update", events.Object{EventType: events.MetadataUpdate}, false, false},
		// The generation fields only mean an overwrite on the matching event.
		{"finalize with overwrittenBy", events.Object{EventType: events.Finalize, OverwrittenByGeneration: 2}, false, false},
		{"delete with overwrote", events.Object{EventType: events.Delete, OverwroteGeneration: 1}, true, false},
		{"metadata update with both", events.Object{EventType: events.MetadataUpdate, OverwroteGeneration: 1, OverwrittenByGeneration: 2}, false, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if got := tt.obj.IsRealDelete(); got != tt.realDelete {
				t.Errorf("IsRealDelete() = %v, want %v", got, tt.realDelete)
			}
			if got := tt.obj.IsOverwrite(); got != tt.overwrites {
				t.Errorf("IsOverwrite() = %v, want %v", got, tt.overwrites)
			}
		})
	}
}

// fuzzAttrs are the attributes FuzzDecode varies, in argument order.
var fuzzAttrs = [...]string{
	"eventType", "payloadFormat", "bucketId", "objectId", "objectGeneration",
	"eventTime", "overwroteGeneration", "overwrittenByGeneration",
}

func FuzzDecode(f *testing.F) {
	for _, tt := range decodeTests {
		var a [len(fuzzAttrs)]string
		for i, name := range fuzzAttrs {
			a[i] = tt.attrs[name]
		}
		f.Add(a[0], a[1], a[2], a[3], a[4], a[5], a[6], a[7], []byte(tt.payload))
	}
	f.Fuzz(func(t *testing.T, eventType, payloadFormat, bucketID, objectID, objectGeneration, eventTime, overwrote, overwrittenBy string, payload []byte) {
		vals := [...]string{eventType, payloadFormat, bucketID, objectID, objectGeneration, eventTime, overwrote, overwrittenBy}
		attrs := make(map[string]string, len(vals))
		for i, v := range vals {
			attrs[fuzzAttrs[i]] = v
		}
		got, err := events.Decode(attrs, payload)
		if err != nil {
			if !errors.Is(err, events.ErrMalformed) {
				t.Fatalf("Decode() error = %v, want one wrapping ErrMalformed", err)
			}
			if got != (events.Object{}) {
				t.Fatalf("Decode() on error = %+v, want the zero Object", got)
			}
			// The message becomes a dead-letter reason: one line.
			if strings.ContainsAny(err.Error(), "\r\n") {
				t.Fatalf("Decode() error = %q, want one line", err)
			}
			return
		}
		if got.Bucket == "" || got.Key == "" || got.Generation <= 0 {
			t.Fatalf("Decode() = %+v, want non-empty Bucket and Key and Generation > 0", got)
		}
		if len(got.Key) > 1024 || !utf8.ValidString(got.Key) || strings.ContainsAny(got.Key, "\r\n") {
			t.Fatalf("Decode() Key = %q, want valid UTF-8 of at most 1024 bytes without CR or LF", got.Key)
		}
		if got.EventType != events.EventType(eventType) {
			t.Fatalf("Decode() EventType = %q, want the attribute %q", got.EventType, eventType)
		}
		// Attributes are authoritative.
		if bucketID != "" && got.Bucket != bucketID {
			t.Fatalf("Decode() Bucket = %q, want the attribute %q", got.Bucket, bucketID)
		}
		if objectID != "" && got.Key != objectID {
			t.Fatalf("Decode() Key = %q, want the attribute %q", got.Key, objectID)
		}
		if got.Size < -1 || got.OverwroteGeneration < 0 || got.OverwrittenByGeneration < 0 {
			t.Fatalf("Decode() = %+v, want Size >= -1 and generations >= 0", got)
		}
		if got.EventTime.Location() != time.UTC {
			t.Fatalf("Decode() EventTime = %v, want a UTC time", got.EventTime)
		}
		if got.IsRealDelete() && got.IsOverwrite() {
			t.Fatalf("Decode() = %+v is both a real delete and an overwrite", got)
		}
		again, err := events.Decode(attrs, payload)
		if err != nil || again != got {
			t.Fatalf("second Decode() = %+v, %v, want %+v, nil", again, err, got)
		}
	})
}

func BenchmarkDecode(b *testing.B) {
	attrs := with(gcsAttrs("OBJECT_FINALIZE", key, gen), "overwroteGeneration", gen2)
	payload := []byte(gcsPayload(key, gen))
	b.SetBytes(int64(len(payload)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := events.Decode(attrs, payload); err != nil {
			b.Fatal(err)
		}
	}
	perOp := float64(b.Elapsed()) / float64(b.N)

	// Baselines, timed by hand so their allocations stay out of the
	// report: json.Valid is the floor for any decoder that reads the whole
	// payload; a map[string]any is what a naive decoder would do.
	valid := timePerOp(b.N, func() { json.Valid(payload) })
	naive := timePerOp(b.N, func() {
		var m map[string]any
		if err := json.Unmarshal(payload, &m); err != nil {
			b.Fatal(err)
		}
	})
	b.ReportMetric(perOp/valid, "x-json-valid")
	b.ReportMetric(perOp/naive, "x-json-map")
}

func timePerOp(n int, f func()) float64 {
	start := time.Now()
	for range n {
		f()
	}
	return float64(time.Since(start)) / float64(n)
}

func TestDecodeAttributesSkipsOnlyWhatAttributesGive(t *testing.T) {
	t.Parallel()
	attrs := map[string]string{
		"eventType": "OBJECT_FINALIZE", "payloadFormat": "JSON_API_V1", "bucketId": "b",
		"objectId": "k 1.jpg", "objectGeneration": "7", "eventTime": "2026-11-27T14:30:03.098123Z",
	}
	payload := []byte(`{"kind": "storage#object", "name": "k 1.jpg", "bucket": "b", "generation": "7", "size": "12"}`)
	got, err := events.DecodeAttributes(attrs, payload)
	if err != nil {
		t.Fatal(err)
	}
	full, err := events.Decode(attrs, payload)
	if err != nil {
		t.Fatal(err)
	}
	if got.Bucket != full.Bucket || got.Key != full.Key || got.Generation != full.Generation || !got.EventTime.Equal(full.EventTime) || got.EventType != full.EventType {
		t.Fatalf("DecodeAttributes = %+v, Decode = %+v", got, full)
	}
	for _, bad := range []string{"{not json", "[1]", `"s"`, "{\"a\":1}x"} {
		if _, err := events.DecodeAttributes(attrs, []byte(bad)); !errors.Is(err, events.ErrMalformed) {
			t.Errorf("payload %q: err = %v, want events.ErrMalformed", bad, err)
		}
	}
	// Without the attributes it decodes the payload, like Decode.
	partial := map[string]string{"eventType": "OBJECT_FINALIZE", "eventTime": "2026-11-27T14:30:03Z"}
	o, err := events.DecodeAttributes(partial, payload)
	if err != nil || o.Key != "k 1.jpg" || o.Size != 12 {
		t.Fatalf("partial attributes: %+v, %v", o, err)
	}
}
