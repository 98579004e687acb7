package storages

import (
	"fmt"
	"slices"
	"sync"
	"testing"
)

func TestNormalizedPrefix(t *testing.T) {
	t.Parallel()
	tests := []struct{ prefix, want string }{
		{"", ""},
		{"/", ""},
		{"///", ""},
		{"images", "images/"},
		{"images/", "images/"},
		{"images///", "images/"},
		{"a/b", "a/b/"},
		{"/images", "/images/"}, // a leading "/" is part of the key in GCS
		{"with space", "with space/"},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%q", tt.prefix), func(t *testing.T) {
			t.Parallel()
			raw := Import{Prefix: tt.prefix}
			if got := raw.NormalizedPrefix(); got != tt.want {
				t.Errorf("NormalizedPrefix() before Normalize = %q, want %q", got, tt.want)
			}
			s := Import{Project: 1, Bucket: "acme", Prefix: tt.prefix}
			if err := s.Normalize(); err != nil {
				t.Fatal(err)
			}
			if got := s.NormalizedPrefix(); got != tt.want {
				t.Errorf("NormalizedPrefix() = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestMatches(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name      string
		prefix    string
		regex     string
		recursive bool
		key       string
		want      bool
	}{
		// Prefix normalisation.
		{"no prefix, top level", "", "", false, "a.jpg", true},
		{"no prefix, nested, direct only", "", "", false, "a/b.jpg", false},
		{"no prefix, nested, recursive", "", "", true, "a/b.jpg", true},
		{"slash prefix is whole bucket", "/", "", false, "a.jpg", true},
		{"prefix child", "images", "", false, "images/a.jpg", true},
		{"prefix with slash", "images/", "", false, "images/a.jpg", true},
		{"prefix with many slashes", "images//", "", false, "images/a.jpg", true},
		{"sibling folder", "images", "", true, "images2/a.jpg", false},
		{"prefix as file name", "images", "", true, "images", false},
		{"prefix folder itself", "images", "", true, "images/", false},
		{"outside prefix", "images", "", true, "other/images/a.jpg", false},
		{"nested prefix", "a/b", "", false, "a/b/c.jpg", true},
		{"case sensitive", "Images", "", true, "images/a.jpg", false},

		// Recursive vs direct.
		{"direct grandchild", "images", "", false, "images/sub/a.jpg", false},
		{"recursive grandchild", "images", "", true, "images/sub/a.jpg", true},
		{"recursive deep", "images", "", true, "images/1/2/3/a.jpg", true},
		{"direct double slash", "images", "", false, "images//a.jpg", false},
		{"recursive double slash", "images", "", true, "images//a.jpg", true},

		// Folder placeholders.
		{"placeholder direct", "images", "", false, "images/sub/", false},
		{"placeholder recursive", "images", "", true, "images/sub/deeper/", false},
		{"placeholder no prefix", "", "", true, "sub/", false},
		{"placeholder matching regex", "", ".*", true, "sub/", false},
		{"empty key", "", "", true, "", false},

		// Regex anchored at the start of the full key only.
		{"regex any jpg nested", "", `.*\.jpg`, true, "a/b.jpg", true},
		{"regex not anchored anywhere", "", `b\.jpg`, true, "a/b.jpg", false},
		{"regex end not anchored", "", "a", true, "abc.png", true},
		{"regex end anchored by user", "", `.*\.jpg$`, true, "a/b.jpg.txt", false},
		{"regex end open", "", `.*\.jpg`, true, "a/b.jpg.txt", true},
		{"regex sees prefix", "incoming", `incoming/cat`, false, "incoming/cat 1.jpg", true},
		{"regex without prefix misses", "incoming", `cat`, false, "incoming/cat 1.jpg", false},
		{"regex alternation anchored as a whole", "", `x|.*\.png`, true, "dir/a.png", true},
		{"regex alternation first branch", "", `x|y`, true, "ax", false},
		{"regex spec example jpg", "incoming", `.*\.(jpe?g|png)$`, true, "incoming/2026/dog.jpeg", true},
		{"regex spec example txt", "incoming", `.*\.(jpe?g|png)$`, true, "incoming/notes.txt", false},
		{"regex case flag", "", `(?i).*\.JPG`, true, "a.jpg", true},
		{"regex dot and newline", "", `a.b`, true, "a\nb", false},

		// Unusual keys: no escaping or decoding happens.
		{"space", "in coming", "", false, "in coming/cat 1.jpg", true},
		{"unicode", "données", `.*é`, false, "données/café", true},
		{"hash", "", "", false, "a#b.jpg", true},
		{"question mark", "", `.*\?`, false, "what?", true},
		{"percent is literal", "a%2Fb", "", false, "a%2Fb/c.jpg", true},
		{"percent not decoded", "a/b", "", false, "a%2Fb/c.jpg", false},
		{"regex with percent", "", `.*%20`, false, "x%20", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s := Import{Project: 1, Bucket: "acme", Prefix: tt.prefix, RegexFilter: tt.regex, RecursiveScan: tt.recursive}
			// Before Normalize, Matches compiles per call; it must agree.
			if got := s.Matches(tt.key); got != tt.want {
				t.Errorf("Matches(%q) before Normalize = %v, want %v", tt.key, got, tt.want)
			}
			if err := s.Normalize(); err != nil {
				t.Fatal(err)
			}
			if got := s.Matches(tt.key); got != tt.want {
				t.Errorf("prefix %q regex %q recursive %v: Matches(%q) = %v, want %v",
					tt.prefix, tt.regex, tt.recursive, tt.key, got, tt.want)
			}
		})
	}
}

func TestMatchesFollowsChanges(t *testing.T) {
	t.Parallel()
	s := Import{Project: 1, Bucket: "acme", Prefix: "a", RegexFilter: `.*\.jpg`}
	if err := s.Normalize(); err != nil {
		t.Fatal(err)
	}
	s.Prefix, s.RegexFilter = "b", `.*\.png`
	if s.Matches("a/x.jpg") {
		t.Error("Matches used the prefix and regex from before the change")
	}
	if !s.Matches("b/x.png") {
		t.Error("Matches ignored the changed prefix and regex")
	}
	if got := s.NormalizedPrefix(); got != "b/" {
		t.Errorf("NormalizedPrefix() = %q, want %q", got, "b/")
	}
	s.RegexFilter = "(["
	if s.Matches("b/x.png") {
		t.Error("an invalid regex filter matched")
	}
}

func TestSetMatch(t *testing.T) {
	t.Parallel()
	set, err := NewSet([]Import{
		{ID: 30, Project: 2, Bucket: "acme-raw", Prefix: "incoming", RecursiveScan: true},
		{ID: 10, Project: 1, Bucket: "acme-raw", Prefix: "incoming", RegexFilter: `.*\.jpg`},
		{ID: 20, Project: 1, Bucket: "acme-raw"},
		{ID: 40, Project: 3, Bucket: "acme-other", Prefix: "incoming", RecursiveScan: true},
	})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		bucket, key string
		want        []int64
	}{
		{"acme-raw", "incoming/cat.jpg", []int64{10, 30}},
		{"acme-raw", "incoming/notes.txt", []int64{30}},
		{"acme-raw", "incoming/2026/cat.jpg", []int64{30}},
		{"acme-raw", "top.jpg", []int64{20}},
		{"acme-raw", "incoming/", nil},
		{"acme-other", "incoming/cat.jpg", []int64{40}},
		{"unknown", "incoming/cat.jpg", nil},
	}
	for _, tt := range tests {
		t.Run(tt.bucket+"/"+tt.key, func(t *testing.T) {
			t.Parallel()
			got := set.Match(tt.bucket, tt.key)
			var ids []int64
			for _, s := range got {
				ids = append(ids, s.ID)
			}
			if !slices.Equal(ids, tt.want) {
				t.Errorf("Match(%q, %q) = %v, want %v", tt.bucket, tt.key, ids, tt.want)
			}
			if tt.want == nil && got != nil {
				t.Errorf("Match(%q, %q) = %#v, want nil", tt.bucket, tt.key, got)
			}
		})
	}
}

