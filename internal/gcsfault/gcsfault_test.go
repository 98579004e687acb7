package gcsfault_test

import (
	"bytes"
	"context"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"cloud.google.com/go/storage"
	"github.com/fsouza/fake-gcs-server/fakestorage"
	gax "github.com/googleapis/gax-go/v2"
	"google.golang.org/api/googleapi"
	"google.golang.org/api/option"

	"github.com/labelsync/labelsync/internal/gcsfault"
)

const (
	bucket = "exports"
	// maxAttempts bounds the client's retries of everything but uploads,
	// which ignore it (see TestPersistentFailure).
	maxAttempts = 4
)

var (
	uploads = gcsfault.Match{Method: http.MethodPost, PathContains: "/upload/storage/v1/b/" + bucket + "/o"}
	chunks  = gcsfault.Match{Method: http.MethodPost, PathContains: "/upload/storage/v1/b/" + bucket + "/o", QueryContains: "upload_id="}
	deletes = gcsfault.Match{Method: http.MethodDelete, PathContains: "/storage/v1/b/" + bucket + "/o/"}
	gets    = gcsfault.Match{Method: http.MethodGet, PathContains: "/storage/v1/b/" + bucket + "/o/"}
)

type env struct {
	gcs    *fakestorage.Server
	proxy  *gcsfault.Proxy
	client *storage.Client
}

// start runs a fake-gcs-server with one empty bucket, a proxy in front of it
// and a storage client through the proxy, all closed when the test ends.
func start(t *testing.T) env {
	t.Helper()
	gcs, err := fakestorage.NewServerWithOptions(fakestorage.Options{Scheme: "http", Host: "127.0.0.1", Port: 0})
	if err != nil {
		t.Fatalf("fake-gcs-server: %v", err)
	}
	t.Cleanup(gcs.Stop)
	gcs.CreateBucketWithOpts(fakestorage.CreateBucketOpts{Name: bucket})

	p, err := gcsfault.New(gcs.URL())
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() { _ = p.Close() })

	c, err := storage.NewClient(context.Background(),
		option.WithEndpoint(p.URL()+"/storage/v1/"),
		option.WithoutAuthentication(),
		storage.WithJSONReads(),
	)
	if err != nil {
		t.Fatalf("storage client: %v", err)
	}
	t.Cleanup(func() { _ = c.Close() })
	// The defaults back off from 1 s (uploads: 100 ms) to 30 s with full
	// jitter and never give up.
	c.SetRetry(
		storage.WithBackoff(gax.Backoff{Initial: time.Millisecond, Max: 10 * time.Millisecond}),
		storage.WithMaxAttempts(maxAttempts),
	)
	return env{gcs: gcs, proxy: p, client: c}
}

func (e env) seed(t *testing.T, name string, data []byte) int64 {
	t.Helper()
	e.gcs.CreateObject(fakestorage.Object{
		ObjectAttrs: fakestorage.ObjectAttrs{BucketName: bucket, Name: name},
		Content:     data,
	})
	obj, err := e.gcs.GetObject(bucket, name)
	if err != nil {
		t.Fatalf("seeding %s: %v", name, err)
	}
	return obj.Generation
}

// exists reports whether the upstream holds name, read around the proxy.
func (e env) exists(t *testing.T, name string) bool {
	t.Helper()
	_, err := e.gcs.GetObject(bucket, name)
	return err == nil
}

func write(ctx context.Context, o *storage.ObjectHandle, data []byte, chunkSize int) error {
	w := o.NewWriter(ctx)
	if chunkSize > 0 {
		w.ChunkSize = chunkSize
	}
	_, err := w.Write(data)
	if cerr := w.Close(); err == nil {
		err = cerr
	}
	return err
}

func code(err error) int {
	var e *googleapi.Error
	if errors.As(err, &e) {
		return e.Code
	}
	return 0
}

