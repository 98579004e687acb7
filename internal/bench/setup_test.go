package bench

import (
	"bytes"
	"context"
	"crypto/md5"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"cloud.google.com/go/pubsub/v2"
	"cloud.google.com/go/pubsub/v2/apiv1/pubsubpb"
	"cloud.google.com/go/pubsub/v2/pstest"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/labelsync/labelsync/internal/config"
	"github.com/labelsync/labelsync/internal/events"
	"github.com/labelsync/labelsync/internal/gpubsub"
	"github.com/labelsync/labelsync/internal/natsembed"
	"github.com/labelsync/labelsync/internal/natstest"
	"github.com/labelsync/labelsync/internal/pubsubemu"
	"github.com/labelsync/labelsync/internal/storages"
	"github.com/labelsync/labelsync/internal/taskbus"
	"github.com/labelsync/labelsync/internal/worker"
)

func TestMain(m *testing.M) { pubsubemu.Main(m) }

const (
	projectID = "labelsync-bench"
	bucket    = "bench-raw"
	// storagesJSON is one Files-mode storage that takes every key under
	// incoming/, which is where the notifications point.
	storagesJSON = `{"import": [{"id": 1, "project": 7, "title": "bench", "bucket": "` + bucket + `", "prefix": "incoming/", "use_blob_urls": true, "recursive_scan": true}]}`
)

// envInt reads a positive integer size from the environment.
func envInt(b *testing.B, name string, def int) int {
	b.Helper()
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil || n <= 0 {
		b.Fatalf("%s=%q: want a positive integer", name, v)
	}
	return n
}

// receive is the flow-control setting every contender on a backend uses.
type receive struct {
	streams        int // ReceiveSettings.NumGoroutines: streaming-pull streams
	maxOutstanding int // ReceiveSettings.MaxOutstandingMessages
}

func (r receive) String() string {
	return fmt.Sprintf("%d streams, %d outstanding", r.streams, r.maxOutstanding)
}

// backend is a Pub/Sub implementation to measure on.
type backend struct {
	name string
	recv receive
	// start returns a server's host:port and a function that stops it.
	start func(b *testing.B) (addr string, stop func())
	// perContender: start a fresh server for every drain (cheap for
	// in-process pstest) rather than sharing one (Google's emulator, a JVM
	// that takes seconds to start and needs warming up).
	perContender bool
}

// backends lists Google's emulator first, then pstest.
func backends(b *testing.B) []backend {
	maxOut := envInt(b, "LABELSYNC_BENCH_MAX_OUTSTANDING", 1000)
	return []backend{
		{
			name: "emulator",
			recv: receive{streams: envInt(b, "LABELSYNC_BENCH_EMULATOR_STREAMS", 32), maxOutstanding: maxOut},
			start: func(b *testing.B) (string, func()) {
				return pubsubemu.Start(b), func() {}
			},
		},
		{
			name: "pstest",
			recv: receive{streams: envInt(b, "LABELSYNC_BENCH_PSTEST_STREAMS", 128), maxOutstanding: maxOut},
			start: func(*testing.B) (string, func()) {
				srv := pstest.NewServer()
				return srv.Addr, func() { _ = srv.Close() }
			},
			perContender: true,
		},
	}
}

var idSeq atomic.Int64

// newID returns a topic or subscription ID unique within the process and
// across runs against a long-lived emulator.
func newID(kind string) string {
	return fmt.Sprintf("bench-%s-%d-%d", kind, time.Now().UnixNano()%1e9, idSeq.Add(1))
}

func newClient(ctx context.Context, b *testing.B, addr string) *pubsub.Client {
	b.Helper()
	// The worker's own client options, so that baselines and labelsync
	// receive through identical gRPC settings.
	c, err := pubsub.NewClient(ctx, projectID, gpubsub.ClientOptions(addr)...)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = c.Close() })
	return c
}

func topicName(id string) string { return "projects/" + projectID + "/topics/" + id }

func createTopic(ctx context.Context, c *pubsub.Client, id string) error {
	_, err := c.TopicAdminClient.CreateTopic(ctx, &pubsubpb.Topic{Name: topicName(id)})
	if err != nil && status.Code(err) != codes.AlreadyExists {
		return fmt.Errorf("create topic %s: %w", id, err)
	}
	return nil
}

