package lsstub_test

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/labelsync/labelsync/internal/lsstub"
)

const token = "0123456789abcdef0123456789abcdef01234567"

func call(t *testing.T, method, u, body string) (int, map[string]any, []byte) {
	t.Helper()
	req, _ := http.NewRequest(method, u, strings.NewReader(body))
	req.Header.Set("Authorization", "Token "+token)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	var out map[string]any
	_ = json.Unmarshal(raw, &out)
	return resp.StatusCode, out, raw
}

// TestShapes checks the stand-in against the shapes it claims to follow.
func TestShapes(t *testing.T) {
	t.Parallel()
	s := lsstub.New(lsstub.Options{LegacyToken: token, FirstTaskID: 10})
	t.Cleanup(s.Close)
	s.AddProject(7, "p")
	s.AddProject(8, "q")

	code, out, _ := call(t, "POST", s.URL+"/api/projects/7/import?return_task_ids=true", `[{"image":"a"},{"data":{"image":"b"},"meta":{"m":1}}]`)
	if code != 201 || fmt.Sprint(out["task_ids"]) != "[10 11]" || out["task_count"] != 2.0 {
		t.Fatalf("import: %d %v", code, out)
	}
	if code, out, _ = call(t, "POST", s.URL+"/api/projects/8/import", `[{"x":1}]`); code != 201 || out["task_ids"] != nil {
		t.Errorf("import without return_task_ids: %d %v", code, out)
	}
	s.Reject(func(data json.RawMessage) string {
		if strings.Contains(string(data), "bad") {
			return "no"
		}
		return ""
	})
	if code, out, _ = call(t, "POST", s.URL+"/api/projects/7/import?return_task_ids=true", `[{"v":"ok"},{"v":"bad"}]`); code != 400 || out["detail"] != "Validation error" {
		t.Errorf("refused import: %d %v", code, out)
	}
	s.Reject(nil)
	// The refused import used up ids 13 and 14 (12 went to project 8).
	if code, out, _ = call(t, "POST", s.URL+"/api/projects/7/import?return_task_ids=true", `[{"v":"ok"}]`); fmt.Sprint(out["task_ids"]) != "[15]" {
		t.Errorf("after a refused import: %d %v", code, out)
	}
	if code, _, _ = call(t, "POST", s.URL+"/api/projects/99/import", `[{"v":1}]`); code != 404 {
		t.Errorf("missing project: %d", code)
	}

	q := url.QueryEscape(`{"filters":{"conjunction":"and","items":[{"filter":"filter:tasks:id","operator":"greater","type":"Number","value":10}]},"ordering":["tasks:id"]}`)
	code, out, _ = call(t, "GET", s.URL+"/api/tasks/?project=7&page_size=1&page=1&query="+q, "")
	tasks, _ := out["tasks"].([]any)
	if code != 200 || out["total"] != 2.0 || len(tasks) != 1 || tasks[0].(map[string]any)["id"] != 11.0 {
		t.Errorf("filtered list: %d %v", code, out)
	}
	if code, out, _ = call(t, "GET", s.URL+"/api/tasks/?project=7&page_size=1&page=3&query="+q, ""); code != 404 || out["detail"] != "Invalid page." {
		t.Errorf("a page past the end: %d %v", code, out)
	}
	if code, out, _ = call(t, "GET", s.URL+"/api/tasks/?project=8&page=1", ""); code != 200 || out["total"] != 1.0 {
		t.Errorf("project 8: %d %v", code, out)
	}
	if code, _, _ = call(t, "PATCH", s.URL+"/api/tasks/11/", `{"data":{"image":"c"}}`); code != 200 {
		t.Errorf("patch: %d", code)
	}
	if code, _, _ = call(t, "DELETE", s.URL+"/api/tasks/11/", ""); code != 204 {
		t.Errorf("delete: %d", code)
	}
	if code, out, _ = call(t, "DELETE", s.URL+"/api/tasks/11/", ""); code != 404 || out["detail"] != "Not found." {
		t.Errorf("second delete: %d %v", code, out)
	}
	if code, out, _ = call(t, "POST", s.URL+"/api/webhooks/", `{"project":99,"url":"http://x/"}`); code != 404 || out["detail"] != "Project not found." {
		t.Errorf("webhook of a missing project: %d %v", code, out)
	}
	if code, _, _ = call(t, "POST", s.URL+"/api/webhooks/", `{"project":7,"url":"http://x/","actions":["NOPE"]}`); code != 400 {
		t.Errorf("webhook with an unknown action: %d", code)
	}
	if code, _, raw := call(t, "GET", s.URL+"/api/webhooks/?project=7", ""); code != 200 || string(raw) != "[]\n" {
		t.Errorf("webhook list: %d %s", code, raw)
	}
	req, _ := http.NewRequest("GET", s.URL+"/api/projects/", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 401 {
		t.Errorf("without a token: %d", resp.StatusCode)
	}
}

// TestLateCommit: an import that answers (here a proxy's 504) before it
// commits creates its tasks later.
func TestLateCommit(t *testing.T) {
	t.Parallel()
	s := lsstub.New(lsstub.Options{LegacyToken: token})
	t.Cleanup(s.Close)
	s.AddProject(7, "p")
	s.Inject(lsstub.Fault{Op: "import", Status: http.StatusGatewayTimeout, LateCommit: 100 * time.Millisecond}, 1)
	if code, _, _ := call(t, "POST", s.URL+"/api/projects/7/import?return_task_ids=true", `[{"v":1},{"v":2}]`); code != http.StatusGatewayTimeout {
		t.Fatalf("import: %d, want 504", code)
	}
	if n := len(s.Tasks(7)); n != 0 {
		t.Fatalf("%d tasks right after the answer, want 0", n)
	}
	deadline := time.Now().Add(10 * time.Second)
	for len(s.Tasks(7)) != 2 {
		if time.Now().After(deadline) {
			t.Fatalf("%d tasks 10 s after the answer, want 2", len(s.Tasks(7)))
		}
		time.Sleep(10 * time.Millisecond)
	}
}
