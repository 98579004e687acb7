// Package taskfile turns a Label Studio "Tasks" import file into task
// records, streaming, in memory bounded by one record rather than by the file.
//
// A file is JSON (an array of items, or one object), JSONL (one object per
// non-empty line) or Parquet (one item per row). Each item becomes the task
// Label Studio would build from it: an item whose "data" member is an object
// is already a task and is kept as it is (annotations, predictions, meta…);
// any other object becomes {"data": item}. Tasks are compact JSON with the
// input's numbers and key order untouched, so the same item always yields the
// same bytes and callers can hash them to notice changed rows.
//
// Errors come in three kinds, so that a caller can decide between
// dead-lettering and retrying without looking at messages:
//
//   - Record.Err (wraps ErrBadRecord, and ErrTooLarge for oversize items):
//     one item is bad; its row index is still used and reading goes on.
//   - Returned errors wrapping ErrUnsupported or ErrMalformed: the file
//     itself cannot be read, now or ever (permanent).
//   - Any other returned error comes from the underlying reader (I/O) and
//     may be worth a retry.
//
// Read and ReadParquet call yield synchronously on the caller's goroutine,
// in row order, and never after they return. A Record's Task is freshly
// allocated and may be kept. The functions keep no state between calls and
// may run concurrently on different inputs.
package taskfile

import (
	"encoding/json"
	"errors"
	"fmt"
	"path"
	"strings"
)

// Record is one item of a task file.
type Record struct {
	// Row is the 0-based index among items: array elements, non-empty JSONL
	// lines, Parquet rows; a single-object file is row 0. Bad items keep
	// their index so that later rows do not shift.
	Row int
	// Task is the task as Label Studio builds it, as compact JSON. Nil when
	// Err is set.
	Task json.RawMessage
	// Err is non-nil when this item is bad; it wraps ErrBadRecord.
	Err error
	// Raw is, for a bad JSON item, its bytes (at most maxRawBytes), so the
	// dead letter can show what was wrong. Nil otherwise.
	Raw []byte
}

// maxRawBytes bounds Record.Raw: a dead letter shows the start of a huge
// bad record, not all of it.
const maxRawBytes = 64 << 10

var (
	// ErrBadRecord is wrapped by every Record.Err.
	ErrBadRecord = errors.New("taskfile: bad record")
	// ErrUnsupported marks a key or content that is not a task file at all.
	// It is permanent.
	ErrUnsupported = errors.New("taskfile: unsupported file type")
	// ErrTooLarge is wrapped (with ErrBadRecord) by the Record.Err of an
	// item longer than Options.MaxRecordBytes.
	ErrTooLarge = errors.New("taskfile: record too large")
	// ErrMalformed marks a file whose structure is broken beyond one record
	// (a JSON array that never closes, a corrupt Parquet footer…). It is
	// permanent; records yielded before it was found were valid.
	ErrMalformed = errors.New("taskfile: malformed file")
)

// Format is how a key's content is to be read.
type Format int

// Formats, chosen from the key by FormatOf.
const (
	JSON    Format = iota // .json
	JSONL                 // .jsonl
	Parquet               // .parquet
	Sniff                 // no extension: JSON or JSONL, told apart by content
)

func (f Format) String() string {
	switch f {
	case JSON:
		return "json"
	case JSONL:
		return "jsonl"
	case Parquet:
		return "parquet"
	case Sniff:
		return "sniff"
	}
	return fmt.Sprintf("Format(%d)", int(f))
}

// FormatOf returns the format of the object named key, from its extension
// (case-insensitive). A key without one is sniffed. Any other extension is
// an error wrapping ErrUnsupported.
func FormatOf(key string) (Format, error) {
	// Only the last path element counts: "dir.v2/file" has no extension.
	// (path.Base would also drop a trailing slash and give a folder
	// placeholder "x.json/" the extension of a file.)
	ext := path.Ext(key[strings.LastIndexByte(key, '/')+1:])
	switch strings.ToLower(ext) {
	case "":
		return Sniff, nil
	case ".json":
		return JSON, nil
	case ".jsonl":
		return JSONL, nil
	case ".parquet":
		return Parquet, nil
	}
	return 0, fmt.Errorf("%w: key %q has extension %q, want .json, .jsonl, .parquet or none", ErrUnsupported, key, ext)
}

// DefaultMaxRecordBytes is the MaxRecordBytes used when Options leaves it 0.
const DefaultMaxRecordBytes = 16 << 20

// Options bound the memory a reader may use.
type Options struct {
	// MaxRecordBytes is the longest item (JSON value, JSONL line, or a
	// Parquet row's task) accepted; a longer one is a bad record wrapping
	// ErrTooLarge, skipped without being held whole. Zero or less means
	// DefaultMaxRecordBytes.
	MaxRecordBytes int
}

func (o Options) maxRecordBytes() int {
	if o.MaxRecordBytes > 0 {
		return o.MaxRecordBytes
	}
	return DefaultMaxRecordBytes
}

// recordError is a Record.Err. It is a type rather than a wrapped sentinel
// so that its message reads once ("taskfile: bad record: …") while still
// matching ErrBadRecord and exposing its cause (ErrTooLarge, a
// *json.SyntaxError…) to errors.Is and errors.As.
type recordError struct {
	msg   string
	cause error
}

func (e *recordError) Error() string        { return "taskfile: bad record: " + e.msg }
func (e *recordError) Is(target error) bool { return target == ErrBadRecord }
func (e *recordError) Unwrap() error        { return e.cause }

func badRecord(cause error, format string, args ...any) error {
	return &recordError{msg: fmt.Sprintf(format, args...), cause: cause}
}

func tooLarge(limit int) error {
	return badRecord(ErrTooLarge, "record too large: longer than %d bytes", limit)
}
