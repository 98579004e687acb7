package ingest_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"runtime"
	"runtime/debug"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/labelsync/labelsync/internal/deadletter"
	"github.com/labelsync/labelsync/internal/fault"
	"github.com/labelsync/labelsync/internal/ingest"
	"github.com/labelsync/labelsync/internal/ledger"
	"github.com/labelsync/labelsync/internal/metrics"
	"github.com/labelsync/labelsync/internal/natstest"
	"github.com/labelsync/labelsync/internal/storages"
	"github.com/labelsync/labelsync/internal/taskbus"
	"github.com/labelsync/labelsync/internal/taskfile"
)

// files is an in-memory bucket of Tasks-mode files, read through the real
// taskfile parser. GCS reading itself is covered by the end-to-end tests.
type files map[string]func() io.Reader

func (f files) Records(_ context.Context, _ *storages.Import, obj ingest.Object, _ int64, yield func(taskfile.Record) bool) error {
	open, ok := f[obj.Key]
	if !ok {
		return fmt.Errorf("no file %s: %w", obj.Key, ingest.ErrGone)
	}
	format, err := taskfile.FormatOf(obj.Key)
	if err != nil {
		return err
	}
	return taskfile.Read(open(), format, taskfile.Options{}, yield)
}

func content(s string) func() io.Reader { return func() io.Reader { return strings.NewReader(s) } }

// faults answers publishes by subject: a rule's error is returned for
// the first times publishes whose subject starts or ends with match
// (times < 0: always).
type faults struct {
	mu    sync.Mutex
	rules []*rule
}

type rule struct {
	match string
	err   error
	times int
}

func (f *faults) add(match string, err error, times int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.rules = append(f.rules, &rule{match, err, times})
}

func (f *faults) answer(subject string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, r := range f.rules {
		if r.times != 0 && (strings.HasPrefix(subject, r.match) || strings.HasSuffix(subject, r.match)) {
			r.times--
			return r.err
		}
	}
	return nil
}

// letters wraps the real writer and fails it on demand.
type letters struct {
	w     *deadletter.Writer
	mu    sync.Mutex
	fails int // < 0: always
}

func (l *letters) Write(ctx context.Context, letter deadletter.Letter) error {
	l.mu.Lock()
	fail := l.fails != 0
	if l.fails > 0 {
		l.fails--
	}
	l.mu.Unlock()
	if fail {
		return fault.Transient(fault.Unavailable, errors.New("dead-letter stream unavailable"))
	}
	return l.w.Write(ctx, letter)
}

type fixture struct {
	js      jetstream.JetStream
	p       *ingest.Pipeline
	faults  *faults
	letters *letters
	files   files
}

type fixtureOptions struct {
	// tasksMaxMsg, if set, is an operator's max_msg_size on LABELSYNC_TASKS.
	tasksMaxMsg int32
}

func newFixture(t *testing.T, o fixtureOptions) *fixture {
	t.Helper()
	ctx := context.Background()
	srv := natstest.Server(t)
	nc := natstest.Connect(t, srv.URL())
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	if o.tasksMaxMsg > 0 {
		cfg := taskbus.StreamConfigs()[taskbus.TasksStream]
		cfg.MaxMsgSize = o.tasksMaxMsg
		if _, err := js.CreateStream(ctx, cfg); err != nil {
			t.Fatal(err)
		}
	}
	f := &fixture{js: js, faults: &faults{}, files: files{}}
	bus, err := taskbus.New(nc, 5*time.Second, taskbus.WithPublishFault(f.faults.answer))
	if err != nil {
		t.Fatal(err)
	}
	if err := bus.EnsureStreams(ctx, taskbus.TasksStream, taskbus.DeadLetterStream); err != nil {
		t.Fatal(err)
	}
	logger := slog.New(slog.DiscardHandler)
	m := metrics.New(prometheus.NewRegistry())
	f.letters = &letters{w: deadletter.NewWriter(bus, "worker", m, logger)}
	f.p = ingest.New(bus, f.letters, m, logger, ingest.WithTasks(f.files, bus))
	return f
}

