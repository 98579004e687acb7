package events

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"time"
)

// validObjectCases are the interesting inputs, each checked against
// json.Valid; they also seed FuzzValidObject.
var validObjectCases = []string{
	`{}`, ` {} `, "\t\r\n{}\n", `{"a":1}`, `{"a" : [1, 2.5, -0, 1e5, 1E+5, 2e-3, true, false, null, "x", {}, []]}`,
	`{"k":"\u00e9\ud83d\ude00 \"\\\/\b\f\n\r\t"}`, `{"a":{"b":{"c":[[[]]]}}}`,
	`{"size":"12345","name":"a b#?%.jpg","metadata":{"x":"y"}}`,
	"{\"bad utf8\":\"\xff\xfe\"}", // json.Valid does not check UTF-8
	``, ` `, `[]`, `"s"`, `1`, `null`, `{`, `}`, `{"a"}`, `{"a":}`, `{"a":1,}`, `{,}`, `{"a":1 "b":2}`,
	`{"a":[1,]}`, `{"a":[,1]}`, `{"a":01}`, `{"a":-}`, `{"a":1.}`, `{"a":.5}`, `{"a":1e}`, `{"a":+1}`,
	`{"a":tru}`, `{"a":nul}`, `{"a":True}`, `{"a":"\x"}`, `{"a":"\u12"}`, `{"a":"\u12g4"}`,
	"{\"a\":\"\x01\"}", "{\"a\":\"\t\"}", `{"a":"unterminated}`, `{"a":1}x`, `{"a":1}{}`, `{"a":1]`,
	`{"a":[1}`, `{1:2}`, `{'a':1}`, "\v{}", "{}\x00",
	`{"a":` + strings.Repeat("[", maxDepth-1) + strings.Repeat("]", maxDepth-1) + `}`,
	`{"a":` + strings.Repeat("[", maxDepth) + strings.Repeat("]", maxDepth) + `}`,
}

func TestValidObjectAgreesWithEncodingJSON(t *testing.T) {
	t.Parallel()
	for _, in := range validObjectCases {
		if got, want := validObject([]byte(in)), wantValidObject([]byte(in)); got != want {
			t.Errorf("validObject(%.60q) = %v, want %v (json.Valid)", in, got, want)
		}
	}
}

// wantValidObject is what validObject must say: json.Valid, and the value
// is an object.
func wantValidObject(b []byte) bool {
	t := bytes.TrimLeft(b, " \t\r\n")
	return json.Valid(b) && len(t) > 0 && t[0] == '{'
}

func FuzzValidObject(f *testing.F) {
	for _, in := range validObjectCases {
		f.Add([]byte(in))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		if got, want := validObject(b), wantValidObject(b); got != want {
			t.Fatalf("validObject(%q) = %v, json.Valid says %v", b, got, want)
		}
	})
}

func BenchmarkValidObject(b *testing.B) {
	payload := []byte(`{"kind":"storage#object","id":"bench-raw/incoming/abcdefgh-00001.jpg/1764253803098123","selfLink":"https://www.googleapis.com/storage/v1/b/bench-raw/o/incoming%2Fabcdefgh-00001.jpg","name":"incoming/abcdefgh-00001.jpg","bucket":"bench-raw","generation":"1764253803098123","metageneration":"1","contentType":"image/jpeg","timeCreated":"2026-11-27T14:30:03.098Z","updated":"2026-11-27T14:30:03.098Z","storageClass":"STANDARD","timeStorageClassUpdated":"2026-11-27T14:30:03.098Z","size":"12345","md5Hash":"XrY7u+Ae7tCTyyK7j1rNww==","mediaLink":"https://storage.googleapis.com/download/storage/v1/b/bench-raw/o/incoming%2Fabcdefgh-00001.jpg?generation=1764253803098123&alt=media","crc32c":"yZRlqg==","etag":"CIvX2+Xb8YkDEAE="}`)
	b.SetBytes(int64(len(payload)))
	for b.Loop() {
		if !validObject(payload) {
			b.Fatal("invalid")
		}
	}
	perOp := float64(b.Elapsed()) / float64(b.N)
	// The baseline it replaces, timed by hand in the same run.
	start := time.Now()
	for range b.N {
		json.Valid(payload)
	}
	b.ReportMetric(float64(time.Since(start))/float64(b.N)/perOp, "x-faster-than-json.Valid")
}
