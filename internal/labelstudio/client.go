// Package labelstudio is labelsync's client of Label Studio's REST API: the
// subset the connector, lsctl and export sync use (import, task update and
// delete, the task list with Data Manager filters, projects, webhooks, the
// token refresh of personal access tokens).
//
// Authentication (SPEC §8): a token that looks like a JWT (three
// dot-separated base64url parts) is a personal access token, a JWT refresh
// token that the client exchanges at POST /api/token/refresh for
// short-lived access tokens sent as "Authorization: Bearer …", renewed
// before they expire and once more when Label Studio answers 401; any other
// token is a legacy token, sent as "Authorization: Token …". Tokens never
// appear in errors or logs.
//
// Errors are classified once, here (package fault): 429, 5xx, 408, 401,
// 403 and transport failures are transient (401 and 403 because a token is
// configuration, not the input's fault: retrying after an operator fixed it
// succeeds); 404 is permanent fault.NotFound, 413 fault.TooLarge and every
// other 4xx fault.BadInput. Each failure is an *Error, which also says how
// long Label Studio asked to wait (Retry-After) and whether a request that
// failed may have taken effect anyway (Uncertain: no answer, or a 5xx to a
// POST), which is what the connector's exactly-once recovery keys on.
//
// A Client is safe for concurrent use.
package labelstudio

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/labelsync/labelsync/internal/fault"
)

// Client calls one Label Studio instance.
type Client struct {
	base    string // scheme://host[/prefix], no trailing slash
	http    *http.Client
	auth    *auth
	observe Observer
}

// Observer is told the outcome of every request: op is the caller's name
// for it (import, update, delete, lookup, …), outcome one of Outcome's
// values.
type Observer func(op, outcome string)

// Option adjusts a Client.
type Option func(*Client)

// WithHTTPClient sets the HTTP client (default: 2 minute timeout).
func WithHTTPClient(hc *http.Client) Option { return func(c *Client) { c.http = hc } }

// WithObserver sets the function told every request's outcome (metrics).
func WithObserver(o Observer) Option { return func(c *Client) { c.observe = o } }

// New returns a client of the Label Studio at baseURL (http or https, with
// or without a path prefix) authenticating with token.
func New(baseURL, token string, opts ...Option) (*Client, error) {
	u, err := url.Parse(baseURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("labelstudio: %q is not an http(s) URL like http://localhost:8080", baseURL)
	}
	if token == "" {
		return nil, errors.New("labelstudio: no token")
	}
	c := &Client{
		base:    strings.TrimRight(u.Scheme+"://"+u.Host+u.Path, "/"),
		http:    &http.Client{Timeout: 2 * time.Minute},
		observe: func(string, string) {},
	}
	for _, o := range opts {
		o(c)
	}
	c.auth = newAuth(token, c)
	return c, nil
}

// BaseURL is the URL the client calls, without a trailing slash.
func (c *Client) BaseURL() string { return c.base }

// PersonalAccessToken reports whether the client exchanges its token for
// access tokens (true) or sends it as a legacy token (false).
func (c *Client) PersonalAccessToken() bool { return c.auth.pat }

// Outcome values of a request.
const (
	OutcomeOK           = "ok"
	OutcomeThrottled    = "throttled"    // 429
	OutcomeUnavailable  = "unavailable"  // 5xx, 408, no answer
	OutcomeUnauthorized = "unauthorized" // 401, 403
	OutcomeNotFound     = "not_found"    // 404
	OutcomeRejected     = "rejected"     // any other 4xx
)

// Error is a failed request. Its fault class is set by classify.
type Error struct {
	Op     string // the caller's name for the request
	Method string
	Path   string
	// Status is the HTTP status, 0 when no answer came.
	Status int
	// Body is the start of the answer's body (up to 4 KiB).
	Body string
	// RetryAfter is what Label Studio asked to wait (429, 503), or 0.
	RetryAfter time.Duration
	// Uncertain: the request may have taken effect (no answer, or a 5xx
	// to a POST).
	Uncertain bool
	// Err is the transport error, when no answer came.
	Err error
}

func (e *Error) Error() string {
	if e.Status == 0 {
		return fmt.Sprintf("labelstudio: %s: %s %s: %v", e.Op, e.Method, e.Path, e.Err)
	}
	body := strings.Join(strings.Fields(e.Body), " ")
	if len(body) > 300 {
		body = body[:300] + "…"
	}
	if body == "" {
		return fmt.Sprintf("labelstudio: %s: %s %s: %d %s", e.Op, e.Method, e.Path, e.Status, http.StatusText(e.Status))
	}
	return fmt.Sprintf("labelstudio: %s: %s %s: %d %s: %s", e.Op, e.Method, e.Path, e.Status, http.StatusText(e.Status), body)
}

func (e *Error) Unwrap() error { return e.Err }

// outcome is the Observer's name for e.
func (e *Error) outcome() string {
	switch s := e.Status; {
	case s == http.StatusTooManyRequests:
		return OutcomeThrottled
	case s == 0 || s >= 500 || s == http.StatusRequestTimeout:
		return OutcomeUnavailable
	case s == http.StatusUnauthorized || s == http.StatusForbidden:
		return OutcomeUnauthorized
	case s == http.StatusNotFound:
		return OutcomeNotFound
	}
	return OutcomeRejected
}