func TestClientRetriesTransientUploadFailures(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name      string
		match     gcsfault.Match
		status    int
		size      int
		chunkSize int // 0: the client's default, 16 MiB: one multipart request
		// wantRequests counts the requests match selects: 2 failed, then
		// the ones that succeed.
		wantRequests int
	}{
		{"multipart 503", uploads, http.StatusServiceUnavailable, 1 << 10, 0, 3},
		{"multipart 429", uploads, http.StatusTooManyRequests, 1 << 10, 0, 3},
		{"multipart 500", uploads, http.StatusInternalServerError, 1 << 10, 0, 3},
		// 600 KiB in 256 KiB chunks: the start, then 3 chunks.
		{"resumable start 503", uploads, http.StatusServiceUnavailable, 600 << 10, 256 << 10, 6},
		// The first chunk failed twice, then 3 chunks.
		{"resumable chunk 503", chunks, http.StatusServiceUnavailable, 600 << 10, 256 << 10, 5},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			e := start(t)
			data := bytes.Repeat([]byte("x"), tt.size)
			e.proxy.Fail(tt.match, tt.status, 2)

			ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
			defer cancel()
			o := e.client.Bucket(bucket).Object("a.json").If(storage.Conditions{DoesNotExist: true})
			if err := write(ctx, o, data, tt.chunkSize); err != nil {
				t.Fatalf("write: %v", err)
			}

			objs, _, err := e.gcs.ListObjects(bucket, "", "", true)
			if err != nil {
				t.Fatalf("listing upstream: %v", err)
			}
			if got, want := len(objs), 1; got != want {
				t.Fatalf("upstream holds %d object versions, want %d", got, want)
			}
			got, err := e.gcs.GetObject(bucket, "a.json")
			if err != nil {
				t.Fatalf("upstream object: %v", err)
			}
			if !bytes.Equal(got.Content, data) {
				t.Errorf("upstream content: %d bytes, want %d", len(got.Content), len(data))
			}
			if got, want := e.proxy.Injected(tt.match), 2; got != want {
				t.Errorf("Injected = %d, want %d", got, want)
			}
			if got, want := e.proxy.Requests(tt.match), tt.wantRequests; got != want {
				t.Errorf("Requests = %d, want %d", got, want)
			}
		})
	}
}

