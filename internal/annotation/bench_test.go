package annotation_test

import (
	"os"
	"testing"

	"github.com/labelsync/labelsync/internal/annotation"
)

// BenchmarkDecode decodes Label Studio's ANNOTATION_UPDATED fixture, the
// body the webhook and the exporter decode once per change each.
func BenchmarkDecode(b *testing.B) {
	body, err := os.ReadFile("testdata/annotation_updated.json")
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	for b.Loop() {
		if _, _, err := annotation.Decode(body); err != nil {
			b.Fatal(err)
		}
	}
}
