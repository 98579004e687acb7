package resolve

import (
	"bytes"
	"context"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"cloud.google.com/go/storage"
	"github.com/fsouza/fake-gcs-server/fakestorage"

	"github.com/labelsync/labelsync/internal/gcs"
	"github.com/labelsync/labelsync/internal/secrets"
	"github.com/labelsync/labelsync/internal/storages"
)

const testToken = "s3cret-token"

// serviceAccount returns a service-account key JSON with a fresh RSA key.
func serviceAccount(t testing.TB, email string) (string, *rsa.PrivateKey) {
	t.Helper()
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(map[string]string{
		"type": "service_account", "project_id": "acme", "private_key_id": "k1", "client_email": email,
		"private_key": string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})),
	})
	return string(b), k
}

// testEnv is a resolver over an in-process fake-gcs-server, behind a
// front that can break one media download part-way.
type testEnv struct {
	t      *testing.T
	fake   *fakestorage.Server
	gcsURL string
	box    *secrets.Box
	set    atomic.Pointer[storages.Set]
	srv    *Server
	url    string
	// cut, when set, breaks the next media download after n bytes.
	cut atomic.Pointer[cutRule]
	sa  *rsa.PrivateKey
	// beforeMedia, when set, runs before the next media download.
	beforeMedia atomic.Pointer[func()]
	logs        syncBuffer
}

// syncBuffer is a bytes.Buffer for a logger used from several goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

type cutRule struct {
	after int
	then  func()
}

