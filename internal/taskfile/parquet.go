package taskfile

import (
	"bytes"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"math/big"
	"strconv"
	"time"
	"unicode/utf8"

	"github.com/parquet-go/parquet-go"
	"github.com/parquet-go/parquet-go/encoding/thrift"
	"github.com/parquet-go/parquet-go/format"

	"github.com/labelsync/labelsync/internal/jsonstr"
)

// parquetBatch is how many rows are decoded between calls to yield. Rows
// borrow page memory, so a batch is converted to tasks before the next read.
const parquetBatch = 128

// ReadParquet streams the rows of the Parquet file r (of size bytes) to
// yield, one task {"data": {column: value, …}} per row, row group by row
// group, stopping early (and returning nil) if yield returns false.
//
// Values become JSON as a reader would expect them: strings and enums as
// strings, integers and decimals as exact numbers, NaN and infinities as
// null, dates, times and timestamps as ISO 8601 strings, JSON columns
// embedded, other binary as a string when it is UTF-8 and base64 when not,
// lists as arrays, maps and groups as objects.
//
// A file that is not Parquet or is corrupt yields an error wrapping
// ErrMalformed; errors from r are returned wrapped as they are.
func ReadParquet(r io.ReaderAt, size int64, opts Options, yield func(Record) bool) error {
	// Telling a corrupt file (permanent) from a failed read (maybe
	// transient) from parquet-go's errors alone is guesswork; watching the
	// reader is not.
	rr := &watchedReaderAt{r: r}
	fail := func(what string, err error) error {
		if rr.err != nil {
			return fmt.Errorf("taskfile: read parquet: %w", rr.err)
		}
		return fmt.Errorf("%w: parquet %s: %w", ErrMalformed, what, err)
	}

	// parquet-go allocates the footer length a file claims before reading
	// it: check that the claim fits in the file, or a few corrupt bytes cost
	// up to 4 GiB.
	var trailer [8]byte
	if size < 12 {
		return fmt.Errorf("%w: parquet file of %d bytes is too short", ErrMalformed, size)
	}
	if _, err := rr.ReadAt(trailer[:], size-8); err != nil {
		return fail("footer", err)
	}
	if footer := int64(binary.LittleEndian.Uint32(trailer[:4])); footer > size-12 {
		return fmt.Errorf("%w: parquet footer of %d bytes in a %d-byte file", ErrMalformed, footer, size)
	}

	var f *parquet.File
	err := guard(func() (err error) {
		f, err = parquet.OpenFile(rr, size, parquet.SkipPageIndex(true), parquet.SkipBloomFilters(true))
		return err
	})
	if err != nil {
		return fail("open", err)
	}
	conv, err := newRowConverter(f.Schema())
	if err != nil {
		return fail("schema", err)
	}
	limit := opts.maxRecordBytes()

	rowIndex := 0
	rows := make([]parquet.Row, parquetBatch)
	recs := make([]Record, 0, parquetBatch)
	meta := f.Metadata()
	for i, rg := range f.RowGroups() {
		if i < len(meta.RowGroups) {
			if err := checkPages(rr, size, &meta.RowGroups[i]); err != nil {
				return fail("pages", err)
			}
		}
		var it parquet.Rows
		err := guard(func() error { it = rg.Rows(); return nil })
		if err != nil {
			return fail("row group", err)
		}
		for done, empty := false, 0; !done; {
			recs = recs[:0]
			err := guard(func() error {
				n, err := it.ReadRows(rows)
				// Like bufio, give up on a reader that keeps returning
				// nothing: a corrupt file must not spin forever.
				if n > 0 || err != nil {
					empty = 0
				} else if empty++; empty > 100 {
					return io.ErrNoProgress
				}
				for _, row := range rows[:n] {
					rec := Record{Row: rowIndex}
					rowIndex++
					rec.Task, rec.Err = conv.task(row)
					if rec.Err == nil && len(rec.Task) > limit {
						rec.Task, rec.Err = nil, tooLarge(limit)
					}
					recs = append(recs, rec)
				}
				return err
			})
			switch {
			case err == io.EOF:
				done = true
			case err != nil:
				_ = it.Close()
				return fail("rows", err)
			}
			// yield runs outside guard: a panic in the caller's code is
			// the caller's, not a corrupt file.
			for _, rec := range recs {
				if !yield(rec) {
					_ = it.Close()
					return nil
				}
			}
		}
		if err := it.Close(); err != nil {
			return fail("row group", err)
		}
	}
	return nil
}

