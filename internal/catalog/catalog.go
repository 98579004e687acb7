// Package catalog keeps labelsync's storages (SPEC §1) in the JetStream
// key-value bucket labelsync_storages, and on every replica a consistent
// snapshot of them in memory, rebuilt from a watch of the bucket.
//
// A change made through any replica (the storage API, the storages file
// applied at start) reaches every worker and exporter within milliseconds,
// without a restart. Readers take the snapshot with Imports or Exports: a
// notification is matched against one whole set, never against a change
// half applied. Keys are import.<id> and export.<id>; values are the
// storage's JSON with its credentials sealed (LABELSYNC_SECRET_KEY), never
// in clear. Ids the requests do not give are assigned from a counter in the
// same bucket, by compare-and-set, so they are unique across replicas.
//
// A Catalog is safe for concurrent use.
package catalog

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/labelsync/labelsync/internal/secrets"
	"github.com/labelsync/labelsync/internal/storages"
	"github.com/labelsync/labelsync/internal/taskbus"
)

// Bucket is the key-value bucket of storages.
const Bucket = "labelsync_storages"

// ErrNotFound: no storage with that id.
var ErrNotFound = errors.New("catalog: no such storage")

// ErrExists: a create named an id that is taken.
var ErrExists = errors.New("catalog: a storage with that id exists")

// maxConflicts bounds compare-and-set retries.
const maxConflicts = 32

// record is a stored storage: exactly one of Import and Export, with the
// credentials sealed apart.
type record struct {
	Import *storages.Import `json:"import,omitempty"`
	Export *storages.Export `json:"export,omitempty"`
	Sealed string           `json:"sealed_credentials,omitempty"`
}

// Snapshot is one consistent view of every storage.
type Snapshot struct {
	Imports *storages.Set
	Exports []storages.Export // by id
}

// Catalog is the storages bucket and its watched snapshot.
type Catalog struct {
	kv     jetstream.KeyValue
	box    *secrets.Box
	logger *slog.Logger

	snap atomic.Pointer[Snapshot]

	mu      sync.Mutex // guards the maps below and waiters
	imports map[int64]storages.Import
	exports map[int64]storages.Export
	revs    map[string]uint64 // key → revision applied
	waiters []waiter

	stop func()
	done chan struct{}
}

type waiter struct {
	key string
	rev uint64
	ch  chan struct{}
}

// Open opens (or creates) the bucket, loads every storage, and keeps the
// snapshot current until Close. box seals and opens credentials; without
// it, a bucket that holds sealed credentials is refused, naming
// LABELSYNC_SECRET_KEY, and so are inline credentials in requests.
func Open(ctx context.Context, js jetstream.JetStream, box *secrets.Box, logger *slog.Logger) (*Catalog, error) {
	kv, err := taskbus.OpenKeyValue(ctx, js, jetstream.KeyValueConfig{Bucket: Bucket, Description: "labelsync storages (credentials sealed)", Storage: jetstream.FileStorage, History: 5})
	if err != nil {
		return nil, fmt.Errorf("catalog: bucket %s: %w", Bucket, err)
	}
	c := &Catalog{kv: kv, box: box, logger: logger, imports: map[int64]storages.Import{}, exports: map[int64]storages.Export{}, revs: map[string]uint64{}, done: make(chan struct{})}
	wctx, stop := context.WithCancel(context.WithoutCancel(ctx))
	c.stop = stop
	w, err := kv.WatchAll(wctx)
	if err != nil {
		stop()
		return nil, fmt.Errorf("catalog: watch %s: %w", Bucket, err)
	}
	// The initial values, up to the nil that marks their end.
	for e := range w.Updates() {
		if e == nil {
			break
		}
		if err := c.apply(e); err != nil {
			stop()
			_ = w.Stop()
			return nil, err
		}
	}
	c.publish()
	go c.watch(w)
	return c, nil
}

// watch applies changes until Close.
func (c *Catalog) watch(w jetstream.KeyWatcher) {
	defer close(c.done)
	defer func() { _ = w.Stop() }()
	for e := range w.Updates() {
		if e == nil {
			continue
		}
		if err := c.apply(e); err != nil {
			// A change this replica cannot read (credentials sealed with
			// a key it does not have yet, during a rotation) leaves the
			// storage as it was here, loudly.
			c.logger.Error("catalog: a stored change cannot be read here; the storage stays as it was", "key", e.Key(), "err", err)
		}
		c.publish()
	}
}

// Close stops watching.
func (c *Catalog) Close() {
	c.stop()
	<-c.done
}

