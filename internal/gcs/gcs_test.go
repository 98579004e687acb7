package gcs_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"sync"
	"testing"
	"time"

	"cloud.google.com/go/storage"
	"github.com/fsouza/fake-gcs-server/fakestorage"
	"github.com/google/go-cmp/cmp"

	"github.com/labelsync/labelsync/internal/gcs"
	"github.com/labelsync/labelsync/internal/storages"
)

// fake starts an in-process fake-gcs-server with the buckets and returns a
// client for it built the way production builds emulator clients. No
// EventOptions: these tests need no notifications, and without them the
// server never reads PUBSUB_EMULATOR_HOST.
func fake(t *testing.T, buckets ...string) (*fakestorage.Server, *storage.Client) {
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
	for _, b := range buckets {
		srv.CreateBucketWithOpts(fakestorage.CreateBucketOpts{Name: b})
	}
	clients := gcs.NewClients(gcs.Options{EmulatorHost: srv.URL()})
	t.Cleanup(func() {
		if err := clients.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	c, err := clients.For(t.Context(), nil)
	if err != nil {
		t.Fatalf("For: %v", err)
	}
	return srv, c
}

// put uploads through the client, as a user would, and returns the new
// generation.
func put(t *testing.T, c *storage.Client, bucket, key string, data []byte) int64 {
	t.Helper()
	w := c.Bucket(bucket).Object(key).NewWriter(t.Context())
	w.ContentType = "application/octet-stream"
	if _, err := w.Write(data); err != nil {
		t.Fatalf("write %s: %v", key, err)
	}
	if err := w.Close(); err != nil {
		t.Fatalf("close %s: %v", key, err)
	}
	return w.Attrs().Generation
}

func keys(objs []gcs.Object) []string {
	out := make([]string, 0, len(objs))
	for _, o := range objs {
		out = append(out, o.Key)
	}
	return out
}

func listAll(t *testing.T, c *storage.Client, bucket, prefix string, recursive bool) []string {
	t.Helper()
	var got []string
	err := gcs.List(t.Context(), c.Bucket(bucket), prefix, recursive, "", 0, func(objs []gcs.Object, _ string) error {
		got = append(got, keys(objs)...)
		return nil
	})
	if err != nil {
		t.Fatalf("List(%q, recursive=%v): %v", prefix, recursive, err)
	}
	return got
}

func TestList(t *testing.T) {
	t.Parallel()
	_, c := fake(t, "b")
	for _, k := range []string{"a.txt", "a/", "a/1.txt", "a/2.txt", "a/sub/", "a/sub/3.txt", "a2/4.txt", "b/5.txt"} {
		put(t, c, "b", k, []byte(k))
	}
	tests := []struct {
		prefix    string
		recursive bool
		want      []string
	}{
		{"a/", true, []string{"a/1.txt", "a/2.txt", "a/sub/3.txt"}},
		// Direct children only: a/sub/ is a synthetic prefix, skipped.
		{"a/", false, []string{"a/1.txt", "a/2.txt"}},
		{"", true, []string{"a.txt", "a/1.txt", "a/2.txt", "a/sub/3.txt", "a2/4.txt", "b/5.txt"}},
		{"", false, []string{"a.txt"}},
		{"none/", true, nil},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%q/recursive=%v", tt.prefix, tt.recursive), func(t *testing.T) {
			t.Parallel()
			got := listAll(t, c, "b", tt.prefix, tt.recursive)
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("keys (-want +got):\n%s", diff)
			}
		})
	}
}