// maxPageBytes bounds a page's uncompressed size. Writers default to pages
// of about 1 MiB (parquet-mr, pyarrow); a claim beyond this is corruption.
const maxPageBytes = 256 << 20

// maxHeaderBytes bounds a page header, statistics included.
const maxHeaderBytes = 16 << 20

// checkPages walks the page headers of the row group's column chunks and
// rejects a page that does not fit in its chunk. parquet-go allocates the
// size a page header claims before reading the page, so without this check
// a few corrupt bytes cost up to 2 GiB per page, enough to kill the process
// rather than fail the file.
func checkPages(r io.ReaderAt, size int64, rg *format.RowGroup) error {
	var proto thrift.CompactProtocol
	buf := make([]byte, 4<<10)
	for _, cc := range rg.Columns {
		md := &cc.MetaData
		start := md.DataPageOffset
		if md.DictionaryPageOffset > 0 && md.DictionaryPageOffset < start {
			start = md.DictionaryPageOffset
		}
		end := start + md.TotalCompressedSize
		if start < 4 || md.TotalCompressedSize < 0 || end > size || end < start {
			return fmt.Errorf("column chunk [%d, %d) outside the %d-byte file", start, end, size)
		}
		for off := start; off < end; {
			var h format.PageHeader
			var headerLen int
			// Headers are small, unless they carry long statistics: read
			// more only when the header does not fit.
			for n := len(buf); ; n *= 2 {
				if n > len(buf) {
					buf = make([]byte, n)
				}
				b := buf[:min(int64(n), end-off)]
				if _, err := r.ReadAt(b, off); err != nil && err != io.EOF {
					return err
				}
				h = format.PageHeader{}
				pr := proto.NewReaderFromBytes(b)
				err := thrift.NewDecoder(pr).Decode(&h)
				if err == nil {
					headerLen = pr.(interface{ BytesRead() int }).BytesRead()
					break
				}
				truncated := errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF)
				if !truncated || int64(len(b)) == end-off || n >= maxHeaderBytes {
					return fmt.Errorf("page header at offset %d: %w", off, err)
				}
			}
			rest := end - off - int64(headerLen)
			if h.CompressedPageSize < 0 || int64(h.CompressedPageSize) > rest ||
				h.UncompressedPageSize < 0 || h.UncompressedPageSize > maxPageBytes {
				return fmt.Errorf("page at offset %d claims %d bytes (%d uncompressed), %d left in its column chunk",
					off, h.CompressedPageSize, h.UncompressedPageSize, rest)
			}
			off += int64(headerLen) + int64(h.CompressedPageSize)
		}
	}
	return nil
}

// guard turns a panic into an error. parquet-go panics on some corrupt
// inputs (impossible schemas, bad lengths), and one bad object in a bucket
// must not bring the worker down.
func guard(fn func() error) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("panic: %v", p)
		}
	}()
	return fn()
}

type watchedReaderAt struct {
	r   io.ReaderAt
	err error // first error other than io.EOF
}

func (w *watchedReaderAt) ReadAt(p []byte, off int64) (int, error) {
	n, err := w.r.ReadAt(p, off)
	if err != nil && err != io.EOF && w.err == nil {
		w.err = err
	}
	return n, err
}

// rowConverter writes parquet rows as task JSON. The schema is compiled
// once into a tree of writers, so a row costs no reflection and no map: the
// JSON is appended straight from the column values.
type rowConverter struct {
	write   writeFunc
	columns int
	cols    [][]parquet.Value
	buf     []byte
}

func newRowConverter(schema *parquet.Schema) (c *rowConverter, err error) {
	c = &rowConverter{}
	err = guard(func() error {
		c.columns, c.write = compileGroup(0, schema)
		return nil
	})
	if err != nil {
		return nil, err
	}
	c.cols = make([][]parquet.Value, c.columns)
	return c, nil
}