func TestPersistentFailure(t *testing.T) {
	t.Parallel()
	doesNotExist := storage.Conditions{DoesNotExist: true}
	tests := []struct {
		name  string
		match gcsfault.Match
		op    func(ctx context.Context, e env) error
		// timeout bounds the operation's context.
		timeout      time.Duration
		wantCode     int  // googleapi code of the error, 0: none
		wantDeadline bool // errors.Is(err, context.DeadlineExceeded)
		// The requests match selects: exactly wantRequests, or more than
		// minRequests when wantRequests is 0.
		wantRequests, minRequests int
	}{
		{
			name:  "write with retries turned off",
			match: uploads,
			op: func(ctx context.Context, e env) error {
				o := e.client.Bucket(bucket).Object("a.json").If(doesNotExist).
					Retryer(storage.WithPolicy(storage.RetryNever))
				return write(ctx, o, []byte("{}"), 0)
			},
			timeout:      10 * time.Second,
			wantCode:     http.StatusServiceUnavailable,
			wantRequests: 1,
		},
		{
			name:  "unconditional write is not retried",
			match: uploads,
			op: func(ctx context.Context, e env) error {
				return write(ctx, e.client.Bucket(bucket).Object("a.json"), []byte("{}"), 0)
			},
			timeout:      10 * time.Second,
			wantCode:     http.StatusServiceUnavailable,
			wantRequests: 1,
		},
		{
			// WithMaxAttempts does not reach uploads: an idempotent
			// write retries until its context ends, and the 503 is lost.
			name:  "conditional write retries until its context ends",
			match: uploads,
			op: func(ctx context.Context, e env) error {
				return write(ctx, e.client.Bucket(bucket).Object("a.json").If(doesNotExist), []byte("{}"), 0)
			},
			timeout:      300 * time.Millisecond,
			wantDeadline: true,
			minRequests:  maxAttempts,
		},
		{
			name:  "read stops after max attempts",
			match: gets,
			op: func(ctx context.Context, e env) error {
				e.seed(t, "a.json", []byte("{}"))
				r, err := e.client.Bucket(bucket).Object("a.json").NewReader(ctx)
				if err != nil {
					return err
				}
				return r.Close()
			},
			timeout:      10 * time.Second,
			wantCode:     http.StatusServiceUnavailable,
			wantRequests: maxAttempts,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			e := start(t)
			e.proxy.Fail(tt.match, http.StatusServiceUnavailable, -1)

			ctx, cancel := context.WithTimeout(t.Context(), tt.timeout)
			err := tt.op(ctx, e)
			cancel()
			if err == nil {
				t.Fatal("operation succeeded through a proxy failing every request")
			}
			if got := code(err); got != tt.wantCode {
				t.Errorf("googleapi code = %d, want %d (error: %v)", got, tt.wantCode, err)
			}
			if got := errors.Is(err, context.DeadlineExceeded); got != tt.wantDeadline {
				t.Errorf("errors.Is(err, context.DeadlineExceeded) = %v, want %v (error: %v)", got, tt.wantDeadline, err)
			}
			n := e.proxy.Requests(tt.match)
			t.Logf("%d requests; error: %v", n, err)
			if tt.wantRequests > 0 && n != tt.wantRequests {
				t.Errorf("Requests = %d, want %d", n, tt.wantRequests)
			}
			if tt.wantRequests == 0 && n <= tt.minRequests {
				t.Errorf("Requests = %d, want more than %d", n, tt.minRequests)
			}
			if got := e.proxy.Injected(tt.match); got != n {
				t.Errorf("Injected = %d, want every request (%d)", got, n)
			}

			e.proxy.Clear()
			ctx, cancel = context.WithTimeout(t.Context(), 10*time.Second)
			defer cancel()
			if err := tt.op(ctx, e); err != nil {
				t.Errorf("after Clear: %v", err)
			}
		})
	}
}

func TestStall(t *testing.T) {
	t.Parallel()
	const stall = 10 * time.Second
	tests := []struct {
		name    string
		match   gcsfault.Match
		op      func(ctx context.Context, o *storage.ObjectHandle) error
		stall   time.Duration
		timeout time.Duration
		seeded  bool
		// wantErr: the client gave up, so the upstream is left as it was.
		wantErr    bool
		wantExists bool
	}{
		{
			name:  "write past the deadline",
			match: uploads,
			op: func(ctx context.Context, o *storage.ObjectHandle) error {
				return write(ctx, o.If(storage.Conditions{DoesNotExist: true}), []byte("{}"), 0)
			},
			stall: stall, timeout: 200 * time.Millisecond,
			wantErr: true, wantExists: false,
		},
		{
			name:  "read past the deadline",
			match: gets,
			op: func(ctx context.Context, o *storage.ObjectHandle) error {
				_, err := o.Attrs(ctx)
				return err
			},
			stall: stall, timeout: 200 * time.Millisecond, seeded: true,
			wantErr: true, wantExists: true,
		},
		{
			name:  "delete past the deadline",
			match: deletes,
			op: func(ctx context.Context, o *storage.ObjectHandle) error {
				return o.Delete(ctx)
			},
			stall: stall, timeout: 200 * time.Millisecond, seeded: true,
			wantErr: true, wantExists: true,
		},
		{
			name:  "write within the deadline",
			match: uploads,
			op: func(ctx context.Context, o *storage.ObjectHandle) error {
				return write(ctx, o.If(storage.Conditions{DoesNotExist: true}), []byte("{}"), 0)
			},
			stall: 100 * time.Millisecond, timeout: 10 * time.Second,
			wantErr: false, wantExists: true,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			e := start(t)
			if tt.seeded {
				e.seed(t, "a.json", []byte("{}"))
			}
			e.proxy.Stall(tt.match, tt.stall, 1)

			ctx, cancel := context.WithTimeout(t.Context(), tt.timeout)
			defer cancel()
			began := time.Now()
			err := tt.op(ctx, e.client.Bucket(bucket).Object("a.json"))
			took := time.Since(began)

			if tt.wantErr {
				if !errors.Is(err, context.DeadlineExceeded) {
					t.Errorf("error = %v, want context.DeadlineExceeded", err)
				}
				if took >= tt.stall {
					t.Errorf("took %v, want the client to give up before the %v stall", took, tt.stall)
				}
			} else {
				if err != nil {
					t.Errorf("error = %v, want none", err)
				}
				if took < tt.stall {
					t.Errorf("took %v, want at least the %v stall", took, tt.stall)
				}
			}
			if got := e.exists(t, "a.json"); got != tt.wantExists {
				t.Errorf("upstream holds a.json: %v, want %v", got, tt.wantExists)
			}
			if got, want := e.proxy.Injected(tt.match), 1; got != want {
				t.Errorf("Injected = %d, want %d", got, want)
			}
		})
	}
}

