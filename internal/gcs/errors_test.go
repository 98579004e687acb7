package gcs_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"syscall"
	"testing"

	"cloud.google.com/go/auth"
	"cloud.google.com/go/storage"
	"google.golang.org/api/googleapi"

	"github.com/labelsync/labelsync/internal/gcs"
)

func TestTransient(t *testing.T) {
	t.Parallel()
	apiErr := func(code int) error { return &googleapi.Error{Code: code, Message: http.StatusText(code)} }
	tokenErr := func(code int) error {
		return &auth.Error{Response: &http.Response{StatusCode: code}, Body: []byte("{}")}
	}
	connRefused := &url.Error{Op: "Get", URL: "https://storage.googleapis.com/x", Err: &os.SyscallError{Syscall: "connect", Err: syscall.ECONNREFUSED}}
	tests := []struct {
		name string
		err  error
		want bool
	}{
		{"nil", nil, false},
		{"503", apiErr(503), true},
		{"500", apiErr(500), true},
		{"429", apiErr(429), true},
		{"408", apiErr(408), true},
		{"wrapped 503", fmt.Errorf("gcs: list: %w", apiErr(503)), true},
		{"404", apiErr(404), false},
		{"403", apiErr(403), false},
		{"401", apiErr(401), false},
		{"400", apiErr(400), false},
		{"412", apiErr(412), false},
		{"object not found", storage.ErrObjectNotExist, false},
		{"bucket not found", storage.ErrBucketNotExist, false},
		{"too large", fmt.Errorf("gcs: big: %w", gcs.ErrTooLarge), false},
		{"bad credentials", gcs.ErrBadCredentials, false},
		{"token endpoint refused", tokenErr(400), false},
		{"token endpoint down", tokenErr(503), true},
		{"deadline", context.DeadlineExceeded, true},
		{"cancelled", fmt.Errorf("x: %w", context.Canceled), true},
		{"connection refused", connRefused, true},
		{"unexpected EOF", io.ErrUnexpectedEOF, true},
		{"unknown", errors.New("something else"), false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			if got := gcs.Transient(tt.err); got != tt.want {
				t.Errorf("Transient(%v) = %v, want %v", tt.err, got, tt.want)
			}
			// Classifying first must not change the answer.
			if got := gcs.Transient(gcs.Classify(tt.err)); got != tt.want {
				t.Errorf("Transient(Classify(%v)) = %v, want %v", tt.err, got, tt.want)
			}
		})
	}
}

func TestClassify(t *testing.T) {
	t.Parallel()
	tests := []struct {
		err  error
		want error // nil: left unclassified
	}{
		{&googleapi.Error{Code: 404}, gcs.ErrNotFound},
		{fmt.Errorf("ctx: %w", &googleapi.Error{Code: 403}), gcs.ErrPermission},
		{&googleapi.Error{Code: 401}, gcs.ErrUnauthenticated},
		{&googleapi.Error{Code: 400, Message: "Bucket is a requester pays bucket but no user project provided."}, gcs.ErrBadRequest},
		{storage.ErrObjectNotExist, gcs.ErrNotFound},
		{storage.ErrBucketNotExist, gcs.ErrNotFound},
		{&auth.Error{Response: &http.Response{StatusCode: 401}}, gcs.ErrBadCredentials},
		{&googleapi.Error{Code: 503}, nil},
		{errors.New("other"), nil},
	}
	sentinels := []error{gcs.ErrNotFound, gcs.ErrPermission, gcs.ErrUnauthenticated, gcs.ErrBadCredentials, gcs.ErrTooLarge, gcs.ErrBadRequest}
	for _, tt := range tests {
		got := gcs.Classify(tt.err)
		for _, s := range sentinels {
			if is, want := errors.Is(got, s), s == tt.want; is != want {
				t.Errorf("errors.Is(Classify(%v), %v) = %v, want %v", tt.err, s, is, want)
			}
		}
		if !errors.Is(got, tt.err) {
			t.Errorf("Classify(%v) lost the original error", tt.err)
		}
		if got.Error() != tt.err.Error() {
			t.Errorf("Classify(%v) text %q, want the original text", tt.err, got.Error())
		}
	}
	if gcs.Classify(nil) != nil {
		t.Error("Classify(nil) != nil")
	}
}
