package events_test

import (
	"fmt"

	"github.com/labelsync/labelsync/internal/events"
)

func ExampleDecode() {
	// What real GCS publishes when incoming/cat 1.jpg is uploaded over an
	// older generation (payload trimmed to the fields that matter).
	attrs := map[string]string{
		"notificationConfig":  "projects/_/buckets/acme-raw/notificationConfigs/7",
		"eventType":           "OBJECT_FINALIZE",
		"payloadFormat":       "JSON_API_V1",
		"bucketId":            "acme-raw",
		"objectId":            "incoming/cat 1.jpg",
		"objectGeneration":    "1795789803098123",
		"eventTime":           "2026-11-27T14:30:03.098123Z",
		"overwroteGeneration": "1795789741532210",
	}
	payload := []byte(`{"kind": "storage#object",
		"id": "acme-raw/incoming/cat 1.jpg/1795789803098123",
		"name": "incoming/cat 1.jpg", "bucket": "acme-raw",
		"generation": "1795789803098123", "metageneration": "1",
		"contentType": "image/jpeg", "size": "48213",
		"timeCreated": "2026-11-27T14:30:03.098Z",
		"updated": "2026-11-27T14:30:03.098Z"}`)

	obj, err := events.Decode(attrs, payload)
	if err != nil {
		// Every error wraps events.ErrMalformed: dead-letter, do not retry.
		fmt.Println(err)
		return
	}
	fmt.Println(obj.EventType, obj.Bucket, obj.Key)
	fmt.Println("generation", obj.Generation, "overwrote", obj.OverwroteGeneration)
	fmt.Println("size", obj.Size, obj.ContentType)
	fmt.Println("event time", obj.EventTime.Format("2006-01-02T15:04:05.000000Z07:00"))
	fmt.Println("overwrite", obj.IsOverwrite(), "real delete", obj.IsRealDelete())
	// Output:
	// OBJECT_FINALIZE acme-raw incoming/cat 1.jpg
	// generation 1795789803098123 overwrote 1795789741532210
	// size 48213 image/jpeg
	// event time 2026-11-27T14:30:03.098123Z
	// overwrite true real delete false
}
