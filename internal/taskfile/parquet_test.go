package taskfile

import (
	"bytes"
	"errors"
	"io"
	"math"
	"runtime"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/parquet-go/parquet-go"
	"github.com/parquet-go/parquet-go/encoding/thrift"
	"github.com/parquet-go/parquet-go/format"
)

type parquetBox struct {
	X int32 `parquet:"x"`
	Y int32 `parquet:"y"`
}

type parquetRow struct {
	Image   string           `parquet:"image"`
	Text    *string          `parquet:"text,optional"`
	N       int64            `parquet:"n"`
	Score   float64          `parquet:"score"`
	Ratio   float32          `parquet:"ratio"`
	Price   int64            `parquet:"price,decimal(2:10)"`
	Created int64            `parquet:"created,timestamp(millisecond)"`
	Day     int32            `parquet:"day,date"`
	Tags    []string         `parquet:"tags,list"`
	Labels  map[string]int32 `parquet:"labels"`
	Box     parquetBox       `parquet:"box"`
	Boxes   []parquetBox     `parquet:"boxes,list"`
	Meta    string           `parquet:"meta,json"`
	Raw     []byte           `parquet:"raw"`
	Ok      bool             `parquet:"ok"`
	U       uint32           `parquet:"u"`
}

func writeParquet(t *testing.T, rows []parquetRow, opts ...parquet.WriterOption) []byte {
	t.Helper()
	var buf bytes.Buffer
	w := parquet.NewGenericWriter[parquetRow](&buf, opts...)
	if _, err := w.Write(rows); err != nil {
		t.Fatalf("write parquet: %v", err)
	}
	if err := w.Close(); err != nil {
		t.Fatalf("close parquet writer: %v", err)
	}
	return buf.Bytes()
}

func readParquetAll(r io.ReaderAt, size int64, opts Options) ([]result, error) {
	var got []result
	err := ReadParquet(r, size, opts, func(rec Record) bool {
		got = append(got, resultOf(rec))
		return true
	})
	return got, err
}

func TestReadParquet(t *testing.T) {
	t.Parallel()
	hello := "hello \"quoted\"\n"
	rows := []parquetRow{
		{
			Image: "gs://b/img/000001.jpg", Text: &hello, N: 1 << 62, Score: 0.1, Ratio: 0.25,
			Price: -1205, Created: 1704164645006, Day: 19724,
			Tags: []string{"a", "b"}, Labels: map[string]int32{"cat": 3}, Box: parquetBox{1, 2},
			Boxes: []parquetBox{{3, 4}, {5, 6}}, Meta: `{"k": [1, 2.50]}`, Raw: []byte{0xff, 0x00}, Ok: true, U: math.MaxUint32,
		},
		{Image: "gs://b/img/000002.jpg", Score: math.NaN(), Price: 5, Meta: "not json", Raw: []byte("text")},
		{Image: "gs://b/img/000003.jpg", Score: 1e21, Tags: []string{}},
		{Image: "gs://b/img/000004.jpg"},
		{Image: "gs://b/img/000005.jpg"},
	}
	// Two rows per row group: records must still count rows across groups.
	data := writeParquet(t, rows, parquet.MaxRowsPerRowGroup(2))

	got, err := readParquetAll(bytes.NewReader(data), int64(len(data)), Options{})
	if err != nil {
		t.Fatalf("ReadParquet: %v", err)
	}
	const empty = `"text":null,"n":0,"score":0,"ratio":0,"price":0.00,"created":"1970-01-01T00:00:00Z","day":"1970-01-01",` +
		`"tags":[],"labels":{},"box":{"x":0,"y":0},"boxes":[],"meta":"","raw":"","ok":false,"u":0`
	want := []result{
		ok(0, `{"data":{"image":"gs://b/img/000001.jpg","text":"hello \"quoted\"\n","n":4611686018427387904,"score":0.1,"ratio":0.25,`+
			`"price":-12.05,"created":"2024-01-02T03:04:05.006Z","day":"2024-01-02","tags":["a","b"],"labels":{"cat":3},`+
			`"box":{"x":1,"y":2},"boxes":[{"x":3,"y":4},{"x":5,"y":6}],"meta":{"k":[1,2.50]},"raw":"/wA=","ok":true,"u":4294967295}}`),
		ok(1, `{"data":{"image":"gs://b/img/000002.jpg","text":null,"n":0,"score":null,"ratio":0,"price":0.05,"created":"1970-01-01T00:00:00Z",`+
			`"day":"1970-01-01","tags":[],"labels":{},"box":{"x":0,"y":0},"boxes":[],"meta":"not json","raw":"text","ok":false,"u":0}}`),
		ok(2, `{"data":{"image":"gs://b/img/000003.jpg","text":null,"n":0,"score":1e+21,"ratio":0,"price":0.00,"created":"1970-01-01T00:00:00Z",`+
			`"day":"1970-01-01","tags":[],"labels":{},"box":{"x":0,"y":0},"boxes":[],"meta":"","raw":"","ok":false,"u":0}}`),
		ok(3, `{"data":{"image":"gs://b/img/000004.jpg",`+empty+`}}`),
		ok(4, `{"data":{"image":"gs://b/img/000005.jpg",`+empty+`}}`),
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("records (-want +got):\n%s", diff)
	}
}

