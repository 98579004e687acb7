package taskfile

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
)

// readBufferSize is large enough that typical JSONL lines are handed out
// straight from the bufio buffer, without being copied.
const readBufferSize = 64 << 10

var utf8BOM = []byte{0xEF, 0xBB, 0xBF}

// errStop unwinds the decoder when yield asks to stop; Read returns nil.
var errStop = errors.New("taskfile: stopped by yield")

// Read streams the records of r to yield, in order, stopping early (and
// returning nil) if yield returns false.
//
// JSON, JSONL and Sniff are read alike, as Label Studio does: after an
// optional UTF-8 BOM and whitespace, '[' starts a JSON array whose elements
// are the items; '{' starts either one JSON object, when the whole content
// parses as exactly one, or else JSONL, one item per non-empty line. Empty
// content has no records; any other first byte is an error wrapping
// ErrUnsupported. Parquet content must go through ReadParquet.
//
// Per-item problems (bad JSON, not an object, "data" not an object, longer
// than Options.MaxRecordBytes) go into Record.Err and reading continues.
// Structure broken beyond one item (an array that never closes) stops with
// an error wrapping ErrMalformed; I/O errors from r are returned wrapped.
func Read(r io.Reader, f Format, opts Options, yield func(Record) bool) error {
	switch f {
	case JSON, JSONL, Sniff:
	default:
		return fmt.Errorf("%w: Read cannot decode %v content, use ReadParquet", ErrUnsupported, f)
	}
	d := &decoder{
		br:    bufio.NewReaderSize(r, readBufferSize),
		max:   opts.maxRecordBytes(),
		yield: yield,
	}
	if err := d.run(); err != nil && err != errStop {
		return err
	}
	return nil
}

type decoder struct {
	br    *bufio.Reader
	max   int
	yield func(Record) bool
	row   int
	// buf holds the item being read when it is not available whole in br's
	// buffer. It never holds more than max bytes.
	buf []byte
	tb  taskBuilder
}

func (d *decoder) run() error {
	bom, err := d.br.Peek(len(utf8BOM))
	if err != nil && err != io.EOF {
		return readError(err)
	}
	if bytes.Equal(bom, utf8BOM) {
		_, _ = d.br.Discard(len(utf8BOM))
	}
	c, _, err := d.skipSpace()
	switch {
	case err == io.EOF:
		return nil
	case err != nil:
		return err
	case c == '[':
		return d.array()
	case c == '{':
		return d.objectOrLines()
	}
	return fmt.Errorf("%w: content starts with %q, not JSON", ErrUnsupported, c)
}

func readError(err error) error { return fmt.Errorf("taskfile: read: %w", err) }

// emit hands one item to yield. over marks an item that was longer than
// max and so was not kept.
func (d *decoder) emit(item []byte, over bool) error {
	rec := Record{Row: d.row}
	if over {
		rec.Err = tooLarge(d.max)
	} else {
		rec.Task, rec.Err = d.tb.build(item)
	}
	if rec.Err != nil && !over {
		// The bad item itself, for the dead letter. Copied: item may
		// point into the read buffer.
		rec.Raw = append([]byte(nil), item[:min(len(item), maxRawBytes)]...)
	}
	return d.send(rec)
}

func (d *decoder) send(rec Record) error {
	d.row++
	if !d.yield(rec) {
		return errStop
	}
	return nil
}

// fill returns the bytes buffered in br, reading more if there are none.
// At the end of input it returns io.EOF unwrapped.
func (d *decoder) fill() ([]byte, error) {
	if d.br.Buffered() == 0 {
		if _, err := d.br.Peek(1); err != nil {
			if err == io.EOF {
				return nil, io.EOF
			}
			return nil, readError(err)
		}
	}
	b, _ := d.br.Peek(d.br.Buffered())
	return b, nil
}

// skipSpace consumes JSON whitespace and returns the next byte, left
// unconsumed, and whether the whitespace held a newline.
func (d *decoder) skipSpace() (c byte, newline bool, err error) {
	for {
		b, err := d.fill()
		if err != nil {
			return 0, newline, err
		}
		for i, c := range b {
			if !isSpace(c) {
				_, _ = d.br.Discard(i)
				return c, newline, nil
			}
			newline = newline || c == '\n'
		}
		_, _ = d.br.Discard(len(b))
	}
}

// lines reads the rest of the input as JSONL.
func (d *decoder) lines() error {
	for {
		d.buf = d.buf[:0]
		line, over, text, err := d.readLine(false, false)
		if err != nil && err != io.EOF {
			return err
		}
		if text {
			if err := d.emit(line, over); err != nil {
				return err
			}
		}
		if err == io.EOF {
			return nil
		}
	}
}

