// Package gcsfault is a fault-injecting HTTP proxy for tests: it sits in
// front of a GCS emulator (fake-gcs-server) and fails, stalls or drops chosen
// requests the way real GCS and real networks do, so a test can prove that a
// component retries and loses nothing. It is for tests only; nothing outside
// _test.go files and test helpers should import it.
//
// Point a storage client at URL instead of the emulator, with
// option.WithEndpoint(p.URL()+"/storage/v1/") and
// option.WithoutAuthentication(), or with STORAGE_EMULATOR_HOST. The JSON API
// paths a Match can select on:
//
//	POST   /upload/storage/v1/b/{bucket}/o               uploads: ?uploadType=multipart, or resumable initiation
//	POST   /upload/storage/v1/b/{bucket}/o?…upload_id=…  resumable upload chunks (PUT in GCS's docs; the Go client POSTs)
//	GET    /storage/v1/b/{bucket}/o/{object}             metadata, and media with alt=media
//	GET    /download/storage/v1/b/{bucket}/o/{object}    media downloads
//	GET    /storage/v1/b/{bucket}/o                      listings
//	DELETE /storage/v1/b/{bucket}/o/{object}             deletes
//
// Faults: Fail answers with an error in GCS's JSON format without forwarding;
// Stall holds a request before forwarding it, or forwards nothing if the
// client gives up first; DropAfter forwards a request, lets the upstream do
// the work, and resets the connection instead of answering (a lost
// response); RequesterPays makes a bucket refuse requests that name no
// project to bill, as a requester-pays bucket does. Each request takes at
// most one fault: the first rule, in the
// order they were added, that matches it and has requests left. Requests no
// rule takes are forwarded unchanged. Resumable-upload Location headers are
// rewritten to point at the proxy, so the chunks pass through it too.
//
// Concurrency: all methods are safe for concurrent use, and rules may be
// changed while requests are in flight. Counts (Requests, Injected) are kept
// for the Proxy's life; Clear removes rules, not counts.
package gcsfault

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
	"time"
)

// Match selects requests. Empty fields match anything, so the zero Match
// matches every request.
type Match struct {
	// Method is the HTTP method, compared case-insensitively.
	Method string
	// PathContains is a substring of the request's decoded URL path, e.g.
	// "/upload/storage/v1/b/exports/o".
	PathContains string
	// QueryContains is a substring of the request's raw (encoded) query,
	// e.g. "upload_id=" for resumable chunks, "uploadType=multipart".
	QueryContains string
}

func (m Match) matches(s seen) bool {
	return (m.Method == "" || strings.EqualFold(m.Method, s.method)) &&
		(m.PathContains == "" || strings.Contains(s.path, m.PathContains)) &&
		(m.QueryContains == "" || strings.Contains(s.query, m.QueryContains))
}

type faultKind int

const (
	noFault faultKind = iota
	failFault
	stallFault
	dropFault
	payFault // a requester-pays refusal
)

type rule struct {
	match  Match
	kind   faultKind
	status int           // failFault
	stall  time.Duration // stallFault
	left   int           // requests still to take; < 0: until Clear
}

// seen is one request the proxy received, and the fault it took.
type seen struct {
	method, path, query string
	kind                faultKind
}

// Proxy forwards to a GCS server and injects faults. Create it with New and
// Close it when done.
type Proxy struct {
	target    *url.URL
	srv       *httptest.Server
	rp        *httputil.ReverseProxy
	transport *http.Transport
	done      chan struct{} // closed by Close: releases stalled requests
	closeOnce sync.Once

	mu     sync.Mutex
	rules  []*rule
	log    []seen
	payers map[string]string // bucket → the user project it demands
}

// New starts a proxy on a free loopback port in front of target, the GCS
// server's base URL (scheme and host only), e.g. "http://127.0.0.1:4443".
func New(target string) (*Proxy, error) {
	u, err := url.Parse(target)
	if err != nil {
		return nil, fmt.Errorf("gcsfault: target %q: %w", target, err)
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("gcsfault: target %q: want a base URL such as http://127.0.0.1:4443", target)
	}
	if strings.Trim(u.Path, "/") != "" || u.RawQuery != "" {
		return nil, fmt.Errorf("gcsfault: target %q: want a base URL without path or query", target)
	}
	u.Path = ""

	p := &Proxy{
		target:    u,
		transport: http.DefaultTransport.(*http.Transport).Clone(),
		done:      make(chan struct{}),
	}
	p.rp = &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(u)
		},
		Transport:      p.transport,
		ModifyResponse: p.rewriteLocation,
		ErrorHandler:   p.upstreamError,
	}
	p.srv = httptest.NewServer(http.HandlerFunc(p.serve))
	return p, nil
}

