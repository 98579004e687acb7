package taskfile

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"runtime"
	"strings"
	"testing"
	"testing/iotest"

	"github.com/google/go-cmp/cmp"
)

// result is a Record reduced to what the tests compare.
type result struct {
	Row  int
	Task string
	Err  string // "" for a good record, "bad" or "too large"
}

func resultOf(rec Record) result {
	r := result{Row: rec.Row, Task: string(rec.Task)}
	switch {
	case rec.Err == nil:
	case errors.Is(rec.Err, ErrTooLarge):
		r.Err = "too large"
	case errors.Is(rec.Err, ErrBadRecord):
		r.Err = "bad"
	default:
		r.Err = "unclassified: " + rec.Err.Error()
	}
	return r
}

func readAll(r io.Reader, f Format, opts Options) ([]result, error) {
	var got []result
	err := Read(r, f, opts, func(rec Record) bool {
		got = append(got, resultOf(rec))
		return true
	})
	return got, err
}

func ok(row int, task string) result { return result{Row: row, Task: task} }
func bad(row int) result             { return result{Row: row, Err: "bad"} }
func oversize(row int) result        { return result{Row: row, Err: "too large"} }

func TestRead(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		in      string
		max     int
		want    []result
		wantErr error
	}{
		{
			name: "array of data objects",
			in:   `[{"image": "gs://b/1.jpg", "n": 1}, {"image": "gs://b/2.jpg", "n": 2.50}]`,
			want: []result{
				ok(0, `{"data":{"image":"gs://b/1.jpg","n":1}}`),
				ok(1, `{"data":{"image":"gs://b/2.jpg","n":2.50}}`),
			},
		},
		{
			name: "array of tasks",
			in: `[
			  {"data": {"text": "a"}, "annotations": [{"result": [{"value": {"choices": ["x"]}}]}], "predictions": [{"score": 0.9}]},
			  {"data": {"text": "b"}, "meta": {"source": "s3"}}
			]`,
			want: []result{
				ok(0, `{"data":{"text":"a"},"annotations":[{"result":[{"value":{"choices":["x"]}}]}],"predictions":[{"score":0.9}]}`),
				ok(1, `{"data":{"text":"b"},"meta":{"source":"s3"}}`),
			},
		},
		{
			name: "single task object, pretty-printed",
			in:   "{\n  \"data\": {\n    \"text\": \"hello\"\n  },\n  \"predictions\": []\n}\n",
			want: []result{ok(0, `{"data":{"text":"hello"},"predictions":[]}`)},
		},
		{
			name: "single data object, pretty-printed",
			in:   "{\n  \"image\": \"gs://b/1.jpg\",\n  \"nested\": {\"a\": [1, 2]}\n}",
			want: []result{ok(0, `{"data":{"image":"gs://b/1.jpg","nested":{"a":[1,2]}}}`)},
		},
		{
			name: "single object on one line",
			in:   `{"text": "x"}`,
			want: []result{ok(0, `{"data":{"text":"x"}}`)},
		},
		{
			name: "empty object",
			in:   `{}`,
			want: []result{ok(0, `{"data":{}}`)},
		},
		{
			name: "jsonl",
			in:   "{\"text\": \"a\"}\n{\"data\": {\"text\": \"b\"}, \"annotations\": []}\n{\"text\": \"c\"}\n",
			want: []result{
				ok(0, `{"data":{"text":"a"}}`),
				ok(1, `{"data":{"text":"b"},"annotations":[]}`),
				ok(2, `{"data":{"text":"c"}}`),
			},
		},
		{
			name: "jsonl without final newline",
			in:   "{\"a\": 1}\n{\"a\": 2}",
			want: []result{ok(0, `{"data":{"a":1}}`), ok(1, `{"data":{"a":2}}`)},
		},
		{
			name: "jsonl with blank lines",
			in:   "\n\n{\"a\": 1}\n\n   \n\t\n{\"a\": 2}\n\n",
			want: []result{ok(0, `{"data":{"a":1}}`), ok(1, `{"data":{"a":2}}`)},
		},
		{
			name: "jsonl with bad lines",
			in:   "{\"a\": 1}\n{bad\n\n{\"a\": 2}\n[1, 2]\n\"str\"\n{\"a\": 3}\n{\"a\": 4} {\"a\": 5}\n{\"a\": 6}",
			want: []result{
				ok(0, `{"data":{"a":1}}`), bad(1), ok(2, `{"data":{"a":2}}`), bad(3), bad(4),
				ok(5, `{"data":{"a":3}}`), bad(6), ok(7, `{"data":{"a":6}}`),
			},
		},
		{
			name: "jsonl with bad first line",
			in:   "{bad\n{\"a\":1}",
			want: []result{bad(0), ok(1, `{"data":{"a":1}}`)},
		},
		{
			name: "jsonl with truncated first line",
			in:   "{\"a\": \n{\"b\": 1}\n{\"c\": 2}\n",
			want: []result{bad(0), ok(1, `{"data":{"b":1}}`), ok(2, `{"data":{"c":2}}`)},
		},
		{
			name: "jsonl with unterminated string on first line",
			in:   "{\"a\": \"x\n{\"b\": 1}\n",
			want: []result{bad(0), ok(1, `{"data":{"b":1}}`)},
		},
		{
			name: "jsonl with two values on first line",
			in:   "{\"a\": 1} {\"b\": 2}\n{\"c\": 3}\n",
			want: []result{bad(0), ok(1, `{"data":{"c":3}}`)},
		},
		{
			name: "jsonl with invalid first value",
			in:   "{\"a\": tru}\n{\"c\": 3}\n",
			want: []result{bad(0), ok(1, `{"data":{"c":3}}`)},
		},
		{
			// The whole file is not one object, so it is JSONL, line by line.
			name: "multi-line object followed by more",
			in:   "{\n\"a\": 1\n}\n{\"b\": 2}\n",
			want: []result{bad(0), bad(1), bad(2), ok(3, `{"data":{"b":2}}`)},
		},
		{
			name: "multi-line value that does not parse",
			in:   "{\n  \"a\": tru\n}\n",
			want: []result{bad(0), bad(1), bad(2)},
		},
		{
			name: "array with non-object elements",
			in:   `[{"a": 1}, 5, "x", null, [1], true, {"a": 2}]`,
			want: []result{ok(0, `{"data":{"a":1}}`), bad(1), bad(2), bad(3), bad(4), bad(5), ok(6, `{"data":{"a":2}}`)},
		},
		{
			name: "array with malformed element",
			in:   `[{"a": 1}, {bad}, {"a": [1, "]"}}, {"a": 2}]`,
			want: []result{ok(0, `{"data":{"a":1}}`), bad(1), bad(2), ok(3, `{"data":{"a":2}}`)},
		},
		{
			// Elements are told apart by bracket depth: one that does not
			// balance leaves the array unclosed.
			name:    "array with unbalanced element",
			in:      `[{"a": 1}, {"a": [1, }, {"a": 2}]`,
			want:    []result{ok(0, `{"data":{"a":1}}`)},
			wantErr: ErrMalformed,
		},
		{
			name: "array with missing element",
			in:   `[{"a": 1},, {"a": 2}]`,
			want: []result{ok(0, `{"data":{"a":1}}`), bad(1), ok(2, `{"data":{"a":2}}`)},
		},
		{
			name: "array with trailing comma",
			in:   `[{"a": 1}, {"a": 2},]`,
			want: []result{ok(0, `{"data":{"a":1}}`), ok(1, `{"data":{"a":2}}`)},
		},
		{
			name: "brackets and commas inside strings",
			in:   `[{"a": "],[{\"}"}, {"a": "\\"}]`,
			want: []result{ok(0, `{"data":{"a":"],[{\"}"}}`), ok(1, `{"data":{"a":"\\"}}`)},
		},
		{
			name: "empty array",
			in:   " [ ] ",
		},
		{
			name: "data not an object",
			in:   "{\"data\": \"x\"}\n{\"data\": [1]}\n{\"data\": null}\n{\"data\": {}}\n",
			want: []result{bad(0), bad(1), bad(2), ok(3, `{"data":{}}`)},
		},
		{
			name: "data not an object in a single object",
			in:   `{"data": 5, "annotations": []}`,
			want: []result{bad(0)},
		},
		{
			name: "data key spelled with escapes",
			in:   `[{"d\u0061ta": {"a": 1}}]`,
			want: []result{ok(0, `{"d\u0061ta":{"a":1}}`)},
		},
		{
			name: "last duplicate data key decides",
			in:   `[{"data": 1, "data": {"a": 1}}, {"data": {"a": 1}, "data": 1}]`,
			want: []result{ok(0, `{"data":1,"data":{"a":1}}`), bad(1)},
		},
		{
			name: "data below the top level does not count",
			in:   `[{"x": {"data": {}}, "y": ["data"]}]`,
			want: []result{ok(0, `{"data":{"x":{"data":{}},"y":["data"]}}`)},
		},
		{
			name: "numbers kept exactly",
			in:   `[{"big": 123456789012345678901234567890, "f": 1.000000000000000000001, "e": 1E400, "z": -0.0}]`,
			want: []result{ok(0, `{"data":{"big":123456789012345678901234567890,"f":1.000000000000000000001,"e":1E400,"z":-0.0}}`)},
		},
		{
			name: "strings kept as written",
			in:   `[{"html": "<a&b>", "u": "\u00e9 é \ud83d\ude00"}]`,
			want: []result{ok(0, `{"data":{"html":"<a&b>","u":"\u00e9 é \ud83d\ude00"}}`)},
		},
		{
			name: "invalid utf-8",
			in:   "{\"a\": \"\xff\"}\n{\"a\": 1}\n",
			want: []result{bad(0), ok(1, `{"data":{"a":1}}`)},
		},
		{
			name: "leading whitespace and BOM",
			in:   "\xEF\xBB\xBF \r\n\t [{\"a\": 1}]",
			want: []result{ok(0, `{"data":{"a":1}}`)},
		},
		{
			name: "BOM before jsonl",
			in:   "\xEF\xBB\xBF{\"a\": 1}\n{\"a\": 2}\n",
			want: []result{ok(0, `{"data":{"a":1}}`), ok(1, `{"data":{"a":2}}`)},
		},
		{
			name: "crlf line endings",
			in:   "{\"a\": 1}\r\n\r\n{\"a\": 2}\r\n",
			want: []result{ok(0, `{"data":{"a":1}}`), ok(1, `{"data":{"a":2}}`)},
		},
		{
			name: "crlf pretty-printed object",
			in:   "{\r\n  \"a\": 1\r\n}\r\n",
			want: []result{ok(0, `{"data":{"a":1}}`)},
		},
		{
			name: "empty file",
			in:   "",
		},
		{
			name: "only whitespace and BOM",
			in:   "\xEF\xBB\xBF \n\n ",
		},
		{
			name:    "csv is not json",
			in:      "image,text\n1.jpg,hi\n",
			wantErr: ErrUnsupported,
		},
		{
			name:    "bare scalar is not a task file",
			in:      "42",
			wantErr: ErrUnsupported,
		},
		{
			name:    "array never closes",
			in:      `[{"a": 1}, {"a": 2}`,
			want:    []result{ok(0, `{"data":{"a":1}}`)},
			wantErr: ErrMalformed,
		},
		{
			name:    "array never closes inside a string",
			in:      `[{"a": 1}, {"a": "2}]`,
			want:    []result{ok(0, `{"data":{"a":1}}`)},
			wantErr: ErrMalformed,
		},
		{
			name:    "data after array",
			in:      `[{"a": 1}] [{"a": 2}]`,
			want:    []result{ok(0, `{"data":{"a":1}}`)},
			wantErr: ErrMalformed,
		},
		{
			name:    "array closed by a brace",
			in:      `[{"a": 1}}`,
			want:    []result{ok(0, `{"data":{"a":1}}`)},
			wantErr: ErrMalformed,
		},
		{
			name: "oversize line",
			in:   "{\"a\": 1}\n{\"text\": \"" + strings.Repeat("x", 100) + "\"}\n{\"a\": 2}\n",
			max:  32,
			want: []result{ok(0, `{"data":{"a":1}}`), oversize(1), ok(2, `{"data":{"a":2}}`)},
		},
		{
			name: "oversize first line",
			in:   "{\"text\": \"" + strings.Repeat("x", 100) + "\"}\n{\"a\": 2}\n",
			max:  32,
			want: []result{oversize(0), ok(1, `{"data":{"a":2}}`)},
		},
		{
			name: "oversize broken first line",
			in:   "{\"text\": " + strings.Repeat("x", 100) + "\n{\"a\": 2}\n",
			max:  32,
			want: []result{oversize(0), ok(1, `{"data":{"a":2}}`)},
		},
		{
			name: "oversize whitespace-only line is blank",
			in:   "{\"a\": 1}\n" + strings.Repeat(" ", 100) + "\n{\"a\": 2}\n",
			max:  32,
			want: []result{ok(0, `{"data":{"a":1}}`), ok(1, `{"data":{"a":2}}`)},
		},
		{
			name: "oversize array element",
			in:   `[{"a": 1}, {"text": "` + strings.Repeat("x", 100) + `"}, {"a": 2}]`,
			max:  32,
			want: []result{ok(0, `{"data":{"a":1}}`), oversize(1), ok(2, `{"data":{"a":2}}`)},
		},
		{
			name: "oversize single object",
			in:   "{\n\"text\": \"" + strings.Repeat("x", 100) + "\"\n}\n",
			max:  32,
			want: []result{oversize(0)},
		},
		{
			name: "oversize multi-line first value followed by more",
			in:   "{\n\"text\": \"" + strings.Repeat("x", 100) + "\"\n}\n{\"a\": 1}\n",
			max:  32,
			want: []result{bad(0), oversize(1), bad(2), ok(3, `{"data":{"a":1}}`)},
		},
		{
			name: "oversize second line continuing a broken first line",
			in:   "{\"a\":\n{\"text\": \"" + strings.Repeat("x", 100) + "\"}\n{\"a\": 1}\n",
			max:  32,
			want: []result{bad(0), oversize(1), ok(2, `{"data":{"a":1}}`)},
		},
		{
			// The one shape that cannot be told apart in bounded memory:
			// lines that go on reading as the first value for more than
			// 2*max bytes, then turn out not to be one.
			name:    "broken first line continued for long",
			in:      "{\"a\": [\n" + strings.Repeat("1,\n", 40) + "]}\n{\"a\": 1}\n",
			max:     32,
			wantErr: ErrMalformed,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			opts := Options{MaxRecordBytes: tt.max}
			// Every case also runs one byte at a time, to cover items and
			// lines split across reads.
			readers := map[string]func() io.Reader{
				"whole":    func() io.Reader { return strings.NewReader(tt.in) },
				"one byte": func() io.Reader { return iotest.OneByteReader(strings.NewReader(tt.in)) },
			}
			for name, r := range readers {
				for _, f := range []Format{JSON, JSONL, Sniff} {
					got, err := readAll(r(), f, opts)
					if !errors.Is(err, tt.wantErr) || (err == nil) != (tt.wantErr == nil) {
						t.Errorf("%s, %v: Read error = %v, want %v", name, f, err, tt.wantErr)
					}
					if diff := cmp.Diff(tt.want, got); diff != "" {
						t.Errorf("%s, %v: records (-want +got):\n%s", name, f, diff)
					}
				}
			}
		})
	}
}

