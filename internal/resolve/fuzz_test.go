package resolve

import (
	"bytes"
	"fmt"
	"net/http"
	"path"
	"strings"
	"testing"
	"unicode/utf8"
)

// FuzzParseFileURI: whatever the input, an accepted fileuri names a key
// that no path-cleaning or decoding layer could read as another object,
// and the same object is named by its canonical and base64 forms.
//
//	go test ./internal/resolve -run '^$' -fuzz FuzzParseFileURI
func FuzzParseFileURI(f *testing.F) {
	for _, s := range []string{
		"gs://acme-raw/incoming/cat 1.jpg",
		b64("gs://acme-raw/incoming/cat 1.jpg"),
		b64raw("gs://acme-raw/incoming/cat 1.jpg"),
		"gs://acme-raw/incoming/%2E%2E/x",
		"gs://acme-raw/incoming%252F..%252Fx",
		"gs://acme-raw/incoming/../x",
		"gs://acme-raw/incoming\\..\\x",
		"gs://acme-raw/ｉｎｃｏｍｉｎｇ／．．／x",
		"gs://acme-raw/cafe\u0301.jpg",
		"gs://acme-raw/a\x00b",
		"s3://acme-raw/x",
		"Z3M6Ly9hY21lLXJhdy94",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		bucket, key, err := ParseFileURI(s)
		if err != nil {
			return
		}
		if !validBucket(bucket) || !utf8.ValidString(key) || key == "" || len(key) > maxKeyLen {
			t.Fatalf("accepted bucket %q key %q", bucket, key)
		}
		if strings.ContainsAny(key, "\\\x00") || hasEncodedSeparator(key) {
			t.Fatalf("accepted key %q", key)
		}
		if c := path.Clean("/" + key); c != "/"+key {
			t.Fatalf("accepted key %q, which path cleaning turns into %q", key, c)
		}
		canonical := FileURI(bucket, key)
		if strings.HasPrefix(s, "gs://") && s != canonical {
			t.Fatalf("%q parsed as %q", s, canonical)
		}
		for _, form := range []string{canonical, b64(canonical), b64raw(canonical)} {
			if b, k, err := ParseFileURI(form); err != nil && len(form) <= maxFileURILen || err == nil && (b != bucket || k != key) {
				t.Fatalf("%q: %q, %q, %v; want %q, %q", form, b, k, err, bucket, key)
			}
		}
	})
}

// FuzzServeRange: for any Range and conditional headers on any small
// object, the lazy upstream reader serves exactly what http.ServeContent
// serves from memory, asks upstream for no byte it does not send, and
// answers only 200, 206, 304, 412 or 416, each well-formed.
//
//	go test ./internal/resolve -run '^$' -fuzz FuzzServeRange
func FuzzServeRange(f *testing.F) {
	for _, c := range []struct {
		size         uint16
		rng, ifRange string
		ifNoneMatch  string
	}{
		{1000, "bytes=0-99", "", ""},
		{1000, "bytes=-10", "", ""},
		{1000, "bytes=990-", "", ""},
		{1000, "bytes=1000-", "", ""},
		{1000, "bytes=-0", "", ""},
		{1000, "bytes=0-9,20-29", "", ""},
		{1000, "bytes=+1-5", "", ""},
		{1000, "bytes=0-9", `"gen1"`, ""},
		{1000, "bytes=0-9", `"gen0"`, ""},
		{1000, "", "", `"gen1"`},
		{0, "bytes=0-", "", ""},
		{0, "bytes=-1", "", ""},
		{1, "bytes=0-0", "", ""},
	} {
		f.Add(c.size, c.rng, c.ifRange, c.ifNoneMatch)
	}
	f.Fuzz(func(t *testing.T, size uint16, rng, ifRange, ifNoneMatch string) {
		size %= 4096
		src := &memObject{size: int64(size)}
		h := http.Header{}
		for k, v := range map[string]string{"Range": rng, "If-Range": ifRange, "If-None-Match": ifNoneMatch} {
			if v != "" {
				h.Set(k, v)
			}
		}
		got, want, err := serveBoth(t, src, h)
		if err != nil {
			t.Fatalf("serveObject: %v", err)
		}
		if err := compare(got, want); err != nil {
			t.Fatal(err)
		}
		body := got.Body.Bytes()
		switch got.Code {
		case http.StatusOK:
			if len(body) != int(size) {
				t.Fatalf("200 with %d of %d bytes", len(body), size)
			}
			checkPattern(t, body, 0)
		case http.StatusPartialContent:
			var start, end, total int64
			if _, err := fmt.Sscanf(got.Header().Get("Content-Range"), "bytes %d-%d/%d", &start, &end, &total); err != nil {
				t.Fatalf("206 Content-Range %q: %v", got.Header().Get("Content-Range"), err)
			}
			if total != int64(size) || start < 0 || end < start || end >= total || int64(len(body)) != end-start+1 {
				t.Fatalf("206 Content-Range %q with %d bytes", got.Header().Get("Content-Range"), len(body))
			}
			checkPattern(t, body, start)
		case http.StatusRequestedRangeNotSatisfiable:
			if cr := got.Header().Get("Content-Range"); cr != fmt.Sprintf("bytes */%d", size) {
				t.Fatalf("416 Content-Range %q", cr)
			}
		case http.StatusNotModified, http.StatusPreconditionFailed:
		default:
			t.Fatalf("status %d", got.Code)
		}
		if got.Code == http.StatusOK || got.Code == http.StatusPartialContent {
			var asked int64
			for _, a := range src.requests() {
				asked += a[1]
			}
			if asked != int64(len(body)) {
				t.Fatalf("asked upstream for %d bytes, sent %d (ranges %v)", asked, len(body), src.requests())
			}
		}
	})
}

func checkPattern(t *testing.T, body []byte, start int64) {
	t.Helper()
	want := make([]byte, len(body))
	for i := range want {
		want[i] = pattern(start + int64(i))
	}
	if !bytes.Equal(body, want) {
		t.Fatalf("body from %d is not the object's bytes", start)
	}
}
