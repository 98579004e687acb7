package api

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"cloud.google.com/go/storage"
	"github.com/fsouza/fake-gcs-server/fakestorage"
	"github.com/google/go-cmp/cmp"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/labelsync/labelsync/internal/catalog"
	"github.com/labelsync/labelsync/internal/gcs"
	"github.com/labelsync/labelsync/internal/natstest"
	"github.com/labelsync/labelsync/internal/storages"
	"github.com/labelsync/labelsync/internal/syncer"
	"github.com/labelsync/labelsync/internal/testlog"
)

const (
	testToken = "test-token-4e1b9c"
	// marker is planted in every credential the tests hand to the API; no
	// response body and no log line may ever contain it.
	marker = "LEAKMARKER-b7c41e0d"
)

// testKey is an RSA key for service account credentials that pass
// gcs.Clients' checks; generated once, it is never used to sign anything.
var testKey = sync.OnceValue(func() string {
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		panic(err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		panic(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}))
})

// markedCredentials is a well-formed service account key whose
// identifiers carry marker.
func markedCredentials(t *testing.T) string {
	t.Helper()
	return mustJSON(t, map[string]string{
		"type":           "service_account",
		"project_id":     "acme",
		"private_key_id": marker,
		"private_key":    testKey(),
		"client_email":   marker + "@acme.iam.gserviceaccount.com",
		"client_id":      "1234567890",
		"token_uri":      "https://oauth2.googleapis.com/token",
	})
}

// fakeSyncs is the syncer as the API sees it: it keeps statuses in memory
// and, like syncer.Syncer.Request, never queues a second sync over a queued
// or running one.
type fakeSyncs struct {
	mu         sync.Mutex
	statuses   map[int64]syncer.Status
	statusErr  error
	requestErr error
	calls      []syncCall
}

type syncCall struct {
	ID        int64
	Reconcile bool
}

func (f *fakeSyncs) Status(_ context.Context, id int64) (syncer.Status, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.statusErr != nil {
		return syncer.Status{}, f.statusErr
	}
	if st, ok := f.statuses[id]; ok {
		return st, nil
	}
	return syncer.Status{Status: syncer.StatusInitialized}, nil
}

func (f *fakeSyncs) Request(_ context.Context, id int64, reconcile bool) (syncer.Status, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, syncCall{ID: id, Reconcile: reconcile})
	if f.requestErr != nil {
		return syncer.Status{}, f.requestErr
	}
	st, ok := f.statuses[id]
	if !ok {
		st = syncer.Status{Status: syncer.StatusInitialized}
	}
	if st.Status == syncer.StatusQueued || st.Status == syncer.StatusInProgress {
		return st, nil
	}
	st = syncer.Status{Status: syncer.StatusQueued, LastSync: st.LastSync, LastSyncCount: st.LastSyncCount, Reconcile: reconcile}
	if f.statuses == nil {
		f.statuses = make(map[int64]syncer.Status)
	}
	f.statuses[id] = st
	return st, nil
}

func (f *fakeSyncs) requests() []syncCall {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.calls)
}

// config changes a fixture from its defaults.
type config struct {
	noToken  bool           // the server has no token configured
	syncs    *fakeSyncs     // nil: an empty fakeSyncs
	client   ClientFor      // nil: gcs.Clients.For against the fake server
	saved    SavedClientFor // nil: the emulator client, except for storage 4
	imports  []storages.Import
	exports  []storages.Export
	withSets bool // use imports and exports above instead of the defaults
	// catalog serves the storages from a catalog over an in-process NATS
	// (empty at the start; imports and exports above are not used), and
	// with it create, PATCH and DELETE. No secret key: inline credentials
	// are refused on create.
	catalog bool
}

// fixture is an API served over an in-process fake-gcs-server.
type fixture struct {
	handler http.Handler
	syncs   *fakeSyncs
	logs    *testlog.Buffer
	calls   *clientCalls
}

// clientCalls records which credentials the API asked for a storage
// client with: inline ones (ClientFor, "" for Application Default
// Credentials) or a saved storage's own (SavedClientFor). Only the default
// client and saved constructors record.
type clientCalls struct {
	mu     sync.Mutex
	inline []string
	saved  []storages.Import
}

func (c *clientCalls) addInline(creds []byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.inline = append(c.inline, string(creds))
}

func (c *clientCalls) addSaved(st *storages.Import) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.saved = append(c.saved, *st)
}

func (c *clientCalls) get() (inline []string, saved []storages.Import) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.inline), slices.Clone(c.saved)
}

// Objects in the fake server, with their content.
var objects = map[string]map[string]string{
	"acme-raw": {
		"incoming/a.jpg":     "jpeg bytes",
		"incoming/b.png":     "png",
		"incoming/sub/c.jpg": "nested jpeg",
		"incoming/folder/":   "",
		"other/d.json":       `{"text": "hi"}`,
	},
	"acme-labels": {},
	"acme-more":   {"x.jpg": "x"},
}

func defaultImports(t *testing.T) []storages.Import {
	return []storages.Import{
		{ID: 1, Project: 7, Title: "raw images", Bucket: "acme-raw", Prefix: "incoming"},
		{ID: 2, Project: 7, Bucket: "acme-raw", Prefix: "other", RecursiveScan: true, UseBlobURLs: true},
		// Never sealed, so the Set holds the plaintext: the API must still
		// not show it.
		{ID: 3, Project: 8, Bucket: "acme-more", GoogleApplicationCredentials: markedCredentials(t)},
		// Sealed, as every storage the catalog serves is; the fixture's
		// saved client cannot open it (and quotes the marker in its error).
		sealedImport(storages.Import{ID: 4, Project: 8, Bucket: "acme-more"}, "sealed-"+marker),
	}
}

// sealedImport is st holding sealed credentials, the way the catalog
// serves storages: no plaintext, only the sealed form.
func sealedImport(st storages.Import, sealed string) storages.Import {
	st.SetSealedCredentials(sealed)
	return st
}

func defaultExports(t *testing.T) []storages.Export {
	return []storages.Export{
		{ID: 10, Project: 7, Title: "labels", Bucket: "acme-labels", Prefix: "annotations", CanDeleteObjects: true, GoogleApplicationCredentials: markedCredentials(t)},
		{ID: 11, Project: 8, Bucket: "acme-labels"},
		// Sealed credentials, and no LABELSYNC_SECRET_KEY in this API (no
		// WithCatalog): they cannot be opened here.
		sealedExport(storages.Export{ID: 12, Project: 8, Bucket: "acme-labels"}, "sealed-"+marker),
	}
}

func sealedExport(ex storages.Export, sealed string) storages.Export {
	ex.SetSealedCredentials(sealed)
	return ex
}

func newFixture(t *testing.T, cfg config) *fixture {
	t.Helper()
	srv, err := fakestorage.NewServerWithOptions(fakestorage.Options{
		Scheme: "http",
		Host:   "127.0.0.1",
		Port:   0,
		Writer: io.Discard,
	})
	if err != nil {
		t.Fatalf("fake-gcs-server: %v", err)
	}
	t.Cleanup(srv.Stop)
	for bucket, objs := range objects {
		srv.CreateBucketWithOpts(fakestorage.CreateBucketOpts{Name: bucket})
		for key, content := range objs {
			srv.CreateObject(fakestorage.Object{
				ObjectAttrs: fakestorage.ObjectAttrs{BucketName: bucket, Name: key, ContentType: "application/octet-stream"},
				Content:     []byte(content),
			})
		}
	}
	clients := gcs.NewClients(gcs.Options{EmulatorHost: srv.URL()})
	t.Cleanup(func() {
		if err := clients.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})

	imports, exports := cfg.imports, cfg.exports
	if !cfg.withSets {
		imports, exports = defaultImports(t), defaultExports(t)
	}
	for i := range exports {
		if err := exports[i].Normalize(); err != nil {
			t.Fatalf("export %d: %v", exports[i].ID, err)
		}
	}
	set, err := storages.NewSet(imports)
	if err != nil {
		t.Fatalf("NewSet: %v", err)
	}

	syncs := cfg.syncs
	if syncs == nil {
		syncs = &fakeSyncs{}
	}
	calls := &clientCalls{}
	client := cfg.client
	if client == nil {
		client = func(ctx context.Context, creds []byte) (*storage.Client, error) {
			calls.addInline(creds)
			return clients.For(ctx, creds)
		}
	}
	saved := cfg.saved
	if saved == nil {
		saved = func(ctx context.Context, st *storages.Import) (*storage.Client, error) {
			calls.addSaved(st)
			if st.ID == 4 {
				return nil, fmt.Errorf("opening sealed credentials %s: message authentication failed", marker)
			}
			// The emulator ignores credentials: any client reads.
			return clients.For(ctx, nil)
		}
	}
	token := testToken
	if cfg.noToken {
		token = ""
	}
	logs := &testlog.Buffer{}
	logger := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))

	mux := http.NewServeMux()
	if cfg.catalog {
		js, err := jetstream.New(natstest.Connect(t, natstest.Server(t).URL()))
		if err != nil {
			t.Fatal(err)
		}
		cat, err := catalog.Open(t.Context(), js, nil, logger)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(cat.Close)
		New(token, cat.Imports, cat.Exports, syncs, client, saved, logger).WithCatalog(cat, nil).Register(mux)
		return &fixture{handler: mux, syncs: syncs, logs: logs, calls: calls}
	}
	New(token, func() *storages.Set { return set }, func() []storages.Export { return exports }, syncs, client, saved, logger).Register(mux)
	return &fixture{handler: mux, syncs: syncs, logs: logs, calls: calls}
}

type response struct {
	code   int
	header http.Header
	body   string
}

// do serves one request; auth is the whole Authorization header, "" for
// none.
func (f *fixture) do(t *testing.T, method, target, auth, body string) response {
	t.Helper()
	req := httptest.NewRequestWithContext(t.Context(), method, target, strings.NewReader(body))
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	rec := httptest.NewRecorder()
	f.handler.ServeHTTP(rec, req)
	return response{code: rec.Code, header: rec.Header(), body: rec.Body.String()}
}

// authed serves a request with the right token.
func (f *fixture) authed(t *testing.T, method, target, body string) response {
	t.Helper()
	return f.do(t, method, target, "Bearer "+testToken, body)
}

func mustJSON(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatalf("marshal: %v", err)
	}
	return string(b)
}

// apiError is the error shape of SPEC §4.
type apiError struct {
	Detail           string              `json:"detail"`
	ValidationErrors map[string][]string `json:"validation_errors"`
}