func TestSetMatchDoesNotAllocate(t *testing.T) {
	if raceEnabled {
		t.Skip("allocation counts are meaningless under the race detector")
	}
	set, err := NewSet([]Import{
		{ID: 1, Project: 1, Bucket: "acme", Prefix: "in", RegexFilter: `.*\.jpg`},
		{ID: 2, Project: 1, Bucket: "acme", Prefix: "other", RecursiveScan: true},
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, key := range []string{"out/a.jpg", "in/a.png", "in/sub/a.jpg", "in/"} {
		if n := testing.AllocsPerRun(100, func() { _ = set.Match("acme", key) }); n != 0 {
			t.Errorf("Match(%q) with no match: %v allocations, want 0", key, n)
		}
	}
	if n := testing.AllocsPerRun(100, func() { _ = set.Match("nope", "in/a.jpg") }); n != 0 {
		t.Errorf("Match on an unknown bucket: %v allocations, want 0", n)
	}
}

func TestSetGetAllLen(t *testing.T) {
	t.Parallel()
	in := []Import{
		{ID: 2, Project: 1, Bucket: "acme"},
		{ID: 1, Project: 1, Bucket: "acme", Prefix: "p"},
	}
	set, err := NewSet(in)
	if err != nil {
		t.Fatal(err)
	}
	if set.Len() != 2 {
		t.Errorf("Len() = %d, want 2", set.Len())
	}
	var ids []int64
	for _, s := range set.All() {
		ids = append(ids, s.ID)
	}
	if want := []int64{1, 2}; !slices.Equal(ids, want) {
		t.Errorf("All() ids = %v, want %v", ids, want)
	}
	got, ok := set.Get(1)
	if !ok || got.Prefix != "p" {
		t.Errorf("Get(1) = %+v, %v; want the storage with prefix p", got, ok)
	}
	if got.PresignTTL != DefaultPresignTTL || got.Presign == nil || !*got.Presign || got.DataKey != DefaultDataKey {
		t.Errorf("Get(1) = %+v, want defaults applied", got)
	}
	if _, ok := set.Get(3); ok {
		t.Error("Get(3) found a storage that does not exist")
	}

	// The Set is a snapshot: changing the input does not reach it.
	in[1].Prefix = "changed"
	if !set.Match("acme", "p/x")[0].Matches("p/x") || len(set.Match("acme", "changed/x")) != 0 {
		t.Error("changing the input slice changed the Set")
	}
	// All returns a new slice each time.
	all := set.All()
	all[0] = nil
	if set.All()[0] == nil {
		t.Error("All() exposed the Set's own slice")
	}
}

func TestNilSet(t *testing.T) {
	t.Parallel()
	var set *Set
	if set.Match("b", "k") != nil || set.Len() != 0 || set.All() != nil {
		t.Error("nil Set is not empty")
	}
	if _, ok := set.Get(1); ok {
		t.Error("nil Set.Get found a storage")
	}
}

func TestNewSetErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		in   []Import
		want string
	}{
		{"duplicate id", []Import{{ID: 1, Project: 1, Bucket: "acme"}, {ID: 1, Project: 2, Bucket: "acme2"}},
			"storages: import[1] (id 1): id 1: duplicate of import[0]"},
		{"no id", []Import{{Project: 1, Bucket: "acme"}},
			"storages: import[0] (no id): id: required, a positive integer"},
		{"invalid storage", []Import{{ID: 5, Project: 1, Bucket: "acme", RegexFilter: "(["}},
			"storages: import[0] (id 5): regex_filter \"([\": error parsing regexp: missing closing ]: `[`"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := NewSet(tt.in)
			if err == nil || err.Error() != tt.want {
				t.Errorf("NewSet error = %v, want %s", err, tt.want)
			}
		})
	}
}

