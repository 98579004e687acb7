package bench

import (
	"bufio"
	"bytes"
	"cmp"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fsouza/fake-gcs-server/fakestorage"

	"github.com/labelsync/labelsync/internal/natsembed"
)

// The sync and JSONL benchmarks measure labelsync's memory, so the servers
// it talks to run in other processes, "infra" processes: one for the NATS
// server (natsembed, JetStream on file storage), one for fake-gcs-server.
// Both hold state that grows with the run (NATS keeps state per subject, one
// subject per object or row; fake-gcs-server builds the whole listing on
// every page request), which would otherwise be counted as labelsync's. An
// infra process is this test binary re-run with -test.run
// '^TestBenchInfra$'; it prints its addresses on one line and serves until
// its stdin closes, which also happens when the benchmark process dies.

const (
	envInfra           = "LABELSYNC_BENCH_INFRA"            // "1" in the infra process
	envInfraNATSDir    = "LABELSYNC_BENCH_INFRA_NATS_DIR"   // start NATS storing here
	envInfraGCSRoot    = "LABELSYNC_BENCH_INFRA_GCS_ROOT"   // start fake-gcs-server on this filesystem root
	envInfraGCSPaging  = "LABELSYNC_BENCH_INFRA_GCS_PAGING" // "layer" (default) or "fake"
	envInfraPageDelay  = "LABELSYNC_BENCH_INFRA_PAGE_DELAY" // the paging layer waits this long before each page
	envInfraCPUProfile = "LABELSYNC_BENCH_INFRA_CPUPROFILE" // write the infra process's CPU profile to this path + "." + pid
	infraReadyPrefix   = "labelsync-bench-infra "
)

// TestBenchInfra is not a test: it is the body of the infra process the
// sync and JSONL benchmarks start, and skips unless started by them.
func TestBenchInfra(t *testing.T) {
	if os.Getenv(envInfra) != "1" {
		t.Skip("the infra process of BenchmarkSync and BenchmarkJSONLImport; runs only when they start it")
	}
	if path := os.Getenv(envInfraCPUProfile); path != "" {
		f, err := os.Create(path + "." + strconv.Itoa(os.Getpid()))
		if err != nil {
			t.Fatal(err)
		}
		if err := pprof.StartCPUProfile(f); err != nil {
			t.Fatal(err)
		}
		defer func() {
			pprof.StopCPUProfile()
			_ = f.Close()
		}()
	}
	var natsURL, gcsURL string
	if dir := os.Getenv(envInfraNATSDir); dir != "" {
		srv, err := natsembed.Start(natsembed.Options{Addr: "127.0.0.1:0", StoreDir: dir})
		if err != nil {
			t.Fatal(err)
		}
		defer srv.Shutdown()
		natsURL = srv.URL()
	}
	if root := os.Getenv(envInfraGCSRoot); root != "" {
		fake, err := fakestorage.NewServerWithOptions(fakestorage.Options{StorageRoot: root, NoListener: true, Scheme: "http"})
		if err != nil {
			t.Fatal(err)
		}
		var h http.Handler = fake.HTTPHandler()
		if os.Getenv(envInfraGCSPaging) != "fake" {
			delay, err := time.ParseDuration(cmp.Or(os.Getenv(envInfraPageDelay), "0s"))
			if err != nil {
				t.Fatal(err)
			}
			h = &pagingLayer{fake: h, delay: delay, listings: map[string]*listing{}}
		}
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		hs := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
		go func() { _ = hs.Serve(l) }()
		defer hs.Close()
		gcsURL = "http://" + l.Addr().String()
	}
	fmt.Printf("%snats=%s gcs=%s\n", infraReadyPrefix, natsURL, gcsURL)
	_, _ = io.Copy(io.Discard, os.Stdin)
}

// pagingLayer answers the storage client's object listings the way
// fake-gcs-server does, page for page, without its cost: fake-gcs-server
// lists and sorts the whole bucket (reading every object's metadata from
// disk with the filesystem backend) on every page request, so a listing
// costs O(bucket) per page and O(bucket²/page) in all — over 3 minutes of
// CPU for 100,000 objects here. The layer asks fake-gcs-server once for the whole
// listing of a prefix (one request without maxResults) and serves the pages
// from it: the same items, bytes as fake-gcs-server wrote them, cut where
// fake-gcs-server cuts (names >= pageToken, in name order, maxResults per
// page, nextPageToken the name of the first item left out). Anything else
// (delimiters, versions, offsets, writes) goes to fake-gcs-server as is.
// The bucket must not change while the layer serves it. delay, if set,
// holds every page that long, as a remote server's latency would.
type pagingLayer struct {
	fake  http.Handler
	delay time.Duration

	mu       sync.Mutex
	listings map[string]*listing // by bucket + "\x00" + prefix
}