// decodeError checks that r is a JSON error with code and a detail, and
// returns it.
func decodeError(t *testing.T, r response, code int) apiError {
	t.Helper()
	if r.code != code {
		t.Fatalf("status: got %d, want %d (body %s)", r.code, code, r.body)
	}
	if got := r.header.Get("Content-Type"); got != "application/json" {
		t.Errorf("Content-Type: got %q, want %q", got, "application/json")
	}
	var e apiError
	if err := json.Unmarshal([]byte(r.body), &e); err != nil {
		t.Fatalf("error body is not JSON: %v: %s", err, r.body)
	}
	if e.Detail == "" {
		t.Errorf("error body has no detail: %s", r.body)
	}
	return e
}

// checkValidation checks a 400 in Label Studio's shape naming one field.
func checkValidation(t *testing.T, r response, field string) apiError {
	t.Helper()
	e := decodeError(t, r, http.StatusBadRequest)
	var fields []string
	for f := range e.ValidationErrors {
		fields = append(fields, f)
	}
	if diff := cmp.Diff([]string{field}, fields); diff != "" {
		t.Errorf("validation_errors fields (-want +got):\n%s\nbody: %s", diff, r.body)
	}
	if msgs := e.ValidationErrors[field]; len(msgs) != 1 || msgs[0] != e.Detail {
		t.Errorf("validation_errors[%q]: got %q, want [%q]", field, msgs, e.Detail)
	}
	return e
}

// decodeOK checks a 200 JSON answer and decodes it into v.
func decodeOK(t *testing.T, r response, v any) {
	t.Helper()
	if r.code != http.StatusOK {
		t.Fatalf("status: got %d, want 200 (body %s)", r.code, r.body)
	}
	if got := r.header.Get("Content-Type"); got != "application/json" {
		t.Errorf("Content-Type: got %q, want %q", got, "application/json")
	}
	if err := json.Unmarshal([]byte(r.body), v); err != nil {
		t.Fatalf("body is not JSON: %v: %s", err, r.body)
	}
}

func ids(t *testing.T, r response) []int64 {
	t.Helper()
	var list []struct {
		ID int64 `json:"id"`
	}
	decodeOK(t, r, &list)
	if list == nil {
		t.Fatalf("list is null, want an array: %s", r.body)
	}
	out := []int64{}
	for _, s := range list {
		out = append(out, s.ID)
	}
	return out
}

// sizedBody is head (an unclosed JSON object) padded with a description to
// exactly size bytes; its JSON value completes only with the last byte.
// (The padding used to be the title; title is now limited to
// storages.MaxTitleLength characters, as in Label Studio, while description
// has no limit.)
func sizedBody(head string, size int) string {
	const tail = `"}`
	return head + `,"description":"` + strings.Repeat("x", size-len(head)-len(`,"description":"`)-len(tail)) + tail
}

// routes lists every route Register adds, with a request that succeeds
// when authorized.
var routes = []struct {
	method, path, body string
}{
	{"GET", "/api/storages/gcs", ""},
	{"GET", "/api/storages/gcs/", ""},
	{"GET", "/api/storages/gcs/1", ""},
	{"POST", "/api/storages/gcs/1/sync", ""},
	{"POST", "/api/storages/gcs/validate", `{"project":7,"bucket":"acme-raw"}`},
	{"POST", "/api/storages/gcs/files", `{"project":7,"bucket":"acme-raw","prefix":"incoming"}`},
	{"GET", "/api/storages/export/gcs", ""},
	{"GET", "/api/storages/export/gcs/", ""},
	{"GET", "/api/storages/export/gcs/10", ""},
	{"POST", "/api/storages/export/gcs/validate", `{"project":7,"bucket":"acme-labels"}`},
}

func TestAuthorized(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name   string
		token  string
		header []string // Authorization values; none when empty
		want   bool
	}{
		{"right token", "tok", []string{"Bearer tok"}, true},
		{"no header", "tok", nil, false},
		{"empty header", "tok", []string{""}, false},
		{"wrong token", "tok", []string{"Bearer other"}, false},
		{"prefix of the token", "tok", []string{"Bearer to"}, false},
		{"token plus more", "tok", []string{"Bearer tokk"}, false},
		{"Bearer and no token", "tok", []string{"Bearer "}, false},
		{"Bearer without a space", "tok", []string{"Bearer"}, false},
		{"Bearer glued to the token", "tok", []string{"Bearertok"}, false},
		{"two spaces", "tok", []string{"Bearer  tok"}, false},
		{"trailing space", "tok", []string{"Bearer tok "}, false},
		{"token without scheme", "tok", []string{"tok"}, false},
		{"other scheme", "tok", []string{"Basic tok"}, false},
		{"second header ignored", "tok", []string{"Bearer other", "Bearer tok"}, false},
		{"server token empty, no header", "", nil, false},
		{"server token empty, Bearer and nothing", "", []string{"Bearer "}, false},
		{"server token empty, Bearer only", "", []string{"Bearer"}, false},
		{"server token empty, some token", "", []string{"Bearer tok"}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			r := httptest.NewRequest("GET", "/api/storages/gcs", nil)
			for _, h := range tt.header {
				r.Header.Add("Authorization", h)
			}
			if got := Authorized(tt.token, r); got != tt.want {
				t.Errorf("Authorized(%q, %q): got %v, want %v", tt.token, tt.header, got, tt.want)
			}
		})
	}
}

func TestEveryRouteNeedsToken(t *testing.T) {
	t.Parallel()
	withToken := newFixture(t, config{})
	noToken := newFixture(t, config{noToken: true})
	denials := []struct {
		name string
		f    *fixture
		auth string
	}{
		{"no Authorization", withToken, ""},
		{"wrong token", withToken, "Bearer wrong-" + testToken},
		{"Bearer and empty token", withToken, "Bearer "},
		{"Bearer without space", withToken, "Bearer"},
		{"token without scheme", withToken, testToken},
		{"token in other case", withToken, "Bearer " + strings.ToUpper(testToken)},
		{"server token empty, no Authorization", noToken, ""},
		{"server token empty, Bearer and empty token", noToken, "Bearer "},
		{"server token empty, a token", noToken, "Bearer " + testToken},
	}
	t.Run("denied", func(t *testing.T) {
		for _, d := range denials {
			for _, rt := range routes {
				t.Run(d.name+"/"+rt.method+" "+rt.path, func(t *testing.T) {
					t.Parallel()
					r := d.f.do(t, rt.method, rt.path, d.auth, rt.body)
					decodeError(t, r, http.StatusUnauthorized)
					if got, want := r.header.Get("WWW-Authenticate"), `Bearer realm="labelsync"`; got != want {
						t.Errorf("WWW-Authenticate: got %q, want %q", got, want)
					}
				})
			}
		}
	})
	// A refused request reaches no handler.
	for _, f := range []*fixture{withToken, noToken} {
		if got := f.syncs.requests(); len(got) != 0 {
			t.Errorf("sync requests after refused calls: got %v, want none", got)
		}
	}
	// The same requests with the token succeed, so the 401s above are the
	// token's doing.
	for _, rt := range routes {
		t.Run("allowed/"+rt.method+" "+rt.path, func(t *testing.T) {
			t.Parallel()
			r := withToken.authed(t, rt.method, rt.path, rt.body)
			if r.code != http.StatusOK {
				t.Errorf("status: got %d, want 200 (body %s)", r.code, r.body)
			}
		})
	}
}

func TestListImports(t *testing.T) {
	t.Parallel()
	f := newFixture(t, config{})
	tests := []struct {
		query string
		want  []int64
	}{
		{"", []int64{1, 2, 3, 4}},
		{"?project=7", []int64{1, 2}},
		{"?project=8", []int64{3, 4}},
		{"?project=99", []int64{}},
		{"?project=", []int64{1, 2, 3, 4}},
	}
	// Label Studio's own URL ends in a slash; both answer the same.
	for _, path := range []string{"/api/storages/gcs", "/api/storages/gcs/"} {
		for _, tt := range tests {
			t.Run(path+tt.query, func(t *testing.T) {
				t.Parallel()
				got := ids(t, f.authed(t, "GET", path+tt.query, ""))
				if diff := cmp.Diff(tt.want, got); diff != "" {
					t.Errorf("ids (-want +got):\n%s", diff)
				}
			})
		}
		for _, bad := range []string{"abc", "0", "-1", "1.5", "7x", "99999999999999999999"} {
			t.Run(path+" bad project "+bad, func(t *testing.T) {
				t.Parallel()
				e := decodeError(t, f.authed(t, "GET", path+"?project="+bad, ""), http.StatusBadRequest)
				if want := "project must be a positive integer"; e.Detail != want {
					t.Errorf("detail: got %q, want %q", e.Detail, want)
				}
			})
		}
	}
}

// The lists with and without the trailing slash are the same answer, not
// only the same ids.
func TestListTrailingSlash(t *testing.T) {
	t.Parallel()
	f := newFixture(t, config{})
	for _, path := range []string{"/api/storages/gcs", "/api/storages/export/gcs"} {
		for _, query := range []string{"", "?project=8"} {
			plain := f.authed(t, "GET", path+query, "")
			slash := f.authed(t, "GET", path+"/"+query, "")
			var a, b []map[string]any
			decodeOK(t, plain, &a)
			decodeOK(t, slash, &b)
			if len(a) == 0 {
				t.Errorf("%s%s: empty list", path, query)
			}
			if diff := cmp.Diff(a, b); diff != "" {
				t.Errorf("%s/%s against %s%s (-without +with the slash):\n%s", path, query, path, query, diff)
			}
		}
	}
	// Without the token, the slash paths are refused like the others
	// (TestEveryRouteNeedsToken covers them too).
	for _, path := range []string{"/api/storages/gcs/", "/api/storages/export/gcs/"} {
		decodeError(t, f.do(t, "GET", path, "", ""), http.StatusUnauthorized)
	}
}

