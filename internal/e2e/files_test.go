package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/labelsync/labelsync/internal/ingest"
	"github.com/labelsync/labelsync/internal/ledger"
	"github.com/labelsync/labelsync/internal/taskbus"
	"github.com/labelsync/labelsync/internal/worker"
)

var httpClient = http.Client{Timeout: 5 * time.Second}

// Two Files-mode storages: project 7 takes everything under incoming/,
// project 8 only .png direct children of incoming/images/.
const filesStorages = `{"import": [
 {"id": 1, "project": 7, "title": "raw", "bucket": "acme-raw", "prefix": "incoming", "use_blob_urls": true, "recursive_scan": true},
 {"id": 2, "project": 8, "title": "pngs", "bucket": "acme-raw", "prefix": "incoming/images/", "regex_filter": ".*\\.png", "use_blob_urls": true}
]}`

// summary is the comparable part of a task event.
type summary struct {
	Event     ledger.Kind
	Storage   int64
	Key       string
	Gen       string
	HasTask   bool
	SameIDKey string
}

func summarize(evs []taskbus.Event) []summary {
	out := make([]summary, 0, len(evs))
	for _, e := range evs {
		out = append(out, summary{Event: e.Event, Storage: e.StorageID, Key: e.Key, Gen: e.Generation, HasTask: e.Task != nil})
	}
	sort.Slice(out, func(i, j int) bool {
		a, b := out[i], out[j]
		if a.Storage != b.Storage {
			return a.Storage < b.Storage
		}
		if a.Key != b.Key {
			return a.Key < b.Key
		}
		if a.Gen != b.Gen {
			return a.Gen < b.Gen
		}
		return a.Event < b.Event
	})
	return out
}

// waitSettled waits until the worker handled at least n notifications and
// then until the stream stops growing.
func (h *harness) waitSettled(rw *runningWorker, n int) []taskbus.Event {
	h.t.Helper()
	eventually(h.t, 60*time.Second, fmt.Sprintf("%d notifications handled", n), func() error {
		if got := notificationsHandled(h.t, rw.w.Registry()); got < float64(n) {
			return fmt.Errorf("%v handled", got)
		}
		return nil
	})
	return h.settle()
}

func (h *harness) settle() []taskbus.Event {
	h.t.Helper()
	prev := -1
	for {
		evs := h.taskEvents()
		if len(evs) == prev {
			return evs
		}
		prev = len(evs)
		time.Sleep(400 * time.Millisecond)
	}
}

