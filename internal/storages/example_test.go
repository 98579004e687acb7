package storages_test

import (
	"fmt"
	"log"

	"github.com/labelsync/labelsync/internal/storages"
)

// A notification names a bucket and a key; Match says which source storages
// want the object. Each storage it returns gets its own task.
func ExampleSet_Match() {
	set, err := storages.NewSet([]storages.Import{
		// The SPEC example: images anywhere under incoming/.
		{ID: 1, Project: 7, Bucket: "acme-raw", Prefix: "incoming", RegexFilter: `.*\.(jpe?g|png)$`, RecursiveScan: true},
		// Everything directly in incoming/, for another project.
		{ID: 2, Project: 8, Bucket: "acme-raw", Prefix: "incoming/"},
		// The regex is anchored at the start of the full key only.
		{ID: 3, Project: 9, Bucket: "acme-raw", RegexFilter: "incoming/cat", RecursiveScan: true},
	})
	if err != nil {
		log.Fatal(err)
	}
	for _, key := range []string{
		"incoming/cat 1.jpg",     // all three
		"incoming/2026/dog.png",  // recursive only
		"incoming/notes.txt",     // filtered out by 1's regex
		"incoming/",              // a folder placeholder: never
		"incoming2/cat.jpg",      // "incoming" is a folder, not a string prefix
		"archive/incoming/a.jpg", // the regex does not search, it matches at 0
	} {
		var ids []int64
		for _, s := range set.Match("acme-raw", key) {
			ids = append(ids, s.ID)
		}
		fmt.Printf("%-24q %v\n", key, ids)
	}
	// Output:
	// "incoming/cat 1.jpg"     [1 2 3]
	// "incoming/2026/dog.png"  [1]
	// "incoming/notes.txt"     [2]
	// "incoming/"              []
	// "incoming2/cat.jpg"      []
	// "archive/incoming/a.jpg" []
}

func ExampleParse() {
	f, err := storages.Parse([]byte(`
import:
  - id: 1
    project: 7
    bucket: acme-raw
    prefix: incoming
    regex_filter: '.*\.(jpe?g|png)$'
    recursive_scan: true
export:
  - id: 2
    project: 7
    bucket: acme-labels
    prefix: annotations
`), storages.ParseOptions{})
	if err != nil {
		log.Fatal(err)
	}
	imp := f.Import[0]
	fmt.Println(imp.NormalizedPrefix(), *imp.Presign, imp.PresignTTL, imp.DataKey)
	fmt.Println(f.Export[0].ObjectKey)

	_, err = storages.Parse([]byte(`{"import": [{"id": 1, "project": 7, "bucket": "acme", "regex_filter": "(["}]}`), storages.ParseOptions{})
	fmt.Println(err)
	// Output:
	// incoming/ true 15 $undefined$
	// {annotation_id}
	// storages: import[0] (id 1): regex_filter "([": error parsing regexp: missing closing ]: `[`
}
