package gcs

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"

	"cloud.google.com/go/auth"
	"google.golang.org/api/googleapi"
)

// The fake server cannot refuse credentials or permissions, so the messages
// for those answers are checked here against the errors GCS returns.
func TestCheckErrorMessages(t *testing.T) {
	t.Parallel()
	const principal = "labeler@acme.iam.gserviceaccount.com"
	forbidden := &googleapi.Error{Code: 403, Message: principal + " does not have storage.objects.list access to the Google Cloud Storage bucket."}
	tests := []struct {
		name      string
		err       error
		wantField string
		wantIn    []string
	}{
		{"missing bucket", Classify(&googleapi.Error{Code: 404, Message: "The specified bucket does not exist."}), "bucket", []string{"Bucket acme doesn't exist"}},
		{"no permission", Classify(forbidden), "bucket", []string{"acme", "storage.objects.list", "Permission denied"}},
		{"401", Classify(&googleapi.Error{Code: 401, Message: "Invalid Credentials"}), "google_application_credentials", []string{"Credentials are invalid", "Cloud Storage did not accept"}},
		{"token refused", Classify(fmt.Errorf("Get x: %w", &auth.Error{Response: &http.Response{StatusCode: 400}, Body: []byte(`{"error":"invalid_grant"}`)})), "google_application_credentials", []string{"Credentials are invalid", "token"}},
		{"bad bucket name", Classify(&googleapi.Error{Code: 400, Message: "Invalid bucket name: 'A'"}), "bucket", []string{"Invalid bucket name"}},
		{"timeout", fmt.Errorf("x: %w", context.DeadlineExceeded), "non_field_errors", []string{"Timed out", "acme"}},
		{"unavailable", &googleapi.Error{Code: 503}, "non_field_errors", []string{"try again", "acme"}},
	}
	seen := map[string]string{}
	for _, tt := range tests {
		err := checkError("acme", "storage.objects.list", "list objects", "Storage Object Viewer (roles/storage.objectViewer)", tt.err)
		var ve *ValidationError
		if !errors.As(err, &ve) {
			t.Fatalf("%s: %T, want *ValidationError", tt.name, err)
		}
		if ve.Field != tt.wantField {
			t.Errorf("%s: field %q, want %q", tt.name, ve.Field, tt.wantField)
		}
		for _, s := range tt.wantIn {
			if !strings.Contains(ve.Message, s) {
				t.Errorf("%s: message %q lacks %q", tt.name, ve.Message, s)
			}
		}
		// The principal is GCS's detail for logs (through Err), not for the
		// API response.
		if strings.Contains(ve.Message, principal) {
			t.Errorf("%s: message %q names the principal", tt.name, ve.Message)
		}
		if prev, dup := seen[ve.Message]; dup {
			t.Errorf("%s and %s share the message %q", tt.name, prev, ve.Message)
		}
		seen[ve.Message] = tt.name
		if !errors.Is(err, tt.err) {
			t.Errorf("%s: ValidationError does not wrap its cause", tt.name)
		}
	}
}