// readLine reads up to the next '\n' (dropped), after what d.buf already
// holds of the line. Once the line passes max bytes (or if over is already
// set) the bytes are read and dropped rather than kept, so a huge line costs
// no memory; isOver reports that. isText reports whether the line has
// anything but whitespace (text: so far), as blank lines are not items. At
// the end of input it returns io.EOF along with the last line.
//
// The returned line may alias br's buffer: use it before reading on.
func (d *decoder) readLine(over, text bool) (line []byte, isOver, isText bool, err error) {
	text = text || hasNonSpace(d.buf)
	for {
		chunk, rerr := d.br.ReadSlice('\n')
		eol := rerr == nil
		if eol {
			chunk = chunk[:len(chunk)-1]
		}
		text = text || hasNonSpace(chunk)
		switch {
		case over:
		case len(d.buf)+len(chunk) > d.max:
			over = true
			d.buf = d.buf[:0]
		case eol && len(d.buf) == 0:
			return chunk, false, text, nil
		default:
			d.buf = append(d.buf, chunk...)
		}
		switch rerr {
		case nil:
			return d.buf, over, text, nil
		case bufio.ErrBufferFull:
		case io.EOF:
			return d.buf, over, text, io.EOF
		default:
			return nil, over, text, readError(rerr)
		}
	}
}

// array reads a JSON array whose '[' is next in br. Elements are delimited
// by depth and string state only, not parsed, so that a malformed element
// (`{bad}`) is one bad record and the elements after it are still read.
func (d *decoder) array() error {
	_, _ = d.br.Discard(1)
	for {
		c, _, err := d.skipSpace()
		if err != nil {
			return d.unclosed(err)
		}
		if c == ']' {
			// Either "[]" or a trailing comma, which is forgiven: there is
			// no item after it to report.
			_, _ = d.br.Discard(1)
			return d.trailing()
		}
		item, over, term, err := d.element()
		if err != nil {
			return d.unclosed(err)
		}
		if !over && len(trimSpace(item)) == 0 {
			err = d.send(Record{Row: d.row, Err: badRecord(nil, "missing array element")})
		} else {
			err = d.emit(item, over)
		}
		if err != nil {
			return err
		}
		_, _ = d.br.Discard(1)
		switch term {
		case ']':
			return d.trailing()
		case '}':
			return fmt.Errorf("%w: '}' closes the JSON array after %d items", ErrMalformed, d.row)
		}
	}
}

// element reads one array element up to, not including, the ',' or closing
// bracket that ends it, which it returns as term.
func (d *decoder) element() (item []byte, over bool, term byte, err error) {
	d.buf = d.buf[:0]
	depth, inString, escaped := 0, false, false
	for {
		b, err := d.fill()
		if err != nil {
			return nil, false, 0, err
		}
		end := -1
	scan:
		for i, c := range b {
			if inString {
				switch {
				case escaped:
					escaped = false
				case c == '\\':
					escaped = true
				case c == '"':
					inString = false
				}
				continue
			}
			switch c {
			case '"':
				inString = true
			case '{', '[':
				depth++
			case '}', ']':
				if depth == 0 {
					end = i
					break scan
				}
				depth--
			case ',':
				if depth == 0 {
					end = i
					break scan
				}
			}
		}
		n := len(b)
		if end >= 0 {
			n, term = end, b[end]
		}
		switch {
		case over:
		case len(d.buf)+n > d.max:
			over = true
			d.buf = d.buf[:0]
		default:
			d.buf = append(d.buf, b[:n]...)
		}
		_, _ = d.br.Discard(n)
		if end >= 0 {
			return d.buf, over, term, nil
		}
	}
}

func (d *decoder) unclosed(err error) error {
	if err == io.EOF {
		return fmt.Errorf("%w: JSON array not closed (input ends after %d items)", ErrMalformed, d.row)
	}
	return err
}

func (d *decoder) trailing() error {
	c, _, err := d.skipSpace()
	switch {
	case err == io.EOF:
		return nil
	case err != nil:
		return err
	}
	return fmt.Errorf("%w: unexpected %q after the JSON array", ErrMalformed, c)
}