func TestReadRecordErrors(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		in   string
		max  int
		want string
	}{
		{"syntax", "[{bad}]", 0, "taskfile: bad record: invalid character 'b' looking for beginning of object key string"},
		{"not an object", "[[1]]", 0, "taskfile: bad record: item is a JSON array, not an object"},
		{"data not an object", `[{"data": "x"}]`, 0, `taskfile: bad record: "data" is a JSON string, not an object`},
		{"too large", `[{"a": "xxxxxxxxxx"}]`, 8, "taskfile: bad record: record too large: longer than 8 bytes"},
		{"missing", `[,]`, 0, "taskfile: bad record: missing array element"},
		{"utf-8", "[\"\xff\"]", 0, "taskfile: bad record: not valid UTF-8"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			var got []error
			err := Read(strings.NewReader(tt.in), JSON, Options{MaxRecordBytes: tt.max}, func(rec Record) bool {
				got = append(got, rec.Err)
				return true
			})
			if err != nil {
				t.Fatalf("Read: %v", err)
			}
			if len(got) != 1 || got[0] == nil {
				t.Fatalf("Record errors = %v, want one", got)
			}
			if got[0].Error() != tt.want {
				t.Errorf("Record.Err = %q, want %q", got[0], tt.want)
			}
			if !errors.Is(got[0], ErrBadRecord) {
				t.Errorf("Record.Err = %v, does not wrap ErrBadRecord", got[0])
			}
		})
	}
}

