package gcs

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"slices"
	"strings"
	"time"

	"cloud.google.com/go/storage"
)

// CORSRule is a bucket CORS rule in GCS's JSON form, the one `gcloud
// storage buckets update --cors-file` and `gsutil cors set` read.
type CORSRule struct {
	Origin         []string `json:"origin"`
	Method         []string `json:"method"`
	ResponseHeader []string `json:"responseHeader"`
	MaxAgeSeconds  int64    `json:"maxAgeSeconds"`
}

// LabelStudioCORS is the rule of Label Studio's GCS guide for origins:
// browsers on them may GET objects (through pre-signed URLs) and read
// their Content-Type.
func LabelStudioCORS(origins []string) storage.CORS {
	return storage.CORS{
		Origins:         slices.Clone(origins),
		Methods:         []string{"GET"},
		ResponseHeaders: []string{"Content-Type", "Access-Control-Allow-Origin"},
		MaxAge:          time.Hour,
	}
}

// CheckOrigins validates CORS origins as browsers send them,
// scheme://host[:port] or "*", lowercases scheme and host, and drops
// duplicates. A trailing slash or a path is an error: browsers never send
// one, so such a rule would match nothing.
func CheckOrigins(origins []string) ([]string, error) {
	if len(origins) == 0 {
		return nil, errors.New("gcs: at least one CORS origin is needed, e.g. http://localhost:8080")
	}
	var out []string
	for _, o := range origins {
		if o != "*" {
			u, err := url.Parse(o)
			if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.User != nil || u.Path != "" || u.RawQuery != "" || u.Fragment != "" || strings.HasSuffix(o, "?") || strings.HasSuffix(o, "#") {
				return nil, fmt.Errorf("gcs: CORS origin %q is not scheme://host[:port] (e.g. http://localhost:8080, without a trailing slash) or *", o)
			}
			o = strings.ToLower(u.Scheme + "://" + u.Host)
		}
		if !slices.Contains(out, o) {
			out = append(out, o)
		}
	}
	return out, nil
}

// MergeCORS returns current with Label Studio's rule for origins: the
// origins are taken out of every existing rule (a rule left with none is
// dropped), the other rules and origins are kept as they are, and the
// guide rule for origins is appended. Applying it twice changes nothing.
func MergeCORS(current []storage.CORS, origins []string) []storage.CORS {
	out := make([]storage.CORS, 0, len(current)+1)
	for _, rule := range current {
		rest := slices.DeleteFunc(slices.Clone(rule.Origins), func(o string) bool {
			return slices.Contains(origins, strings.ToLower(o))
		})
		if len(rest) == 0 {
			continue
		}
		rule.Origins = rest
		out = append(out, rule)
	}
	return append(out, LabelStudioCORS(origins))
}

// CORSRules converts rules to GCS's JSON form.
func CORSRules(rules []storage.CORS) []CORSRule {
	out := make([]CORSRule, 0, len(rules))
	for _, r := range rules {
		out = append(out, CORSRule{
			Origin:         nonNil(r.Origins),
			Method:         nonNil(r.Methods),
			ResponseHeader: nonNil(r.ResponseHeaders),
			MaxAgeSeconds:  int64(r.MaxAge / time.Second),
		})
	}
	return out
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

// SetCORS gives the bucket Label Studio's CORS rule for origins, keeping
// its rules for other origins (MergeCORS), and returns the resulting
// policy: as GCS stored it, or with dryRun, as it would be (nothing is
// changed). The update is conditional on the bucket's metageneration, so
// a concurrent change of the bucket's settings is not overwritten: the
// call then fails, and running it again merges with the new policy.
func SetCORS(ctx context.Context, b *storage.BucketHandle, origins []string, dryRun bool) ([]CORSRule, error) {
	origins, err := CheckOrigins(origins)
	if err != nil {
		return nil, err
	}
	attrs, err := b.Attrs(ctx)
	if err != nil {
		return nil, fmt.Errorf("gcs: reading bucket %s: %w", b.BucketName(), Classify(err))
	}
	merged := MergeCORS(attrs.CORS, origins)
	if dryRun {
		return CORSRules(merged), nil
	}
	cond := b
	if attrs.MetaGeneration > 0 {
		cond = b.If(storage.BucketConditions{MetagenerationMatch: attrs.MetaGeneration})
	}
	updated, err := cond.Update(ctx, storage.BucketAttrsToUpdate{CORS: merged})
	if err != nil {
		return nil, fmt.Errorf("gcs: setting the CORS policy of bucket %s: %w", b.BucketName(), Classify(err))
	}
	return CORSRules(updated.CORS), nil
}
