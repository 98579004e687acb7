package taskfile

import (
	"bytes"
	"encoding/json"
	"errors"
	"testing"
	"testing/iotest"
	"unicode/utf8"

	"github.com/google/go-cmp/cmp"
	"github.com/parquet-go/parquet-go"
)

// referenceRead is the spec read naively, with the whole content in memory:
// what Read must agree with whenever the content is well-formed enough for
// the two to be comparable. ok is false when it cannot say (a broken array,
// which Read may partly read before stopping).
func referenceRead(data []byte) (want []result, ok bool) {
	data = bytes.TrimPrefix(data, utf8BOM)
	data = trimSpace(data)
	if len(data) == 0 {
		return nil, true
	}
	var items [][]byte
	switch {
	case data[0] == '[':
		var elems []json.RawMessage
		if json.Unmarshal(data, &elems) != nil || !utf8.Valid(data) {
			return nil, false
		}
		for _, e := range elems {
			items = append(items, e)
		}
	case data[0] == '{' && json.Valid(data):
		items = [][]byte{data}
	case data[0] == '{':
		for line := range bytes.SplitSeq(data, []byte("\n")) {
			if len(trimSpace(line)) > 0 {
				items = append(items, line)
			}
		}
	default:
		return nil, false
	}
	for i, item := range items {
		want = append(want, referenceTask(i, item))
	}
	return want, true
}

func referenceTask(row int, item []byte) result {
	var obj map[string]json.RawMessage
	if !utf8.Valid(item) || json.Unmarshal(item, &obj) != nil || obj == nil {
		return bad(row)
	}
	var task bytes.Buffer
	if d, ok := obj["data"]; ok {
		if d[0] != '{' {
			return bad(row)
		}
		_ = json.Compact(&task, item)
	} else {
		_ = json.Compact(&task, []byte(`{"data":`+string(item)+`}`))
	}
	return ok(row, task.String())
}

func FuzzRead(f *testing.F) {
	for _, seed := range []string{
		`[{"a": 1}, {"data": {"b": 2}, "annotations": []}]`,
		"{\"a\": 1}\n{bad\n\n{\"data\": 5}\n",
		"{\n  \"data\": {\"x\": [1, 2, {\"y\": null}]}\n}\n",
		"\xEF\xBB\xBF {\"a\":\"\\\"}\"}\r\n{\"b\":1}",
		`[{"a": "],["}, 1, "x", {"data": []},]`,
		"{\"a\":\n{\"b\": 1}\n{\"c\": 2}",
		"{\"a\": 1} {\"b\": 2}\n{\"c\": 3}",
		`[{"a": 1}, {"a": 2}`,
		"{\"d\\u0061ta\": {}}\n{\"data\": 1, \"data\": {}}",
		"",
		"x",
	} {
		f.Add([]byte(seed), false)
		f.Add([]byte(seed), true)
	}
	f.Fuzz(func(t *testing.T, data []byte, small bool) {
		opts := Options{}
		if small {
			opts.MaxRecordBytes = 16
		}
		var got []result
		err := Read(bytes.NewReader(data), Sniff, opts, func(rec Record) bool {
			if rec.Row != len(got) {
				t.Fatalf("record %d has Row %d", len(got), rec.Row)
			}
			if rec.Err != nil {
				if rec.Task != nil || !errors.Is(rec.Err, ErrBadRecord) {
					t.Fatalf("row %d: Err %v with Task %q", rec.Row, rec.Err, rec.Task)
				}
			} else {
				var task struct{ Data json.RawMessage }
				if !json.Valid(rec.Task) || !utf8.Valid(rec.Task) || json.Unmarshal(rec.Task, &task) != nil ||
					len(task.Data) == 0 || task.Data[0] != '{' {
					t.Fatalf("row %d: Task %q is not JSON with a data object", rec.Row, rec.Task)
				}
				var compact bytes.Buffer
				if json.Compact(&compact, rec.Task) != nil || !bytes.Equal(compact.Bytes(), rec.Task) {
					t.Fatalf("row %d: Task %q is not compact", rec.Row, rec.Task)
				}
			}
			got = append(got, resultOf(rec))
			return true
		})
		if err != nil && !errors.Is(err, ErrMalformed) && !errors.Is(err, ErrUnsupported) {
			t.Fatalf("Read error %v is neither ErrMalformed nor ErrUnsupported", err)
		}

		// How the input is cut into reads must not matter.
		again, err2 := readAll(iotest.OneByteReader(bytes.NewReader(data)), Sniff, opts)
		if diff := cmp.Diff(got, again); diff != "" || (err == nil) != (err2 == nil) {
			t.Fatalf("one byte at a time: error %v vs %v, records (-whole +one byte):\n%s", err, err2, diff)
		}

		if small {
			return
		}
		if want, ok := referenceRead(data); ok {
			if err != nil {
				t.Fatalf("Read error %v, reference reads %d records", err, len(want))
			}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Fatalf("records (-reference +got):\n%s", diff)
			}
		}
	})
}

func FuzzReadParquet(f *testing.F) {
	var buf bytes.Buffer
	w := parquet.NewGenericWriter[nestedRow](&buf)
	a := "a"
	if _, err := w.Write([]nestedRow{{Reps: []int32{1, 2}, OptList: []*string{&a, nil}, Deep: []nestedInner{{Name: "n", Vals: []string{"v"}}}}, {}}); err != nil {
		f.Fatal(err)
	}
	if err := w.Close(); err != nil {
		f.Fatal(err)
	}
	f.Add(buf.Bytes())
	f.Add([]byte("PAR1\x00\x00\x00\x00PAR1"))
	f.Fuzz(func(t *testing.T, data []byte) {
		row := 0
		err := ReadParquet(bytes.NewReader(data), int64(len(data)), Options{}, func(rec Record) bool {
			if rec.Row != row {
				t.Fatalf("record %d has Row %d", row, rec.Row)
			}
			row++
			if rec.Err == nil && !json.Valid(rec.Task) {
				t.Fatalf("row %d: Task %q is not JSON", rec.Row, rec.Task)
			}
			return true
		})
		if err != nil && !errors.Is(err, ErrMalformed) {
			t.Fatalf("ReadParquet error %v does not wrap ErrMalformed", err)
		}
	})
}