// Create answers on Label Studio's URL, with the trailing slash, as on the
// one without; the storages created are in the lists on both.
func TestCreateTrailingSlash(t *testing.T) {
	t.Parallel()
	f := newFixture(t, config{catalog: true})
	for _, kind := range []struct{ path, body string }{
		{"/api/storages/gcs", `{"project":7,"bucket":"acme-raw","prefix":"incoming"}`},
		{"/api/storages/export/gcs", `{"project":7,"bucket":"acme-labels","prefix":"annotations"}`},
	} {
		var created []int64
		for _, path := range []string{kind.path, kind.path + "/"} {
			r := f.authed(t, "POST", path, kind.body)
			if r.code != http.StatusCreated {
				t.Fatalf("POST %s: got %d, want 201 (body %s)", path, r.code, r.body)
			}
			var got struct {
				ID     int64  `json:"id"`
				Bucket string `json:"bucket"`
				Type   string `json:"type"`
			}
			if err := json.Unmarshal([]byte(r.body), &got); err != nil {
				t.Fatalf("POST %s: %v: %s", path, err, r.body)
			}
			if got.ID <= 0 || got.Type != "gcs" {
				t.Errorf("POST %s: got %s", path, r.body)
			}
			created = append(created, got.ID)
			// The same decoder on both paths.
			e := decodeError(t, f.authed(t, "POST", path, `{"project":7,"bucket":"acme-raw","colour":"red"}`), http.StatusBadRequest)
			if want := "unknown field(s): colour"; e.Detail != want {
				t.Errorf("POST %s, unknown field: detail %q, want %q", path, e.Detail, want)
			}
		}
		for _, path := range []string{kind.path, kind.path + "/"} {
			if diff := cmp.Diff(created, ids(t, f.authed(t, "GET", path, ""))); diff != "" {
				t.Errorf("GET %s (-created +listed):\n%s", path, diff)
			}
		}
	}
}

func TestListImportsStatusFails(t *testing.T) {
	t.Parallel()
	f := newFixture(t, config{syncs: &fakeSyncs{statusErr: errors.New("nats: key-value store unavailable")}})
	e := decodeError(t, f.authed(t, "GET", "/api/storages/gcs", ""), http.StatusServiceUnavailable)
	if strings.Contains(e.Detail, "nats") {
		t.Errorf("detail shows the internal error: %q", e.Detail)
	}
}

func TestGetImport(t *testing.T) {
	t.Parallel()
	lastSync := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	count := int64(3)
	traceback := "boom"
	syncs := &fakeSyncs{statuses: map[int64]syncer.Status{
		1: {Status: syncer.StatusCompleted, LastSync: &lastSync, LastSyncCount: &count,
			Meta: syncer.Meta{ObjectsListed: 4, TasksCreated: 3, Pages: 1, StartedAt: "2026-01-02T03:04:00Z", Duration: 1.5},
			// Internal fields of the status, not Label Studio's.
			PageToken: "next-page", Reconcile: true, ReconcileSeq: 42},
		2: {Status: syncer.StatusFailed, Traceback: &traceback},
	}}
	f := newFixture(t, config{syncs: syncs})

	t.Run("full view", func(t *testing.T) {
		t.Parallel()
		var got map[string]any
		decodeOK(t, f.authed(t, "GET", "/api/storages/gcs/1", ""), &got)
		want := map[string]any{
			"id": 1.0, "project": 7.0, "title": "raw images", "bucket": "acme-raw", "prefix": "incoming",
			"use_blob_urls": false, "recursive_scan": false, "presign": true, "presign_ttl": 15.0,
			"data_key": "$undefined$", "type": "gcs", "status": "completed",
			"last_sync": "2026-01-02T03:04:05Z", "last_sync_count": 3.0, "traceback": nil,
			"meta": map[string]any{
				"objects_listed": 4.0, "tasks_created": 3.0, "tasks_updated": 0.0, "tasks_deleted": 0.0,
				"already_synced": 0.0, "errors": 0.0, "pages": 1.0,
				"started_at": "2026-01-02T03:04:00Z", "duration": 1.5,
			},
		}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("storage 1 (-want +got):\n%s", diff)
		}
	})

	tests := []struct {
		path       string
		wantStatus string
		wantTB     any
	}{
		{"/api/storages/gcs/2", syncer.StatusFailed, "boom"},
		{"/api/storages/gcs/3", syncer.StatusInitialized, nil},
	}
	for _, tt := range tests {
		t.Run(tt.path, func(t *testing.T) {
			t.Parallel()
			var got map[string]any
			decodeOK(t, f.authed(t, "GET", tt.path, ""), &got)
			if got["status"] != tt.wantStatus {
				t.Errorf("status: got %v, want %v", got["status"], tt.wantStatus)
			}
			if got["traceback"] != tt.wantTB {
				t.Errorf("traceback: got %v, want %v", got["traceback"], tt.wantTB)
			}
			if got["type"] != "gcs" {
				t.Errorf("type: got %v, want gcs", got["type"])
			}
			if _, ok := got["google_application_credentials"]; ok {
				t.Errorf("google_application_credentials is present: %v", got)
			}
		})
	}

	for _, id := range []string{"42", "0", "-1", "abc", "1.0", "99999999999999999999", "validate"} {
		t.Run("not found "+id, func(t *testing.T) {
			t.Parallel()
			e := decodeError(t, f.authed(t, "GET", "/api/storages/gcs/"+id, ""), http.StatusNotFound)
			if want := "Not found."; e.Detail != want {
				t.Errorf("detail: got %q, want %q", e.Detail, want)
			}
		})
	}
}

func TestGetImportStatusFails(t *testing.T) {
	t.Parallel()
	f := newFixture(t, config{syncs: &fakeSyncs{statusErr: errors.New("nats: timeout")}})
	decodeError(t, f.authed(t, "GET", "/api/storages/gcs/1", ""), http.StatusServiceUnavailable)
	// An unknown id is still a 404: the status is not read for it.
	decodeError(t, f.authed(t, "GET", "/api/storages/gcs/42", ""), http.StatusNotFound)
}

func TestSync(t *testing.T) {
	t.Parallel()
	lastSync := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	count := int64(9)
	tests := []struct {
		name       string
		statuses   map[int64]syncer.Status
		requestErr error
		path       string
		wantCode   int
		wantStatus string // of the answer, when 200
		wantCalls  []syncCall
	}{
		{
			name:       "first sync is queued",
			path:       "/api/storages/gcs/1/sync",
			wantCode:   http.StatusOK,
			wantStatus: syncer.StatusQueued,
			wantCalls:  []syncCall{{ID: 1}},
		},
		{
			name:       "reconcile=true",
			path:       "/api/storages/gcs/2/sync?reconcile=true",
			wantCode:   http.StatusOK,
			wantStatus: syncer.StatusQueued,
			wantCalls:  []syncCall{{ID: 2, Reconcile: true}},
		},
		{
			name:       "reconcile other than true",
			path:       "/api/storages/gcs/2/sync?reconcile=1",
			wantCode:   http.StatusOK,
			wantStatus: syncer.StatusQueued,
			wantCalls:  []syncCall{{ID: 2}},
		},
		{
			name:       "after a completed sync",
			statuses:   map[int64]syncer.Status{1: {Status: syncer.StatusCompleted, LastSync: &lastSync, LastSyncCount: &count}},
			path:       "/api/storages/gcs/1/sync",
			wantCode:   http.StatusOK,
			wantStatus: syncer.StatusQueued,
			wantCalls:  []syncCall{{ID: 1}},
		},
		{
			name:       "running sync is answered, not restarted",
			statuses:   map[int64]syncer.Status{1: {Status: syncer.StatusInProgress, Meta: syncer.Meta{ObjectsListed: 5}}},
			path:       "/api/storages/gcs/1/sync",
			wantCode:   http.StatusOK,
			wantStatus: syncer.StatusInProgress,
			wantCalls:  []syncCall{{ID: 1}},
		},
		{
			name:     "unknown storage",
			path:     "/api/storages/gcs/42/sync",
			wantCode: http.StatusNotFound,
		},
		{
			name:     "non-numeric id",
			path:     "/api/storages/gcs/abc/sync",
			wantCode: http.StatusNotFound,
		},
		{
			name:       "syncer unavailable",
			requestErr: errors.New("nats: no responders"),
			path:       "/api/storages/gcs/1/sync",
			wantCode:   http.StatusServiceUnavailable,
			wantCalls:  []syncCall{{ID: 1}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			f := newFixture(t, config{syncs: &fakeSyncs{statuses: maps.Clone(tt.statuses), requestErr: tt.requestErr}})
			r := f.authed(t, "POST", tt.path, "")
			if tt.wantCode != http.StatusOK {
				e := decodeError(t, r, tt.wantCode)
				if strings.Contains(e.Detail, "nats") {
					t.Errorf("detail shows the internal error: %q", e.Detail)
				}
			} else {
				var got struct {
					ID            int64      `json:"id"`
					Type          string     `json:"type"`
					Status        string     `json:"status"`
					LastSync      *time.Time `json:"last_sync"`
					LastSyncCount *int64     `json:"last_sync_count"`
				}
				decodeOK(t, r, &got)
				if got.Status != tt.wantStatus {
					t.Errorf("status: got %q, want %q", got.Status, tt.wantStatus)
				}
				if got.Type != "gcs" {
					t.Errorf("type: got %q, want gcs", got.Type)
				}
				// The previous sync's results stay visible while queued.
				if prev, ok := tt.statuses[got.ID]; ok && prev.LastSyncCount != nil {
					if got.LastSyncCount == nil || *got.LastSyncCount != *prev.LastSyncCount {
						t.Errorf("last_sync_count: got %v, want %d", got.LastSyncCount, *prev.LastSyncCount)
					}
					if got.LastSync == nil || !got.LastSync.Equal(*prev.LastSync) {
						t.Errorf("last_sync: got %v, want %v", got.LastSync, *prev.LastSync)
					}
				}
			}
			if diff := cmp.Diff(tt.wantCalls, f.syncs.requests()); diff != "" {
				t.Errorf("sync requests (-want +got):\n%s", diff)
			}
		})
	}
}

func TestSyncTwiceQueuesOnce(t *testing.T) {
	t.Parallel()
	f := newFixture(t, config{})
	for i := range 2 {
		var got struct {
			Status string `json:"status"`
		}
		decodeOK(t, f.authed(t, "POST", "/api/storages/gcs/1/sync", ""), &got)
		if got.Status != syncer.StatusQueued {
			t.Errorf("request %d: status got %q, want %q", i, got.Status, syncer.StatusQueued)
		}
	}
	var got struct {
		Status string `json:"status"`
	}
	decodeOK(t, f.authed(t, "GET", "/api/storages/gcs/1", ""), &got)
	if got.Status != syncer.StatusQueued {
		t.Errorf("after two requests: status got %q, want %q", got.Status, syncer.StatusQueued)
	}
}

// bodyCase is a request body for one of the POST routes and the answer it
// must get: 200, or an error with its detail and validation_errors.
type bodyCase struct {
	name     string
	query    string
	body     string
	wantCode int
	// wantErrors, when set, is exactly the validation_errors of the
	// answer, every invalid field at once as Label Studio reports them;
	// the detail is then "Validation error" unless wantMsg says otherwise.
	// This is the storage body decoder's answer (storages.DecodeImport,
	// storages.DecodeExport).
	wantErrors map[string][]string
	// wantField, when set, is the one field validation_errors names, with
	// one message, the detail: the answer of the connection check (package
	// gcs) or of credentials that cannot be used.
	wantField string
	anyField  bool   // validation_errors may name any one field
	wantMsg   string // detail, when set
}