func TestFilesUploadsBecomeTasks(t *testing.T) {
	t.Parallel()
	forEachBackend(t, func(t *testing.T, b backend) {
		h := newHarness(t, b, filesStorages)
		rw := h.startWorker()

		long := "incoming/" + strings.Repeat("é", (1024-len("incoming/")-4)/2) + ".png"
		long += strings.Repeat("x", 1024-len(long))
		uploads := []string{
			"incoming/cat 1.jpg",
			"incoming/ünï/ködé.png",
			"incoming/images/a#b?c%d.png",
			"incoming/images/deep/not-direct.png",
			"incoming/images/notes.txt",
			long,
			"incoming2/x.jpg",
			"incoming/folder/",
			"other.jpg",
		}
		gens := map[string]string{}
		for _, k := range uploads {
			gens[k] = strconv.FormatInt(h.upload("acme-raw", k, "data of "+k), 10)
		}
		h.upload("acme-other", "incoming/cat 1.jpg", "other bucket")

		evs := h.waitSettled(rw, len(uploads)+1)
		want := []summary{
			{ledger.Created, 1, "incoming/cat 1.jpg", gens["incoming/cat 1.jpg"], true, ""},
			{ledger.Created, 1, "incoming/images/a#b?c%d.png", gens["incoming/images/a#b?c%d.png"], true, ""},
			{ledger.Created, 1, "incoming/images/deep/not-direct.png", gens["incoming/images/deep/not-direct.png"], true, ""},
			{ledger.Created, 1, "incoming/images/notes.txt", gens["incoming/images/notes.txt"], true, ""},
			{ledger.Created, 1, long, gens[long], true, ""},
			{ledger.Created, 1, "incoming/ünï/ködé.png", gens["incoming/ünï/ködé.png"], true, ""},
			{ledger.Created, 2, "incoming/images/a#b?c%d.png", gens["incoming/images/a#b?c%d.png"], true, ""},
		}
		if diff := cmp.Diff(summarize(want2events(want)), summarize(evs)); diff != "" {
			t.Fatalf("task events after uploads (-want +got):\n%s", diff)
		}
		for _, e := range evs {
			wantData := fmt.Sprintf(`{"data":{"$undefined$":"gs://acme-raw/%s"}}`, jsonEscape(e.Key))
			if string(e.Task) != wantData {
				t.Errorf("task of %q = %s, want %s", e.Key, e.Task, wantData)
			}
			if e.TaskID != taskbus.TaskID(e.StorageID, e.Key, nil) || e.RowIndex != nil || e.Source != "notification" || e.Bucket != "acme-raw" {
				t.Errorf("event fields wrong: %+v", e)
			}
			if _, err := time.Parse(time.RFC3339Nano, e.EventTime); err != nil {
				t.Errorf("event_time %q: %v", e.EventTime, err)
			}
		}

		// Overwrite, delete and re-upload one key: updated, deleted, then
		// created again with the same task id.
		key := "incoming/cat 1.jpg"
		g2 := strconv.FormatInt(h.upload("acme-raw", key, "version 2"), 10)
		h.waitFor(func(evs []taskbus.Event) bool { return count(evs, ledger.Updated) == 1 })
		h.remove("acme-raw", key)
		h.waitFor(func(evs []taskbus.Event) bool { return count(evs, ledger.Deleted) == 1 })
		g3 := strconv.FormatInt(h.upload("acme-raw", key, "version 3"), 10)
		h.waitFor(func(evs []taskbus.Event) bool { return count(evs, ledger.Created) == 8 })
		evs = h.settle()
		var history []summary
		for _, e := range evs {
			if e.Key == key && e.StorageID == 1 {
				history = append(history, summary{Event: e.Event, Storage: 1, Key: key, Gen: e.Generation, HasTask: e.Task != nil, SameIDKey: e.TaskID})
			}
		}
		id := taskbus.TaskID(1, key, nil)
		wantHistory := []summary{
			{ledger.Created, 1, key, gens[key], true, id},
			{ledger.Updated, 1, key, g2, true, id},
			{ledger.Deleted, 1, key, g2, false, id},
			{ledger.Created, 1, key, g3, true, id},
		}
		if diff := cmp.Diff(wantHistory, history); diff != "" {
			t.Fatalf("history of %q (-want +got):\n%s", key, diff)
		}
		if len(evs) != 10 {
			t.Fatalf("%d events in total, want 10: %+v", len(evs), summarize(evs))
		}
	})
}

func want2events(s []summary) []taskbus.Event {
	out := make([]taskbus.Event, len(s))
	for i, w := range s {
		out[i] = taskbus.Event{Event: w.Event, StorageID: w.Storage, Key: w.Key, Generation: w.Gen}
		if w.HasTask {
			out[i].Task = []byte("{}")
		}
	}
	return out
}

func jsonEscape(s string) string {
	b, _ := jsonMarshal(s)
	return strings.Trim(string(b), `"`)
}

func count(evs []taskbus.Event, k ledger.Kind) int {
	n := 0
	for _, e := range evs {
		if e.Event == k {
			n++
		}
	}
	return n
}

func (h *harness) waitFor(cond func([]taskbus.Event) bool) {
	h.t.Helper()
	eventually(h.t, 60*time.Second, "task events", func() error {
		if evs := h.taskEvents(); !cond(evs) {
			return fmt.Errorf("events so far: %+v", summarize(evs))
		}
		return nil
	})
}

