package connector_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/labelsync/labelsync/internal/connector"
	"github.com/labelsync/labelsync/internal/deadletter"
	"github.com/labelsync/labelsync/internal/labelstudio"
	"github.com/labelsync/labelsync/internal/ledger"
	"github.com/labelsync/labelsync/internal/lsstub"
	"github.com/labelsync/labelsync/internal/metrics"
	"github.com/labelsync/labelsync/internal/natstest"
	"github.com/labelsync/labelsync/internal/taskbus"
)

// The benchmarks run against the stand-in answering each import in 50 ms
// plus 0.2 ms per task (SPEC §8's speed targets), with the connector's
// defaults: 500 tasks per request, 4 requests at a time. Run them once:
//
//	go test ./internal/connector -run '^$' -bench . -benchtime 1x
//
// LABELSYNC_BENCH_LS_N (default 50000) is the burst size;
// LABELSYNC_BENCH_LS_LAG_SECONDS (default 20) the length of the 100
// events/s run.

const (
	benchPerRequest = 50 * time.Millisecond
	benchPerTask    = 200 * time.Microsecond
	benchBatch      = 500
	benchInFlight   = 4
)

func envInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}

// benchEvent is the task event of object i of a Files-mode storage.
func benchEvent(project int64, i int) (*nats.Msg, string) {
	key := fmt.Sprintf("incoming/bench-%07d.jpg", i)
	ev := taskbus.Event{Event: ledger.Created, TaskID: taskbus.TaskID(1, key, nil), Project: project, StorageID: 1, Bucket: "acme-raw",
		Key: key, Generation: "1700000000000000", Source: "notification", EventTime: "2026-11-27T14:30:03.098Z",
		Task: json.RawMessage(`{"data":{"$undefined$":"gs://acme-raw/` + key + `"}}`)}
	body, _ := json.Marshal(&ev)
	return &nats.Msg{Subject: fmt.Sprintf("labelsync.tasks.%d.created.1.%s", project, ev.TaskID), Data: body}, ev.TaskID
}

// benchRig is NATS, the stand-in and a connector that is not started yet.
type benchRig struct {
	bus *taskbus.Bus
	ls  *lsstub.Server
	c   *connector.Connector
	m   *metrics.Metrics
}

func newBenchRig(b *testing.B) *benchRig {
	b.Helper()
	ls := lsstub.New(lsstub.Options{LegacyToken: token})
	b.Cleanup(ls.Close)
	for _, p := range []int64{7, 8, 9} {
		ls.AddProject(p, "bench")
	}
	ls.SetLatency(benchPerRequest, benchPerTask)
	r := &benchRig{bus: natstest.NewBus(b), ls: ls, m: metrics.New(prometheus.NewRegistry())}
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	client, err := labelstudio.New(ls.URL, token, labelstudio.WithObserver(connector.Observe(r.m)))
	if err != nil {
		b.Fatal(err)
	}
	r.c, err = connector.New(context.Background(), r.bus.JetStream(), client, deadletter.NewWriter(r.bus, connector.Component, r.m, logger), r.m, logger,
		connector.Config{BatchSize: benchBatch, InFlight: benchInFlight, MaxAckPending: envInt("LABELSYNC_BENCH_LS_PENDING", 0)})
	if err != nil {
		b.Fatal(err)
	}
	return r
}

func (r *benchRig) run(b *testing.B) func() {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.c.Run(ctx) }()
	return func() {
		cancel()
		if err := <-done; err != nil {
			b.Error(err)
		}
	}
}

