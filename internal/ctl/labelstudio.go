package ctl

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"

	"github.com/labelsync/labelsync/internal/annotation"
	"github.com/labelsync/labelsync/internal/fault"
	"github.com/labelsync/labelsync/internal/labelstudio"
	"github.com/labelsync/labelsync/internal/webhook"
)

// webhookActions are the annotation actions the exporter handles (SPEC §3).
var webhookActions = []string{annotation.Created, annotation.Updated, annotation.BulkCreated, annotation.Deleted}

// labelStudio runs `lsctl labelstudio connect`: it checks that the project
// exists and that the token may import into it, then registers (or brings
// up to date) the project's webhook to the exporter. Running it again
// changes nothing; --dry-run changes nothing either and prints what it
// would do.
func labelStudio(ctx context.Context, args []string, env Env, stdout io.Writer) error {
	if len(args) == 0 || args[0] != "connect" {
		return errors.New(usage)
	}
	fs := flag.NewFlagSet("labelstudio connect", flag.ContinueOnError)
	project := fs.Int64("project", 0, "Label Studio project id")
	exporterURL := fs.String("exporter-url", "http://localhost:8081", "the exporter's base URL as Label Studio reaches it")
	dryRun := fs.Bool("dry-run", false, "print what would change, change nothing")
	pos, err := parseInterspersed(fs, args[1:])
	if err != nil {
		return err
	}
	if len(pos) != 0 {
		return fmt.Errorf("lsctl labelstudio connect: unexpected argument %q\n%s", pos[0], usage)
	}
	switch {
	case *project <= 0:
		return errors.New("lsctl labelstudio connect: --project must be a positive Label Studio project id")
	case env.LabelStudioURL == "":
		return errors.New("lsctl labelstudio connect: LABELSYNC_LABEL_STUDIO_URL is not set")
	case env.LabelStudioToken == "":
		return errors.New("lsctl labelstudio connect: LABELSYNC_LABEL_STUDIO_TOKEN is not set")
	case env.WebhookSecret == "":
		return errors.New("lsctl labelstudio connect: LABELSYNC_WEBHOOK_SECRET is not set (the exporter's webhook secret)")
	case !strings.HasPrefix(*exporterURL, "http://") && !strings.HasPrefix(*exporterURL, "https://"):
		return fmt.Errorf("lsctl labelstudio connect: --exporter-url %q is not an http(s) URL", *exporterURL)
	}
	ls, err := labelstudio.New(env.LabelStudioURL, env.LabelStudioToken)
	if err != nil {
		return fmt.Errorf("lsctl labelstudio connect: LABELSYNC_LABEL_STUDIO_URL: %w", err)
	}

	p, err := ls.Project(ctx, *project)
	if fault.CodeOf(err) == fault.NotFound {
		return fmt.Errorf("lsctl labelstudio connect: project %d does not exist in Label Studio at %s (or the token cannot see it)", *project, ls.BaseURL())
	}
	if err != nil {
		return fmt.Errorf("lsctl labelstudio connect: %w", err)
	}
	fmt.Fprintf(stdout, "project %d %q: found\n", p.ID, p.Title)
	if err := ls.CheckImport(ctx, *project); err != nil {
		return fmt.Errorf("lsctl labelstudio connect: the token cannot import into project %d: %w", *project, err)
	}
	fmt.Fprintln(stdout, "import: allowed")

	want := labelstudio.Webhook{
		Project:     *project,
		URL:         strings.TrimRight(*exporterURL, "/") + webhook.Path,
		SendPayload: true,
		Headers:     map[string]string{"Authorization": "Bearer " + env.WebhookSecret},
		IsActive:    true,
		Actions:     webhookActions,
	}
	hooks, err := ls.Webhooks(ctx, *project)
	if err != nil {
		return fmt.Errorf("lsctl labelstudio connect: %w", err)
	}
	var have *labelstudio.Webhook
	for i, h := range hooks {
		if h.URL == want.URL && h.Project == *project {
			have = &hooks[i]
			break
		}
	}
	verb := func(done, would string) string {
		if *dryRun {
			return would
		}
		return done
	}
	if have == nil {
		if !*dryRun {
			made, err := ls.CreateWebhook(ctx, want)
			if err != nil {
				return fmt.Errorf("lsctl labelstudio connect: %w", err)
			}
			want.ID = made.ID
		}
		fmt.Fprintf(stdout, "webhook%s: %s %s\n", idText(want.ID), verb("created", "would create"), describe(want))
		return nil
	}
	next, changes := merge(*have, want)
	if len(changes) == 0 {
		fmt.Fprintf(stdout, "webhook %d: unchanged %s\n", have.ID, describe(*have))
		return nil
	}
	if !*dryRun {
		if _, err := ls.UpdateWebhook(ctx, have.ID, next); err != nil {
			return fmt.Errorf("lsctl labelstudio connect: %w", err)
		}
	}
	fmt.Fprintf(stdout, "webhook %d: %s (%s) %s\n", have.ID, verb("updated", "would update"), strings.Join(changes, ", "), describe(next))
	return nil
}

// merge returns the webhook have brought up to want, keeping what want
// does not name (other headers, other actions), and the fields it changes.
func merge(have, want labelstudio.Webhook) (labelstudio.Webhook, []string) {
	next := have
	var changes []string
	if !have.SendPayload {
		next.SendPayload = true
		changes = append(changes, "send_payload")
	}
	if !have.IsActive {
		next.IsActive = true
		changes = append(changes, "is_active")
	}
	next.Headers = maps.Clone(have.Headers)
	if next.Headers == nil {
		next.Headers = map[string]string{}
	}
	for k, v := range want.Headers {
		if next.Headers[k] != v {
			next.Headers[k] = v
			changes = append(changes, "headers."+k)
		}
	}
	if !have.SendForAllActions {
		next.Actions = slices.Clone(have.Actions)
		for _, a := range want.Actions {
			if !slices.Contains(next.Actions, a) {
				next.Actions = append(next.Actions, a)
				changes = append(changes, "actions+"+a)
			}
		}
	}
	return next, changes
}

// describe prints a webhook without its secret.
func describe(w labelstudio.Webhook) string {
	actions := strings.Join(w.Actions, ",")
	if w.SendForAllActions {
		actions = "all"
	}
	auth := "none"
	if v, ok := w.Headers["Authorization"]; ok {
		scheme, _, _ := strings.Cut(v, " ")
		auth = scheme + " ***"
	}
	return fmt.Sprintf("url=%s project=%d actions=%s send_payload=%t is_active=%t authorization=%q", w.URL, w.Project, actions, w.SendPayload, w.IsActive, auth)
}

func idText(id int64) string {
	if id == 0 {
		return ""
	}
	return fmt.Sprintf(" %d", id)
}
