package catalog

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/labelsync/labelsync/internal/secrets"
	"github.com/labelsync/labelsync/internal/storages"
)

// Declare applies a storages file (LABELSYNC_STORAGES_FILE) at start: each
// storage it names is created, or updated to what the file says, by id;
// storages it does not name are left alone, so a storage the API deleted
// comes back at the next start (SPEC §4). A storage already stored as the
// file says is not written again, so replicas applying the same file at
// once converge without churn.
func (c *Catalog) Declare(ctx context.Context, f storages.File) error {
	for _, s := range f.Import {
		if err := declare(ctx, c, s); err != nil {
			return err
		}
	}
	for _, s := range f.Export {
		if err := declare(ctx, c, s); err != nil {
			return err
		}
	}
	return nil
}

func declare[S storage](ctx context.Context, c *Catalog, s S) error {
	kind := kindOf[S]()
	id := *idOf(&s)
	k := key(kind, id)
	for range maxConflicts {
		e, err := c.kv.Get(ctx, k)
		var rev uint64
		switch {
		case errors.Is(err, jetstream.ErrKeyNotFound):
		case err != nil:
			return fmt.Errorf("catalog: read %s: %w", k, err)
		case e.Operation() == jetstream.KeyValuePut:
			cur, derr := c.decodeAs(kind, e.Value())
			if derr == nil && c.same(cur, s) {
				return c.waitApplied(ctx, k, e.Revision())
			}
			rev = e.Revision()
		default:
			rev = e.Revision() // a delete marker: write over it
		}
		value, err := encode(s, c.box)
		if err != nil {
			return fmt.Errorf("%s storage %d: %w", kind, id, err)
		}
		var nrev uint64
		if rev == 0 {
			nrev, err = c.kv.Create(ctx, k, value)
		} else {
			nrev, err = c.kv.Update(ctx, k, value, rev)
		}
		if err == nil {
			return c.waitApplied(ctx, k, nrev)
		}
		if !conflict(err) {
			return fmt.Errorf("catalog: declare %s: %w", k, err)
		}
	}
	return fmt.Errorf("catalog: %s kept changing while the file was applied", k)
}

// same reports whether two storages say the same: the same fields and the
// same credentials once opened (sealing is randomised).
func (c *Catalog) same(a, b any) bool {
	pa, ca, erra := c.public(a)
	pb, cb, errb := c.public(b)
	return erra == nil && errb == nil && bytes.Equal(pa, pb) && bytes.Equal(ca, cb)
}

func (c *Catalog) public(s any) ([]byte, []byte, error) {
	switch v := s.(type) {
	case storages.Import:
		creds, err := v.Credentials(c.box)
		v.GoogleApplicationCredentials = ""
		b, _ := json.Marshal(v)
		return b, creds, err
	case storages.Export:
		creds, err := v.Credentials(c.box)
		v.GoogleApplicationCredentials = ""
		b, _ := json.Marshal(v)
		return b, creds, err
	}
	return nil, nil, errors.New("not a storage")
}

// Reseal seals every stored credential again with next, the key that will
// replace the current one (the rotation of LABELSYNC_SECRET_KEY), and
// returns how many storages it changed. Each change is compare-and-set: a
// storage changed meanwhile is read again.
func (c *Catalog) Reseal(ctx context.Context, next *secrets.Box) (int, error) {
	keys, err := c.kv.Keys(ctx)
	if errors.Is(err, jetstream.ErrNoKeysFound) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("catalog: list: %w", err)
	}
	n := 0
	for _, k := range keys {
		kind, _, ok := parseKey(k)
		if !ok {
			continue
		}
		changed, err := c.reseal(ctx, k, kind, next)
		if err != nil {
			return n, err
		}
		if changed {
			n++
		}
	}
	return n, nil
}

func (c *Catalog) reseal(ctx context.Context, k, kind string, next *secrets.Box) (bool, error) {
	for range maxConflicts {
		e, err := c.kv.Get(ctx, k)
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			return false, nil
		}
		if err != nil {
			return false, fmt.Errorf("catalog: read %s: %w", k, err)
		}
		cur, err := c.decodeAs(kind, e.Value())
		if err != nil {
			return false, fmt.Errorf("catalog: %s: %w", k, err)
		}
		var value []byte
		switch v := cur.(type) {
		case storages.Import:
			if !v.HasCredentials() {
				return false, nil
			}
			creds, err := v.Credentials(c.box)
			if err != nil {
				return false, err
			}
			v.SetSealedCredentials("")
			v.GoogleApplicationCredentials = string(creds)
			value, err = encode(v, next)
			if err != nil {
				return false, err
			}
		case storages.Export:
			if !v.HasCredentials() {
				return false, nil
			}
			creds, err := v.Credentials(c.box)
			if err != nil {
				return false, err
			}
			v.SetSealedCredentials("")
			v.GoogleApplicationCredentials = string(creds)
			value, err = encode(v, next)
			if err != nil {
				return false, err
			}
		}
		if _, err := c.kv.Update(ctx, k, value, e.Revision()); err == nil {
			return true, nil
		} else if !conflict(err) {
			return false, fmt.Errorf("catalog: reseal %s: %w", k, err)
		}
	}
	return false, fmt.Errorf("catalog: %s kept changing", k)
}

// ReadFile reads the storages file LABELSYNC_STORAGES_FILE names, for
// Declare; no path declares nothing. Errors name the variable. Workers and
// exporters read it before they connect, so a bad file stops them at once.
func ReadFile(path string, box *secrets.Box) (storages.File, error) {
	if path == "" {
		return storages.File{}, nil
	}
	f, err := storages.Load(path, storages.ParseOptions{Secrets: box})
	if err != nil {
		return storages.File{}, fmt.Errorf("LABELSYNC_STORAGES_FILE: %w", err)
	}
	return f, nil
}