// TestDeliveryOrders publishes crafted notifications one at a time, each
// several times, in orders GCS and Pub/Sub can produce, and checks the exact
// events SPEC §2 defines.
func TestDeliveryOrders(t *testing.T) {
	t.Parallel()
	type note struct {
		typ   string
		gen   int64
		extra []string
	}
	fin := func(g int64, extra ...string) note { return note{"OBJECT_FINALIZE", g, extra} }
	del := func(g int64, extra ...string) note { return note{"OBJECT_DELETE", g, extra} }
	arc := func(g int64, extra ...string) note { return note{"OBJECT_ARCHIVE", g, extra} }
	meta := func(g int64) note { return note{"OBJECT_METADATA_UPDATE", g, nil} }
	type ev struct {
		kind ledger.Kind
		gen  int64
	}
	cases := []struct {
		name  string
		notes []note
		want  []ev
	}{
		{"upload", []note{fin(1)}, []ev{{ledger.Created, 1}}},
		{"overwrite in order", []note{fin(1), fin(2, "overwroteGeneration", "1"), del(1, "overwrittenByGeneration", "2")},
			[]ev{{ledger.Created, 1}, {ledger.Updated, 2}}},
		{"overwrite, delete half first", []note{fin(1), del(1, "overwrittenByGeneration", "2"), fin(2, "overwroteGeneration", "1")},
			[]ev{{ledger.Created, 1}, {ledger.Updated, 2}}},
		{"first seen is an overwrite", []note{fin(2, "overwroteGeneration", "1")}, []ev{{ledger.Created, 2}}},
		{"older generation after newer is stale", []note{fin(2, "overwroteGeneration", "1"), fin(1), del(1, "overwrittenByGeneration", "2")},
			[]ev{{ledger.Created, 2}}},
		{"delete then re-upload", []note{fin(1), del(1), fin(3)}, []ev{{ledger.Created, 1}, {ledger.Deleted, 1}, {ledger.Created, 3}}},
		{"archive is a delete", []note{fin(1), arc(1)}, []ev{{ledger.Created, 1}, {ledger.Deleted, 1}}},
		{"archive of an overwrite is an update", []note{fin(1), arc(1, "overwrittenByGeneration", "2")}, []ev{{ledger.Created, 1}, {ledger.Updated, 2}}},
		{"delete before its finalize", []note{del(1), fin(1)}, nil},
		{"finalize after its delete was handled", []note{fin(1), del(1), fin(1)}, []ev{{ledger.Created, 1}, {ledger.Deleted, 1}}},
		{"metadata update emits nothing", []note{fin(1), meta(1)}, []ev{{ledger.Created, 1}}},
	}
	forEachBackend(t, func(t *testing.T, b backend) {
		h := newHarness(t, b, filesStorages)
		rw := h.startWorker()
		handled := 0
		for i, c := range cases {
			key := fmt.Sprintf("incoming/case-%02d %s.jpg", i, c.name)
			for _, n := range c.notes {
				// Each notification three times: GCS and Pub/Sub both
				// deliver at least once.
				for range 3 {
					h.publish(notification(n.typ, "acme-raw", key, n.gen, n.extra...), nil)
					handled++
				}
				want := handled
				eventually(t, 30*time.Second, "notification handled", func() error {
					if got := notificationsHandled(t, rw.w.Registry()); got < float64(want) {
						return fmt.Errorf("%v of %d", got, want)
					}
					return nil
				})
			}
		}
		evs := h.settle()
		byKey := map[string][]ev{}
		for _, e := range evs {
			g, _ := strconv.ParseInt(e.Generation, 10, 64)
			byKey[e.Key] = append(byKey[e.Key], ev{e.Event, g})
		}
		for i, c := range cases {
			key := fmt.Sprintf("incoming/case-%02d %s.jpg", i, c.name)
			if diff := cmp.Diff(c.want, byKey[key], cmp.AllowUnexported(ev{})); diff != "" {
				t.Errorf("%s (-want +got):\n%s", c.name, diff)
			}
		}
	})
}