type listing struct {
	once  sync.Once
	err   error
	names []string
	items []json.RawMessage
}

func (p *pagingLayer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	rest, ok := strings.CutPrefix(r.URL.EscapedPath(), "/storage/v1/b/")
	bucketEsc, tail, _ := strings.Cut(rest, "/")
	q := r.URL.Query()
	maxResults, err := strconv.Atoi(q.Get("maxResults"))
	if !ok || tail != "o" || r.Method != http.MethodGet || err != nil || maxResults <= 0 ||
		q.Get("delimiter") != "" || q.Get("versions") == "true" || q.Get("startOffset") != "" ||
		q.Get("endOffset") != "" || q.Get("matchGlob") != "" || q.Get("includeTrailingDelimiter") == "true" {
		p.fake.ServeHTTP(w, r)
		return
	}
	bucket, err := url.PathUnescape(bucketEsc)
	if err != nil {
		p.fake.ServeHTTP(w, r)
		return
	}
	l := p.listing(bucket, q.Get("prefix"))
	if l.err != nil {
		http.Error(w, l.err.Error(), http.StatusInternalServerError)
		return
	}
	start, _ := slices.BinarySearch(l.names, q.Get("pageToken"))
	end, next := len(l.names), ""
	if end-start > maxResults {
		end = start + maxResults
		next = l.names[end]
	}
	var buf bytes.Buffer
	buf.WriteString(`{"kind":"storage#objects"`)
	if end > start {
		buf.WriteString(`,"items":[`)
		for i, it := range l.items[start:end] {
			if i > 0 {
				buf.WriteByte(',')
			}
			buf.Write(it)
		}
		buf.WriteByte(']')
	}
	if next != "" {
		tok, _ := json.Marshal(next)
		buf.WriteString(`,"nextPageToken":`)
		buf.Write(tok)
	}
	buf.WriteString("}\n")
	time.Sleep(p.delay)
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	_, _ = w.Write(buf.Bytes())
}

func (p *pagingLayer) listing(bucket, prefix string) *listing {
	p.mu.Lock()
	l, ok := p.listings[bucket+"\x00"+prefix]
	if !ok {
		l = &listing{}
		p.listings[bucket+"\x00"+prefix] = l
	}
	p.mu.Unlock()
	l.once.Do(func() { l.err = l.fetch(p.fake, bucket, prefix) })
	return l
}

// fetch asks fake-gcs-server for the whole listing at once: without
// maxResults it returns every object under prefix, sorted by name.
func (l *listing) fetch(fake http.Handler, bucket, prefix string) error {
	u := "/storage/v1/b/" + url.PathEscape(bucket) + "/o?prefix=" + url.QueryEscape(prefix)
	rec := httptest.NewRecorder()
	fake.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, u, nil))
	if rec.Code != http.StatusOK {
		return fmt.Errorf("paging layer: fake-gcs-server listing %s: %d %s", u, rec.Code, rec.Body.String())
	}
	var resp struct {
		Items         []json.RawMessage `json:"items"`
		NextPageToken string            `json:"nextPageToken"`
	}
	if err := json.Unmarshal(rec.Body.Bytes(), &resp); err != nil {
		return fmt.Errorf("paging layer: %w", err)
	}
	if resp.NextPageToken != "" {
		return fmt.Errorf("paging layer: fake-gcs-server paged a listing without maxResults")
	}
	l.items = resp.Items
	l.names = make([]string, len(resp.Items))
	for i, it := range resp.Items {
		var o struct {
			Name string `json:"name"`
		}
		if err := json.Unmarshal(it, &o); err != nil {
			return fmt.Errorf("paging layer: item %d: %w", i, err)
		}
		l.names[i] = o.Name
	}
	if !slices.IsSorted(l.names) {
		return fmt.Errorf("paging layer: fake-gcs-server listing is not in name order")
	}
	return nil
}

