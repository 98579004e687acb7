package e2e

import (
	"bytes"
	"crypto"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/labelsync/labelsync/internal/ctl"
	"github.com/labelsync/labelsync/internal/resolve"
)

// The resolver (SPEC §4, issue 12) against a running worker on
// fake-gcs-server. It is HTTP and GCS only, so it runs on pstest alone.

const resolveToken = "s3cret"

// resolveHarness is a worker whose resolver serves project 7's storages:
// 1 streams (presign off), 2 redirects, signing with its own key; 3 is
// project 8's.
func resolveHarness(t *testing.T) (*harness, *runningWorker) {
	t.Helper()
	imports := []map[string]any{
		{"id": 1, "project": 7, "bucket": "acme-raw", "prefix": "incoming", "recursive_scan": true, "use_blob_urls": true, "presign": false},
		{"id": 2, "project": 7, "bucket": "acme-raw", "prefix": "signed/", "use_blob_urls": true, "presign_ttl": 10, "google_application_credentials": markedCreds},
		{"id": 3, "project": 8, "bucket": "acme-raw", "prefix": "other-project", "use_blob_urls": true, "presign": false},
		{"id": 4, "project": 7, "bucket": "acme-raw", "prefix": "flat", "regex_filter": `.*\.txt$`, "use_blob_urls": true, "presign": false},
	}
	file, err := json.Marshal(map[string]any{"import": imports})
	if err != nil {
		t.Fatal(err)
	}
	h := newHarness(t, backends[0], string(file))
	cfg := h.config()
	cfg.APIToken = resolveToken
	cfg.SecretKey = secretKey
	return h, h.startWorkerWith(cfg)
}

// put writes an object with a content type.
func (h *harness) put(bucket, key, contentType string, body []byte) {
	h.t.Helper()
	w := h.gcs.Bucket(bucket).Object(key).NewWriter(h.ctx)
	w.ContentType = contentType
	if _, err := w.Write(body); err != nil {
		h.t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		h.t.Fatalf("put gs://%s/%s: %v", bucket, key, err)
	}
}

type resolved struct {
	code   int
	header http.Header
	body   []byte
}

var noRedirect = &http.Client{
	Timeout:       30 * time.Second,
	CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
}

// resolve requests path (with its query) on the worker.
func (h *harness) resolve(rw *runningWorker, method, path, token string, header http.Header) resolved {
	h.t.Helper()
	req, err := http.NewRequestWithContext(h.ctx, method, "http://"+rw.w.HTTPAddr()+path, nil)
	if err != nil {
		h.t.Fatal(err)
	}
	for k, v := range header {
		req.Header[k] = v
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := noRedirect.Do(req)
	if err != nil {
		h.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		h.t.Fatalf("%s %s: reading the body: %v", method, path, err)
	}
	return resolved{resp.StatusCode, resp.Header, b}
}

func resolvePath(project int64, fileuri string) string {
	return fmt.Sprintf("/projects/%d/resolve/?fileuri=%s", project, url.QueryEscape(fileuri))
}

func patterned(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i*131 + i>>16)
	}
	return b
}

