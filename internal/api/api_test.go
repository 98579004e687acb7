package api

import (
	"bytes"
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

	"github.com/labelsync/labelsync/internal/gcs"
	"github.com/labelsync/labelsync/internal/storages"
	"github.com/labelsync/labelsync/internal/syncer"
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

// lockedBuffer collects log output from concurrent requests.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// config changes a fixture from its defaults.
type config struct {
	noToken  bool           // the server has no token configured
	syncs    *fakeSyncs     // nil: an empty fakeSyncs
	client   ClientFor      // nil: gcs.Clients.For against the fake server
	saved    SavedClientFor // nil: the emulator client, except for storage 3
	imports  []storages.Import
	exports  []storages.Export
	withSets bool // use imports and exports above instead of the defaults
}

// fixture is an API served over an in-process fake-gcs-server.
type fixture struct {
	handler http.Handler
	syncs   *fakeSyncs
	logs    *lockedBuffer
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
	}
}

func defaultExports(t *testing.T) []storages.Export {
	return []storages.Export{
		{ID: 10, Project: 7, Title: "labels", Bucket: "acme-labels", Prefix: "annotations", CanDeleteObjects: true, GoogleApplicationCredentials: markedCredentials(t)},
		{ID: 11, Project: 8, Bucket: "acme-labels"},
	}
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
	client := cfg.client
	if client == nil {
		client = clients.For
	}
	saved := cfg.saved
	if saved == nil {
		saved = func(ctx context.Context, st *storages.Import) (*storage.Client, error) {
			if st.ID == 3 {
				return nil, fmt.Errorf("opening sealed credentials %s: message authentication failed", marker)
			}
			return clients.For(ctx, nil)
		}
	}
	token := testToken
	if cfg.noToken {
		token = ""
	}
	logs := &lockedBuffer{}
	logger := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))

	mux := http.NewServeMux()
	New(token, func() *storages.Set { return set }, func() []storages.Export { return exports }, syncs, client, saved, logger).Register(mux)
	return &fixture{handler: mux, syncs: syncs, logs: logs}
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

// sizedBody is head (an unclosed JSON object) padded with a title to
// exactly size bytes; its JSON value completes only with the last byte.
func sizedBody(head string, size int) string {
	const tail = `"}`
	return head + `,"title":"` + strings.Repeat("x", size-len(head)-len(`,"title":"`)-len(tail)) + tail
}