func (c *rowConverter) task(row parquet.Row) (json.RawMessage, error) {
	clear(c.cols)
	// A row holds each leaf column's values contiguously, in column order.
	for i := 0; i < len(row); {
		col := row[i].Column()
		j := i + 1
		for j < len(row) && row[j].Column() == col {
			j++
		}
		if col < 0 || col >= c.columns {
			return nil, badRecord(nil, "parquet value for column %d, schema has %d", col, c.columns)
		}
		c.cols[col] = row[i:j:j]
		i = j
	}
	buf := append(c.buf[:0], dataPrefix...)
	buf, err := c.write(buf, levels{}, c.cols)
	c.buf = buf
	if err != nil {
		return nil, badRecord(err, "%v", err)
	}
	return append(bytes.Clone(buf), '}'), nil
}

// levels are the repetition depth and definition level reached at a node,
// as in the Dremel record assembly that parquet-go's own reconstruct does.
type levels struct {
	rep int
	def int
}

// writeFunc appends the JSON for one instance of a node, given the values of
// the node's leaf columns that belong to that instance.
type writeFunc func(dst []byte, lv levels, cols [][]parquet.Value) ([]byte, error)

var errMissingValues = errors.New("row has no values for a column")

// compile returns a writer for node and the column index after its leaves.
func compile(col int, node parquet.Node, name string) (int, writeFunc) {
	switch {
	case node.Optional():
		return compileOptional(col, node, name)
	case node.Repeated():
		next, elem := compileRequired(col, node, name)
		return next, repeated(elem, '[', ']')
	}
	return compileRequired(col, node, name)
}

// compileRequired compiles node as if it were required; repetition is
// handled by the caller.
func compileRequired(col int, node parquet.Node, name string) (int, writeFunc) {
	if node.Leaf() {
		return col + 1, leafWriter(node.Type())
	}
	if lt := node.Type().LogicalType(); lt != nil {
		switch lt.Value.(type) {
		case *format.ListType:
			if next, w, ok := compileList(col, node, name); ok {
				return next, w
			}
		case *format.MapType:
			if next, w, ok := compileMap(col, node); ok {
				return next, w
			}
		}
	}
	return compileGroup(col, node)
}

func compileOptional(col int, node parquet.Node, name string) (int, writeFunc) {
	next, inner := compileRequired(col, node, name)
	return next, func(dst []byte, lv levels, cols [][]parquet.Value) ([]byte, error) {
		lv.def++
		if len(cols) > 0 {
			if len(cols[0]) == 0 {
				return dst, errMissingValues
			}
			if cols[0][0].DefinitionLevel() < lv.def {
				return append(dst, "null"...), nil
			}
		}
		return inner(dst, lv, cols)
	}
}

// repeated writes the instances of a repeated node between open and close,
// splitting the columns' values where the repetition level returns to this
// node's depth.
func repeated(elem writeFunc, open, close byte) writeFunc {
	return func(dst []byte, lv levels, cols [][]parquet.Value) ([]byte, error) {
		lv.rep++
		lv.def++
		dst = append(dst, open)
		if len(cols) == 0 || len(cols[0]) == 0 || cols[0][0].DefinitionLevel() < lv.def {
			return append(dst, close), nil
		}
		sub := make([][]parquet.Value, len(cols))
		rest := make([][]parquet.Value, len(cols))
		copy(rest, cols)
		for n := 0; len(rest[0]) > 0; n++ {
			for j, c := range rest {
				if len(c) == 0 {
					return dst, errMissingValues
				}
				k := 1
				for k < len(c) && c[k].RepetitionLevel() > lv.rep {
					k++
				}
				sub[j], rest[j] = c[:k], c[k:]
			}
			if n > 0 {
				dst = append(dst, ',')
			}
			var err error
			if dst, err = elem(dst, lv, sub); err != nil {
				return dst, err
			}
		}
		return append(dst, close), nil
	}
}

