package catalog_test

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/labelsync/labelsync/internal/catalog"
	"github.com/labelsync/labelsync/internal/natstest"
	"github.com/labelsync/labelsync/internal/secrets"
	"github.com/labelsync/labelsync/internal/storages"
)

const creds = `{"type": "service_account", "project_id": "acme", "private_key": "-----BEGIN PRIVATE KEY-----\nMARKER-7f3a\n-----END PRIVATE KEY-----\n"}`

func newKey(t *testing.T) *secrets.Box {
	t.Helper()
	k := make([]byte, 32)
	_, _ = rand.Read(k)
	box, err := secrets.New(base64.StdEncoding.EncodeToString(k))
	if err != nil {
		t.Fatal(err)
	}
	return box
}

// replicas opens n catalogs on one NATS server, as n replicas would.
func replicas(t *testing.T, n int, box *secrets.Box) (jetstream.JetStream, []*catalog.Catalog) {
	t.Helper()
	url := natstest.Server(t).URL()
	var out []*catalog.Catalog
	var js jetstream.JetStream
	for range n {
		var err error
		js, err = jetstream.New(natstest.Connect(t, url))
		if err != nil {
			t.Fatal(err)
		}
		c, err := catalog.Open(context.Background(), js, box, slog.New(slog.DiscardHandler))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(c.Close)
		out = append(out, c)
	}
	return js, out
}

func imp(id int64, bucket string) storages.Import {
	s := storages.Import{ID: id, Project: 7, Bucket: bucket, Prefix: "incoming", UseBlobURLs: true}
	if err := s.Normalize(); err != nil {
		panic(err)
	}
	return s
}

func within(t *testing.T, d time.Duration, what string, ok func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	for !ok() {
		if time.Since(start) > d {
			t.Fatalf("%s: not within %s", what, d)
		}
		time.Sleep(time.Millisecond)
	}
	return time.Since(start)
}

func TestChangesReachEveryReplica(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	_, cs := replicas(t, 2, newKey(t))
	a, b := cs[0], cs[1]

	created, err := catalog.Create(ctx, a, imp(0, "acme-raw"))
	if err != nil {
		t.Fatal(err)
	}
	if created.ID == 0 {
		t.Fatal("no id assigned")
	}
	// In force on the replica that answered when Create returns.
	if len(a.Imports().Match("acme-raw", "incoming/x.jpg")) != 1 {
		t.Fatal("not in force on the replica that created it")
	}
	d := within(t, time.Second, "create on the other replica", func() bool { return len(b.Imports().Match("acme-raw", "incoming/x.jpg")) == 1 })
	t.Logf("create live on the other replica after %s", d)

	if _, err := catalog.Update(ctx, b, created.ID, func(s storages.Import) (storages.Import, error) {
		s.Prefix = "other"
		return s, s.Normalize()
	}); err != nil {
		t.Fatal(err)
	}
	within(t, time.Second, "update on the other replica", func() bool {
		return len(a.Imports().Match("acme-raw", "incoming/x.jpg")) == 0 && len(a.Imports().Match("acme-raw", "other/x.jpg")) == 1
	})

	if err := catalog.Delete[storages.Import](ctx, a, created.ID); err != nil {
		t.Fatal(err)
	}
	within(t, time.Second, "delete on the other replica", func() bool { return b.Imports().Len() == 0 })
	if err := catalog.Delete[storages.Import](ctx, a, created.ID); !errors.Is(err, catalog.ErrNotFound) {
		t.Errorf("delete again: %v, want ErrNotFound", err)
	}
	if _, err := catalog.Update(ctx, a, created.ID, func(s storages.Import) (storages.Import, error) { return s, nil }); !errors.Is(err, catalog.ErrNotFound) {
		t.Errorf("update a deleted storage: %v, want ErrNotFound", err)
	}
	// Created again with its id: it continues (same id, same ledger).
	again, err := catalog.Create(ctx, b, imp(created.ID, "acme-raw"))
	if err != nil || again.ID != created.ID {
		t.Fatalf("create again with id %d: %+v, %v", created.ID, again, err)
	}
	if _, err := catalog.Create(ctx, a, imp(created.ID, "acme-raw")); !errors.Is(err, catalog.ErrExists) {
		t.Errorf("create with a taken id: %v, want ErrExists", err)
	}
}

