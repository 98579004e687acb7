package storages

import (
	"cmp"
	"fmt"
	"regexp"
	"slices"
	"strings"
)

// matcher is the compiled form of an Import's prefix and regex filter. It is
// immutable once built, so copies of an Import may share it.
type matcher struct {
	prefix, regexFilter string // the fields it was built from
	normPrefix          string
	re                  *regexp.Regexp // nil: every key passes
}

func newMatcher(prefix, regexFilter string) (*matcher, error) {
	m := &matcher{prefix: prefix, regexFilter: regexFilter, normPrefix: normalizePrefix(prefix)}
	if regexFilter == "" {
		return m, nil
	}
	// Compile the expression alone first: its error then quotes what the
	// user wrote, and something like "a)|(b" cannot escape the wrapping
	// group below.
	if _, err := regexp.Compile(regexFilter); err != nil {
		return nil, &FieldError{Field: "regex_filter", Err: err, shown: fmt.Sprintf("%q", regexFilter)}
	}
	// Label Studio uses Python's re.match: anchored at the start of the key
	// only. "a" therefore matches "abc.png", and ".*\.jpg" matches
	// "a/b.jpg.txt"; users who want the end anchored write "$".
	re, err := regexp.Compile(`^(?:` + regexFilter + `)`)
	if err != nil {
		return nil, &FieldError{Field: "regex_filter", Err: err, shown: fmt.Sprintf("%q", regexFilter)}
	}
	m.re = re
	return m, nil
}

func (m *matcher) builtFrom(prefix, regexFilter string) bool {
	return m.prefix == prefix && m.regexFilter == regexFilter
}

func (m *matcher) matches(key string, recursive bool) bool {
	// Folder placeholders (and the prefix folder itself) end in "/".
	if key == "" || strings.HasSuffix(key, "/") {
		return false
	}
	rest, ok := strings.CutPrefix(key, m.normPrefix)
	if !ok {
		return false
	}
	if !recursive && strings.Contains(rest, "/") {
		return false
	}
	// The regex sees the full key, prefix included, as in Label Studio.
	return m.re == nil || m.re.MatchString(key)
}

// normalizePrefix is Label Studio's prefix.rstrip("/") + "/", except that a
// prefix of only slashes means the whole bucket, like an empty one.
func normalizePrefix(p string) string {
	t := strings.TrimRight(p, "/")
	switch {
	case t == "":
		return ""
	case len(t)+1 == len(p):
		return p // already normalised; no allocation
	}
	return t + "/"
}

// NormalizedPrefix returns "" (whole bucket) or the prefix with exactly one
// trailing "/".
func (s *Import) NormalizedPrefix() string {
	if m := s.m; m != nil && m.builtFrom(s.Prefix, s.RegexFilter) {
		return m.normPrefix
	}
	return normalizePrefix(s.Prefix)
}

// Matches reports whether the storage wants the object key (the bucket is
// not compared). Storages that went through Normalize match without
// allocating; others, or ones changed since, are compiled for the call, and
// an invalid regex filter matches nothing.
func (s *Import) Matches(key string) bool {
	m := s.m
	if m == nil || !m.builtFrom(s.Prefix, s.RegexFilter) {
		var err error
		if m, err = newMatcher(s.Prefix, s.RegexFilter); err != nil {
			return false
		}
	}
	return m.matches(key, s.RecursiveScan)
}

// Set is an immutable snapshot of import storages indexed by bucket. It is
// safe for concurrent use. A nil *Set is empty.
type Set struct {
	all      []*Import // by id
	byID     map[int64]*Import
	byBucket map[string][]*Import // each by id
}

// NewSet copies and normalizes the storages, so later changes to the slice
// do not reach the Set. Ids must be positive and unique.
func NewSet(imports []Import) (*Set, error) {
	set := &Set{
		all:      make([]*Import, 0, len(imports)),
		byID:     make(map[int64]*Import, len(imports)),
		byBucket: make(map[string][]*Import),
	}
	index := make(map[int64]int, len(imports))
	for i := range imports {
		s := imports[i] // copy
		if s.Presign != nil {
			p := *s.Presign
			s.Presign = &p
		}
		if err := checkID(s.ID); err != nil {
			return nil, &storageError{kind: "import", index: i, id: s.ID, err: err}
		}
		if j, dup := index[s.ID]; dup {
			return nil, &storageError{kind: "import", index: i, id: s.ID, err: fieldErr("id", s.ID, fmt.Sprintf("duplicate of import[%d]", j))}
		}
		index[s.ID] = i
		if err := s.normalize(); err != nil {
			return nil, &storageError{kind: "import", index: i, id: s.ID, err: err}
		}
		p := &s
		set.all = append(set.all, p)
		set.byID[s.ID] = p
		set.byBucket[s.Bucket] = append(set.byBucket[s.Bucket], p)
	}
	byID := func(a, b *Import) int { return cmp.Compare(a.ID, b.ID) }
	slices.SortFunc(set.all, byID)
	for _, list := range set.byBucket {
		slices.SortFunc(list, byID)
	}
	return set, nil
}

// Match returns every storage that wants the object, in id order, or nil
// (without allocating) when none does. Each gets its own task.
func (s *Set) Match(bucket, key string) []*Import {
	if s == nil {
		return nil
	}
	var out []*Import
	for _, imp := range s.byBucket[bucket] {
		if imp.m.matches(key, imp.RecursiveScan) {
			out = append(out, imp)
		}
	}
	return out
}

// Get returns the storage with the id.
func (s *Set) Get(id int64) (*Import, bool) {
	if s == nil {
		return nil, false
	}
	imp, ok := s.byID[id]
	return imp, ok
}

// All returns every storage in id order, in a new slice.
func (s *Set) All() []*Import {
	if s == nil {
		return nil
	}
	return slices.Clone(s.all)
}

// Len returns the number of storages.
func (s *Set) Len() int {
	if s == nil {
		return 0
	}
	return len(s.all)
}
