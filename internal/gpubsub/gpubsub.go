// Package gpubsub connects Google Cloud Pub/Sub to Watermill handlers: a
// Subscriber that runs a message.HandlerFunc (with its middleware) for each
// message of one existing subscription, and the client and subscription
// set-up labelsync needs.
//
// Why not watermill-googlecloud: on Close it cancels the receive context and
// nacks every message still in a handler, so a shutdown throws away work
// that is seconds from done. This subscriber stops pulling, lets in-flight
// handlers finish and acknowledges what they finished (bounded by
// DrainTimeout).
//
// Why not Watermill's Router: it hands each message from the subscriber's
// goroutine to a new goroutine of its own over a channel and back; at the
// worker's rate on two cores that cost about 4 µs of CPU per message, a
// measurable share of the whole path (docs/benchmarks.md). Serve runs the
// handler in the Pub/Sub client's callback goroutine instead, which every
// message has anyway. Handlers and middleware are Watermill's types, so the
// failure path is still a message.HandlerMiddleware around the handler.
//
// Delivery semantics: at least once. A message is acked when the handler
// returns nil, nacked when it returns an error. A message's Watermill UUID
// is its Pub/Sub message id and its metadata are its attributes. Handlers run
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

// Subscriber runs a Watermill handler over one Pub/Sub subscription.
type Subscriber struct {
	sub    *pubsub.Subscriber
	logger *slog.Logger

	drain     time.Duration
	receiving atomic.Bool
	mu        sync.Mutex
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
	ApplyReceiveSettings(sub, cfg.Streams, cfg.MaxOutstanding)
	return &Subscriber{sub: sub, logger: logger, drain: cfg.DrainTimeout, closing: make(chan struct{})}
}

// ApplyReceiveSettings sets labelsync's receive settings on sub: streams
// streaming-pull streams sharing maxOutstanding messages in flight.
// Benchmarks apply the same to their baselines.
func ApplyReceiveSettings(sub *pubsub.Subscriber, streams, maxOutstanding int) {
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
}

// Serve receives until ctx is done or Close is called, running h for each
// message in the Pub/Sub client's own callback goroutine, and acks the
// message when h returns nil, nacks it otherwise. After a stop it returns
// once in-flight messages were settled, or DrainTimeout later (see
// drainWait). Messages h produces are an error: there is no publisher.
func (s *Subscriber) Serve(ctx context.Context, h message.HandlerFunc) error {
	// Under mu, so that Close either sees this Serve in wg or Serve sees
	// Close.
	s.mu.Lock()
	select {
	case <-s.closing:
		s.mu.Unlock()
		return nil
	default:
	}
	s.wg.Add(1)
	s.mu.Unlock()
	defer s.wg.Done()

	// Handlers get a context that outlives the receive context, so that
	// work in flight at shutdown completes and is acked instead of thrown
	// away. The client's graceful shutdown waits for those handlers and
	// sends their acks (its timed shutdown, measured on pstest, dropped
	// them); drainWait bounds it.
	recvCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	hctx, hcancel := context.WithCancel(context.WithoutCancel(ctx))
	defer hcancel()
	go func() {
		select {
		case <-recvCtx.Done():
		case <-s.closing:
		}
		cancel()
	}()
	s.receiving.Store(true)
	defer s.receiving.Store(false)
	done := make(chan error, 1)
	go func() {
		done <- s.sub.Receive(recvCtx, func(_ context.Context, m *pubsub.Message) {
			growStack(0)
			out, err := h(newMessage(hctx, m))
			if err == nil && len(out) > 0 {
				err = fmt.Errorf("gpubsub: handler produced %d messages and there is no publisher", len(out))
			}
			if err != nil {
				s.logger.Error("handler failed, message nacked", "err", err, "message_id", m.ID)
				m.Nack()
				return
			}
			m.Ack()
		})
	}()
	var err error
	select {
	case err = <-done:
	case <-recvCtx.Done():
		err = s.drainWait(done, hcancel)
	}
	if err != nil && !errors.Is(err, context.Canceled) {
		return fmt.Errorf("gpubsub: receive: %w", err)
	}
	return nil
}

// drainWait waits, after a stop, for Receive to return: for the handlers
// in flight to finish and their acks to be sent. After DrainTimeout it ends
// the handlers' contexts and stops waiting, so that a stuck handler or an
// unreachable server (acks are retried for a minute) cannot hold a shutdown;
// what was not acknowledged by then is redelivered. The Receive left
// behind ends when the client is closed.
func (s *Subscriber) drainWait(done <-chan error, endHandlers func()) error {
	if s.drain <= 0 {
		return <-done
	}
	t := time.NewTimer(s.drain)
	defer t.Stop()
	select {
	case err := <-done:
		return err
	case <-t.C:
		endHandlers()
		s.logger.Warn("pub/sub drain timed out; what was not acknowledged will be redelivered", "timeout", s.drain)
		return nil
	}
}

// growStack grows the goroutine's stack to 8 KiB while it is still
// shallow. The Pub/Sub client starts a goroutine per message with the
// runtime's 2 KiB stack, and the handler's path outgrows it deep inside
// (measured: in time.Parse, under ten frames), where the runtime's copy
// and frame-by-frame adjustment of the stack cost about 3 µs per message.
// Forcing the growth here, with three frames on the stack, costs a
// fraction of that; the rest of the path then fits.
//
//go:noinline
func growStack(i int) byte {
	var buf [3 << 10]byte
	buf[i] = 1 // i is not known at compile time: buf stays on the stack
	return buf[len(buf)-1-i]
}

// newMessage is the Watermill message of m: its id as the UUID (the
// dead-letter path records it), its payload, and its attributes as the
// metadata (the map is ours to keep: no copy).
func newMessage(ctx context.Context, m *pubsub.Message) *message.Message {
	// A literal, not message.NewMessage: its ack channels and metadata map
	// would be three allocations per message that nothing reads, as Serve
	// acks by the handler's result (Ack and Nack accept nil channels).
	msg := &message.Message{UUID: m.ID, Metadata: m.Attributes, Payload: m.Data}
	if msg.Metadata == nil {
		msg.Metadata = message.Metadata{}
	}
	msg.SetContext(ctx)
	return msg
}

// Receiving reports whether the subscription is being received.
func (s *Subscriber) Receiving() bool { return s.receiving.Load() }

// Close stops Serve and waits for in-flight messages to be settled.
func (s *Subscriber) Close() error {
	s.mu.Lock()
	s.closeOnce.Do(func() { close(s.closing) })
	s.mu.Unlock()
	s.wg.Wait()
	return nil
}