// detailValidation is the detail of an answer that lists its errors in
// validation_errors, as Label Studio's exception handler has it.
const detailValidation = "Validation error"

// Label Studio's (Django REST framework's) messages.
const (
	msgRequired = "This field is required."
	msgBlank    = "This field may not be blank."
	msgBoolean  = "Must be a valid boolean."
	msgInteger  = "A valid integer is required."
)

// msgCredentialsInvalid is the answer for credentials that are saved but
// cannot be opened: it names no cause, since the cause may quote them.
const msgCredentialsInvalid = "Google credentials are invalid"

func runBodyCases(t *testing.T, f *fixture, path string, tests []bodyCase) {
	t.Helper()
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			r := f.authed(t, "POST", path+tt.query, tt.body)
			var e apiError
			switch {
			case tt.wantCode == http.StatusOK:
				var got map[string]any
				decodeOK(t, r, &got)
				return
			case tt.wantErrors != nil:
				e = decodeError(t, r, tt.wantCode)
				if diff := cmp.Diff(tt.wantErrors, e.ValidationErrors); diff != "" {
					t.Errorf("validation_errors (-want +got):\n%s\nbody: %s", diff, r.body)
				}
				if tt.wantMsg == "" && e.Detail != detailValidation {
					t.Errorf("detail: got %q, want %q", e.Detail, detailValidation)
				}
			case tt.wantField != "":
				e = checkValidation(t, r, tt.wantField)
			case tt.anyField:
				e = decodeError(t, r, tt.wantCode)
			default:
				// No field to name: validation_errors absent or empty.
				e = decodeError(t, r, tt.wantCode)
				if len(e.ValidationErrors) != 0 {
					t.Errorf("validation_errors: got %v, want none", e.ValidationErrors)
				}
			}
			if tt.wantMsg != "" && e.Detail != tt.wantMsg {
				t.Errorf("detail: got %q, want %q", e.Detail, tt.wantMsg)
			}
		})
	}
}

// commonImportBodies are the body cases validate and files share.
//
// These bodies are decoded as create and PATCH decode theirs
// (storages.DecodeImport). Cases written against the earlier, lenient
// decoding that now mean something else say so.
func commonImportBodies(t *testing.T) []bodyCase {
	head := `{"project":7,"bucket":"acme-raw"`
	tooBig := fmt.Sprintf("request body over %d bytes", MaxBodyBytes)
	anotherType := "Google Application Credentials of type authorized_user are not accepted; accepted types: service_account, external_account or impersonated_service_account"
	return []bodyCase{
		// The parse error names the offset, never the text around it
		// (which may be part of the credentials); no field.
		{name: "invalid JSON", body: `{"project":7,`, wantCode: http.StatusBadRequest, wantMsg: "JSON parse error - invalid JSON at byte 13"},
		{name: "not JSON", body: `bucket=acme-raw`, wantCode: http.StatusBadRequest, wantMsg: "JSON parse error - invalid JSON at byte 1"},
		// Changed: an empty body was a parse error; Django REST framework
		// reads it as an empty object, so it is now the two required
		// fields.
		{name: "empty body", body: ``, wantCode: http.StatusBadRequest,
			wantErrors: map[string][]string{"project": {msgRequired}, "bucket": {msgRequired}}},
		{name: "blank body", body: " \n", wantCode: http.StatusBadRequest,
			wantErrors: map[string][]string{"project": {msgRequired}, "bucket": {msgRequired}}},
		{name: "empty object", body: `{}`, wantCode: http.StatusBadRequest,
			wantErrors: map[string][]string{"project": {msgRequired}, "bucket": {msgRequired}}},
		// Changed: a JSON value other than an object is Label Studio's
		// non_field_errors, not a parse error without fields.
		{name: "array", body: `[{"project":7,"bucket":"acme-raw"}]`, wantCode: http.StatusBadRequest,
			wantErrors: map[string][]string{"non_field_errors": {"Invalid data. Expected a dictionary, but got list."}}},
		{name: "string", body: `"acme-raw"`, wantCode: http.StatusBadRequest,
			wantErrors: map[string][]string{"non_field_errors": {"Invalid data. Expected a dictionary, but got str."}}},
		// Changed: null was decoded as an empty storage and refused on
		// project; it is now non_field_errors.
		{name: "null", body: `null`, wantCode: http.StatusBadRequest,
			wantErrors: map[string][]string{"non_field_errors": {"Invalid data. Expected a dictionary, but got null."}}},
		// Changed: "yes" was a type error; it is a boolean to Django REST
		// framework, so the wrong type is now a word it does not know.
		{name: "wrong type", body: `{"project":7,"bucket":"acme-raw","recursive_scan":"maybe"}`, wantCode: http.StatusBadRequest,
			wantErrors: map[string][]string{"recursive_scan": {msgBoolean}}},
		{name: "boolean as yes", body: `{"project":7,"bucket":"acme-raw","recursive_scan":"yes","use_blob_urls":"0","presign":"false"}`, wantCode: http.StatusOK},
		{name: "project not a number", body: `{"project":"seven","bucket":"acme-raw"}`, wantCode: http.StatusBadRequest,
			wantErrors: map[string][]string{"project": {msgInteger}}},
		// Changed: SPEC §4 accepts numbers sent as numeric strings, as
		// Label Studio does; they were refused.
		{name: "numeric string", body: `{"project":"7","bucket":"acme-raw"}`, wantCode: http.StatusOK},
		{name: "numeric strings", body: `{"project":" 7 ","bucket":"acme-raw","presign_ttl":"60"}`, wantCode: http.StatusOK},
		{name: "body over MaxBodyBytes", body: sizedBody(head, MaxBodyBytes+1), wantCode: http.StatusRequestEntityTooLarge, wantMsg: tooBig},
		{name: "body far over MaxBodyBytes", body: sizedBody(head, 3*MaxBodyBytes), wantCode: http.StatusRequestEntityTooLarge, wantMsg: tooBig},
		{name: "body of exactly MaxBodyBytes", body: sizedBody(head, MaxBodyBytes), wantCode: http.StatusOK},
		{name: "title of the longest length", body: `{"project":7,"bucket":"acme-raw","title":"` + strings.Repeat("é", storages.MaxTitleLength) + `"}`, wantCode: http.StatusOK},
		{name: "title too long", body: `{"project":7,"bucket":"acme-raw","title":"` + strings.Repeat("x", storages.MaxTitleLength+1) + `"}`, wantCode: http.StatusBadRequest,
			wantErrors: map[string][]string{"title": {"Ensure this field has no more than 256 characters."}}},
		{name: "missing bucket", body: `{"project":7}`, wantCode: http.StatusBadRequest,
			wantErrors: map[string][]string{"bucket": {msgRequired}}},
		{name: "empty bucket", body: `{"project":7,"bucket":""}`, wantCode: http.StatusBadRequest,
			wantErrors: map[string][]string{"bucket": {msgBlank}}},
		{name: "gs URL as bucket", body: `{"project":7,"bucket":"gs://acme-raw"}`, wantCode: http.StatusBadRequest,
			wantErrors: map[string][]string{"bucket": {"must be a bucket name, not a gs:// URL"}}},
		{name: "missing project", body: `{"bucket":"acme-raw"}`, wantCode: http.StatusBadRequest,
			wantErrors: map[string][]string{"project": {msgRequired}}},
		{name: "negative project", body: `{"project":-7,"bucket":"acme-raw"}`, wantCode: http.StatusBadRequest,
			wantErrors: map[string][]string{"project": {"must be positive"}}},
		{name: "invalid regex", body: `{"project":7,"bucket":"acme-raw","regex_filter":"(["}`, wantCode: http.StatusBadRequest,
			wantErrors: map[string][]string{"regex_filter": {"error parsing regexp: missing closing ]: `[`"}}},
		{name: "presign_ttl over a week", body: `{"project":7,"bucket":"acme-raw","presign_ttl":10081}`, wantCode: http.StatusBadRequest,
			wantErrors: map[string][]string{"presign_ttl": {"Ensure this value is less than or equal to 10080."}}},
		{name: "presign_ttl a week", body: `{"project":7,"bucket":"acme-raw","presign_ttl":10080}`, wantCode: http.StatusOK},
		{name: "presign_ttl negative", body: `{"project":7,"bucket":"acme-raw","presign_ttl":-1}`, wantCode: http.StatusBadRequest,
			wantErrors: map[string][]string{"presign_ttl": {"Ensure this value is greater than or equal to 1."}}},
		{name: "presign_ttl zero", body: `{"project":7,"bucket":"acme-raw","presign_ttl":0}`, wantCode: http.StatusBadRequest,
			wantErrors: map[string][]string{"presign_ttl": {"Ensure this value is greater than or equal to 1."}}},
		// Every invalid field at once, as Label Studio reports them.
		{name: "several invalid fields", body: `{"project":"x","bucket":"","presign_ttl":0,"recursive_scan":"maybe","regex_filter":"(["}`, wantCode: http.StatusBadRequest,
			wantErrors: map[string][]string{
				"project":        {msgInteger},
				"bucket":         {msgBlank},
				"presign_ttl":    {"Ensure this value is greater than or equal to 1."},
				"recursive_scan": {msgBoolean},
				"regex_filter":   {"error parsing regexp: missing closing ]: `[`"},
			}},
		// An id no storage has is no base: the body is an unsaved storage
		// and needs its bucket (Label Studio would answer 404 here).
		{name: "unknown id without bucket", body: `{"id":99,"project":7}`, wantCode: http.StatusBadRequest,
			wantErrors: map[string][]string{"bucket": {msgRequired}}},
		{name: "unknown id, whole storage", body: `{"id":99,"project":7,"bucket":"acme-raw","prefix":"incoming"}`, wantCode: http.StatusOK},
		{name: "negative id", body: `{"id":-1,"project":7,"bucket":"acme-raw"}`, wantCode: http.StatusBadRequest,
			wantErrors: map[string][]string{"id": {"must be positive"}}},
		// Changed: storage 3's credentials were refused through the saved
		// client. The fixture's Set holds them in plaintext (never sealed;
		// the catalog only ever serves sealed ones), so they now serve
		// directly, as the storage's own credentials: a 200. Storage 4 has
		// sealed credentials that cannot be opened.
		{name: "saved storage with plaintext credentials", body: `{"id":3}`, wantCode: http.StatusOK},
		{name: "saved storage whose credentials do not open", body: `{"id":4}`, wantCode: http.StatusBadRequest,
			wantField: "google_application_credentials", wantMsg: msgCredentialsInvalid},
		{name: "saved storage whose credentials do not open, as a numeric string", body: `{"id":"4"}`, wantCode: http.StatusBadRequest,
			wantField: "google_application_credentials", wantMsg: msgCredentialsInvalid},
		// null drops the saved credentials for this request:
		// Application Default Credentials.
		{name: "saved storage without its credentials", body: `{"id":4,"google_application_credentials":null}`, wantCode: http.StatusOK},
		{name: "credentials not JSON", body: `{"project":7,"bucket":"acme-raw","google_application_credentials":"/etc/key.json"}`, wantCode: http.StatusBadRequest,
			wantErrors: map[string][]string{"google_application_credentials": {"Google Application Credentials must be valid JSON string"}}},
		{name: "credentials of another type", body: mustJSON(t, map[string]any{"project": 7, "bucket": "acme-raw", "google_application_credentials": `{"type":"authorized_user"}`}), wantCode: http.StatusBadRequest,
			wantErrors: map[string][]string{"google_application_credentials": {anotherType}}},
		{name: "Label Studio's read-only fields", body: `{"project":7,"bucket":"acme-raw","type":"gcs","status":"completed","meta":{},"last_sync":null,"last_sync_count":3,"traceback":null,"created_at":"2026-01-02T03:04:05Z","synchronizable":true}`, wantCode: http.StatusOK},
		// Changed: unknown fields were ignored; SPEC §4 refuses them with
		// a 400 naming them, every one.
		{name: "unknown field", body: `{"project":7,"bucket":"acme-raw","colour":"red"}`, wantCode: http.StatusBadRequest, wantMsg: "unknown field(s): colour"},
		{name: "unknown fields", body: `{"project":7,"bucket":"acme-raw","colour":"red","flavour":1}`, wantCode: http.StatusBadRequest, wantMsg: "unknown field(s): colour, flavour"},
		{name: "export field", body: `{"project":7,"bucket":"acme-raw","can_delete_objects":true}`, wantCode: http.StatusBadRequest, wantMsg: "unknown field(s): can_delete_objects"},
		{name: "unknown field and an invalid one", body: `{"project":"x","bucket":"acme-raw","colour":"red"}`, wantCode: http.StatusBadRequest,
			wantMsg: "unknown field(s): colour", wantErrors: map[string][]string{"project": {msgInteger}}},
		{name: "valid credentials", body: mustJSON(t, map[string]any{"project": 7, "bucket": "acme-raw", "google_application_credentials": markedCredentials(t)}), wantCode: http.StatusOK},
	}
}