func TestResolver(t *testing.T) {
	t.Parallel()
	h, rw := resolveHarness(t)
	cat := patterned(1000)
	big := patterned(16<<20 + 3)
	h.put("acme-raw", "incoming/cat 1.jpg", "image/jpeg", cat)
	h.put("acme-raw", "incoming/empty.bin", "application/octet-stream", nil)
	h.put("acme-raw", "incoming/big.bin", "application/octet-stream", big)
	h.put("acme-raw", "incoming/café.jpg", "image/jpeg", []byte("nfc"))
	h.put("acme-raw", "incoming/100%41.jpg", "image/jpeg", []byte("literal percent"))
	h.put("acme-raw", "secret/x.jpg", "image/jpeg", []byte("secret"))
	h.put("acme-raw", "incomingx/x.jpg", "image/jpeg", []byte("neighbour"))
	h.put("acme-raw", "flat/a.txt", "text/plain", []byte("a"))
	h.put("acme-raw", "flat/b.jpg", "image/jpeg", []byte("b"))
	h.put("acme-raw", "flat/sub/c.txt", "text/plain", []byte("c"))
	h.put("acme-raw", "other-project/p.jpg", "image/jpeg", []byte("p"))
	h.put("acme-other", "incoming/cat 1.jpg", "image/jpeg", []byte("other bucket"))
	h.put("acme-raw", "signed/dog.png", "image/png", []byte("woof"))
	catURI := "gs://acme-raw/incoming/cat 1.jpg"

	t.Run("authentication", func(t *testing.T) {
		var first []byte
		for _, fileuri := range []string{catURI, "gs://acme-raw/incoming/missing.jpg", "gs://acme-raw/secret/x.jpg", "gs://acme-raw/../x", "junk"} {
			for _, token := range []string{"", "wrong", resolveToken + "x"} {
				r := h.resolve(rw, "GET", resolvePath(7, fileuri), token, nil)
				if r.code != http.StatusUnauthorized {
					t.Errorf("%s with token %q: %d, want 401", fileuri, token, r.code)
				}
				if first == nil {
					first = r.body
				} else if !bytes.Equal(r.body, first) {
					t.Errorf("401 bodies differ: %s / %s", r.body, first)
				}
			}
		}
		for _, path := range []string{"/projects/x/resolve/?fileuri=" + url.QueryEscape(catURI), "/projects/7/resolve/", "/projects/7/resolve"} {
			if r := h.resolve(rw, "GET", path, "", nil); r.code != http.StatusUnauthorized || r.header.Get("WWW-Authenticate") == "" {
				t.Errorf("%s without the token: %d, want 401 with WWW-Authenticate", path, r.code)
			}
		}
	})

	t.Run("proxy", func(t *testing.T) {
		full := h.resolve(rw, "GET", resolvePath(7, catURI), resolveToken, nil)
		if full.code != 200 || !bytes.Equal(full.body, cat) {
			t.Fatalf("GET: %d, %d bytes", full.code, len(full.body))
		}
		for k, want := range map[string]string{"Content-Type": "image/jpeg", "Content-Length": "1000", "Accept-Ranges": "bytes", "Cache-Control": "private, no-cache"} {
			if got := full.header.Get(k); got != want {
				t.Errorf("%s %q, want %q", k, got, want)
			}
		}
		etag, lastMod := full.header.Get("ETag"), full.header.Get("Last-Modified")
		if len(etag) < 3 || etag[0] != '"' || lastMod == "" {
			t.Fatalf("ETag %q, Last-Modified %q", etag, lastMod)
		}
		// Label Studio's base64, padded or not, and the raw URL are one object.
		for _, form := range []string{base64.URLEncoding.EncodeToString([]byte(catURI)), base64.RawURLEncoding.EncodeToString([]byte(catURI))} {
			if r := h.resolve(rw, "GET", resolvePath(7, form), resolveToken, nil); r.code != 200 || !bytes.Equal(r.body, cat) {
				t.Errorf("base64 %s: %d", form, r.code)
			}
		}
		// A name with what looks like an escape is opened as named.
		if r := h.resolve(rw, "GET", resolvePath(7, "gs://acme-raw/incoming/100%41.jpg"), resolveToken, nil); r.code != 200 || string(r.body) != "literal percent" {
			t.Errorf("literal %%41: %d %q", r.code, r.body)
		}
		head := h.resolve(rw, "HEAD", resolvePath(7, catURI), resolveToken, nil)
		if head.code != 200 || len(head.body) != 0 || head.header.Get("Content-Length") != "1000" {
			t.Errorf("HEAD: %d, %d bytes, Content-Length %q", head.code, len(head.body), head.header.Get("Content-Length"))
		}
		for _, c := range []struct {
			name   string
			header http.Header
			code   int
		}{
			{"if-none-match", http.Header{"If-None-Match": {etag}}, 304},
			{"if-none-match, other", http.Header{"If-None-Match": {`"other"`}}, 200},
			{"if-modified-since", http.Header{"If-Modified-Since": {lastMod}}, 304},
			{"if-none-match with range", http.Header{"If-None-Match": {etag}, "Range": {"bytes=0-9"}}, 304},
		} {
			r := h.resolve(rw, "GET", resolvePath(7, catURI), resolveToken, c.header)
			if r.code != c.code {
				t.Errorf("%s: %d, want %d", c.name, r.code, c.code)
			}
			if r.code == 304 && (len(r.body) != 0 || r.header.Get("ETag") != etag) {
				t.Errorf("%s: 304 with %d bytes, ETag %q", c.name, len(r.body), r.header.Get("ETag"))
			}
		}
	})

	t.Run("ranges", func(t *testing.T) {
		type want struct {
			code       int
			start, end int // served bytes [start, end)
		}
		for _, c := range []struct {
			key, rng string
			obj      []byte
			want     want
		}{
			{"incoming/cat 1.jpg", "bytes=0-99", cat, want{206, 0, 100}},
			{"incoming/cat 1.jpg", "bytes=400-409", cat, want{206, 400, 410}},
			{"incoming/cat 1.jpg", "bytes=990-999", cat, want{206, 990, 1000}},
			{"incoming/cat 1.jpg", "bytes=990-", cat, want{206, 990, 1000}},
			{"incoming/cat 1.jpg", "bytes=-10", cat, want{206, 990, 1000}},
			{"incoming/cat 1.jpg", "bytes=-5000", cat, want{206, 0, 1000}},
			{"incoming/cat 1.jpg", "bytes=995-5000", cat, want{206, 995, 1000}},
			{"incoming/cat 1.jpg", "bytes=1000-", cat, want{416, 0, 0}},
			{"incoming/cat 1.jpg", "bytes=-0", cat, want{416, 0, 0}},
			{"incoming/cat 1.jpg", "bytes=0-9,20-29", cat, want{200, 0, 1000}},
			{"incoming/cat 1.jpg", "items=0-9", cat, want{200, 0, 1000}},
			{"incoming/empty.bin", "", nil, want{200, 0, 0}},
			{"incoming/empty.bin", "bytes=0-", nil, want{200, 0, 0}},
			{"incoming/big.bin", "", big, want{200, 0, len(big)}},
			{"incoming/big.bin", "bytes=0-65535", big, want{206, 0, 65536}},
			{"incoming/big.bin", "bytes=8388608-8388707", big, want{206, 8388608, 8388708}},
			{"incoming/big.bin", "bytes=-7", big, want{206, len(big) - 7, len(big)}},
			{"incoming/big.bin", fmt.Sprintf("bytes=%d-", len(big)-100), big, want{206, len(big) - 100, len(big)}},
			{"incoming/big.bin", fmt.Sprintf("bytes=%d-", len(big)), big, want{416, 0, 0}},
		} {
			var hdr http.Header
			if c.rng != "" {
				hdr = http.Header{"Range": {c.rng}}
			}
			r := h.resolve(rw, "GET", resolvePath(7, "gs://acme-raw/"+c.key), resolveToken, hdr)
			if r.code != c.want.code {
				t.Errorf("%s %s: %d, want %d", c.key, c.rng, r.code, c.want.code)
				continue
			}
			switch r.code {
			case 206:
				cr := fmt.Sprintf("bytes %d-%d/%d", c.want.start, c.want.end-1, len(c.obj))
				if r.header.Get("Content-Range") != cr {
					t.Errorf("%s %s: Content-Range %q, want %q", c.key, c.rng, r.header.Get("Content-Range"), cr)
				}
				fallthrough
			case 200:
				if !bytes.Equal(r.body, c.obj[c.want.start:c.want.end]) || r.header.Get("Content-Length") != strconv.Itoa(c.want.end-c.want.start) {
					t.Errorf("%s %s: %d bytes (Content-Length %s), want bytes %d-%d", c.key, c.rng, len(r.body), r.header.Get("Content-Length"), c.want.start, c.want.end)
				}
			case 416:
				if cr := r.header.Get("Content-Range"); cr != fmt.Sprintf("bytes */%d", len(c.obj)) {
					t.Errorf("%s %s: 416 Content-Range %q", c.key, c.rng, cr)
				}
			}
		}
	})

	t.Run("confinement", func(t *testing.T) {
		// The answer for a missing object inside a storage is the answer
		// for everything outside: the same status and body.
		missing := h.resolve(rw, "GET", resolvePath(7, "gs://acme-raw/incoming/missing.jpg"), resolveToken, nil)
		if missing.code != 404 {
			t.Fatalf("missing object: %d", missing.code)
		}
		nfd := "gs://acme-raw/incoming/cafe\u0301.jpg" // stored as NFC
		for _, path := range []string{
			resolvePath(7, "gs://acme-other/incoming/cat 1.jpg"),         // other bucket
			resolvePath(7, "gs://acme-raw/secret/x.jpg"),                 // outside the prefix
			resolvePath(7, "gs://acme-raw/incomingx/x.jpg"),              // prefix is a folder, not a string prefix
			resolvePath(7, "gs://acme-raw/incoming/../secret/x.jpg"),     // prefix escape
			resolvePath(7, "gs://acme-raw/incoming/./cat 1.jpg"),         // dot segment
			resolvePath(7, "gs://acme-raw/incoming//cat 1.jpg"),          // empty segment
			resolvePath(7, "gs://acme-raw/incoming%2F..%2Fsecret/x.jpg"), // encoded slash, as the name
			resolvePath(7, "gs://acme-raw/incoming%2F%2E%2E%2Fsecret%2Fx.jpg"),
			"/projects/7/resolve/?fileuri=gs://acme-raw/incoming%252F..%252Fsecret%252Fx.jpg", // double encoding
			"/projects/7/resolve/?fileuri=gs://acme-raw/incoming/%252E%252E/secret/x.jpg",
			"/projects/7/resolve/?fileuri=gs%3A%2F%2Facme-raw%2Fsecret%2Fx.jpg",          // encoded once: outside
			resolvePath(7, `gs://acme-raw/incoming\..\secret\x.jpg`),                     // backslashes
			resolvePath(7, "gs://acme-raw/incoming/\uff0e\uff0e\uff0fsecret\uff0fx.jpg"), // fullwidth ．．／
			resolvePath(7, nfd), // another normalisation: another (missing) object
			resolvePath(7, "gs://acme-raw/incoming/cat 1.jpg\x00.png"), // NUL
			resolvePath(7, "gs://acme-raw/flat/sub/c.txt"),             // not recursive
			resolvePath(7, "gs://acme-raw/flat/b.jpg"),                 // regex filter
			resolvePath(7, "gs://acme-raw/other-project/p.jpg"),        // project 8's storage
			resolvePath(9, catURI),                                     // a project without storages
			resolvePath(7, "s3://acme-raw/incoming/cat 1.jpg"),         // other schemes
			resolvePath(7, "https://storage.googleapis.com/acme-raw/incoming/cat%201.jpg"),
			resolvePath(7, "file:///etc/passwd"),
			resolvePath(7, "GS://acme-raw/incoming/cat 1.jpg"),
			resolvePath(7, base64.StdEncoding.EncodeToString([]byte("gs://acme-raw/secret/x.jpg"))),
			"/projects/7/resolve/",
			"/projects/7/resolve/?fileuri=" + url.QueryEscape(catURI) + "&fileuri=" + url.QueryEscape(catURI),
			"/projects/x/resolve/?fileuri=" + url.QueryEscape(catURI),
		} {
			r := h.resolve(rw, "GET", path, resolveToken, nil)
			if r.code != 404 || !bytes.Equal(r.body, missing.body) {
				t.Errorf("%s: %d %q, want 404 %q", path, r.code, r.body, missing.body)
			}
		}
		// Each project opens its own storages, and the NFC name as stored.
		if r := h.resolve(rw, "GET", resolvePath(8, "gs://acme-raw/other-project/p.jpg"), resolveToken, nil); r.code != 200 {
			t.Errorf("project 8's object: %d", r.code)
		}
		if r := h.resolve(rw, "GET", resolvePath(7, "gs://acme-raw/incoming/café.jpg"), resolveToken, nil); r.code != 200 || string(r.body) != "nfc" {
			t.Errorf("NFC name: %d", r.code)
		}
		if r := h.resolve(rw, "GET", resolvePath(7, "gs://acme-raw/flat/a.txt"), resolveToken, nil); r.code != 200 {
			t.Errorf("flat/a.txt: %d", r.code)
		}
	})

	t.Run("presign", func(t *testing.T) {
		r := h.resolve(rw, "GET", resolvePath(7, "gs://acme-raw/signed/dog.png"), resolveToken, nil)
		loc := r.header.Get("Location")
		if r.code != http.StatusSeeOther || r.header.Get("Cache-Control") != "no-store" || loc == "" {
			t.Fatalf("presign: %d, Cache-Control %q, Location %q", r.code, r.header.Get("Cache-Control"), loc)
		}
		checkSignedURL(t, loc, "acme-raw", "signed/dog.png", 10*time.Minute)
		resp, err := http.Get(loc)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != 200 || string(body) != "woof" {
			t.Fatalf("fetching the signed URL from fake-gcs-server: %d %q", resp.StatusCode, body)
		}
		// Inside the storage but missing: redirected all the same (GCS
		// answers 404), so presign tells nothing either.
		if r := h.resolve(rw, "GET", resolvePath(7, "gs://acme-raw/signed/missing.png"), resolveToken, nil); r.code != http.StatusSeeOther {
			t.Errorf("missing object in a presign storage: %d", r.code)
		}
	})

	t.Run("signed links", func(t *testing.T) {
		code, out := h.api(rw, "POST", "/api/resolve/sign", resolveToken, `{"project": 7, "fileuri": "gs://acme-raw/incoming/cat 1.jpg", "ttl_seconds": 600}`)
		link, _ := out["url"].(string)
		if code != 200 || !strings.HasPrefix(link, "/projects/7/resolve/?") {
			t.Fatalf("sign: %d %v", code, out)
		}
		if r := h.resolve(rw, "GET", link, "", nil); r.code != 200 || !bytes.Equal(r.body, cat) {
			t.Fatalf("signed link: %d", r.code)
		}
		if r := h.resolve(rw, "GET", link, "", http.Header{"Range": {"bytes=0-9"}}); r.code != 206 {
			t.Errorf("signed link with a range: %d", r.code)
		}
		u, _ := url.Parse(link)
		q := u.Query()
		tamper := func(k, v string) string {
			c := url.Values{}
			for kk, vv := range q {
				c[kk] = vv
			}
			c.Set(k, v)
			return u.Path + "?" + c.Encode()
		}
		sig := []byte(q.Get("sig"))
		sig[0] ^= 1
		links, err := resolve.NewLinks(secretKey)
		if err != nil {
			t.Fatal(err)
		}
		expired, err := links.Path(7, catURI, time.Now().Add(-time.Second))
		if err != nil {
			t.Fatal(err)
		}
		for name, path := range map[string]string{
			"changed signature":     tamper("sig", string(sig)),
			"other object":          tamper("fileuri", "gs://acme-raw/incoming/big.bin"),
			"outside object":        tamper("fileuri", "gs://acme-raw/secret/x.jpg"),
			"extended expiry":       tamper("expires", strconv.FormatInt(time.Now().Add(time.Hour).Unix(), 10)),
			"other project":         strings.Replace(link, "/projects/7/", "/projects/8/", 1),
			"expired":               expired,
			"no signature":          resolvePath(7, catURI),
			"signature only":        "/projects/7/resolve/?sig=" + q.Get("sig"),
			"expiry removed":        u.Path + "?fileuri=" + url.QueryEscape(q.Get("fileuri")) + "&sig=" + q.Get("sig"),
			"other key's link":      otherKeyLink(t, 7, catURI),
			"link of a refused key": "/projects/7/resolve/?fileuri=" + url.QueryEscape("gs://acme-raw/incoming/../x") + "&sig=" + q.Get("sig"),
		} {
			if r := h.resolve(rw, "GET", path, "", nil); r.code != http.StatusUnauthorized {
				t.Errorf("%s: %d, want 401", name, r.code)
			}
		}
		// lsctl sign's link, in full, opens it in a browser's way: no header.
		var printed bytes.Buffer
		if err := ctl.Run(h.ctx, []string{"sign", "--project", "7", "--fileuri", catURI, "--ttl", "1h", "--base-url", "http://" + rw.w.HTTPAddr()}, ctl.Env{SecretKey: secretKey}, nil, &printed); err != nil {
			t.Fatal(err)
		}
		resp, err := http.Get(strings.TrimSpace(printed.String()))
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || !bytes.Equal(body, cat) {
			t.Errorf("lsctl sign's link %s: %d", printed.String(), resp.StatusCode)
		}
		// The same link opens the object whether fileuri is raw or base64.
		if r := h.resolve(rw, "GET", tamper("fileuri", base64.URLEncoding.EncodeToString([]byte(catURI))), "", nil); r.code != 200 {
			t.Errorf("signed link with a base64 fileuri: %d", r.code)
		}
		if code, _ := h.api(rw, "POST", "/api/resolve/sign", "", `{"project": 7, "fileuri": "gs://acme-raw/incoming/cat 1.jpg"}`); code != 401 {
			t.Errorf("sign without the token: %d", code)
		}
		if code, _ := h.api(rw, "POST", "/api/resolve/sign", resolveToken, `{"project": 7, "fileuri": "gs://acme-raw/secret/x.jpg"}`); code != 404 {
			t.Errorf("sign outside the storages: %d", code)
		}
	})

	t.Run("storage change", func(t *testing.T) {
		// A PATCH applies to the next request: storage 1 redirects, then
		// streams again.
		if code, out := h.api(rw, "PATCH", "/api/storages/gcs/1", resolveToken, `{"presign": true}`); code != 200 {
			t.Fatalf("patch: %d %v", code, out)
		}
		eventually(t, 5*time.Second, "presign on", func() error {
			if r := h.resolve(rw, "GET", resolvePath(7, catURI), resolveToken, nil); r.code != http.StatusSeeOther {
				return fmt.Errorf("%d", r.code)
			}
			return nil
		})
		if code, out := h.api(rw, "PATCH", "/api/storages/gcs/1", resolveToken, `{"presign": false}`); code != 200 {
			t.Fatalf("patch: %d %v", code, out)
		}
		eventually(t, 5*time.Second, "presign off", func() error {
			if r := h.resolve(rw, "GET", resolvePath(7, catURI), resolveToken, nil); r.code != 200 {
				return fmt.Errorf("%d", r.code)
			}
			return nil
		})
	})
}