func TestListFields(t *testing.T) {
	t.Parallel()
	_, c := fake(t, "b")
	gen := put(t, c, "b", "k", []byte("hello"))
	var got []gcs.Object
	err := gcs.List(t.Context(), c.Bucket("b"), "", true, "", 10, func(objs []gcs.Object, _ string) error {
		got = append(got, objs...)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 {
		t.Fatalf("got %d objects, want 1", len(got))
	}
	o := got[0]
	if o.Key != "k" || o.Generation != gen || o.Size != 5 || o.ContentType != "application/octet-stream" || o.Updated.IsZero() {
		t.Errorf("got %+v, want key k, generation %d, size 5, content type application/octet-stream, an update time", o, gen)
	}
}

// A sync checkpoints the next-page token after each page; after a crash it
// resumes there and must see every object exactly once.
func TestListResume(t *testing.T) {
	t.Parallel()
	_, c := fake(t, "b")
	var want []string
	for i := range 25 {
		k := fmt.Sprintf("p/%02d", i)
		put(t, c, "b", k, []byte(k))
		want = append(want, k)
	}

	errCrash := errors.New("crash after the first page")
	var seen []string
	var token string
	err := gcs.List(t.Context(), c.Bucket("b"), "p/", true, "", 10, func(objs []gcs.Object, next string) error {
		seen = append(seen, keys(objs)...)
		token = next
		return errCrash
	})
	if !errors.Is(err, errCrash) {
		t.Fatalf("List returned %v, want the page function's error", err)
	}
	if len(seen) != 10 || token == "" {
		t.Fatalf("first page: %d objects, token %q; want 10 and a token", len(seen), token)
	}

	var sizes []int
	err = gcs.List(t.Context(), c.Bucket("b"), "p/", true, token, 10, func(objs []gcs.Object, next string) error {
		seen = append(seen, keys(objs)...)
		sizes = append(sizes, len(objs))
		token = next
		return nil
	})
	if err != nil {
		t.Fatalf("resumed List: %v", err)
	}
	if diff := cmp.Diff([]int{10, 5}, sizes); diff != "" {
		t.Errorf("resumed page sizes (-want +got):\n%s", diff)
	}
	if token != "" {
		t.Errorf("last next token = %q, want empty", token)
	}
	if diff := cmp.Diff(want, seen); diff != "" {
		t.Errorf("objects over both runs (-want +got):\n%s", diff)
	}
}

func TestListMissingBucket(t *testing.T) {
	t.Parallel()
	_, c := fake(t)
	err := gcs.List(t.Context(), c.Bucket("nope"), "", true, "", 0, func([]gcs.Object, string) error { return nil })
	if !errors.Is(err, gcs.ErrNotFound) || gcs.Transient(err) {
		t.Errorf("got %v (transient %v), want ErrNotFound, permanent", err, gcs.Transient(err))
	}
}

func TestOpen(t *testing.T) {
	t.Parallel()
	_, c := fake(t, "b")
	data := bytes.Repeat([]byte("0123456789"), 10)
	gen := put(t, c, "b", "obj", data)

	tests := []struct {
		name       string
		key        string
		generation int64
		maxBytes   int64
		wantErr    error
	}{
		{"live generation", "obj", 0, 0, nil},
		{"this generation", "obj", gen, 0, nil},
		{"exactly the limit", "obj", gen, 100, nil},
		{"over the limit", "obj", gen, 99, gcs.ErrTooLarge},
		{"missing generation", "obj", gen + 1, 0, gcs.ErrNotFound},
		{"missing key", "nope", 0, 0, gcs.ErrNotFound},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			r, obj, err := gcs.Open(t.Context(), c.Bucket("b"), tt.key, tt.generation, tt.maxBytes)
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("got error %v, want %v", err, tt.wantErr)
				}
				if gcs.Transient(err) {
					t.Errorf("Transient(%v) = true, want false", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			defer r.Close()
			got, err := io.ReadAll(r)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, data) {
				t.Errorf("read %q, want %q", got, data)
			}
			if obj.Key != "obj" || obj.Generation != gen || obj.Size != 100 {
				t.Errorf("object %+v, want key obj, generation %d, size 100", obj, gen)
			}
		})
	}
}

func TestOpenOverwrittenGeneration(t *testing.T) {
	t.Parallel()
	_, c := fake(t, "b")
	old := put(t, c, "b", "obj", []byte("v1"))
	if cur := put(t, c, "b", "obj", []byte("v2")); cur == old {
		t.Fatalf("overwrite kept generation %d", cur)
	}
	_, _, err := gcs.Open(t.Context(), c.Bucket("b"), "obj", old, 0)
	if !errors.Is(err, gcs.ErrNotFound) {
		t.Errorf("Open of the overwritten generation: %v, want ErrNotFound", err)
	}
}

