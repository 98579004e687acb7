package devstack

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"
)

func TestZZTiming(t *testing.T) {
	s, err := Start(context.Background(), Options{PubsubAddr: "127.0.0.1:0", GCSAddr: "127.0.0.1:0", Buckets: []string{"demo"}})
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.Post(s.GCSURL+"/upload/storage/v1/b/demo/o?uploadType=media&name=x.txt", "text/plain", strings.NewReader("hi"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	time.Sleep(300 * time.Millisecond)
	t0 := time.Now()
	s.GCS.Stop()
	t.Log("gcs stop", time.Since(t0))
	t0 = time.Now()
	s.Pstest.Close()
	t.Log("pstest close", time.Since(t0))
}
