package pubsubemu_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"cloud.google.com/go/pubsub/v2"
	"cloud.google.com/go/pubsub/v2/apiv1/pubsubpb"
	"google.golang.org/api/option"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/labelsync/labelsync/internal/pubsubemu"
)

func TestMain(m *testing.M) { pubsubemu.Main(m) }

func TestPublishReceive(t *testing.T) {
	t.Parallel()
	addr := pubsubemu.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	const project = "pubsubemu-test"
	client, err := pubsub.NewClient(ctx, project,
		option.WithEndpoint(addr),
		option.WithGRPCDialOption(grpc.WithTransportCredentials(insecure.NewCredentials())),
		option.WithoutAuthentication(),
		option.WithTelemetryDisabled(),
	)
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()

	// The emulator outlives this test (shared by the binary, -count=N
	// reruns against it): names of our own.
	id := "publish-receive-" + strconv.FormatInt(time.Now().UnixNano(), 36)
	topic := "projects/" + project + "/topics/" + id
	sub := "projects/" + project + "/subscriptions/" + id
	if _, err := client.TopicAdminClient.CreateTopic(ctx, &pubsubpb.Topic{Name: topic}); err != nil {
		t.Fatalf("CreateTopic: %v", err)
	}
	if _, err := client.SubscriptionAdminClient.CreateSubscription(ctx, &pubsubpb.Subscription{Name: sub, Topic: topic}); err != nil {
		t.Fatalf("CreateSubscription: %v", err)
	}

	pub := client.Publisher(topic)
	defer pub.Stop()
	if _, err := pub.Publish(ctx, &pubsub.Message{Data: []byte("hello"), Attributes: map[string]string{"k": "v"}}).Get(ctx); err != nil {
		t.Fatalf("Publish: %v", err)
	}

	var got *pubsub.Message
	rctx, rcancel := context.WithCancel(ctx)
	err = client.Subscriber(sub).Receive(rctx, func(_ context.Context, m *pubsub.Message) {
		m.Ack()
		got = m
		rcancel()
	})
	if err != nil {
		t.Fatalf("Receive: %v", err)
	}
	if got == nil {
		t.Fatal("Receive returned without a message")
	}
	if string(got.Data) != "hello" || got.Attributes["k"] != "v" {
		t.Errorf("got data %q attributes %v, want %q with k=v", got.Data, got.Attributes, "hello")
	}
}

// TestSharedAcrossTests checks that, under Main, every Start in the binary
// gets the same emulator rather than launching another JVM.
func TestSharedAcrossTests(t *testing.T) {
	t.Parallel()
	a := pubsubemu.Start(t)
	b := pubsubemu.Start(t)
	if a != b {
		t.Errorf("second Start returned %s, want the shared %s", b, a)
	}
}

func TestFindOverride(t *testing.T) {
	// Not parallel: t.Setenv.
	dir := t.TempDir()
	script := filepath.Join(dir, "cloud-pubsub-emulator")
	if err := os.WriteFile(script, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name, env, want string
	}{
		{"existing", script, script},
		{"missing", filepath.Join(dir, "nope"), ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Setenv(pubsubemu.EnvBin, tt.env)
			if got := pubsubemu.Find(); got != tt.want {
				t.Errorf("Find() = %q, want %q", got, tt.want)
			}
		})
	}
}

// recordingTB captures how Start gives up, which the real testing.T would
// turn into the outcome of the calling test.
type recordingTB struct {
	testing.TB
	skipped, fatal string
}

func (r *recordingTB) Helper() {}

func (r *recordingTB) Skipf(format string, args ...any) {
	r.skipped = fmt.Sprintf(format, args...)
	runtime.Goexit()
}

func (r *recordingTB) Fatalf(format string, args ...any) {
	r.fatal = fmt.Sprintf(format, args...)
	runtime.Goexit()
}

func TestStartWhenAbsent(t *testing.T) {
	// Not parallel: t.Setenv.
	t.Setenv(pubsubemu.EnvBin, filepath.Join(t.TempDir(), "absent"))
	tests := []struct {
		require     string
		wantSkipped bool
	}{
		{"", true},
		{"1", false},
	}
	for _, tt := range tests {
		t.Run("require="+tt.require, func(t *testing.T) {
			t.Setenv(pubsubemu.EnvRequire, tt.require)
			r := &recordingTB{TB: t}
			done := make(chan struct{})
			go func() {
				defer close(done)
				pubsubemu.Start(r)
			}()
			<-done
			if got := r.skipped != ""; got != tt.wantSkipped {
				t.Errorf("skipped = %v (%q), want %v", got, r.skipped, tt.wantSkipped)
			}
			if got := r.fatal != ""; got == tt.wantSkipped {
				t.Errorf("failed = %v (%q), want %v", got, r.fatal, !tt.wantSkipped)
			}
			if msg := r.skipped + r.fatal; !strings.Contains(msg, pubsubemu.EnvBin) {
				t.Errorf("message %q does not say why (%s)", msg, pubsubemu.EnvBin)
			}
		})
	}
}