// createSubscription creates sub on topic with the ack deadline the worker
// uses when it creates its own.
func createSubscription(ctx context.Context, c *pubsub.Client, sub, topic string) error {
	_, err := c.SubscriptionAdminClient.CreateSubscription(ctx, &pubsubpb.Subscription{
		Name:               "projects/" + projectID + "/subscriptions/" + sub,
		Topic:              topicName(topic),
		AckDeadlineSeconds: 60,
	})
	if err != nil {
		return fmt.Errorf("create subscription %s: %w", sub, err)
	}
	return nil
}

// notifications generates real-GCS-format OBJECT_FINALIZE notifications for
// distinct keys under one prefix, with a JSON_API_V1 payload, so that the
// worker's decoding cost is part of what is measured.
type notifications struct {
	prefix string
	gen0   int64
	at     time.Time
}

func newNotifications(run string) notifications {
	at := time.Now().UTC()
	return notifications{prefix: "incoming/" + run + "/", gen0: at.UnixMicro(), at: at}
}

func (g notifications) key(i int) string { return fmt.Sprintf("%simg-%08d.jpg", g.prefix, i) }

// index recovers i from key(i).
func (g notifications) index(key string) (int, bool) {
	rest, ok := strings.CutPrefix(key, g.prefix+"img-")
	if !ok {
		return 0, false
	}
	i, err := strconv.Atoi(strings.TrimSuffix(rest, ".jpg"))
	return i, err == nil
}

// objectResource is the storage#object resource GCS sends as a
// JSON_API_V1 payload.
type objectResource struct {
	Kind                    string `json:"kind"`
	ID                      string `json:"id"`
	SelfLink                string `json:"selfLink"`
	MediaLink               string `json:"mediaLink"`
	Name                    string `json:"name"`
	Bucket                  string `json:"bucket"`
	Generation              string `json:"generation"`
	Metageneration          string `json:"metageneration"`
	ContentType             string `json:"contentType"`
	StorageClass            string `json:"storageClass"`
	Size                    string `json:"size"`
	MD5Hash                 string `json:"md5Hash"`
	CRC32C                  string `json:"crc32c"`
	ETag                    string `json:"etag"`
	TimeCreated             string `json:"timeCreated"`
	Updated                 string `json:"updated"`
	TimeStorageClassUpdated string `json:"timeStorageClassUpdated"`
}

func (g notifications) message(i int) *pubsub.Message {
	key := g.key(i)
	gen := strconv.FormatInt(g.gen0+int64(i), 10)
	at := g.at.Add(time.Duration(i) * time.Microsecond)
	ts := at.Format("2006-01-02T15:04:05.000Z")
	sum := md5.Sum([]byte(key))
	var crc [4]byte
	binary.BigEndian.PutUint32(crc[:], crc32.Checksum([]byte(key), crc32.MakeTable(crc32.Castagnoli)))
	etag := binary.AppendUvarint(nil, uint64(g.gen0)+uint64(i))
	escaped := url.PathEscape(key)
	// GCS writes "&" in mediaLink as is; json.Marshal would escape it.
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	err := enc.Encode(objectResource{
		Kind:                    "storage#object",
		ID:                      bucket + "/" + key + "/" + gen,
		SelfLink:                "https://www.googleapis.com/storage/v1/b/" + bucket + "/o/" + escaped,
		MediaLink:               "https://storage.googleapis.com/download/storage/v1/b/" + bucket + "/o/" + escaped + "?generation=" + gen + "&alt=media",
		Name:                    key,
		Bucket:                  bucket,
		Generation:              gen,
		Metageneration:          "1",
		ContentType:             "image/jpeg",
		StorageClass:            "STANDARD",
		Size:                    strconv.Itoa(40_000 + i%20_000),
		MD5Hash:                 base64.StdEncoding.EncodeToString(sum[:]),
		CRC32C:                  base64.StdEncoding.EncodeToString(crc[:]),
		ETag:                    "C" + base64.RawStdEncoding.EncodeToString(etag) + "EAE=",
		TimeCreated:             ts,
		Updated:                 ts,
		TimeStorageClassUpdated: ts,
	})
	if err != nil {
		panic(err) // a fixed struct of strings always marshals
	}
	data := bytes.TrimSuffix(buf.Bytes(), []byte("\n"))
	return &pubsub.Message{
		Data: data,
		Attributes: map[string]string{
			"notificationConfig": "projects/_/buckets/" + bucket + "/notificationConfigs/1",
			"eventType":          string(events.Finalize),
			"payloadFormat":      "JSON_API_V1",
			"bucketId":           bucket,
			"objectId":           key,
			"objectGeneration":   gen,
			"eventTime":          at.Format("2006-01-02T15:04:05.000000Z"),
		},
	}
}