func TestSetConcurrentMatch(t *testing.T) {
	t.Parallel()
	set, err := NewSet([]Import{{ID: 1, Project: 1, Bucket: "acme", RegexFilter: `.*\.jpg`, RecursiveScan: true}})
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Go(func() {
			for j := range 200 {
				key := fmt.Sprintf("d%d/%d.jpg", i, j)
				if len(set.Match("acme", key)) != 1 {
					t.Errorf("Match(%q) missed", key)
					return
				}
			}
		})
	}
	wg.Wait()
}

func BenchmarkSetMatch(b *testing.B) {
	var imports []Import
	for i := range 50 {
		imports = append(imports, Import{ID: int64(i + 1), Project: 1, Bucket: "acme", Prefix: fmt.Sprintf("p%d", i), RegexFilter: `.*\.(jpe?g|png)$`, RecursiveScan: true})
	}
	set, err := NewSet(imports)
	if err != nil {
		b.Fatal(err)
	}
	// Baseline: what a caller would do without a Set.
	b.Run("linear-scan-hit", func(b *testing.B) {
		for i := range imports {
			if err := imports[i].Normalize(); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportAllocs()
		for b.Loop() {
			var out []*Import
			for i := range imports {
				if imports[i].Bucket == "acme" && imports[i].Matches("p25/2026/11/cat.jpg") {
					out = append(out, &imports[i])
				}
			}
			_ = out
		}
	})
	b.Run("hit", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			_ = set.Match("acme", "p25/2026/11/cat.jpg")
		}
	})
	b.Run("miss", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			_ = set.Match("acme", "q/2026/11/cat.jpg")
		}
	})
}
