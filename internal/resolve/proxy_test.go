package resolve

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// memObject is a rangeOpener over bytes, or over size bytes of a pattern
// (big objects without the memory). It refuses ranges outside the object,
// as GCS answers 416 to them, and records what was asked.
type memObject struct {
	data []byte
	size int64

	mu    sync.Mutex
	asked [][2]int64 // offset, length
	// breakAt, when > 0, makes every reader fail once it reaches this
	// absolute offset, as a broken connection does.
	breakAt int64
	// stall, when set, makes readers block until their context ends.
	stall bool
}

func newMem(data []byte) *memObject { return &memObject{data: data, size: int64(len(data))} }

func pattern(i int64) byte { return byte(i*131 + i>>16) }

func (m *memObject) ReadAt(p []byte, off int64) (int, error) {
	if off >= m.size {
		return 0, io.EOF
	}
	n := min(int64(len(p)), m.size-off)
	if m.data != nil {
		copy(p, m.data[off:off+n])
	} else {
		for i := range n {
			p[i] = pattern(off + i)
		}
	}
	if n < int64(len(p)) {
		return int(n), io.EOF
	}
	return int(n), nil
}

func (m *memObject) NewRangeReader(ctx context.Context, off, length int64) (io.ReadCloser, error) {
	if off < 0 || length <= 0 || off+length > m.size {
		return nil, fmt.Errorf("memObject: range %d+%d outside %d bytes", off, length, m.size)
	}
	m.mu.Lock()
	m.asked = append(m.asked, [2]int64{off, length})
	m.mu.Unlock()
	r := io.Reader(io.NewSectionReader(m, off, length))
	if m.breakAt > 0 && m.breakAt < off+length {
		r = io.MultiReader(io.LimitReader(r, max(0, m.breakAt-off)), errReader{errors.New("connection reset by peer")})
	}
	if m.stall {
		r = stallReader{ctx}
	}
	return io.NopCloser(r), nil
}

func (m *memObject) requests() [][2]int64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	return append([][2]int64(nil), m.asked...)
}

type errReader struct{ err error }

func (e errReader) Read([]byte) (int, error) { return 0, e.err }

type stallReader struct{ ctx context.Context }

func (s stallReader) Read([]byte) (int, error) {
	<-s.ctx.Done()
	return 0, s.ctx.Err()
}

var modtime = time.Date(2026, 11, 27, 14, 30, 3, 0, time.UTC)

// serveBoth answers req from src through serveObject and from the same
// bytes through http.ServeContent over a bytes.Reader, the reference. The
// multi-range policy is applied to both.
func serveBoth(t testing.TB, src *memObject, header http.Header) (got, want *httptest.ResponseRecorder, err error) {
	t.Helper()
	mk := func() *http.Request {
		r := httptest.NewRequest(http.MethodGet, "/projects/7/resolve/?fileuri=x", nil)
		for k, v := range header {
			r.Header[k] = v
		}
		return r
	}
	prep := func(w *httptest.ResponseRecorder) {
		w.Header().Set("Content-Type", "image/jpeg")
		w.Header().Set("ETag", `"gen1"`)
	}
	got = httptest.NewRecorder()
	prep(got)
	_, err = serveObject(got, mk(), src, src.size, modtime, time.Second)

	want = httptest.NewRecorder()
	prep(want)
	r := mk()
	if h := r.Header.Get("Range"); h != "" {
		if h, _, _, _ = rangeFor(h, src.size); h == "" {
			r.Header.Del("Range")
		} else {
			r.Header.Set("Range", h)
		}
	}
	content := make([]byte, src.size)
	_, _ = src.ReadAt(content, 0)
	http.ServeContent(want, r, "", modtime, bytes.NewReader(content))
	return got, want, err
}

// compare reports how got differs from want: status, the headers
// ServeContent sets, and the body.
func compare(got, want *httptest.ResponseRecorder) error {
	if got.Code != want.Code {
		return fmt.Errorf("status %d, want %d", got.Code, want.Code)
	}
	for _, h := range []string{"Content-Range", "Content-Length", "Content-Type", "Accept-Ranges", "ETag", "Last-Modified"} {
		if g, w := got.Header().Get(h), want.Header().Get(h); g != w {
			return fmt.Errorf("%s %q, want %q", h, g, w)
		}
	}
	if !bytes.Equal(got.Body.Bytes(), want.Body.Bytes()) {
		return fmt.Errorf("body of %d bytes differs from the reference's %d", got.Body.Len(), want.Body.Len())
	}
	return nil
}

