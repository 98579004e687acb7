package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"sort"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/parquet-go/parquet-go"

	"github.com/labelsync/labelsync/internal/ingest"
	"github.com/labelsync/labelsync/internal/ledger"
	"github.com/labelsync/labelsync/internal/taskbus"
	"github.com/labelsync/labelsync/internal/worker"
)

// A Tasks-mode storage (use_blob_urls false) beside the Files-mode ones.
const tasksStorages = `{"import": [
 {"id": 1, "project": 7, "bucket": "acme-raw", "prefix": "incoming", "use_blob_urls": true, "recursive_scan": true},
 {"id": 3, "project": 9, "bucket": "acme-raw", "prefix": "tasks", "recursive_scan": true}
]}`

type rowEvent struct {
	Key   string
	Row   int
	Event ledger.Kind
	Task  string
}

func rowEvents(evs []taskbus.Event, key string) []rowEvent {
	var out []rowEvent
	for _, e := range evs {
		if e.Key != key {
			continue
		}
		r := rowEvent{Key: e.Key, Row: -1, Event: e.Event, Task: string(e.Task)}
		if e.RowIndex != nil {
			r.Row = *e.RowIndex
		}
		out = append(out, r)
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].Row < out[j].Row })
	return out
}

func TestTasksImport(t *testing.T) {
	t.Parallel()
	forEachBackend(t, func(t *testing.T, b backend) {
		h := newHarness(t, b, tasksStorages)
		rw := h.startWorker()

		h.upload("acme-raw", "tasks/array.json", `[{"image": "a.jpg", "n": 1.50}, {"data": {"image": "b.jpg"}, "annotations": [{"result": []}], "predictions": []}]`)
		h.upload("acme-raw", "tasks/single.json", ` {"data": {"text": "hello"}, "meta": {"src": "x"}}`)
		h.upload("acme-raw", "tasks/lines.jsonl", "{\"text\": \"one\"}\n{broken\n\n{\"text\": \"three\"}\n")
		h.upload("acme-raw", "tasks/noext", "{\"text\": \"a\"}\n{\"text\": \"b\"}\n")
		h.upload("acme-raw", "tasks/picture.png", "\x89PNG")
		evs := h.waitSettled(rw, 5)

		want := map[string][]rowEvent{
			"tasks/array.json": {
				{"tasks/array.json", 0, ledger.Created, `{"data":{"image":"a.jpg","n":1.50}}`},
				{"tasks/array.json", 1, ledger.Created, `{"data":{"image":"b.jpg"},"annotations":[{"result":[]}],"predictions":[]}`},
			},
			"tasks/single.json": {{"tasks/single.json", 0, ledger.Created, `{"data":{"text":"hello"},"meta":{"src":"x"}}`}},
			"tasks/lines.jsonl": {
				{"tasks/lines.jsonl", 0, ledger.Created, `{"data":{"text":"one"}}`},
				{"tasks/lines.jsonl", 2, ledger.Created, `{"data":{"text":"three"}}`},
			},
			"tasks/noext": {
				{"tasks/noext", 0, ledger.Created, `{"data":{"text":"a"}}`},
				{"tasks/noext", 1, ledger.Created, `{"data":{"text":"b"}}`},
			},
		}
		for key, w := range want {
			if got := rowEvents(evs, key); fmt.Sprint(got) != fmt.Sprint(w) {
				t.Errorf("%s:\n got %v\nwant %v", key, got, w)
			}
		}
		if got := rowEvents(evs, "tasks/picture.png"); len(got) != 0 {
			t.Errorf("picture.png made events: %v", got)
		}
		for _, e := range evs {
			if e.RowIndex == nil || e.TaskID != taskbus.TaskID(3, e.Key, e.RowIndex) || e.Project != 9 {
				t.Errorf("event fields: %+v", e)
			}
		}
		eventually(t, 30*time.Second, "dead letters", func() error {
			if n := len(h.deadLetters()); n < 2 {
				return fmt.Errorf("%d", n)
			}
			return nil
		})
		dls := h.deadLetters()
		reasons := []string{}
		for _, d := range dls {
			reasons = append(reasons, d.Reason)
		}
		joined := strings.Join(reasons, " | ")
		if len(dls) != 2 || !strings.Contains(joined, "row 1") || !strings.Contains(joined, "picture.png") {
			t.Fatalf("dead letters: %s", joined)
		}
		for _, d := range dls {
			if strings.Contains(d.Reason, "row 1") && (d.Source["row"] != float64(1) || d.Source["key"] != "tasks/lines.jsonl" || d.Data == nil || *d.Data != "{broken") {
				t.Errorf("bad-record dead letter: %+v", d)
			}
		}

		// A new generation: row 0 changed, row 1 still bad, row 2 the
		// same, row 3 new.
		h.upload("acme-raw", "tasks/lines.jsonl", "{\"text\": \"ONE\"}\n{broken\n{\"text\": \"three\"}\n{\"text\": \"four\"}\n")
		h.waitFor(func(evs []taskbus.Event) bool { return len(rowEvents(evs, "tasks/lines.jsonl")) >= 4 })
		// Then a shorter one: rows 2 and 3 vanish.
		h.upload("acme-raw", "tasks/lines.jsonl", "{\"text\": \"ONE\"}\n")
		h.waitFor(func(evs []taskbus.Event) bool { return len(rowEvents(evs, "tasks/lines.jsonl")) >= 6 })
		// Then the file goes: row 0 is deleted.
		h.remove("acme-raw", "tasks/lines.jsonl")
		h.waitFor(func(evs []taskbus.Event) bool { return len(rowEvents(evs, "tasks/lines.jsonl")) >= 7 })
		evs = h.settle()
		var history []string
		for _, e := range evs {
			if e.Key == "tasks/lines.jsonl" {
				history = append(history, fmt.Sprintf("%d %s %s", *e.RowIndex, e.Event, e.Task))
			}
		}
		wantHistory := []string{
			`0 created {"data":{"text":"one"}}`,
			`2 created {"data":{"text":"three"}}`,
			`0 updated {"data":{"text":"ONE"}}`,
			`3 created {"data":{"text":"four"}}`,
			`2 deleted `, `3 deleted `,
			`0 deleted `,
		}
		if fmt.Sprint(sortedWithin(history)) != fmt.Sprint(sortedWithin(wantHistory)) {
			t.Fatalf("history of tasks/lines.jsonl:\n got %q\nwant %q", history, wantHistory)
		}
	})
}