// infra is a running infra process.
type infra struct {
	pid     int
	natsURL string
	gcsURL  string
	stop    func() error
}

// infraOptions chooses what the infra process runs.
type infraOptions struct {
	natsDir string // start NATS storing here (empty: no NATS)
	gcsRoot string // start fake-gcs-server on this root (empty: no GCS)
	paging  string // "layer" or "fake"
	// pageDelay is how long the paging layer holds each page.
	pageDelay time.Duration
}

// startInfra starts an infra process and waits for its addresses. stop
// closes its stdin and waits for it to exit; it also runs at cleanup.
func startInfra(b *testing.B, o infraOptions) *infra {
	b.Helper()
	exe, err := os.Executable()
	if err != nil {
		b.Fatal(err)
	}
	logPath := filepath.Join(b.TempDir(), "infra.log")
	logFile, err := os.Create(logPath)
	if err != nil {
		b.Fatal(err)
	}
	cmd := exec.Command(exe, "-test.run=^TestBenchInfra$", "-test.count=1", "-test.timeout=0")
	cmd.Env = append(os.Environ(),
		envInfra+"=1",
		envInfraNATSDir+"="+o.natsDir,
		envInfraGCSRoot+"="+o.gcsRoot,
		envInfraGCSPaging+"="+o.paging,
		envInfraPageDelay+"="+o.pageDelay.String(),
	)
	cmd.Stderr = logFile
	stdin, err := cmd.StdinPipe()
	if err != nil {
		b.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		b.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	exited := make(chan error, 1)
	ready := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			line := sc.Text()
			if rest, ok := strings.CutPrefix(line, infraReadyPrefix); ok {
				ready <- rest
				break
			}
			fmt.Fprintln(logFile, line)
		}
		_, _ = io.Copy(logFile, stdout)
		exited <- cmd.Wait()
	}()
	stop := sync.OnceValue(func() error {
		_ = stdin.Close()
		defer logFile.Close()
		select {
		case err := <-exited:
			return err
		case <-time.After(30 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
			return fmt.Errorf("infra process %d did not exit within 30 s of its stdin closing; killed", cmd.Process.Pid)
		}
	})
	b.Cleanup(func() { _ = stop() })
	var line string
	select {
	case line = <-ready:
	case err := <-exited:
		exited <- err
		b.Fatalf("infra process exited before it was ready: %v\n--- its log ---\n%s", err, readHead(logPath))
	case <-time.After(60 * time.Second):
		_ = stop()
		b.Fatalf("infra process not ready within 60 s\n--- its log ---\n%s", readHead(logPath))
	}
	in := &infra{pid: cmd.Process.Pid, stop: stop}
	for f := range strings.FieldsSeq(line) {
		k, v, _ := strings.Cut(f, "=")
		switch k {
		case "nats":
			in.natsURL = v
		case "gcs":
			in.gcsURL = v
		}
	}
	return in
}

// memory is what a benchmark reports about the process's memory over one
// phase.
type memory struct {
	startRSS  uint64 // VmRSS when the phase started, after a GC returned the free heap
	peakRSS   uint64 // VmHWM since the phase started (since process start if the reset failed)
	resetOK   bool   // whether VmHWM was reset at the start of the phase
	peakHeap  uint64 // highest sampled Go heap (objects, live or not yet swept)
	endHeap   uint64 // Go heap in use after a GC at the end of the phase
	endRSS    uint64
	samples   int
	sampleRSS uint64 // highest sampled VmRSS, a check on peakRSS
}

// memoryWatch samples this process's memory during a phase.
type memoryWatch struct {
	stopOnce sync.Once
	done     chan struct{}
	finished chan struct{}
	resetOK  bool
	startRSS uint64
	peakHeap atomic.Uint64
	peakRSS  atomic.Uint64
	samples  atomic.Int64
}