func TestReadStopsWhenYieldReturnsFalse(t *testing.T) {
	t.Parallel()
	for _, in := range []string{
		`[{"a": 1}, {"a": 2}, {"a": 3}]`,
		"{\"a\": 1}\n{\"a\": 2}\n{\"a\": 3}\n",
		"{bad\n{\"a\": 2}\n{\"a\": 3}\n",
	} {
		n := 0
		err := Read(strings.NewReader(in), Sniff, Options{}, func(Record) bool {
			n++
			return n < 2
		})
		if err != nil || n != 2 {
			t.Errorf("Read(%q) stopping at the 2nd record: err = %v, yield called %d times, want nil, 2", in, err, n)
		}
	}
}

func TestReadIOError(t *testing.T) {
	t.Parallel()
	boom := errors.New("boom")
	for _, in := range []string{"", `[{"a": 1}, `, "{\"a\": 1}\n{\"a\""} {
		r := io.MultiReader(strings.NewReader(in), iotest.ErrReader(boom))
		_, err := readAll(r, Sniff, Options{})
		if !errors.Is(err, boom) || errors.Is(err, ErrMalformed) || errors.Is(err, ErrUnsupported) {
			t.Errorf("Read(%q then I/O error) = %v, want the I/O error alone", in, err)
		}
	}
}