func TestReadParquetStopsAndLimits(t *testing.T) {
	t.Parallel()
	rows := make([]parquetRow, 10)
	for i := range rows {
		rows[i].Image = "gs://b/x.jpg"
	}
	rows[3].Meta = `{"long": "` + string(bytes.Repeat([]byte("x"), 1000)) + `"}`
	data := writeParquet(t, rows, parquet.MaxRowsPerRowGroup(4))

	got, err := readParquetAll(bytes.NewReader(data), int64(len(data)), Options{MaxRecordBytes: 500})
	if err != nil {
		t.Fatalf("ReadParquet: %v", err)
	}
	if len(got) != 10 || got[3].Err != "too large" || got[2].Err != "" || got[4].Err != "" {
		t.Errorf("records = %+v, want 10 with only row 3 too large", got)
	}

	n := 0
	err = ReadParquet(bytes.NewReader(data), int64(len(data)), Options{}, func(Record) bool {
		n++
		return n < 6
	})
	if err != nil || n != 6 {
		t.Errorf("ReadParquet stopping at the 6th record: err = %v, yield called %d times, want nil, 6", err, n)
	}
}

// failingReaderAt fails every read past off.
type failingReaderAt struct {
	r   io.ReaderAt
	off int64
	err error
}

func (f failingReaderAt) ReadAt(p []byte, off int64) (int, error) {
	if off+int64(len(p)) > f.off {
		return 0, f.err
	}
	return f.r.ReadAt(p, off)
}

func TestReadParquetErrors(t *testing.T) {
	t.Parallel()
	data := writeParquet(t, []parquetRow{{Image: "a"}, {Image: "b"}})
	corrupt := bytes.Clone(data)
	for i := 4; i < len(corrupt)/2; i++ {
		corrupt[i] ^= 0x5a
	}
	boom := errors.New("boom")
	tests := []struct {
		name string
		r    io.ReaderAt
		size int64
		want error
	}{
		{"not parquet", bytes.NewReader([]byte("{\"a\": 1}\n")), 9, ErrMalformed},
		{"empty", bytes.NewReader(nil), 0, ErrMalformed},
		{"truncated", bytes.NewReader(data[:len(data)/2]), int64(len(data) / 2), ErrMalformed},
		{"corrupt pages", bytes.NewReader(corrupt), int64(len(corrupt)), ErrMalformed},
		{"read error", failingReaderAt{bytes.NewReader(data), 0, boom}, int64(len(data)), boom},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			_, err := readParquetAll(tt.r, tt.size, Options{})
			if !errors.Is(err, tt.want) {
				t.Errorf("ReadParquet = %v, want %v", err, tt.want)
			}
			if tt.want == boom && errors.Is(err, ErrMalformed) {
				t.Errorf("ReadParquet = %v: an I/O error must not read as a malformed file", err)
			}
		})
	}
}

type nestedRow struct {
	Opt     *parquetBox      `parquet:"opt,optional"`
	Reps    []int32          `parquet:"reps"`
	OptList []*string        `parquet:"optlist,list" parquet-element:",optional"`
	IntMap  map[int32]string `parquet:"intmap"`
	Deep    []nestedInner    `parquet:"deep,list"`
	ID      [16]byte         `parquet:"id,uuid"`
}

