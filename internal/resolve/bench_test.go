package resolve

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"runtime"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"cloud.google.com/go/storage"
	"github.com/fsouza/fake-gcs-server/fakestorage"

	"github.com/labelsync/labelsync/internal/gcs"
	"github.com/labelsync/labelsync/internal/secrets"
	"github.com/labelsync/labelsync/internal/storages"
)

// The resolver's benchmarks (docs/benchmarks.md), each against a raw
// baseline measured in the same run:
//
//	go test ./internal/resolve -run '^$' -bench . -benchtime 1x -v
//
// BenchmarkProxy streams a LABELSYNC_BENCH_PROXY_MB object (default 100)
// through the resolver and straight from fake-gcs-server, alternating, in
// LABELSYNC_BENCH_PROXY_ROUNDS rounds (default 3), and reports both rates,
// their ratio and the CPU time per MB of both processes together; then the resident memory each concurrent download adds,
// at 1 and 50 at once, through the resolver and, as the baseline, fetched
// directly (the client's own share). fake-gcs-server runs in a helper
// process (this test binary, TestProxyBenchGCS), so that its copy of the
// object is not counted.
//
// BenchmarkPresign compares redirects per second (8 clients, keep-alive)
// with raw V4 signing of the same key by the storage library (as many
// goroutines as CPUs), with every request a cache hit and with every
// request a new object (four rounds, the order reversed every round), and
// reports p50/p99 latency, timed from when each request was due, at
// LABELSYNC_BENCH_PRESIGN_RATE requests/s (default 1000) for
// LABELSYNC_BENCH_PRESIGN_SECONDS (default 5), over cached URLs and over new
// objects.

func envInt(b *testing.B, name string, def int) int {
	b.Helper()
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 {
		b.Fatalf("%s=%q: want a positive integer", name, v)
	}
	return n
}

// TestProxyBenchGCS is BenchmarkProxy's helper process: fake-gcs-server
// with one object of LABELSYNC_BENCH_GCS_MB megabytes, its URL on stdout,
// until stdin closes.
func TestProxyBenchGCS(t *testing.T) {
	mb, err := strconv.Atoi(os.Getenv("LABELSYNC_BENCH_GCS_MB"))
	if err != nil {
		t.Skip("the helper process of BenchmarkProxy")
	}
	srv, err := fakestorage.NewServerWithOptions(fakestorage.Options{Scheme: "http", Host: "127.0.0.1", Writer: io.Discard})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Stop()
	content := make([]byte, mb<<20)
	for i := range content {
		content[i] = pattern(int64(i))
	}
	srv.CreateObject(fakestorage.Object{
		ObjectAttrs: fakestorage.ObjectAttrs{BucketName: "acme-raw", Name: "big.bin", ContentType: "application/octet-stream"},
		Content:     content,
	})
	fmt.Printf("url %s\n", srv.URL())
	_, _ = io.Copy(io.Discard, os.Stdin)
}

// startBenchGCS runs TestProxyBenchGCS and returns its URL and pid.
func startBenchGCS(b *testing.B, mb int) (string, int) {
	b.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestProxyBenchGCS$")
	cmd.Env = append(os.Environ(), "LABELSYNC_BENCH_GCS_MB="+strconv.Itoa(mb))
	stdin, err := cmd.StdinPipe()
	if err != nil {
		b.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		b.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		_ = stdin.Close()
		_ = cmd.Wait()
	})
	sc := bufio.NewScanner(stdout)
	for sc.Scan() {
		if u, ok := strings.CutPrefix(sc.Text(), "url "); ok {
			go func() { _, _ = io.Copy(io.Discard, stdout) }()
			return u, cmd.Process.Pid
		}
	}
	b.Fatalf("fake-gcs-server helper ended without a URL: %v", sc.Err())
	return "", 0
}

// cpuOf is the user+system CPU time of process pid (0: this one) from
// /proc/<pid>/stat, in clock ticks of 10 ms.
func cpuOf(pid int) time.Duration {
	p := "/proc/self/stat"
	if pid > 0 {
		p = "/proc/" + strconv.Itoa(pid) + "/stat"
	}
	b, err := os.ReadFile(p)
	if err != nil {
		return 0
	}
	// Fields after the command name, which is in parentheses: utime and
	// stime are the 12th and 13th.
	_, rest, _ := strings.Cut(string(b), ") ")
	f := strings.Fields(rest)
	if len(f) < 13 {
		return 0
	}
	u, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(u+st) * 10 * time.Millisecond
}