// checkNotifications fails b unless labelsync decodes the generated
// notifications and the benchmark storage matches them: otherwise a drain
// would wait for task events that never come.
func checkNotifications(b *testing.B, g notifications) {
	b.Helper()
	m := g.message(0)
	obj, err := events.Decode(m.Attributes, m.Data)
	if err != nil {
		b.Fatalf("generated notification does not decode: %v", err)
	}
	if len(benchSet(b, storagesJSON).Match(obj.Bucket, obj.Key)) != 1 {
		b.Fatalf("benchmark storage does not match gs://%s/%s", obj.Bucket, obj.Key)
	}
}

// benchSet parses a storages file into the import storages it defines.
func benchSet(b *testing.B, file string) *storages.Set {
	b.Helper()
	f, err := storages.Parse([]byte(file), storages.ParseOptions{})
	if err != nil {
		b.Fatal(err)
	}
	set, err := storages.NewSet(f.Import)
	if err != nil {
		b.Fatal(err)
	}
	return set
}

func writeStoragesFile(b *testing.B) string {
	b.Helper()
	path := filepath.Join(b.TempDir(), "storages.json")
	if err := os.WriteFile(path, []byte(storagesJSON), 0o600); err != nil {
		b.Fatal(err)
	}
	return path
}

// seed publishes notifications from..from+n-1 to topic with a batching
// publisher and waits until every one is stored.
func seed(ctx context.Context, c *pubsub.Client, topic string, g notifications, from, n int) (time.Duration, error) {
	p := c.Publisher(topic)
	p.PublishSettings.CountThreshold = 1000
	p.PublishSettings.ByteThreshold = 5e6
	p.PublishSettings.DelayThreshold = 20 * time.Millisecond
	p.PublishSettings.FlowControlSettings = pubsub.FlowControlSettings{
		MaxOutstandingMessages: 20_000,
		MaxOutstandingBytes:    -1,
		LimitExceededBehavior:  pubsub.FlowControlBlock,
	}
	defer p.Stop()
	start := time.Now()
	results := make([]*pubsub.PublishResult, 0, n)
	for i := from; i < from+n; i++ {
		results = append(results, p.Publish(ctx, g.message(i)))
	}
	for _, r := range results {
		if _, err := r.Get(ctx); err != nil {
			return 0, fmt.Errorf("seed %s: %w", topic, err)
		}
	}
	return time.Since(start), nil
}

// startNATS starts a NATS server with JetStream on a free port, storing in a
// fresh directory. stop shuts it down and deletes the directory at once
// (see removeStore); it is idempotent and also runs at cleanup.
func startNATS(b *testing.B) (srv *natsembed.Server, stop func()) {
	b.Helper()
	dir := b.TempDir()
	srv, err := natsembed.Start(natsembed.Options{Addr: "127.0.0.1:0", StoreDir: dir})
	if err != nil {
		b.Fatal(err)
	}
	stop = sync.OnceFunc(func() {
		srv.Shutdown()
		removeStore(dir)
	})
	b.Cleanup(stop)
	return srv, stop
}

// removeStore deletes a stopped server's store. Left for the benchmark's
// cleanup, every drain's store (about 100 MB) stayed dirty in the page cache
// and was written back half a minute later, during some later drain.
func removeStore(dir string) { _ = os.RemoveAll(dir) }

// drainNATS starts the NATS server a throughput drain publishes to and
// returns its URL. LABELSYNC_BENCH_NATS chooses where it runs: "embedded"
// (the default), in this process, as a worker with LABELSYNC_NATS_URL empty
// runs it; or "process", an infra process of its own, as a separate
// nats-server runs in production and in the end-to-end scenarios. Embedded,
// the server's per-subject state (about 200 bytes per key) is in the same
// heap as the subscriber, so labelsync, one subject per key, spends more on
// garbage collection in its drains than the raw pipeline, one subject in
// all; in a process of its own the NATS server pays that instead, and the
// ratio of the two contenders' rates came out the same (docs/benchmarks.md).
// stop is idempotent; once it returned, a process's CPU time is in
// childrenCPU.
func drainNATS(b *testing.B) (url string, stop func()) {
	b.Helper()
	switch v := os.Getenv("LABELSYNC_BENCH_NATS"); v {
	case "", "embedded":
		srv, stop := startNATS(b)
		return srv.URL(), stop
	case "process":
		dir := b.TempDir()
		in := startInfra(b, infraOptions{natsDir: dir})
		return in.natsURL, func() {
			_ = in.stop()
			removeStore(dir)
		}
	default:
		b.Fatalf("LABELSYNC_BENCH_NATS=%q: want embedded or process", v)
		return "", nil
	}
}