func TestServeObjectMatchesServeContent(t *testing.T) {
	t.Parallel()
	data := make([]byte, 1000)
	for i := range data {
		data[i] = pattern(int64(i))
	}
	lastMod := modtime.Format(http.TimeFormat)
	cases := []struct {
		name   string
		size   int
		header http.Header
		status int
		// asked: the upstream ranges opened, when checked
		asked [][2]int64
	}{
		{"whole", 1000, nil, 200, [][2]int64{{0, 1000}}},
		{"start", 1000, http.Header{"Range": {"bytes=0-99"}}, 206, [][2]int64{{0, 100}}},
		{"middle", 1000, http.Header{"Range": {"bytes=400-499"}}, 206, [][2]int64{{400, 100}}},
		{"end", 1000, http.Header{"Range": {"bytes=900-999"}}, 206, [][2]int64{{900, 100}}},
		{"open-ended", 1000, http.Header{"Range": {"bytes=990-"}}, 206, [][2]int64{{990, 10}}},
		{"suffix", 1000, http.Header{"Range": {"bytes=-10"}}, 206, [][2]int64{{990, 10}}},
		{"suffix longer than the object", 1000, http.Header{"Range": {"bytes=-5000"}}, 206, [][2]int64{{0, 1000}}},
		{"end past the object", 1000, http.Header{"Range": {"bytes=995-5000"}}, 206, [][2]int64{{995, 5}}},
		{"one byte", 1000, http.Header{"Range": {"bytes=999-999"}}, 206, [][2]int64{{999, 1}}},
		{"beyond the end", 1000, http.Header{"Range": {"bytes=1000-"}}, 416, nil},
		{"far beyond the end", 1000, http.Header{"Range": {"bytes=5000-6000"}}, 416, nil},
		{"malformed: ignored", 1000, http.Header{"Range": {"bytes=a-b"}}, 200, [][2]int64{{0, 1000}}},
		{"reversed: ignored", 1000, http.Header{"Range": {"bytes=10-5"}}, 200, nil},
		{"plus sign: ignored", 1000, http.Header{"Range": {"bytes=+1-5"}}, 200, nil},
		{"overflow: ignored", 1000, http.Header{"Range": {"bytes=0-99999999999999999999"}}, 200, nil},
		{"other unit: ignored", 1000, http.Header{"Range": {"items=0-1"}}, 200, nil},
		{"no ranges: ignored", 1000, http.Header{"Range": {"bytes=,"}}, 200, nil},
		{"suffix of zero", 1000, http.Header{"Range": {"bytes=-0"}}, 416, nil},
		{"multi-range: whole object", 1000, http.Header{"Range": {"bytes=0-9,20-29"}}, 200, [][2]int64{{0, 1000}}},
		{"multi-range, one beyond: whole object", 1000, http.Header{"Range": {"bytes=0-9,2000-"}}, 200, nil},
		{"trailing comma is one range", 1000, http.Header{"Range": {"bytes=0-9,"}}, 206, [][2]int64{{0, 10}}},
		{"empty object", 0, nil, 200, [][2]int64{}},
		{"empty object, range: whole", 0, http.Header{"Range": {"bytes=0-"}}, 200, [][2]int64{}},
		{"empty object, suffix: whole", 0, http.Header{"Range": {"bytes=-1"}}, 200, [][2]int64{}},
		{"if-none-match", 1000, http.Header{"If-None-Match": {`"gen1"`}}, 304, [][2]int64{}},
		{"if-none-match, other", 1000, http.Header{"If-None-Match": {`"gen0"`}}, 200, nil},
		{"if-none-match, list", 1000, http.Header{"If-None-Match": {`"a", "gen1"`}}, 304, nil},
		{"if-modified-since", 1000, http.Header{"If-Modified-Since": {lastMod}}, 304, [][2]int64{}},
		{"if-modified-since, older", 1000, http.Header{"If-Modified-Since": {modtime.Add(-time.Hour).Format(http.TimeFormat)}}, 200, nil},
		{"if-range matches", 1000, http.Header{"Range": {"bytes=0-9"}, "If-Range": {`"gen1"`}}, 206, nil},
		{"if-range differs", 1000, http.Header{"Range": {"bytes=0-9"}, "If-Range": {`"gen0"`}}, 200, nil},
		{"if-match fails", 1000, http.Header{"If-Match": {`"gen0"`}}, 412, nil},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			src := newMem(data[:c.size])
			got, want, err := serveBoth(t, src, c.header)
			if err != nil {
				t.Fatalf("serveObject: %v", err)
			}
			if got.Code != c.status {
				t.Errorf("status %d, want %d", got.Code, c.status)
			}
			if err := compare(got, want); err != nil {
				t.Error(err)
			}
			if got.Code == 416 && got.Header().Get("Content-Range") != "bytes */"+strconv.Itoa(c.size) {
				t.Errorf("416 Content-Range %q", got.Header().Get("Content-Range"))
			}
			if c.asked != nil {
				if a := src.requests(); fmt.Sprint(a) != fmt.Sprint(c.asked) {
					t.Errorf("upstream ranges %v, want %v", a, c.asked)
				}
			}
		})
	}
}

