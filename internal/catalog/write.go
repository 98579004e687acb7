package catalog

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/labelsync/labelsync/internal/secrets"
	"github.com/labelsync/labelsync/internal/storages"
)

// A storage is one of the two kinds; these helpers serve both.
type storage interface {
	storages.Import | storages.Export
}

func kindOf[S storage]() string {
	var s S
	if _, ok := any(s).(storages.Import); ok {
		return "import"
	}
	return "export"
}

func idOf[S storage](s *S) *int64 {
	switch v := any(s).(type) {
	case *storages.Import:
		return &v.ID
	case *storages.Export:
		return &v.ID
	}
	panic("unreachable")
}

// encode seals the plaintext credentials of s (if any) with box and
// returns the stored value. Credentials already sealed stay as they are.
func encode[S storage](s S, box *secrets.Box) ([]byte, error) {
	var r record
	switch v := any(&s).(type) {
	case *storages.Import:
		if v.GoogleApplicationCredentials != "" {
			if err := v.SealCredentials(box); err != nil {
				return nil, err
			}
		}
		r.Import, r.Sealed = v, v.SealedCredentials()
	case *storages.Export:
		if v.GoogleApplicationCredentials != "" {
			if err := v.SealCredentials(box); err != nil {
				return nil, err
			}
		}
		r.Export, r.Sealed = v, v.SealedCredentials()
	}
	return json.Marshal(r)
}

// Get returns the storage with id as this replica's snapshot has it.
func Get[S storage](c *Catalog, id int64) (S, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	var zero S
	switch p := any(&zero).(type) {
	case *storages.Import:
		s, ok := c.imports[id]
		*p = s
		return zero, ok
	case *storages.Export:
		s, ok := c.exports[id]
		*p = s
		return zero, ok
	}
	return zero, false
}

// Create stores a new storage, normalized by the caller. An id of 0 is
// assigned; a given id that is taken is ErrExists. It returns once this
// replica's snapshot has it.
func Create[S storage](ctx context.Context, c *Catalog, s S) (S, error) {
	kind := kindOf[S]()
	id := idOf(&s)
	assigned := *id == 0
	for range maxConflicts {
		if assigned {
			n, err := c.nextID(ctx, kind)
			if err != nil {
				return s, err
			}
			*id = n
		}
		value, err := encode(s, c.box)
		if err != nil {
			return s, err
		}
		rev, err := c.kv.Create(ctx, key(kind, *id), value)
		switch {
		case err == nil:
			return stored[S](ctx, c, kind, *id, rev)
		case errors.Is(err, jetstream.ErrKeyExists) && assigned:
			continue // an explicit id took the number: the next one
		case errors.Is(err, jetstream.ErrKeyExists):
			return s, fmt.Errorf("%s storage %d: %w", kind, *id, ErrExists)
		default:
			return s, fmt.Errorf("catalog: create %s: %w", key(kind, *id), err)
		}
	}
	return s, fmt.Errorf("catalog: no free %s id after %d tries", kind, maxConflicts)
}

// stored waits for the snapshot to have revision rev of kind.id and
// returns the storage from it.
func stored[S storage](ctx context.Context, c *Catalog, kind string, id int64, rev uint64) (S, error) {
	if err := c.waitApplied(ctx, key(kind, id), rev); err != nil {
		var zero S
		return zero, fmt.Errorf("catalog: %s stored but not yet in force here: %w", key(kind, id), err)
	}
	s, _ := Get[S](c, id)
	return s, nil
}

