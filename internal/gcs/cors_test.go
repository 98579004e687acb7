package gcs_test

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"cloud.google.com/go/storage"
	"github.com/google/go-cmp/cmp"
	"google.golang.org/api/option"

	"github.com/labelsync/labelsync/internal/gcs"
)

var guide = gcs.CORSRule{
	Method:         []string{"GET"},
	ResponseHeader: []string{"Content-Type", "Access-Control-Allow-Origin"},
	MaxAgeSeconds:  3600,
}

func guideFor(origins ...string) gcs.CORSRule {
	r := guide
	r.Origin = origins
	return r
}

func TestMergeCORS(t *testing.T) {
	t.Parallel()
	put := storage.CORS{Origins: []string{"https://uploader.example"}, Methods: []string{"PUT"}, MaxAge: time.Minute}
	for _, c := range []struct {
		name    string
		current []storage.CORS
		origins []string
		want    []gcs.CORSRule
	}{
		{"no policy", nil, []string{"http://localhost:8080"}, []gcs.CORSRule{guideFor("http://localhost:8080")}},
		{"other origins kept", []storage.CORS{put}, []string{"http://localhost:8080", "https://ls.example"}, []gcs.CORSRule{
			{Origin: []string{"https://uploader.example"}, Method: []string{"PUT"}, ResponseHeader: []string{}, MaxAgeSeconds: 60},
			guideFor("http://localhost:8080", "https://ls.example"),
		}},
		{"our origin taken out of a shared rule", []storage.CORS{{Origins: []string{"https://a.example", "HTTP://LOCALHOST:8080"}, Methods: []string{"GET", "HEAD"}}}, []string{"http://localhost:8080"}, []gcs.CORSRule{
			{Origin: []string{"https://a.example"}, Method: []string{"GET", "HEAD"}, ResponseHeader: []string{}},
			guideFor("http://localhost:8080"),
		}},
		{"our old rule replaced", []storage.CORS{{Origins: []string{"http://localhost:8080"}, Methods: []string{"GET"}, MaxAge: time.Second}}, []string{"http://localhost:8080"}, []gcs.CORSRule{
			guideFor("http://localhost:8080"),
		}},
	} {
		got := gcs.CORSRules(gcs.MergeCORS(c.current, c.origins))
		if d := cmp.Diff(c.want, got); d != "" {
			t.Errorf("%s (-want +got):\n%s", c.name, d)
		}
		again := gcs.CORSRules(gcs.MergeCORS(gcs.MergeCORS(c.current, c.origins), c.origins))
		if d := cmp.Diff(got, again); d != "" {
			t.Errorf("%s: merging twice changed the policy (-once +twice):\n%s", c.name, d)
		}
	}
}

func TestCheckOrigins(t *testing.T) {
	t.Parallel()
	got, err := gcs.CheckOrigins([]string{"http://localhost:8080", "HTTPS://LS.Example", "*", "http://localhost:8080"})
	if d := cmp.Diff([]string{"http://localhost:8080", "https://ls.example", "*"}, got); err != nil || d != "" {
		t.Errorf("CheckOrigins: %v (-want +got):\n%s", err, d)
	}
	for _, o := range []string{"", "localhost:8080", "http://localhost:8080/", "http://ls.example/path", "ftp://ls.example", "http://user@ls.example", "http://ls.example?x", "http://", "**"} {
		if _, err := gcs.CheckOrigins([]string{o}); err == nil {
			t.Errorf("CheckOrigins(%q): no error", o)
		}
	}
	if _, err := gcs.CheckOrigins(nil); err == nil {
		t.Error("CheckOrigins(nil): no error")
	}
}