// TestServeObjectLarge: offsets past 4 GiB, on a simulated 6 GiB object,
// with no more upstream bytes asked for than the range.
func TestServeObjectLarge(t *testing.T) {
	t.Parallel()
	const size = 6 << 30
	for _, c := range []struct {
		rng         string
		start, want int64
	}{
		{"bytes=0-65535", 0, 65536},
		{"bytes=4294967290-4294967309", 4294967290, 20},
		{"bytes=-100", size - 100, 100},
		{"bytes=6442450900-", 6442450900, size - 6442450900},
	} {
		src := &memObject{size: size}
		r := httptest.NewRequest(http.MethodGet, "/", nil)
		r.Header.Set("Range", c.rng)
		w := httptest.NewRecorder()
		w.Header().Set("Content-Type", "application/octet-stream")
		if _, err := serveObject(w, r, src, size, modtime, time.Second); err != nil {
			t.Fatal(err)
		}
		if w.Code != 206 || int64(w.Body.Len()) != c.want {
			t.Fatalf("%s: %d, %d bytes", c.rng, w.Code, w.Body.Len())
		}
		wantCR := fmt.Sprintf("bytes %d-%d/%d", c.start, c.start+c.want-1, int64(size))
		if cr := w.Header().Get("Content-Range"); cr != wantCR {
			t.Errorf("%s: Content-Range %q, want %q", c.rng, cr, wantCR)
		}
		for i, b := range w.Body.Bytes() {
			if b != pattern(c.start+int64(i)) {
				t.Fatalf("%s: byte %d differs", c.rng, c.start+int64(i))
			}
		}
		if a := src.requests(); len(a) != 1 || a[0] != [2]int64{c.start, c.want} {
			t.Errorf("%s: upstream ranges %v", c.rng, a)
		}
	}
}

func TestObjectReaderSeekIsFree(t *testing.T) {
	t.Parallel()
	src := &memObject{size: 1 << 40}
	r := newObjectReader(context.Background(), src, src.size, time.Second, "")
	if n, err := r.Seek(0, io.SeekEnd); err != nil || n != 1<<40 {
		t.Fatalf("Seek(0, End) = %d, %v", n, err)
	}
	if _, err := r.Seek(12, io.SeekStart); err != nil {
		t.Fatal(err)
	}
	if n, err := r.Seek(3, io.SeekCurrent); err != nil || n != 15 {
		t.Fatalf("Seek(3, Current) = %d, %v", n, err)
	}
	if _, err := r.Seek(-16, io.SeekCurrent); err == nil {
		t.Error("seek before the start: no error")
	}
	if len(src.requests()) != 0 {
		t.Errorf("seeking opened %v", src.requests())
	}
	buf := make([]byte, 4)
	if _, err := io.ReadFull(r, buf); err != nil {
		t.Fatal(err)
	}
	// Reading on continues the same upstream reader.
	if _, err := io.ReadFull(r, buf); err != nil {
		t.Fatal(err)
	}
	if a := src.requests(); len(a) != 1 || a[0][0] != 15 {
		t.Errorf("upstream ranges %v, want one from 15", a)
	}
	_ = r.Close()
}

