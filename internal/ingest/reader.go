package ingest

import (
	"context"
	"errors"
	"fmt"

	"cloud.google.com/go/storage"

	"github.com/labelsync/labelsync/internal/fault"
	"github.com/labelsync/labelsync/internal/gcs"
	"github.com/labelsync/labelsync/internal/storages"
	"github.com/labelsync/labelsync/internal/taskfile"
)

// ClientFor returns the storage client of a source storage (its own
// credentials, or Application Default Credentials).
type ClientFor func(ctx context.Context, st *storages.Import) (*storage.Client, error)

// GCSReader reads Tasks-mode files from GCS, streaming: memory is bounded
// by one record, not by the file.
type GCSReader struct {
	client ClientFor
	// maxBytes rejects larger objects (permanent: dead-lettered).
	maxBytes int64
	opts     taskfile.Options
}

// NewGCSReader builds a reader; maxObjectBytes > 0 caps object size.
func NewGCSReader(client ClientFor, maxObjectBytes int64, opts taskfile.Options) *GCSReader {
	return &GCSReader{client: client, maxBytes: maxObjectBytes, opts: opts}
}

// Records streams the records of one generation of obj.
func (r *GCSReader) Records(ctx context.Context, st *storages.Import, obj Object, generation int64, yield func(taskfile.Record) bool) error {
	format, err := taskfile.FormatOf(obj.Key)
	if err != nil {
		return fault.Permanent(fault.Unsupported, err)
	}
	c, err := r.client(ctx, st)
	if err != nil {
		return classifyRead(err)
	}
	if format == taskfile.Parquet {
		ra, err := gcs.OpenAt(ctx, gcs.Bucket(c, obj.Bucket, st.GoogleProjectID), obj.Key, generation, r.maxBytes)
		if err != nil {
			return classifyRead(err)
		}
		return classifyRead(taskfile.ReadParquet(ra, ra.Size(), r.opts, yield))
	}
	rc, _, err := gcs.Open(ctx, gcs.Bucket(c, obj.Bucket, st.GoogleProjectID), obj.Key, generation, r.maxBytes)
	if err != nil {
		return classifyRead(err)
	}
	defer rc.Close()
	return classifyRead(taskfile.Read(rc, format, r.opts, yield))
}

// classifyRead maps storage and format errors to the pipeline's classes:
// a generation that no longer exists is ErrGone (not a failure: its
// successor's notification follows); the rest in package fault's terms.
func classifyRead(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, gcs.ErrNotFound):
		return fmt.Errorf("%w: %w", ErrGone, err)
	case errors.Is(err, taskfile.ErrUnsupported):
		return fault.Permanent(fault.Unsupported, err)
	case errors.Is(err, taskfile.ErrMalformed):
		return fault.Permanent(fault.MalformedFile, err)
	}
	return gcs.Fault(err)
}