func TestDropAfter(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name  string
		match gcsfault.Match
		// op acts on a.json; gen is its generation upstream, 0 if absent.
		op           func(ctx context.Context, o *storage.ObjectHandle, gen int64) error
		seeded       bool
		wantCode     int  // googleapi code of the error, 0: none
		wantNotExist bool // errors.Is(err, storage.ErrObjectNotExist)
		wantRequests int
		wantExists   bool
	}{
		{
			// Not idempotent, so not retried: the client sees only the
			// reset connection, though the delete happened.
			name:  "unconditional delete",
			match: deletes,
			op: func(ctx context.Context, o *storage.ObjectHandle, _ int64) error {
				return o.Delete(ctx)
			},
			seeded:       true,
			wantRequests: 1,
			wantExists:   false,
		},
		{
			// Idempotent, so retried: the retry finds nothing to delete.
			name:  "generation-matched delete",
			match: deletes,
			op: func(ctx context.Context, o *storage.ObjectHandle, gen int64) error {
				return o.If(storage.Conditions{GenerationMatch: gen}).Delete(ctx)
			},
			seeded:       true,
			wantCode:     http.StatusNotFound,
			wantNotExist: true,
			wantRequests: 2,
			wantExists:   false,
		},
		{
			// Idempotent, so retried: the retry is refused because the
			// lost first attempt created the object.
			name:  "create-only write",
			match: uploads,
			op: func(ctx context.Context, o *storage.ObjectHandle, _ int64) error {
				return write(ctx, o.If(storage.Conditions{DoesNotExist: true}), []byte("{}"), 0)
			},
			wantCode:     http.StatusPreconditionFailed,
			wantRequests: 2,
			wantExists:   true,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			e := start(t)
			var gen int64
			if tt.seeded {
				gen = e.seed(t, "a.json", []byte("{}"))
			}
			e.proxy.DropAfter(tt.match, 1)

			ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
			defer cancel()
			err := tt.op(ctx, e.client.Bucket(bucket).Object("a.json"), gen)
			if err == nil {
				t.Fatal("operation succeeded though its response was dropped")
			}
			t.Logf("error: %v", err)
			if got := code(err); got != tt.wantCode {
				t.Errorf("googleapi code = %d, want %d (error: %v)", got, tt.wantCode, err)
			}
			if got := errors.Is(err, storage.ErrObjectNotExist); got != tt.wantNotExist {
				t.Errorf("errors.Is(err, storage.ErrObjectNotExist) = %v, want %v (error: %v)", got, tt.wantNotExist, err)
			}
			if got := e.exists(t, "a.json"); got != tt.wantExists {
				t.Errorf("upstream holds a.json: %v, want %v", got, tt.wantExists)
			}
			if got := e.proxy.Requests(tt.match); got != tt.wantRequests {
				t.Errorf("Requests = %d, want %d", got, tt.wantRequests)
			}
			if got, want := e.proxy.Injected(tt.match), 1; got != want {
				t.Errorf("Injected = %d, want %d", got, want)
			}
		})
	}
}

