package gcs

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"cloud.google.com/go/storage"
	"google.golang.org/api/iterator"

	"github.com/labelsync/labelsync/internal/storages"
)

// Defaults for List and Preview.
const (
	// MaxPageSize is the most objects GCS returns per list call.
	MaxPageSize = 1000
	// DefaultPreviewLimit is Label Studio's DEFAULT_STORAGE_LIST_LIMIT.
	DefaultPreviewLimit = 100
	// DefaultPreviewDuration is the time budget Label Studio gives its file
	// preview.
	DefaultPreviewDuration = 30 * time.Second
)

// Object is a listed or opened object.
type Object struct {
	Key         string
	Generation  int64
	Size        int64
	Updated     time.Time
	ContentType string
}

// listAttrs are the only fields List asks for: GCS then leaves out ACLs,
// metadata and hashes, which are most of each item's bytes.
var listAttrs = []string{"Name", "Generation", "Size", "Updated", "ContentType"}

// List lists objects whose keys start with prefix, used verbatim (pass
// storages.Import.NormalizedPrefix() for a storage). Not recursive: only
// direct children (delimiter "/"; the synthetic sub-"directories" are
// skipped). Keys ending in "/" (folder placeholders) are always skipped.
//
// It starts at pageToken ("" = the beginning) and calls page once per page,
// in key order, with that page's objects (possibly none) and the token of the
// next page ("" after the last). A caller that stores next after page
// returns can resume there with every object seen exactly once. A page error
// stops the listing and is returned as is; list errors are classified.
// pageSize <= 0 or above MaxPageSize means MaxPageSize.
func List(ctx context.Context, b *storage.BucketHandle, prefix string, recursive bool, pageToken string, pageSize int, page func(objs []Object, next string) error) error {
	if pageSize <= 0 || pageSize > MaxPageSize {
		pageSize = MaxPageSize
	}
	q := &storage.Query{Prefix: prefix, Projection: storage.ProjectionNoACL}
	if !recursive {
		q.Delimiter = "/"
	}
	if err := q.SetAttrSelection(listAttrs); err != nil {
		return fmt.Errorf("gcs: list: %w", err)
	}
	// The pager, not it.Next: only the pager exposes the token of the page
	// after the one just returned, which is what a checkpoint needs.
	pager := iterator.NewPager(b.Objects(ctx, q), pageSize, pageToken)
	for {
		var attrs []*storage.ObjectAttrs
		next, err := pager.NextPage(&attrs)
		if err != nil {
			return fmt.Errorf("gcs: list gs://%s/%s: %w", b.BucketName(), prefix, Classify(err))
		}
		objs := make([]Object, 0, len(attrs))
		for _, a := range attrs {
			// Name is empty for the prefixes a delimiter listing returns.
			if a.Name == "" || strings.HasSuffix(a.Name, "/") {
				continue
			}
			objs = append(objs, Object{
				Key:         a.Name,
				Generation:  a.Generation,
				Size:        a.Size,
				Updated:     a.Updated,
				ContentType: a.ContentType,
			})
		}
		if err := page(objs, next); err != nil {
			return err
		}
		if next == "" {
			return nil
		}
	}
}

// errPreviewFull stops List once Preview has what it needs.
var errPreviewFull = errors.New("gcs: preview full")

// Preview returns up to limit objects that st would import (its prefix,
// recursive_scan and regex_filter, through st.Matches), in key order. It
// stops after maxDuration with what it has, so a huge bucket whose keys
// mostly fail the regex cannot hold a request for minutes; truncated
// reports that the listing was not read to its end, by the time budget or
// because limit was reached with more objects possibly left. limit <= 0
// means DefaultPreviewLimit; maxDuration <= 0 means DefaultPreviewDuration.
// Cancelling ctx is an error, unlike running out of maxDuration.
func Preview(ctx context.Context, c *storage.Client, st *storages.Import, limit int, maxDuration time.Duration) (objs []Object, truncated bool, err error) {
	if limit <= 0 {
		limit = DefaultPreviewLimit
	}
	if maxDuration <= 0 {
		maxDuration = DefaultPreviewDuration
	}
	lctx, cancel := context.WithTimeout(ctx, maxDuration)
	defer cancel()

	// Without a regex nearly every listed object is kept, so a page just
	// past the limit suffices; with one, full pages save round trips.
	pageSize := MaxPageSize
	if st.RegexFilter == "" {
		pageSize = min(limit+1, MaxPageSize)
	}
	objs = []Object{}
	err = List(lctx, Bucket(c, st.Bucket, st.GoogleProjectID), st.NormalizedPrefix(), st.RecursiveScan, "", pageSize, func(page []Object, next string) error {
		for _, o := range page {
			if !st.Matches(o.Key) {
				continue
			}
			if len(objs) == limit {
				truncated = true
				return errPreviewFull
			}
			objs = append(objs, o)
		}
		if next != "" && (len(objs) == limit || lctx.Err() != nil) {
			truncated = true
			return errPreviewFull
		}
		return nil
	})
	switch {
	case err == nil, errors.Is(err, errPreviewFull):
		return objs, truncated, nil
	case ctx.Err() == nil && lctx.Err() != nil:
		// The time budget ran out inside a list call.
		return objs, true, nil
	}
	return objs, truncated, err
}
