// Package taskfiletest writes task files for tests and benchmarks of the
// Tasks import method.
package taskfiletest

import (
	"bufio"
	"fmt"
	"os"
)

// WriteJSONL writes a JSONL task file of lines tasks shaped like real
// imports: mostly {"data": {...}} tasks, one in four a bare data object
// (wrapped on import), one in ten with predictions. It returns the file's
// size.
func WriteJSONL(path string, lines int) (int64, error) {
	f, err := os.Create(path)
	if err != nil {
		return 0, err
	}
	w := bufio.NewWriterSize(f, 1<<20)
	texts := []string{
		"A cat sitting on a red chair next to the window.",
		"Two people walking a dog along the beach at sunset, with waves in the background.",
		"Invoice #4471 — total €1,234.50, due 2024-03-01.",
		"short",
	}
	for i := range lines {
		text := texts[i%len(texts)]
		switch {
		case i%10 == 0:
			fmt.Fprintf(w, `{"data": {"image": "gs://bucket/img/%06d.jpg", "text": %q, "n": %d}, "predictions": [{"model_version": "v3", "score": 0.%03d, "result": [{"from_name": "label", "to_name": "image", "type": "choices", "value": {"choices": ["cat"]}}]}]}`+"\n", i, text, i, i%1000)
		case i%4 == 0:
			fmt.Fprintf(w, `{"image": "gs://bucket/img/%06d.jpg", "text": %q, "n": %d}`+"\n", i, text, i)
		default:
			fmt.Fprintf(w, `{"data": {"image": "gs://bucket/img/%06d.jpg", "text": %q, "n": %d}}`+"\n", i, text, i)
		}
	}
	if err := w.Flush(); err != nil {
		f.Close()
		return 0, err
	}
	info, err := f.Stat()
	if err != nil {
		f.Close()
		return 0, err
	}
	return info.Size(), f.Close()
}
