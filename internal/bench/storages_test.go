package bench

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/labelsync/labelsync/internal/api"
	"github.com/labelsync/labelsync/internal/deadletter"
	"github.com/labelsync/labelsync/internal/ingest"
	"github.com/labelsync/labelsync/internal/metrics"
	"github.com/labelsync/labelsync/internal/storages"
	"github.com/labelsync/labelsync/internal/syncer"
)

// manyStoragesJSON is the benchmark storage plus 999 others: 100 projects
// with several buckets each, and 49 more storages on the benchmark's own
// bucket under other prefixes (with regex filters), which every
// notification is checked against.
func manyStoragesJSON() string {
	var imports []string
	imports = append(imports, `{"id": 1, "project": 7, "title": "bench", "bucket": "`+bucket+`", "prefix": "incoming/", "use_blob_urls": true, "recursive_scan": true}`)
	id := 2
	for k := range 49 {
		imports = append(imports, fmt.Sprintf(`{"id": %d, "project": %d, "bucket": %q, "prefix": "other-%d", "regex_filter": ".*\\.(png|tiff)$", "use_blob_urls": true, "recursive_scan": true}`, id, 1000+k, bucket, k))
		id++
	}
	for p := 0; id <= 1000; p = (p + 1) % 100 {
		imports = append(imports, fmt.Sprintf(`{"id": %d, "project": %d, "bucket": "proj-%d-b%d", "prefix": "in", "use_blob_urls": true}`, id, 2000+p, p, id%4))
		id++
	}
	return `{"import": [` + strings.Join(imports, ",\n") + `]}`
}

// BenchmarkManyStorages is BenchmarkNotificationPath with 1,000 storages
// configured against the same run with one storage (issue 11: at least 90
// %), alternating the two LABELSYNC_BENCH_ROUNDS times (default 3) on one
// NATS server each, and reports what matching costs per notification in
// each (Set.Match alone).
func BenchmarkManyStorages(b *testing.B) {
	n := envInt(b, "LABELSYNC_BENCH_PATH_N", 50_000)
	rounds := envInt(b, "LABELSYNC_BENCH_ROUNDS", 3)
	ctx := context.Background()
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	sets := map[string]*storages.Set{"one": benchSet(b, storagesJSON), "thousand": benchSet(b, manyStoragesJSON())}
	if sets["thousand"].Len() != 1000 {
		b.Fatalf("%d storages, want 1000", sets["thousand"].Len())
	}
	type contender struct {
		handle message.HandlerFunc
		reg    *prometheus.Registry
		took   time.Duration
	}
	cs := map[string]*contender{}
	for name, set := range sets {
		srv, _ := startNATS(b)
		bus := newBus(ctx, b, srv.URL(), "labelsync-bench-"+name)
		reg := prometheus.NewRegistry()
		m := metrics.New(reg)
		letters := deadletter.NewWriter(bus, "worker", m, logger)
		h := ingest.NewNotifications(ingest.New(bus, letters, m, logger), func() *storages.Set { return set }, m, logger)
		failures, err := deadletter.Middleware(letters, deadletter.DefaultRetry(), logger)
		if err != nil {
			b.Fatal(err)
		}
		cs[name] = &contender{handle: failures(func(msg *message.Message) ([]*message.Message, error) { return nil, h.Handle(msg) }), reg: reg}
	}
	for range b.N {
		for r := range rounds {
			order := []string{"one", "thousand"}
			if r%2 == 1 {
				order = []string{"thousand", "one"}
			}
			for _, name := range order {
				c := cs[name]
				run := handleOnce(ctx, b, n, c.handle, c.reg)
				c.took += run
			}
		}
	}
	total := float64(n * b.N * rounds)
	one, thousand := cs["one"].took, cs["thousand"].took
	b.ReportMetric(0, "ns/op")
	b.ReportMetric(float64(one.Nanoseconds())/total, "one_ns/notification")
	b.ReportMetric(float64(thousand.Nanoseconds())/total, "thousand_ns/notification")
	b.ReportMetric(100*float64(one)/float64(thousand), "pct_of_one_storage")

	// Matching alone.
	g := newNotifications("match")
	for name, set := range sets {
		const k = 200_000
		start := time.Now()
		for i := range k {
			if len(set.Match(bucket, g.key(i%1000))) != 1 {
				b.Fatalf("%s: the benchmark storage does not match", name)
			}
		}
		b.ReportMetric(float64(time.Since(start).Nanoseconds())/k, name+"_match_ns")
	}
}

