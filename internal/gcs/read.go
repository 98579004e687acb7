package gcs

import (
	"context"
	"errors"
	"fmt"
	"io"

	"cloud.google.com/go/storage"
)

// ReaderAt reads one object generation at any offset; Parquet needs this.
type ReaderAt interface {
	io.ReaderAt
	Size() int64
}

func objectName(bucket, key string, generation int64) string {
	if generation > 0 {
		return fmt.Sprintf("gs://%s/%s#%d", bucket, key, generation)
	}
	return fmt.Sprintf("gs://%s/%s", bucket, key)
}

func tooLarge(name string, size, maxBytes int64) error {
	return fmt.Errorf("gcs: %s is %d bytes, over the %d-byte limit: %w", name, size, maxBytes, ErrTooLarge)
}

// Open reads one generation of an object (generation 0: the live one; the
// returned Object says which). With maxBytes > 0 a bigger object is refused
// before its content is read, with an error wrapping ErrTooLarge, and the
// reader also stops with ErrTooLarge should more bytes arrive than that (an
// object served decompressed can be larger than its stored size). A missing
// bucket, object or generation wraps ErrNotFound. The caller closes the
// reader.
func Open(ctx context.Context, b *storage.BucketHandle, key string, generation int64, maxBytes int64) (io.ReadCloser, Object, error) {
	name := objectName(b.BucketName(), key, generation)
	oh := b.Object(key)
	if generation > 0 {
		oh = oh.Generation(generation)
	}
	// NewReader rather than Attrs then NewReader: the response headers
	// carry the size, so the limit costs no extra round trip.
	r, err := oh.NewReader(ctx)
	if err != nil {
		return nil, Object{}, fmt.Errorf("gcs: open %s: %w", name, Classify(err))
	}
	obj := Object{
		Key:         key,
		Generation:  r.Attrs.Generation,
		Size:        r.Attrs.Size,
		Updated:     r.Attrs.LastModified,
		ContentType: r.Attrs.ContentType,
	}
	if obj.Generation == 0 {
		obj.Generation = generation
	}
	if maxBytes <= 0 {
		return r, obj, nil
	}
	if obj.Size > maxBytes {
		_ = r.Close()
		return nil, Object{}, tooLarge(name, obj.Size, maxBytes)
	}
	return &capReader{rc: r, left: maxBytes, name: name, max: maxBytes}, obj, nil
}

// capReader fails with ErrTooLarge once more than max bytes have been read.
type capReader struct {
	rc   io.ReadCloser
	left int64
	name string
	max  int64
}

func (r *capReader) Read(p []byte) (int, error) {
	// One byte past the limit is enough to tell "exactly max" from "more".
	if int64(len(p)) > r.left+1 {
		p = p[:r.left+1]
	}
	n, err := r.rc.Read(p)
	if int64(n) > r.left {
		n = int(r.left)
		r.left = 0
		return n, tooLarge(r.name, r.max+1, r.max)
	}
	r.left -= int64(n)
	return n, err
}

func (r *capReader) Close() error { return r.rc.Close() }

// OpenAt returns a ReaderAt over one generation (0: the live one, pinned at
// open so every range comes from the same content). Each ReadAt is one
// ranged request bounded by ctx, so ctx must live as long as the ReaderAt is
// used; ReadAt may be called concurrently. maxBytes and errors are as for
// Open.
func OpenAt(ctx context.Context, b *storage.BucketHandle, key string, generation int64, maxBytes int64) (ReaderAt, error) {
	name := objectName(b.BucketName(), key, generation)
	oh := b.Object(key)
	if generation > 0 {
		oh = oh.Generation(generation)
	}
	attrs, err := oh.Attrs(ctx)
	if err != nil {
		return nil, fmt.Errorf("gcs: open %s: %w", name, Classify(err))
	}
	if maxBytes > 0 && attrs.Size > maxBytes {
		return nil, tooLarge(name, attrs.Size, maxBytes)
	}
	if attrs.Generation > 0 {
		generation = attrs.Generation
	}
	obj := b.Object(key).Generation(generation)
	if attrs.ContentEncoding == "gzip" {
		// Offsets must refer to the stored bytes, which is what Size
		// counts: GCS ignores ranges when it decompresses for the reader.
		// Only when needed, because the client refuses this option for
		// JSON-API reads (the emulator's).
		obj = obj.ReadCompressed(true)
	}
	return &readerAt{ctx: ctx, name: objectName(b.BucketName(), key, generation), obj: obj, size: attrs.Size}, nil
}

type readerAt struct {
	ctx  context.Context
	name string
	obj  *storage.ObjectHandle
	size int64
}

func (r *readerAt) Size() int64 { return r.size }

func (r *readerAt) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, fmt.Errorf("gcs: read %s: negative offset %d", r.name, off)
	}
	if off >= r.size {
		return 0, io.EOF
	}
	if len(p) == 0 {
		return 0, nil
	}
	want := min(int64(len(p)), r.size-off)
	rr, err := r.obj.NewRangeReader(r.ctx, off, want)
	if err != nil {
		return 0, fmt.Errorf("gcs: read %s at %d: %w", r.name, off, Classify(err))
	}
	defer rr.Close()
	n, err := io.ReadFull(rr, p[:want])
	if err != nil {
		// Generations are immutable, so a body shorter than the range
		// means a broken connection: report it as io.ErrUnexpectedEOF,
		// which Transient counts, never as a clean io.EOF.
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return n, fmt.Errorf("gcs: read %s at %d: %w", r.name, off, Classify(err))
	}
	if want < int64(len(p)) {
		return n, io.EOF
	}
	return n, nil
}