var (
	tasksStorage = storage(false)
	filesStorage = storage(true)
)

func storage(blobURLs bool) *storages.Import {
	st := &storages.Import{ID: 1, Project: 7, Bucket: "acme-raw", UseBlobURLs: blobURLs, RecursiveScan: true}
	if err := st.Normalize(); err != nil {
		panic(err)
	}
	return st
}

func (f *fixture) apply(t *testing.T, st *storages.Import, key string, gen int64) (ledger.Outcome, error) {
	t.Helper()
	o := ledger.Observation{Present: true, Generation: gen, EventTime: time.Now(), Source: ledger.SourceNotification}
	return f.p.Apply(context.Background(), st, ingest.Object{Bucket: "acme-raw", Key: key}, o, nil)
}

// stored is what the streams hold: task events by row (-1 for Files mode)
// and event, commit records, dead letters by row and code.
type stored struct {
	tasks   map[string]int // "<row>:<event>" → count
	commits int
	letters map[string]int // "<row>:<code>" → count
}

func (f *fixture) stored(t *testing.T) stored {
	t.Helper()
	s := stored{tasks: map[string]int{}, letters: map[string]int{}}
	for _, m := range f.msgs(t, taskbus.TasksStream) {
		if strings.HasPrefix(m.Subject, "labelsync.ledger.") {
			if !strings.Contains(m.Subject, ".tombstone.") {
				s.commits++
			}
			continue
		}
		var ev taskbus.Event
		if err := json.Unmarshal(m.Data, &ev); err != nil {
			t.Fatal(err)
		}
		row := -1
		if ev.RowIndex != nil {
			row = *ev.RowIndex
		}
		s.tasks[fmt.Sprintf("%d:%s", row, ev.Event)]++
	}
	for _, m := range f.msgs(t, taskbus.DeadLetterStream) {
		var l struct {
			Code   string `json:"code"`
			Source struct {
				Row *int `json:"row"`
			} `json:"source"`
		}
		if err := json.Unmarshal(m.Data, &l); err != nil {
			t.Fatal(err)
		}
		row := -1
		if l.Source.Row != nil {
			row = *l.Source.Row
		}
		s.letters[fmt.Sprintf("%d:%s", row, l.Code)]++
	}
	return s
}

func (f *fixture) msgs(t *testing.T, stream string) []*jetstream.RawStreamMsg {
	t.Helper()
	return natstest.Messages(t, f.js, stream)
}

func jsonl(rows ...string) string { return strings.Join(rows, "\n") + "\n" }

func row(i, size int) string {
	return fmt.Sprintf(`{"i":%d,"pad":"%s"}`, i, strings.Repeat("x", size))
}

func tasks(kv ...any) map[string]int {
	m := map[string]int{}
	for i := 0; i < len(kv); i += 2 {
		m[kv[i].(string)] = kv[i+1].(int)
	}
	return m
}

func check(t *testing.T, got stored, wantTasks, wantLetters map[string]int, wantCommits int) {
	t.Helper()
	if fmt.Sprint(got.tasks) != fmt.Sprint(wantTasks) {
		t.Errorf("task events %v, want %v", got.tasks, wantTasks)
	}
	if fmt.Sprint(got.letters) != fmt.Sprint(wantLetters) {
		t.Errorf("dead letters %v, want %v", got.letters, wantLetters)
	}
	if got.commits != wantCommits {
		t.Errorf("%d commit records, want %d", got.commits, wantCommits)
	}
}

