package deadletter_test

import (
	"context"
	"log/slog"
	"testing"

	"github.com/ThreeDotsLabs/watermill/message"
	"github.com/ThreeDotsLabs/watermill/message/router/middleware"

	"github.com/labelsync/labelsync/internal/deadletter"
)

// BenchmarkMiddleware is the failure path's cost on the success path (what
// every notification pays), against calling the handler bare. Compare it
// with BenchmarkNotificationPath's ns/notification (internal/bench).
func BenchmarkMiddleware(b *testing.B) {
	e := newEnv(b)
	ok := func(*message.Message) ([]*message.Message, error) { return nil, nil }
	msg := message.NewMessage("42", []byte("payload"))
	msg.SetContext(context.Background())
	chain, err := deadletter.Middleware(e.w, deadletter.DefaultRetry(), slog.New(slog.DiscardHandler))
	if err != nil {
		b.Fatal(err)
	}
	for _, c := range []struct {
		name string
		h    message.HandlerFunc
	}{
		{"bare", ok},
		{"recoverer", middleware.Recoverer(ok)},
		{"retry", deadletter.DefaultRetry().Middleware(ok)},
		{"chain", chain(ok)},
	} {
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := c.h(msg); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
