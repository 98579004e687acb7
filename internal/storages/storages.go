// Package storages defines the source (import) and target (export) storages
// that tie a labeling project to a GCS bucket, validates them, and decides
// which source storages want an object.
//
// Field names and matching rules are Label Studio's ("Cloud Storage → Google
// Cloud Storage"), made exact; see SPEC §1.
//
// Concurrency: Import and Export are plain values; do not change one while
// another goroutine uses it. A Set is an immutable snapshot and safe for
// concurrent use; storages it returns must be treated as read-only (copy the
// value to change it, then Normalize the copy).
package storages

import (
	"errors"
	"fmt"
	"log/slog"
	"strings"
)

// Defaults and limits, as Label Studio has them unless noted.
const (
	DefaultPresignTTL = 15    // minutes
	MaxPresignTTL     = 10080 // minutes: a week, the V4 signed URL maximum
	// DefaultDataKey is the task data key that holds the gs:// URL in Files
	// mode, the placeholder Label Studio uses before it knows the labeling
	// config.
	DefaultDataKey = "$undefined$"
)

// The accepted Export.ObjectKey templates.
const (
	DefaultObjectKey        = "{annotation_id}"
	AnnotationJSONObjectKey = "{annotation_id}.json"
	// TaskObjectKey writes the whole task with all its current annotations.
	TaskObjectKey = "{task_id}.json"
)

var objectKeys = []string{DefaultObjectKey, AnnotationJSONObjectKey, TaskObjectKey}

// ErrNoSecretKey is wrapped when inline credentials arrive and there is no
// key to store them encrypted with.
var ErrNoSecretKey = errors.New("inline credentials are stored encrypted and need LABELSYNC_SECRET_KEY; set it, or drop the field to use Application Default Credentials")

// Import is a source storage: objects in Bucket under Prefix become tasks of
// Project.
type Import struct {
	ID            int64  `json:"id"`
	Project       int64  `json:"project"`
	Title         string `json:"title,omitempty"`
	Description   string `json:"description,omitempty"`
	Bucket        string `json:"bucket"`
	Prefix        string `json:"prefix,omitempty"`
	RegexFilter   string `json:"regex_filter,omitempty"`
	UseBlobURLs   bool   `json:"use_blob_urls"`
	RecursiveScan bool   `json:"recursive_scan"`
	Presign       *bool  `json:"presign,omitempty"`     // default true
	PresignTTL    int    `json:"presign_ttl,omitempty"` // minutes, default 15, 1..10080
	// GoogleApplicationCredentials is write-only: Parse and SealCredentials
	// move it into sealed form and clear it, so a storage marshalled after
	// that never carries it. Never marshal a storage that still holds it.
	GoogleApplicationCredentials string `json:"google_application_credentials,omitempty"`
	GoogleProjectID              string `json:"google_project_id,omitempty"`
	DataKey                      string `json:"data_key,omitempty"` // default "$undefined$"

	sealedCredentials string
	m                 *matcher // built by Normalize; nil or stale means rebuild per call
}

// Export is a target storage: annotations of Project are written to Bucket
// under Prefix.
type Export struct {
	ID                           int64  `json:"id"`
	Project                      int64  `json:"project"`
	Title                        string `json:"title,omitempty"`
	Description                  string `json:"description,omitempty"`
	Bucket                       string `json:"bucket"`
	Prefix                       string `json:"prefix,omitempty"`
	GoogleApplicationCredentials string `json:"google_application_credentials,omitempty"` // write-only, as Import's
	GoogleProjectID              string `json:"google_project_id,omitempty"`
	CanDeleteObjects             bool   `json:"can_delete_objects"`
	ObjectKey                    string `json:"object_key,omitempty"` // default "{annotation_id}"

	sealedCredentials string
}

// File is the content of a storages file (LABELSYNC_STORAGES_FILE).
type File struct {
	Import []Import `json:"import"`
	Export []Export `json:"export"`
}

// FieldError reports one invalid field of a storage. The API can use Field
// to report validation errors per field, as Label Studio does.
type FieldError struct {
	Field string // JSON name, e.g. "regex_filter"
	Err   error
	shown string // the offending value as printed; never a credential
}

func (e *FieldError) Error() string {
	if e.shown == "" {
		return e.Field + ": " + e.Err.Error()
	}
	return e.Field + " " + e.shown + ": " + e.Err.Error()
}

func (e *FieldError) Unwrap() error { return e.Err }

func fieldErr(field string, value any, reason string) *FieldError {
	fe := &FieldError{Field: field, Err: errors.New(reason)}
	if value != nil {
		fe.shown = fmt.Sprintf("%#v", value)
	}
	return fe
}

// storageError places an error on one storage: its kind, its position in a
// file (index -1 when there is none) and its id.
type storageError struct {
	file  string
	kind  string
	index int
	id    int64
	err   error
}

func (e *storageError) Error() string {
	var b strings.Builder
	b.WriteString("storages: ")
	if e.file != "" {
		b.WriteString(e.file)
		b.WriteString(": ")
	}
	b.WriteString(e.kind)
	if e.index >= 0 {
		fmt.Fprintf(&b, "[%d]", e.index)
	}
	if e.id != 0 {
		fmt.Fprintf(&b, " (id %d)", e.id)
	} else {
		b.WriteString(" (no id)")
	}
	b.WriteString(": ")
	b.WriteString(e.err.Error())
	return b.String()
}

