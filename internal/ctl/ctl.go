// Package ctl is lsctl, the small operator's tool of the local stack: watch
// the task and dead-letter streams, upload, list, print and delete objects,
// and post Label Studio annotation webhooks to the exporter.
package ctl

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"cloud.google.com/go/storage"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/api/option"
)

const usage = `usage:
  lsctl watch [-subjects labelsync.tasks.>] [-count N] [-timeout 0]   print stream messages as they arrive
  lsctl upload BUCKET KEY [FILE]                                       upload FILE (default: stdin)
  lsctl rm BUCKET KEY                                                  delete an object
  lsctl cat BUCKET KEY [-wait 0]                                       print an object (JSON pretty-printed), waiting up to -wait for it to exist
  lsctl ls BUCKET [PREFIX]                                             list object names
  lsctl annotate --project P --id A [--task T --label L] [--action created|updated|deleted] [--url http://127.0.0.1:8081]
                                                                       post a Label Studio annotation webhook to the exporter
  lsctl sign --project P --fileuri gs://B/K [--ttl 0] [--base-url http://localhost:8080]
                                                                       print a signed resolver link that opens that object without the API token
  lsctl labelstudio connect --project P [--exporter-url http://localhost:8081] [--dry-run]
                                                                       register the exporter's webhook in a Label Studio project (idempotent)
environment: LABELSYNC_NATS_URL (default nats://127.0.0.1:4222), STORAGE_EMULATOR_HOST,
  LABELSYNC_WEBHOOK_SECRET (annotate, labelstudio), LABELSYNC_SECRET_KEY (sign),
  LABELSYNC_LABEL_STUDIO_URL and LABELSYNC_LABEL_STUDIO_TOKEN (labelstudio)`

// Env is what ctl reads from the environment.
type Env struct {
	NATSURL             string
	StorageEmulatorHost string
	WebhookSecret       string // the exporter's LABELSYNC_WEBHOOK_SECRET
	SecretKey           string // the worker's LABELSYNC_SECRET_KEY (sign)
	LabelStudioURL      string // LABELSYNC_LABEL_STUDIO_URL (labelstudio)
	LabelStudioToken    string // LABELSYNC_LABEL_STUDIO_TOKEN (labelstudio)
}

// Run runs one lsctl command.
func Run(ctx context.Context, args []string, env Env, stdin io.Reader, stdout io.Writer) error {
	if len(args) == 0 {
		return errors.New(usage)
	}
	switch args[0] {
	case "watch":
		return watch(ctx, args[1:], env, stdout)
	case "upload":
		if len(args) < 3 || len(args) > 4 {
			return errors.New(usage)
		}
		in := stdin
		if len(args) == 4 {
			f, err := os.Open(args[3])
			if err != nil {
				return err
			}
			defer f.Close()
			in = f
		}
		return upload(ctx, env, args[1], args[2], in, stdout)
	case "rm":
		if len(args) != 3 {
			return errors.New(usage)
		}
		c, err := storageClient(ctx, env)
		if err != nil {
			return err
		}
		defer c.Close()
		if err := c.Bucket(args[1]).Object(args[2]).Delete(ctx); err != nil {
			return fmt.Errorf("lsctl: delete gs://%s/%s: %w", args[1], args[2], err)
		}
		fmt.Fprintf(stdout, "deleted gs://%s/%s\n", args[1], args[2])
		return nil
	case "cat":
		return cat(ctx, args[1:], env, stdout)
	case "ls":
		return ls(ctx, args[1:], env, stdout)
	case "annotate":
		return annotate(ctx, args[1:], env, stdout)
	case "sign":
		return sign(args[1:], env, time.Now(), stdout)
	case "labelstudio":
		return labelStudio(ctx, args[1:], env, stdout)
	}
	return errors.New(usage)
}

func storageClient(ctx context.Context, env Env) (*storage.Client, error) {
	var opts []option.ClientOption
	if h := env.StorageEmulatorHost; h != "" {
		if !strings.Contains(h, "://") {
			h = "http://" + h
		}
		opts = append(opts, option.WithEndpoint(strings.TrimRight(h, "/")+"/storage/v1/"), option.WithoutAuthentication(), storage.WithJSONReads())
	}
	return storage.NewClient(ctx, opts...)
}

func upload(ctx context.Context, env Env, bucket, key string, in io.Reader, stdout io.Writer) error {
	c, err := storageClient(ctx, env)
	if err != nil {
		return err
	}
	defer c.Close()
	w := c.Bucket(bucket).Object(key).NewWriter(ctx)
	if _, err := io.Copy(w, in); err != nil {
		_ = w.Close()
		return fmt.Errorf("lsctl: upload gs://%s/%s: %w", bucket, key, err)
	}
	if err := w.Close(); err != nil {
		return fmt.Errorf("lsctl: upload gs://%s/%s: %w", bucket, key, err)
	}
	fmt.Fprintf(stdout, "uploaded gs://%s/%s generation %d\n", bucket, key, w.Attrs().Generation)
	return nil
}

// parseInterspersed parses fs from args with flags before, between or
// after the positional arguments (lsctl cat BUCKET KEY -wait 30s), and
// returns the positional ones. Everything after "--" is positional.
func parseInterspersed(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for len(args) > 0 {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		rest := fs.Args()
		if n := len(args) - len(rest); n > 0 && args[n-1] == "--" {
			return append(pos, rest...), nil
		}
		if len(rest) == 0 {
			break
		}
		pos, args = append(pos, rest[0]), rest[1:]
	}
	return pos, nil
}

func watch(ctx context.Context, args []string, env Env, stdout io.Writer) error {
	fs := flag.NewFlagSet("watch", flag.ContinueOnError)
	subjects := fs.String("subjects", "labelsync.tasks.>", "subject filter")
	count := fs.Int("count", 0, "stop after this many messages (0: never)")
	timeout := fs.Duration("timeout", 0, "give up after this long (0: never)")
	newOnly := fs.Bool("new", false, "only messages published from now on")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, *timeout)
		defer cancel()
	}
	url := env.NATSURL
	if url == "" {
		url = nats.DefaultURL
	}
	nc, err := nats.Connect(url, nats.Name("lsctl"))
	if err != nil {
		return fmt.Errorf("lsctl: connect %s: %w", url, err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	stream, err := js.StreamNameBySubject(ctx, *subjects)
	if err != nil {
		return fmt.Errorf("lsctl: no stream holds %s: %w", *subjects, err)
	}
	cfg := jetstream.OrderedConsumerConfig{FilterSubjects: []string{*subjects}}
	if *newOnly {
		cfg.DeliverPolicy = jetstream.DeliverNewPolicy
	}
	cons, err := js.OrderedConsumer(ctx, stream, cfg)
	if err != nil {
		return err
	}
	for n := 0; *count == 0 || n < *count; {
		msg, err := cons.Next(jetstream.FetchMaxWait(time.Second))
		if errors.Is(err, jetstream.ErrNoMessages) || errors.Is(err, nats.ErrTimeout) {
			if ctx.Err() != nil {
				return fmt.Errorf("lsctl: %d message(s) of %d before the timeout", n, *count)
			}
			continue
		}
		if err != nil {
			return err
		}
		n++
		var body any
		out := msg.Data()
		if json.Unmarshal(out, &body) == nil {
			out, _ = json.MarshalIndent(body, "", "  ")
		}
		fmt.Fprintf(stdout, "%s\n%s\n", msg.Subject(), out)
	}
	return nil
}
