package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/fsouza/fake-gcs-server/fakestorage"

	"github.com/labelsync/labelsync/internal/gcs"
)

func probeList(b *testing.B, srv *fakestorage.Server, n int) {
	clients := gcs.NewClients(gcs.Options{EmulatorHost: srv.URL()})
	defer clients.Close()
	c, err := clients.For(context.Background(), nil)
	if err != nil {
		b.Fatal(err)
	}
	start := time.Now()
	got := 0
	pages := 0
	err = gcs.List(context.Background(), c, "bench-raw", "incoming/", true, "", 1000, func(objs []gcs.Object, next string) error {
		got += len(objs)
		pages++
		if pages == 1 {
			b.Logf("first page after %s", time.Since(start))
		}
		return nil
	})
	if err != nil {
		b.Fatal(err)
	}
	b.Logf("listed %d in %s (%.0f/s)", got, time.Since(start), float64(got)/time.Since(start).Seconds())
}

func BenchmarkProbeMem(b *testing.B) {
	n := envInt(b, "PROBE_N", 5000)
	objs := make([]fakestorage.Object, n)
	for i := range objs {
		objs[i] = fakestorage.Object{ObjectAttrs: fakestorage.ObjectAttrs{BucketName: "bench-raw", Name: fmt.Sprintf("incoming/img-%08d.jpg", i), ContentType: "image/jpeg"}, Content: []byte("x")}
	}
	start := time.Now()
	srv, err := fakestorage.NewServerWithOptions(fakestorage.Options{InitialObjects: objs, Scheme: "http", Host: "127.0.0.1"})
	if err != nil {
		b.Fatal(err)
	}
	defer srv.Stop()
	b.Logf("memory: seeded %d in %s", n, time.Since(start))
	probeList(b, srv, n)
}

func BenchmarkProbeFS(b *testing.B) {
	n := envInt(b, "PROBE_N", 5000)
	root := b.TempDir()
	start := time.Now()
	bdir := filepath.Join(root, url.PathEscape("bench-raw"))
	os.MkdirAll(filepath.Join(bdir, "incoming"), 0o700)
	os.WriteFile(bdir+".bucketMetadata", []byte(`{}`), 0o600)
	now := time.Now().UTC().Format("2006-01-02T15:04:05.999999Z07:00")
	for i := range n {
		p := filepath.Join(bdir, "incoming", fmt.Sprintf("img-%08d.jpg", i))
		if err := os.WriteFile(p, []byte("x"), 0o600); err != nil {
			b.Fatal(err)
		}
		meta, _ := json.Marshal(map[string]any{"ContentType": "image/jpeg", "StorageClass": "STANDARD", "Created": now, "Updated": now, "Generation": time.Now().UnixMicro() + int64(i)})
		if err := syscall.Setxattr(p, "user.metadata", meta, 0); err != nil {
			b.Fatal(err)
		}
	}
	b.Logf("fs: wrote %d in %s", n, time.Since(start))
	start = time.Now()
	srv, err := fakestorage.NewServerWithOptions(fakestorage.Options{StorageRoot: root, Scheme: "http", Host: "127.0.0.1"})
	if err != nil {
		b.Fatal(err)
	}
	defer srv.Stop()
	b.Logf("fs server up in %s", time.Since(start))
	probeList(b, srv, n)
}

func BenchmarkProbeFSInitial(b *testing.B) {
	n := envInt(b, "PROBE_N", 2000)
	objs := make([]fakestorage.Object, n)
	for i := range objs {
		objs[i] = fakestorage.Object{ObjectAttrs: fakestorage.ObjectAttrs{BucketName: "bench-raw", Name: fmt.Sprintf("incoming/img-%08d.jpg", i), ContentType: "image/jpeg"}, Content: []byte("x")}
	}
	start := time.Now()
	srv, err := fakestorage.NewServerWithOptions(fakestorage.Options{StorageRoot: b.TempDir(), InitialObjects: objs, Scheme: "http", Host: "127.0.0.1"})
	if err != nil {
		b.Fatal(err)
	}
	defer srv.Stop()
	b.Logf("fs InitialObjects: seeded %d in %s", n, time.Since(start))
}
