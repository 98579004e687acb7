package resolve

import (
	"net/url"
	"strings"
	"testing"
	"time"
)

const testSecretKey = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=" // 32 bytes, base64

func mustLinks(t testing.TB, key string) *Links {
	t.Helper()
	l, err := NewLinks(key)
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// linkQuery splits a Path into its project path and query.
func linkQuery(t *testing.T, path string) url.Values {
	t.Helper()
	u, err := url.Parse(path)
	if err != nil {
		t.Fatal(err)
	}
	return u.Query()
}

func TestLinks(t *testing.T) {
	t.Parallel()
	l := mustLinks(t, testSecretKey)
	now := time.Unix(1_800_000_000, 0)
	const obj = "gs://acme-raw/incoming/cat 1.jpg"

	path, err := l.Path(7, obj, now.Add(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(path, "/projects/7/resolve/?") {
		t.Fatalf("path %q", path)
	}
	q := linkQuery(t, path)
	if q.Get("fileuri") != obj || q.Get("expires") != "1800003600" || q.Get("sig") == "" {
		t.Fatalf("query %v", q)
	}
	if !l.valid(7, obj, q, now) {
		t.Fatal("a fresh link is not valid")
	}

	forever, err := l.Path(7, b64(obj), time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	fq := linkQuery(t, forever)
	if fq.Has("expires") || fq.Get("fileuri") != obj {
		t.Fatalf("no-expiry link %q: want no expires and the canonical fileuri", forever)
	}
	if !l.valid(7, obj, fq, now.Add(100*365*24*time.Hour)) {
		t.Error("a link without expiry expired")
	}

	with := func(k, v string) url.Values {
		c := url.Values{}
		for kk, vv := range q {
			c[kk] = append([]string(nil), vv...)
		}
		if v == "" {
			c.Del(k)
		} else {
			c.Set(k, v)
		}
		return c
	}
	sig := q.Get("sig")
	flipped := []byte(sig)
	flipped[3] ^= 1
	cases := []struct {
		name    string
		project int64
		obj     string
		q       url.Values
		at      time.Time
		want    bool
	}{
		{"padded signature", 7, obj, with("sig", sig+"="), now, true},
		{"other project", 8, obj, q, now, false},
		{"other object", 7, "gs://acme-raw/incoming/cat 2.jpg", q, now, false},
		{"other bucket", 7, "gs://acme-other/incoming/cat 1.jpg", q, now, false},
		{"expired", 7, obj, q, now.Add(time.Hour), false},
		{"expiry removed", 7, obj, with("expires", ""), now, false},
		{"expiry extended", 7, obj, with("expires", "1900000000"), now, false},
		{"expiry respelled", 7, obj, with("expires", "01800003600"), now, false},
		{"signature changed", 7, obj, with("sig", string(flipped)), now, false},
		{"signature truncated", 7, obj, with("sig", sig[:len(sig)-2]), now, false},
		{"signature missing", 7, obj, with("sig", ""), now, false},
		{"signature of the no-expiry link", 7, obj, with("sig", fq.Get("sig")), now, false},
		{"two signatures", 7, obj, url.Values{"sig": {sig, sig}, "expires": q["expires"]}, now, false},
		{"two expiries", 7, obj, url.Values{"sig": {sig}, "expires": {q.Get("expires"), q.Get("expires")}}, now, false},
	}
	for _, c := range cases {
		if got := l.valid(c.project, c.obj, c.q, c.at); got != c.want {
			t.Errorf("%s: valid = %v, want %v", c.name, got, c.want)
		}
	}

	other := mustLinks(t, "ZmVkY2JhOTg3NjU0MzIxMGZlZGNiYTk4NzY1NDMyMTA=")
	if other.valid(7, obj, q, now) {
		t.Error("a link verified under another LABELSYNC_SECRET_KEY")
	}
	var none *Links
	if none.valid(7, obj, q, now) {
		t.Error("a nil Links accepted a link")
	}
}

func TestLinksRefuse(t *testing.T) {
	t.Parallel()
	for _, key := range []string{"", "%%%%-secret-%%%%", "c2hvcnQ="} {
		if _, err := NewLinks(key); err == nil {
			t.Errorf("NewLinks(%q): no error", key)
		} else if key != "" && strings.Contains(err.Error(), key) {
			t.Errorf("NewLinks error %q repeats the key", err)
		}
	}
	l := mustLinks(t, testSecretKey)
	if _, err := l.Path(7, "gs://acme-raw/../x", time.Time{}); err == nil {
		t.Error("Path signed a refused key")
	}
	if _, err := l.Path(0, "gs://acme-raw/x", time.Time{}); err == nil {
		t.Error("Path signed project 0")
	}
	if s := l.String(); strings.Contains(s, testSecretKey) {
		t.Errorf("String() = %q", s)
	}
}