func compileGroup(col int, node parquet.Node) (int, writeFunc) {
	fields := node.Fields()
	writers := make([]writeFunc, len(fields))
	keys := make([][]byte, len(fields))
	bounds := make([]int, len(fields)+1)
	first := col
	for i, f := range fields {
		bounds[i] = col - first
		keys[i] = append(jsonstr.Append(nil, []byte(f.Name())), ':')
		col, writers[i] = compile(col, f, f.Name())
	}
	bounds[len(fields)] = col - first
	return col, func(dst []byte, lv levels, cols [][]parquet.Value) ([]byte, error) {
		dst = append(dst, '{')
		for i, w := range writers {
			if i > 0 {
				dst = append(dst, ',')
			}
			dst = append(dst, keys[i]...)
			var err error
			if dst, err = w(dst, lv, cols[bounds[i]:bounds[i+1]]); err != nil {
				return dst, fmt.Errorf("%s: %w", fields[i].Name(), err)
			}
		}
		return append(dst, '}'), nil
	}
}

// compileList follows the LIST backward-compatibility rules of the Parquet
// format: the single repeated child is either a wrapper around the element
// (three levels) or, for old writers, the element itself (two levels).
func compileList(col int, node parquet.Node, name string) (int, writeFunc, bool) {
	fields := node.Fields()
	if len(fields) != 1 || !fields[0].Repeated() {
		return 0, nil, false
	}
	rep := fields[0]
	if !rep.Leaf() && len(rep.Fields()) == 1 && rep.Name() != "array" && rep.Name() != name+"_tuple" {
		next, elem := compile(col, rep.Fields()[0], rep.Fields()[0].Name())
		return next, repeated(elem, '[', ']'), true
	}
	next, elem := compileRequired(col, rep, rep.Name())
	return next, repeated(elem, '[', ']'), true
}

// compileMap writes a MAP as a JSON object. Keys that are not strings are
// written as the string of their JSON text, as JSON object keys must be.
func compileMap(col int, node parquet.Node) (int, writeFunc, bool) {
	fields := node.Fields()
	if len(fields) != 1 || !fields[0].Repeated() || fields[0].Leaf() {
		return 0, nil, false
	}
	kv := fields[0].Fields()
	if len(kv) == 0 || len(kv) > 2 {
		return 0, nil, false
	}
	keyEnd, keyW := compile(col, kv[0], kv[0].Name())
	next, valW := keyEnd, writeFunc(nil)
	if len(kv) == 2 {
		next, valW = compile(keyEnd, kv[1], kv[1].Name())
	}
	nkey := keyEnd - col
	elem := func(dst []byte, lv levels, cols [][]parquet.Value) ([]byte, error) {
		start := len(dst)
		dst, err := keyW(dst, lv, cols[:nkey])
		if err != nil {
			return dst, err
		}
		if dst[start] != '"' {
			text := string(dst[start:])
			dst = jsonstr.Append(dst[:start], []byte(text))
		}
		dst = append(dst, ':')
		if valW == nil {
			return append(dst, "null"...), nil
		}
		return valW(dst, lv, cols[nkey:])
	}
	return next, repeated(elem, '{', '}'), true
}

// leafWriter picks, once per column, how its values become JSON.
func leafWriter(t parquet.Type) writeFunc {
	formatValue := valueFormatter(t)
	return func(dst []byte, _ levels, cols [][]parquet.Value) ([]byte, error) {
		if len(cols) == 0 || len(cols[0]) == 0 {
			return dst, errMissingValues
		}
		v := cols[0][0]
		if v.IsNull() {
			return append(dst, "null"...), nil
		}
		return formatValue(dst, v), nil
	}
}

type valueFunc func(dst []byte, v parquet.Value) []byte