// TestSetCORSDryRun against fake-gcs-server: the policy is computed from
// the bucket's, printed, and nothing is written.
func TestSetCORSDryRun(t *testing.T) {
	t.Parallel()
	_, c := fake(t, "acme-raw")
	ctx := context.Background()
	rules, err := gcs.SetCORS(ctx, c.Bucket("acme-raw"), []string{"http://localhost:8080"}, true)
	if err != nil {
		t.Fatal(err)
	}
	out, _ := json.Marshal(rules)
	const want = `[{"origin":["http://localhost:8080"],"method":["GET"],"responseHeader":["Content-Type","Access-Control-Allow-Origin"],"maxAgeSeconds":3600}]`
	if string(out) != want {
		t.Errorf("dry run printed\n%s\nwant\n%s", out, want)
	}
	if _, err := gcs.SetCORS(ctx, c.Bucket("no-such-bucket"), []string{"http://localhost:8080"}, true); !errors.Is(err, gcs.ErrNotFound) {
		t.Errorf("missing bucket: %v, want ErrNotFound", err)
	}
	if _, err := gcs.SetCORS(ctx, c.Bucket("acme-raw"), []string{"localhost:8080"}, true); err == nil {
		t.Error("a bad origin was accepted")
	}
}

// corsBucket is the bucket part of GCS's JSON API, CORS and
// metageneration included: fake-gcs-server's bucket PATCH keeps neither
// (it stores only versioning and event-based hold), so the write path is
// tested against this hand-written fake.
type corsBucket struct {
	mu    sync.Mutex
	gen   int64
	cors  []map[string]any
	bumps int // metageneration bumps to make before the next PATCH
}

func (b *corsBucket) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if !strings.HasPrefix(r.URL.Path, "/storage/v1/b/acme-raw") {
		http.Error(w, `{"error": {"code": 404, "message": "Not Found"}}`, http.StatusNotFound)
		return
	}
	if r.Method == http.MethodPatch {
		b.gen += int64(b.bumps)
		b.bumps = 0
		if m := r.URL.Query().Get("ifMetagenerationMatch"); m != "" && m != strconv.FormatInt(b.gen, 10) {
			w.WriteHeader(http.StatusPreconditionFailed)
			_, _ = w.Write([]byte(`{"error": {"code": 412, "message": "Precondition Failed"}}`))
			return
		}
		var patch struct {
			CORS []map[string]any `json:"cors"`
		}
		if err := json.NewDecoder(r.Body).Decode(&patch); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		b.cors = patch.CORS
		b.gen++
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(map[string]any{"name": "acme-raw", "metageneration": strconv.FormatInt(b.gen, 10), "cors": b.cors})
}

func TestSetCORSWrites(t *testing.T) {
	t.Parallel()
	b := &corsBucket{gen: 3, cors: []map[string]any{{"origin": []string{"https://uploader.example"}, "method": []string{"PUT"}, "maxAgeSeconds": 60}}}
	ts := httptest.NewServer(b)
	t.Cleanup(ts.Close)
	ctx := context.Background()
	c, err := storage.NewClient(ctx, option.WithEndpoint(ts.URL+"/storage/v1/"), option.WithoutAuthentication())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	want := []gcs.CORSRule{
		{Origin: []string{"https://uploader.example"}, Method: []string{"PUT"}, ResponseHeader: []string{}, MaxAgeSeconds: 60},
		guideFor("http://localhost:8080"),
	}
	for range 2 { // the second run changes nothing
		got, err := gcs.SetCORS(ctx, c.Bucket("acme-raw"), []string{"http://localhost:8080"}, false)
		if err != nil {
			t.Fatal(err)
		}
		if d := cmp.Diff(want, got); d != "" {
			t.Errorf("stored policy (-want +got):\n%s", d)
		}
	}
	// A change of the bucket between the read and the write is not
	// overwritten.
	b.mu.Lock()
	b.bumps = 1
	b.mu.Unlock()
	if _, err := gcs.SetCORS(ctx, c.Bucket("acme-raw"), []string{"https://ls.example"}, false); err == nil {
		t.Error("a concurrent change of the bucket was overwritten")
	}
}
