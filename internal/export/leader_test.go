package export_test

import (
	"context"
	"fmt"
	"strconv"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/labelsync/labelsync/internal/export"
	"github.com/labelsync/labelsync/internal/natstest"
	"github.com/labelsync/labelsync/internal/taskbus"
	"github.com/labelsync/labelsync/internal/testlog"
	"github.com/labelsync/labelsync/internal/testwait"
)

// When the node leading the exporters' consumer dies, and the exporter's
// connection is to another node (so nothing tells it), events published
// after are still handled, well within the 20 s given here (13–270 ms
// seen): the pulls go on without waiting for nats.go's 30 s of missed
// heartbeats.
func TestConsumerLeaderLoss(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("starts a three-node NATS cluster")
	}
	ctx := context.Background()
	nodes, _ := natstest.Cluster(t, 3)
	js, err := jetstream.New(natstest.Connect(t, nodes[0].URL()))
	if err != nil {
		t.Fatal(err)
	}
	cfg := taskbus.StreamConfigs()[taskbus.AnnotationsStream]
	cfg.Replicas = 3
	if _, err := js.CreateStream(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	var seen subjects
	cctx, stop := context.WithCancel(ctx)
	consumed := make(chan error, 1)
	go func() { consumed <- export.Consume(cctx, js, export.ConsumeConfig{}, seen.handle, testlog.Logger(t)) }()
	defer func() { stop(); <-consumed }()
	publish := func(from int) {
		for i := range 10 {
			subject := "labelsync.annotations.7." + strconv.Itoa(from+i)
			testwait.Until(t, 30*time.Second, 50*time.Millisecond, "stored "+subject, func() error {
				_, err := js.PublishMsg(ctx, &nats.Msg{Subject: subject, Data: []byte(`{}`)})
				return err
			})
		}
	}
	publish(1)
	seen.wait(t, 10, 10*time.Second, "before the loss")
	// Make the consumer's leader a node the exporter is not connected to.
	var leader string
	testwait.Until(t, 30*time.Second, 100*time.Millisecond, "a consumer leader other than "+nodes[0].Name(), func() error {
		info, err := js.Consumer(ctx, taskbus.AnnotationsStream, export.ConsumerName)
		if err != nil {
			return err
		}
		ci, err := info.Info(ctx)
		if err != nil || ci.Cluster == nil {
			return fmt.Errorf("info: %v", err)
		}
		if ci.Cluster.Leader == nodes[0].Name() {
			_, _ = js.Conn().Request("$JS.API.CONSUMER.LEADER.STEPDOWN."+taskbus.AnnotationsStream+"."+export.ConsumerName, nil, 5*time.Second)
			return fmt.Errorf("leader %s", ci.Cluster.Leader)
		}
		leader = ci.Cluster.Leader
		return nil
	})
	for _, n := range nodes {
		if n.Name() == leader {
			t.Logf("stopping %s, the consumer's leader", leader)
			n.Stop()
			t.Cleanup(n.Start)
		}
	}
	start := time.Now()
	publish(11)
	seen.wait(t, 20, 20*time.Second, "after the leader's loss")
	t.Logf("handled within %s of the leader's loss", time.Since(start).Round(time.Millisecond))
}
