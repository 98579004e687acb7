// Package gpubsub connects Google Cloud Pub/Sub to Watermill: a
// message.Subscriber over one existing subscription, and the client and
// subscription set-up labelsync needs.
//
// Why not watermill-googlecloud: on Close it cancels the receive context and
// nacks every message still in a handler, so a shutdown throws away work
// that is seconds from done. This subscriber stops pulling, lets in-flight
// handlers finish and acknowledges what they finished (bounded by
// DrainTimeout); only then does Subscribe's channel close.
//
// Delivery semantics: at least once. A message is acked when its Watermill
// message is acked, nacked when nacked; Watermill metadata are the Pub/Sub
// attributes plus deadletter.MessageIDKey. Messages are handed out
// concurrently, up to ReceiveSettings.MaxOutstandingMessages at once.
package gpubsub

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"cloud.google.com/go/pubsub/v2"
	"cloud.google.com/go/pubsub/v2/apiv1/pubsubpb"
	"github.com/ThreeDotsLabs/watermill/message"
	"google.golang.org/api/option"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/labelsync/labelsync/internal/deadletter"
)

// ClientOptions returns the options for a Pub/Sub client: of emulatorHost
// (Google's emulator or pstest) when set, of real Pub/Sub otherwise.
func ClientOptions(emulatorHost string) []option.ClientOption {
	// Fixed gRPC windows instead of gRPC's adaptive ones (which grow to
	// megabytes per stream): a server that streams more than flow control
	// asked for — Google's emulator does, under load — then waits in its
	// own buffers, not in the worker's memory. 256 KiB per stream still
	// moves hundreds of notifications per round trip.
	opts := []option.ClientOption{
		option.WithGRPCDialOption(grpc.WithInitialWindowSize(256 << 10)),
		option.WithGRPCDialOption(grpc.WithInitialConnWindowSize(4 << 20)),
	}
	if emulatorHost == "" {
		return opts
	}
	return append(opts,
		option.WithEndpoint(emulatorHost),
		option.WithoutAuthentication(),
		option.WithGRPCDialOption(grpc.WithTransportCredentials(insecure.NewCredentials())),
		option.WithTelemetryDisabled(),
	)
}

// EnsureSubscription checks that subscription exists in project. When it
// does not and topic is set, it creates it on topic (creating the topic too,
// as emulators start empty); otherwise the error names the subscription.
func EnsureSubscription(ctx context.Context, c *pubsub.Client, project, subscription, topic string) error {
	name := fmt.Sprintf("projects/%s/subscriptions/%s", project, subscription)
	_, err := c.SubscriptionAdminClient.GetSubscription(ctx, &pubsubpb.GetSubscriptionRequest{Subscription: name})
	if err == nil {
		return nil
	}
	if status.Code(err) != codes.NotFound {
		return fmt.Errorf("gpubsub: subscription %s: %w", name, err)
	}
	if topic == "" {
		return fmt.Errorf("gpubsub: subscription %s does not exist; create it, or set LABELSYNC_PUBSUB_TOPIC to have it created", name)
	}
	topicName := topic
	if !strings.HasPrefix(topic, "projects/") {
		topicName = fmt.Sprintf("projects/%s/topics/%s", project, topic)
	}
	if _, err := c.TopicAdminClient.CreateTopic(ctx, &pubsubpb.Topic{Name: topicName}); err != nil && status.Code(err) != codes.AlreadyExists {
		return fmt.Errorf("gpubsub: create topic %s: %w", topicName, err)
	}
	_, err = c.SubscriptionAdminClient.CreateSubscription(ctx, &pubsubpb.Subscription{
		Name:  name,
		Topic: topicName,
		// Short, so that messages held by a worker that died come back
		// quickly; the client extends the lease while a handler runs.
		AckDeadlineSeconds: 10,
	})
	if err != nil && status.Code(err) != codes.AlreadyExists {
		return fmt.Errorf("gpubsub: create subscription %s on %s: %w", name, topicName, err)
	}
	return nil
}

// Subscriber is a Watermill subscriber over one Pub/Sub subscription.
type Subscriber struct {
	sub    *pubsub.Subscriber
	logger *slog.Logger

	receiving atomic.Bool
	mu        sync.Mutex
	err       error
	closing   chan struct{}
	closeOnce sync.Once
	wg        sync.WaitGroup
}

