package ctl

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"testing"

	"github.com/labelsync/labelsync/internal/labelstudio"
	"github.com/labelsync/labelsync/internal/lsstub"
)

func TestLabelStudioConnect(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	refresh := lsstub.NewRefreshToken()
	s := lsstub.New(lsstub.Options{RefreshToken: refresh})
	t.Cleanup(s.Close)
	s.AddProject(7, "raw images")
	env := Env{LabelStudioURL: s.URL, LabelStudioToken: refresh, WebhookSecret: "hook-s3cret"}
	connect := func(args ...string) string {
		t.Helper()
		var out bytes.Buffer
		if err := Run(ctx, append([]string{"labelstudio", "connect"}, args...), env, nil, &out); err != nil {
			t.Fatalf("connect %v: %v\n%s", args, err, out.String())
		}
		if strings.Contains(out.String(), "hook-s3cret") {
			t.Errorf("the secret is printed:\n%s", out.String())
		}
		return out.String()
	}

	out := connect("--project", "7", "--dry-run", "--exporter-url", "http://exporter:8081/")
	if !strings.Contains(out, "would create") || len(s.Webhooks()) != 0 {
		t.Fatalf("dry run:\n%s\n%d webhooks", out, len(s.Webhooks()))
	}
	out = connect("--project", "7", "--exporter-url", "http://exporter:8081/")
	if !strings.Contains(out, "created") || !strings.Contains(out, "import: allowed") {
		t.Errorf("first run:\n%s", out)
	}
	hooks := s.Webhooks()
	if len(hooks) != 1 {
		t.Fatalf("%d webhooks, want 1", len(hooks))
	}
	var h struct {
		Project     int64             `json:"project"`
		URL         string            `json:"url"`
		SendPayload bool              `json:"send_payload"`
		Headers     map[string]string `json:"headers"`
		IsActive    bool              `json:"is_active"`
		Actions     []string          `json:"actions"`
	}
	if err := json.Unmarshal(hooks[0], &h); err != nil {
		t.Fatal(err)
	}
	if h.Project != 7 || h.URL != "http://exporter:8081/webhooks/label-studio" || !h.SendPayload || !h.IsActive ||
		h.Headers["Authorization"] != "Bearer hook-s3cret" || strings.Join(h.Actions, ",") != "ANNOTATION_CREATED,ANNOTATION_UPDATED,ANNOTATIONS_CREATED,ANNOTATIONS_DELETED" {
		t.Errorf("webhook %s", hooks[0])
	}
	before := string(hooks[0])
	if out = connect("--project", "7", "--exporter-url", "http://exporter:8081"); !strings.Contains(out, "unchanged") {
		t.Errorf("second run:\n%s", out)
	}
	if after := string(s.Webhooks()[0]); after != before {
		t.Errorf("the second run changed the webhook:\n%s\n%s", before, after)
	}

	// A webhook someone deactivated and narrowed is brought back, keeping
	// its other headers.
	ls, err := labelstudio.New(s.URL, refresh)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ls.UpdateWebhook(ctx, 1, labelstudio.Webhook{URL: h.URL, SendPayload: true, Headers: map[string]string{"X-Team": "ml"}, Actions: []string{"ANNOTATION_CREATED"}}); err != nil {
		t.Fatal(err)
	}
	out = connect("--project", "7", "--exporter-url", "http://exporter:8081")
	if !strings.Contains(out, "updated") || !strings.Contains(out, "is_active") {
		t.Errorf("repair run:\n%s", out)
	}
	_ = json.Unmarshal(s.Webhooks()[0], &h)
	if !h.IsActive || h.Headers["X-Team"] != "ml" || h.Headers["Authorization"] != "Bearer hook-s3cret" || len(h.Actions) != 4 {
		t.Errorf("repaired webhook %s", s.Webhooks()[0])
	}

	var buf bytes.Buffer
	if err := Run(ctx, []string{"labelstudio", "connect", "--project", "8"}, env, nil, &buf); err == nil || !strings.Contains(err.Error(), "does not exist") {
		t.Errorf("missing project: %v", err)
	}
	noSecret := env
	noSecret.WebhookSecret = ""
	if err := Run(ctx, []string{"labelstudio", "connect", "--project", "7"}, noSecret, nil, &buf); err == nil || !strings.Contains(err.Error(), "LABELSYNC_WEBHOOK_SECRET") {
		t.Errorf("without the secret: %v", err)
	}
}