// Update changes the storage with id through change (which sees the stored
// storage, credentials sealed, and returns it changed and normalized),
// compare-and-set on its revision: two updates never lose each other.
func Update[S storage](ctx context.Context, c *Catalog, id int64, change func(S) (S, error)) (S, error) {
	kind := kindOf[S]()
	k := key(kind, id)
	for range maxConflicts {
		var zero S
		e, err := c.kv.Get(ctx, k)
		if errors.Is(err, jetstream.ErrKeyNotFound) || (err == nil && e.Operation() != jetstream.KeyValuePut) {
			return zero, fmt.Errorf("%s storage %d: %w", kind, id, ErrNotFound)
		}
		if err != nil {
			return zero, fmt.Errorf("catalog: read %s: %w", k, err)
		}
		cur, err := c.decodeAs(kind, e.Value())
		if err != nil {
			return zero, fmt.Errorf("catalog: %s: %w", k, err)
		}
		next, err := change(cur.(S))
		if err != nil {
			return zero, err
		}
		*idOf(&next) = id
		value, err := encode(next, c.box)
		if err != nil {
			return zero, err
		}
		rev, err := c.kv.Update(ctx, k, value, e.Revision())
		if err == nil {
			return stored[S](ctx, c, kind, id, rev)
		}
		if !conflict(err) {
			return zero, fmt.Errorf("catalog: update %s: %w", k, err)
		}
	}
	var zero S
	return zero, fmt.Errorf("catalog: %s kept changing", k)
}

func (c *Catalog) decodeAs(kind string, value []byte) (any, error) {
	imp, exp, err := c.decode(kind, value)
	if err != nil {
		return nil, err
	}
	if imp != nil {
		return *imp, nil
	}
	return *exp, nil
}

// Delete removes the storage with id; its imports or exports stop on every
// replica. Its tasks stay in the stream, and a storage created again with
// the same id continues its ledger.
func Delete[S storage](ctx context.Context, c *Catalog, id int64) error {
	kind := kindOf[S]()
	k := key(kind, id)
	if _, ok := Get[S](c, id); !ok {
		e, err := c.kv.Get(ctx, k)
		if errors.Is(err, jetstream.ErrKeyNotFound) || (err == nil && e.Operation() != jetstream.KeyValuePut) {
			return fmt.Errorf("%s storage %d: %w", kind, id, ErrNotFound)
		}
	}
	if err := c.kv.Delete(ctx, k); err != nil {
		return fmt.Errorf("catalog: delete %s: %w", k, err)
	}
	// Wait for the watch to take the delete marker in.
	hist, err := c.kv.History(ctx, k)
	if err != nil || len(hist) == 0 {
		return nil // deleted; this replica catches up by itself
	}
	return c.waitApplied(ctx, k, hist[len(hist)-1].Revision())
}

func conflict(err error) bool {
	var apiErr *jetstream.APIError
	return errors.Is(err, jetstream.ErrKeyExists) ||
		(errors.As(err, &apiErr) && (apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence || apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequenceConstant))
}

// nextID takes the next id of kind from the counter: above every id the
// counter handed out and every id in the snapshot.
func (c *Catalog) nextID(ctx context.Context, kind string) (int64, error) {
	k := "next." + kind
	for range maxConflicts {
		var cur int64
		var rev uint64
		e, err := c.kv.Get(ctx, k)
		switch {
		case errors.Is(err, jetstream.ErrKeyNotFound):
		case err != nil:
			return 0, fmt.Errorf("catalog: read %s: %w", k, err)
		default:
			rev = e.Revision()
			if cur, err = strconv.ParseInt(string(e.Value()), 10, 64); err != nil {
				return 0, fmt.Errorf("catalog: %s holds %q", k, e.Value())
			}
		}
		next := cur + 1
		c.mu.Lock()
		if kind == "import" {
			for id := range c.imports {
				next = max(next, id+1)
			}
		} else {
			for id := range c.exports {
				next = max(next, id+1)
			}
		}
		c.mu.Unlock()
		value := []byte(strconv.FormatInt(next, 10))
		if rev == 0 {
			_, err = c.kv.Create(ctx, k, value)
		} else {
			_, err = c.kv.Update(ctx, k, value, rev)
		}
		if err == nil {
			return next, nil
		}
		if !conflict(err) {
			return 0, fmt.Errorf("catalog: take an id: %w", err)
		}
	}
	return 0, fmt.Errorf("catalog: the %s id counter kept changing", kind)
}