// Config configures a Subscriber.
type Config struct {
	Subscription string
	// Streams is the number of streaming-pull streams; the client's default
	// of 1 caps throughput far below what the pipeline can do.
	Streams int
	// MaxOutstanding is the flow-control limit in messages.
	MaxOutstanding int
	// DrainTimeout bounds how long a shutdown waits for in-flight messages.
	DrainTimeout time.Duration
}

// NewSubscriber returns a subscriber on an existing subscription.
func NewSubscriber(c *pubsub.Client, cfg Config, logger *slog.Logger) *Subscriber {
	sub := c.Subscriber(cfg.Subscription)
	ApplyReceiveSettings(sub, cfg.Streams, cfg.MaxOutstanding, cfg.DrainTimeout)
	return &Subscriber{sub: sub, logger: logger, closing: make(chan struct{})}
}

// ApplyReceiveSettings sets labelsync's receive settings on sub: streams
// streaming-pull streams sharing maxOutstanding messages in flight.
// Benchmarks apply the same to their baselines.
func ApplyReceiveSettings(sub *pubsub.Subscriber, streams, maxOutstanding int, drain time.Duration) {
	sub.ReceiveSettings.NumGoroutines = streams
	// Per-stream flow control with an equal share each: with the client's
	// default (one limit across streams) every stream asks the server for
	// the whole limit, so 32 streams prefetch 32 times what can be handled,
	// hold it in memory and let leases lapse under load.
	sub.ReceiveSettings.EnablePerStreamFlowControl = true
	sub.ReceiveSettings.MaxOutstandingMessages = max(1, (maxOutstanding+streams-1)/streams)
	// Leases in 10 s steps (the minimum) instead of the client's 60 s
	// stream deadline: messages held by a worker that died are redelivered
	// to the others after seconds, not a minute. Live handlers keep theirs
	// extended for as long as they run.
	sub.ReceiveSettings.MaxDurationPerAckExtension = 10 * time.Second
	if drain > 0 {
		sub.ReceiveSettings.ShutdownOptions = &pubsub.ShutdownOptions{
			Behavior: pubsub.ShutdownBehaviorWaitForProcessing,
			Timeout:  drain,
		}
	}
}

// Subscribe starts receiving. topic is ignored: the subscription is fixed.
// The channel closes when ctx is done or Close is called, after in-flight
// messages were acked or nacked.
func (s *Subscriber) Subscribe(ctx context.Context, _ string) (<-chan *message.Message, error) {
	out := make(chan *message.Message)
	recvCtx, cancel := context.WithCancel(context.Background())
	s.wg.Add(2)
	go func() {
		defer s.wg.Done()
		select {
		case <-ctx.Done():
		case <-s.closing:
		}
		cancel()
	}()
	go func() {
		defer s.wg.Done()
		defer close(out)
		defer cancel()
		s.receiving.Store(true)
		err := s.sub.Receive(recvCtx, func(_ context.Context, m *pubsub.Message) {
			s.handle(recvCtx, m, out)
		})
		s.receiving.Store(false)
		if err != nil && !errors.Is(err, context.Canceled) {
			s.mu.Lock()
			s.err = fmt.Errorf("gpubsub: receive: %w", err)
			s.mu.Unlock()
			s.logger.Error("pub/sub receive stopped", "err", err)
		}
	}()
	return out, nil
}

func (s *Subscriber) handle(recvCtx context.Context, m *pubsub.Message, out chan<- *message.Message) {
	msg := message.NewMessage(m.ID, m.Data)
	// The attributes map is ours to keep: no copy.
	if m.Attributes != nil {
		msg.Metadata = m.Attributes
	}
	msg.Metadata[deadletter.MessageIDKey] = m.ID
	// The handler's context outlives the receive context, so that work in
	// flight at shutdown completes and is acked instead of thrown away.
	msg.SetContext(context.WithoutCancel(recvCtx))
	select {
	case out <- msg:
	case <-recvCtx.Done():
		m.Nack()
		return
	}
	select {
	case <-msg.Acked():
		m.Ack()
	case <-msg.Nacked():
		m.Nack()
	}
}

// Receiving reports whether the subscription is being received.
func (s *Subscriber) Receiving() bool { return s.receiving.Load() }

// Err is the error that stopped receiving, if any.
func (s *Subscriber) Err() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.err
}

// Close stops receiving and waits for in-flight messages to be settled.
func (s *Subscriber) Close() error {
	s.closeOnce.Do(func() { close(s.closing) })
	s.wg.Wait()
	return nil
}
