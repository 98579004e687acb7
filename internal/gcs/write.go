package gcs

import (
	"context"
	"errors"
	"fmt"
	"io"

	"cloud.google.com/go/storage"
)

// ErrPrecondition means a conditional write or delete found the object at
// another generation than it expected: someone else wrote or deleted it
// first. Read it again and decide again.
var ErrPrecondition = errors.New("gcs: precondition failed")

// Put writes body as a new generation of bucket/key, if and only if the
// object is at generation ifGeneration (0: the object must not exist), and
// returns the new generation. A lost race wraps ErrPrecondition.
//
// The condition also makes the write idempotent for the storage client,
// which then retries it on 429, 5xx and timeouts; a retry of a write that
// did happen comes back as ErrPrecondition, and the caller's next read sees
// its own object.
func Put(ctx context.Context, b *storage.BucketHandle, key string, body []byte, contentType string, metadata map[string]string, ifGeneration int64) (int64, error) {
	cond := storage.Conditions{GenerationMatch: ifGeneration}
	if ifGeneration == 0 {
		cond = storage.Conditions{DoesNotExist: true}
	}
	bucket := b.BucketName()
	w := b.Object(key).If(cond).NewWriter(ctx)
	w.ContentType = contentType
	w.Metadata = metadata
	// One request: the bodies are small, and a resumable upload would cost
	// a second round trip.
	w.ChunkSize = 0
	if _, err := w.Write(body); err != nil {
		_ = w.Close()
		return 0, fmt.Errorf("gcs: write gs://%s/%s: %w", bucket, key, classifyWrite(err))
	}
	if err := w.Close(); err != nil {
		return 0, fmt.Errorf("gcs: write gs://%s/%s: %w", bucket, key, classifyWrite(err))
	}
	return w.Attrs().Generation, nil
}

// Stat returns the live generation of bucket/key and its custom metadata.
// A missing object wraps ErrNotFound.
func Stat(ctx context.Context, b *storage.BucketHandle, key string) (int64, map[string]string, error) {
	attrs, err := b.Object(key).Attrs(ctx)
	if err != nil {
		return 0, nil, fmt.Errorf("gcs: stat gs://%s/%s: %w", b.BucketName(), key, Classify(err))
	}
	return attrs.Generation, attrs.Metadata, nil
}

// Get reads the live generation of bucket/key whole, up to maxBytes, and
// returns it with its generation. A missing object wraps ErrNotFound, a
// larger one ErrTooLarge.
func Get(ctx context.Context, b *storage.BucketHandle, key string, maxBytes int64) ([]byte, int64, error) {
	r, obj, err := Open(ctx, b, key, 0, maxBytes)
	if err != nil {
		return nil, 0, err
	}
	defer r.Close()
	body, err := io.ReadAll(r)
	if err != nil {
		return nil, 0, fmt.Errorf("gcs: read gs://%s/%s: %w", b.BucketName(), key, Classify(err))
	}
	return body, obj.Generation, nil
}

// Remove deletes generation ifGeneration of bucket/key (0: whatever is
// live). An object already gone is not an error; another live generation
// than the one named wraps ErrPrecondition.
func Remove(ctx context.Context, b *storage.BucketHandle, key string, ifGeneration int64) error {
	o := b.Object(key)
	if ifGeneration != 0 {
		o = o.If(storage.Conditions{GenerationMatch: ifGeneration})
	}
	err := o.Delete(ctx)
	if err == nil || errors.Is(err, storage.ErrObjectNotExist) {
		return nil
	}
	err = classifyWrite(err)
	if errors.Is(err, ErrNotFound) && ifGeneration == 0 {
		return nil
	}
	return fmt.Errorf("gcs: delete gs://%s/%s: %w", b.BucketName(), key, err)
}

// classifyWrite is Classify, with HTTP 412 as ErrPrecondition.
func classifyWrite(err error) error {
	if isPrecondition(err) {
		return fmt.Errorf("%w: %w", ErrPrecondition, err)
	}
	return Classify(err)
}