// URL is the proxy's base URL, e.g. "http://127.0.0.1:41234": use it where
// the target's URL would go, including as STORAGE_EMULATOR_HOST.
func (p *Proxy) URL() string { return p.srv.URL }

// Close releases stalled requests without forwarding them, stops the proxy
// and waits for the requests in flight to end. It is safe to call more than
// once.
func (p *Proxy) Close() error {
	p.closeOnce.Do(func() {
		close(p.done)
		p.srv.Close()
		p.transport.CloseIdleConnections()
	})
	return nil
}

// Fail answers the next n requests that match with status (429, 500, 503…)
// and an error body in GCS's JSON format, without forwarding them; 429 and
// 503 also carry "Retry-After: 1". n < 0 fails every matching request until
// Clear; n == 0 does nothing.
func (p *Proxy) Fail(match Match, status, n int) {
	p.add(&rule{match: match, kind: failFault, status: status, left: n})
}

// Stall holds the next n requests that match for d, then forwards them. A
// request whose client gives up (its context ends, its connection closes)
// before d is not forwarded: the upstream never sees it. n < 0: until Clear.
func (p *Proxy) Stall(match Match, d time.Duration, n int) {
	p.add(&rule{match: match, kind: stallFault, stall: d, left: n})
}

// DropAfter forwards the next n requests that match and waits for the
// upstream's whole response, then resets the client's connection instead of
// answering: the upstream did the work, the client never hears of it. The
// client sees a "connection reset by peer" error. n < 0: until Clear.
//
// net/http's client transport silently resends a dropped request on a reused
// connection when it deems the request idempotent (GET, HEAD, or one with an
// Idempotency-Key header); such a resend is a second request here.
func (p *Proxy) DropAfter(match Match, n int) {
	p.add(&rule{match: match, kind: dropFault, left: n})
}

// RequesterPays makes bucket behave as a requester-pays bucket billed to
// project: from now on, until Clear, a request on it (its metadata, objects,
// listings, uploads, IAM) without the query parameter userProject=project is
// answered 400 with GCS's message, "Bucket is a requester pays bucket but no
// user project provided.", and counted as injected. Resumable upload chunks
// are let through: GCS ties them to the session their first request opened.
func (p *Proxy) RequesterPays(bucket, project string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.payers == nil {
		p.payers = make(map[string]string)
	}
	p.payers[bucket] = project
}

// unpaid reports whether s is a request on a requester-pays bucket that does
// not name the project to bill.
func (p *Proxy) unpaid(s seen) bool {
	if len(p.payers) == 0 || strings.Contains(s.query, "upload_id=") {
		return false
	}
	for bucket, project := range p.payers {
		on := strings.Contains(s.path, "/b/"+bucket+"/") || strings.HasSuffix(s.path, "/b/"+bucket)
		if !on {
			continue
		}
		q, err := url.ParseQuery(s.query)
		return err != nil || q.Get("userProject") != project
	}
	return false
}

// Clear removes every rule and every requester-pays bucket; requests from now on are forwarded unchanged.
// Requests already stalled stay stalled. Counts are kept.
func (p *Proxy) Clear() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.rules = nil
	p.payers = nil
}

// Requests is how many requests that match the proxy has received, faulted
// or not.
func (p *Proxy) Requests(match Match) int {
	return p.count(match, func(faultKind) bool { return true })
}

// Injected is how many requests that match took a fault (failed, stalled or
// dropped).
func (p *Proxy) Injected(match Match) int {
	return p.count(match, func(k faultKind) bool { return k != noFault })
}

func (p *Proxy) count(match Match, want func(faultKind) bool) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := 0
	for _, s := range p.log {
		if match.matches(s) && want(s.kind) {
			n++
		}
	}
	return n
}