// sortedWithin sorts a copy: concurrent row appends of one generation may
// land in any order.
func sortedWithin(s []string) []string {
	c := append([]string(nil), s...)
	sort.Strings(c)
	return c
}

func TestTasksOversizeFile(t *testing.T) {
	t.Parallel()
	h := newHarness(t, backends[0], tasksStorages)
	cfg := h.config()
	cfg.MaxObjectBytes = 64
	rw := h.startWorkerWith(cfg)
	h.upload("acme-raw", "tasks/big.jsonl", strings.Repeat("{\"text\": \"xxxxxxxx\"}\n", 10))
	h.upload("acme-raw", "tasks/small.json", `{"text": "ok"}`)
	evs := h.waitSettled(rw, 2)
	if n := len(rowEvents(evs, "tasks/big.jsonl")); n != 0 {
		t.Fatalf("oversize file made %d events", n)
	}
	if n := len(rowEvents(evs, "tasks/small.json")); n != 1 {
		t.Fatalf("small file made %d events, want 1", n)
	}
	eventually(t, 30*time.Second, "dead letter", func() error {
		for _, d := range h.deadLetters() {
			if d.Source["key"] == "tasks/big.jsonl" || strings.Contains(d.Reason, "big.jsonl") {
				return nil
			}
		}
		return fmt.Errorf("none for big.jsonl: %+v", h.deadLetters())
	})
}