func TestReadParquetFormatRejected(t *testing.T) {
	t.Parallel()
	err := Read(strings.NewReader("PAR1"), Parquet, Options{}, func(Record) bool { return true })
	if !errors.Is(err, ErrUnsupported) {
		t.Errorf("Read(Parquet) = %v, want ErrUnsupported", err)
	}
}

// repeatReader produces prefix, then n copies of fill, then suffix, without
// holding them in memory.
type repeatReader struct {
	prefix, suffix io.Reader
	fill           byte
	n              int64
}

func (r *repeatReader) Read(p []byte) (int, error) {
	if n, err := r.prefix.Read(p); n > 0 || err != io.EOF {
		return n, err
	}
	if r.n > 0 {
		k := min(int64(len(p)), r.n)
		for i := range p[:k] {
			p[i] = r.fill
		}
		r.n -= k
		return int(k), nil
	}
	return r.suffix.Read(p)
}

// TestReadHugeItemsDoNotBuffer checks that an item far longer than
// MaxRecordBytes is skipped without being held: what it allocates is a small
// multiple of the limit (slice growth), not the item's size. It does not
// run in parallel, since it reads the process-wide allocation count.
func TestReadHugeItemsDoNotBuffer(t *testing.T) {
	const size = 64 << 20
	const limit = 1 << 20
	tests := []struct {
		name           string
		prefix, suffix string
		want           []result
	}{
		{"first jsonl line", `{"text": "`, "\"}\n{\"a\": 1}\n", []result{oversize(0), ok(1, `{"data":{"a":1}}`)}},
		{"later jsonl line", "{\"a\": 1}\n{\"text\": \"", "\"}\n{\"a\": 2}\n", []result{ok(0, `{"data":{"a":1}}`), oversize(1), ok(2, `{"data":{"a":2}}`)}},
		{"array element", `[{"text": "`, `"}, {"a": 1}]`, []result{oversize(0), ok(1, `{"data":{"a":1}}`)}},
		{"single object", "{\n\"text\": \"", "\"\n}\n", []result{oversize(0)}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := &repeatReader{prefix: strings.NewReader(tt.prefix), suffix: strings.NewReader(tt.suffix), fill: 'x', n: size}
			var before, after runtime.MemStats
			runtime.ReadMemStats(&before)
			got, err := readAll(r, Sniff, Options{MaxRecordBytes: limit})
			runtime.ReadMemStats(&after)
			if err != nil {
				t.Fatalf("Read: %v", err)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("records (-want +got):\n%s", diff)
			}
			if alloc := after.TotalAlloc - before.TotalAlloc; alloc > 8*limit {
				t.Errorf("reading a %d-byte item allocated %d bytes, want at most %d", size, alloc, 8*limit)
			}
		})
	}
}

