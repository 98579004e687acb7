package labelstudio

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/labelsync/labelsync/internal/fault"
)

// IsPersonalAccessToken reports whether token looks like a JWT: three
// dot-separated, non-empty base64url parts. Label Studio's personal access
// tokens are JWT refresh tokens; its legacy tokens are 40 hex digits.
func IsPersonalAccessToken(token string) bool {
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		return false
	}
	for _, p := range parts {
		if p == "" {
			return false
		}
		if _, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(p, "=")); err != nil {
			return false
		}
	}
	return true
}

// auth builds the Authorization header. For a personal access token it
// holds the current access token and renews it before it expires; one
// renewal runs at a time, and callers wait for it.
type auth struct {
	c     *Client
	token string
	pat   bool

	mu      sync.Mutex
	access  string
	renewAt time.Time
	// renewing is closed when the renewal in progress ends.
	renewing chan struct{}
	err      error
}

func newAuth(token string, c *Client) *auth {
	return &auth{c: c, token: token, pat: IsPersonalAccessToken(token)}
}

// header returns the Authorization header value. force renews the access
// token even if it looks valid (Label Studio answered 401).
func (a *auth) header(ctx context.Context, force bool) (string, error) {
	if !a.pat {
		return "Token " + a.token, nil
	}
	for {
		a.mu.Lock()
		if a.access != "" && !force && time.Now().Before(a.renewAt) {
			h := "Bearer " + a.access
			a.mu.Unlock()
			return h, nil
		}
		if a.renewing != nil {
			wait := a.renewing
			a.mu.Unlock()
			select {
			case <-wait:
			case <-ctx.Done():
				return "", ctx.Err()
			}
			a.mu.Lock()
			err, access := a.err, a.access
			a.mu.Unlock()
			if err != nil {
				return "", err
			}
			if access != "" {
				return "Bearer " + access, nil
			}
			continue
		}
		done := make(chan struct{})
		a.renewing = done
		a.mu.Unlock()

		access, renewAt, err := a.refresh(ctx)
		a.mu.Lock()
		a.renewing, a.err = nil, err
		if err == nil {
			a.access, a.renewAt = access, renewAt
		}
		a.mu.Unlock()
		close(done)
		if err != nil {
			return "", err
		}
		return "Bearer " + access, nil
	}
}

// refresh exchanges the personal access token for an access token, and
// says when to renew it: a fifth of its lifetime (at least 10 s) before it
// expires, or after 4 minutes when its expiry cannot be read (Label
// Studio's access tokens live about 5 minutes).
func (a *auth) refresh(ctx context.Context) (string, time.Time, error) {
	body, _ := json.Marshal(map[string]string{"refresh": a.token})
	_, out, err := a.c.do(ctx, request{op: "token_refresh", method: http.MethodPost, path: "/api/token/refresh", body: body, noAuth: true, want: []int{http.StatusOK, http.StatusCreated}})
	if err != nil {
		if e := AsError(err); e != nil {
			e.Uncertain = false // a refresh has no effect to be unsure about
		}
		return "", time.Time{}, err
	}
	access, err := DecodeAccess(out)
	if err != nil {
		return "", time.Time{}, fault.Transient(fault.Unavailable, fmt.Errorf("labelstudio: token refresh: %w", err))
	}
	now := time.Now()
	renewAt := now.Add(4 * time.Minute)
	if iat, exp, ok := jwtTimes(access); ok && exp.After(now) {
		life := exp.Sub(iat)
		if iat.IsZero() || life <= 0 {
			life = exp.Sub(now)
		}
		renewAt = exp.Add(-max(10*time.Second, life/5))
		if renewAt.Before(now) {
			renewAt = now.Add(exp.Sub(now) / 2)
		}
	}
	return access, renewAt, nil
}

// jwtTimes reads iat and exp from a JWT's payload, unverified: the client
// only needs to know when to renew.
func jwtTimes(token string) (iat, exp time.Time, ok bool) {
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		return time.Time{}, time.Time{}, false
	}
	raw, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(parts[1], "="))
	if err != nil {
		return time.Time{}, time.Time{}, false
	}
	var claims struct {
		Iat *float64 `json:"iat"`
		Exp *float64 `json:"exp"`
	}
	if json.Unmarshal(raw, &claims) != nil || claims.Exp == nil {
		return time.Time{}, time.Time{}, false
	}
	if claims.Iat != nil {
		iat = time.Unix(int64(*claims.Iat), 0)
	}
	return iat, time.Unix(int64(*claims.Exp), 0), true
}