func newTestEnv(t *testing.T, imports []storages.Import) *testEnv {
	t.Helper()
	fake, err := fakestorage.NewServerWithOptions(fakestorage.Options{NoListener: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(fake.Stop)
	e := &testEnv{t: t, fake: fake}
	front := httptest.NewServer(http.HandlerFunc(e.serveGCS))
	t.Cleanup(front.Close)
	e.gcsURL = front.URL
	if e.box, err = secrets.New(testSecretKey); err != nil {
		t.Fatal(err)
	}
	clients := gcs.NewClients(gcs.Options{EmulatorHost: e.gcsURL})
	t.Cleanup(func() { _ = clients.Close() })
	e.setStorages(imports)
	e.srv, err = New(Config{
		Token:     testToken,
		SecretKey: testSecretKey,
		Storages:  e.set.Load,
		ClientFor: func(ctx context.Context, st *storages.Import) (*storage.Client, error) {
			creds, err := st.Credentials(e.box)
			if err != nil {
				return nil, err
			}
			return clients.For(ctx, creds)
		},
		Secrets:      e.box,
		EmulatorHost: e.gcsURL,
		ReadTimeout:  5 * time.Second,
		Logger:       slog.New(slog.NewTextHandler(&e.logs, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	e.srv.Register(mux)
	ts := httptest.NewServer(mux)
	t.Cleanup(ts.Close)
	e.url = ts.URL
	return e
}

func (e *testEnv) setStorages(imports []storages.Import) {
	e.t.Helper()
	sealed := make([]storages.Import, len(imports))
	for i, st := range imports {
		if err := st.SealCredentials(e.box); err != nil {
			e.t.Fatal(err)
		}
		sealed[i] = st
	}
	set, err := storages.NewSet(sealed)
	if err != nil {
		e.t.Fatal(err)
	}
	e.set.Store(set)
}

func (e *testEnv) serveGCS(w http.ResponseWriter, r *http.Request) {
	media := strings.HasPrefix(r.URL.Path, "/download/") || r.URL.Query().Get("alt") == "media"
	if !media {
		e.fake.HTTPHandler().ServeHTTP(w, r)
		return
	}
	if f := e.beforeMedia.Swap(nil); f != nil {
		(*f)()
	}
	if c := e.cut.Swap(nil); c != nil {
		w = &cutWriter{ResponseWriter: w, left: c.after, then: c.then}
	}
	e.fake.HTTPHandler().ServeHTTP(w, r)
}

// cutWriter sends left bytes, runs then, and drops the connection.
type cutWriter struct {
	http.ResponseWriter
	left int
	then func()
}

func (c *cutWriter) Write(p []byte) (int, error) {
	if len(p) < c.left {
		c.left -= len(p)
		return c.ResponseWriter.Write(p)
	}
	n, _ := c.ResponseWriter.Write(p[:c.left])
	c.ResponseWriter.(http.Flusher).Flush()
	if c.then != nil {
		c.then()
	}
	_ = n
	panic(http.ErrAbortHandler)
}

func (e *testEnv) put(bucket, key, contentType string, body []byte) {
	e.fake.CreateObject(fakestorage.Object{
		ObjectAttrs: fakestorage.ObjectAttrs{BucketName: bucket, Name: key, ContentType: contentType},
		Content:     body,
	})
}

// get requests the resolver; no redirects are followed.
func (e *testEnv) get(project int64, fileuri, token string, header http.Header) *http.Response {
	e.t.Helper()
	return e.do(fmt.Sprintf("/projects/%d/resolve/?fileuri=%s", project, url.QueryEscape(fileuri)), token, header)
}

var noRedirects = &http.Client{
	Timeout:       30 * time.Second,
	CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
}

func (e *testEnv) do(path, token string, header http.Header) *http.Response {
	e.t.Helper()
	req, err := http.NewRequest(http.MethodGet, e.url+path, nil)
	if err != nil {
		e.t.Fatal(err)
	}
	for k, v := range header {
		req.Header[k] = v
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := noRedirects.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { resp.Body.Close() })
	return resp
}

func readAll(t *testing.T, resp *http.Response) string {
	t.Helper()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("reading the body: %v", err)
	}
	return string(b)
}

func boolp(b bool) *bool { return &b }

// verifyV4 checks a V4 signed URL's signature as GCS would, against the
// canonical path-style request for bucket/key on host.
func verifyV4(t *testing.T, location, bucket, key, host string, pub *rsa.PublicKey, email string, ttl time.Duration) {
	t.Helper()
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
	if q.Get("X-Goog-Algorithm") != "GOOG4-RSA-SHA256" || q.Get("X-Goog-SignedHeaders") != "host" {
		t.Errorf("V4 parameters %v", q)
	}
	// The library counts from its own clock, a moment after ours.
	if exp, err := strconv.Atoi(q.Get("X-Goog-Expires")); err != nil || exp > int(ttl.Seconds()) || exp < int(ttl.Seconds())-2 {
		t.Errorf("X-Goog-Expires %q, want %d", q.Get("X-Goog-Expires"), int(ttl.Seconds()))
	}
	who, scope, _ := strings.Cut(q.Get("X-Goog-Credential"), "/")
	if who != email || !strings.HasSuffix(scope, "/auto/storage/goog4_request") {
		t.Errorf("X-Goog-Credential %q, want %s/…", q.Get("X-Goog-Credential"), email)
	}
	segs := strings.Split(key, "/")
	for i, s := range segs {
		segs[i] = strings.ReplaceAll(url.QueryEscape(s), "+", "%20")
	}
	canonical := strings.Join([]string{
		"GET",
		"/" + bucket + "/" + strings.Join(segs, "/"),
		strings.ReplaceAll(q.Encode(), "+", "%20"),
		"host:" + host,
		"",
		"host",
		"UNSIGNED-PAYLOAD",
	}, "\n")
	sum := sha256.Sum256([]byte(canonical))
	toSign := "GOOG4-RSA-SHA256\n" + q.Get("X-Goog-Date") + "\n" + scope + "\n" + hex.EncodeToString(sum[:])
	digest := sha256.Sum256([]byte(toSign))
	if err := rsa.VerifyPKCS1v15(pub, crypto.SHA256, digest[:], sig); err != nil {
		t.Errorf("signature of %s does not verify against the key: %v", location, err)
	}
}

var resolveStorages = func(saKey string) []storages.Import {
	return []storages.Import{
		{ID: 1, Project: 7, Bucket: "acme-raw", Prefix: "incoming", RecursiveScan: true, Presign: boolp(false)},
		{ID: 2, Project: 7, Bucket: "acme-raw", Prefix: "incoming/signed/", RecursiveScan: true, Presign: boolp(true), PresignTTL: 15, GoogleApplicationCredentials: saKey},
		{ID: 3, Project: 7, Bucket: "acme-raw", RecursiveScan: true, RegexFilter: `.*\.jpg$`, PresignTTL: 5},
		{ID: 4, Project: 8, Bucket: "acme-raw", Prefix: "incoming", RecursiveScan: true, Presign: boolp(true)},
		// Same prefix: the lowest id decides.
		{ID: 6, Project: 7, Bucket: "acme-raw", Prefix: "tie", Presign: boolp(true)},
		{ID: 5, Project: 7, Bucket: "acme-raw", Prefix: "tie", Presign: boolp(false)},
	}
}

// TestResolveStorageChoice: the longest prefix decides presign and
// credentials (ties: lowest id); each project sees only its storages.
func TestResolveStorageChoice(t *testing.T) {
	t.Parallel()
	saKey, _ := serviceAccount(t, "signer@acme.iam.gserviceaccount.com")
	e := newTestEnv(t, resolveStorages(saKey))
	for _, k := range []string{"incoming/cat.jpg", "incoming/signed/dog.jpg", "top.jpg", "tie/t.txt"} {
		e.put("acme-raw", k, "image/jpeg", []byte("x"))
	}
	for _, c := range []struct {
		project int64
		fileuri string
		status  int
	}{
		{7, "gs://acme-raw/incoming/cat.jpg", 200},        // 1 (prefix incoming) over 3 (whole bucket)
		{7, "gs://acme-raw/incoming/signed/dog.jpg", 303}, // 2 over 1 and 3
		{7, "gs://acme-raw/top.jpg", 303},                 // 3 only
		{7, "gs://acme-raw/tie/t.txt", 200},               // 5 and 6: 5 is lower
		{8, "gs://acme-raw/incoming/cat.jpg", 303},        // 4: project 8's own storage
		{8, "gs://acme-raw/top.jpg", 404},                 // 3 is project 7's
		{9, "gs://acme-raw/incoming/cat.jpg", 404},
	} {
		resp := e.get(c.project, c.fileuri, testToken, nil)
		if resp.StatusCode != c.status {
			t.Errorf("project %d %s: %d, want %d", c.project, c.fileuri, resp.StatusCode, c.status)
		}
	}
}

// TestResolvePresign: the redirect's URL is fetched back from the
// emulator, is signed with the deciding storage's key (or the throwaway
// one) for presign_ttl, and is reused from the cache only while it has
// enough life left and the storage has not changed.
func TestResolvePresign(t *testing.T) {
	t.Parallel()
	const email = "signer@acme.iam.gserviceaccount.com"
	saKey, sa := serviceAccount(t, email)
	e := newTestEnv(t, resolveStorages(saKey))
	e.put("acme-raw", "incoming/signed/dog 1.jpg", "image/jpeg", []byte("woof"))
	e.put("acme-raw", "top.jpg", "image/jpeg", []byte("top"))
	var clock atomic.Int64
	clock.Store(time.Now().UnixNano())
	e.srv.presign.now = func() time.Time { return time.Unix(0, clock.Load()) }
	host := strings.TrimPrefix(e.gcsURL, "http://")
	hostname, _, _ := strings.Cut(host, ":")

	redirect := func(fileuri string) string {
		t.Helper()
		resp := e.get(7, fileuri, testToken, nil)
		if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Cache-Control") != "no-store" {
			t.Fatalf("%s: %d, Cache-Control %q", fileuri, resp.StatusCode, resp.Header.Get("Cache-Control"))
		}
		return resp.Header.Get("Location")
	}
	// signs requests fileuri and reports whether it was signed anew.
	signs := func(fileuri string) bool {
		t.Helper()
		before := e.srv.presign.signings.Load()
		redirect(fileuri)
		return e.srv.presign.signings.Load() > before
	}
	loc := redirect("gs://acme-raw/incoming/signed/dog 1.jpg")
	if !strings.HasPrefix(loc, e.gcsURL+"/download/storage/v1/b/acme-raw/o/incoming/signed/dog%201.jpg?") {
		t.Fatalf("Location %s", loc)
	}
	verifyV4(t, loc, "acme-raw", "incoming/signed/dog 1.jpg", hostname, &sa.PublicKey, email, 15*time.Minute)
	resp, err := http.Get(loc)
	if err != nil {
		t.Fatal(err)
	}
	if body := readAll(t, resp); resp.StatusCode != 200 || body != "woof" {
		t.Fatalf("fetching the signed URL: %d %q", resp.StatusCode, body)
	}
	resp.Body.Close()

	// No key of its own: the throwaway signer.
	top := redirect(b64("gs://acme-raw/top.jpg"))
	k, err := e.srv.presign.throwaway()
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode(k)
	tk, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	verifyV4(t, top, "acme-raw", "top.jpg", hostname, &tk.(*rsa.PrivateKey).PublicKey, emulatorAccessID, 5*time.Minute)
	if resp, err := http.Get(top); err != nil || resp.StatusCode != 200 || readAll(t, resp) != "top" {
		t.Fatalf("fetching the throwaway-signed URL: %v", err)
	}

	// Cached for half the lifetime, then signed again; the raw and the
	// base64 form are one object.
	if signs("gs://acme-raw/top.jpg") || signs(b64raw("gs://acme-raw/top.jpg")) {
		t.Error("a fresh 5-minute URL was signed again")
	}
	if signs("gs://acme-raw/incoming/signed/dog 1.jpg") {
		t.Error("a second request signed again instead of using the cache")
	}
	clock.Add(int64(2*time.Minute + 29*time.Second))
	if signs("gs://acme-raw/top.jpg") {
		t.Error("a 5-minute URL was signed again before 2m30s")
	}
	clock.Add(int64(2 * time.Second))
	if !signs("gs://acme-raw/top.jpg") {
		t.Error("a 5-minute URL was reused after 2m31s")
	}
	clock.Add(int64(4*time.Minute + 58*time.Second))
	if signs("gs://acme-raw/incoming/signed/dog 1.jpg") {
		t.Error("a 15-minute URL was signed again at 7m29s")
	}
	clock.Add(int64(2 * time.Second))
	if !signs("gs://acme-raw/incoming/signed/dog 1.jpg") {
		t.Error("a 15-minute URL was reused at 7m31s")
	}

	// A storage change applies to the next request, and the cached URL
	// goes with it.
	changed := resolveStorages(saKey)
	changed[1].PresignTTL = 1
	e.setStorages(changed)
	if !signs("gs://acme-raw/incoming/signed/dog 1.jpg") {
		t.Fatal("the cached URL survived a presign_ttl change")
	}
	verifyV4(t, redirect("gs://acme-raw/incoming/signed/dog 1.jpg"), "acme-raw", "incoming/signed/dog 1.jpg", hostname, &sa.PublicKey, email, time.Minute)
	// A 1-minute URL is never reused: it would expire within the minute.
	if !signs("gs://acme-raw/incoming/signed/dog 1.jpg") {
		t.Error("a 1-minute URL was served from the cache")
	}
	other, _ := serviceAccount(t, email)
	changed[1].PresignTTL = 15
	e.setStorages(changed)
	signs("gs://acme-raw/incoming/signed/dog 1.jpg")
	changed[1].GoogleApplicationCredentials = other
	e.setStorages(changed)
	if !signs("gs://acme-raw/incoming/signed/dog 1.jpg") {
		t.Error("the cached URL survived a change of credentials")
	}
	changed[1].Presign = boolp(false)
	e.setStorages(changed)
	if resp := e.get(7, "gs://acme-raw/incoming/signed/dog 1.jpg", testToken, nil); resp.StatusCode != 200 || readAll(t, resp) != "woof" {
		t.Errorf("presign off: %d", resp.StatusCode)
	}
}

// TestResolveConcurrentSigning: simultaneous requests for one object sign
// it once.
func TestResolveConcurrentSigning(t *testing.T) {
	t.Parallel()
	e := newTestEnv(t, resolveStorages(""))
	var mu sync.Mutex
	seen := map[string]int{}
	var wg sync.WaitGroup
	for range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			req, _ := http.NewRequest("GET", e.url+"/projects/7/resolve/?fileuri="+url.QueryEscape("gs://acme-raw/top.jpg"), nil)
			req.Header.Set("Authorization", "Bearer "+testToken)
			resp, err := noRedirects.Do(req)
			if err != nil {
				t.Error(err)
				return
			}
			resp.Body.Close()
			mu.Lock()
			seen[resp.Header.Get("Location")]++
			mu.Unlock()
		}()
	}
	wg.Wait()
	if len(seen) != 1 {
		t.Errorf("%d different URLs for one object: %v", len(seen), seen)
	}
}

// TestResolveGenerationChangeMidDownload: when the upstream connection
// breaks, the storage client reads on from the same generation; if that
// generation is gone (overwritten), the response is aborted, never
// completed with the new generation's bytes.
func TestResolveGenerationChangeMidDownload(t *testing.T) {
	t.Parallel()
	e := newTestEnv(t, resolveStorages(""))
	v1 := strings.Repeat("1", 1<<20)
	v2 := strings.Repeat("2", 1<<20)
	e.put("acme-raw", "incoming/v.bin", "application/octet-stream", []byte(v1))

	// A broken connection alone: the client library resumes.
	e.cut.Store(&cutRule{after: 100_000})
	resp := e.get(7, "gs://acme-raw/incoming/v.bin", testToken, nil)
	if body := readAll(t, resp); body != v1 {
		t.Fatalf("resumed download: %d bytes, equal %v", len(body), body == v1)
	}
	if e.cut.Load() != nil {
		t.Fatal("no media download was cut")
	}

	// Broken, and overwritten before the resume.
	e.cut.Store(&cutRule{after: 100_000, then: func() {
		e.put("acme-raw", "incoming/v.bin", "application/octet-stream", []byte(v2))
	}})
	resp = e.get(7, "gs://acme-raw/incoming/v.bin", testToken, nil)
	if resp.StatusCode != 200 {
		t.Fatalf("status %d", resp.StatusCode)
	}
	body, err := io.ReadAll(resp.Body)
	if err == nil {
		t.Fatalf("the download completed (%d bytes, spliced: %v) across a generation change", len(body), strings.Contains(string(body), "2"))
	}
	if strings.Contains(string(body), "2") {
		t.Error("bytes of the new generation were spliced in")
	}
	if logs := e.logs.String(); !strings.Contains(logs, "connection aborted") || !strings.Contains(logs, "incoming/v.bin") {
		t.Errorf("the broken upstream was not logged: %s", logs)
	}
	if e.cut.Load() != nil {
		t.Fatal("no media download was cut")
	}
}

// TestResolveOpenFails: when the object cannot be read after its
// metadata was, nothing has been sent yet, so the answer is still a
// status: 404 for an object gone meanwhile, 502 otherwise.
func TestResolveOpenFails(t *testing.T) {
	t.Parallel()
	e := newTestEnv(t, resolveStorages(""))
	e.put("acme-raw", "incoming/gone.jpg", "image/jpeg", []byte("x"))
	missing := readAll(t, e.get(7, "gs://acme-raw/incoming/never.jpg", testToken, nil))
	gone := func() {
		if err := e.fake.Backend().DeleteObject("acme-raw", "incoming/gone.jpg"); err != nil {
			t.Error(err)
		}
	}
	e.beforeMedia.Store(&gone)
	resp := e.get(7, "gs://acme-raw/incoming/gone.jpg", testToken, nil)
	if body := readAll(t, resp); resp.StatusCode != 404 || body != missing || resp.Header.Get("ETag") != "" {
		t.Errorf("deleted between metadata and read: %d %q %v, want 404 %q", resp.StatusCode, body, resp.Header, missing)
	}

	// The client library refuses gzip-stored objects over the JSON API,
	// which emulator clients read through.
	e.fake.CreateObject(fakestorage.Object{
		ObjectAttrs: fakestorage.ObjectAttrs{BucketName: "acme-raw", Name: "incoming/z.txt", ContentType: "text/plain", ContentEncoding: "gzip"},
		Content:     []byte("\x1f\x8b not really"),
	})
	resp = e.get(7, "gs://acme-raw/incoming/z.txt", testToken, nil)
	if body := readAll(t, resp); resp.StatusCode != http.StatusBadGateway || !strings.Contains(body, "log") {
		t.Errorf("unreadable object: %d %q, want 502", resp.StatusCode, body)
	}
	if !strings.Contains(e.logs.String(), "opening the object failed") {
		t.Errorf("not logged: %s", e.logs.String())
	}
}

// TestResolveSignEndpoint: POST /api/resolve/sign issues a link that
// opens its object without the token, and refuses what it cannot sign.
func TestResolveSignEndpoint(t *testing.T) {
	t.Parallel()
	e := newTestEnv(t, resolveStorages(""))
	e.put("acme-raw", "incoming/cat 1.jpg", "image/jpeg", []byte("meow"))
	post := func(token, body string) (int, map[string]any) {
		t.Helper()
		req, _ := http.NewRequest("POST", e.url+"/api/resolve/sign", strings.NewReader(body))
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var out map[string]any
		_ = json.NewDecoder(resp.Body).Decode(&out)
		return resp.StatusCode, out
	}
	code, out := post(testToken, `{"project": "7", "fileuri": "gs://acme-raw/incoming/cat 1.jpg", "ttl_seconds": 60}`)
	link, _ := out["url"].(string)
	if code != 200 || !strings.HasPrefix(link, "/projects/7/resolve/?") {
		t.Fatalf("sign: %d %v", code, out)
	}
	if resp := e.do(link, "", nil); resp.StatusCode != 200 || readAll(t, resp) != "meow" {
		t.Errorf("signed link: %d", resp.StatusCode)
	}
	e.srv.now = func() time.Time { return time.Now().Add(61 * time.Second) }
	if resp := e.do(link, "", nil); resp.StatusCode != 401 {
		t.Errorf("expired link: %d, want 401", resp.StatusCode)
	}
	e.srv.now = time.Now

	for _, c := range []struct {
		token, body string
		code        int
		field       string
	}{
		{"", `{"project": 7, "fileuri": "gs://acme-raw/incoming/cat 1.jpg"}`, 401, ""},
		{"wrong", `{"project": 7, "fileuri": "gs://acme-raw/incoming/cat 1.jpg"}`, 401, ""},
		{testToken, `{"project": 0, "fileuri": "gs://acme-raw/incoming/cat 1.jpg"}`, 400, "project"},
		{testToken, `{"project": 7, "fileuri": "gs://acme-raw/incoming/../x"}`, 400, "fileuri"},
		{testToken, `{"project": 7, "fileuri": "gs://acme-raw/incoming/cat 1.jpg", "ttl_seconds": -1}`, 400, "ttl_seconds"},
		{testToken, `{"project": 7, "fileuri": "gs://acme-raw/incoming/cat 1.jpg", "ttl": 5}`, 400, ""},
		{testToken, `{"project": 7, "fileuri": "gs://acme-other/x.jpg"}`, 404, ""},
		{testToken, `{"project": 9, "fileuri": "gs://acme-raw/incoming/cat 1.jpg"}`, 404, ""},
		{testToken, `not json`, 400, ""},
	} {
		code, out := post(c.token, c.body)
		if code != c.code {
			t.Errorf("%s: %d %v, want %d", c.body, code, out, c.code)
			continue
		}
		if c.field != "" {
			if ve, _ := out["validation_errors"].(map[string]any); ve[c.field] == nil {
				t.Errorf("%s: %v, want validation_errors.%s", c.body, out, c.field)
			}
		}
	}

	// Without LABELSYNC_SECRET_KEY there are no links.
	noKey, err := New(Config{Token: testToken, Storages: e.set.Load})
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	noKey.Register(mux)
	rec := httptest.NewRecorder()
	req := httptest.NewRequest("POST", "/api/resolve/sign", strings.NewReader(`{"project": 7, "fileuri": "gs://acme-raw/incoming/cat 1.jpg"}`))
	req.Header.Set("Authorization", "Bearer "+testToken)
	mux.ServeHTTP(rec, req)
	if rec.Code != 400 || !strings.Contains(rec.Body.String(), "LABELSYNC_SECRET_KEY") {
		t.Errorf("no secret key: %d %s", rec.Code, rec.Body)
	}
	rec = httptest.NewRecorder()
	mux.ServeHTTP(rec, httptest.NewRequest("GET", link, nil))
	if rec.Code != 401 {
		t.Errorf("a link without LABELSYNC_SECRET_KEY on the worker: %d, want 401", rec.Code)
	}
}