// TestShuffledDuplicatesConverge publishes many keys' histories, every
// notification three times, all shuffled and concurrent. Whatever the order,
// no (key, generation, event) appears twice, generations never go backwards,
// and every key ends where its history ends.
func TestShuffledDuplicatesConverge(t *testing.T) {
	t.Parallel()
	forEachBackend(t, func(t *testing.T, b backend) {
		h := newHarness(t, b, filesStorages)
		rw := h.startWorker()
		rng := rand.New(rand.NewPCG(1, 2))
		type final struct {
			gen     int64
			deleted bool
		}
		finals := map[string]final{}
		var msgs []map[string]string
		for k := range 60 {
			key := fmt.Sprintf("incoming/shuffle/%03d.png", k)
			gen := int64(1000)
			msgs = append(msgs, notification("OBJECT_FINALIZE", "acme-raw", key, gen))
			for range rng.IntN(3) {
				next := gen + 1 + int64(rng.IntN(5))
				msgs = append(msgs,
					notification("OBJECT_FINALIZE", "acme-raw", key, next, "overwroteGeneration", strconv.FormatInt(gen, 10)),
					notification("OBJECT_DELETE", "acme-raw", key, gen, "overwrittenByGeneration", strconv.FormatInt(next, 10)))
				gen = next
			}
			f := final{gen: gen}
			if rng.IntN(3) == 0 {
				msgs = append(msgs, notification("OBJECT_DELETE", "acme-raw", key, gen))
				f.deleted = true
			}
			finals[key] = f
		}
		var all []map[string]string
		for _, m := range msgs {
			all = append(all, m, m, m)
		}
		rng.Shuffle(len(all), func(i, j int) { all[i], all[j] = all[j], all[i] })
		var wg sync.WaitGroup
		for i := range 8 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for j := i; j < len(all); j += 8 {
					h.publish(all[j], nil)
				}
			}()
		}
		wg.Wait()
		evs := h.waitSettled(rw, len(all))

		seen := map[string]bool{}
		last := map[string]taskbus.Event{}
		for _, e := range evs {
			id := e.Key + "|" + e.Generation + "|" + string(e.Event)
			if seen[id] {
				t.Errorf("duplicate event %s", id)
			}
			seen[id] = true
			if p, ok := last[e.Key]; ok {
				pg, _ := strconv.ParseInt(p.Generation, 10, 64)
				g, _ := strconv.ParseInt(e.Generation, 10, 64)
				if g < pg {
					t.Errorf("%s went back from generation %d to %d", e.Key, pg, g)
				}
				if (e.Event == ledger.Created) == (p.Event != ledger.Deleted) {
					t.Errorf("%s: %s after %s", e.Key, e.Event, p.Event)
				}
			} else if e.Event != ledger.Created {
				t.Errorf("%s: first event is %s", e.Key, e.Event)
			}
			last[e.Key] = e
		}
		for key, f := range finals {
			e, ok := last[key]
			if !ok {
				// The only way to import nothing: the final delete
				// arrived before every finalize.
				if !f.deleted {
					t.Errorf("%s: no events, want generation %d imported", key, f.gen)
				}
				continue
			}
			g, _ := strconv.ParseInt(e.Generation, 10, 64)
			switch {
			case f.deleted && e.Event != ledger.Deleted:
				t.Errorf("%s: ends with %s %d, want deleted", key, e.Event, g)
			case !f.deleted && (e.Event == ledger.Deleted || g != f.gen):
				t.Errorf("%s: ends with %s %d, want generation %d live", key, e.Event, g, f.gen)
			}
		}
	})
}

