package taskfile_test

import (
	"errors"
	"fmt"
	"strings"

	"github.com/labelsync/labelsync/internal/taskfile"
)

func ExampleRead() {
	key := "imports/batch-7.jsonl"
	content := `{"image": "gs://b/1.jpg"}
{"data": {"image": "gs://b/2.jpg"}, "predictions": [{"result": []}]}

{"image": "gs://b/3.jpg"
{"data": "gs://b/4.jpg"}
`
	f, err := taskfile.FormatOf(key)
	if err != nil {
		fmt.Println("dead-letter:", err)
		return
	}
	err = taskfile.Read(strings.NewReader(content), f, taskfile.Options{}, func(rec taskfile.Record) bool {
		if rec.Err != nil {
			fmt.Printf("row %d: dead-letter (%v)\n", rec.Row, rec.Err)
			return true
		}
		fmt.Printf("row %d: %s\n", rec.Row, rec.Task)
		return true
	})
	if errors.Is(err, taskfile.ErrUnsupported) || errors.Is(err, taskfile.ErrMalformed) {
		fmt.Println("dead-letter the file:", err)
	}
	// Output:
	// row 0: {"data":{"image":"gs://b/1.jpg"}}
	// row 1: {"data":{"image":"gs://b/2.jpg"},"predictions":[{"result":[]}]}
	// row 2: dead-letter (taskfile: bad record: unexpected end of JSON input)
	// row 3: dead-letter (taskfile: bad record: "data" is a JSON string, not an object)
}

func ExampleFormatOf() {
	for _, key := range []string{"a/tasks.JSON", "a/rows.parquet", "exports.v2/tasks", "a/b.csv"} {
		f, err := taskfile.FormatOf(key)
		if err != nil {
			fmt.Println(err)
			continue
		}
		fmt.Println(key, "→", f)
	}
	// Output:
	// a/tasks.JSON → json
	// a/rows.parquet → parquet
	// exports.v2/tasks → sniff
	// taskfile: unsupported file type: key "a/b.csv" has extension ".csv", want .json, .jsonl, .parquet or none
}