// One bad row never costs the good rows after it, and is never skipped: it
// is dead-lettered alone, with the code that says why.
func TestOneBadRowNeverCostsTheOthers(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name    string
		opts    fixtureOptions
		file    string
		fault   func(f *faults)
		letters map[string]int
		tasks   map[string]int
	}{
		{
			name:    "a 64 KiB row under an operator's 16 KiB cap",
			opts:    fixtureOptions{tasksMaxMsg: 16 << 10},
			file:    jsonl(row(0, 10), row(1, 64<<10), row(2, 10)),
			letters: tasks("1:too_large", 1),
			tasks:   tasks("0:created", 1, "2:created", 1),
		},
		{
			name:    "a 2 MiB row, over NATS's 1 MiB max_payload",
			file:    jsonl(row(0, 10), row(1, 2<<20), row(2, 10)),
			letters: tasks("1:too_large", 1),
			tasks:   tasks("0:created", 1, "2:created", 1),
		},
		{
			name: "the server refuses a row for its size",
			file: jsonl(row(0, 10), row(1, 10), row(2, 10)),
			fault: func(f *faults) {
				f.add(".1", &jetstream.APIError{Code: 400, ErrorCode: jetstream.JSErrCodeStreamMessageExceedsMaximum, Description: "message size exceeds maximum allowed"}, -1)
			},
			letters: tasks("1:too_large", 1),
			tasks:   tasks("0:created", 1, "2:created", 1),
		},
		{
			name: "the server refuses a row's headers",
			file: jsonl(row(0, 10), row(1, 10), row(2, 10)),
			fault: func(f *faults) {
				f.add(".1", &jetstream.APIError{Code: 400, ErrorCode: 10097, Description: "header size exceeds maximum allowed of 64k"}, -1)
			},
			letters: tasks("1:too_large", 1),
			tasks:   tasks("0:created", 1, "2:created", 1),
		},
		{
			name:    "a row that does not parse",
			file:    jsonl(row(0, 10), `{"i": 1,`, row(2, 10)),
			letters: tasks("1:bad_record", 1),
			tasks:   tasks("0:created", 1, "2:created", 1),
		},
		{
			name:    "a row nested deeper than encoding/json allows",
			file:    jsonl(row(0, 10), `{"a":`+strings.Repeat("[", 10001)+strings.Repeat("]", 10001)+`}`, row(2, 10)),
			letters: tasks("1:bad_record", 1),
			tasks:   tasks("0:created", 1, "2:created", 1),
		},
		{
			name:    "a file that is all bad lines",
			file:    jsonl("{", "[1,", `{"x"}`),
			letters: tasks("0:bad_record", 1, "1:bad_record", 1, "2:bad_record", 1),
			tasks:   tasks(),
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			f := newFixture(t, tt.opts)
			f.files["tasks.jsonl"] = content(tt.file)
			if tt.fault != nil {
				tt.fault(f.faults)
			}
			// Delivered, redelivered, and synced after the duplicate
			// window: nothing twice.
			for i := range 3 {
				outcome, err := f.apply(t, tasksStorage, "tasks.jsonl", 5)
				if err != nil {
					t.Fatalf("apply %d: %v", i, err)
				}
				if want := []ledger.Outcome{ledger.DeadLetter, ledger.Duplicate, ledger.Duplicate}[i]; outcome != want {
					t.Errorf("apply %d: outcome %s, want %s", i, outcome, want)
				}
			}
			check(t, f.stored(t), tt.tasks, tt.letters, 1)
		})
	}
}