func TestValidateImport(t *testing.T) {
	t.Parallel()
	f := newFixture(t, config{})
	tests := append(commonImportBodies(t),
		bodyCase{name: "whole bucket", body: `{"project":7,"bucket":"acme-raw"}`, wantCode: http.StatusOK},
		bodyCase{name: "prefix with objects", body: `{"project":7,"bucket":"acme-raw","prefix":"incoming/"}`, wantCode: http.StatusOK},
		bodyCase{name: "empty bucket, no prefix", body: `{"project":7,"bucket":"acme-labels"}`, wantCode: http.StatusOK},
		bodyCase{name: "prefix without objects", body: `{"project":7,"bucket":"acme-raw","prefix":"images"}`, wantCode: http.StatusBadRequest,
			wantField: "prefix", wantMsg: "No blobs found in acme-raw/images or prefix doesn't exist"},
		bodyCase{name: "prefix is not a key prefix", body: `{"project":7,"bucket":"acme-raw","prefix":"incom"}`, wantCode: http.StatusBadRequest, wantField: "prefix"},
		bodyCase{name: "bucket does not exist", body: `{"project":7,"bucket":"acme-nope"}`, wantCode: http.StatusBadRequest,
			wantField: "bucket", wantMsg: "Bucket acme-nope doesn't exist"},
		bodyCase{name: "saved storage by id", body: `{"id":1}`, wantCode: http.StatusOK},
		// A saved storage with changed fields (TestValidateSavedImport
		// has more).
		bodyCase{name: "saved storage, other prefix", body: `{"id":1,"prefix":"other"}`, wantCode: http.StatusOK},
		bodyCase{name: "saved storage, prefix without objects", body: `{"id":1,"prefix":"images"}`, wantCode: http.StatusBadRequest,
			wantField: "prefix", wantMsg: "No blobs found in acme-raw/images or prefix doesn't exist"},
		bodyCase{name: "saved storage, bucket does not exist", body: `{"id":1,"bucket":"acme-nope"}`, wantCode: http.StatusBadRequest,
			wantField: "bucket", wantMsg: "Bucket acme-nope doesn't exist"},
		bodyCase{name: "unknown id, bucket does not exist", body: `{"id":99,"project":7,"bucket":"acme-nope"}`, wantCode: http.StatusBadRequest,
			wantField: "bucket", wantMsg: "Bucket acme-nope doesn't exist"},
	)
	runBodyCases(t, f, "/api/storages/gcs/validate", tests)
}

// TestValidateSavedImport: a body naming the id of a saved storage is
// decoded on top of it, as Label Studio's validate does for a storage
// being edited: the body's fields replace the saved ones, the others stay,
// and the saved credentials serve unless the body sends others. The saved
// storage itself does not change.
func TestValidateSavedImport(t *testing.T) {
	t.Parallel()
	marked := markedCredentials(t)
	// Storage 5 has sealed credentials the fixture's saved client opens.
	imports := append(defaultImports(t), sealedImport(storages.Import{ID: 5, Project: 7, Bucket: "acme-raw", Prefix: "incoming"}, "sealed-5"))
	// uses says which credentials served: the saved storage's own (its
	// bucket and prefix as the check saw them), or inline ones ("" for
	// Application Default Credentials).
	type uses struct {
		saved  bool
		bucket string
		prefix string
		inline string
	}
	tests := []struct {
		name      string
		body      string
		wantCode  int
		wantField string // with wantCode 400
		wantMsg   string
		want      uses
	}{
		{name: "other prefix, sealed credentials", body: `{"id":5,"prefix":"other"}`, wantCode: http.StatusOK,
			want: uses{saved: true, bucket: "acme-raw", prefix: "other"}},
		{name: "other prefix without objects, sealed credentials", body: `{"id":5,"prefix":"images"}`, wantCode: http.StatusBadRequest,
			wantField: "prefix", wantMsg: "No blobs found in acme-raw/images or prefix doesn't exist",
			want: uses{saved: true, bucket: "acme-raw", prefix: "images"}},
		{name: "bucket does not exist, sealed credentials", body: `{"id":5,"bucket":"acme-nope"}`, wantCode: http.StatusBadRequest,
			wantField: "bucket", wantMsg: "Bucket acme-nope doesn't exist",
			want: uses{saved: true, bucket: "acme-nope", prefix: "incoming"}},
		// Label Studio's form leaves the write-only field empty.
		{name: "blank credentials keep the saved ones", body: `{"id":5,"prefix":"other","google_application_credentials":""}`, wantCode: http.StatusOK,
			want: uses{saved: true, bucket: "acme-raw", prefix: "other"}},
		{name: "id as a numeric string", body: `{"id":"5","prefix":"other"}`, wantCode: http.StatusOK,
			want: uses{saved: true, bucket: "acme-raw", prefix: "other"}},
		// The whole storage as the API shows it, sent back with a change.
		{name: "storage as read, changed", body: `{"id":5,"project":7,"bucket":"acme-raw","prefix":"other","use_blob_urls":false,"recursive_scan":false,"presign":true,"presign_ttl":15,"data_key":"$undefined$","type":"gcs","status":"completed","last_sync":null,"last_sync_count":null,"traceback":null,"meta":{}}`, wantCode: http.StatusOK,
			want: uses{saved: true, bucket: "acme-raw", prefix: "other"}},
		{name: "null drops the saved credentials", body: `{"id":5,"google_application_credentials":null}`, wantCode: http.StatusOK,
			want: uses{inline: ""}},
		{name: "other credentials replace the saved ones", body: mustJSON(t, map[string]any{"id": 5, "prefix": "other", "google_application_credentials": marked}), wantCode: http.StatusOK,
			want: uses{inline: marked}},
		// Storage 1 has no credentials of its own: Application Default
		// Credentials.
		{name: "other prefix, no credentials", body: `{"id":1,"prefix":"other"}`, wantCode: http.StatusOK,
			want: uses{inline: ""}},
		{name: "bucket does not exist, no credentials", body: `{"id":1,"bucket":"acme-nope"}`, wantCode: http.StatusBadRequest,
			wantField: "bucket", wantMsg: "Bucket acme-nope doesn't exist", want: uses{inline: ""}},
		{name: "saved credentials do not open", body: `{"id":4,"prefix":"x"}`, wantCode: http.StatusBadRequest,
			wantField: "google_application_credentials", wantMsg: msgCredentialsInvalid,
			want: uses{saved: true, bucket: "acme-more", prefix: "x"}},
		// An id no storage has: an unsaved storage, the body alone.
		{name: "unknown id", body: `{"id":99,"project":7,"bucket":"acme-raw","prefix":"other"}`, wantCode: http.StatusOK,
			want: uses{inline: ""}},
		{name: "unknown id, bucket does not exist", body: `{"id":99,"project":7,"bucket":"acme-nope"}`, wantCode: http.StatusBadRequest,
			wantField: "bucket", wantMsg: "Bucket acme-nope doesn't exist", want: uses{inline: ""}},
	}
	for _, tt := range tests {
		for _, path := range []string{"/api/storages/gcs/validate", "/api/storages/gcs/files"} {
			t.Run(path+"/"+tt.name, func(t *testing.T) {
				t.Parallel()
				f := newFixture(t, config{withSets: true, imports: imports, exports: defaultExports(t)})
				r := f.authed(t, "POST", path, tt.body)
				switch {
				case tt.wantCode == http.StatusOK:
					var got map[string]any
					decodeOK(t, r, &got)
				case path == "/api/storages/gcs/files" && tt.wantField == "bucket":
					// files answers gcs.Preview's own error for a missing
					// bucket (see TestFilesErrors).
					decodeError(t, r, tt.wantCode)
				case path == "/api/storages/gcs/files" && tt.wantField == "prefix":
					// A prefix without objects is an empty preview.
					if r.code != http.StatusOK {
						t.Errorf("status: got %d, want 200 (body %s)", r.code, r.body)
					}
				default:
					e := checkValidation(t, r, tt.wantField)
					if e.Detail != tt.wantMsg {
						t.Errorf("detail: got %q, want %q", e.Detail, tt.wantMsg)
					}
				}
				inline, saved := f.calls.get()
				var got uses
				switch {
				case len(saved) == 1 && len(inline) == 0:
					got = uses{saved: true, bucket: saved[0].Bucket, prefix: saved[0].Prefix}
				case len(saved) == 0 && len(inline) == 1:
					got = uses{inline: inline[0]}
				default:
					t.Fatalf("client requests: %d with saved credentials, %d inline; want one", len(saved), len(inline))
				}
				if got != tt.want {
					// Not %v: inline credentials would fill the log.
					t.Errorf("client: got saved=%v bucket=%q prefix=%q inline=%d bytes, want saved=%v bucket=%q prefix=%q inline=%d bytes",
						got.saved, got.bucket, got.prefix, len(got.inline), tt.want.saved, tt.want.bucket, tt.want.prefix, len(tt.want.inline))
				}
				if got.saved && saved[0].ID != idOf(t, tt.body) {
					t.Errorf("saved client for storage %d, want %d", saved[0].ID, idOf(t, tt.body))
				}
				// The saved storage is as it was.
				if id := idOf(t, tt.body); id < 99 {
					var st map[string]any
					decodeOK(t, f.authed(t, "GET", fmt.Sprintf("/api/storages/gcs/%d", id), ""), &st)
					for _, want := range imports {
						if want.ID == id && (str(st["bucket"]) != want.Bucket || str(st["prefix"]) != want.Prefix) {
							t.Errorf("storage %d after validate: bucket %v prefix %v, want %q %q", id, st["bucket"], st["prefix"], want.Bucket, want.Prefix)
						}
					}
				}
			})
		}
	}
}

