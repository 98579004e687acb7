package resolve

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/textproto"
	"strconv"
	"strings"
	"time"

	"cloud.google.com/go/storage"
)

// errIdle cancels an upstream read that received nothing for the idle
// timeout.
var errIdle = errors.New("resolve: storage sent nothing within the read timeout")

// rangeOpener opens readers over one object generation.
type rangeOpener interface {
	NewRangeReader(ctx context.Context, offset, length int64) (io.ReadCloser, error)
}

// generation opens ranges of one pinned object generation: if the object
// is overwritten mid-download, the next range fails instead of splicing
// two generations.
type generation struct{ h *storage.ObjectHandle }

func (g generation) NewRangeReader(ctx context.Context, offset, length int64) (io.ReadCloser, error) {
	return g.h.NewRangeReader(ctx, offset, length)
}

// objectReader is the io.ReadSeeker http.ServeContent serves from. It
// does no I/O until the first Read: Seek only moves the offset (so
// ServeContent's Seek(0, io.SeekEnd) for the size is free), and Read opens
// one upstream range reader at the offset, reused while reads continue
// from where the last one stopped. Nothing is buffered beyond the
// caller's buffer.
//
// A reader opened at the start of the request's single range asks
// upstream for just that range, so a small range of a big object does not
// start a transfer to its end; any other position reads to the end, and a
// range that runs out early is continued with another reader, so the hint
// only ever saves bytes, never changes them.
//
// Each upstream open and read is given idle to make progress. The first
// upstream failure is kept (Err) and returned by every later Read.
// objectReader is not safe for concurrent use.
type objectReader struct {
	ctx  context.Context
	src  rangeOpener
	size int64
	idle time.Duration
	// hintStart, hintEnd: the request's range [start, end), or -1.
	hintStart, hintEnd int64

	off    int64 // position of the next Read
	rc     io.ReadCloser
	rcEnd  int64 // end of rc's range
	cancel context.CancelCauseFunc
	rcCtx  context.Context
	timer  *time.Timer
	err    error
	opened int // upstream readers opened, for tests
}

func newObjectReader(ctx context.Context, src rangeOpener, size int64, idle time.Duration, rangeHeader string) *objectReader {
	r := &objectReader{ctx: ctx, src: src, size: size, idle: idle, hintStart: -1, hintEnd: -1}
	if _, start, end, ok := rangeFor(rangeHeader, size); ok {
		r.hintStart, r.hintEnd = start, end
	}
	return r
}

func (r *objectReader) Seek(offset int64, whence int) (int64, error) {
	var abs int64
	switch whence {
	case io.SeekStart:
		abs = offset
	case io.SeekCurrent:
		abs = r.off + offset
	case io.SeekEnd:
		abs = r.size + offset
	default:
		return 0, errors.New("resolve: seek: invalid whence")
	}
	if abs < 0 {
		return 0, errors.New("resolve: seek: negative position")
	}
	if abs != r.off {
		r.closeUpstream()
		r.off = abs
	}
	return abs, nil
}

func (r *objectReader) Read(p []byte) (int, error) {
	if r.err != nil {
		return 0, r.err
	}
	if r.off >= r.size {
		return 0, io.EOF
	}
	if len(p) == 0 {
		return 0, nil
	}
	for {
		if r.rc == nil {
			if err := r.open(); err != nil {
				return 0, err
			}
		}
		r.timer.Reset(r.idle)
		n, err := r.rc.Read(p)
		r.timer.Stop()
		r.off += int64(n)
		switch {
		case err == nil:
			return n, nil
		case errors.Is(err, io.EOF) && r.off == r.rcEnd:
			r.closeUpstream()
			if n > 0 || r.off >= r.size {
				return n, nil
			}
			// A hinted range ended where the caller reads on: continue.
		case errors.Is(err, io.EOF):
			// Generations are immutable, so a short range is a broken
			// transfer, never a clean end.
			return n, r.fail(fmt.Errorf("resolve: storage ended the object at byte %d of %d: %w", r.off, r.rcEnd, io.ErrUnexpectedEOF))
		default:
			return n, r.fail(r.readErr(err))
		}
	}
}