// objectOrLines reads content starting with '{': one object if the whole
// content parses as exactly one, JSONL otherwise.
//
// Deciding needs the end of the first value, which for a pretty-printed
// object lies lines ahead, but JSONL must not be held in memory. The first
// value is scanned with a light grammar check (sniffer) that rejects a value
// following another without a separator: a JSONL file, even one whose first
// line is broken, fails that check within a line or two, so what has been
// consumed, and must be replayed as lines if it is JSONL, stays small. It is
// kept line by line (keptLines), each line dropped if it outgrows max, so
// that an oversize line is one bad record whichever way the file reads.
func (d *decoder) objectOrLines() error {
	var s sniffer
	status := sniffMore
	k := keptLines{max: d.max, lines: []keptLine{{}}}
	for status == sniffMore {
		b, err := d.fill()
		if err == io.EOF {
			break
		}
		if err != nil {
			return err
		}
		var n int
		n, status = s.scan(b)
		k.add(b[:n])
		_, _ = d.br.Discard(n)
	}

	// sep stands for the whitespace skipped between the first value and
	// whatever follows it, if JSONL has to pick up from there.
	sep := ""
	if status == sniffDone {
		_, newline, err := d.skipSpace()
		switch {
		case err == io.EOF:
			if k.full || k.anyOver() || len(k.data) > d.max {
				return d.emit(nil, true)
			}
			if json.Valid(k.data) {
				return d.emit(k.data, false)
			}
			// Not one object after all (`{"a": tru}` over several lines):
			// JSONL, as the spec says, with nothing after the value.
		case err != nil:
			return err
		case newline:
			sep = "\n"
		default:
			sep = " "
		}
	}

	if k.full {
		return fmt.Errorf("%w: more than %d bytes over several lines read as one JSON value, yet the content is not one", ErrMalformed, 2*d.max)
	}
	// Replay the lines consumed as JSONL; the last one may go on in br.
	last := len(k.lines) - 1
	for _, l := range k.lines[:last] {
		if l.text {
			if err := d.emit(k.data[l.start:l.end], l.over); err != nil {
				return err
			}
		}
	}
	l := k.lines[last]
	d.buf = append(d.buf[:0], k.data[l.start:]...)
	line, over, text := d.buf, l.over, l.text
	var err error
	if sep != "\n" {
		if sep == " " && !over {
			d.buf = append(d.buf, ' ')
		}
		line, over, text, err = d.readLine(over, text)
		if err != nil && err != io.EOF {
			return err
		}
	}
	if text {
		if err := d.emit(line, over); err != nil {
			return err
		}
	}
	if err == io.EOF {
		return nil
	}
	return d.lines()
}

// keptLines holds the bytes consumed while looking for the end of the first
// value, split in lines (data keeps the '\n's, so while no line is dropped it
// is the value itself). A line longer than max is dropped and marked over.
// Once closed lines pass 2*max bytes, keeping stops (full): at most 3*max
// bytes are held.
type keptLines struct {
	max   int
	data  []byte
	lines []keptLine // the last one is still open
	full  bool
}

type keptLine struct {
	start, end int  // in data; end is set once the line is closed
	over       bool // longer than max, bytes dropped
	text       bool // has something other than whitespace
}

func (k *keptLines) add(b []byte) {
	for len(b) > 0 && !k.full {
		l := &k.lines[len(k.lines)-1]
		piece := b
		nl := bytes.IndexByte(b, '\n')
		if nl >= 0 {
			piece = b[:nl]
		}
		l.text = l.text || hasNonSpace(piece)
		switch {
		case l.over:
		case len(k.data)-l.start+len(piece) > k.max:
			l.over = true
			k.data = k.data[:l.start]
		default:
			k.data = append(k.data, piece...)
		}
		if nl < 0 {
			return
		}
		l.end = len(k.data)
		k.data = append(k.data, '\n')
		// Only closed lines count, so that where reads happen to split
		// the input cannot change the outcome.
		if len(k.data) > 2*k.max {
			k.full = true
			return
		}
		k.lines = append(k.lines, keptLine{start: len(k.data)})
		b = b[nl+1:]
	}
}

func (k *keptLines) anyOver() bool {
	for _, l := range k.lines {
		if l.over {
			return true
		}
	}
	return false
}

const (
	sniffMore = iota // the value goes on past the bytes scanned
	sniffDone        // the value ended
	sniffBad         // the bytes cannot continue a JSON value
)

// sniffer finds the end of one JSON value, rejecting the grammar errors that
// join JSONL lines (a value right after a value) as soon as they appear.
// Everything else (number syntax, literals, key/colon order) is left to
// json.Valid on the whole value, which is cheap once its end is known.
type sniffer struct {
	depth      int
	inString   bool
	escaped    bool
	inScalar   bool
	afterValue bool // a value just ended; only ',', ':' or a closing bracket may follow
}

// scan consumes bytes of b and returns how many and the status after them.
// With sniffBad the offending byte is not consumed.
func (s *sniffer) scan(b []byte) (int, int) {
	for i, c := range b {
		if s.inString {
			switch {
			case s.escaped:
				s.escaped = false
			case c == '\\':
				s.escaped = true
			case c == '"':
				s.inString = false
				s.afterValue = true
			case c < 0x20:
				// A raw newline cannot be inside a JSON string: this is a
				// broken line, not a multi-line value.
				return i, sniffBad
			}
			continue
		}
		if s.inScalar {
			if !isSpace(c) && !isStructural(c) {
				continue
			}
			s.inScalar = false
			s.afterValue = true
		}
		switch c {
		case ' ', '\t', '\r', '\n':
		case '{', '[':
			if s.afterValue {
				return i, sniffBad
			}
			s.depth++
		case '"':
			if s.afterValue {
				return i, sniffBad
			}
			s.inString = true
		case '}', ']':
			s.depth--
			s.afterValue = true
			if s.depth <= 0 {
				return i + 1, sniffDone
			}
		case ',', ':':
			s.afterValue = false
		default:
			if s.afterValue {
				return i, sniffBad
			}
			s.inScalar = true
		}
	}
	return len(b), sniffMore
}

func isStructural(c byte) bool {
	switch c {
	case '{', '}', '[', ']', ',', ':', '"':
		return true
	}
	return false
}
