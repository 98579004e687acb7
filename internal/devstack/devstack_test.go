package devstack_test

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"cloud.google.com/go/pubsub/v2"
	"cloud.google.com/go/pubsub/v2/apiv1/pubsubpb"
	"cloud.google.com/go/pubsub/v2/pstest"
	"cloud.google.com/go/storage"

	"github.com/labelsync/labelsync/internal/devstack"
	"github.com/labelsync/labelsync/internal/pubsubemu"
)

// One Google emulator for the whole binary; see package pubsubemu.
func TestMain(m *testing.M) { pubsubemu.Main(m) }

// start runs a stack on free ports and closes it with the test.
func start(t *testing.T, opts devstack.Options) *devstack.Stack {
	t.Helper()
	opts.PubsubAddr = "127.0.0.1:0"
	opts.GCSAddr = "127.0.0.1:0"
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelWarn}))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s, err := devstack.Start(ctx, opts)
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return s
}

func pubsubClient(t *testing.T, s *devstack.Stack) *pubsub.Client {
	t.Helper()
	c, err := s.PubsubClient(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func storageClient(t *testing.T, s *devstack.Stack) *storage.Client {
	t.Helper()
	c, err := s.StorageClient(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

var seq atomic.Int64

// unique makes resource IDs unique within the test binary, which is the
// lifetime of the shared Google emulator (-count=N reruns tests against it).
// IDs stay at least 3 characters: that emulator rejects shorter ones.
func unique(prefix string) string {
	return prefix + "-" + strconv.FormatInt(seq.Add(1), 10)
}

// subscribe creates a subscription on the stack's topic.
func subscribe(t *testing.T, c *pubsub.Client, s *devstack.Stack, prefix string) string {
	t.Helper()
	name := "projects/" + s.ProjectID + "/subscriptions/" + unique(prefix)
	_, err := c.SubscriptionAdminClient.CreateSubscription(t.Context(), &pubsubpb.Subscription{
		Name:  name,
		Topic: s.TopicName(),
	})
	if err != nil {
		t.Fatalf("CreateSubscription %s: %v", name, err)
	}
	return name
}

// receive acks and returns the first n messages, failing t if they do not
// come within the timeout.
func receive(t *testing.T, c *pubsub.Client, sub string, n int) []*pubsub.Message {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	var (
		mu  sync.Mutex
		got []*pubsub.Message
	)
	err := c.Subscriber(sub).Receive(ctx, func(_ context.Context, m *pubsub.Message) {
		m.Ack()
		mu.Lock()
		defer mu.Unlock()
		if len(got) < n {
			got = append(got, m)
		}
		if len(got) == n {
			cancel()
		}
	})
	if err != nil && !errors.Is(err, context.Canceled) {
		t.Fatalf("Receive %s: %v", sub, err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(got) != n {
		t.Fatalf("Receive %s: got %d messages, want %d", sub, len(got), n)
	}
	return got
}

func upload(t *testing.T, c *storage.Client, bucket, name, content string) *storage.ObjectAttrs {
	t.Helper()
	w := c.Bucket(bucket).Object(name).NewWriter(t.Context())
	w.ContentType = "text/plain"
	if _, err := w.Write([]byte(content)); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatalf("upload gs://%s/%s: %v", bucket, name, err)
	}
	return w.Attrs()
}

// TestNotifications is the end-to-end scenario against each Pub/Sub
// emulator the stack can use: an upload through the storage client yields
// OBJECT_FINALIZE, a delete OBJECT_DELETE, both in GCS's format.
func TestNotifications(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name string
		opts func(t *testing.T) devstack.Options
	}{
		{"pstest", func(*testing.T) devstack.Options { return devstack.Options{} }},
		{"external pstest with existing topic", func(t *testing.T) devstack.Options {
			srv := pstest.NewServerWithAddress("127.0.0.1:0")
			t.Cleanup(func() { srv.Close() })
			// The topic already exists: Start must accept that.
			if _, err := srv.GServer.CreateTopic(t.Context(), &pubsubpb.Topic{
				Name: "projects/" + devstack.DefaultProjectID + "/topics/" + devstack.DefaultTopic,
			}); err != nil {
				t.Fatal(err)
			}
			return devstack.Options{PubsubEmulatorHost: srv.Addr}
		}},
		{"google emulator", func(t *testing.T) devstack.Options {
			// The emulator is shared by the binary: a topic of our own.
			return devstack.Options{PubsubEmulatorHost: pubsubemu.Start(t), Topic: unique("notifications")}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			opts := tt.opts(t)
			opts.Buckets = []string{"uploads"}
			s := start(t, opts)
			if tt.name != "pstest" && s.Pstest != nil {
				t.Errorf("Stack.Pstest set although an external emulator was given")
			}
			pc := pubsubClient(t, s)
			sub := subscribe(t, pc, s, "notifications")
			sc := storageClient(t, s)

			attrs := upload(t, sc, "uploads", "dir/a b.txt", "hello")
			m := receive(t, pc, sub, 1)[0]
			checkEvent(t, m, "OBJECT_FINALIZE", "uploads", "dir/a b.txt", attrs.Generation, 5)

			if err := sc.Bucket("uploads").Object("dir/a b.txt").Delete(t.Context()); err != nil {
				t.Fatal(err)
			}
			m = receive(t, pc, sub, 1)[0]
			checkEvent(t, m, "OBJECT_DELETE", "uploads", "dir/a b.txt", attrs.Generation, -1)
		})
	}
}

// checkEvent checks the attributes and payload a GCS notification carries;
// size < 0 skips the size check (fake-gcs reports 0 on delete).
func checkEvent(t *testing.T, m *pubsub.Message, eventType, bucket, name string, gen, size int64) {
	t.Helper()
	wantAttrs := map[string]string{
		"eventType":        eventType,
		"bucketId":         bucket,
		"objectId":         name,
		"objectGeneration": strconv.FormatInt(gen, 10),
		"payloadFormat":    "JSON_API_V1",
	}
	for k, want := range wantAttrs {
		if got := m.Attributes[k]; got != want {
			t.Errorf("%s: attribute %s = %q, want %q", eventType, k, got, want)
		}
	}
	if _, err := time.Parse(time.RFC3339, m.Attributes["eventTime"]); err != nil {
		t.Errorf("%s: eventTime %q: %v", eventType, m.Attributes["eventTime"], err)
	}
	var p struct {
		Kind       string `json:"kind"`
		Name       string `json:"name"`
		Bucket     string `json:"bucket"`
		Generation string `json:"generation"`
		Size       string `json:"size"`
	}
	if err := json.Unmarshal(m.Data, &p); err != nil {
		t.Fatalf("%s: payload %s: %v", eventType, m.Data, err)
	}
	if p.Kind != "storage#object" || p.Name != name || p.Bucket != bucket || p.Generation != strconv.FormatInt(gen, 10) {
		t.Errorf("%s: payload %s, want kind storage#object, name %q, bucket %q, generation %d", eventType, m.Data, name, bucket, gen)
	}
	if size >= 0 && p.Size != strconv.FormatInt(size, 10) {
		t.Errorf("%s: payload size %q, want %d", eventType, p.Size, size)
	}
}

// TestStacksAreIsolated starts two stacks at once, with the same project and
// topic names, and checks each fake GCS publishes to its own pstest.
func TestStacksAreIsolated(t *testing.T) {
	t.Parallel()
	var stacks [2]*devstack.Stack
	var wg sync.WaitGroup
	for i := range stacks {
		wg.Go(func() { stacks[i] = start(t, devstack.Options{Buckets: []string{"shared-name"}}) })
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}

	objects := []string{"from-first", "from-second"}
	subs := make([]string, len(stacks))
	clients := make([]*pubsub.Client, len(stacks))
	for i, s := range stacks {
		clients[i] = pubsubClient(t, s)
		subs[i] = subscribe(t, clients[i], s, "isolation")
		upload(t, storageClient(t, s), "shared-name", objects[i], "x")
	}
	for i, s := range stacks {
		m := receive(t, clients[i], subs[i], 1)[0]
		if got := m.Attributes["objectId"]; got != objects[i] {
			t.Errorf("stack %d received objectId %q, want %q", i, got, objects[i])
		}
		// pstest keeps every message published to it: exactly ours.
		var published []string
		for _, pm := range s.Pstest.Messages() {
			published = append(published, pm.Attributes["objectId"])
		}
		if len(published) != 1 || published[0] != objects[i] {
			t.Errorf("stack %d emulator holds notifications for %q, want only %q", i, published, objects[i])
		}
	}
}

// TestStartRestoresEnv checks Start leaves PUBSUB_EMULATOR_HOST as it found
// it, and that neither the stack nor its clients follow a value pointing
// elsewhere.
func TestStartRestoresEnv(t *testing.T) {
	// Not parallel: t.Setenv.
	const elsewhere = "127.0.0.1:1"
	t.Setenv("PUBSUB_EMULATOR_HOST", elsewhere)
	s := start(t, devstack.Options{Buckets: []string{"env"}})
	if got := os.Getenv("PUBSUB_EMULATOR_HOST"); got != elsewhere {
		t.Errorf("PUBSUB_EMULATOR_HOST after Start = %q, want %q", got, elsewhere)
	}
	pc := pubsubClient(t, s)
	sub := subscribe(t, pc, s, "env")
	upload(t, storageClient(t, s), "env", "obj", "x")
	receive(t, pc, sub, 1)
}

// TestPublishFailureIsLogged checks that a notification fake-gcs-server
// cannot publish surfaces as an Error log record instead of vanishing into
// its writer.
func TestPublishFailureIsLogged(t *testing.T) {
	t.Parallel()
	h := &recordHandler{errs: make(chan slog.Record, 16)}
	s := start(t, devstack.Options{Buckets: []string{"lost"}, Logger: slog.New(h)})
	pc := pubsubClient(t, s)
	if err := pc.TopicAdminClient.DeleteTopic(t.Context(), &pubsubpb.DeleteTopicRequest{Topic: s.TopicName()}); err != nil {
		t.Fatal(err)
	}
	upload(t, storageClient(t, s), "lost", "obj", "x")
	select {
	case r := <-h.errs:
		var detail string
		r.Attrs(func(a slog.Attr) bool {
			if a.Key == "error" {
				detail = a.Value.String()
			}
			return true
		})
		if !strings.Contains(detail, "NotFound") {
			t.Errorf("error record %q has error %q, want NotFound", r.Message, detail)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("no Error record for a publish to a deleted topic")
	}
}

type recordHandler struct{ errs chan slog.Record }

func (h *recordHandler) Enabled(context.Context, slog.Level) bool { return true }

func (h *recordHandler) Handle(_ context.Context, r slog.Record) error {
	if r.Level >= slog.LevelError {
		select {
		case h.errs <- r:
		default:
		}
	}
	return nil
}

func (h *recordHandler) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h *recordHandler) WithGroup(string) slog.Handler      { return h }

func TestStartErrors(t *testing.T) {
	t.Parallel()
	busy := start(t, devstack.Options{})
	tests := []struct {
		name string
		opts devstack.Options
		want string
	}{
		{"pubsub port taken", devstack.Options{PubsubAddr: busy.PubsubAddr, GCSAddr: "127.0.0.1:0"}, "pstest"},
		{"gcs port taken", devstack.Options{PubsubAddr: "127.0.0.1:0", GCSAddr: strings.TrimPrefix(busy.GCSURL, "http://")}, "fake-gcs-server"},
		{"bad gcs address", devstack.Options{PubsubAddr: "127.0.0.1:0", GCSAddr: "4443"}, "GCS address"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
			defer cancel()
			s, err := devstack.Start(ctx, tt.opts)
			if err == nil {
				s.Close()
				t.Fatal("Start succeeded, want an error")
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Start error %q does not mention %q", err, tt.want)
			}
		})
	}
}