type nestedInner struct {
	Name string   `parquet:"name"`
	Vals []string `parquet:"vals,list"`
}

func TestReadParquetNested(t *testing.T) {
	t.Parallel()
	a := "a"
	rows := []nestedRow{
		{
			Opt: &parquetBox{1, 2}, Reps: []int32{7, 8}, OptList: []*string{&a, nil}, IntMap: map[int32]string{5: "five"},
			Deep: []nestedInner{{Name: "p", Vals: []string{"x", "y"}}, {Name: "q"}},
			ID:   [16]byte{0x12, 0x34, 0x56, 0x78, 0x9a, 0xbc, 0xde, 0xf0, 0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef},
		},
		{},
	}
	var buf bytes.Buffer
	w := parquet.NewGenericWriter[nestedRow](&buf)
	if _, err := w.Write(rows); err != nil {
		t.Fatalf("write parquet: %v", err)
	}
	if err := w.Close(); err != nil {
		t.Fatalf("close parquet writer: %v", err)
	}
	got, err := readParquetAll(bytes.NewReader(buf.Bytes()), int64(buf.Len()), Options{})
	if err != nil {
		t.Fatalf("ReadParquet: %v", err)
	}
	want := []result{
		ok(0, `{"data":{"opt":{"x":1,"y":2},"reps":[7,8],"optlist":["a",null],"intmap":{"5":"five"},`+
			`"deep":[{"name":"p","vals":["x","y"]},{"name":"q","vals":[]}],"id":"12345678-9abc-def0-0123-456789abcdef"}}`),
		ok(1, `{"data":{"opt":null,"reps":[],"optlist":[],"intmap":{},"deep":[],"id":"00000000-0000-0000-0000-000000000000"}}`),
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("records (-want +got):\n%s\nschema:\n%s", diff, parquet.SchemaOf(nestedRow{}))
	}
}

// TestReadParquetLongStatistics covers page headers longer than the first
// read checkPages makes: writers copy long values into page statistics.
func TestReadParquetLongStatistics(t *testing.T) {
	t.Parallel()
	long := strings.Repeat("y", 20000)
	data := writeParquet(t, []parquetRow{{Image: long}, {Image: "a"}})
	got, err := readParquetAll(bytes.NewReader(data), int64(len(data)), Options{})
	if err != nil {
		t.Fatalf("ReadParquet: %v", err)
	}
	if len(got) != 2 || got[0].Err != "" || !strings.Contains(got[0].Task, long) || got[1].Err != "" {
		t.Errorf("records = %d (first error %q), want 2 good ones", len(got), got[0].Err)
	}
}

// TestReadParquetOversizePageClaim checks that a page header claiming more
// bytes than its column chunk holds fails the file instead of making
// parquet-go allocate the claim. It does not run in parallel, since it reads
// the process-wide allocation count.
func TestReadParquetOversizePageClaim(t *testing.T) {
	data := writeParquet(t, []parquetRow{{Image: "a"}})
	f, err := parquet.OpenFile(bytes.NewReader(data), int64(len(data)))
	if err != nil {
		t.Fatal(err)
	}
	off := f.Metadata().RowGroups[0].Columns[0].MetaData.DataPageOffset
	// Rewrite the first page header to claim 1 GiB.
	var h format.PageHeader
	var proto thrift.CompactProtocol
	pr := proto.NewReaderFromBytes(data[off:])
	if err := thrift.NewDecoder(pr).Decode(&h); err != nil {
		t.Fatal(err)
	}
	headerLen := pr.(interface{ BytesRead() int }).BytesRead()
	h.CompressedPageSize = 1 << 30
	header, err := thrift.Marshal(&proto, &h)
	if err != nil {
		t.Fatal(err)
	}
	corrupt := append(append(bytes.Clone(data[:off]), header...), data[off+int64(headerLen):]...)

	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	_, err = readParquetAll(bytes.NewReader(corrupt), int64(len(corrupt)), Options{})
	runtime.ReadMemStats(&after)
	if !errors.Is(err, ErrMalformed) {
		t.Errorf("ReadParquet = %v, want ErrMalformed", err)
	}
	if alloc := after.TotalAlloc - before.TotalAlloc; alloc > 64<<20 {
		t.Errorf("ReadParquet allocated %d bytes for a corrupt page claim", alloc)
	}
}