func valueFormatter(t parquet.Type) valueFunc {
	kind := t.Kind()
	var logical format.LogicalTypeValue
	if lt := t.LogicalType(); lt != nil {
		logical = lt.Value
	}
	switch lt := logical.(type) {
	case *format.StringType, *format.EnumType:
		return func(dst []byte, v parquet.Value) []byte { return jsonstr.Append(dst, v.ByteArray()) }
	case *format.JsonType:
		return appendJSONValue
	case *format.UUIDType:
		return appendUUID
	case *format.DecimalType:
		scale := int(lt.Scale)
		return func(dst []byte, v parquet.Value) []byte { return appendDecimal(dst, v, scale) }
	case *format.DateType:
		return func(dst []byte, v parquet.Value) []byte {
			t := time.Unix(int64(v.Int32())*86400, 0).UTC()
			return appendTime(dst, t, "2006-01-02")
		}
	case *format.TimeType:
		perSecond := unitsPerSecond(&lt.Unit)
		return func(dst []byte, v parquet.Value) []byte {
			sec, nsec := splitUnits(intOf(v), perSecond)
			return appendTime(dst, time.Unix(sec, nsec).UTC(), "15:04:05.999999999")
		}
	case *format.TimestampType:
		perSecond := unitsPerSecond(&lt.Unit)
		// A timestamp not adjusted to UTC is a wall-clock reading: writing
		// it with "Z" would claim a zone it does not have.
		layout := "2006-01-02T15:04:05.999999999"
		if lt.IsAdjustedToUTC {
			layout = time.RFC3339Nano
		}
		return func(dst []byte, v parquet.Value) []byte {
			sec, nsec := splitUnits(v.Int64(), perSecond)
			return appendTime(dst, time.Unix(sec, nsec).UTC(), layout)
		}
	case *format.IntType:
		if !lt.IsSigned {
			if kind == parquet.Int32 {
				return func(dst []byte, v parquet.Value) []byte { return strconv.AppendUint(dst, uint64(v.Uint32()), 10) }
			}
			return func(dst []byte, v parquet.Value) []byte { return strconv.AppendUint(dst, v.Uint64(), 10) }
		}
	case *format.NullType:
		return func(dst []byte, _ parquet.Value) []byte { return append(dst, "null"...) }
	case *format.Float16Type:
		return func(dst []byte, v parquet.Value) []byte {
			b := v.ByteArray()
			if len(b) != 2 {
				return appendBase64(dst, b)
			}
			return appendFloat(dst, float64(float16(binary.LittleEndian.Uint16(b))), 32)
		}
	}
	switch kind {
	case parquet.Boolean:
		return func(dst []byte, v parquet.Value) []byte { return strconv.AppendBool(dst, v.Boolean()) }
	case parquet.Int32:
		return func(dst []byte, v parquet.Value) []byte { return strconv.AppendInt(dst, int64(v.Int32()), 10) }
	case parquet.Int64:
		return func(dst []byte, v parquet.Value) []byte { return strconv.AppendInt(dst, v.Int64(), 10) }
	case parquet.Int96:
		return appendInt96
	case parquet.Float:
		return func(dst []byte, v parquet.Value) []byte { return appendFloat(dst, float64(v.Float()), 32) }
	case parquet.Double:
		return func(dst []byte, v parquet.Value) []byte { return appendFloat(dst, v.Double(), 64) }
	case parquet.ByteArray:
		// Many writers leave text unannotated; base64 is for what cannot be
		// a JSON string.
		return func(dst []byte, v parquet.Value) []byte {
			if b := v.ByteArray(); utf8.Valid(b) {
				return jsonstr.Append(dst, b)
			}
			return appendBase64(dst, v.ByteArray())
		}
	}
	// FIXED_LEN_BYTE_ARRAY without a known logical type, BSON, geometry…
	return func(dst []byte, v parquet.Value) []byte { return appendBase64(dst, v.ByteArray()) }
}

func intOf(v parquet.Value) int64 {
	if v.Kind() == parquet.Int32 {
		return int64(v.Int32())
	}
	return v.Int64()
}

func unitsPerSecond(u *format.TimeUnit) int64 {
	switch u.Value.(type) {
	case *format.MilliSeconds:
		return 1e3
	case *format.MicroSeconds:
		return 1e6
	}
	return 1e9
}

// splitUnits converts a count of 1/perSecond units to seconds and
// nanoseconds without the overflow of multiplying to nanoseconds first.
func splitUnits(n, perSecond int64) (sec, nsec int64) {
	sec, rem := n/perSecond, n%perSecond
	if rem < 0 {
		sec--
		rem += perSecond
	}
	return sec, rem * (1e9 / perSecond)
}

func appendTime(dst []byte, t time.Time, layout string) []byte {
	dst = append(dst, '"')
	dst = t.AppendFormat(dst, layout)
	return append(dst, '"')
}

// appendInt96 writes a legacy INT96 timestamp (Impala, Spark): nanoseconds
// of the day, then the Julian day.
func appendInt96(dst []byte, v parquet.Value) []byte {
	i := v.Int96()
	const unixEpochJulianDay = 2440588
	nanos := int64(uint64(i[1])<<32 | uint64(i[0]))
	days := int64(i[2]) - unixEpochJulianDay
	sec, nsec := splitUnits(nanos, 1e9)
	return appendTime(dst, time.Unix(days*86400+sec, nsec).UTC(), time.RFC3339Nano)
}

