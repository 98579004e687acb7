package gcs

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"

	"cloud.google.com/go/storage"
	"google.golang.org/api/googleapi"
	"google.golang.org/api/iterator"

	"github.com/labelsync/labelsync/internal/storages"
)

// Field names a ValidationError can carry besides FieldCredentials.
const (
	FieldBucket = "bucket"
	FieldPrefix = "prefix"
	// FieldNone is Django REST framework's key for errors that belong to no
	// single field, which is where Label Studio puts connection errors.
	FieldNone = "non_field_errors"
)

// ValidationError is a storage check that failed in a way the user must fix
// (or, for FieldNone, retry). Message is for people and an API response
// ({"detail": ..., "validation_errors": {Field: [Message]}}); it names the
// bucket and what is wrong, never the credentials. Err is the classified
// cause, for errors.Is and logs.
type ValidationError struct {
	Field   string
	Message string
	Err     error
}

// Error returns Message alone, so an API can show it unchanged, as Label
// Studio shows its own.
func (e *ValidationError) Error() string { return e.Message }

func (e *ValidationError) Unwrap() error { return e.Err }

// ValidateImport checks a source storage as Label Studio's "Check
// connection" does: the bucket exists and can be listed, and, for a
// non-empty prefix, at least one object exists under it (normalised:
// "images" does not count "images2/a.jpg"; a folder placeholder
// "images/" counts, as in Label Studio). It lists instead of reading the
// bucket's metadata (Label Studio's get_bucket): storage.objects.list is
// the permission a sync needs, while storage.buckets.get is one that
// read-only roles such as Storage Object Viewer lack.
//
// Failures are *ValidationError; the prefix one reads exactly as Label
// Studio's: "No blobs found in {bucket}/{prefix} or prefix doesn't exist",
// with the prefix as given.
func ValidateImport(ctx context.Context, b *storage.BucketHandle, prefix string) error {
	bucket := b.BucketName()
	norm := (&storages.Import{Prefix: prefix}).NormalizedPrefix()
	found, err := anyObject(ctx, b, norm)
	if err != nil {
		return checkError(bucket, "storage.objects.list", "list objects", "Storage Object Viewer (roles/storage.objectViewer)", err)
	}
	if !found && norm != "" {
		return &ValidationError{
			Field:   FieldPrefix,
			Message: fmt.Sprintf("No blobs found in %s/%s or prefix doesn't exist", bucket, prefix),
			Err:     ErrNotFound,
		}
	}
	return nil
}

// ValidateExport checks a target storage: the bucket exists and the
// credentials can use it. No prefix check: objects are written under it.
// A principal allowed to create objects but not to list them (Storage
// Object Creator) passes, since writing is all an export needs.
func ValidateExport(ctx context.Context, b *storage.BucketHandle) error {
	bucket := b.BucketName()
	_, err := anyObject(ctx, b, "")
	if err == nil {
		return nil
	}
	if errors.Is(err, ErrPermission) {
		granted, terr := b.IAM().TestPermissions(ctx, []string{"storage.objects.create"})
		switch {
		case terr == nil && slices.Contains(granted, "storage.objects.create"):
			return nil
		case terr == nil:
			return checkError(bucket, "storage.objects.create", "write objects", "Storage Object User (roles/storage.objectUser)", err)
		}
	}
	return checkError(bucket, "storage.objects.list", "list objects", "Storage Object User (roles/storage.objectUser)", err)
}

// anyObject reports whether at least one object's key starts with prefix,
// with one list call of one item.
func anyObject(ctx context.Context, b *storage.BucketHandle, prefix string) (bool, error) {
	q := &storage.Query{Prefix: prefix, Projection: storage.ProjectionNoACL}
	if err := q.SetAttrSelection([]string{"Name"}); err != nil {
		return false, err
	}
	it := b.Objects(ctx, q)
	it.PageInfo().MaxSize = 1
	_, err := it.Next()
	switch {
	case err == nil:
		return true, nil
	case errors.Is(err, iterator.Done):
		return false, nil
	}
	return false, Classify(err)
}

// checkError turns a failed check into the message a user can act on.
func checkError(bucket, permission, action, role string, err error) error {
	ve := &ValidationError{Err: err}
	var ge *googleapi.Error
	switch {
	case errors.Is(err, ErrNotFound):
		ve.Field, ve.Message = FieldBucket, fmt.Sprintf("Bucket %s doesn't exist", bucket)
	case errors.Is(err, ErrPermission):
		ve.Field, ve.Message = FieldBucket, fmt.Sprintf(
			"Permission denied on bucket %s: the credentials in use lack %s, needed to %s; grant it on the bucket, for example with %s",
			bucket, permission, action, role)
	case errors.Is(err, ErrBadCredentials):
		ve.Field, ve.Message = FieldCredentials,
			"Google Application Credentials are invalid: Google refused to issue a token for them (the key may be disabled or deleted, or the workload identity pool misconfigured)"
	case errors.Is(err, ErrUnauthenticated):
		ve.Field, ve.Message = FieldCredentials,
			"Google Application Credentials are invalid or expired: Cloud Storage did not accept them"
	case errors.As(err, &ge) && ge.Code == http.StatusBadRequest:
		// GCS says what is wrong with the request (an invalid bucket name,
		// typically); its text carries no credentials.
		ve.Field, ve.Message = FieldBucket, fmt.Sprintf("Bucket %s cannot be used: %s", bucket, ge.Message)
	case errors.Is(err, context.DeadlineExceeded):
		ve.Field, ve.Message = FieldNone, fmt.Sprintf("Timed out checking bucket %s; try again", bucket)
	case Transient(err):
		ve.Field, ve.Message = FieldNone, fmt.Sprintf("Could not reach Google Cloud Storage to check bucket %s; try again", bucket)
	default:
		ve.Field, ve.Message = FieldNone, fmt.Sprintf("Could not check bucket %s", bucket)
	}
	return ve
}