// proxyBench is a resolver streaming acme-raw/big.bin from gcsURL.
func proxyBench(b *testing.B, gcsURL string) string {
	b.Helper()
	clients := gcs.NewClients(gcs.Options{EmulatorHost: gcsURL})
	b.Cleanup(func() { _ = clients.Close() })
	set, err := storages.NewSet([]storages.Import{{ID: 1, Project: 7, Bucket: "acme-raw", Presign: boolp(false)}})
	if err != nil {
		b.Fatal(err)
	}
	srv, err := New(Config{
		Token:        testToken,
		Storages:     func() *storages.Set { return set },
		ClientFor:    func(ctx context.Context, _ *storages.Import) (*storage.Client, error) { return clients.For(ctx, nil) },
		EmulatorHost: gcsURL,
	})
	if err != nil {
		b.Fatal(err)
	}
	mux := http.NewServeMux()
	srv.Register(mux)
	ts := httptest.NewServer(mux)
	b.Cleanup(ts.Close)
	return ts.URL + "/projects/7/resolve/?fileuri=" + url.QueryEscape("gs://acme-raw/big.bin")
}

func newBenchClient() *http.Client {
	return &http.Client{
		Transport:     &http.Transport{DisableCompression: true, MaxIdleConnsPerHost: 64},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}

// fetch downloads u and checks its size.
func fetch(c *http.Client, u string, size int64) error {
	req, err := http.NewRequest(http.MethodGet, u, nil)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+testToken)
	resp, err := c.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	n, err := io.Copy(io.Discard, resp.Body)
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK || n != size {
		return fmt.Errorf("GET %s: %d, %d of %d bytes", u, resp.StatusCode, n, size)
	}
	return nil
}

func BenchmarkProxy(b *testing.B) {
	mb := envInt(b, "LABELSYNC_BENCH_PROXY_MB", 100)
	rounds := envInt(b, "LABELSYNC_BENCH_PROXY_ROUNDS", 3)
	size := int64(mb) << 20
	gcsURL, gcsPid := startBenchGCS(b, mb)
	direct := gcsURL + "/download/storage/v1/b/acme-raw/o/big.bin?alt=media"
	proxied := proxyBench(b, gcsURL)
	c := newBenchClient()
	// Warm both paths (connections, the storage client).
	for _, u := range []string{direct, proxied} {
		if err := fetch(c, u, size); err != nil {
			b.Fatal(err)
		}
	}
	b.ResetTimer()
	for range b.N {
		var took, cpu [2]time.Duration
		for r := range rounds {
			order := []int{0, 1}
			if r%2 == 1 {
				order = []int{1, 0}
			}
			for _, i := range order {
				u := []string{direct, proxied}[i]
				start, cpu0 := time.Now(), cpuOf(0)+cpuOf(gcsPid)
				if err := fetch(c, u, size); err != nil {
					b.Fatal(err)
				}
				took[i] += time.Since(start)
				cpu[i] += cpuOf(0) + cpuOf(gcsPid) - cpu0
			}
		}
		total := float64(size*int64(rounds)) / (1 << 20)
		rate := func(d time.Duration) float64 { return total / d.Seconds() }
		perMB := func(d time.Duration) float64 { return float64(d.Microseconds()) / total }
		b.ReportMetric(rate(took[0]), "direct_MB/s")
		b.ReportMetric(rate(took[1]), "proxy_MB/s")
		b.ReportMetric(100*took[0].Seconds()/took[1].Seconds(), "proxy_%_of_direct")
		b.ReportMetric(perMB(cpu[0]), "direct_CPU_µs/MB")
		b.ReportMetric(perMB(cpu[1]), "proxy_CPU_µs/MB")
		b.Logf("%d MB, %d rounds: direct %.0f MB/s, through the resolver %.0f MB/s (%.1f %%); CPU (both processes) %.0f vs %.0f µs/MB",
			mb, rounds, rate(took[0]), rate(took[1]), 100*took[0].Seconds()/took[1].Seconds(), perMB(cpu[0]), perMB(cpu[1]))

		for _, conc := range []int{1, 50} {
			for _, which := range []string{"direct", "proxy"} {
				u := map[string]string{"direct": direct, "proxy": proxied}[which]
				base, peak, err := rssDuring(func() error { return fetchConcurrently(u, size, conc) })
				if err != nil {
					b.Fatal(err)
				}
				per := float64(peak-base) / float64(conc) / (1 << 20)
				b.ReportMetric(per, fmt.Sprintf("%s_RSS_MB/download@%d", which, conc))
				b.Logf("%s, %d at once: RSS %.1f → %.1f MB, %.2f MB per download", which, conc, mib(base), mib(peak), per)
			}
		}
	}
	b.ReportMetric(0, "ns/op")
}