// An id names the saved storage in every form the decoder reads as that
// integer (storages.DecodeImport: 1, "1", " 1 ", "1.0", 1.0, 1e0).
//
// bodyID reads ids as the decoder does: 1.0, "1.0" and 1e0 name storage 1.
func TestValidateSavedImportIDForms(t *testing.T) {
	t.Parallel()
	f := newFixture(t, config{})
	for _, id := range []string{`1`, `"1"`, `" 1 "`, `"1.0"`, `1.0`, `1e0`} {
		t.Run(id, func(t *testing.T) {
			t.Parallel()
			r := f.authed(t, "POST", "/api/storages/gcs/validate", `{"id":`+id+`,"prefix":"images"}`)
			e := checkValidation(t, r, "prefix")
			if want := "No blobs found in acme-raw/images or prefix doesn't exist"; e.Detail != want {
				t.Errorf("detail: got %q, want %q", e.Detail, want)
			}
		})
	}
}

// str is a JSON string field read into a map; "" when absent.
func str(v any) string {
	s, _ := v.(string)
	return s
}

// idOf is the id a test body names.
func idOf(t *testing.T, body string) int64 {
	t.Helper()
	var b struct {
		ID json.Number `json:"id"`
	}
	if err := json.Unmarshal([]byte(body), &b); err != nil {
		t.Fatalf("body: %v", err)
	}
	id, err := b.ID.Int64()
	if err != nil {
		t.Fatalf("id %q: %v", b.ID, err)
	}
	return id
}

// TestValidateSavedExport is TestValidateSavedImport for export storages.
func TestValidateSavedExport(t *testing.T) {
	t.Parallel()
	marked := markedCredentials(t)
	tests := []struct {
		name       string
		body       string
		wantCode   int
		wantField  string
		wantMsg    string
		wantInline *string // the credentials the client was asked with; nil: no client
	}{
		// Storage 10's credentials are in the fixture's list in plaintext.
		{name: "other prefix, saved credentials", body: `{"id":10,"prefix":"elsewhere"}`, wantCode: http.StatusOK, wantInline: &marked},
		{name: "bucket does not exist, saved credentials", body: `{"id":10,"bucket":"acme-nope"}`, wantCode: http.StatusBadRequest,
			wantField: "bucket", wantMsg: "Bucket acme-nope doesn't exist", wantInline: &marked},
		{name: "blank credentials keep the saved ones", body: `{"id":10,"google_application_credentials":" "}`, wantCode: http.StatusOK, wantInline: &marked},
		{name: "null drops the saved credentials", body: `{"id":10,"google_application_credentials":null}`, wantCode: http.StatusOK, wantInline: new("")},
		{name: "other bucket, no credentials", body: `{"id":11,"bucket":"acme-raw"}`, wantCode: http.StatusOK, wantInline: new("")},
		// Sealed, and no key in this API: no client is asked for.
		{name: "saved credentials do not open", body: `{"id":12,"prefix":"x"}`, wantCode: http.StatusBadRequest,
			wantField: "google_application_credentials", wantMsg: msgCredentialsInvalid},
		{name: "other credentials replace sealed ones", body: mustJSON(t, map[string]any{"id": 12, "google_application_credentials": marked}), wantCode: http.StatusOK, wantInline: &marked},
		{name: "unknown id", body: `{"id":99,"project":7,"bucket":"acme-labels"}`, wantCode: http.StatusOK, wantInline: new("")},
		{name: "unknown id, bucket does not exist", body: `{"id":99,"project":7,"bucket":"acme-nope"}`, wantCode: http.StatusBadRequest,
			wantField: "bucket", wantMsg: "Bucket acme-nope doesn't exist", wantInline: new("")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			f := newFixture(t, config{})
			r := f.authed(t, "POST", "/api/storages/export/gcs/validate", tt.body)
			if tt.wantCode == http.StatusOK {
				var got map[string]any
				decodeOK(t, r, &got)
			} else {
				e := checkValidation(t, r, tt.wantField)
				if e.Detail != tt.wantMsg {
					t.Errorf("detail: got %q, want %q", e.Detail, tt.wantMsg)
				}
			}
			inline, saved := f.calls.get()
			if len(saved) != 0 {
				t.Errorf("the import storages' saved client was asked for %d times", len(saved))
			}
			switch {
			case tt.wantInline == nil && len(inline) != 0:
				t.Errorf("client asked for %d times, want none", len(inline))
			case tt.wantInline != nil && len(inline) != 1:
				t.Errorf("client asked for %d times, want once", len(inline))
			case tt.wantInline != nil && strings.TrimSpace(inline[0]) != strings.TrimSpace(*tt.wantInline):
				t.Errorf("client asked with %d bytes of credentials (marked: %v), want %d bytes (marked: %v)",
					len(inline[0]), strings.Contains(inline[0], marker), len(*tt.wantInline), strings.Contains(*tt.wantInline, marker))
			}
			// The saved storage is as it was.
			if id := idOf(t, tt.body); id < 99 {
				var st map[string]any
				decodeOK(t, f.authed(t, "GET", fmt.Sprintf("/api/storages/export/gcs/%d", id), ""), &st)
				for _, want := range defaultExports(t) {
					if want.ID == id && (str(st["bucket"]) != want.Bucket || str(st["prefix"]) != want.Prefix) {
						t.Errorf("storage %d after validate: bucket %v prefix %v, want %q %q", id, st["bucket"], st["prefix"], want.Bucket, want.Prefix)
					}
				}
			}
		})
	}
}

func TestValidateImportAnswer(t *testing.T) {
	t.Parallel()
	f := newFixture(t, config{})
	r := f.authed(t, "POST", "/api/storages/gcs/validate", `{"project":7,"bucket":"acme-raw","prefix":"incoming"}`)
	if r.code != http.StatusOK {
		t.Fatalf("status: got %d, want 200 (body %s)", r.code, r.body)
	}
	if got, want := strings.TrimSpace(r.body), "{}"; got != want {
		t.Errorf("body: got %s, want %s", got, want)
	}
}

type preview struct {
	Files []struct {
		Key          string    `json:"key"`
		LastModified time.Time `json:"last_modified"`
		Size         int64     `json:"size"`
	} `json:"files"`
	Truncated bool `json:"truncated"`
}

func TestFiles(t *testing.T) {
	t.Parallel()
	f := newFixture(t, config{})
	tests := []struct {
		name          string
		query         string
		body          string
		wantKeys      []string
		wantTruncated bool
	}{
		{name: "direct children", body: `{"project":7,"bucket":"acme-raw","prefix":"incoming"}`,
			wantKeys: []string{"incoming/a.jpg", "incoming/b.png"}},
		{name: "recursive", body: `{"project":7,"bucket":"acme-raw","prefix":"incoming/","recursive_scan":true}`,
			wantKeys: []string{"incoming/a.jpg", "incoming/b.png", "incoming/sub/c.jpg"}},
		{name: "regex filter", body: `{"project":7,"bucket":"acme-raw","prefix":"incoming","recursive_scan":true,"regex_filter":".*\\.jpg$"}`,
			wantKeys: []string{"incoming/a.jpg", "incoming/sub/c.jpg"}},
		{name: "whole bucket", body: `{"project":7,"bucket":"acme-raw","recursive_scan":true}`,
			wantKeys: []string{"incoming/a.jpg", "incoming/b.png", "incoming/sub/c.jpg", "other/d.json"}},
		{name: "limit reached", query: "?limit=1", body: `{"project":7,"bucket":"acme-raw","prefix":"incoming"}`,
			wantKeys: []string{"incoming/a.jpg"}, wantTruncated: true},
		{name: "limit just enough", query: "?limit=2", body: `{"project":7,"bucket":"acme-raw","prefix":"incoming"}`,
			wantKeys: []string{"incoming/a.jpg", "incoming/b.png"}},
		{name: "largest limit", query: "?limit=10000", body: `{"project":7,"bucket":"acme-raw","prefix":"incoming"}`,
			wantKeys: []string{"incoming/a.jpg", "incoming/b.png"}},
		{name: "nothing under the prefix", body: `{"project":7,"bucket":"acme-raw","prefix":"images"}`,
			wantKeys: []string{}},
		{name: "empty bucket", body: `{"project":7,"bucket":"acme-labels"}`,
			wantKeys: []string{}},
		{name: "saved storage by id", body: `{"id":1}`,
			wantKeys: []string{"incoming/a.jpg", "incoming/b.png"}},
		{name: "saved storage by id, other settings", body: `{"id":2}`,
			wantKeys: []string{"other/d.json"}},
		// A saved storage with changed fields: the body's fields replace
		// the saved ones, the others stay (storage 1 is not recursive,
		// storage 2 is).
		{name: "saved storage, other prefix", body: `{"id":1,"prefix":"other"}`,
			wantKeys: []string{"other/d.json"}},
		{name: "saved storage, other prefix, its own recursion", body: `{"id":2,"prefix":"incoming"}`,
			wantKeys: []string{"incoming/a.jpg", "incoming/b.png", "incoming/sub/c.jpg"}},
		{name: "saved storage, other regex", body: `{"id":2,"prefix":"incoming","regex_filter":".*\\.png$"}`,
			wantKeys: []string{"incoming/b.png"}},
		{name: "saved storage, id as a numeric string", body: `{"id":"1","recursive_scan":true}`,
			wantKeys: []string{"incoming/a.jpg", "incoming/b.png", "incoming/sub/c.jpg"}},
		// An id no storage has: the body alone is the storage.
		{name: "unknown id", body: `{"id":99,"project":7,"bucket":"acme-raw","prefix":"other"}`,
			wantKeys: []string{"other/d.json"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			r := f.authed(t, "POST", "/api/storages/gcs/files"+tt.query, tt.body)
			var got preview
			decodeOK(t, r, &got)
			if got.Files == nil {
				t.Errorf("files is null, want an array: %s", r.body)
			}
			keys := []string{}
			for _, file := range got.Files {
				keys = append(keys, file.Key)
				bucket := "acme-raw"
				if want := int64(len(objects[bucket][file.Key])); file.Size != want {
					t.Errorf("%s: size got %d, want %d", file.Key, file.Size, want)
				}
				if file.LastModified.IsZero() {
					t.Errorf("%s: last_modified is zero", file.Key)
				}
			}
			if diff := cmp.Diff(tt.wantKeys, keys); diff != "" {
				t.Errorf("keys (-want +got):\n%s", diff)
			}
			if got.Truncated != tt.wantTruncated {
				t.Errorf("truncated: got %v, want %v", got.Truncated, tt.wantTruncated)
			}
		})
	}
}

