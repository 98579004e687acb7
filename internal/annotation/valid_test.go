package annotation

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// FuzzValid checks that valid gives json.Valid's answer: the two
// validators must agree on every body, or Decode would take what the
// exporter's other JSON readers refuse (or the reverse).
func FuzzValid(f *testing.F) {
	AddFixtures(f)
	for _, s := range []string{
		`{"a":"\u00e9\ud800","b":-0.1E+2,"c":[true,false,null]}`,
		"\"\xff\x00\"", `01`, `1.`, `-`, `"\x"`, `{"a" 1}`, `[1,]`, " \t\r\n[] ",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		if got, want := valid(body), json.Valid(body); got != want {
			t.Fatalf("valid(%q) = %v, json.Valid says %v", body, got, want)
		}
	})
}

// AddFixtures seeds a fuzzer with the Label Studio webhook bodies in
// testdata (FuzzValid here, FuzzDecode in package annotation_test).
func AddFixtures(f *testing.F) {
	names, err := filepath.Glob(filepath.Join("testdata", "*.json"))
	if err != nil || len(names) == 0 {
		f.Fatalf("no fixtures: %v", err)
	}
	for _, name := range names {
		b, err := os.ReadFile(name)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
}

// TestValidDeepNesting: at the edge of encoding/json's nesting limit, and
// far beyond it in a body gjson is never given.
func TestValidDeepNesting(t *testing.T) {
	for _, depth := range []int{shallowBytes / 2, shallowBytes/2 + 1, 4 << 20} {
		body := []byte(strings.Repeat("[", depth) + strings.Repeat("]", depth))
		if got, want := valid(body), json.Valid(body); got != want {
			t.Errorf("valid(%d nested arrays) = %v, json.Valid says %v", depth, got, want)
		}
	}
}

func BenchmarkValid(b *testing.B) {
	body, err := os.ReadFile(filepath.Join("testdata", "annotation_created.json"))
	if err != nil {
		b.Fatal(err)
	}
	b.Run("valid", func(b *testing.B) {
		for b.Loop() {
			valid(body)
		}
	})
	b.Run("json.Valid", func(b *testing.B) {
		for b.Loop() {
			json.Valid(body)
		}
	})
}
