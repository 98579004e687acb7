package main

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
)

func TestTargets(t *testing.T) {
	t.Parallel()
	tests := []struct {
		args     []string
		httpAddr string
		want     []string
	}{
		{nil, "", []string{"http://127.0.0.1:8080/healthz", "http://127.0.0.1:8081/healthz"}},
		{nil, ":9000", []string{"http://127.0.0.1:9000/healthz"}},
		{nil, "0.0.0.0:8081", []string{"http://127.0.0.1:8081/healthz"}},
		{[]string{"http://127.0.0.1:8080/readyz"}, ":9000", []string{"http://127.0.0.1:8080/readyz"}},
	}
	for _, tt := range tests {
		got, err := targets(tt.args, tt.httpAddr)
		if err != nil || !slices.Equal(got, tt.want) {
			t.Errorf("targets(%q, %q) = %q, %v; want %q", tt.args, tt.httpAddr, got, err, tt.want)
		}
	}
	if _, err := targets(nil, "8080"); err == nil || !strings.Contains(err.Error(), "LABELSYNC_HTTP_ADDR") {
		t.Errorf("targets(nil, %q): error %v, want one naming LABELSYNC_HTTP_ADDR", "8080", err)
	}
}

func TestRun(t *testing.T) {
	t.Parallel()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/readyz" {
			http.Error(w, "not ready", http.StatusServiceUnavailable)
		}
	}))
	t.Cleanup(srv.Close)
	if err := run(context.Background(), []string{srv.URL + "/readyz"}, "", io.Discard); err != nil {
		t.Errorf("healthy URL: %v", err)
	}
	if err := run(context.Background(), []string{srv.URL + "/other"}, "", io.Discard); err == nil {
		t.Error("a 503 is healthy, want an error")
	}
}