func TestFilesErrors(t *testing.T) {
	t.Parallel()
	f := newFixture(t, config{})
	body := `{"project":7,"bucket":"acme-raw","prefix":"incoming"}`
	tests := commonImportBodies(t)
	for _, limit := range []string{"0", "-1", "10001", "abc", "1.5"} {
		tests = append(tests, bodyCase{name: "limit " + limit, query: "?limit=" + limit, body: body,
			wantCode: http.StatusBadRequest, wantMsg: "limit must be 1..10000"})
	}
	// A missing bucket is a 400. Which field it names is not pinned: files
	// passes gcs.Preview's raw list error to validationError, unlike
	// validate, which answers "Bucket … doesn't exist" on bucket.
	tests = append(tests, bodyCase{name: "bucket does not exist", body: `{"project":7,"bucket":"acme-nope"}`, wantCode: http.StatusBadRequest, anyField: true})
	runBodyCases(t, f, "/api/storages/gcs/files", tests)
}

func TestValidateExport(t *testing.T) {
	t.Parallel()
	f := newFixture(t, config{})
	head := `{"project":7,"bucket":"acme-labels"`
	tooBig := fmt.Sprintf("request body over %d bytes", MaxBodyBytes)
	noType := `Google Application Credentials have no "type"; accepted types: service_account, external_account or impersonated_service_account`
	tests := []bodyCase{
		{name: "valid", body: `{"project":7,"bucket":"acme-labels","prefix":"annotations"}`, wantCode: http.StatusOK},
		{name: "object key", body: `{"project":7,"bucket":"acme-labels","object_key":"{task_id}.json"}`, wantCode: http.StatusOK},
		{name: "bucket with objects", body: `{"project":7,"bucket":"acme-raw"}`, wantCode: http.StatusOK},
		// Changed: unknown fields were ignored; SPEC §4 refuses them.
		{name: "unknown field", body: `{"project":7,"bucket":"acme-labels","colour":"red"}`, wantCode: http.StatusBadRequest, wantMsg: "unknown field(s): colour"},
		{name: "import-only field", body: `{"project":7,"bucket":"acme-labels","presign_ttl":15}`, wantCode: http.StatusBadRequest, wantMsg: "unknown field(s): presign_ttl"},
		// Fields Label Studio's export storages carry without using.
		{name: "regex_filter and use_blob_urls ignored", body: `{"project":7,"bucket":"acme-labels","regex_filter":"([","use_blob_urls":"maybe"}`, wantCode: http.StatusOK},
		{name: "Label Studio's read-only fields", body: `{"project":7,"bucket":"acme-labels","type":"gcs","status":"completed","meta":{},"last_sync":null,"synchronizable":true}`, wantCode: http.StatusOK},
		{name: "valid credentials", body: mustJSON(t, map[string]any{"project": 7, "bucket": "acme-labels", "google_application_credentials": markedCredentials(t)}), wantCode: http.StatusOK},
		{name: "body of exactly MaxBodyBytes", body: sizedBody(head, MaxBodyBytes), wantCode: http.StatusOK},
		{name: "title too long", body: `{"project":7,"bucket":"acme-labels","title":"` + strings.Repeat("x", storages.MaxTitleLength+1) + `"}`, wantCode: http.StatusBadRequest,
			wantErrors: map[string][]string{"title": {"Ensure this field has no more than 256 characters."}}},
		{name: "invalid JSON", body: `{"project":7,"bucket":`, wantCode: http.StatusBadRequest, wantMsg: "JSON parse error - invalid JSON at byte 22"},
		// Changed: an empty body was a parse error; it is now an empty
		// object, missing its two required fields.
		{name: "empty body", body: ``, wantCode: http.StatusBadRequest,
			wantErrors: map[string][]string{"project": {msgRequired}, "bucket": {msgRequired}}},
		{name: "array", body: `[]`, wantCode: http.StatusBadRequest,
			wantErrors: map[string][]string{"non_field_errors": {"Invalid data. Expected a dictionary, but got list."}}},
		// Changed: "yes" is a boolean to Django REST framework.
		{name: "wrong type", body: `{"project":7,"bucket":"acme-labels","can_delete_objects":"maybe"}`, wantCode: http.StatusBadRequest,
			wantErrors: map[string][]string{"can_delete_objects": {msgBoolean}}},
		{name: "boolean as yes", body: `{"project":7,"bucket":"acme-labels","can_delete_objects":"yes"}`, wantCode: http.StatusOK},
		{name: "numeric string", body: `{"project":"7","bucket":"acme-labels"}`, wantCode: http.StatusOK},
		{name: "body over MaxBodyBytes", body: sizedBody(head, MaxBodyBytes+1), wantCode: http.StatusRequestEntityTooLarge, wantMsg: tooBig},
		{name: "missing bucket", body: `{"project":7}`, wantCode: http.StatusBadRequest,
			wantErrors: map[string][]string{"bucket": {msgRequired}}},
		{name: "missing project", body: `{"bucket":"acme-labels"}`, wantCode: http.StatusBadRequest,
			wantErrors: map[string][]string{"project": {msgRequired}}},
		{name: "bucket does not exist", body: `{"project":7,"bucket":"acme-nope"}`, wantCode: http.StatusBadRequest,
			wantField: "bucket", wantMsg: "Bucket acme-nope doesn't exist"},
		{name: "bad object key", body: `{"project":7,"bucket":"acme-labels","object_key":"{id}"}`, wantCode: http.StatusBadRequest,
			wantErrors: map[string][]string{"object_key": {`must be one of "{annotation_id}", "{annotation_id}.json", "{task_id}.json"`}}},
		{name: "credentials not JSON", body: `{"project":7,"bucket":"acme-labels","google_application_credentials":"/etc/key.json"}`, wantCode: http.StatusBadRequest,
			wantErrors: map[string][]string{"google_application_credentials": {"Google Application Credentials must be valid JSON string"}}},
		{name: "credentials JSON of no type", body: `{"project":7,"bucket":"acme-labels","google_application_credentials":"{}"}`, wantCode: http.StatusBadRequest,
			wantErrors: map[string][]string{"google_application_credentials": {noType}}},
		{name: "several invalid fields", body: `{"project":-1,"bucket":"gs://acme-labels","object_key":"{id}","can_delete_objects":"maybe"}`, wantCode: http.StatusBadRequest,
			wantErrors: map[string][]string{
				"project":            {"must be positive"},
				"bucket":             {"must be a bucket name, not a gs:// URL"},
				"object_key":         {`must be one of "{annotation_id}", "{annotation_id}.json", "{task_id}.json"`},
				"can_delete_objects": {msgBoolean},
			}},
		// can_delete_objects is nullable in Label Studio's model: null is
		// false.
		{name: "can_delete_objects null", body: `{"project":7,"bucket":"acme-labels","can_delete_objects":null}`, wantCode: http.StatusOK},
		// A saved storage named by id, with changed fields (see
		// TestValidateSavedExport).
		{name: "saved storage by id", body: `{"id":10}`, wantCode: http.StatusOK},
		{name: "saved storage, other prefix", body: `{"id":10,"prefix":"elsewhere"}`, wantCode: http.StatusOK},
		{name: "saved storage, bucket does not exist", body: `{"id":10,"bucket":"acme-nope"}`, wantCode: http.StatusBadRequest,
			wantField: "bucket", wantMsg: "Bucket acme-nope doesn't exist"},
		{name: "saved storage, bad object key", body: `{"id":11,"object_key":"{id}"}`, wantCode: http.StatusBadRequest,
			wantErrors: map[string][]string{"object_key": {`must be one of "{annotation_id}", "{annotation_id}.json", "{task_id}.json"`}}},
		{name: "saved storage, unknown field", body: `{"id":11,"colour":"red"}`, wantCode: http.StatusBadRequest, wantMsg: "unknown field(s): colour"},
		// Storage 12's credentials are sealed and this API has no key.
		{name: "saved storage whose credentials do not open", body: `{"id":12}`, wantCode: http.StatusBadRequest,
			wantField: "google_application_credentials", wantMsg: msgCredentialsInvalid},
		{name: "saved storage without its credentials", body: `{"id":12,"google_application_credentials":null}`, wantCode: http.StatusOK},
		// An id no storage has (1 is an import storage): the body alone.
		{name: "unknown id without bucket", body: `{"id":1}`, wantCode: http.StatusBadRequest,
			wantErrors: map[string][]string{"project": {msgRequired}, "bucket": {msgRequired}}},
		{name: "unknown id, whole storage", body: `{"id":99,"project":7,"bucket":"acme-labels"}`, wantCode: http.StatusOK},
	}
	runBodyCases(t, f, "/api/storages/export/gcs/validate", tests)
}

