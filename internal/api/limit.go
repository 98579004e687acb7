package api

import (
	"context"
	"net/http"
	"time"

	"golang.org/x/time/rate"
)

// The API shares the worker's cores with the notification path, which must
// not starve. Measured with BenchmarkAPIPressure on 2 cores: one client
// listing 1,000 storages over 32 connections, unlimited, took the path to
// 3 % of its speed (each list costs milliseconds of CPU and garbage). So
// the worker bounds the API: requests per second (a token bucket, all
// clients together) and handlers in flight; a request waits up to
// queueWait for both, then is answered 429 with Retry-After. With the
// worker's defaults (20/s, 2 in flight) the same flood leaves the path at
// about 90 % of its speed (docs/benchmarks.md). Label Studio scripts that
// create or change storages make a few requests per second.
const queueWait = time.Second

// Limits bound the API. Zero fields mean no bound.
type Limits struct {
	PerSecond float64 // requests per second, all clients together
	InFlight  int     // handlers at once
}

type limiter struct {
	rate  *rate.Limiter
	slots chan struct{}
}

func newLimiter(l Limits) *limiter {
	lim := &limiter{}
	if l.PerSecond > 0 {
		lim.rate = rate.NewLimiter(rate.Limit(l.PerSecond), max(1, int(l.PerSecond)))
	}
	if l.InFlight > 0 {
		lim.slots = make(chan struct{}, l.InFlight)
	}
	return lim
}

// WithLimits bounds the API's requests (see Limits).
func (s *Server) WithLimits(l Limits) *Server {
	s.limits = newLimiter(l)
	return s
}

// wrap runs h within the limits, or answers 429.
func (l *limiter) wrap(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), queueWait)
		defer cancel()
		if l.rate != nil {
			res := l.rate.Reserve()
			delay := res.Delay()
			if delay > queueWait {
				// Over the rate: answered after queueWait, so that a
				// client that ignores Retry-After gets one answer per
				// connection per second, not a busy loop of them.
				res.Cancel()
				<-ctx.Done()
				throttled(w)
				return
			}
			t := time.NewTimer(delay)
			select {
			case <-t.C:
			case <-ctx.Done():
				t.Stop()
				res.Cancel()
				throttled(w)
				return
			}
		}
		if l.slots != nil {
			select {
			case l.slots <- struct{}{}:
				defer func() { <-l.slots }()
			case <-ctx.Done():
				throttled(w)
				return
			}
		}
		h.ServeHTTP(w, r)
	})
}

func throttled(w http.ResponseWriter) {
	w.Header().Set("Retry-After", "1")
	writeJSON(w, http.StatusTooManyRequests, map[string]string{"detail": "Request was throttled. Expected available in 1 second."})
}