func mib(n uint64) float64 { return float64(n) / (1 << 20) }

// fetchConcurrently downloads u conc times at once, each on a connection
// of its own.
func fetchConcurrently(u string, size int64, conc int) error {
	c := newBenchClient()
	defer c.CloseIdleConnections()
	var wg sync.WaitGroup
	errs := make(chan error, conc)
	start := make(chan struct{})
	for range conc {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			if err := fetch(c, u, size); err != nil {
				errs <- err
			}
		}()
	}
	close(start)
	wg.Wait()
	close(errs)
	return <-errs
}

// rssDuring returns this process's resident set size before run (after a
// GC that returns freed memory) and its peak while run runs.
func rssDuring(run func() error) (base, peak uint64, err error) {
	if runtime.GOOS != "linux" {
		return 0, 0, fmt.Errorf("reads /proc/self/status: Linux only")
	}
	runtime.GC()
	debug.FreeOSMemory()
	base, err = rss()
	if err != nil {
		return 0, 0, err
	}
	var top atomic.Uint64
	top.Store(base)
	done := make(chan struct{})
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		t := time.NewTicker(5 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				if v, err := rss(); err == nil && v > top.Load() {
					top.Store(v)
				}
			}
		}
	}()
	err = run()
	close(done)
	<-sampled
	return base, top.Load(), err
}

func rss() (uint64, error) {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0, err
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, err := strconv.ParseUint(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			return kb << 10, err
		}
	}
	return 0, fmt.Errorf("no VmRSS in /proc/self/status")
}

// presignBench is a resolver signing for a real-GCS storage with a
// service-account key: signing needs no network.
func presignBench(b *testing.B) (resolveURL func(key string) string, raw func(key string) error) {
	b.Helper()
	const email = "signer@acme.iam.gserviceaccount.com"
	saKey, _ := serviceAccount(b, email)
	box, err := secrets.New(testSecretKey)
	if err != nil {
		b.Fatal(err)
	}
	st := storages.Import{ID: 1, Project: 7, Bucket: "acme-raw", RecursiveScan: true, PresignTTL: 15, GoogleApplicationCredentials: saKey}
	if err := st.SealCredentials(box); err != nil {
		b.Fatal(err)
	}
	set, err := storages.NewSet([]storages.Import{st})
	if err != nil {
		b.Fatal(err)
	}
	clients := gcs.NewClients(gcs.Options{})
	b.Cleanup(func() { _ = clients.Close() })
	srv, err := New(Config{
		Token:    testToken,
		Storages: func() *storages.Set { return set },
		ClientFor: func(ctx context.Context, st *storages.Import) (*storage.Client, error) {
			creds, err := st.Credentials(box)
			if err != nil {
				return nil, err
			}
			return clients.For(ctx, creds)
		},
		Secrets: box,
	})
	if err != nil {
		b.Fatal(err)
	}
	mux := http.NewServeMux()
	srv.Register(mux)
	ts := httptest.NewServer(mux)
	b.Cleanup(ts.Close)
	var sa struct {
		PrivateKey string `json:"private_key"`
	}
	if err := json.Unmarshal([]byte(saKey), &sa); err != nil {
		b.Fatal(err)
	}
	pemKey := []byte(sa.PrivateKey)
	raw = func(key string) error {
		_, err := storage.SignedURL("acme-raw", key, &storage.SignedURLOptions{
			GoogleAccessID: email, PrivateKey: pemKey, Method: http.MethodGet,
			Expires: time.Now().Add(15 * time.Minute), Scheme: storage.SigningSchemeV4,
		})
		return err
	}
	return func(key string) string {
		return ts.URL + "/projects/7/resolve/?fileuri=" + url.QueryEscape("gs://acme-raw/"+key)
	}, raw
}

func redirect(c *http.Client, u string) error {
	req, err := http.NewRequest(http.MethodGet, u, nil)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+testToken)
	resp, err := c.Do(req)
	if err != nil {
		return err
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusSeeOther || !strings.Contains(resp.Header.Get("Location"), "X-Goog-Signature=") {
		return fmt.Errorf("GET %s: %d", u, resp.StatusCode)
	}
	return nil
}

