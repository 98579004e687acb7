package ctl

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"time"

	"cloud.google.com/go/storage"
	"google.golang.org/api/iterator"
)

// cat prints gs://BUCKET/KEY, JSON indented, waiting up to -wait for the
// object to exist (the exporter writes it a moment after the webhook).
func cat(ctx context.Context, args []string, env Env, stdout io.Writer) error {
	fs := flag.NewFlagSet("cat", flag.ContinueOnError)
	wait := fs.Duration("wait", 0, "wait this long for the object to exist (0: do not wait)")
	pos, err := parseInterspersed(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 2 {
		return errors.New(usage)
	}
	bucket, key := pos[0], pos[1]
	c, err := storageClient(ctx, env)
	if err != nil {
		return err
	}
	defer c.Close()
	deadline := time.Now().Add(*wait)
	for {
		body, err := readObject(ctx, c.Bucket(bucket).Object(key))
		if errors.Is(err, storage.ErrObjectNotExist) && time.Now().Before(deadline) {
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(200 * time.Millisecond):
			}
			continue
		}
		if errors.Is(err, storage.ErrObjectNotExist) {
			if *wait > 0 {
				return fmt.Errorf("lsctl: gs://%s/%s did not appear within %s", bucket, key, *wait)
			}
			return fmt.Errorf("lsctl: gs://%s/%s does not exist", bucket, key)
		}
		if err != nil {
			return fmt.Errorf("lsctl: read gs://%s/%s: %w", bucket, key, err)
		}
		var out bytes.Buffer
		if json.Indent(&out, body, "", "  ") == nil {
			out.WriteByte('\n')
			body = out.Bytes()
		}
		_, err = stdout.Write(body)
		return err
	}
}

func readObject(ctx context.Context, o *storage.ObjectHandle) ([]byte, error) {
	r, err := o.NewReader(ctx)
	if err != nil {
		return nil, err
	}
	defer r.Close()
	return io.ReadAll(r)
}

// ls prints the names of the objects of BUCKET under PREFIX, one a line.
func ls(ctx context.Context, args []string, env Env, stdout io.Writer) error {
	if len(args) < 1 || len(args) > 2 {
		return errors.New(usage)
	}
	q := &storage.Query{}
	if len(args) == 2 {
		q.Prefix = args[1]
	}
	c, err := storageClient(ctx, env)
	if err != nil {
		return err
	}
	defer c.Close()
	it := c.Bucket(args[0]).Objects(ctx, q)
	for {
		attrs, err := it.Next()
		if errors.Is(err, iterator.Done) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("lsctl: list gs://%s/%s: %w", args[0], q.Prefix, err)
		}
		fmt.Fprintln(stdout, attrs.Name)
	}
}
