package catalog_test

import (
	"context"
	"log/slog"
	"slices"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/labelsync/labelsync/internal/catalog"
	"github.com/labelsync/labelsync/internal/natstest"
)

// BenchmarkCreateLive is the time from a storage create answered on one
// replica to the storage being in force on every other replica (issue 11:
// p99 under one second), with three replicas on one NATS server, each with
// a connection of its own, and 1,000 storages already stored.
func BenchmarkCreateLive(b *testing.B) {
	ctx := context.Background()
	url := natstest.Server(b).URL()
	var cs []*catalog.Catalog
	for range 3 {
		js, err := jetstream.New(natstest.Connect(b, url))
		if err != nil {
			b.Fatal(err)
		}
		c, err := catalog.Open(ctx, js, nil, slog.New(slog.DiscardHandler))
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(c.Close)
		cs = append(cs, c)
	}
	for range 1000 {
		if _, err := catalog.Create(ctx, cs[0], imp(0, "acme-raw")); err != nil {
			b.Fatal(err)
		}
	}
	var lat []time.Duration
	b.ResetTimer()
	for range b.N {
		for range 200 {
			start := time.Now()
			s, err := catalog.Create(ctx, cs[0], imp(0, "acme-raw"))
			if err != nil {
				b.Fatal(err)
			}
			for _, c := range cs[1:] {
				for {
					if _, ok := c.Imports().Get(s.ID); ok {
						break
					}
					time.Sleep(20 * time.Microsecond)
				}
			}
			lat = append(lat, time.Since(start))
		}
	}
	slices.Sort(lat)
	q := func(p float64) float64 { return float64(lat[int(p*float64(len(lat)-1))].Microseconds()) / 1000 }
	b.ReportMetric(0, "ns/op")
	b.ReportMetric(q(0.5), "p50_ms")
	b.ReportMetric(q(0.99), "p99_ms")
	b.ReportMetric(q(1), "max_ms")
}
