package ctl

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/labelsync/labelsync/internal/annotation"
	"github.com/labelsync/labelsync/internal/webhook"
)

// change is one annotation change as lsctl annotate describes it.
type change struct {
	Action  string // "created", "updated" or "deleted"
	Project int64
	Task    int64 // created and updated only
	ID      int64
	Label   string    // the choice; created and updated only
	Now     time.Time // becomes created_at and updated_at
}

// lsTime is how Label Studio (Django REST framework) writes times.
const lsTime = "2006-01-02T15:04:05.000000Z"

// webhookPayload is the body Label Studio's webhook sends for c (SPEC §3;
// internal/annotation/testdata has real ones): ANNOTATION_CREATED or
// ANNOTATION_UPDATED with the annotation (one choices result), its task
// and the project, or ANNOTATIONS_DELETED with the annotation's id. lsctl
// does not know the task's data or when the annotation was first made:
// the task's data is empty, and created_at is Now like updated_at.
func webhookPayload(c change) ([]byte, error) {
	if c.Project <= 0 || c.ID <= 0 {
		return nil, fmt.Errorf("lsctl annotate: --project and --id must be positive (got %d and %d)", c.Project, c.ID)
	}
	type ref struct {
		ID int64 `json:"id"`
	}
	switch c.Action {
	case "deleted":
		return json.Marshal(struct {
			Action      string `json:"action"`
			Annotations []ref  `json:"annotations"`
			Project     ref    `json:"project"`
		}{annotation.Deleted, []ref{{c.ID}}, ref{c.Project}})
	case "created", "updated":
	default:
		return nil, fmt.Errorf("lsctl annotate: --action is %q, want created, updated or deleted", c.Action)
	}
	if c.Task <= 0 || c.Label == "" {
		return nil, fmt.Errorf("lsctl annotate: --action %s needs a positive --task and a --label", c.Action)
	}
	action := annotation.Created
	if c.Action == "updated" {
		action = annotation.Updated
	}
	now := c.Now.UTC().Format(lsTime)
	type value struct {
		Choices []string `json:"choices"`
	}
	type result struct {
		ID       string `json:"id"`
		Type     string `json:"type"`
		Value    value  `json:"value"`
		FromName string `json:"from_name"`
		ToName   string `json:"to_name"`
		Origin   string `json:"origin"`
	}
	type ann struct {
		ID           int64    `json:"id"`
		Result       []result `json:"result"`
		WasCancelled bool     `json:"was_cancelled"`
		GroundTruth  bool     `json:"ground_truth"`
		CreatedAt    string   `json:"created_at"`
		UpdatedAt    string   `json:"updated_at"`
		LastAction   string   `json:"last_action"`
		Task         int64    `json:"task"`
		Project      int64    `json:"project"`
	}
	type task struct {
		ID        int64          `json:"id"`
		Data      map[string]any `json:"data"`
		Meta      map[string]any `json:"meta"`
		IsLabeled bool           `json:"is_labeled"`
		Project   int64          `json:"project"`
	}
	return json.Marshal(struct {
		Action     string `json:"action"`
		Annotation ann    `json:"annotation"`
		Task       task   `json:"task"`
		Project    ref    `json:"project"`
	}{
		Action: action,
		Annotation: ann{
			ID: c.ID,
			Result: []result{{ID: "lsctl", Type: "choices", Value: value{[]string{c.Label}},
				FromName: "label", ToName: "image", Origin: "manual"}},
			CreatedAt: now, UpdatedAt: now, LastAction: "submitted",
			Task: c.Task, Project: c.Project,
		},
		Task:    task{ID: c.Task, Data: map[string]any{}, Meta: map[string]any{}, IsLabeled: true, Project: c.Project},
		Project: ref{c.Project},
	})
}

// annotate posts the webhook of one annotation change to the exporter,
// as Label Studio would, and prints the exporter's answer.
func annotate(ctx context.Context, args []string, env Env, stdout io.Writer) error {
	fs := flag.NewFlagSet("annotate", flag.ContinueOnError)
	c := change{Now: time.Now()}
	fs.Int64Var(&c.Project, "project", 0, "Label Studio project id")
	fs.Int64Var(&c.Task, "task", 0, "task id (created, updated)")
	fs.Int64Var(&c.ID, "id", 0, "annotation id")
	fs.StringVar(&c.Label, "label", "", "the annotation's choice (created, updated)")
	fs.StringVar(&c.Action, "action", "created", "created, updated or deleted")
	base := fs.String("url", "http://127.0.0.1:8081", "the exporter's base URL")
	pos, err := parseInterspersed(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 0 {
		return fmt.Errorf("lsctl annotate: unexpected argument %q\n%s", pos[0], usage)
	}
	body, err := webhookPayload(c)
	if err != nil {
		return err
	}
	if env.WebhookSecret == "" {
		return errors.New("lsctl annotate: LABELSYNC_WEBHOOK_SECRET is not set (the exporter's webhook secret)")
	}
	url := strings.TrimRight(*base, "/") + webhook.Path
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return fmt.Errorf("lsctl annotate: %w", err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+env.WebhookSecret)
	resp, err := (&http.Client{Timeout: 30 * time.Second}).Do(req)
	if err != nil {
		return fmt.Errorf("lsctl annotate: %w", err)
	}
	defer resp.Body.Close()
	answer, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return fmt.Errorf("lsctl annotate: read the answer of %s: %w", url, err)
	}
	fmt.Fprintf(stdout, "POST %s annotation %d %s (project %d)\n%s %s\n",
		url, c.ID, c.Action, c.Project, resp.Status, bytes.TrimSpace(answer))
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return fmt.Errorf("lsctl annotate: the exporter answered %s", resp.Status)
	}
	return nil
}