func (e *storageError) Unwrap() error { return e.err }

// Normalize applies defaults, validates every field and compiles the regex
// filter. It is idempotent. It does not check ID: the storage API validates
// storages before it assigns one; Parse and NewSet check ids.
// Errors wrap a *FieldError.
func (s *Import) Normalize() error {
	if err := s.normalize(); err != nil {
		return &storageError{kind: "import", index: -1, id: s.ID, err: err}
	}
	return nil
}

func (s *Import) normalize() error {
	if err := checkProject(s.Project); err != nil {
		return err
	}
	if err := checkBucket(s.Bucket); err != nil {
		return err
	}
	if s.Presign == nil {
		t := true
		s.Presign = &t
	}
	if s.PresignTTL == 0 {
		s.PresignTTL = DefaultPresignTTL
	}
	if s.PresignTTL < 1 || s.PresignTTL > MaxPresignTTL {
		return fieldErr("presign_ttl", s.PresignTTL, fmt.Sprintf("must be between 1 and %d minutes (0 means %d)", MaxPresignTTL, DefaultPresignTTL))
	}
	if s.DataKey == "" {
		s.DataKey = DefaultDataKey
	}
	if strings.TrimSpace(s.DataKey) == "" {
		return fieldErr("data_key", s.DataKey, "must not be blank")
	}
	if err := checkCredentials(s.GoogleApplicationCredentials); err != nil {
		return err
	}
	if s.m == nil || !s.m.builtFrom(s.Prefix, s.RegexFilter) {
		m, err := newMatcher(s.Prefix, s.RegexFilter)
		if err != nil {
			return err
		}
		s.m = m
	}
	return nil
}

// Normalize applies defaults and validates every field except ID (see
// Import.Normalize). Errors wrap a *FieldError.
func (s *Export) Normalize() error {
	if err := s.normalize(); err != nil {
		return &storageError{kind: "export", index: -1, id: s.ID, err: err}
	}
	return nil
}

func (s *Export) normalize() error {
	if err := checkProject(s.Project); err != nil {
		return err
	}
	if err := checkBucket(s.Bucket); err != nil {
		return err
	}
	if s.ObjectKey == "" {
		s.ObjectKey = DefaultObjectKey
	}
	if !validObjectKey(s.ObjectKey) {
		return fieldErr("object_key", s.ObjectKey, `must be one of "{annotation_id}", "{annotation_id}.json", "{task_id}.json"`)
	}
	return checkCredentials(s.GoogleApplicationCredentials)
}

func validObjectKey(k string) bool {
	for _, ok := range objectKeys {
		if k == ok {
			return true
		}
	}
	return false
}

func checkID(id int64) error {
	switch {
	case id == 0:
		return fieldErr("id", nil, "required, a positive integer")
	case id < 0:
		return fieldErr("id", id, "must be positive")
	}
	return nil
}

func checkProject(p int64) error {
	switch {
	case p == 0:
		return fieldErr("project", nil, "required, the id of a labeling project")
	case p < 0:
		return fieldErr("project", p, "must be positive")
	}
	return nil
}

func checkBucket(b string) error {
	switch {
	case b == "":
		return fieldErr("bucket", nil, "required")
	case strings.HasPrefix(b, "gs://"):
		return fieldErr("bucket", b, `must be a bucket name, not a gs:// URL`)
	case strings.Contains(b, "/"):
		return fieldErr("bucket", b, "must be a bucket name; put folders in prefix")
	case !validBucket(b):
		return fieldErr("bucket", b, "must be 3 to 222 lowercase letters, digits, '-', '_' or '.', starting and ending with a letter or digit")
	}
	return nil
}

// validBucket accepts plausible GCS bucket names. It does not try to be
// GCS's full rule set (63-character components, no "goog" prefix): GCS
// itself has the last word, this only catches typos before the first call.
func validBucket(b string) bool {
	if len(b) < 3 || len(b) > 222 {
		return false
	}
	for i := 0; i < len(b); i++ {
		switch c := b[i]; {
		case 'a' <= c && c <= 'z', '0' <= c && c <= '9':
		case c == '-' || c == '_' || c == '.':
			if i == 0 || i == len(b)-1 {
				return false
			}
		default:
			return false
		}
	}
	return true
}

// LogValue keeps credentials, even sealed ones, out of logs.
func (s Import) LogValue() slog.Value {
	return slog.GroupValue(
		slog.Int64("id", s.ID),
		slog.Int64("project", s.Project),
		slog.String("bucket", s.Bucket),
		slog.String("prefix", s.Prefix),
		slog.String("regex_filter", s.RegexFilter),
		slog.Bool("recursive_scan", s.RecursiveScan),
		slog.Bool("use_blob_urls", s.UseBlobURLs),
		slog.Bool("has_credentials", s.HasCredentials()),
	)
}

// LogValue keeps credentials, even sealed ones, out of logs.
func (s Export) LogValue() slog.Value {
	return slog.GroupValue(
		slog.Int64("id", s.ID),
		slog.Int64("project", s.Project),
		slog.String("bucket", s.Bucket),
		slog.String("prefix", s.Prefix),
		slog.String("object_key", s.ObjectKey),
		slog.Bool("can_delete_objects", s.CanDeleteObjects),
		slog.Bool("has_credentials", s.HasCredentials()),
	)
}