// closedLoop runs f from workers goroutines for d and returns calls/s.
func closedLoop(workers int, d time.Duration, f func(i int) error) (float64, error) {
	var n atomic.Int64
	var firstErr atomic.Value
	deadline := time.Now().Add(d)
	var wg sync.WaitGroup
	start := time.Now()
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Now().Before(deadline) {
				if err := f(int(n.Add(1))); err != nil {
					firstErr.CompareAndSwap(nil, err)
					return
				}
			}
		}()
	}
	wg.Wait()
	if err, _ := firstErr.Load().(error); err != nil {
		return 0, err
	}
	return float64(n.Load()) / time.Since(start).Seconds(), nil
}

// openLoop sends rate requests/s for d, each timed from when it was due
// (so queueing counts), and returns the latencies sorted.
func openLoop(rate int, d time.Duration, f func(i int) error) ([]time.Duration, error) {
	interval := time.Second / time.Duration(rate)
	total := int(d / interval)
	lat := make([]time.Duration, total)
	var firstErr atomic.Value
	var wg sync.WaitGroup
	start := time.Now()
	for i := range total {
		due := start.Add(time.Duration(i) * interval)
		time.Sleep(time.Until(due))
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := f(i); err != nil {
				firstErr.CompareAndSwap(nil, err)
			}
			lat[i] = time.Since(due)
		}()
	}
	wg.Wait()
	if err, _ := firstErr.Load().(error); err != nil {
		return nil, err
	}
	slices.Sort(lat)
	return lat, nil
}

func quantile(lat []time.Duration, q float64) float64 {
	return float64(lat[int(q*float64(len(lat)-1))].Microseconds()) / 1000
}

func BenchmarkPresign(b *testing.B) {
	rate := envInt(b, "LABELSYNC_BENCH_PRESIGN_RATE", 1000)
	secs := envInt(b, "LABELSYNC_BENCH_PRESIGN_SECONDS", 5)
	resolveURL, raw := presignBench(b)
	c := newBenchClient()
	const hot = 1000
	for i := range hot {
		if err := redirect(c, resolveURL(fmt.Sprintf("hot/%04d.jpg", i))); err != nil {
			b.Fatal(err)
		}
	}
	// Three contenders in 4 short phases each, the order reversed every
	// round, so that other load on the machine falls on all of them.
	phase := time.Duration(secs) * time.Second / 8
	var cold atomic.Int64
	contenders := []func() (float64, error){
		func() (float64, error) {
			return closedLoop(runtime.GOMAXPROCS(0), phase, func(i int) error { return raw(fmt.Sprintf("raw/%d.jpg", i)) })
		},
		func() (float64, error) {
			return closedLoop(8, phase, func(i int) error { return redirect(c, resolveURL(fmt.Sprintf("hot/%04d.jpg", i%hot))) })
		},
		func() (float64, error) {
			return closedLoop(8, phase, func(int) error { return redirect(c, resolveURL(fmt.Sprintf("cold/%d.jpg", cold.Add(1)))) })
		},
	}
	b.ResetTimer()
	for range b.N {
		var rates [3]float64
		for r := range 4 {
			for j := range contenders {
				if r%2 == 1 {
					j = len(contenders) - 1 - j
				}
				v, err := contenders[j]()
				if err != nil {
					b.Fatal(err)
				}
				rates[j] += v / 4
			}
		}
		rawRate, hitRate, missRate := rates[0], rates[1], rates[2]
		b.ReportMetric(rawRate, "raw_signs/s")
		b.ReportMetric(hitRate, "cached_redirects/s")
		b.ReportMetric(missRate, "uncached_redirects/s")
		b.Logf("raw V4 signing %.0f/s; redirects %.0f/s from the cache (%.1f×), %.0f/s signing each (%.1f %%)",
			rawRate, hitRate, hitRate/rawRate, missRate, 100*missRate/rawRate)

		for _, which := range []string{"cached", "uncached"} {
			lat, err := openLoop(rate, time.Duration(secs)*time.Second, func(i int) error {
				if which == "cached" {
					return redirect(c, resolveURL(fmt.Sprintf("hot/%04d.jpg", i%hot)))
				}
				return redirect(c, resolveURL(fmt.Sprintf("cold/%d.jpg", cold.Add(1))))
			})
			if err != nil {
				b.Fatal(err)
			}
			b.ReportMetric(quantile(lat, 0.5), which+"_p50_ms")
			b.ReportMetric(quantile(lat, 0.99), which+"_p99_ms")
			b.Logf("%s, %d/s for %ds: p50 %.2f ms, p99 %.2f ms, max %.2f ms", which, rate, secs, quantile(lat, 0.5), quantile(lat, 0.99), quantile(lat, 1))
		}
	}
	b.ReportMetric(0, "ns/op")
}