// Faults injected at each publish: once, always, and of each class, for
// single events, rows, commit records and dead letters.
func TestPublishFaults(t *testing.T) {
	t.Parallel()
	timeout := nats.ErrTimeout
	noResponders := nats.ErrNoResponders
	tooLarge := &jetstream.APIError{Code: 400, ErrorCode: jetstream.JSErrCodeStreamMessageExceedsMaximum, Description: "message size exceeds maximum allowed"}
	conflict := &jetstream.APIError{Code: 400, ErrorCode: jetstream.JSErrCodeStreamWrongLastSequence, Description: "wrong last sequence"}
	good := jsonl(row(0, 10), row(1, 10), row(2, 10))
	withBad := jsonl(row(0, 10), "{", row(2, 10))
	type attempt struct {
		outcome ledger.Outcome
		class   fault.Class // of the error; -1: no error
	}
	ok := func(o ledger.Outcome) attempt { return attempt{o, -1} }
	failed := attempt{0, fault.ClassTransient}
	tests := []struct {
		name        string
		st          *storages.Import
		file        string
		match       string
		err         error
		times       int
		dlFails     int
		attempts    []attempt
		tasks       map[string]int
		letters     map[string]int
		wantCommits int
	}{
		{"single event: timeout once", filesStorage, "", "labelsync.tasks", timeout, 1, 0,
			[]attempt{failed, ok(ledger.Emitted), ok(ledger.Duplicate)}, tasks("-1:created", 1), tasks(), 0},
		{"single event: no responders always", filesStorage, "", "labelsync.tasks", noResponders, -1, 0,
			[]attempt{failed, failed}, tasks(), tasks(), 0},
		{"single event: too large", filesStorage, "", "labelsync.tasks", tooLarge, -1, 0,
			[]attempt{ok(ledger.DeadLetter), ok(ledger.DeadLetter)}, tasks(), tasks("-1:too_large", 1), 0},
		{"single event: lost race once", filesStorage, "", "labelsync.tasks", conflict, 1, 0,
			[]attempt{ok(ledger.Emitted), ok(ledger.Duplicate)}, tasks("-1:created", 1), tasks(), 0},
		{"row: timeout once", tasksStorage, good, ".1", timeout, 1, 0,
			[]attempt{failed, ok(ledger.Emitted), ok(ledger.Duplicate)}, tasks("0:created", 1, "1:created", 1, "2:created", 1), tasks(), 1},
		// The file stops at the first row that may succeed later: it is
		// retried whole, and rows already appended are skipped then.
		{"row: timeout always", tasksStorage, good, ".1", timeout, -1, 0,
			[]attempt{failed, failed}, tasks("0:created", 1), tasks(), 0},
		{"row: lost race once", tasksStorage, good, ".1", conflict, 1, 0,
			[]attempt{failed, ok(ledger.Emitted), ok(ledger.Duplicate)}, tasks("0:created", 1, "1:created", 1, "2:created", 1), tasks(), 1},
		{"commit record: timeout once", tasksStorage, good, "labelsync.ledger", timeout, 1, 0,
			[]attempt{failed, ok(ledger.Duplicate), ok(ledger.Duplicate)}, tasks("0:created", 1, "1:created", 1, "2:created", 1), tasks(), 1},
		{"commit record: no responders always", tasksStorage, good, "labelsync.ledger", noResponders, -1, 0,
			[]attempt{failed, failed}, tasks("0:created", 1, "1:created", 1, "2:created", 1), tasks(), 0},
		{"commit record: too large", tasksStorage, good, "labelsync.ledger", tooLarge, -1, 0,
			[]attempt{ok(ledger.DeadLetter), ok(ledger.DeadLetter)}, tasks("0:created", 1, "1:created", 1, "2:created", 1), tasks("-1:too_large", 1), 0},
		{"dead letter: unavailable once", tasksStorage, withBad, "", nil, 0, 1,
			[]attempt{failed, ok(ledger.DeadLetter), ok(ledger.Duplicate)}, tasks("0:created", 1, "2:created", 1), tasks("1:bad_record", 1), 1},
		{"dead letter: unavailable always", tasksStorage, withBad, "", nil, 0, -1,
			[]attempt{failed, failed}, tasks("0:created", 1), tasks(), 0},
		{"dead letter of a too-large event: unavailable once", filesStorage, "", "labelsync.tasks", tooLarge, -1, 1,
			[]attempt{failed, ok(ledger.DeadLetter)}, tasks(), tasks("-1:too_large", 1), 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			f := newFixture(t, fixtureOptions{})
			key := "cat.jpg"
			if !tt.st.UseBlobURLs {
				key = "tasks.jsonl"
				f.files[key] = content(tt.file)
			}
			if tt.err != nil {
				f.faults.add(tt.match, tt.err, tt.times)
			}
			f.letters.fails = tt.dlFails
			for i, want := range tt.attempts {
				outcome, err := f.apply(t, tt.st, key, 5)
				got := attempt{outcome, -1}
				if err != nil {
					_, got.class = fault.Of(err)
					got.outcome = 0
				}
				if got != want {
					t.Errorf("attempt %d: outcome %s, error %v (class %v); want outcome %s, class %v", i, outcome, err, got.class, want.outcome, want.class)
				}
			}
			check(t, f.stored(t), tt.tasks, tt.letters, tt.wantCommits)
		})
	}
}