type imageRow struct {
	Image string  `parquet:"image"`
	Score float64 `parquet:"score"`
	N     int64   `parquet:"n"`
}

// TestTasksParquet: one task per row, columns as data fields, read from GCS
// with ranged reads of the notified generation.
func TestTasksParquet(t *testing.T) {
	t.Parallel()
	forEachBackend(t, func(t *testing.T, b backend) {
		h := newHarness(t, b, tasksStorages)
		rw := h.startWorker()
		var buf bytes.Buffer
		w := parquet.NewGenericWriter[imageRow](&buf)
		rows := []imageRow{{"gs://acme-raw/img/1.jpg", 0.5, 1}, {"gs://acme-raw/img/2.jpg", 0.25, 2}, {"gs://acme-raw/img/3.jpg", 1, 3}}
		if _, err := w.Write(rows); err != nil {
			t.Fatal(err)
		}
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
		h.upload("acme-raw", "tasks/table.parquet", buf.String())
		evs := h.waitSettled(rw, 1)
		got := rowEvents(evs, "tasks/table.parquet")
		if len(got) != 3 {
			t.Fatalf("%d events, want 3: %v", len(got), got)
		}
		for i, e := range got {
			var task struct {
				Data imageRow `json:"data"`
			}
			if err := json.Unmarshal([]byte(e.Task), &task); err != nil {
				t.Fatalf("row %d task %s: %v", i, e.Task, err)
			}
			if e.Row != i || e.Event != ledger.Created || task.Data != rows[i] {
				t.Errorf("row %d = %+v (data %+v), want %+v", i, e, task.Data, rows[i])
			}
		}
	})
}

// TestTasksCrashBeforeCommit fails the pipeline, as a crash would, after a
// file's rows were appended but before its commit record, several times:
// the retries append only what is missing, so every row event is there once.
func TestTasksCrashBeforeCommit(t *testing.T) {
	t.Parallel()
	for _, step := range []string{"append", "appended"} {
		t.Run(step, func(t *testing.T) {
			t.Parallel()
			h := newHarness(t, backends[0], tasksStorages)
			var crashes atomic.Int64
			rw := h.startWorker(worker.WithIngestOptions(ingest.WithStepHook(func(_ context.Context, name string) error {
				if name == step && crashes.Add(1) <= 3 {
					return errors.New("simulated crash at " + name)
				}
				return nil
			})))
			var lines strings.Builder
			for i := range 300 {
				fmt.Fprintf(&lines, "{\"n\": %d}\n", i)
			}
			h.upload("acme-raw", "tasks/crash.jsonl", lines.String())
			h.waitFor(func(evs []taskbus.Event) bool { return len(evs) >= 300 })
			// A second generation changes every tenth row.
			lines.Reset()
			for i := range 300 {
				if i%10 == 0 {
					fmt.Fprintf(&lines, "{\"n\": %d, \"v\": 2}\n", i)
				} else {
					fmt.Fprintf(&lines, "{\"n\": %d}\n", i)
				}
			}
			crashes.Store(0)
			h.upload("acme-raw", "tasks/crash.jsonl", lines.String())
			h.waitFor(func(evs []taskbus.Event) bool { return len(evs) >= 330 })
			evs := h.waitSettled(rw, 2)
			seen := map[string]int{}
			for _, e := range evs {
				seen[fmt.Sprintf("%d %s %s", *e.RowIndex, e.Event, e.Generation)]++
			}
			for k, n := range seen {
				if n != 1 {
					t.Errorf("%s appended %d times", k, n)
				}
			}
			if c, u := count(evs, ledger.Created), count(evs, ledger.Updated); c != 300 || u != 30 || len(evs) != 330 {
				t.Fatalf("created %d updated %d total %d; want 300, 30, 330", c, u, len(evs))
			}
		})
	}
}