// watchMemory returns the heap to the OS, resets the process's peak RSS
// (VmHWM; Linux: writing 5 to /proc/self/clear_refs) so that it covers
// only what follows, and samples the Go heap and VmRSS every interval until
// stop.
func watchMemory(interval time.Duration) *memoryWatch {
	runtime.GC()
	debug.FreeOSMemory()
	w := &memoryWatch{done: make(chan struct{}), finished: make(chan struct{})}
	w.resetOK = os.WriteFile("/proc/self/clear_refs", []byte("5"), 0) == nil
	w.startRSS, _, _ = procMemory(os.Getpid())
	sample := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}}
	go func() {
		defer close(w.finished)
		t := time.NewTicker(interval)
		defer t.Stop()
		for {
			metrics.Read(sample)
			if sample[0].Value.Kind() == metrics.KindUint64 {
				storeMax(&w.peakHeap, sample[0].Value.Uint64())
			}
			if rss, _, err := procMemory(os.Getpid()); err == nil {
				storeMax(&w.peakRSS, rss)
			}
			w.samples.Add(1)
			select {
			case <-w.done:
				return
			case <-t.C:
			}
		}
	}()
	return w
}

func storeMax(a *atomic.Uint64, v uint64) {
	for {
		cur := a.Load()
		if v <= cur || a.CompareAndSwap(cur, v) {
			return
		}
	}
}

// stop ends the sampling and reads the peak RSS, then collects garbage and
// reads the heap still in use.
func (w *memoryWatch) stop() memory {
	w.stopOnce.Do(func() { close(w.done) })
	<-w.finished
	m := memory{startRSS: w.startRSS, resetOK: w.resetOK, peakHeap: w.peakHeap.Load(), sampleRSS: w.peakRSS.Load(), samples: int(w.samples.Load())}
	m.endRSS, m.peakRSS, _ = procMemory(os.Getpid())
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	m.endHeap = ms.HeapAlloc
	return m
}

func (m memory) String() string {
	since := "since the phase started"
	if !m.resetOK {
		since = "since the process started: VmHWM could not be reset"
	}
	return fmt.Sprintf("RSS %.1f MB at the start (after a GC), peak RSS %.1f MB (VmHWM %s; highest of %d samples %.1f MB), peak Go heap %.1f MB, Go heap in use after GC at the end %.1f MB",
		mb(m.startRSS), mb(m.peakRSS), since, m.samples, mb(m.sampleRSS), mb(m.peakHeap), mb(m.endHeap))
}

// procCPU is the user+system CPU time of process pid so far, from
// /proc/<pid>/stat (Linux); 0 elsewhere.
func procCPU(pid int) time.Duration {
	data, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0
	}
	// The command name, field 2, may hold spaces: count from after it.
	_, rest, ok := strings.Cut(string(data), ") ")
	if !ok {
		return 0
	}
	f := strings.Fields(rest)
	if len(f) < 13 {
		return 0
	}
	utime, err1 := strconv.ParseUint(f[11], 10, 64)
	stime, err2 := strconv.ParseUint(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0
	}
	const ticks = 100 // USER_HZ on Linux
	return time.Duration(utime+stime) * time.Second / ticks
}

// cpuMark records the CPU time of this process and of the given infra
// processes, and the machine's busy ticks, to report what a phase cost.
type cpuMark struct {
	pids        []int
	self        time.Duration
	others      []time.Duration
	busy, total uint64
}

func markCPU(pids ...int) cpuMark {
	busy, total := machineCPU()
	m := cpuMark{pids: pids, self: processCPU(), busy: busy, total: total}
	for _, pid := range pids {
		m.others = append(m.others, procCPU(pid))
	}
	return m
}

// cpuUse is the CPU a phase used: in this process, in each infra process,
// and the share of the machine's CPUs busy (others' load included).
type cpuUse struct {
	self    time.Duration
	others  []time.Duration
	busyPct float64
}

func (m cpuMark) since() cpuUse {
	now := markCPU(m.pids...)
	u := cpuUse{self: now.self - m.self}
	for i := range m.others {
		u.others = append(u.others, now.others[i]-m.others[i])
	}
	if now.total > m.total {
		u.busyPct = 100 * float64(now.busy-m.busy) / float64(now.total-m.total)
	}
	return u
}

// perItem is CPU µs per item in this process and in infra process i.
func (u cpuUse) perItem(n int) (self float64, others []float64) {
	for _, d := range u.others {
		others = append(others, float64(d)/1e3/float64(n))
	}
	return float64(u.self) / 1e3 / float64(n), others
}

// envSizes reads a comma-separated list of positive sizes.
func envSizes(b *testing.B, name string, def []int) []int {
	b.Helper()
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	var out []int
	for s := range strings.SplitSeq(v, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || n <= 0 {
			b.Fatalf("%s=%q: want comma-separated positive integers", name, v)
		}
		out = append(out, n)
	}
	return out
}