// A 100 MiB line is read in bounded memory: it is dead-lettered as too
// large (with its start), and the rows around it import.
func TestHugeLineBoundedMemory(t *testing.T) {
	if testing.Short() {
		t.Skip("streams 100 MiB")
	}
	f := newFixture(t, fixtureOptions{})
	f.files["tasks.jsonl"] = func() io.Reader {
		return io.MultiReader(
			strings.NewReader(row(0, 10)+"\n"+`{"i":1,"pad":"`),
			io.LimitReader(repeat('x'), 100<<20),
			strings.NewReader("\"}\n"+row(2, 10)+"\n"),
		)
	}
	// The heap sampled is what the reader keeps plus the garbage not yet
	// collected, and how much garbage waits depends on when the collector
	// runs on a busy machine (+47 to +65 MiB here). Collecting early makes
	// the sample follow what the reader keeps.
	defer debug.SetGCPercent(debug.SetGCPercent(10))
	var err error
	peak := peakHeapDuring(func() { _, err = f.apply(t, tasksStorage, "tasks.jsonl", 5) })
	if err != nil {
		t.Fatal(err)
	}
	check(t, f.stored(t), tasks("0:created", 1, "2:created", 1), tasks("1:too_large", 1), 1)
	t.Logf("heap peak while reading a 100 MiB line: +%.1f MiB", float64(peak)/(1<<20))
	// The reader keeps at most MaxRecordBytes (16 MiB) of a record.
	if peak > 64<<20 {
		t.Errorf("the heap grew by %d MiB while reading a 100 MiB line, want it bounded by the record limit", peak>>20)
	}
}

type repeat byte

func (r repeat) Read(p []byte) (int, error) {
	for i := range p {
		p[i] = byte(r)
	}
	return len(p), nil
}

// Notifications whose several storages include one that can never import
// the object: that one is dead-lettered, the others still import.
func TestOneStorageNeverCostsTheOthers(t *testing.T) {
	t.Parallel()
	f := newFixture(t, fixtureOptions{})
	// A Tasks-mode storage sees an image it cannot read as tasks: unsupported.
	tasksToo := storage(false)
	tasksToo.ID = 2
	if outcome, err := f.apply(t, tasksToo, "cat.jpg", 5); err != nil || outcome != ledger.DeadLetter {
		t.Fatalf("Tasks-mode storage: %s, %v; want deadletter", outcome, err)
	}
	if outcome, err := f.apply(t, filesStorage, "cat.jpg", 5); err != nil || outcome != ledger.Emitted {
		t.Fatalf("Files-mode storage: %s, %v; want emitted", outcome, err)
	}
	check(t, f.stored(t), tasks("-1:created", 1), tasks("-1:unsupported", 1), 0)
}

// peakHeapDuring reports how far the heap grew above where it was while
// f ran, sampled every millisecond. The test that uses it is not parallel,
// so the package's parallel tests are paused meanwhile.
func peakHeapDuring(f func()) uint64 {
	var ms runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&ms)
	base, peak := ms.HeapAlloc, ms.HeapAlloc
	done := make(chan struct{})
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		tick := time.NewTicker(time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-done:
				return
			case <-tick.C:
				runtime.ReadMemStats(&ms)
				peak = max(peak, ms.HeapAlloc)
			}
		}
	}()
	f()
	close(done)
	<-sampled
	return peak - base
}