// handleOnce handles n new keys with handle and times it.
func handleOnce(ctx context.Context, b *testing.B, n int, handle message.HandlerFunc, reg *prometheus.Registry) time.Duration {
	g := newNotifications(newID("many"))
	msgs := make([]*message.Message, n)
	for i := range n {
		pm := g.message(i)
		msgs[i] = &message.Message{UUID: pm.ID, Metadata: pm.Attributes, Payload: pm.Data}
		msgs[i].SetContext(ctx)
	}
	before, err := counterSum(reg, "labelsync_tasks_emitted_total")
	if err != nil {
		b.Fatal(err)
	}
	run := inParallel(n, func(i int) error { _, err := handle(msgs[i]); return err })
	if run.err != nil {
		b.Fatal(run.err)
	}
	after, err := counterSum(reg, "labelsync_tasks_emitted_total")
	if err != nil {
		b.Fatal(err)
	}
	if got := int(after - before); got != n {
		b.Fatalf("%d task events for %d new keys", got, n)
	}
	return run.took
}

// idleSyncs answers the API's status reads: no sync ever ran.
type idleSyncs struct{}

func (idleSyncs) Status(context.Context, int64) (syncer.Status, error) {
	return syncer.Status{Status: syncer.StatusInitialized}, nil
}

func (idleSyncs) Request(context.Context, int64, bool) (syncer.Status, error) {
	return syncer.Status{Status: syncer.StatusQueued}, nil
}

// BenchmarkAPIPressure is the notification path (BenchmarkManyStorages'
// handler, 1,000 storages) while one client hammers the storage API with 32
// connections listing all 1,000 storages, against the same path with the
// API idle, alternated LABELSYNC_BENCH_ROUNDS times (default 3). Issue 11:
// a single API client cannot starve the notification path.
func BenchmarkAPIPressure(b *testing.B) {
	n := envInt(b, "LABELSYNC_BENCH_PATH_N", 50_000)
	rounds := envInt(b, "LABELSYNC_BENCH_ROUNDS", 3)
	ctx := context.Background()
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	set := benchSet(b, manyStoragesJSON())
	srv, _ := startNATS(b)
	bus := newBus(ctx, b, srv.URL(), "labelsync-bench-pressure")
	reg := prometheus.NewRegistry()
	m := metrics.New(reg)
	letters := deadletter.NewWriter(bus, "worker", m, logger)
	h := ingest.NewNotifications(ingest.New(bus, letters, m, logger), func() *storages.Set { return set }, m, logger)
	failures, err := deadletter.Middleware(letters, deadletter.DefaultRetry(), logger)
	if err != nil {
		b.Fatal(err)
	}
	handle := failures(func(msg *message.Message) ([]*message.Message, error) { return nil, h.Handle(msg) })

	mux := http.NewServeMux()
	// The worker's default limits (LABELSYNC_API_RATE, LABELSYNC_API_IN_FLIGHT).
	limits := api.Limits{PerSecond: 20, InFlight: 2}
	if os.Getenv("LABELSYNC_BENCH_API_UNLIMITED") == "1" {
		limits = api.Limits{}
	}
	api.New("t", func() *storages.Set { return set }, func() []storages.Export { return nil }, idleSyncs{}, nil, nil, logger).WithLimits(limits).Register(mux)
	apiSrv := httptest.NewServer(mux)
	defer apiSrv.Close()
	hammer := func(stop <-chan struct{}) (ok, throttled *atomic.Int64, done func()) {
		ok, throttled = new(atomic.Int64), new(atomic.Int64)
		var wg sync.WaitGroup
		client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
		for range 32 {
			wg.Go(func() {
				for {
					select {
					case <-stop:
						return
					default:
					}
					req, _ := http.NewRequest("GET", apiSrv.URL+"/api/storages/gcs", nil)
					req.Header.Set("Authorization", "Bearer t")
					resp, err := client.Do(req)
					if err != nil {
						continue
					}
					_, _ = io.Copy(io.Discard, resp.Body)
					_ = resp.Body.Close()
					if resp.StatusCode == http.StatusOK {
						ok.Add(1)
					} else {
						throttled.Add(1)
					}
				}
			})
		}
		return ok, throttled, wg.Wait
	}
	var quiet, pressed time.Duration
	var served, throttled int64
	for range b.N {
		for r := range rounds {
			for _, withAPI := range []bool{r%2 == 0, r%2 == 1} {
				if !withAPI {
					quiet += handleOnce(ctx, b, n, handle, reg)
					continue
				}
				stop := make(chan struct{})
				ok, th, wait := hammer(stop)
				pressed += handleOnce(ctx, b, n, handle, reg)
				close(stop)
				wait()
				served += ok.Load()
				throttled += th.Load()
			}
		}
	}
	b.ReportMetric(0, "ns/op")
	b.ReportMetric(100*float64(quiet)/float64(pressed), "pct_of_quiet")
	b.ReportMetric(float64(served)/pressed.Seconds(), "api_requests/s")
	b.ReportMetric(float64(throttled)/pressed.Seconds(), "api_throttled/s")
}
