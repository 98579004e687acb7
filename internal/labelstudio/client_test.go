package labelstudio_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/labelsync/labelsync/internal/fault"
	"github.com/labelsync/labelsync/internal/labelstudio"
	"github.com/labelsync/labelsync/internal/lsstub"
)

const legacyToken = "0123456789abcdef0123456789abcdef01234567"

func newStub(t *testing.T, opts lsstub.Options) *lsstub.Server {
	t.Helper()
	s := lsstub.New(opts)
	t.Cleanup(s.Close)
	s.AddProject(7, "raw images")
	return s
}

func newClient(t *testing.T, url, token string, opts ...labelstudio.Option) *labelstudio.Client {
	t.Helper()
	c, err := labelstudio.New(url, token, opts...)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func importBody(t *testing.T, ids ...string) []byte {
	t.Helper()
	var tasks []json.RawMessage
	for _, id := range ids {
		b, err := labelstudio.ImportTask(json.RawMessage(fmt.Sprintf(`{"data":{"image":"gs://b/%s.jpg"}}`, id)), labelstudio.Meta{LabelsyncTaskID: id, StorageID: 1, Bucket: "b", Key: id + ".jpg", Generation: "1"})
		if err != nil {
			t.Fatal(err)
		}
		tasks = append(tasks, b)
	}
	out, _ := json.Marshal(tasks)
	return out
}

func TestImportUpdateDelete(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := newStub(t, lsstub.Options{LegacyToken: legacyToken, FirstTaskID: 1000})
	c := newClient(t, s.URL, legacyToken)

	ids, err := c.Import(ctx, 7, importBody(t, "a", "b", "c"), 3)
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(ids) != "[1000 1001 1002]" {
		t.Fatalf("ids %v, want [1000 1001 1002]", ids)
	}
	var seen []string
	err = c.EachTask(ctx, labelstudio.TaskQuery{Project: 7, AfterID: 1000, PageSize: 1}, func(task labelstudio.Task) error {
		seen = append(seen, fmt.Sprintf("%d:%s", task.ID, task.LabelsyncTaskID()))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(seen) != "[1001:b 1002:c]" {
		t.Errorf("tasks after 1000: %v, want [1001:b 1002:c]", seen)
	}
	if max, err := c.MaxTaskID(ctx, 7); err != nil || max != 1002 {
		t.Errorf("MaxTaskID = %d, %v; want 1002", max, err)
	}

	if err := c.UpdateTask(ctx, 1001, []byte(`{"data":{"image":"gs://b/b2.jpg"}}`)); err != nil {
		t.Fatal(err)
	}
	task, err := c.Task(ctx, 1001)
	if err != nil {
		t.Fatal(err)
	}
	if string(task.Data) != `{"image":"gs://b/b2.jpg"}` {
		t.Errorf("data after update %s", task.Data)
	}
	if err := c.DeleteTask(ctx, 1001); err != nil {
		t.Fatal(err)
	}
	err = c.DeleteTask(ctx, 1001)
	if code, class := fault.Of(err); code != fault.NotFound || class != fault.ClassPermanent {
		t.Errorf("second delete: %v (%s), want a permanent not_found", err, code)
	}
	if _, err := c.Import(ctx, 99, importBody(t, "x"), 1); fault.CodeOf(err) != fault.NotFound {
		t.Errorf("import into a missing project: %v, want not_found", err)
	}
}

func TestFailuresAreClassified(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := newStub(t, lsstub.Options{LegacyToken: legacyToken})
	c := newClient(t, s.URL, legacyToken)

	s.FailNext("import", 1, http.StatusTooManyRequests, 3*time.Second)
	_, err := c.Import(ctx, 7, importBody(t, "a"), 1)
	if fault.IsPermanent(err) || labelstudio.RetryAfter(err) != 3*time.Second || labelstudio.Uncertain(err) {
		t.Errorf("429: %v, retry after %s, uncertain %v; want transient, 3s, certain", err, labelstudio.RetryAfter(err), labelstudio.Uncertain(err))
	}
	s.FailNext("import", 1, http.StatusBadGateway, 0)
	if _, err = c.Import(ctx, 7, importBody(t, "a"), 1); fault.IsPermanent(err) || !labelstudio.Uncertain(err) {
		t.Errorf("502: %v; want transient and uncertain", err)
	}
	s.CutAfterCommit("import", 1)
	if _, err = c.Import(ctx, 7, importBody(t, "a"), 1); fault.IsPermanent(err) || !labelstudio.Uncertain(err) {
		t.Errorf("cut after commit: %v; want transient and uncertain", err)
	}
	if n := len(s.Tasks(7)); n != 1 {
		t.Errorf("%d tasks after the cut import, want 1 (the commit happened)", n)
	}
	s.Reject(func(data json.RawMessage) string { return "refused" })
	_, err = c.Import(ctx, 7, importBody(t, "a"), 1)
	if code, class := fault.Of(err); code != fault.BadInput || class != fault.ClassPermanent || labelstudio.StatusOf(err) != 400 {
		t.Errorf("refused task: %v; want a permanent bad_input 400", err)
	}
	bad := newClient(t, s.URL, "wrong")
	if err := bad.Ping(ctx); fault.IsPermanent(err) || labelstudio.StatusOf(err) != 401 {
		t.Errorf("wrong token: %v; want a transient 401", err)
	}
}

func TestPersonalAccessTokenIsRefreshedBeforeExpiry(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	refresh := lsstub.NewRefreshToken()
	if !labelstudio.IsPersonalAccessToken(refresh) || labelstudio.IsPersonalAccessToken(legacyToken) {
		t.Fatal("token kind misjudged")
	}
	s := newStub(t, lsstub.Options{RefreshToken: refresh, AccessTTL: 12 * time.Second})
	c := newClient(t, s.URL, refresh)
	var wg sync.WaitGroup
	for range 20 {
		wg.Go(func() {
			if err := c.Ping(ctx); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	if n := s.Requests("refresh"); n != 1 {
		t.Errorf("%d refreshes for 20 concurrent requests, want 1", n)
	}
	// The token lives 12 s: it is renewed 10 s before it expires.
	time.Sleep(2500 * time.Millisecond)
	if err := c.Ping(ctx); err != nil {
		t.Fatal(err)
	}
	if n := s.Requests("refresh"); n != 2 {
		t.Errorf("%d refreshes after 2.5 s, want 2", n)
	}
	bad := newClient(t, s.URL, lsstub.NewRefreshToken())
	if err := bad.Ping(ctx); labelstudio.StatusOf(err) != 401 || fault.IsPermanent(err) {
		t.Errorf("unknown refresh token: %v; want a transient 401", err)
	}
}

func TestTokenNeverInErrors(t *testing.T) {
	t.Parallel()
	s := newStub(t, lsstub.Options{LegacyToken: legacyToken})
	c := newClient(t, s.URL, "secret-legacy-token")
	err := c.Ping(context.Background())
	if err == nil {
		t.Fatal("no error with a wrong token")
	}
	var e *labelstudio.Error
	if !errors.As(err, &e) {
		t.Fatalf("%T is not a *labelstudio.Error", err)
	}
	if msg := err.Error(); strings.Contains(msg, "secret-legacy-token") {
		t.Errorf("the token leaks into %q", msg)
	}
}

func TestWebhooksAndCheckImport(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	s := newStub(t, lsstub.Options{LegacyToken: legacyToken})
	c := newClient(t, s.URL, legacyToken)
	if err := c.CheckImport(ctx, 7); err != nil {
		t.Fatal(err)
	}
	if n := len(s.Tasks(7)); n != 0 {
		t.Errorf("CheckImport created %d tasks", n)
	}
	if err := c.CheckImport(ctx, 8); fault.CodeOf(err) != fault.NotFound {
		t.Errorf("CheckImport of a missing project: %v", err)
	}
	w := labelstudio.Webhook{Project: 7, URL: "http://exporter/webhooks/label-studio", SendPayload: true, IsActive: true,
		Headers: map[string]string{"Authorization": "Bearer x"}, Actions: []string{"ANNOTATION_CREATED"}}
	made, err := c.CreateWebhook(ctx, w)
	if err != nil {
		t.Fatal(err)
	}
	w.Actions = append(w.Actions, "ANNOTATION_UPDATED")
	if _, err := c.UpdateWebhook(ctx, made.ID, w); err != nil {
		t.Fatal(err)
	}
	hooks, err := c.Webhooks(ctx, 7)
	if err != nil {
		t.Fatal(err)
	}
	if len(hooks) != 1 || len(hooks[0].Actions) != 2 || hooks[0].Headers["Authorization"] != "Bearer x" || hooks[0].Project != 7 {
		t.Errorf("webhooks %+v", hooks)
	}
	if _, err := c.CreateWebhook(ctx, labelstudio.Webhook{Project: 8, URL: "http://x/"}); fault.CodeOf(err) != fault.NotFound {
		t.Errorf("webhook of a missing project: %v", err)
	}
}

func TestObserverCountsOutcomes(t *testing.T) {
	t.Parallel()
	s := newStub(t, lsstub.Options{LegacyToken: legacyToken})
	var mu sync.Mutex
	got := map[string]int{}
	c := newClient(t, s.URL, legacyToken, labelstudio.WithObserver(func(op, outcome string) {
		mu.Lock()
		got[op+"/"+outcome]++
		mu.Unlock()
	}))
	s.FailNext("delete", 1, http.StatusServiceUnavailable, 0)
	_ = c.DeleteTask(context.Background(), 5)
	_ = c.DeleteTask(context.Background(), 5)
	if got["delete/unavailable"] != 1 || got["delete/not_found"] != 1 {
		t.Errorf("outcomes %v", got)
	}
}

// TestOversizeAnswerIsRefused: an answer over the client's 64 MiB bound is a
// permanent too_large error, not a body cut short and decoded.
func TestOversizeAnswerIsRefused(t *testing.T) {
	t.Parallel()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"id": 7, "title": "`))
		chunk := bytes.Repeat([]byte("x"), 1<<20)
		for range 65 {
			if _, err := w.Write(chunk); err != nil {
				return
			}
		}
		_, _ = w.Write([]byte(`"}`))
	}))
	t.Cleanup(srv.Close)
	c, err := labelstudio.New(srv.URL, "0123456789abcdef0123456789abcdef01234567")
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.Project(t.Context(), 7)
	if code, class := fault.Of(err); code != fault.TooLarge || class != fault.ClassPermanent {
		t.Fatalf("Project with a 65 MiB answer: %v (%v, %v), want a permanent too_large", err, code, class)
	}
}
