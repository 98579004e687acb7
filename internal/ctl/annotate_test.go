package ctl

import (
	"encoding/json"
	"flag"
	"io"
	"slices"
	"testing"
	"time"

	"github.com/labelsync/labelsync/internal/annotation"
)

// TestWebhookPayload: what lsctl annotate posts is what the exporter's
// decoder reads as the change it describes.
func TestWebhookPayload(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 12, 2, 8, 45, 1, 123456789, time.UTC)
	tests := []struct {
		name       string
		c          change
		wantAction string
		wantTask   int64
		wantTime   time.Time
		wantLabel  string
	}{
		{"created", change{Action: "created", Project: 7, Task: 1, ID: 1, Label: "cat", Now: now},
			annotation.Created, 1, now.Truncate(time.Microsecond), "cat"},
		{"updated", change{Action: "updated", Project: 7, Task: 1, ID: 1, Label: "dog", Now: now.Add(time.Minute)},
			annotation.Updated, 1, now.Add(time.Minute).Truncate(time.Microsecond), "dog"},
		{"updated, local time", change{Action: "updated", Project: 7, Task: 2, ID: 3, Label: "cat", Now: now.In(time.FixedZone("CET", 3600))},
			annotation.Updated, 2, now.Truncate(time.Microsecond), "cat"},
		{"deleted", change{Action: "deleted", Project: 7, ID: 1, Now: now},
			annotation.Deleted, 0, time.Time{}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			body, err := webhookPayload(tt.c)
			if err != nil {
				t.Fatalf("webhookPayload: %v", err)
			}
			action, events, err := annotation.Decode(body)
			if err != nil {
				t.Fatalf("annotation.Decode(%s): %v", body, err)
			}
			if action != tt.wantAction || len(events) != 1 {
				t.Fatalf("Decode(%s) = %s with %d events, want %s with 1", body, action, len(events), tt.wantAction)
			}
			e := events[0]
			if e.Action != tt.wantAction || e.Project != tt.c.Project || e.AnnotationID != tt.c.ID || e.TaskID != tt.wantTask || !e.UpdatedAt.Equal(tt.wantTime) {
				t.Errorf("event = %s project %d annotation %d task %d at %s, want %s project %d annotation %d task %d at %s",
					e.Action, e.Project, e.AnnotationID, e.TaskID, e.UpdatedAt, tt.wantAction, tt.c.Project, tt.c.ID, tt.wantTask, tt.wantTime)
			}
			if tt.wantLabel == "" {
				return
			}
			var a struct {
				Result []struct {
					Value struct {
						Choices []string `json:"choices"`
					} `json:"value"`
				} `json:"result"`
			}
			if err := json.Unmarshal(e.Annotation, &a); err != nil || len(a.Result) != 1 || !slices.Equal(a.Result[0].Value.Choices, []string{tt.wantLabel}) {
				t.Errorf("annotation %s: want one result choosing %q", e.Annotation, tt.wantLabel)
			}
		})
	}
}

func TestWebhookPayloadRefusals(t *testing.T) {
	t.Parallel()
	tests := map[string]change{
		"unknown action":        {Action: "removed", Project: 7, Task: 1, ID: 1, Label: "cat"},
		"no project":            {Action: "created", Task: 1, ID: 1, Label: "cat"},
		"no id":                 {Action: "deleted", Project: 7},
		"created without task":  {Action: "created", Project: 7, ID: 1, Label: "cat"},
		"updated without label": {Action: "updated", Project: 7, Task: 1, ID: 1},
	}
	for name, c := range tests {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			if body, err := webhookPayload(c); err == nil {
				t.Errorf("webhookPayload(%+v) = %s, want an error", c, body)
			}
		})
	}
}

func TestParseInterspersed(t *testing.T) {
	t.Parallel()
	tests := []struct {
		args     []string
		wantPos  []string
		wantWait time.Duration
	}{
		{[]string{"b", "k"}, []string{"b", "k"}, 0},
		{[]string{"-wait", "30s", "b", "k"}, []string{"b", "k"}, 30 * time.Second},
		{[]string{"b", "k", "-wait", "30s"}, []string{"b", "k"}, 30 * time.Second},
		{[]string{"b", "--wait=2s", "k"}, []string{"b", "k"}, 2 * time.Second},
		{[]string{"b", "--", "-k", "-wait"}, []string{"b", "-k", "-wait"}, 0},
	}
	for _, tt := range tests {
		fs := flag.NewFlagSet("cat", flag.ContinueOnError)
		fs.SetOutput(io.Discard)
		wait := fs.Duration("wait", 0, "")
		pos, err := parseInterspersed(fs, tt.args)
		if err != nil || !slices.Equal(pos, tt.wantPos) || *wait != tt.wantWait {
			t.Errorf("parseInterspersed(%q) = %q, wait %s, %v; want %q, wait %s", tt.args, pos, *wait, err, tt.wantPos, tt.wantWait)
		}
	}
}