// routes lists every route Register adds, with a request that succeeds
// when authorized.
var routes = []struct {
	method, path, body string
}{
	{"GET", "/api/storages/gcs", ""},
	{"GET", "/api/storages/gcs/1", ""},
	{"POST", "/api/storages/gcs/1/sync", ""},
	{"POST", "/api/storages/gcs/validate", `{"project":7,"bucket":"acme-raw"}`},
	{"POST", "/api/storages/gcs/files", `{"project":7,"bucket":"acme-raw","prefix":"incoming"}`},
	{"GET", "/api/storages/export/gcs", ""},
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
		{"", []int64{1, 2, 3}},
		{"?project=7", []int64{1, 2}},
		{"?project=8", []int64{3}},
		{"?project=99", []int64{}},
		{"?project=", []int64{1, 2, 3}},
	}
	for _, tt := range tests {
		t.Run(tt.query, func(t *testing.T) {
			t.Parallel()
			got := ids(t, f.authed(t, "GET", "/api/storages/gcs"+tt.query, ""))
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("ids (-want +got):\n%s", diff)
			}
		})
	}
	for _, bad := range []string{"abc", "0", "-1", "1.5", "7x", "99999999999999999999"} {
		t.Run("bad project "+bad, func(t *testing.T) {
			t.Parallel()
			e := decodeError(t, f.authed(t, "GET", "/api/storages/gcs?project="+bad, ""), http.StatusBadRequest)
			if want := "project must be a positive integer"; e.Detail != want {
				t.Errorf("detail: got %q, want %q", e.Detail, want)
			}
		})
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
// must get: 200, or an error with the field validation_errors names ("" for
// an error without validation_errors).
type bodyCase struct {
	name      string
	query     string
	body      string
	wantCode  int
	wantField string
	anyField  bool   // validation_errors may name any one field
	wantMsg   string // detail, when set
}

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
			case tt.wantField != "":
				e = checkValidation(t, r, tt.wantField)
			case tt.anyField:
				e = decodeError(t, r, tt.wantCode)
			default:
				e = decodeError(t, r, tt.wantCode)
				if e.ValidationErrors != nil {
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
func commonImportBodies(t *testing.T) []bodyCase {
	head := `{"project":7,"bucket":"acme-raw"`
	tooBig := fmt.Sprintf("request body over %d bytes", MaxBodyBytes)
	return []bodyCase{
		{name: "invalid JSON", body: `{"project":7,`, wantCode: http.StatusBadRequest},
		{name: "not JSON", body: `bucket=acme-raw`, wantCode: http.StatusBadRequest},
		{name: "empty body", body: ``, wantCode: http.StatusBadRequest},
		{name: "array", body: `[{"project":7,"bucket":"acme-raw"}]`, wantCode: http.StatusBadRequest},
		{name: "wrong type", body: `{"project":7,"bucket":"acme-raw","recursive_scan":"yes"}`, wantCode: http.StatusBadRequest},
		// SPEC §4 accepts numbers sent as numeric strings; this code does not.
		{name: "numeric string", body: `{"project":"7","bucket":"acme-raw"}`, wantCode: http.StatusBadRequest},
		{name: "body over MaxBodyBytes", body: sizedBody(head, MaxBodyBytes+1), wantCode: http.StatusRequestEntityTooLarge, wantMsg: tooBig},
		{name: "body far over MaxBodyBytes", body: sizedBody(head, 3*MaxBodyBytes), wantCode: http.StatusRequestEntityTooLarge, wantMsg: tooBig},
		{name: "body of exactly MaxBodyBytes", body: sizedBody(head, MaxBodyBytes), wantCode: http.StatusOK},
		{name: "null", body: `null`, wantCode: http.StatusBadRequest, wantField: "project"},
		{name: "missing bucket", body: `{"project":7}`, wantCode: http.StatusBadRequest, wantField: "bucket"},
		{name: "empty bucket", body: `{"project":7,"bucket":""}`, wantCode: http.StatusBadRequest, wantField: "bucket"},
		{name: "gs URL as bucket", body: `{"project":7,"bucket":"gs://acme-raw"}`, wantCode: http.StatusBadRequest, wantField: "bucket"},
		{name: "missing project", body: `{"bucket":"acme-raw"}`, wantCode: http.StatusBadRequest, wantField: "project"},
		{name: "negative project", body: `{"project":-7,"bucket":"acme-raw"}`, wantCode: http.StatusBadRequest, wantField: "project"},
		{name: "invalid regex", body: `{"project":7,"bucket":"acme-raw","regex_filter":"(["}`, wantCode: http.StatusBadRequest, wantField: "regex_filter"},
		{name: "presign_ttl over a week", body: `{"project":7,"bucket":"acme-raw","presign_ttl":10081}`, wantCode: http.StatusBadRequest, wantField: "presign_ttl"},
		{name: "presign_ttl negative", body: `{"project":7,"bucket":"acme-raw","presign_ttl":-1}`, wantCode: http.StatusBadRequest, wantField: "presign_ttl"},
		{name: "unknown id without bucket", body: `{"id":99,"project":7}`, wantCode: http.StatusBadRequest, wantField: "bucket"},
		{name: "saved storage whose credentials do not open", body: `{"id":3}`, wantCode: http.StatusBadRequest, wantField: "google_application_credentials"},
		{name: "credentials not JSON", body: `{"project":7,"bucket":"acme-raw","google_application_credentials":"/etc/key.json"}`, wantCode: http.StatusBadRequest, wantField: "google_application_credentials"},
		{name: "credentials of another type", body: mustJSON(t, map[string]any{"project": 7, "bucket": "acme-raw", "google_application_credentials": `{"type":"authorized_user"}`}), wantCode: http.StatusBadRequest, wantField: "google_application_credentials"},
		// Read-only and unknown fields are accepted: the code does not
		// refuse unknown fields (SPEC §4 wants a 400 naming them).
		{name: "Label Studio's read-only fields", body: `{"project":7,"bucket":"acme-raw","type":"gcs","status":"completed","meta":{},"last_sync":null,"synchronizable":true}`, wantCode: http.StatusOK},
		{name: "unknown field", body: `{"project":7,"bucket":"acme-raw","colour":"red"}`, wantCode: http.StatusOK},
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
	)
	runBodyCases(t, f, "/api/storages/gcs/validate", tests)
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
	tests := []bodyCase{
		{name: "valid", body: `{"project":7,"bucket":"acme-labels","prefix":"annotations"}`, wantCode: http.StatusOK},
		{name: "object key", body: `{"project":7,"bucket":"acme-labels","object_key":"{task_id}.json"}`, wantCode: http.StatusOK},
		{name: "bucket with objects", body: `{"project":7,"bucket":"acme-raw"}`, wantCode: http.StatusOK},
		{name: "unknown field", body: `{"project":7,"bucket":"acme-labels","colour":"red"}`, wantCode: http.StatusOK},
		{name: "valid credentials", body: mustJSON(t, map[string]any{"project": 7, "bucket": "acme-labels", "google_application_credentials": markedCredentials(t)}), wantCode: http.StatusOK},
		{name: "body of exactly MaxBodyBytes", body: sizedBody(head, MaxBodyBytes), wantCode: http.StatusOK},
		{name: "invalid JSON", body: `{"project":7,"bucket":`, wantCode: http.StatusBadRequest},
		{name: "empty body", body: ``, wantCode: http.StatusBadRequest},
		{name: "wrong type", body: `{"project":7,"bucket":"acme-labels","can_delete_objects":"yes"}`, wantCode: http.StatusBadRequest},
		{name: "body over MaxBodyBytes", body: sizedBody(head, MaxBodyBytes+1), wantCode: http.StatusRequestEntityTooLarge, wantMsg: tooBig},
		{name: "missing bucket", body: `{"project":7}`, wantCode: http.StatusBadRequest, wantField: "bucket"},
		{name: "missing project", body: `{"bucket":"acme-labels"}`, wantCode: http.StatusBadRequest, wantField: "project"},
		{name: "bucket does not exist", body: `{"project":7,"bucket":"acme-nope"}`, wantCode: http.StatusBadRequest,
			wantField: "bucket", wantMsg: "Bucket acme-nope doesn't exist"},
		{name: "bad object key", body: `{"project":7,"bucket":"acme-labels","object_key":"{id}"}`, wantCode: http.StatusBadRequest, wantField: "object_key"},
		{name: "credentials not JSON", body: `{"project":7,"bucket":"acme-labels","google_application_credentials":"/etc/key.json"}`, wantCode: http.StatusBadRequest, wantField: "google_application_credentials"},
		{name: "credentials JSON of no type", body: `{"project":7,"bucket":"acme-labels","google_application_credentials":"{}"}`, wantCode: http.StatusBadRequest, wantField: "google_application_credentials"},
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
		{"", []int64{10, 11}},
		{"?project=7", []int64{10}},
		{"?project=8", []int64{11}},
		{"?project=99", []int64{}},
	}
	for _, tt := range tests {
		t.Run(tt.query, func(t *testing.T) {
			t.Parallel()
			got := ids(t, f.authed(t, "GET", "/api/storages/export/gcs"+tt.query, ""))
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("ids (-want +got):\n%s", diff)
			}
		})
	}
	for _, bad := range []string{"abc", "0", "-3"} {
		t.Run("bad project "+bad, func(t *testing.T) {
			t.Parallel()
			decodeError(t, f.authed(t, "GET", "/api/storages/export/gcs?project="+bad, ""), http.StatusBadRequest)
		})
	}
}

func TestListExportsEmpty(t *testing.T) {
	t.Parallel()
	f := newFixture(t, config{withSets: true})
	for _, path := range []string{"/api/storages/gcs", "/api/storages/export/gcs"} {
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
		{"/api/storages/gcs/files", map[string]any{"bucket": "acme-raw"}},
		{"/api/storages/gcs/files", map[string]any{"bucket": "acme-nope"}},
		{"/api/storages/gcs/files", map[string]any{"bucket": "acme-raw", "regex_filter": "(["}},
		{"/api/storages/gcs/files", map[string]any{"id": 3}},
		{"/api/storages/export/gcs/validate", map[string]any{"bucket": "acme-labels"}},
		{"/api/storages/export/gcs/validate", map[string]any{"bucket": "acme-nope"}},
		{"/api/storages/export/gcs/validate", map[string]any{"bucket": "acme-labels", "object_key": "x"}},
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
		)
	}
	for _, path := range []string{
		"/api/storages/gcs", "/api/storages/gcs?project=8", "/api/storages/gcs/3",
		"/api/storages/export/gcs", "/api/storages/export/gcs?project=7", "/api/storages/export/gcs/10",
	} {
		requests = append(requests, request{path, "GET", path, ""})
	}
	requests = append(requests, request{"sync 3", "POST", "/api/storages/gcs/3/sync", ""})

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
