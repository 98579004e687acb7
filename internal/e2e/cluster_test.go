package e2e

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/labelsync/labelsync/internal/ledger"
	"github.com/labelsync/labelsync/internal/lsstub"
	"github.com/labelsync/labelsync/internal/natstest"
	"github.com/labelsync/labelsync/internal/taskbus"
)

// TestClusterNodeLoss runs the worker and the exporter on a three-node
// JetStream cluster (nats-server processes) with LABELSYNC_STREAM_REPLICAS=3.
// The node leading the task stream is killed while the worker drains
// uploads, and the node leading the annotations stream while the exporter
// takes webhooks, and the node leading the connector's task-id map while
// it imports into a Label Studio stand-in: nothing is lost, nothing is
// imported or written twice.
// Issue 14's report: with three replicas, killing a leader lost nothing —
// kept here.
func TestClusterNodeLoss(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("starts a three-node NATS cluster")
	}
	nodes, urls := natstest.ProcessCluster(t, 3)
	// kill stops the node that leads stream and restarts it after a
	// while, as a crashed machine comes back.
	kill := func(t *testing.T, js jetstream.JetStream, stream string) {
		ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
		defer cancel()
		s, err := js.Stream(ctx, stream)
		if err != nil {
			t.Fatal(err)
		}
		info, err := s.Info(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if info.Config.Replicas != 3 || info.Cluster == nil {
			t.Fatalf("%s: %d replicas, cluster %+v; want 3 replicas", stream, info.Config.Replicas, info.Cluster)
		}
		for _, n := range nodes {
			if n.Name() == info.Cluster.Leader {
				t.Logf("killing %s, the leader of %s", n.Name(), stream)
				n.Stop()
				time.AfterFunc(3*time.Second, n.Start)
				return
			}
		}
		t.Fatalf("%s: leader %q is none of the nodes", stream, info.Cluster.Leader)
	}

	// led waits until stream has a leader again: a request made while it
	// has none waits for its whole timeout.
	led := func(t *testing.T, js jetstream.JetStream, stream string) {
		eventually(t, 60*time.Second, stream+" led", func() error {
			ctx, cancel := context.WithTimeout(t.Context(), 2*time.Second)
			defer cancel()
			s, err := js.Stream(ctx, stream)
			if err != nil {
				return err
			}
			_, err = s.Info(ctx)
			return err
		})
	}

	// healthy waits until every stream has a leader again, after a kill.
	healthy := func(t *testing.T) {
		js, err := jetstream.New(natstest.Connect(t, urls))
		if err != nil {
			t.Fatal(err)
		}
		eventually(t, 60*time.Second, "every stream led", func() error {
			ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
			defer cancel()
			names := js.StreamNames(ctx)
			for name := range names.Name() {
				led(t, js, name)
			}
			return names.Err()
		})
	}

	t.Run("worker", func(t *testing.T) {
		h := newHarnessOn(t, backends[0], filesStorages, urls)
		cfg := h.config()
		cfg.StreamReplicas = 3
		h.startWorkerWith(cfg)
		var keys []string
		for i := range 600 {
			if i == 200 {
				kill(t, h.bus.JetStream(), taskbus.TasksStream)
			}
			k := fmt.Sprintf("incoming/cluster/%04d.jpg", i)
			h.upload("acme-raw", k, "x")
			keys = append(keys, k)
		}
		led(t, h.bus.JetStream(), taskbus.TasksStream)
		eventually(t, 120*time.Second, "every upload imported", func() error {
			if n := count(h.taskEvents(), ledger.Created); n < len(keys) {
				return fmt.Errorf("%d of %d", n, len(keys))
			}
			return nil
		})
		exactlyOnce(t, h.settle(), keys)
	})

	t.Run("exporter", func(t *testing.T) {
		healthy(t)
		h := newXHarness(t, `{"export": [{"id": 2, "project": 7, "bucket": "acme-labels", "prefix": "annotations", "can_delete_objects": true}]}`)
		h.natsURL = urls
		cfg := h.config()
		cfg.StreamReplicas = 3
		rx := h.startExporter(cfg)
		js, err := jetstream.New(natstest.Connect(t, urls))
		if err != nil {
			t.Fatal(err)
		}
		t0 := time.Date(2026, 12, 2, 9, 0, 0, 0, time.UTC)
		want := map[string]string{}
		for id := 1; id <= 300; id++ {
			if id == 100 {
				kill(t, js, taskbus.AnnotationsStream)
			}
			// As Label Studio does, a request answered 5xx is sent again.
			body := annotationPayload("ANNOTATION_CREATED", id, id, "v1", t0)
			// As Label Studio does too, a request that times out is sent
			// again (while the stream has no leader, storing waits up to
			// the webhook's 10 s).
			eventually(t, 60*time.Second, fmt.Sprintf("annotation %d accepted", id), func() error {
				req, err := http.NewRequestWithContext(t.Context(), "POST", "http://"+rx.x.HTTPAddr()+"/webhooks/label-studio", strings.NewReader(body))
				if err != nil {
					return err
				}
				req.Header.Set("Authorization", "Bearer "+webhookSecret)
				resp, err := (&http.Client{Timeout: 15 * time.Second}).Do(req)
				if err != nil {
					return err
				}
				resp.Body.Close()
				if resp.StatusCode != http.StatusOK {
					return fmt.Errorf("status %d", resp.StatusCode)
				}
				return nil
			})
			want[fmt.Sprintf("annotations/%d", id)] = fmt.Sprintf("%d:v1 task %d", id, id)
		}
		led(t, js, taskbus.AnnotationsStream)
		h.waitObjects("acme-labels", want, label)
		if n := counterSum(t, rx.x.Registry(), "labelsync_deadletter_total"); n != 0 {
			t.Errorf("%v dead letters", n)
		}
	})

	t.Run("connector", func(t *testing.T) {
		healthy(t)
		ls, token := newLabelStudio(t, lsstub.Options{LegacyToken: "0123456789abcdef0123456789abcdef01234567"})
		ls.SetLatency(30*time.Millisecond, 100*time.Microsecond)
		h := newHarnessOn(t, backends[0], filesStorages, urls)
		cfg := h.config()
		cfg.StreamReplicas = 3
		cfg.LabelStudioURL, cfg.LabelStudioToken = ls.URL, token
		cfg.LabelStudioBatchSize, cfg.LabelStudioFlushInterval = 20, 50*time.Millisecond
		cfg.LabelStudioAckWait = 5 * time.Second
		h.startWorkerWith(cfg)
		var keys []string
		for i := range 300 {
			if i == 100 {
				// The connector's durable map of task ids.
				kill(t, h.bus.JetStream(), "KV_labelsync_labelstudio")
			}
			k := fmt.Sprintf("incoming/ls-cluster/%04d.jpg", i)
			h.upload("acme-raw", k, "x")
			keys = append(keys, k)
		}
		led(t, h.bus.JetStream(), "KV_labelsync_labelstudio")
		eventually(t, 120*time.Second, "every upload a Label Studio task", func() error {
			got, err := lsTasks(ls, 7)
			if err != nil {
				t.Fatal(err) // a duplicate never goes away by itself
			}
			for _, k := range keys {
				if _, ok := got[taskbus.TaskID(1, k, nil)]; !ok {
					return fmt.Errorf("%s has no task yet (%d tasks)", k, len(got))
				}
			}
			return nil
		})
		h.connectorSettled(60 * time.Second)
		if _, err := lsTasks(ls, 7); err != nil {
			t.Error(err)
		}
	})
}