// TestTasksBadRowsOnEveryEdge is issue 9's report, as a new user met it:
// with an operator's 16 KiB message cap on LABELSYNC_TASKS, a JSONL row of
// 64 KiB, and one of 2 MiB (over NATS's 1 MiB max_payload too), each
// between two good rows. Each oversize row is dead-lettered alone (code
// too_large), the good rows after it import, and a sync of the same
// storage after JetStream's duplicate window writes no second dead letter.
func TestTasksBadRowsOnEveryEdge(t *testing.T) {
	t.Parallel()
	forEachBackend(t, func(t *testing.T, b backend) {
		h := newHarness(t, b, tasksStorages)
		ctx := h.ctx
		js := h.bus.JetStream()
		// The operator's choices, made before the worker first starts:
		// the worker keeps them.
		tasksCfg := taskbus.StreamConfigs()[taskbus.TasksStream]
		tasksCfg.MaxMsgSize = 16 << 10
		if _, err := js.CreateStream(ctx, tasksCfg); err != nil {
			t.Fatal(err)
		}
		dlCfg := taskbus.StreamConfigs()[taskbus.DeadLetterStream]
		dlCfg.Duplicates = time.Second
		if _, err := js.CreateStream(ctx, dlCfg); err != nil {
			t.Fatal(err)
		}
		cfg := h.config()
		cfg.APIToken = "s3cret"
		rw := h.startWorkerWith(cfg)

		pad := func(n int) string { return strings.Repeat("x", n) }
		h.upload("acme-raw", "tasks/capped.jsonl", fmt.Sprintf("{\"n\": 0}\n{\"n\": 1, \"pad\": %q}\n{\"n\": 2}\n", pad(64<<10)))
		h.upload("acme-raw", "tasks/huge.jsonl", fmt.Sprintf("{\"n\": 0}\n{\"n\": 1, \"pad\": %q}\n{\"n\": 2}\n", pad(2<<20)))
		evs := h.waitSettled(rw, 2)
		for _, key := range []string{"tasks/capped.jsonl", "tasks/huge.jsonl"} {
			want := []rowEvent{{key, 0, ledger.Created, `{"data":{"n":0}}`}, {key, 2, ledger.Created, `{"data":{"n":2}}`}}
			if got := rowEvents(evs, key); fmt.Sprint(got) != fmt.Sprint(want) {
				t.Errorf("%s:\n got %v\nwant %v", key, got, want)
			}
		}
		letters := func() map[string]int {
			out := map[string]int{}
			for _, d := range h.deadLetters() {
				out[fmt.Sprintf("%v row %v %s", d.Source["key"], d.Source["row"], d.Code)]++
			}
			return out
		}
		want := map[string]int{"tasks/capped.jsonl row 1 too_large": 1, "tasks/huge.jsonl row 1 too_large": 1}
		eventually(t, 30*time.Second, "dead letters", func() error {
			if got := letters(); fmt.Sprint(got) != fmt.Sprint(want) {
				return fmt.Errorf("got %v, want %v", got, want)
			}
			return nil
		})

		time.Sleep(1500 * time.Millisecond) // past the duplicate window
		if code, st := h.api(rw, "POST", "/api/storages/gcs/3/sync", "s3cret", ""); code != http.StatusOK {
			t.Fatalf("sync: %d %v", code, st)
		}
		eventually(t, 60*time.Second, "sync completed", func() error {
			if _, st := h.api(rw, "GET", "/api/storages/gcs/3", "s3cret", ""); st["status"] != "completed" {
				return fmt.Errorf("status %v", st["status"])
			}
			return nil
		})
		if got := letters(); fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("after a sync past the duplicate window, dead letters %v, want %v", got, want)
		}
		if n := len(h.settle()); n != len(evs) {
			t.Errorf("the sync emitted %d more events, want none", n-len(evs))
		}
		s, err := js.Stream(ctx, taskbus.TasksStream)
		if err != nil {
			t.Fatal(err)
		}
		if got := s.CachedInfo().Config.MaxMsgSize; got != 16<<10 {
			t.Errorf("the worker changed the operator's max_msg_size to %d", got)
		}
	})
}