// appendDecimal writes the exact decimal: going through float64 would
// change values that callers compare byte for byte.
func appendDecimal(dst []byte, v parquet.Value, scale int) []byte {
	var digits []byte
	switch v.Kind() {
	case parquet.Int32, parquet.Int64:
		digits = strconv.AppendInt(nil, intOf(v), 10)
	default:
		b := v.ByteArray()
		n := new(big.Int).SetBytes(b)
		if len(b) > 0 && b[0]&0x80 != 0 { // two's complement
			n.Sub(n, new(big.Int).Lsh(big.NewInt(1), uint(len(b))*8))
		}
		digits = n.Append(nil, 10)
	}
	if digits[0] == '-' {
		dst = append(dst, '-')
		digits = digits[1:]
	}
	if scale <= 0 {
		dst = append(dst, digits...)
		for range -scale {
			dst = append(dst, '0')
		}
		return dst
	}
	if len(digits) <= scale {
		dst = append(dst, "0."...)
		for range scale - len(digits) {
			dst = append(dst, '0')
		}
		return append(dst, digits...)
	}
	dst = append(dst, digits[:len(digits)-scale]...)
	dst = append(dst, '.')
	return append(dst, digits[len(digits)-scale:]...)
}

func appendJSONValue(dst []byte, v parquet.Value) []byte {
	b := v.ByteArray()
	if utf8.Valid(b) && json.Valid(b) {
		buf := bytes.NewBuffer(dst)
		if json.Compact(buf, b) == nil {
			return buf.Bytes()
		}
	}
	return jsonstr.Append(dst, b)
}

func appendUUID(dst []byte, v parquet.Value) []byte {
	b := v.ByteArray()
	if len(b) != 16 {
		return appendBase64(dst, b)
	}
	dst = append(dst, '"')
	for i, part := range [][]byte{b[0:4], b[4:6], b[6:8], b[8:10], b[10:16]} {
		if i > 0 {
			dst = append(dst, '-')
		}
		dst = hex.AppendEncode(dst, part)
	}
	return append(dst, '"')
}

func appendBase64(dst []byte, b []byte) []byte {
	dst = append(dst, '"')
	dst = base64.StdEncoding.AppendEncode(dst, b)
	return append(dst, '"')
}

// appendFloat formats like encoding/json, except that NaN and infinities,
// which JSON cannot express, become null.
func appendFloat(dst []byte, f float64, bits int) []byte {
	if math.IsNaN(f) || math.IsInf(f, 0) {
		return append(dst, "null"...)
	}
	abs := math.Abs(f)
	verb := byte('f')
	if abs != 0 {
		if bits == 64 && (abs < 1e-6 || abs >= 1e21) || bits == 32 && (float32(abs) < 1e-6 || float32(abs) >= 1e21) {
			verb = 'e'
		}
	}
	dst = strconv.AppendFloat(dst, f, verb, -1, bits)
	if verb == 'e' {
		// clean up e-09 to e-9
		n := len(dst)
		if n >= 4 && dst[n-4] == 'e' && dst[n-3] == '-' && dst[n-2] == '0' {
			dst[n-2] = dst[n-1]
			dst = dst[:n-1]
		}
	}
	return dst
}

// float16 widens an IEEE 754 half-precision value.
func float16(h uint16) float32 {
	sign := uint32(h>>15) << 31
	exp := uint32(h>>10) & 0x1f
	frac := uint32(h) & 0x3ff
	switch {
	case exp == 0x1f: // Inf, NaN
		return math.Float32frombits(sign | 0xff<<23 | frac<<13)
	case exp != 0:
		return math.Float32frombits(sign | (exp+127-15)<<23 | frac<<13)
	case frac == 0:
		return math.Float32frombits(sign)
	}
	// Subnormal: normalise.
	e := uint32(127 - 15 + 1)
	for frac&0x400 == 0 {
		frac <<= 1
		e--
	}
	return math.Float32frombits(sign | e<<23 | (frac&0x3ff)<<13)
}