func TestCounts(t *testing.T) {
	t.Parallel()
	e := start(t)
	e.seed(t, "a.json", []byte("{}"))
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	b := e.client.Bucket(bucket)

	// One listing, stalled briefly.
	e.proxy.Stall(gcsfault.Match{Method: http.MethodGet, PathContains: "/b/" + bucket + "/o"}, 10*time.Millisecond, 1)
	if _, err := b.Objects(ctx, nil).Next(); err != nil {
		t.Fatalf("listing: %v", err)
	}
	// Attrs, failed once and retried by the client.
	e.proxy.Fail(gets, http.StatusServiceUnavailable, 1)
	if _, err := b.Object("a.json").Attrs(ctx); err != nil {
		t.Fatalf("attrs: %v", err)
	}
	// A write, untouched.
	if err := write(ctx, b.Object("b.json"), []byte("{}"), 0); err != nil {
		t.Fatalf("write: %v", err)
	}

	tests := []struct {
		name                       string
		match                      gcsfault.Match
		wantRequests, wantInjected int
	}{
		{"everything", gcsfault.Match{}, 4, 2},
		{"method", gcsfault.Match{Method: http.MethodGet}, 3, 2},
		{"method in lower case", gcsfault.Match{Method: "get"}, 3, 2},
		{"path", gcsfault.Match{PathContains: "/o/a.json"}, 2, 1},
		{"uploads", uploads, 1, 0},
		{"nothing", gcsfault.Match{Method: http.MethodDelete}, 0, 0},
	}
	for _, tt := range tests {
		if got := e.proxy.Requests(tt.match); got != tt.wantRequests {
			t.Errorf("%s: Requests = %d, want %d", tt.name, got, tt.wantRequests)
		}
		if got := e.proxy.Injected(tt.match); got != tt.wantInjected {
			t.Errorf("%s: Injected = %d, want %d", tt.name, got, tt.wantInjected)
		}
	}
}

// TestErrorFormat reads the proxy's answers with a plain HTTP client and
// googleapi's own decoder. Nothing listens at the target.
func TestErrorFormat(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name           string
		status         int // injected; 0: none
		wantStatus     int
		wantReason     string
		wantRetryAfter bool
	}{
		{"429", http.StatusTooManyRequests, 429, "rateLimitExceeded", true},
		{"500", http.StatusInternalServerError, 500, "backendError", false},
		{"503", http.StatusServiceUnavailable, 503, "backendError", true},
		{"upstream down", 0, http.StatusBadGateway, "badGateway", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			p, err := gcsfault.New("http://127.0.0.1:1")
			if err != nil {
				t.Fatalf("New: %v", err)
			}
			defer p.Close()
			if tt.status != 0 {
				p.Fail(gcsfault.Match{}, tt.status, 1)
			}
			req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, p.URL()+"/storage/v1/b/"+bucket+"/o", nil)
			if err != nil {
				t.Fatal(err)
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatalf("GET: %v", err)
			}
			defer resp.Body.Close()
			if got := resp.StatusCode; got != tt.wantStatus {
				t.Errorf("status = %d, want %d", got, tt.wantStatus)
			}
			if got := resp.Header.Get("Retry-After") != ""; got != tt.wantRetryAfter {
				t.Errorf("Retry-After present: %v, want %v", got, tt.wantRetryAfter)
			}
			var gerr *googleapi.Error
			if !errors.As(googleapi.CheckResponse(resp), &gerr) {
				t.Fatal("googleapi.CheckResponse found no error")
			}
			if got := gerr.Code; got != tt.wantStatus {
				t.Errorf("googleapi code = %d, want %d", got, tt.wantStatus)
			}
			if len(gerr.Errors) != 1 {
				t.Fatalf("googleapi errors = %v, want one", gerr.Errors)
			}
			if got := gerr.Errors[0].Reason; got != tt.wantReason {
				t.Errorf("reason = %q, want %q", got, tt.wantReason)
			}
		})
	}
}