func (r *objectReader) open() error {
	end := r.size
	if r.off == r.hintStart {
		end = r.hintEnd
	}
	r.rcCtx, r.cancel = context.WithCancelCause(r.ctx)
	cancel := r.cancel
	r.timer = time.AfterFunc(r.idle, func() { cancel(errIdle) })
	rc, err := r.src.NewRangeReader(r.rcCtx, r.off, end-r.off)
	r.timer.Stop()
	if err != nil {
		err = r.readErr(err)
		r.closeUpstream()
		return r.fail(fmt.Errorf("resolve: opening bytes %d-%d: %w", r.off, end-1, err))
	}
	r.opened++
	r.rc, r.rcEnd = rc, end
	return nil
}

// readErr names an idle timeout as such; the client library reports it as
// a plain cancellation.
func (r *objectReader) readErr(err error) error {
	if r.rcCtx != nil && errors.Is(context.Cause(r.rcCtx), errIdle) {
		return fmt.Errorf("%w (%s): %v", errIdle, r.idle, err)
	}
	return err
}

func (r *objectReader) fail(err error) error {
	r.err = err
	return err
}

func (r *objectReader) closeUpstream() {
	if r.rc != nil {
		_ = r.rc.Close()
		r.rc = nil
	}
	if r.timer != nil {
		r.timer.Stop()
	}
	if r.cancel != nil {
		r.cancel(context.Canceled)
		r.cancel = nil
	}
}

// Close releases the upstream reader, if any.
func (r *objectReader) Close() error {
	r.closeUpstream()
	return nil
}

// Err is the first upstream failure, or nil.
func (r *objectReader) Err() error { return r.err }

// rangeFor decides the Range header http.ServeContent is given for a
// request's h on a size-byte object, and returns the range [start, end)
// it then serves (ok), as a hint for objectReader.
//
// ServeContent is right for one well-formed range; the rest is settled
// here, as RFC 9110 §14.2 allows:
//   - another unit than bytes is ignored (a MUST), and so is a malformed
//     bytes range (first-pos after last-pos, non-digits, a "+" sign,
//     which ServeContent accepts), or one so long it overflows: 200;
//   - several ranges are answered with the whole object: ServeContent
//     would read their parts from a goroutine that can outlive the
//     handler, and an upstream reader must not;
//   - one range that does not overlap the object is sent on as
//     "bytes=<size>-", which ServeContent answers 416 with
//     Content-Range: bytes */size after its precondition checks; a
//     suffix of 0 bytes is such a range (ServeContent would answer 206
//     with an invalid Content-Range). An empty object ignores ranges and
//     is served whole, as ServeContent does, since clients send
//     "bytes=0-" on everything.
func rangeFor(h string, size int64) (header string, start, end int64, ok bool) {
	rest, isBytes := strings.CutPrefix(h, "bytes=")
	if !isBytes {
		return "", 0, 0, false
	}
	var spec string
	n := 0
	for s := range strings.SplitSeq(rest, ",") {
		if s = textproto.TrimString(s); s != "" {
			spec = s
			n++
		}
	}
	if n != 1 || size == 0 {
		return "", 0, 0, false
	}
	first, last, found := strings.Cut(spec, "-")
	if !found {
		return "", 0, 0, false
	}
	first, last = textproto.TrimString(first), textproto.TrimString(last)
	unsatisfiable := "bytes=" + strconv.FormatInt(size, 10) + "-"
	if first == "" {
		suffix, valid := digits(last)
		switch {
		case !valid:
			return "", 0, 0, false
		case suffix == 0:
			return unsatisfiable, 0, 0, false
		}
		return h, max(0, size-suffix), size, true
	}
	a, valid := digits(first)
	if !valid {
		return "", 0, 0, false
	}
	b := size - 1
	if last != "" {
		if b, valid = digits(last); !valid || b < a {
			return "", 0, 0, false
		}
	}
	if a >= size {
		return unsatisfiable, 0, 0, false
	}
	return h, a, min(b+1, size), true
}

// digits parses 1*DIGIT.
func digits(s string) (int64, bool) {
	if s == "" || strings.TrimLeft(s, "0123456789") != "" {
		return 0, false
	}
	n, err := strconv.ParseInt(s, 10, 64)
	return n, err == nil
}
