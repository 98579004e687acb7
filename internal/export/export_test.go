package export_test

import (
	"context"
	"fmt"
	"io"
	"sort"
	"testing"
	"time"

	"cloud.google.com/go/storage"
	"github.com/fsouza/fake-gcs-server/fakestorage"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/labelsync/labelsync/internal/annotation"
	"github.com/labelsync/labelsync/internal/export"
	"github.com/labelsync/labelsync/internal/gcs"
	"github.com/labelsync/labelsync/internal/metrics"
	"github.com/labelsync/labelsync/internal/natstest"
	"github.com/labelsync/labelsync/internal/storages"
	"github.com/labelsync/labelsync/internal/testlog"
)

// event decodes a Label Studio webhook body for annotation 5 of task 9 in
// project 7, as the webhook and the consumer do.
func event(t *testing.T, body string) annotation.Event {
	t.Helper()
	_, evs, err := annotation.Decode([]byte(body))
	if err != nil || len(evs) != 1 {
		t.Fatalf("Decode(%s) = %v, %v", body, evs, err)
	}
	return evs[0]
}

const (
	createdBody = `{"action":"ANNOTATION_CREATED","annotation":{"id":5,"result":[],"task":9,"project":7,"updated_at":"2026-12-02T10:00:00Z"},"task":{"id":9,"data":{"image":"gs://a/b.jpg"},"project":7},"project":{"id":7}}`
	deletedBody = `{"action":"ANNOTATIONS_DELETED","annotations":[{"id":5}],"project":{"id":7}}`
)

// TestDeleteBeforeCreate applies an annotation's delete, then its create,
// to each kind of storage: nothing is left behind. A storage that may
// delete objects sees the create written and removed again (the write
// reads the state after it wrote); one that may not, or a task-keyed one,
// is not written at all (the write reads the state first).
func TestDeleteBeforeCreate(t *testing.T) {
	t.Parallel()
	for _, st := range []storages.Export{
		{ID: 1, Project: 7, Bucket: "deletes", Prefix: "a", CanDeleteObjects: true, ObjectKey: storages.DefaultObjectKey},
		{ID: 2, Project: 7, Bucket: "keeps", Prefix: "a", CanDeleteObjects: false, ObjectKey: storages.AnnotationJSONObjectKey},
		{ID: 3, Project: 7, Bucket: "tasks", Prefix: "t", CanDeleteObjects: true, ObjectKey: storages.TaskObjectKey},
	} {
		t.Run(fmt.Sprintf("%s can_delete_objects=%v", st.ObjectKey, st.CanDeleteObjects), func(t *testing.T) {
			t.Parallel()
			srv, err := fakestorage.NewServerWithOptions(fakestorage.Options{Scheme: "http", Host: "127.0.0.1", Writer: io.Discard})
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(srv.Stop)
			srv.CreateBucketWithOpts(fakestorage.CreateBucketOpts{Name: st.Bucket})
			clients := gcs.NewClients(gcs.Options{EmulatorHost: srv.URL()})
			t.Cleanup(func() { _ = clients.Close() })
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			reg := prometheus.NewRegistry()
			x, err := export.New(ctx, natstest.NewBus(t).JetStream(), func() []storages.Export { return []storages.Export{st} },
				func(ctx context.Context, _ *storages.Export) (*storage.Client, error) { return clients.For(ctx, nil) },
				metrics.New(reg), testlog.Logger(t))
			if err != nil {
				t.Fatal(err)
			}
			if err := x.Apply(ctx, event(t, deletedBody)); err != nil {
				t.Fatalf("delete: %v", err)
			}
			if err := x.Apply(ctx, event(t, createdBody)); err != nil {
				t.Fatalf("late create: %v", err)
			}
			objs, _, err := srv.ListObjectsWithOptions(st.Bucket, fakestorage.ListOptions{})
			if err != nil {
				t.Fatal(err)
			}
			var names []string
			for _, o := range objs {
				names = append(names, o.Name)
			}
			sort.Strings(names)
			if len(names) != 0 {
				t.Errorf("gs://%s holds %v after a delete and its late create, want nothing", st.Bucket, names)
			}
		})
	}
}