func TestOpenAt(t *testing.T) {
	t.Parallel()
	_, c := fake(t, "b")
	data := make([]byte, 1000)
	for i := range data {
		data[i] = byte(i * 7)
	}
	gen := put(t, c, "b", "f.parquet", data)

	ra, err := gcs.OpenAt(t.Context(), c.Bucket("b"), "f.parquet", 0, 1000)
	if err != nil {
		t.Fatal(err)
	}
	if ra.Size() != 1000 {
		t.Fatalf("Size() = %d, want 1000", ra.Size())
	}
	tests := []struct {
		off     int64
		n       int
		want    []byte
		wantEOF bool
	}{
		{0, 4, data[:4], false},
		{996, 4, data[996:], false}, // the Parquet footer
		{500, 100, data[500:600], false},
		{990, 20, data[990:], true}, // past the end: short read with io.EOF
		{1000, 1, nil, true},
		{2000, 1, nil, true},
	}
	for _, tt := range tests {
		buf := make([]byte, tt.n)
		n, err := ra.ReadAt(buf, tt.off)
		if tt.wantEOF != (err == io.EOF) || (err != nil && err != io.EOF) {
			t.Errorf("ReadAt(%d bytes at %d): error %v, want EOF %v", tt.n, tt.off, err, tt.wantEOF)
		}
		if !bytes.Equal(buf[:n], tt.want) {
			t.Errorf("ReadAt(%d bytes at %d) = %v, want %v", tt.n, tt.off, buf[:n], tt.want)
		}
	}

	// Parquet readers fetch column chunks in parallel.
	var wg sync.WaitGroup
	for i := range 10 {
		wg.Go(func() {
			buf := make([]byte, 100)
			if _, err := ra.ReadAt(buf, int64(i*100)); err != nil {
				t.Errorf("concurrent ReadAt at %d: %v", i*100, err)
			} else if !bytes.Equal(buf, data[i*100:(i+1)*100]) {
				t.Errorf("concurrent ReadAt at %d: wrong bytes", i*100)
			}
		})
	}
	wg.Wait()

	if _, err := gcs.OpenAt(t.Context(), c.Bucket("b"), "f.parquet", gen, 999); !errors.Is(err, gcs.ErrTooLarge) {
		t.Errorf("OpenAt over the limit: %v, want ErrTooLarge", err)
	}
	if _, err := gcs.OpenAt(t.Context(), c.Bucket("b"), "f.parquet", gen+1, 0); !errors.Is(err, gcs.ErrNotFound) {
		t.Errorf("OpenAt of a missing generation: %v, want ErrNotFound", err)
	}

	// The generation is pinned at open: once it is replaced, reads fail
	// instead of mixing bytes of two versions.
	put(t, c, "b", "f.parquet", []byte("new content"))
	if _, err := ra.ReadAt(make([]byte, 4), 0); !errors.Is(err, gcs.ErrNotFound) {
		t.Errorf("ReadAt after overwrite: %v, want ErrNotFound", err)
	}
}

func TestValidateImport(t *testing.T) {
	t.Parallel()
	_, c := fake(t, "acme", "empty")
	put(t, c, "acme", "images/a.jpg", []byte("a"))
	put(t, c, "acme", "images2/b.jpg", []byte("b"))
	put(t, c, "acme", "folder/", nil)

	tests := []struct {
		bucket, prefix string
		wantField      string // "" = valid
		wantMessage    string
	}{
		{"acme", "", "", ""},
		{"empty", "", "", ""},
		{"acme", "images", "", ""},
		{"acme", "images/", "", ""},
		{"acme", "images//", "", ""},
		{"acme", "folder", "", ""}, // a console-made empty folder exists
		{"acme", "/", "", ""},      // only slashes: the whole bucket
		{"acme", "image", "prefix", "No blobs found in acme/image or prefix doesn't exist"},
		{"acme", "missing/", "prefix", "No blobs found in acme/missing/ or prefix doesn't exist"},
		{"empty", "x", "prefix", "No blobs found in empty/x or prefix doesn't exist"},
		{"nope", "", "bucket", "Bucket nope doesn't exist"},
		{"nope", "images", "bucket", "Bucket nope doesn't exist"},
	}
	for _, tt := range tests {
		t.Run(tt.bucket+"/"+tt.prefix, func(t *testing.T) {
			t.Parallel()
			err := gcs.ValidateImport(t.Context(), c.Bucket(tt.bucket), tt.prefix)
			if tt.wantField == "" {
				if err != nil {
					t.Errorf("got %v, want valid", err)
				}
				return
			}
			var ve *gcs.ValidationError
			if !errors.As(err, &ve) {
				t.Fatalf("got %T %v, want *ValidationError", err, err)
			}
			if ve.Field != tt.wantField || err.Error() != tt.wantMessage {
				t.Errorf("got %s: %q, want %s: %q", ve.Field, err.Error(), tt.wantField, tt.wantMessage)
			}
			if !errors.Is(err, gcs.ErrNotFound) {
				t.Errorf("%v does not wrap ErrNotFound", err)
			}
		})
	}
}