// counterSum sums every series of a counter in reg.
func counterSum(reg *prometheus.Registry, name string) (float64, error) {
	mfs, err := reg.Gather()
	if err != nil {
		return 0, err
	}
	var sum float64
	for _, mf := range mfs {
		if mf.GetName() == name {
			for _, m := range mf.GetMetric() {
				sum += m.GetCounter().GetValue()
			}
		}
	}
	return sum, nil
}

// outcomes returns labelsync_notifications_total by outcome.
func outcomes(reg *prometheus.Registry) (map[string]float64, error) {
	mfs, err := reg.Gather()
	if err != nil {
		return nil, err
	}
	out := map[string]float64{}
	for _, mf := range mfs {
		if mf.GetName() != "labelsync_notifications_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "outcome" {
					out[l.GetValue()] += m.GetCounter().GetValue()
				}
			}
		}
	}
	return out, nil
}

var httpClient = http.Client{Timeout: 5 * time.Second}

func httpGet(ctx context.Context, url string) (string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return "", err
	}
	resp, err := httpClient.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return "", err
	}
	if resp.StatusCode != http.StatusOK {
		return string(body), fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	return string(body), nil
}

// waitReady polls a worker's /readyz until it answers "ready".
func waitReady(ctx context.Context, httpAddr string, within time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, within)
	defer cancel()
	for {
		body, err := httpGet(ctx, "http://"+httpAddr+"/readyz")
		if err == nil && strings.TrimSpace(body) == "ready" {
			return nil
		}
		select {
		case <-ctx.Done():
			return errors.Join(fmt.Errorf("worker on %s not ready within %s", httpAddr, within), err)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// createRawStream creates the raw baselines' stream: the storage settings
// of labelsync's task stream, one subject.
func createRawStream(ctx context.Context, js jetstream.JetStream) error {
	_, err := js.CreateStream(ctx, jetstream.StreamConfig{
		Name:       "BENCH_RAW",
		Subjects:   []string{"bench.raw.>"},
		Storage:    jetstream.FileStorage,
		Retention:  jetstream.LimitsPolicy,
		Duplicates: 2 * time.Minute,
	})
	return err
}

// rawJetStream connects to the NATS server at url and creates the raw
// baselines' stream there. closeConn closes the connection; call it before
// the server stops, or the client keeps trying to reconnect.
func rawJetStream(ctx context.Context, url string) (js jetstream.JetStream, closeConn func(), err error) {
	nc, err := nats.Connect(url)
	if err != nil {
		return nil, nil, err
	}
	if js, err = jetstream.New(nc); err == nil {
		err = createRawStream(ctx, js)
	}
	if err != nil {
		nc.Close()
		return nil, nil, err
	}
	return js, nc.Close, nil
}

// workerConfig is the in-process worker the notification benchmarks run:
// the receive settings r on sub at the Pub/Sub server addr, NATS at
// natsURL, the storages in storagesFile.
func workerConfig(natsURL, addr, sub string, r receive, storagesFile string) worker.Config {
	return worker.Config{
		NATSURL:              natsURL,
		HTTPAddr:             "127.0.0.1:0",
		PubsubProject:        projectID,
		PubsubSubscription:   sub,
		PubsubStreams:        r.streams,
		PubsubMaxOutstanding: r.maxOutstanding,
		MaxObjectBytes:       1 << 30,
		StoragesFile:         storagesFile,
		ShutdownTimeout:      30 * time.Second,
		Logging:              config.Logging{LogLevel: "info", LogFormat: "json"},
		PubsubEmulatorHost:   addr,
	}
}

// newBus connects to the NATS server at url as name and returns labelsync's
// bus on it, with the task and dead-letter streams created. The connection
// closes when b ends.
func newBus(_ context.Context, b *testing.B, url, name string) *taskbus.Bus {
	b.Helper()
	return natstest.Bus(b, url, nats.Name(name))
}