func TestIDsUniqueAcrossReplicas(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	_, cs := replicas(t, 3, nil)
	var mu sync.Mutex
	seen := map[int64]bool{}
	var wg sync.WaitGroup
	for _, c := range cs {
		wg.Go(func() {
			for range 20 {
				s, err := catalog.Create(ctx, c, imp(0, "acme-raw"))
				if err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				if seen[s.ID] {
					t.Errorf("id %d given twice", s.ID)
				}
				seen[s.ID] = true
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	within(t, time.Second, "every replica has all 60", func() bool {
		for _, c := range cs {
			if c.Imports().Len() != 60 {
				return false
			}
		}
		return true
	})
}

// The storages file is a declaration: replicas applying it at once
// converge, storages it does not name are left alone, and applying it again
// writes nothing.
func TestDeclare(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	box := newKey(t)
	js, cs := replicas(t, 2, box)
	api, err := catalog.Create(ctx, cs[0], imp(50, "acme-api"))
	if err != nil {
		t.Fatal(err)
	}
	file, err := storages.Parse([]byte(`{"import": [{"id": 1, "project": 7, "bucket": "acme-raw", "google_application_credentials": `+fmt.Sprintf("%q", creds)+`}],
	  "export": [{"id": 2, "project": 7, "bucket": "acme-labels"}]}`), storages.ParseOptions{Secrets: box})
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for _, c := range cs {
		wg.Go(func() {
			if err := c.Declare(ctx, file); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	kv, err := js.KeyValue(ctx, catalog.Bucket)
	if err != nil {
		t.Fatal(err)
	}
	rev := func() uint64 {
		e, err := kv.Get(ctx, "import.1")
		if err != nil {
			t.Fatal(err)
		}
		return e.Revision()
	}
	before := rev()
	if err := cs[1].Declare(ctx, file); err != nil {
		t.Fatal(err)
	}
	if after := rev(); after != before {
		t.Errorf("applying the same file again wrote import.1 (revision %d → %d)", before, after)
	}
	for _, c := range cs {
		within(t, time.Second, "declared storages everywhere", func() bool {
			_, ok1 := c.Imports().Get(1)
			_, ok50 := c.Imports().Get(api.ID)
			return ok1 && ok50 && len(c.Exports()) == 1
		})
	}
	// Credentials are sealed at rest.
	e, err := kv.Get(ctx, "import.1")
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(e.Value()), "MARKER-7f3a") || strings.Contains(string(e.Value()), "private_key") {
		t.Errorf("credentials in clear in the bucket: %s", e.Value())
	}
	st, _ := cs[1].Imports().Get(1)
	if got, err := st.Credentials(box); err != nil || string(got) != creds {
		t.Errorf("credentials opened: %q, %v", got, err)
	}
}

// A replica without the key refuses a bucket holding sealed credentials,
// naming the variable; a key rotation re-seals every credential.
func TestSealedCredentialsAndRotation(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	box := newKey(t)
	url := natstest.Server(t).URL()
	js, err := jetstream.New(natstest.Connect(t, url))
	if err != nil {
		t.Fatal(err)
	}
	c, err := catalog.Open(ctx, js, box, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	s := imp(0, "acme-raw")
	s.GoogleApplicationCredentials = creds
	if _, err := catalog.Create(ctx, c, s); err != nil {
		t.Fatal(err)
	}
	c.Close()
	if _, err := catalog.Open(ctx, js, nil, slog.New(slog.DiscardHandler)); err == nil || !strings.Contains(err.Error(), "LABELSYNC_SECRET_KEY") {
		t.Fatalf("open without the key: %v, want an error naming LABELSYNC_SECRET_KEY", err)
	}
	if _, err := catalog.Open(ctx, js, newKey(t), slog.New(slog.DiscardHandler)); err == nil || !strings.Contains(err.Error(), "LABELSYNC_SECRET_KEY") {
		t.Fatalf("open with another key: %v, want an error naming LABELSYNC_SECRET_KEY", err)
	}
	c, err = catalog.Open(ctx, js, box, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	next := newKey(t)
	if n, err := c.Reseal(ctx, next); err != nil || n != 1 {
		t.Fatalf("reseal: %d, %v; want 1", n, err)
	}
	c.Close()
	c, err = catalog.Open(ctx, js, next, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatalf("open with the new key: %v", err)
	}
	defer c.Close()
	st := c.Imports().All()[0]
	if got, err := st.Credentials(next); err != nil || string(got) != creds {
		t.Errorf("credentials after rotation: %q, %v", got, err)
	}
}

// A snapshot is never half applied: while one replica flips a storage
// between two prefixes and another creates and deletes storages, every
// snapshot another replica reads matches an object under exactly one of
// the prefixes, never both or none.
func TestSnapshotsAreConsistent(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	_, cs := replicas(t, 2, nil)
	s, err := catalog.Create(ctx, cs[0], imp(0, "acme-raw"))
	if err != nil {
		t.Fatal(err)
	}
	within(t, time.Second, "storage on the reader", func() bool { _, ok := cs[1].Imports().Get(s.ID); return ok })
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var reads int
	wg.Go(func() {
		for {
			select {
			case <-stop:
				return
			default:
			}
			snap := cs[1].Snapshot()
			a := len(snap.Imports.Match("acme-raw", "incoming/x.jpg"))
			b := len(snap.Imports.Match("acme-raw", "other/x.jpg"))
			if a+b != 1 {
				t.Errorf("a snapshot matches %d under incoming/ and %d under other/", a, b)
				return
			}
			reads++
		}
	})
	for i := range 100 {
		prefix := "other"
		if i%2 == 1 {
			prefix = "incoming"
		}
		if _, err := catalog.Update(ctx, cs[0], s.ID, func(cur storages.Import) (storages.Import, error) {
			cur.Prefix = prefix
			return cur, cur.Normalize()
		}); err != nil {
			t.Fatal(err)
		}
		other, err := catalog.Create(ctx, cs[0], imp(0, "acme-other"))
		if err != nil {
			t.Fatal(err)
		}
		if err := catalog.Delete[storages.Import](ctx, cs[0], other.ID); err != nil {
			t.Fatal(err)
		}
	}
	close(stop)
	wg.Wait()
	if reads == 0 {
		t.Fatal("the reader never read")
	}
}
