package resolve

import (
	"encoding/base64"
	"fmt"
	"strings"
	"testing"
)

func b64(s string) string    { return base64.URLEncoding.EncodeToString([]byte(s)) }
func b64raw(s string) string { return base64.RawURLEncoding.EncodeToString([]byte(s)) }

func TestParseFileURI(t *testing.T) {
	t.Parallel()
	ok := []struct {
		in          string
		bucket, key string
	}{
		{"gs://acme-raw/incoming/cat 1.jpg", "acme-raw", "incoming/cat 1.jpg"},
		{b64("gs://acme-raw/incoming/cat 1.jpg"), "acme-raw", "incoming/cat 1.jpg"},
		{b64raw("gs://acme-raw/incoming/cat 1.jpg"), "acme-raw", "incoming/cat 1.jpg"},
		// Task events carry raw names: what looks like an escape is part
		// of the name and stays so.
		{"gs://acme-raw/incoming/100%20off.jpg", "acme-raw", "incoming/100%20off.jpg"},
		{"gs://acme-raw/a/b?c#d.jpg", "acme-raw", "a/b?c#d.jpg"},
		{"gs://acme-raw/ünïcödé/猫.png", "acme-raw", "ünïcödé/猫.png"},
		{"gs://acme-raw/a..b/.hidden/...", "acme-raw", "a..b/.hidden/..."},
		{"gs://acme-raw/x", "acme-raw", "x"},
		{"gs://a.b_c-d/x", "a.b_c-d", "x"},
	}
	for _, c := range ok {
		bucket, key, err := ParseFileURI(c.in)
		if err != nil || bucket != c.bucket || key != c.key {
			t.Errorf("ParseFileURI(%q) = %q, %q, %v; want %q, %q", c.in, bucket, key, err, c.bucket, c.key)
		}
	}

	bad := []string{
		"", "gs://", "gs://acme-raw", "gs://acme-raw/", "gs:///key",
		"GS://acme-raw/x", "s3://acme-raw/x", "https://storage.googleapis.com/acme-raw/x",
		"http://acme-raw/x", "file:///etc/passwd", "acme-raw/x", "/acme-raw/x",
		"gs://Acme/x", "gs://ab/x", "gs://acme raw/x", "gs://acme%2Fraw/x",
		// segments
		"gs://acme-raw/incoming/../secret/x", "gs://acme-raw/../x", "gs://acme-raw/./x",
		"gs://acme-raw/incoming/.", "gs://acme-raw/incoming/..", "gs://acme-raw/incoming//x",
		"gs://acme-raw//x", "gs://acme-raw/incoming/", "gs://acme-raw/..",
		// encoded separators and double encoding, any case
		"gs://acme-raw/incoming%2F..%2Fsecret", "gs://acme-raw/incoming%2f..%2fsecret",
		"gs://acme-raw/incoming/%2E%2E/secret", "gs://acme-raw/incoming/%2e./x",
		"gs://acme-raw/incoming%252F..%252Fsecret", "gs://acme-raw/a%5Cb", "gs://acme-raw/a%5cb",
		"gs://acme-raw/%25", "gs://acme-raw/a%%2F",
		// backslashes, controls, invalid UTF-8
		`gs://acme-raw/incoming\..\secret`, "gs://acme-raw/a\x00b", "gs://acme-raw/a\nb",
		"gs://acme-raw/a\x7fb", "gs://acme-raw/a\u0085b", "gs://acme-raw/a\xffb",
		"gs://acme-raw/" + strings.Repeat("x", maxKeyLen+1),
		// base64 of refused URLs, and base64 that is not URL-safe or not canonical
		b64("gs://acme-raw/../x"), b64("s3://acme-raw/x"), b64("acme-raw/x"),
		base64.StdEncoding.EncodeToString([]byte("gs://acme-raw/??>>")),
		b64raw("gs://acme-raw/x") + "=", b64("gs://acme-raw/xy") + "=", nonCanonical("gs://acme-raw/xy"),
		"not base64 at all", strings.Repeat("A", maxFileURILen+4),
	}
	for _, in := range bad {
		if bucket, key, err := ParseFileURI(in); err == nil {
			t.Errorf("ParseFileURI(%q) = %q, %q; want an error", in, bucket, key)
		}
	}
}

// nonCanonical is s's unpadded base64 with non-zero unused trailing bits:
// the same bytes under lax decoding, refused under strict decoding.
func nonCanonical(s string) string {
	e := []byte(b64raw(s))
	e[len(e)-1]++
	return string(e)
}

func TestHasEncodedSeparator(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]bool{
		"": false, "%": false, "%2": false, "a%2": false, "%2F": true, "a%2fb": true,
		"%20%2E": true, "%41%42": false, "%%25": true, "100%": false, "%5C": true, "%x2F": false,
	} {
		if got := hasEncodedSeparator(in); got != want {
			t.Errorf("hasEncodedSeparator(%q) = %v, want %v", in, got, want)
		}
	}
}

func ExampleParseFileURI() {
	// Label Studio's frontend sends the task's gs:// URL base64-encoded.
	bucket, key, err := ParseFileURI("Z3M6Ly9hY21lLXJhdy9pbmNvbWluZy9jYXQgMS5qcGc=")
	fmt.Println(bucket, key, err)
	_, _, err = ParseFileURI("gs://acme-raw/incoming/%2E%2E/secret.jpg")
	fmt.Println(err != nil)
	// Output:
	// acme-raw incoming/cat 1.jpg <nil>
	// true
}