// apply records one entry in the maps (not yet in the snapshot).
func (c *Catalog) apply(e jetstream.KeyValueEntry) error {
	kind, id, ok := parseKey(e.Key())
	if !ok {
		return nil // the id counters, or keys of a later version
	}
	c.mu.Lock()
	defer func() {
		c.revs[e.Key()] = e.Revision()
		c.mu.Unlock()
	}()
	if e.Operation() != jetstream.KeyValuePut {
		if kind == "import" {
			delete(c.imports, id)
		} else {
			delete(c.exports, id)
		}
		return nil
	}
	imp, exp, err := c.decode(kind, e.Value())
	if err != nil {
		return fmt.Errorf("catalog: %s: %w", e.Key(), err)
	}
	if imp != nil {
		c.imports[id] = *imp
	} else {
		c.exports[id] = *exp
	}
	return nil
}

// decode reads a record, checking that its credentials can be opened.
func (c *Catalog) decode(kind string, value []byte) (*storages.Import, *storages.Export, error) {
	var r record
	if err := json.Unmarshal(value, &r); err != nil {
		return nil, nil, err
	}
	if r.Sealed != "" && c.box == nil {
		return nil, nil, errors.New("LABELSYNC_SECRET_KEY: stored storages have sealed credentials; set the key they were sealed with")
	}
	switch {
	case kind == "import" && r.Import != nil:
		r.Import.GoogleApplicationCredentials = ""
		r.Import.SetSealedCredentials(r.Sealed)
		if err := r.Import.Normalize(); err != nil {
			return nil, nil, err
		}
		if _, err := r.Import.Credentials(c.box); err != nil {
			return nil, nil, fmt.Errorf("LABELSYNC_SECRET_KEY: cannot open the stored credentials: %w", err)
		}
		return r.Import, nil, nil
	case kind == "export" && r.Export != nil:
		r.Export.GoogleApplicationCredentials = ""
		r.Export.SetSealedCredentials(r.Sealed)
		if err := r.Export.Normalize(); err != nil {
			return nil, nil, err
		}
		if _, err := r.Export.Credentials(c.box); err != nil {
			return nil, nil, fmt.Errorf("LABELSYNC_SECRET_KEY: cannot open the stored credentials: %w", err)
		}
		return nil, r.Export, nil
	}
	return nil, nil, errors.New("the value holds no storage of its kind")
}

// publish swaps in a snapshot of the maps and wakes waiters it satisfies.
func (c *Catalog) publish() {
	c.mu.Lock()
	defer c.mu.Unlock()
	imports := make([]storages.Import, 0, len(c.imports))
	for _, s := range c.imports {
		imports = append(imports, s)
	}
	set, err := storages.NewSet(imports)
	if err != nil {
		// Every storage was normalized on the way in; this is a bug.
		c.logger.Error("catalog: snapshot not rebuilt", "err", err)
		return
	}
	exports := make([]storages.Export, 0, len(c.exports))
	for _, s := range c.exports {
		exports = append(exports, s)
	}
	slices.SortFunc(exports, func(a, b storages.Export) int { return cmp.Compare(a.ID, b.ID) })
	c.snap.Store(&Snapshot{Imports: set, Exports: exports})
	kept := c.waiters[:0]
	for _, w := range c.waiters {
		if c.revs[w.key] >= w.rev {
			close(w.ch)
			continue
		}
		kept = append(kept, w)
	}
	c.waiters = kept
}

// Snapshot returns the storages in force.
func (c *Catalog) Snapshot() *Snapshot { return c.snap.Load() }

// Imports returns the import storages in force.
func (c *Catalog) Imports() *storages.Set { return c.snap.Load().Imports }

// Exports returns the export storages in force.
func (c *Catalog) Exports() []storages.Export { return c.snap.Load().Exports }

// waitApplied returns once this replica's snapshot includes revision rev
// of key, so that a change the API answered for is in force on the replica
// that answered.
func (c *Catalog) waitApplied(ctx context.Context, key string, rev uint64) error {
	c.mu.Lock()
	if c.revs[key] >= rev {
		c.mu.Unlock()
		return nil
	}
	ch := make(chan struct{})
	c.waiters = append(c.waiters, waiter{key: key, rev: rev, ch: ch})
	c.mu.Unlock()
	select {
	case <-ch:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func key(kind string, id int64) string { return kind + "." + strconv.FormatInt(id, 10) }

func parseKey(k string) (kind string, id int64, ok bool) {
	kind, rest, found := strings.Cut(k, ".")
	if !found || (kind != "import" && kind != "export") {
		return "", 0, false
	}
	id, err := strconv.ParseInt(rest, 10, 64)
	return kind, id, err == nil && id > 0
}