func TestListExports(t *testing.T) {
	t.Parallel()
	f := newFixture(t, config{})
	tests := []struct {
		query string
		want  []int64
	}{
		{"", []int64{10, 11, 12}},
		{"?project=7", []int64{10}},
		{"?project=8", []int64{11, 12}},
		{"?project=99", []int64{}},
	}
	for _, path := range []string{"/api/storages/export/gcs", "/api/storages/export/gcs/"} {
		for _, tt := range tests {
			t.Run(path+tt.query, func(t *testing.T) {
				t.Parallel()
				got := ids(t, f.authed(t, "GET", path+tt.query, ""))
				if diff := cmp.Diff(tt.want, got); diff != "" {
					t.Errorf("ids (-want +got):\n%s", diff)
				}
			})
		}
		for _, bad := range []string{"abc", "0", "-3"} {
			t.Run(path+" bad project "+bad, func(t *testing.T) {
				t.Parallel()
				decodeError(t, f.authed(t, "GET", path+"?project="+bad, ""), http.StatusBadRequest)
			})
		}
	}
}

func TestListExportsEmpty(t *testing.T) {
	t.Parallel()
	f := newFixture(t, config{withSets: true})
	for _, path := range []string{"/api/storages/gcs", "/api/storages/gcs/", "/api/storages/export/gcs", "/api/storages/export/gcs/"} {
		if got := ids(t, f.authed(t, "GET", path, "")); len(got) != 0 {
			t.Errorf("%s: got %v, want []", path, got)
		}
	}
}

func TestGetExport(t *testing.T) {
	t.Parallel()
	f := newFixture(t, config{})
	t.Run("full view", func(t *testing.T) {
		t.Parallel()
		var got map[string]any
		decodeOK(t, f.authed(t, "GET", "/api/storages/export/gcs/10", ""), &got)
		want := map[string]any{
			"id": 10.0, "project": 7.0, "title": "labels", "bucket": "acme-labels", "prefix": "annotations",
			"can_delete_objects": true, "object_key": "{annotation_id}", "type": "gcs", "status": "initialized",
			"last_sync": nil, "last_sync_count": nil, "traceback": nil, "meta": map[string]any{},
		}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("export 10 (-want +got):\n%s", diff)
		}
	})
	for _, id := range []string{"11"} {
		t.Run(id, func(t *testing.T) {
			t.Parallel()
			var got struct {
				ID int64 `json:"id"`
			}
			decodeOK(t, f.authed(t, "GET", "/api/storages/export/gcs/"+id, ""), &got)
			if got.ID != 11 {
				t.Errorf("id: got %d, want 11", got.ID)
			}
		})
	}
	for _, id := range []string{"1", "42", "-10", "abc", "validate"} {
		t.Run("not found "+id, func(t *testing.T) {
			t.Parallel()
			e := decodeError(t, f.authed(t, "GET", "/api/storages/export/gcs/"+id, ""), http.StatusNotFound)
			if want := "Not found."; e.Detail != want {
				t.Errorf("detail: got %q, want %q", e.Detail, want)
			}
		})
	}
}

// TestNoCredentialsInAnswers sends credentials carrying marker every way
// the routes take them, right and wrong, and reads back every storage that
// holds such credentials: no answer and no log line may contain marker.
func TestNoCredentialsInAnswers(t *testing.T) {
	t.Parallel()
	valid := markedCredentials(t)
	badCreds := []struct {
		name  string
		creds string
	}{
		{"valid service account", valid},
		{"not JSON", marker},
		{"path", "/secrets/" + marker + ".json"},
		{"JSON string", `"` + marker + `"`},
		{"unknown type", `{"type":"` + marker + `"}`},
		{"service account without key", `{"type":"service_account","client_email":"` + marker + `"}`},
		{"service account with a broken key", `{"type":"service_account","client_email":"a@b","private_key":"` + marker + `"}`},
		{"external account to a foreign endpoint", `{"type":"external_account","audience":"` + marker + `","subject_token_type":"urn:ietf:params:oauth:token-type:jwt","credential_source":{"file":"/x"},"token_url":"https://` + marker + `.example.com/token"}`},
		{"executable external account", `{"type":"external_account","audience":"a","subject_token_type":"t","credential_source":{"executable":{"command":"` + marker + `"}}}`},
		{"truncated JSON", `{"type":"service_account","private_key":"` + marker},
	}
	type request struct{ name, method, path, body string }
	var keyFile map[string]any
	if err := json.Unmarshal([]byte(valid), &keyFile); err != nil {
		t.Fatal(err)
	}
	spreadBody := func(extra map[string]any) string {
		b := maps.Clone(keyFile)
		maps.Copy(b, extra)
		return mustJSON(t, b)
	}
	spread := spreadBody(map[string]any{"project": 7, "bucket": "acme-raw"})
	spreadSaved := spreadBody(map[string]any{"id": 1})
	var requests []request
	posts := []struct {
		path  string
		extra map[string]any
	}{
		{"/api/storages/gcs/validate", map[string]any{"bucket": "acme-raw"}},
		{"/api/storages/gcs/validate", map[string]any{"bucket": "acme-nope"}},
		{"/api/storages/gcs/validate", map[string]any{"bucket": "acme-raw", "prefix": "nothing"}},
		{"/api/storages/gcs/validate", map[string]any{"bucket": "gs://acme-raw"}},
		{"/api/storages/gcs/validate", map[string]any{"id": 1}},
		// Saved storages as the base, their credentials replaced by the
		// ones sent (storage 3 holds marked plaintext, storage 4 marked
		// sealed credentials).
		{"/api/storages/gcs/validate", map[string]any{"id": 3}},
		{"/api/storages/gcs/validate", map[string]any{"id": 4, "bucket": "acme-nope"}},
		{"/api/storages/gcs/validate", map[string]any{"id": 99, "bucket": "acme-raw", "colour": "red"}},
		{"/api/storages/gcs/files", map[string]any{"bucket": "acme-raw"}},
		{"/api/storages/gcs/files", map[string]any{"bucket": "acme-nope"}},
		{"/api/storages/gcs/files", map[string]any{"bucket": "acme-raw", "regex_filter": "(["}},
		{"/api/storages/gcs/files", map[string]any{"id": 3}},
		{"/api/storages/gcs/files", map[string]any{"id": 4, "presign_ttl": 0}},
		{"/api/storages/export/gcs/validate", map[string]any{"bucket": "acme-labels"}},
		{"/api/storages/export/gcs/validate", map[string]any{"bucket": "acme-nope"}},
		{"/api/storages/export/gcs/validate", map[string]any{"bucket": "acme-labels", "object_key": "x"}},
		{"/api/storages/export/gcs/validate", map[string]any{"id": 10, "bucket": "acme-nope"}},
		{"/api/storages/export/gcs/validate", map[string]any{"id": 12}},
	}
	for _, p := range posts {
		for _, c := range badCreds {
			body := map[string]any{"project": 7, "google_application_credentials": c.creds}
			for k, v := range p.extra {
				body[k] = v
			}
			requests = append(requests, request{fmt.Sprintf("%s %v %s", p.path, p.extra, c.name), "POST", p.path, mustJSON(t, body)})
		}
		// Bodies the decoder refuses, with the marker in them.
		requests = append(requests,
			request{p.path + " creds as object", "POST", p.path, `{"project":7,"bucket":"acme-raw","google_application_credentials":{"private_key":"` + marker + `"}}`},
			request{p.path + " creds unterminated", "POST", p.path, `{"project":7,"bucket":"acme-raw","google_application_credentials":"` + marker},
			request{p.path + " creds unquoted", "POST", p.path, `{"project":7,"google_application_credentials":` + marker + `}`},
			request{p.path + " creds and a bad field", "POST", p.path, `{"project":"x","google_application_credentials":"` + marker + `"}`},
			request{p.path + " creds oversize", "POST", p.path, `{"project":7,"google_application_credentials":"` + marker + strings.Repeat("A", MaxBodyBytes) + `"}`},
			// The key file's fields pasted into the body itself: refused as
			// unknown fields, named, their values never shown.
			request{p.path + " creds spread over the body", "POST", p.path, spread},
			request{p.path + " creds spread over the body, with a saved storage", "POST", p.path, spreadSaved},
		)
	}
	// The saved storages with credentials, named by id alone: their own
	// credentials serve (or fail to open).
	for _, path := range []string{"/api/storages/gcs/validate", "/api/storages/gcs/files"} {
		for _, id := range []int{3, 4} {
			requests = append(requests, request{fmt.Sprintf("%s id %d alone", path, id), "POST", path, fmt.Sprintf(`{"id":%d}`, id)})
		}
	}
	for _, id := range []int{10, 12} {
		requests = append(requests, request{fmt.Sprintf("export validate id %d alone", id), "POST", "/api/storages/export/gcs/validate", fmt.Sprintf(`{"id":%d}`, id)})
	}
	for _, path := range []string{
		"/api/storages/gcs", "/api/storages/gcs/", "/api/storages/gcs?project=8", "/api/storages/gcs/3", "/api/storages/gcs/4",
		"/api/storages/export/gcs", "/api/storages/export/gcs/", "/api/storages/export/gcs?project=7", "/api/storages/export/gcs/10", "/api/storages/export/gcs/12",
	} {
		requests = append(requests, request{path, "GET", path, ""})
	}
	requests = append(requests, request{"sync 3", "POST", "/api/storages/gcs/3/sync", ""}, request{"sync 4", "POST", "/api/storages/gcs/4/sync", ""})

	// A client constructor that quotes the credentials in its error, as
	// library errors sometimes do.
	quoting := func(_ context.Context, creds []byte) (*storage.Client, error) {
		return nil, fmt.Errorf("cannot parse credentials %q", creds)
	}
	fixtures := map[string]*fixture{
		"gcs clients":     newFixture(t, config{}),
		"quoting clients": newFixture(t, config{client: quoting}),
		"status fails":    newFixture(t, config{syncs: &fakeSyncs{statusErr: errors.New("kv down")}}),
	}
	t.Run("requests", func(t *testing.T) {
		for fname, f := range fixtures {
			for _, req := range requests {
				t.Run(fname+"/"+req.name, func(t *testing.T) {
					t.Parallel()
					r := f.authed(t, req.method, req.path, req.body)
					if strings.Contains(r.body, marker) {
						t.Errorf("answer %d contains the credentials: %s", r.code, r.body)
					}
					if r.code >= 400 {
						decodeError(t, r, r.code)
					}
				})
			}
		}
	})
	for fname, f := range fixtures {
		if logs := f.logs.String(); strings.Contains(logs, marker) {
			t.Errorf("%s: logs contain the credentials:\n%s", fname, logs)
		}
	}
}