// rawImports sends n tasks to project in requests of batch tasks, inFlight
// at a time, with a plain HTTP client: the work without the connector.
func rawImports(b *testing.B, ls *lsstub.Server, project int64, n, batch, inFlight int) time.Duration {
	b.Helper()
	var bodies [][]byte
	for start := 0; start < n; start += batch {
		var tasks []json.RawMessage
		for i := start; i < min(start+batch, n); i++ {
			m, id := benchEvent(project, i)
			var ev taskbus.Event
			_ = json.Unmarshal(m.Data, &ev)
			t, _ := labelstudio.ImportTask(ev.Task, labelstudio.Meta{LabelsyncTaskID: id, StorageID: 1, Bucket: ev.Bucket, Key: ev.Key, Generation: ev.Generation})
			tasks = append(tasks, t)
		}
		body, _ := json.Marshal(tasks)
		bodies = append(bodies, body)
	}
	url := ls.URL + "/api/projects/" + strconv.FormatInt(project, 10) + "/import?return_task_ids=true"
	work := make(chan []byte)
	var wg sync.WaitGroup
	start := time.Now()
	for range inFlight {
		wg.Go(func() {
			for body := range work {
				req, _ := http.NewRequest(http.MethodPost, url, bytes.NewReader(body))
				req.Header.Set("Content-Type", "application/json")
				req.Header.Set("Authorization", "Token "+token)
				resp, err := http.DefaultClient.Do(req)
				if err != nil {
					b.Error(err)
					continue
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				_ = resp.Body.Close()
				if resp.StatusCode != http.StatusCreated {
					b.Errorf("raw import: %s", resp.Status)
				}
			}
		})
	}
	for _, body := range bodies {
		work <- body
	}
	close(work)
	wg.Wait()
	return time.Since(start)
}

// BenchmarkImport: a burst of created task events already in the stream,
// into Label Studio through the connector, against raw import requests of
// the same size and concurrency in the same run, and against one request
// per task.
func BenchmarkImport(b *testing.B) {
	n := envInt("LABELSYNC_BENCH_LS_N", 50_000)
	r := newBenchRig(b)
	for range b.N {
		rawBefore := rawImports(b, r.ls, 8, n, benchBatch, benchInFlight)

		js := r.bus.JetStream()
		var futures []jetstream.PubAckFuture
		for i := range n {
			m, _ := benchEvent(7, i)
			f, err := js.PublishMsgAsync(m)
			if err != nil {
				b.Fatal(err)
			}
			futures = append(futures, f)
		}
		for _, f := range futures {
			select {
			case <-f.Ok():
			case err := <-f.Err():
				b.Fatal(err)
			}
		}
		start := time.Now()
		stop := r.run(b)
		// Not NumPending 0: the server counts a stored message as pending
		// a moment after it acknowledged the publish (natstest.CaughtUp).
		for natstest.CaughtUp(context.Background(), js, taskbus.TasksStream, connector.ConsumerName, "labelsync.tasks.>") != nil {
			time.Sleep(10 * time.Millisecond)
		}
		elapsed := time.Since(start)
		stop()

		rawAfter := rawImports(b, r.ls, 8, n, benchBatch, benchInFlight)
		perTaskN := 400
		perTask := rawImports(b, r.ls, 9, perTaskN, 1, benchInFlight)

		tasks := r.ls.Tasks(7)
		seen := map[string]bool{}
		for _, t := range tasks {
			var m labelstudio.Meta
			_ = json.Unmarshal(t.Meta, &m)
			if seen[m.LabelsyncTaskID] {
				b.Fatalf("task %s imported twice", m.LabelsyncTaskID)
			}
			seen[m.LabelsyncTaskID] = true
		}
		if len(tasks) != n {
			b.Fatalf("%d tasks in Label Studio, want %d", len(tasks), n)
		}
		rate := float64(n) / elapsed.Seconds()
		raw := float64(2*n) / (rawBefore + rawAfter).Seconds()
		one := float64(perTaskN) / perTask.Seconds()
		b.ReportMetric(rate, "tasks/s")
		b.ReportMetric(raw, "raw-tasks/s")
		b.ReportMetric(100*rate/raw, "%-of-raw")
		b.ReportMetric(one, "per-task-tasks/s")
		b.ReportMetric(rate/one, "x-per-task")
		b.ReportMetric(float64(r.ls.Requests("import")-2*((n+benchBatch-1)/benchBatch)-perTaskN), "connector-requests")
		b.Logf("%d tasks: connector %.0f tasks/s (%s), raw %.0f tasks/s (%s, %s), one request per task %.0f tasks/s; %.1f %% of raw, %.0f× one per task",
			n, rate, elapsed.Round(time.Millisecond), raw, rawBefore.Round(time.Millisecond), rawAfter.Round(time.Millisecond), one, 100*rate/raw, rate/one)
	}
}

// BenchmarkLag: task events at 100/s; the time from each event's
// publication to its Label Studio task id (the stand-in's commit).
func BenchmarkLag(b *testing.B) {
	seconds := envInt("LABELSYNC_BENCH_LS_LAG_SECONDS", 20)
	r := newBenchRig(b)
	for range b.N {
		stop := r.run(b)
		js := r.bus.JetStream()
		published := map[string]time.Time{}
		total := seconds * 100
		tick := time.NewTicker(10 * time.Millisecond)
		for i := range total {
			<-tick.C
			m, id := benchEvent(7, i)
			published[id] = time.Now()
			if _, err := js.PublishMsg(context.Background(), m); err != nil {
				b.Fatal(err)
			}
		}
		tick.Stop()
		deadline := time.Now().Add(30 * time.Second)
		for len(r.ls.Tasks(7)) < total && time.Now().Before(deadline) {
			time.Sleep(50 * time.Millisecond)
		}
		stop()
		tasks := r.ls.Tasks(7)
		if len(tasks) != total {
			b.Fatalf("%d tasks in Label Studio, want %d", len(tasks), total)
		}
		var lags []time.Duration
		for _, t := range tasks {
			var m labelstudio.Meta
			_ = json.Unmarshal(t.Meta, &m)
			lags = append(lags, t.CreatedAt.Sub(published[m.LabelsyncTaskID]))
		}
		slices.Sort(lags)
		p := func(q float64) time.Duration { return lags[int(q*float64(len(lags)-1))] }
		b.ReportMetric(float64(p(0.5).Microseconds())/1000, "p50-ms")
		b.ReportMetric(float64(p(0.99).Microseconds())/1000, "p99-ms")
		b.ReportMetric(float64(lags[len(lags)-1].Microseconds())/1000, "max-ms")
		b.ReportMetric(float64(r.ls.Requests("import")), "import-requests")
		b.Logf("%d events at 100/s: lag p50 %s, p99 %s, max %s, %d import requests", total, p(0.5).Round(time.Millisecond), p(0.99).Round(time.Millisecond), lags[len(lags)-1].Round(time.Millisecond), r.ls.Requests("import"))
	}
}