func TestCloseReleasesStalls(t *testing.T) {
	t.Parallel()
	p, err := gcsfault.New("http://127.0.0.1:1")
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	p.Stall(gcsfault.Match{}, time.Minute, -1)
	done := make(chan error, 1)
	go func() {
		req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, p.URL()+"/storage/v1/b/"+bucket+"/o", nil)
		if err != nil {
			done <- err
			return
		}
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			resp.Body.Close()
		}
		done <- err
	}()
	for deadline := time.Now().Add(5 * time.Second); p.Requests(gcsfault.Match{}) == 0; {
		if time.Now().After(deadline) {
			t.Fatal("the request never reached the proxy")
		}
		time.Sleep(5 * time.Millisecond)
	}

	began := time.Now()
	if err := p.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
	select {
	case err := <-done:
		if err == nil {
			t.Error("stalled request answered after Close, want a closed connection")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("stalled request still pending 5s after Close")
	}
	if took := time.Since(began); took > 5*time.Second {
		t.Errorf("Close took %v, want it to release the stall", took)
	}
}

func TestNew(t *testing.T) {
	t.Parallel()
	tests := []struct {
		target  string
		wantErr bool
	}{
		{"http://127.0.0.1:4443", false},
		{"http://127.0.0.1:4443/", false},
		{"https://storage.example:443", false},
		{"", true},
		{"127.0.0.1:4443", true},
		{"http://127.0.0.1:4443/storage/v1/", true},
		{"http://127.0.0.1:4443?x=1", true},
		{"ftp://127.0.0.1:4443", true},
	}
	for _, tt := range tests {
		p, err := gcsfault.New(tt.target)
		if got := err != nil; got != tt.wantErr {
			t.Errorf("New(%q) error = %v, want error: %v", tt.target, err, tt.wantErr)
		}
		if p != nil {
			_ = p.Close()
		}
	}
}

// TestRequesterPays: requests on the bucket without the billed project are
// refused with GCS's 400, with it they pass; Clear lifts the requirement.
func TestRequesterPays(t *testing.T) {
	t.Parallel()
	e := start(t)
	e.seed(t, "a.json", []byte("{}"))
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	e.proxy.RequesterPays(bucket, "payer")

	unpaid := e.client.Bucket(bucket)
	if _, err := unpaid.Object("a.json").Attrs(ctx); code(err) != http.StatusBadRequest ||
		!strings.Contains(err.Error(), "requester pays bucket but no user project provided") {
		t.Errorf("attrs without a user project: %v, want GCS's 400", err)
	}
	if err := write(ctx, unpaid.Object("b.json"), []byte("{}"), 0); code(err) != http.StatusBadRequest {
		t.Errorf("write without a user project: %v, want 400", err)
	}
	if e.exists(t, "b.json") {
		t.Error("a refused write reached the upstream")
	}
	if _, err := e.client.Bucket(bucket).UserProject("other").Objects(ctx, nil).Next(); code(err) != http.StatusBadRequest {
		t.Errorf("listing billed to another project: %v, want 400", err)
	}

	paid := e.client.Bucket(bucket).UserProject("payer")
	if _, err := paid.Object("a.json").Attrs(ctx); err != nil {
		t.Errorf("attrs with the user project: %v", err)
	}
	if err := write(ctx, paid.Object("b.json"), []byte("{}"), 256<<10); err != nil {
		t.Errorf("write with the user project: %v", err)
	}
	if got := e.proxy.Injected(gcsfault.Match{}); got != 3 {
		t.Errorf("Injected = %d, want the 3 unpaid requests", got)
	}

	e.proxy.Clear()
	if _, err := unpaid.Object("a.json").Attrs(ctx); err != nil {
		t.Errorf("attrs after Clear: %v", err)
	}
}