func otherKeyLink(t *testing.T, project int64, fileuri string) string {
	t.Helper()
	l, err := resolve.NewLinks("ZmVkY2JhOTg3NjU0MzIxMGZlZGNiYTk4NzY1NDMyMTA=")
	if err != nil {
		t.Fatal(err)
	}
	p, err := l.Path(project, fileuri, time.Time{})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// checkSignedURL verifies a V4 signed URL as GCS would, against
// markedCreds' key: the canonical path-style request for bucket/key, the
// credential and the lifetime.
func checkSignedURL(t *testing.T, location, bucket, key string, ttl time.Duration) {
	t.Helper()
	var sa struct {
		ClientEmail string `json:"client_email"`
		PrivateKey  string `json:"private_key"`
	}
	if err := json.Unmarshal([]byte(markedCreds), &sa); err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode([]byte(sa.PrivateKey))
	k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	u, err := url.Parse(location)
	if err != nil {
		t.Fatal(err)
	}
	q := u.Query()
	sig, err := hex.DecodeString(q.Get("X-Goog-Signature"))
	if err != nil || len(sig) == 0 {
		t.Fatalf("X-Goog-Signature %q", q.Get("X-Goog-Signature"))
	}
	q.Del("X-Goog-Signature")
	if exp, _ := strconv.Atoi(q.Get("X-Goog-Expires")); exp > int(ttl.Seconds()) || exp < int(ttl.Seconds())-2 {
		t.Errorf("X-Goog-Expires %q, want %d", q.Get("X-Goog-Expires"), int(ttl.Seconds()))
	}
	who, scope, _ := strings.Cut(q.Get("X-Goog-Credential"), "/")
	if who != sa.ClientEmail {
		t.Errorf("signed by %q, want the storage's %q", who, sa.ClientEmail)
	}
	segs := strings.Split(key, "/")
	for i, s := range segs {
		segs[i] = strings.ReplaceAll(url.QueryEscape(s), "+", "%20")
	}
	canonical := strings.Join([]string{
		"GET", "/" + bucket + "/" + strings.Join(segs, "/"), strings.ReplaceAll(q.Encode(), "+", "%20"),
		"host:" + u.Hostname(), "", "host", "UNSIGNED-PAYLOAD",
	}, "\n")
	sum := sha256.Sum256([]byte(canonical))
	digest := sha256.Sum256([]byte("GOOG4-RSA-SHA256\n" + q.Get("X-Goog-Date") + "\n" + scope + "\n" + hex.EncodeToString(sum[:])))
	if err := rsa.VerifyPKCS1v15(&k.(*rsa.PrivateKey).PublicKey, crypto.SHA256, digest[:], sig); err != nil {
		t.Errorf("the signature does not verify against the storage's key: %v", err)
	}
}