func TestValidateExport(t *testing.T) {
	t.Parallel()
	_, c := fake(t, "labels")
	if err := gcs.ValidateExport(t.Context(), c.Bucket("labels")); err != nil {
		t.Errorf("empty existing bucket: %v, want valid", err)
	}
	err := gcs.ValidateExport(t.Context(), c.Bucket("nope"))
	var ve *gcs.ValidationError
	if !errors.As(err, &ve) || ve.Field != "bucket" || ve.Message != "Bucket nope doesn't exist" {
		t.Errorf("missing bucket: %v, want bucket: Bucket nope doesn't exist", err)
	}
}

func TestPreview(t *testing.T) {
	t.Parallel()
	_, c := fake(t, "raw")
	var jpgs []string
	for i := range 30 {
		k := fmt.Sprintf("in/img%02d.jpg", i)
		put(t, c, "raw", k, []byte("x"))
		jpgs = append(jpgs, k)
	}
	for i := range 10 {
		put(t, c, "raw", fmt.Sprintf("in/note%02d.txt", i), []byte("x"))
	}
	put(t, c, "raw", "in/sub/deep.jpg", []byte("x"))
	put(t, c, "raw", "in/sub/", nil)
	put(t, c, "raw", "in2/other.jpg", []byte("x"))

	tests := []struct {
		name          string
		st            storages.Import
		limit         int
		want          []string
		wantTruncated bool
	}{
		{"regex, under the limit", storages.Import{Bucket: "raw", Prefix: "in", RegexFilter: `.*\.jpg$`}, 100, jpgs, false},
		{"regex, at the limit", storages.Import{Bucket: "raw", Prefix: "in", RegexFilter: `.*\.jpg$`}, 5, jpgs[:5], true},
		{"exactly the limit", storages.Import{Bucket: "raw", Prefix: "in", RegexFilter: `.*\.jpg$`}, 30, jpgs, false},
		{"recursive", storages.Import{Bucket: "raw", Prefix: "in/", RegexFilter: `.*\.jpg$`, RecursiveScan: true}, 100, append(slices.Clone(jpgs), "in/sub/deep.jpg"), false},
		{"regex anchored at the start", storages.Import{Bucket: "raw", Prefix: "in", RegexFilter: `in/img0`}, 100, jpgs[:10], false},
		{"no regex, limit", storages.Import{Bucket: "raw", Prefix: "in"}, 3, jpgs[:3], true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			objs, truncated, err := gcs.Preview(t.Context(), c, &tt.st, tt.limit, time.Minute)
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.want, keys(objs)); diff != "" {
				t.Errorf("keys (-want +got):\n%s", diff)
			}
			if truncated != tt.wantTruncated {
				t.Errorf("truncated = %v, want %v", truncated, tt.wantTruncated)
			}
		})
	}

	t.Run("time budget", func(t *testing.T) {
		t.Parallel()
		st := storages.Import{Bucket: "raw", Prefix: "in"}
		objs, truncated, err := gcs.Preview(t.Context(), c, &st, 100, time.Nanosecond)
		if err != nil || !truncated {
			t.Errorf("got %d objects, truncated %v, error %v; want truncated and no error", len(objs), truncated, err)
		}
	})
	t.Run("cancelled", func(t *testing.T) {
		t.Parallel()
		ctx, cancel := context.WithCancel(t.Context())
		cancel()
		st := storages.Import{Bucket: "raw", Prefix: "in"}
		if _, _, err := gcs.Preview(ctx, c, &st, 100, time.Minute); err == nil {
			t.Error("Preview with a cancelled context succeeded, want an error")
		}
	})
}

// A server that went away is a transient failure, not a dead letter.
func TestConnectionRefusedIsTransient(t *testing.T) {
	t.Parallel()
	// Port 1: nothing listens there (a stopped fake server's port could be
	// taken by a parallel test's server meanwhile, which answered 404).
	clients := gcs.NewClients(gcs.Options{EmulatorHost: "http://127.0.0.1:1"})
	t.Cleanup(func() { _ = clients.Close() })
	c, err := clients.For(t.Context(), nil)
	if err != nil {
		t.Fatal(err)
	}
	// The client retries refused connections itself until ctx ends; the
	// error then carries both the deadline and the last refusal.
	ctx, cancel := context.WithTimeout(t.Context(), 500*time.Millisecond)
	defer cancel()
	_, _, err = gcs.Open(ctx, c.Bucket("b"), "k", 0, 0)
	if err == nil || !gcs.Transient(err) {
		t.Errorf("Open against a stopped server: %v, Transient %v; want a transient error", err, gcs.Transient(err))
	}
}