// TestPoisonMessages: malformed notifications land once each in the
// dead-letter stream, with reason and original attributes, and do not
// block good ones.
func TestPoisonMessages(t *testing.T) {
	t.Parallel()
	forEachBackend(t, func(t *testing.T, b backend) {
		h := newHarness(t, b, filesStorages)
		rw := h.startWorker()
		noType := notification("OBJECT_FINALIZE", "acme-raw", "incoming/a.jpg", 1)
		delete(noType, "eventType")
		badGen := notification("OBJECT_FINALIZE", "acme-raw", "incoming/b.jpg", 1)
		badGen["objectGeneration"] = "abc"
		badJSON := notification("OBJECT_FINALIZE", "acme-raw", "incoming/c.jpg", 1)
		badJSON["payloadFormat"] = "JSON_API_V1"
		poison := []struct {
			attrs  map[string]string
			data   []byte
			reason string
		}{
			{noType, nil, "eventType"},
			{badGen, nil, "objectGeneration"},
			{badJSON, []byte("{not json\xff"), "payload"},
		}
		for _, p := range poison {
			h.publish(p.attrs, p.data)
			h.publish(p.attrs, p.data) // the same bad input twice is one problem
			h.upload("acme-raw", "incoming/good "+p.reason+".jpg", "ok")
		}
		h.waitSettled(rw, 3*len(poison))
		eventually(t, 30*time.Second, "dead letters", func() error {
			if n := len(h.deadLetters()); n < len(poison) {
				return fmt.Errorf("%d dead letters", n)
			}
			return nil
		})
		if n := count(h.taskEvents(), ledger.Created); n != len(poison) {
			t.Errorf("%d tasks created, want %d", n, len(poison))
		}
		dls := h.deadLetters()
		if len(dls) != len(poison) {
			t.Fatalf("%d dead letters, want %d: %+v", len(dls), len(poison), dls)
		}
		for i, p := range poison {
			// Pub/Sub (Google's emulator above all) delivers in any order:
			// find each input's letter by its reason.
			var d deadLetter
			for _, l := range dls {
				if strings.Contains(l.Reason, p.reason) {
					d = l
				}
			}
			if !strings.Contains(d.Reason, p.reason) || d.Component != "worker" || d.Source["pubsub_message_id"] == nil {
				t.Errorf("dead letter %d = %+v, want reason naming %s", i, d, p.reason)
			}
			if diff := cmp.Diff(p.attrs, d.Attributes); diff != "" {
				t.Errorf("dead letter %d attributes (-want +got):\n%s", i, diff)
			}
			if p.data != nil && (d.DataBase64 == nil || string(d.DataBase64) != string(p.data)) {
				t.Errorf("dead letter %d data_base64 = %q, want %q", i, d.DataBase64, p.data)
			}
		}
		if got := counterSum(t, rw.w.Registry(), "labelsync_deadletter_total"); got < float64(len(poison)) {
			t.Errorf("labelsync_deadletter_total = %v, want >= %d", got, len(poison))
		}
	})
}

// TestCrashAtEachStep makes the pipeline fail, as a crash would, at each of
// its steps for the first deliveries, then lets redelivery finish the work:
// nothing is lost and nothing is emitted twice.
func TestCrashAtEachStep(t *testing.T) {
	t.Parallel()
	for _, step := range []string{"head", "append", "appended"} {
		t.Run(step, func(t *testing.T) {
			t.Parallel()
			h := newHarness(t, backends[0], filesStorages)
			var crashes atomic.Int64
			hook := func(_ context.Context, name string) error {
				if name == step && crashes.Add(1) <= 40 {
					return errors.New("simulated crash at " + name)
				}
				return nil
			}
			rw := h.startWorker(worker.WithIngestOptions(ingest.WithStepHook(hook)))
			// Keys under incoming/images/ match both storages: a crash can
			// fall between the two storages' appends.
			for i := range 10 {
				key := fmt.Sprintf("incoming/images/%02d.png", i)
				g := h.upload("acme-raw", key, "v1")
				if i%2 == 0 {
					h.publish(notification("OBJECT_DELETE", "acme-raw", key, g), nil)
				} else {
					h.upload("acme-raw", key, "v2")
				}
			}
			h.waitSettled(rw, 25)
			evs := h.settle()
			seen := map[string]int{}
			for _, e := range evs {
				seen[fmt.Sprintf("%d|%s|%s|%s", e.StorageID, e.Key, e.Generation, e.Event)]++
			}
			for id, n := range seen {
				if n != 1 {
					t.Errorf("%s emitted %d times", id, n)
				}
			}
			for i := range 10 {
				key := fmt.Sprintf("incoming/images/%02d.png", i)
				for _, st := range []int64{1, 2} {
					var last ledger.Kind
					for _, e := range evs {
						if e.Key == key && e.StorageID == st {
							last = e.Event
						}
					}
					if i%2 == 0 && last != ledger.Deleted && last != "" {
						t.Errorf("storage %d %s ends %q, want deleted", st, key, last)
					}
					if i%2 == 1 && last != ledger.Updated && last != ledger.Created {
						t.Errorf("storage %d %s ends %q, want live", st, key, last)
					}
				}
			}
			if crashes.Load() < 2 {
				t.Fatalf("hook at %s ran %d times: the step was never reached", step, crashes.Load())
			}
		})
	}
}

func jsonMarshal(v any) ([]byte, error) { return json.Marshal(v) }