func TestFormatOf(t *testing.T) {
	t.Parallel()
	tests := []struct {
		key     string
		want    Format
		wantErr bool
	}{
		{"tasks.json", JSON, false},
		{"dir/TASKS.JSON", JSON, false},
		{"a/b/tasks.jsonl", JSONL, false},
		{"tasks.JsonL", JSONL, false},
		{"rows.parquet", Parquet, false},
		{"rows.PARQUET", Parquet, false},
		{"tasks", Sniff, false},
		{"dir.v2/file", Sniff, false},
		{"", Sniff, false},
		{"tasks.csv", 0, true},
		{"tasks.json.gz", 0, true},
		{"folder.json/", Sniff, false},
		{"image.jpg", 0, true},
		{"trailing.", 0, true},
	}
	for _, tt := range tests {
		got, err := FormatOf(tt.key)
		if tt.wantErr {
			if !errors.Is(err, ErrUnsupported) || !strings.Contains(err.Error(), fmt.Sprintf("%q", tt.key)) {
				t.Errorf("FormatOf(%q) error = %v, want ErrUnsupported naming the key", tt.key, err)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("FormatOf(%q) = %v, %v, want %v, nil", tt.key, got, err, tt.want)
		}
	}
}

func TestTaskBytesStable(t *testing.T) {
	t.Parallel()
	// The same item, however it is laid out, must give the same Task bytes:
	// callers hash them to find changed rows.
	inputs := []string{
		`[{"a": 1, "b": [1, 2]}]`,
		"{\"a\":1,\"b\":[1,2]}\n",
		"{\n  \"a\": 1,\n  \"b\": [\n    1,\n    2\n  ]\n}\n",
	}
	var first []byte
	for _, in := range inputs {
		var task []byte
		if err := Read(strings.NewReader(in), Sniff, Options{}, func(rec Record) bool {
			task = rec.Task
			return true
		}); err != nil {
			t.Fatalf("Read(%q): %v", in, err)
		}
		if first == nil {
			first = task
		}
		if !bytes.Equal(task, first) {
			t.Errorf("Read(%q) task = %s, want %s", in, task, first)
		}
	}
}

func TestReadRawOfBadRecords(t *testing.T) {
	t.Parallel()
	in := "{\"a\": 1}\n{bad\n{\"text\": \"" + strings.Repeat("x", 100) + "\"}\n[1]\n"
	var raws []string
	err := Read(strings.NewReader(in), Sniff, Options{MaxRecordBytes: 32}, func(rec Record) bool {
		if rec.Raw == nil {
			raws = append(raws, "<nil>")
		} else {
			raws = append(raws, string(rec.Raw))
		}
		return true
	})
	if err != nil {
		t.Fatalf("Read: %v", err)
	}
	// Good and oversize records carry no Raw; a bad one carries its bytes.
	want := []string{"<nil>", "{bad", "<nil>", "[1]"}
	if diff := cmp.Diff(want, raws); diff != "" {
		t.Errorf("Record.Raw (-want +got):\n%s", diff)
	}
}