// TestServeObjectUpstreamBreaks: a reader that fails mid-object is
// reported, never passed off as the end of the body.
func TestServeObjectUpstreamBreaks(t *testing.T) {
	t.Parallel()
	src := &memObject{size: 1 << 20, breakAt: 300_000}
	r := httptest.NewRequest(http.MethodGet, "/", nil)
	w := httptest.NewRecorder()
	w.Header().Set("Content-Type", "application/octet-stream")
	sent, err := serveObject(w, r, src, src.size, modtime, time.Second)
	if err == nil || !strings.Contains(err.Error(), "connection reset") || !sent {
		t.Fatalf("serveObject = %v, %v; want the upstream error after the response began", sent, err)
	}
	if w.Body.Len() >= int(src.size) {
		t.Errorf("served %d bytes of a broken %d-byte transfer", w.Body.Len(), src.size)
	}
}

// TestServeObjectIdleTimeout: an upstream that stops sending is given up
// after the idle timeout.
func TestServeObjectIdleTimeout(t *testing.T) {
	t.Parallel()
	src := &memObject{size: 1 << 20, stall: true}
	r := httptest.NewRequest(http.MethodGet, "/", nil)
	w := httptest.NewRecorder()
	w.Header().Set("Content-Type", "application/octet-stream")
	start := time.Now()
	sent, err := serveObject(w, r, src, src.size, modtime, 100*time.Millisecond)
	if !errors.Is(err, errIdle) || sent {
		t.Fatalf("serveObject = %v, %v; want errIdle before anything was sent", sent, err)
	}
	if w.Code != 200 || w.Body.Len() != 0 || w.Flushed {
		// httptest's recorder reports 200 until WriteHeader: nothing was.
		t.Errorf("something was written: %d, %d bytes", w.Code, w.Body.Len())
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("gave up after %s", d)
	}
}

func TestRangeFor(t *testing.T) {
	t.Parallel()
	const unsat = "bytes=10-"
	for _, c := range []struct {
		h          string
		size       int64
		header     string
		start, end int64
		ok         bool
	}{
		{"bytes=0-0", 10, "bytes=0-0", 0, 1, true},
		{"bytes= 2 - 4 ", 10, "bytes= 2 - 4 ", 2, 5, true},
		{"bytes=2-", 10, "bytes=2-", 2, 10, true},
		{"bytes=-3", 10, "bytes=-3", 7, 10, true},
		{"bytes=-30", 10, "bytes=-30", 0, 10, true},
		{"bytes=8-30", 10, "bytes=8-30", 8, 10, true},
		{"bytes=0-1,", 10, "bytes=0-1,", 0, 2, true},
		{"bytes=-0", 10, unsat, 0, 0, false},
		{"bytes=10-", 10, unsat, 0, 0, false},
		{"bytes=11-20", 10, unsat, 0, 0, false},
		{"bytes=0-1,3-4", 10, "", 0, 0, false},
		{"bytes=5-4", 10, "", 0, 0, false},
		{"bytes=-", 10, "", 0, 0, false},
		{"bytes=--1", 10, "", 0, 0, false},
		{"bytes=1", 10, "", 0, 0, false},
		{"bytes=0-", 0, "", 0, 0, false},
		{"Bytes=0-1", 10, "", 0, 0, false},
		{"", 10, "", 0, 0, false},
	} {
		header, start, end, ok := rangeFor(c.h, c.size)
		if header != c.header || ok != c.ok || (ok && (start != c.start || end != c.end)) {
			t.Errorf("rangeFor(%q, %d) = %q, %d, %d, %v; want %q, %d, %d, %v", c.h, c.size, header, start, end, ok, c.header, c.start, c.end, c.ok)
		}
	}
}