func (p *Proxy) add(r *rule) {
	if r.left == 0 {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.rules = append(p.rules, r)
}

// take records r and returns the rule it takes, nil if none.
func (p *Proxy) take(r *http.Request) *rule {
	p.mu.Lock()
	defer p.mu.Unlock()
	s := seen{method: r.Method, path: r.URL.Path, query: r.URL.RawQuery}
	if p.unpaid(s) {
		s.kind = payFault
		p.log = append(p.log, s)
		return &rule{kind: payFault}
	}
	var taken *rule
	for i, rl := range p.rules {
		if !rl.match.matches(s) {
			continue
		}
		c := *rl
		taken = &c
		if rl.left > 0 {
			rl.left--
			if rl.left == 0 {
				p.rules = append(p.rules[:i:i], p.rules[i+1:]...)
			}
		}
		break
	}
	if taken != nil {
		s.kind = taken.kind
	}
	p.log = append(p.log, s)
	return taken
}

func (p *Proxy) serve(w http.ResponseWriter, r *http.Request) {
	rl := p.take(r)
	if rl == nil {
		p.rp.ServeHTTP(w, r)
		return
	}
	switch rl.kind {
	case failFault:
		// Read the body first, as GCS does, so the client is not cut off
		// mid-upload and sees the status.
		_, _ = io.Copy(io.Discard, r.Body)
		writeError(w, rl.status, "gcsfault: injected "+strings.ToLower(http.StatusText(rl.status)))
	case stallFault:
		t := time.NewTimer(rl.stall)
		defer t.Stop()
		select {
		case <-t.C:
			p.rp.ServeHTTP(w, r)
		case <-r.Context().Done():
			// The client gave up; nothing to answer.
		case <-p.done:
			// Closing: cut the connection rather than answer 200.
			panic(http.ErrAbortHandler)
		}
	case dropFault:
		p.rp.ServeHTTP(&discardWriter{header: make(http.Header)}, r)
		reset(w)
	case payFault:
		_, _ = io.Copy(io.Discard, r.Body)
		writeError(w, http.StatusBadRequest, "Bucket is a requester pays bucket but no user project provided.")
	}
}

// reset closes the client's connection with a TCP RST and no response.
func reset(w http.ResponseWriter) {
	conn, _, err := http.NewResponseController(w).Hijack()
	if err != nil {
		// Not hijackable (HTTP/2): abort the stream without an answer.
		panic(http.ErrAbortHandler)
	}
	if tc, ok := conn.(*net.TCPConn); ok {
		_ = tc.SetLinger(0)
	}
	_ = conn.Close()
}

// rewriteLocation points resumable-upload session URLs at the proxy, so
// chunk uploads pass through it too.
func (p *Proxy) rewriteLocation(resp *http.Response) error {
	base := p.target.String()
	for _, h := range []string{"Location", "X-Goog-Upload-URL"} {
		if v := resp.Header.Get(h); strings.HasPrefix(v, base) {
			resp.Header.Set(h, p.URL()+strings.TrimPrefix(v, base))
		}
	}
	return nil
}

// upstreamError answers a request the upstream could not serve as a GCS
// front end would, with 502; a client that is gone gets nothing.
func (p *Proxy) upstreamError(w http.ResponseWriter, r *http.Request, err error) {
	if r.Context().Err() != nil {
		return
	}
	writeError(w, http.StatusBadGateway, "gcsfault: upstream: "+err.Error())
}

// errorBody is GCS's JSON API error format.
type errorBody struct {
	Error struct {
		Code    int          `json:"code"`
		Message string       `json:"message"`
		Errors  []errorEntry `json:"errors"`
	} `json:"error"`
}

type errorEntry struct {
	Message string `json:"message"`
	Domain  string `json:"domain"`
	Reason  string `json:"reason"`
}

// reasons are the errors[].reason values GCS sends with each status.
var reasons = map[int]string{
	http.StatusBadRequest:          "invalid",
	http.StatusUnauthorized:        "required",
	http.StatusForbidden:           "forbidden",
	http.StatusNotFound:            "notFound",
	http.StatusRequestTimeout:      "requestTimeout",
	http.StatusConflict:            "conflict",
	http.StatusPreconditionFailed:  "conditionNotMet",
	http.StatusTooManyRequests:     "rateLimitExceeded",
	http.StatusInternalServerError: "backendError",
	http.StatusBadGateway:          "badGateway",
	http.StatusServiceUnavailable:  "backendError",
	http.StatusGatewayTimeout:      "gatewayTimeout",
}

func reason(status int) string {
	if r, ok := reasons[status]; ok {
		return r
	}
	if status >= 500 {
		return "backendError"
	}
	return "invalid"
}

func writeError(w http.ResponseWriter, status int, msg string) {
	var body errorBody
	body.Error.Code = status
	body.Error.Message = msg
	body.Error.Errors = []errorEntry{{Message: msg, Domain: "global", Reason: reason(status)}}
	b, err := json.Marshal(body)
	if err != nil {
		panic("gcsfault: encoding an error body: " + err.Error()) // cannot happen: fixed types
	}
	h := w.Header()
	h.Set("Content-Type", "application/json; charset=UTF-8")
	if status == http.StatusTooManyRequests || status == http.StatusServiceUnavailable {
		h.Set("Retry-After", "1")
	}
	w.WriteHeader(status)
	_, _ = w.Write(b)
}

// discardWriter takes the upstream's response to a request whose client is
// to hear nothing.
type discardWriter struct{ header http.Header }

func (d *discardWriter) Header() http.Header         { return d.header }
func (d *discardWriter) Write(b []byte) (int, error) { return len(b), nil }
func (d *discardWriter) WriteHeader(int)             {}