// classify wraps e in its fault class (see the package doc).
func classify(e *Error) error {
	switch s := e.Status; {
	case s == 0 || s >= 500 || s == http.StatusTooManyRequests || s == http.StatusRequestTimeout ||
		s == http.StatusUnauthorized || s == http.StatusForbidden:
		return fault.Transient(fault.Unavailable, e)
	case s == http.StatusNotFound:
		return fault.Permanent(fault.NotFound, e)
	case s == http.StatusRequestEntityTooLarge:
		return fault.Permanent(fault.TooLarge, e)
	}
	return fault.Permanent(fault.BadInput, e)
}

// AsError returns the *Error in err's chain, or nil.
func AsError(err error) *Error {
	var e *Error
	if errors.As(err, &e) {
		return e
	}
	return nil
}

// RetryAfter is how long Label Studio asked to wait before the next
// request, or 0.
func RetryAfter(err error) time.Duration {
	if e := AsError(err); e != nil {
		return e.RetryAfter
	}
	return 0
}

// Uncertain reports whether a failed request may have taken effect.
func Uncertain(err error) bool {
	e := AsError(err)
	return e != nil && e.Uncertain
}

// StatusOf is the HTTP status of a failed request (0: no answer or not a
// request's error).
func StatusOf(err error) int {
	if e := AsError(err); e != nil {
		return e.Status
	}
	return 0
}

// maxBody bounds what the client reads of an answer: a page of 100 tasks
// with their annotations can be large, nothing legitimate is larger. A
// larger answer is an error, not a body cut short (several requests run at
// once, so this also bounds the client's memory).
const maxBody = 64 << 20

// request is one API call.
type request struct {
	op     string
	method string
	path   string // from the API root, with its query
	body   []byte
	// want lists the statuses that mean success (default: any 2xx).
	want []int
	// noAuth: the token refresh itself.
	noAuth bool
}

// do sends r and returns the answer's status and body. Statuses outside
// want are an *Error, classified.
func (c *Client) do(ctx context.Context, r request) (int, []byte, error) {
	status, body, err := c.send(ctx, r, false)
	if err == nil || r.noAuth || StatusOf(err) != http.StatusUnauthorized || !c.auth.pat {
		return status, body, err
	}
	// The access token may have expired early or been revoked: renew it
	// once and try again.
	return c.send(ctx, r, true)
}

func (c *Client) send(ctx context.Context, r request, renew bool) (int, []byte, error) {
	req, err := http.NewRequestWithContext(ctx, r.method, c.base+r.path, bytes.NewReader(r.body))
	if err != nil {
		return 0, nil, fault.Permanent(fault.BadInput, fmt.Errorf("labelstudio: %s: %w", r.op, err))
	}
	req.Header.Set("Accept", "application/json")
	if r.body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if !r.noAuth {
		h, err := c.auth.header(ctx, renew)
		if err != nil {
			return 0, nil, err
		}
		req.Header.Set("Authorization", h)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		e := &Error{Op: r.op, Method: r.method, Path: pathOnly(r.path), Err: err, Uncertain: r.method != http.MethodGet}
		if ctx.Err() != nil {
			// A shutdown, not Label Studio: keep the context's error
			// visible to fault.Of, and the uncertainty to the caller.
			c.observe(r.op, OutcomeUnavailable)
			return 0, nil, fmt.Errorf("%w: %w", ctx.Err(), e)
		}
		c.observe(r.op, e.outcome())
		return 0, nil, classify(e)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxBody+1))
	if err == nil && len(body) > maxBody {
		// Asking again gets the same answer: final, not retried.
		c.observe(r.op, OutcomeRejected)
		return 0, nil, fault.Permanent(fault.TooLarge, &Error{Op: r.op, Method: r.method, Path: pathOnly(r.path), Status: resp.StatusCode,
			Err: fmt.Errorf("the answer (%s) is over %d bytes", resp.Status, maxBody), Uncertain: r.method != http.MethodGet})
	}
	if err != nil {
		e := &Error{Op: r.op, Method: r.method, Path: pathOnly(r.path), Err: fmt.Errorf("read the answer (%s): %w", resp.Status, err), Uncertain: r.method != http.MethodGet}
		c.observe(r.op, OutcomeUnavailable)
		return 0, nil, classify(e)
	}
	if ok(resp.StatusCode, r.want) {
		c.observe(r.op, OutcomeOK)
		return resp.StatusCode, body, nil
	}
	e := &Error{
		Op: r.op, Method: r.method, Path: pathOnly(r.path), Status: resp.StatusCode,
		Body:       string(body[:min(len(body), 4<<10)]),
		RetryAfter: retryAfter(resp.Header.Get("Retry-After"), time.Now()),
		Uncertain:  resp.StatusCode >= 500 && r.method == http.MethodPost,
	}
	c.observe(r.op, e.outcome())
	return resp.StatusCode, body, classify(e)
}

func ok(status int, want []int) bool {
	if len(want) == 0 {
		return status >= 200 && status <= 299
	}
	for _, w := range want {
		if status == w {
			return true
		}
	}
	return false
}

// pathOnly drops the query: errors name the endpoint, not its filters.
func pathOnly(p string) string {
	if i := strings.IndexByte(p, '?'); i >= 0 {
		return p[:i]
	}
	return p
}

// retryAfter reads a Retry-After header: seconds, or an HTTP date. It is
// capped at 10 minutes: a wait longer than that is a misconfiguration the
// operator should see in the retries, not a silent hour.
func retryAfter(v string, now time.Time) time.Duration {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0
	}
	var d time.Duration
	if secs, err := strconv.ParseFloat(v, 64); err == nil {
		if secs <= 0 || secs != secs {
			return 0
		}
		d = time.Duration(min(secs, 600) * float64(time.Second))
	} else if t, err := http.ParseTime(v); err == nil {
		d = t.Sub(now)
	}
	return max(0, min(d, 10*time.Minute))
}
