package labelstudio

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"

	"github.com/labelsync/labelsync/internal/fault"
)

// Webhooks lists the webhooks of project (GET /api/webhooks/?project=).
func (c *Client) Webhooks(ctx context.Context, project int64) ([]Webhook, error) {
	_, out, err := c.do(ctx, request{op: "webhooks", method: http.MethodGet, path: "/api/webhooks/?project=" + strconv.FormatInt(project, 10)})
	if err != nil {
		return nil, err
	}
	hooks, err := DecodeWebhooks(out)
	if err != nil {
		return nil, fault.Transient(fault.Unavailable, fmt.Errorf("labelstudio: %w", err))
	}
	return hooks, nil
}

// CreateWebhook registers w (POST /api/webhooks/) and returns it as Label
// Studio stored it.
func (c *Client) CreateWebhook(ctx context.Context, w Webhook) (Webhook, error) {
	w.ID = 0
	body, err := json.Marshal(w)
	if err != nil {
		return Webhook{}, fault.Permanent(fault.BadInput, fmt.Errorf("labelstudio: webhook: %w", err))
	}
	_, out, err := c.do(ctx, request{op: "create_webhook", method: http.MethodPost, path: "/api/webhooks/", body: body, want: []int{http.StatusCreated, http.StatusOK}})
	if err != nil {
		return Webhook{}, err
	}
	return decodedWebhook(out)
}

// UpdateWebhook changes webhook id to w (PATCH /api/webhooks/{id}/; the
// project of a webhook cannot change, so it is not sent).
func (c *Client) UpdateWebhook(ctx context.Context, id int64, w Webhook) (Webhook, error) {
	body, err := json.Marshal(map[string]any{
		"url":                  w.URL,
		"send_payload":         w.SendPayload,
		"send_for_all_actions": w.SendForAllActions,
		"headers":              w.Headers,
		"is_active":            w.IsActive,
		"actions":              w.Actions,
	})
	if err != nil {
		return Webhook{}, fault.Permanent(fault.BadInput, fmt.Errorf("labelstudio: webhook: %w", err))
	}
	_, out, err := c.do(ctx, request{op: "update_webhook", method: http.MethodPatch, path: "/api/webhooks/" + strconv.FormatInt(id, 10) + "/", body: body})
	if err != nil {
		return Webhook{}, err
	}
	return decodedWebhook(out)
}

func decodedWebhook(out []byte) (Webhook, error) {
	w, err := DecodeWebhook(out)
	if err != nil {
		return Webhook{}, fault.Transient(fault.Unavailable, fmt.Errorf("labelstudio: %w", err))
	}
	return w, nil
}
